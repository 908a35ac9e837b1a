//! The client-facing address on this host's interface: added with `ip addr add` after a
//! duplicate-address check (`arping -D`), announced with gratuitous ARP (`arping -U`), removed
//! with `ip addr del` — or, for sites with their own VIP tooling, a hook run with `up` or
//! `down`. Each command runs without a shell and is bounded; `vip.netns` runs them inside a
//! named network namespace.

use std::net::IpAddr;
use std::time::Duration;

use tokio::process::Command;

/// Bound on one command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// How the address is managed.
#[derive(Debug, Clone)]
pub struct AddressOps {
    /// `ADDRESS/PREFIX` as configured.
    pub cidr: String,
    pub ip: IpAddr,
    pub interface: String,
    pub netns: Option<String>,
    pub hook: Vec<String>,
}

/// The result of the duplicate-address check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Duplicate {
    /// Nobody answered for the address.
    Free,
    /// Another host answered: adding it would make two holders.
    Answered(String),
    /// The check could not run (no `arping`, IPv6, a hook): said so in the log.
    Unchecked(String),
}

impl AddressOps {
    fn ip_cmd(&self) -> Command {
        let mut c = Command::new("ip");
        if let Some(ns) = &self.netns {
            c.args(["-n", ns]);
        }
        c
    }

    fn arping_cmd(&self) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "arping"]);
                c
            }
            None => Command::new("arping"),
        }
    }

    /// Whether the interface carries the address now (a hook: unknown, None).
    pub async fn present(&self) -> Result<Option<bool>, String> {
        if !self.hook.is_empty() {
            return Ok(None);
        }
        let mut c = self.ip_cmd();
        c.args(["-o", "addr", "show", "dev", &self.interface]);
        let out = run(c, "ip addr show").await?;
        let needle = format!(" {}/", self.ip);
        Ok(Some(out.contains(&needle)))
    }

    /// `arping -D`: does another host answer for the address? IPv4 only (IPv6 has the
    /// kernel's own duplicate address detection).
    pub async fn duplicate(&self) -> Duplicate {
        if !self.hook.is_empty() {
            return Duplicate::Unchecked("vip.hook manages the address".into());
        }
        if self.ip.is_ipv6() {
            return Duplicate::Unchecked("IPv6: the kernel's duplicate address detection".into());
        }
        let mut c = self.arping_cmd();
        c.args(["-D", "-q", "-c", "2", "-w", "3", "-I", &self.interface])
            .arg(self.ip.to_string());
        // iputils arping -D: 0 no reply (free), 1 a reply, anything else an error.
        match status(c).await {
            Ok((0, _)) => Duplicate::Free,
            Ok((1, _)) => Duplicate::Answered(format!("a host answered ARP for {}", self.ip)),
            Ok((code, err)) => Duplicate::Unchecked(format!("arping -D exited with {code}: {err}")),
            Err(e) => Duplicate::Unchecked(e),
        }
    }

    pub async fn add(&self) -> Result<(), String> {
        if !self.hook.is_empty() {
            return self.run_hook("up").await;
        }
        let mut c = self.ip_cmd();
        c.args(["addr", "add", &self.cidr, "dev", &self.interface]);
        run(c, "ip addr add").await.map(drop)
    }

    /// Gratuitous ARP so switches and neighbours learn the new holder; best effort.
    pub async fn announce(&self) -> Result<(), String> {
        if !self.hook.is_empty() || self.ip.is_ipv6() {
            return Ok(());
        }
        let mut c = self.arping_cmd();
        c.args(["-U", "-q", "-c", "3", "-I", &self.interface])
            .arg(self.ip.to_string());
        match status(c).await {
            Ok((0, _)) => Ok(()),
            Ok((code, err)) => Err(format!("arping -U exited with {code}: {err}")),
            Err(e) => Err(e),
        }
    }

    pub async fn remove(&self) -> Result<(), String> {
        if !self.hook.is_empty() {
            return self.run_hook("down").await;
        }
        let mut c = self.ip_cmd();
        c.args(["addr", "del", &self.cidr, "dev", &self.interface]);
        run(c, "ip addr del").await.map(drop)
    }

    async fn run_hook(&self, action: &str) -> Result<(), String> {
        let mut c = Command::new(&self.hook[0]);
        c.args(&self.hook[1..])
            .args([action, &self.cidr, &self.interface]);
        run(c, &self.hook[0]).await.map(drop)
    }
}

/// Runs `c`; Ok(stdout) on exit 0, else the exit and stderr.
async fn run(mut c: Command, what: &str) -> Result<String, String> {
    c.stdin(std::process::Stdio::null()).kill_on_drop(true);
    match tokio::time::timeout(COMMAND_TIMEOUT, c.output()).await {
        Ok(Ok(out)) if out.status.success() => {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        }
        Ok(Ok(out)) => Err(format!(
            "{what} exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Ok(Err(e)) => Err(format!("{what} could not be started: {e}")),
        Err(_) => Err(format!("{what} did not finish within {COMMAND_TIMEOUT:?}")),
    }
}

/// Runs `c` and returns its exit code and stderr.
async fn status(mut c: Command) -> Result<(i32, String), String> {
    c.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    match tokio::time::timeout(COMMAND_TIMEOUT, c.output()).await {
        Ok(Ok(out)) => out
            .status
            .code()
            .map(|code| (code, String::from_utf8_lossy(&out.stderr).trim().to_owned()))
            .ok_or_else(|| format!("arping ended by a signal: {}", out.status)),
        Ok(Err(e)) => Err(format!(
            "arping could not be started ({e}); install iputils-arping"
        )),
        Err(_) => Err(format!("arping did not finish within {COMMAND_TIMEOUT:?}")),
    }
}
