//! One probe cycle over every pair, and what it reports.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::sync::Semaphore;
use tracing::Instrument;

use super::{evidence, exchange, Authority, Exchange, ProbeSettings, SegmentDriver};
use crate::catalog::{Catalog, CatalogError, Transition};
use crate::core::{decide_pair, restart_state, Decision, ProbeOutcome, RowUpdate, Rule};
use crate::model::{ContentId, Dbid, Pair, SegmentConfig};
use crate::wire::MessageType;

/// Everything a cycle needs; shared by all pair tasks.
pub struct CycleContext<D, C, A> {
    pub driver: D,
    pub catalog: C,
    pub authority: A,
    pub settings: ProbeSettings,
    pub instance_id: String,
    /// Set when shutdown begins: no new attempts start; pairs already decided finish acting.
    pub stopping: AtomicBool,
    /// Refused failovers already recorded as evidence, so a long double fault leaves one row.
    pub refusals: RefusalLog,
}

/// The refused failovers (double faults, driver vetoes) recorded in the evidence table, per
/// content with the primary that was lost. An entry lives as long as the refusal does: the
/// first cycle that decides anything else for the content removes it, so a later, new
/// refusal is recorded again.
#[derive(Debug, Default)]
pub struct RefusalLog(Mutex<HashMap<ContentId, Dbid>>);

impl RefusalLog {
    /// Marks the refusal; true if it was not recorded yet.
    fn mark(&self, content: ContentId, primary: Dbid) -> bool {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(content, primary) != Some(primary)
    }

    fn clear(&self, content: ContentId) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&content);
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
    /// Catalog transition: "applied", "observe_only", or the error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transition: Option<String>,
    /// Message sent after the transition: "PROMOTE ok", "SYNCREP_OFF failed: ..." ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The epoch the transition was written with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<i64>,
    /// The catalog rows the applied transition changed (for hooks and metrics).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub updates: Vec<RowUpdate>,
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
    /// Count of pairs per decision rule.
    pub rules: BTreeMap<Rule, usize>,
    pub reports: Vec<PairReport>,
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
    let pairs = config.probe_pairs();
    let permits = Arc::new(Semaphore::new(ctx.settings.concurrency.max(1)));

    let mut tasks = tokio::task::JoinSet::new();
    for pair in pairs.iter().cloned() {
        let ctx = ctx.clone();
        let permits = permits.clone();
        let span = tracing::info_span!(
            "pair",
            content = pair.content(),
            primary_dbid = pair.primary.dbid,
            mirror_dbid = pair.mirror.dbid
        );
        tasks.spawn(async move { handle_pair(&ctx, &permits, pair).await }.instrument(span));
    }

    let mut report = CycleReport {
        started_at,
        duration: Duration::ZERO,
        pairs: pairs.len(),
        skipped: 0,
        transitions_applied: 0,
        transitions_failed: 0,
        messages_sent: 0,
        messages_failed: 0,
        fenced: false,
        paused: false,
        config: SegmentConfig::default(),
        rules: BTreeMap::new(),
        reports: Vec::with_capacity(pairs.len()),
    };
    while let Some(joined) = tasks.join_next().await {
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

async fn handle_pair<D, C, A>(
    ctx: &CycleContext<D, C, A>,
    permits: &Semaphore,
    pair: Pair,
) -> Option<PairResult>
where
    D: SegmentDriver,
    C: Catalog,
    A: Authority,
{
    let stop = || ctx.stopping.load(Ordering::Relaxed);
    let probe = exchange(
        &ctx.driver,
        permits,
        &ctx.settings,
        &pair.primary,
        MessageType::Probe,
        Some(&pair.mirror),
        &stop,
    )
    .await?;
    let outcome = match &probe.result {
        Ok(reply) => ProbeOutcome::Replied { reply: *reply },
        Err(errors) => {
            let last = errors
                .last()
                .expect("a failed exchange has at least one error");
            ProbeOutcome::Failed {
                kind: last.kind,
                restart: restart_state(errors),
            }
        }
    };
    if let Err(errors) = &probe.result {
        let last = errors
            .last()
            .expect("a failed exchange has at least one error");
        tracing::warn!(
            attempts = probe.attempts.len(),
            kind = %last.kind,
            error = %last.message,
            "primary {}:{} did not answer",
            pair.primary.address,
            pair.primary.port
        );
    }
    let mut decision = decide_pair(&pair, &outcome);
    let mut refusal = None;
    if decision.rule == Rule::Failover {
        if let Some(reason) = ctx.driver.failover_veto(&pair) {
            tracing::warn!(
                mirror_dbid = pair.mirror.dbid,
                %reason,
                "data-loss guard: refusing to promote the mirror although the catalog has it in sync"
            );
            decision = Decision {
                content: pair.content(),
                rule: Rule::DoubleFault,
                updates: Vec::new(),
                message: None,
            };
            refusal = Some(format!("driver veto: {reason}"));
        }
    }
    if decision.rule == Rule::DoubleFault && refusal.is_none() {
        refusal = Some(format!(
            "catalog has mirror dbid {} {} with mode {}: promoting it could lose committed \
             transactions",
            pair.mirror.dbid,
            if pair.mirror.is_up() { "up" } else { "down" },
            pair.mirror.mode
        ));
    }
    let mut result = PairResult {
        pair: PairReport {
            content: pair.content(),
            primary_dbid: pair.primary.dbid,
            mirror_dbid: pair.mirror.dbid,
            rule: decision.rule,
            outcome,
            attempts: probe.attempts.len(),
            probe_ms: probe.elapsed.as_millis() as u64,
            reply_us: probe.reply_latency().map(|d| d.as_micros() as u64),
            transition: None,
            message: None,
            epoch: None,
            updates: Vec::new(),
        },
        applied: false,
        failed: false,
        fenced: false,
        message_ok: None,
    };
    log_decision(&decision);
    match refusal {
        Some(reason) => {
            record_refusal(ctx, &pair, &probe, &decision, reason, &mut result).await;
            return Some(result);
        }
        None => ctx.refusals.clear(pair.content()),
    }
    if decision.is_noop() {
        return Some(result);
    }
    act(ctx, permits, &pair, &probe, &decision, &mut result).await;
    Some(result)
}

/// Writes one evidence row (no row updates, fenced like any transition) the first time a
/// failover is refused for a lost primary, so `explain` can show why nothing happened.
async fn record_refusal<D, C, A>(
    ctx: &CycleContext<D, C, A>,
    pair: &Pair,
    probe: &Exchange,
    decision: &Decision,
    reason: String,
    result: &mut PairResult,
) where
    D: SegmentDriver,
    C: Catalog,
    A: Authority,
{
    let Some(epoch) = ctx.authority.acting_epoch() else {
        return;
    };
    if !ctx.refusals.mark(pair.content(), pair.primary.dbid) {
        return;
    }
    let mut doc = evidence::build(
        &ctx.instance_id,
        pair,
        probe,
        &result.pair.outcome,
        decision,
        &ctx.settings,
    );
    doc["refusal"] = serde_json::Value::String(reason.clone());
    if let Some(detail) = ctx.driver.probe_detail(pair.content()) {
        doc["driver"] = detail;
    }
    let t = Transition {
        epoch,
        instance_id: ctx.instance_id.clone(),
        content: pair.content(),
        rule: decision.rule,
        updates: Vec::new(),
        evidence: doc,
    };
    match ctx.catalog.apply(&t).await {
        Ok(()) => {
            tracing::warn!(%reason, "failover refused; recorded as evidence");
            result.pair.transition = Some("refusal_recorded".into());
        }
        Err(e) => {
            ctx.refusals.clear(pair.content());
            if let CatalogError::Fenced { current, .. } = &e {
                ctx.authority.fenced_out(*current);
                result.fenced = true;
            }
            tracing::error!(error = %e, "failover refusal not recorded; the next cycle retries");
            result.pair.transition = Some(e.to_string());
        }
    }
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
        _ => tracing::info!(
            rule = %d.rule,
            updates = d.updates.len(),
            message = d.message.as_ref().map(|m| m.kind.as_str()),
            "decided"
        ),
    }
}

async fn act<D, C, A>(
    ctx: &CycleContext<D, C, A>,
    permits: &Semaphore,
    pair: &Pair,
    probe: &Exchange,
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
            result.pair.transition = Some("paused".into());
        } else {
            tracing::info!(rule = %decision.rule, "observe-only: not acting on this decision");
            result.pair.transition = Some("observe_only".into());
        }
        return;
    };
    if !decision.updates.is_empty() {
        if let Some(delay) = super::faults::delay_before_apply() {
            tracing::warn!(?delay, %epoch, "fault injection: delaying the catalog write");
            tokio::time::sleep(delay).await;
        }
        let t = Transition {
            epoch,
            instance_id: ctx.instance_id.clone(),
            content: pair.content(),
            rule: decision.rule,
            updates: decision.updates.clone(),
            evidence: {
                let mut doc = evidence::build(
                    &ctx.instance_id,
                    pair,
                    probe,
                    &result.pair.outcome,
                    decision,
                    &ctx.settings,
                );
                if let Some(detail) = ctx.driver.probe_detail(pair.content()) {
                    doc["driver"] = detail;
                }
                doc
            },
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
                result.applied = true;
                result.pair.transition = Some("applied".into());
                result.pair.updates = decision.updates.clone();
                result.pair.epoch = Some(epoch.0);
            }
            Err(e) => {
                if let CatalogError::Fenced { current, .. } = &e {
                    ctx.authority.fenced_out(*current);
                    result.fenced = true;
                }
                tracing::error!(error = %e, rule = %decision.rule, "transition not applied; no message sent");
                result.failed = true;
                result.pair.transition = Some(e.to_string());
                return;
            }
        }
    }
    let Some(msg) = &decision.message else {
        return;
    };
    if ctx.authority.acting_epoch().is_none() || !ctx.authority.confirm().await {
        tracing::warn!(message = %msg.kind, "lost authority before sending; message not sent");
        result.pair.message = Some(format!("{} not sent: no authority", msg.kind));
        return;
    }
    let never_stop = || false;
    let sent = exchange(
        &ctx.driver,
        permits,
        &ctx.settings,
        &msg.target,
        msg.kind,
        None,
        &never_stop,
    )
    .await
    .expect("an exchange that never stops always completes");
    match &sent.result {
        Ok(_) => {
            tracing::info!(message = %msg.kind, target_dbid = msg.target.dbid, "message delivered");
            result.message_ok = Some(true);
            result.pair.message = Some(format!("{} ok", msg.kind));
        }
        Err(errors) => {
            let last = errors.last().map(|e| e.to_string()).unwrap_or_default();
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
            result.pair.message = Some(format!("{} failed: {last}", msg.kind));
        }
    }
}
