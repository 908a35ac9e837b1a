//! The coordinator pair's records in etcd (the catalog lives on the coordinator, which is the
//! server that is gone when they matter):
//!
//! * `<prefix>/<cluster>/coordinator/state` — which server acts as coordinator, which is its
//!   standby (or the former coordinator awaiting a rebuild), and a pending failover intent;
//! * `<prefix>/<cluster>/coordinator/history/<µs, 20 digits>` — one record per intent,
//!   outcome and refusal, each with its evidence (the oldest beyond [`HISTORY_LIMIT`] are
//!   deleted by the transaction that adds one).
//!
//! Every write is **one etcd transaction fenced like the Cloudberry backend's**: it compares
//! the writer's leader key (the create revision its term names: a deposed leader's key is
//! gone, so its write fails) and the state key's mod revision as the decision read it (a
//! write that raced ours makes ours fail). Nothing is half-applied: the state and its history
//! record go together or not at all.

use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::election::EtcdOptions;
pub use crate::etcd_history::micros;
use crate::etcd_history::{self, TimeIds};

/// History records kept.
pub const HISTORY_LIMIT: usize = 1000;

/// The pair as etcd records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoordinatorState {
    /// `host:port` of the server acting as coordinator.
    pub acting: String,
    /// `host:port` of the other server: the standby, or (with `rebuild`) the former
    /// coordinator.
    pub standby: String,
    /// The former coordinator must be rebuilt as a standby (`gpinitstandby`) before the pair
    /// is whole again; it must never be started as it is.
    #[serde(default)]
    pub rebuild: bool,
    /// A failover recorded as begun, not yet recorded as done.
    #[serde(default)]
    pub intent: Option<Intent>,
    /// When the last failover was recorded as done (µs since the Unix epoch).
    #[serde(default)]
    pub last_failover_us: Option<i64>,
    /// Epoch and instance of the last writer.
    pub epoch: i64,
    pub instance_id: String,
    pub updated_us: i64,
}

/// What kind of promotion an intent records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntentKind {
    /// The coordinator was lost.
    Failover,
    /// `ftsctl switchover`: planned.
    Switchover,
}

/// A failover recorded as begun.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Intent {
    pub id: i64,
    pub kind: IntentKind,
    /// The old coordinator and the standby being promoted (`host:port`).
    pub from: String,
    pub to: String,
    pub epoch: i64,
    pub instance_id: String,
    /// The standby's replay position when the intent was recorded.
    #[serde(default)]
    pub standby_replay_lsn: Option<String>,
}

/// One history record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryRecord {
    pub time_us: i64,
    /// `intent`, `promoted`, `refused`, `fence_failed`, `promote_failed`, `rebuilt`.
    pub event: String,
    pub from: String,
    pub to: String,
    pub epoch: i64,
    pub instance_id: String,
    /// One line for operators.
    pub desc: String,
    /// Everything the decision read and the steps reported.
    pub evidence: serde_json::Value,
}

/// Why a record could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("etcd unavailable: {0}")]
    Unavailable(String),
    /// The fence compares failed: not our leader key any more, or the state changed since it
    /// was read.
    #[error("rejected by etcd: {0}")]
    Rejected(String),
    #[error("unreadable record {key}: {why}")]
    Corrupt { key: String, why: String },
}

/// What a write is fenced on: the leader key of the writer's term.
#[derive(Debug, Clone)]
pub struct Fence {
    pub leader_key: Vec<u8>,
    pub revision: i64,
}

/// What a write carries besides the coordinator records: compares that must hold too, and
/// operations applied with them.
#[derive(Default)]
pub struct Extra {
    pub compares: Vec<Compare>,
    pub ops: Vec<TxnOp>,
}

/// The state as read, with the mod revision a write must still find (0: absent).
#[derive(Debug, Clone)]
pub struct Read {
    pub state: Option<CoordinatorState>,
    pub mod_revision: i64,
}

/// Reads and writes the records; one connection, re-opened after a failure.
pub struct Records {
    prefix: String,
    etcd: EtcdOptions,
    timeout: Duration,
    client: Mutex<Option<Client>>,
    ids: TimeIds,
}

impl Records {
    pub fn new(prefix: String, etcd: EtcdOptions, timeout: Duration) -> Self {
        Records {
            prefix,
            etcd,
            timeout,
            client: Mutex::new(None),
            ids: TimeIds::default(),
        }
    }

    pub fn state_key(&self) -> String {
        format!("{}state", self.prefix)
    }

    pub fn history_prefix(&self) -> String {
        format!("{}history/", self.prefix)
    }

    /// A time-ordered id, strictly increasing within this process.
    pub fn next_id(&self) -> i64 {
        self.ids.next()
    }

    async fn call<T, F, Fut>(&self, what: &str, f: F) -> Result<T, RecordError>
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
                        .map_err(|_| {
                            RecordError::Unavailable(format!("{what}: connect timed out"))
                        })?
                        .map_err(|e| RecordError::Unavailable(format!("{what}: {e}")))?;
                    *guard = Some(c.clone());
                    c
                }
            }
        };
        match tokio::time::timeout(self.timeout, f(client)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                *self.client.lock().await = None;
                Err(RecordError::Unavailable(format!("{what}: {e}")))
            }
            Err(_) => {
                *self.client.lock().await = None;
                Err(RecordError::Unavailable(format!(
                    "{what}: no answer within {:?}",
                    self.timeout
                )))
            }
        }
    }

    /// The recorded state (None before the first write).
    pub async fn load(&self) -> Result<Read, RecordError> {
        let key = self.state_key();
        let mut resp = self
            .call("reading the coordinator state", |mut c| {
                let key = key.clone();
                async move { c.get(key, None).await }
            })
            .await?;
        let Some(kv) = resp.take_kvs().into_iter().next() else {
            return Ok(Read {
                state: None,
                mod_revision: 0,
            });
        };
        let state = serde_json::from_slice(kv.value()).map_err(|e| RecordError::Corrupt {
            key: key.clone(),
            why: e.to_string(),
        })?;
        Ok(Read {
            state: Some(state),
            mod_revision: kv.mod_revision(),
        })
    }

    /// How many VIP agents hold the address (`vip/` keys, bound to the agents' leases).
    pub async fn vip_holders(&self) -> Result<u32, RecordError> {
        let prefix = format!("{}vip/", self.prefix);
        let resp = self
            .call("reading the VIP holders", |mut c| async move {
                c.get(
                    prefix,
                    Some(GetOptions::new().with_prefix().with_count_only()),
                )
                .await
            })
            .await?;
        Ok(u32::try_from(resp.count()).unwrap_or(u32::MAX))
    }

    /// History records, newest first.
    pub async fn history(&self, limit: usize) -> Result<Vec<HistoryRecord>, RecordError> {
        let prefix = self.history_prefix();
        self.call("reading the coordinator history", |c| {
            etcd_history::newest_first(c, prefix, Some(limit))
        })
        .await?
        .into_iter()
        .map(|kv| {
            serde_json::from_slice(kv.value()).map_err(|e| RecordError::Corrupt {
                key: String::from_utf8_lossy(kv.key()).into_owned(),
                why: e.to_string(),
            })
        })
        .collect()
    }

    /// Writes `state` (unchanged when None) and `history` in one transaction fenced on the
    /// writer's leader key and on the state read at `read_mod_revision`. Returns the new mod
    /// revision of the state key (the read one when the state was left alone).
    pub async fn write(
        &self,
        fence: &Fence,
        read_mod_revision: i64,
        state: Option<&CoordinatorState>,
        history: &HistoryRecord,
    ) -> Result<i64, RecordError> {
        self.write_with(fence, read_mod_revision, state, history, Extra::default())
            .await
    }

    /// [`Records::write`] with more compares and operations in the same transaction (the
    /// Cloudberry backend's promote-ready key and content -1 rows): all of it lands together
    /// or none of it does.
    pub async fn write_with(
        &self,
        fence: &Fence,
        read_mod_revision: i64,
        state: Option<&CoordinatorState>,
        history: &HistoryRecord,
        extra: Extra,
    ) -> Result<i64, RecordError> {
        let prefix = self.history_prefix();
        let existing = self
            .call("reading the coordinator history keys", |c| {
                etcd_history::keys_under(c, prefix)
            })
            .await?;
        let mut ops = etcd_history::trim(&existing, HISTORY_LIMIT, 1);
        if let Some(state) = state {
            ops.push(TxnOp::put(
                self.state_key(),
                serde_json::to_vec(state).expect("state serializes"),
                None,
            ));
        }
        ops.push(TxnOp::put(
            format!("{}{:020}", self.history_prefix(), history.time_us),
            serde_json::to_vec(history).expect("history serializes"),
            None,
        ));
        ops.extend(extra.ops);
        let mut compares = vec![
            Compare::create_revision(fence.leader_key.clone(), CompareOp::Equal, fence.revision),
            Compare::mod_revision(self.state_key(), CompareOp::Equal, read_mod_revision),
        ];
        compares.extend(extra.compares);
        let txn = Txn::new().when(compares).and_then(ops);
        let resp = self
            .call("writing the coordinator records", |mut c| async move {
                c.txn(txn).await
            })
            .await?;
        if !resp.succeeded() {
            return Err(RecordError::Rejected(
                "our leader key is gone or the coordinator state changed since it was read".into(),
            ));
        }
        let written = resp.header().map(|h| h.revision()).unwrap_or_default();
        Ok(if state.is_some() {
            written
        } else {
            read_mod_revision
        })
    }
}
