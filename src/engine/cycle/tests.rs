//! The cycle's ordering rules without servers: an in-memory catalog (fenced, compare-and-set,
//! like the SQL backend's transaction) and a scripted driver share one event log, so each test
//! reads what happened in which order. What the SQL backend itself does is tested against a
//! real PostgreSQL in `tests/catalog_pg.rs`; these tests are about the cycle.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;
use crate::catalog::EtcdRevision;
use crate::core::epoch::{plan_claim, ClaimPlan};
use crate::engine::ProbeSettings;
use crate::model::{Mode, Role, Segment, SegmentState, Status};
use crate::wire::failure::{AttemptError, FailureKind};
use crate::wire::ProbeReply;

use Mode::{InSync as S, NotInSync as N};
use Role::{Mirror as M, Primary as P};
use Status::{Down as D, Up as U};

type Log = Arc<Mutex<Vec<String>>>;

fn log(l: &Log, event: String) {
    l.lock().unwrap().push(event);
}

fn seg(dbid: i16, content: i16, role: Role, status: Status, mode: Mode) -> Segment {
    Segment {
        dbid,
        content,
        role,
        preferred_role: role,
        mode,
        status,
        port: 6000 + dbid as i32,
        hostname: "h".into(),
        address: "127.0.0.1".into(),
        datadir: "/d".into(),
    }
}

/// Content 0 (primary 2, mirror 5) in sync.
fn in_sync_pair() -> Vec<Segment> {
    vec![seg(2, 0, P, U, S), seg(5, 0, M, U, S)]
}

/// The in-memory catalog: one transaction is one lock; the epoch fence and the per-row
/// compare-and-set behave as in `catalog::postgres`.
struct MemCatalog {
    config: Mutex<SegmentConfig>,
    epoch: Mutex<Epoch>,
    evidence: Mutex<Vec<Transition>>,
    log: Log,
}

impl MemCatalog {
    fn new(segments: Vec<Segment>, log: &Log) -> Arc<Self> {
        Arc::new(MemCatalog {
            config: Mutex::new(SegmentConfig::new(segments)),
            epoch: Mutex::new(Epoch(1)),
            evidence: Mutex::new(Vec::new()),
            log: log.clone(),
        })
    }

    fn state(&self, dbid: i16) -> SegmentState {
        self.config.lock().unwrap().by_dbid(dbid).unwrap().state()
    }

    fn set_state(&self, dbid: i16, to: SegmentState) {
        let mut cfg = self.config.lock().unwrap();
        let row = cfg.segments.iter_mut().find(|s| s.dbid == dbid).unwrap();
        (row.role, row.status, row.mode) = (to.role, to.status, to.mode);
    }

    fn evidence_rules(&self) -> Vec<Rule> {
        self.evidence
            .lock()
            .unwrap()
            .iter()
            .map(|t| t.rule)
            .collect()
    }
}

impl Catalog for MemCatalog {
    async fn load(&self) -> Result<SegmentConfig, CatalogError> {
        Ok(self.config.lock().unwrap().clone())
    }

    async fn claim_epoch<E: EtcdRevision>(
        &self,
        revision: i64,
        _instance_id: &str,
        etcd: E,
    ) -> Result<Epoch, CatalogError> {
        let now = match etcd.current().await {
            None => None,
            Some(Ok(now)) => Some(now),
            Some(Err(why)) => return Err(CatalogError::Unavailable(why)),
        };
        let mut current = self.epoch.lock().unwrap();
        match plan_claim(*current, revision, now) {
            ClaimPlan::Claim(epoch) => {
                *current = epoch;
                Ok(epoch)
            }
            ClaimPlan::Fenced => Err(CatalogError::Fenced {
                mine: Epoch(revision),
                current: *current,
            }),
        }
    }

    async fn apply(&self, t: &Transition) -> Result<(), CatalogError> {
        let mut cfg = self.config.lock().unwrap();
        let current = *self.epoch.lock().unwrap();
        if current > t.epoch {
            log(&self.log, format!("catalog rejected epoch {}", t.epoch));
            return Err(CatalogError::Fenced {
                mine: t.epoch,
                current,
            });
        }
        let holds =
            |dbid: i16, want: SegmentState| cfg.by_dbid(dbid).map(|s| s.state()) == Some(want);
        for (dbid, want) in &t.expect {
            if !holds(*dbid, *want) {
                return Err(CatalogError::Stale {
                    dbid: *dbid,
                    expected: want.to_string(),
                });
            }
        }
        for u in &t.updates {
            if !holds(u.dbid, u.from) {
                return Err(CatalogError::Stale {
                    dbid: u.dbid,
                    expected: u.from.to_string(),
                });
            }
        }
        crate::core::decide::apply_updates(&mut cfg, &t.updates);
        log(&self.log, format!("commit {}", t.rule));
        self.evidence.lock().unwrap().push(t.clone());
        Ok(())
    }
}

type Reply = Result<ProbeReply, AttemptError>;
type OnSend = Box<dyn Fn(&Segment, MessageType) + Send + Sync>;

/// Replies per (dbid, message) from a queue, then a default; every attempt is logged with the
/// deadline it was given.
struct ScriptedDriver {
    queued: Mutex<HashMap<(i16, MessageType), VecDeque<Reply>>>,
    default: Mutex<HashMap<(i16, MessageType), Reply>>,
    deadlines: Mutex<Vec<(MessageType, Instant)>>,
    on_send: Mutex<Option<OnSend>>,
    veto: Mutex<Option<String>>,
    /// What `restarting` answers.
    restarting: Mutex<Option<Duration>>,
    /// The work every survey asks for.
    survey_work: Mutex<Vec<Upkeep>>,
    /// Called between the two steps of an upkeep.
    between_steps: Mutex<Option<Box<dyn Fn() + Send + Sync>>>,
    log: Log,
}

impl ScriptedDriver {
    fn new(log: &Log) -> Self {
        ScriptedDriver {
            queued: Mutex::new(HashMap::new()),
            default: Mutex::new(HashMap::new()),
            deadlines: Mutex::new(Vec::new()),
            on_send: Mutex::new(None),
            veto: Mutex::new(None),
            restarting: Mutex::new(None),
            survey_work: Mutex::new(Vec::new()),
            between_steps: Mutex::new(None),
            log: log.clone(),
        }
    }

    fn always(&self, dbid: i16, kind: MessageType, reply: Reply) {
        self.default.lock().unwrap().insert((dbid, kind), reply);
    }

    fn sent(&self, kind: MessageType) -> usize {
        self.deadlines
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| *k == kind)
            .count()
    }
}

fn refused() -> Reply {
    Err(AttemptError::new(
        FailureKind::Refused,
        "connection refused",
    ))
}

fn ok(mirror_up: bool, in_sync: bool, syncrep: bool, role_mirror: bool) -> Reply {
    Ok(ProbeReply {
        is_mirror_up: mirror_up,
        is_in_sync: in_sync,
        is_syncrep_enabled: syncrep,
        is_role_mirror: role_mirror,
        request_retry: false,
    })
}

impl SegmentDriver for ScriptedDriver {
    async fn send(&self, target: &Segment, kind: MessageType, deadline: Instant) -> Reply {
        self.deadlines.lock().unwrap().push((kind, deadline));
        if kind != MessageType::Probe {
            log(&self.log, format!("{kind} to {}", target.dbid));
        }
        if let Some(hook) = &*self.on_send.lock().unwrap() {
            hook(target, kind);
        }
        let key = (target.dbid, kind);
        if let Some(r) = self
            .queued
            .lock()
            .unwrap()
            .get_mut(&key)
            .and_then(|q| q.pop_front())
        {
            return r;
        }
        self.default
            .lock()
            .unwrap()
            .get(&key)
            .cloned()
            .unwrap_or_else(refused)
    }

    fn failover_veto(&self, _pair: &Pair) -> Option<String> {
        self.veto.lock().unwrap().clone()
    }

    fn restarting(&self, _target: &Segment, _last: &AttemptError) -> Option<Duration> {
        *self.restarting.lock().unwrap()
    }

    async fn survey(&self, _pair: &Pair, _deadline: Instant) -> crate::driver::Survey {
        crate::driver::Survey {
            alarms: Vec::new(),
            work: self.survey_work.lock().unwrap().clone(),
        }
    }

    /// Two server changes, each asked of the gate first, as the postgres driver's fence does.
    async fn upkeep(
        &self,
        pair: &Pair,
        work: &Upkeep,
        gate: crate::driver::AuthorityGate<'_>,
    ) -> Vec<DriverAlarm> {
        for step in 1..=2 {
            if gate().is_none() {
                log(&self.log, format!("upkeep stopped before step {step}"));
                return Vec::new();
            }
            log(&self.log, format!("upkeep step {step}"));
            if step == 1 {
                if let Some(hook) = &*self.between_steps.lock().unwrap() {
                    hook();
                }
            }
        }
        vec![DriverAlarm {
            kind: crate::driver::AlarmKind::Fenced,
            content: pair.content(),
            dbid: match work {
                Upkeep::Fence { dbid, .. }
                | Upkeep::RestoreSyncrep { dbid, .. }
                | Upkeep::RestoreWrites { dbid } => *dbid,
            },
            message: "fenced".into(),
        }]
    }
}

/// An authority the test (or the driver's hook) can take away, with an optional deadline.
struct TestAuthority {
    epoch: Epoch,
    acting: AtomicBool,
    deadline: Mutex<Option<Instant>>,
    fenced: AtomicUsize,
}

impl TestAuthority {
    fn new() -> Arc<Self> {
        Arc::new(TestAuthority {
            epoch: Epoch(7),
            acting: AtomicBool::new(true),
            deadline: Mutex::new(None),
            fenced: AtomicUsize::new(0),
        })
    }
}

impl Authority for Arc<TestAuthority> {
    fn acting_epoch(&self) -> Option<Epoch> {
        let expired = self
            .deadline
            .lock()
            .unwrap()
            .is_some_and(|d| Instant::now() >= d);
        (self.acting.load(Ordering::SeqCst) && !expired).then_some(self.epoch)
    }

    fn deadline(&self) -> Option<Instant> {
        *self.deadline.lock().unwrap()
    }

    async fn confirm(&self) -> bool {
        self.acting_epoch().is_some()
    }

    fn fenced_out(&self, _current: Epoch) {
        self.fenced.fetch_add(1, Ordering::SeqCst);
        self.acting.store(false, Ordering::SeqCst);
    }
}

type Ctx = Arc<CycleContext<ScriptedDriver, Arc<MemCatalog>, Arc<TestAuthority>>>;

fn context(segments: Vec<Segment>) -> (Ctx, Arc<MemCatalog>, Arc<TestAuthority>, Log) {
    context_with(segments, SecondOpinion::default())
}

fn context_with(
    segments: Vec<Segment>,
    quorum: SecondOpinion,
) -> (Ctx, Arc<MemCatalog>, Arc<TestAuthority>, Log) {
    let events: Log = Arc::default();
    let driver = ScriptedDriver::new(&events);
    // Mirrors answer the PROBE taken before a failover, as a mirror does.
    for s in segments.iter().filter(|s| s.role == M) {
        driver.always(s.dbid, MessageType::Probe, ok(false, false, false, true));
    }
    let catalog = MemCatalog::new(segments, &events);
    let authority = TestAuthority::new();
    let ctx = Arc::new(CycleContext {
        driver,
        catalog: catalog.clone(),
        authority: authority.clone(),
        settings: ProbeSettings {
            timeout: Duration::from_millis(200),
            retries: 2,
            retry_delay: Duration::from_millis(1),
            concurrency: 4,
            profile: crate::core::Profile::InCore,
        }
        .into(),
        instance_id: "unit".into(),
        stopping: AtomicBool::new(false),
        refusals: RefusalLog::default(),
        quorum,
        brake: Default::default(),
    });
    (ctx, catalog, authority, events)
}

fn events(l: &Log) -> Vec<String> {
    l.lock().unwrap().clone()
}

#[tokio::test]
async fn the_failover_commits_before_promote_is_sent() {
    let (ctx, catalog, _auth, log) = context(in_sync_pair());
    ctx.driver
        .always(5, MessageType::Promote, ok(false, false, false, false));
    let report = run_cycle(ctx.clone()).await.unwrap();
    assert_eq!(events(&log), vec!["commit failover", "PROMOTE to 5"]);
    let r = &report.reports[0];
    assert_eq!(r.transition, Some(TransitionOutcome::Applied));
    assert_eq!(
        r.message.as_ref().map(|m| &m.result),
        Some(&MessageResult::Delivered)
    );
    assert_eq!(catalog.state(5).role, P);
}

#[tokio::test]
async fn a_fenced_write_sends_nothing() {
    let (ctx, catalog, auth, log) = context(in_sync_pair());
    *catalog.epoch.lock().unwrap() = Epoch(8);
    let report = run_cycle(ctx.clone()).await.unwrap();
    assert_eq!(events(&log), vec!["catalog rejected epoch 7"]);
    assert_eq!(ctx.driver.sent(MessageType::Promote), 0);
    assert!(report.fenced);
    assert_eq!(auth.fenced.load(Ordering::SeqCst), 1);
    assert_eq!(catalog.state(2), st(P, U, S), "nothing written");
}

fn st(role: Role, status: Status, mode: Mode) -> SegmentState {
    SegmentState { role, status, mode }
}

#[tokio::test]
async fn a_refusal_is_recorded_once_per_episode() {
    // primary lost, mirror not in sync: a double fault, cycle after cycle
    let (ctx, catalog, _auth, _log) = context(vec![seg(2, 0, P, U, N), seg(5, 0, M, U, N)]);
    for _ in 0..3 {
        let r = run_cycle(ctx.clone()).await.unwrap();
        assert_eq!(r.reports[0].rule, Rule::DoubleFault);
    }
    assert_eq!(catalog.evidence_rules(), vec![Rule::DoubleFault]);
    // the primary answers again: the episode ends ...
    ctx.driver
        .always(2, MessageType::Probe, ok(true, false, true, false));
    run_cycle(ctx.clone()).await.unwrap();
    // ... and a new loss is a new episode, recorded again
    ctx.driver.always(2, MessageType::Probe, refused());
    run_cycle(ctx.clone()).await.unwrap();
    run_cycle(ctx.clone()).await.unwrap();
    assert_eq!(
        catalog.evidence_rules(),
        vec![Rule::DoubleFault, Rule::DoubleFault]
    );
}

#[tokio::test]
async fn a_driver_veto_is_a_recorded_refusal_and_nothing_is_sent() {
    let (ctx, catalog, _auth, log) = context(in_sync_pair());
    *ctx.driver.veto.lock().unwrap() = Some("standby was async at the last probe".into());
    let report = run_cycle(ctx.clone()).await.unwrap();
    assert_eq!(report.reports[0].rule, Rule::DoubleFault);
    assert_eq!(events(&log), vec!["commit double_fault"]);
    let ev = &catalog.evidence.lock().unwrap()[0];
    assert!(ev.updates.is_empty());
    assert_eq!(
        ev.evidence["refusal"],
        "driver veto: standby was async at the last probe"
    );
}

#[tokio::test]
async fn a_lost_authority_stops_the_retries() {
    let (ctx, _catalog, auth, log) = context(in_sync_pair());
    // every PROMOTE attempt fails, and authority is lost during the first one
    let lose = auth.clone();
    *ctx.driver.on_send.lock().unwrap() = Some(Box::new(move |_, kind| {
        if kind == MessageType::Promote {
            lose.acting.store(false, Ordering::SeqCst);
        }
    }));
    let report = run_cycle(ctx.clone()).await.unwrap();
    assert_eq!(events(&log), vec!["commit failover", "PROMOTE to 5"]);
    assert_eq!(
        ctx.driver.sent(MessageType::Promote),
        1,
        "no retry after the loss"
    );
    assert!(matches!(
        report.reports[0].message.as_ref().map(|m| &m.result),
        Some(MessageResult::NotSent(_))
    ));
}

#[tokio::test]
async fn message_attempts_end_by_the_act_by_deadline_and_none_starts_after_it() {
    let (ctx, _catalog, auth, _log) = context(in_sync_pair());
    let act_by = Instant::now() + Duration::from_secs(2);
    *auth.deadline.lock().unwrap() = Some(act_by);
    // the deadline passes during the first (failing) PROMOTE attempt
    let late = auth.clone();
    *ctx.driver.on_send.lock().unwrap() = Some(Box::new(move |_, kind| {
        if kind == MessageType::Promote {
            *late.deadline.lock().unwrap() = Some(Instant::now());
        }
    }));
    run_cycle(ctx.clone()).await.unwrap();
    let deadlines = ctx.driver.deadlines.lock().unwrap().clone();
    let promotes: Vec<_> = deadlines
        .iter()
        .filter(|(k, _)| *k == MessageType::Promote)
        .collect();
    assert_eq!(promotes.len(), 1, "{deadlines:?}");
    assert!(
        promotes[0].1 <= act_by,
        "attempt bounded by the act-by deadline"
    );
}

#[tokio::test]
async fn re_promote_is_confirmed_under_the_fence_before_it_is_sent() {
    // the shape a failover leaves: 5 promoted, 2 lost; 5 still answers as a mirror
    let rows = vec![seg(2, 0, M, D, N), seg(5, 0, P, U, N)];
    let (ctx, catalog, _auth, log) = context(rows);
    ctx.driver
        .always(5, MessageType::Probe, ok(false, false, false, true));
    ctx.driver
        .always(5, MessageType::Promote, ok(false, false, false, false));
    let report = run_cycle(ctx.clone()).await.unwrap();
    assert_eq!(report.reports[0].rule, Rule::RePromote);
    assert_eq!(events(&log), vec!["commit re_promote", "PROMOTE to 5"]);
    assert_eq!(
        report.reports[0].transition,
        Some(TransitionOutcome::Confirmed)
    );

    // the catalog changes between the snapshot and the fenced re-read: nothing is sent
    log.lock().unwrap().clear();
    let changed = catalog.clone();
    *ctx.driver.on_send.lock().unwrap() = Some(Box::new(move |_, kind| {
        if kind == MessageType::Probe {
            changed.set_state(2, st(M, U, N));
        }
    }));
    let report = run_cycle(ctx.clone()).await.unwrap();
    assert!(events(&log).is_empty(), "{:?}", events(&log));
    assert!(matches!(
        report.reports[0].transition,
        Some(TransitionOutcome::Failed(_))
    ));
}

#[tokio::test]
async fn a_content_that_cannot_form_a_pair_is_refused_and_the_others_are_acted_on() {
    let mut rows = in_sync_pair();
    rows.extend([seg(3, 1, P, U, S), seg(6, 1, P, U, S)]);
    let (ctx, catalog, _auth, log) = context(rows);
    ctx.driver
        .always(5, MessageType::Promote, ok(false, false, false, false));
    ctx.driver.always(3, MessageType::Probe, refused());
    let report = run_cycle(ctx.clone()).await.unwrap();
    assert_eq!(report.refused_contents.len(), 1);
    assert_eq!(report.rules.get(&Rule::BadShape), Some(&1));
    assert_eq!(report.reports.len(), 1, "content 1 is not probed");
    let ev = events(&log);
    assert!(ev.contains(&"commit bad_shape".to_string()), "{ev:?}");
    assert!(ev.contains(&"PROMOTE to 5".to_string()), "{ev:?}");
    assert!(!ev
        .iter()
        .any(|e| e.ends_with("to 3") || e.ends_with("to 6")));
    // recorded once while the shape lasts
    run_cycle(ctx.clone()).await.unwrap();
    assert_eq!(
        catalog
            .evidence_rules()
            .iter()
            .filter(|r| **r == Rule::BadShape)
            .count(),
        1
    );
}

#[tokio::test]
async fn mismatched_modes_are_repaired_in_one_transition() {
    let (ctx, catalog, _auth, log) = context(vec![seg(2, 0, P, U, S), seg(5, 0, M, U, N)]);
    ctx.driver
        .always(2, MessageType::Probe, ok(true, true, true, false));
    let report = run_cycle(ctx.clone()).await.unwrap();
    assert_eq!(report.reports[0].rule, Rule::Resync);
    assert_eq!(events(&log), vec!["commit resync"]);
    assert_eq!(catalog.state(5), st(M, U, S));
}

#[tokio::test]
async fn a_prober_fault_changes_nothing_and_is_alarmed_once_per_episode() {
    let (ctx, catalog, _auth, log) = context(in_sync_pair());
    let auth_failed = Err(AttemptError {
        kind: FailureKind::Auth,
        message: "password authentication failed for user \"gpadmin\"".into(),
        sqlstate: Some("28P01".into()),
        detail: None,
    });
    ctx.driver.always(2, MessageType::Probe, auth_failed);
    let mut alarms = 0;
    for _ in 0..3 {
        let r = run_cycle(ctx.clone()).await.unwrap();
        assert_eq!(r.reports[0].rule, Rule::ProberFault);
        alarms += r.reports[0].episode_began as usize;
    }
    assert_eq!(alarms, 1, "alarmed once per episode");
    assert_eq!(catalog.state(2), st(P, U, S), "nothing written");
    assert_eq!(catalog.state(5), st(M, U, S));
    assert_eq!(ctx.driver.sent(MessageType::Promote), 0);
    assert_eq!(
        events(&log),
        vec!["commit prober_fault"],
        "one evidence row"
    );
    let ev = &catalog.evidence.lock().unwrap()[0];
    assert!(ev.updates.is_empty());
    assert!(ev.evidence["refusal"]
        .as_str()
        .unwrap()
        .starts_with("prober fault (auth)"));
}

#[tokio::test]
async fn one_prober_fault_among_the_attempts_is_not_a_lost_primary() {
    let (ctx, catalog, _auth, _log) = context(in_sync_pair());
    // a DNS blip on the first attempt, then the primary does not answer: not established
    ctx.driver.queued.lock().unwrap().insert(
        (2, MessageType::Probe),
        VecDeque::from([Err(AttemptError::new(
            FailureKind::Resolve,
            "could not resolve",
        ))]),
    );
    let r = run_cycle(ctx.clone()).await.unwrap();
    assert_eq!(r.reports[0].rule, Rule::ProberFault);
    assert_eq!(catalog.state(2), st(P, U, S));
    // the next cycle sees only segment-side failures and fails over
    let r = run_cycle(ctx.clone()).await.unwrap();
    assert_eq!(r.reports[0].rule, Rule::Failover);
}

#[tokio::test]
async fn a_failover_whose_mirror_does_not_answer_is_refused_with_evidence() {
    let (ctx, catalog, _auth, log) = context(in_sync_pair());
    ctx.driver.always(5, MessageType::Probe, refused());
    let r = run_cycle(ctx.clone()).await.unwrap();
    assert_eq!(r.reports[0].rule, Rule::FailoverUnconfirmed);
    assert_eq!(
        r.reports[0].mirror_check,
        Some(MirrorCheck::Unreachable {
            kind: FailureKind::Refused
        })
    );
    assert_eq!(events(&log), vec!["commit failover_unconfirmed"]);
    assert_eq!(ctx.driver.sent(MessageType::Promote), 0);
    assert_eq!(catalog.state(2), st(P, U, S), "nothing flipped");
    let ev = catalog.evidence.lock().unwrap()[0].clone();
    assert!(ev.evidence["refusal"]
        .as_str()
        .unwrap()
        .starts_with("mirror unreachable from this observer"));
    assert_eq!(
        ev.evidence["mirror_check"]["attempts"]
            .as_array()
            .unwrap()
            .len(),
        3,
        "every attempt at the mirror recorded: {}",
        ev.evidence
    );
    // a mirror answering as a primary is refused too
    ctx.driver
        .always(5, MessageType::Probe, ok(true, true, true, false));
    let r = run_cycle(ctx.clone()).await.unwrap();
    assert_eq!(r.reports[0].rule, Rule::FailoverUnconfirmed);
    assert_eq!(ctx.driver.sent(MessageType::Promote), 0);
}

/// The leader's path to the segments comes back while it retries a primary: the primary's
/// probe failed on every attempt, but it answers the PROBE sent with the mirror check. The
/// failover is refused (a healthy content must not be flipped on a stale observation), and
/// the next cycle finds the pair healthy.
#[tokio::test]
async fn a_primary_that_answers_again_during_the_mirror_check_is_not_failed_over() {
    let (ctx, catalog, _auth, log) = context(in_sync_pair());
    ctx.driver.queued.lock().unwrap().insert(
        (2, MessageType::Probe),
        VecDeque::from([refused(), refused(), refused()]),
    );
    ctx.driver
        .always(2, MessageType::Probe, ok(true, true, true, false));
    let r = run_cycle(ctx.clone()).await.unwrap();
    assert_eq!(r.reports[0].rule, Rule::FailoverUnconfirmed);
    assert_eq!(
        r.reports[0].mirror_check,
        Some(MirrorCheck::PrimaryAnswersAgain { primary_dbid: 2 })
    );
    assert_eq!(events(&log), vec!["commit failover_unconfirmed"]);
    assert_eq!(ctx.driver.sent(MessageType::Promote), 0);
    assert_eq!(catalog.state(2), st(P, U, S), "nothing flipped");
    let ev = catalog.evidence.lock().unwrap()[0].clone();
    assert!(ev.evidence["refusal"]
        .as_str()
        .unwrap()
        .starts_with("primary dbid 2 answered a PROBE again"));
    let r = run_cycle(ctx.clone()).await.unwrap();
    assert_eq!(r.reports[0].rule, Rule::Healthy);
    assert_eq!(ctx.driver.sent(MessageType::Promote), 0);
}

fn fence_work() -> Upkeep {
    Upkeep::Fence {
        dbid: 5,
        why: "answers as a writable primary".into(),
    }
}

#[tokio::test]
async fn an_observe_only_instance_changes_no_server_beyond_the_table() {
    let (ctx, catalog, auth, log) = context(in_sync_pair());
    ctx.driver
        .always(2, MessageType::Probe, ok(true, true, true, false));
    *ctx.driver.survey_work.lock().unwrap() = vec![fence_work()];
    auth.acting.store(false, Ordering::SeqCst);
    let report = run_cycle(ctx.clone()).await.unwrap();
    assert_eq!(events(&log), Vec::<String>::new());
    assert!(report.reports[0].alarms.is_empty());
    assert!(catalog.evidence_rules().is_empty());
}

#[tokio::test]
async fn the_acting_leader_makes_driver_changes_and_records_a_fence() {
    let (ctx, catalog, _auth, log) = context(in_sync_pair());
    ctx.driver
        .always(2, MessageType::Probe, ok(true, true, true, false));
    *ctx.driver.survey_work.lock().unwrap() = vec![fence_work()];
    let report = run_cycle(ctx.clone()).await.unwrap();
    assert_eq!(
        events(&log),
        vec!["upkeep step 1", "upkeep step 2", "commit fence"]
    );
    assert_eq!(report.reports[0].alarms.len(), 1);
    assert_eq!(catalog.evidence_rules(), vec![Rule::Fence]);
    let ev = catalog.evidence.lock().unwrap()[0].evidence.clone();
    assert_eq!(ev["upkeep"]["dbid"], 5, "{ev}");
    assert_eq!(ev["alarms"][0]["kind"], "fenced", "{ev}");
}

#[tokio::test]
async fn a_driver_change_stops_when_authority_is_lost_midway() {
    let (ctx, catalog, auth, log) = context(in_sync_pair());
    ctx.driver
        .always(2, MessageType::Probe, ok(true, true, true, false));
    *ctx.driver.survey_work.lock().unwrap() = vec![fence_work()];
    let lose = auth.clone();
    *ctx.driver.between_steps.lock().unwrap() =
        Some(Box::new(move || lose.acting.store(false, Ordering::SeqCst)));
    run_cycle(ctx.clone()).await.unwrap();
    assert_eq!(
        events(&log),
        vec!["upkeep step 1", "upkeep stopped before step 2"]
    );
    assert!(catalog.evidence_rules().is_empty());
}

#[tokio::test]
async fn a_driver_change_is_not_started_past_the_act_by_deadline() {
    let (ctx, _catalog, auth, log) = context(in_sync_pair());
    ctx.driver
        .always(2, MessageType::Probe, ok(true, true, true, false));
    *ctx.driver.survey_work.lock().unwrap() = vec![fence_work()];
    let late = auth.clone();
    *auth.deadline.lock().unwrap() = Some(Instant::now() + Duration::from_secs(5));
    *ctx.driver.between_steps.lock().unwrap() = Some(Box::new(move || {
        *late.deadline.lock().unwrap() = Some(Instant::now())
    }));
    run_cycle(ctx.clone()).await.unwrap();
    assert_eq!(
        events(&log),
        vec!["upkeep step 1", "upkeep stopped before step 2"]
    );
}

#[tokio::test]
async fn a_driver_reported_restart_defers_the_failover() {
    let (ctx, catalog, _auth, log) = context(in_sync_pair());
    *ctx.driver.restarting.lock().unwrap() = Some(Duration::from_secs(3));
    let report = run_cycle(ctx.clone()).await.unwrap();
    assert_eq!(report.reports[0].rule, Rule::Restarting);
    assert!(matches!(
        report.reports[0].outcome,
        ProbeOutcome::Failed {
            restart: RestartState::StartingUp { elapsed_ms: 3000 },
            ..
        }
    ));
    assert_eq!(events(&log), Vec::<String>::new());
    assert_eq!(catalog.state(2), st(P, U, S));
    // past the driver's bound, the ordinary failover
    *ctx.driver.restarting.lock().unwrap() = None;
    let report = run_cycle(ctx.clone()).await.unwrap();
    assert_eq!(report.reports[0].rule, Rule::Failover);
}

/// Two other live members ("b", "c"); each answers `ConfirmDown` with what it is given, or
/// not at all (until the deadline).
struct TwoPeers {
    answers: HashMap<String, crate::engine::second_opinion::PeerAnswer>,
}

impl crate::engine::second_opinion::Peers for TwoPeers {
    fn live_members(
        &self,
    ) -> crate::engine::second_opinion::BoxFuture<
        '_,
        Result<Vec<crate::engine::second_opinion::PeerMember>, String>,
    > {
        Box::pin(async {
            Ok(["unit", "b", "c"]
                .iter()
                .map(|id| crate::engine::second_opinion::PeerMember {
                    instance_id: id.to_string(),
                    api_address: String::new(),
                    leader: *id == "unit",
                    last_cycle_at: None,
                })
                .collect())
        })
    }

    fn confirm_down<'a>(
        &'a self,
        peer: &'a crate::engine::second_opinion::PeerMember,
        _dbid: Dbid,
        _window: Duration,
        deadline: Instant,
    ) -> crate::engine::second_opinion::BoxFuture<'a, crate::engine::second_opinion::PeerAnswer>
    {
        Box::pin(async move {
            match self.answers.get(&peer.instance_id) {
                Some(a) => a.clone(),
                None => {
                    tokio::time::sleep_until(deadline.into()).await;
                    crate::engine::second_opinion::PeerAnswer::Error("deadline".into())
                }
            }
        })
    }

    fn report_down<'a>(
        &'a self,
        _leader: &'a crate::engine::second_opinion::PeerMember,
        _dbid: Dbid,
        _observed_at: std::time::SystemTime,
        _failure: FailureKind,
    ) -> crate::engine::second_opinion::BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}

fn with_peers(peers: TwoPeers) -> SecondOpinion {
    SecondOpinion {
        peers: Some(Arc::new(peers)),
        window: Duration::from_secs(10).into(),
        confirm_timeout: Some(Duration::from_millis(200)),
        ..SecondOpinion::default()
    }
}

fn answered(failure: Option<FailureKind>) -> crate::engine::second_opinion::PeerAnswer {
    crate::engine::second_opinion::PeerAnswer::Seen {
        failure,
        age: Duration::from_millis(1),
        probed: false,
    }
}

/// A loss only this instance sees (the others' probes are answered) is not failed over:
/// nothing written but the refusal's evidence, nothing sent, the count in the evidence.
#[tokio::test]
async fn a_loss_only_this_instance_sees_is_refused_and_nothing_is_sent() {
    let peers = TwoPeers {
        answers: HashMap::from([
            ("b".to_string(), answered(None)),
            ("c".to_string(), answered(None)),
        ]),
    };
    let (ctx, catalog, _auth, log) = context_with(in_sync_pair(), with_peers(peers));
    ctx.driver
        .always(5, MessageType::Promote, ok(false, false, false, false));
    let r = run_cycle(ctx.clone()).await.unwrap();
    assert_eq!(r.reports[0].rule, Rule::FailoverUnconfirmed);
    assert_eq!(events(&log), vec!["commit failover_unconfirmed"]);
    assert_eq!(ctx.driver.sent(MessageType::Promote), 0);
    assert_eq!(catalog.state(2), st(P, U, S), "nothing flipped");
    let ev = catalog.evidence.lock().unwrap()[0].clone();
    assert!(
        ev.evidence["refusal"]
            .as_str()
            .unwrap()
            .contains("confirmed by 1 of 3 live members"),
        "{}",
        ev.evidence
    );
    assert_eq!(
        ev.evidence["second_opinion"]["confirmations"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );
}

/// A follower's report counts: with it the loss is a majority, and the failover goes ahead
/// without waiting for the member that does not answer.
#[tokio::test]
async fn a_report_from_a_follower_makes_the_majority() {
    let (ctx, catalog, _auth, log) = context_with(
        in_sync_pair(),
        SecondOpinion {
            confirm_timeout: Some(Duration::from_secs(3600)),
            ..with_peers(TwoPeers {
                answers: HashMap::new(),
            })
        },
    );
    ctx.quorum
        .table
        .report(2, "b", std::time::SystemTime::now(), FailureKind::Refused);
    ctx.driver
        .always(5, MessageType::Promote, ok(false, false, false, false));
    let r = run_cycle(ctx.clone()).await.unwrap();
    assert_eq!(r.reports[0].rule, Rule::Failover);
    assert_eq!(events(&log), vec!["commit failover", "PROMOTE to 5"]);
    assert_eq!(catalog.state(5).role, P);
    let ev = catalog.evidence.lock().unwrap()[0].clone();
    assert_eq!(
        ev.evidence["second_opinion"]["tally"]["confirmed"],
        serde_json::json!(["b", "unit"])
    );
}

/// An observe-only instance (no acting epoch) never asks: nothing would act on the answer.
#[tokio::test]
async fn the_second_opinion_decides_nothing_for_an_instance_that_does_not_act() {
    let (ctx, _catalog, auth, _log) = context_with(
        in_sync_pair(),
        with_peers(TwoPeers {
            answers: HashMap::new(),
        }),
    );
    auth.acting.store(false, Ordering::SeqCst);
    let r = run_cycle(ctx.clone()).await.unwrap();
    assert_eq!(r.reports[0].rule, Rule::Failover);
    assert_eq!(
        r.reports[0].transition,
        Some(TransitionOutcome::ObserveOnly)
    );
    assert_eq!(ctx.driver.sent(MessageType::Promote), 0);
}

/// Contents 0..3 (primary c+2, mirror c+10), primary of content c on host `h<c>`.
fn three_hosts() -> Vec<Segment> {
    let mut rows = Vec::new();
    for c in 0..3i16 {
        let mut p = seg(c + 2, c, P, U, S);
        p.hostname = format!("h{c}");
        let mut m = seg(c + 10, c, M, U, S);
        m.hostname = format!("h{}", (c + 1) % 3);
        rows.extend([p, m]);
    }
    rows
}

fn with_brake(mut ctx: Ctx, max_hosts: crate::core::brake::HostLimit) -> Ctx {
    Arc::get_mut(&mut ctx).expect("not shared yet").brake = Arc::new(
        super::super::Brake::in_process(super::super::BrakeSettings {
            max_hosts,
            window: Duration::from_secs(600),
        }),
    );
    ctx
}

#[tokio::test]
async fn failovers_beyond_the_host_limit_are_all_held_until_released_and_other_rules_proceed() {
    let (ctx, catalog, _auth, log) = context(three_hosts());
    let ctx = with_brake(ctx, crate::core::brake::HostLimit::Hosts(1));
    // contents 0 and 1 lose their primaries (two hosts); content 2's mirror is gone
    ctx.driver
        .always(4, MessageType::Probe, ok(false, false, true, false));
    ctx.driver
        .always(4, MessageType::SyncrepOff, ok(false, false, false, false));
    let r = run_cycle(ctx.clone()).await.unwrap();
    let rules: Vec<Rule> = r.reports.iter().map(|p| p.rule).collect();
    assert_eq!(rules, [Rule::BrakeHeld, Rule::BrakeHeld, Rule::MirrorDown]);
    assert_eq!(ctx.driver.sent(MessageType::Promote), 0);
    assert_eq!(catalog.state(2), st(P, U, S), "nothing flipped");
    assert_eq!(catalog.state(3), st(P, U, S), "nothing flipped");
    assert_eq!(catalog.state(12), st(M, D, N), "the mirror-down went ahead");
    let b = r.brake.clone().unwrap();
    assert!(b.engaged && b.newly_engaged, "{b:?}");
    assert_eq!(
        (b.held, b.hosts.clone()),
        (2, vec!["h0".into(), "h1".into()])
    );
    assert!(r.reports[0].episode_began);
    let held_rows: Vec<String> = catalog
        .evidence
        .lock()
        .unwrap()
        .iter()
        .filter(|t| t.rule == Rule::BrakeHeld)
        .map(|t| t.evidence["refusal"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(held_rows.len(), 2);
    assert!(
        held_rows[0].starts_with("brake engaged: 2 hosts in window > limit 1 (h0, h1)"),
        "{held_rows:?}"
    );

    // still held, without a new alarm or new evidence; even one host is held now
    ctx.driver
        .always(3, MessageType::Probe, ok(true, true, true, false));
    let r = run_cycle(ctx.clone()).await.unwrap();
    assert_eq!(r.reports[0].rule, Rule::BrakeHeld);
    assert!(!r.brake.as_ref().unwrap().newly_engaged);
    assert!(!r.reports[0].episode_began);
    assert_eq!(ctx.driver.sent(MessageType::Promote), 0);
    assert_eq!(
        catalog
            .evidence_rules()
            .iter()
            .filter(|r| **r == Rule::BrakeHeld)
            .count(),
        2
    );

    // released: decided again from this cycle's probes; content 1 answers now
    ctx.brake
        .release("op@h", "checked", Epoch(7))
        .await
        .unwrap();
    ctx.driver
        .always(10, MessageType::Promote, ok(false, false, false, false));
    log.lock().unwrap().clear();
    let r = run_cycle(ctx.clone()).await.unwrap();
    assert_eq!(r.reports[0].rule, Rule::Failover);
    assert_eq!(r.reports[1].rule, Rule::Healthy);
    assert!(!r.brake.as_ref().unwrap().engaged);
    let flips: Vec<String> = events(&log)
        .into_iter()
        .filter(|e| !e.starts_with("SYNCREP_OFF"))
        .collect();
    assert_eq!(
        flips,
        vec!["commit failover", "PROMOTE to 10"],
        "{:?}",
        r.reports[0]
    );
    assert_eq!(catalog.state(10), st(P, U, N));
}

#[tokio::test]
async fn failovers_within_the_limit_proceed_and_are_counted_before_their_commit() {
    let (ctx, catalog, _auth, _log) = context(three_hosts());
    let ctx = with_brake(ctx, crate::core::brake::HostLimit::Hosts(1));
    for primary in [3, 4] {
        ctx.driver
            .always(primary, MessageType::Probe, ok(true, true, true, false));
    }
    let r = run_cycle(ctx.clone()).await.unwrap();
    assert_eq!(r.reports[0].rule, Rule::Failover);
    assert_eq!(catalog.state(10), st(P, U, N));
    let record = ctx.brake.seen().unwrap();
    assert_eq!(record.admitted.len(), 1);
    assert_eq!(record.admitted[0].host, "h0");
    // a second host within the window crosses the limit of 1
    ctx.driver.always(3, MessageType::Probe, refused());
    let r = run_cycle(ctx.clone()).await.unwrap();
    assert_eq!(r.reports[1].rule, Rule::BrakeHeld);
    assert_eq!(catalog.state(3), st(P, U, S));
}

#[tokio::test]
async fn an_observe_only_instance_does_not_judge_or_engage_the_brake() {
    let (ctx, catalog, auth, _log) = context(three_hosts());
    let ctx = with_brake(ctx, crate::core::brake::HostLimit::Hosts(1));
    auth.acting.store(false, Ordering::SeqCst);
    let r = run_cycle(ctx.clone()).await.unwrap();
    assert!(r
        .reports
        .iter()
        .all(|p| p.rule == Rule::Failover && p.transition == Some(TransitionOutcome::ObserveOnly)));
    assert!(!r.brake.unwrap().engaged);
    assert_eq!(ctx.brake.seen(), None, "the record was never touched");
    assert!(catalog.evidence_rules().is_empty());
}

/// The second opinion comes before the brake: failovers the quorum refuses are no failovers,
/// so they neither engage the brake nor count toward its host limit.
#[tokio::test]
async fn failovers_the_quorum_refuses_never_count_against_the_brake() {
    let peers = TwoPeers {
        answers: HashMap::from([
            ("b".to_string(), answered(None)),
            ("c".to_string(), answered(None)),
        ]),
    };
    let (ctx, catalog, _auth, _log) = context_with(three_hosts(), with_peers(peers));
    let ctx = with_brake(ctx, crate::core::brake::HostLimit::Hosts(1));
    // every primary (three hosts) fails for this instance only; every mirror answers
    for primary in [2, 3, 4] {
        ctx.driver.always(primary, MessageType::Probe, refused());
    }
    let r = run_cycle(ctx.clone()).await.unwrap();
    assert!(
        r.reports
            .iter()
            .all(|p| p.rule == Rule::FailoverUnconfirmed),
        "{:?}",
        r.reports
    );
    assert_eq!(ctx.driver.sent(MessageType::Promote), 0);
    assert!(!r.brake.as_ref().unwrap().engaged, "{:?}", r.brake);
    let admitted = ctx.brake.seen().map(|r| r.admitted.len()).unwrap_or(0);
    assert_eq!(admitted, 0, "refused failovers are not counted");
    assert_eq!(catalog.state(2), st(P, U, S), "nothing flipped");
}
