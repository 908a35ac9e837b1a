//! `fts-demo`: a local cluster you can watch fail over. Starts a real etcd, a real PostgreSQL
//! catalog, an `fts-segsim` cluster and three elected `ftsd` instances, then kills a primary
//! and the leading `ftsd`, printing what the catalog and etcd show at each step.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use fts_segsim::ctl;
use fts_testkit::etcd::EtcdCluster;
use fts_testkit::pg::PgServer;
use fts_tools::bench::probe::start_segsim;
use ftsd::catalog::schema;
use ftsd::election::members::{list, MemberInfo};

/// Run a local demo cluster and a failover.
#[derive(Parser)]
#[command(name = "fts-demo", version, about)]
struct Cli {
    /// Primary/mirror pairs to simulate.
    #[arg(long, default_value_t = 4)]
    pairs: usize,
    /// ftsd instances (one leads, the others stand by).
    #[arg(long, default_value_t = 3)]
    instances: usize,
    /// Keep everything running at the end until Ctrl-C, to explore with psql and fts-segsim ctl.
    #[arg(long)]
    keep: bool,
}

struct Reaper(Vec<Child>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn show_catalog(pg: &PgServer) -> anyhow::Result<()> {
    let c = pg.client().await?;
    let rows = c
        .query(
            "SELECT dbid, content, role::text, preferred_role::text, mode::text, status::text, port \
             FROM gp_segment_configuration ORDER BY content, role DESC",
            &[],
        )
        .await?;
    println!("  dbid content role preferred mode status  port");
    for r in rows {
        println!(
            "  {:>4} {:>7} {:>4} {:>9} {:>4} {:>6} {:>5}",
            r.get::<_, i16>(0),
            r.get::<_, i16>(1),
            r.get::<_, String>(2),
            r.get::<_, String>(3),
            r.get::<_, String>(4),
            r.get::<_, String>(5),
            r.get::<_, i32>(6)
        );
    }
    Ok(())
}

async fn members(etcd: &EtcdCluster) -> Vec<MemberInfo> {
    match etcd_client::Client::connect(etcd.endpoints(), None).await {
        Ok(mut c) => list(&mut c, "/ftsd/demo/members/")
            .await
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

fn show_members(m: &[MemberInfo]) {
    for m in m {
        println!(
            "  {:<8} {:<8} epoch {:<6} last cycle {}",
            m.instance_id,
            m.role,
            m.epoch.map(|e| e.to_string()).unwrap_or_else(|| "-".into()),
            m.last_cycle_at
                .map(|t| humantime::format_rfc3339_millis(t).to_string())
                .unwrap_or_else(|| "-".into())
        );
    }
}

async fn leader(etcd: &EtcdCluster, not: Option<&str>) -> anyhow::Result<MemberInfo> {
    let start = Instant::now();
    loop {
        let m = members(etcd).await;
        if let Some(l) = m
            .iter()
            .find(|m| m.role == "leader" && Some(m.instance_id.as_str()) != not)
        {
            return Ok(l.clone());
        }
        if start.elapsed() > Duration::from_secs(60) {
            anyhow::bail!("no leader after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the sibling `ftsctl` binary and shows its output, as an operator would see it.
/// Its exit status is shown rather than treated as an error: `status` exits 1 while a
/// segment is down, which is the point of the demo.
fn ftsctl(endpoints: &str, args: &[&str]) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?
        .parent()
        .context("exe dir")?
        .join("ftsctl");
    println!("\n$ ftsctl {}", args.join(" "));
    let out = Command::new(exe)
        .args(["--endpoint", endpoints])
        .args(args)
        .output()
        .context("running ftsctl")?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        println!("(ftsctl exited with {})", out.status.code().unwrap_or(-1));
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let dir = tempfile::Builder::new().prefix("ftsd-demo-").tempdir()?;
    println!(
        "== starting etcd, a PostgreSQL catalog and fts-segsim ({} pairs)",
        cli.pairs
    );
    let etcd = EtcdCluster::start(1).await?;
    let pg = PgServer::builder().start().await?;
    schema::init(&mut pg.client().await?).await?;
    let (_sim, control) = start_segsim(&pg, cli.pairs * 2, &dir.path().join("segsim.log")).await?;
    let ftsd = std::env::current_exe()?
        .parent()
        .context("exe dir")?
        .join("ftsd");
    let mut children = Reaper(Vec::new());
    let endpoints = (0..cli.instances)
        .map(|i| format!("127.0.0.1:{}", 7470 + 10 * i))
        .collect::<Vec<_>>()
        .join(",");
    for i in 0..cli.instances {
        let name = format!("fts{}", i + 1);
        let cfg = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "cluster = \"demo\"\ninstance_id = \"{name}\"\n[probe]\ninterval = \"2s\"\ntimeout = \"1s\"\nretries = 2\nretry_delay = \"500ms\"\n\
                 [catalog]\nurl = \"{}\"\n[etcd]\nendpoints = [\"{}\"]\nlease_ttl = \"5s\"\n\
                 [api]\nlisten = \"127.0.0.1:{}\"\nmetrics_listen = \"127.0.0.1:{}\"\n",
                pg.url(),
                etcd.endpoints()[0],
                7470 + 10 * i,
                7471 + 10 * i
            ),
        )?;
        children.0.push(
            Command::new(&ftsd)
                .args(["run", "--config"])
                .arg(&cfg)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(
                    dir.path().join(format!("{name}.log")),
                )?)
                .spawn()?,
        );
    }
    let first = leader(&etcd, None).await?;
    println!(
        "\n== {} ftsd instances elected a leader through etcd:",
        cli.instances
    );
    show_members(&members(&etcd).await);
    println!("\n== gp_segment_configuration:");
    show_catalog(&pg).await?;
    ftsctl(&endpoints, &["status"])?;

    println!("\n== killing the primary of content 0 (dbid 2): fts-segsim ctl fault 2 down");
    let c = control.clone();
    tokio::task::spawn_blocking(move || ctl::Client::new(&c).fault(2, &fts_segsim::Fault::Down))
        .await??;
    let t0 = Instant::now();
    let client = pg.client().await?;
    loop {
        let n: i64 = client
            .query_one("SELECT count(*) FROM gp_configuration_history", &[])
            .await?
            .get(0);
        if n >= 2 {
            break;
        }
        if t0.elapsed() > Duration::from_secs(60) {
            anyhow::bail!("no failover after 60 s; logs in {}", dir.path().display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "   failover recorded after {:.1} s; the mirror (dbid {}) is now primary:",
        t0.elapsed().as_secs_f64(),
        cli.pairs + 2
    );
    show_catalog(&pg).await?;
    println!("\n== gp_configuration_history, with ftsd's evidence:");
    for r in client
        .query(
            r#"SELECT h.dbid, h."desc", e.epoch, e.instance_id, e.rule,
                      jsonb_array_length(e.evidence->'probe'->'attempts')
                 FROM gp_configuration_history h JOIN fts_evidence e
                   ON e."time" = h."time" AND h.dbid = ANY (e.dbids) ORDER BY h."time", h.dbid"#,
            &[],
        )
        .await?
    {
        println!(
            "  {}  [{} by {} at epoch {} after {} failed attempts]",
            r.get::<_, String>(1),
            r.get::<_, String>(4),
            r.get::<_, String>(3),
            r.get::<_, i64>(2),
            r.get::<_, i32>(5)
        );
    }

    ftsctl(&endpoints, &["segments", "--down"])?;
    ftsctl(&endpoints, &["explain", "0"])?;

    println!("\n== kill -9 of the leading ftsd ({})", first.instance_id);
    let idx: usize = first
        .instance_id
        .trim_start_matches("fts")
        .parse::<usize>()?
        - 1;
    children.0[idx].kill()?;
    let t1 = Instant::now();
    let next = leader(&etcd, Some(&first.instance_id)).await?;
    println!(
        "   {} took office after {:.1} s (lease TTL 5 s), epoch {} > {}",
        next.instance_id,
        t1.elapsed().as_secs_f64(),
        next.epoch.unwrap_or_default(),
        first.epoch.unwrap_or_default()
    );
    show_members(&members(&etcd).await);
    ftsctl(&endpoints, &["status"])?;

    println!("\nLogs and configs: {}", dir.path().display());
    if cli.keep {
        println!("Explore:  psql '{}'", pg.url());
        println!("          fts-segsim ctl --control {control} list");
        println!("          ftsctl --endpoint {endpoints} watch");
        println!("Ctrl-C to stop and clean up.");
        tokio::signal::ctrl_c().await?;
    }
    Ok(())
}
