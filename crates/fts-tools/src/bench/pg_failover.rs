//! `fts-bench pg-failover`: a real PostgreSQL pair managed by `ftsd` with the `postgres`
//! driver; kill -9 the primary's postmaster and measure until the promoted standby commits a
//! write. Each run uses a fresh pair and a fresh daemon, and kills at a varying phase of the
//! probe cycle.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};

use fts_testkit::pg::PgServer;
use fts_testkit::pgpair::{PgPair, PROBE_PASSWORD, PROBE_ROLE};
use ftsd::catalog::schema;

/// Probe settings of the measured daemon.
#[derive(Debug, Clone, Copy)]
pub struct PgFailoverSettings {
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub retry_delay: Duration,
    /// `probe.min_down`.
    pub min_down: Duration,
}

fn config(
    s: &PgFailoverSettings,
    catalog: &PgServer,
    dir: &std::path::Path,
) -> anyhow::Result<String> {
    let pw = dir.join("probe.password");
    std::fs::write(&pw, PROBE_PASSWORD)?;
    Ok(format!(
        r#"cluster = "bench"
instance_id = "bench"
[probe]
driver = "postgres"
interval = "{interval}"
timeout = "{timeout}"
retries = {retries}
retry_delay = "{retry_delay}"
min_down = "{min_down}"
user = "{PROBE_ROLE}"
password_file = "{pw}"
[catalog]
url = "{url}"
[api]
listen = "127.0.0.1:{api}"
metrics_listen = "127.0.0.1:{metrics}"
[log]
level = "info"
"#,
        interval = humantime::format_duration(s.interval),
        timeout = humantime::format_duration(s.timeout),
        retries = s.retries,
        retry_delay = humantime::format_duration(s.retry_delay),
        min_down = humantime::format_duration(s.min_down),
        pw = pw.display(),
        url = catalog.url(),
        api = super::free_port()?,
        metrics = super::free_port()?,
    ))
}

/// A pseudo-random fraction in [0, 1) from the clock, to spread the kill over the cycle.
pub(crate) fn jitter() -> f64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    f64::from(nanos % 1_000_000) / 1_000_000.0
}

/// One INSERT on `server` within `limit`; Ok(false) while it is read-only or unreachable.
pub(crate) async fn try_write(server: &PgServer, limit: Duration) -> bool {
    let attempt = async {
        let client = server.client().await.ok()?;
        client
            .batch_execute("INSERT INTO bench_t VALUES (now())")
            .await
            .ok()
    };
    matches!(tokio::time::timeout(limit, attempt).await, Ok(Some(())))
}

/// Runs `runs` kill -9 failovers; returns kill → first committed write on the standby.
pub async fn run(s: PgFailoverSettings, runs: usize) -> anyhow::Result<Vec<Duration>> {
    let dir = tempfile::tempdir()?;
    let catalog = PgServer::builder().start().await?;
    schema::init(&mut catalog.client().await?).await?;
    let ftsd = std::env::current_exe()?
        .parent()
        .context("exe dir")?
        .join("ftsd");
    let config_path = dir.path().join("ftsd.toml");
    std::fs::write(&config_path, config(&s, &catalog, dir.path())?)?;
    let mut samples = Vec::with_capacity(runs);
    for run in 0..runs {
        let mut pair = PgPair::start("seg0").await?;
        pair.primary
            .client()
            .await?
            .batch_execute("CREATE TABLE bench_t (at timestamptz)")
            .await?;
        fts_segsim::catalog::write_catalog(&catalog.url(), &pair.segments(0, 2, 3)).await?;
        let log = dir.path().join(format!("ftsd-{run}.log"));
        let mut child: Child = Command::new(&ftsd)
            .args(["run", "--no-election", "--config"])
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting ftsd")?;
        // two healthy cycles, then a kill at a varying point of the cycle
        tokio::time::sleep(s.interval * 2 + s.interval.mul_f64(jitter())).await;
        let t0 = Instant::now();
        pair.primary.kill()?;
        let took = loop {
            if try_write(&pair.standby, Duration::from_millis(500)).await {
                break t0.elapsed();
            }
            if t0.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                bail!(
                    "run {run}: no failover within 60s; ftsd log in {}",
                    log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let _ = child.kill();
        let _ = child.wait();
        eprintln!(
            "run {:>2}: kill -9 -> promoted standby committed a write after {:>7.1} ms",
            run + 1,
            took.as_secs_f64() * 1000.0
        );
        samples.push(took);
    }
    Ok(samples)
}
