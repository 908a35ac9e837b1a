//! The coordinator pair of a Cloudberry external-FTS cluster (`catalog.backend =
//! "cloudberry"`), probed and promoted the way `gpfts` does it, through the servers' FTS
//! handlers (the FTS wire protocol: a connection with `gpconntype=fts`, one simple query
//! `<TYPE> dbid=<d> contid=-1`, a reply of five raw booleans):
//!
//! * **PROBE to the acting coordinator** (its content -1 row's dbid, from the blob): an
//!   external-FTS coordinator answers as a segment primary does for its mirror —
//!   `is_mirror_up`, `is_in_sync` (the standby's walsender streams), `is_syncrep_enabled`
//!   (commits wait for its flush), `is_role_mirror`, `request_retry`. The standby is in sync
//!   when the first three are all set; the reply carries no replay position.
//! * **PROBE to the standby**: a standby answers `is_role_mirror = 1`; a promoted one `0`.
//! * **The promote-ready key** (`…/fts_standby_promote_ready_key`) is read every round: the
//!   standby ignores PROMOTE unless it reads `1` (and writes `0` itself as it promotes), so
//!   ftsd refuses (`promote_not_ready`) rather than send a PROMOTE that would be ignored, and
//!   records its intent only while the key still reads `1` (a compare in the intent's
//!   transaction).
//! * **PROMOTE to the standby** promotes it; the promotion is verified by the standby
//!   answering PROBE as a primary (`is_role_mirror = 0`).
//! * **The outcome** is recorded together with the content -1 rows of the blob (the old
//!   coordinator `m`/`d`/`n`, the new one `p`/`u`/`n`), their history rows and evidence, in
//!   one fenced transaction ([`crate::catalog::cloudberry::pair`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::probe::{self, Endpoint, Round};
use super::seen::{Answer, PrimarySide, Seen, StandbySide};
use crate::catalog::cloudberry::pair::find_server;
use crate::catalog::cloudberry::CloudberryCatalog;
use crate::core::coordinator::{PromoteReady, SyncSeen, SyncSource};
use crate::model::{Dbid, Segment};
use crate::wire::client::{send_message_by, Credentials, Target};
use crate::wire::failure::{AttemptError, FailureKind};
use crate::wire::{MessageType, ProbeReply};

/// How the watch reaches a Cloudberry pair.
pub struct CbPair {
    /// The backend's etcd: the blob (dbids), the promote-ready key, the content -1 rows. An
    /// instance of its own, so its reads never move the segment engine's snapshot.
    pub catalog: Arc<CloudberryCatalog>,
    /// The FTS credentials (`probe.user`): the coordinator authenticates FTS connections as
    /// a primary does and requires a superuser; a standby accepts any.
    pub credentials: Credentials,
    /// Bound on one FTS attempt.
    pub timeout: Duration,
}

impl CbPair {
    /// The pair of a `catalog.backend = "cloudberry"` configuration (None for other
    /// backends): the backend's own etcd (`catalog.cbdb_conf`), the probe credentials, and
    /// `coordinator.timeout` per attempt.
    pub fn from_config(
        cfg: &crate::config::Config,
        etcd: crate::election::EtcdOptions,
        elected: bool,
    ) -> Result<Option<CbPair>, String> {
        if cfg.catalog.backend != crate::config::CatalogBackend::Cloudberry {
            return Ok(None);
        }
        let catalog = match crate::catalog::any::AnyCatalog::from_config(cfg, etcd, elected)? {
            crate::catalog::any::AnyCatalog::Cloudberry(c) => Arc::new(*c),
            crate::catalog::any::AnyCatalog::Postgres(_) => return Ok(None),
        };
        Ok(Some(CbPair {
            catalog,
            credentials: Credentials {
                user: cfg.probe.user.clone(),
                password: cfg.probe.password.clone(),
                source: cfg.probe.source_address,
            },
            timeout: cfg.coordinator.timeout,
        }))
    }
}

/// One FTS reply, with the row it was sent to.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FtsSeen {
    pub dbid: Dbid,
    pub reply: ProbeReply,
}

/// A prober-side failure: without the blob we do not know what to send, which says nothing
/// about the server.
fn ours(message: String) -> AttemptError {
    AttemptError::new(FailureKind::Local, message)
}

impl CbPair {
    /// The content -1 row of `at` in the blob.
    async fn row(&self, at: &Endpoint) -> Result<Segment, AttemptError> {
        let (rows, _) = self
            .catalog
            .read_rows()
            .await
            .map_err(|e| ours(format!("cannot read the configuration blob: {e}")))?;
        find_server(&rows, &at.host, at.port)
            .cloned()
            .ok_or_else(|| {
                ours(format!(
                    "no content -1 row for {at} in the configuration blob"
                ))
            })
    }

    /// One FTS message to `at`, bounded by `deadline`.
    pub async fn send(
        &self,
        at: &Endpoint,
        dbid: Dbid,
        kind: MessageType,
        deadline: Instant,
    ) -> Result<ProbeReply, AttemptError> {
        let t = Target {
            host: &at.host,
            port: at.port,
            dbid,
            content: -1,
        };
        send_message_by(&t, kind, &self.credentials, deadline).await
    }

    async fn probe_once(&self, at: &Endpoint) -> Result<FtsSeen, AttemptError> {
        let row = self.row(at).await?;
        let reply = self
            .send(
                at,
                row.dbid,
                MessageType::Probe,
                Instant::now() + self.timeout,
            )
            .await?;
        Ok(FtsSeen {
            dbid: row.dbid,
            reply,
        })
    }

    /// The promote-ready key: `1` is ready; absent, another value or unreadable is not.
    pub async fn promote_ready(&self) -> (PromoteReady, serde_json::Value) {
        match self.catalog.standby_promote_ready().await {
            Ok(Some(v)) if v.trim() == "1" => (PromoteReady::Ready, json!(v)),
            Ok(Some(v)) => (PromoteReady::NotReady, json!(v)),
            Ok(None) => (PromoteReady::NotReady, json!({"absent": true})),
            Err(e) => (PromoteReady::NotReady, json!({"error": e.to_string()})),
        }
    }

    /// One round: the coordinator with `retries`, the standby once, the key.
    pub async fn round(
        &self,
        retries: u32,
        retry_delay: Duration,
        acting: &Endpoint,
        standby: &Endpoint,
    ) -> Seen {
        let (p, s, (ready, key)) = tokio::join!(
            probe::round(retries, retry_delay, || self.probe_once(acting)),
            probe::round(0, Duration::ZERO, || self.probe_once(standby)),
            self.promote_ready(),
        );
        seen(&p, &s, ready, key)
    }

    /// Sends PROMOTE to the standby `to` (its dbid from the blob), by `deadline`.
    pub async fn promote(&self, to: &Endpoint, deadline: Instant) -> Result<String, String> {
        let row = self.row(to).await.map_err(|e| e.full_text())?;
        let reply = self
            .send(to, row.dbid, MessageType::Promote, deadline)
            .await
            .map_err(|e| e.full_text())?;
        Ok(format!(
            "PROMOTE dbid={} contid=-1 sent; reply is_role_mirror={}",
            row.dbid, reply.is_role_mirror as u8
        ))
    }

    /// Waits (PROBE every 200 ms, within `limit`) until `to` answers as a primary.
    pub async fn verify(&self, to: &Endpoint, limit: Duration) -> Result<String, String> {
        let end = Instant::now() + limit;
        loop {
            let last = match self.probe_once(to).await {
                Ok(seen) if !seen.reply.is_role_mirror => {
                    return Ok(format!(
                        "dbid {} answers PROBE as a primary (is_role_mirror = 0)",
                        seen.dbid
                    ))
                }
                Ok(_) => "still answers PROBE as a mirror".to_owned(),
                // "mirror is being promoted." while the promotion runs.
                Err(e) => e.full_text(),
            };
            if Instant::now() + Duration::from_millis(200) >= end {
                return Err(format!("not a primary within {limit:?}: {last}"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The sync judgement from the coordinator's reply (and the standby's, when it answered):
/// in sync when the standby is up, streaming and synchronous replication is on — every
/// acknowledged commit is flushed on it. No replay position is reported.
pub fn judge_sync(coordinator: &ProbeReply, standby: Option<&ProbeReply>) -> SyncSeen {
    let not = |why: String| SyncSeen {
        synchronous: false,
        replay_lag: None,
        why,
    };
    if coordinator.is_role_mirror {
        return not("the coordinator answers as a mirror".into());
    }
    if !coordinator.is_mirror_up {
        return not("is_mirror_up = 0: no standby connected to the coordinator".into());
    }
    if !coordinator.is_in_sync {
        return not("is_in_sync = 0: the standby's walsender is not streaming".into());
    }
    if !coordinator.is_syncrep_enabled {
        return not("is_syncrep_enabled = 0: commits do not wait for the standby's flush".into());
    }
    if standby.is_some_and(|s| !s.is_role_mirror) {
        return not("the standby answers as a primary".into());
    }
    SyncSeen {
        synchronous: true,
        replay_lag: None,
        why: "FTS PROBE: is_mirror_up = 1, is_in_sync = 1, is_syncrep_enabled = 1".into(),
    }
}

/// The round as the decision reads it.
pub fn seen(
    p: &Round<FtsSeen>,
    s: &Round<FtsSeen>,
    promote_ready: PromoteReady,
    key: serde_json::Value,
) -> Seen {
    let answer = |r: &ProbeReply| Answer {
        in_recovery: r.is_role_mirror,
        read_only: false,
    };
    Seen {
        primary: PrimarySide {
            answer: p.state.as_ref().map(|x| answer(&x.reply)),
            prober_fault: p.prober_fault(),
            restarting: p.restarting(),
        },
        standby: StandbySide {
            answer: s.state.as_ref().map(|x| answer(&x.reply)),
            // PROMOTE is always there to send.
            can_promote: s.state.is_some(),
            has_pg_promote: false,
            replay_lsn: None,
        },
        sync_now: p
            .state
            .as_ref()
            .map(|x| judge_sync(&x.reply, s.state.as_ref().map(|y| &y.reply))),
        // The FTS reply cannot show that commits wait for a standby that is gone.
        commits_wait: false,
        source: SyncSource::FtsHandler,
        promote_ready,
        primary_round: serde_json::to_value(p).unwrap_or_default(),
        standby_round: serde_json::to_value(s).unwrap_or_default(),
        promote_ready_key: key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(up: bool, sync: bool, syncrep: bool, mirror: bool) -> ProbeReply {
        ProbeReply {
            is_mirror_up: up,
            is_in_sync: sync,
            is_syncrep_enabled: syncrep,
            is_role_mirror: mirror,
            request_retry: false,
        }
    }

    #[test]
    fn in_sync_needs_up_streaming_and_syncrep() {
        let standby = reply(false, false, false, true);
        let ok = judge_sync(&reply(true, true, true, false), Some(&standby));
        assert!(ok.synchronous, "{}", ok.why);
        assert_eq!(ok.replay_lag, None);
        assert!(judge_sync(&reply(true, true, true, false), None).synchronous);
        assert!(!judge_sync(&reply(false, false, false, false), None).synchronous);
        assert!(!judge_sync(&reply(true, false, true, false), None).synchronous);
        assert!(!judge_sync(&reply(true, true, false, false), None).synchronous);
        assert!(!judge_sync(&reply(true, true, true, true), None).synchronous);
        let promoted = reply(false, false, false, false);
        assert!(!judge_sync(&reply(true, true, true, false), Some(&promoted)).synchronous);
    }

    #[test]
    fn a_failed_blob_read_is_a_prober_fault_not_a_lost_coordinator() {
        let r: Round<FtsSeen> = Round {
            state: None,
            failures: vec![ours("cannot read the configuration blob".into())],
            elapsed_ms: 0,
        };
        let s = seen(&r, &r, PromoteReady::Ready, serde_json::Value::Null);
        assert!(s.primary.prober_fault);
        assert!(s.primary.answer.is_none() && !s.standby.can_promote);
    }
}
