//! What the API answers from.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::sync::{watch, Notify};

use crate::catalog::any::AnyCatalog;
use crate::election::members::{self, MemberInfo};
use crate::election::pause::PauseInfo;
use crate::election::{keys, ElectedAuthority, EtcdOptions};
use crate::engine::runner::CycleObserver;
use crate::engine::CycleReport;
use crate::metrics::Live;

/// Attempts at reading the members registry, and how long each may take.
const MEMBERS_READ_ATTEMPTS: usize = 3;
const MEMBERS_READ_ATTEMPT: std::time::Duration = std::time::Duration::from_secs(1);

/// How this instance holds authority.
pub enum Mode {
    /// `--no-election`: this instance alone, with a fixed epoch; no etcd.
    Single { epoch: i64 },
    /// Elected through etcd.
    Elected {
        authority: Arc<ElectedAuthority>,
        /// Boxed: the options are large next to the single-instance variant.
        etcd: Box<EtcdOptions>,
        /// `etcd.prefix`.
        prefix: String,
        /// Granted lease TTL minus act margin, to derive the keepalive age from act-by.
        act_window: std::time::Duration,
    },
    /// `--shadow`: probes and decides, never acts, compares with the incumbent FTS.
    Shadow {
        book: Arc<crate::shadow::ShadowBook>,
    },
}

/// The outcome of this instance's last cycle.
#[derive(Debug, Clone)]
pub enum LastCycle {
    Finished(Arc<CycleReport>),
    /// The cycle could not start (catalog unreadable).
    Failed {
        at: SystemTime,
        error: String,
    },
}

impl LastCycle {
    pub fn started_at(&self) -> SystemTime {
        match self {
            LastCycle::Finished(r) => r.started_at,
            LastCycle::Failed { at, .. } => *at,
        }
    }

    /// `ok`, `paused`, `error: ...` (the members registry carries the same text).
    pub fn result(&self) -> String {
        match self {
            LastCycle::Finished(r) => cycle_result(r),
            LastCycle::Failed { error, .. } => format!("error: {error}"),
        }
    }
}

/// A finished cycle's result in a word or three: `ok`, `paused`, or `ok (N transitions failed,
/// M messages failed)`.
pub fn cycle_result(r: &CycleReport) -> String {
    if r.paused {
        "paused".into()
    } else if r.transitions_failed > 0 || r.messages_failed > 0 {
        format!(
            "ok ({} transitions failed, {} messages failed)",
            r.transitions_failed, r.messages_failed
        )
    } else {
        "ok".into()
    }
}

/// Shared by the API service, the metrics endpoint and the probe loop (as an observer).
pub struct ApiState {
    pub cluster: String,
    pub instance_id: String,
    pub api_address: String,
    pub host: String,
    pub started_at: SystemTime,
    /// Its own connection, so API reads never queue behind the probe loop's transactions.
    pub catalog: AnyCatalog,
    pub mode: Mode,
    /// Wakes the probe loop (probe now).
    pub wake: Arc<Notify>,
    last_cycle: watch::Sender<Option<LastCycle>>,
    /// The pause key as last seen (always None in single-instance mode).
    pub pause: watch::Receiver<Option<PauseInfo>>,
    etcd_client: tokio::sync::Mutex<Option<etcd_client::Client>>,
    /// The coordinator pair's watch, when `[coordinator]` is configured.
    coordinator: std::sync::OnceLock<Arc<crate::coordinator::Watcher>>,
    /// This instance's observations and the answers to ConfirmDown / ReportDown.
    observer: std::sync::OnceLock<Arc<dyn crate::engine::observe_only::Responder>>,
    /// The brake on correlated failures the probe loop uses (none in shadow mode).
    brake: std::sync::OnceLock<Arc<crate::engine::Brake>>,
    /// Runs segment-pair switchovers (set by the daemon once its probe loop is built).
    switchover: std::sync::OnceLock<Arc<dyn crate::switchover::Switchover>>,
}

impl ApiState {
    /// Attaches the probe loop's brake (status, release, alarms).
    pub fn set_brake(&self, brake: Arc<crate::engine::Brake>) {
        let _ = self.brake.set(brake);
    }

    pub fn brake(&self) -> Option<Arc<crate::engine::Brake>> {
        self.brake.get().cloned()
    }

    /// How many hosts carry acting primaries (what `brake.max_hosts = "auto"` halves), from the
    /// last cycle's configuration or, before one, 0.
    pub async fn primary_hosts(&self) -> usize {
        use crate::catalog::Catalog;
        let config = match self.last_cycle() {
            Some(LastCycle::Finished(r)) => r.config.clone(),
            _ => match self.catalog.load().await {
                Ok(c) => c,
                Err(_) => return 0,
            },
        };
        crate::engine::brake::primary_hosts(&config)
    }

    /// Attaches the coordinator watch (status line, alarms, metrics).
    pub fn set_coordinator(&self, watcher: Arc<crate::coordinator::Watcher>) {
        let _ = self.coordinator.set(watcher);
    }

    /// Attaches the observer that answers ConfirmDown and records ReportDown.
    pub fn set_observer(&self, observer: Arc<dyn crate::engine::observe_only::Responder>) {
        let _ = self.observer.set(observer);
    }

    pub fn observer(&self) -> Option<&Arc<dyn crate::engine::observe_only::Responder>> {
        self.observer.get()
    }

    /// Attaches what runs segment-pair switchovers.
    pub fn set_switchover(&self, s: Arc<dyn crate::switchover::Switchover>) {
        let _ = self.switchover.set(s);
    }

    pub fn switchover(&self) -> Option<Arc<dyn crate::switchover::Switchover>> {
        self.switchover.get().cloned()
    }

    /// The coordinator watch, if configured.
    pub fn coordinator_watch(&self) -> Option<Arc<crate::coordinator::Watcher>> {
        self.coordinator.get().cloned()
    }

    /// The coordinator pair's last round, if watched.
    pub fn coordinator(&self) -> Option<crate::coordinator::PairStatus> {
        self.coordinator.get().map(|w| w.status())
    }

    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cluster: String,
        instance_id: String,
        api_address: String,
        catalog: AnyCatalog,
        mode: Mode,
        wake: Arc<Notify>,
        pause: watch::Receiver<Option<PauseInfo>>,
    ) -> Arc<ApiState> {
        Arc::new(ApiState {
            cluster,
            instance_id,
            api_address,
            host: crate::config::hostname(),
            started_at: SystemTime::now(),
            catalog,
            mode,
            wake,
            last_cycle: watch::channel(None).0,
            pause,
            etcd_client: tokio::sync::Mutex::new(None),
            coordinator: std::sync::OnceLock::new(),
            observer: std::sync::OnceLock::new(),
            brake: std::sync::OnceLock::new(),
            switchover: std::sync::OnceLock::new(),
        })
    }

    /// This instance's last cycle.
    pub fn last_cycle(&self) -> Option<LastCycle> {
        self.last_cycle.borrow().clone()
    }

    pub fn subscribe_cycles(&self) -> watch::Receiver<Option<LastCycle>> {
        self.last_cycle.subscribe()
    }

    /// The epoch this instance acts with, if it leads.
    pub fn own_epoch(&self) -> Option<i64> {
        match &self.mode {
            Mode::Single { epoch } => Some(*epoch),
            Mode::Elected { authority, .. } => authority.office().map(|o| o.epoch().0),
            Mode::Shadow { .. } => None,
        }
    }

    pub fn leader_since(&self) -> Option<SystemTime> {
        match &self.mode {
            Mode::Single { .. } => Some(self.started_at),
            Mode::Elected { authority, .. } => authority.office().map(|o| o.since),
            Mode::Shadow { .. } => None,
        }
    }

    pub fn is_leader(&self) -> bool {
        self.own_epoch().is_some()
    }

    pub fn paused(&self) -> bool {
        self.pause.borrow().is_some()
    }

    /// Scrape-time gauges for the metrics endpoint.
    pub fn live(&self) -> Live {
        let keepalive_age = match &self.mode {
            Mode::Elected {
                authority,
                act_window,
                ..
            } => authority.act_by().map(|act_by| {
                let last_ack = act_by.checked_sub(*act_window).unwrap_or(act_by);
                Instant::now().saturating_duration_since(last_ack)
            }),
            Mode::Single { .. } | Mode::Shadow { .. } => None,
        };
        let etcd_reconnects = match &self.mode {
            Mode::Elected { authority, .. } => authority.reconnects.counts().to_vec(),
            Mode::Single { .. } | Mode::Shadow { .. } => Vec::new(),
        };
        let shadow = match &self.mode {
            Mode::Shadow { book } => book.counts(),
            _ => Vec::new(),
        };
        Live {
            etcd_reconnects,
            is_leader: self.is_leader(),
            epoch: self.own_epoch(),
            paused: self.paused(),
            keepalive_age,
            coordinator: self
                .coordinator()
                .map(|c| crate::metrics::CoordinatorGauges {
                    writable: c.writable,
                    vip_holders: c.vip_holders,
                }),
            shadow,
            observation: self.observer().map(|o| o.counts()),
        }
    }

    /// An etcd client (cached; dropped after an error by `forget_etcd`).
    pub async fn etcd(&self) -> Result<etcd_client::Client, String> {
        let Mode::Elected { etcd, .. } = &self.mode else {
            return Err(
                "no etcd in single-instance (--no-election) or shadow (--shadow) mode".into(),
            );
        };
        let mut g = self.etcd_client.lock().await;
        if let Some(c) = g.as_ref() {
            return Ok(c.clone());
        }
        let c = etcd.connect().await.map_err(|e| format!("etcd: {e}"))?;
        *g = Some(c.clone());
        Ok(c)
    }

    pub async fn forget_etcd(&self) {
        *self.etcd_client.lock().await = None;
    }

    /// The live members (elected), or this instance alone (single-instance mode).
    pub async fn members(&self) -> Result<Vec<MemberInfo>, String> {
        let Mode::Elected { prefix, .. } = &self.mode else {
            return Ok(vec![self.self_member()]);
        };
        let key = keys::members_prefix(prefix, &self.cluster);
        // Short attempts on a fresh client each: a read that lands on a member that is cut
        // off hangs, and the next one may take a healthy member. The second opinion reads
        // this within its confirmation window, where one 5 s attempt would refuse a failover
        // that a second attempt would have counted.
        let mut last = String::new();
        for _ in 0..MEMBERS_READ_ATTEMPTS {
            let mut c = self.etcd().await?;
            let call =
                tokio::time::timeout(MEMBERS_READ_ATTEMPT, members::list(&mut c, &key)).await;
            match call {
                Ok(Ok(m)) => return Ok(m),
                Ok(Err(e)) => last = format!("reading the members registry from etcd: {e}"),
                Err(_) => last = "reading the members registry from etcd: timed out".into(),
            }
            self.forget_etcd().await;
        }
        Err(last)
    }

    /// This instance as it knows itself (the registry may be unreachable).
    pub fn self_member(&self) -> MemberInfo {
        let last = self.last_cycle();
        MemberInfo {
            instance_id: self.instance_id.clone(),
            host: self.host.clone(),
            api_address: self.api_address.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            role: if self.is_leader() {
                "leader"
            } else if self.shadow().is_some() {
                "shadow"
            } else {
                "follower"
            }
            .into(),
            epoch: self.own_epoch(),
            started_at: self.started_at,
            last_cycle_at: last.as_ref().map(LastCycle::started_at),
            last_cycle_ms: last.as_ref().and_then(|l| match l {
                LastCycle::Finished(r) => Some(r.duration.as_millis() as u64),
                LastCycle::Failed { .. } => None,
            }),
            last_cycle_result: last.as_ref().map(LastCycle::result),
            leader_since: self.leader_since(),
        }
    }

    /// The pause key's full path (elected mode).
    pub fn pause_key(&self) -> Option<String> {
        match &self.mode {
            Mode::Elected { prefix, .. } => Some(keys::pause(prefix, &self.cluster)),
            Mode::Single { .. } | Mode::Shadow { .. } => None,
        }
    }

    /// The shadow's record, when this instance runs in shadow mode.
    pub fn shadow(&self) -> Option<&crate::shadow::ShadowBook> {
        match &self.mode {
            Mode::Shadow { book } => Some(book),
            _ => None,
        }
    }
}

impl CycleObserver for ApiState {
    fn cycle_finished(&self, report: &CycleReport) {
        self.last_cycle
            .send_replace(Some(LastCycle::Finished(Arc::new(report.clone()))));
    }

    fn cycle_failed(&self, error: &str) {
        self.last_cycle.send_replace(Some(LastCycle::Failed {
            at: SystemTime::now(),
            error: error.into(),
        }));
    }
}
