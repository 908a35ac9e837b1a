//! A whole system under test: a real PostgreSQL catalog, an in-process `fts-segsim` cluster and
//! `ftsd` processes (the real binary), plus polling helpers.

#![allow(dead_code)]

pub mod coordinator;
pub mod elected;
pub mod pg_pair;
pub mod proxy;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fts_segsim::SimConfig;
use fts_segsim::Simulator;
use fts_testkit::pg::PgServer;
use fts_testkit::pgpair::{PROBE_PASSWORD, PROBE_ROLE};
use ftsd::catalog::schema;
use ftsd::model::{Mode, Role, Segment, Status};

/// Runs the real `ftsctl` against `endpoint` (no colour, no etcd from the environment).
pub fn ftsctl(endpoint: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ftsctl"))
        .arg("--endpoint")
        .arg(endpoint)
        .args(args)
        .env_remove("FTSCTL_ETCD")
        .env("NO_COLOR", "1")
        .output()
        .expect("run ftsctl")
}

pub fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `ftsctl` against `endpoint` expecting exit `code` (the message shows both outputs
/// when it differs); returns stdout.
pub fn ftsctl_expect(endpoint: &str, args: &[&str], code: i32) -> String {
    let o = ftsctl(endpoint, args);
    assert_eq!(
        o.status.code(),
        Some(code),
        "ftsctl {args:?}\nstdout:\n{}\nstderr:\n{}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// The API and metrics addresses from a daemon's configuration file.
pub fn addresses(config: &std::path::Path) -> (String, String) {
    let text = std::fs::read_to_string(config).unwrap();
    let v: toml::Value = toml::from_str(&text).unwrap();
    (
        v["api"]["listen"].as_str().unwrap().to_string(),
        v["api"]["metrics_listen"].as_str().unwrap().to_string(),
    )
}

/// One `ftsd` probing PostgreSQL pairs with the `postgres` driver as the dedicated probe role
/// ([`write_pg_driver_config`]).
pub struct PgDriverConfig<'a> {
    pub cluster: &'a str,
    /// `instance_id`; the file is `NAME.toml`.
    pub instance: &'a str,
    pub mirror_down_grace: &'a str,
    /// The bodies of the `[postgres]` and `[catalog]` tables.
    pub postgres: &'a str,
    pub catalog: &'a str,
    /// Further tables (`[etcd]` for an elected daemon: [`etcd_table`]).
    pub extra: &'a str,
}

impl Default for PgDriverConfig<'_> {
    fn default() -> Self {
        PgDriverConfig {
            cluster: "test",
            instance: "single",
            mirror_down_grace: "3s",
            postgres: "",
            catalog: "",
            extra: "",
        }
    }
}

/// Writes `c` into `dir`, with the probe role's password in a file beside it. Returns the
/// path of the configuration file.
pub fn write_pg_driver_config(dir: &Path, c: &PgDriverConfig) -> PathBuf {
    let pw = dir.join("probe.password");
    std::fs::write(&pw, format!("{PROBE_PASSWORD}\n")).unwrap();
    let config = dir.join(format!("{}.toml", c.instance));
    std::fs::write(
        &config,
        format!(
            r#"cluster = "{cluster}"
instance_id = "{instance}"

[probe]
driver = "postgres"
interval = "1s"
timeout = "900ms"
retries = 2
retry_delay = "200ms"
mirror_down_grace = "{grace}"
user = "{PROBE_ROLE}"
password_file = "{pw}"

[postgres]
{postgres}

[catalog]
{catalog}

[api]
listen = "127.0.0.1:{api}"
metrics_listen = "127.0.0.1:{metrics}"

[log]
level = "info,ftsd=debug"
{extra}
"#,
            cluster = c.cluster,
            instance = c.instance,
            grace = c.mirror_down_grace,
            postgres = c.postgres,
            catalog = c.catalog,
            extra = c.extra,
            pw = pw.display(),
            api = free_port(),
            metrics = free_port(),
        ),
    )
    .unwrap();
    config
}

/// The `[etcd]` table of an elected daemon.
pub fn etcd_table(endpoints: &[String], lease_ttl: &str) -> String {
    format!(
        "[etcd]\nendpoints = [{}]\nlease_ttl = \"{lease_ttl}\"\nact_margin = \"500ms\"\ndial_timeout = \"1s\"\n",
        endpoints
            .iter()
            .map(|e| format!("\"{e}\""))
            .collect::<Vec<_>>()
            .join(", "),
    )
}

pub const PROBE_INTERVAL: &str = "1s";
pub const PROBE_TIMEOUT: &str = "500ms";
pub const PROBE_RETRIES: u32 = 2;

/// Polls `check` until it returns Some or `limit` passes; panics with `what` on timeout.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if start.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct System {
    // Dropped first: a failed test prints the daemons' logs, which live in `dir`.
    pub daemons: Vec<Daemon>,
    pub pg: PgServer,
    pub sim: Simulator,
    pub dir: tempfile::TempDir,
    /// etcd endpoints for elected daemons (empty: single-instance tests).
    pub etcd_endpoints: Vec<String>,
    pub lease_ttl: String,
}

pub struct Daemon {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
    pub config: PathBuf,
}

impl Daemon {
    /// Starts the real `ftsd` binary as `ftsd ARGS… --config CONFIG` (`args` names the
    /// subcommand and its flags: `["run", "--no-election"]`, `["vip-agent"]`) with `env`
    /// added and `RUST_LOG` removed; its output goes to `NAME.log` beside the configuration.
    pub fn spawn(config: PathBuf, name: &str, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let dir = config
            .parent()
            .expect("the configuration is in a directory");
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_ftsd"))
            .args(args)
            .arg("--config")
            .arg(&config)
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn ftsd {args:?} ({name}): {e}"));
        Daemon {
            name: name.to_string(),
            child,
            log,
            config,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failed test is diagnosed from the daemon's own account (CI keeps only the output).
        if std::thread::panicking() {
            let text = self.log_text();
            let lines: Vec<&str> = text.lines().collect();
            let (head, tail) = (80, 120);
            eprintln!("--- {}'s log ({}) ---", self.name, self.log.display());
            for line in lines.iter().take(head) {
                eprintln!("{line}");
            }
            if lines.len() > head + tail {
                eprintln!("[… {} lines …]", lines.len() - head - tail);
            }
            for line in lines
                .iter()
                .skip(head.max(lines.len().saturating_sub(tail)))
            {
                eprintln!("{line}");
            }
        }
    }
}

impl System {
    /// Starts the catalog and `pairs` simulated pairs (mirror-down grace `grace`), writes the
    /// configuration into the catalog.
    pub async fn start(pairs: u32, grace: Duration) -> System {
        System::start_sim(SimConfig {
            pairs,
            mirror_down_grace: grace,
            ..SimConfig::default()
        })
        .await
    }

    /// Like `start`, with the simulator shaped by `sim` (authentication, ...).
    pub async fn start_sim(sim: SimConfig) -> System {
        let pg = PgServer::builder().start().await.expect("catalog postgres");
        let mut client = pg.client().await.unwrap();
        schema::init(&mut client).await.unwrap();
        let sim = Simulator::start(sim).await.expect("segsim");
        fts_segsim::catalog::write_catalog(&pg.url(), &sim.segments())
            .await
            .expect("write catalog");
        System {
            pg,
            sim,
            dir: tempfile::tempdir().unwrap(),
            daemons: Vec::new(),
            etcd_endpoints: Vec::new(),
            lease_ttl: "3s".into(),
        }
    }

    pub fn config_text(&self, name: &str, extra: &str) -> String {
        format!(
            r#"cluster = "test"
instance_id = "{name}"

[probe]
interval = "{PROBE_INTERVAL}"
timeout = "{PROBE_TIMEOUT}"
retries = {PROBE_RETRIES}
retry_delay = "200ms"

[catalog]
url = "{url}"

[api]
listen = "127.0.0.1:{api}"
metrics_listen = "127.0.0.1:{metrics}"

[log]
level = "info,ftsd=debug"
{etcd}
{extra}
"#,
            etcd = if self.etcd_endpoints.is_empty() {
                String::new()
            } else {
                etcd_table(&self.etcd_endpoints, &self.lease_ttl)
            },
            url = self.pg.url(),
            api = free_port(),
            metrics = free_port(),
        )
    }

    /// Starts `ftsd run` with the given extra arguments and config additions.
    pub fn spawn_ftsd(&mut self, name: &str, args: &[&str], extra_config: &str) -> usize {
        self.spawn_ftsd_env(name, args, extra_config, &[])
    }

    /// Like `spawn_ftsd`, with extra environment variables (fault-injection points).
    pub fn spawn_ftsd_env(
        &mut self,
        name: &str,
        args: &[&str],
        extra_config: &str,
        env: &[(&str, &str)],
    ) -> usize {
        let config = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&config, self.config_text(name, extra_config)).unwrap();
        let run: Vec<&str> = ["run"].iter().chain(args).copied().collect();
        self.daemons.push(Daemon::spawn(config, name, &run, env));
        self.daemons.len() - 1
    }

    pub async fn rows(&self) -> Vec<Segment> {
        let client = self.pg.client().await.unwrap();
        let rows = client
            .query(
                "SELECT dbid, content, role::text, preferred_role::text, mode::text, status::text, \
                 port, hostname, address, datadir FROM gp_segment_configuration ORDER BY dbid",
                &[],
            )
            .await
            .unwrap();
        rows.iter()
            .map(|r| Segment {
                dbid: r.get(0),
                content: r.get(1),
                role: Role::from_char(r.get::<_, String>(2).chars().next().unwrap()).unwrap(),
                preferred_role: Role::from_char(r.get::<_, String>(3).chars().next().unwrap())
                    .unwrap(),
                mode: Mode::from_char(r.get::<_, String>(4).chars().next().unwrap()).unwrap(),
                status: Status::from_char(r.get::<_, String>(5).chars().next().unwrap()).unwrap(),
                port: r.get(6),
                hostname: r.get(7),
                address: r.get(8),
                datadir: r.get(9),
            })
            .collect()
    }

    pub async fn row(&self, dbid: i16) -> Segment {
        self.rows()
            .await
            .into_iter()
            .find(|s| s.dbid == dbid)
            .unwrap()
    }

    /// (dbid, desc) of every history row, oldest first.
    pub async fn history(&self) -> Vec<(i16, String)> {
        catalog_history(&self.pg).await
    }

    /// Evidence documents, oldest first: (epoch, instance, rule, evidence).
    pub async fn evidence(&self) -> Vec<(i64, String, String, serde_json::Value)> {
        let client = self.pg.client().await.unwrap();
        client
            .query(
                r#"SELECT epoch, instance_id, rule, evidence FROM fts_evidence ORDER BY id"#,
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect()
    }

    /// Waits until `dbid`'s catalog state is (role, status, mode).
    pub async fn wait_state(&self, dbid: i16, want: (Role, Status, Mode), limit: Duration) {
        wait_for(
            &format!("dbid {dbid} to become {want:?}"),
            limit,
            || async {
                let r = self.row(dbid).await;
                ((r.role, r.status, r.mode) == want).then_some(())
            },
        )
        .await
    }

    pub fn logs(&self) -> String {
        logs(&self.daemons)
    }
}

/// The logs of `daemons`, each under its name.
pub fn logs(daemons: &[Daemon]) -> String {
    daemons
        .iter()
        .map(|d| format!("==== {} ====\n{}", d.name, d.log_text()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// (dbid, desc) of every history row in `catalog`, oldest first.
pub async fn catalog_history(catalog: &PgServer) -> Vec<(i16, String)> {
    let client = catalog.client().await.unwrap();
    client
        .query(
            r#"SELECT dbid, "desc" FROM gp_configuration_history ORDER BY "time", ctid"#,
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

pub fn history_text(
    dbid: i16,
    content: i16,
    role: char,
    status: char,
    mode: char,
) -> (i16, String) {
    (
        dbid,
        format!(
            "FTS: update role, status, and mode for dbid {dbid} with contentid {content} to {role}, {status}, and {mode}"
        ),
    )
}

/// The history rows of one failover of content 0 (primary dbid 2 down, mirror dbid 4
/// promoted), the only change the fault tests expect.
pub fn content0_failover() -> Vec<(i16, String)> {
    vec![
        history_text(2, 0, 'm', 'd', 'n'),
        history_text(4, 0, 'p', 'u', 'n'),
    ]
}
