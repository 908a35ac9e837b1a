//! The scenario context: seeded choices, fault records, waiting for the catalog, healing the
//! cluster between scenarios, and the observer thread that samples which segments act as
//! primary.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fts_segsim::ctl::{Client as Segsim, CtlError};
use fts_segsim::{Fault as SimFault, SegmentView};

use super::cluster::{self, ClusterError, CATNET_NODES, ETCD, FTSD};
use super::docker::{self, DockerError, CATNET, ETCDNET, SEGNET};
use super::history::{now_ms, ActingSample, Expect, Fault, Millis, QuorumLoss, Row, Timing};
use super::rng::Rng;

/// Why a scenario could not do what it set out to do. Always a failure of the run.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("fts-segsim control: {0}")]
    Segsim(#[from] CtlError),
    #[error("{0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, HarnessError>;

pub fn fail<T>(msg: impl Into<String>) -> Result<T> {
    Err(HarnessError::Other(msg.into()))
}

pub async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await
}

/// The state of one scenario run.
pub struct Harness {
    pub scenario: String,
    pub rng: Rng,
    pub timing: Timing,
    /// Mirror-down grace the simulator was started with.
    pub mirror_grace_ms: i64,
    /// Catalog database of the cluster under test (`segsim` or `pgpairs`), or `cbdb` (the
    /// Cloudberry blob in etcd).
    pub db: String,
    pub faults: Vec<Fault>,
    pub quorum_losses: Vec<QuorumLoss>,
    pub notes: Vec<String>,
    /// Set when a scenario replaced the catalog (restart everything re-seeds it).
    pub rebaselined: Option<(Vec<Row>, i64)>,
    /// Folder the containers write their logs to (mounted at /logs): scenarios read fault
    /// points from the ftsd logs and write fault files there.
    pub logs: std::path::PathBuf,
    /// The writer through the coordinator VIP and the pair's sampler (coordinator scenarios).
    pub coord: Option<super::coordinator::CoordProbe>,
    segsim: Arc<Segsim>,
}

impl Harness {
    pub fn new(scenario: &str, seed: u64, timing: Timing, mirror_grace_ms: i64, db: &str) -> Self {
        Harness {
            scenario: scenario.to_string(),
            rng: Rng::new(seed),
            timing,
            mirror_grace_ms,
            db: db.to_string(),
            faults: Vec::new(),
            quorum_losses: Vec::new(),
            notes: Vec::new(),
            rebaselined: None,
            logs: std::path::PathBuf::new(),
            coord: None,
            segsim: Arc::new(Segsim::new(cluster::sim_control(db))),
        }
    }

    /// Records a fault injected just now; returns its index for `healed`.
    pub fn record(&mut self, what: String, content: Option<i16>, expect: Expect) -> usize {
        let at = now_ms();
        tracing::info!(scenario = %self.scenario, %what, "fault injected");
        self.faults.push(Fault {
            scenario: self.scenario.clone(),
            what,
            content,
            at,
            healed_at: None,
            expect,
        });
        self.faults.len() - 1
    }

    pub fn healed(&mut self, idx: usize) {
        self.faults[idx].healed_at = Some(now_ms());
    }

    pub fn note(&mut self, s: impl Into<String>) {
        let s = s.into();
        tracing::info!(scenario = %self.scenario, "{s}");
        self.notes.push(s);
    }

    /// A random delay in `lo..=hi` ms, then sleeps it.
    pub async fn jitter(&mut self, lo: u64, hi: u64) {
        let ms = self.rng.range(lo, hi);
        sleep_ms(ms).await;
    }

    pub async fn segsim<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Segsim) -> std::result::Result<T, CtlError> + Send + 'static,
    ) -> Result<T> {
        let client = self.segsim.clone();
        tokio::task::spawn_blocking(move || f(&client))
            .await
            .map_err(|e| HarnessError::Other(e.to_string()))?
            .map_err(HarnessError::from)
    }

    pub async fn sim_fault(&self, dbid: i16, fault: SimFault) -> Result<()> {
        self.segsim(move |s| s.fault(dbid, &fault)).await.map(drop)
    }

    /// The current (primary, mirror) rows of `content`; an error unless both exist.
    pub async fn pair(&self, content: i16) -> Result<(Row, Row)> {
        let rows = cluster::rows(&self.db).await?;
        let p = rows.iter().find(|r| r.content == content && r.role == 'p');
        let m = rows.iter().find(|r| r.content == content && r.role == 'm');
        match (p, m) {
            (Some(p), Some(m)) => Ok((p.clone(), m.clone())),
            _ => fail(format!(
                "content {content} has no primary/mirror pair in the catalog: {rows:?}"
            )),
        }
    }

    /// The pair of `content`, which must be healthy (primary up, mirror in sync) for a fault
    /// on it to have an expected outcome; anything else fails the scenario before injecting.
    pub async fn healthy_pair(&self, content: i16) -> Result<(Row, Row)> {
        let (p, m) = self.pair(content).await?;
        if p.status != 'u' || m.mode != 's' {
            return fail(format!(
                "content {content} is not a healthy pair before the fault: {p:?} {m:?}"
            ));
        }
        Ok((p, m))
    }

    /// A random content among those present in the catalog.
    pub async fn pick_content(&mut self) -> Result<i16> {
        let rows = cluster::rows(&self.db).await?;
        let mut contents: Vec<i16> = rows.iter().map(|r| r.content).collect();
        contents.sort();
        contents.dedup();
        if contents.is_empty() {
            return fail("the catalog has no segments");
        }
        Ok(*self.rng.pick(&contents))
    }

    /// Records a primary failure injected now that must end in a promotion within `bound_ms`,
    /// then waits for that promotion (bound + slack + `settle_ms`) so the next fault starts
    /// from a settled cluster. Whether it came in time is the checker's verdict, not this wait's.
    pub async fn expect_promotion(
        &mut self,
        what: String,
        content: i16,
        old_primary: i16,
        bound_ms: i64,
        settle_ms: i64,
    ) {
        self.record(
            what,
            Some(content),
            Expect::Promotion {
                content,
                not_before: now_ms(),
                bound_ms,
            },
        );
        self.wait_promotion(
            content,
            old_primary,
            bound_ms + self.timing.slack_ms + settle_ms,
        )
        .await;
    }

    /// Waits until `content`'s primary in the catalog is no longer `old` (or `limit` passes);
    /// returns whether it happened. Not meeting the bound is for the checker to judge.
    pub async fn wait_promotion(&self, content: i16, old: i16, limit_ms: i64) -> bool {
        let start = Instant::now();
        while start.elapsed().as_millis() as i64 <= limit_ms {
            if let Ok(rows) = cluster::rows(&self.db).await {
                if rows
                    .iter()
                    .any(|r| r.content == content && r.role == 'p' && r.dbid != old)
                {
                    return true;
                }
            }
            sleep_ms(200).await;
        }
        false
    }

    /// Waits for the mirror `dbid` to be marked down in the catalog.
    pub async fn wait_marked_down(&self, dbid: i16, limit_ms: i64) -> bool {
        let start = Instant::now();
        while start.elapsed().as_millis() as i64 <= limit_ms {
            if let Ok(rows) = cluster::rows(&self.db).await {
                if rows.iter().any(|r| r.dbid == dbid && r.status == 'd') {
                    return true;
                }
            }
            sleep_ms(200).await;
        }
        false
    }

    /// The current leader of this cluster: (instance, container, epoch); waits up to 20 s.
    pub async fn leader(&self) -> Result<(String, &'static str, i64)> {
        let start = Instant::now();
        let mut last = String::from("no leader registered");
        while start.elapsed() < Duration::from_secs(20) {
            match cluster::leader(&self.db).await {
                Ok(Some((id, epoch))) => match cluster::ftsd_container(&id) {
                    Some(c) => return Ok((id, c, epoch)),
                    None => last = format!("leader {id} is not one of the FTS hosts"),
                },
                Ok(None) => {}
                Err(e) => last = e.to_string(),
            }
            sleep_ms(250).await;
        }
        fail(format!(
            "no leader of cluster {} within 20 s: {last}",
            self.db
        ))
    }

    /// Bound for a primary failure to be detected and acted on by a sitting leader.
    pub fn detect(&self) -> i64 {
        self.timing.detect_ms
    }
}

/// Samples a simulator (fts-segsim, or the Cloudberry stand-in) every 200 ms: the live
/// instances acting as primary.
pub struct Observer {
    stop: Arc<AtomicBool>,
    pub samples: Arc<Mutex<Vec<ActingSample>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Observer {
    /// Samples the simulator whose control API is at `control`.
    pub fn start(control: &'static str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (s, out) = (stop.clone(), samples.clone());
        let thread = std::thread::spawn(move || {
            let client = Segsim::new(control);
            while !s.load(Ordering::Relaxed) {
                if let Ok(list) = client.list() {
                    let sample = acting(now_ms(), &list);
                    out.lock().unwrap_or_else(|e| e.into_inner()).push(sample);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        Observer {
            stop,
            samples,
            thread: Some(thread),
        }
    }

    /// Takes the samples gathered since the last call.
    pub fn take(&self) -> Vec<ActingSample> {
        std::mem::take(&mut *self.samples.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Whether an instance can acknowledge a write as a primary: out of recovery, not made
/// read-only (ftsd's fence), and its commits do not wait for a synchronous standby it does not
/// have. A former primary that came back after a failover is out of recovery, but until it is
/// fenced its commits wait forever for the standby that was promoted: it acknowledges
/// nothing, which is what "one primary per content" is about.
pub(crate) const ACKNOWLEDGING_PRIMARY: &str = "SELECT NOT pg_is_in_recovery() \
       AND current_setting('default_transaction_read_only') = 'off' \
       AND (current_setting('synchronous_standby_names') = '' \
            OR current_setting('synchronous_commit') IN ('off', 'local') \
            OR EXISTS (SELECT 1 FROM pg_stat_replication \
                        WHERE sync_state IN ('sync', 'quorum')))";

/// Samples the real PostgreSQL instances every 250 ms: those that answer and can acknowledge
/// a write as a primary ([`ACKNOWLEDGING_PRIMARY`]). A killed instance answers nothing and is
/// not counted; a rebuilt one is a standby.
pub struct PgObserver {
    stop: Arc<AtomicBool>,
    pub samples: Arc<Mutex<Vec<ActingSample>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl PgObserver {
    pub fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let n = cluster::PG_PAIRS.len() as i16;
        let nodes: Vec<(i16, i16, &'static str)> = cluster::PG_PAIRS
            .iter()
            .flat_map(|(c, p, m)| [(*c, c + 2, p.1), (*c, c + 2 + n, m.1)])
            .collect();
        // Per node: (answers as a primary, when last seen answering). One task per node, so a
        // dead node's connect timeouts do not slow the sampling of the others.
        let latest: Arc<Mutex<Vec<(bool, Millis)>>> =
            Arc::new(Mutex::new(vec![(false, 0); nodes.len()]));
        for (i, (_, _, addr)) in nodes.iter().copied().enumerate() {
            let (s, latest) = (stop.clone(), latest.clone());
            tokio::spawn(async move {
                let mut client: Option<tokio_postgres::Client> = None;
                while !s.load(Ordering::Relaxed) {
                    if client.as_ref().is_none_or(|c| c.is_closed()) {
                        client = tokio::time::timeout(
                            Duration::from_millis(500),
                            cluster::connect(addr, "postgres"),
                        )
                        .await
                        .ok()
                        .and_then(|r| r.ok());
                    }
                    if let Some(c) = &client {
                        let q = c.query_one(ACKNOWLEDGING_PRIMARY, &[]);
                        match tokio::time::timeout(Duration::from_millis(500), q).await {
                            Ok(Ok(row)) => {
                                latest.lock().unwrap_or_else(|e| e.into_inner())[i] =
                                    (row.get::<_, bool>(0), now_ms());
                            }
                            _ => client = None,
                        }
                    }
                    sleep_ms(100).await;
                }
            });
        }
        let (s, out) = (stop.clone(), samples.clone());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                let at = now_ms();
                let state = latest.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let primaries = nodes
                    .iter()
                    .zip(state)
                    .filter(|(_, (primary, seen))| *primary && at - seen < 1000)
                    .map(|((content, dbid, _), _)| (*content, *dbid))
                    .collect();
                out.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(ActingSample { at, primaries });
                sleep_ms(250).await;
            }
        });
        PgObserver {
            stop,
            samples,
            task: Some(task),
        }
    }

    pub fn take(&self) -> Vec<ActingSample> {
        std::mem::take(&mut *self.samples.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub async fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

/// Live, healthy instances acting as primary. An instance the harness degraded (slow, hung)
/// is left out: a primary that still runs after the FTS gave up on it is what every FTS
/// failover leaves behind (Greenplum fences it through synchronous replication, not by
/// killing it); a second *healthy* primary is what the check is after.
pub fn acting(at: Millis, list: &[SegmentView]) -> ActingSample {
    ActingSample {
        at,
        primaries: list
            .iter()
            .filter(|v| {
                v.content >= 0
                    && v.alive
                    && v.fault.is_none()
                    && v.role == ftsd::model::Role::Primary
            })
            .map(|v| (v.content, v.dbid))
            .collect(),
    }
}

/// Puts every container back: running, unpaused, on its networks.
pub fn restore_containers() -> Result<()> {
    let mut all: Vec<&str> = vec!["chaos-catalog", "chaos-segsim", "chaos-cbsim"];
    all.extend(ETCD.iter().map(|e| e.0));
    all.extend(FTSD.iter().map(|f| f.0));
    // The PostgreSQL segments are left to `heal_pgpairs`: a failed former primary must not
    // simply be started again (it would come back as a second primary).
    for c in all {
        match docker::state(c)?.as_str() {
            "paused" => docker::unpause(c)?,
            "running" => {}
            _ => docker::start(c)?,
        }
    }
    for (c, ip) in ETCD {
        if !docker::networks(c)?.iter().any(|n| n == ETCDNET) {
            docker::connect(ETCDNET, c, ip)?;
        }
    }
    for (c, _, eip, sip) in FTSD {
        let nets = docker::networks(c)?;
        if !nets.iter().any(|n| n == ETCDNET) {
            docker::connect(ETCDNET, c, eip)?;
        }
        if !nets.iter().any(|n| n == SEGNET) {
            docker::connect(SEGNET, c, sip)?;
        }
    }
    for (c, ip) in CATNET_NODES {
        if !docker::networks(c)?.iter().any(|n| n == CATNET) {
            docker::connect(CATNET, c, ip)?;
        }
    }
    Ok(())
}

/// Whether the simulated cluster is healthy: every row up and in sync, every instance alive
/// without a fault and in the role the catalog gives it.
fn segsim_healthy(rows: &[Row], list: &[SegmentView]) -> bool {
    !rows.is_empty()
        && rows.iter().all(|r| r.status == 'u' && r.mode == 's')
        && rows.iter().all(|r| {
            list.iter().any(|v| {
                v.dbid == r.dbid && v.alive && v.fault.is_none() && v.role.as_char() == r.role
            })
        })
}

/// Heals the simulated cluster after a scenario: clears faults without ever creating a second
/// live primary (a failed former primary comes back through `recover`, as a mirror), and waits
/// until catalog and segments agree and every pair is in sync. Falls back to a full reset
/// (stop the FTS hosts, restart fts-segsim, which re-seeds the catalog) if that does not work.
/// The cluster is `h.db`'s: `segsim`, or `cbdb` (the Cloudberry stand-in and its blob).
pub async fn heal_segsim(h: &Harness, limit: Duration) -> Result<()> {
    restore_containers()?;
    // No configuration at all (the blob went with a wiped etcd, etcd-rebuilt): nothing to heal
    // from; the simulator writes it again when it restarts.
    if matches!(cluster::rows(&h.db).await, Ok(rows) if rows.is_empty()) {
        tracing::warn!(
            "cluster {} has no configuration; resetting its simulator",
            h.db
        );
        reset_sim(&h.db).await?;
    }
    let start = Instant::now();
    while start.elapsed() < limit {
        let rows = cluster::rows(&h.db).await.unwrap_or_default();
        let list = h.segsim(|s| s.list()).await.unwrap_or_default();
        if segsim_healthy(&rows, &list) {
            return Ok(());
        }
        let mut contents: Vec<i16> = list.iter().map(|v| v.content).filter(|c| *c >= 0).collect();
        contents.sort_unstable();
        contents.dedup();
        for content in contents {
            let mine: Vec<&SegmentView> = list.iter().filter(|v| v.content == content).collect();
            let live_primary = mine
                .iter()
                .find(|v| v.alive && v.role == ftsd::model::Role::Primary);
            for v in &mine {
                let dbid = v.dbid;
                if v.alive && v.fault.is_some() {
                    // slow and similar: alive, just misbehaving
                    h.segsim(move |s| s.clear(dbid)).await?;
                } else if !v.alive {
                    match live_primary {
                        Some(p) if p.dbid != dbid => {
                            h.segsim(move |s| s.recover(dbid)).await?;
                        }
                        _ => {
                            let catalog_primary =
                                rows.iter().any(|r| r.dbid == dbid && r.role == 'p');
                            if catalog_primary {
                                h.segsim(move |s| s.clear(dbid)).await?;
                            }
                        }
                    }
                }
            }
        }
        sleep_ms(1000).await;
    }
    tracing::warn!(
        "simulated cluster {} did not heal in {limit:?}; resetting it",
        h.db
    );
    reset_sim(&h.db).await?;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        let rows = cluster::rows(&h.db).await.unwrap_or_default();
        let list = h.segsim(|s| s.list()).await.unwrap_or_default();
        if segsim_healthy(&rows, &list) {
            return Ok(());
        }
        sleep_ms(500).await;
    }
    fail("the simulated cluster is not healthy even after a reset")
}

/// Stops the FTS hosts, restarts the simulator behind `db` (fresh state; fts-segsim rewrites
/// the catalog with the preferred roles, the Cloudberry stand-in the blob) and starts the FTS
/// hosts again.
pub async fn reset_sim(db: &str) -> Result<()> {
    for (c, ..) in FTSD {
        docker::stop(c, 5)?;
    }
    docker::docker(&["restart", "-t", "2", cluster::sim_container(db).0])?;
    let client = Arc::new(Segsim::new(cluster::sim_control(db)));
    let start = Instant::now();
    loop {
        let c = client.clone();
        let up = tokio::task::spawn_blocking(move || c.health().is_ok())
            .await
            .unwrap_or(false);
        if up {
            break;
        }
        if start.elapsed() > Duration::from_secs(30) {
            return fail("fts-segsim did not come back within 30 s");
        }
        sleep_ms(300).await;
    }
    // The simulator writes the catalog right after its control API is up.
    sleep_ms(1000).await;
    for (c, ..) in FTSD {
        docker::start(c)?;
    }
    Ok(())
}

/// Heals the real PostgreSQL pairs: a stopped instance whose content has another primary in
/// the catalog is rebuilt as that primary's standby (the `rebuild-from` marker of `chaos-pg`);
/// one that is still the catalog's primary is just started. Then waits until every pair is up
/// and in sync in the catalog (which needs ftsd's PostgreSQL driver to notice).
pub async fn heal_pgpairs(limit: Duration) -> Result<()> {
    let rows = cluster::rows("pgpairs").await?;
    for (content, p, m) in cluster::PG_PAIRS {
        for (container, ip) in [p, m] {
            if docker::state(container)? == "running" {
                continue;
            }
            let primary = rows
                .iter()
                .filter(|r| r.content == content && r.role == 'p')
                .filter_map(|r| cluster::pg_container(r.dbid))
                .find(|(c, _)| *c != container);
            if let Some((_, primary_ip)) = primary {
                let marker = std::env::temp_dir().join(format!("rebuild-from-{container}"));
                std::fs::write(&marker, primary_ip).map_err(|e| {
                    HarnessError::Other(format!("writing {}: {e}", marker.display()))
                })?;
                let dest = format!("{container}:/var/lib/postgresql/rebuild-from");
                docker::docker(&["cp", &marker.to_string_lossy(), &dest])?;
                let _ = std::fs::remove_file(&marker);
                tracing::info!(container, ip, primary_ip, "rebuilding as a standby");
            }
            docker::start(container)?;
        }
    }
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(rows) = cluster::rows("pgpairs").await {
            if !rows.is_empty() && rows.iter().all(|r| r.status == 'u' && r.mode == 's') {
                return Ok(());
            }
        }
        sleep_ms(500).await;
    }
    fail("the PostgreSQL pairs are not all up and in sync in the catalog")
}
