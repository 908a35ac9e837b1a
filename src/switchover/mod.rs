//! Planned switchover of a `postgres`-driver pair (`ftsctl switchover --content N`), run by the
//! acting leader on behalf of the API: check, stop the writes on the old primary, wait for
//! the standby to replay them, record the new primary in the catalog (one fenced transaction
//! with history and evidence), PROMOTE. The order and what stops it are
//! [`crate::core::switchover`]; the SQL is [`crate::driver::postgres::switchover`]; this module
//! performs one step at a time behind the authority gate. See docs/postgres-driver.md.
//!
//! The coordinator pair (content -1) is switched over by its watch
//! ([`crate::coordinator::Watcher::switchover`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use crate::catalog::{Catalog, CatalogError, Transition};
use crate::core::switchover::{self as core, advance, check, is_final, Step, SwitchoverView};
use crate::core::{RowUpdate, Rule};
use crate::driver::{AnyDriver, PgDriver, SegmentDriver};
use crate::engine::{Authority, CycleContext};
use crate::model::{ContentId, Epoch, Mode, Pair, Role, SegmentState, Status};
use crate::wire::MessageType;

/// What `ftsctl switchover` asks.
#[derive(Debug, Clone)]
pub struct Request {
    pub content: ContentId,
    /// Who asks (`user@host`).
    pub by: String,
    /// Bound on stopping the writes and on the standby's replay.
    pub timeout: Duration,
}

/// One step as it went.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub step: String,
    pub ok: bool,
    pub detail: String,
    pub at_ms: u64,
}

/// What became of a switchover that started.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub content: ContentId,
    /// `host:port (dbid N)` of the old primary and of the standby.
    pub from: String,
    pub to: String,
    /// `done`, `aborted` or `stopped: <why>`.
    pub outcome: String,
    pub steps: Vec<StepReport>,
    /// What the operator must do next.
    pub next: String,
}

/// Why a switchover did not start.
#[derive(Debug, thiserror::Error)]
pub enum SwitchoverError {
    /// A guard said no; recorded as evidence by the acting leader.
    #[error("switchover refused: {0}")]
    Refused(String),
    /// Not something this cluster can switch over (driver, content, configuration).
    #[error("{0}")]
    Unsupported(String),
    /// Another switchover runs.
    #[error("another switchover is running")]
    Busy,
    #[error("{0}")]
    Unavailable(String),
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the API calls; object-safe so the API state needs no generics.
pub trait Switchover: Send + Sync {
    fn switchover(&self, req: Request) -> BoxFuture<'_, Result<Report, SwitchoverError>>;
}

/// Switches over segment pairs of the daemon's catalog with its driver and authority.
pub struct PairSwitchover<C, A> {
    ctx: Arc<CycleContext<AnyDriver, C, A>>,
    /// One switchover at a time.
    running: tokio::sync::Mutex<()>,
}

impl<C: Catalog, A: Authority> PairSwitchover<C, A> {
    pub fn new(ctx: Arc<CycleContext<AnyDriver, C, A>>) -> Self {
        PairSwitchover {
            ctx,
            running: tokio::sync::Mutex::new(()),
        }
    }
}

impl<C: Catalog, A: Authority> Switchover for PairSwitchover<C, A> {
    fn switchover(&self, req: Request) -> BoxFuture<'_, Result<Report, SwitchoverError>> {
        Box::pin(async move {
            let Ok(_one) = self.running.try_lock() else {
                return Err(SwitchoverError::Busy);
            };
            run(&self.ctx, &req).await
        })
    }
}

fn state(role: Role, status: Status, mode: Mode) -> SegmentState {
    SegmentState { role, status, mode }
}

fn name(s: &crate::model::Segment) -> String {
    format!("{}:{} (dbid {})", s.address, s.port, s.dbid)
}

struct Run<'a, C, A> {
    ctx: &'a CycleContext<AnyDriver, C, A>,
    pg: &'a PgDriver,
    pair: Pair,
    epoch: Epoch,
    req: &'a Request,
    evidence: serde_json::Value,
    final_lsn: String,
}

impl<C: Catalog, A: Authority> Run<'_, C, A> {
    /// The authority gate of every step: our epoch still acting, before the act-by deadline.
    fn gate(&self) -> Option<Option<Instant>> {
        if self.ctx.authority.acting_epoch() != Some(self.epoch) {
            return None;
        }
        match self.ctx.authority.deadline() {
            Some(deadline) if Instant::now() >= deadline => None,
            other => Some(other),
        }
    }

    async fn perform(&mut self, step: Step) -> Result<String, String> {
        let gate = || self.gate();
        match step {
            Step::ReadOnly => {
                let s = self
                    .pg
                    .stop_writes(&self.pair.primary, &gate, self.req.timeout)
                    .await
                    .map_err(|e| e.to_string())?;
                self.final_lsn = s.final_lsn.clone();
                self.evidence["writes_stopped"] = json!(s);
                Ok(format!(
                    "read-only, {} session(s) ended{}, final WAL position {}",
                    s.sessions_terminated,
                    if s.superuser_sessions_left > 0 {
                        format!(
                            ", {} superuser session(s) left (the probe role may not end them)",
                            s.superuser_sessions_left
                        )
                    } else {
                        String::new()
                    },
                    s.final_lsn
                ))
            }
            Step::WaitReplay => {
                let replayed = self
                    .pg
                    .wait_replay(&self.pair.mirror, &self.final_lsn, self.req.timeout)
                    .await
                    .map_err(|e| e.to_string())?;
                self.evidence["standby_replayed"] = json!(replayed);
                Ok(format!("standby replayed up to {replayed}"))
            }
            Step::RecordTransition => {
                crate::engine::faults::pause_in_switchover().await;
                if self.gate().is_none() {
                    return Err("authority lost before the catalog transaction; not written".into());
                }
                let (p, m) = (&self.pair.primary, &self.pair.mirror);
                let t = Transition {
                    epoch: self.epoch,
                    instance_id: self.ctx.instance_id.clone(),
                    content: self.pair.content(),
                    rule: Rule::Switchover,
                    updates: vec![
                        RowUpdate::new(p, state(Role::Mirror, Status::Down, Mode::NotInSync)),
                        RowUpdate::new(m, state(Role::Primary, Status::Up, Mode::NotInSync)),
                    ],
                    expect: Vec::new(),
                    evidence: self.evidence.clone(),
                };
                match self.ctx.catalog.apply(&t).await {
                    Ok(()) => {
                        for u in &t.updates {
                            tracing::info!(dbid = u.dbid, epoch = %self.epoch, from = %u.from, to = %u.to, "{}", u.history_desc());
                        }
                        Ok(format!(
                            "catalog: dbid {} m/d/n, dbid {} p/u/n",
                            p.dbid, m.dbid
                        ))
                    }
                    Err(e) => {
                        if let CatalogError::Fenced { current, .. } = &e {
                            self.ctx.authority.fenced_out(*current);
                        }
                        Err(e.to_string())
                    }
                }
            }
            Step::Promote => {
                if !self.ctx.authority.confirm().await {
                    return Err("leadership not confirmed right before PROMOTE; not sent (the next leader re-sends it)".into());
                }
                let Some(end) = self.gate() else {
                    return Err("authority lost before PROMOTE; not sent".into());
                };
                let bound = Instant::now() + self.req.timeout.max(self.ctx.settings.get().timeout);
                let deadline = end.map_or(bound, |e| e.min(bound));
                self.ctx
                    .driver
                    .send(&self.pair.mirror, MessageType::Promote, deadline)
                    .await
                    .map(|_| "PROMOTE delivered: the standby left recovery".to_string())
                    .map_err(|e| e.to_string())
            }
            Step::Undo => self
                .pg
                .restore_writes(&self.pair.primary, &gate)
                .await
                .map(|()| "the old primary is writable again".to_string())
                .map_err(|e| e.to_string()),
            Step::Done | Step::Aborted | Step::Stopped(_) => Ok(String::new()),
        }
    }

    /// An evidence row without row updates (refusal, abort), fenced like any transition.
    async fn record(&self, rule: Rule, evidence: serde_json::Value) {
        let t = Transition {
            epoch: self.epoch,
            instance_id: self.ctx.instance_id.clone(),
            content: self.pair.content(),
            rule,
            updates: Vec::new(),
            expect: Vec::new(),
            evidence,
        };
        if let Err(e) = self.ctx.catalog.apply(&t).await {
            tracing::warn!(error = %e, %rule, "switchover evidence not recorded");
        }
    }
}

async fn run<C: Catalog, A: Authority>(
    ctx: &CycleContext<AnyDriver, C, A>,
    req: &Request,
) -> Result<Report, SwitchoverError> {
    let AnyDriver::Postgres(pg) = &ctx.driver else {
        return Err(SwitchoverError::Unsupported(
            "a segment switchover needs probe.driver = \"postgres\" (Greenplum segments: gprecoverseg -r)".into(),
        ));
    };
    let config = ctx
        .catalog
        .load()
        .await
        .map_err(|e| SwitchoverError::Unavailable(format!("catalog: {e}")))?;
    let Some(pair) = config
        .probe_pairs()
        .pairs
        .into_iter()
        .find(|p| p.content() == req.content)
    else {
        return Err(SwitchoverError::Unsupported(format!(
            "content {} is not a primary/mirror pair in the catalog",
            req.content
        )));
    };
    let in_sync =
        |s: &crate::model::Segment, role| s.state() == state(role, Status::Up, Mode::InSync);
    let catalog_in_sync =
        in_sync(&pair.primary, Role::Primary) && in_sync(&pair.mirror, Role::Mirror);
    let checked = pg.check_pair(&pair.primary, &pair.mirror).await;
    let authority = match ctx.authority.acting_epoch() {
        Some(_) => core::Authority::Acting,
        None if ctx.authority.paused() => core::Authority::Paused,
        None => core::Authority::NotActing,
    };
    let view = SwitchoverView {
        authority,
        catalog_in_sync,
        probe_in_sync: checked.in_sync.clone(),
        standby_in_recovery: checked.standby_in_recovery.clone(),
    };
    let mut evidence = json!({
        "rule": Rule::Switchover,
        "instance_id": ctx.instance_id,
        "requested_by": req.by,
        "content": pair.content(),
        "from": {"dbid": pair.primary.dbid, "address": pair.primary.address, "port": pair.primary.port, "state": pair.primary.state().to_string()},
        "to": {"dbid": pair.mirror.dbid, "address": pair.mirror.address, "port": pair.mirror.port, "state": pair.mirror.state().to_string()},
        "view": view,
        "check": checked,
    });
    let decided = check(&view);
    let epoch = ctx.authority.acting_epoch();
    if let Err(refusal) = decided {
        tracing::warn!(content = pair.content(), %refusal, by = %req.by, "switchover refused");
        if let Some(epoch) = epoch {
            evidence["rule"] = json!(Rule::SwitchoverRefused);
            evidence["refusal"] = json!(refusal.to_string());
            let r = Run {
                ctx,
                pg,
                pair: pair.clone(),
                epoch,
                req,
                evidence: evidence.clone(),
                final_lsn: String::new(),
            };
            r.record(Rule::SwitchoverRefused, evidence).await;
        }
        return Err(SwitchoverError::Refused(refusal.to_string()));
    }
    let epoch = epoch.ok_or_else(|| SwitchoverError::Refused("authority lost".into()))?;
    if !ctx.authority.confirm().await {
        return Err(SwitchoverError::Refused(
            "leadership not confirmed in etcd; nothing changed".into(),
        ));
    }
    tracing::warn!(content = pair.content(), from = %name(&pair.primary), to = %name(&pair.mirror), by = %req.by, "switchover begins");
    pg.set_switching(pair.content(), Some(pair.primary.dbid));
    let mut r = Run {
        ctx,
        pg,
        pair: pair.clone(),
        epoch,
        req,
        evidence,
        final_lsn: String::new(),
    };
    let started = Instant::now();
    let mut steps = Vec::new();
    let mut step = core::FIRST;
    while !is_final(step) {
        r.evidence["steps"] = json!(steps);
        let result = r.perform(step).await;
        let ok = result.is_ok();
        match &result {
            Ok(d) => tracing::info!(?step, detail = %d, "switchover step done"),
            Err(e) => tracing::error!(?step, error = %e, "switchover step failed"),
        }
        steps.push(StepReport {
            step: format!("{step:?}"),
            ok,
            detail: result.unwrap_or_else(|e| e),
            at_ms: started.elapsed().as_millis() as u64,
        });
        step = advance(step, ok, r.gate().is_some());
    }
    r.evidence["steps"] = json!(steps);
    pg.set_switching(pair.content(), None);
    let (outcome, next) = match step {
        Step::Done => (
            "done".to_string(),
            format!(
                "{} is the primary of content {}. The old primary {} is read-only and listed as a down mirror: rebuild it as a standby of the new primary (pg_basebackup -R, or pg_rewind, into its data directory) before starting it as one; never make it writable as it is.",
                name(&pair.mirror),
                pair.content(),
                name(&pair.primary)
            ),
        ),
        Step::Aborted => {
            r.evidence["rule"] = json!(Rule::SwitchoverAborted);
            r.record(Rule::SwitchoverAborted, r.evidence.clone()).await;
            (
                "aborted".to_string(),
                format!(
                    "nothing was promoted; {} is the primary and writable again",
                    name(&pair.primary)
                ),
            )
        }
        Step::Stopped(core::Stop::PromoteFailed) => (
            "stopped: promote_failed".to_string(),
            format!(
                "the catalog names {} as the primary; the next probe cycle re-sends PROMOTE (check the standby's log)",
                name(&pair.mirror)
            ),
        ),
        other => (
            format!("stopped: {other:?}"),
            "authority lapsed or undoing failed: the acting leader completes a recorded switchover (re-PROMOTE) or makes a read-only primary writable again on its next cycle".to_string(),
        ),
    };
    tracing::warn!(content = pair.content(), %outcome, "switchover ended");
    Ok(Report {
        content: pair.content(),
        from: name(&pair.primary),
        to: name(&pair.mirror),
        outcome,
        steps,
        next,
    })
}
