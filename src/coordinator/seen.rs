//! What one round saw of the pair, whichever way it was probed (over SQL, [`super::probe`];
//! through the coordinator's FTS handler on Cloudberry, [`super::cloudberry`]): the inputs
//! of the decision and of the pair's alarms, and the raw rounds for the evidence.

use serde::Serialize;

use super::probe::{judge_sync, PrimaryState, Round, StandbyState};
use crate::core::coordinator::{PromoteReady, SyncSeen, SyncSource};

/// A server that answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Answer {
    /// In recovery (SQL), or answering as a mirror (FTS `is_role_mirror`).
    pub in_recovery: bool,
    /// `default_transaction_read_only` is on (SQL only; the FTS reply cannot tell).
    pub read_only: bool,
}

impl Answer {
    /// Out of recovery and not read-only: it accepts writes.
    pub fn writable(self) -> bool {
        !self.in_recovery && !self.read_only
    }
}

/// The acting coordinator this round.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PrimarySide {
    pub answer: Option<Answer>,
    /// Every attempt failed, the last one on this prober's side.
    pub prober_fault: bool,
    /// Every attempt failed, the last one with "starting up" / "in recovery" (57P03).
    pub restarting: bool,
}

/// The standby this round.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StandbySide {
    pub answer: Option<Answer>,
    /// It can be promoted the way this probe path promotes.
    pub can_promote: bool,
    /// Its server has `pg_promote()` (SQL path).
    pub has_pg_promote: bool,
    pub replay_lsn: Option<String>,
}

/// One round of the pair.
#[derive(Debug, Clone, Serialize)]
pub struct Seen {
    pub primary: PrimarySide,
    pub standby: StandbySide,
    /// The standby's sync state, when the acting coordinator answered.
    pub sync_now: Option<SyncSeen>,
    /// The coordinator answered with no standby attached while still requiring a synchronous
    /// one: its commits wait ([`crate::core::coordinator::remember_sync`]).
    pub commits_wait: bool,
    pub source: SyncSource,
    pub promote_ready: PromoteReady,
    /// The raw rounds (every attempt, its class and timing), and on Cloudberry the
    /// promote-ready key as read.
    pub primary_round: serde_json::Value,
    pub standby_round: serde_json::Value,
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub promote_ready_key: serde_json::Value,
}

impl Seen {
    /// The SQL rounds of both servers.
    pub fn from_sql(
        p: &Round<PrimaryState>,
        s: &Round<StandbyState>,
        promote_command: bool,
    ) -> Seen {
        Seen {
            primary: PrimarySide {
                answer: p.state.as_ref().map(|ps| Answer {
                    in_recovery: ps.in_recovery,
                    read_only: ps.read_only,
                }),
                prober_fault: p.prober_fault(),
                restarting: p.restarting(),
            },
            standby: StandbySide {
                answer: s.state.as_ref().map(|st| Answer {
                    in_recovery: st.in_recovery,
                    read_only: st.read_only,
                }),
                can_promote: s
                    .state
                    .as_ref()
                    .is_some_and(|st| st.has_pg_promote() || promote_command),
                has_pg_promote: s.state.as_ref().is_some_and(StandbyState::has_pg_promote),
                replay_lsn: s.state.as_ref().and_then(|st| st.replay_lsn.clone()),
            },
            sync_now: p.state.as_ref().map(|ps| judge_sync(ps, s.state.as_ref())),
            commits_wait: p
                .state
                .as_ref()
                .is_some_and(PrimaryState::commits_wait_for_a_standby),
            source: SyncSource::Sql,
            promote_ready: PromoteReady::NotRequired,
            primary_round: serde_json::to_value(p).unwrap_or_default(),
            standby_round: serde_json::to_value(s).unwrap_or_default(),
            promote_ready_key: serde_json::Value::Null,
        }
    }

    /// Servers that answered writable, as `[acting, other]` (None: no answer).
    pub fn writable(&self) -> [Option<bool>; 2] {
        [
            self.primary.answer.map(Answer::writable),
            self.standby.answer.map(Answer::writable),
        ]
    }
}
