//! Claiming the epoch in the catalog. The elector only announces office (an office event
//! naming the term's etcd revision); recording the epoch in `fts_epoch` is the daemon's job,
//! done by the same [`claim`] for an elected leader and for `--no-election`. An elected leader
//! acts only with the epoch the catalog recorded (the generation rule of `core::epoch`).

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::watch;

use crate::catalog::{Catalog, CatalogError, EtcdRevision};
use crate::election::members::Membership;
use crate::election::{ElectedAuthority, OfficeEvent};
use crate::engine::Authority;
use crate::model::Epoch;

/// Records the epoch of the office granted at `revision` while `holds()` says it is still
/// ours, retrying while the catalog is unreachable; returns the recorded epoch. A newer epoch
/// in the catalog fences `authority` out (None).
///
/// The catalog's claim also ends a stalled former leader's transaction that holds the fence
/// row (see `PgCatalog::claim_epoch`); callers only claim once their own authority is
/// established (a verified leader key with a live lease, or `--no-election`).
pub async fn claim<C: Catalog, A: Authority, E: EtcdRevision>(
    catalog: &C,
    authority: &A,
    revision: i64,
    instance_id: &str,
    etcd: E,
    holds: impl Fn() -> bool,
) -> Option<Epoch> {
    let mut backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .without_max_times()
        .build();
    while holds() {
        match catalog
            .claim_epoch(revision, instance_id, etcd.clone())
            .await
        {
            Ok(epoch) => {
                tracing::info!(%epoch, revision, "epoch recorded in the catalog");
                return Some(epoch);
            }
            Err(CatalogError::Fenced { current, .. }) => {
                authority.fenced_out(current);
                return None;
            }
            Err(e) => {
                let delay = backoff.next().unwrap_or(Duration::from_secs(5));
                tracing::warn!(error = %e, retry_in = ?delay, "cannot record the epoch in the catalog yet");
                tokio::time::sleep(delay).await;
            }
        }
    }
    None
}

/// etcd's answer for one term: its current revision, while the term's key is still ours.
#[derive(Clone)]
struct Term {
    authority: Arc<ElectedAuthority>,
    revision: i64,
}

impl EtcdRevision for Term {
    async fn current(&self) -> Option<Result<i64, String>> {
        Some(self.authority.etcd_revision(self.revision).await)
    }
}

/// Claims each term the elector announces, for as long as it is held, and lets the
/// authority act with the recorded epoch; a claim still retrying when office changes is
/// dropped in favour of the new event. Ends when the elector is gone.
pub async fn follow_office<C: Catalog>(
    catalog: Arc<C>,
    authority: Arc<ElectedAuthority>,
    membership: Arc<Membership>,
    instance_id: String,
    mut events: watch::Receiver<OfficeEvent>,
) {
    loop {
        let won = events.borrow_and_update().epoch;
        if let Some(Epoch(revision)) = won {
            let term = Term {
                authority: authority.clone(),
                revision,
            };
            let holds = || authority.office().is_some_and(|o| o.revision == revision);
            let claiming = claim(&*catalog, &authority, revision, &instance_id, term, holds);
            tokio::select! {
                claimed = claiming => {
                    if let Some(epoch) = claimed {
                        if authority.claimed(revision, epoch) {
                            membership.update(|m| m.epoch = Some(epoch.0));
                        }
                    }
                }
                changed = events.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    continue;
                }
            }
        }
        if events.changed().await.is_err() {
            return;
        }
    }
}
