//! The authority the elector grants to the probe cycle.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, Txn};
use tokio::sync::{watch, Notify};

use crate::daemon::liveness::Liveness;
use crate::engine::Authority;
use crate::model::Epoch;

/// The office this instance holds right now.
#[derive(Debug, Clone)]
pub struct Leadership {
    /// The leader key's create revision: names this term in etcd.
    pub revision: i64,
    /// The epoch the daemon recorded in the catalog for this term (see `core::epoch`); None
    /// until then, and nothing is written or sent before it is known.
    pub claimed: Option<Epoch>,
    /// The leader key Campaign created (`<election>/<lease-hex>`).
    pub key: Vec<u8>,
    pub lease_id: i64,
    pub since: std::time::SystemTime,
}

impl Leadership {
    /// The recorded epoch, or the term's revision while the claim is pending.
    pub fn epoch(&self) -> Epoch {
        self.claimed.unwrap_or(Epoch(self.revision))
    }
}

/// Why a leader left office.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepDownReason {
    /// No keepalive was acknowledged before the act-by deadline.
    ActByExpired,
    /// etcd reported the lease gone (or its keeper stopped).
    LeaseLost,
    /// The catalog holds a newer epoch.
    Fenced,
    /// Our leader key is no longer in etcd.
    KeyVanished,
    /// The daemon is stopping.
    Shutdown,
    /// Handed office over because the probe cycles kept failing (`daemon::watchdog`).
    CyclesFailing,
    /// Left office without a more specific reason.
    SteppedDown,
}

impl StepDownReason {
    /// The name used in logs, metrics labels and the leader-change hook.
    pub fn as_str(self) -> &'static str {
        match self {
            StepDownReason::ActByExpired => "act_by_expired",
            StepDownReason::LeaseLost => "lease_lost",
            StepDownReason::Fenced => "fenced",
            StepDownReason::KeyVanished => "key_vanished",
            StepDownReason::Shutdown => "shutdown",
            StepDownReason::CyclesFailing => "cycles_failing",
            StepDownReason::SteppedDown => "stepped_down",
        }
    }
}

impl std::fmt::Display for StepDownReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why this instance stopped acting; logged and counted.
#[derive(Debug, Default)]
pub struct StepDowns {
    pub act_by_expired: AtomicU64,
    pub lease_lost: AtomicU64,
    pub fenced: AtomicU64,
    pub key_vanished: AtomicU64,
    pub shutdown: AtomicU64,
    /// Handed office over because cycles kept failing (see `daemon::watchdog`).
    pub cycles_failing: AtomicU64,
}

/// etcd streams re-established after a failure, by stream; a healthy connection to a
/// default-configured etcd opens each once. Shared with the lease keeper's thread.
#[derive(Debug, Default)]
pub struct Reconnects {
    /// Election sessions (lease, Campaign, Observe) that failed and were reopened.
    pub session: AtomicU64,
    /// Lease keepalive streams reopened by the keeper.
    pub keepalive: AtomicU64,
    /// Pause-key watches reopened.
    pub pause_watch: AtomicU64,
}

impl Reconnects {
    /// (stream, count) pairs for the metrics endpoint.
    pub fn counts(&self) -> [(&'static str, u64); 3] {
        [
            ("session", self.session.load(Ordering::Relaxed)),
            ("keepalive", self.keepalive.load(Ordering::Relaxed)),
            ("pause_watch", self.pause_watch.load(Ordering::Relaxed)),
        ]
    }
}

impl StepDowns {
    /// Counts one step-down for `reason` (an unspecific one counts as a lost lease).
    pub fn count(&self, reason: StepDownReason) {
        let counter = match reason {
            StepDownReason::ActByExpired => &self.act_by_expired,
            StepDownReason::Fenced => &self.fenced,
            StepDownReason::KeyVanished => &self.key_vanished,
            StepDownReason::Shutdown => &self.shutdown,
            StepDownReason::CyclesFailing => &self.cycles_failing,
            StepDownReason::LeaseLost | StepDownReason::SteppedDown => &self.lease_lost,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A change of office, published for hooks and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfficeEvent {
    /// The term held now, as an epoch of generation 0 (its etcd revision; the epoch recorded
    /// in the catalog differs only after an etcd rebuild); None when not (or no longer)
    /// leading.
    pub epoch: Option<Epoch>,
    /// The epoch given up, on leaving office.
    pub previous: Option<Epoch>,
    /// `elected`, `shutdown`, `lease_lost`, `act_by_expired`, `key_vanished`, `fenced` ...
    pub reason: String,
}

/// Shared between the elector (which writes) and the cycle (which reads).
pub struct ElectedAuthority {
    office: Mutex<Option<Leadership>>,
    act_by: Mutex<Option<Instant>>,
    /// A client for the pre-message leadership check, set while in office.
    client: Mutex<Option<etcd_client::Client>>,
    /// Woken when the catalog fences us out, so the elector steps down at once.
    pub fenced: Notify,
    /// Woken when the daemon asks the leader to hand office over (`hand_over`).
    pub hand_over: Notify,
    /// Probe cycles run while true: in office, or deposed by etcd trouble (observe-only until
    /// another leader is seen).
    probing: AtomicBool,
    /// Woken on taking office so the first cycle starts at once.
    pub wake: Arc<Notify>,
    pub step_downs: StepDowns,
    pub reconnects: Arc<Reconnects>,
    confirm_timeout: Duration,
    /// Maintenance mode, from the etcd pause key.
    paused: AtomicBool,
    /// Whether the pause key has been read at least once: until then nothing is written, so a
    /// leader elected while the cluster is paused never acts before it learns so.
    pause_known: AtomicBool,
    office_events: watch::Sender<OfficeEvent>,
    /// Whether an etcd session (a lease being kept alive) is open: for readiness and the
    /// systemd status line.
    session: watch::Sender<bool>,
    /// The systemd watchdog's liveness; the lease keeper of each session beats in it.
    pub liveness: Liveness,
}

impl ElectedAuthority {
    pub fn new(confirm_timeout: Duration, wake: Arc<Notify>, liveness: Liveness) -> Arc<Self> {
        Arc::new(ElectedAuthority {
            session: watch::channel(false).0,
            liveness,
            probing: AtomicBool::new(false),
            wake,
            office: Mutex::new(None),
            act_by: Mutex::new(None),
            client: Mutex::new(None),
            fenced: Notify::new(),
            hand_over: Notify::new(),
            step_downs: StepDowns::default(),
            reconnects: Arc::default(),
            confirm_timeout,
            paused: AtomicBool::new(false),
            pause_known: AtomicBool::new(false),
            office_events: watch::channel(OfficeEvent {
                epoch: None,
                previous: None,
                reason: "starting".into(),
            })
            .0,
        })
    }

    /// Records the pause key's state (see `election::pause`).
    pub fn set_pause(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
        self.pause_known.store(true, Ordering::Relaxed);
    }

    /// Records whether an etcd session is open (set by the elector).
    pub fn set_session(&self, open: bool) {
        self.session.send_replace(open);
    }

    /// Follows whether an etcd session is open.
    pub fn session(&self) -> watch::Receiver<bool> {
        self.session.subscribe()
    }

    /// Follows changes of office (taking it, leaving it and why).
    pub fn office_events(&self) -> watch::Receiver<OfficeEvent> {
        self.office_events.subscribe()
    }

    pub fn take_office(&self, office: Leadership, client: etcd_client::Client, act_by: Instant) {
        *lock(&self.act_by) = Some(act_by);
        *lock(&self.client) = Some(client);
        let epoch = Epoch(office.revision);
        *lock(&self.office) = Some(office);
        self.probing.store(true, Ordering::Relaxed);
        self.wake.notify_one();
        self.office_events.send_replace(OfficeEvent {
            epoch: Some(epoch),
            previous: None,
            reason: "elected".into(),
        });
    }

    /// Another instance leads: stand by without probing.
    pub fn stand_by(&self) {
        self.probing.store(false, Ordering::Relaxed);
    }

    /// Stops acting immediately: no write or message starts after this returns.
    pub fn leave_office(&self) {
        self.leave_office_because(StepDownReason::SteppedDown);
    }

    /// Like `leave_office`, naming why (published to office-change followers).
    pub fn leave_office_because(&self, reason: StepDownReason) {
        let previous = lock(&self.office).take().map(|o| Epoch(o.revision));
        *lock(&self.act_by) = None;
        *lock(&self.client) = None;
        if previous.is_some() {
            self.office_events.send_replace(OfficeEvent {
                epoch: None,
                previous,
                reason: reason.as_str().into(),
            });
        }
    }

    pub fn extend(&self, act_by: Instant) {
        let mut g = lock(&self.act_by);
        if g.is_some() {
            *g = Some(act_by);
        }
    }

    /// Records the epoch the catalog holds for the term at `revision`; from now on this
    /// instance acts with it. Ignored when that term is over.
    pub fn claimed(&self, revision: i64, epoch: Epoch) -> bool {
        let mut office = lock(&self.office);
        match office.as_mut() {
            Some(o) if o.revision == revision => {
                o.claimed = Some(epoch);
                drop(office);
                self.wake.notify_one();
                true
            }
            _ => false,
        }
    }

    /// etcd's current revision, read by a linearizable txn that also confirms the leader key
    /// of the term at `revision` is still ours; an error says why it could not be confirmed.
    pub async fn etcd_revision(&self, revision: i64) -> Result<i64, String> {
        let office = self
            .office()
            .filter(|o| o.revision == revision)
            .ok_or("no longer in that term")?;
        let mut client = lock(&self.client).clone().ok_or("no etcd client")?;
        let txn = Txn::new().when([Compare::create_revision(
            office.key.clone(),
            CompareOp::Equal,
            revision,
        )]);
        match tokio::time::timeout(self.confirm_timeout, client.txn(txn)).await {
            Ok(Ok(resp)) if resp.succeeded() => resp
                .header()
                .map(|h| h.revision())
                .ok_or_else(|| "etcd sent no header".to_string()),
            Ok(Ok(_)) => Err("our leader key is gone".into()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("timed out after {:?}", self.confirm_timeout)),
        }
    }

    pub fn office(&self) -> Option<Leadership> {
        lock(&self.office).clone()
    }

    pub fn act_by(&self) -> Option<Instant> {
        *lock(&self.act_by)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Authority for Arc<ElectedAuthority> {
    fn acting_epoch(&self) -> Option<Epoch> {
        if self.paused.load(Ordering::Relaxed) || !self.pause_known.load(Ordering::Relaxed) {
            return None;
        }
        let act_by = (*lock(&self.act_by))?;
        if Instant::now() >= act_by {
            return None;
        }
        lock(&self.office).as_ref().and_then(|o| o.claimed)
    }

    fn deadline(&self) -> Option<Instant> {
        *lock(&self.act_by)
    }

    /// Compares the leader key's create revision in etcd (a linearizable txn): the key exists
    /// and is still ours. A partitioned member without a raft leader rejects the call
    /// ("require leader"), so this fails closed.
    async fn confirm(&self) -> bool {
        let Some(office) = self.office() else {
            return false;
        };
        let Some(epoch) = office.claimed else {
            return false;
        };
        let Some(mut client) = lock(&self.client).clone() else {
            return false;
        };
        let txn = Txn::new().when([Compare::create_revision(
            office.key.clone(),
            CompareOp::Equal,
            office.revision,
        )]);
        match tokio::time::timeout(self.confirm_timeout, client.txn(txn)).await {
            Ok(Ok(resp)) => {
                if !resp.succeeded() {
                    tracing::warn!(%epoch, "leader key no longer ours in etcd");
                }
                resp.succeeded() && self.acting_epoch() == Some(epoch)
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot confirm leadership in etcd");
                false
            }
            Err(_) => {
                tracing::warn!(timeout = ?self.confirm_timeout, "leadership check in etcd timed out");
                false
            }
        }
    }

    fn should_probe(&self) -> bool {
        self.probing.load(Ordering::Relaxed)
    }

    fn paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    fn fenced_out(&self, current: Epoch) {
        tracing::error!(%current, "catalog fenced out our epoch; stepping down");
        self.probing.store(false, Ordering::Relaxed);
        self.leave_office_because(StepDownReason::Fenced);
        self.step_downs.count(StepDownReason::Fenced);
        self.fenced.notify_one();
    }
}
