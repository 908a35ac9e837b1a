//! History and evidence rows as ftsd stores them in etcd next to the blob (Cloudberry keeps
//! neither), converted to the rows the API serves for the SQL backend, so `ftsctl history` and
//! `ftsctl explain` read the same on both.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::catalog::queries::{EvidenceRow, HistoryRow};
use crate::model::{ContentId, Dbid};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryRecord {
    pub time_us: i64,
    pub dbid: Dbid,
    pub content: ContentId,
    /// The in-core FTS's `gp_configuration_history` text.
    pub desc: String,
    pub rule: String,
    pub epoch: i64,
    pub instance_id: String,
    pub evidence_id: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvidenceRecord {
    pub id: i64,
    pub time_us: i64,
    pub epoch: i64,
    pub instance_id: String,
    pub content: ContentId,
    pub rule: String,
    pub dbids: Vec<Dbid>,
    pub evidence: serde_json::Value,
}

pub fn to_time(us: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(us.max(0) as u64)
}

impl From<HistoryRecord> for HistoryRow {
    fn from(r: HistoryRecord) -> Self {
        HistoryRow {
            time: to_time(r.time_us),
            dbid: r.dbid,
            content: Some(r.content),
            desc: r.desc,
            rule: Some(r.rule),
            epoch: Some(r.epoch),
            instance_id: Some(r.instance_id),
            evidence_id: Some(r.evidence_id),
        }
    }
}

impl From<EvidenceRecord> for EvidenceRow {
    fn from(r: EvidenceRecord) -> Self {
        EvidenceRow {
            id: r.id,
            time: to_time(r.time_us),
            epoch: r.epoch,
            instance_id: r.instance_id,
            content: r.content,
            rule: r.rule,
            dbids: r.dbids,
            evidence: r.evidence,
        }
    }
}
