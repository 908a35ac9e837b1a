//! The failover's steps against the world: fence the old coordinator, record the intent,
//! promote the standby, verify it, record the outcome. The order, and what stops it, is
//! [`crate::core::coordinator::advance`]; this module only performs one step at a time, each
//! behind the authority check the step needs.

use std::time::Instant;

use serde_json::json;

use super::probe::{self, Endpoint};
use super::records::{
    CatalogUpdate, CoordinatorState, Extra, Fence, HistoryRecord, Intent, IntentKind, Read,
};
use super::Watcher;
use crate::core::coordinator::{advance, first_step, CoordinatorDecision, Step};
use crate::driver::postgres::act;
use crate::driver::postgres::fence::run_command;
use crate::model::{Mode, Role, Segment, Status};
use crate::wire::failure::{AttemptError, FailureKind};

/// What a failover works on, fixed when it starts.
pub struct Plan {
    pub decision: CoordinatorDecision,
    pub from: Endpoint,
    pub to: Endpoint,
    pub kind: IntentKind,
    /// The standby's server has `pg_promote()`.
    pub has_pg_promote: bool,
    pub standby_replay_lsn: Option<String>,
    /// The state as read this round.
    pub read: Read,
    /// The leader key of the term that decided.
    pub fence: Fence,
    pub epoch: i64,
    /// What the decision read.
    pub evidence: serde_json::Value,
}

impl Plan {
    /// Writes `state` and its history record (one fenced transaction, on the state as this
    /// plan last read or wrote it) and makes the written state the one the next step builds
    /// on. Returns the state key's new mod revision.
    async fn record(
        &mut self,
        w: &Watcher,
        state: CoordinatorState,
        history: &HistoryRecord,
        extra: Extra,
    ) -> Result<i64, String> {
        let written = w
            .records
            .write_with(
                &self.fence,
                self.read.mod_revision,
                Some(&state),
                history,
                extra,
            )
            .await
            .map_err(|e| e.to_string())?;
        self.read = Read {
            state: Some(state),
            mod_revision: written,
        };
        Ok(written)
    }
}

/// The coordinator pair's servers as `Segment` rows (content -1), for the fence and promote
/// commands' arguments and environment. ftsd knows them by address, not by dbid: dbid 0.
fn as_segment(e: &Endpoint, role: Role) -> Segment {
    Segment {
        dbid: 0,
        content: -1,
        role,
        preferred_role: role,
        mode: Mode::NotInSync,
        status: Status::Up,
        port: i32::from(e.port),
        hostname: e.host.clone(),
        address: e.host.clone(),
        datadir: String::new(),
    }
}

/// Runs the failover from its first step to `Done` or a stop; returns the last step and the
/// steps' reports (for the evidence).
pub async fn run(w: &Watcher, mut plan: Plan) -> (Step, Vec<serde_json::Value>) {
    let fence_command = !w.settings.fence_command.is_empty();
    let resuming = plan.decision != CoordinatorDecision::Failover;
    let Some(mut step) = first_step(plan.decision, fence_command) else {
        return (Step::Done, Vec::new());
    };
    let mut reports = Vec::new();
    let started = Instant::now();
    loop {
        if matches!(step, Step::Done | Step::Stopped(_)) {
            return (step, reports);
        }
        let span = tracing::info_span!("coordinator_failover", content = -1, step = ?step, from = %plan.from, to = %plan.to);
        let _guard = span.enter();
        plan.evidence["steps"] = serde_json::Value::Array(reports.clone());
        let result = perform(w, &mut plan, step).await;
        let ok = result.is_ok();
        let report = match &result {
            Ok(detail) => json!({"step": format!("{step:?}"), "ok": true, "detail": detail,
                                 "at_ms": started.elapsed().as_millis() as u64}),
            Err(e) => json!({"step": format!("{step:?}"), "ok": false, "error": e,
                             "at_ms": started.elapsed().as_millis() as u64}),
        };
        match &result {
            Ok(_) => tracing::info!(step = ?step, "coordinator failover step done"),
            Err(e) => tracing::error!(step = ?step, error = %e, "coordinator failover step failed"),
        }
        reports.push(report);
        let authority = w.acting_term() == Some(plan.fence.revision);
        step = advance(step, ok, authority, resuming);
        if let Step::Stopped(stop) = step {
            tracing::error!(?stop, "coordinator failover stopped");
            w.record_stop(&plan, stop, &reports).await;
        }
    }
}

async fn perform(w: &Watcher, plan: &mut Plan, step: Step) -> Result<String, String> {
    match step {
        Step::Fence => fence(w, plan).await,
        Step::RecordIntent => record_intent(w, plan).await,
        Step::Promote => promote(w, plan).await,
        Step::Verify => verify(w, plan).await,
        Step::RecordOutcome => record_outcome(w, plan).await,
        Step::Done | Step::Stopped(_) => Ok(String::new()),
    }
}

async fn fence(w: &Watcher, plan: &Plan) -> Result<String, String> {
    let term = plan.fence.revision;
    let gate = || w.gate(term);
    run_command(
        &w.settings.fence_command,
        &as_segment(&plan.from, Role::Primary),
        "coordinator failover: fence the old coordinator before promoting its standby",
        w.settings.fence_timeout,
        &gate,
    )
    .await
    .map(|()| format!("{} exited 0", w.settings.fence_command[0]))
}

pub(super) async fn record_intent(w: &Watcher, plan: &mut Plan) -> Result<String, String> {
    let id = w.records.next_id();
    let intent = Intent {
        id,
        kind: plan.kind,
        from: plan.from.to_string(),
        to: plan.to.to_string(),
        epoch: plan.epoch,
        instance_id: w.instance_id.clone(),
        standby_replay_lsn: plan.standby_replay_lsn.clone(),
    };
    let base = plan.read.state.clone();
    let state = CoordinatorState {
        acting: plan.from.to_string(),
        standby: plan.to.to_string(),
        rebuild: false,
        intent: Some(intent),
        last_failover_us: base.as_ref().and_then(|s| s.last_failover_us),
        // An earlier promotion's rows not applied yet: this one's outcome replaces it.
        catalog_update: base.as_ref().and_then(|s| s.catalog_update.clone()),
        epoch: plan.epoch,
        instance_id: w.instance_id.clone(),
        updated_us: id,
    };
    let history = HistoryRecord {
        time_us: id,
        event: "intent".into(),
        from: plan.from.to_string(),
        to: plan.to.to_string(),
        epoch: plan.epoch,
        instance_id: w.instance_id.clone(),
        desc: format!(
            "ftsd: {:?} of the coordinator begun: promote {} in place of {}",
            plan.kind, plan.to, plan.from
        ),
        evidence: plan.evidence.clone(),
    };
    // Cloudberry: only while the promote-ready key still reads `1` (the standby would ignore
    // the PROMOTE otherwise), checked by etcd in the same transaction.
    let extra = match w.cloudberry() {
        Some(cb) => Extra {
            compares: vec![cb.catalog.promote_ready_compare()],
            ops: Vec::new(),
        },
        None => Extra::default(),
    };
    let written = plan.record(w, state, &history, extra).await.map_err(|e| {
        if w.cloudberry().is_some() {
            format!("{e} (or the promote-ready key no longer reads 1)")
        } else {
            e
        }
    })?;
    Ok(format!("intent {id} recorded at revision {written}"))
}

pub(super) async fn promote(w: &Watcher, plan: &Plan) -> Result<String, String> {
    // The catalog fence cannot protect a promotion: confirm in etcd (linearizable) that the
    // leader key is still ours right before it.
    if !w.confirm(plan.fence.revision).await {
        return Err("leadership not confirmed in etcd right before promoting; not promoted".into());
    }
    let term = plan.fence.revision;
    let act_by = w
        .gate(term)
        .ok_or("authority lost before promoting; not promoted")?;
    if let Some(cb) = w.cloudberry() {
        // As gpfts: PROMOTE to the standby's FTS handler, which checks the promote-ready key
        // itself. Never sent after the act-by deadline.
        let limit = w.settings.connect.timeout;
        let deadline = act_by.map_or(Instant::now() + limit, |end| {
            end.min(Instant::now() + limit)
        });
        return cb.promote(&plan.to, deadline).await;
    }
    if !w.settings.promote_command.is_empty() || !plan.has_pg_promote {
        if w.settings.promote_command.is_empty() {
            return Err("no pg_promote() on the standby and no coordinator.promote_command".into());
        }
        let gate = || w.gate(term);
        return run_command(
            &w.settings.promote_command,
            &as_segment(&plan.to, Role::Mirror),
            "coordinator failover: promote the standby",
            w.settings.promote_timeout,
            &gate,
        )
        .await
        .map(|()| format!("{} exited 0", w.settings.promote_command[0]));
    }
    let limit = act_by.map_or(w.settings.promote_timeout, |end| {
        end.saturating_duration_since(Instant::now())
            .min(w.settings.promote_timeout)
    });
    let work = async {
        let client = probe::connect(&w.settings.connect, &plan.to).await?;
        act::promote(&client, limit).await
    };
    match tokio::time::timeout(limit, work).await {
        Ok(Ok(act::Promoted::Now)) => Ok("pg_promote() completed".into()),
        Ok(Ok(act::Promoted::Already)) => Ok("already out of recovery".into()),
        Ok(Err(e)) => Err(e.full_text()),
        Err(_) => Err(format!("promotion not confirmed within {limit:?}")),
    }
}

/// The new coordinator left recovery and commits: an xid is assigned and its commit record
/// written, which also proves commits do not wait for a standby that is gone.
pub(super) async fn verify(w: &Watcher, plan: &Plan) -> Result<String, String> {
    let limit = w.settings.promote_timeout;
    if let Some(cb) = w.cloudberry() {
        // The FTS handler carries no transaction: the proof is the standby answering PROBE as
        // a primary.
        return cb.verify(&plan.to, limit).await;
    }
    let work = async {
        let client = probe::connect(&w.settings.connect, &plan.to).await?;
        let in_recovery: bool = client
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await
            .map_err(|e| AttemptError::new(FailureKind::ErrorReply, e.to_string()))?
            .get(0);
        if in_recovery {
            return Err(AttemptError::new(
                FailureKind::ErrorReply,
                "still in recovery",
            ));
        }
        let names: String = client
            .query_one("SELECT current_setting('synchronous_standby_names')", &[])
            .await
            .map_err(|e| AttemptError::new(FailureKind::ErrorReply, e.to_string()))?
            .get(0);
        if !names.is_empty() {
            // A promote_command may leave the old coordinator's setting, naming a standby
            // that is now this server itself: commits would wait forever.
            act::set_sync_names(&client, "").await?;
        }
        let xid: String = client
            .query_one("SELECT txid_current()::text", &[])
            .await
            .map_err(|e| AttemptError::new(FailureKind::ErrorReply, e.to_string()))?
            .get(0);
        Ok(xid)
    };
    match tokio::time::timeout(limit, work).await {
        Ok(Ok(xid)) => Ok(format!("out of recovery; committed xid {xid}")),
        Ok(Err(e)) => Err(e.full_text()),
        Err(_) => Err(format!("no committed write within {limit:?}")),
    }
}

pub(super) async fn record_outcome(w: &Watcher, plan: &mut Plan) -> Result<String, String> {
    let id = w.records.next_id();
    let state = CoordinatorState {
        acting: plan.to.to_string(),
        standby: plan.from.to_string(),
        rebuild: true,
        intent: None,
        last_failover_us: Some(id),
        // The SQL catalog is another store: its rows follow from this (`catalog_rows`).
        catalog_update: w.updates_catalog().then(|| CatalogUpdate {
            kind: plan.kind,
            from: plan.from.to_string(),
            to: plan.to.to_string(),
            outcome_us: id,
        }),
        epoch: plan.epoch,
        instance_id: w.instance_id.clone(),
        updated_us: id,
    };
    let history = HistoryRecord {
        time_us: id,
        event: "promoted".into(),
        from: plan.from.to_string(),
        to: plan.to.to_string(),
        epoch: plan.epoch,
        instance_id: w.instance_id.clone(),
        desc: format!(
            "ftsd: {} is the coordinator; {} must be rebuilt as its standby (gpinitstandby)",
            plan.to, plan.from
        ),
        evidence: plan.evidence.clone(),
    };
    let Some(cb) = w.cloudberry() else {
        let written = plan.record(w, state, &history, Extra::default()).await?;
        return Ok(format!("outcome recorded at revision {written}"));
    };
    // Cloudberry: the blob's content -1 rows change in the same transaction, fenced as a
    // segment transition is (ftsd's epoch, the blob as read) besides the leader key and the
    // state compared by the records themselves.
    let rule = plan.kind.rule().as_str();
    let mut change = cb
        .catalog
        .coordinator_change(
            crate::model::Epoch(plan.epoch),
            &w.instance_id,
            rule,
            (&plan.from.host, plan.from.port),
            (&plan.to.host, plan.to.port),
            plan.evidence.clone(),
        )
        .await
        .map_err(|e| format!("content -1 rows of the configuration blob: {e}"))?;
    let rows = change.describe();
    if let Some(note) = &change.note {
        tracing::error!(note = %note, "the configuration blob's content -1 rows are not changed");
    }
    let extra = Extra {
        compares: std::mem::take(&mut change.compares),
        ops: std::mem::take(&mut change.ops),
    };
    let written = plan.record(w, state, &history, extra).await.map_err(|e| {
        format!("{e} (or the configuration blob or ftsd's epoch changed since they were read)")
    })?;
    cb.catalog.notify_change(&change, written).await;
    Ok(format!(
        "outcome recorded at revision {written}; configuration blob: {}",
        if rows.is_empty() {
            change
                .note
                .clone()
                .unwrap_or_else(|| "content -1 rows already so".into())
        } else {
            rows.join("; ")
        }
    ))
}
