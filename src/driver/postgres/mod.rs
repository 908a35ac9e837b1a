//! The `postgres` segment driver: plain PostgreSQL primary/standby pairs with streaming
//! replication, probed and told to act with SQL instead of the FTS wire protocol.
//!
//! The decision core and the catalog are the same as for Greenplum segments; this driver only
//! maps the three messages (docs/postgres-driver.md):
//!
//! * PROBE (to the primary): `pg_is_in_recovery()`, `synchronous_standby_names` and the
//!   standby's `pg_stat_replication` row become the FTS reply ([`probe::assess`]). Like a
//!   Greenplum primary, it switches synchronous replication back on when its standby streams
//!   again after a SYNCREP_OFF.
//! * SYNCREP_OFF (to the primary): `ALTER SYSTEM SET synchronous_standby_names = ''` and
//!   `pg_reload_conf()`.
//! * PROMOTE (to the standby): `pg_promote(wait => true)` after checking it is in recovery,
//!   verified afterwards; refused by the data-loss guard ([`guard`]) when the last successful
//!   probe of its primary saw it not in sync.
//!
//! Every attempt opens a new connection, bounded by the per-attempt timeout.

pub mod act;
pub mod connect;
pub mod guard;
pub mod probe;

use std::time::{Duration, Instant};

use super::SegmentDriver;
use crate::model::{ContentId, Pair, Segment};
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
    /// How long a primary may report its standby missing before the pair is acted on.
    pub mirror_down_grace: Duration,
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
        let client = connect::connect(&self.settings, target, timeout).await?;
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
        if a.restore_syncrep {
            if let Some(standby) = &a.standby {
                let names = probe::sync_names_for(&self.settings.sync_standby_names, standby);
                // A failure here must not fail the probe: the primary did answer, and a failed
                // probe could lead to a failover. The pair just stays not in sync.
                match act::set_sync_names(client, &names).await {
                    Ok(()) => {
                        tracing::info!(
                            dbid = target.dbid,
                            synchronous_standby_names = %names,
                            "standby streaming again: synchronous replication switched back on"
                        );
                        // In sync is reported from the next probe on, once the walsender runs
                        // with the new setting.
                        a.reply.is_syncrep_enabled = true;
                        a.why = format!("synchronous replication just switched back on ({names})");
                    }
                    Err(e) => {
                        tracing::error!(
                            dbid = target.dbid,
                            error = %e,
                            "cannot switch synchronous replication back on; the pair stays not in sync"
                        );
                        a.why = format!("switching synchronous replication back on failed: {e}");
                    }
                }
            }
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
}
