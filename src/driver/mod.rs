//! How a message reaches a segment, below the engine: the [`SegmentDriver`] trait, the FTS
//! wire driver for Greenplum/Cloudberry segments ([`fts`]) and the driver for plain
//! PostgreSQL primary/standby pairs ([`postgres`]). The engine only sees the trait; which
//! driver runs is chosen from the configuration by the daemon's wiring ([`from_config`]).

pub mod fts;
pub mod postgres;

use std::future::Future;
use std::time::Instant;

use crate::config::{Config, ProbeDriver};
use crate::model::{ContentId, Pair, Segment};
use crate::wire::client::Credentials;
use crate::wire::failure::AttemptError;
use crate::wire::{MessageType, ProbeReply};

pub use fts::FtsWireDriver;
pub use postgres::{PgDriver, PgDriverSettings};

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
}

/// The driver chosen per cluster by `probe.driver`, so the daemon stays one concrete type.
pub enum AnyDriver {
    Fts(FtsWireDriver),
    Postgres(PgDriver),
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
        ProbeDriver::Postgres => AnyDriver::Postgres(PgDriver::new(PgDriverSettings {
            user: cfg.probe.user.clone(),
            password: cfg.probe.password.clone(),
            database: cfg.postgres.database.clone(),
            max_lag: cfg.postgres.max_lag,
            sync_standby_names: cfg.postgres.sync_standby_names.clone(),
            mirror_down_grace: cfg.probe.mirror_down_grace,
        })),
    }
}
