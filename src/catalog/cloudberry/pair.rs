//! The coordinator pair's rows (content -1) of the blob, for the coordinator watch's
//! Cloudberry path (`src/coordinator/cloudberry.rs`):
//!
//! * which rows the pair's servers are (the FTS messages name their dbid);
//! * the promote-ready key as a compare, so an intent is recorded only while it reads `1`;
//! * after a promotion, the content -1 rows flipped as a segment failover flips a pair
//!   ([`crate::core::coordinator::rows`], shared with the SQL catalog; the
//!   old coordinator `m`/`d`/`n`, the new one `p`/`u`/`n`), with a history row per changed
//!   row and one evidence row — as compares and operations the watch adds to the very
//!   transaction that records its outcome. The compares are the blob's own fence (ftsd's
//!   epoch key unchanged holding an epoch no newer than the writer's, the blob's mod revision
//!   as read); the leader key is compared by the coordinator records' transaction itself.

use etcd_client::{Compare, CompareOp, TxnOp};

use super::records::{EvidenceRecord, HistoryRecord};
use super::{blob, blob_unchanged, CloudberryCatalog};
use crate::catalog::CatalogError;
use crate::core::transition::RowUpdate;
use crate::etcd_history;
use crate::model::{Epoch, Segment};

pub use crate::core::coordinator::rows::{failover_updates, find_server, is_server};

/// A fenced change of the content -1 rows, ready to join another transaction.
pub struct PairChange {
    pub compares: Vec<Compare>,
    pub ops: Vec<TxnOp>,
    pub updates: Vec<RowUpdate>,
    /// Why no row changes although one should (the blob has no row for the new
    /// coordinator): the outcome is recorded anyway — the promotion happened — and this says
    /// what the operator must fix.
    pub note: Option<String>,
    rows: Vec<Segment>,
    text: String,
}

impl PairChange {
    /// One line per changed row, for the evidence and the log.
    pub fn describe(&self) -> Vec<String> {
        self.updates.iter().map(RowUpdate::history_desc).collect()
    }
}

impl CloudberryCatalog {
    /// The blob's rows and mod revision, strictly parsed (an absent blob is an error).
    pub async fn read_rows(&self) -> Result<(Vec<Segment>, i64), CatalogError> {
        let (text, mod_revision) = self
            .read_blob()
            .await?
            .ok_or_else(|| CatalogError::Corrupt(format!("{} is absent", self.keys.blob())))?;
        let rows = blob::parse(&text)
            .map_err(|e| CatalogError::Corrupt(format!("{}: {e}", self.keys.blob())))?;
        Ok((rows, mod_revision))
    }

    /// Holds while the promote-ready key reads exactly `1`.
    pub fn promote_ready_compare(&self) -> Compare {
        Compare::value(self.keys.standby_promote_ready(), CompareOp::Equal, "1")
    }

    /// The fenced change recording `to` as the acting coordinator in place of `from` (see the
    /// module documentation). `rule` names it in the history and evidence rows (e.g.
    /// `coordinator_failover`). An empty change (rows already so) has no operations but still
    /// fences on the blob as read.
    pub async fn coordinator_change(
        &self,
        epoch: Epoch,
        instance_id: &str,
        rule: &str,
        from: (&str, u16),
        to: (&str, u16),
        evidence: serde_json::Value,
    ) -> Result<PairChange, CatalogError> {
        let (mut rows, mod_revision) = self.read_rows().await?;
        let (updates, note) = match failover_updates(&rows, from, to) {
            Ok(u) => (u, None),
            Err(why) => (Vec::new(), Some(why)),
        };
        let (recorded, epoch_mod) = self.recorded_epoch().await?;
        if recorded > epoch {
            return Err(CatalogError::Fenced {
                mine: epoch,
                current: recorded,
            });
        }
        let compares = vec![
            Compare::mod_revision(self.keys.epoch(), CompareOp::Equal, epoch_mod),
            blob_unchanged(&self.keys.blob(), mod_revision),
        ];
        let changes: Vec<_> = updates.iter().map(|u| (u.dbid, u.from, u.to)).collect();
        blob::apply_states(&mut rows, &changes).map_err(|(dbid, from)| CatalogError::Stale {
            dbid,
            expected: from.to_string(),
        })?;
        let text = blob::render(&rows);
        let mut ops = Vec::new();
        if !updates.is_empty() {
            if recorded < epoch {
                ops.push(TxnOp::put(self.keys.epoch(), epoch.0.to_string(), None));
                ops.push(TxnOp::put(self.keys.epoch_holder(), instance_id, None));
            }
            ops.push(TxnOp::put(self.keys.blob(), text.clone(), None));
            let id = self.ids.next();
            let limit = self.settings.history_limit;
            let existing_history = self.keys_under(self.keys.history_prefix()).await?;
            let existing_evidence = self.keys_under(self.keys.evidence_prefix()).await?;
            ops.extend(etcd_history::trim(&existing_history, limit, updates.len()));
            ops.extend(etcd_history::trim(&existing_evidence, limit, 1));
            for u in &updates {
                let h = HistoryRecord {
                    time_us: id,
                    dbid: u.dbid,
                    content: u.content,
                    desc: u.history_desc(),
                    rule: rule.to_owned(),
                    epoch: epoch.0,
                    instance_id: instance_id.to_owned(),
                    evidence_id: id,
                };
                ops.push(TxnOp::put(
                    self.keys.history(id, u.dbid),
                    serde_json::to_vec(&h).expect("history record serializes"),
                    None,
                ));
            }
            let e = EvidenceRecord {
                id,
                time_us: id,
                epoch: epoch.0,
                instance_id: instance_id.to_owned(),
                content: -1,
                rule: rule.to_owned(),
                dbids: updates.iter().map(|u| u.dbid).collect(),
                evidence,
            };
            ops.push(TxnOp::put(
                self.keys.evidence(id),
                serde_json::to_vec(&e).expect("evidence record serializes"),
                None,
            ));
        }
        Ok(PairChange {
            compares,
            ops,
            updates,
            note,
            rows,
            text,
        })
    }

    /// After `change` was written at revision `written`: tell the coordinator, as after a
    /// segment transition (only if the blob is still that one).
    pub async fn notify_change(&self, change: &PairChange, written: i64) {
        if !change.updates.is_empty() {
            self.notify(&change.rows, &change.text, written).await;
        }
    }
}
