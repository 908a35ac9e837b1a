//! Maintenance mode ("pause"): the etcd key `<prefix>/<cluster>/pause` holds who paused the
//! cluster, when and why. Every instance watches it from start-up, so a leader elected while
//! the cluster is paused honours it before its first write.

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

fn apply(
    authority: &ElectedAuthority,
    state: &watch::Sender<Option<PauseInfo>>,
    info: Option<PauseInfo>,
) {
    let before = state.borrow().clone();
    if before != info {
        match &info {
            Some(p) => {
                tracing::warn!(by = %p.by, reason = %p.reason, "cluster paused: probing and reporting only, no failover")
            }
            None if before.is_some() => tracing::info!("cluster resumed: failover enabled"),
            None => {}
        }
    }
    authority.set_pause(info.is_some());
    state.send_replace(info);
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
    apply(
        authority,
        state,
        resp.kvs().first().map(|kv| parse(kv.value())),
    );
    let mut stream = client
        .watch(
            key,
            Some(WatchOptions::new().with_start_revision(revision + 1)),
        )
        .await?;
    while let Some(msg) = stream.message().await? {
        if msg.canceled() {
            anyhow::bail!("watch canceled: {}", msg.cancel_reason());
        }
        for ev in msg.events() {
            match (ev.event_type(), ev.kv()) {
                (EventType::Put, Some(kv)) => apply(authority, state, Some(parse(kv.value()))),
                (EventType::Delete, _) => apply(authority, state, None),
                _ => {}
            }
        }
    }
    anyhow::bail!("watch stream closed")
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
        };
        assert_eq!(parse(&serde_json::to_vec(&good).unwrap()), good);
    }
}
