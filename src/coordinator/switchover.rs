//! `ftsctl switchover --content -1`: a planned switchover of the coordinator pair, run by the
//! acting leader's watch. The steps are a segment pair's ([`crate::core::switchover`]): stop
//! the writes on the acting coordinator (read-only, sessions ended), wait until the standby
//! has replayed its final WAL position, record the intent (kind `switchover`) in one fenced
//! etcd transaction — from here the VIP agent drops the address from the old host — then the
//! failover's own promote, verify and outcome steps ([`super::failover`]), after which the VIP
//! agent on the new coordinator's host takes the address. Before the intent is recorded an
//! interrupted switchover is undone (the old coordinator made writable again); after it, the
//! recorded intent is resumed like a failover's.

use std::time::Instant;

use serde_json::json;

use super::failover::{self, Plan};
use super::probe::{self, Endpoint};
use super::records::{Fence, HistoryRecord, IntentKind, Read};
use super::{lock, Watcher};
use crate::core::coordinator::{CoordinatorDecision, Office};
use crate::core::switchover::{self as core, advance, check, is_final, Step, SwitchoverView};
use crate::driver::postgres::switchover::{restore_writes_on, stop_writes_on, wait_replay_on};
use crate::switchover::{Report, Request, StepReport, SwitchoverError};

impl Watcher {
    /// Runs a planned switchover of the coordinator pair; see the module documentation.
    pub async fn switchover(&self, req: Request) -> Result<Report, SwitchoverError> {
        let Ok(_one) = self.switchover_lock.try_lock() else {
            return Err(SwitchoverError::Busy);
        };
        let (office, term) = self.office();
        let read = self
            .records
            .load()
            .await
            .map_err(|e| SwitchoverError::Unavailable(format!("etcd: {e}")))?;
        let state = read.state.as_ref();
        let (acting, standby) = match state {
            Some(s) => (
                Endpoint::parse(&s.acting).unwrap_or_else(|| self.settings.primary.clone()),
                Endpoint::parse(&s.standby).unwrap_or_else(|| self.settings.standby.clone()),
            ),
            None => (self.settings.primary.clone(), self.settings.standby.clone()),
        };
        let connect = &self.settings.connect;
        let (p, s) = tokio::join!(
            probe::read_primary(connect, &acting),
            probe::read_standby(connect, &standby)
        );
        let sync = p
            .as_ref()
            .ok()
            .map(|ps| probe::judge_sync(ps, s.as_ref().ok()));
        let probe_in_sync = match (&p, &sync) {
            (Err(e), _) => Err(format!("the coordinator did not answer: {e}")),
            (Ok(ps), _) if ps.in_recovery => Err("the coordinator answers in recovery".into()),
            (Ok(ps), _) if ps.read_only => {
                Err("the coordinator is read-only already (a switchover in progress?)".into())
            }
            (Ok(_), Some(x)) if !x.synchronous => Err(x.why.clone()),
            (Ok(_), Some(x)) if x.replay_lag.is_none_or(|l| l > self.settings.max_lag) => {
                Err(format!(
                    "replay lag {:?} B is unknown or above coordinator.max_lag {} B",
                    x.replay_lag, self.settings.max_lag
                ))
            }
            (Ok(_), _) => Ok(()),
        };
        // Cloudberry: PROMOTE through the standby's FTS handler, which the promote-ready key
        // gates.
        let promote_ready = match self.cloudberry() {
            Some(cb) => Some(cb.promote_ready().await),
            None => None,
        };
        let can_promote = |st: &probe::StandbyState| {
            promote_ready.is_some()
                || st.has_pg_promote()
                || !self.settings.promote_command.is_empty()
        };
        let standby_in_recovery = match &s {
            Err(e) => Err(format!("the standby did not answer: {e}")),
            Ok(st) if !st.in_recovery => Err("the standby answers out of recovery".into()),
            Ok(st) if !can_promote(st) => {
                Err("no pg_promote() on the standby and no coordinator.promote_command".into())
            }
            Ok(_) => match &promote_ready {
                Some((crate::core::coordinator::PromoteReady::Ready, _)) | None => Ok(()),
                Some((_, key)) => Err(format!(
                    "promote_not_ready: the promote-ready key is not 1 ({key}); the standby would ignore PROMOTE"
                )),
            },
        };
        let pending = state.and_then(|s| s.intent.as_ref()).is_some();
        let view = SwitchoverView {
            authority: match office {
                Office::Acting => core::Authority::Acting,
                Office::Paused => core::Authority::Paused,
                Office::NotLeader | Office::PastActBy => core::Authority::NotActing,
            },
            // etcd's record is the coordinator pair's configuration: present (the configured
            // addresses alone may name a former coordinator), whole (no pending intent, no
            // former coordinator awaiting a rebuild).
            catalog_in_sync: state.is_some_and(|s| !s.rebuild) && !pending,
            probe_in_sync,
            standby_in_recovery,
        };
        let mut evidence = json!({
            "requested_by": req.by,
            "view": view,
            "acting": acting.to_string(),
            "standby": standby.to_string(),
            "primary": p.as_ref().ok(),
            "standby_state": s.as_ref().ok(),
            "sync": sync,
        });
        if let Err(refusal) = check(&view) {
            tracing::warn!(content = -1, %refusal, by = %req.by, "coordinator switchover refused");
            if let Some((fence, epoch)) = &term {
                evidence["refusal"] = json!(refusal.to_string());
                self.record_event(
                    fence,
                    *epoch,
                    "switchover_refused",
                    &acting,
                    &standby,
                    format!("ftsd: coordinator switchover refused: {refusal}"),
                    evidence,
                )
                .await;
            }
            return Err(SwitchoverError::Refused(refusal.to_string()));
        }
        let Some((fence, epoch)) = term else {
            return Err(SwitchoverError::Refused("authority lost".into()));
        };
        if !self.confirm(fence.revision).await {
            return Err(SwitchoverError::Refused(
                "leadership not confirmed in etcd; nothing changed".into(),
            ));
        }
        tracing::warn!(content = -1, from = %acting, to = %standby, by = %req.by, "coordinator switchover begins");
        self.switching
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let mut plan = Plan {
            decision: CoordinatorDecision::Failover,
            from: acting.clone(),
            to: standby.clone(),
            kind: IntentKind::Switchover,
            has_pg_promote: s.as_ref().is_ok_and(probe::StandbyState::has_pg_promote),
            standby_replay_lsn: None,
            read,
            fence,
            epoch,
            evidence,
        };
        let (step, steps) = self.run_switchover(&req, &mut plan).await;
        self.switching
            .store(false, std::sync::atomic::Ordering::Relaxed);
        let outcome = match step {
            Step::Done => {
                lock(&self.memory).last_sync = None;
                "done".to_string()
            }
            Step::Aborted => {
                let mut ev = plan.evidence.clone();
                ev["steps"] = json!(steps);
                self.record_event(
                    &plan.fence,
                    epoch,
                    "switchover_aborted",
                    &acting,
                    &standby,
                    "ftsd: coordinator switchover undone; nothing was promoted".into(),
                    ev,
                )
                .await;
                "aborted".to_string()
            }
            other => format!("stopped: {other:?}"),
        };
        let next = match step {
            Step::Done => format!(
                "{standby} is the coordinator (etcd records it acting; the VIP agent moves the address). The old coordinator {acting} is read-only and marked for rebuild: stop it and rebuild it as the new coordinator's standby (gpinitstandby; plain PostgreSQL: pg_basebackup -R or pg_rewind), never start it writable as it is."
            ),
            Step::Aborted => format!("nothing was promoted; {acting} is the coordinator and writable again"),
            _ => "authority lapsed or a step failed after the intent was recorded: the acting leader's watch resumes the recorded intent (promote, verify, record) or makes a read-only coordinator writable again".into(),
        };
        tracing::warn!(content = -1, %outcome, "coordinator switchover ended");
        Ok(Report {
            content: -1,
            from: acting.to_string(),
            to: standby.to_string(),
            outcome,
            steps,
            next,
        })
    }

    async fn run_switchover(&self, req: &Request, plan: &mut Plan) -> (Step, Vec<StepReport>) {
        let term = plan.fence.revision;
        let started = Instant::now();
        let mut steps = Vec::new();
        let mut step = core::FIRST;
        let mut final_lsn = String::new();
        while !is_final(step) {
            plan.evidence["steps"] = json!(steps);
            let result = self.switchover_step(req, plan, step, &mut final_lsn).await;
            let ok = result.is_ok();
            match &result {
                Ok(d) => tracing::info!(content = -1, ?step, detail = %d, "switchover step done"),
                Err(e) => {
                    tracing::error!(content = -1, ?step, error = %e, "switchover step failed")
                }
            }
            steps.push(StepReport {
                step: format!("{step:?}"),
                ok,
                detail: result.unwrap_or_else(|e| e),
                at_ms: started.elapsed().as_millis() as u64,
            });
            step = advance(step, ok, self.gate(term).is_some());
        }
        (step, steps)
    }

    async fn switchover_step(
        &self,
        req: &Request,
        plan: &mut Plan,
        step: Step,
        final_lsn: &mut String,
    ) -> Result<String, String> {
        let term = plan.fence.revision;
        let gate = || self.gate(term);
        let connect = &self.settings.connect;
        let bounded = |what: &'static str| {
            move |r: Result<Result<String, String>, tokio::time::error::Elapsed>| {
                r.unwrap_or_else(|_| Err(format!("{what} did not finish within {:?}", req.timeout)))
            }
        };
        match step {
            Step::ReadOnly => bounded("stopping the writes")(
                tokio::time::timeout(req.timeout, async {
                    let client = probe::connect(connect, &plan.from)
                        .await
                        .map_err(|e| e.to_string())?;
                    let s = stop_writes_on(&client, &gate, connect.timeout)
                        .await
                        .map_err(|e| e.to_string())?;
                    *final_lsn = s.final_lsn.clone();
                    plan.evidence["writes_stopped"] = json!(s);
                    Ok(format!(
                        "read-only, {} session(s) ended, final WAL position {}",
                        s.sessions_terminated, s.final_lsn
                    ))
                })
                .await,
            ),
            Step::WaitReplay => {
                let client = probe::connect(connect, &plan.to)
                    .await
                    .map_err(|e| e.to_string())?;
                let replayed = wait_replay_on(&client, final_lsn, req.timeout)
                    .await
                    .map_err(|e| e.to_string())?;
                plan.standby_replay_lsn = Some(replayed.clone());
                Ok(format!("standby replayed up to {replayed}"))
            }
            Step::RecordTransition => {
                crate::engine::faults::pause_in_switchover().await;
                if self.gate(term).is_none() {
                    return Err("authority lost before recording the intent; not written".into());
                }
                failover::record_intent(self, plan).await
            }
            Step::Promote => {
                let promoted = failover::promote(self, plan).await?;
                let verified = failover::verify(self, plan).await?;
                let recorded = failover::record_outcome(self, plan).await?;
                Ok(format!("{promoted}; {verified}; {recorded}"))
            }
            Step::Undo => bounded("making the coordinator writable again")(
                tokio::time::timeout(req.timeout, async {
                    let client = probe::connect(connect, &plan.from)
                        .await
                        .map_err(|e| e.to_string())?;
                    restore_writes_on(&client, &gate)
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok("the old coordinator is writable again".to_string())
                })
                .await,
            ),
            Step::Done | Step::Aborted | Step::Stopped(_) => Ok(String::new()),
        }
    }

    /// A history record alone (the state left as read), fenced like every record.
    #[allow(clippy::too_many_arguments)]
    async fn record_event(
        &self,
        fence: &Fence,
        epoch: i64,
        event: &str,
        from: &Endpoint,
        to: &Endpoint,
        desc: String,
        evidence: serde_json::Value,
    ) {
        let history = HistoryRecord {
            time_us: self.records.next_id(),
            event: event.into(),
            from: from.to_string(),
            to: to.to_string(),
            epoch,
            instance_id: self.instance_id.clone(),
            desc,
            evidence,
        };
        let written = match self.records.load().await {
            Ok(read) => {
                self.records
                    .write(fence, read.mod_revision, None, &history)
                    .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            tracing::warn!(error = %e, event, "cannot record the coordinator switchover event");
        }
    }

    /// The acting coordinator answered read-only with its standby in sync, no intent recorded
    /// and no switchover running here: a switchover interrupted before its intent (nothing was
    /// promoted). The acting leader makes it writable again.
    pub(super) async fn restore_interrupted(
        &self,
        term: Option<&(Fence, i64)>,
        read: Option<&Read>,
        acting: &Endpoint,
        standby: &Endpoint,
    ) {
        // Only the acting leader changes a server; the others' alarm says no server is
        // writable meanwhile.
        let (Some((fence, epoch)), Some(_)) = (term, read) else {
            return;
        };
        if self.switching.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let gate = || self.gate(fence.revision);
        let done = tokio::time::timeout(self.settings.connect.timeout * 2, async {
            let client = probe::connect(&self.settings.connect, acting).await?;
            restore_writes_on(&client, &gate).await
        })
        .await;
        match done {
            Ok(Ok(())) => {
                tracing::warn!(
                    coordinator = %acting,
                    "the acting coordinator was read-only with its standby in sync and no intent recorded: an interrupted switchover (nothing was promoted); made writable again"
                );
                self.record_event(
                    fence,
                    *epoch,
                    "writes_restored",
                    acting,
                    standby,
                    "ftsd: interrupted coordinator switchover undone: the coordinator is writable again".into(),
                    json!({"acting": acting.to_string(), "standby": standby.to_string()}),
                )
                .await;
            }
            Ok(Err(e)) => {
                tracing::error!(coordinator = %acting, error = %e, "the acting coordinator is read-only and could not be made writable again")
            }
            Err(_) => tracing::error!(
                coordinator = %acting,
                "the acting coordinator is read-only and could not be made writable again (timed out)"
            ),
        }
    }
}
