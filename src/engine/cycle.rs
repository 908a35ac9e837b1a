//! One probe cycle over every pair, and what it reports.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::{Serialize, Serializer};
use tokio::sync::Semaphore;
use tracing::Instrument;

use super::second_opinion::{SecondOpinion, Verdict};
use super::{evidence, exchange, Authority, Exchange, LiveProbeSettings, SegmentDriver};
use crate::catalog::{Catalog, CatalogError, Transition};
use crate::core::{
    apply_profile, confirm_failover, decide_lone_primary, decide_pair, failure_kind, restart_state,
    Decision, FailoverGuard, MirrorCheck, ProbeOutcome, Profile, Refusal, RestartState, RowUpdate,
    Rule,
};
use crate::driver::{DriverAlarm, Upkeep};
use crate::model::{BadContent, ContentId, Dbid, Epoch, Pair, SegmentConfig};
use crate::wire::MessageType;

/// Everything a cycle needs; shared by all pair tasks.
pub struct CycleContext<D, C, A> {
    pub driver: D,
    pub catalog: C,
    pub authority: A,
    /// Replaced only between cycles (a configuration reload), so one cycle never mixes two.
    pub settings: LiveProbeSettings,
    pub instance_id: String,
    /// Set when shutdown begins: no new attempts start; pairs already decided finish acting.
    pub stopping: AtomicBool,
    /// Refused failovers already recorded as evidence, so a long double fault leaves one row.
    pub refusals: RefusalLog,
    /// The observation table and the quorum gate before a failover (the default: this
    /// instance alone, no minimum down time).
    pub quorum: SecondOpinion,
    /// The brake on correlated failures (`engine::brake`).
    pub brake: Arc<super::Brake>,
}

/// The refusal episodes (double faults, driver vetoes, role conflicts, bad shapes, prober
/// faults, unconfirmed failovers) per content: what was refused (the rule and the primary
/// concerned) and whether its evidence row is recorded. An episode lives as long as the
/// refusal does: the first cycle that decides anything else for the content ends it, so a
/// later, new refusal is alarmed and recorded again. An instance that is not acting notes the
/// episode (its alarm is raised once) but records nothing; it records once it acts.
#[derive(Debug, Default)]
pub struct RefusalLog(Mutex<HashMap<ContentId, Episode>>);

#[derive(Debug, Clone, Copy)]
struct Episode {
    what: (Rule, Dbid),
    recorded: bool,
}

impl RefusalLog {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<ContentId, Episode>) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Notes the refusal: (whether it starts a new episode, whether its evidence is recorded).
    fn note(&self, content: ContentId, what: (Rule, Dbid)) -> (bool, bool) {
        self.with(|map| match map.get(&content) {
            Some(e) if e.what == what => (false, e.recorded),
            _ => {
                map.insert(
                    content,
                    Episode {
                        what,
                        recorded: false,
                    },
                );
                (true, false)
            }
        })
    }

    /// Marks the episode's evidence as recorded, or (false) not, so the next cycle retries.
    fn set_recorded(&self, content: ContentId, recorded: bool) {
        self.with(|map| {
            if let Some(e) = map.get_mut(&content) {
                e.recorded = recorded;
            }
        })
    }

    fn clear(&self, content: ContentId) {
        self.with(|map| map.remove(&content));
    }
}

/// What became of a decision's catalog step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransitionOutcome {
    /// The row updates committed.
    Applied,
    /// No row to write; the pair was re-read under the fence and still holds the decision's
    /// snapshot (re-PROMOTE).
    Confirmed,
    /// A refusal's evidence row committed.
    RefusalRecorded,
    /// Maintenance mode: decided, not acted on.
    Paused,
    /// Not the acting leader: decided, not acted on.
    ObserveOnly,
    /// The catalog said no (fenced, stale snapshot) or could not be reached.
    Failed(String),
}

impl fmt::Display for TransitionOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransitionOutcome::Applied => f.write_str("applied"),
            TransitionOutcome::Confirmed => f.write_str("confirmed"),
            TransitionOutcome::RefusalRecorded => f.write_str("refusal_recorded"),
            TransitionOutcome::Paused => f.write_str("paused"),
            TransitionOutcome::ObserveOnly => f.write_str("observe_only"),
            TransitionOutcome::Failed(e) => f.write_str(e),
        }
    }
}

impl Serialize for TransitionOutcome {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What became of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageResult {
    Delivered,
    /// Every attempt failed; the last error.
    Failed(String),
    /// Not sent (or not every attempt made): authority was gone or its deadline had passed.
    NotSent(String),
}

/// The message a decision sent, and how that went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageOutcome {
    pub kind: MessageType,
    pub result: MessageResult,
}

impl MessageResult {
    /// The metrics label: `ok`, `failed` or `not_sent`.
    pub fn label(&self) -> &'static str {
        match self {
            MessageResult::Delivered => "ok",
            MessageResult::Failed(_) => "failed",
            MessageResult::NotSent(_) => "not_sent",
        }
    }
}

impl fmt::Display for MessageOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.result {
            MessageResult::Delivered => write!(f, "{} ok", self.kind),
            MessageResult::Failed(e) => write!(f, "{} failed: {e}", self.kind),
            MessageResult::NotSent(why) => write!(f, "{} not sent: {why}", self.kind),
        }
    }
}

impl Serialize for MessageOutcome {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What happened to one pair this cycle.
#[derive(Debug, Clone, Serialize)]
pub struct PairReport {
    pub content: ContentId,
    pub primary_dbid: Dbid,
    pub mirror_dbid: Dbid,
    pub rule: Rule,
    pub outcome: ProbeOutcome,
    pub attempts: usize,
    pub probe_ms: u64,
    /// Latency of the successful attempt, when there was one.
    pub reply_us: Option<u64>,
    /// The catalog step of the decision, when it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transition: Option<TransitionOutcome>,
    /// The message sent after the transition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<MessageOutcome>,
    /// The epoch the transition was written with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<i64>,
    /// The catalog rows the applied transition changed (for hooks and metrics).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub updates: Vec<RowUpdate>,
    /// The rows the decision would write, whatever became of it (shadow mode compares them
    /// with what the incumbent FTS wrote).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub intended: Vec<RowUpdate>,
    /// A refusal episode (prober fault, unconfirmed failover, double fault ...) began this
    /// cycle: the alarm is raised once (log, hook, metric).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub episode_began: bool,
    /// The refusal's text, when the decision was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// The PROBE of the mirror taken before a failover, when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror_check: Option<MirrorCheck>,
    /// What the driver noticed or did outside the decision table (for hooks and metrics).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub alarms: Vec<DriverAlarm>,
}

/// The result of one cycle.
#[derive(Debug, Clone, Serialize)]
pub struct CycleReport {
    #[serde(with = "humantime_serde")]
    pub started_at: SystemTime,
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    pub pairs: usize,
    /// Pairs whose probe did not complete because shutdown began.
    pub skipped: usize,
    pub transitions_applied: usize,
    pub transitions_failed: usize,
    pub messages_sent: usize,
    pub messages_failed: usize,
    /// The catalog rejected our epoch during this cycle.
    pub fenced: bool,
    /// Maintenance mode was on when the cycle ended: decisions were reported, not acted on.
    pub paused: bool,
    /// The configuration the cycle read (for the API's per-segment view and the metrics).
    #[serde(skip)]
    pub config: SegmentConfig,
    /// Count of pairs per decision rule (refused contents count as `bad_shape`).
    pub rules: BTreeMap<Rule, usize>,
    /// Contents left alone because their rows cannot form a pair.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub refused_contents: Vec<BadContent>,
    pub reports: Vec<PairReport>,
    /// What the brake on correlated failures did (None: the cycle did not get that far).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub brake: Option<super::BrakeSummary>,
}

/// Runs one cycle: read the configuration, probe every pair concurrently, decide and act.
/// Returns an error only when the configuration could not be read at all.
pub async fn run_cycle<D, C, A>(
    ctx: Arc<CycleContext<D, C, A>>,
) -> Result<CycleReport, CatalogError>
where
    D: SegmentDriver,
    C: Catalog,
    A: Authority,
{
    let started_at = SystemTime::now();
    let start = Instant::now();
    let config = ctx.catalog.load().await?;
    let set = config.probe_pairs();
    let pairs = set.pairs;
    let permits = Arc::new(Semaphore::new(ctx.settings.get().concurrency.max(1)));
    let gate = super::brake::CycleGate::new(&ctx.brake);

    let mut tasks = tokio::task::JoinSet::new();
    for pair in pairs.iter().cloned() {
        let ctx = ctx.clone();
        let permits = permits.clone();
        let ticket = gate.ticket();
        let span = tracing::info_span!(
            "pair",
            content = pair.content(),
            primary_dbid = pair.primary.dbid,
            mirror_dbid = pair.mirror.dbid
        );
        tasks
            .spawn(async move { handle_pair(&ctx, &permits, pair, ticket).await }.instrument(span));
    }
    // `gpfts` probes primaries without a mirror too; the in-core FTS does not.
    let lone = match ctx.settings.get().profile {
        Profile::Gpfts => set.lone_primaries,
        Profile::InCore => Vec::new(),
    };
    for primary in lone.iter().cloned() {
        let ctx = ctx.clone();
        let permits = permits.clone();
        let span = tracing::info_span!(
            "lone_primary",
            content = primary.content,
            primary_dbid = primary.dbid
        );
        tasks.spawn(
            async move { handle_lone_primary(&ctx, &permits, primary).await }.instrument(span),
        );
    }

    let mut report = CycleReport {
        started_at,
        duration: Duration::ZERO,
        pairs: pairs.len() + lone.len(),
        skipped: 0,
        transitions_applied: 0,
        transitions_failed: 0,
        messages_sent: 0,
        messages_failed: 0,
        fenced: false,
        paused: false,
        config: SegmentConfig::default(),
        rules: BTreeMap::new(),
        refused_contents: Vec::new(),
        reports: Vec::with_capacity(pairs.len() + lone.len()),
        brake: None,
    };
    let brake = gate.run(
        &ctx.brake,
        super::brake::primary_hosts(&config),
        || ctx.authority.acting_epoch(),
        &ctx.instance_id,
    );
    tokio::pin!(brake);
    let mut brake_done = None;
    for bad in set.refused {
        let span = tracing::error_span!("content", content = bad.content);
        async {
            tracing::error!(reason = %bad.reason, "content refused: its rows cannot form a pair; no action");
            report.fenced |= record_bad_shape(&ctx, &config, &bad).await;
        }
        .instrument(span)
        .await;
        *report.rules.entry(Rule::BadShape).or_default() += 1;
        report.refused_contents.push(bad);
    }
    loop {
        // The gate runs beside the pairs: failovers wait for its verdict.
        let joined = tokio::select! {
            summary = &mut brake, if brake_done.is_none() => {
                brake_done = Some(summary);
                continue;
            }
            joined = tasks.join_next() => match joined {
                Some(j) => j,
                None => break,
            },
        };
        match joined {
            Ok(Some(r)) => {
                *report.rules.entry(r.pair.rule).or_default() += 1;
                report.transitions_applied += r.applied as usize;
                report.transitions_failed += r.failed as usize;
                report.fenced |= r.fenced;
                match r.message_ok {
                    Some(true) => report.messages_sent += 1,
                    Some(false) => report.messages_failed += 1,
                    None => {}
                }
                report.reports.push(r.pair);
            }
            Ok(None) => report.skipped += 1,
            Err(e) => {
                // A panicking pair task is a bug; the cycle and the daemon go on.
                tracing::error!(error = %e, "pair task failed");
                report.skipped += 1;
            }
        }
    }
    report.brake = Some(match brake_done {
        Some(s) => s,
        None => brake.await,
    });
    report.reports.sort_by_key(|r| r.content);
    report.paused = ctx.authority.paused();
    report.config = config;
    report.duration = start.elapsed();
    Ok(report)
}

struct PairResult {
    pair: PairReport,
    applied: bool,
    failed: bool,
    fenced: bool,
    message_ok: Option<bool>,
}

impl PairResult {
    /// The report of a pair (or a lone primary: mirror dbid 0) whose probe was decided,
    /// before anything is written or sent.
    fn decided(
        (content, primary_dbid, mirror_dbid): (ContentId, Dbid, Dbid),
        decision: &Decision,
        outcome: ProbeOutcome,
        probe: &Exchange,
        mirror_check: Option<MirrorCheck>,
    ) -> PairResult {
        PairResult {
            pair: PairReport {
                content,
                primary_dbid,
                mirror_dbid,
                rule: decision.rule,
                outcome,
                attempts: probe.attempts.len(),
                probe_ms: probe.elapsed.as_millis() as u64,
                reply_us: probe.reply_latency().map(|d| d.as_micros() as u64),
                transition: None,
                message: None,
                epoch: None,
                updates: Vec::new(),
                intended: decision.updates.clone(),
                episode_began: false,
                refusal: decision.refusal.as_ref().map(ToString::to_string),
                mirror_check,
                alarms: Vec::new(),
            },
            applied: false,
            failed: false,
            fenced: false,
            message_ok: None,
        }
    }
}

async fn handle_pair<D, C, A>(
    ctx: &CycleContext<D, C, A>,
    permits: &Semaphore,
    pair: Pair,
    brake: super::brake::Ticket,
) -> Option<PairResult>
where
    D: SegmentDriver,
    C: Catalog,
    A: Authority,
{
    ctx.quorum.table.begin(pair.primary.dbid);
    let Some(probe) = probe(ctx, permits, &pair.primary, Some(&pair.mirror)).await else {
        ctx.quorum.table.abandon(pair.primary.dbid);
        return None;
    };
    ctx.quorum.table.record(
        pair.primary.dbid,
        probe.result.as_ref().err().and_then(|e| failure_kind(e)),
    );
    let outcome = outcome_of(ctx, &pair.primary, &probe);
    let guard = match ctx.driver.failover_veto(&pair) {
        Some(reason) => FailoverGuard::Veto(reason),
        None => FailoverGuard::Clear,
    };
    let mut decision = decide_pair(&pair, &outcome, &guard);
    // Check the way before flipping: the mirror to promote must answer this observer as a
    // mirror, or the catalog would point at a primary we cannot even reach. At the same time,
    // ask for a second opinion: a majority of the live members must have seen the primary
    // fail (only an acting leader asks; nothing else would act on the answer).
    let mut opinion = None;
    let mirror_probe = if decision.rule == Rule::Failover {
        let (checked, verdict) = tokio::join!(check_mirror(ctx, permits, &pair), async {
            match ctx.authority.acting_epoch() {
                Some(_) => Some(
                    ctx.quorum
                        .confirm(
                            &ctx.instance_id,
                            pair.primary.dbid,
                            ctx.authority.deadline(),
                        )
                        .await,
                ),
                None => None,
            }
        });
        let checked = checked?;
        decision = confirm_failover(decision, pair.mirror.dbid, &checked.0);
        if let Some(verdict) = verdict {
            let (refusal, evidence) = second_opinion(&pair, &verdict, ctx.quorum.min_down);
            opinion = evidence;
            if let (Some(refusal), Rule::Failover) = (refusal, decision.rule) {
                decision = Decision::refused(pair.content(), Rule::FailoverUnconfirmed, refusal);
            }
        }
        Some(checked)
    } else {
        None
    };
    let decision = apply_profile(ctx.settings.get().profile, &pair, decision);
    // The brake on correlated failures sees every failover of the cycle before any commits.
    // It comes after the second opinion: a failover the quorum refused is no failover, and
    // must never count against the brake's host limit.
    let decision = brake.pass(&pair, decision).await;
    let mut result = PairResult::decided(
        (pair.content(), pair.primary.dbid, pair.mirror.dbid),
        &decision,
        outcome,
        &probe,
        mirror_probe.as_ref().map(|m| m.0),
    );
    log_decision(&decision);
    survey(ctx, permits, &pair, &mut result).await;
    let mirror_probe = mirror_probe.map(|m| m.1);
    let probes = Probes {
        primary: &probe,
        mirror: mirror_probe.as_ref(),
        opinion: opinion.as_ref(),
    };
    match &decision.refusal {
        Some(refusal) => {
            let evidence =
                |outcome: &ProbeOutcome| evidence_doc(ctx, &pair, probes, outcome, &decision);
            record_refusal(
                ctx,
                pair.primary.dbid,
                evidence,
                &decision,
                refusal,
                &mut result,
            )
            .await;
            return Some(result);
        }
        None => ctx.refusals.clear(pair.content()),
    }
    if decision.is_noop() {
        return Some(result);
    }
    let evidence = |outcome: &ProbeOutcome| evidence_doc(ctx, &pair, probes, outcome, &decision);
    act(ctx, permits, evidence, &decision, &mut result).await;
    Some(result)
}

/// What a primary's probe established, for the decision; a failure is logged.
fn outcome_of<D, C, A>(
    ctx: &CycleContext<D, C, A>,
    primary: &crate::model::Segment,
    probe: &Exchange,
) -> ProbeOutcome
where
    D: SegmentDriver,
{
    match &probe.result {
        Ok(reply) => ProbeOutcome::Replied { reply: *reply },
        Err(errors) => {
            let last = errors
                .last()
                .expect("a failed exchange has at least one error");
            tracing::warn!(
                attempts = probe.attempts.len(),
                kind = %last.kind,
                error = %last.message,
                "primary {}:{} did not answer",
                primary.address,
                primary.port
            );
            // A driver that knows the server is in an ordinary restart (and bounds how long
            // it believes so) overrides the LSN-based reading of the errors.
            let restart = match ctx.driver.restarting(primary, last) {
                Some(elapsed) => RestartState::StartingUp {
                    elapsed_ms: elapsed.as_millis() as u64,
                },
                None => restart_state(errors),
            };
            ProbeOutcome::Failed {
                kind: failure_kind(errors).unwrap_or(last.kind),
                restart,
            }
        }
    }
}

/// A content without a mirror, probed under the `gpfts` profile only (the in-core FTS leaves
/// such contents alone): the primary is PROBEd as a pair's would be, decided by
/// [`decide_lone_primary`], and a change is written as any transition (fenced, with history
/// and evidence). Nothing is ever sent: there is no mirror to promote. The driver's survey and
/// veto are pair-level and do not apply. Its report has `mirror_dbid` 0 (no dbid is 0).
async fn handle_lone_primary<D, C, A>(
    ctx: &CycleContext<D, C, A>,
    permits: &Semaphore,
    primary: crate::model::Segment,
) -> Option<PairResult>
where
    D: SegmentDriver,
    C: Catalog,
    A: Authority,
{
    let probe = probe(ctx, permits, &primary, None).await?;
    let outcome = outcome_of(ctx, &primary, &probe);
    let decision = decide_lone_primary(&primary, &outcome);
    let mut result = PairResult::decided(
        (primary.content, primary.dbid, 0),
        &decision,
        outcome,
        &probe,
        None,
    );
    if decision.rule == Rule::PrimaryDown && !decision.updates.is_empty() {
        tracing::warn!(
            rule = %decision.rule,
            "primary without a mirror lost: marking it down (gpfts profile); no failover possible"
        );
    } else {
        log_decision(&decision);
    }
    let evidence = |outcome: &ProbeOutcome| {
        evidence::lone_primary(
            &ctx.instance_id,
            &primary,
            &probe,
            outcome,
            &decision,
            &ctx.settings.get(),
        )
    };
    match &decision.refusal {
        Some(refusal) => {
            record_refusal(ctx, primary.dbid, evidence, &decision, refusal, &mut result).await;
            return Some(result);
        }
        None => ctx.refusals.clear(primary.content),
    }
    if !decision.is_noop() {
        act(ctx, permits, evidence, &decision, &mut result).await;
    }
    Some(result)
}

/// The exchanges behind one decision: the primary's probe and, before a failover, the
/// mirror's.
#[derive(Clone, Copy)]
struct Probes<'a> {
    primary: &'a Exchange,
    mirror: Option<&'a Exchange>,
    /// The quorum gate's evidence: every member's answer.
    opinion: Option<&'a serde_json::Value>,
}

/// The refusal a quorum verdict calls for (None: go ahead) and its evidence.
fn second_opinion(
    pair: &Pair,
    verdict: &Verdict,
    min_down: Duration,
) -> (Option<Refusal>, Option<serde_json::Value>) {
    let primary_dbid = pair.primary.dbid;
    match verdict {
        Verdict::Alone => (None, None),
        Verdict::Confirmed(e) => {
            tracing::info!(summary = %e.tally.summary(), by = ?e.tally.confirmed, "failover confirmed by a majority of the live members");
            (None, Some(e.to_json()))
        }
        Verdict::NotConfirmed(e) => (
            Some(Refusal::NotConfirmedByQuorum {
                primary_dbid,
                confirmed: e.tally.confirmed.clone(),
                live: e.tally.live.len(),
                needed: e.tally.needed,
                registry_error: e.registry_error.clone(),
            }),
            Some(e.to_json()),
        ),
        Verdict::DownTooBriefly { down } => (
            Some(Refusal::DownTooBriefly {
                primary_dbid,
                down_ms: down.as_millis() as u64,
                min_down_ms: min_down.as_millis() as u64,
            }),
            None,
        ),
    }
}

/// PROBEs `target` with retries, each attempt bounded by the timeout; no attempt starts once
/// shutdown began (then None). `mirror`: see [`exchange`].
async fn probe<D, C, A>(
    ctx: &CycleContext<D, C, A>,
    permits: &Semaphore,
    target: &crate::model::Segment,
    mirror: Option<&crate::model::Segment>,
) -> Option<Exchange>
where
    D: SegmentDriver,
    C: Catalog,
    A: Authority,
{
    let timeout = ctx.settings.get().timeout;
    let gate = || (!ctx.stopping.load(Ordering::Relaxed)).then(|| Instant::now() + timeout);
    exchange(
        &ctx.driver,
        permits,
        &ctx.settings.get(),
        target,
        MessageType::Probe,
        mirror,
        &gate,
    )
    .await
}

/// PROBEs the mirror a failover would promote, with the primary's retry budget (a mirror that
/// misses one attempt is not declared unreachable), and the primary again at the same time.
/// The primary's failures were observed before this check: if this observer's own path to the
/// segments was down then and has just come back, the mirror answers now and so does the
/// primary — which turns the failover into a refusal. Probing both at once keeps a real
/// failover as fast as before: both see the same path. None when shutdown began.
async fn check_mirror<D, C, A>(
    ctx: &CycleContext<D, C, A>,
    permits: &Semaphore,
    pair: &Pair,
) -> Option<(MirrorCheck, Exchange)>
where
    D: SegmentDriver,
    C: Catalog,
    A: Authority,
{
    let (sent, again) = tokio::join!(
        probe(ctx, permits, &pair.mirror, None),
        probe(ctx, permits, &pair.primary, Some(&pair.mirror)),
    );
    let sent = sent?;
    let check = match (&sent.result, again.map(|a| a.result.is_ok())) {
        (_, Some(true)) => MirrorCheck::PrimaryAnswersAgain {
            primary_dbid: pair.primary.dbid,
        },
        (Ok(reply), _) if reply.is_role_mirror => MirrorCheck::AnswersAsMirror,
        (Ok(_), _) => MirrorCheck::AnswersAsPrimary,
        (Err(errors), _) => MirrorCheck::Unreachable {
            kind: failure_kind(errors).expect("a failed exchange has at least one error"),
        },
    };
    tracing::info!(
        mirror_dbid = pair.mirror.dbid,
        ?check,
        "mirror checked before failover"
    );
    Some((check, sent))
}

/// The evidence document of a decision, with the mirror check and the driver's detail.
fn evidence_doc<D, C, A>(
    ctx: &CycleContext<D, C, A>,
    pair: &Pair,
    probes: Probes<'_>,
    outcome: &ProbeOutcome,
    decision: &Decision,
) -> serde_json::Value
where
    D: SegmentDriver,
{
    let mut doc = evidence::build(
        &ctx.instance_id,
        pair,
        probes.primary,
        outcome,
        decision,
        &ctx.settings.get(),
    );
    if let Some(m) = probes.mirror {
        doc["mirror_check"] = evidence::mirror_check(pair, m);
    }
    if let Some(o) = probes.opinion {
        doc["second_opinion"] = o.clone();
    }
    if let Some(detail) = ctx.driver.probe_detail(pair.content()) {
        doc["driver"] = detail;
    }
    doc
}

/// The driver's read-only look beyond the probe, then the server changes it wants, made only
/// as the acting leader with authority confirmed as for PROMOTE and asked again before every
/// change (an observe-only, paused or deposed instance changes no server).
async fn survey<D, C, A>(
    ctx: &CycleContext<D, C, A>,
    permits: &Semaphore,
    pair: &Pair,
    result: &mut PairResult,
) where
    D: SegmentDriver,
    C: Catalog,
    A: Authority,
{
    if ctx.stopping.load(Ordering::Relaxed) {
        return;
    }
    let found = {
        let Ok(_permit) = permits.acquire().await else {
            return;
        };
        ctx.driver
            .survey(pair, Instant::now() + ctx.settings.get().timeout)
            .await
    };
    result.pair.alarms.extend(found.alarms);
    if found.work.is_empty() {
        return;
    }
    let Some(epoch) = ctx.authority.acting_epoch() else {
        tracing::info!(work = ?found.work, "observe-only or paused: not changing any server");
        return;
    };
    if !ctx.authority.confirm().await {
        tracing::warn!(work = ?found.work, "authority not confirmed: not changing any server");
        return;
    }
    let gate = || {
        if ctx.authority.acting_epoch() != Some(epoch) {
            return None;
        }
        match ctx.authority.deadline() {
            Some(deadline) if Instant::now() >= deadline => None,
            other => Some(other),
        }
    };
    for work in &found.work {
        let alarms = {
            let Ok(_permit) = permits.acquire().await else {
                return;
            };
            ctx.driver.upkeep(pair, work, &gate).await
        };
        if matches!(work, Upkeep::Fence { .. }) && !alarms.is_empty() {
            let t = Transition {
                epoch,
                instance_id: ctx.instance_id.clone(),
                content: pair.content(),
                rule: Rule::Fence,
                updates: Vec::new(),
                expect: Vec::new(),
                evidence: evidence::fence(
                    &ctx.instance_id,
                    pair,
                    work,
                    &alarms,
                    ctx.driver.probe_detail(pair.content()),
                ),
            };
            if let Err(e) = ctx.catalog.apply(&t).await {
                result.fenced |= fenced_out(ctx, &e);
                tracing::error!(error = %e, "fence evidence not recorded");
            }
        }
        result.pair.alarms.extend(alarms);
    }
}

/// Writes one evidence row (no row updates, fenced like any transition) the first time a
/// failover is refused for a lost primary, so `explain` can show why nothing happened.
async fn record_refusal<D, C, A>(
    ctx: &CycleContext<D, C, A>,
    primary_dbid: Dbid,
    evidence: impl FnOnce(&ProbeOutcome) -> serde_json::Value,
    decision: &Decision,
    refusal: &Refusal,
    result: &mut PairResult,
) where
    D: SegmentDriver,
    C: Catalog,
    A: Authority,
{
    let reason = refusal.to_string();
    let content = decision.content;
    let (new_episode, recorded) = ctx.refusals.note(content, (decision.rule, primary_dbid));
    result.pair.episode_began = new_episode;
    // Logged once per episode at warning level; every cycle at debug.
    match (decision.rule, new_episode) {
        (_, false) => tracing::debug!(%reason, rule = %decision.rule, "still refused"),
        (Rule::RoleConflict, true) => tracing::error!(%reason, "re-PROMOTE refused"),
        (Rule::ProberFault, true) => tracing::error!(
            %reason,
            "prober fault: this observer cannot probe the primary; not a segment failure, no failover"
        ),
        (Rule::BrakeHeld, true) => tracing::warn!(%reason, "failover held by the brake"),
        (_, true) => tracing::warn!(%reason, "failover refused"),
    }
    if recorded {
        return;
    }
    let Some(epoch) = ctx.authority.acting_epoch() else {
        return;
    };
    ctx.refusals.set_recorded(content, true);
    let mut doc = evidence(&result.pair.outcome);
    doc["refusal"] = serde_json::Value::String(reason.clone());
    let t = Transition {
        epoch,
        instance_id: ctx.instance_id.clone(),
        content,
        rule: decision.rule,
        updates: Vec::new(),
        expect: Vec::new(),
        evidence: doc,
    };
    let (outcome, fenced) = apply_refusal(ctx, &t).await;
    result.pair.transition = Some(outcome);
    result.fenced |= fenced;
}

/// Records a refusal's evidence row; on failure forgets the mark so the next cycle retries.
/// Returns the outcome and whether the catalog fenced us out.
async fn apply_refusal<D, C, A>(
    ctx: &CycleContext<D, C, A>,
    t: &Transition,
) -> (TransitionOutcome, bool)
where
    D: SegmentDriver,
    C: Catalog,
    A: Authority,
{
    match ctx.catalog.apply(t).await {
        Ok(()) => {
            tracing::warn!(rule = %t.rule, "refusal recorded as evidence");
            (TransitionOutcome::RefusalRecorded, false)
        }
        Err(e) => {
            ctx.refusals.set_recorded(t.content, false);
            let fenced = fenced_out(ctx, &e);
            tracing::error!(error = %e, "refusal not recorded; the next cycle retries");
            (TransitionOutcome::Failed(e.to_string()), fenced)
        }
    }
}

/// Tells the authority when the catalog holds a newer epoch; true if it did.
fn fenced_out<D, C, A: Authority>(ctx: &CycleContext<D, C, A>, e: &CatalogError) -> bool {
    match e {
        CatalogError::Fenced { current, .. } => {
            ctx.authority.fenced_out(*current);
            true
        }
        _ => false,
    }
}

/// Records (once per episode) that a content was refused for its shape, with its rows as
/// evidence. Returns whether the catalog fenced us out.
async fn record_bad_shape<D, C, A>(
    ctx: &CycleContext<D, C, A>,
    config: &SegmentConfig,
    bad: &BadContent,
) -> bool
where
    D: SegmentDriver,
    C: Catalog,
    A: Authority,
{
    let Some(epoch) = ctx.authority.acting_epoch() else {
        return false;
    };
    if ctx.refusals.note(bad.content, (Rule::BadShape, -1)).1 {
        return false;
    }
    ctx.refusals.set_recorded(bad.content, true);
    let t = Transition {
        epoch,
        instance_id: ctx.instance_id.clone(),
        content: bad.content,
        rule: Rule::BadShape,
        updates: Vec::new(),
        expect: Vec::new(),
        evidence: evidence::bad_shape(&ctx.instance_id, config, bad),
    };
    apply_refusal(ctx, &t).await.1
}

fn log_decision(d: &Decision) {
    match d.rule {
        Rule::Healthy | Rule::Restarting | Rule::RetryRequested => {
            tracing::debug!(rule = %d.rule, "decided")
        }
        Rule::DoubleFault => tracing::warn!(
            rule = %d.rule,
            "FTS double fault detected: primary lost and mirror not in sync; no change"
        ),
        Rule::PrimaryDown => tracing::warn!(
            rule = %d.rule,
            "FTS double fault detected: primary lost and mirror not in sync; marking the primary down (gpfts profile)"
        ),
        Rule::RoleConflict | Rule::BadShape => {
            tracing::error!(rule = %d.rule, "refused: not acting on this pair")
        }
        // Logged once per episode where the refusal is noted.
        Rule::ProberFault | Rule::FailoverUnconfirmed | Rule::BrakeHeld => {
            tracing::debug!(rule = %d.rule, "refused: not acting on this pair")
        }
        _ => tracing::info!(
            rule = %d.rule,
            updates = d.updates.len(),
            message = d.message.as_ref().map(|m| m.kind.as_str()),
            "decided"
        ),
    }
}

/// Applies a decision that is not refused: its transition (fenced by our epoch), then its
/// message. `evidence` builds the transition's evidence document.
async fn act<D, C, A>(
    ctx: &CycleContext<D, C, A>,
    permits: &Semaphore,
    evidence: impl FnOnce(&ProbeOutcome) -> serde_json::Value,
    decision: &Decision,
    result: &mut PairResult,
) where
    D: SegmentDriver,
    C: Catalog,
    A: Authority,
{
    let Some(epoch) = ctx.authority.acting_epoch() else {
        if ctx.authority.paused() {
            tracing::info!(rule = %decision.rule, "paused (maintenance): not acting on this decision");
            result.pair.transition = Some(TransitionOutcome::Paused);
        } else {
            tracing::info!(rule = %decision.rule, "observe-only: not acting on this decision");
            result.pair.transition = Some(TransitionOutcome::ObserveOnly);
        }
        return;
    };
    if !decision.updates.is_empty() || !decision.expect.is_empty() {
        if let Some(delay) = super::faults::delay_before_apply() {
            tracing::warn!(?delay, %epoch, "fault injection: delaying the catalog write");
            tokio::time::sleep(delay).await;
        }
        let t = Transition {
            epoch,
            instance_id: ctx.instance_id.clone(),
            content: decision.content,
            rule: decision.rule,
            updates: decision.updates.clone(),
            expect: decision.expect.clone(),
            evidence: evidence(&result.pair.outcome),
        };
        match ctx.catalog.apply(&t).await {
            Ok(()) => {
                for u in &decision.updates {
                    tracing::info!(
                        dbid = u.dbid,
                        %epoch,
                        from = %u.from,
                        to = %u.to,
                        "{}",
                        u.history_desc()
                    );
                }
                result.pair.epoch = Some(epoch.0);
                if decision.updates.is_empty() {
                    result.pair.transition = Some(TransitionOutcome::Confirmed);
                } else {
                    result.applied = true;
                    result.pair.transition = Some(TransitionOutcome::Applied);
                    result.pair.updates = decision.updates.clone();
                }
            }
            Err(e) => {
                result.fenced |= fenced_out(ctx, &e);
                tracing::error!(error = %e, rule = %decision.rule, "transition not applied; no message sent");
                result.failed = true;
                result.pair.transition = Some(TransitionOutcome::Failed(e.to_string()));
                return;
            }
        }
    }
    let Some(msg) = &decision.message else {
        return;
    };
    let outcome = send_message(ctx, permits, epoch, msg.kind, &msg.target).await;
    match &outcome {
        MessageResult::Delivered => {
            tracing::info!(message = %msg.kind, target_dbid = msg.target.dbid, "message delivered");
            result.message_ok = Some(true);
        }
        MessageResult::Failed(last) => {
            match msg.kind {
                MessageType::Promote => tracing::warn!(
                    target_dbid = msg.target.dbid,
                    error = %last,
                    "FTS double fault detected: PROMOTE failed after retries; the next cycle retries"
                ),
                _ => tracing::warn!(
                    target_dbid = msg.target.dbid,
                    error = %last,
                    "FTS failed to turn off syncrep; the next cycle retries"
                ),
            }
            result.message_ok = Some(false);
        }
        MessageResult::NotSent(why) => {
            tracing::warn!(message = %msg.kind, target_dbid = msg.target.dbid, %why, "message not sent")
        }
    }
    result.pair.message = Some(MessageOutcome {
        kind: msg.kind,
        result: outcome,
    });
}

/// Sends PROMOTE / SYNCREP_OFF with the epoch the catalog step committed under. Leadership is
/// confirmed in etcd once; then every attempt starts only while that epoch is still ours and
/// before the act-by deadline, and must end by that deadline: a message is never sent, nor
/// retried, once a newer leader may exist.
async fn send_message<D, C, A>(
    ctx: &CycleContext<D, C, A>,
    permits: &Semaphore,
    epoch: Epoch,
    kind: MessageType,
    target: &crate::model::Segment,
) -> MessageResult
where
    D: SegmentDriver,
    C: Catalog,
    A: Authority,
{
    if ctx.authority.acting_epoch() != Some(epoch) || !ctx.authority.confirm().await {
        return MessageResult::NotSent("no authority".into());
    }
    let timeout = ctx.settings.get().timeout;
    let gate = || {
        if ctx.authority.acting_epoch() != Some(epoch) {
            return None;
        }
        let now = Instant::now();
        match ctx.authority.deadline() {
            Some(deadline) if now >= deadline => None,
            Some(deadline) => Some(deadline),
            None => Some(now + timeout),
        }
    };
    let Some(sent) = exchange(
        &ctx.driver,
        permits,
        &ctx.settings.get(),
        target,
        kind,
        None,
        &gate,
    )
    .await
    else {
        return MessageResult::NotSent("authority lost or act-by deadline passed".into());
    };
    match &sent.result {
        Ok(_) => MessageResult::Delivered,
        Err(errors) => {
            MessageResult::Failed(errors.last().map(|e| e.to_string()).unwrap_or_default())
        }
    }
}

#[cfg(test)]
mod tests;
