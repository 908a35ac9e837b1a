//! The coordinator pair's failover rules (content -1), without I/O: what one probe round saw,
//! what this instance remembers and what etcd records in, a decision out; and the order of
//! the failover's steps as a small state machine, so "never promote without the fence step
//! succeeding" and "never act past the authority" are checked by property tests rather than
//! trusted to the shell (`src/coordinator/`).
//!
//! The rules are the segment table's row 6, made stricter because a coordinator failover is
//! rarer, costlier and cannot be undone by `gprecoverseg`: the standby must have been seen in
//! sync (synchronous, streaming, replay lag within the bound, durable commits) at the last
//! probe that reached the coordinator; no other observer may reach the coordinator; automatic
//! failover must be switched on; the instance must hold office, unpaused and before its act-by
//! deadline; no failover may have happened within the cooldown (the brake). On a Cloudberry
//! external-FTS cluster the pair is probed through the coordinator's FTS handler, whose reply
//! has no replay position (so no lag bound), and the promote-ready key must read `1`.

use serde::{Deserialize, Serialize};

pub mod adopt;
pub mod others;
pub mod rows;

/// How the coordinator answered this round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PrimarySeen {
    /// A trivial query ran. `writable`: it is out of recovery.
    Up { writable: bool },
    /// Every attempt of the round failed on the server's or the network's side.
    Lost,
    /// The attempts failed for a reason on this prober's side (its password, privileges,
    /// resolver, network stack): nothing is known about the coordinator.
    ProberFault,
}

/// How the standby answered this round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StandbySeen {
    /// In recovery (a standby). `can_promote`: its server has `pg_promote()` (PostgreSQL 12+)
    /// or a `promote_command` is configured.
    InRecovery {
        can_promote: bool,
    },
    /// Out of recovery: it is (or became) a primary.
    Writable,
    Unreachable,
}

/// The standby's replication state as the last probe that reached the coordinator saw it,
/// from the coordinator's side (`pg_stat_replication`) and the standby's (WAL receiver).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncSeen {
    /// Streaming, a synchronous standby (`sync`/`quorum`), commits wait for its flush
    /// (`synchronous_commit` on/remote_apply), and its WAL receiver streams.
    pub synchronous: bool,
    /// Bytes between the coordinator's current WAL position and the standby's replay position;
    /// None when the coordinator did not report it.
    pub replay_lag: Option<u64>,
    /// Why (not) in sync, for evidence.
    pub why: String,
}

/// Whether this instance may act right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Office {
    /// Leader, epoch known, pause key read and absent, before the act-by deadline.
    Acting,
    /// A follower, or a leader whose epoch is not known yet.
    NotLeader,
    /// `ftsctl pause` (or the pause key not read yet).
    Paused,
    /// The act-by deadline passed: the lease may have expired in etcd.
    PastActBy,
}

/// What the other observers say about the coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OthersSee {
    /// No other observer was asked (a single instance, or no peer confirmation available):
    /// this instance's retries decide.
    NotAsked,
    /// Every observer asked lost it too.
    AllLost,
    /// At least one other observer reaches it: the loss is ours, not the cluster's.
    SomeReach,
    /// Other observers were asked, none reaches it, but not every one confirmed the loss (no
    /// answer, no fresh observation, a prober fault, or the members registry unreadable).
    Unconfirmed,
}

/// How the pair was probed, which decides what "in sync" can be shown with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncSource {
    /// SQL on both servers: the walsender reports a replay lag, which must be within the bound.
    #[default]
    Sql,
    /// The coordinator's FTS handler (a Cloudberry external-FTS cluster, as `gpfts` probes
    /// it): the reply says whether the standby streams with synchronous replication on —
    /// every acknowledged commit was flushed on it — but carries no replay position, so the
    /// lag bound cannot be applied.
    FtsHandler,
}

/// The Cloudberry promote-ready key (`fts_standby_promote_ready_key`): an external-FTS
/// standby refuses PROMOTE unless it is `1`, and ftsd refuses to start (or resume) a
/// promotion it would refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromoteReady {
    /// Not a Cloudberry external-FTS cluster: there is no such key.
    #[default]
    NotRequired,
    /// The key reads `1`.
    Ready,
    /// The key is absent, not `1`, or could not be read.
    NotReady,
}

/// Everything one decision reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoordinatorView {
    pub auto_failover: bool,
    pub office: Office,
    pub primary: PrimarySeen,
    pub standby: StandbySeen,
    /// From the last probe round that reached the coordinator; None if none did.
    pub last_sync: Option<SyncSeen>,
    /// `coordinator.max_lag`.
    pub max_lag: u64,
    pub others: OthersSee,
    /// A failover happened within `coordinator.failover_cooldown`.
    pub braked: bool,
    /// etcd records a failover intent that has no outcome yet.
    pub pending_intent: bool,
    /// How the pair was probed.
    #[serde(default)]
    pub sync_source: SyncSource,
    /// The Cloudberry promote-ready key, where there is one.
    #[serde(default)]
    pub promote_ready: PromoteReady,
    /// etcd records which server acts. Without a record the configured addresses may be
    /// stale (a failover before etcd was rebuilt): nothing is failed over until the leader
    /// has recorded the acting server ([`adopt`]).
    #[serde(default = "recorded_by_default")]
    pub recorded: bool,
}

fn recorded_by_default() -> bool {
    true
}

/// Why no failover happens although the coordinator is lost (or an intent is pending).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Refusal {
    AutoFailoverOff,
    Paused,
    PastActBy,
    ProberFault,
    Braked,
    /// No probe round has reached the coordinator while this instance watched.
    NeverSeenInSync,
    NotInSync,
    LagTooHigh,
    OthersReachIt,
    /// The peers were asked and not every live member confirmed the loss.
    NotConfirmed,
    StandbyUnreachable,
    /// The standby is already out of recovery without a recorded intent: someone else
    /// promoted it; acting now would hide a possible second writable coordinator.
    StandbyAlreadyWritable,
    /// No `pg_promote()` on the standby's server and no `promote_command`.
    CannotPromote,
    /// An intent is pending but the old coordinator answers writable: the fence did not hold.
    OldCoordinatorWritable,
    /// Cloudberry: the promote-ready key is not `1`; the standby would ignore PROMOTE.
    PromoteNotReady,
    /// etcd records no acting server yet (a new cluster's first round, or etcd rebuilt):
    /// the configured primary may be a former coordinator.
    NotRecorded,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::AutoFailoverOff => "auto_failover_off",
            Refusal::Paused => "paused",
            Refusal::PastActBy => "past_act_by",
            Refusal::ProberFault => "prober_fault",
            Refusal::Braked => "braked",
            Refusal::NeverSeenInSync => "never_seen_in_sync",
            Refusal::NotInSync => "not_in_sync",
            Refusal::LagTooHigh => "lag_too_high",
            Refusal::OthersReachIt => "others_reach_it",
            Refusal::NotConfirmed => "not_confirmed",
            Refusal::StandbyUnreachable => "standby_unreachable",
            Refusal::StandbyAlreadyWritable => "standby_already_writable",
            Refusal::CannotPromote => "cannot_promote",
            Refusal::OldCoordinatorWritable => "old_coordinator_writable",
            Refusal::PromoteNotReady => "promote_not_ready",
            Refusal::NotRecorded => "not_recorded",
        }
    }

    /// Whether the refusal may be recorded in etcd (only an acting leader writes anything).
    pub fn recordable(self, office: Office) -> bool {
        office == Office::Acting
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What this instance remembers of the standby's sync state after a round that reached the
/// coordinator and saw `now`.
///
/// Normally `now`. One exception keeps an earlier in-sync observation: the coordinator has no
/// standby attached but still requires a synchronous one (`commits_wait`), so every commit
/// since waits and the standby still holds every acknowledged one. That is what a coordinator
/// killed with -9 looks like to a probe session forked just before: its walsender exits on the
/// postmaster's death before the session reads `pg_stat_replication`, and the standby would
/// otherwise be refused as "not in sync" for the very loss it should take over from. Nothing
/// else is kept: a standby attached but not synchronous, or commits that no longer wait, are
/// taken as seen.
pub fn remember_sync(prev: Option<&SyncSeen>, now: &SyncSeen, commits_wait: bool) -> SyncSeen {
    match prev {
        Some(p) if commits_wait && p.synchronous && !now.synchronous => SyncSeen {
            why: format!(
                "{}; since then no standby is attached and commits wait for one ({})",
                p.why.split("; since then").next().unwrap_or(&p.why),
                now.why
            ),
            ..p.clone()
        },
        _ => now.clone(),
    }
}

/// The decision of one round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CoordinatorDecision {
    /// The coordinator answers; nothing to do.
    Healthy,
    /// Not this instance's to act on (a follower); it only keeps watching.
    Standby,
    /// No failover, for this reason.
    Refuse(Refusal),
    /// Fence the coordinator, record the intent, promote the standby, verify, record.
    Failover,
    /// An intent is recorded and the standby is still in recovery: fence again (idempotent),
    /// promote, verify, record.
    Resume,
    /// An intent is recorded and the standby already left recovery: verify, record.
    Complete,
}

/// The failover rule; see the module documentation.
pub fn decide(v: &CoordinatorView) -> CoordinatorDecision {
    use CoordinatorDecision as D;
    if v.pending_intent {
        return decide_pending(v);
    }
    match v.primary {
        PrimarySeen::Up { .. } => return D::Healthy,
        PrimarySeen::ProberFault => return D::Refuse(Refusal::ProberFault),
        PrimarySeen::Lost => {}
    }
    if let Err(r) = may_act(v) {
        return r;
    }
    if !v.recorded {
        return D::Refuse(Refusal::NotRecorded);
    }
    if v.braked {
        return D::Refuse(Refusal::Braked);
    }
    let Some(sync) = &v.last_sync else {
        return D::Refuse(Refusal::NeverSeenInSync);
    };
    if !sync.synchronous {
        return D::Refuse(Refusal::NotInSync);
    }
    let lag_unknown_allowed = v.sync_source == SyncSource::FtsHandler;
    match sync.replay_lag {
        Some(lag) if lag > v.max_lag => return D::Refuse(Refusal::LagTooHigh),
        None if !lag_unknown_allowed => return D::Refuse(Refusal::LagTooHigh),
        _ => {}
    }
    match v.others {
        OthersSee::SomeReach => return D::Refuse(Refusal::OthersReachIt),
        OthersSee::Unconfirmed => return D::Refuse(Refusal::NotConfirmed),
        OthersSee::NotAsked | OthersSee::AllLost => {}
    }
    match v.standby {
        StandbySeen::Unreachable => D::Refuse(Refusal::StandbyUnreachable),
        StandbySeen::Writable => D::Refuse(Refusal::StandbyAlreadyWritable),
        StandbySeen::InRecovery { can_promote: false } => D::Refuse(Refusal::CannotPromote),
        StandbySeen::InRecovery { can_promote: true } if promote_refused(v) => {
            D::Refuse(Refusal::PromoteNotReady)
        }
        StandbySeen::InRecovery { can_promote: true } => D::Failover,
    }
}

/// Cloudberry: a standby refuses PROMOTE unless the promote-ready key is `1`.
fn promote_refused(v: &CoordinatorView) -> bool {
    v.promote_ready == PromoteReady::NotReady
}

/// The switch, the office, the pause and the deadline: the guards every action passes.
fn may_act(v: &CoordinatorView) -> Result<(), CoordinatorDecision> {
    use CoordinatorDecision as D;
    if !v.auto_failover {
        return Err(D::Refuse(Refusal::AutoFailoverOff));
    }
    match v.office {
        Office::Acting => Ok(()),
        Office::NotLeader => Err(D::Standby),
        Office::Paused => Err(D::Refuse(Refusal::Paused)),
        Office::PastActBy => Err(D::Refuse(Refusal::PastActBy)),
    }
}

/// A recorded intent: finish it, never start another. The sync rule was checked when it was
/// recorded (the standby's state since then is the promotion's own doing).
fn decide_pending(v: &CoordinatorView) -> CoordinatorDecision {
    use CoordinatorDecision as D;
    if let Err(r) = may_act(v) {
        return r;
    }
    match (v.standby, v.primary) {
        (StandbySeen::Writable, _) => D::Complete,
        (_, PrimarySeen::Up { writable: true }) => D::Refuse(Refusal::OldCoordinatorWritable),
        (StandbySeen::Unreachable, _) => D::Refuse(Refusal::StandbyUnreachable),
        (StandbySeen::InRecovery { can_promote: false }, _) => D::Refuse(Refusal::CannotPromote),
        // A PROMOTE the standby would ignore is not sent; the intent waits for the key.
        (StandbySeen::InRecovery { can_promote: true }, _) if promote_refused(v) => {
            D::Refuse(Refusal::PromoteNotReady)
        }
        (StandbySeen::InRecovery { can_promote: true }, _) => D::Resume,
    }
}

/// One step of a failover, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// Run `fence_command` (skipped without one: then every observer lost the coordinator).
    Fence,
    /// Record the intent in one fenced etcd transaction.
    RecordIntent,
    /// `pg_promote()` or `promote_command` on the standby.
    Promote,
    /// The standby left recovery and commits a write.
    Verify,
    /// Record the outcome (acting coordinator, history, evidence) in one fenced transaction.
    RecordOutcome,
    /// Done: the standby is the acting coordinator.
    Done,
    /// Stopped; `Stop` says where and why. An intent already recorded stays for the next
    /// round (or the next leader) to resume.
    Stopped(Stop),
}

/// Why a failover stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stop {
    /// The fence command failed: nothing was promoted, no intent recorded.
    FenceFailed,
    /// etcd refused the intent (not our leader key any more, or a concurrent record).
    IntentRejected,
    PromoteFailed,
    VerifyFailed,
    OutcomeRejected,
    /// Authority lapsed (office, pause or act-by) before the step.
    AuthorityLost,
}

/// Where a failover starts: a new one at the fence (or at recording the intent when there is
/// no fence command), a resumed one at the fence too (fencing is idempotent and the old
/// coordinator may have come back since), a completed promotion at the verification.
pub fn first_step(decision: CoordinatorDecision, fence_command: bool) -> Option<Step> {
    match decision {
        CoordinatorDecision::Failover if fence_command => Some(Step::Fence),
        CoordinatorDecision::Failover => Some(Step::RecordIntent),
        CoordinatorDecision::Resume if fence_command => Some(Step::Fence),
        CoordinatorDecision::Resume => Some(Step::Promote),
        CoordinatorDecision::Complete => Some(Step::Verify),
        _ => None,
    }
}

/// The step after `step`, given whether it succeeded and whether authority still holds for
/// the next one. `resuming`: the intent is recorded already, so the fence leads to the
/// promotion.
pub fn advance(step: Step, ok: bool, authority: bool, resuming: bool) -> Step {
    let stop = |why| Step::Stopped(why);
    let next = match (step, ok) {
        (Step::Fence, false) => return stop(Stop::FenceFailed),
        (Step::RecordIntent, false) => return stop(Stop::IntentRejected),
        (Step::Promote, false) => return stop(Stop::PromoteFailed),
        (Step::Verify, false) => return stop(Stop::VerifyFailed),
        (Step::RecordOutcome, false) => return stop(Stop::OutcomeRejected),
        (Step::Fence, true) if resuming => Step::Promote,
        (Step::Fence, true) => Step::RecordIntent,
        (Step::RecordIntent, true) => Step::Promote,
        (Step::Promote, true) => Step::Verify,
        (Step::Verify, true) => Step::RecordOutcome,
        (Step::RecordOutcome, true) => Step::Done,
        (s @ (Step::Done | Step::Stopped(_)), _) => return s,
    };
    // Every step that changes something outside this process needs authority; recording the
    // outcome is fenced by etcd itself, verifying changes nothing.
    match next {
        Step::RecordIntent | Step::Promote if !authority => stop(Stop::AuthorityLost),
        other => other,
    }
}

/// Something wrong with the pair as a whole, whatever the decision: raised once per episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PairAlarm {
    /// Both servers accept writes: split brain.
    DualWritable,
    /// Neither answering server accepts writes: the cluster cannot write.
    NoneWritable,
    /// Not exactly one VIP agent holds the address (the count).
    VipHolders(u32),
}

impl PairAlarm {
    /// The alarm's name in logs, hooks and `ftsd_alarms_total{rule}`.
    pub fn as_str(self) -> &'static str {
        match self {
            PairAlarm::DualWritable => "coordinator_dual_writable",
            PairAlarm::NoneWritable => "coordinator_not_writable",
            PairAlarm::VipHolders(_) => "vip_holders",
        }
    }

    /// One line for operators.
    pub fn describe(self) -> String {
        match self {
            PairAlarm::DualWritable => "both coordinator servers accept writes: split brain; stop the one etcd does not name as acting and rebuild it as a standby (gpinitstandby)".into(),
            PairAlarm::NoneWritable => "no coordinator server accepts writes".into(),
            PairAlarm::VipHolders(n) => format!("{n} hosts hold the coordinator VIP (exactly 1 expected)"),
        }
    }
}

/// The pair's alarms: exactly one server must accept writes (`writable`: how many of the
/// servers that answered do; None: this round knows nothing), and exactly one host must hold
/// the VIP (`vip_holders`: registered holders, None when unknown) — when no agent is
/// configured (`vip_expected` false), only a second holder is an alarm.
pub fn pair_alarms(
    writable: Option<u32>,
    vip_holders: Option<u32>,
    vip_expected: bool,
) -> Vec<PairAlarm> {
    let mut alarms = Vec::new();
    match writable {
        Some(0) => alarms.push(PairAlarm::NoneWritable),
        Some(1) | None => {}
        Some(_) => alarms.push(PairAlarm::DualWritable),
    }
    match vip_holders {
        Some(n) if n > 1 || (vip_expected && n == 0) => alarms.push(PairAlarm::VipHolders(n)),
        _ => {}
    }
    alarms
}

#[cfg(test)]
mod tests;
