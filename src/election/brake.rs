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

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};

use super::authority::ElectedAuthority;
use super::EtcdOptions;
use crate::core::brake::BrakeRecord;

/// The record as read, with the mod revision a write must still find (0: absent).
pub type Read = (BrakeRecord, i64);

/// Reads and writes the brake key; one connection, re-opened after a failure.
pub struct EtcdBook {
    key: String,
    etcd: EtcdOptions,
    authority: Arc<ElectedAuthority>,
    timeout: Duration,
    client: tokio::sync::Mutex<Option<Client>>,
}

impl EtcdBook {
    pub fn new(
        key: String,
        etcd: EtcdOptions,
        authority: Arc<ElectedAuthority>,
        timeout: Duration,
    ) -> Self {
        EtcdBook {
            key,
            etcd,
            authority,
            timeout,
            client: tokio::sync::Mutex::new(None),
        }
    }

    async fn call<T, F, Fut>(&self, what: &str, f: F) -> Result<T, String>
    where
        F: FnOnce(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let client = {
            let mut guard = self.client.lock().await;
            match guard.as_ref() {
                Some(c) => c.clone(),
                None => {
                    let c = tokio::time::timeout(self.timeout, self.etcd.connect())
                        .await
                        .map_err(|_| format!("{what}: connect timed out"))?
                        .map_err(|e| format!("{what}: {e}"))?;
                    *guard = Some(c.clone());
                    c
                }
            }
        };
        match tokio::time::timeout(self.timeout, f(client)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                *self.client.lock().await = None;
                Err(format!("{what}: {e}"))
            }
            Err(_) => {
                *self.client.lock().await = None;
                Err(format!("{what}: no answer within {:?}", self.timeout))
            }
        }
    }

    /// The record (empty before the first write). An unreadable value is an error, never an
    /// empty record: a brake someone engaged must not be lost to a parse failure.
    pub async fn read(&self) -> Result<Read, String> {
        let key = self.key.clone();
        let mut resp = self
            .call("reading the brake key", |mut c| async move {
                c.get(key, None).await
            })
            .await?;
        let Some(kv) = resp.take_kvs().into_iter().next() else {
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
        let txn = Txn::new()
            .when([
                Compare::create_revision(office.key.clone(), CompareOp::Equal, office.revision),
                Compare::mod_revision(self.key.clone(), CompareOp::Equal, read_mod_revision),
            ])
            .and_then([TxnOp::put(self.key.clone(), value, None)]);
        let resp = self
            .call(
                "writing the brake key",
                |mut c| async move { c.txn(txn).await },
            )
            .await?;
        if resp.succeeded() {
            Ok(())
        } else {
            Err("rejected by etcd: our leader key is gone or the brake key changed since it was read".into())
        }
    }
}
