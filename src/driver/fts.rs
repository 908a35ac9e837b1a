//! The FTS wire driver: Greenplum/Cloudberry segments (and `fts-segsim`) spoken to with the
//! real FTS protocol, one new connection per message with `gpconntype=fts`.

use std::time::Instant;

use super::SegmentDriver;
use crate::model::Segment;
use crate::wire::client::{self, Credentials, Target};
use crate::wire::failure::{AttemptError, FailureKind};
use crate::wire::{MessageType, ProbeReply};

/// See the module documentation.
pub struct FtsWireDriver {
    pub credentials: Credentials,
}

impl SegmentDriver for FtsWireDriver {
    async fn send(
        &self,
        target: &Segment,
        kind: MessageType,
        deadline: Instant,
    ) -> Result<ProbeReply, AttemptError> {
        let port = u16::try_from(target.port).map_err(|_| {
            AttemptError::new(
                FailureKind::Resolve,
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
        client::send_message_by(&t, kind, &self.credentials, deadline).await
    }
}
