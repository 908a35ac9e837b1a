//! `ftsd vip-agent`: one per coordinator host. It holds the client-facing address only while
//! etcd records this host's server as the acting coordinator, and only while its own etcd
//! lease is alive:
//!
//! * every `vip.interval` it reads `<prefix>/<cluster>/coordinator/state` and keeps its
//!   lease alive. An absent state holds nobody: the configured primary may be a former
//!   coordinator (etcd rebuilt after a failover), and the leader records which server acts
//!   from what both answer within a round of taking office (`super::adoption`);
//! * it holds the address when the acting server is `vip.member`, no failover intent names
//!   that server as the one being replaced, and its lease is valid (the last acknowledged
//!   keepalive's send time + TTL − `etcd.act_margin`, as the leader's act-by deadline);
//! * taking it: duplicate-address check (`arping -D`; another host answering stops it),
//!   `ip addr add`, gratuitous ARP (`arping -U`), and a holder key
//!   `<prefix>/<cluster>/coordinator/vip/<member>` bound to its lease, which the leader counts
//!   (`ftsd_vip_holders`);
//! * dropping it: when the state names another server, when an intent is replacing this one,
//!   when the lease is no longer valid (etcd unreachable: this host cannot know whether a
//!   failover happened, so it lets go), and on shutdown.
//!
//! `address` runs the commands (or the site's hook).

pub mod address;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use etcd_client::{Client, LeaseKeepAliveStream, LeaseKeeper, PutOptions};

use super::records::{CoordinatorState, Records};
use crate::config::Config;
use address::{AddressOps, Duplicate};

/// Whether this host should hold the address; pure, see the module documentation.
pub fn should_hold(state: Option<&CoordinatorState>, member: &str, lease_valid: bool) -> bool {
    if !lease_valid {
        return false;
    }
    match state {
        None => false,
        Some(s) => s.acting == member && s.intent.as_ref().is_none_or(|i| i.from != member),
    }
}

/// The holder key of `member`.
pub fn holder_key(coordinator_prefix: &str, member: &str) -> String {
    format!("{coordinator_prefix}vip/{member}")
}

/// The agent's current lease as its keepalive task publishes it.
#[derive(Clone)]
struct LeaseView {
    client: Client,
    id: i64,
    /// The last acknowledged keepalive's send time + TTL − margin.
    valid_until: Instant,
}

type SharedLease = Arc<Mutex<Option<LeaseView>>>;

fn current(lease: &SharedLease) -> Option<LeaseView> {
    lease.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

fn publish(lease: &SharedLease, view: Option<LeaseView>) {
    *lease.lock().unwrap_or_else(|e| e.into_inner()) = view;
}

/// Keeps a lease alive on its own task, so no slow `ip` or `arping` run can delay a
/// keepalive; a lease that is not acknowledged is replaced by a new one.
struct LeaseKeeping {
    etcd: crate::election::EtcdOptions,
    ttl: Duration,
    margin: Duration,
    call_timeout: Duration,
}

impl LeaseKeeping {
    async fn run(self, shared: SharedLease) {
        loop {
            match self.open().await {
                Ok((view, keeper, stream)) => {
                    publish(&shared, Some(view.clone()));
                    self.keep(view, keeper, stream, &shared).await;
                    tracing::warn!("lease keepalive not acknowledged; opening a new lease");
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "cannot open an etcd lease");
                    tokio::time::sleep(self.ttl / 3).await;
                }
            }
        }
    }

    async fn open(&self) -> anyhow::Result<(LeaseView, LeaseKeeper, LeaseKeepAliveStream)> {
        let t = self.call_timeout;
        let mut client = tokio::time::timeout(t, self.etcd.connect())
            .await
            .context("connecting to etcd timed out")??;
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX);
        let sent = Instant::now();
        let lease = tokio::time::timeout(t, client.lease_grant(ttl, None))
            .await
            .context("granting a lease timed out")??;
        let (keeper, stream) = tokio::time::timeout(t, client.lease_keep_alive(lease.id()))
            .await
            .context("opening the keepalive stream timed out")??;
        let view = LeaseView {
            client,
            id: lease.id(),
            valid_until: sent + self.ttl.saturating_sub(self.margin),
        };
        Ok((view, keeper, stream))
    }

    /// Returns when a keepalive is not acknowledged in time.
    async fn keep(
        &self,
        mut view: LeaseView,
        mut keeper: LeaseKeeper,
        mut stream: LeaseKeepAliveStream,
        shared: &SharedLease,
    ) {
        loop {
            tokio::time::sleep(self.ttl / 3).await;
            let sent = Instant::now();
            let acked = tokio::time::timeout(self.call_timeout, async {
                keeper.keep_alive().await?;
                stream.message().await
            })
            .await;
            match acked {
                Ok(Ok(Some(resp))) if resp.ttl() > 0 => {
                    view.valid_until = sent + self.ttl.saturating_sub(self.margin);
                    publish(shared, Some(view.clone()));
                }
                _ => return,
            }
        }
    }
}

struct Agent {
    ops: AddressOps,
    member: String,
    interval: Duration,
    call_timeout: Duration,
    records: Records,
    holder_key: String,
    lease: SharedLease,
    /// Whether we added the address (or ran the hook's `up`) and have not removed it.
    holding: bool,
    /// The lease the holder key was put with.
    holder_lease: Option<i64>,
    /// The last state read, kept while etcd cannot be read (the lease bounds how long).
    last_state: Option<Option<CoordinatorState>>,
}

/// Runs the agent until `shutdown` completes, then lets the address go.
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let v = &cfg.vip;
    if v.address.is_empty() {
        anyhow::bail!("vip.address is not set: nothing for the VIP agent to hold");
    }
    let (ip, _) = crate::config::vip_address(&v.address).map_err(anyhow::Error::msg)?;
    let etcd = crate::daemon::settings::etcd_options(&cfg)?;
    let prefix = crate::election::keys::coordinator_prefix(&cfg.etcd.prefix, &cfg.cluster);
    let call_timeout = cfg.etcd.dial_timeout.max(Duration::from_secs(1));
    let mut agent = Agent {
        ops: AddressOps {
            cidr: v.address.clone(),
            ip,
            interface: v.interface.clone(),
            netns: (!v.netns.is_empty()).then(|| v.netns.clone()),
            hook: v.hook.clone(),
        },
        member: v.member.clone(),
        interval: v.interval,
        call_timeout,
        records: Records::new(prefix.clone(), etcd.clone(), call_timeout),
        holder_key: holder_key(&prefix, &v.member),
        lease: SharedLease::default(),
        holding: false,
        holder_lease: None,
        last_state: None,
    };
    tracing::info!(
        address = %v.address,
        interface = %v.interface,
        member = %v.member,
        "VIP agent starting"
    );
    // An address left on the interface by an earlier run is ours to judge like any other.
    if agent.ops.present().await.ok().flatten() == Some(true) {
        agent.holding = true;
    }
    let keeping = LeaseKeeping {
        etcd,
        ttl: cfg.etcd.lease_ttl,
        margin: cfg.etcd.act_margin,
        call_timeout,
    };
    let keeper = tokio::spawn(keeping.run(agent.lease.clone()));
    tokio::pin!(shutdown);
    loop {
        agent.tick().await;
        tokio::select! {
            _ = tokio::time::sleep(agent.interval) => {}
            _ = &mut shutdown => break,
        }
    }
    agent.release("shutting down").await;
    keeper.abort();
    if let Some(mut view) = current(&agent.lease) {
        let _ = tokio::time::timeout(call_timeout, view.client.lease_revoke(view.id)).await;
    }
    Ok(())
}

impl Agent {
    fn lease_valid(&self) -> bool {
        current(&self.lease).is_some_and(|l| Instant::now() < l.valid_until)
    }

    async fn tick(&mut self) {
        match self.records.load().await {
            Ok(read) => self.last_state = Some(read.state),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the coordinator state; holding on only while the lease is valid")
            }
        }
        let lease_valid = self.lease_valid();
        let want = match &self.last_state {
            Some(state) => should_hold(state.as_ref(), &self.member, lease_valid),
            None => false,
        };
        if want {
            self.take().await;
        } else if self.holding {
            let why = if !lease_valid {
                "our etcd lease is not confirmed alive"
            } else {
                "etcd names another server as the coordinator"
            };
            self.release(why).await;
        } else if self.ops.present().await.ok().flatten() == Some(true) {
            self.release("the address is on the interface but this host does not act")
                .await;
        }
    }

    async fn take(&mut self) {
        if !self.holding {
            match self.ops.duplicate().await {
                Duplicate::Free => {}
                Duplicate::Unchecked(why) => {
                    tracing::warn!(%why, "duplicate-address check not done")
                }
                Duplicate::Answered(who) => {
                    tracing::error!(%who, address = %self.ops.cidr, "another host holds the VIP: not taking it (dual-active risk)");
                    return;
                }
            }
            // The check takes seconds: the lease must still be valid when the address goes up.
            if !self.lease_valid() {
                return;
            }
            if let Err(e) = self.ops.add().await {
                tracing::error!(error = %e, address = %self.ops.cidr, "cannot add the VIP");
                return;
            }
            self.holding = true;
            tracing::warn!(address = %self.ops.cidr, interface = %self.ops.interface, member = %self.member, "VIP taken: this host's server is the acting coordinator");
            // Announcing takes seconds (one ARP a second) and is best effort: not in the way
            // of the next check.
            let ops = self.ops.clone();
            tokio::spawn(async move {
                if let Err(e) = ops.announce().await {
                    tracing::warn!(error = %e, "gratuitous ARP not sent");
                }
            });
        } else if self.ops.present().await.ok().flatten() == Some(false) {
            tracing::warn!(address = %self.ops.cidr, "the VIP vanished from the interface; adding it again next round");
            self.holding = false;
            return;
        }
        self.register().await;
    }

    /// Puts the holder key with the current lease (once per lease).
    async fn register(&mut self) {
        let Some(mut lease) = current(&self.lease) else {
            return;
        };
        if self.holder_lease == Some(lease.id) {
            return;
        }
        let value = serde_json::json!({
            "member": self.member,
            "address": self.ops.cidr,
            "interface": self.ops.interface,
        })
        .to_string();
        let put = lease.client.put(
            self.holder_key.clone(),
            value,
            Some(PutOptions::new().with_lease(lease.id)),
        );
        match tokio::time::timeout(self.call_timeout, put).await {
            Ok(Ok(_)) => self.holder_lease = Some(lease.id),
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot register as VIP holder"),
            Err(_) => tracing::warn!("registering as VIP holder timed out"),
        }
    }

    async fn release(&mut self, why: &str) {
        match self.ops.remove().await {
            Ok(()) => {
                if self.holding {
                    tracing::warn!(address = %self.ops.cidr, %why, "VIP released");
                }
                self.holding = false;
            }
            Err(e) => {
                tracing::error!(error = %e, %why, address = %self.ops.cidr, "cannot remove the VIP")
            }
        }
        if self.holder_lease.take().is_some() {
            if let Some(mut lease) = current(&self.lease) {
                let del = lease.client.delete(self.holder_key.clone(), None);
                let _ = tokio::time::timeout(self.call_timeout, del).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::records::{Intent, IntentKind};

    fn state(acting: &str, intent_from: Option<&str>) -> CoordinatorState {
        CoordinatorState {
            acting: acting.into(),
            standby: "other:1".into(),
            rebuild: false,
            intent: intent_from.map(|from| Intent {
                id: 1,
                kind: IntentKind::Failover,
                from: from.into(),
                to: "b:1".into(),
                epoch: 1,
                instance_id: "x".into(),
                standby_replay_lsn: None,
            }),
            last_failover_us: None,
            catalog_update: None,
            epoch: 1,
            instance_id: "x".into(),
            updated_us: 1,
        }
    }

    #[test]
    fn holds_only_as_the_acting_server_with_a_live_lease() {
        // Nothing recorded: nobody, whatever the configuration says.
        assert!(!should_hold(None, "a:1", true));
        assert!(!should_hold(None, "b:1", true));
        assert!(should_hold(Some(&state("b:1", None)), "b:1", true));
        assert!(!should_hold(Some(&state("b:1", None)), "a:1", true));
        assert!(!should_hold(Some(&state("b:1", None)), "b:1", false));
        // Being replaced: let go before the standby is promoted.
        assert!(!should_hold(Some(&state("a:1", Some("a:1"))), "a:1", true));
    }
}
