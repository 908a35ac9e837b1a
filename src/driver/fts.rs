//! The FTS wire driver: Greenplum/Cloudberry segments (and `fts-segsim`) spoken to with the
//! real FTS protocol, one new connection per message with `gpconntype=fts`.

use std::time::Instant;

use super::SegmentDriver;
use crate::model::Segment;
use crate::wire::client::{self, Credentials, Target};
use crate::wire::failure::AttemptError;
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
        let port = super::tcp_port(target)?;
        let t = Target {
            host: &target.address,
            port,
            dbid: target.dbid,
            content: target.content,
        };
        client::send_message_by(&t, kind, &self.credentials, deadline).await
    }
}
