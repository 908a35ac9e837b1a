//! Coordinator failover (content -1): the HA loop that watches the coordinator and its standby
//! over SQL and, as the elected leader, promotes the standby when the coordinator is lost.
//! See docs/coordinator.md for the model and the safety argument.
//!
//! Every instance runs the watch (a follower that becomes leader already knows whether the
//! standby was in sync while the coordinator still answered); only the acting leader writes
//! to etcd or changes a server. One round:
//!
//! 1. read the recorded state from etcd (which server acts, a pending intent);
//! 2. probe both servers ([`probe`]): the coordinator with retries, the standby once;
//! 3. remember the standby's sync state whenever the coordinator answered;
//! 4. decide ([`crate::core::coordinator::decide`], pure);
//! 5. act: a refusal is logged (and recorded once per episode by the leader); a failover runs
//!    its steps ([`failover`]), each fenced ([`records`]).
//!
//! * `probe` — the SQL probes and the sync judgement; `cloudberry` — on a Cloudberry
//!   external-FTS cluster, the probes, PROMOTE and the content -1 rows through the servers'
//!   FTS handlers and the blob's etcd, as `gpfts`; `seen` — a round as the decision reads it,
//!   either way; `records` — the etcd state, intent and history with their fenced
//!   transaction; `failover` — the steps; `vip` — `ftsd vip-agent`, which holds the
//!   client-facing address on the acting coordinator's host; `adoption` — which server acts
//!   when etcd records nothing (a new cluster, or etcd rebuilt); `catalog_rows` — the SQL
//!   catalog's content -1 rows after a promotion, applied from the change the outcome leaves
//!   pending in etcd.

mod adoption;
pub mod catalog_rows;
pub mod cloudberry;
pub mod confirm;
pub mod failover;
pub mod probe;
pub mod records;
pub mod seen;
pub mod switchover;
pub mod vip;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;
use tokio::sync::watch;

use crate::config::Config;
use crate::core::coordinator::{
    decide, CoordinatorDecision, CoordinatorView, Office, OthersSee, PrimarySeen, Refusal,
    StandbySeen, Step, Stop, SyncSeen,
};
use crate::election::{ElectedAuthority, EtcdOptions};
use crate::engine::Authority;
use probe::{ConnectSettings, Endpoint};
use records::{micros, Fence, HistoryRecord, IntentKind, Read, Records};
use seen::{PrimarySide, Seen};

/// The `[coordinator]` table, parsed.
#[derive(Debug, Clone)]
pub struct CoordinatorSettings {
    /// As configured; etcd's recorded state overrides them after a failover.
    pub primary: Endpoint,
    pub standby: Endpoint,
    pub auto_failover: bool,
    pub interval: Duration,
    pub retries: u32,
    pub retry_delay: Duration,
    pub restart_grace: Duration,
    pub connect: ConnectSettings,
    pub max_lag: u64,
    pub fence_command: Vec<String>,
    pub fence_timeout: Duration,
    pub promote_command: Vec<String>,
    pub promote_timeout: Duration,
    pub failover_cooldown: Duration,
}

impl CoordinatorSettings {
    /// None when the pair is not configured.
    pub fn from_config(cfg: &Config) -> Option<CoordinatorSettings> {
        let c = &cfg.coordinator;
        if !c.enabled() {
            return None;
        }
        Some(CoordinatorSettings {
            primary: Endpoint::parse(&c.primary)?,
            standby: Endpoint::parse(&c.standby)?,
            auto_failover: c.auto_failover,
            interval: c.interval,
            retries: c.retries,
            retry_delay: cfg.probe.retry_delay.min(c.interval / 4),
            restart_grace: c.restart_grace,
            connect: ConnectSettings {
                user: c.user.clone(),
                database: c.database.clone(),
                password: c.password.clone(),
                timeout: c.timeout,
                tls: crate::tls::postgres::PgTls::or_fail_closed(&c.tls, "coordinator"),
                source: c.source_address,
            },
            max_lag: c.max_lag,
            fence_command: c.fence_command.clone(),
            fence_timeout: c.fence_timeout,
            promote_command: c.promote_command.clone(),
            promote_timeout: c.promote_timeout,
            failover_cooldown: c.failover_cooldown,
        })
    }
}

/// What this instance remembers between rounds.
#[derive(Debug, Default)]
struct Memory {
    /// The sync state at the last round that reached the acting coordinator, with the
    /// `acting/standby` pair it was seen for (forgotten when the roles change).
    last_sync: Option<(String, SyncSeen, SystemTime)>,
    /// Since when the coordinator has refused sessions as starting up (57P03).
    restarting_since: Option<Instant>,
    /// The refusal being reported, so it is logged and recorded once per episode.
    refusal: Option<Refusal>,
    /// The sync state last logged, so a change is logged once.
    reported_sync: Option<bool>,
    /// The last failover stop recorded: a fence that keeps failing is retried every round but
    /// recorded once per episode.
    stop_reported: Option<Stop>,
    /// Why the acting server could not be recorded (logged once per episode).
    adoption_wait: Option<crate::core::coordinator::adopt::WaitReason>,
    /// Why the catalog's content -1 rows could not be updated (logged once per episode).
    catalog_error: Option<String>,
    /// The last round kept an earlier in-sync observation: no standby attached, commits wait
    /// (logged once per episode).
    sync_held: bool,
}

/// The coordinator pair's last round, for the API and metrics.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PairStatus {
    /// Servers that answered writable this round.
    pub writable: u32,
    /// Registered VIP holders (None: not read).
    pub vip_holders: Option<u32>,
    /// The pair's alarms, one line each.
    pub alarms: Vec<String>,
    pub acting: String,
    pub standby: String,
    pub rebuild: bool,
    pub acting_writable: Option<bool>,
    /// The acting coordinator answered out of recovery but read-only (a switchover stopped
    /// its writes).
    pub acting_read_only: bool,
    /// The other server answered out of recovery but read-only (a former coordinator a
    /// switchover left read-only, awaiting its rebuild).
    pub standby_read_only: bool,
    pub standby_writable: Option<bool>,
    pub in_sync: Option<bool>,
    pub replay_lag: Option<u64>,
    pub decision: String,
    pub intent_pending: bool,
    /// A promotion the SQL catalog's content -1 rows do not show yet.
    #[serde(default)]
    pub catalog_pending: bool,
}

/// Where the watch reports alarms besides the log.
#[derive(Clone, Default)]
pub struct Reporting {
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    pub hooks: Option<crate::hooks::Hooks>,
    /// A VIP agent is configured: exactly one holder is expected (else only a second one is
    /// an alarm).
    pub vip_expected: bool,
}

impl PairStatus {
    /// One line like `gpstate -f`'s coordinator section.
    pub fn summary(&self) -> String {
        let side = |w: Option<bool>| match w {
            Some(true) => "writable",
            Some(false) => "in recovery",
            None => "unreachable",
        };
        let sync = match (self.in_sync, self.replay_lag) {
            (Some(true), Some(lag)) => format!("in sync, replay lag {lag} B"),
            (Some(true), None) => "in sync".into(),
            (Some(false), _) => "not in sync".into(),
            (None, _) => "sync unknown".into(),
        };
        let mut line = format!(
            "{} ({}), standby {} ({}{}), {sync}; {}",
            self.acting,
            if self.acting_read_only {
                "read-only"
            } else {
                side(self.acting_writable)
            },
            self.standby,
            if self.standby_read_only {
                "read-only"
            } else {
                side(self.standby_writable)
            },
            if self.rebuild { ", to be rebuilt" } else { "" },
            self.decision
        );
        if let Some(n) = self.vip_holders {
            line.push_str(&format!("; VIP holders {n}"));
        }
        if self.catalog_pending {
            line.push_str("; catalog content -1 rows not updated yet");
        }
        line
    }
}

/// The watch loop's state.
pub struct Watcher {
    pub settings: CoordinatorSettings,
    /// None: `--no-election`; the pair is watched and alarmed, never failed over.
    authority: Option<Arc<ElectedAuthority>>,
    records: Records,
    instance_id: String,
    memory: Mutex<Memory>,
    status: Mutex<PairStatus>,
    reporting: Reporting,
    /// The alarms of the current episode (raised once, until the set changes).
    alarms: Mutex<Vec<crate::core::coordinator::PairAlarm>>,
    /// A switchover runs in this process: rounds watch and report, and leave the acting to
    /// it (its read-only coordinator and its intent are its own).
    switching: std::sync::atomic::AtomicBool,
    /// One switchover at a time.
    switchover_lock: tokio::sync::Mutex<()>,
    /// Set on a Cloudberry external-FTS cluster: the pair is probed and promoted through the
    /// FTS handlers and its content -1 rows are kept in the blob ([`cloudberry`]).
    cloudberry: std::sync::OnceLock<cloudberry::CbPair>,
    /// What this instance's rounds last saw of each coordinator address (answers the
    /// leader's `ConfirmDown` about the coordinator).
    observed: confirm::Observations,
    /// The other instances, asked before a failover without a fence command; unset (no
    /// election): nobody else can act, this instance's retries confirm.
    peers: std::sync::OnceLock<Arc<dyn crate::engine::second_opinion::Peers>>,
    /// The SQL catalog, whose content -1 rows a promotion's outcome updates (unset on
    /// Cloudberry, where the blob's rows change with the outcome itself).
    catalog: std::sync::OnceLock<Arc<dyn catalog_rows::PairRows>>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Watcher {
    pub fn new(
        settings: CoordinatorSettings,
        authority: Option<Arc<ElectedAuthority>>,
        etcd: EtcdOptions,
        prefix: &str,
        cluster: &str,
        instance_id: String,
        reporting: Reporting,
    ) -> Arc<Watcher> {
        let timeout = etcd.dial_timeout.max(Duration::from_secs(2));
        Arc::new(Watcher {
            settings,
            authority,
            records: Records::new(
                crate::election::keys::coordinator_prefix(prefix, cluster),
                etcd,
                timeout,
            ),
            instance_id,
            memory: Mutex::default(),
            status: Mutex::default(),
            reporting,
            alarms: Mutex::default(),
            switching: std::sync::atomic::AtomicBool::new(false),
            switchover_lock: tokio::sync::Mutex::new(()),
            cloudberry: std::sync::OnceLock::new(),
            observed: confirm::Observations::default(),
            peers: std::sync::OnceLock::new(),
            catalog: std::sync::OnceLock::new(),
        })
    }

    /// Attaches the SQL catalog whose content -1 rows follow a promotion (before
    /// [`Watcher::run`]).
    pub fn attach_catalog(&self, catalog: Arc<dyn catalog_rows::PairRows>) {
        let _ = self.catalog.set(catalog);
    }

    /// Whether an outcome leaves a change of the catalog's rows pending.
    pub(super) fn updates_catalog(&self) -> bool {
        self.catalog.get().is_some() && self.cloudberry.get().is_none()
    }

    /// Attaches the other instances (before [`Watcher::run`]).
    pub fn set_peers(&self, peers: Arc<dyn crate::engine::second_opinion::Peers>) {
        let _ = self.peers.set(peers);
    }

    /// This instance's own observations of the coordinator, per address.
    pub fn observations(&self) -> &confirm::Observations {
        &self.observed
    }

    /// How recent a peer's observation must be: one interval and one full round of attempts
    /// on the coordinator, so a member that watches continuously always has one.
    fn confirm_window(&self) -> Duration {
        let s = &self.settings;
        s.interval + s.connect.timeout * (s.retries + 1) + s.retry_delay * s.retries
    }

    /// Probes and promotes the pair as on a Cloudberry external-FTS cluster from now on
    /// (before [`Watcher::run`]; a second call is ignored).
    pub fn attach_cloudberry(&self, pair: cloudberry::CbPair) {
        if self.cloudberry.set(pair).is_err() {
            tracing::warn!("the coordinator watch is attached to a Cloudberry cluster already");
        }
    }

    pub(super) fn cloudberry(&self) -> Option<&cloudberry::CbPair> {
        self.cloudberry.get()
    }

    /// One probe round of the pair, over SQL or (Cloudberry) through the FTS handlers.
    async fn probe_pair(&self, acting: &Endpoint, standby: &Endpoint) -> Seen {
        if let Some(cb) = self.cloudberry() {
            return cb
                .round(
                    self.settings.retries,
                    self.settings.retry_delay,
                    acting,
                    standby,
                )
                .await;
        }
        let connect = &self.settings.connect;
        let (p, s) = tokio::join!(
            probe::round(self.settings.retries, self.settings.retry_delay, || {
                probe::read_primary(connect, acting)
            }),
            probe::round(0, Duration::ZERO, || probe::read_standby(connect, standby)),
        );
        Seen::from_sql(&p, &s, !self.settings.promote_command.is_empty())
    }

    /// The last round's status.
    pub fn status(&self) -> PairStatus {
        lock(&self.status).clone()
    }

    /// Raises the pair's alarms: logged, counted and hooked once per episode; the status
    /// carries them while they last.
    fn raise(&self, alarms: Vec<crate::core::coordinator::PairAlarm>) {
        let mut current = lock(&self.alarms);
        for a in &alarms {
            if !current.contains(a) {
                tracing::error!(content = -1, alarm = a.as_str(), "{}", a.describe());
                if let Some(m) = &self.reporting.metrics {
                    m.alarm_raised(a.as_str());
                }
                if let Some(h) = &self.reporting.hooks {
                    h.coordinator_alarm(a.as_str(), &a.describe());
                }
            }
        }
        for a in current.iter() {
            if !alarms.contains(a) {
                tracing::info!(
                    content = -1,
                    alarm = a.as_str(),
                    "coordinator alarm cleared"
                );
            }
        }
        lock(&self.status).alarms = alarms.iter().map(|a| a.describe()).collect();
        *current = alarms;
    }

    pub fn records(&self) -> &Records {
        &self.records
    }

    /// Whether this instance may act, and with which term (leader key revision).
    fn office(&self) -> (Office, Option<(Fence, i64)>) {
        let Some(a) = &self.authority else {
            return (Office::NotLeader, None);
        };
        let Some(office) = a.office() else {
            return (Office::NotLeader, None);
        };
        if a.paused() {
            return (Office::Paused, None);
        }
        if a.act_by().is_none_or(|t| Instant::now() >= t) {
            return (Office::PastActBy, None);
        }
        match a.acting_epoch() {
            // Claim pending, or the pause key not read yet.
            None => (Office::NotLeader, None),
            Some(epoch) => (
                Office::Acting,
                Some((
                    Fence {
                        leader_key: office.key.clone(),
                        revision: office.revision,
                    },
                    epoch.0,
                )),
            ),
        }
    }

    /// The term this instance acts in now, if any.
    fn acting_term(&self) -> Option<i64> {
        match self.office() {
            (Office::Acting, Some((fence, _))) => Some(fence.revision),
            _ => None,
        }
    }

    /// The authority gate of a step in term `term`: None stops it; otherwise the act-by
    /// deadline it must end by.
    fn gate(&self, term: i64) -> Option<Option<Instant>> {
        if self.acting_term() != Some(term) {
            return None;
        }
        Some(self.authority.as_ref().and_then(|a| a.act_by()))
    }

    async fn confirm(&self, term: i64) -> bool {
        match &self.authority {
            Some(a) => self.acting_term() == Some(term) && a.confirm().await,
            None => false,
        }
    }

    /// Records why a failover stopped (fenced like every record; an instance that lost office
    /// records nothing).
    async fn record_stop(&self, plan: &failover::Plan, stop: Stop, reports: &[serde_json::Value]) {
        let event = match stop {
            Stop::FenceFailed => "fence_failed",
            Stop::PromoteFailed => "promote_failed",
            Stop::VerifyFailed => "verify_failed",
            Stop::IntentRejected | Stop::OutcomeRejected | Stop::AuthorityLost => return,
        };
        if lock(&self.memory).stop_reported.replace(stop) == Some(stop) {
            return;
        }
        let mut evidence = plan.evidence.clone();
        evidence["steps"] = serde_json::Value::Array(reports.to_vec());
        let history = HistoryRecord {
            time_us: self.records.next_id(),
            event: event.into(),
            from: plan.from.to_string(),
            to: plan.to.to_string(),
            epoch: plan.epoch,
            instance_id: self.instance_id.clone(),
            desc: format!(
                "ftsd: coordinator failover stopped ({event}); nothing promoted by this step"
            ),
            evidence,
        };
        // The state key may have moved (the intent); write the history alone against it.
        let read = match self.records.load().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot record the failover stop");
                return;
            }
        };
        if let Err(e) = self
            .records
            .write(&plan.fence, read.mod_revision, None, &history)
            .await
        {
            tracing::warn!(error = %e, "cannot record the failover stop");
        }
    }

    /// Runs rounds every `interval` until shutdown.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        tracing::info!(
            primary = %self.settings.primary,
            standby = %self.settings.standby,
            auto_failover = self.settings.auto_failover,
            "watching the coordinator pair"
        );
        loop {
            let started = Instant::now();
            self.round().await;
            let next = started + self.settings.interval;
            tokio::select! {
                _ = tokio::time::sleep_until(next.into()) => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }

    /// One round; see the module documentation.
    pub async fn round(&self) {
        let read = match self.records.load().await {
            Ok(read) => Some(read),
            Err(e) => {
                // Without the recorded state nobody knows which server acts: watch, never act.
                if self.authority.is_some() {
                    tracing::warn!(error = %e, "cannot read the coordinator state from etcd; observe-only this round");
                } else {
                    tracing::debug!(error = %e, "cannot read the coordinator state from etcd");
                }
                None
            }
        };
        let (acting, standby, rebuild, pending, last_failover, catalog_update) =
            match read.as_ref().and_then(|r| r.state.as_ref()) {
                Some(s) => (
                    Endpoint::parse(&s.acting).unwrap_or_else(|| self.settings.primary.clone()),
                    Endpoint::parse(&s.standby).unwrap_or_else(|| self.settings.standby.clone()),
                    s.rebuild,
                    s.intent.clone(),
                    s.last_failover_us,
                    s.catalog_update.clone(),
                ),
                // Probed as configured; recorded from the answers before anything else
                // (`adoption`).
                None => (
                    self.settings.primary.clone(),
                    self.settings.standby.clone(),
                    false,
                    None,
                    None,
                    None,
                ),
            };
        // A pending intent names the pair it is about: probe that one.
        let (acting, standby) = match &pending {
            Some(i) => (
                Endpoint::parse(&i.from).unwrap_or(acting),
                Endpoint::parse(&i.to).unwrap_or(standby),
            ),
            None => (acting, standby),
        };
        let seen = self.probe_pair(&acting, &standby).await;
        let pair_key = format!("{acting}/{standby}");
        let primary_seen = self.primary_seen(&seen.primary);
        let sync_now = seen.sync_now.clone();
        self.observed.record(
            &acting.to_string(),
            match primary_seen {
                PrimarySeen::Up { .. } => None,
                PrimarySeen::Lost | PrimarySeen::ProberFault => Some(
                    seen.primary_round["failures"]
                        .as_array()
                        .and_then(|a| a.last())
                        .and_then(|f| serde_json::from_value(f["kind"].clone()).ok())
                        .unwrap_or(if primary_seen == PrimarySeen::ProberFault {
                            crate::wire::failure::FailureKind::Local
                        } else {
                            crate::wire::failure::FailureKind::Io
                        }),
                ),
            },
        );
        let last_sync = {
            let mut m = lock(&self.memory);
            if let Some(now) = &sync_now {
                let prev = m
                    .last_sync
                    .as_ref()
                    .filter(|(k, _, _)| *k == pair_key)
                    .map(|(_, s, _)| s);
                let sync = crate::core::coordinator::remember_sync(prev, now, seen.commits_wait);
                let held = sync.synchronous && !now.synchronous;
                if held && !m.sync_held {
                    tracing::warn!(content = -1, why = %now.why, "no standby attached and the coordinator's commits wait for one; the last in-sync observation stands");
                }
                m.sync_held = held;
                m.last_sync = Some((pair_key.clone(), sync.clone(), SystemTime::now()));
                if m.reported_sync.replace(sync.synchronous) != Some(sync.synchronous) {
                    if sync.synchronous {
                        tracing::info!(content = -1, why = %sync.why, lag = ?sync.replay_lag, "the coordinator's standby is in sync");
                    } else {
                        tracing::warn!(content = -1, why = %sync.why, "the coordinator's standby is not in sync");
                    }
                }
            }
            m.last_sync
                .as_ref()
                .filter(|(k, _, _)| *k == pair_key)
                .map(|(_, s, _)| s.clone())
        };
        let standby_seen = match &seen.standby.answer {
            None => StandbySeen::Unreachable,
            Some(st) if !st.in_recovery => StandbySeen::Writable,
            Some(_) => StandbySeen::InRecovery {
                can_promote: seen.standby.can_promote,
            },
        };
        let (office, term) = self.office();
        let braked = last_failover.is_some_and(|t| {
            let since = micros(SystemTime::now()).saturating_sub(t);
            u128::try_from(since).unwrap_or(0) < self.settings.failover_cooldown.as_micros()
        });
        let mut view = CoordinatorView {
            auto_failover: self.settings.auto_failover,
            office: if read.is_none() && office == Office::Acting {
                // No recorded state read: nothing can be fenced against it.
                Office::NotLeader
            } else {
                office
            },
            primary: primary_seen,
            standby: standby_seen,
            last_sync,
            max_lag: self.settings.max_lag,
            others: OthersSee::NotAsked,
            braked,
            pending_intent: pending.is_some(),
            sync_source: seen.source,
            promote_ready: seen.promote_ready,
            recorded: read.as_ref().is_none_or(|r| r.state.is_some()),
        };
        let mut decision = decide(&view);
        // Without a fence command, a failover needs the other live members' word that they
        // lost the coordinator too (docs/coordinator.md).
        let mut others = None;
        if decision == CoordinatorDecision::Failover {
            if let Some(peers) = self.peers.get() {
                let fence_command = !self.settings.fence_command.is_empty();
                if !fence_command {
                    let window = self.confirm_window();
                    // Waiting changes nothing outside: every step after it checks the
                    // authority again. A peer's next round ends within one window.
                    let deadline = Instant::now() + window + Duration::from_secs(1);
                    let gathered = confirm::gather(
                        peers,
                        &self.instance_id,
                        &acting.to_string(),
                        fence_command,
                        window,
                        deadline,
                    )
                    .await;
                    tracing::info!(
                        content = -1,
                        verdict = ?gathered.tally.others,
                        reached = ?gathered.tally.reached,
                        lost = ?gathered.tally.lost,
                        unconfirmed = ?gathered.tally.unconfirmed,
                        waited_ms = gathered.waited_ms,
                        "the other members' word on the lost coordinator"
                    );
                    view.others = gathered.tally.others;
                    decision = decide(&view);
                    others = Some(gathered.to_json());
                }
            }
        }
        self.publish(
            &acting,
            &standby,
            rebuild,
            &seen,
            sync_now.as_ref(),
            decision,
            pending.is_some(),
        );
        lock(&self.status).catalog_pending = catalog_update.is_some();
        let holders = match self.records.vip_holders().await {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the VIP holders");
                None
            }
        };
        let writable = seen.writable();
        let known = writable.iter().any(Option::is_some);
        let writable_count = writable.iter().filter(|w| **w == Some(true)).count() as u32;
        {
            let mut st = lock(&self.status);
            st.writable = writable_count;
            st.vip_holders = holders;
        }
        self.raise(crate::core::coordinator::pair_alarms(
            known.then_some(writable_count),
            holders,
            self.reporting.vip_expected,
        ));
        let mut evidence = json!({
            "view": view,
            "decision": decision,
            "acting": acting.to_string(),
            "standby": standby.to_string(),
            "primary_round": seen.primary_round,
            "standby_round": seen.standby_round,
            "promote_ready_key": seen.promote_ready_key,
        });
        if let Some(others) = others {
            evidence["confirmations"] = others;
        }
        if self.switching.load(std::sync::atomic::Ordering::Relaxed) {
            tracing::debug!(?decision, "a switchover runs here: this round only watches");
            return;
        }
        if let (Some((fence, epoch)), Some(read)) = (&term, &read) {
            // Recorded: the next round decides on the record. Not recorded: this round
            // decides as usual (no failover without a record; a refusal is recorded).
            if read.state.is_none()
                && self
                    .adopt_pair(fence, *epoch, read, &seen, &acting, &standby)
                    .await
            {
                return;
            }
        }
        let span =
            tracing::info_span!("coordinator", content = -1, acting = %acting, standby = %standby);
        let _guard = span.enter();
        match decision {
            CoordinatorDecision::Healthy | CoordinatorDecision::Standby => {
                {
                    let mut m = lock(&self.memory);
                    m.refusal = None;
                    m.stop_reported = None;
                }
                if let Some(ps) = &seen.primary.answer {
                    if ps.in_recovery {
                        tracing::warn!("the acting coordinator answers in recovery");
                    }
                    let in_sync = sync_now.as_ref().is_some_and(|x| x.synchronous);
                    if !ps.in_recovery && ps.read_only && in_sync && pending.is_none() {
                        self.restore_interrupted(term.as_ref(), read.as_ref(), &acting, &standby)
                            .await;
                    }
                }
                if let (Some(update), Some((fence, epoch)), Some(read), None) =
                    (&catalog_update, &term, &read, &pending)
                {
                    self.apply_catalog_update(fence, *epoch, read, update).await;
                }
                if rebuild && seen.standby.answer.is_some_and(|a| a.writable()) {
                    tracing::error!(
                        old = %standby,
                        "the former coordinator accepts writes again: it must be stopped and rebuilt as a standby (gpinitstandby), never restarted as it is"
                    );
                }
            }
            CoordinatorDecision::Refuse(r) => {
                self.refuse(r, office, term, read.as_ref(), &acting, &standby, evidence)
                    .await;
            }
            CoordinatorDecision::Failover
            | CoordinatorDecision::Resume
            | CoordinatorDecision::Complete => {
                let (Some((fence, epoch)), Some(read)) = (term, read) else {
                    return;
                };
                lock(&self.memory).refusal = None;
                tracing::warn!(?decision, "coordinator lost: failing over to its standby");
                let plan = failover::Plan {
                    decision,
                    from: acting.clone(),
                    to: standby.clone(),
                    kind: pending.as_ref().map_or(IntentKind::Failover, |i| i.kind),
                    has_pg_promote: seen.standby.has_pg_promote,
                    standby_replay_lsn: seen.standby.replay_lsn.clone(),
                    read,
                    fence,
                    epoch,
                    evidence,
                };
                let (last, _) = failover::run(self, plan).await;
                if last == Step::Done {
                    tracing::warn!(
                        coordinator = %standby,
                        old = %acting,
                        "coordinator failover done; the old coordinator must be rebuilt as a standby (gpinitstandby)"
                    );
                    lock(&self.memory).last_sync = None;
                }
            }
        }
    }

    fn primary_seen(&self, p: &PrimarySide) -> PrimarySeen {
        let mut m = lock(&self.memory);
        if let Some(ps) = &p.answer {
            m.restarting_since = None;
            return PrimarySeen::Up {
                writable: ps.writable(),
            };
        }
        if p.prober_fault {
            return PrimarySeen::ProberFault;
        }
        if p.restarting {
            let since = *m.restarting_since.get_or_insert_with(Instant::now);
            if since.elapsed() < self.settings.restart_grace {
                return PrimarySeen::Up { writable: false };
            }
        } else {
            m.restarting_since = None;
        }
        PrimarySeen::Lost
    }

    #[allow(clippy::too_many_arguments)]
    fn publish(
        &self,
        acting: &Endpoint,
        standby: &Endpoint,
        rebuild: bool,
        seen: &Seen,
        sync: Option<&SyncSeen>,
        decision: CoordinatorDecision,
        intent_pending: bool,
    ) {
        let mut st = lock(&self.status);
        *st = PairStatus {
            writable: st.writable,
            vip_holders: st.vip_holders,
            alarms: std::mem::take(&mut st.alarms),
            acting: acting.to_string(),
            standby: standby.to_string(),
            rebuild,
            acting_writable: seen.primary.answer.map(|a| a.writable()),
            acting_read_only: seen
                .primary
                .answer
                .is_some_and(|st| !st.in_recovery && st.read_only),
            standby_writable: seen.standby.answer.map(|a| a.writable()),
            standby_read_only: seen
                .standby
                .answer
                .is_some_and(|st| !st.in_recovery && st.read_only),
            in_sync: sync.map(|x| x.synchronous),
            replay_lag: sync.and_then(|x| x.replay_lag),
            decision: match decision {
                CoordinatorDecision::Refuse(r) => format!("refused: {r}"),
                other => format!("{other:?}").to_lowercase(),
            },
            intent_pending,
            catalog_pending: st.catalog_pending,
        };
    }

    #[allow(clippy::too_many_arguments)]
    async fn refuse(
        &self,
        r: Refusal,
        office: Office,
        term: Option<(Fence, i64)>,
        read: Option<&Read>,
        acting: &Endpoint,
        standby: &Endpoint,
        evidence: serde_json::Value,
    ) {
        let new_episode = lock(&self.memory).refusal.replace(r) != Some(r);
        if !new_episode {
            tracing::debug!(refusal = %r, "coordinator failover still refused");
            return;
        }
        tracing::error!(refusal = %r, "the coordinator is not answering, or a failover is pending, and no failover is made");
        let (Some((fence, epoch)), Some(read)) = (term, read) else {
            return;
        };
        if !r.recordable(office) {
            return;
        }
        let history = HistoryRecord {
            time_us: self.records.next_id(),
            event: "refused".into(),
            from: acting.to_string(),
            to: standby.to_string(),
            epoch,
            instance_id: self.instance_id.clone(),
            desc: format!("ftsd: coordinator failover refused: {r}"),
            evidence,
        };
        if let Err(e) = self
            .records
            .write(&fence, read.mod_revision, None, &history)
            .await
        {
            tracing::warn!(error = %e, "cannot record the refusal; will retry next round");
            lock(&self.memory).refusal = None;
        }
    }
}
