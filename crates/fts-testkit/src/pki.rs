//! A throwaway PKI for TLS tests, made by the project's own `etcd/make-certs` (openssl): a CA,
//! server certificates for the names asked for (each also valid for `localhost` and
//! `127.0.0.1`, as make-certs issues them, with both server and client use), and client
//! certificates. Removed on drop.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use tempfile::TempDir;

/// The certificates of one CA, in a temporary directory.
#[derive(Debug)]
pub struct Pki {
    dir: TempDir,
}

/// `etcd/make-certs` of this checkout.
pub fn make_certs_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../etcd/make-certs")
}

impl Pki {
    /// A new CA with one server certificate per `(name, hosts)` (`hosts` comma-separated, as
    /// make-certs takes them) and one client certificate per client name ("ftsd" and "root"
    /// are always made).
    pub fn new(servers: &[(&str, &str)], clients: &[&str]) -> Result<Pki> {
        let dir = tempfile::Builder::new()
            .prefix("ftsd-pki-")
            .tempdir()
            .context("creating the PKI directory")?;
        let out = dir.path().join("pki");
        let mut cmd = Command::new("bash");
        cmd.arg(make_certs_script()).arg("--days").arg("31");
        for c in clients {
            cmd.arg("--client").arg(c);
        }
        cmd.arg(&out);
        for (name, hosts) in servers {
            cmd.arg(format!("{name}={hosts}"));
        }
        let output = cmd
            .output()
            .context("running etcd/make-certs (needs bash, openssl)")?;
        if !output.status.success() {
            bail!(
                "etcd/make-certs failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(Pki { dir })
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().join("pki")
    }

    /// `ca.pem`.
    pub fn ca(&self) -> PathBuf {
        self.dir().join("ca.pem")
    }

    /// A server's certificate and key (`NAME.pem`, `NAME.key`).
    pub fn server(&self, name: &str) -> (PathBuf, PathBuf) {
        (
            self.dir().join(format!("{name}.pem")),
            self.dir().join(format!("{name}.key")),
        )
    }

    /// A client's certificate and key (`client-NAME.pem`, `client-NAME.key`).
    pub fn client(&self, name: &str) -> (PathBuf, PathBuf) {
        (
            self.dir().join(format!("client-{name}.pem")),
            self.dir().join(format!("client-{name}.key")),
        )
    }
}
