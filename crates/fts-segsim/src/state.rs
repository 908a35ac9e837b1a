//! What one content's instances believe about themselves and each other, and how FTS messages and
//! operator actions change it.
//!
//! A content's primary and mirror live in one [`Group`] behind one lock, because every answer a
//! primary gives depends on its peer (is the mirror streaming? since when has it been gone?).
//! Everything here is synchronous and takes `now` as a parameter, so the rules can be unit-tested
//! without sleeping and the server never holds the lock across an await.

use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

use fts_wire::{ProbeReply, MSG_IN_RECOVERY, MSG_RESETTING, MSG_STARTING_UP};
use ftsd::model::Role;

/// FATAL text of a mirror that has been told to promote but has not finished: the segment then
/// refuses FTS connections as it no longer is a mirror (`docs/protocol.md`).
pub const MSG_BEING_PROMOTED: &str = "mirror is being promoted.";

/// `ERRCODE_CANNOT_CONNECT_NOW`, used by every "not now" startup rejection.
pub const SQLSTATE_CANNOT_CONNECT_NOW: &str = "57P03";

/// How far the simulated replay position moves per connection while "making progress".
const LSN_STEP: u64 = 0x1_0000;
const INITIAL_LSN: u64 = 0x0300_0060;

/// A fault injected into one instance. One at a time; setting another replaces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fault", rename_all = "kebab-case")]
pub enum Fault {
    /// Not listening at all: connects are refused, the instance is dead to its peer.
    Down,
    /// Accepts connections (the kernel does) but never answers, like a SIGSTOPped postmaster.
    /// Clearing it resumes the queued connections.
    Hang,
    /// Answers every query only after `delay`.
    Slow {
        #[serde(with = "humantime_serde")]
        delay: Duration,
    },
    /// Down for `down_for`, then (optionally) in crash recovery for `recovery_for`, then back in
    /// the role it had.
    #[serde(alias = "crash_restart")]
    CrashRestart {
        #[serde(with = "humantime_serde", alias = "delay")]
        down_for: Duration,
        #[serde(
            default,
            with = "humantime_serde",
            skip_serializing_if = "Option::is_none"
        )]
        recovery_for: Option<Duration>,
    },
    /// Startup rejected as "in recovery mode", replay position advancing per connection.
    #[serde(alias = "recovery_progress")]
    RecoveryProgress,
    /// Startup rejected as "in recovery mode", replay position constant.
    #[serde(alias = "recovery_stuck")]
    RecoveryStuck,
    /// Startup rejected as "starting up" (advancing); a mirror lets FTS through like the real one.
    #[serde(alias = "starting_up")]
    StartingUp,
    /// Startup rejected as "resetting" (postmaster reinitialising after a child crash).
    Resetting,
    /// Mirror alive but its walreceiver is not connected: the primary reports it down.
    #[serde(alias = "mirror_disconnected")]
    MirrorDisconnected,
    /// Mirror connected but catching up: up, not in sync.
    Lagging,
    /// PROBE fails the disk I/O check.
    #[serde(alias = "disk_error")]
    DiskError,
    /// Query replies are replaced by a malformed variant.
    Garbage { variant: GarbageVariant },
}

impl Fault {
    /// Short name as used on the command line and in the JSON `fault` tag.
    pub fn name(&self) -> &'static str {
        match self {
            Fault::Down => "down",
            Fault::Hang => "hang",
            Fault::Slow { .. } => "slow",
            Fault::CrashRestart { .. } => "crash-restart",
            Fault::RecoveryProgress => "recovery-progress",
            Fault::RecoveryStuck => "recovery-stuck",
            Fault::StartingUp => "starting-up",
            Fault::Resetting => "resetting",
            Fault::MirrorDisconnected => "mirror-disconnected",
            Fault::Lagging => "lagging",
            Fault::DiskError => "disk-error",
            Fault::Garbage { .. } => "garbage",
        }
    }

    /// Name plus parameter, for tables and logs.
    pub fn describe(&self) -> String {
        match self {
            Fault::Slow { delay } => format!("slow {}", humantime::format_duration(*delay)),
            Fault::CrashRestart {
                down_for,
                recovery_for,
            } => match recovery_for {
                Some(r) => format!(
                    "crash-restart {} +recovery {}",
                    humantime::format_duration(*down_for),
                    humantime::format_duration(*r)
                ),
                None => format!("crash-restart {}", humantime::format_duration(*down_for)),
            },
            Fault::Garbage { variant } => format!("garbage {}", variant.as_str()),
            other => other.name().to_string(),
        }
    }

    fn breaks_replication(&self) -> bool {
        matches!(
            self,
            Fault::Down
                | Fault::Hang
                | Fault::CrashRestart { .. }
                | Fault::RecoveryProgress
                | Fault::RecoveryStuck
                | Fault::StartingUp
                | Fault::Resetting
                | Fault::MirrorDisconnected
        )
    }

    /// Faults that stop the process; a pending promotion dies with it.
    fn kills_process(&self) -> bool {
        matches!(self, Fault::Down | Fault::CrashRestart { .. })
    }
}

/// Hostile reply shapes a prober must reject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GarbageVariant {
    /// Four columns instead of five.
    #[serde(alias = "wrong-columns")]
    WrongColumns,
    /// Column type oid 25 (text) instead of 16 (bool).
    #[serde(alias = "wrong-type")]
    WrongType,
    /// Values are the text `t`/`f` instead of raw 0x01/0x00 (note `f` is non-zero).
    #[serde(alias = "text-bool")]
    TextBool,
    /// Random bytes instead of any protocol message, then close.
    #[serde(alias = "random-bytes")]
    RandomBytes,
    /// A message header claiming 0x7fffffff bytes, then silence until the client gives up.
    #[serde(alias = "giant-length")]
    GiantLength,
    /// Two DataRows instead of one.
    #[serde(alias = "two-rows")]
    TwoRows,
}

impl GarbageVariant {
    pub const ALL: [GarbageVariant; 6] = [
        GarbageVariant::WrongColumns,
        GarbageVariant::WrongType,
        GarbageVariant::TextBool,
        GarbageVariant::RandomBytes,
        GarbageVariant::GiantLength,
        GarbageVariant::TwoRows,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            GarbageVariant::WrongColumns => "wrong_columns",
            GarbageVariant::WrongType => "wrong_type",
            GarbageVariant::TextBool => "text_bool",
            GarbageVariant::RandomBytes => "random_bytes",
            GarbageVariant::GiantLength => "giant_length",
            GarbageVariant::TwoRows => "two_rows",
        }
    }

    /// Accepts `wrong_columns` and `wrong-columns`.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.replace('-', "_");
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// Life-cycle position of a crash-restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Running,
    /// Process gone (crash-restart's down part).
    Crashed,
    /// Back, replaying WAL: rejects startup as "in recovery mode", advancing.
    Recovering,
}

/// What a new connection meets before authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Nobody is there; the socket was accepted in a race with closing the listener.
    Refuse,
    Hang,
    Fatal {
        sqlstate: &'static str,
        message: &'static str,
        detail: Option<String>,
    },
    /// Proceed to authentication in this role (fixed for the connection's life, like `am_mirror`).
    Open {
        role: Role,
    },
}

/// What an established connection does with its next query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serve {
    /// The process died under the connection.
    Close,
    Hang,
    Answer {
        delay: Option<Duration>,
        garbage: Option<GarbageVariant>,
        disk_error: bool,
    },
}

/// A delayed state change the caller must schedule; `generation` makes it a no-op if an operator
/// action intervened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timer {
    pub after: Duration,
    pub kind: TimerKind,
    pub generation: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerKind {
    CrashOver,
    RecoveryOver,
    PromotionDone,
}

/// Outcome of a PROMOTE, for logging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromoteOutcome {
    Promoted,
    Scheduled,
    Ignored,
}

/// One instance's mutable state.
#[derive(Debug, Clone)]
pub struct Member {
    pub role: Role,
    /// `synchronous_standby_names` is `*` (only meaningful on a primary).
    pub syncrep: bool,
    pub fault: Option<Fault>,
    pub phase: Phase,
    /// A PROMOTE was accepted and takes effect at this time.
    pub promote_at: Option<Instant>,
    /// `PMAcceptingConnectionsStartTime`.
    pub accepting_since: Instant,
    /// When this primary's mirror stopped streaming (`replica_disconnected_at`); None while
    /// streaming or never disconnected.
    pub repl_lost_at: Option<Instant>,
    pub lsn: u64,
    /// Bumped by operator actions and crashes to void pending timers.
    pub generation: u64,
}

impl Member {
    fn new(role: Role, now: Instant) -> Self {
        Member {
            role,
            syncrep: false,
            fault: None,
            phase: Phase::Running,
            promote_at: None,
            accepting_since: now,
            repl_lost_at: None,
            lsn: INITIAL_LSN,
            generation: 0,
        }
    }

    /// Whether a TCP listener should exist for this instance.
    pub fn listening(&self) -> bool {
        self.phase != Phase::Crashed && self.fault != Some(Fault::Down)
    }

    /// Alive in the operator's sense: a process that would answer.
    pub fn alive(&self) -> bool {
        self.listening() && self.fault != Some(Fault::Hang)
    }

    fn restarted(&mut self, now: Instant) {
        self.phase = Phase::Running;
        self.accepting_since = now;
        self.repl_lost_at = None;
    }
}

/// A content: the preferred primary at slot 0 and, when mirrored, the preferred mirror at slot 1.
#[derive(Debug, Clone)]
pub struct Group {
    pub members: Vec<Member>,
}

impl Group {
    pub fn pair(now: Instant) -> Self {
        Group {
            members: vec![
                Member::new(Role::Primary, now),
                Member::new(Role::Mirror, now),
            ],
        }
    }

    pub fn single(now: Instant) -> Self {
        Group {
            members: vec![Member::new(Role::Primary, now)],
        }
    }

    fn peer(&self, i: usize) -> Option<usize> {
        (self.members.len() == 2).then_some(1 - i)
    }

    fn streams_as_mirror(&self, j: usize) -> bool {
        let m = &self.members[j];
        m.role == Role::Mirror
            && m.promote_at.is_none()
            && m.phase == Phase::Running
            && !m.fault.as_ref().is_some_and(Fault::breaks_replication)
    }

    /// `(is_mirror_up, is_in_sync)` as primary `i` sees its mirror; None if `i` is not a primary.
    pub fn mirror_status(&self, i: usize) -> Option<(bool, bool)> {
        let me = &self.members[i];
        if me.role != Role::Primary {
            return None;
        }
        let Some(j) = self.peer(i) else {
            return Some((false, false));
        };
        let up = self.streams_as_mirror(j) && me.fault != Some(Fault::MirrorDisconnected);
        let lagging =
            me.fault == Some(Fault::Lagging) || self.members[j].fault == Some(Fault::Lagging);
        Some((up, up && !lagging))
    }

    /// The mirror-down grace rule (`docs/protocol.md`, "The mirror-down grace period"), in its
    /// Cloudberry form without the reconnect-attempt counter.
    fn request_retry(&self, i: usize, now: Instant, grace: Duration) -> bool {
        let me = &self.members[i];
        let since = match me.repl_lost_at {
            Some(t) if t > me.accepting_since => t,
            _ => me.accepting_since,
        };
        now.saturating_duration_since(since) < grace
    }

    fn primary_reply(&self, i: usize, now: Instant, grace: Duration) -> ProbeReply {
        let (up, in_sync) = self.mirror_status(i).unwrap_or((false, false));
        ProbeReply {
            is_mirror_up: up,
            is_in_sync: in_sync,
            is_syncrep_enabled: self.members[i].syncrep,
            is_role_mirror: false,
            request_retry: !up && self.request_retry(i, now, grace),
        }
    }

    fn mirror_reply() -> ProbeReply {
        ProbeReply {
            is_role_mirror: true,
            ..ProbeReply::default()
        }
    }

    /// Runs a state change and keeps each primary's "mirror lost at" time current: set on the
    /// transition from streaming to not, cleared when streaming again.
    fn mutate<R>(&mut self, now: Instant, f: impl FnOnce(&mut Self) -> R) -> R {
        let before: Vec<Option<(bool, bool)>> = (0..self.members.len())
            .map(|i| self.mirror_status(i))
            .collect();
        let r = f(self);
        for (i, was) in before.into_iter().enumerate() {
            match self.mirror_status(i) {
                Some((true, _)) => self.members[i].repl_lost_at = None,
                Some((false, _)) if matches!(was, Some((true, _))) => {
                    self.members[i].repl_lost_at = Some(now)
                }
                _ => {}
            }
        }
        r
    }

    /// PROBE: a mirror only says so; a primary reports its mirror and, like
    /// `HandleFtsWalRepProbe`, turns sync replication on when the mirror is up.
    pub fn probe(&mut self, i: usize, now: Instant, grace: Duration) -> (ProbeReply, bool) {
        if self.members[i].role == Role::Mirror {
            return (Self::mirror_reply(), false);
        }
        let (up, _) = self.mirror_status(i).unwrap_or((false, false));
        let switched = up && !self.members[i].syncrep;
        if switched {
            self.members[i].syncrep = true;
        }
        (self.primary_reply(i, now, grace), switched)
    }

    /// SYNCREP_OFF: unset syncrep, reply with fresh mirror status.
    pub fn syncrep_off(&mut self, i: usize, now: Instant, grace: Duration) -> ProbeReply {
        if self.members[i].role == Role::Mirror {
            return Self::mirror_reply();
        }
        self.members[i].syncrep = false;
        self.primary_reply(i, now, grace)
    }

    /// PROMOTE: idempotent; only a running mirror without a pending promotion acts on it.
    pub fn promote(
        &mut self,
        i: usize,
        now: Instant,
        delay: Duration,
    ) -> (ProbeReply, PromoteOutcome, Option<Timer>) {
        let m = &self.members[i];
        let eligible =
            m.role == Role::Mirror && m.promote_at.is_none() && m.phase == Phase::Running;
        let (outcome, timer) = if !eligible {
            (PromoteOutcome::Ignored, None)
        } else if delay.is_zero() {
            self.mutate(now, |g| g.finish_promotion(i, now));
            (PromoteOutcome::Promoted, None)
        } else {
            let m = &mut self.members[i];
            // An absurd delay means "never": keep a marker rather than overflow.
            m.promote_at = Some(now.checked_add(delay).unwrap_or(now));
            (
                PromoteOutcome::Scheduled,
                Some(Timer {
                    after: delay,
                    kind: TimerKind::PromotionDone,
                    generation: m.generation,
                }),
            )
        };
        let reply = ProbeReply {
            is_role_mirror: self.members[i].role == Role::Mirror,
            ..ProbeReply::default()
        };
        (reply, outcome, timer)
    }

    fn finish_promotion(&mut self, i: usize, now: Instant) {
        let m = &mut self.members[i];
        m.role = Role::Primary;
        m.syncrep = false;
        m.promote_at = None;
        m.accepting_since = now;
        m.repl_lost_at = None;
    }

    /// Applies a timer scheduled earlier; returns the follow-up timer, if any.
    pub fn fire(
        &mut self,
        i: usize,
        kind: TimerKind,
        generation: u64,
        now: Instant,
    ) -> Option<Timer> {
        if self.members[i].generation != generation {
            return None;
        }
        self.mutate(now, |g| {
            let m = &mut g.members[i];
            match kind {
                TimerKind::PromotionDone => {
                    if m.promote_at.is_some() {
                        g.finish_promotion(i, now);
                    }
                    None
                }
                TimerKind::CrashOver if m.phase == Phase::Crashed => {
                    let recovery = match m.fault {
                        Some(Fault::CrashRestart { recovery_for, .. }) => recovery_for,
                        _ => None,
                    };
                    match recovery {
                        Some(after) if !after.is_zero() => {
                            m.phase = Phase::Recovering;
                            Some(Timer {
                                after,
                                kind: TimerKind::RecoveryOver,
                                generation,
                            })
                        }
                        _ => {
                            m.fault = None;
                            m.restarted(now);
                            None
                        }
                    }
                }
                TimerKind::RecoveryOver if m.phase == Phase::Recovering => {
                    m.fault = None;
                    m.restarted(now);
                    None
                }
                _ => None,
            }
        })
    }

    /// Injects a fault (replacing any other).
    pub fn set_fault(&mut self, i: usize, fault: Fault, now: Instant) -> Option<Timer> {
        self.mutate(now, |g| {
            let m = &mut g.members[i];
            let was_dead = !m.listening() || m.phase != Phase::Running;
            m.generation += 1;
            if fault.kills_process() {
                m.promote_at = None;
            }
            let timer = match &fault {
                Fault::CrashRestart { down_for, .. } => {
                    m.phase = Phase::Crashed;
                    Some(Timer {
                        after: *down_for,
                        kind: TimerKind::CrashOver,
                        generation: m.generation,
                    })
                }
                _ => {
                    if was_dead && fault != Fault::Down {
                        m.restarted(now);
                    }
                    m.phase = Phase::Running;
                    None
                }
            };
            m.fault = Some(fault);
            timer
        })
    }

    /// Removes the fault; a dead instance starts again in its current role.
    pub fn clear(&mut self, i: usize, now: Instant) {
        self.mutate(now, |g| {
            let m = &mut g.members[i];
            let was_dead = !m.listening() || m.phase != Phase::Running;
            m.generation += 1;
            m.fault = None;
            if was_dead {
                m.restarted(now);
            }
        })
    }

    /// `gprecoverseg`: bring `i` back as a streaming, in-sync mirror of the acting primary, or,
    /// if `i` is itself the acting primary over a mirror (or has no peer), just restart it.
    pub fn recover(&mut self, i: usize, now: Instant) -> Result<(), String> {
        let peer = self.peer(i);
        let peer_role = peer.map(|j| (self.members[j].role, self.members[j].promote_at.is_some()));
        let new_role = match peer_role {
            None => self.members[i].role,
            Some((Role::Primary, false)) => Role::Mirror,
            Some((Role::Mirror, _)) if self.members[i].role == Role::Primary => Role::Primary,
            Some(_) => {
                return Err("the content has no acting primary to recover against".to_string())
            }
        };
        self.mutate(now, |g| {
            let m = &mut g.members[i];
            m.generation += 1;
            m.role = new_role;
            m.fault = None;
            m.promote_at = None;
            if new_role == Role::Mirror {
                m.syncrep = false;
            }
            m.restarted(now);
            if let Some(j) = peer {
                let p = &mut g.members[j];
                if matches!(p.fault, Some(Fault::MirrorDisconnected | Fault::Lagging)) {
                    p.fault = None;
                }
            }
        });
        Ok(())
    }

    /// Startup gate for a new connection; advances the replay position where it "progresses".
    pub fn gate(&mut self, i: usize) -> Gate {
        let m = &mut self.members[i];
        let recovering = |m: &mut Member, message: &'static str, advance: bool| {
            if advance {
                m.lsn += LSN_STEP;
            }
            Gate::Fatal {
                sqlstate: SQLSTATE_CANNOT_CONNECT_NOW,
                message,
                detail: Some(format!(
                    "{} {}",
                    fts_wire::DETAIL_LAST_REPLAYED,
                    fts_wire::format_lsn(m.lsn)
                )),
            }
        };
        match (m.phase, &m.fault) {
            (Phase::Crashed, _) | (_, Some(Fault::Down)) => Gate::Refuse,
            (_, Some(Fault::Hang)) => Gate::Hang,
            (Phase::Recovering, _) | (_, Some(Fault::RecoveryProgress)) => {
                recovering(m, MSG_IN_RECOVERY, true)
            }
            (_, Some(Fault::RecoveryStuck)) => recovering(m, MSG_IN_RECOVERY, false),
            (_, Some(Fault::StartingUp)) if m.role == Role::Primary => {
                recovering(m, MSG_STARTING_UP, true)
            }
            (_, Some(Fault::Resetting)) => Gate::Fatal {
                sqlstate: SQLSTATE_CANNOT_CONNECT_NOW,
                message: MSG_RESETTING,
                detail: None,
            },
            _ if m.promote_at.is_some() => Gate::Fatal {
                sqlstate: SQLSTATE_CANNOT_CONNECT_NOW,
                message: MSG_BEING_PROMOTED,
                detail: None,
            },
            _ => Gate::Open { role: m.role },
        }
    }

    /// What an established connection does with a query now. Anything that would reject a new
    /// connection (other than a hang or a pending promotion) means the backend was killed.
    pub fn serve(&self, i: usize) -> Serve {
        let m = &self.members[i];
        if !m.listening() || m.phase != Phase::Running {
            return Serve::Close;
        }
        match &m.fault {
            Some(Fault::Hang) => Serve::Hang,
            Some(Fault::RecoveryProgress | Fault::RecoveryStuck | Fault::Resetting) => Serve::Close,
            Some(Fault::StartingUp) if m.role == Role::Primary => Serve::Close,
            f => Serve::Answer {
                delay: match f {
                    Some(Fault::Slow { delay }) => Some(*delay),
                    _ => None,
                },
                garbage: match f {
                    Some(Fault::Garbage { variant }) => Some(*variant),
                    _ => None,
                },
                disk_error: f == &Some(Fault::DiskError),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(30);

    fn secs(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    #[test]
    fn probe_switches_syncrep_on_only_when_mirror_up() {
        let t0 = Instant::now();
        let mut g = Group::pair(t0);
        let (r, switched) = g.probe(0, t0, GRACE);
        assert!(switched);
        assert_eq!(r.to_bytes(), [1, 1, 1, 0, 0]);
        let (_, switched) = g.probe(0, t0, GRACE);
        assert!(!switched, "already on");

        let r = g.syncrep_off(0, t0, GRACE);
        assert_eq!(r.to_bytes(), [1, 1, 0, 0, 0]);

        g.set_fault(1, Fault::Down, t0);
        let (r, switched) = g.probe(0, t0, GRACE);
        assert!(!switched);
        assert!(!r.is_mirror_up && !r.is_syncrep_enabled);

        let (r, _) = g.probe(1, t0, GRACE);
        assert_eq!(
            r.to_bytes(),
            [0, 0, 0, 1, 0],
            "mirror answers only is_role_mirror"
        );
    }

    #[test]
    fn request_retry_follows_grace_from_disconnect_or_start() {
        let t0 = Instant::now();
        let mut g = Group::pair(t0);
        // Mirror goes away at t0+100: grace runs from then, not from start.
        g.set_fault(1, Fault::MirrorDisconnected, secs(t0, 100));
        let (r, _) = g.probe(0, secs(t0, 129), GRACE);
        assert!(!r.is_mirror_up && r.request_retry);
        let (r, _) = g.probe(0, secs(t0, 130), GRACE);
        assert!(!r.request_retry, "delta == grace is outside the window");

        // Reconnect then lose it again: the clock restarts.
        g.clear(1, secs(t0, 200));
        assert_eq!(g.members[0].repl_lost_at, None);
        g.set_fault(1, Fault::Down, secs(t0, 300));
        let (r, _) = g.probe(0, secs(t0, 310), GRACE);
        assert!(r.request_retry);

        // A primary that just started: grace counts from its start even if the mirror left earlier.
        let mut g = Group::pair(t0);
        g.set_fault(1, Fault::Down, t0);
        g.set_fault(
            0,
            Fault::CrashRestart {
                down_for: Duration::from_secs(5),
                recovery_for: None,
            },
            secs(t0, 50),
        );
        let gen = g.members[0].generation;
        assert_eq!(g.fire(0, TimerKind::CrashOver, gen, secs(t0, 55)), None);
        let (r, _) = g.probe(0, secs(t0, 60), GRACE);
        assert!(r.request_retry);
        let (r, _) = g.probe(0, secs(t0, 85), GRACE);
        assert!(!r.request_retry);

        // Lagging: up, so no retry computed, but not in sync.
        let mut g = Group::pair(t0);
        g.set_fault(1, Fault::Lagging, t0);
        let (r, _) = g.probe(0, t0, GRACE);
        assert_eq!(r.to_bytes(), [1, 0, 1, 0, 0]);
    }

    #[test]
    fn promote_is_idempotent_and_delayed_promotion_is_observable() {
        let t0 = Instant::now();
        let mut g = Group::pair(t0);
        let (r, outcome, timer) = g.promote(0, t0, Duration::ZERO);
        assert_eq!(
            (outcome, timer, r.is_role_mirror),
            (PromoteOutcome::Ignored, None, false)
        );

        let (r, outcome, _) = g.promote(1, t0, Duration::ZERO);
        assert_eq!(
            (outcome, r.is_role_mirror),
            (PromoteOutcome::Promoted, false)
        );
        assert_eq!(g.members[1].role, Role::Primary);
        let (r, outcome, _) = g.promote(1, t0, Duration::ZERO);
        assert_eq!(
            (outcome, r.is_role_mirror),
            (PromoteOutcome::Ignored, false)
        );
        // Old primary is still a primary: the new one sees no mirror, retry within grace of promotion.
        let (r, _) = g.probe(1, secs(t0, 1), GRACE);
        assert_eq!(r.to_bytes(), [0, 0, 0, 0, 1]);

        let mut g = Group::pair(t0);
        let (r, outcome, timer) = g.promote(1, t0, Duration::from_secs(2));
        assert_eq!(
            (outcome, r.is_role_mirror),
            (PromoteOutcome::Scheduled, true)
        );
        assert!(matches!(
            g.gate(1),
            Gate::Fatal {
                message: MSG_BEING_PROMOTED,
                ..
            }
        ));
        let (_, again, _) = g.promote(1, t0, Duration::from_secs(2));
        assert_eq!(again, PromoteOutcome::Ignored);
        let timer = timer.unwrap();
        g.fire(1, timer.kind, timer.generation, secs(t0, 2));
        assert_eq!(g.members[1].role, Role::Primary);
        assert_eq!(
            g.gate(1),
            Gate::Open {
                role: Role::Primary
            }
        );
    }

    #[test]
    fn recover_makes_old_primary_a_streaming_mirror() {
        let t0 = Instant::now();
        let mut g = Group::pair(t0);
        g.set_fault(0, Fault::Down, t0);
        g.promote(1, t0, Duration::ZERO);
        assert_eq!(g.mirror_status(1), Some((false, false)));
        g.recover(0, secs(t0, 5)).unwrap();
        assert_eq!(g.members[0].role, Role::Mirror);
        assert_eq!(g.mirror_status(1), Some((true, true)));
        assert!(
            g.recover(1, t0).is_ok(),
            "acting primary over a mirror just restarts"
        );
        assert_eq!(g.members[1].role, Role::Primary);
    }

    #[test]
    fn recovery_lsn_progresses_or_not() {
        let t0 = Instant::now();
        let mut g = Group::pair(t0);
        g.set_fault(0, Fault::RecoveryProgress, t0);
        let lsn = |gate: Gate| match gate {
            Gate::Fatal {
                detail: Some(d), ..
            } => fts_wire::parse_last_replayed(&d).unwrap(),
            other => panic!("{other:?}"),
        };
        let a = lsn(g.gate(0));
        let b = lsn(g.gate(0));
        assert!(b > a);
        g.set_fault(0, Fault::RecoveryStuck, t0);
        assert_eq!(lsn(g.gate(0)), lsn(g.gate(0)));
        // A mirror lets FTS through while starting up.
        g.set_fault(1, Fault::StartingUp, t0);
        assert_eq!(g.gate(1), Gate::Open { role: Role::Mirror });
    }

    #[test]
    fn fault_json_shapes() {
        let f: Fault = serde_json::from_str(r#"{"fault":"slow","delay":"2s"}"#).unwrap();
        assert_eq!(
            f,
            Fault::Slow {
                delay: Duration::from_secs(2)
            }
        );
        let f: Fault =
            serde_json::from_str(r#"{"fault":"garbage","variant":"wrong_columns"}"#).unwrap();
        assert_eq!(
            f,
            Fault::Garbage {
                variant: GarbageVariant::WrongColumns
            }
        );
        let f: Fault =
            serde_json::from_str(r#"{"fault":"crash-restart","down_for":"5s"}"#).unwrap();
        assert_eq!(f.describe(), "crash-restart 5s");
        assert!(serde_json::from_str::<Fault>(r#"{"fault":"nope"}"#).is_err());
        assert_eq!(
            GarbageVariant::parse("giant-length"),
            Some(GarbageVariant::GiantLength)
        );
    }
}
