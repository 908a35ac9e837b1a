//! How a message reaches a segment. The FTS wire driver talks to Greenplum/Cloudberry segments
//! (and `fts-segsim`); a driver for plain PostgreSQL pairs implements the same trait.

use std::future::Future;
use std::time::Duration;

use crate::model::Segment;
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
