//! The coordinator pair's rows (content -1) of the blob, for the coordinator watch's
//! Cloudberry path (`src/coordinator/cloudberry.rs`):
//!
//! * which rows the pair's servers are (the FTS messages name their dbid);
//! * the promote-ready key as a compare, so an intent is recorded only while it reads `1`;
//! * after a promotion, the content -1 rows flipped as a segment failover flips a pair (the
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
use crate::model::{Epoch, Mode, Role, Segment, SegmentState, Status};

/// Whether `row` is the server at `host:port` (the blob's address or host name).
pub fn is_server(row: &Segment, host: &str, port: u16) -> bool {
    row.content == -1
        && i32::from(port) == row.port
        && (row.address == host || row.hostname == host)
}

/// The content -1 row of the server at `host:port`.
pub fn find_server<'a>(rows: &'a [Segment], host: &str, port: u16) -> Option<&'a Segment> {
    rows.iter().find(|r| is_server(r, host, port))
}

/// The changes that record `to` as the acting coordinator in place of `from`: `to`
/// `p`/`u`/`n` (it has no standby now), `from` `m`/`d`/`n` when its row is still there (the
/// new coordinator's `activateStandby` drops it). Rows already so are left alone; no change
/// at all is an empty list. Err: the blob has no row for `to`.
pub fn failover_updates(
    rows: &[Segment],
    from: (&str, u16),
    to: (&str, u16),
) -> Result<Vec<RowUpdate>, String> {
    let new = find_server(rows, to.0, to.1).ok_or_else(|| {
        format!(
            "no content -1 row for {}:{} in the configuration blob",
            to.0, to.1
        )
    })?;
    let mut updates = Vec::new();
    let acting = SegmentState {
        role: Role::Primary,
        status: Status::Up,
        mode: Mode::NotInSync,
    };
    if new.state() != acting {
        updates.push(RowUpdate::new(new, acting));
    }
    if let Some(old) = find_server(rows, from.0, from.1) {
        let down = SegmentState {
            role: Role::Mirror,
            status: Status::Down,
            mode: Mode::NotInSync,
        };
        if old.state() != down {
            updates.push(RowUpdate::new(old, down));
        }
    }
    Ok(updates)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn row(dbid: i16, role: Role, preferred: Role, mode: Mode, port: i32) -> Segment {
        Segment {
            dbid,
            content: -1,
            role,
            preferred_role: preferred,
            mode,
            status: Status::Up,
            port,
            hostname: "cdw".into(),
            address: "10.0.0.1".into(),
            datadir: "/data/coordinator/gpseg-1".into(),
        }
    }

    fn pair() -> Vec<Segment> {
        vec![
            row(1, Role::Primary, Role::Primary, Mode::InSync, 5432),
            row(4, Role::Mirror, Role::Mirror, Mode::InSync, 5433),
        ]
    }

    #[test]
    fn the_old_coordinator_goes_down_and_the_standby_acts() {
        let u = failover_updates(&pair(), ("10.0.0.1", 5432), ("cdw", 5433)).unwrap();
        assert_eq!(u.len(), 2);
        assert_eq!(
            (u[0].dbid, u[0].to.role, u[0].to.status),
            (4, Role::Primary, Status::Up)
        );
        assert_eq!(u[0].to.mode, Mode::NotInSync);
        assert_eq!(
            (u[1].dbid, u[1].to.role, u[1].to.status),
            (1, Role::Mirror, Status::Down)
        );
    }

    #[test]
    fn after_activate_standby_only_what_differs_changes() {
        // activateStandby dropped the old line and made the standby p/p (mode kept).
        let mut rows = vec![row(4, Role::Primary, Role::Primary, Mode::InSync, 5433)];
        let u = failover_updates(&rows, ("10.0.0.1", 5432), ("10.0.0.1", 5433)).unwrap();
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].to.mode, Mode::NotInSync);
        rows[0].mode = Mode::NotInSync;
        assert!(
            failover_updates(&rows, ("10.0.0.1", 5432), ("10.0.0.1", 5433))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_standby_missing_from_the_blob_is_an_error() {
        let e = failover_updates(&pair(), ("10.0.0.1", 5432), ("10.0.0.2", 5433)).unwrap_err();
        assert!(e.contains("10.0.0.2:5433"), "{e}");
        // A segment on the same address and port is not the coordinator's row.
        let mut rows = pair();
        rows[1].content = 0;
        assert!(failover_updates(&rows, ("10.0.0.1", 5432), ("10.0.0.1", 5433)).is_err());
    }
}
