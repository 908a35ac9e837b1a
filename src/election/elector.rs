//! The election loop: session → campaign → verify → office → step down → again.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use backon::{BackoffBuilder, ExponentialBuilder};
use etcd_client::{Client, ResignOptions};
use tokio::sync::watch;

use super::authority::{ElectedAuthority, Leadership, StepDownReason};
use super::keeper::{self, LeaseStatus};
use super::members::Membership;
use super::EtcdOptions;
use crate::catalog::{Catalog, CatalogError};
use crate::model::Epoch;

/// What the elector needs.
#[derive(Debug, Clone)]
pub struct ElectorSettings {
    pub etcd: EtcdOptions,
    /// Election name: `<prefix>/<cluster>/leader`.
    pub election: String,
    pub instance_id: String,
    pub ttl: Duration,
    pub margin: Duration,
}

enum Exit {
    Shutdown,
    StepDown(StepDownReason, String),
}

/// Runs until `shutdown` turns true, then resigns (if leading) and revokes the lease.
pub async fn run_elector<C: Catalog>(
    settings: ElectorSettings,
    authority: Arc<ElectedAuthority>,
    catalog: Arc<C>,
    membership: Arc<Membership>,
    mut shutdown: watch::Receiver<bool>,
) {
    let backoff_builder = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(settings.ttl.max(Duration::from_secs(1)))
        .with_jitter()
        .without_max_times();
    let mut backoff = backoff_builder.build();
    loop {
        if *shutdown.borrow() {
            return;
        }
        match term(&settings, &authority, &catalog, &membership, &mut shutdown).await {
            Ok(Exit::Shutdown) => return,
            Ok(Exit::StepDown(kind, reason)) => {
                tracing::warn!(kind = %kind, reason = %reason, "stepped down; campaigning again");
                backoff = backoff_builder.build();
                // Let a follower win the next round while our lease is being revoked.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => {
                let delay = backoff.next().unwrap_or(settings.ttl);
                tracing::warn!(error = %e, retry_in = ?delay, "etcd session failed; observe-only until it is back");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
    }
}

async fn bounded<T>(
    what: &str,
    limit: Duration,
    f: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(limit, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(anyhow::anyhow!("{what}: {e}")),
        Err(_) => Err(anyhow::anyhow!("{what}: timed out after {limit:?}")),
    }
}

/// One session: a lease, a campaign and, if won, one term of office.
async fn term<C: Catalog>(
    s: &ElectorSettings,
    authority: &Arc<ElectedAuthority>,
    catalog: &Arc<C>,
    membership: &Arc<Membership>,
    shutdown: &mut watch::Receiver<bool>,
) -> anyhow::Result<Exit> {
    let call = s.etcd.dial_timeout.max(Duration::from_secs(1));
    let mut client = s.etcd.connect().await?;
    let ttl_secs = s.ttl.as_secs().max(2) as i64;
    let granted_at = Instant::now();
    let grant = bounded("granting lease", call, client.lease_grant(ttl_secs, None)).await?;
    let lease_id = grant.id();
    let ttl = Duration::from_secs(grant.ttl().max(1) as u64);
    let mut keeper = keeper::spawn(s.etcd.clone(), lease_id, ttl, s.margin, granted_at)?;
    let session = Session {
        client: client.clone(),
        lease_id,
    };
    membership.update(|m| {
        m.role = "follower".into();
        m.epoch = None;
    });
    if let Err(e) = membership.publish(&mut client, lease_id).await {
        tracing::warn!(error = %e, "cannot register in the members list");
    }
    let _publisher = AbortOnDrop(tokio::spawn(republish(
        client.clone(),
        membership.clone(),
        lease_id,
        Duration::from_millis(200),
    )));
    tracing::info!(lease = format!("{lease_id:x}"), ttl = ?ttl, "etcd session open; campaigning");
    match bounded(
        "reading the leader",
        call,
        client.leader(s.election.clone()),
    )
    .await
    {
        Ok(resp) => {
            if let Some(kv) = resp.kv() {
                tracing::info!(leader = ?kv.value_str().unwrap_or("?"), "standing by as follower");
                authority.stand_by();
            }
        }
        // "election: no leader" is an error reply from etcd: nobody leads, we will shortly.
        Err(e) => tracing::debug!(error = %e, "no current leader"),
    }

    // While we wait, watch who leads (Observe stream), for the log and for standing by.
    let _observer = AbortOnDrop(tokio::spawn(observe_leader(
        client.clone(),
        s.election.clone(),
        s.instance_id.clone(),
        authority.clone(),
    )));

    // Campaign blocks until we lead. Give up if the lease is lost meanwhile or we stop.
    let value = s.instance_id.clone();
    let campaign = client.campaign(s.election.clone(), value, lease_id);
    let leader = tokio::select! {
        r = campaign => r.map_err(|e| anyhow::anyhow!("campaign: {e}"))?,
        lost = wait_lost(&mut keeper.status) => {
            session.close(call).await;
            return Ok(Exit::StepDown(StepDownReason::LeaseLost, lost));
        }
        _ = shutdown.changed() => {
            session.close(call).await;
            return Ok(Exit::Shutdown);
        }
    };
    let Some(leader) = leader.leader().cloned() else {
        session.close(call).await;
        anyhow::bail!("campaign returned no leader key");
    };

    // Campaign can return after the candidate's own key vanished (etcd#19597): re-read it.
    let own = bounded("verifying leader key", call, client.get(leader.key(), None)).await?;
    let valid = own
        .kvs()
        .first()
        .is_some_and(|kv| kv.create_revision() == leader.rev() && kv.lease() == lease_id);
    if !valid {
        authority.step_downs.count(StepDownReason::KeyVanished);
        session.close(call).await;
        return Ok(Exit::StepDown(
            StepDownReason::KeyVanished,
            "campaign returned but our leader key is gone".into(),
        ));
    }

    drop(_observer);
    let epoch = Epoch(leader.rev());
    let status = keeper.status.borrow().clone();
    let act_by = match status {
        LeaseStatus::Alive { act_by, .. } => act_by,
        LeaseStatus::Lost { reason } => {
            session.close(call).await;
            return Ok(Exit::StepDown(StepDownReason::LeaseLost, reason));
        }
    };
    authority.take_office(
        Leadership {
            epoch,
            key: leader.key().to_vec(),
            lease_id,
            since: SystemTime::now(),
        },
        client.clone(),
        act_by,
    );
    membership.update(|m| {
        m.role = "leader".into();
        m.epoch = Some(epoch.0);
        m.leader_since = Some(SystemTime::now());
    });
    if let Err(e) = membership.publish(&mut client, lease_id).await {
        tracing::warn!(error = %e, "cannot update the members list");
    }
    tracing::info!(%epoch, "took office as leader");
    let claim = tokio::spawn(claim_epoch(
        catalog.clone(),
        authority.clone(),
        epoch,
        s.instance_id.clone(),
    ));

    let exit = hold_office(s, authority, &mut client, &leader, &mut keeper, shutdown).await;
    claim.abort();
    authority.leave_office_because(match &exit {
        Exit::Shutdown => StepDownReason::Shutdown,
        Exit::StepDown(kind, _) => *kind,
    });
    membership.update(|m| {
        m.role = "follower".into();
        m.epoch = None;
        m.leader_since = None;
    });
    match &exit {
        Exit::Shutdown => {
            authority.step_downs.count(StepDownReason::Shutdown);
            let resign = client.resign(Some(ResignOptions::new().with_leader(leader.clone())));
            match bounded("resigning", call, resign).await {
                Ok(_) => tracing::info!(%epoch, "resigned leadership"),
                Err(e) => tracing::warn!(error = %e, "resign failed; the lease will expire"),
            }
        }
        // `fenced_out` already counted the fenced step-down when it happened.
        Exit::StepDown(StepDownReason::Fenced, _) => {}
        Exit::StepDown(kind, _) => authority.step_downs.count(*kind),
    }
    session.close(call).await;
    Ok(exit)
}

async fn hold_office(
    s: &ElectorSettings,
    authority: &Arc<ElectedAuthority>,
    client: &mut Client,
    leader: &etcd_client::LeaderKey,
    keeper: &mut keeper::KeeperHandle,
    shutdown: &mut watch::Receiver<bool>,
) -> Exit {
    let check_every = (s.ttl / 3).max(Duration::from_millis(200));
    let mut next_check = tokio::time::Instant::now() + check_every;
    loop {
        let deadline = authority.act_by().unwrap_or_else(Instant::now);
        tokio::select! {
            changed = keeper.status.changed() => {
                if changed.is_err() {
                    return Exit::StepDown(StepDownReason::LeaseLost, "lease keeper stopped".into());
                }
                let status = keeper.status.borrow().clone();
                match status {
                    LeaseStatus::Alive { act_by, .. } => authority.extend(act_by),
                    LeaseStatus::Lost { reason } => return Exit::StepDown(StepDownReason::LeaseLost, reason),
                }
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                if authority.act_by().is_none_or(|a| Instant::now() >= a) {
                    return Exit::StepDown(
                        StepDownReason::ActByExpired,
                        "no keepalive acknowledged before the act-by deadline".into(),
                    );
                }
            }
            _ = tokio::time::sleep_until(next_check) => {
                next_check = tokio::time::Instant::now() + check_every;
                match bounded("checking leader key", check_every, client.get(leader.key(), None)).await {
                    Ok(r) if r.kvs().first().is_some_and(|kv| kv.create_revision() == leader.rev()) => {}
                    Ok(_) => return Exit::StepDown(StepDownReason::KeyVanished, "our leader key was deleted".into()),
                    // Unreachable etcd is handled by the act-by deadline, not here.
                    Err(e) => tracing::debug!(error = %e, "leader key check failed"),
                }
            }
            _ = authority.fenced.notified() => {
                return Exit::StepDown(StepDownReason::Fenced, "the catalog holds a newer epoch".into());
            }
            _ = shutdown.changed() => return Exit::Shutdown,
        }
    }
}

async fn wait_lost(status: &mut watch::Receiver<LeaseStatus>) -> String {
    loop {
        if let LeaseStatus::Lost { reason } = &*status.borrow() {
            return reason.clone();
        }
        if status.changed().await.is_err() {
            return "lease keeper stopped".into();
        }
    }
}

/// Records the epoch in the catalog on taking office, retrying while the catalog is down.
async fn claim_epoch<C: Catalog>(
    catalog: Arc<C>,
    authority: Arc<ElectedAuthority>,
    epoch: Epoch,
    instance_id: String,
) {
    let mut backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .without_max_times()
        .build();
    loop {
        if authority.office().is_none_or(|o| o.epoch != epoch) {
            return;
        }
        match catalog.claim_epoch(epoch, &instance_id).await {
            Ok(()) => {
                tracing::info!(%epoch, "epoch recorded in the catalog");
                return;
            }
            Err(CatalogError::Fenced { current, .. }) => {
                use crate::engine::Authority;
                authority.fenced_out(current);
                return;
            }
            Err(e) => {
                let delay = backoff.next().unwrap_or(Duration::from_secs(5));
                tracing::warn!(error = %e, retry_in = ?delay, "cannot record epoch in the catalog yet");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// The lease and the connection it was granted on.
struct Session {
    client: Client,
    lease_id: i64,
}

impl Session {
    /// Revokes the lease (best effort) so the member entry and any leader key go at once.
    async fn close(mut self, limit: Duration) {
        if let Err(e) = bounded(
            "revoking lease",
            limit,
            self.client.lease_revoke(self.lease_id),
        )
        .await
        {
            tracing::debug!(error = %e, "lease revoke failed; it will expire");
        }
    }
}

/// Keeps the member entry current (last cycle time, role) while the session lives: published
/// when it changes, at most once per `every`, so a short interval does not flood etcd.
async fn republish(
    mut client: Client,
    membership: Arc<Membership>,
    lease_id: i64,
    every: Duration,
) {
    let mut last = None;
    loop {
        membership.changed.notified().await;
        let now = membership.snapshot();
        if last.as_ref() != Some(&now) {
            match membership.publish(&mut client, lease_id).await {
                Ok(()) => last = Some(now),
                Err(e) => tracing::debug!(error = %e, "member entry update failed"),
            }
        }
        tokio::time::sleep(every).await;
    }
}

/// Follows the election with an Observe stream and logs each new leader. The stream carries
/// the require-leader metadata, so on an etcd member cut off from quorum it fails instead of
/// going silent; it is then reopened after a pause.
async fn observe_leader(
    mut client: Client,
    election: String,
    me: String,
    authority: Arc<ElectedAuthority>,
) {
    let mut current: Option<String> = None;
    loop {
        match client.observe(election.clone()).await {
            Ok(mut stream) => loop {
                match stream.message().await {
                    Ok(Some(resp)) => {
                        let Some(kv) = resp.kv() else { continue };
                        let leader = kv.value_str().unwrap_or("?").to_string();
                        if current.as_deref() != Some(leader.as_str()) {
                            tracing::info!(leader = %leader, epoch = kv.create_revision(), "leader observed");
                            if leader != me {
                                authority.stand_by();
                            }
                            current = Some(leader);
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(error = %e, "observe stream ended");
                        break;
                    }
                }
            },
            Err(e) => tracing::debug!(error = %e, "cannot observe the election"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
