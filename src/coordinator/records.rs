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

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};
use serde::{Deserialize, Serialize};

use crate::election::EtcdOptions;
pub use crate::etcd_conn::Fence;
use crate::etcd_conn::{fenced_txn, CallError, LazyClient};
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
    /// A promotion the SQL catalog's content -1 rows do not show yet. The catalog is another
    /// store (often on the coordinator that was just lost), so its rows cannot change in the
    /// transaction that records the outcome: the outcome leaves this, and the acting leader
    /// applies it to the catalog (fenced by its epoch there) and then clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog_update: Option<CatalogUpdate>,
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

impl IntentKind {
    /// The rule its configuration rows are changed under.
    pub fn rule(self) -> crate::core::Rule {
        match self {
            IntentKind::Failover => crate::core::Rule::CoordinatorFailover,
            IntentKind::Switchover => crate::core::Rule::CoordinatorSwitchover,
        }
    }
}

/// A promotion to be recorded in the SQL catalog's content -1 rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogUpdate {
    pub kind: IntentKind,
    /// The former coordinator and the promoted server (`host:port`).
    pub from: String,
    pub to: String,
    /// The outcome's history record, which the catalog's evidence row points back to.
    pub outcome_us: i64,
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

impl From<CallError> for RecordError {
    fn from(e: CallError) -> Self {
        RecordError::Unavailable(e.to_string())
    }
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
    client: LazyClient,
    ids: TimeIds,
}

impl Records {
    /// `timeout` bounds each call, and opening the connection.
    pub fn new(prefix: String, etcd: EtcdOptions, timeout: Duration) -> Self {
        Records {
            prefix,
            client: LazyClient::new(etcd, timeout, Some(timeout)),
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

    /// The recorded state (None before the first write).
    pub async fn load(&self) -> Result<Read, RecordError> {
        let key = self.state_key();
        let kv = self
            .client
            .get("reading the coordinator state", key.clone())
            .await?;
        let Some(kv) = kv else {
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
            .client
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
        self.client
            .call("reading the coordinator history", |c| {
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
            .client
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
        let txn = if extra.compares.is_empty() {
            fenced_txn(fence, self.state_key(), read_mod_revision, ops)
        } else {
            let mut compares = vec![
                Compare::create_revision(
                    fence.leader_key.clone(),
                    CompareOp::Equal,
                    fence.revision,
                ),
                Compare::mod_revision(self.state_key(), CompareOp::Equal, read_mod_revision),
            ];
            compares.extend(extra.compares);
            Txn::new().when(compares).and_then(ops)
        };
        let resp = self
            .client
            .txn("writing the coordinator records", txn)
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
