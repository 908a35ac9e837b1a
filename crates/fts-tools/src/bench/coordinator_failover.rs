//! `fts-bench coordinator-failover`: the coordinator pair on two network-namespace hosts with
//! `ftsd vip-agent` moving the virtual IP (`fts_testkit::vipnet`, the set-up of
//! `tests/coordinator_vip.rs`), three elected `ftsd` watching it with
//! `coordinator.auto_failover = true`, and a client writing through the VIP. Each run kills
//! the coordinator's postmaster with SIGKILL and measures until the client's first write
//! commits through the VIP on the promoted standby, with the split read from etcd's history
//! records and from the host's interface. Every run starts from scratch (LAN, etcd, pair,
//! catalog, daemons) and kills at a varying phase of the probe round. Needs root.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use etcd_client::GetOptions;

use fts_segsim::{SimConfig, Simulator};
use fts_testkit::pg::PgServer;
use fts_testkit::pgpair::{PROBE_PASSWORD, PROBE_ROLE};
use fts_testkit::vipnet::{postmaster_start_time, CoordinatorLan, VipWriter};
use ftsd::catalog::schema;
use ftsd::coordinator::records::HistoryRecord;

/// The watching daemons' settings.
#[derive(Debug, Clone, Copy)]
pub struct CoordinatorFailoverSettings {
    /// `coordinator.interval`.
    pub interval: Duration,
    /// `coordinator.timeout`.
    pub timeout: Duration,
    /// `coordinator.retries`.
    pub retries: u32,
    /// `probe.retry_delay` (also between the coordinator's attempts).
    pub retry_delay: Duration,
    /// `etcd.lease_ttl`.
    pub lease_ttl: Duration,
    /// ftsd instances.
    pub instances: usize,
}

/// One run, every figure from the kill.
#[derive(Debug, Clone, Copy)]
pub struct CoordinatorFailoverSample {
    /// The leader recorded its failover intent (loss confirmed, decision taken).
    pub intent: Duration,
    /// The leader recorded the outcome (standby promoted and verified).
    pub promoted: Duration,
    /// The VIP seen on the standby's host.
    pub vip: Duration,
    /// The client's first write committed through the VIP on the promoted standby.
    pub write: Duration,
    /// Writes the client saw acknowledged, and how many of them the new coordinator lacks.
    pub acked: usize,
    pub lost: usize,
}

/// Kills `Child`ren on drop (also on an error or a panic mid-run).
struct Daemons(Vec<Child>);

impl Drop for Daemons {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn config(
    s: &CoordinatorFailoverSettings,
    name: &str,
    net: &CoordinatorLan,
    catalog: &PgServer,
    dir: &Path,
) -> anyhow::Result<String> {
    let pw = dir.join("coordinator.password");
    Ok(format!(
        r#"cluster = "bench"
instance_id = "{name}"
[probe]
interval = "1s"
timeout = "500ms"
retries = 2
retry_delay = "{retry_delay}"
[coordinator]
primary = "{primary}"
standby = "{standby}"
interval = "{interval}"
timeout = "{timeout}"
retries = {retries}
user = "{PROBE_ROLE}"
password_file = "{pw}"
promote_timeout = "30s"
auto_failover = true
{tables}"#,
        retry_delay = humantime::format_duration(s.retry_delay),
        primary = net.primary_addr(),
        standby = net.standby_addr(),
        interval = humantime::format_duration(s.interval),
        timeout = humantime::format_duration(s.timeout),
        retries = s.retries,
        pw = pw.display(),
        tables = super::elected_tables(&catalog.url(), &net.etcd_endpoints(), s.lease_ttl, "info")?,
    ))
}

/// A pseudo-random fraction in [0, 1) from the clock, to spread the kill over the round.
fn jitter() -> f64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    f64::from(nanos % 1_000_000) / 1_000_000.0
}

async fn history(net: &CoordinatorLan) -> anyhow::Result<Vec<HistoryRecord>> {
    let mut c = etcd_client::Client::connect(net.etcd_endpoints(), None).await?;
    let resp = c
        .get(
            "/ftsd/bench/coordinator/history/",
            Some(GetOptions::new().with_prefix()),
        )
        .await?;
    resp.kvs()
        .iter()
        .map(|kv| serde_json::from_slice(kv.value()).context("a history record"))
        .collect()
}

/// Polls `check` every 20 ms until it returns Some, for at most `limit`.
async fn poll<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if start.elapsed() > limit {
            bail!("{what}: not within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// µs since the epoch of `t`.
fn epoch_us(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

fn after(kill_us: i64, us: i64) -> Duration {
    Duration::from_micros(u64::try_from(us - kill_us).unwrap_or(0))
}

async fn one_run(
    s: &CoordinatorFailoverSettings,
    ftsd: &Path,
    dir: &Path,
) -> anyhow::Result<CoordinatorFailoverSample> {
    const LIMIT: Duration = Duration::from_secs(60);
    let mut net = CoordinatorLan::start().await?;
    net.pair
        .primary
        .client()
        .await?
        .batch_execute("CREATE TABLE writes (id bigint PRIMARY KEY)")
        .await?;
    let catalog = PgServer::builder().start().await?;
    schema::init(&mut catalog.client().await?).await?;
    let sim = Simulator::start(SimConfig {
        pairs: 2,
        ..SimConfig::default()
    })
    .await?;
    fts_segsim::catalog::write_catalog(&catalog.url(), &sim.segments()).await?;
    net.spawn_agents(ftsd, dir, "bench").await?;

    // Written once: a daemon reading it while it is rewritten would find it empty.
    std::fs::write(dir.join("coordinator.password"), PROBE_PASSWORD)?;
    let mut daemons = Daemons(Vec::new());
    let mut logs = Vec::new();
    for i in 0..s.instances {
        let name = format!("fts{i}");
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, config(s, &name, &net, &catalog, dir)?)?;
        let log = dir.join(format!("{name}.log"));
        daemons.0.push(
            Command::new(ftsd)
                .args(["run", "--config"])
                .arg(&path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log)?)
                .spawn()
                .context("starting ftsd")?,
        );
        logs.push(log);
    }
    poll(
        "every instance to see the standby in sync",
        LIMIT,
        || async {
            logs.iter()
                .all(|l| {
                    std::fs::read_to_string(l)
                        .unwrap_or_default()
                        .contains("the coordinator's standby is in sync")
                })
                .then_some(())
        },
    )
    .await?;
    // The leader records the coordinator as acting in its first round; its host's agent then
    // takes the address.
    poll("the VIP on the coordinator's host", LIMIT, || async {
        (net.holds_vip(0) && !net.holds_vip(1)).then_some(())
    })
    .await
    .with_context(|| net.agent_logs())?;
    let writer = VipWriter::start(net.vip_config());
    poll("writes through the VIP", LIMIT, || async {
        (writer.acked().len() >= 20).then_some(())
    })
    .await?;
    let new = postmaster_start_time(&net.pair.standby).await?;
    // A varying phase of the probe round.
    tokio::time::sleep(s.interval.mul_f64(jitter())).await;

    let killed = Instant::now();
    let kill_us = epoch_us(SystemTime::now());
    net.pair.primary.kill()?;
    let vip = std::cell::Cell::new(None);
    let first = poll(
        "the first write through the VIP on the new coordinator",
        LIMIT,
        || async {
            if vip.get().is_none() && net.holds_vip(1) {
                vip.set(Some(killed.elapsed()));
            }
            writer.first_on(&new, killed)
        },
    )
    .await
    .with_context(|| format!("logs in {}", dir.display()))?;
    let vip = vip.get().unwrap_or(first.at - killed);
    let acked = writer.stop().await;

    let rows = net
        .pair
        .standby
        .client()
        .await?
        .query("SELECT id FROM writes", &[])
        .await?;
    let present: BTreeSet<i64> = rows.iter().map(|r| r.get(0)).collect();
    let lost = acked.iter().filter(|a| !present.contains(&a.id)).count();
    let history = history(&net).await?;
    let at = |event: &str| -> anyhow::Result<i64> {
        let found: Vec<_> = history.iter().filter(|h| h.event == event).collect();
        match found.as_slice() {
            [one] => Ok(one.time_us),
            other => bail!("{} `{event}` records in the history", other.len()),
        }
    };
    let sample = CoordinatorFailoverSample {
        intent: after(kill_us, at("intent")?),
        promoted: after(kill_us, at("promoted")?),
        vip,
        write: first.at - killed,
        acked: acked.len(),
        lost,
    };
    drop(daemons);
    drop(sim);
    Ok(sample)
}

/// Runs `runs` kill -9 failovers with fresh set-ups; configurations and logs of the last run
/// stay in a temporary directory named on failure.
pub async fn run(
    s: CoordinatorFailoverSettings,
    runs: usize,
) -> anyhow::Result<Vec<CoordinatorFailoverSample>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("coordinator-failover needs root: it creates network namespaces and veth pairs");
    }
    let ftsd = std::env::current_exe()?
        .parent()
        .context("exe dir")?
        .join("ftsd");
    let mut samples = Vec::with_capacity(runs);
    for run in 0..runs {
        let dir = tempfile::tempdir()?;
        let sample = match one_run(&s, &ftsd, dir.path()).await {
            Ok(sample) => sample,
            Err(e) => {
                let kept = dir.keep();
                bail!("run {}: {e:#} (files kept in {})", run + 1, kept.display());
            }
        };
        eprintln!(
            "run {:>2}: intent {:>7.1} ms, promoted {:>7.1} ms, VIP on the standby's host {:>7.1} ms, first write through the VIP {:>7.1} ms ({} acknowledged, {} lost)",
            run + 1,
            sample.intent.as_secs_f64() * 1000.0,
            sample.promoted.as_secs_f64() * 1000.0,
            sample.vip.as_secs_f64() * 1000.0,
            sample.write.as_secs_f64() * 1000.0,
            sample.acked,
            sample.lost,
        );
        samples.push(sample);
    }
    Ok(samples)
}
