//! The members registry: `<prefix>/<cluster>/members/<id>` → JSON, bound to the instance's
//! lease so a dead instance disappears with it.

use std::sync::Mutex;
use std::time::SystemTime;

use etcd_client::{Client, GetOptions, PutOptions};
use serde::{Deserialize, Serialize};

/// The role an instance running with `--no-election` registers with: it acts without being
/// elected, so no other prober may run beside it (`ftsd preflight` looks for it).
pub const SINGLE_ROLE: &str = "single";

/// What each instance publishes about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub instance_id: String,
    pub host: String,
    /// Address of its API (gRPC/HTTP), for `ftsctl` discovery.
    pub api_address: String,
    pub version: String,
    /// `leader` or `follower`; [`SINGLE_ROLE`] for a `--no-election` instance.
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<i64>,
    #[serde(with = "humantime_serde")]
    pub started_at: SystemTime,
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_cycle_at: Option<SystemTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_cycle_ms: Option<u64>,
    /// `ok`, `paused`, `error: ...` for the last cycle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_cycle_result: Option<String>,
    /// When this instance took office (leaders only).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub leader_since: Option<SystemTime>,
}

/// This instance's entry, kept current and re-put whenever it changes or the lease changes.
pub struct Membership {
    info: Mutex<MemberInfo>,
    key: String,
    /// Woken on every update so the entry is re-published promptly.
    pub changed: tokio::sync::Notify,
}

impl Membership {
    pub fn new(key: String, info: MemberInfo) -> Self {
        Membership {
            info: Mutex::new(info),
            key,
            changed: tokio::sync::Notify::new(),
        }
    }

    pub fn snapshot(&self) -> MemberInfo {
        self.info.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn update(&self, f: impl FnOnce(&mut MemberInfo)) {
        f(&mut self.info.lock().unwrap_or_else(|e| e.into_inner()));
        self.changed.notify_one();
    }

    /// Writes the entry with `lease`. Errors are returned for the caller to log: a missing
    /// registry entry never affects authority.
    pub async fn publish(&self, client: &mut Client, lease: i64) -> Result<(), etcd_client::Error> {
        let value = serde_json::to_vec(&self.snapshot()).unwrap_or_default();
        client
            .put(
                self.key.clone(),
                value,
                Some(PutOptions::new().with_lease(lease)),
            )
            .await
            .map(|_| ())
    }
}

/// Reads every live member under `prefix` (unparsable entries are skipped with a warning).
pub async fn list(
    client: &mut Client,
    prefix: &str,
) -> Result<Vec<MemberInfo>, etcd_client::Error> {
    let resp = client
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await?;
    let mut out = Vec::new();
    for kv in resp.kvs() {
        match serde_json::from_slice::<MemberInfo>(kv.value()) {
            Ok(m) => out.push(m),
            Err(e) => tracing::warn!(key = ?kv.key_str(), error = %e, "unparsable member entry"),
        }
    }
    out.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
    Ok(out)
}
