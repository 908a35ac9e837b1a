//! Where the segment configuration lives and how transitions reach it.
//!
//! The trait keeps the cycle independent of the backend. Two backends: the SQL backend
//! (`gp_segment_configuration` in PostgreSQL or on a Greenplum coordinator, `postgres`) and
//! the Cloudberry backend (the configuration blob a Cloudberry cluster built with
//! `--enable-external-fts` keeps in etcd, `cloudberry`).

pub mod any;
pub mod cloudberry;
pub mod postgres;
pub mod queries;
pub mod schema;

use std::future::Future;

use serde::{Deserialize, Serialize};

use crate::core::{RowUpdate, Rule};
use crate::model::{ContentId, Dbid, Epoch, SegmentConfig, SegmentState};

/// One pair's transition, applied atomically together with its history rows, the epoch fence
/// and its evidence row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Transition {
    pub epoch: Epoch,
    pub instance_id: String,
    pub content: ContentId,
    pub rule: Rule,
    pub updates: Vec<RowUpdate>,
    /// Rows that must still hold these states when the fence is taken (checked in the same
    /// transaction; `Stale` otherwise). Re-PROMOTE writes no row and relies on this.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expect: Vec<(Dbid, SegmentState)>,
    /// Why: probe attempts, timings, reply fields, the snapshot the decision used.
    pub evidence: serde_json::Value,
}

/// Errors a catalog backend reports. `Fenced` and `Stale` are expected outcomes of safe
/// operation, not faults: the transaction was rolled back and nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("fenced: catalog epoch is {current}, ours is {mine}; a newer leader has taken office")]
    Fenced { mine: Epoch, current: Epoch },
    #[error("stale snapshot: row dbid={dbid} no longer holds {expected}; the transition was not applied")]
    Stale { dbid: i16, expected: String },
    #[error("catalog unavailable: {0}")]
    Unavailable(String),
    #[error("catalog schema problem: {0}")]
    Schema(String),
    #[error("catalog holds invalid data: {0}")]
    Corrupt(String),
    /// A shadow instance's catalog refuses every write (`ftsd run --shadow`).
    #[error("{0}")]
    Shadow(String),
}

impl CatalogError {
    /// Whether retrying later may succeed (connection problems) as opposed to a definite "no".
    pub fn is_transient(&self) -> bool {
        matches!(self, CatalogError::Unavailable(_))
    }
}

/// etcd's side of a claim (see `core::epoch`), asked with the fence row locked.
pub trait EtcdRevision: Clone + Send + Sync + 'static {
    /// etcd's current revision, read linearizably after confirming that the claimer's leader
    /// key is still its own: `Some(Err)` when that cannot be confirmed, None without etcd.
    fn current(&self) -> impl Future<Output = Option<Result<i64, String>>> + Send;
}

/// No etcd (`--no-election`): claims stay in generation 0.
#[derive(Debug, Clone, Copy)]
pub struct NoEtcd;

impl EtcdRevision for NoEtcd {
    async fn current(&self) -> Option<Result<i64, String>> {
        None
    }
}

/// A catalog backend.
pub trait Catalog: Send + Sync + 'static {
    /// Reads every row of the segment configuration in one snapshot.
    fn load(&self) -> impl Future<Output = Result<SegmentConfig, CatalogError>> + Send;

    /// Records the epoch of an office granted at `revision` (taking office) and returns it:
    /// the recorded generation with our revision, or the next generation after an etcd
    /// rebuild (see `core::epoch`, whose rule this follows; `etcd` is asked under the fence
    /// row lock). Fails with `Fenced` when a newer epoch is recorded.
    fn claim_epoch<E: EtcdRevision>(
        &self,
        revision: i64,
        instance_id: &str,
        etcd: E,
    ) -> impl Future<Output = Result<Epoch, CatalogError>> + Send;

    /// Applies one pair's transition in a single transaction fenced by its epoch: all of it or
    /// nothing.
    fn apply(&self, t: &Transition) -> impl Future<Output = Result<(), CatalogError>> + Send;
}

impl<C: Catalog> Catalog for std::sync::Arc<C> {
    fn load(&self) -> impl Future<Output = Result<SegmentConfig, CatalogError>> + Send {
        (**self).load()
    }

    fn claim_epoch<E: EtcdRevision>(
        &self,
        revision: i64,
        instance_id: &str,
        etcd: E,
    ) -> impl Future<Output = Result<Epoch, CatalogError>> + Send {
        (**self).claim_epoch(revision, instance_id, etcd)
    }

    fn apply(&self, t: &Transition) -> impl Future<Output = Result<(), CatalogError>> + Send {
        (**self).apply(t)
    }
}
