//! A planned switchover (`ftsctl switchover`) of a `postgres`-driver pair, without I/O: whether
//! one may start, and the order of its steps as a small state machine, so "never promote
//! before the catalog records the new primary", "never record it before the standby replayed
//! everything the old primary wrote" and "never touch a server without authority" are checked
//! by property tests rather than trusted to the shell (`src/switchover/`).
//!
//! The order is the failover's (catalog first, then PROMOTE: a PROMOTE cut short is re-sent by
//! the next leader, decision row 3), preceded by the two steps a planned switchover adds: stop
//! the writes on the old primary and wait until the standby has replayed all of them. Before
//! the catalog records the new primary, an interrupted switchover is **undone** (the old
//! primary made writable again: nothing was promoted); after it, it is **finished** (the
//! promotion re-sent: the catalog already names the standby).

use serde::{Deserialize, Serialize};

/// Whether the instance asked may act right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Authority {
    /// Leader, epoch recorded, not paused, before its act-by deadline.
    Acting,
    /// `ftsctl pause`: maintenance, nothing is changed.
    Paused,
    /// Not (or no longer) the acting leader.
    NotActing,
}

/// Everything the decision to start reads, as the shell found it right before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchoverView {
    pub authority: Authority,
    /// The content's catalog rows are one primary `p/u/s` and one mirror `m/u/s`.
    pub catalog_in_sync: bool,
    /// A probe of the primary taken for this request: it answered out of recovery, with its
    /// standby streaming, synchronous and within `postgres.max_lag` (`why` otherwise).
    pub probe_in_sync: Result<(), String>,
    /// The standby answered in recovery (a server out of recovery cannot be promoted, and
    /// would be a second primary already).
    pub standby_in_recovery: Result<(), String>,
}

/// Why a switchover does not start; recorded as evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "refusal", content = "why", rename_all = "snake_case")]
pub enum SwitchoverRefusal {
    Paused,
    NotActing,
    /// The catalog does not have the pair `p/u/s` + `m/u/s`.
    CatalogNotInSync,
    /// The probe taken for the request did not see the standby in sync.
    NotInSync(String),
    StandbyNotInRecovery(String),
}

impl std::fmt::Display for SwitchoverRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SwitchoverRefusal::Paused => f.write_str("paused (maintenance): nothing is changed"),
            SwitchoverRefusal::NotActing => f.write_str("this instance is not the acting leader"),
            SwitchoverRefusal::CatalogNotInSync => f.write_str(
                "the catalog does not have the pair in sync (primary p/u/s, mirror m/u/s)",
            ),
            SwitchoverRefusal::NotInSync(why) => write!(f, "the standby is not in sync: {why}"),
            SwitchoverRefusal::StandbyNotInRecovery(why) => {
                write!(f, "the standby cannot be promoted: {why}")
            }
        }
    }
}

/// The start rule: every guard of an automatic failover (authority, pause, in sync by the
/// catalog and by a fresh probe), plus a standby that is a standby.
pub fn check(v: &SwitchoverView) -> Result<(), SwitchoverRefusal> {
    match v.authority {
        Authority::Acting => {}
        Authority::Paused => return Err(SwitchoverRefusal::Paused),
        Authority::NotActing => return Err(SwitchoverRefusal::NotActing),
    }
    if !v.catalog_in_sync {
        return Err(SwitchoverRefusal::CatalogNotInSync);
    }
    if let Err(why) = &v.probe_in_sync {
        return Err(SwitchoverRefusal::NotInSync(why.clone()));
    }
    if let Err(why) = &v.standby_in_recovery {
        return Err(SwitchoverRefusal::StandbyNotInRecovery(why.clone()));
    }
    Ok(())
}

/// One step, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// The old primary read-only at the database level (`default_transaction_read_only`,
    /// reload, every client session ended), then its final WAL position read.
    ReadOnly,
    /// Until the standby's replay position reaches that final position (bounded).
    WaitReplay,
    /// One fenced catalog transaction: old primary `m/d/n`, standby `p/u/n`, history and
    /// evidence.
    RecordTransition,
    /// PROMOTE the standby (the driver's PROMOTE: `pg_promote`, verified).
    Promote,
    /// The standby is the primary; the old one stays read-only, to be rebuilt.
    Done,
    /// The old primary made writable again: nothing was promoted and the catalog is unchanged.
    Undo,
    /// Undone: the pair is as before the request.
    Aborted,
    /// Stopped where it was; the next acting leader completes or undoes it (see `Stop`).
    Stopped(Stop),
}

/// Why a switchover stopped without being finished or undone here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stop {
    /// Authority lapsed before a step that changes something: nothing more is sent. A
    /// read-only old primary with an unchanged catalog is made writable by the next acting
    /// leader's cycle; a recorded transition is completed by it (re-PROMOTE).
    AuthorityLost,
    /// The PROMOTE failed after the catalog recorded the new primary: the cycle re-sends it
    /// (decision row 3), as after a failover.
    PromoteFailed,
    /// Undoing failed: the old primary may still be read-only; the next acting cycle makes it
    /// writable again.
    UndoFailed,
}

/// The first step.
pub const FIRST: Step = Step::ReadOnly;

/// The step after `step`, given whether it succeeded and whether authority still holds for
/// the next one. Every step needs authority (waiting only reads, but a deposed leader has no
/// business finishing anything); once the catalog records the new primary there is no way
/// back, only forward.
pub fn advance(step: Step, ok: bool, authority: bool) -> Step {
    let next = match (step, ok) {
        // A failed (possibly partial) read-only step is undone too: some of it may have landed.
        (Step::ReadOnly, false) | (Step::WaitReplay, false) | (Step::RecordTransition, false) => {
            Step::Undo
        }
        (Step::ReadOnly, true) => Step::WaitReplay,
        (Step::WaitReplay, true) => Step::RecordTransition,
        (Step::RecordTransition, true) => Step::Promote,
        (Step::Promote, true) => Step::Done,
        (Step::Promote, false) => return Step::Stopped(Stop::PromoteFailed),
        (Step::Undo, true) => return Step::Aborted,
        (Step::Undo, false) => return Step::Stopped(Stop::UndoFailed),
        (s @ (Step::Done | Step::Aborted | Step::Stopped(_)), _) => return s,
    };
    if authority {
        next
    } else {
        Step::Stopped(Stop::AuthorityLost)
    }
}

/// Whether `step` ends the switchover.
pub fn is_final(step: Step) -> bool {
    matches!(step, Step::Done | Step::Aborted | Step::Stopped(_))
}

#[cfg(test)]
mod tests;
