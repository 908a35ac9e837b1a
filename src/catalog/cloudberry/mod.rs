//! The Cloudberry configuration backend: a Cloudberry cluster built with
//! `--enable-external-fts` keeps its segment configuration as a text blob in etcd
//! (`…/fts_dump_file_key`, see [`blob`]), and this backend reads and writes it there.
//!
//! * **Fence.** Every blob write is one etcd transaction that compares (a) ftsd's recorded
//!   epoch key (`…/ftsd/epoch`) unchanged since it was read holding an epoch no newer than the
//!   writer's (recording the writer's when older, as the SQL fence does), (b) when elected, the
//!   writer's leader key under `…/fts_ha_lock` still existing with the create revision its
//!   epoch names, and (c) the blob's mod revision still being the one the decision read. A
//!   deposed leader, one whose lease lapsed, and one that decided on an old blob all fail the
//!   compare; nothing is written.
//! * **History and evidence** are written in that same transaction under `…/ftsd/`, and kept
//!   bounded (the oldest are deleted in the transaction that adds new ones).
//! * **Coordinator.** After the fenced write the coordinator is told through
//!   `gp_rewrite_segments_info` ([`coordinator`]).
//!
//! * `conf` — `cbdb_etcd.conf`; `blob` — the blob's line format; `keys` — the key layout;
//!   `records` — history/evidence rows; `coordinator` — the notification; `pair` — the
//!   content -1 rows as the coordinator watch reads and changes them.

pub mod blob;
pub mod conf;
pub mod coordinator;
pub mod keys;
pub mod pair;
pub mod records;

use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp, TxnResponse};
use tokio::sync::Mutex;

use super::queries::{EvidenceRow, HistoryFilter, HistoryRow};
use super::{Catalog, CatalogError, EtcdRevision, Transition};
use crate::core::epoch::{plan_claim, revision, ClaimPlan};
use crate::election::EtcdOptions;
use crate::etcd_conn::{CallError, LazyClient};
use crate::etcd_history::{self, micros, TimeIds};
use crate::model::{ContentId, Epoch, Segment, SegmentConfig};
use conf::CbdbEtcdConf;
use coordinator::{CoordinatorSettings, Notified};
use keys::CbdbKeys;
use records::{EvidenceRecord, HistoryRecord};

/// Settings of the backend.
#[derive(Debug, Clone)]
pub struct CloudberrySettings {
    pub conf: CbdbEtcdConf,
    pub etcd: EtcdOptions,
    pub coordinator: CoordinatorSettings,
    /// Whether writers hold office through the election on `…/fts_ha_lock`; then each write
    /// also compares the writer's leader key. `gpfts -A` and `--no-election` run without.
    pub elected: bool,
    /// History and evidence rows kept (each).
    pub history_limit: usize,
    /// Bound on one etcd call.
    pub call_timeout: Duration,
}

/// The blob as read for a decision: its rows and its mod revision.
#[derive(Debug, Clone)]
struct Snapshot {
    rows: Vec<Segment>,
    mod_revision: i64,
}

pub struct CloudberryCatalog {
    settings: CloudberrySettings,
    keys: CbdbKeys,
    client: LazyClient,
    /// The snapshot the current cycle decides on; writes are serialized through this lock and
    /// each successful write moves it to what was written.
    snapshot: Mutex<Option<Snapshot>>,
    /// Ids of evidence rows (µs since the epoch, kept strictly increasing).
    ids: TimeIds,
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> CatalogError {
    CatalogError::Unavailable(format!("{what}: {e}"))
}

/// A failed connect names the Cloudberry etcd (`cbdb_etcd.conf`'s, which need not be the
/// election's) rather than the call that opened the connection.
fn call_failed(e: CallError) -> CatalogError {
    match e {
        CallError::Connect { error, .. } => unavailable("connecting to the Cloudberry etcd", error),
        e => CatalogError::Unavailable(e.to_string()),
    }
}

/// Compares that only a blob read for a decision can pass: the blob's mod revision (0 when the
/// key is absent, which etcd compares as such).
fn blob_unchanged(key: &str, mod_revision: i64) -> Compare {
    Compare::mod_revision(key, CompareOp::Equal, mod_revision)
}

impl CloudberryCatalog {
    pub fn new(settings: CloudberrySettings) -> Self {
        let keys = CbdbKeys::new(&settings.conf);
        // No bound on connecting beyond the dial timeout of `settings.etcd`.
        let client = LazyClient::new(settings.etcd.clone(), settings.call_timeout, None);
        CloudberryCatalog {
            settings,
            keys,
            client,
            snapshot: Mutex::new(None),
            ids: TimeIds::default(),
        }
    }

    pub fn keys(&self) -> &CbdbKeys {
        &self.keys
    }

    /// Runs one etcd call within `call_timeout` ([`LazyClient::call`]).
    async fn call<T, F, Fut>(&self, what: &str, f: F) -> Result<T, CatalogError>
    where
        F: FnOnce(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        self.client.call(what, f).await.map_err(call_failed)
    }

    async fn txn(&self, what: &str, txn: Txn) -> Result<TxnResponse, CatalogError> {
        self.client.txn(what, txn).await.map_err(call_failed)
    }

    async fn get(
        &self,
        key: String,
        what: &str,
    ) -> Result<Option<etcd_client::KeyValue>, CatalogError> {
        self.client.get(what, key).await.map_err(call_failed)
    }

    /// The blob's text and mod revision (None when the key is absent).
    pub async fn read_blob(&self) -> Result<Option<(String, i64)>, CatalogError> {
        let kv = self
            .get(self.keys.blob(), "reading the configuration blob")
            .await?;
        kv.map(|kv| {
            let text = String::from_utf8(kv.value().to_vec()).map_err(|_| {
                CatalogError::Corrupt(format!("{} is not UTF-8 text", self.keys.blob()))
            })?;
            Ok((text, kv.mod_revision()))
        })
        .transpose()
    }

    /// `gpfts -W 1`: puts `text` as the blob, unconditionally (an operator's tool, as in
    /// `gpfts`), after checking that it parses.
    pub async fn put_blob(&self, text: &str) -> Result<(), CatalogError> {
        blob::parse(text).map_err(|e| CatalogError::Corrupt(e.to_string()))?;
        let (key, value) = (self.keys.blob(), text.to_owned());
        self.call("writing the configuration blob", |mut c| async move {
            c.put(key, value, None).await
        })
        .await
        .map(drop)
    }

    /// `gpfts -W 3`: deletes the blob.
    pub async fn delete_blob(&self) -> Result<bool, CatalogError> {
        let key = self.keys.blob();
        let resp = self
            .call("deleting the configuration blob", |mut c| async move {
                c.delete(key, None).await
            })
            .await?;
        Ok(resp.deleted() > 0)
    }

    /// `gpfts -W 5`: the standby-promote-ready key's value.
    pub async fn standby_promote_ready(&self) -> Result<Option<String>, CatalogError> {
        let kv = self
            .get(
                self.keys.standby_promote_ready(),
                "reading the promote-ready key",
            )
            .await?;
        Ok(kv.map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
    }

    /// The coordinator's `setStandbyPromoteReady` (`1` or `0`, a plain put). ftsd never calls
    /// it; the simulator's coordinator pair does.
    pub async fn set_standby_promote_ready(&self, ready: bool) -> Result<(), CatalogError> {
        let (key, value) = (
            self.keys.standby_promote_ready(),
            if ready { "1" } else { "0" },
        );
        self.call("writing the promote-ready key", |mut c| async move {
            c.put(key, value, None).await
        })
        .await
        .map(drop)
    }

    /// Writes `…/fts_ha_hostname` as `gpfts`'s leader does (plain put, no lease), fenced on the
    /// leader key so a deposed leader cannot overwrite its successor's name.
    pub async fn announce_leader(
        &self,
        leader_key: Vec<u8>,
        revision: i64,
        host: &str,
    ) -> Result<bool, CatalogError> {
        let txn = Txn::new()
            .when([Compare::create_revision(
                leader_key,
                CompareOp::Equal,
                revision,
            )])
            .and_then([TxnOp::put(self.keys.ha_hostname(), host, None)]);
        let resp = self.txn("writing fts_ha_hostname", txn).await?;
        Ok(resp.succeeded())
    }

    /// The key whose create revision is `rev` under the lock name: the leader key of the term
    /// an elected epoch names.
    async fn leader_key(&self, rev: i64) -> Result<Option<Vec<u8>>, CatalogError> {
        let prefix = format!("{}/", self.keys.ha_lock());
        let mut resp = self
            .call("reading the leader keys", |mut c| async move {
                c.get(
                    prefix,
                    Some(GetOptions::new().with_prefix().with_keys_only()),
                )
                .await
            })
            .await?;
        Ok(resp
            .take_kvs()
            .into_iter()
            .find(|kv| kv.create_revision() == rev)
            .map(|kv| kv.key().to_vec()))
    }

    async fn recorded_epoch(&self) -> Result<(Epoch, i64), CatalogError> {
        match self.get(self.keys.epoch(), "reading ftsd's epoch").await? {
            None => Ok((Epoch(0), 0)),
            Some(kv) => {
                let text = String::from_utf8_lossy(kv.value()).into_owned();
                let epoch = text.trim().parse::<i64>().map_err(|_| {
                    CatalogError::Corrupt(format!(
                        "{} holds {text:?}, not an epoch",
                        self.keys.epoch()
                    ))
                })?;
                Ok((Epoch(epoch), kv.mod_revision()))
            }
        }
    }

    /// Keys under `prefix` (oldest first), to trim to the limit.
    async fn keys_under(&self, prefix: String) -> Result<Vec<Vec<u8>>, CatalogError> {
        self.call("reading history keys", |c| {
            etcd_history::keys_under(c, prefix)
        })
        .await
    }

    /// Tells the coordinator about the blob written at `written`, unless it has changed since.
    async fn notify(&self, rows: &[Segment], text: &str, written: i64) {
        let Some(coordinator) = coordinator::active(rows) else {
            tracing::warn!(
                "no live coordinator in the configuration; the blob in etcd is all there is"
            );
            return;
        };
        // Only re-submit the blob that is still there: a newer write is its writer's to notify.
        let unchanged = Txn::new().when([blob_unchanged(&self.keys.blob(), written)]);
        let still = self.txn("re-reading the blob", unchanged).await;
        if !matches!(still, Ok(ref r) if r.succeeded()) {
            tracing::info!("the blob changed after our write; not notifying the coordinator");
            return;
        }
        let outcome =
            coordinator::rewrite_segments_info(&self.settings.coordinator, coordinator, text).await;
        match outcome {
            Notified::Accepted => tracing::info!(
                dbid = coordinator.dbid,
                address = %coordinator.address,
                "coordinator notified (gp_rewrite_segments_info)"
            ),
            Notified::InRecovery => tracing::info!(
                dbid = coordinator.dbid,
                "coordinator in recovery (promoted standby); it reads the blob from etcd"
            ),
            Notified::NoLiveCoordinator => {}
            Notified::Failed(e) => tracing::warn!(
                dbid = coordinator.dbid,
                error = %e,
                "fail to update segment: coordinator not notified; the blob in etcd is current"
            ),
        }
    }

    /// Every record under `prefix`, newest first (keys sort by time).
    async fn newest_first<T: serde::de::DeserializeOwned>(
        &self,
        prefix: String,
    ) -> Result<Vec<T>, CatalogError> {
        self.call("reading ftsd history/evidence", |c| {
            etcd_history::newest_first(c, prefix, None)
        })
        .await?
        .into_iter()
        .map(|kv| {
            serde_json::from_slice(kv.value()).map_err(|e| {
                CatalogError::Corrupt(format!("{}: {e}", String::from_utf8_lossy(kv.key())))
            })
        })
        .collect()
    }

    /// History rows newest first, as the SQL backend's `history`.
    pub async fn history(&self, filter: &HistoryFilter) -> Result<Vec<HistoryRow>, CatalogError> {
        let since = filter.since.map(micros).unwrap_or(0);
        let records: Vec<HistoryRecord> = self.newest_first(self.keys.history_prefix()).await?;
        Ok(records
            .into_iter()
            .filter(|r| {
                r.time_us >= since
                    && filter.content.is_none_or(|c| c == r.content)
                    && filter.dbid.is_none_or(|d| d == r.dbid)
            })
            .take(filter.limit.max(1) as usize)
            .map(HistoryRow::from)
            .collect())
    }

    /// The evidence of `content`'s last transition.
    pub async fn last_evidence(
        &self,
        content: ContentId,
    ) -> Result<Option<EvidenceRow>, CatalogError> {
        let records: Vec<EvidenceRecord> = self.newest_first(self.keys.evidence_prefix()).await?;
        Ok(records
            .into_iter()
            .find(|r| r.content == content)
            .map(EvidenceRow::from))
    }
}

impl Catalog for CloudberryCatalog {
    async fn load(&self) -> Result<SegmentConfig, CatalogError> {
        let (text, mod_revision) = self.read_blob().await?.ok_or_else(|| {
            CatalogError::Corrupt(format!(
                "{} is absent; skipped current round",
                self.keys.blob()
            ))
        })?;
        let rows = blob::parse(&text)
            .map_err(|e| CatalogError::Corrupt(format!("{}: {e}", self.keys.blob())))?;
        *self.snapshot.lock().await = Some(Snapshot {
            rows: rows.clone(),
            mod_revision,
        });
        Ok(SegmentConfig::new(rows))
    }

    async fn claim_epoch<E: EtcdRevision>(
        &self,
        own_revision: i64,
        instance_id: &str,
        etcd: E,
    ) -> Result<Epoch, CatalogError> {
        let (recorded, mod_revision) = self.recorded_epoch().await?;
        let now = match etcd.current().await {
            None => None,
            Some(Ok(r)) => Some(r),
            Some(Err(e)) => return Err(unavailable("confirming our leader key", e)),
        };
        let epoch = match plan_claim(recorded, own_revision, now) {
            ClaimPlan::Claim(e) => e,
            ClaimPlan::Fenced => {
                return Err(CatalogError::Fenced {
                    mine: Epoch(own_revision),
                    current: recorded,
                })
            }
        };
        // The compare stands in for the SQL backend's row lock: a claim recorded since we read
        // makes ours fail, and the daemon's claim loop retries on the new record.
        let txn = Txn::new()
            .when([Compare::mod_revision(
                self.keys.epoch(),
                CompareOp::Equal,
                mod_revision,
            )])
            .and_then([
                TxnOp::put(self.keys.epoch(), epoch.0.to_string(), None),
                TxnOp::put(self.keys.epoch_holder(), instance_id, None),
            ]);
        let resp = self.txn("recording the epoch", txn).await?;
        if resp.succeeded() {
            Ok(epoch)
        } else {
            Err(CatalogError::Unavailable(
                "another claim was recorded meanwhile; retrying".into(),
            ))
        }
    }

    async fn apply(&self, t: &Transition) -> Result<(), CatalogError> {
        let mut guard = self.snapshot.lock().await;
        let snap = guard.as_ref().ok_or_else(|| {
            CatalogError::Unavailable("no configuration read yet this cycle".into())
        })?;
        for (dbid, want) in &t.expect {
            if snap
                .rows
                .iter()
                .find(|r| r.dbid == *dbid)
                .map(Segment::state)
                != Some(*want)
            {
                return Err(CatalogError::Stale {
                    dbid: *dbid,
                    expected: want.to_string(),
                });
            }
        }
        let mut rows = snap.rows.clone();
        let changes: Vec<_> = t.updates.iter().map(|u| (u.dbid, u.from, u.to)).collect();
        blob::apply_states(&mut rows, &changes).map_err(|(dbid, from)| CatalogError::Stale {
            dbid,
            expected: from.to_string(),
        })?;
        let text = blob::render(&rows);

        // As the SQL backend's fence (`epoch <= mine`, recording ours): a newer epoch refuses
        // us now, and the compare on the epoch key's mod revision refuses us if any claim is
        // recorded between this read and the transaction.
        let (recorded, epoch_mod) = self.recorded_epoch().await?;
        if recorded > t.epoch {
            return Err(CatalogError::Fenced {
                mine: t.epoch,
                current: recorded,
            });
        }
        let mut compares = vec![
            Compare::mod_revision(self.keys.epoch(), CompareOp::Equal, epoch_mod),
            blob_unchanged(&self.keys.blob(), snap.mod_revision),
        ];
        if self.settings.elected {
            let rev = revision(t.epoch);
            let key = self.leader_key(rev).await?.ok_or(CatalogError::Fenced {
                mine: t.epoch,
                current: t.epoch,
            })?;
            compares.push(Compare::create_revision(key, CompareOp::Equal, rev));
        }

        let id = self.ids.next();
        let evidence = EvidenceRecord {
            id,
            time_us: id,
            epoch: t.epoch.0,
            instance_id: t.instance_id.clone(),
            content: t.content,
            rule: t.rule.as_str().to_owned(),
            dbids: t.updates.iter().map(|u| u.dbid).collect(),
            evidence: t.evidence.clone(),
        };
        // A refusal (no row changes) records its evidence under the same compares but leaves
        // the blob, and the coordinator, alone.
        let changes_blob = !t.updates.is_empty();
        let mut ops = Vec::new();
        if recorded < t.epoch {
            ops.push(TxnOp::put(self.keys.epoch(), t.epoch.0.to_string(), None));
            ops.push(TxnOp::put(
                self.keys.epoch_holder(),
                t.instance_id.as_str(),
                None,
            ));
        }
        if changes_blob {
            ops.push(TxnOp::put(self.keys.blob(), text.clone(), None));
        }
        let existing_history = self.keys_under(self.keys.history_prefix()).await?;
        let existing_evidence = self.keys_under(self.keys.evidence_prefix()).await?;
        let limit = self.settings.history_limit;
        ops.extend(etcd_history::trim(
            &existing_history,
            limit,
            t.updates.len(),
        ));
        ops.extend(etcd_history::trim(&existing_evidence, limit, 1));
        for u in &t.updates {
            let h = HistoryRecord {
                time_us: id,
                dbid: u.dbid,
                content: u.content,
                desc: u.history_desc(),
                rule: evidence.rule.clone(),
                epoch: t.epoch.0,
                instance_id: t.instance_id.clone(),
                evidence_id: id,
            };
            ops.push(TxnOp::put(
                self.keys.history(id, u.dbid),
                serde_json::to_vec(&h).expect("history record serializes"),
                None,
            ));
        }
        ops.push(TxnOp::put(
            self.keys.evidence(id),
            serde_json::to_vec(&evidence).expect("evidence record serializes"),
            None,
        ));
        let txn = Txn::new().when(compares).and_then(ops);
        let resp = self.txn("writing the configuration blob", txn).await?;
        if !resp.succeeded() {
            return Err(self.why_refused(t.epoch, snap.mod_revision).await);
        }
        if !changes_blob {
            return Ok(());
        }
        let written = resp.header().map(|h| h.revision()).unwrap_or_default();
        *guard = Some(Snapshot {
            rows: rows.clone(),
            mod_revision: written,
        });
        drop(guard);
        self.notify(&rows, &text, written).await;
        Ok(())
    }
}

impl CloudberryCatalog {
    /// Names the compare that failed: a newer epoch is `Fenced`, a changed blob is `Stale`.
    async fn why_refused(&self, mine: Epoch, read_at: i64) -> CatalogError {
        match self.recorded_epoch().await {
            Ok((current, _)) if current != mine => CatalogError::Fenced { mine, current },
            _ => match self.read_blob().await {
                Ok(Some((_, m))) if m != read_at => CatalogError::Stale {
                    dbid: 0,
                    expected: format!("the blob at mod revision {read_at} (now {m})"),
                },
                // Our epoch and the blob both held: the leader key is gone (lease lapsed).
                _ => CatalogError::Fenced {
                    mine,
                    current: mine,
                },
            },
        }
    }
}
