//! The `postgres` segment driver: plain PostgreSQL primary/standby pairs with streaming
//! replication, probed and told to act with SQL instead of the FTS wire protocol.
//!
//! The decision core and the catalog are the same as for Greenplum segments; this driver only
//! maps the three messages (docs/postgres-driver.md):
//!
//! * PROBE (to the primary): `pg_is_in_recovery()`, `synchronous_standby_names`,
//!   `synchronous_commit` and the standby's `pg_stat_replication` row become the FTS reply
//!   ([`probe::assess`]). A probe only reads: switching synchronous replication back on when
//!   the standby streams again after a SYNCREP_OFF (what a Greenplum primary does itself) is
//!   an [`Upkeep`] the engine runs only as the acting leader.
//! * A primary refusing connections with SQLSTATE 57P03 (starting up, in crash recovery) is
//!   restarting, not failed, for `postgres.restart_grace` ([`PgDriver::restarting`]).
//! * The survey after each probe ([`fence`]): a row the catalog lists as a down mirror is
//!   probed too; answering as a writable primary (a former primary back after a failover) it
//!   is alarmed and fenced by the acting leader. A standby streaming without being named in
//!   `synchronous_standby_names` for longer than `probe.mirror_down_grace` is alarmed.
//! * SYNCREP_OFF (to the primary): `ALTER SYSTEM SET synchronous_standby_names = ''` and
//!   `pg_reload_conf()`.
//! * PROMOTE (to the standby): `pg_promote(wait => true)` after checking it is in recovery,
//!   verified afterwards; refused by the data-loss guard ([`guard`]) when the last successful
//!   probe of its primary saw it not in sync.
//!
//! Every attempt opens a new connection, bounded by the per-attempt timeout.

pub mod act;
pub mod connect;
pub mod fence;
pub mod guard;
pub mod probe;
pub mod switchover;

use std::time::{Duration, Instant};

use super::{AlarmKind, AuthorityGate, DriverAlarm, SegmentDriver, Survey, Upkeep};
use crate::model::{ContentId, Pair, Role, Segment, Status};
use crate::wire::failure::{AttemptError, FailureKind};
use crate::wire::{MessageType, ProbeReply};

/// Connection and judgement settings (`probe.user`, `probe.password`, the `[postgres]` table
/// and `probe.mirror_down_grace`).
#[derive(Debug, Clone)]
pub struct PgDriverSettings {
    pub user: String,
    pub password: Option<crate::secret::Secret>,
    pub database: String,
    /// Replay lag in bytes still counted as in sync.
    pub max_lag: u64,
    /// Restored on a primary whose standby streams again; empty: the standby's name.
    pub sync_standby_names: String,
    /// How long a primary may report its standby missing before the pair is acted on; also
    /// how long a standby may stream unnamed in `synchronous_standby_names` before an alarm.
    pub mirror_down_grace: Duration,
    /// How long a primary answering SQLSTATE 57P03 counts as restarting, not failed.
    pub restart_grace: Duration,
    /// argv of the STONITH-style fence command; empty: none.
    pub fence_command: Vec<String>,
    /// Bound on one fence command run.
    pub fence_timeout: Duration,
    /// Bound on each statement that changes a server outside the messages (fence, restoring
    /// synchronous replication): `probe.timeout`.
    pub statement_timeout: Duration,
    /// TLS of every connection to a primary or standby (`postgres.sslmode` and its files).
    pub tls: crate::tls::postgres::PgTls,
}

/// See the module documentation.
#[derive(Debug)]
pub struct PgDriver {
    settings: PgDriverSettings,
    memory: guard::Memory,
}

impl PgDriver {
    pub fn new(settings: PgDriverSettings) -> Self {
        PgDriver {
            settings,
            memory: guard::Memory::default(),
        }
    }

    /// The last verdict on `content`'s standby (for tests and `explain`).
    pub fn verdict(&self, content: ContentId) -> Option<guard::Verdict> {
        self.memory.verdict(content)
    }

    async fn attempt(
        &self,
        target: &Segment,
        kind: MessageType,
        deadline: Instant,
    ) -> Result<ProbeReply, AttemptError> {
        let timeout = deadline.saturating_duration_since(Instant::now());
        if kind == MessageType::Promote {
            // Checked before connecting: a refusal does not depend on the standby's answer.
            guard::check(self.memory.verdict(target.content).as_ref(), target.dbid).map_err(
                |why| {
                    tracing::warn!(target_dbid = target.dbid, %why, "data-loss guard: PROMOTE refused");
                    AttemptError::new(FailureKind::ErrorReply, format!("PROMOTE refused: {why}"))
                },
            )?;
        }
        let client = match connect::connect(&self.settings, target, timeout).await {
            Ok(client) => client,
            Err(e) => {
                if kind == MessageType::Probe && is_restarting(&e) {
                    self.memory
                        .note_starting(target.content, target.dbid, Instant::now());
                }
                return Err(e);
            }
        };
        // SYNCREP_OFF and PROMOTE change the server: never once the caller's authority has
        // ended, even if this task was paused while connecting.
        if kind != MessageType::Probe && Instant::now() >= deadline {
            return Err(AttemptError::new(
                FailureKind::Timeout,
                format!("deadline passed before {kind} was run; not sent"),
            ));
        }
        let timeout = deadline.saturating_duration_since(Instant::now());
        match kind {
            MessageType::Probe => self.probe(&client, target).await,
            MessageType::SyncrepOff => {
                act::set_sync_names(&client, "").await?;
                Ok(ProbeReply::default())
            }
            MessageType::Promote => {
                let how = act::promote(&client, timeout).await?;
                if how == act::Promoted::Already {
                    tracing::info!(
                        target_dbid = target.dbid,
                        "PROMOTE: the standby is already out of recovery"
                    );
                }
                Ok(ProbeReply::default())
            }
        }
    }

    async fn probe(
        &self,
        client: &tokio_postgres::Client,
        target: &Segment,
    ) -> Result<ProbeReply, AttemptError> {
        let observed = probe::observe(client).await?;
        let mut a = probe::assess(&observed, self.settings.max_lag);
        if a.blind {
            tracing::error!(dbid = target.dbid, "{}", a.why);
            // Neither "mirror gone" nor "in sync" can be claimed; this reply is the one the
            // decision table leaves alone (row 1: a retry requested, nothing changes).
            a.reply.is_syncrep_enabled = true;
            a.reply.is_mirror_up = false;
            a.reply.request_retry = true;
            self.memory.record_blind(target.content, target.dbid, &a);
            return Ok(a.reply);
        }
        // Switching synchronous replication back on changes the server: only the acting
        // leader does it, from the survey that follows this probe (`upkeep`).
        let restore = match (&a.standby, a.restore_syncrep) {
            (Some(standby), true) => Some((
                target.dbid,
                probe::sync_names_for(&self.settings.sync_standby_names, standby),
            )),
            _ => None,
        };
        self.memory.want_restore(target.content, restore);
        self.memory.saw_read_only_primary(
            target.content,
            target.dbid,
            observed.read_only && a.reply.is_in_sync,
        );
        let now = Instant::now();
        let unnamed = probe::streaming_but_not_named(&a);
        if let Some(lasted) = self.memory.track_unnamed(
            target.content,
            target.dbid,
            unnamed,
            self.settings.mirror_down_grace,
            now,
        ) {
            let message = format!(
                "standby {} has streamed for {lasted:?} without being named in \
                 synchronous_standby_names = {:?}: commits wait for a standby that never \
                 confirms (check postgres.sync_standby_names)",
                a.standby
                    .as_ref()
                    .map(|r| r.application_name.as_str())
                    .unwrap_or_default(),
                observed.synchronous_standby_names
            );
            tracing::error!(dbid = target.dbid, content = target.content, "{message}");
            self.memory.push_alarm(DriverAlarm {
                kind: AlarmKind::SyncNamesMismatch,
                content: target.content,
                dbid: target.dbid,
                message,
            });
        }
        a.reply.request_retry = self.memory.record_probe(
            target.content,
            target.dbid,
            &a,
            self.settings.mirror_down_grace,
            Instant::now(),
        );
        tracing::debug!(dbid = target.dbid, reply = ?a.reply, why = %a.why, "postgres probe");
        Ok(a.reply)
    }
}

impl SegmentDriver for PgDriver {
    async fn send(
        &self,
        target: &Segment,
        kind: MessageType,
        deadline: Instant,
    ) -> Result<ProbeReply, AttemptError> {
        let timeout = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout_at(deadline.into(), self.attempt(target, kind, deadline)).await {
            Ok(result) => result,
            Err(_) => Err(AttemptError::new(
                FailureKind::Timeout,
                format!("{kind} to dbid {} timed out after {timeout:?}", target.dbid),
            )),
        }
    }

    fn failover_veto(&self, pair: &Pair) -> Option<String> {
        guard::check(
            self.memory.verdict(pair.content()).as_ref(),
            pair.mirror.dbid,
        )
        .err()
    }

    fn probe_detail(&self, content: ContentId) -> Option<serde_json::Value> {
        self.memory.detail(content)
    }

    fn restarting(&self, target: &Segment, last: &AttemptError) -> Option<Duration> {
        if !is_restarting(last) {
            return None;
        }
        self.memory.starting_within(
            target.content,
            target.dbid,
            self.settings.restart_grace,
            Instant::now(),
        )
    }

    async fn survey(&self, pair: &Pair, deadline: Instant) -> Survey {
        let content = pair.content();
        let mut survey = Survey {
            alarms: self.memory.take_alarms(content),
            work: Vec::new(),
        };
        if let Some((dbid, names)) = self.memory.restore(content) {
            if dbid == pair.primary.dbid {
                survey.work.push(Upkeep::RestoreSyncrep { dbid, names });
            }
        }
        if self.memory.read_only_primary(content) == Some(pair.primary.dbid) {
            survey.work.push(Upkeep::RestoreWrites {
                dbid: pair.primary.dbid,
            });
        }
        let m = &pair.mirror;
        if m.role == Role::Mirror && m.status == Status::Down {
            if let Some(work) = self.survey_demoted(m, deadline, &mut survey.alarms).await {
                survey.work.push(work);
            }
        }
        survey
    }

    async fn upkeep(
        &self,
        pair: &Pair,
        work: &Upkeep,
        gate: AuthorityGate<'_>,
    ) -> Vec<DriverAlarm> {
        match work {
            Upkeep::RestoreSyncrep { dbid, names } if *dbid == pair.primary.dbid => {
                self.restore_syncrep(&pair.primary, names, gate).await;
                Vec::new()
            }
            Upkeep::Fence { dbid, why } if *dbid == pair.mirror.dbid => {
                self.fence(&pair.mirror, why, gate).await
            }
            Upkeep::RestoreWrites { dbid } if *dbid == pair.primary.dbid => {
                self.restore_interrupted(&pair.primary, gate).await
            }
            _ => Vec::new(),
        }
    }
}

/// SQLSTATE 57P03 (`cannot_connect_now`) at connection startup: starting up, in crash or
/// archive recovery, not yet accepting connections. The same code for "shutting down" is a
/// stopping server, not a restarting one.
fn is_restarting(e: &AttemptError) -> bool {
    e.kind == FailureKind::StartupError
        && e.sqlstate.as_deref() == Some("57P03")
        && !e.message.contains("shutting down")
}

impl PgDriver {
    /// Probes a row the catalog lists as a down mirror (read-only); a writable primary there
    /// is a former primary back after a failover, to be fenced.
    async fn survey_demoted(
        &self,
        m: &Segment,
        deadline: Instant,
        alarms: &mut Vec<DriverAlarm>,
    ) -> Option<Upkeep> {
        let timeout = deadline.saturating_duration_since(Instant::now());
        let observed = tokio::time::timeout_at(deadline.into(), async {
            let client = connect::connect(&self.settings, m, timeout).await?;
            probe::observe(&client).await
        })
        .await
        .ok()?
        .ok()?;
        if observed.in_recovery {
            self.memory.demoted_is_standby(m.content, m.dbid);
            return None;
        }
        let writable = !observed.read_only;
        if let Some(mut alarm) =
            self.memory
                .saw_demoted(m.content, m.dbid, writable, Instant::now())
        {
            alarm.message = format!(
                "dbid {} is listed as a down mirror but answers as a writable primary \
                 (not in recovery, default_transaction_read_only off): a former primary \
                 back after a failover; fencing it",
                m.dbid
            );
            tracing::error!(dbid = m.dbid, content = m.content, "{}", alarm.message);
            alarms.push(alarm);
        }
        // (in an episode, SQL fence done, fence command run)
        let (episode, fenced, command_ran) = self.memory.update_demoted(m.content, |d| {
            d.filter(|d| d.dbid == m.dbid)
                .map_or((false, false, false), |d| {
                    // writable again (someone reset the setting): the fence is gone
                    d.fenced &= !writable;
                    (true, d.fenced, d.command_ran)
                })
        });
        // The fence command runs once per episode even if the SQL fence already made the
        // server read-only (an earlier attempt may have lost authority before running it).
        let command_due = episode && !self.settings.fence_command.is_empty() && !command_ran;
        ((writable && !fenced) || command_due).then(|| Upkeep::Fence {
            dbid: m.dbid,
            why: "listed as a mirror (down) in the catalog, answers as a writable primary".into(),
        })
    }

    async fn restore_syncrep(&self, primary: &Segment, names: &str, gate: AuthorityGate<'_>) {
        let Some(authority_end) = gate() else {
            return;
        };
        let bound = Instant::now() + self.settings.statement_timeout;
        let end = authority_end.map_or(bound, |a| a.min(bound));
        let result = tokio::time::timeout_at(end.into(), async {
            let timeout = end.saturating_duration_since(Instant::now());
            let client = connect::connect(&self.settings, primary, timeout).await?;
            if gate().is_none() {
                return Err(AttemptError::new(
                    FailureKind::Timeout,
                    "authority lost before ALTER SYSTEM; not done",
                ));
            }
            act::set_sync_names(&client, names).await
        })
        .await
        .unwrap_or_else(|_| Err(AttemptError::new(FailureKind::Timeout, "timed out")));
        match result {
            Ok(()) => {
                self.memory.want_restore(primary.content, None);
                tracing::info!(
                    dbid = primary.dbid,
                    synchronous_standby_names = %names,
                    "standby streaming again: synchronous replication switched back on"
                );
            }
            // The pair just stays not in sync; the next cycle tries again.
            Err(e) => tracing::error!(
                dbid = primary.dbid,
                error = %e,
                "cannot switch synchronous replication back on; the pair stays not in sync"
            ),
        }
    }

    /// Fences `m` (SQL, then the fence command once per episode); returns the alarms.
    async fn fence(&self, m: &Segment, why: &str, gate: AuthorityGate<'_>) -> Vec<DriverAlarm> {
        let alarm = |kind, message: String| DriverAlarm {
            kind,
            content: m.content,
            dbid: m.dbid,
            message,
        };
        let mut alarms = Vec::new();
        let already = self
            .memory
            .update_demoted(m.content, |d| d.is_some_and(|d| d.fenced));
        if !already {
            let result = async {
                let client =
                    connect::connect(&self.settings, m, self.settings.statement_timeout).await?;
                fence::fence_sql(&client, gate, self.settings.statement_timeout).await
            }
            .await;
            match result {
                Ok(f) => {
                    let message = format!(
                        "fenced dbid {}: default_transaction_read_only = on, {} client \
                         session(s) terminated{}",
                        m.dbid,
                        f.terminated,
                        if f.superuser_sessions_left > 0 {
                            format!(
                                ", {} superuser session(s) left (the probe role may not end them)",
                                f.superuser_sessions_left
                            )
                        } else {
                            String::new()
                        }
                    );
                    tracing::error!(dbid = m.dbid, content = m.content, "{message}");
                    self.memory.update_demoted(m.content, |d| {
                        if let Some(d) = d {
                            d.fenced = true;
                        }
                    });
                    alarms.push(alarm(AlarmKind::Fenced, message));
                }
                Err(e) => {
                    let message = format!("fencing dbid {} failed: {e}", m.dbid);
                    tracing::error!(dbid = m.dbid, content = m.content, "{message}");
                    let first = self.memory.update_demoted(m.content, |d| {
                        d.is_some_and(|d| !std::mem::replace(&mut d.failure_alarmed, true))
                    });
                    if first {
                        alarms.push(alarm(AlarmKind::FenceFailed, message));
                    }
                }
            }
        }
        let command_due = !self.settings.fence_command.is_empty()
            && self
                .memory
                .update_demoted(m.content, |d| d.is_some_and(|d| !d.command_ran));
        if command_due {
            let r = fence::run_command(
                &self.settings.fence_command,
                m,
                why,
                self.settings.fence_timeout,
                gate,
            )
            .await;
            let not_run = matches!(&r, Err(e) if e.starts_with("not run"));
            if !not_run {
                self.memory.update_demoted(m.content, |d| {
                    if let Some(d) = d {
                        d.command_ran = true;
                    }
                });
            }
            match r {
                Ok(()) => tracing::warn!(dbid = m.dbid, "fence_command succeeded"),
                Err(e) if not_run => tracing::warn!(dbid = m.dbid, "fence_command {e}"),
                Err(e) => {
                    tracing::error!(dbid = m.dbid, error = %e, "fence_command failed");
                    alarms.push(alarm(AlarmKind::FenceCommandFailed, e));
                }
            }
        }
        alarms
    }
}
