//! The SQL catalog's content -1 rows after a promotion of the coordinator's standby.
//!
//! The promotion's outcome is recorded in etcd; the catalog is a second store, and on a
//! Greenplum cluster it lives on the coordinator that was just lost, so its rows cannot
//! change in the same transaction. The outcome therefore leaves the change pending in the
//! etcd state (`catalog_update`), and the acting leader applies it once the catalog answers:
//! as one catalog transition fenced by its epoch there, like any segment's (history rows in
//! `gp_configuration_history`, an evidence row), compare-and-set on each row's state as read;
//! then it clears the pending change in etcd, fenced on its leader key and the state as read.
//!
//! Crashing or losing office between the two writes is safe: the pending change stays, and
//! whoever acts next applies it again, which finds the rows already so and changes nothing
//! (the rows are computed from what the catalog holds, never replayed). A later promotion
//! replaces a pending change that was never applied, since the rows are set to the latest
//! outcome whatever they held.

use serde_json::json;
use tracing::Instrument;

use super::probe::Endpoint;
use super::records::{CatalogUpdate, CoordinatorState, Fence, HistoryRecord, Read};
use super::{lock, Watcher};
use crate::catalog::{Catalog, CatalogError, Transition};
use crate::core::coordinator::rows::failover_updates;
use crate::engine::second_opinion::BoxFuture;
use crate::model::{Epoch, SegmentConfig};

/// The catalog as the coordinator watch uses it (object-safe, so the watch stays
/// independent of the backend type).
pub trait PairRows: Send + Sync + 'static {
    fn load_rows(&self) -> BoxFuture<'_, Result<SegmentConfig, CatalogError>>;
    fn apply_transition<'a>(&'a self, t: &'a Transition)
        -> BoxFuture<'a, Result<(), CatalogError>>;
}

impl<C: Catalog> PairRows for C {
    fn load_rows(&self) -> BoxFuture<'_, Result<SegmentConfig, CatalogError>> {
        Box::pin(self.load())
    }

    fn apply_transition<'a>(
        &'a self,
        t: &'a Transition,
    ) -> BoxFuture<'a, Result<(), CatalogError>> {
        Box::pin(self.apply(t))
    }
}

/// What applying a pending change came to.
enum Applied {
    /// The rows changed (one line per row).
    Changed(Vec<String>),
    /// The rows already showed the promotion.
    AlreadySo,
    /// The catalog has no row for the promoted server: nothing can be changed there; the
    /// operator must add it (the note says so).
    NoRow(String),
}

impl Watcher {
    /// Applies `update` to the catalog and clears it in etcd; errors are logged once per
    /// episode and retried the next round.
    pub(super) async fn apply_catalog_update(
        &self,
        fence: &Fence,
        epoch: i64,
        read: &Read,
        update: &CatalogUpdate,
    ) {
        let span = tracing::info_span!("coordinator_catalog_rows", content = -1, from = %update.from, to = %update.to);
        self.apply_and_clear(fence, epoch, read, update)
            .instrument(span)
            .await
    }

    async fn apply_and_clear(
        &self,
        fence: &Fence,
        epoch: i64,
        read: &Read,
        update: &CatalogUpdate,
    ) {
        let Some(catalog) = self.catalog.get() else {
            return;
        };
        let applied = match self.apply_rows(&**catalog, fence, epoch, update).await {
            Ok(Some(a)) => a,
            // Office lost: nothing is written, by this step or the next.
            Ok(None) => return,
            Err(e) => {
                let text = e.to_string();
                if lock(&self.memory).catalog_error.replace(text.clone()) != Some(text.clone()) {
                    if matches!(e, CatalogError::Fenced { .. }) {
                        tracing::info!(error = %text, "not updating the catalog's content -1 rows: a newer leader acts");
                    } else {
                        tracing::warn!(error = %text, "cannot update the catalog's content -1 rows yet; retrying every round");
                    }
                }
                return;
            }
        };
        lock(&self.memory).catalog_error = None;
        let (event, desc) = match &applied {
            Applied::Changed(rows) => (
                "catalog_updated",
                format!("ftsd: catalog content -1 rows updated: {}", rows.join("; ")),
            ),
            Applied::AlreadySo => (
                "catalog_updated",
                "ftsd: catalog content -1 rows already showed the promotion".to_string(),
            ),
            Applied::NoRow(note) => {
                tracing::error!(note = %note, "the catalog's content -1 rows cannot show the promotion");
                (
                    "catalog_unchanged",
                    format!("ftsd: catalog content -1 rows not changed: {note}"),
                )
            }
        };
        let Some(state) = &read.state else {
            return;
        };
        let id = self.records.next_id();
        let cleared = CoordinatorState {
            catalog_update: None,
            epoch,
            instance_id: self.instance_id.clone(),
            updated_us: id,
            ..state.clone()
        };
        let history = HistoryRecord {
            time_us: id,
            event: event.into(),
            from: update.from.clone(),
            to: update.to.clone(),
            epoch,
            instance_id: self.instance_id.clone(),
            desc,
            evidence: json!({"update": update}),
        };
        match self
            .records
            .write(fence, read.mod_revision, Some(&cleared), &history)
            .await
        {
            Ok(_) => tracing::info!(event, "the catalog's content -1 rows show the promotion"),
            // Applied again next round, which changes nothing.
            Err(e) => {
                tracing::warn!(error = %e, "catalog rows updated but the pending change is not cleared yet")
            }
        }
    }

    async fn apply_rows(
        &self,
        catalog: &dyn PairRows,
        fence: &Fence,
        epoch: i64,
        update: &CatalogUpdate,
    ) -> Result<Option<Applied>, CatalogError> {
        let (Some(from), Some(to)) = (Endpoint::parse(&update.from), Endpoint::parse(&update.to))
        else {
            return Err(CatalogError::Corrupt(format!(
                "the pending catalog change names {} and {}, which are not host:port",
                update.from, update.to
            )));
        };
        let config = catalog.load_rows().await?;
        let updates = match failover_updates(
            &config.segments,
            (&from.host, from.port),
            (&to.host, to.port),
        ) {
            Ok(u) if u.is_empty() => return Ok(Some(Applied::AlreadySo)),
            Ok(u) => u,
            Err(note) => return Ok(Some(Applied::NoRow(note))),
        };
        // The catalog's fence is the epoch; the office is checked too, so an instance that
        // lost it while the catalog was read writes nothing even before a newer epoch is
        // recorded there.
        if self.gate(fence.revision).is_none() {
            return Ok(None);
        }
        let rows: Vec<String> = updates.iter().map(|u| u.history_desc()).collect();
        let t = Transition {
            epoch: Epoch(epoch),
            instance_id: self.instance_id.clone(),
            content: -1,
            rule: update.kind.rule(),
            updates,
            expect: Vec::new(),
            evidence: json!({
                "rule": update.kind.rule(),
                "coordinator": {
                    "from": update.from,
                    "to": update.to,
                    "outcome_us": update.outcome_us,
                    "history": "ftsctl history --content -1",
                },
            }),
        };
        catalog.apply_transition(&t).await?;
        Ok(Some(Applied::Changed(rows)))
    }
}
