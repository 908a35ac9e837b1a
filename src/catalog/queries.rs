//! Read-only queries for the API: the configuration history joined with ftsd's evidence log,
//! and the evidence of a content's last transition.
//!
//! A transition writes its `gp_configuration_history` rows and its `fts_evidence` row in one
//! transaction, and both take `now()`, the transaction's start time, so a history row belongs
//! to the evidence row with the same time whose `dbids` contain its dbid.

use std::time::SystemTime;

use super::postgres::PgCatalog;
use super::CatalogError;
use crate::model::{ContentId, Dbid};

/// Which history rows to return (newest first).
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    pub content: Option<ContentId>,
    pub dbid: Option<Dbid>,
    pub since: Option<SystemTime>,
    pub limit: i64,
}

/// One `gp_configuration_history` row and, when ftsd wrote it, its evidence row.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryRow {
    pub time: SystemTime,
    pub dbid: Dbid,
    /// From the current configuration (or the evidence); None if the dbid is gone.
    pub content: Option<ContentId>,
    pub desc: String,
    pub rule: Option<String>,
    pub epoch: Option<i64>,
    pub instance_id: Option<String>,
    pub evidence_id: Option<i64>,
}

/// The evidence row of one transition.
#[derive(Debug, Clone, PartialEq)]
pub struct EvidenceRow {
    pub id: i64,
    pub time: SystemTime,
    pub epoch: i64,
    pub instance_id: String,
    pub content: ContentId,
    pub rule: String,
    pub dbids: Vec<Dbid>,
    pub evidence: serde_json::Value,
}

const HISTORY: &str = r#"
SELECT h."time", h.dbid, COALESCE(c.content, e.content), h."desc", e.rule, e.epoch,
       e.instance_id, e.id
  FROM gp_configuration_history h
  LEFT JOIN gp_segment_configuration c ON c.dbid = h.dbid
  LEFT JOIN fts_evidence e ON e."time" = h."time" AND h.dbid = ANY (e.dbids)
 WHERE ($1::int2 IS NULL OR COALESCE(c.content, e.content) = $1)
   AND ($2::int2 IS NULL OR h.dbid = $2)
   AND h."time" >= $3
 ORDER BY h."time" DESC, h.dbid DESC
 LIMIT $4"#;

const LAST_EVIDENCE: &str = r#"
SELECT id, "time", epoch, instance_id, content, rule, dbids, evidence
  FROM fts_evidence WHERE content = $1 ORDER BY id DESC LIMIT 1"#;

fn unavailable(what: &str, e: tokio_postgres::Error) -> CatalogError {
    CatalogError::Unavailable(format!("{what}: {e}"))
}

impl PgCatalog {
    /// History rows matching `filter`, newest first.
    pub async fn history(&self, filter: &HistoryFilter) -> Result<Vec<HistoryRow>, CatalogError> {
        let f = filter.clone();
        self.with_client(|client| {
            Box::pin(async move {
                let since = f.since.unwrap_or(SystemTime::UNIX_EPOCH);
                let rows = client
                    .query(HISTORY, &[&f.content, &f.dbid, &since, &f.limit.max(1)])
                    .await
                    .map_err(|e| unavailable("reading gp_configuration_history", e))?;
                Ok(rows
                    .iter()
                    .map(|r| HistoryRow {
                        time: r.get(0),
                        dbid: r.get(1),
                        content: r.get(2),
                        desc: r.get::<_, Option<String>>(3).unwrap_or_default(),
                        rule: r.get(4),
                        epoch: r.get(5),
                        instance_id: r.get(6),
                        evidence_id: r.get(7),
                    })
                    .collect())
            })
        })
        .await
    }

    /// The evidence of `content`'s last transition by ftsd, if any.
    pub async fn last_evidence(
        &self,
        content: ContentId,
    ) -> Result<Option<EvidenceRow>, CatalogError> {
        self.with_client(|client| {
            Box::pin(async move {
                let row = client
                    .query_opt(LAST_EVIDENCE, &[&content])
                    .await
                    .map_err(|e| unavailable("reading fts_evidence", e))?;
                Ok(row.map(|r| EvidenceRow {
                    id: r.get(0),
                    time: r.get(1),
                    epoch: r.get(2),
                    instance_id: r.get(3),
                    content: r.get(4),
                    rule: r.get(5),
                    dbids: r.get(6),
                    evidence: r.get(7),
                }))
            })
        })
        .await
    }
}
