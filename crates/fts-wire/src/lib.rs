//! The FTS wire protocol shared by the prober (`ftsd::wire::client`) and the segment simulator
//! (`fts-segsim`): message types, the reply row, and framing with its size cap.
//!
//! FTS speaks ordinary PostgreSQL protocol 3.0 with one extra startup parameter,
//! `gpconntype=fts`, and a single simple query per connection whose text is
//! `<TYPE> dbid=<d> contid=<c>`. The reply is one row of five booleans whose values are raw
//! 0x00/0x01 bytes, not the text `t`/`f` (ftsd's `docs/protocol.md`).

pub mod frame;

use serde::{Deserialize, Serialize};
use std::fmt;

/// Database id of one instance (`dbid int2`).
pub type Dbid = i16;
/// Content id of a segment (`content int2`); -1 is the coordinator and its standby.
pub type ContentId = i16;

/// Startup parameter that routes a connection to the FTS handler.
pub const GPCONNTYPE_PARAM: &str = "gpconntype";
pub const GPCONNTYPE_FTS: &str = "fts";

/// FATAL texts a segment sends during startup (Greenplum's `postmaster.h`; their use is in
/// ftsd's `docs/decisions.md`, "Crash-recovery progress").
pub const MSG_STARTING_UP: &str = "the database system is starting up";
pub const MSG_IN_RECOVERY: &str = "the database system is in recovery mode";
pub const MSG_RESETTING: &str = "the database system is resetting";
pub const DETAIL_LAST_REPLAYED: &str = "last replayed record at";

/// Column names of the reply row, in order (`Anum_fts_message_response_*`).
pub const RESPONSE_COLUMNS: [&str; 5] = [
    "is_mirror_up",
    "is_in_sync",
    "is_syncrep_enabled",
    "is_role_mirror",
    "request_retry",
];

/// `FTS_MSG_MAX_LEN`: the segment's buffer for the query text.
pub const MSG_MAX_LEN: usize = 100;

/// The three messages FTS sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MessageType {
    #[serde(rename = "PROBE")]
    Probe,
    #[serde(rename = "SYNCREP_OFF")]
    SyncrepOff,
    #[serde(rename = "PROMOTE")]
    Promote,
}

impl MessageType {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Probe => "PROBE",
            MessageType::SyncrepOff => "SYNCREP_OFF",
            MessageType::Promote => "PROMOTE",
        }
    }

    /// The query text for a target instance, `FTS_MSG_FORMAT` = `%s dbid=%d contid=%d`.
    pub fn query(self, dbid: Dbid, content: ContentId) -> String {
        format!("{} dbid={} contid={}", self.as_str(), dbid, content)
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses a query the way the segment's `HandleFtsMessage` does: `sscanf` of the format must
/// give three fields, then the type is matched by prefix.
pub fn parse_query(text: &str) -> Option<(MessageType, Dbid, ContentId)> {
    let text = text.trim_end_matches(['\0', ';', ' ', '\n']);
    let mut words = text.split_whitespace();
    let kind = match words.next()? {
        "PROBE" => MessageType::Probe,
        "SYNCREP_OFF" => MessageType::SyncrepOff,
        "PROMOTE" => MessageType::Promote,
        _ => return None,
    };
    let dbid = words.next()?.strip_prefix("dbid=")?.parse().ok()?;
    let content = words.next()?.strip_prefix("contid=")?.parse().ok()?;
    if words.next().is_some() {
        return None;
    }
    Some((kind, dbid, content))
}

/// The five fields of an FTS reply (`FtsResponse`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProbeReply {
    pub is_mirror_up: bool,
    pub is_in_sync: bool,
    pub is_syncrep_enabled: bool,
    pub is_role_mirror: bool,
    pub request_retry: bool,
}

impl ProbeReply {
    pub fn to_bytes(self) -> [u8; 5] {
        [
            self.is_mirror_up as u8,
            self.is_in_sync as u8,
            self.is_syncrep_enabled as u8,
            self.is_role_mirror as u8,
            self.request_retry as u8,
        ]
    }

    /// Reads the values as the in-core prober does: only the first byte counts, non-zero is true.
    pub fn from_values(values: [&[u8]; 5]) -> Option<Self> {
        let b = |v: &[u8]| v.first().map(|b| *b != 0);
        Some(ProbeReply {
            is_mirror_up: b(values[0])?,
            is_in_sync: b(values[1])?,
            is_syncrep_enabled: b(values[2])?,
            is_role_mirror: b(values[3])?,
            request_retry: b(values[4])?,
        })
    }
}

/// Parses `last replayed record at %X/%X` out of a FATAL message or its detail.
pub fn parse_last_replayed(text: &str) -> Option<u64> {
    let at = text.find(DETAIL_LAST_REPLAYED)?;
    let rest = text[at + DETAIL_LAST_REPLAYED.len()..].trim_start();
    let token: String = rest
        .chars()
        .take_while(|c| c.is_ascii_hexdigit() || *c == '/')
        .collect();
    let (hi, lo) = token.split_once('/')?;
    let hi = u32::from_str_radix(hi, 16).ok()?;
    let lo = u32::from_str_radix(lo, 16).ok()?;
    Some(((hi as u64) << 32) | lo as u64)
}

/// Formats an LSN the way PostgreSQL prints it.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_text_matches_fts_msg_format() {
        assert_eq!(MessageType::Probe.query(2, 0), "PROBE dbid=2 contid=0");
        assert_eq!(
            MessageType::Promote.query(5, 17),
            "PROMOTE dbid=5 contid=17"
        );
        assert_eq!(
            parse_query("SYNCREP_OFF dbid=3 contid=1"),
            Some((MessageType::SyncrepOff, 3, 1))
        );
        assert_eq!(parse_query("PROBE"), None);
        assert_eq!(parse_query("HELLO dbid=1 contid=1"), None);
        assert_eq!(parse_query("PROBE dbid=x contid=1"), None);
    }

    #[test]
    fn reply_reads_raw_bytes() {
        let r = ProbeReply::from_values([&[1], &[0], &[1], &[0], &[7]]).unwrap();
        assert!(r.is_mirror_up && !r.is_in_sync && r.is_syncrep_enabled && r.request_retry);
        assert_eq!(ProbeReply::from_values([&[], &[0], &[1], &[0], &[0]]), None);
    }

    #[test]
    fn lsn_parsing() {
        let msg =
            "the database system is in recovery mode\nDETAIL:  last replayed record at 0/3000060";
        assert_eq!(parse_last_replayed(msg), Some(0x3000060));
        assert_eq!(
            parse_last_replayed("last replayed record at 1A/FF"),
            Some((0x1A << 32) | 0xFF)
        );
        assert_eq!(format_lsn((0x1A << 32) | 0xFF), "1A/FF");
        assert_eq!(parse_last_replayed("no lsn"), None);
    }
}
