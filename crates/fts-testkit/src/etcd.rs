//! Throwaway real etcd clusters for tests, the demo and the benchmark.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use fts_testkit::etcd::EtcdCluster;
//! use std::time::Duration;
//! let mut etcd = EtcdCluster::start(3).await?; // all members healthy
//! let endpoints = etcd.endpoints(); // ["http://127.0.0.1:PORT", ...]
//! etcd.kill(0)?; // SIGKILL; its data directory stays
//! etcd.wait_quorum(Duration::from_secs(10)).await?; // the other two still have quorum
//! etcd.restart(0).await?; // same ports and data dir, --initial-cluster-state existing
//! etcd.wait_healthy(0, Duration::from_secs(10)).await?;
//! # Ok(()) }
//! ```
//!
//! How it works:
//!
//! * Every member is an `etcd` process (Debian's 3.4, `/usr/bin/etcd`; override with
//!   [`EtcdClusterBuilder::etcd_bin`] or the `FTSD_ETCD_BIN` environment variable) and a **direct
//!   child** of this process, listening on `127.0.0.1` with its own free client and peer port.
//!   Members are named `m0`, `m1`, …; member `i` keeps its data in `<tmp>/m<i>` and logs (zap,
//!   JSON lines, plus anything else on stdout/stderr) to `<tmp>/m<i>.log`, appended across
//!   restarts ([`EtcdCluster::log_tail`]). `ETCD_*` environment variables are not passed on.
//! * A fresh cluster is bootstrapped with `--initial-cluster-state new` and a unique
//!   `--initial-cluster-token`; if a port was grabbed by someone else in the meantime, the whole
//!   bootstrap is retried on fresh ports. [`EtcdCluster::start`] returns once every member's
//!   `GET /health` says `{"health":"true"}` (which etcd answers only with a leader and a working
//!   quorum).
//! * [`EtcdCluster::restart`] starts a stopped member again on the same ports and data directory
//!   (`--initial-cluster-state existing`). Ports are only reused after the old process has been
//!   reaped, which every stopping method does before it returns.
//!
//! Cleanup works as in [`super::pg`]: [`Drop`] SIGKILLs and reaps every member, then removes the
//! temporary directory (also while unwinding from a panic); members are started with
//! `prctl(PR_SET_PDEATHSIG, SIGKILL)` from the shared spawner thread, so they die with the test
//! process even when it is killed. Only the temporary directory is left behind in that case.
//!
//! Member indexes are `0..len()`; every method taking an index panics on an out-of-range one.

use super::process::{self, free_ports, read_from, spawn_tied_to_process, Launch, LOOPBACK};
use anyhow::{anyhow, bail, Context, Result};
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tempfile::TempDir;

/// Where Debian's `etcd-server` package installs the server.
pub const DEFAULT_ETCD_BIN: &str = "/usr/bin/etcd";
/// Environment variable naming the etcd binary (overrides [`DEFAULT_ETCD_BIN`]).
pub const ETCD_BIN_ENV: &str = "FTSD_ETCD_BIN";

/// How many times a fresh cluster is bootstrapped on new ports when a port was taken.
const BOOTSTRAP_ATTEMPTS: usize = 5;
/// How many times [`EtcdCluster::restart`] retries when its fixed port is briefly in use.
const RESTART_ATTEMPTS: usize = 10;
/// How long [`EtcdCluster::stop`] waits after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Timeout of one `GET /health` (etcd itself gives up on its quorum read after about 1 s).
const HEALTH_REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// How long [`EtcdCluster::pause`] waits for every thread to be stopped.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between two polls.
const POLL: Duration = Duration::from_millis(50);
/// Lines of each member's log quoted in errors.
const ERROR_LOG_LINES: usize = 20;

/// Configures and starts an [`EtcdCluster`]; see [`EtcdCluster::builder`].
#[derive(Debug, Clone)]
pub struct EtcdClusterBuilder {
    members: usize,
    heartbeat_interval: Duration,
    election_timeout: Duration,
    start_timeout: Duration,
    etcd_bin: Option<PathBuf>,
    extra_args: Vec<String>,
    tls: Option<EtcdTls>,
    /// Addresses the client port listens on besides loopback.
    client_hosts: Vec<String>,
}

/// TLS for the client port (see [`EtcdClusterBuilder::tls`]).
#[derive(Debug, Clone)]
pub struct EtcdTls {
    /// CA that client certificates must chain to (`--trusted-ca-file`).
    pub ca: PathBuf,
    /// The members' server certificate and key (valid for 127.0.0.1).
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Default for EtcdClusterBuilder {
    fn default() -> Self {
        EtcdClusterBuilder {
            members: 1,
            heartbeat_interval: Duration::from_millis(100),
            election_timeout: Duration::from_millis(1000),
            start_timeout: Duration::from_secs(30),
            etcd_bin: None,
            extra_args: Vec::new(),
            tls: None,
            client_hosts: Vec::new(),
        }
    }
}

impl EtcdClusterBuilder {
    /// The client port also listens on `host` (an address of this host, e.g. a bridge's, so
    /// processes in other network namespaces reach the cluster): see
    /// [`EtcdCluster::endpoints_on`].
    pub fn client_host(mut self, host: impl Into<String>) -> Self {
        self.client_hosts.push(host.into());
        self
    }

    /// Number of members (default 1; at least 1).
    pub fn members(mut self, members: usize) -> Self {
        self.members = members;
        self
    }

    /// `--heartbeat-interval` (default 100 ms, etcd's default).
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = interval;
        self
    }

    /// `--election-timeout` (default 1000 ms, etcd's default). etcd requires at least five
    /// heartbeat intervals.
    pub fn election_timeout(mut self, timeout: Duration) -> Self {
        self.election_timeout = timeout;
        self
    }

    /// How long [`EtcdClusterBuilder::start`] waits for every member to be healthy, and
    /// [`EtcdCluster::restart`] for the member to listen (default 30 s).
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// The etcd binary (default: `$FTSD_ETCD_BIN`, else `/usr/bin/etcd` if it exists, else
    /// `etcd` from `PATH`).
    pub fn etcd_bin(mut self, path: impl Into<PathBuf>) -> Self {
        self.etcd_bin = Some(path.into());
        self
    }

    /// An extra command-line argument for every member, e.g. `--log-level=warn` (given after the
    /// harness's own flags, so it wins over them).
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    /// Serve clients over TLS and require client certificates signed by `tls.ca`
    /// (`--client-cert-auth`): endpoints become `https://`. Health is then checked on a plain
    /// HTTP metrics port of each member (`--listen-metrics-urls`); peers stay plaintext.
    pub fn tls(mut self, tls: EtcdTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Bootstraps the cluster; returns once every member reports healthy.
    pub async fn start(self) -> Result<EtcdCluster> {
        if self.members == 0 {
            bail!("an etcd cluster needs at least one member");
        }
        if self.heartbeat_interval.is_zero() || self.election_timeout < self.heartbeat_interval * 5
        {
            bail!(
                "etcd needs a non-zero heartbeat interval and an election timeout of at least \
                 five heartbeats (got {:?} / {:?})",
                self.heartbeat_interval,
                self.election_timeout
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("ftsd-etcd-")
            .tempdir()
            .context("creating the temporary directory")?;
        let etcd_bin = self.etcd_bin.clone().unwrap_or_else(default_etcd_bin);
        let mut cluster = EtcdCluster {
            etcd_bin,
            token: String::new(),
            initial_cluster: String::new(),
            members: Vec::new(),
            cfg: self,
            dir,
        };
        cluster.bootstrap().await?;
        Ok(cluster)
    }
}

/// A running throwaway etcd cluster. See the module documentation.
#[derive(Debug)]
pub struct EtcdCluster {
    cfg: EtcdClusterBuilder,
    etcd_bin: PathBuf,
    token: String,
    initial_cluster: String,
    members: Vec<Member>,
    // Declared last: removed only after `Drop::drop` has killed the members.
    dir: TempDir,
}

#[derive(Debug)]
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    /// Plain HTTP `/health` and `/metrics` when the client port speaks TLS.
    metrics_port: Option<u16>,
    data_dir: PathBuf,
    log_path: PathBuf,
    // Behind a lock so that `&self` queries can reap an exited process.
    child: Mutex<Option<Child>>,
}

impl Member {
    fn endpoint(&self) -> String {
        let scheme = if self.metrics_port.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{LOOPBACK}:{}", self.client_port)
    }

    /// Where `/health` is served over plain HTTP.
    fn health_base(&self) -> String {
        match self.metrics_port {
            Some(port) => format!("http://{LOOPBACK}:{port}"),
            None => self.endpoint(),
        }
    }

    fn peer_url(&self) -> String {
        format!("http://{LOOPBACK}:{}", self.peer_port)
    }

    fn child(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The running process, reaping it first if it has exited.
    fn running(&self) -> MutexGuard<'_, Option<Child>> {
        let mut child = self.child();
        if let Some(c) = child.as_mut() {
            if !matches!(c.try_wait(), Ok(None)) {
                *child = None;
            }
        }
        child
    }

    fn log_tail(&self, n: usize) -> String {
        process::tail(&self.log_path, n)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ClusterState {
    New,
    Existing,
}

impl EtcdCluster {
    /// A builder with defaults: 1 member, heartbeat 100 ms, election timeout 1 s.
    pub fn builder() -> EtcdClusterBuilder {
        EtcdClusterBuilder::default()
    }

    /// Starts a cluster of `members` members with the default settings and waits until every
    /// member is healthy.
    pub async fn start(members: usize) -> Result<EtcdCluster> {
        Self::builder().members(members).start().await
    }

    /// Number of members (running or not).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Always false: a cluster has at least one member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Client URLs of all members, `http://127.0.0.1:<client port>` (`https://` with
    /// [`EtcdClusterBuilder::tls`]), in member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::endpoint).collect()
    }

    /// Client URLs of all members on `host`, one of [`EtcdClusterBuilder::client_host`]'s
    /// addresses.
    pub fn endpoints_on(&self, host: &str) -> Vec<String> {
        self.endpoints()
            .iter()
            .map(|e| e.replacen(LOOPBACK, host, 1))
            .collect()
    }

    /// Client URL of member `i`; stays the same across restarts.
    pub fn member_endpoint(&self, i: usize) -> String {
        self.member(i).endpoint()
    }

    /// Client port of member `i`.
    pub fn client_port(&self, i: usize) -> u16 {
        self.member(i).client_port
    }

    /// Peer port of member `i`.
    pub fn peer_port(&self, i: usize) -> u16 {
        self.member(i).peer_port
    }

    /// The `--name` of member `i` (`m<i>`).
    pub fn member_name(&self, i: usize) -> &str {
        &self.member(i).name
    }

    /// The data directory of member `i` (`<tmp>/m<i>`).
    pub fn data_dir(&self, i: usize) -> &Path {
        &self.member(i).data_dir
    }

    /// The temporary directory holding every member's data directory and log.
    pub fn base_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Process id of member `i`, if it is running (a paused member counts as running).
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.member(i).running().as_ref().map(Child::id)
    }

    /// Whether member `i`'s process is running (reaps it if it has exited on its own).
    pub fn is_running(&self, i: usize) -> bool {
        self.member(i).running().is_some()
    }

    /// SIGKILLs member `i` and reaps it; its data directory stays. A no-op when it is not
    /// running.
    pub fn kill(&mut self, i: usize) -> Result<()> {
        let member = self.member(i);
        match member.child().take() {
            Some(child) => process::stop(child, libc::SIGKILL, Duration::ZERO)
                .with_context(|| format!("killing etcd member {}", member.name)),
            None => Ok(()),
        }
    }

    /// Stops member `i` gracefully (SIGTERM, plus SIGCONT in case it is paused; SIGKILL after
    /// 10 s) and reaps it; its data directory stays. Blocks until the process has exited (a
    /// leader first hands leadership over, which takes up to about an election timeout). A
    /// no-op when it is not running.
    pub fn stop(&mut self, i: usize) -> Result<()> {
        let member = self.member(i);
        match member.child().take() {
            Some(child) => process::stop(child, libc::SIGTERM, STOP_GRACE)
                .with_context(|| format!("stopping etcd member {}", member.name)),
            None => Ok(()),
        }
    }

    /// Freezes member `i` with SIGSTOP: it keeps its sockets but answers nothing, like a hung
    /// machine. Returns once all its threads are stopped (milliseconds). Fails if it is not
    /// running.
    pub fn pause(&mut self, i: usize) -> Result<()> {
        self.signal(i, libc::SIGSTOP)?;
        let member = self.member(i);
        let pid = member.running().as_ref().map(Child::id);
        match pid {
            Some(pid) if process::wait_stopped(pid, PAUSE_TIMEOUT) => Ok(()),
            Some(_) => bail!(
                "etcd member {} did not stop within {PAUSE_TIMEOUT:?} of SIGSTOP",
                member.name
            ),
            None => bail!("etcd member {} exited while being paused", member.name),
        }
    }

    /// Thaws member `i` with SIGCONT. Fails if it is not running.
    pub fn resume(&mut self, i: usize) -> Result<()> {
        self.signal(i, libc::SIGCONT)
    }

    /// Starts the stopped member `i` again with the same name, ports and data directory
    /// (`--initial-cluster-state existing`). Returns once the process listens on its client
    /// port; it does **not** wait for health, since a member can only be healthy together with
    /// a quorum of its peers (use [`EtcdCluster::wait_healthy`]). Fails if the member is running.
    pub async fn restart(&mut self, i: usize) -> Result<()> {
        if self.is_running(i) {
            bail!("etcd member {} is already running", self.member(i).name);
        }
        let mut last = None;
        for _ in 0..RESTART_ATTEMPTS {
            let log_offset = self.launch(i, ClusterState::Existing).await?;
            match self.wait_listening(i, log_offset).await {
                Ok(()) => return Ok(()),
                Err(Launch::PortTaken(e)) => {
                    // Typically some outgoing connection briefly holding the port as its local
                    // port; that goes away quickly.
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(Launch::Failed(e)) => {
                    let _ = self.kill(i);
                    return Err(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("no attempt made")))
            .context(format!("etcd member {i} could not bind its ports"))
    }

    /// One `GET /health` on member `i` (timeout 3 s): true only for `{"health":"true"}`.
    /// Never fails: a stopped, paused or quorum-less member is simply not healthy.
    pub async fn is_healthy(&self, i: usize) -> bool {
        check_health(self.member(i).health_base()).await
    }

    /// Polls member `i`'s `/health` until it is true. Fails early if the process exits, and at
    /// the timeout; errors carry the member's log tail.
    pub async fn wait_healthy(&self, i: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let member = self.member(i);
        loop {
            if !self.is_running(i) {
                bail!(
                    "etcd member {} is not running; log tail:\n{}",
                    member.name,
                    member.log_tail(ERROR_LOG_LINES)
                );
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if let Ok(true) = tokio::time::timeout(remaining, self.is_healthy(i)).await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "etcd member {} ({}) not healthy within {timeout:?}; log tail:\n{}",
                    member.name,
                    member.endpoint(),
                    member.log_tail(ERROR_LOG_LINES)
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls every running member's `/health` until one is true, i.e. the cluster has a leader
    /// and a working quorum; returns that member's index. Errors carry every member's log tail.
    pub async fn wait_quorum(&self, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut checks = tokio::task::JoinSet::new();
            for i in (0..self.len()).filter(|&i| self.is_running(i)) {
                let endpoint = self.member(i).health_base();
                checks.spawn(async move { (i, check_health(endpoint).await) });
            }
            let any_healthy = async {
                while let Some(done) = checks.join_next().await {
                    if let Ok((i, true)) = done {
                        return Some(i);
                    }
                }
                None
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            if let Ok(Some(i)) = tokio::time::timeout(remaining, any_healthy).await {
                return Ok(i);
            }
            if Instant::now() >= deadline {
                bail!(
                    "no etcd member reported a healthy quorum within {timeout:?}\n{}",
                    self.all_log_tails(ERROR_LOG_LINES)
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The last `n` lines of member `i`'s log (all its starts).
    pub fn log_tail(&self, i: usize, n: usize) -> String {
        self.member(i).log_tail(n)
    }

    fn member(&self, i: usize) -> &Member {
        match self.members.get(i) {
            Some(member) => member,
            None => panic!(
                "etcd member index {i} out of range (cluster of {})",
                self.members.len()
            ),
        }
    }

    fn signal(&mut self, i: usize, signal: libc::c_int) -> Result<()> {
        let member = self.member(i);
        match member.running().as_ref() {
            Some(child) => process::signal(child, signal)
                .with_context(|| format!("signalling etcd member {}", member.name)),
            None => bail!("etcd member {} is not running", member.name),
        }
    }

    fn kill_all(&mut self) {
        for i in 0..self.members.len() {
            if let Err(e) = self.kill(i) {
                tracing::warn!("testkit: {e:#}");
            }
        }
    }

    fn all_log_tails(&self, n: usize) -> String {
        self.members
            .iter()
            .map(|m| {
                format!(
                    "--- {} ({}) log tail:\n{}\n",
                    m.name,
                    m.endpoint(),
                    m.log_tail(n)
                )
            })
            .collect()
    }

    /// Fresh members on fresh ports, all launched, all healthy; on a port clash everything is
    /// killed, wiped and retried on new ports.
    async fn bootstrap(&mut self) -> Result<()> {
        let deadline = Instant::now() + self.cfg.start_timeout;
        let n = self.cfg.members;
        let mut last = None;
        for attempt in 0..BOOTSTRAP_ATTEMPTS {
            self.kill_all();
            let per = if self.cfg.tls.is_some() { 3 } else { 2 };
            let ports = free_ports(per * n)?;
            let tls = self.cfg.tls.is_some();
            self.members = (0..n)
                .map(|i| Member {
                    name: format!("m{i}"),
                    client_port: ports[per * i],
                    peer_port: ports[per * i + 1],
                    metrics_port: tls.then(|| ports[per * i + 2]),
                    data_dir: self.dir.path().join(format!("m{i}")),
                    log_path: self.dir.path().join(format!("m{i}.log")),
                    child: Mutex::new(None),
                })
                .collect();
            for member in &self.members {
                if member.data_dir.exists() {
                    fs::remove_dir_all(&member.data_dir)
                        .with_context(|| format!("wiping {}", member.data_dir.display()))?;
                }
                // A log of a failed attempt would only confuse.
                let _ = fs::remove_file(&member.log_path);
            }
            self.token = unique_token(attempt);
            self.initial_cluster = self
                .members
                .iter()
                .map(|m| format!("{}={}", m.name, m.peer_url()))
                .collect::<Vec<_>>()
                .join(",");

            for i in 0..n {
                if let Err(e) = self.launch(i, ClusterState::New).await {
                    self.kill_all();
                    return Err(e);
                }
            }
            match self.wait_all_healthy(deadline).await {
                Ok(()) => return Ok(()),
                Err(Launch::PortTaken(e)) if Instant::now() < deadline => last = Some(e),
                Err(Launch::PortTaken(e)) | Err(Launch::Failed(e)) => {
                    self.kill_all();
                    return Err(e);
                }
            }
        }
        self.kill_all();
        Err(last.unwrap_or_else(|| anyhow!("no attempt made"))).context(format!(
            "etcd could not bind its ports in {BOOTSTRAP_ATTEMPTS} attempts"
        ))
    }

    async fn wait_all_healthy(&self, deadline: Instant) -> Result<(), Launch> {
        let mut pending: Vec<usize> = (0..self.len()).collect();
        loop {
            for &i in &pending {
                if !self.is_running(i) {
                    return Err(self.exited_error(i, 0));
                }
            }
            let mut checks = tokio::task::JoinSet::new();
            for &i in &pending {
                let endpoint = self.member(i).health_base();
                checks.spawn(async move { (i, check_health(endpoint).await) });
            }
            while let Some(done) = checks.join_next().await {
                if let Ok((i, true)) = done {
                    pending.retain(|&p| p != i);
                }
            }
            if pending.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Launch::Failed(anyhow!(
                    "etcd cluster of {} not healthy within {:?} (members still unhealthy: {:?})\n{}",
                    self.len(),
                    self.cfg.start_timeout,
                    pending
                        .iter()
                        .map(|&i| self.member(i).name.as_str())
                        .collect::<Vec<_>>(),
                    self.all_log_tails(ERROR_LOG_LINES)
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// After a restart: waits until the client port accepts connections (etcd binds the peer
    /// port before the client port and exits if either bind fails).
    async fn wait_listening(&self, i: usize, log_offset: u64) -> Result<(), Launch> {
        let deadline = Instant::now() + self.cfg.start_timeout;
        let addr = (LOOPBACK, self.member(i).client_port);
        loop {
            if !self.is_running(i) {
                return Err(self.exited_error(i, log_offset));
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() && self.is_running(i) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Launch::Failed(anyhow!(
                    "etcd member {i} did not listen on port {} within {:?}; log tail:\n{}",
                    addr.1,
                    self.cfg.start_timeout,
                    self.log_tail(i, ERROR_LOG_LINES)
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The error for a member that exited while starting; [`Launch::PortTaken`] when its log
    /// (from `log_offset` on) shows a bind failure.
    fn exited_error(&self, i: usize, log_offset: u64) -> Launch {
        let member = self.member(i);
        let output = read_from(&member.log_path, log_offset);
        let err = anyhow!(
            "etcd member {} exited while starting (client port {}, peer port {}); its output:\n{}",
            member.name,
            member.client_port,
            member.peer_port,
            head_and_tail(&output, 5, ERROR_LOG_LINES)
        );
        if output.contains("address already in use") {
            Launch::PortTaken(err)
        } else {
            Launch::Failed(err)
        }
    }

    /// Spawns member `i` (without waiting for anything but the fork); returns the length its log
    /// had before, so that only this start's output is searched for a bind failure.
    async fn launch(&mut self, i: usize, state: ClusterState) -> Result<u64> {
        let member = self.member(i);
        let log_offset = process::file_len(&member.log_path);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&member.log_path)
            .context("opening the etcd log")?;
        let stdout = log.try_clone().context("duplicating the log handle")?;

        let mut cmd = Command::new(&self.etcd_bin);
        cmd.arg("--name")
            .arg(&member.name)
            .arg("--data-dir")
            .arg(&member.data_dir)
            .arg("--listen-client-urls")
            .arg(
                std::iter::once(member.endpoint())
                    .chain(
                        self.cfg
                            .client_hosts
                            .iter()
                            .map(|h| member.endpoint().replacen(LOOPBACK, h, 1)),
                    )
                    .collect::<Vec<_>>()
                    .join(","),
            )
            .arg("--advertise-client-urls")
            .arg(member.endpoint())
            .arg("--listen-peer-urls")
            .arg(member.peer_url())
            .arg("--initial-advertise-peer-urls")
            .arg(member.peer_url())
            .arg("--initial-cluster")
            .arg(&self.initial_cluster)
            .arg("--initial-cluster-state")
            .arg(match state {
                ClusterState::New => "new",
                ClusterState::Existing => "existing",
            })
            .arg("--initial-cluster-token")
            .arg(&self.token)
            .arg("--heartbeat-interval")
            .arg(self.cfg.heartbeat_interval.as_millis().to_string())
            .arg("--election-timeout")
            .arg(self.cfg.election_timeout.as_millis().to_string())
            .args(["--logger", "zap", "--log-outputs", "stderr"]);
        if let (Some(tls), Some(port)) = (&self.cfg.tls, member.metrics_port) {
            cmd.arg("--cert-file")
                .arg(&tls.cert)
                .arg("--key-file")
                .arg(&tls.key)
                .arg("--trusted-ca-file")
                .arg(&tls.ca)
                .arg("--client-cert-auth")
                .arg("--listen-metrics-urls")
                .arg(format!("http://{LOOPBACK}:{port}"));
        }
        cmd.args(&self.cfg.extra_args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log);
        // etcd reads ETCD_<FLAG> variables; keep the caller's environment out of the cluster.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ETCD_") {
                cmd.env_remove(key);
            }
        }
        let child = spawn_tied_to_process(cmd)
            .await
            .with_context(|| format!("starting {}", self.etcd_bin.display()))?;
        *member.child() = Some(child);
        Ok(log_offset)
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        // SIGKILL everyone first, then reap: faster than one by one and no member outlives a
        // peer long enough to notice.
        for member in &self.members {
            if let Some(child) = member.child().as_ref() {
                let _ = process::signal(child, libc::SIGKILL);
            }
        }
        self.kill_all();
        // `self.dir` (TempDir) is dropped after this and removes the directory.
    }
}

/// The first `head` and last `tail` lines of `text` (etcd reports a bad flag on its first line,
/// followed by a long usage text).
fn head_and_tail(text: &str, head: usize, tail: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() <= head + tail {
        return lines.join("\n");
    }
    format!(
        "{}\n[... {} lines ...]\n{}",
        lines[..head].join("\n"),
        lines.len() - head - tail,
        lines[lines.len() - tail..].join("\n")
    )
}

fn default_etcd_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os(ETCD_BIN_ENV).filter(|v| !v.is_empty()) {
        return bin.into();
    }
    if Path::new(DEFAULT_ETCD_BIN).is_file() {
        return DEFAULT_ETCD_BIN.into();
    }
    "etcd".into()
}

fn unique_token(attempt: usize) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "ftsd-testkit-{}-{}-{attempt}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// `GET <endpoint>/health` on a blocking thread; true only for status 200 and
/// `{"health":"true"}`.
async fn check_health(endpoint: String) -> bool {
    tokio::task::spawn_blocking(move || health_blocking(&endpoint).unwrap_or(false))
        .await
        .unwrap_or(false)
}

fn health_blocking(endpoint: &str) -> Result<bool> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(HEALTH_REQUEST_TIMEOUT))
        .http_status_as_error(false)
        .proxy(None)
        .build()
        .into();
    let mut response = agent.get(format!("{endpoint}/health")).call()?;
    if response.status() != 200 {
        return Ok(false);
    }
    let body: serde_json::Value = response.body_mut().read_json()?;
    Ok(body.get("health").and_then(|h| h.as_str()) == Some("true"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_and_tail_elides_the_middle() {
        let text: String = (1..=10).map(|i| format!("{i}\n")).collect();
        assert_eq!(head_and_tail(&text, 2, 2), "1\n2\n[... 6 lines ...]\n9\n10");
        assert_eq!(head_and_tail("a\nb", 2, 2), "a\nb");
    }

    #[test]
    fn tokens_are_unique() {
        assert_ne!(unique_token(0), unique_token(0));
    }

    #[tokio::test]
    async fn rejects_bad_settings() {
        let err = EtcdCluster::builder().members(0).start().await.unwrap_err();
        assert!(err.to_string().contains("at least one member"), "{err}");
        let err = EtcdCluster::builder()
            .heartbeat_interval(Duration::from_millis(100))
            .election_timeout(Duration::from_millis(300))
            .start()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("five heartbeats"), "{err}");
    }

    #[tokio::test]
    async fn nothing_listening_is_unhealthy() {
        let port = process::free_port().unwrap();
        assert!(!check_health(format!("http://{LOOPBACK}:{port}")).await);
    }
}
