//! Greenplum's FTS decision table (`docs/decisions.md`) as a pure function of one pair's catalog
//! rows and its probe outcome.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;

use super::outcome::{ProbeOutcome, RestartState};
use super::transition::{NextMessage, RowUpdate};
use crate::model::{
    ContentId, Dbid, Mode, Pair, Role, Segment, SegmentConfig, SegmentState, Status,
};
use crate::wire::failure::FailureKind;
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
    /// Row 7: the primary is lost and the mirror was not in sync (or is down), or the driver
    /// vetoed the failover: no change.
    DoubleFault,
    /// Row 3's reply (the catalog primary answers as a mirror) from a pair that is not in the
    /// shape our failover leaves: someone else changed the roles (a switchover,
    /// `gprecoverseg`); promoting would make a second primary. No change, alarmed.
    RoleConflict,
    /// The content's rows are not one primary and one peer (two primaries, three rows, an
    /// unreadable row): the content is left alone and alarmed; the others go on.
    BadShape,
    /// The probe of the primary failed for a reason on this prober's side (its password, its
    /// privileges, its resolver, its host's network stack): nothing is known about the
    /// primary, so nothing changes; alarmed.
    ProberFault,
    /// Row 6 was allowed by the table but the check before acting did not confirm it (the
    /// mirror to promote did not answer as a mirror to this observer): no change; alarmed.
    FailoverUnconfirmed,
    /// Not a row of the table: a row the catalog lists as a mirror answered as a writable
    /// primary and the driver fenced it (evidence only, no row update).
    Fence,
    /// Row 7 as `gpfts` decides it (the `gpfts` profile, `core::profile`): the primary is lost
    /// and the mirror was not in sync; the primary is marked down (`p/d/n`), no message.
    PrimaryDown,
    /// Row 6 allowed and confirmed, but held by the brake on correlated failures
    /// (`core::brake`): the failovers of one window would span too many hosts. No change;
    /// alarmed; held until an operator releases the brake.
    BrakeHeld,
    /// Not a row of the table: a planned switchover (`ftsctl switchover`) recorded the
    /// standby as the primary (`p/u/n`) and the old primary as a down mirror (`m/d/n`), to be
    /// rebuilt; PROMOTE follows.
    Switchover,
    /// A switchover refused before it changed anything (evidence only).
    SwitchoverRefused,
    /// A switchover undone before the catalog changed: the old primary is writable again
    /// (evidence only).
    SwitchoverAborted,
    /// Not a row of the table: the coordinator's standby was promoted because the
    /// coordinator was lost (content -1; `src/coordinator/`), and its rows record it.
    CoordinatorFailover,
    /// Not a row of the table: `ftsctl switchover --content -1` promoted the coordinator's
    /// standby, and its rows record it.
    CoordinatorSwitchover,
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
            Rule::RoleConflict => "role_conflict",
            Rule::BadShape => "bad_shape",
            Rule::ProberFault => "prober_fault",
            Rule::FailoverUnconfirmed => "failover_unconfirmed",
            Rule::Fence => "fence",
            Rule::PrimaryDown => "primary_down",
            Rule::BrakeHeld => "brake_held",
            Rule::Switchover => "switchover",
            Rule::SwitchoverRefused => "switchover_refused",
            Rule::SwitchoverAborted => "switchover_aborted",
            Rule::CoordinatorFailover => "coordinator_failover",
            Rule::CoordinatorSwitchover => "coordinator_switchover",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The driver's verdict on failing over one pair, an input of the decision: the catalog's
/// mode is all the table reads, a driver may know better (the `postgres` driver's data-loss
/// guard). A veto can only turn a failover into a refusal, never cause an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailoverGuard {
    Clear,
    Veto(String),
}

/// Why an action the table would take was refused; recorded once per episode as evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "refusal")]
pub enum Refusal {
    /// Row 7: the mirror is not recorded up and in sync.
    NotInSync {
        mirror_dbid: Dbid,
        mirror: SegmentState,
    },
    /// Row 6 vetoed by the driver.
    DriverVeto { reason: String },
    /// The catalog primary answers as a mirror outside the shape a failover leaves.
    NotFailoverShape {
        primary: SegmentState,
        mirror: SegmentState,
    },
    /// The content's rows cannot form a pair.
    BadShape { reason: String },
    /// The primary's probe failed with a prober fault.
    ProberFault { kind: FailureKind },
    /// The primary row 6 found lost answered the PROBE sent with the mirror check: its
    /// failures were this observer's (e.g. its network came back mid-cycle), not the primary's.
    PrimaryAnswersAgain { primary_dbid: Dbid },
    /// The mirror that row 6 would promote did not answer a PROBE from this observer.
    MirrorUnreachable {
        mirror_dbid: Dbid,
        kind: FailureKind,
    },
    /// The mirror that row 6 would promote answered, but not as a mirror.
    MirrorNotAMirror { mirror_dbid: Dbid },
    /// Fewer than a majority of the live members saw the primary fail within the window
    /// (`core::quorum`): what only some observers see is not a segment failure.
    NotConfirmedByQuorum {
        primary_dbid: Dbid,
        confirmed: Vec<String>,
        live: usize,
        needed: usize,
        /// The members registry could not be read: nobody knows what a majority is.
        registry_error: Option<String>,
    },
    /// This observer has seen the primary down for less than `probe.min_down`: a flap.
    DownTooBriefly {
        primary_dbid: Dbid,
        down_ms: u64,
        min_down_ms: u64,
    },
    /// The brake on correlated failures holds this cycle's failovers.
    BrakeEngaged { held: super::brake::Held },
    /// The brake's record could not be read or written, so the brake cannot tell whether the
    /// failover is within its limit: held (it fails closed).
    BrakeUnrecorded { error: String },
    /// A content without a mirror (probed under the `gpfts` profile) whose primary answers as
    /// a mirror: the configuration says primary, the server does not; nobody to promote.
    LonePrimaryAnswersAsMirror { primary_dbid: Dbid },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NotInSync {
                mirror_dbid,
                mirror,
            } => {
                write!(
                f,
                "catalog has mirror dbid {mirror_dbid} {} with mode {}: promoting it could lose \
                 committed transactions",
                if mirror.status == Status::Up { "up" } else { "down" },
                mirror.mode
            )
            }
            Refusal::DriverVeto { reason } => write!(f, "driver veto: {reason}"),
            Refusal::NotFailoverShape { primary, mirror } => write!(
                f,
                "the catalog primary answers as a mirror, but the pair is {primary} + {mirror}, \
                 not the p/u/n + m/d/n a failover leaves: someone else changed the roles; \
                 PROMOTE would make a second primary"
            ),
            Refusal::BadShape { reason } => f.write_str(reason),
            Refusal::ProberFault { kind } => write!(
                f,
                "prober fault ({kind}): the probe failed on this observer's side (credentials, \
                 privileges, name resolution or its own network), which says nothing about the \
                 primary; no failover"
            ),
            Refusal::PrimaryAnswersAgain { primary_dbid } => write!(
                f,
                "primary dbid {primary_dbid} answered a PROBE again before the failover: the \
                 failures that led here were this observer's (a path that came back mid-cycle), \
                 not the primary's"
            ),
            Refusal::MirrorUnreachable { mirror_dbid, kind } => write!(
                f,
                "mirror unreachable from this observer: dbid {mirror_dbid} did not answer a PROBE \
                 ({kind}); a catalog must not point at a primary this observer cannot reach"
            ),
            Refusal::MirrorNotAMirror { mirror_dbid } => write!(
                f,
                "mirror dbid {mirror_dbid} answered a PROBE but not as a mirror; promoting it \
                 could make a second primary"
            ),
            Refusal::NotConfirmedByQuorum {
                primary_dbid,
                registry_error: Some(error),
                ..
            } => write!(
                f,
                "primary dbid {primary_dbid} loss not confirmed: the members registry could not \
                 be read ({error}), so a majority cannot be counted; retrying next cycle"
            ),
            Refusal::NotConfirmedByQuorum {
                primary_dbid,
                confirmed,
                live,
                needed,
                registry_error: None,
            } => write!(
                f,
                "primary dbid {primary_dbid} loss confirmed by {} of {live} live members \
                 ({needed} needed: {}); what only some observers see is not a segment failure, \
                 retrying next cycle",
                confirmed.len(),
                if confirmed.is_empty() {
                    "none".to_owned()
                } else {
                    confirmed.join(", ")
                }
            ),
            Refusal::DownTooBriefly {
                primary_dbid,
                down_ms,
                min_down_ms,
            } => write!(
                f,
                "primary dbid {primary_dbid} seen down for {down_ms} ms, less than probe.min_down \
                 ({min_down_ms} ms): waiting for the next cycle"
            ),
            Refusal::BrakeEngaged { held } => held.fmt(f),
            Refusal::BrakeUnrecorded { error } => write!(
                f,
                "brake record unavailable ({error}): the failover is held until the brake can \
                 count it"
            ),
            Refusal::LonePrimaryAnswersAsMirror { primary_dbid } => write!(
                f,
                "the content has no mirror and its primary dbid {primary_dbid} answers as a \
                 mirror: someone else changed it; nothing is marked"
            ),
        }
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
    /// Rows that must still hold these states, checked under the fence in the transaction
    /// that precedes the message (re-PROMOTE writes no row, so nothing else would catch a
    /// catalog changed since the snapshot).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expect: Vec<(Dbid, SegmentState)>,
    /// Set when the table's action is refused; nothing is written or sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<Refusal>,
}

impl Decision {
    pub(crate) fn new(content: ContentId, rule: Rule) -> Self {
        Decision {
            content,
            rule,
            updates: Vec::new(),
            message: None,
            expect: Vec::new(),
            refusal: None,
        }
    }

    pub fn refused(content: ContentId, rule: Rule, why: Refusal) -> Self {
        let mut d = Decision::new(content, rule);
        d.refusal = Some(why);
        d
    }

    /// A content whose rows cannot form a pair: no action, only the alarm.
    pub fn bad_shape(content: ContentId, reason: String) -> Self {
        Decision::refused(content, Rule::BadShape, Refusal::BadShape { reason })
    }

    /// A failover the brake holds: nothing is written or sent (`core::brake`).
    pub fn held_by_brake(content: ContentId, why: Refusal) -> Self {
        Decision::refused(content, Rule::BrakeHeld, why)
    }

    pub fn is_noop(&self) -> bool {
        self.updates.is_empty() && self.message.is_none()
    }
}

/// The check of the way before row 6 acts: what a PROBE of the mirror it would promote said,
/// or that the lost primary answered the PROBE sent to it at the same time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mirror")]
pub enum MirrorCheck {
    /// It answered with `is_role_mirror`: reachable from here, and still a mirror.
    AnswersAsMirror,
    /// It answered, without `is_role_mirror`.
    AnswersAsPrimary,
    /// Every attempt failed; the class of the last failure.
    Unreachable { kind: FailureKind },
    /// Whatever the mirror said, the primary answered the PROBE sent to it at the same time:
    /// the loss was observed before this observer's path to the segments came back.
    PrimaryAnswersAgain { primary_dbid: Dbid },
}

/// Decides one pair. `pair` is the catalog snapshot the probe was made against; `guard` is
/// the driver's verdict on failing it over.
///
/// A failure whose class is a prober fault ([`FailureKind::is_prober_fault`]) is never read
/// as a lost primary: it is refused as [`Rule::ProberFault`].
pub fn decide_pair(pair: &Pair, outcome: &ProbeOutcome, guard: &FailoverGuard) -> Decision {
    let content = pair.content();
    match outcome {
        ProbeOutcome::Replied { reply } => decide_replied(pair, reply),
        ProbeOutcome::Failed { kind, .. } if kind.is_prober_fault() => Decision::refused(
            content,
            Rule::ProberFault,
            Refusal::ProberFault { kind: *kind },
        ),
        ProbeOutcome::Failed { restart, .. } => match restart {
            RestartState::RecoveryMakingProgress { .. }
            | RestartState::Resetting
            | RestartState::StartingUp { .. } => Decision::new(content, Rule::Restarting),
            RestartState::NotRestarting | RestartState::RecoveryNotMakingProgress { .. } => {
                decide_failed(pair, guard)
            }
        },
    }
}

/// The check before a failover: a [`Rule::Failover`] decision stands only if the mirror it
/// would promote answered a PROBE from this observer as a mirror and the primary, probed again
/// at the same time, still did not answer; otherwise it becomes a refusal
/// ([`Rule::FailoverUnconfirmed`]) that writes and sends nothing. Other decisions pass
/// unchanged.
pub fn confirm_failover(decision: Decision, mirror_dbid: Dbid, check: &MirrorCheck) -> Decision {
    if decision.rule != Rule::Failover {
        return decision;
    }
    let refusal = match *check {
        MirrorCheck::PrimaryAnswersAgain { primary_dbid } => {
            Refusal::PrimaryAnswersAgain { primary_dbid }
        }
        MirrorCheck::AnswersAsMirror => return decision,
        MirrorCheck::AnswersAsPrimary => Refusal::MirrorNotAMirror { mirror_dbid },
        MirrorCheck::Unreachable { kind } => Refusal::MirrorUnreachable { mirror_dbid, kind },
    };
    Decision::refused(decision.content, Rule::FailoverUnconfirmed, refusal)
}

/// The shape decision row 6 leaves a pair in: the promoted mirror `p/u/n`, the lost primary
/// `m/d/n`. Row 3 (PROMOTE again) is only ever right from this shape; any other shape with a
/// primary answering as a mirror was made by someone else.
pub fn failover_shape(pair: &Pair) -> bool {
    pair.primary.state()
        == (SegmentState {
            role: Role::Primary,
            status: Status::Up,
            mode: Mode::NotInSync,
        })
        && pair.mirror.state()
            == (SegmentState {
                role: Role::Mirror,
                status: Status::Down,
                mode: Mode::NotInSync,
            })
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
        if !failover_shape(pair) {
            return Decision::refused(
                pair.content(),
                Rule::RoleConflict,
                Refusal::NotFailoverShape {
                    primary: p.state(),
                    mirror: m.state(),
                },
            );
        }
        let mut d = Decision::new(pair.content(), Rule::RePromote);
        d.message = Some(NextMessage {
            kind: MessageType::Promote,
            target: p.clone(),
        });
        d.expect = vec![(p.dbid, p.state()), (m.dbid, m.state())];
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

fn decide_failed(pair: &Pair, guard: &FailoverGuard) -> Decision {
    let (p, m) = (&pair.primary, &pair.mirror);
    // Greenplum checks only the mirror's mode (the catalog guarantees both rows agree and that
    // an in-sync mirror is up). We check all three so that a hand-edited or inconsistent
    // catalog can never lead to promoting a mirror that was not in sync.
    let promotable = m.mode == Mode::InSync && p.mode == Mode::InSync && m.status == Status::Up;
    if !promotable {
        return Decision::refused(
            pair.content(),
            Rule::DoubleFault,
            Refusal::NotInSync {
                mirror_dbid: m.dbid,
                mirror: m.state(),
            },
        );
    }
    if let FailoverGuard::Veto(reason) = guard {
        return Decision::refused(
            pair.content(),
            Rule::DoubleFault,
            Refusal::DriverVeto {
                reason: reason.clone(),
            },
        );
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
///
/// One addition: rows whose modes disagree (primary `s`, mirror `n`, which the in-core FTS
/// asserts never happens) are both rewritten to the mode the probe established. Left alone,
/// such a pair is reported healthy forever while a primary loss becomes a double fault.
fn update_configuration(
    p: &Segment,
    m: &Segment,
    new_role_p: Role,
    new_role_m: Role,
    in_sync: bool,
    primary_alive: bool,
    mirror_alive: bool,
) -> Vec<RowUpdate> {
    let mode_changes = in_sync != p.in_sync() || p.mode != m.mode;
    let mode = Mode::from_in_sync(in_sync);
    let mut updates = Vec::with_capacity(2);
    for (row, role, alive) in [
        (p, new_role_p, primary_alive),
        (m, new_role_m, mirror_alive),
    ] {
        let to = SegmentState {
            role,
            status: Status::from_alive(alive),
            mode,
        };
        // With matching modes a written row always changes; with mismatched ones the row that
        // already holds the reported mode is left alone.
        if (mode_changes || alive != row.is_up()) && to != row.state() {
            updates.push(RowUpdate::new(row, to));
        }
    }
    updates
}

/// Decides every probed pair of a cycle, with the driver's vetoes per content. Pairs without
/// an outcome (not probed, e.g. shutdown began) are left alone; contents whose rows cannot
/// form a pair are refused.
pub fn plan_cycle(
    config: &SegmentConfig,
    outcomes: &HashMap<ContentId, ProbeOutcome>,
    vetoes: &HashMap<ContentId, String>,
) -> Vec<Decision> {
    let set = config.probe_pairs();
    let mut plan: Vec<Decision> = set
        .pairs
        .iter()
        .filter_map(|pair| {
            let guard = match vetoes.get(&pair.content()) {
                Some(reason) => FailoverGuard::Veto(reason.clone()),
                None => FailoverGuard::Clear,
            };
            outcomes
                .get(&pair.content())
                .map(|outcome| decide_pair(pair, outcome, &guard))
        })
        .collect();
    plan.extend(
        set.refused
            .into_iter()
            .map(|b| Decision::bad_shape(b.content, b.reason)),
    );
    plan
}

/// Applies updates to a configuration snapshot, as a committed transaction would. Tests only:
/// the property tests replay decisions with it, and the cycle's in-memory test catalog commits
/// with it.
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
