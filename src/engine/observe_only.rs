//! Observation by instances that do not act (followers): they PROBE every primary, staggered
//! against the leader's cycles, record what they see in the observation table, tell the
//! leader about a loss (`ReportDown`) and answer its `ConfirmDown`.
//!
//! Observe-only by construction: the loop holds a [`ProbeOnly`] driver, which can send
//! nothing but PROBE, and a [`ConfigReader`], which can only read the configuration. Neither
//! a catalog writer nor a PROMOTE / SYNCREP_OFF sender is reachable from here.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{watch, Notify, Semaphore};

use super::observations::ObservationTable;
use super::runner::LoopSettings;
use super::second_opinion::{BoxFuture, PeerAnswer, PeerMember, Peers};
use super::{ProbeSettings, SegmentDriver};
use crate::catalog::{Catalog, CatalogError};
use crate::core::failure_kind;
use crate::model::{Dbid, Segment, SegmentConfig};
use crate::wire::failure::{AttemptError, FailureKind};
use crate::wire::{MessageType, ProbeReply};

/// A driver that can only PROBE.
pub struct ProbeOnly<D>(D);

impl<D: SegmentDriver> ProbeOnly<D> {
    pub fn new(driver: D) -> Self {
        ProbeOnly(driver)
    }

    /// One PROBE attempt, bounded by `deadline`.
    pub async fn probe(
        &self,
        target: &Segment,
        deadline: Instant,
    ) -> Result<ProbeReply, AttemptError> {
        self.0.send(target, MessageType::Probe, deadline).await
    }
}

/// A catalog that can only be read.
pub struct ConfigReader<C>(C);

impl<C: Catalog> ConfigReader<C> {
    pub fn new(catalog: C) -> Self {
        ConfigReader(catalog)
    }

    pub async fn load(&self) -> Result<SegmentConfig, CatalogError> {
        self.0.load().await
    }
}

/// `observe.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ObserveMode {
    /// No second opinion (the default): followers do not probe and the leader asks no one.
    /// Off by default because the instances ask each other over the API, and the default
    /// `api.listen` (loopback) cannot be reached from other hosts: a quorum on by default
    /// would stop every failover of a multi-host deployment.
    Off,
    /// Followers probe every primary once per interval, staggered against the leader.
    Continuous,
    /// Followers probe a primary only when the leader asks them to confirm its loss.
    OnDemand,
}

impl ObserveMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ObserveMode::Off => "off",
            ObserveMode::Continuous => "continuous",
            ObserveMode::OnDemand => "on-demand",
        }
    }
}

/// What the API needs to answer the instance-to-instance calls.
pub trait Responder: Send + Sync + 'static {
    /// `ConfirmDown`: our observation of `dbid` within `window`, by `deadline`.
    fn confirm_down(
        &self,
        dbid: Dbid,
        window: Duration,
        deadline: Instant,
    ) -> BoxFuture<'_, PeerAnswer>;

    /// `ReportDown` from `member`: recorded as its observation. Returns whether it was
    /// recorded.
    fn report_down(
        &self,
        member: &str,
        dbid: Dbid,
        observed_at: SystemTime,
        failure: FailureKind,
    ) -> bool;

    fn table(&self) -> &ObservationTable;

    /// What this instance's observation has probed so far, for the metrics.
    fn counts(&self) -> ObservationCounts;
}

/// Counters of the observation (followers' rounds and the probes made to answer
/// `ConfirmDown`), exported as `ftsd_observation_*`: they show what the second opinion costs
/// the segments (every PROBE starts a backend there).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ObservationCounts {
    /// Observation rounds started (continuous mode, while a follower).
    pub rounds: u64,
    /// PROBE exchanges (one primary, its whole retry budget) made by those rounds.
    pub round_probes: u64,
    /// PROBE exchanges made to answer a `ConfirmDown` without an observation of our own.
    pub confirm_probes: u64,
}

#[derive(Debug, Default)]
struct Counters {
    rounds: AtomicU64,
    round_probes: AtomicU64,
    confirm_probes: AtomicU64,
}

/// The observer: its probe-only handles, the table, and the settings.
pub struct Observer<D, C> {
    driver: ProbeOnly<D>,
    catalog: ConfigReader<C>,
    pub table: Arc<ObservationTable>,
    /// The probe loop's settings, replaced by a configuration reload (SIGHUP): each round,
    /// and each probe made for a `ConfirmDown`, reads them when it starts, so a reload of
    /// `probe.interval` / `timeout` / `retries` / `retry_delay` / `concurrency` re-times the
    /// observation as it does the leader's cycles.
    live: watch::Receiver<LoopSettings>,
    pub mode: ObserveMode,
    pub instance_id: String,
    /// Woken when a report of a loss we have not seen ourselves arrives: the leader's loop
    /// starts its next cycle at once.
    pub wake: Arc<Notify>,
    /// Set on shutdown: no new probe starts.
    pub stopping: AtomicBool,
    counters: Counters,
}

impl<D: SegmentDriver, C: Catalog> Observer<D, C> {
    pub fn new(
        driver: ProbeOnly<D>,
        catalog: ConfigReader<C>,
        table: Arc<ObservationTable>,
        live: watch::Receiver<LoopSettings>,
        mode: ObserveMode,
        instance_id: String,
        wake: Arc<Notify>,
    ) -> Self {
        Observer {
            driver,
            catalog,
            table,
            live,
            mode,
            instance_id,
            wake,
            stopping: AtomicBool::new(false),
            counters: Counters::default(),
        }
    }

    /// The settings in force now (the last reloaded ones).
    pub fn settings(&self) -> LoopSettings {
        *self.live.borrow()
    }

    /// PROBEs `target` with the retry budget of `settings`, each attempt ending by
    /// `deadline` at the latest, and records the result. None when no attempt could start
    /// before `deadline`.
    async fn probe(
        &self,
        settings: &ProbeSettings,
        target: &Segment,
        deadline: Instant,
    ) -> Option<Option<FailureKind>> {
        self.table.begin(target.dbid);
        let mut errors = Vec::new();
        for attempt in 0..=settings.retries {
            if attempt > 0 {
                tokio::time::sleep(settings.retry_delay).await;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            match self
                .driver
                .probe(target, deadline.min(now + settings.timeout))
                .await
            {
                Ok(_) => {
                    self.table.record(target.dbid, None);
                    return Some(None);
                }
                Err(e) => errors.push(e),
            }
        }
        match failure_kind(&errors) {
            Some(kind) => {
                self.table.record(target.dbid, Some(kind));
                Some(Some(kind))
            }
            None => {
                self.table.abandon(target.dbid);
                None
            }
        }
    }

    /// One round over every primary. Returns the primaries it saw lost (segment side), with
    /// the class, to report to the leader.
    pub async fn round(self: &Arc<Self>) -> Result<Vec<(Dbid, FailureKind)>, CatalogError> {
        self.counters.rounds.fetch_add(1, Ordering::Relaxed);
        // One round, one set of settings: a reload arriving mid-round applies to the next.
        let settings = self.settings().probe;
        let config = self.catalog.load().await?;
        let permits = Arc::new(Semaphore::new(settings.concurrency.max(1)));
        let budget = retry_budget(&settings);
        let mut probes = tokio::task::JoinSet::new();
        for pair in config.probe_pairs().pairs {
            let me = self.clone();
            let permits = permits.clone();
            probes.spawn(async move {
                let _permit = permits.acquire().await.ok()?;
                if me.stopping.load(Ordering::Relaxed) {
                    return None;
                }
                me.counters.round_probes.fetch_add(1, Ordering::Relaxed);
                let seen = me
                    .probe(&settings, &pair.primary, Instant::now() + budget)
                    .await?;
                seen.filter(|k| !k.is_prober_fault())
                    .map(|k| (pair.primary.dbid, k))
            });
        }
        let mut lost = Vec::new();
        while let Some(joined) = probes.join_next().await {
            if let Ok(Some(l)) = joined {
                lost.push(l);
            }
        }
        lost.sort_unstable_by_key(|l| l.0);
        Ok(lost)
    }

    /// `(retries + 1) × timeout + retries × retry_delay`: one full PROBE exchange, with the
    /// settings in force now.
    pub fn retry_budget(&self) -> Duration {
        retry_budget(&self.settings().probe)
    }

    /// The segment row of `dbid`, read from the catalog (on-demand probes).
    async fn segment(&self, dbid: Dbid) -> Option<Segment> {
        let config = self.catalog.load().await.ok()?;
        config.segments.into_iter().find(|s| s.dbid == dbid)
    }
}

/// `(retries + 1) × timeout + retries × retry_delay`.
pub fn retry_budget(s: &ProbeSettings) -> Duration {
    s.timeout * (s.retries + 1) + s.retry_delay * s.retries
}

impl<D: SegmentDriver, C: Catalog> Responder for Observer<D, C> {
    fn confirm_down(
        &self,
        dbid: Dbid,
        window: Duration,
        deadline: Instant,
    ) -> BoxFuture<'_, PeerAnswer> {
        Box::pin(async move {
            let continuous = self.mode == ObserveMode::Continuous;
            let answered = self.table.answer(dbid, window, deadline, continuous).await;
            if let Some(o) = answered {
                return PeerAnswer::Seen {
                    failure: o.failure,
                    age: o.age(),
                    probed: false,
                };
            }
            // No fresh observation of our own (on-demand mode, or just started): probe now,
            // bounded by the caller's deadline.
            let Some(segment) = self.segment(dbid).await else {
                return PeerAnswer::Unknown;
            };
            self.counters.confirm_probes.fetch_add(1, Ordering::Relaxed);
            match self.probe(&self.settings().probe, &segment, deadline).await {
                Some(failure) => PeerAnswer::Seen {
                    failure,
                    age: Duration::ZERO,
                    probed: true,
                },
                None => PeerAnswer::Unknown,
            }
        })
    }

    fn report_down(
        &self,
        member: &str,
        dbid: Dbid,
        observed_at: SystemTime,
        failure: FailureKind,
    ) -> bool {
        if member == self.instance_id {
            return false;
        }
        let seen_by_us = self.table.own(dbid).is_some_and(|o| o.seen_down());
        self.table.report(dbid, member, observed_at, failure);
        tracing::info!(reporter = %member, dbid, %failure, "a member reported a primary lost");
        if !seen_by_us {
            self.wake.notify_one();
        }
        true
    }

    fn table(&self) -> &ObservationTable {
        &self.table
    }

    fn counts(&self) -> ObservationCounts {
        ObservationCounts {
            rounds: self.counters.rounds.load(Ordering::Relaxed),
            round_probes: self.counters.round_probes.load(Ordering::Relaxed),
            confirm_probes: self.counters.confirm_probes.load(Ordering::Relaxed),
        }
    }
}

/// How long after `now` a follower of rank `rank` (1-based among the followers; the leader
/// is rank 0) of `members` live members starts its next round, so the group's probes of a
/// primary are spread over the interval: at `leader_cycle + interval × rank / members`
/// modulo the interval. Without a known leader cycle, at once.
pub fn stagger_delay(
    now: SystemTime,
    leader_cycle: Option<SystemTime>,
    interval: Duration,
    rank: u32,
    members: u32,
) -> Duration {
    let Some(leader_cycle) = leader_cycle else {
        return Duration::ZERO;
    };
    if interval.is_zero() || members == 0 {
        return Duration::ZERO;
    }
    let offset = interval * rank.min(members) / members;
    let target = leader_cycle + offset;
    let interval_ns = interval.as_nanos();
    match target.duration_since(now) {
        // The target lies ahead: wait for it, but never more than one interval.
        Ok(ahead) => Duration::from_nanos((ahead.as_nanos() % interval_ns) as u64),
        Err(behind) => {
            let behind = behind.duration().as_nanos() % interval_ns;
            Duration::from_nanos(((interval_ns - behind) % interval_ns) as u64)
        }
    }
}

/// How long to wait before the next round: until this follower's slot (`stagger`), or, with
/// no leader cycle known, one interval after the last round; never a round less than half an
/// interval after the previous one (a slot just missed waits for the next).
pub fn next_round_in(
    stagger: Duration,
    leader_known: bool,
    since_last: Option<Duration>,
    interval: Duration,
) -> Duration {
    let Some(since) = since_last else {
        return stagger;
    };
    if !leader_known {
        return interval.saturating_sub(since);
    }
    if since + stagger < interval / 2 {
        stagger + interval
    } else {
        stagger
    }
}

/// This follower's rank among the live followers (sorted by instance id; the leader is 0),
/// the number of live members, and the leader's last cycle start.
pub fn rank(
    members: &[PeerMember],
    me: &str,
) -> (u32, u32, Option<SystemTime>, Option<PeerMember>) {
    let leader = members.iter().find(|m| m.leader).cloned();
    let mut followers: Vec<&str> = members
        .iter()
        .filter(|m| !m.leader)
        .map(|m| m.instance_id.as_str())
        .collect();
    if !followers.contains(&me) {
        followers.push(me);
    }
    followers.sort_unstable();
    let r = followers.iter().position(|m| *m == me).unwrap_or(0) as u32 + 1;
    let n = (followers.len() + usize::from(leader.is_some())) as u32;
    (r, n, leader.as_ref().and_then(|l| l.last_cycle_at), leader)
}

/// The follower's loop: while `standing_by()` (a leader is known and it is not us), one
/// round per interval, staggered against the leader's cycles; every loss seen is reported
/// to the leader. In `on-demand` mode it does nothing (the API probes when asked).
///
/// The interval and the probe settings are the observer's live ones: a reload (SIGHUP) that
/// changes them re-times the wait for the next round at once, and the round after it runs
/// with the new settings, as the leader's next cycle does.
pub async fn run<D: SegmentDriver, C: Catalog>(
    observer: Arc<Observer<D, C>>,
    peers: Arc<dyn Peers>,
    standing_by: Arc<dyn Fn() -> bool + Send + Sync>,
    mut shutdown: watch::Receiver<bool>,
) {
    if observer.mode == ObserveMode::OnDemand {
        return;
    }
    let mut live = observer.live.clone();
    let mut settings = *live.borrow_and_update();
    let mut last_round: Option<Instant> = None;
    loop {
        if *shutdown.borrow() {
            break;
        }
        {
            let new = *live.borrow_and_update();
            if new != settings {
                tracing::info!(
                    interval = %humantime::format_duration(new.interval),
                    timeout = %humantime::format_duration(new.probe.timeout),
                    retries = new.probe.retries,
                    retry_delay = %humantime::format_duration(new.probe.retry_delay),
                    "reloaded probe settings in effect from the next observation round"
                );
                settings = new;
            }
        }
        let interval = settings.interval;
        if !standing_by() {
            last_round = None;
            tokio::select! {
                _ = tokio::time::sleep(interval.min(Duration::from_secs(1))) => {}
                _ = shutdown.changed() => {}
                _ = reloaded(&mut live) => {}
            }
            continue;
        }
        let call = interval
            .min(Duration::from_secs(5))
            .max(Duration::from_millis(500));
        let members = match tokio::time::timeout(call, peers.live_members()).await {
            Ok(Ok(m)) => m,
            _ => Vec::new(),
        };
        let (r, n, leader_cycle, leader) = rank(&members, &observer.instance_id);
        let delay = next_round_in(
            stagger_delay(SystemTime::now(), leader_cycle, interval, r, n),
            leader_cycle.is_some(),
            last_round.map(|t| t.elapsed()),
            interval,
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => continue,
            // New timings: compute the slot again with them.
            _ = reloaded(&mut live) => continue,
        }
        if !standing_by() {
            continue;
        }
        last_round = Some(Instant::now());
        match observer.round().await {
            Ok(lost) => {
                if let (Some(leader), false) = (leader, lost.is_empty()) {
                    for (dbid, kind) in lost {
                        tracing::warn!(dbid, %kind, leader = %leader.instance_id, "primary did not answer this observer; reporting to the leader");
                        peers
                            .report_down(&leader, dbid, SystemTime::now(), kind)
                            .await;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "observation round could not read the configuration")
            }
        }
    }
    observer.stopping.store(true, Ordering::Relaxed);
}

/// Completes when new settings arrive; never, once nobody can send any.
async fn reloaded(live: &mut watch::Receiver<LoopSettings>) {
    if live.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, leader: bool, cycle: Option<SystemTime>) -> PeerMember {
        PeerMember {
            instance_id: id.into(),
            api_address: String::new(),
            leader,
            last_cycle_at: cycle,
        }
    }

    #[test]
    fn followers_are_spread_over_the_interval() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let i = Duration::from_secs(3);
        // Right at the leader's cycle start: follower 1 of 3 waits 1 s, follower 2 waits 2 s.
        assert_eq!(stagger_delay(t0, Some(t0), i, 1, 3), Duration::from_secs(1));
        assert_eq!(stagger_delay(t0, Some(t0), i, 2, 3), Duration::from_secs(2));
        // 1.5 s into the leader's cycle: follower 1's slot of the next cycle is 2.5 s away.
        let now = t0 + Duration::from_millis(1500);
        assert_eq!(
            stagger_delay(now, Some(t0), i, 1, 3),
            Duration::from_millis(2500)
        );
        // Many intervals later the phase is the same.
        let later = t0 + Duration::from_millis(30_000 + 1500);
        assert_eq!(
            stagger_delay(later, Some(t0), i, 1, 3),
            Duration::from_millis(2500)
        );
        // A leader cycle stamped ahead of our clock: never more than one interval.
        let ahead = t0 + Duration::from_secs(100);
        assert!(stagger_delay(t0, Some(ahead), i, 1, 3) < i);
        // Unknown leader cycle: at once.
        assert_eq!(stagger_delay(t0, None, i, 1, 3), Duration::ZERO);
    }

    #[test]
    fn rounds_keep_to_the_slot_and_never_run_back_to_back() {
        let i = Duration::from_secs(3);
        let ms = Duration::from_millis;
        // First round: straight to the slot.
        assert_eq!(next_round_in(ms(700), true, None, i), ms(700));
        // A round that took 1 s: the slot 2 s away is the next one.
        assert_eq!(next_round_in(ms(2000), true, Some(ms(1000)), i), ms(2000));
        // Just after a round, the slot "now" is the one just run: the next one.
        assert_eq!(next_round_in(ms(1), true, Some(ms(10)), i), ms(3001));
        // No leader cycle known: one interval after the last round.
        assert_eq!(
            next_round_in(Duration::ZERO, false, Some(ms(1000)), i),
            ms(2000)
        );
    }

    #[test]
    fn rank_orders_followers_after_the_leader() {
        let t = Some(SystemTime::UNIX_EPOCH);
        let ms = [
            member("c", false, None),
            member("a", true, t),
            member("b", false, None),
        ];
        let (r, n, cycle, leader) = rank(&ms, "c");
        assert_eq!((r, n, cycle), (2, 3, t));
        assert_eq!(leader.unwrap().instance_id, "a");
        let (r, n, _, _) = rank(&ms, "b");
        assert_eq!((r, n), (1, 3));
        // Not registered yet: counted in.
        let (r, n, _, _) = rank(&ms[..2], "b");
        assert_eq!((r, n), (1, 3));
    }
}
