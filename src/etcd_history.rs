//! Records kept under an etcd prefix and bounded by count (the coordinator pair's history,
//! the Cloudberry backend's history and evidence). Keys hold zero-padded times, so key order
//! is age order.
//!
//! The oldest keys beyond the bound are deleted by the same transaction that adds new ones:
//! the trim rides on the writer's fence compares, so a refused (deposed, stale) write deletes
//! nothing either, and there is no separate clean-up that could run unfenced.

use std::time::SystemTime;

use etcd_client::{Client, DeleteOptions, GetOptions, KeyValue, SortOrder, SortTarget, TxnOp};

/// The keys under `prefix`, oldest first. This and [`newest_first`] run inside the caller's
/// own bounded call (the closure it passes its client to).
pub async fn keys_under(
    mut client: Client,
    prefix: String,
) -> Result<Vec<Vec<u8>>, etcd_client::Error> {
    let mut resp = client
        .get(
            prefix,
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_keys_only()
                    .with_sort(SortTarget::Key, SortOrder::Ascend),
            ),
        )
        .await?;
    Ok(resp
        .take_kvs()
        .into_iter()
        .map(|kv| kv.key().to_vec())
        .collect())
}

/// The records under `prefix`, newest first, at most `limit` of them (None: all).
pub async fn newest_first(
    mut client: Client,
    prefix: String,
    limit: Option<usize>,
) -> Result<Vec<KeyValue>, etcd_client::Error> {
    let mut options = GetOptions::new()
        .with_prefix()
        .with_sort(SortTarget::Key, SortOrder::Descend);
    if let Some(limit) = limit {
        options = options.with_limit(i64::try_from(limit).unwrap_or(i64::MAX));
    }
    Ok(client.get(prefix, Some(options)).await?.take_kvs())
}

/// The oldest of `existing` (oldest first) that must go so that at most `limit` remain once
/// `adding` more are written: all of them when the new ones alone fill the limit.
fn oldest_beyond(existing: &[Vec<u8>], limit: usize, adding: usize) -> &[Vec<u8>] {
    let keep = limit.saturating_sub(adding);
    &existing[..existing.len().saturating_sub(keep)]
}

/// The deletes of the oldest `existing` keys beyond `limit` once `adding` more are written;
/// they go into the transaction that writes the new ones.
pub fn trim(existing: &[Vec<u8>], limit: usize, adding: usize) -> Vec<TxnOp> {
    oldest_beyond(existing, limit, adding)
        .iter()
        .map(|k| TxnOp::delete(k.clone(), None::<DeleteOptions>))
        .collect()
}

/// µs since the Unix epoch (0 before it).
pub fn micros(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Time-ordered record ids (µs since the Unix epoch), strictly increasing within this
/// process: two records written in the same microsecond still get distinct keys, in order.
#[derive(Debug, Default)]
pub struct TimeIds {
    last: std::sync::Mutex<i64>,
}

impl TimeIds {
    pub fn next(&self) -> i64 {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        *last = micros(SystemTime::now()).max(*last + 1);
        *last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("h/{i:020}").into_bytes()).collect()
    }

    #[test]
    fn the_oldest_go_so_the_limit_holds_after_the_write() {
        // (existing, limit, adding) -> how many of the oldest are deleted
        for (existing, limit, adding, deleted) in [
            (0, 1000, 1, 0),
            (998, 1000, 1, 0),
            (999, 1000, 1, 0),
            (1000, 1000, 1, 1),
            (1005, 1000, 1, 6),
            (10, 10, 3, 3),
            (7, 10, 3, 0),
            // more new keys than the limit: every old one goes
            (4, 2, 5, 4),
            (5, 0, 0, 5),
        ] {
            let all = keys(existing);
            let gone = oldest_beyond(&all, limit, adding);
            assert_eq!(
                gone,
                &all[..deleted],
                "existing {existing}, limit {limit}, adding {adding}"
            );
            assert_eq!(trim(&all, limit, adding).len(), deleted);
        }
    }

    #[test]
    fn time_ids_strictly_increase() {
        let ids = TimeIds::default();
        let mut last = ids.next();
        assert!(last > 0);
        for _ in 0..10_000 {
            let id = ids.next();
            assert!(id > last, "{id} after {last}");
            last = id;
        }
    }

    #[test]
    fn micros_before_the_epoch_is_zero() {
        let before = SystemTime::UNIX_EPOCH - std::time::Duration::from_secs(1);
        assert_eq!(micros(before), 0);
        let after = SystemTime::UNIX_EPOCH + std::time::Duration::from_micros(42);
        assert_eq!(micros(after), 42);
    }
}
