//! `fts-bench probe`: probe cycles against an `fts-segsim` process holding N segments, in a
//! separate worker process per mode so CPU time and peak RSS are the prober's alone.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use super::{baseline, measure};
use fts_testkit::pg::PgServer;
use ftsd::catalog::postgres::{PgCatalog, PgCatalogConfig};
use ftsd::catalog::{schema, Catalog};
use ftsd::driver::FtsWireDriver;
use ftsd::engine::authority::SINGLE_INSTANCE_EPOCH;
use ftsd::engine::cycle::run_cycle;
use ftsd::engine::{CycleContext, ProbeSettings, SingleInstance};
use ftsd::wire::client::Credentials;

/// What one worker measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerResult {
    pub mode: String,
    pub pairs: usize,
    pub cycles_ms: Vec<f64>,
    pub cpu_ms_per_cycle: f64,
    pub peak_rss_mib: f64,
    /// Probes that did not get a reply (should be 0).
    pub failed: usize,
}

fn catalog(url: &str) -> PgCatalog {
    PgCatalog::new(PgCatalogConfig {
        statement_timeout: Duration::from_secs(30),
        call_timeout: Duration::from_secs(40),
        ..PgCatalogConfig::new(url)
    })
}

/// The worker: runs `cycles` measured cycles (after one warm-up) in `mode` and prints JSON.
pub async fn worker(
    mode: &str,
    url: &str,
    cycles: usize,
    concurrency: usize,
    timeout: Duration,
) -> anyhow::Result<WorkerResult> {
    let cat = Arc::new(catalog(url));
    let cfg = cat.load().await?;
    let pairs = cfg.probe_pairs().pairs.len();
    let mut wall = Vec::with_capacity(cycles);
    let mut failed = 0;
    let cpu0;
    match mode {
        "ftsd" => {
            let ctx = Arc::new(CycleContext {
                driver: FtsWireDriver {
                    credentials: Credentials::new("gpadmin"),
                },
                catalog: cat,
                authority: SingleInstance::new(SINGLE_INSTANCE_EPOCH),
                settings: ProbeSettings {
                    timeout,
                    retries: 5,
                    retry_delay: Duration::from_secs(1),
                    concurrency,
                    profile: ftsd::core::Profile::InCore,
                }
                .into(),
                instance_id: "bench".into(),
                stopping: AtomicBool::new(false),
                refusals: Default::default(),
                brake: Default::default(),
            });
            run_cycle(ctx.clone()).await?;
            cpu0 = measure::cpu_time();
            for _ in 0..cycles {
                let t = Instant::now();
                let r = run_cycle(ctx.clone()).await?;
                wall.push(t.elapsed());
                failed += r.reports.iter().filter(|p| p.reply_us.is_none()).count();
            }
        }
        "baseline" => {
            let primaries: Arc<Vec<_>> = Arc::new(
                cfg.probe_pairs()
                    .pairs
                    .into_iter()
                    .map(|p| p.primary)
                    .collect(),
            );
            baseline::cycle(primaries.clone(), concurrency, timeout).await;
            cpu0 = measure::cpu_time();
            for _ in 0..cycles {
                let t = Instant::now();
                // the baseline also reads the configuration each cycle, as a cycle does
                let _ = cat.load().await?;
                failed += baseline::cycle(primaries.clone(), concurrency, timeout).await;
                wall.push(t.elapsed());
            }
        }
        other => bail!("unknown mode {other:?} (ftsd or baseline)"),
    }
    let cpu = measure::cpu_time() - cpu0;
    Ok(WorkerResult {
        mode: mode.to_string(),
        pairs,
        cycles_ms: wall.iter().map(|d| d.as_secs_f64() * 1000.0).collect(),
        cpu_ms_per_cycle: cpu.as_secs_f64() * 1000.0 / cycles.max(1) as f64,
        peak_rss_mib: measure::peak_rss_kib() as f64 / 1024.0,
        failed,
    })
}

fn sibling(name: &str) -> anyhow::Result<std::path::PathBuf> {
    let me = std::env::current_exe()?;
    let path = me.parent().context("exe has no directory")?.join(name);
    if !path.exists() {
        bail!(
            "{} not found next to fts-bench; build all binaries (cargo build --release)",
            path.display()
        );
    }
    Ok(path)
}

/// A free port below Linux's ephemeral range (32768+), so the thousands of segment listeners
/// the simulator binds with port 0 cannot take it between our check and its bind.
fn free_port() -> anyhow::Result<u16> {
    let seed = std::process::id() as u16;
    for i in 0..2000u16 {
        let port = 20000 + (seed.wrapping_add(i.wrapping_mul(7919)) % 12000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port in 20000..32000")
}

/// Kills the child on drop.
struct Reaper(std::process::Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `fts-segsim` with `segments` instances (segments/2 pairs) and writes the catalog.
pub async fn start_segsim(
    pg: &PgServer,
    segments: usize,
    log: &Path,
) -> anyhow::Result<(impl Drop, String)> {
    let control = format!("127.0.0.1:{}", free_port()?);
    let child = Command::new(sibling("fts-segsim")?)
        .args([
            "run",
            "--pairs",
            &(segments / 2).to_string(),
            "--control",
            &control,
            "--catalog",
            &pg.url(),
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .spawn()
        .context("starting fts-segsim")?;
    let reaper = Reaper(child);
    let start = Instant::now();
    loop {
        let ready = tokio::task::spawn_blocking({
            let control = control.clone();
            move || fts_segsim::ctl::Client::new(&control).health().is_ok()
        })
        .await?;
        if ready {
            break;
        }
        if start.elapsed() > Duration::from_secs(120) {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(5).collect();
            bail!("fts-segsim did not become ready: {}", tail.join(" | "));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // the catalog is written right after the listeners are up; wait for the rows
    let client = pg.client().await?;
    loop {
        let n: i64 = client
            .query_one(
                "SELECT count(*) FROM gp_segment_configuration WHERE content >= 0",
                &[],
            )
            .await?
            .get(0);
        if n as usize == segments {
            break;
        }
        if start.elapsed() > Duration::from_secs(120) {
            bail!("catalog rows not written by fts-segsim");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok((reaper, control))
}

/// The orchestrator: for each size, a catalog, a simulator, then one worker per mode.
pub async fn run(
    sizes: &[usize],
    cycles: usize,
    concurrency: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<(usize, WorkerResult)>> {
    let mut results = Vec::new();
    let dir = tempfile::tempdir()?;
    for &segments in sizes {
        let pg = PgServer::builder().start().await?;
        schema::init(&mut pg.client().await?).await?;
        let (_sim, _control) = start_segsim(&pg, segments, &dir.path().join("segsim.log")).await?;
        for mode in ["baseline", "ftsd"] {
            let out = Command::new(std::env::current_exe()?)
                .args([
                    "probe-worker",
                    "--mode",
                    mode,
                    "--catalog",
                    &pg.url(),
                    "--cycles",
                    &cycles.to_string(),
                    "--concurrency",
                    &concurrency.to_string(),
                    "--timeout",
                    &humantime::format_duration(timeout).to_string(),
                ])
                .stderr(Stdio::inherit())
                .output()?;
            if !out.status.success() {
                bail!("{mode} worker failed for {segments} segments");
            }
            let r: WorkerResult = serde_json::from_slice(&out.stdout).with_context(|| {
                format!("worker output: {}", String::from_utf8_lossy(&out.stdout))
            })?;
            results.push((segments, r));
        }
    }
    Ok(results)
}
