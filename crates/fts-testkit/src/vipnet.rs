//! The coordinator pair on two hosts with a virtual IP, for the end-to-end failover test and
//! `fts-bench coordinator-failover`:
//!
//! * a [`Lan`] with hosts `a` and `b` (network namespaces, addresses `.10` and `.11`);
//! * a real etcd here, listening on loopback and on the LAN's gateway address (`.1`), so the
//!   agents on the hosts reach it;
//! * a real PostgreSQL primary on host `a` and its synchronous standby on host `b`, both on
//!   port [`PG_PORT`] and listening on every address of their host — the standby streams
//!   from the primary across the LAN, and whichever holds the VIP serves it;
//! * `ftsd vip-agent` on each host (`ip netns exec HOST ftsd vip-agent`), managing the VIP
//!   (`.100/32`) on the host's `eth0`, with `vip.member` = that host's server.
//!
//! The daemons that watch the pair run here and reach the servers at their host addresses;
//! clients reach the coordinator at the VIP. Dropping it kills the agents, the servers and
//! etcd, then deletes the namespaces.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::etcd::EtcdCluster;
use crate::netns::{Lan, HOST_IF};
use crate::pg::{Auth, PgServer};
use crate::pgpair::PgPair;
use crate::process::spawn_tied_to_process;

/// The port of both servers (each in its own namespace, so the same one).
pub const PG_PORT: u16 = 5432;
/// The standby's `application_name`.
pub const PAIR_NAME: &str = "coord";
const SUPERUSER_PASSWORD: &str = "coordinator-superuser-secret";

/// A `ftsd vip-agent` process on one host; killed on drop.
#[derive(Debug)]
pub struct Agent {
    child: Child,
    pub member: String,
    pub log: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// See the module documentation. Fields drop in order: agents, servers, etcd, namespaces.
pub struct CoordinatorLan {
    pub agents: Vec<Agent>,
    pub pair: PgPair,
    pub etcd: EtcdCluster,
    pub lan: Lan,
}

impl CoordinatorLan {
    /// Creates the LAN, starts etcd and the pair (in sync); the agents come with
    /// [`CoordinatorLan::spawn_agents`].
    pub async fn start() -> Result<CoordinatorLan> {
        let lan = Lan::create(&["a", "b"])?;
        let etcd = EtcdCluster::builder()
            .client_host(lan.gateway().to_string())
            .start()
            .await
            .context("etcd")?;
        let server = |i: usize| {
            PgServer::builder()
                .auth(Auth::Scram)
                .password(SUPERUSER_PASSWORD)
                .netns(lan.host_ns(i))
                .host(lan.host_ip(i).to_string())
                .listen("*")
                .port(PG_PORT)
                .hba_line(format!("host all all {} scram-sha-256", lan.cidr()))
                .hba_line(format!("host replication all {} scram-sha-256", lan.cidr()))
                .setting("wal_retrieve_retry_interval", "200ms")
                .setting("wal_receiver_status_interval", "1s")
        };
        let pair = PgPair::start_split(server(0), server(1), PAIR_NAME)
            .await
            .context("the coordinator pair")?;
        Ok(CoordinatorLan {
            agents: Vec::new(),
            pair,
            etcd,
            lan,
        })
    }

    /// `host:port` of the coordinator (host `a`), as `coordinator.primary` names it.
    pub fn primary_addr(&self) -> String {
        format!("{}:{PG_PORT}", self.lan.host_ip(0))
    }

    /// `host:port` of the standby (host `b`), as `coordinator.standby` names it.
    pub fn standby_addr(&self) -> String {
        format!("{}:{PG_PORT}", self.lan.host_ip(1))
    }

    /// The virtual IP (`.100`).
    pub fn vip(&self) -> Ipv4Addr {
        self.lan.address(100)
    }

    /// Whether host `i` (0 = `a`, 1 = `b`) carries the VIP now.
    pub fn holds_vip(&self, i: usize) -> bool {
        self.lan.host_has(i, self.vip()).unwrap_or(false)
    }

    /// Superuser connection settings through the VIP, with a 1 s connect timeout.
    pub fn vip_config(&self) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host(self.vip().to_string())
            .port(PG_PORT)
            .user(self.pair.primary.superuser())
            .password(SUPERUSER_PASSWORD)
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(1));
        c
    }

    /// The `[etcd]` endpoints for processes in this namespace.
    pub fn etcd_endpoints(&self) -> Vec<String> {
        self.etcd.endpoints()
    }

    /// Starts `ftsd vip-agent` on both hosts (`ftsd` is the binary), with configurations and
    /// logs in `dir`, for cluster `cluster` under the default etcd prefix.
    pub async fn spawn_agents(&mut self, ftsd: &Path, dir: &Path, cluster: &str) -> Result<()> {
        let endpoints = self
            .etcd
            .endpoints_on(&self.lan.gateway().to_string())
            .iter()
            .map(|e| format!("\"{e}\""))
            .collect::<Vec<_>>()
            .join(", ");
        for (i, member) in [self.primary_addr(), self.standby_addr()]
            .into_iter()
            .enumerate()
        {
            let name = ["a", "b"][i];
            let config = dir.join(format!("vip-agent-{name}.toml"));
            std::fs::write(
                &config,
                format!(
                    r#"cluster = "{cluster}"

[catalog]
# Not read by the agent.
url = "postgresql://gpadmin@127.0.0.1:1/postgres"

[coordinator]
primary = "{primary}"
standby = "{standby}"

[vip]
address = "{vip}/32"
interface = "{HOST_IF}"
member = "{member}"
interval = "200ms"

[etcd]
endpoints = [{endpoints}]
lease_ttl = "3s"
act_margin = "500ms"
dial_timeout = "1s"

[log]
level = "info,ftsd=debug"
"#,
                    primary = self.primary_addr(),
                    standby = self.standby_addr(),
                    vip = self.vip(),
                ),
            )
            .with_context(|| format!("writing {}", config.display()))?;
            let log = dir.join(format!("vip-agent-{name}.log"));
            let out = std::fs::File::create(&log)
                .with_context(|| format!("creating {}", log.display()))?;
            let mut cmd = Command::new("ip");
            // `ip netns exec` execs the agent in place: the child is the agent itself.
            cmd.args(["netns", "exec", self.lan.host_ns(i)])
                .arg(ftsd)
                .arg("vip-agent")
                .arg("--config")
                .arg(&config)
                .env_remove("RUST_LOG")
                .stdin(Stdio::null())
                .stdout(out.try_clone()?)
                .stderr(out);
            let child = spawn_tied_to_process(cmd)
                .await
                .with_context(|| format!("starting the VIP agent on host {name}"))?;
            self.agents.push(Agent { child, member, log });
        }
        Ok(())
    }

    /// Both agents' logs, for failure messages.
    pub fn agent_logs(&self) -> String {
        self.agents
            .iter()
            .map(|a| format!("--- vip-agent {}\n{}", a.member, a.log_text()))
            .collect()
    }
}

/// One write the server acknowledged.
#[derive(Debug, Clone, Copy)]
pub struct Ack {
    pub id: i64,
    pub at: Instant,
    /// Which postmaster served it: its index in [`VipWriter::servers`].
    pub server: usize,
}

/// A client inserting `INSERT INTO writes (id) VALUES ($1)` one row at a time through the
/// VIP, with fresh ids, reconnecting after any failure; it records every acknowledged id and
/// which server took it (each new connection asks `pg_postmaster_start_time()`, which tells
/// the old coordinator from the promoted standby behind the same address).
/// A write whose outcome it did not learn (the connection broke during the commit) is not
/// recorded and its id is not reused.
pub struct VipWriter {
    acked: Arc<Mutex<Vec<Ack>>>,
    servers: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

/// How long one INSERT may take before the writer gives up on its connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(3);

impl VipWriter {
    /// Starts writing with `config` (see [`CoordinatorLan::vip_config`]); the table
    /// `writes (id bigint PRIMARY KEY)` must exist.
    pub fn start(config: tokio_postgres::Config) -> VipWriter {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let servers = Arc::new(Mutex::new(Vec::<String>::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (sink, seen, stopped) = (acked.clone(), servers.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut client: Option<(tokio_postgres::Client, usize)> = None;
            let mut id = 0i64;
            while !stopped.load(Ordering::Relaxed) {
                let (c, server) = match &client {
                    Some((c, server)) => (c, *server),
                    None => match connect(&config).await {
                        Some((c, started)) => {
                            let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                            let server = match seen.iter().position(|s| *s == started) {
                                Some(i) => i,
                                None => {
                                    seen.push(started);
                                    seen.len() - 1
                                }
                            };
                            drop(seen);
                            let (c, server) = client.insert((c, server));
                            (&*c, *server)
                        }
                        None => {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                    },
                };
                id += 1;
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&id];
                let insert = c.execute("INSERT INTO writes (id) VALUES ($1)", &params);
                match tokio::time::timeout(WRITE_TIMEOUT, insert).await {
                    Ok(Ok(_)) => sink.lock().unwrap_or_else(|e| e.into_inner()).push(Ack {
                        id,
                        at: Instant::now(),
                        server,
                    }),
                    _ => client = None,
                }
            }
        });
        VipWriter {
            acked,
            servers,
            stop,
            task,
        }
    }

    /// The postmaster start times of the servers the writer has connected to, in order.
    pub fn servers(&self) -> Vec<String> {
        self.servers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The acknowledged writes so far.
    pub fn acked(&self) -> Vec<Ack> {
        self.acked.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The first write acknowledged after `t` by the server whose postmaster started at
    /// `started` (see [`postmaster_start_time`]).
    pub fn first_on(&self, started: &str, t: Instant) -> Option<Ack> {
        let server = self.servers().iter().position(|s| s == started)?;
        self.acked()
            .into_iter()
            .find(|a| a.at > t && a.server == server)
    }

    /// Stops writing (after the write in flight) and returns every acknowledged write.
    pub async fn stop(self) -> Vec<Ack> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = tokio::time::timeout(WRITE_TIMEOUT * 2, self.task).await;
        self.acked.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A connection and its server's postmaster start time, within [`WRITE_TIMEOUT`].
async fn connect(config: &tokio_postgres::Config) -> Option<(tokio_postgres::Client, String)> {
    let attempt = async {
        let (c, conn) = config.connect(tokio_postgres::NoTls).await.ok()?;
        tokio::spawn(conn);
        let row = c
            .query_one("SELECT pg_postmaster_start_time()::text", &[])
            .await
            .ok()?;
        Some((c, row.get(0)))
    };
    tokio::time::timeout(WRITE_TIMEOUT, attempt)
        .await
        .ok()
        .flatten()
}

/// `pg_postmaster_start_time()` of `server`, which tells it apart from another server behind
/// the same address.
pub async fn postmaster_start_time(server: &PgServer) -> Result<String> {
    let row = server
        .client()
        .await?
        .query_one("SELECT pg_postmaster_start_time()::text", &[])
        .await?;
    Ok(row.get(0))
}
