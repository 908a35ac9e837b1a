//! How a message reaches a segment, below the engine: the [`SegmentDriver`] trait, the FTS
//! wire driver for Greenplum/Cloudberry segments ([`fts`]) and the driver for plain
//! PostgreSQL primary/standby pairs ([`postgres`]). The engine only sees the trait; which
//! driver runs is chosen from the configuration by the daemon's wiring ([`from_config`]).

pub mod fts;
pub mod postgres;

use std::future::Future;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::{Config, ProbeDriver};
use crate::model::{ContentId, Dbid, Pair, Segment};
use crate::wire::client::Credentials;
use crate::wire::failure::AttemptError;
use crate::wire::{MessageType, ProbeReply};

pub use fts::FtsWireDriver;
pub use postgres::{PgDriver, PgDriverSettings};

/// Asked before every server change a driver makes on its own (see [`SegmentDriver::upkeep`]):
/// `None` stops it; `Some(end)` lets it start, and it must be over by `end` when that is set
/// (the act-by deadline of the leader's lease; unset in single-instance mode).
pub type AuthorityGate<'a> = &'a (dyn Fn() -> Option<Option<Instant>> + Send + Sync);

/// A server change a driver wants that is not a message of the decision table. The engine
/// makes it only as the acting leader (see [`SegmentDriver::upkeep`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "upkeep", rename_all = "snake_case")]
pub enum Upkeep {
    /// Switch synchronous replication back on at the primary `dbid`: its standby streams
    /// again after a SYNCREP_OFF (what a Greenplum primary's probe handler does itself).
    RestoreSyncrep { dbid: Dbid, names: String },
    /// Make `dbid`, a row the catalog lists as a mirror, stop accepting writes: it answered
    /// as a writable primary (a former primary back after a failover).
    Fence { dbid: Dbid, why: String },
    /// Make `dbid`, the catalog primary, writable again: it answered read-only at the database
    /// level with its standby streaming in sync and no switchover running here — a switchover
    /// interrupted before the catalog recorded the new primary (nothing was promoted).
    RestoreWrites { dbid: Dbid },
}

/// What an alarm is about; the metric label and the hook's argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmKind {
    /// A standby streams but `synchronous_standby_names` does not name it, for longer than
    /// the grace: commits wait forever and the pair is never in sync.
    SyncNamesMismatch,
    /// A row the catalog lists as a mirror answers as a writable primary.
    WritableDemotedPrimary,
    /// That server was fenced (read-only, client sessions ended).
    Fenced,
    /// Fencing it failed (it may still accept writes).
    FenceFailed,
    /// The `fence_command` hook failed, timed out or could not be started.
    FenceCommandFailed,
    /// The catalog primary was read-only (an interrupted switchover) and was made writable
    /// again.
    WritesRestored,
    /// Making it writable again failed.
    WritesRestoreFailed,
}

impl AlarmKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmKind::SyncNamesMismatch => "sync_names_mismatch",
            AlarmKind::WritableDemotedPrimary => "writable_demoted_primary",
            AlarmKind::Fenced => "fenced",
            AlarmKind::FenceFailed => "fence_failed",
            AlarmKind::FenceCommandFailed => "fence_command_failed",
            AlarmKind::WritesRestored => "writes_restored",
            AlarmKind::WritesRestoreFailed => "writes_restore_failed",
        }
    }
}

/// Something a driver noticed or did outside the decision table, reported with the cycle
/// (counted in `ftsd_driver_alarms_total`, passed to the `alarm` hook event). Raised once per
/// episode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DriverAlarm {
    pub kind: AlarmKind,
    pub content: ContentId,
    pub dbid: Dbid,
    pub message: String,
}

/// What a driver's [`SegmentDriver::survey`] found: alarms, and changes it wants made.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Survey {
    pub alarms: Vec<DriverAlarm>,
    pub work: Vec<Upkeep>,
}

/// One attempt to deliver a message and read the segment's reply.
pub trait SegmentDriver: Send + Sync + 'static {
    /// One attempt, bounded by `deadline` as a whole. A driver must not put the message on
    /// the wire once the deadline has passed (even if the process was paused meanwhile): the
    /// engine caps it by the end of its authority (the act-by deadline), so a late write would
    /// act without authority.
    fn send(
        &self,
        target: &Segment,
        kind: MessageType,
        deadline: Instant,
    ) -> impl Future<Output = Result<ProbeReply, AttemptError>> + Send;

    /// A driver-level veto on failing over `pair` (decision row 6). The decision core only
    /// sees the catalog's mode; a driver that knows more (the `postgres` driver remembers what
    /// the last successful probe of the primary saw) returns the reason to refuse, and the
    /// cycle hands it to `core::decide_pair`, which then refuses the failover. A veto can only
    /// prevent an action, never cause one.
    fn failover_veto(&self, _pair: &Pair) -> Option<String> {
        None
    }

    /// Driver-specific facts behind the last probe reply of `content` (replication row, lag
    /// ...), stored with the evidence of a transition.
    fn probe_detail(&self, _content: ContentId) -> Option<serde_json::Value> {
        None
    }

    /// The probe of `target` (a catalog primary) failed, `last` being the last attempt's
    /// error: if the driver knows the server is in an ordinary restart it still allows for,
    /// how long that has lasted. The cycle then reports `RestartState::StartingUp` (decision
    /// row 5: wait). A driver must bound this itself; past its bound it returns None and the
    /// failure stands.
    fn restarting(&self, _target: &Segment, _last: &AttemptError) -> Option<Duration> {
        None
    }

    /// Read-only checks beyond the decision table's PROBE, run by every probing instance once
    /// per pair and cycle after the probe, bounded by `deadline`: alarms, and the server
    /// changes the driver wants ([`Upkeep`]). Must not change any server.
    fn survey(&self, _pair: &Pair, _deadline: Instant) -> impl Future<Output = Survey> + Send {
        std::future::ready(Survey::default())
    }

    /// Makes one change a survey asked for. The cycle calls it only as the acting leader,
    /// after confirming its authority as for PROMOTE; the driver asks `gate` before every
    /// statement or command that changes a server and stops when it says no. Returns what
    /// became of it as alarms.
    fn upkeep(
        &self,
        _pair: &Pair,
        _work: &Upkeep,
        _gate: AuthorityGate<'_>,
    ) -> impl Future<Output = Vec<DriverAlarm>> + Send {
        std::future::ready(Vec::new())
    }
}

/// The driver chosen per cluster by `probe.driver`, so the daemon stays one concrete type.
pub enum AnyDriver {
    Fts(FtsWireDriver),
    /// Boxed: its settings and guard memory dwarf the wire driver.
    Postgres(Box<PgDriver>),
}

impl SegmentDriver for AnyDriver {
    async fn send(
        &self,
        target: &Segment,
        kind: MessageType,
        deadline: Instant,
    ) -> Result<ProbeReply, AttemptError> {
        match self {
            AnyDriver::Fts(d) => d.send(target, kind, deadline).await,
            AnyDriver::Postgres(d) => d.send(target, kind, deadline).await,
        }
    }

    fn failover_veto(&self, pair: &Pair) -> Option<String> {
        match self {
            AnyDriver::Fts(d) => d.failover_veto(pair),
            AnyDriver::Postgres(d) => d.failover_veto(pair),
        }
    }

    fn probe_detail(&self, content: ContentId) -> Option<serde_json::Value> {
        match self {
            AnyDriver::Fts(d) => d.probe_detail(content),
            AnyDriver::Postgres(d) => d.probe_detail(content),
        }
    }

    fn restarting(&self, target: &Segment, last: &AttemptError) -> Option<Duration> {
        match self {
            AnyDriver::Fts(d) => d.restarting(target, last),
            AnyDriver::Postgres(d) => d.restarting(target, last),
        }
    }

    async fn survey(&self, pair: &Pair, deadline: Instant) -> Survey {
        match self {
            AnyDriver::Fts(d) => d.survey(pair, deadline).await,
            AnyDriver::Postgres(d) => d.survey(pair, deadline).await,
        }
    }

    async fn upkeep(
        &self,
        pair: &Pair,
        work: &Upkeep,
        gate: AuthorityGate<'_>,
    ) -> Vec<DriverAlarm> {
        match self {
            AnyDriver::Fts(d) => d.upkeep(pair, work, gate).await,
            AnyDriver::Postgres(d) => d.upkeep(pair, work, gate).await,
        }
    }
}

/// The catalog row's port as a TCP port. A row whose port cannot be one is a fault of our
/// input (the catalog), not a sign that the segment is down, hence the prober-side class.
pub(crate) fn tcp_port(target: &Segment) -> Result<u16, AttemptError> {
    u16::try_from(target.port).map_err(|_| {
        AttemptError::new(
            crate::wire::failure::FailureKind::Resolve,
            format!(
                "port {} of dbid {} is not a TCP port",
                target.port, target.dbid
            ),
        )
    })
}

/// Builds the driver `probe.driver` names, with the probe credentials.
pub fn from_config(cfg: &Config) -> AnyDriver {
    match cfg.probe.driver {
        ProbeDriver::Fts => AnyDriver::Fts(FtsWireDriver {
            credentials: Credentials {
                user: cfg.probe.user.clone(),
                password: cfg.probe.password.clone(),
            },
        }),
        ProbeDriver::Postgres => AnyDriver::Postgres(Box::new(PgDriver::new(PgDriverSettings {
            user: cfg.probe.user.clone(),
            password: cfg.probe.password.clone(),
            database: cfg.postgres.database.clone(),
            max_lag: cfg.postgres.max_lag,
            sync_standby_names: cfg.postgres.sync_standby_names.clone(),
            mirror_down_grace: cfg.probe.mirror_down_grace,
            restart_grace: cfg.postgres.restart_grace,
            fence_command: cfg.postgres.fence_command.clone(),
            fence_timeout: cfg.postgres.fence_timeout,
            statement_timeout: cfg.probe.timeout,
            tls: crate::tls::postgres::PgTls::or_fail_closed(&cfg.postgres.tls, "postgres"),
        }))),
    }
}
