//! The FTS wire protocol as the prober speaks it: the client (one attempt = one connection) and
//! the classes of attempt failures. The message types, the reply row and the framing are shared
//! with the segment simulator and live in the `fts-wire` crate; they are re-exported here so the
//! rest of the daemon names them `crate::wire::…`.

pub mod client;
pub mod failure;

pub use fts_wire::{
    format_lsn, frame, parse_last_replayed, parse_query, MessageType, ProbeReply,
    DETAIL_LAST_REPLAYED, GPCONNTYPE_FTS, GPCONNTYPE_PARAM, MSG_IN_RECOVERY, MSG_MAX_LEN,
    MSG_RESETTING, MSG_STARTING_UP, RESPONSE_COLUMNS,
};
