//! Fencing a former primary that came back writable while the catalog lists it as a mirror:
//! read-only at the database level, client sessions ended, and the optional `fence_command`
//! (STONITH-style). Every step that changes the server first asks the authority gate.

use std::time::{Duration, Instant};

use tokio::process::Command;
use tokio_postgres::Client;

use super::act::reload;
use super::connect::classify;
use crate::driver::AuthorityGate;
use crate::model::Segment;
use crate::wire::failure::{AttemptError, FailureKind};

/// The end of the next step: the gate's end (the act-by deadline), capped by `bound` from now.
/// None: the gate said no.
pub(super) fn step_end(gate: AuthorityGate<'_>, bound: Duration) -> Option<Instant> {
    let authority_end = gate()?;
    let end = Instant::now() + bound;
    Some(authority_end.map_or(end, |a| a.min(end)))
}

pub(super) fn not_sent(step: &str) -> AttemptError {
    AttemptError::new(
        FailureKind::Timeout,
        format!("authority lost or act-by deadline passed before {step}; not done"),
    )
}

async fn bounded<T>(
    end: Instant,
    step: &str,
    f: impl std::future::Future<Output = Result<T, AttemptError>>,
) -> Result<T, AttemptError> {
    tokio::time::timeout_at(end.into(), f)
        .await
        .unwrap_or_else(|_| {
            Err(AttemptError::new(
                FailureKind::Timeout,
                format!("{step} timed out"),
            ))
        })
}

/// What the SQL fence did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fenced {
    /// Client sessions terminated.
    pub terminated: i64,
    /// Superuser sessions left running: only a superuser may end them.
    pub superuser_sessions_left: i64,
}

/// Client backends other than ours; a role that is not a superuser may only signal
/// non-superuser backends (`pg_signal_backend`), so superusers' sessions are counted apart
/// rather than failing the whole statement.
const TERMINATE: &str = "\
WITH me AS (SELECT rolsuper FROM pg_roles WHERE rolname = current_user), \
     s AS (SELECT a.pid, coalesce(r.rolsuper, false) AS su \
             FROM pg_stat_activity a LEFT JOIN pg_roles r ON r.oid = a.usesysid \
            WHERE a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()) \
SELECT count(*) FILTER (WHERE (NOT s.su OR me.rolsuper) AND pg_terminate_backend(s.pid)), \
       count(*) FILTER (WHERE s.su AND NOT me.rolsuper) \
  FROM s, me";

/// `ALTER SYSTEM SET default_transaction_read_only = on` (`on`), or `ALTER SYSTEM RESET` it
/// (the server's default, off): the fence and a switchover's stop, and undoing them.
pub(super) async fn alter_read_only(client: &Client, on: bool) -> Result<(), AttemptError> {
    let sql = if on {
        "ALTER SYSTEM SET default_transaction_read_only = on"
    } else {
        "ALTER SYSTEM RESET default_transaction_read_only"
    };
    client
        .batch_execute(sql)
        .await
        .map_err(|e| classify(&e, false))
}

/// Waits, after `pg_reload_conf()`, until our own backend sees `default_transaction_read_only`
/// as `on` (the caller bounds the wait). The postmaster reloads asynchronously and then
/// signals its children; once our backend sees the new value, connections forked from now on
/// start with it too.
pub(super) async fn wait_read_only(client: &Client, on: bool) -> Result<(), AttemptError> {
    let want = if on { "on" } else { "off" };
    loop {
        let row = client
            .query_one(
                "SELECT current_setting('default_transaction_read_only')",
                &[],
            )
            .await
            .map_err(|e| classify(&e, false))?;
        if row.get::<_, String>(0) == want {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `ALTER SYSTEM SET default_transaction_read_only = on`, reload, wait until the reload is in
/// effect (so sessions that reconnect are read-only), then end every client session (their
/// transactions, including commits waiting for a standby that is gone, are rolled back or
/// never acknowledged).
pub(crate) async fn fence_sql(
    client: &Client,
    gate: AuthorityGate<'_>,
    statement_timeout: Duration,
) -> Result<Fenced, AttemptError> {
    let end = step_end(gate, statement_timeout).ok_or_else(|| not_sent("ALTER SYSTEM"))?;
    bounded(end, "ALTER SYSTEM", alter_read_only(client, true)).await?;
    let end = step_end(gate, statement_timeout).ok_or_else(|| not_sent("pg_reload_conf"))?;
    bounded(end, "pg_reload_conf", reload(client)).await?;
    bounded(end, "waiting for the reload", wait_read_only(client, true)).await?;
    let end = step_end(gate, statement_timeout).ok_or_else(|| not_sent("ending sessions"))?;
    let row = bounded(end, "ending client sessions", async {
        client
            .query_one(TERMINATE, &[])
            .await
            .map_err(|e| classify(&e, false))
    })
    .await?;
    Ok(Fenced {
        terminated: row.get(0),
        superuser_sessions_left: row.get(1),
    })
}

/// Runs `argv` with the target appended (`content dbid address port`) and its environment
/// (`FTSD_FENCE_*`), bounded by `timeout` and by the gate's end; the process is killed then.
pub(crate) async fn run_command(
    argv: &[String],
    target: &Segment,
    reason: &str,
    timeout: Duration,
    gate: AuthorityGate<'_>,
) -> Result<(), String> {
    let Some(end) = step_end(gate, timeout) else {
        return Err("not run: authority lost or act-by deadline passed".into());
    };
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .args([
            target.content.to_string(),
            target.dbid.to_string(),
            target.address.clone(),
            target.port.to_string(),
        ])
        .env("FTSD_FENCE_CONTENT", target.content.to_string())
        .env("FTSD_FENCE_DBID", target.dbid.to_string())
        .env("FTSD_FENCE_ADDRESS", &target.address)
        .env("FTSD_FENCE_HOSTNAME", &target.hostname)
        .env("FTSD_FENCE_PORT", target.port.to_string())
        .env("FTSD_FENCE_DATADIR", &target.datadir)
        .env("FTSD_FENCE_REASON", reason)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let bound = end.saturating_duration_since(Instant::now());
    let child = cmd
        .spawn()
        .map_err(|e| format!("{} could not be started: {e}", argv[0]))?;
    match tokio::time::timeout_at(end.into(), child.wait_with_output()).await {
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: String = stderr.trim().chars().rev().take(500).collect();
            let tail: String = tail.chars().rev().collect();
            Err(format!("{} exited with {}: {tail}", argv[0], out.status))
        }
        Ok(Err(e)) => Err(format!("{}: {e}", argv[0])),
        Err(_) => Err(format!(
            "{} did not finish within {bound:?} (killed)",
            argv[0]
        )),
    }
}
