//! The effects of a decision: row updates (each with its history text) and the message to send.

use serde::{Deserialize, Serialize};

use crate::model::{ContentId, Dbid, Segment, SegmentState};
use crate::wire::MessageType;

/// One `gp_segment_configuration` row change. The catalog applies it only if the row still
/// holds `from` (compare-and-set), and writes [`RowUpdate::history_desc`] before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowUpdate {
    pub dbid: Dbid,
    pub content: ContentId,
    pub from: SegmentState,
    pub to: SegmentState,
}

impl RowUpdate {
    pub fn new(segment: &Segment, to: SegmentState) -> Self {
        RowUpdate {
            dbid: segment.dbid,
            content: segment.content,
            from: segment.state(),
            to,
        }
    }

    /// The `gp_configuration_history.desc` text the in-core FTS writes (`docs/decisions.md`).
    pub fn history_desc(&self) -> String {
        format!(
            "FTS: update role, status, and mode for dbid {} with contentid {} to {}, {}, and {}",
            self.dbid, self.content, self.to.role, self.to.status, self.to.mode
        )
    }
}

/// A message to send after the catalog change has committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextMessage {
    pub kind: MessageType,
    /// The instance to contact, as recorded in the catalog snapshot the decision used.
    pub target: Segment,
}
