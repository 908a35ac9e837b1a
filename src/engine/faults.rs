//! Fault-injection points for tests, in the spirit of Greenplum's `gp_inject_fault`.
//!
//! Safety has two layers: the act-by deadline stops a leader from starting a write, and the
//! catalog's epoch fence rejects a write that was started before the deadline but lands after
//! a newer leader took office. The second layer only matters in a narrow window (a process
//! paused between the check and the write), which a test cannot hit by timing alone. These
//! points widen that window on purpose. They are read from the environment once, are never
//! set in production, and log loudly when active.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use crate::wire::MessageType;

/// `FTS_INJECT_DELAY_BEFORE_APPLY=<duration>`: sleep after the authority check and before
/// the catalog transaction of every transition.
pub const DELAY_BEFORE_APPLY: &str = "FTS_INJECT_DELAY_BEFORE_APPLY";

pub fn delay_before_apply() -> Option<Duration> {
    static VALUE: OnceLock<Option<Duration>> = OnceLock::new();
    *VALUE.get_or_init(|| duration_from_env(DELAY_BEFORE_APPLY))
}

/// `FTS_INJECT_DELAY_AFTER_FENCE=<duration>`: inside every catalog transition, after the
/// fence `UPDATE` has locked the `fts_epoch` row, the session runs `pg_sleep` for this long:
/// the fence stays locked by a busy session (which `idle_in_transaction_session_timeout`
/// does not end), as by a former leader that never commits.
pub const DELAY_AFTER_FENCE: &str = "FTS_INJECT_DELAY_AFTER_FENCE";

pub fn delay_after_fence() -> Option<Duration> {
    static VALUE: OnceLock<Option<Duration>> = OnceLock::new();
    *VALUE.get_or_init(|| duration_from_env(DELAY_AFTER_FENCE))
}

/// `FTS_INJECT_PAUSE_BEFORE_SEND=<duration>`: sleep after the authority check of every
/// SYNCREP_OFF / PROMOTE attempt and before the attempt itself, logging
/// [`PAUSE_BEFORE_SEND_LOG`] first so a test can SIGSTOP the process inside the window.
pub const PAUSE_BEFORE_SEND: &str = "FTS_INJECT_PAUSE_BEFORE_SEND";

/// The log line that marks the start of the pause (tests wait for it).
pub const PAUSE_BEFORE_SEND_LOG: &str =
    "fault injection: pausing between the authority check and the send";

pub async fn pause_before_send(kind: MessageType) {
    static VALUE: OnceLock<Option<Duration>> = OnceLock::new();
    if kind == MessageType::Probe {
        return;
    }
    if let Some(pause) = *VALUE.get_or_init(|| duration_from_env(PAUSE_BEFORE_SEND)) {
        tracing::warn!(?pause, message = %kind, "{}", PAUSE_BEFORE_SEND_LOG);
        tokio::time::sleep(pause).await;
    }
}

/// `FTS_INJECT_STALL_CYCLE=<file>`: while `file` exists, the probe loop stops at the top of
/// its next turn: it neither probes nor reports itself alive, as a loop stuck on a lock or a
/// future that never completes would. Removing the file lets it go on. Tests use it to see the
/// systemd watchdog pings stop (`daemon::liveness`).
pub const STALL_CYCLE: &str = "FTS_INJECT_STALL_CYCLE";

/// The log line that marks the start of a stall (tests wait for it).
pub const STALL_CYCLE_LOG: &str = "fault injection: probe loop stalled";

pub async fn stall_cycle_loop() {
    static VALUE: OnceLock<Option<PathBuf>> = OnceLock::new();
    let Some(file) = VALUE.get_or_init(|| std::env::var_os(STALL_CYCLE).map(PathBuf::from)) else {
        return;
    };
    if !file.exists() {
        return;
    }
    tracing::warn!(file = %file.display(), "{}", STALL_CYCLE_LOG);
    while file.exists() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::warn!("fault injection: probe loop released");
}

/// `FTS_INJECT_STALL_LEASE_KEEPER=<file>`: while `file` exists, the lease keeper's thread
/// blocks (a synchronous sleep, so its runtime cannot even be told to stop), as a thread stuck
/// in a system call or on a lock would. Tests use it to see the systemd watchdog pings stop.
pub const STALL_LEASE_KEEPER: &str = "FTS_INJECT_STALL_LEASE_KEEPER";

/// The log line that marks the start of a keeper stall (tests wait for it).
pub const STALL_LEASE_KEEPER_LOG: &str = "fault injection: lease keeper thread blocked";

/// Blocks the calling thread while the file named by [`STALL_LEASE_KEEPER`] exists.
pub fn stall_lease_keeper() {
    static VALUE: OnceLock<Option<PathBuf>> = OnceLock::new();
    let Some(file) = VALUE.get_or_init(|| std::env::var_os(STALL_LEASE_KEEPER).map(PathBuf::from))
    else {
        return;
    };
    if !file.exists() {
        return;
    }
    tracing::warn!(file = %file.display(), "{}", STALL_LEASE_KEEPER_LOG);
    while file.exists() {
        std::thread::sleep(Duration::from_millis(100));
    }
    tracing::warn!("fault injection: lease keeper thread released");
}

/// `FTS_INJECT_PAUSE_IN_SWITCHOVER=<duration>`: sleep in a switchover after the old
/// primary's writes were stopped and replayed by the standby, before the catalog transaction,
/// logging [`PAUSE_IN_SWITCHOVER_LOG`] first so a test can SIGSTOP the leader there (deposed
/// mid-switchover).
pub const PAUSE_IN_SWITCHOVER: &str = "FTS_INJECT_PAUSE_IN_SWITCHOVER";

/// The log line that marks the start of that pause.
pub const PAUSE_IN_SWITCHOVER_LOG: &str =
    "fault injection: pausing the switchover before its catalog transaction";

pub async fn pause_in_switchover() {
    static VALUE: OnceLock<Option<Duration>> = OnceLock::new();
    if let Some(pause) = *VALUE.get_or_init(|| duration_from_env(PAUSE_IN_SWITCHOVER)) {
        tracing::warn!(?pause, "{}", PAUSE_IN_SWITCHOVER_LOG);
        tokio::time::sleep(pause).await;
    }
}

fn duration_from_env(var: &str) -> Option<Duration> {
    let raw = std::env::var(var).ok()?;
    match humantime::parse_duration(&raw) {
        Ok(d) => Some(d),
        Err(e) => {
            tracing::error!(var, value = %raw, error = %e, "ignoring bad fault-injection value");
            None
        }
    }
}
