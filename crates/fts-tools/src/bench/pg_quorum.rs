//! `fts-bench pg-failover --instances N` (N > 1): the failover of a real PostgreSQL pair by
//! several elected `ftsd` instances with the second opinion on (`observe.mode`), a real etcd
//! and a real catalog; and, with `--flaps`, the flapping check: short outages of the same
//! primary under the same configuration must fail nothing over.
//!
//! Each kill run starts a fresh pair and fresh daemons (new instance ids, so no run waits for
//! the previous run's members to expire), waits for a leader and its followers, lets them run
//! two intervals plus a varying fraction of one, `kill -9`s the primary's postmaster and
//! measures until the promoted standby commits a write.
//!
//! The flapping check registers the primary behind a small TCP proxy of this process, so that
//! its port can refuse connections for a moment (the proxy closes its listening socket: new
//! connections are refused exactly as after a kill) without stopping the server; the other
//! kind of flap freezes the postmaster (SIGSTOP, then SIGCONT). Flaps alternate between the
//! two, last 100–300 ms each (drawn at random), with 1–2 s of health between them.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::pg_failover::{jitter, try_write, PgFailoverSettings};
use fts_testkit::etcd::EtcdCluster;
use fts_testkit::pg::PgServer;
use fts_testkit::pgpair::{is_primary, PgPair, PROBE_PASSWORD, PROBE_ROLE};
use ftsd::catalog::schema;
use ftsd::election::members::{list, MemberInfo};

/// The second opinion's settings of the measured daemons.
#[derive(Debug, Clone)]
pub struct QuorumSettings {
    pub instances: usize,
    /// `observe.mode`: `continuous` or `on-demand`.
    pub observe: String,
    /// `etcd.lease_ttl`.
    pub lease_ttl: Duration,
    /// Keep the daemons' logs (and configurations) after a successful bench too.
    pub keep_logs: bool,
}

const CLUSTER: &str = "bench";

fn config(
    name: &str,
    s: &PgFailoverSettings,
    q: &QuorumSettings,
    catalog: &PgServer,
    etcd: &EtcdCluster,
    password_file: &std::path::Path,
) -> anyhow::Result<String> {
    Ok(format!(
        r#"cluster = "{CLUSTER}"
instance_id = "{name}"
[probe]
driver = "postgres"
interval = "{interval}"
timeout = "{timeout}"
retries = {retries}
retry_delay = "{retry_delay}"
min_down = "{min_down}"
user = "{PROBE_ROLE}"
password_file = "{pw}"
[observe]
mode = "{observe}"
{tables}"#,
        interval = humantime::format_duration(s.interval),
        timeout = humantime::format_duration(s.timeout),
        retries = s.retries,
        retry_delay = humantime::format_duration(s.retry_delay),
        min_down = humantime::format_duration(s.min_down),
        observe = q.observe,
        pw = password_file.display(),
        tables = super::elected_tables(&catalog.url(), &etcd.endpoints(), q.lease_ttl, "info")?,
    ))
}

async fn members(etcd: &EtcdCluster) -> Vec<MemberInfo> {
    match etcd_client::Client::connect(etcd.endpoints(), None).await {
        Ok(mut c) => list(&mut c, &format!("/ftsd/{CLUSTER}/members/"))
            .await
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

/// The running daemons of one run.
struct Daemons {
    children: Vec<Child>,
    names: Vec<String>,
    logs: Vec<std::path::PathBuf>,
}

impl Daemons {
    fn spawn(
        tag: &str,
        s: &PgFailoverSettings,
        q: &QuorumSettings,
        catalog: &PgServer,
        etcd: &EtcdCluster,
        dir: &std::path::Path,
    ) -> anyhow::Result<Daemons> {
        let ftsd = std::env::current_exe()?
            .parent()
            .context("exe dir")?
            .join("ftsd");
        let pw = dir.join("probe.password");
        std::fs::write(&pw, PROBE_PASSWORD)?;
        let mut d = Daemons {
            children: Vec::new(),
            names: Vec::new(),
            logs: Vec::new(),
        };
        for i in 0..q.instances {
            let name = format!("{tag}-fts{i}");
            let path = dir.join(format!("{name}.toml"));
            std::fs::write(&path, config(&name, s, q, catalog, etcd, &pw)?)?;
            let log = dir.join(format!("{name}.log"));
            let child = Command::new(&ftsd)
                .args(["run", "--config"])
                .arg(&path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log)?)
                .spawn()
                .context("starting ftsd")?;
            d.children.push(child);
            d.names.push(name);
            d.logs.push(log);
        }
        Ok(d)
    }

    /// Waits for every instance to be registered, one of them leading with a cycle done.
    async fn settled(&self, etcd: &EtcdCluster, limit: Duration) -> anyhow::Result<String> {
        let start = Instant::now();
        loop {
            let m: Vec<MemberInfo> = members(etcd)
                .await
                .into_iter()
                .filter(|m| self.names.contains(&m.instance_id))
                .collect();
            let leaders: Vec<_> = m.iter().filter(|m| m.role == "leader").collect();
            if m.len() == self.names.len()
                && leaders.len() == 1
                && leaders[0].last_cycle_at.is_some()
            {
                return Ok(leaders[0].instance_id.clone());
            }
            if start.elapsed() > limit {
                bail!(
                    "the instances did not settle within {limit:?}; logs: {}",
                    self.logs[0].display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM (a leader resigns), then SIGKILL whatever is left after 5 s.
    fn stop(mut self) {
        for c in &self.children {
            // SAFETY: signalling our own child process.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for c in &mut self.children {
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        self.children.clear();
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A fresh catalog and etcd shared by the runs.
struct Bench {
    dir: tempfile::TempDir,
    catalog: PgServer,
    etcd: EtcdCluster,
}

impl Bench {
    async fn start() -> anyhow::Result<Bench> {
        let dir = tempfile::tempdir()?;
        let etcd = EtcdCluster::start(1).await?;
        let catalog = PgServer::builder().start().await?;
        schema::init(&mut catalog.client().await?).await?;
        Ok(Bench { dir, catalog, etcd })
    }

    /// Keeps the logs of a failed bench (the temporary directory would delete them).
    fn keep(self) -> std::path::PathBuf {
        self.dir.keep()
    }

    /// At the end of a successful bench: keeps the logs when asked to.
    fn finish(self, keep_logs: bool) {
        if keep_logs {
            eprintln!("logs kept in {}", self.keep().display());
        }
    }
}

/// Runs `runs` kill -9 failovers with `q.instances` daemons; returns kill → first committed
/// write on the promoted standby.
pub async fn run(
    s: PgFailoverSettings,
    q: &QuorumSettings,
    runs: usize,
) -> anyhow::Result<Vec<Duration>> {
    let bench = Bench::start().await?;
    let mut samples = Vec::with_capacity(runs);
    for run in 0..runs {
        match one_kill(&bench, &s, q, run).await {
            Ok(took) => {
                eprintln!(
                    "run {:>2}: kill -9 -> promoted standby committed a write after {:>7.1} ms",
                    run + 1,
                    took.as_secs_f64() * 1000.0
                );
                samples.push(took);
            }
            Err(e) => {
                let kept = bench.keep();
                bail!("run {}: {e:#}; logs kept in {}", run + 1, kept.display());
            }
        }
    }
    bench.finish(q.keep_logs);
    Ok(samples)
}

async fn one_kill(
    bench: &Bench,
    s: &PgFailoverSettings,
    q: &QuorumSettings,
    run: usize,
) -> anyhow::Result<Duration> {
    let mut pair = PgPair::start("seg0").await?;
    pair.primary
        .client()
        .await?
        .batch_execute("CREATE TABLE bench_t (at timestamptz)")
        .await?;
    fts_segsim::catalog::write_catalog(&bench.catalog.url(), &pair.segments(0, 2, 3)).await?;
    let daemons = Daemons::spawn(
        &format!("r{run}"),
        s,
        q,
        &bench.catalog,
        &bench.etcd,
        bench.dir.path(),
    )?;
    daemons
        .settled(&bench.etcd, q.lease_ttl * 4 + Duration::from_secs(20))
        .await?;
    // Two intervals: the followers have observed (continuous mode); then a kill at a varying
    // point of the cycle.
    tokio::time::sleep(s.interval * 2 + s.interval.mul_f64(jitter())).await;
    let t0 = Instant::now();
    pair.primary.kill()?;
    let took = loop {
        if try_write(&pair.standby, Duration::from_millis(500)).await {
            break t0.elapsed();
        }
        if t0.elapsed() > Duration::from_secs(60) {
            bail!("no failover within 60s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    daemons.stop();
    Ok(took)
}

/// What the flapping check saw.
#[derive(Debug, Default)]
pub struct FlapReport {
    /// Flaps made, by kind: (refused port, frozen postmaster).
    pub refused: usize,
    pub frozen: usize,
    /// Shortest and longest flap as made (the wall time between the two edges).
    pub shortest: Duration,
    pub longest: Duration,
    /// Catalog transitions written during the check (must be 0).
    pub transitions: i64,
    /// Failover decisions the leader refused during the check, by reason (evidence rows).
    pub refusals: Vec<(String, i64)>,
    /// Whether the primary was still the writable primary, and the standby still in
    /// recovery, at the end.
    pub primary_kept: bool,
    pub standby_kept: bool,
}

/// The flapping check: `flaps` short outages of the primary, alternating a refused port and
/// a frozen postmaster, each 100–300 ms, 1–2 s apart; then three quiet intervals.
pub async fn flaps(
    s: PgFailoverSettings,
    q: &QuorumSettings,
    flaps: usize,
) -> anyhow::Result<FlapReport> {
    let bench = Bench::start().await?;
    match flap_check(&bench, &s, q, flaps).await {
        Ok(r) => {
            bench.finish(q.keep_logs);
            Ok(r)
        }
        Err(e) => {
            let kept = bench.keep();
            bail!("flapping check: {e:#}; logs kept in {}", kept.display());
        }
    }
}

async fn flap_check(
    bench: &Bench,
    s: &PgFailoverSettings,
    q: &QuorumSettings,
    flaps: usize,
) -> anyhow::Result<FlapReport> {
    let pair = PgPair::start("seg0").await?;
    let upstream: SocketAddr = format!("127.0.0.1:{}", pair.primary.port()).parse()?;
    let proxy = FlapProxy::start(upstream).await?;
    let mut rows = pair.segments(0, 2, 3);
    rows[0].port = i32::from(proxy.port);
    fts_segsim::catalog::write_catalog(&bench.catalog.url(), &rows).await?;
    let daemons = Daemons::spawn("flap", s, q, &bench.catalog, &bench.etcd, bench.dir.path())?;
    daemons
        .settled(&bench.etcd, q.lease_ttl * 4 + Duration::from_secs(20))
        .await?;
    tokio::time::sleep(s.interval * 2).await;
    let client = bench.catalog.client().await?;
    let count = |sql: &'static str| {
        let client = &client;
        async move {
            let row = client.query_one(sql, &[]).await?;
            anyhow::Ok(row.get::<_, i64>(0))
        }
    };
    let history_before = count("SELECT count(*) FROM gp_configuration_history").await?;
    let evidence_before = count("SELECT coalesce(max(id), 0) FROM fts_evidence").await?;
    let pid = pair.primary.pid().context("the primary is not running")? as i32;
    let mut report = FlapReport {
        shortest: Duration::MAX,
        ..FlapReport::default()
    };
    for i in 0..flaps {
        tokio::time::sleep(
            Duration::from_millis(1000) + Duration::from_millis(1000).mul_f64(jitter()),
        )
        .await;
        let length = Duration::from_millis(100) + Duration::from_millis(200).mul_f64(jitter());
        let began = Instant::now();
        if i % 2 == 0 {
            proxy.refuse(true);
            tokio::time::sleep(length).await;
            proxy.refuse(false);
            report.refused += 1;
        } else {
            // SAFETY: signalling the postmaster this bench started.
            unsafe { libc::kill(pid, libc::SIGSTOP) };
            tokio::time::sleep(length).await;
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGCONT) };
            report.frozen += 1;
        }
        let made = began.elapsed();
        report.shortest = report.shortest.min(made);
        report.longest = report.longest.max(made);
        eprintln!(
            "flap {:>2}: {} for {:>5.1} ms",
            i + 1,
            if i % 2 == 0 {
                "port refused"
            } else {
                "postmaster frozen"
            },
            made.as_secs_f64() * 1000.0
        );
    }
    // Quiet intervals: a failover decided from the last flap would land within them.
    tokio::time::sleep(s.interval * 3).await;
    report.transitions =
        count("SELECT count(*) FROM gp_configuration_history").await? - history_before;
    let refusals = client
        .query(
            "SELECT coalesce(evidence->>'refusal', rule), count(*) FROM fts_evidence \
             WHERE id > $1 AND rule <> 'failover' GROUP BY 1 ORDER BY 1",
            &[&evidence_before],
        )
        .await?;
    report.refusals = refusals
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
        .collect();
    report.primary_kept = is_primary(&pair.primary).await.unwrap_or(false);
    report.standby_kept = !is_primary(&pair.standby).await.unwrap_or(true);
    daemons.stop();
    if report.shortest == Duration::MAX {
        report.shortest = Duration::ZERO;
    }
    Ok(report)
}

/// A TCP proxy in front of the primary whose listening socket can be closed for a moment:
/// while closed, connections to its port are refused, as by a killed server.
struct FlapProxy {
    port: u16,
    open: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl FlapProxy {
    async fn start(upstream: SocketAddr) -> anyhow::Result<FlapProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (open, mut watch) = watch::channel(true);
        let task = tokio::spawn(async move {
            let mut listener = Some(listener);
            loop {
                match listener.take() {
                    Some(l) => {
                        let accepted = tokio::select! {
                            accepted = l.accept() => Some(accepted),
                            changed = watch.changed() => {
                                if changed.is_err() {
                                    return;
                                }
                                None
                            }
                        };
                        match accepted {
                            Some(Ok((mut client, _))) => {
                                tokio::spawn(async move {
                                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                                        let _ =
                                            tokio::io::copy_bidirectional(&mut client, &mut server)
                                                .await;
                                    }
                                });
                                listener = Some(l);
                            }
                            Some(Err(_)) => listener = Some(l),
                            // Closed: dropping `l` refuses new connections.
                            None if !*watch.borrow_and_update() => drop(l),
                            None => listener = Some(l),
                        }
                    }
                    None => {
                        if watch.changed().await.is_err() {
                            return;
                        }
                        if *watch.borrow_and_update() {
                            // Open again on the same port (SO_REUSEADDR: the connections
                            // just closed do not hold it).
                            loop {
                                match TcpListener::bind(("127.0.0.1", port)).await {
                                    Ok(l) => {
                                        listener = Some(l);
                                        break;
                                    }
                                    Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                                }
                            }
                        }
                    }
                }
            }
        });
        Ok(FlapProxy { port, open, task })
    }

    fn refuse(&self, refuse: bool) {
        let _ = self.open.send(!refuse);
    }
}

impl Drop for FlapProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
