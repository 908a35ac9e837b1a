//! What probing one primary produced in this cycle, reduced to what the decision table reads.

use serde::{Deserialize, Serialize};

use crate::model::Segment;
use crate::wire::failure::{AttemptError, FailureKind};
use crate::wire::{self, ProbeReply};

/// Whether a failed primary looked like it was restarting, which defers any action
/// (decision row 5). Mirrors `checkIfFailedDueToRecoveryInProgress` / `PM_IN_RESETTING`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum RestartState {
    /// Not restarting: a plain failure.
    NotRestarting,
    /// In crash recovery or starting up, and the replayed LSN moved forward during this cycle.
    RecoveryMakingProgress { lsn: u64 },
    /// In crash recovery but the LSN did not advance (hung or rolling panics): treated as dead.
    RecoveryNotMakingProgress { lsn: u64 },
    /// `the database system is resetting`: the postmaster is reinitialising after a crash.
    Resetting,
    /// The driver saw the server starting up or in crash recovery (SQLSTATE 57P03, which
    /// vanilla PostgreSQL sends without an LSN to judge progress by) for `elapsed_ms`, less
    /// than its bound (`postgres.restart_grace`): still an ordinary restart. Past the bound
    /// the driver stops reporting this and the failure stands.
    StartingUp { elapsed_ms: u64 },
}

/// The final outcome for one primary after all attempts of this cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum ProbeOutcome {
    /// The primary answered (possibly after request_retry retries).
    Replied { reply: ProbeReply },
    /// Every attempt failed.
    Failed {
        kind: FailureKind,
        restart: RestartState,
    },
}

/// Whether a successful PROBE reply must be retried inside this cycle: the primary asks for a
/// retry (its mirror is down but still inside the segment's grace window) and the catalog
/// still records the mirror as up. Rows 1 and 1c; row 1b (mirror already down) never retries.
pub fn reply_wants_retry(reply: &ProbeReply, mirror: &Segment) -> bool {
    reply.request_retry && mirror.is_up()
}

/// Derives the restart state from the errors of every attempt of this cycle, oldest first.
///
/// Only the last attempt decides, as in the in-core prober where the flag is reset at each
/// connect; its LSN is compared with the LSN of the previous attempt that reported one in the
/// same cycle (0 at cycle start), as `checkIfFailedDueToRecoveryInProgress` keeps one LSN per
/// segment and overwrites it on each in-recovery failure. So with a single attempt any
/// in-recovery reply counts as progress, exactly as Greenplum behaves with
/// `gp_fts_probe_retries = 0`; and an LSN that went back and then forward again (a restart
/// from the last checkpoint) counts as progress, as it does there.
pub fn restart_state(errors: &[AttemptError]) -> RestartState {
    let Some((last, earlier)) = errors.split_last() else {
        return RestartState::NotRestarting;
    };
    match startup_signal(last) {
        Some(Signal::Resetting) => RestartState::Resetting,
        Some(Signal::Recovery(Some(lsn))) => {
            let seen = earlier
                .iter()
                .rev()
                .find_map(|e| match startup_signal(e) {
                    Some(Signal::Recovery(lsn)) => lsn,
                    _ => None,
                })
                .unwrap_or(0);
            if lsn > seen {
                RestartState::RecoveryMakingProgress { lsn }
            } else {
                RestartState::RecoveryNotMakingProgress { lsn }
            }
        }
        // An in-recovery message without a parsable LSN is logged and ignored by Greenplum:
        // the failure stands.
        Some(Signal::Recovery(None)) | None => RestartState::NotRestarting,
    }
}

/// The failure class of a failed exchange: the last attempt's, unless any attempt of the cycle
/// failed with a prober fault — then that one (the last such). One attempt that could not be
/// made properly from this side means the cycle did not establish that the primary is lost.
pub fn failure_kind(errors: &[AttemptError]) -> Option<FailureKind> {
    errors
        .iter()
        .rev()
        .find(|e| e.kind.is_prober_fault())
        .or(errors.last())
        .map(|e| e.kind)
}

enum Signal {
    Recovery(Option<u64>),
    Resetting,
}

fn startup_signal(err: &AttemptError) -> Option<Signal> {
    if err.kind != FailureKind::StartupError {
        return None;
    }
    let text = err.full_text();
    if text.contains(wire::MSG_IN_RECOVERY) || text.contains(wire::MSG_STARTING_UP) {
        Some(Signal::Recovery(wire::parse_last_replayed(&text)))
    } else if text.contains(wire::MSG_RESETTING) {
        Some(Signal::Resetting)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recovery(lsn: &str) -> AttemptError {
        AttemptError {
            kind: FailureKind::StartupError,
            message: wire::MSG_IN_RECOVERY.into(),
            sqlstate: Some("57P03".into()),
            detail: Some(format!("last replayed record at {lsn}")),
        }
    }

    #[test]
    fn a_prober_fault_in_any_attempt_names_the_failure() {
        let e = |k| AttemptError::new(k, "x");
        use FailureKind::*;
        assert_eq!(failure_kind(&[]), None);
        assert_eq!(failure_kind(&[e(Timeout), e(Refused)]), Some(Refused));
        assert_eq!(failure_kind(&[e(Auth), e(Timeout)]), Some(Auth));
        assert_eq!(
            failure_kind(&[e(Resolve), e(Timeout), e(Local)]),
            Some(Local)
        );
    }

    #[test]
    fn progress_is_judged_on_the_last_attempt_against_the_previous_attempts_lsn() {
        use RestartState::*;
        assert_eq!(restart_state(&[]), NotRestarting);
        assert_eq!(
            restart_state(&[recovery("0/10")]),
            RecoveryMakingProgress { lsn: 0x10 }
        );
        assert_eq!(
            restart_state(&[recovery("0/10"), recovery("0/20")]),
            RecoveryMakingProgress { lsn: 0x20 }
        );
        assert_eq!(
            restart_state(&[recovery("0/20"), recovery("0/20")]),
            RecoveryNotMakingProgress { lsn: 0x20 }
        );
        // the LSN went backwards
        assert_eq!(
            restart_state(&[recovery("0/30"), recovery("0/10")]),
            RecoveryNotMakingProgress { lsn: 0x10 }
        );
        // compared with the previous attempt, not the highest earlier one (docs/decisions.md):
        // 0/20 after 0/10 is progress even though 0/30 was seen first
        assert_eq!(
            restart_state(&[recovery("0/30"), recovery("0/10"), recovery("0/20")]),
            RecoveryMakingProgress { lsn: 0x20 }
        );
        // an attempt without an LSN in between does not reset the comparison
        let refused_between = AttemptError::new(FailureKind::Refused, "connection refused");
        assert_eq!(
            restart_state(&[recovery("0/20"), refused_between, recovery("0/20")]),
            RecoveryNotMakingProgress { lsn: 0x20 }
        );
        // the last attempt decides: progress earlier, then refused
        let refused = AttemptError::new(FailureKind::Refused, "connection refused");
        assert_eq!(restart_state(&[recovery("0/10"), refused]), NotRestarting);
        let reset = AttemptError::new(FailureKind::StartupError, wire::MSG_RESETTING);
        assert_eq!(restart_state(&[reset]), Resetting);
        let no_lsn = AttemptError::new(FailureKind::StartupError, wire::MSG_STARTING_UP);
        assert_eq!(restart_state(&[no_lsn]), NotRestarting);
        // the same text in an error reply (not at startup) is not a restart signal
        let mut reply = recovery("0/10");
        reply.kind = FailureKind::ErrorReply;
        assert_eq!(restart_state(&[reply]), NotRestarting);
    }
}
