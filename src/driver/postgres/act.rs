//! SYNCREP_OFF and PROMOTE as SQL, and switching synchronous replication back on.

use std::time::Duration;

use tokio_postgres::Client;

use super::connect::{classify, quote_literal};
use crate::wire::failure::{AttemptError, FailureKind};

/// `ALTER SYSTEM SET synchronous_standby_names = <value>` and a reload. `ALTER SYSTEM` cannot
/// run in a transaction block, so these are two statements. Setting `''` (rather than RESET)
/// also overrides a value in postgresql.conf. Waiting backends are released once the
/// checkpointer has processed the reload.
pub(crate) async fn set_sync_names(client: &Client, value: &str) -> Result<(), AttemptError> {
    client
        .batch_execute(&format!(
            "ALTER SYSTEM SET synchronous_standby_names = {}",
            quote_literal(value)
        ))
        .await
        .map_err(|e| classify(&e, false))?;
    reload(client).await
}

pub(super) async fn reload(client: &Client) -> Result<(), AttemptError> {
    let row = client
        .query_one("SELECT pg_reload_conf()", &[])
        .await
        .map_err(|e| classify(&e, false))?;
    if row.get::<_, bool>(0) {
        Ok(())
    } else {
        Err(AttemptError::new(
            FailureKind::ErrorReply,
            "pg_reload_conf() returned false (could not signal the postmaster)",
        ))
    }
}

async fn in_recovery(client: &Client) -> Result<bool, AttemptError> {
    let row = client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .map_err(|e| classify(&e, false))?;
    Ok(row.get(0))
}

/// Outcome of a PROMOTE attempt that succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Promoted {
    Now,
    /// It was out of recovery already (an earlier attempt's promotion completed).
    Already,
}

/// Promotes a standby: checks it is still in recovery, clears its inherited
/// `synchronous_standby_names` (its old primary is gone, and the catalog records the pair as
/// not in sync, so commits on the new primary must not wait for a standby), runs
/// `pg_promote(wait => true)` and verifies it left recovery.
pub(crate) async fn promote(client: &Client, timeout: Duration) -> Result<Promoted, AttemptError> {
    if !in_recovery(client).await? {
        return Ok(Promoted::Already);
    }
    set_sync_names(client, "").await?;
    let wait_seconds = i32::try_from(timeout.as_secs().max(1)).unwrap_or(i32::MAX);
    let row = client
        .query_one("SELECT pg_promote(true, $1)", &[&wait_seconds])
        .await
        .map_err(|e| classify(&e, false))?;
    if !row.get::<_, bool>(0) {
        return Err(AttemptError::new(
            FailureKind::ErrorReply,
            format!("pg_promote did not complete within {wait_seconds}s"),
        ));
    }
    if in_recovery(client).await? {
        return Err(AttemptError::new(
            FailureKind::ErrorReply,
            "pg_promote returned but the server is still in recovery",
        ));
    }
    Ok(Promoted::Now)
}
