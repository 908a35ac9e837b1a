//! The brake's record in etcd: `<prefix>/<cluster>/brake` holds the failovers admitted within
//! the window, the engagement and the last release (`core::brake::BrakeRecord`), so a leader
//! elected while the brake holds keeps holding, and the window spans leader changes.
//!
//! Every write is one transaction fenced like the other leader writes: it compares the
//! writer's leader key (the create revision its term names; a deposed leader's key is gone)
//! and the record's mod revision as read (a write that raced ours makes ours fail). Reads
//! may come from any instance (`ftsctl brake status` on a follower).

use std::sync::Arc;
use std::time::Duration;

use etcd_client::TxnOp;

use super::authority::ElectedAuthority;
use super::EtcdOptions;
use crate::core::brake::BrakeRecord;
use crate::etcd_conn::{fenced_txn, Fence, LazyClient};

/// The record as read, with the mod revision a write must still find (0: absent).
pub type Read = (BrakeRecord, i64);

/// Reads and writes the brake key; one connection, re-opened after a failure.
pub struct EtcdBook {
    key: String,
    authority: Arc<ElectedAuthority>,
    client: LazyClient,
}

impl EtcdBook {
    /// `timeout` bounds each call, and opening the connection.
    pub fn new(
        key: String,
        etcd: EtcdOptions,
        authority: Arc<ElectedAuthority>,
        timeout: Duration,
    ) -> Self {
        EtcdBook {
            key,
            authority,
            client: LazyClient::new(etcd, timeout, Some(timeout)),
        }
    }

    /// The record (empty before the first write). An unreadable value is an error, never an
    /// empty record: a brake someone engaged must not be lost to a parse failure.
    pub async fn read(&self) -> Result<Read, String> {
        let kv = self
            .client
            .get("reading the brake key", self.key.clone())
            .await
            .map_err(|e| e.to_string())?;
        let Some(kv) = kv else {
            return Ok((BrakeRecord::default(), 0));
        };
        let record = serde_json::from_slice(kv.value())
            .map_err(|e| format!("unreadable brake key {}: {e}", self.key))?;
        Ok((record, kv.mod_revision()))
    }

    /// Writes `record` if this instance still holds the term it acts with (epoch `epoch`) and
    /// the key is as read at `read_mod_revision`.
    pub async fn write(
        &self,
        record: &BrakeRecord,
        read_mod_revision: i64,
        epoch: crate::model::Epoch,
    ) -> Result<(), String> {
        let office = self
            .authority
            .office()
            .filter(|o| o.claimed == Some(epoch))
            .ok_or("not in office with this epoch")?;
        let value = serde_json::to_vec(record).map_err(|e| e.to_string())?;
        let fence = Fence {
            leader_key: office.key.clone(),
            revision: office.revision,
        };
        let txn = fenced_txn(
            &fence,
            self.key.clone(),
            read_mod_revision,
            vec![TxnOp::put(self.key.clone(), value, None)],
        );
        let resp = self
            .client
            .txn("writing the brake key", txn)
            .await
            .map_err(|e| e.to_string())?;
        if resp.succeeded() {
            Ok(())
        } else {
            Err("rejected by etcd: our leader key is gone or the brake key changed since it was read".into())
        }
    }
}
