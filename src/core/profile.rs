//! Decision profiles: whose decision table ftsd follows where two FTS implementations differ.
//!
//! [`decide_pair`](super::decide_pair) is the in-core FTS's table. Cloudberry's external prober
//! `gpfts` differs from it in one row that ftsd follows on the clusters `gpfts` governs (the
//! [`Profile::Gpfts`] profile, the default of the Cloudberry backend): a **double fault** (the
//! primary lost, the mirror not recorded in sync) marks the primary down (`p/d/n`, the pair's
//! mode `n`) instead of leaving it up. The dispatcher of an external-FTS coordinator reads
//! liveness from that configuration only, so the mark is what makes it fail fast on the
//! content instead of waiting on connections. It is safe in the senses ftsd guards: it changes
//! no role, sends no message, can never lead to a promotion (a failover needs both rows `s`),
//! and the next reply of the primary marks it up again (rows 2 and 4 of the table). The
//! profile is applied after the table and after the failover's mirror check, so it only ever
//! rewrites a double-fault refusal; everything else passes unchanged.
//!
//! `gpfts` also probes **primaries without a mirror** (the in-core FTS does not) and marks one
//! down when it does not answer: [`decide_lone_primary`], used by the engine under this
//! profile only. That too changes no role and sends nothing; there is no peer to promote, so
//! the only effect is the dispatcher failing fast on the content, and the next reply marks the
//! primary up again.
//!
//! `docs/decisions.md` and `docs/cloudberry.md` list the differences and the choices.

use serde::{Deserialize, Serialize};
use std::fmt;

use super::decide::{Decision, Refusal, Rule};
use super::outcome::{ProbeOutcome, RestartState};
use super::transition::RowUpdate;
use crate::model::{Mode, Pair, Role, Segment, SegmentState, Status};

/// Which FTS's decisions to follow where they differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// Greenplum's / Cloudberry's in-core FTS: a double fault leaves the primary up.
    #[default]
    InCore,
    /// Cloudberry's external `gpfts`: a double fault marks the primary down.
    Gpfts,
}

impl Profile {
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::InCore => "in-core",
            Profile::Gpfts => "gpfts",
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The table's decision for `pair`, adjusted to `profile`.
pub fn apply_profile(profile: Profile, pair: &Pair, decision: Decision) -> Decision {
    match profile {
        Profile::InCore => decision,
        Profile::Gpfts => gpfts(pair, decision),
    }
}

/// `gpfts`'s double fault: only the table's own row 7 (a mirror not recorded in sync) is
/// rewritten. A driver's veto, a prober fault or an unconfirmed failover are ftsd's own
/// refusals, which `gpfts` does not have, and stay refusals. A pair already recorded down keeps
/// the refusal (its alarm and evidence, once per episode).
fn gpfts(pair: &Pair, decision: Decision) -> Decision {
    let double_fault = decision.rule == Rule::DoubleFault
        && matches!(decision.refusal, Some(Refusal::NotInSync { .. }));
    if !double_fault {
        return decision;
    }
    let updates = primary_down(pair);
    if updates.is_empty() {
        return decision;
    }
    Decision {
        content: decision.content,
        rule: Rule::PrimaryDown,
        updates,
        message: None,
        expect: Vec::new(),
        refusal: None,
    }
}

/// The rows `gpfts` writes on a double fault: the primary `p/d/n`, the mirror keeping its role
/// and status with mode `n` (a pair's rows always share the mode). Rows already so are not
/// written. Primary row first.
fn primary_down(pair: &Pair) -> Vec<RowUpdate> {
    let (p, m) = (&pair.primary, &pair.mirror);
    let targets = [
        (
            p,
            SegmentState {
                role: Role::Primary,
                status: Status::Down,
                mode: Mode::NotInSync,
            },
        ),
        (
            m,
            SegmentState {
                role: m.role,
                status: m.status,
                mode: Mode::NotInSync,
            },
        ),
    ];
    targets
        .into_iter()
        .filter(|(row, to)| row.state() != *to)
        .map(|(row, to)| RowUpdate::new(row, to))
        .collect()
}

/// `gpfts`'s decision for a content whose only row is `primary` (no mirror), from its probe:
///
/// * it answered as a primary: up again if the configuration had it down (rule `resync`, only
///   the status changes), else `healthy`;
/// * it answered as a mirror: refused (`role_conflict`), nothing written;
/// * a prober fault (our password, resolver or network): refused (`prober_fault`) — never read
///   as a loss, exactly as for a pair;
/// * crash recovery making progress, resetting, starting up: `restarting`, nothing written;
/// * lost: `primary_down`, the row written `p/d/n` as `gpfts` writes it; a row already down is
///   not written again.
///
/// No decision here carries a message: there is no mirror to promote, and a lone primary has
/// no synchronous replication to turn off.
pub fn decide_lone_primary(primary: &Segment, outcome: &ProbeOutcome) -> Decision {
    let content = primary.content;
    let write = |rule, to: SegmentState| {
        let mut d = Decision::new(content, rule);
        if primary.state() != to {
            d.updates = vec![RowUpdate::new(primary, to)];
        }
        d
    };
    match outcome {
        ProbeOutcome::Replied { reply } if reply.is_role_mirror => Decision::refused(
            content,
            Rule::RoleConflict,
            Refusal::LonePrimaryAnswersAsMirror {
                primary_dbid: primary.dbid,
            },
        ),
        ProbeOutcome::Replied { .. } if primary.is_up() => Decision::new(content, Rule::Healthy),
        ProbeOutcome::Replied { .. } => write(
            Rule::Resync,
            SegmentState {
                role: Role::Primary,
                status: Status::Up,
                mode: primary.mode,
            },
        ),
        ProbeOutcome::Failed { kind, .. } if kind.is_prober_fault() => Decision::refused(
            content,
            Rule::ProberFault,
            Refusal::ProberFault { kind: *kind },
        ),
        ProbeOutcome::Failed {
            restart:
                RestartState::RecoveryMakingProgress { .. }
                | RestartState::Resetting
                | RestartState::StartingUp { .. },
            ..
        } => Decision::new(content, Rule::Restarting),
        ProbeOutcome::Failed { .. } if !primary.is_up() => {
            Decision::new(content, Rule::PrimaryDown)
        }
        ProbeOutcome::Failed { .. } => write(
            Rule::PrimaryDown,
            SegmentState {
                role: Role::Primary,
                status: Status::Down,
                mode: Mode::NotInSync,
            },
        ),
    }
}

#[cfg(test)]
mod tests;
