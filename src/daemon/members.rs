//! This instance's entry in the members registry: built from the config, kept current with
//! each cycle's timing, and checked at start-up so that two live instances never share an
//! `instance_id` (they would overwrite one entry and both answer to one name).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::api::state::cycle_result;
use crate::config::Config;
use crate::election::members::{MemberInfo, Membership, SINGLE_ROLE};
use crate::election::{keys, EtcdOptions};
use crate::engine::runner::CycleObserver;
use crate::engine::CycleReport;

/// The registry entry this instance publishes, starting as a follower.
pub fn membership(cfg: &Config, instance_id: &str) -> Arc<Membership> {
    Arc::new(Membership::new(
        keys::member(&cfg.etcd.prefix, &cfg.cluster, instance_id),
        MemberInfo {
            instance_id: instance_id.to_string(),
            host: crate::config::hostname(),
            api_address: crate::api::advertised_address(cfg.api.listen),
            version: env!("CARGO_PKG_VERSION").to_string(),
            role: "follower".into(),
            epoch: None,
            started_at: SystemTime::now(),
            last_cycle_at: None,
            last_cycle_ms: None,
            last_cycle_result: None,
            leader_since: None,
        },
    ))
}

/// Publishes each cycle's timing into the members registry entry.
pub struct MemberObserver(pub Arc<Membership>);

impl CycleObserver for MemberObserver {
    fn cycle_finished(&self, report: &CycleReport) {
        let result = cycle_result(report);
        self.0.update(|m| {
            m.last_cycle_at = Some(report.started_at);
            m.last_cycle_ms = Some(report.duration.as_millis() as u64);
            m.last_cycle_result = Some(result);
        });
    }

    fn cycle_failed(&self, error: &str) {
        self.0.update(|m| {
            m.last_cycle_at = Some(SystemTime::now());
            m.last_cycle_ms = None;
            m.last_cycle_result = Some(format!("error: {error}"));
        });
    }
}

/// Refuses to start when a live member already registered `instance_id`.
///
/// An entry is bound to its owner's lease, so the entry of an instance that was killed (and is
/// being restarted now) disappears within that lease's TTL: an entry that outlives its lease's
/// whole granted TTL (plus a second) is being kept alive by another process. An etcd that
/// cannot be reached does not stop the start: the instance then runs observe-only until it
/// can open a session, as it would anyway.
pub async fn ensure_unique(
    cfg: &Config,
    etcd: &EtcdOptions,
    instance_id: &str,
) -> anyhow::Result<()> {
    let key = keys::member(&cfg.etcd.prefix, &cfg.cluster, instance_id);
    let call = etcd.dial_timeout.max(Duration::from_secs(1));
    let mut client = match etcd.connect().await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot check the members registry for a duplicate instance_id");
            return Ok(());
        }
    };
    let mut deadline: Option<Instant> = None;
    loop {
        let existing = match tokio::time::timeout(call, client.get(key.as_str(), None)).await {
            Ok(Ok(resp)) => resp
                .kvs()
                .first()
                .map(|kv| (kv.lease(), kv.value().to_vec())),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot check the members registry for a duplicate instance_id");
                return Ok(());
            }
            Err(_) => {
                tracing::warn!(
                    "checking the members registry for a duplicate instance_id timed out"
                );
                return Ok(());
            }
        };
        let Some((lease, value)) = existing else {
            return Ok(());
        };
        let deadline = match deadline {
            Some(d) => d,
            None => {
                tracing::warn!(
                    instance = %instance_id,
                    "the members registry already holds this instance_id; waiting one lease TTL for it to expire (a restart after a crash) before refusing to start"
                );
                let granted = match tokio::time::timeout(
                    call,
                    client.lease_time_to_live(lease, None),
                )
                .await
                {
                    Ok(Ok(r)) if r.granted_ttl() > 0 => Duration::from_secs(r.granted_ttl() as u64),
                    _ => cfg.etcd.lease_ttl,
                };
                *deadline.insert(Instant::now() + granted + Duration::from_secs(1))
            }
        };
        if Instant::now() >= deadline {
            let other = serde_json::from_slice::<MemberInfo>(&value)
                .map(|m| format!("host {}, API {}", m.host, m.api_address))
                .unwrap_or_else(|_| "unreadable entry".into());
            anyhow::bail!(
                "instance_id {instance_id:?} is already registered by a live member ({other}, key {key}); \
                 give every instance its own instance_id"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `--no-election`: keeps this instance registered (role [`SINGLE_ROLE`]) in the members
/// registry under its own lease, so `ftsctl members` and `ftsd preflight` on another host see
/// that a prober acts outside the election. Best effort: an etcd that cannot be reached never
/// affects probing; the registration is retried until the task is dropped, and the entry
/// disappears with the lease (one `etcd.lease_ttl` after the instance stops).
pub async fn register_single(etcd: EtcdOptions, membership: Arc<Membership>, ttl: Duration) {
    membership.update(|m| m.role = SINGLE_ROLE.into());
    let mut warned = false;
    loop {
        let Err(e) = registered(&etcd, &membership, ttl).await;
        if warned {
            tracing::debug!(error = %e, "members registry: registration lost; retrying");
        } else {
            tracing::warn!(error = %e, "cannot register in the members registry (etcd); probing goes on, retrying");
            warned = true;
        }
        tokio::time::sleep(ttl.min(Duration::from_secs(5))).await;
    }
}

/// One registration: a lease, the entry, then keepalives and updates until something fails.
async fn registered(
    etcd: &EtcdOptions,
    membership: &Membership,
    ttl: Duration,
) -> anyhow::Result<std::convert::Infallible> {
    let call = etcd.dial_timeout.max(Duration::from_secs(1));
    let bounded = |what: &'static str| move |_| anyhow::anyhow!("{what} timed out");
    {
        let mut client = etcd.connect().await?;
        let lease =
            tokio::time::timeout(call, client.lease_grant(ttl.as_secs().max(2) as i64, None))
                .await
                .map_err(bounded("granting a lease"))??
                .id();
        tokio::time::timeout(call, membership.publish(&mut client, lease))
            .await
            .map_err(bounded("registering"))??;
        tracing::info!(role = SINGLE_ROLE, "registered in the members registry");
        let (mut keeper, mut replies) = client.lease_keep_alive(lease).await?;
        let every = (ttl / 3).max(Duration::from_millis(500));
        let mut published = membership.snapshot();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {
                    keeper.keep_alive().await?;
                    match tokio::time::timeout(call, replies.message()).await {
                        Ok(Ok(Some(r))) if r.ttl() > 0 => {}
                        _ => anyhow::bail!("the registry lease expired or its keepalive failed"),
                    }
                }
                _ = membership.changed.notified() => {
                    let now = membership.snapshot();
                    if now != published {
                        tokio::time::timeout(call, membership.publish(&mut client, lease))
                            .await
                            .map_err(bounded("updating the entry"))??;
                        published = now;
                    }
                }
            }
        }
    }
}
