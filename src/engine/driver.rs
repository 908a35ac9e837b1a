//! How a message reaches a segment. The FTS wire driver talks to Greenplum/Cloudberry segments
//! (and `fts-segsim`); a driver for plain PostgreSQL pairs implements the same trait.

use std::future::Future;
use std::time::Duration;

use crate::model::{ContentId, Pair, Segment};
use crate::wire::client::{self, Credentials, Target};
use crate::wire::failure::AttemptError;
use crate::wire::{MessageType, ProbeReply};

/// One attempt to deliver a message and read the segment's reply.
pub trait SegmentDriver: Send + Sync + 'static {
    fn send(
        &self,
        target: &Segment,
        kind: MessageType,
        timeout: Duration,
    ) -> impl Future<Output = Result<ProbeReply, AttemptError>> + Send;

    /// A driver-level veto on failing over `pair` (decision row 6), asked before the catalog
    /// is touched. The decision core only sees the catalog's mode; a driver that knows more
    /// (the `postgres` driver remembers what the last successful probe of the primary saw)
    /// returns the reason to refuse, and the cycle then treats the pair as a double fault.
    /// A veto can only prevent an action, never cause one.
    fn failover_veto(&self, _pair: &Pair) -> Option<String> {
        None
    }

    /// Driver-specific facts behind the last probe reply of `content` (replication row, lag
    /// ...), stored with the evidence of a transition.
    fn probe_detail(&self, _content: ContentId) -> Option<serde_json::Value> {
        None
    }
}

/// The real FTS protocol: one new connection per message with `gpconntype=fts`.
pub struct FtsWireDriver {
    pub credentials: Credentials,
}

impl SegmentDriver for FtsWireDriver {
    async fn send(
        &self,
        target: &Segment,
        kind: MessageType,
        timeout: Duration,
    ) -> Result<ProbeReply, AttemptError> {
        let port = u16::try_from(target.port).map_err(|_| {
            AttemptError::new(
                crate::wire::failure::FailureKind::Resolve,
                format!(
                    "port {} of dbid {} is not a TCP port",
                    target.port, target.dbid
                ),
            )
        })?;
        let t = Target {
            host: &target.address,
            port,
            dbid: target.dbid,
            content: target.content,
        };
        client::send_message(&t, kind, &self.credentials, timeout).await
    }
}

/// The driver chosen per cluster by `probe.driver`, so the daemon stays one concrete type.
pub enum AnyDriver {
    Fts(FtsWireDriver),
    Postgres(crate::pgdriver::PgDriver),
}

impl SegmentDriver for AnyDriver {
    async fn send(
        &self,
        target: &Segment,
        kind: MessageType,
        timeout: Duration,
    ) -> Result<ProbeReply, AttemptError> {
        match self {
            AnyDriver::Fts(d) => d.send(target, kind, timeout).await,
            AnyDriver::Postgres(d) => d.send(target, kind, timeout).await,
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

impl AnyDriver {
    /// Builds the driver `cfg.probe.driver` names, with the probe credentials.
    pub fn from_config(cfg: &crate::config::Config) -> Self {
        match cfg.probe.driver {
            crate::config::ProbeDriver::Fts => AnyDriver::Fts(FtsWireDriver {
                credentials: Credentials {
                    user: cfg.probe.user.clone(),
                    password: cfg.probe.password.clone(),
                },
            }),
            crate::config::ProbeDriver::Postgres => AnyDriver::Postgres(
                crate::pgdriver::PgDriver::new(crate::pgdriver::PgDriverSettings {
                    user: cfg.probe.user.clone(),
                    password: cfg.probe.password.clone(),
                    database: cfg.postgres.database.clone(),
                    max_lag: cfg.postgres.max_lag,
                    sync_standby_names: cfg.postgres.sync_standby_names.clone(),
                    mirror_down_grace: cfg.probe.mirror_down_grace,
                }),
            ),
        }
    }
}
