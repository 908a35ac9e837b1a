//! The SQL of a planned switchover (`ftsctl switchover`, `src/switchover/`): check the pair,
//! stop the writes on the old primary (the fence's read-only, [`super::fence::fence_sql`]),
//! read its final WAL position, wait until the standby has replayed it, and — when a
//! switchover is abandoned before the catalog recorded the new primary — make the old primary
//! writable again. PROMOTE itself is the driver's ordinary PROMOTE.
//!
//! Every statement that changes a server asks the authority gate first, as the fence does.

use std::time::Duration;

use serde::Serialize;
use tokio_postgres::Client;

use super::act::reload;
use super::connect::{classify, connect, server_version_num};
use super::fence::{self, not_sent};
use super::{probe, PgDriver};
use crate::driver::{AlarmKind, AuthorityGate, DriverAlarm};
use crate::model::{ContentId, Dbid, Segment};
use crate::wire::failure::{AttemptError, FailureKind};

/// What the checks before a switchover found.
#[derive(Debug, Clone, Serialize)]
pub struct PairCheck {
    /// The primary answered out of recovery with its one standby streaming, synchronous,
    /// within `postgres.max_lag`, under durable commits; `Err(why)` otherwise.
    pub in_sync: Result<(), String>,
    /// The standby answered in recovery; `Err(why)` otherwise.
    pub standby_in_recovery: Result<(), String>,
    /// What the primary's probe read, for evidence.
    pub primary: Option<probe::Observed>,
    pub why: String,
}

/// What stopping the writes did.
#[derive(Debug, Clone, Serialize)]
pub struct WritesStopped {
    pub sessions_terminated: i64,
    /// Superuser sessions the probe role may not end (they cannot write in a new transaction
    /// unless they set `default_transaction_read_only` off themselves).
    pub superuser_sessions_left: i64,
    /// `pg_current_wal_insert_lsn()` once no write transaction was left: everything any
    /// client was ever told was committed lies before it.
    pub final_lsn: String,
}

/// Write transactions of other sessions still open (an xid assigned): their commits may still
/// land after the read-only switch, so the final position is read once they are gone.
const WRITERS: &str = "SELECT count(*) FROM pg_stat_activity \
                        WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()";

fn error(message: impl Into<String>) -> AttemptError {
    AttemptError::new(FailureKind::ErrorReply, message)
}

impl PgDriver {
    /// Marks a switchover of `content` from `primary` as running here (None: over), so the
    /// cycle does not take its read-only primary for an interrupted one.
    pub fn set_switching(&self, content: ContentId, primary: Option<Dbid>) {
        self.memory.set_switching(content, primary);
    }

    /// Probes the pair for a switchover, read-only: the primary as PROBE reads it, the standby
    /// for its recovery state.
    pub async fn check_pair(&self, primary: &Segment, standby: &Segment) -> PairCheck {
        let timeout = self.settings.statement_timeout;
        let p = tokio::time::timeout(timeout, async {
            let client = connect(&self.settings, primary, timeout).await?;
            probe::observe(&client).await
        })
        .await
        .unwrap_or_else(|_| Err(AttemptError::new(FailureKind::Timeout, "timed out")));
        let s = tokio::time::timeout(timeout, async {
            let client = connect(&self.settings, standby, timeout).await?;
            let row = client
                .query_one("SELECT pg_is_in_recovery()", &[])
                .await
                .map_err(|e| classify(&e, false))?;
            Ok::<bool, AttemptError>(row.get(0))
        })
        .await
        .unwrap_or_else(|_| Err(AttemptError::new(FailureKind::Timeout, "timed out")));
        let (in_sync, why, observed) = match p {
            Err(e) => (
                Err(format!("the primary did not answer: {e}")),
                String::new(),
                None,
            ),
            Ok(o) if o.in_recovery => (
                Err("the primary answers in recovery".into()),
                String::new(),
                Some(o),
            ),
            Ok(o) if o.read_only => (
                Err(
                    "the primary is read-only already (a switchover or a fence in progress)".into(),
                ),
                String::new(),
                Some(o),
            ),
            Ok(o) => {
                let a = probe::assess(&o, self.settings.max_lag);
                let verdict = if a.reply.is_in_sync && !a.blind {
                    Ok(())
                } else {
                    Err(a.why.clone())
                };
                (verdict, a.why, Some(o))
            }
        };
        let standby_in_recovery = match s {
            Ok(true) => Ok(()),
            Ok(false) => Err("the standby answers out of recovery: it is a primary".into()),
            Err(e) => Err(format!("the standby did not answer: {e}")),
        };
        PairCheck {
            in_sync,
            standby_in_recovery,
            primary: observed,
            why,
        }
    }

    /// Stops the writes on `primary` ([`stop_writes_on`]), bounded by `limit`.
    pub async fn stop_writes(
        &self,
        primary: &Segment,
        gate: AuthorityGate<'_>,
        limit: Duration,
    ) -> Result<WritesStopped, AttemptError> {
        let statement_timeout = self.settings.statement_timeout;
        bounded(limit, "stopping the writes", async {
            let client = connect(&self.settings, primary, statement_timeout).await?;
            stop_writes_on(&client, gate, statement_timeout).await
        })
        .await
    }

    /// Waits until `standby` has replayed up to `lsn` ([`wait_replay_on`]), bounded by `limit`.
    pub async fn wait_replay(
        &self,
        standby: &Segment,
        lsn: &str,
        limit: Duration,
    ) -> Result<String, AttemptError> {
        let client = connect(&self.settings, standby, self.settings.statement_timeout).await?;
        wait_replay_on(&client, lsn, limit).await
    }

    /// Makes `primary` writable again: `ALTER SYSTEM RESET default_transaction_read_only`,
    /// reload, and a wait until the reload is in effect.
    pub async fn restore_writes(
        &self,
        primary: &Segment,
        gate: AuthorityGate<'_>,
    ) -> Result<(), AttemptError> {
        let bound = self.settings.statement_timeout;
        let Some(end) = fence::step_end(gate, bound) else {
            return Err(not_sent("connecting"));
        };
        tokio::time::timeout_at(end.into(), async {
            let client = connect(&self.settings, primary, bound).await?;
            restore_writes_on(&client, gate).await
        })
        .await
        .unwrap_or_else(|_| Err(error("making the primary writable again timed out")))
    }

    /// The cycle's upkeep for a catalog primary left read-only by an interrupted switchover.
    pub(super) async fn restore_interrupted(
        &self,
        primary: &Segment,
        gate: AuthorityGate<'_>,
    ) -> Vec<DriverAlarm> {
        if self.memory.read_only_primary(primary.content) != Some(primary.dbid) {
            // A switchover started here since the survey.
            return Vec::new();
        }
        let alarm = |kind, message: String| DriverAlarm {
            kind,
            content: primary.content,
            dbid: primary.dbid,
            message,
        };
        match self.restore_writes(primary, gate).await {
            Ok(()) => {
                self.memory
                    .saw_read_only_primary(primary.content, primary.dbid, false);
                let message = format!(
                    "the catalog primary dbid {} was read-only with its standby in sync and no \
                     switchover running: an interrupted switchover (nothing was promoted); made \
                     writable again",
                    primary.dbid
                );
                tracing::warn!(dbid = primary.dbid, content = primary.content, "{message}");
                vec![alarm(AlarmKind::WritesRestored, message)]
            }
            Err(e) => {
                let message = format!(
                    "the catalog primary dbid {} is read-only (an interrupted switchover) and \
                     could not be made writable again: {e}",
                    primary.dbid
                );
                tracing::error!(dbid = primary.dbid, content = primary.content, "{message}");
                vec![alarm(AlarmKind::WritesRestoreFailed, message)]
            }
        }
    }
}

async fn bounded<T>(
    limit: Duration,
    what: &str,
    f: impl std::future::Future<Output = Result<T, AttemptError>>,
) -> Result<T, AttemptError> {
    tokio::time::timeout(limit, f).await.unwrap_or_else(|_| {
        Err(AttemptError::new(
            FailureKind::Timeout,
            format!("{what} did not finish within {limit:?}"),
        ))
    })
}

/// Stops the writes on the server `client` is connected to: read-only at the database level
/// and every client session ended (the fence's SQL), then waits until no write transaction is
/// left and reads the final WAL position (the caller bounds the wait). Function names follow
/// the server's version (`xlog`/`location` before PostgreSQL 10).
pub(crate) async fn stop_writes_on(
    client: &Client,
    gate: AuthorityGate<'_>,
    statement_timeout: Duration,
) -> Result<WritesStopped, AttemptError> {
    let version_num = server_version_num(client).await?;
    let fenced = fence::fence_sql(client, gate, statement_timeout).await?;
    loop {
        let row = client
            .query_one(WRITERS, &[])
            .await
            .map_err(|e| classify(&e, false))?;
        if row.get::<_, i64>(0) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sql = if version_num >= 100_000 {
        "SELECT pg_current_wal_insert_lsn()::text"
    } else {
        "SELECT pg_current_xlog_insert_location()::text"
    };
    let row = client
        .query_one(sql, &[])
        .await
        .map_err(|e| classify(&e, false))?;
    Ok(WritesStopped {
        sessions_terminated: fenced.terminated,
        superuser_sessions_left: fenced.superuser_sessions_left,
        final_lsn: row.get(0),
    })
}

/// Polls the standby `client` is connected to until its replay position reaches `lsn`,
/// bounded by `limit`; returns that position. Reads only.
pub(crate) async fn wait_replay_on(
    client: &Client,
    lsn: &str,
    limit: Duration,
) -> Result<String, AttemptError> {
    let version_num = server_version_num(client).await?;
    let sql = if version_num >= 100_000 {
        "SELECT coalesce(pg_last_wal_replay_lsn() >= $1::text::pg_lsn, false), \
                coalesce(pg_last_wal_replay_lsn()::text, '')"
    } else {
        "SELECT coalesce(pg_xlog_location_diff(pg_last_xlog_replay_location(), $1::text) >= 0, false), \
                coalesce(pg_last_xlog_replay_location()::text, '')"
    };
    let mut last = String::new();
    let reached = tokio::time::timeout(limit, async {
        loop {
            let row = client
                .query_one(sql, &[&lsn])
                .await
                .map_err(|e| classify(&e, false))?;
            last = row.get(1);
            if row.get::<_, bool>(0) {
                return Ok(last.clone());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    match reached {
        Ok(r) => r,
        Err(_) => Err(AttemptError::new(
            FailureKind::Timeout,
            format!(
                "the standby did not replay up to {lsn} within {limit:?} (replayed up to {})",
                if last.is_empty() { "?" } else { &last }
            ),
        )),
    }
}

/// `ALTER SYSTEM RESET default_transaction_read_only`, reload, and a wait until the reload is
/// in effect (the caller bounds it); asks the gate before changing anything.
pub(crate) async fn restore_writes_on(
    client: &Client,
    gate: AuthorityGate<'_>,
) -> Result<(), AttemptError> {
    if gate().is_none() {
        return Err(not_sent("ALTER SYSTEM"));
    }
    fence::alter_read_only(client, false).await?;
    reload(client).await?;
    fence::wait_read_only(client, false).await
}
