//! One chaos run: waits for the cluster, plans (scenario × seed), runs each scenario between
//! heals, gathers the record, checks it, and hands the results to the report.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::cbdb;
use super::cluster::{self, PG_PAIRS};
use super::coordinator::{self, CoordProbe};
use super::harness::{self, fail, sleep_ms, Harness, HarnessError, Observer, PgObserver};
use super::history::{now_ms, Fault, HistoryRow, Millis, Recorded, Term, Timing};
use super::invariants::{self, Status, Verdict};
use super::scenario::{self, Scenario, Target};
use super::workload::Workload;
use ftsd::model::{Mode, Role, Segment, Status as SegStatus};

pub struct Options {
    pub full: bool,
    /// Seeds per scenario: the short mode uses the first only.
    pub seeds: Vec<u64>,
    /// Run only these scenarios (all of the mode when empty).
    pub only: Vec<String>,
    /// Folder the containers write their logs to (mounted at /logs).
    pub logs: PathBuf,
}

/// The ftsd settings of `chaos-tests/docker/etc/*.toml`, from which the bounds are computed.
pub fn timing(target: Target) -> Timing {
    let (interval, timeout, retries, retry_delay) = match target {
        Target::Segsim | Target::Cbdb => (1000, 500, 2, 200),
        Target::PgPairs | Target::Coordinator => (1000, 800, 2, 200),
    };
    Timing {
        lease_ttl_ms: 3000,
        act_margin_ms: 500,
        detect_ms: interval + (retries + 1) * timeout + retries * retry_delay,
        slack_ms: 3000,
    }
}

pub const MIRROR_GRACE_MS: i64 = 3000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Outcome {
    Passed,
    /// An invariant was violated.
    Failed,
    /// The harness could not inject or observe what the scenario needs.
    HarnessError(String),
    /// Could not run at all here (e.g. the PostgreSQL driver is not available).
    NotRun(String),
}

/// Latencies of one fault, in ms. Read back by `fts-chaos summarize`, also from files written
/// before a measure existed (hence the defaults).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Measure {
    pub fault: String,
    /// Fault → first catalog transition of the content.
    pub detection_ms: Option<i64>,
    /// When promotion was allowed → promotion in the catalog.
    pub promotion_ms: Option<i64>,
    /// When promotion was allowed → a different instance acting as primary on the segments.
    pub failover_ms: Option<i64>,
    /// Leader fault → the next `took office`.
    pub takeover_ms: Option<i64>,
    /// Coordinator lost → its standby recorded as promoted in etcd.
    pub coord_promotion_ms: Option<i64>,
    /// Coordinator lost → the first write through the VIP acknowledged by the new coordinator.
    pub coord_write_ms: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    pub name: String,
    pub about: String,
    pub seed: u64,
    pub cluster: String,
    pub outcome: Outcome,
    pub started_at: Millis,
    pub ended_at: Millis,
    pub faults: Vec<Fault>,
    pub verdicts: Vec<Verdict>,
    pub measures: Vec<Measure>,
    pub notes: Vec<String>,
    pub history: Vec<HistoryRow>,
    pub terms: Vec<Term>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub mode: String,
    pub seeds: Vec<u64>,
    pub started_at: Millis,
    pub ended_at: Millis,
    pub scenarios: Vec<ScenarioResult>,
    /// The write workload over the whole run (real PostgreSQL pairs).
    pub workload: Vec<Verdict>,
    pub workload_acks: usize,
    pub workload_errors: u64,
    /// Why the pgpairs cluster is not running, if it is not.
    pub pg_driver_missing: Option<String>,
}

impl RunResult {
    pub fn failed(&self) -> bool {
        self.scenarios
            .iter()
            .any(|s| !matches!(s.outcome, Outcome::Passed | Outcome::NotRun(_)))
            || self.workload.iter().any(|v| v.status == Status::Fail)
    }

    pub fn not_run(&self) -> usize {
        self.scenarios
            .iter()
            .filter(|s| matches!(s.outcome, Outcome::NotRun(_)))
            .count()
    }
}

/// Waits for the catalog of `db` (seeded by its simulator) and a leader of that cluster.
async fn wait_ready(db: &str, limit: Duration) -> harness::Result<()> {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < limit {
        match cluster::rows(db).await {
            // Health is restored before each scenario; here the cluster only has to be up.
            Ok(rows) if !rows.is_empty() => match cluster::leader(db).await {
                Ok(Some(_)) => return Ok(()),
                Ok(None) => last = format!("no {db} leader yet"),
                Err(e) => last = e.to_string(),
            },
            Ok(rows) => last = format!("{db} catalog not ready: {} rows", rows.len()),
            Err(e) => last = e.to_string(),
        }
        tracing::debug!(%last, "waiting for the cluster");
        sleep_ms(500).await;
    }
    fail(format!("cluster not ready within {limit:?}: {last}"))
}

/// Creates the pgpairs catalog tables and, the first time, its configuration rows.
async fn setup_pgpairs() -> harness::Result<()> {
    let mut c = cluster::connect(cluster::CATALOG, "pgpairs").await?;
    ftsd::catalog::schema::init(&mut c)
        .await
        .map_err(|e| HarnessError::Other(format!("pgpairs catalog init: {e}")))?;
    if !cluster::rows("pgpairs").await?.is_empty() {
        return Ok(());
    }
    let n = PG_PAIRS.len() as i16;
    let mut rows = Vec::new();
    for (content, (_, paddr), (_, maddr)) in PG_PAIRS {
        for (dbid, role, addr) in [
            (content + 2, Role::Primary, paddr),
            (content + 2 + n, Role::Mirror, maddr),
        ] {
            rows.push(Segment {
                dbid,
                content,
                role,
                preferred_role: role,
                mode: Mode::InSync,
                status: SegStatus::Up,
                port: 5432,
                hostname: addr.to_string(),
                address: addr.to_string(),
                datadir: "/var/lib/postgresql/seg".into(),
            });
        }
    }
    let url = format!("postgresql://postgres@{}:5432/pgpairs", cluster::CATALOG);
    fts_segsim::catalog::write_catalog(&url, &rows)
        .await
        .map_err(|e| HarnessError::Other(e.to_string()))
}

/// Latencies of each fault, from the record.
fn measure(r: &Recorded) -> Vec<Measure> {
    let (promotions, _) = super::history::replay(&r.initial, &r.history);
    r.faults
        .iter()
        .map(|f| {
            let mut m = Measure {
                fault: f.what.clone(),
                ..Measure::default()
            };
            // Detection only where acting was allowed at once (not e.g. while etcd had no
            // quorum: that wait is reported as the promotion latency after quorum returned).
            let acted_on = match f.expect {
                super::history::Expect::Promotion { not_before, .. } => not_before <= f.at,
                super::history::Expect::MirrorDown { .. } => true,
                _ => false,
            };
            if let (Some(content), true) = (f.content, acted_on) {
                m.detection_ms = r
                    .history
                    .iter()
                    .filter(|h| h.content == content && h.time_ms() >= f.at)
                    .map(|h| h.time_ms() - f.at)
                    .min();
            }
            if let super::history::Expect::Promotion {
                content,
                not_before,
                ..
            } = f.expect
            {
                m.promotion_ms = promotions
                    .iter()
                    .filter(|p| p.content == content && p.time_us / 1000 >= not_before)
                    .map(|p| p.time_us / 1000 - not_before)
                    .min();
                // The acting primary just before the fault; the baseline's if not sampled yet.
                let before = r
                    .acting
                    .iter()
                    .rfind(|s| s.at <= f.at)
                    .and_then(|s| s.primaries.iter().find(|(c, _)| *c == content).map(|x| x.1))
                    .or_else(|| {
                        r.initial
                            .iter()
                            .find(|x| x.content == content && x.role == 'p')
                            .map(|x| x.dbid)
                    });
                if let Some(old) = before {
                    m.failover_ms = r
                        .acting
                        .iter()
                        .find(|s| {
                            s.at > not_before
                                && s.primaries.iter().any(|(c, d)| *c == content && *d != old)
                        })
                        .map(|s| s.at - not_before);
                }
            }
            if let super::history::Expect::CoordinatorFailover {
                from, not_before, ..
            } = &f.expect
            {
                m.coord_promotion_ms = r
                    .coord_events
                    .iter()
                    .find(|e| e.event == "promoted" && e.at >= *not_before)
                    .map(|e| e.at - not_before);
                m.coord_write_ms = r
                    .coord_acks
                    .iter()
                    .find(|a| a.at >= *not_before && a.server != *from)
                    .map(|a| a.at - not_before);
            }
            if f.what.contains("leader") && f.content.is_none() {
                m.takeover_ms = r.terms.iter().find(|t| t.at > f.at).map(|t| t.at - f.at);
            }
            m
        })
        .collect()
}

async fn run_one(
    s: &Scenario,
    seed: u64,
    opts: &Options,
    observer: &Observer,
    cb_observer: &Observer,
    pg_observer: &PgObserver,
) -> ScenarioResult {
    let timing = timing(s.target);
    let db = s.target.db();
    let mut h = Harness::new(s.name, seed, timing, MIRROR_GRACE_MS, db);
    h.logs = opts.logs.clone();
    let mut result = ScenarioResult {
        name: s.name.into(),
        about: s.about.into(),
        seed,
        cluster: db.into(),
        outcome: Outcome::Passed,
        started_at: now_ms(),
        ended_at: 0,
        faults: Vec::new(),
        verdicts: Vec::new(),
        measures: Vec::new(),
        notes: Vec::new(),
        history: Vec::new(),
        terms: Vec::new(),
    };
    println!("== scenario {} (seed {seed})", s.name);
    if s.target == Target::PgPairs {
        let healed = match harness::restore_containers() {
            Ok(()) => harness::heal_pgpairs(Duration::from_secs(60)).await,
            Err(e) => Err(e),
        };
        if let Err(e) = healed {
            result.outcome = Outcome::HarnessError(format!("could not heal the pairs first: {e}"));
            result.ended_at = now_ms();
            return result;
        }
    }
    if s.target == Target::Coordinator {
        let healed = match harness::restore_containers() {
            Ok(()) => {
                coordinator::clear_iptables();
                coordinator::heal(Duration::from_secs(150)).await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = healed {
            result.outcome =
                Outcome::HarnessError(format!("could not heal the coordinator pair first: {e}"));
            result.ended_at = now_ms();
            return result;
        }
        if let Err(e) = h.leader().await {
            result.outcome = Outcome::HarnessError(e.to_string());
            result.ended_at = now_ms();
            return result;
        }
    }
    if matches!(s.target, Target::Segsim | Target::Cbdb) {
        if let Err(e) = harness::heal_segsim(&h, Duration::from_secs(45)).await {
            result.outcome =
                Outcome::HarnessError(format!("could not heal the cluster first: {e}"));
            result.ended_at = now_ms();
            return result;
        }
        if let Err(e) = h.leader().await {
            result.outcome = Outcome::HarnessError(e.to_string());
            result.ended_at = now_ms();
            return result;
        }
    }
    let baseline = match cluster::baseline(db).await {
        Ok(b) => b,
        Err(e) => {
            result.outcome = Outcome::HarnessError(format!("reading the baseline: {e}"));
            result.ended_at = now_ms();
            return result;
        }
    };
    let _ = observer.take();
    let _ = pg_observer.take();
    result.started_at = now_ms();
    if s.target == Target::Coordinator {
        h.coord = Some(CoordProbe::start());
    }
    let ran = scenario::run(s, &mut h).await;
    // Let late effects (a fenced write, a second promotion) show up before judging.
    sleep_ms(2000).await;
    result.ended_at = now_ms();
    let coord = match h.coord.take() {
        Some(probe) => Some(probe.finish().await),
        None => None,
    };
    let (initial, after_us) = h.rebaselined.clone().unwrap_or(baseline);
    let acting = match s.target {
        Target::Segsim => observer.take(),
        Target::Cbdb => cb_observer.take(),
        Target::PgPairs | Target::Coordinator => pg_observer.take(),
    };
    let mut record = Recorded {
        initial,
        faults: h.faults.clone(),
        quorum_losses: h.quorum_losses.clone(),
        acting,
        ..Recorded::default()
    };
    let logs = cluster::read_logs(&opts.logs, db);
    if let Some((acks, samples, survivors, errors)) = coord {
        result.notes.push(format!(
            "writes through the VIP: {} acknowledged, {errors} failed or abandoned",
            acks.len()
        ));
        record.coord_acks = acks;
        record.coord_samples = samples;
        record.coord_survivors = survivors;
        record.coord_alarms = logs
            .coord_alarms
            .iter()
            .filter(|a| a.at >= result.started_at)
            .cloned()
            .collect();
        let mut events = Err(HarnessError::Other("not read".into()));
        for _ in 0..10 {
            events = coordinator::events(result.started_at).await;
            if events.is_ok() {
                break;
            }
            sleep_ms(1000).await;
        }
        match events {
            Ok(e) => record.coord_events = e,
            Err(e) => {
                result.outcome =
                    Outcome::HarnessError(format!("reading the coordinator history from etcd: {e}"))
            }
        }
    }
    record.terms = logs.terms;
    // Cloudberry mode's epochs are raw etcd revisions, taken again after an etcd rebuild; the
    // SQL catalogs' epochs carry a generation and must stay unique across one (not scoped).
    if s.target == Target::Cbdb {
        match cluster::etcd_rebuilds(&opts.logs) {
            Ok(at) => record.etcd_rebuilds = at,
            Err(e) => {
                result.outcome =
                    Outcome::HarnessError(format!("reading the etcd rebuild times: {e}"))
            }
        }
    }
    record.observed = logs.observed.clone();
    if matches!(s.target, Target::Segsim | Target::Cbdb) {
        let log = cluster::sim_container(db).1;
        record.deliveries = cluster::read_deliveries_in(&opts.logs, log, result.started_at);
    }
    let mut gathered = Err(HarnessError::Other("not read".into()));
    for _ in 0..20 {
        gathered = async {
            if s.target == Target::Cbdb {
                // The blob, its history and evidence at one etcd revision.
                let (rows, history, unparsed, evidence) = cbdb::record(after_us).await?;
                record.final_config = Some(rows);
                return Ok((history, unparsed, evidence));
            }
            let (history, unparsed) = cluster::history(db, after_us).await?;
            let evidence = cluster::evidence(db, after_us).await?;
            Ok::<_, HarnessError>((history, unparsed, evidence))
        }
        .await;
        if gathered.is_ok() {
            break;
        }
        sleep_ms(1000).await;
    }
    match gathered {
        Ok((history, unparsed, evidence)) => {
            record.history = history;
            record.unparsed_history = unparsed;
            record.evidence = evidence;
        }
        Err(e) => {
            result.outcome = Outcome::HarnessError(format!("reading the catalog record: {e}"));
        }
    }
    result.verdicts = invariants::check_all(&record, &timing);
    result.measures = measure(&record);
    result.faults = record.faults.clone();
    result.history = record.history.clone();
    result.terms = record
        .terms
        .iter()
        .filter(|t| t.at >= result.started_at - 1000)
        .cloned()
        .collect();
    result.notes.extend(h.notes.iter().cloned());
    for (at, who, msg) in logs
        .notable
        .iter()
        .filter(|(at, ..)| *at >= result.started_at)
    {
        result
            .notes
            .push(format!("{who} at +{} ms: {msg}", at - result.started_at));
    }
    if let Err(e) = &ran {
        if s.target == Target::Coordinator {
            coordinator::clear_iptables();
        }
        result.outcome = Outcome::HarnessError(format!("fault injection failed: {e}"));
    } else if matches!(result.outcome, Outcome::Passed)
        && result.verdicts.iter().any(|v| v.status == Status::Fail)
    {
        result.outcome = Outcome::Failed;
    }
    println!("   -> {:?}", result.outcome);
    result
}

pub async fn run(opts: Options) -> harness::Result<RunResult> {
    let started_at = now_ms();
    wait_ready("segsim", Duration::from_secs(120)).await?;
    tracing::info!("cluster is up");
    setup_pgpairs().await?;
    let pg_rejected = cluster::read_logs(&opts.logs, "pgpairs").rejected;
    let pg_driver_missing = (!pg_rejected.is_empty()).then(|| {
        format!(
            "the FTS hosts refused the pgpairs configuration (is the PostgreSQL driver missing from this ftsd?): {}",
            pg_rejected[0]
        )
    });
    let workload = Workload::start();
    let observer = Observer::start(cluster::SEGSIM_CONTROL);
    let cb_observer = Observer::start(cbdb::CBSIM_CONTROL);
    let pg_observer = PgObserver::start();
    let plan: Vec<&Scenario> = scenario::ALL
        .iter()
        .filter(|s| {
            if opts.only.is_empty() {
                opts.full || s.short
            } else {
                opts.only.iter().any(|o| o == s.name)
            }
        })
        .collect();
    if plan.iter().any(|s| s.target == Target::Cbdb) {
        // The Cloudberry-mode cluster: the stand-in's blob in etcd and an elected ftsd.
        if let Err(e) = wait_ready(cbdb::CBDB, Duration::from_secs(60)).await {
            let rejected = cluster::read_logs(&opts.logs, cbdb::CBDB).rejected;
            return fail(format!(
                "the Cloudberry-mode cluster did not come up: {e}{}",
                rejected
                    .first()
                    .map(|r| format!(" (the FTS hosts refused cbdb.toml: {r})"))
                    .unwrap_or_default()
            ));
        }
    }
    let seeds: Vec<u64> = if opts.full {
        opts.seeds.clone()
    } else {
        opts.seeds.iter().take(1).copied().collect()
    };
    let mut scenarios = Vec::new();
    for seed in &seeds {
        for s in &plan {
            if matches!(s.target, Target::PgPairs | Target::Coordinator) {
                if let Some(why) = &pg_driver_missing {
                    println!("== scenario {} (seed {seed}): NOT RUN: {why}", s.name);
                    scenarios.push(ScenarioResult {
                        name: s.name.into(),
                        about: s.about.into(),
                        seed: *seed,
                        cluster: "pgpairs".into(),
                        outcome: Outcome::NotRun(why.clone()),
                        started_at: now_ms(),
                        ended_at: now_ms(),
                        faults: Vec::new(),
                        verdicts: Vec::new(),
                        measures: Vec::new(),
                        notes: Vec::new(),
                        history: Vec::new(),
                        terms: Vec::new(),
                    });
                    continue;
                }
            }
            scenarios.push(run_one(s, *seed, &opts, &observer, &cb_observer, &pg_observer).await);
        }
    }
    drop(observer);
    drop(cb_observer);
    pg_observer.stop().await;
    let workload_errors = workload.errors();
    let (acks, survivors) = workload.finish().await;
    let workload_acks = acks.len();
    let record = Recorded {
        acks,
        survivors,
        ..Recorded::default()
    };
    let workload_verdict = invariants::acknowledged_writes_survive(&record);
    Ok(RunResult {
        mode: if opts.full {
            "full".into()
        } else {
            "short".into()
        },
        seeds,
        started_at,
        ended_at: now_ms(),
        scenarios,
        workload: vec![workload_verdict],
        workload_acks,
        workload_errors,
        pg_driver_missing,
    })
}
