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
//! `docs/decisions.md` and `docs/cloudberry.md` list the differences and the choices.

use serde::{Deserialize, Serialize};
use std::fmt;

use super::decide::{Decision, Refusal, Rule};
use super::transition::RowUpdate;
use crate::model::{Mode, Pair, Role, SegmentState, Status};

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

#[cfg(test)]
mod tests;
