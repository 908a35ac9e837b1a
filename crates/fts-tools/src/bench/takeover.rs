//! `fts-bench takeover`: kill -9 the leader of N `ftsd` instances, measure until a follower
//! holds office and until it has completed a probe cycle; repeat.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};

use super::probe::start_segsim;
use fts_testkit::etcd::EtcdCluster;
use fts_testkit::pg::PgServer;
use ftsd::catalog::schema;
use ftsd::election::members::{list, MemberInfo};

pub struct TakeoverSample {
    /// kill -9 → a follower holds office.
    pub office: Duration,
    /// kill -9 → the new leader finished its first probe cycle.
    pub first_cycle: Duration,
}

fn config(name: &str, pg: &PgServer, etcd: &EtcdCluster, ttl: Duration) -> anyhow::Result<String> {
    Ok(format!(
        r#"cluster = "bench"
instance_id = "{name}"
[probe]
interval = "1s"
timeout = "500ms"
retries = 2
retry_delay = "200ms"
{tables}"#,
        tables = super::elected_tables(&pg.url(), &etcd.endpoints(), ttl, "warn")?,
    ))
}

async fn members(etcd: &EtcdCluster) -> Vec<MemberInfo> {
    match etcd_client::Client::connect(etcd.endpoints(), None).await {
        Ok(mut c) => list(&mut c, "/ftsd/bench/members/")
            .await
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

/// Runs `runs` kill -9 takeovers with `instances` daemons and lease TTL `ttl`.
pub async fn run(
    ttl: Duration,
    runs: usize,
    instances: usize,
) -> anyhow::Result<Vec<TakeoverSample>> {
    let dir = tempfile::tempdir()?;
    let etcd = EtcdCluster::start(1).await?;
    let pg = PgServer::builder().start().await?;
    schema::init(&mut pg.client().await?).await?;
    let (_sim, _control) = start_segsim(&pg, 8, &dir.path().join("segsim.log")).await?;
    let ftsd = std::env::current_exe()?
        .parent()
        .context("exe dir")?
        .join("ftsd");
    let spawn = |name: &str| -> anyhow::Result<Child> {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, config(name, &pg, &etcd, ttl)?)?;
        Command::new(&ftsd)
            .args(["run", "--config"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(
                dir.path().join(format!("{name}.log")),
            )?)
            .spawn()
            .context("starting ftsd")
    };
    let mut children: HashMap<String, Child> = HashMap::new();
    for i in 0..instances {
        let name = format!("fts{i}");
        children.insert(name.clone(), spawn(&name)?);
    }
    let mut samples = Vec::with_capacity(runs);
    for run in 0..runs {
        // a full set of live members and one leader that has completed a cycle
        let wait_start = Instant::now();
        let leader = loop {
            let m = members(&etcd).await;
            let leaders: Vec<_> = m.iter().filter(|m| m.role == "leader").collect();
            if m.len() == instances && leaders.len() == 1 && leaders[0].last_cycle_at.is_some() {
                break leaders[0].instance_id.clone();
            }
            if wait_start.elapsed() > ttl * 4 + Duration::from_secs(20) {
                bail!(
                    "run {run}: cluster did not settle; logs in {}",
                    dir.path().display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let killed_at = SystemTime::now();
        let t0 = Instant::now();
        if let Some(mut c) = children.remove(&leader) {
            c.kill()?;
            c.wait()?;
        }
        let mut office = None;
        let first_cycle = loop {
            let m = members(&etcd).await;
            if let Some(new) = m
                .iter()
                .find(|m| m.role == "leader" && m.instance_id != leader)
            {
                office.get_or_insert_with(|| t0.elapsed());
                if let (Some(at), Some(ms)) = (new.last_cycle_at, new.last_cycle_ms) {
                    if at > killed_at {
                        let done = at + Duration::from_millis(ms);
                        break done.duration_since(killed_at).unwrap_or_default();
                    }
                }
            }
            if t0.elapsed() > ttl * 3 + Duration::from_secs(10) {
                bail!("run {run}: no takeover; logs in {}", dir.path().display());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let office = office.unwrap_or(first_cycle);
        eprintln!(
            "run {:>2}: office after {:>7.1} ms, first cycle done after {:>7.1} ms",
            run + 1,
            office.as_secs_f64() * 1000.0,
            first_cycle.as_secs_f64() * 1000.0
        );
        samples.push(TakeoverSample {
            office,
            first_cycle,
        });
        children.insert(leader.clone(), spawn(&leader)?);
    }
    for (_, mut c) in children {
        let _ = c.kill();
        let _ = c.wait();
    }
    Ok(samples)
}
