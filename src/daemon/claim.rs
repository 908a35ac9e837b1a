//! Claiming the epoch in the catalog. The elector only announces office (an office event
//! with the epoch it won); recording that epoch in `fts_epoch` is the daemon's job, done by the
//! same [`claim`] for an elected leader and for `--no-election`.

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::watch;

use crate::catalog::{Catalog, CatalogError};
use crate::election::{ElectedAuthority, OfficeEvent};
use crate::engine::Authority;
use crate::model::Epoch;

/// Records `epoch` in the catalog while `holds()` says it is still ours, retrying while the
/// catalog is unreachable. A newer epoch in the catalog fences `authority` out.
///
/// The catalog's claim also ends a stalled former leader's transaction that holds the fence
/// row (see `PgCatalog::claim_epoch`); callers only claim once their own authority is
/// established (a verified leader key with a live lease, or `--no-election`).
pub async fn claim<C: Catalog, A: Authority>(
    catalog: &C,
    authority: &A,
    epoch: Epoch,
    instance_id: &str,
    holds: impl Fn() -> bool,
) {
    let mut backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .without_max_times()
        .build();
    while holds() {
        match catalog.claim_epoch(epoch, instance_id).await {
            Ok(()) => {
                tracing::info!(%epoch, "epoch recorded in the catalog");
                return;
            }
            Err(CatalogError::Fenced { current, .. }) => {
                authority.fenced_out(current);
                return;
            }
            Err(e) => {
                let delay = backoff.next().unwrap_or(Duration::from_secs(5));
                tracing::warn!(error = %e, retry_in = ?delay, "cannot record the epoch in the catalog yet");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Claims each epoch the elector announces, for as long as it is held; a claim still retrying
/// when office changes is dropped in favour of the new event. Ends when the elector is gone.
pub async fn follow_office<C: Catalog>(
    catalog: Arc<C>,
    authority: Arc<ElectedAuthority>,
    instance_id: String,
    mut events: watch::Receiver<OfficeEvent>,
) {
    loop {
        let won = events.borrow_and_update().epoch;
        if let Some(epoch) = won {
            let holds = || authority.office().is_some_and(|o| o.epoch == epoch);
            tokio::select! {
                _ = claim(&*catalog, &authority, epoch, &instance_id, holds) => {}
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
