//! Maintenance mode ("pause"): the etcd key `<prefix>/<cluster>/pause` holds who paused the
//! cluster, when, why and until when. Every instance watches it from start-up, so a leader
//! elected while the cluster is paused honours it before its first write.
//!
//! A pause with an expiry ends by itself: the expiry is stored in the key, and each instance
//! stops honouring the pause once its own clock passes it, so it holds across leader changes
//! without anyone having to delete the key (a later `resume` or `pause` replaces it).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use etcd_client::{Client, EventType, WatchOptions};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::authority::ElectedAuthority;
use super::EtcdOptions;

/// The pause key's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseInfo {
    pub by: String,
    #[serde(with = "humantime_serde")]
    pub at: SystemTime,
    pub reason: String,
    /// When the pause ends by itself; `None`: never (until resumed).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub until: Option<SystemTime>,
}

impl PauseInfo {
    /// Whether the pause has run out at `now`.
    pub fn expired(&self, now: SystemTime) -> bool {
        self.until.is_some_and(|until| until <= now)
    }
}

/// The pause in force at `now`: the key's value unless it has expired.
pub fn in_force(value: Option<PauseInfo>, now: SystemTime) -> Option<PauseInfo> {
    value.filter(|p| !p.expired(now))
}

/// Parses the key's value. Anything unreadable still means "paused": a key someone wrote by
/// hand must not be ignored, and resuming deletes it whatever it holds.
pub fn parse(value: &[u8]) -> PauseInfo {
    serde_json::from_slice(value).unwrap_or_else(|e| PauseInfo {
        by: "?".into(),
        at: SystemTime::UNIX_EPOCH,
        reason: format!(
            "unparsable pause key ({e}): {}",
            String::from_utf8_lossy(value)
        ),
        until: None,
    })
}

/// Reads the pause key.
pub async fn read(client: &mut Client, key: &str) -> Result<Option<PauseInfo>, etcd_client::Error> {
    let resp = client.get(key, None).await?;
    Ok(resp.kvs().first().map(|kv| parse(kv.value())))
}

/// Sets (Some) or clears (None) the pause key.
pub async fn write(
    client: &mut Client,
    key: &str,
    info: Option<&PauseInfo>,
) -> Result<(), etcd_client::Error> {
    match info {
        Some(info) => {
            let value = serde_json::to_vec(info).unwrap_or_default();
            client.put(key, value, None).await.map(|_| ())
        }
        None => client.delete(key, None).await.map(|_| ()),
    }
}

/// Follows the pause key until `shutdown` turns true: reads it, then watches from the revision
/// read, reconnecting after errors. Each value is handed to the authority and published on
/// `state` (for the API and metrics).
pub async fn follow(
    etcd: EtcdOptions,
    key: String,
    authority: Arc<ElectedAuthority>,
    state: watch::Sender<Option<PauseInfo>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut failures = 0u32;
    loop {
        tokio::select! {
            r = follow_once(&etcd, &key, &authority, &state, &mut failures) => {
                if let Err(e) = r {
                    failures += 1;
                    authority.reconnects.pause_watch.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    // Until the key has been read once this instance does not act: say so
                    // loudly the first time, quietly on every retry.
                    if failures == 1 {
                        tracing::warn!(error = %e, key = %key, "cannot follow the pause key; retrying (no failover until it has been read)");
                    } else {
                        tracing::debug!(error = %e, "pause key watch ended; reopening");
                    }
                }
            }
            _ = shutdown.changed() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Publishes the pause in force now (`value` unless expired).
fn apply(
    authority: &ElectedAuthority,
    state: &watch::Sender<Option<PauseInfo>>,
    value: Option<PauseInfo>,
) {
    let now = SystemTime::now();
    let expired = value.as_ref().is_some_and(|p| p.expired(now));
    let info = in_force(value, now);
    let before = state.borrow().clone();
    if before != info {
        match &info {
            Some(p) => {
                let until = p
                    .until
                    .map(|u| humantime::format_rfc3339_seconds(u).to_string())
                    .unwrap_or_else(|| "resumed".into());
                tracing::warn!(by = %p.by, reason = %p.reason, %until, "cluster paused: probing and reporting only, no failover")
            }
            None if before.is_some() && expired => {
                tracing::info!("pause expired: failover enabled")
            }
            None if before.is_some() => tracing::info!("cluster resumed: failover enabled"),
            None => {}
        }
    }
    authority.set_pause(info.is_some());
    state.send_replace(info);
}

/// Sleeps until the expiry of `value` (forever when it has none).
async fn until_expiry(value: &Option<PauseInfo>) {
    match value.as_ref().and_then(|p| p.until) {
        Some(until) => {
            let left = until
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            // A few milliseconds past, so the check in `apply` sees the expiry as reached.
            tokio::time::sleep(left + Duration::from_millis(5)).await
        }
        None => std::future::pending().await,
    }
}

async fn follow_once(
    etcd: &EtcdOptions,
    key: &str,
    authority: &ElectedAuthority,
    state: &watch::Sender<Option<PauseInfo>>,
    failures: &mut u32,
) -> anyhow::Result<()> {
    let mut client = etcd.connect().await?;
    let resp = tokio::time::timeout(
        etcd.dial_timeout.max(Duration::from_secs(1)),
        client.get(key, None),
    )
    .await
    .map_err(|_| anyhow::anyhow!("reading the pause key timed out"))??;
    let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
    if *failures > 0 {
        tracing::info!("following the pause key again");
        *failures = 0;
    }
    // The key's value as last read, expired or not: its expiry is what the loop waits for.
    let mut value = resp.kvs().first().map(|kv| parse(kv.value()));
    apply(authority, state, value.clone());
    let mut stream = client
        .watch(
            key,
            Some(WatchOptions::new().with_start_revision(revision + 1)),
        )
        .await?;
    loop {
        let msg = tokio::select! {
            msg = stream.message() => msg?,
            _ = until_expiry(&value) => {
                apply(authority, state, value.clone());
                // Expired now: nothing more to wait for until the key changes.
                value = None;
                continue;
            }
        };
        let Some(msg) = msg else {
            anyhow::bail!("watch stream closed")
        };
        if msg.canceled() {
            anyhow::bail!("watch canceled: {}", msg.cancel_reason());
        }
        for ev in msg.events() {
            match (ev.event_type(), ev.kv()) {
                (EventType::Put, Some(kv)) => value = Some(parse(kv.value())),
                (EventType::Delete, _) => value = None,
                _ => continue,
            }
            apply(authority, state, value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_value_still_pauses() {
        let p = parse(b"maintenance");
        assert!(p.reason.contains("unparsable"));
        let good = PauseInfo {
            by: "me".into(),
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(5),
            reason: "upgrade".into(),
            until: None,
        };
        assert_eq!(parse(&serde_json::to_vec(&good).unwrap()), good);
        // Written before expiries existed: no `until`, indefinite.
        let old = br#"{"by":"me","at":"1970-01-01T00:00:05Z","reason":"upgrade"}"#;
        assert_eq!(parse(old), good);
    }

    #[test]
    fn expiry_round_trips_and_ends_the_pause() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let p = PauseInfo {
            by: "me".into(),
            at,
            reason: "upgrade".into(),
            until: Some(at + Duration::from_secs(60)),
        };
        assert_eq!(parse(&serde_json::to_vec(&p).unwrap()), p);
        assert!(in_force(Some(p.clone()), at + Duration::from_secs(59)).is_some());
        assert!(in_force(Some(p.clone()), at + Duration::from_secs(60)).is_none());
        assert!(in_force(None, at).is_none());
    }
}
