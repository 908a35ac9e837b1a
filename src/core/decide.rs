//! Greenplum's FTS decision table (`docs/decisions.md`) as a pure function of one pair's catalog
//! rows and its probe outcome.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;

use super::outcome::{ProbeOutcome, RestartState};
use super::transition::{NextMessage, RowUpdate};
use crate::model::{ContentId, Mode, Pair, Role, Segment, SegmentConfig, SegmentState, Status};
use crate::wire::{MessageType, ProbeReply};

/// Which row of the decision table applied; recorded as evidence and counted in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// Row 4 with nothing to change: the catalog already matches the primary's report.
    Healthy,
    /// Row 4 with changes: mirror back up, or mode moved between `s` and `n`.
    Resync,
    /// Rows 1/1b: the primary still asks for a retry (mirror inside its grace period).
    RetryRequested,
    /// Row 2: the mirror is gone and the primary blocks commits: mark it down, SYNCREP_OFF.
    MirrorDown,
    /// Row 3: the catalog primary still answers as a mirror: an earlier PROMOTE did not take.
    RePromote,
    /// Row 5: the primary is in crash recovery and making progress, or resetting.
    Restarting,
    /// Row 6: the primary is lost and the mirror was in sync: flip roles, PROMOTE the mirror.
    Failover,
    /// Row 7: the primary is lost and the mirror was not in sync (or is down): no change.
    DoubleFault,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Healthy => "healthy",
            Rule::Resync => "resync",
            Rule::RetryRequested => "retry_requested",
            Rule::MirrorDown => "mirror_down",
            Rule::RePromote => "re_promote",
            Rule::Restarting => "restarting",
            Rule::Failover => "failover",
            Rule::DoubleFault => "double_fault",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to do for one pair: catalog updates (one transaction, primary row first) and then,
/// only once they have committed, the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub content: ContentId,
    pub rule: Rule,
    pub updates: Vec<RowUpdate>,
    pub message: Option<NextMessage>,
}

impl Decision {
    fn new(content: ContentId, rule: Rule) -> Self {
        Decision {
            content,
            rule,
            updates: Vec::new(),
            message: None,
        }
    }

    pub fn is_noop(&self) -> bool {
        self.updates.is_empty() && self.message.is_none()
    }
}

/// Decides one pair. `pair` is the catalog snapshot the probe was made against.
pub fn decide_pair(pair: &Pair, outcome: &ProbeOutcome) -> Decision {
    let content = pair.content();
    match outcome {
        ProbeOutcome::Replied { reply } => decide_replied(pair, reply),
        ProbeOutcome::Failed { restart, .. } => match restart {
            RestartState::RecoveryMakingProgress { .. } | RestartState::Resetting => {
                Decision::new(content, Rule::Restarting)
            }
            RestartState::NotRestarting | RestartState::RecoveryNotMakingProgress { .. } => {
                decide_failed(pair)
            }
        },
    }
}

fn decide_replied(pair: &Pair, reply: &ProbeReply) -> Decision {
    let (p, m) = (&pair.primary, &pair.mirror);
    let mirror_alive = reply.is_mirror_up;
    // A reply claiming "in sync" with the mirror down is contradictory; Greenplum asserts it
    // never happens. Trusting it would record mode `s` for a down mirror, so it is read as
    // not in sync.
    let in_sync = reply.is_in_sync && mirror_alive;

    if reply.is_syncrep_enabled && !mirror_alive {
        if reply.request_retry {
            return Decision::new(pair.content(), Rule::RetryRequested);
        }
        let mut d = Decision::new(pair.content(), Rule::MirrorDown);
        d.updates = update_configuration(p, m, Role::Primary, Role::Mirror, in_sync, true, false);
        // Sent even when the catalog already had the mirror down: an earlier SYNCREP_OFF may
        // have failed and commits on the primary are still blocked (row 8 -> row 2 again).
        d.message = Some(NextMessage {
            kind: MessageType::SyncrepOff,
            target: p.clone(),
        });
        return d;
    }
    if reply.is_role_mirror {
        let mut d = Decision::new(pair.content(), Rule::RePromote);
        d.message = Some(NextMessage {
            kind: MessageType::Promote,
            target: p.clone(),
        });
        return d;
    }
    let updates = update_configuration(
        p,
        m,
        Role::Primary,
        Role::Mirror,
        in_sync,
        true,
        mirror_alive,
    );
    let rule = if updates.is_empty() {
        Rule::Healthy
    } else {
        Rule::Resync
    };
    let mut d = Decision::new(pair.content(), rule);
    d.updates = updates;
    d
}

fn decide_failed(pair: &Pair) -> Decision {
    let (p, m) = (&pair.primary, &pair.mirror);
    // Greenplum checks only the mirror's mode (the catalog guarantees both rows agree and that
    // an in-sync mirror is up). We check all three so that a hand-edited or inconsistent
    // catalog can never lead to promoting a mirror that was not in sync.
    let promotable = m.mode == Mode::InSync && p.mode == Mode::InSync && m.status == Status::Up;
    if !promotable {
        return Decision::new(pair.content(), Rule::DoubleFault);
    }
    let mut d = Decision::new(pair.content(), Rule::Failover);
    d.updates = update_configuration(p, m, Role::Mirror, Role::Primary, false, false, m.is_up());
    d.message = Some(NextMessage {
        kind: MessageType::Promote,
        target: m.clone(),
    });
    d
}

/// `updateConfiguration` of the in-core prober: a row is written iff its liveness differs from
/// the catalog, and both rows are written when the mode changes; each written row gets the new
/// role, status and mode. Primary row first.
fn update_configuration(
    p: &Segment,
    m: &Segment,
    new_role_p: Role,
    new_role_m: Role,
    in_sync: bool,
    primary_alive: bool,
    mirror_alive: bool,
) -> Vec<RowUpdate> {
    let mode_changes = in_sync != p.in_sync();
    let mode = Mode::from_in_sync(in_sync);
    let mut updates = Vec::with_capacity(2);
    if mode_changes || primary_alive != p.is_up() {
        updates.push(RowUpdate::new(
            p,
            SegmentState {
                role: new_role_p,
                status: Status::from_alive(primary_alive),
                mode,
            },
        ));
    }
    if mode_changes || mirror_alive != m.is_up() {
        updates.push(RowUpdate::new(
            m,
            SegmentState {
                role: new_role_m,
                status: Status::from_alive(mirror_alive),
                mode,
            },
        ));
    }
    updates
}

/// Decides every probed pair of a cycle. Pairs without an outcome (not probed, e.g. shutdown
/// began) are left alone.
pub fn plan_cycle(
    config: &SegmentConfig,
    outcomes: &HashMap<ContentId, ProbeOutcome>,
) -> Vec<Decision> {
    config
        .probe_pairs()
        .iter()
        .filter_map(|pair| {
            outcomes
                .get(&pair.content())
                .map(|outcome| decide_pair(pair, outcome))
        })
        .collect()
}

/// Applies updates to a configuration snapshot, as a committed transaction would. The property
/// tests replay decisions with it ("a second cycle on the result changes nothing").
pub fn apply_updates(config: &mut SegmentConfig, updates: &[RowUpdate]) {
    for u in updates {
        if let Some(row) = config.segments.iter_mut().find(|s| s.dbid == u.dbid) {
            row.role = u.to.role;
            row.status = u.to.status;
            row.mode = u.to.mode;
        }
    }
}

#[cfg(test)]
mod tests;
