//! The authority the elector grants to the probe cycle.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, Txn};
use tokio::sync::{watch, Notify};

use crate::engine::Authority;
use crate::model::Epoch;

/// The office this instance holds right now.
#[derive(Debug, Clone)]
pub struct Leadership {
    pub epoch: Epoch,
    /// The leader key Campaign created (`<election>/<lease-hex>`).
    pub key: Vec<u8>,
    pub lease_id: i64,
    pub since: std::time::SystemTime,
}

/// Why this instance stopped acting; logged and counted.
#[derive(Debug, Default)]
pub struct StepDowns {
    pub act_by_expired: AtomicU64,
    pub lease_lost: AtomicU64,
    pub fenced: AtomicU64,
    pub key_vanished: AtomicU64,
    pub shutdown: AtomicU64,
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

/// A change of office, published for hooks and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfficeEvent {
    /// The epoch held now; None when not (or no longer) leading.
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
}

impl ElectedAuthority {
    pub fn new(confirm_timeout: Duration, wake: Arc<Notify>) -> Arc<Self> {
        Arc::new(ElectedAuthority {
            probing: AtomicBool::new(false),
            wake,
            office: Mutex::new(None),
            act_by: Mutex::new(None),
            client: Mutex::new(None),
            fenced: Notify::new(),
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

    /// Follows changes of office (taking it, leaving it and why).
    pub fn office_events(&self) -> watch::Receiver<OfficeEvent> {
        self.office_events.subscribe()
    }

    pub fn take_office(&self, office: Leadership, client: etcd_client::Client, act_by: Instant) {
        *lock(&self.act_by) = Some(act_by);
        *lock(&self.client) = Some(client);
        let epoch = office.epoch;
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
        self.leave_office_because("stepped_down");
    }

    /// Like `leave_office`, naming why (published to office-change followers).
    pub fn leave_office_because(&self, reason: &str) {
        let previous = lock(&self.office).take().map(|o| o.epoch);
        *lock(&self.act_by) = None;
        *lock(&self.client) = None;
        if previous.is_some() {
            self.office_events.send_replace(OfficeEvent {
                epoch: None,
                previous,
                reason: reason.into(),
            });
        }
    }

    pub fn extend(&self, act_by: Instant) {
        let mut g = lock(&self.act_by);
        if g.is_some() {
            *g = Some(act_by);
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
        lock(&self.office).as_ref().map(|o| o.epoch)
    }

    /// Compares the leader key's create revision in etcd (a linearizable txn): the key exists
    /// and is still ours. A partitioned member without a raft leader rejects the call
    /// ("require leader"), so this fails closed.
    async fn confirm(&self) -> bool {
        let Some(office) = self.office() else {
            return false;
        };
        let Some(mut client) = lock(&self.client).clone() else {
            return false;
        };
        let txn = Txn::new().when([Compare::create_revision(
            office.key.clone(),
            CompareOp::Equal,
            office.epoch.0,
        )]);
        match tokio::time::timeout(self.confirm_timeout, client.txn(txn)).await {
            Ok(Ok(resp)) => {
                if !resp.succeeded() {
                    tracing::warn!(epoch = %office.epoch, "leader key no longer ours in etcd");
                }
                resp.succeeded() && self.acting_epoch() == Some(office.epoch)
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
        self.leave_office_because("fenced");
        self.step_downs.fenced.fetch_add(1, Ordering::Relaxed);
        self.fenced.notify_one();
    }
}
