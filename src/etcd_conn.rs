//! One lazily opened etcd connection for the unary calls of the records ftsd keeps in etcd (the
//! brake, the coordinator pair's records, the Cloudberry backend): opened by the first call,
//! dropped after any failed or unanswered call so the next one opens a fresh connection (a
//! connection to a partitioned or restarted member is not reused), every call bounded.
//! Callers map [`CallError`] into their own error types.
//!
//! Also the shape of a leader's fenced record write ([`fenced_txn`]).

use std::future::Future;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, KeyValue, Txn, TxnOp, TxnResponse};
use tokio::sync::Mutex;

use crate::election::EtcdOptions;

/// Why one call failed; each message starts with what the call was for.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{what}: connect timed out")]
    ConnectTimedOut { what: String },
    #[error("{what}: {error}")]
    Connect {
        what: String,
        error: etcd_client::Error,
    },
    #[error("{what}: {error}")]
    Call {
        what: String,
        error: etcd_client::Error,
    },
    #[error("{what}: no answer within {within:?}")]
    NoAnswer { what: String, within: Duration },
}

/// See the module documentation.
pub struct LazyClient {
    etcd: EtcdOptions,
    call_timeout: Duration,
    connect_timeout: Option<Duration>,
    client: Mutex<Option<Client>>,
}

impl LazyClient {
    /// Each call is bounded by `call_timeout`; opening the connection by `connect_timeout`
    /// (None: only by the connect options' own dial timeout).
    pub fn new(
        etcd: EtcdOptions,
        call_timeout: Duration,
        connect_timeout: Option<Duration>,
    ) -> Self {
        LazyClient {
            etcd,
            call_timeout,
            connect_timeout,
            client: Mutex::new(None),
        }
    }

    /// The open connection, or a new one. The lock is held while connecting, so concurrent
    /// first calls open one connection, not one each.
    async fn client(&self, what: &str) -> Result<Client, CallError> {
        let mut guard = self.client.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let connect = self.etcd.connect();
        let connected = match self.connect_timeout {
            Some(bound) => tokio::time::timeout(bound, connect)
                .await
                .map_err(|_| CallError::ConnectTimedOut { what: what.into() })?,
            None => connect.await,
        };
        let c = connected.map_err(|error| CallError::Connect {
            what: what.into(),
            error,
        })?;
        *guard = Some(c.clone());
        Ok(c)
    }

    /// Runs `f` on the connection within the call timeout; a failure drops the connection.
    pub async fn call<T, F, Fut>(&self, what: &str, f: F) -> Result<T, CallError>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let client = self.client(what).await?;
        match tokio::time::timeout(self.call_timeout, f(client)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(error)) => {
                *self.client.lock().await = None;
                Err(CallError::Call {
                    what: what.into(),
                    error,
                })
            }
            Err(_) => {
                *self.client.lock().await = None;
                Err(CallError::NoAnswer {
                    what: what.into(),
                    within: self.call_timeout,
                })
            }
        }
    }

    /// `key` with its revisions (None: absent).
    pub async fn get(&self, what: &str, key: String) -> Result<Option<KeyValue>, CallError> {
        let mut resp = self
            .call(what, |mut c| async move { c.get(key, None).await })
            .await?;
        Ok(resp.take_kvs().into_iter().next())
    }

    /// Runs `txn`; whether its compares held is the caller's to read.
    pub async fn txn(&self, what: &str, txn: Txn) -> Result<TxnResponse, CallError> {
        self.call(what, |mut c| async move { c.txn(txn).await })
            .await
    }
}

/// What a leader's write is fenced on: the leader key of the writer's term, with the create
/// revision the term names (a deposed leader's key is gone, or another's has a new revision).
#[derive(Debug, Clone)]
pub struct Fence {
    pub leader_key: Vec<u8>,
    pub revision: i64,
}

/// `ops` as one transaction that applies only while the writer still holds `fence` and `key`
/// is still at the mod revision the decision read (0: absent; a write that raced ours since
/// makes ours fail).
pub fn fenced_txn(fence: &Fence, key: String, read_mod_revision: i64, ops: Vec<TxnOp>) -> Txn {
    Txn::new()
        .when([
            Compare::create_revision(fence.leader_key.clone(), CompareOp::Equal, fence.revision),
            Compare::mod_revision(key, CompareOp::Equal, read_mod_revision),
        ])
        .and_then(ops)
}
