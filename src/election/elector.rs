//! The election loop: session → campaign → verify → hold office → step down → again.
//!
//! The elector talks to etcd only. It announces each change of office through
//! [`ElectedAuthority`]'s office events (taken with its epoch, left and why); the daemon claims
//! the epoch in the catalog from those events (`crate::daemon::claim`), as Patroni's DCS layer
//! never touches PostgreSQL.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use backon::{BackoffBuilder, ExponentialBuilder};
use etcd_client::{Client, LeaderKey, ResignOptions};
use tokio::sync::watch;

use super::authority::{ElectedAuthority, Leadership, StepDownReason};
use super::connect::Rotation;
use super::keeper::{self, KeeperHandle, LeaseStatus};
use super::members::Membership;
use super::EtcdOptions;

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

impl ElectorSettings {
    /// Limit for each unary etcd call.
    fn call_timeout(&self) -> Duration {
        self.etcd.dial_timeout.max(Duration::from_secs(1))
    }
}

enum Exit {
    Shutdown,
    StepDown(StepDownReason, String),
}

/// Runs until `shutdown` turns true, then resigns (if leading) and revokes the lease.
pub async fn run_elector(
    settings: ElectorSettings,
    authority: Arc<ElectedAuthority>,
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
        match term(&settings, &authority, &membership, &mut shutdown).await {
            Ok(Exit::Shutdown) => return,
            Ok(Exit::StepDown(kind, reason)) => {
                tracing::warn!(kind = %kind, reason = %reason, "stepped down; campaigning again");
                backoff = backoff_builder.build();
                // Let a follower win the next round while our lease is being revoked.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => {
                authority.reconnects.session.fetch_add(1, Ordering::Relaxed);
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

/// How many times a call that decides the office is tried: the key check after Campaign and
/// the lease revoke. The client balances over every configured endpoint, so one call can land
/// on a member that is cut off and hang until its timeout while the next goes to a healthy
/// one. Giving up after one attempt throws away an office just won, and a failed revoke leaves
/// our key — and every instance queued behind it — waiting out the lease TTL: three such
/// hand-overs in a row once took a promotion 10 s in chaos (`isolate-etcd-member`).
const ATTEMPTS: usize = 3;

/// [`bounded`], tried up to `attempts` times while `go_on` allows after a failure. `call`
/// makes a fresh request each time (on a clone of the client, so it may take another
/// connection).
async fn bounded_retried<T, Fut>(
    what: &str,
    limit: Duration,
    attempts: usize,
    mut go_on: impl FnMut(&anyhow::Error) -> bool,
    mut call: impl FnMut() -> Fut,
) -> anyhow::Result<T>
where
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    let mut attempt = 1;
    loop {
        match bounded(what, limit, call()).await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < attempts && go_on(&e) => {
                tracing::debug!(error = %e, attempt, "etcd call failed; trying again");
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// One session: a lease, a campaign and, if won and verified, one term of office. The lease
/// is revoked however the term ends.
async fn term(
    s: &ElectorSettings,
    authority: &Arc<ElectedAuthority>,
    membership: &Arc<Membership>,
    shutdown: &mut watch::Receiver<bool>,
) -> anyhow::Result<Exit> {
    let mut session = Session::open(s, authority, membership).await?;
    authority.set_session(true);
    let result = async {
        let leader = match campaign(s, authority, &mut session, shutdown).await? {
            Ok(leader) => leader,
            Err(exit) => return Ok(exit),
        };
        let act_by = match verify(s, authority, &mut session, &leader).await? {
            Ok(act_by) => act_by,
            Err(exit) => return Ok(exit),
        };
        Ok(hold_office(
            s,
            authority,
            membership,
            &mut session,
            &leader,
            act_by,
            shutdown,
        )
        .await)
    }
    .await;
    authority.set_session(false);
    session.close(s.call_timeout(), s.ttl).await;
    result
}

/// Campaign phase: stands by while another instance leads and returns our leader key once
/// Campaign returns, or why the term ended first (lease lost, shutdown).
async fn campaign(
    s: &ElectorSettings,
    authority: &Arc<ElectedAuthority>,
    session: &mut Session,
    shutdown: &mut watch::Receiver<bool>,
) -> anyhow::Result<Result<LeaderKey, Exit>> {
    let call = s.call_timeout();
    let client = &mut session.client;
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
    let mut campaigner = client.clone();
    let campaign = campaigner.campaign(s.election.clone(), s.instance_id.clone(), session.lease_id);
    let won = tokio::select! {
        r = campaign => r.map_err(|e| anyhow::anyhow!("campaign: {e}"))?,
        leader = won_meanwhile(s, session.lease_id) => {
            tracing::info!("our key leads the election while Campaign has not answered; taking it");
            return Ok(Ok(leader));
        }
        lost = wait_lost(&mut session.keeper.status) => {
            return Ok(Err(Exit::StepDown(StepDownReason::LeaseLost, lost)));
        }
        _ = shutdown.changed() => return Ok(Err(Exit::Shutdown)),
    };
    match won.leader().cloned() {
        Some(leader) => Ok(Ok(leader)),
        None => anyhow::bail!("campaign returned no leader key"),
    }
}

/// Returns our leader key once the election's leader — the key with the lowest create
/// revision, which is what Campaign waits for — has been the one bound to our lease in two
/// reads in a row, `ttl / 3` apart, with Campaign still silent.
///
/// Campaign is one long call on one connection. When that connection goes to a member that
/// has been cut off, no answer comes until HTTP/2 keepalive gives up on it
/// (`etcd.keepalive_interval`, 10 s by default), while the keeper, on another member, keeps
/// our key — and so the office — alive for nobody: chaos `isolate-etcd-member` held a
/// promotion past its bound that way (2026-11-27). Each read here is a fresh call that may
/// take a healthy member; what it finds is checked again by `verify`.
///
/// Why two reads: dropping a Campaign that a member is still serving makes that member resign
/// the candidate's key (etcd's election cleans up a cancelled Campaign). A member that has not
/// answered for a whole read interval after our key led is not serving it; one that is only a
/// few milliseconds behind would have answered by then.
async fn won_meanwhile(s: &ElectorSettings, lease_id: i64) -> LeaderKey {
    let every = (s.ttl / 3).max(Duration::from_millis(200));
    let mut seen: Option<i64> = None;
    // The session's own client may keep a connection to the cut-off member.
    let mut etcd = Rotation::new(s.etcd.clone(), lease_id);
    loop {
        tokio::time::sleep(every).await;
        let Ok(c) = etcd.client().await else { continue };
        let read = bounded(
            "reading the leader",
            s.call_timeout(),
            c.leader(s.election.clone()),
        )
        .await;
        // An error (also etcd's "election: no leader") moves to the next endpoint; only the
        // reads that answer count.
        let Ok(resp) = read else {
            etcd.failed();
            continue;
        };
        match resp.kv().filter(|kv| kv.lease() == lease_id) {
            Some(kv) if seen == Some(kv.create_revision()) => {
                return LeaderKey::new()
                    .with_name(s.election.clone())
                    .with_key(kv.key().to_vec())
                    .with_rev(kv.create_revision())
                    .with_lease(lease_id);
            }
            Some(kv) => seen = Some(kv.create_revision()),
            None => seen = None,
        }
    }
}

/// Verify phase: Campaign can return after the candidate's own key vanished (etcd#19597), so
/// the key is re-read (create revision and lease must be ours) and the lease must still be
/// alive. Returns the act-by deadline to take office with.
async fn verify(
    s: &ElectorSettings,
    authority: &ElectedAuthority,
    session: &mut Session,
    leader: &LeaderKey,
) -> anyhow::Result<Result<Instant, Exit>> {
    let client = session.client.clone();
    let status = session.keeper.status.clone();
    let own = bounded_retried(
        "verifying leader key",
        s.call_timeout(),
        ATTEMPTS,
        // Only while the lease lives: a lost lease is decided below, not by more reads.
        |_| matches!(*status.borrow(), LeaseStatus::Alive { .. }),
        || {
            let mut c = client.clone();
            let key = leader.key().to_vec();
            async move { c.get(key, None).await }
        },
    )
    .await?;
    let valid = own
        .kvs()
        .first()
        .is_some_and(|kv| kv.create_revision() == leader.rev() && kv.lease() == session.lease_id);
    if !valid {
        authority.step_downs.count(StepDownReason::KeyVanished);
        return Ok(Err(Exit::StepDown(
            StepDownReason::KeyVanished,
            "campaign returned but our leader key is gone".into(),
        )));
    }
    let status = session.keeper.status.borrow().clone();
    Ok(match status {
        LeaseStatus::Alive { act_by, .. } => Ok(act_by),
        LeaseStatus::Lost { reason } => Err(Exit::StepDown(StepDownReason::LeaseLost, reason)),
    })
}

/// Hold-office phase: takes office (announced to the daemon, which claims the epoch), keeps it
/// while the lease and the key last, then leaves it and says why; resigns on shutdown so a
/// follower takes over at once.
async fn hold_office(
    s: &ElectorSettings,
    authority: &Arc<ElectedAuthority>,
    membership: &Arc<Membership>,
    session: &mut Session,
    leader: &LeaderKey,
    act_by: Instant,
    shutdown: &mut watch::Receiver<bool>,
) -> Exit {
    let epoch = leader.rev();
    authority.take_office(
        Leadership {
            revision: epoch,
            claimed: None,
            key: leader.key().to_vec(),
            lease_id: session.lease_id,
            since: SystemTime::now(),
        },
        session.client.clone(),
        act_by,
    );
    // Logged as office is taken, before the member entry is published: that publish can wait
    // on an unreachable member while the daemon already claims the epoch and acts with it.
    tracing::info!(epoch, "took office as leader");
    membership.update(|m| {
        m.role = "leader".into();
        m.epoch = Some(epoch);
        m.leader_since = Some(SystemTime::now());
    });
    // Bounded: until keep_office runs, no keepalive extends the act-by deadline, so a publish
    // stuck on an unreachable member would end the term it just began. The republisher sends
    // the entry again when it can.
    let publish = membership.publish(&mut session.client, session.lease_id);
    if let Err(e) = bounded("publishing the member entry", s.call_timeout(), publish).await {
        tracing::warn!(error = %e, "cannot update the members list");
    }

    let exit = keep_office(s, authority, session, leader, shutdown).await;
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
            let resign = session
                .client
                .resign(Some(ResignOptions::new().with_leader(leader.clone())));
            match bounded("resigning", s.call_timeout(), resign).await {
                Ok(_) => tracing::info!(epoch, "resigned leadership"),
                Err(e) => tracing::warn!(error = %e, "resign failed; the lease will expire"),
            }
        }
        // `fenced_out` already counted the fenced step-down when it happened.
        Exit::StepDown(StepDownReason::Fenced, _) => {}
        Exit::StepDown(kind, _) => authority.step_downs.count(*kind),
    }
    exit
}

/// Keeps office until the lease is lost, the act-by deadline passes, the key vanishes, the
/// catalog fences us out, the daemon asks to hand over, or we shut down.
async fn keep_office(
    s: &ElectorSettings,
    authority: &Arc<ElectedAuthority>,
    session: &mut Session,
    leader: &LeaderKey,
    shutdown: &mut watch::Receiver<bool>,
) -> Exit {
    let check_every = (s.ttl / 3).max(Duration::from_millis(200));
    let mut next_check = tokio::time::Instant::now() + check_every;
    let keeper = &mut session.keeper;
    let client = &mut session.client;
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
            _ = authority.hand_over.notified() => {
                return Exit::StepDown(
                    StepDownReason::CyclesFailing,
                    "probe cycles keep failing; handing office to another instance".into(),
                );
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

/// The lease, the connection it was granted on, its keeper and the member entry bound to it.
struct Session {
    client: Client,
    lease_id: i64,
    keeper: KeeperHandle,
    _publisher: AbortOnDrop,
}

impl Session {
    /// Grants the lease, starts keeping it alive and registers this instance as a follower.
    async fn open(
        s: &ElectorSettings,
        authority: &ElectedAuthority,
        membership: &Arc<Membership>,
    ) -> anyhow::Result<Session> {
        let mut client = s.etcd.connect().await?;
        let ttl_secs = s.ttl.as_secs().max(2) as i64;
        let granted_at = Instant::now();
        let grant = bounded(
            "granting lease",
            s.call_timeout(),
            client.lease_grant(ttl_secs, None),
        )
        .await?;
        let lease_id = grant.id();
        let ttl = Duration::from_secs(grant.ttl().max(1) as u64);
        let keeper = keeper::spawn(
            s.etcd.clone(),
            lease_id,
            ttl,
            s.margin,
            granted_at,
            authority.reconnects.clone(),
            &authority.liveness,
        )?;
        membership.update(|m| {
            m.role = "follower".into();
            m.epoch = None;
        });
        let publish = membership.publish(&mut client, lease_id);
        if let Err(e) = bounded("registering as a member", s.call_timeout(), publish).await {
            tracing::warn!(error = %e, "cannot register in the members list");
        }
        let publisher = AbortOnDrop(tokio::spawn(republish(
            client.clone(),
            membership.clone(),
            lease_id,
            Duration::from_millis(200),
        )));
        tracing::info!(lease = format!("{lease_id:x}"), ttl = ?ttl, "etcd session open; campaigning");
        Ok(Session {
            client,
            lease_id,
            keeper,
            _publisher: publisher,
        })
    }

    /// Revokes the lease (best effort, within `budget`: past the TTL it has expired anyway)
    /// so the member entry and any leader key go at once.
    async fn close(self, limit: Duration, budget: Duration) {
        let give_up = Instant::now() + budget;
        let (client, lease_id) = (self.client.clone(), self.lease_id);
        let revoked = bounded_retried(
            "revoking lease",
            limit,
            ATTEMPTS,
            |_| Instant::now() + limit <= give_up,
            || {
                let mut c = client.clone();
                async move { c.lease_revoke(lease_id).await }
            },
        )
        .await;
        if let Err(e) = revoked {
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    const TRY: Duration = Duration::from_millis(20);

    /// A call whose first `hangs` attempts never answer, then answers `Ok(7)`.
    fn flaky(
        hangs: usize,
        calls: &Arc<AtomicUsize>,
    ) -> impl FnMut() -> crate::engine::second_opinion::BoxFuture<'static, Result<i32, etcd_client::Error>>
    {
        let calls = calls.clone();
        move || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                if n < hangs {
                    std::future::pending::<()>().await;
                }
                Ok(7)
            })
        }
    }

    #[tokio::test]
    async fn a_call_that_hangs_on_one_connection_is_made_again() {
        let calls = Arc::new(AtomicUsize::new(0));
        let got = bounded_retried("reading", TRY, ATTEMPTS, |_| true, flaky(2, &calls)).await;
        assert_eq!(got.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn the_attempts_are_bounded() {
        let calls = Arc::new(AtomicUsize::new(0));
        let got = bounded_retried("reading", TRY, ATTEMPTS, |_| true, flaky(9, &calls)).await;
        let e = got.unwrap_err().to_string();
        assert_eq!(e, "reading: timed out after 20ms");
        assert_eq!(calls.load(Ordering::SeqCst), ATTEMPTS);
    }

    #[tokio::test]
    async fn no_attempt_is_made_once_go_on_says_stop() {
        let calls = Arc::new(AtomicUsize::new(0));
        let got = bounded_retried("reading", TRY, ATTEMPTS, |_| false, flaky(9, &calls)).await;
        assert!(got.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
