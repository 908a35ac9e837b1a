//! The shared simulator state: a flat, fixed list of instances plus one lock per content, so ten
//! thousand instances cost a few hundred bytes each and probes of different contents never
//! contend.

use serde::{Deserialize, Serialize};
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};
use tracing::{info, warn};

use super::cloudberry::CbdbLink;
use super::state::{Fault, Gate, Group, Phase, PromoteOutcome, Serve, Timer, TimerKind};
use super::{SimConfig, SimError};
use fts_wire::{MessageType, ProbeReply};
use ftsd::model::{ContentId, Dbid, Role, Segment};

/// How long an operator action waits for the listener to open or close.
const LISTENER_ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Messages received, per instance.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub connections: AtomicU64,
    pub probe: AtomicU64,
    pub syncrep_off: AtomicU64,
    pub promote: AtomicU64,
    /// Malformed or unknown queries and unsupported protocol messages.
    pub invalid: AtomicU64,
}

impl Counters {
    pub fn count(&self, kind: MessageType) {
        let c = match kind {
            MessageType::Probe => &self.probe,
            MessageType::SyncrepOff => &self.syncrep_off,
            MessageType::Promote => &self.promote,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    fn view(&self) -> CounterView {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CounterView {
            connections: get(&self.connections),
            probe: get(&self.probe),
            syncrep_off: get(&self.syncrep_off),
            promote: get(&self.promote),
            invalid: get(&self.invalid),
        }
    }

    fn reset(&self) {
        for c in [
            &self.connections,
            &self.probe,
            &self.syncrep_off,
            &self.promote,
            &self.invalid,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }
}

/// Snapshot of an instance's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterView {
    pub connections: u64,
    pub probe: u64,
    pub syncrep_off: u64,
    pub promote: u64,
    pub invalid: u64,
}

/// What the control API shows for one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentView {
    pub dbid: Dbid,
    pub content: ContentId,
    pub role: Role,
    pub preferred_role: Role,
    pub host: String,
    pub port: u16,
    /// A process that would answer (not down, crashed or hung).
    pub alive: bool,
    /// The TCP listener is open right now.
    pub listening: bool,
    pub phase: Phase,
    /// PROMOTE accepted, not yet acting as primary.
    pub promoting: bool,
    pub fault: Option<Fault>,
    pub syncrep: bool,
    /// On a primary: whether it would report its mirror up / in sync.
    pub mirror_up: Option<bool>,
    pub in_sync: Option<bool>,
    pub counters: CounterView,
}

/// One simulated instance: identity, the listener's actual state, and a wake-up for everything
/// waiting on its state (listener task, hung connections, operator acks).
pub(crate) struct Instance {
    pub dbid: Dbid,
    pub content: ContentId,
    pub preferred_role: Role,
    group: u32,
    slot: u8,
    pub port: AtomicU16,
    pub listening: AtomicBool,
    pub changed: Notify,
    pub counters: Counters,
}

/// The simulator's state, shared by listener and connection tasks and the control API.
pub struct SimCore {
    pub(crate) cfg: SimConfig,
    pub(crate) instances: Vec<Instance>,
    groups: Vec<Mutex<Group>>,
    /// Instance indexes of each group's slots.
    group_members: Vec<[Option<u32>; 2]>,
    by_dbid: HashMap<Dbid, usize>,
    /// All catalog rows, the unserved coordinator included.
    rows: Vec<Segment>,
    /// The Cloudberry etcd the coordinator pair talks to (`--cbdb-conf`), once attached.
    cloudberry: OnceLock<Arc<CbdbLink>>,
    pub(crate) shutdown: watch::Sender<bool>,
    /// Client addresses whose connections hang, to every instance (a network cut between
    /// one prober host and the segments): tests give each prober its own view this way.
    blocked_clients: std::sync::Mutex<std::collections::BTreeSet<std::net::IpAddr>>,
    /// Woken when `blocked_clients` changes.
    clients_changed: Notify,
}

impl SimCore {
    /// Builds the state for the `served` rows (serving order; ports are fixed up after binding);
    /// `catalog` is the full set of rows, coordinator included.
    pub(crate) fn new(cfg: SimConfig, served: &[Segment], catalog: Vec<Segment>) -> Self {
        let now = Instant::now();
        let mut per_content: HashMap<ContentId, usize> = HashMap::new();
        for row in served {
            *per_content.entry(row.content).or_default() += 1;
        }
        let mut content_group: HashMap<ContentId, usize> = HashMap::new();
        let mut groups = Vec::new();
        let mut group_members: Vec<[Option<u32>; 2]> = Vec::new();
        let mut instances = Vec::with_capacity(served.len());
        let mut by_dbid = HashMap::with_capacity(served.len());
        for (idx, row) in served.iter().enumerate() {
            let group = *content_group.entry(row.content).or_insert_with(|| {
                let mirrored = per_content.get(&row.content).copied().unwrap_or(0) > 1;
                groups.push(Mutex::new(if mirrored {
                    Group::pair(now)
                } else {
                    Group::single(now)
                }));
                group_members.push([None, None]);
                groups.len() - 1
            });
            let slot = usize::from(row.role == Role::Mirror);
            group_members[group][slot] = Some(idx as u32);
            by_dbid.insert(row.dbid, idx);
            instances.push(Instance {
                dbid: row.dbid,
                content: row.content,
                preferred_role: row.preferred_role,
                group: group as u32,
                slot: slot as u8,
                port: AtomicU16::new(row.port as u16),
                listening: AtomicBool::new(false),
                changed: Notify::new(),
                counters: Counters::default(),
            });
        }
        SimCore {
            cfg,
            instances,
            groups,
            group_members,
            by_dbid,
            rows: catalog,
            cloudberry: OnceLock::new(),
            shutdown: watch::Sender::new(false),
            blocked_clients: Default::default(),
            clients_changed: Notify::new(),
        }
    }

    /// Connections from `ip` hang (accepted, never answered) until it is unblocked; held
    /// connections then go on.
    pub fn block_client(&self, ip: std::net::IpAddr) {
        self.blocked_clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(ip);
        self.clients_changed.notify_waiters();
    }

    pub fn unblock_client(&self, ip: std::net::IpAddr) {
        self.blocked_clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ip);
        self.clients_changed.notify_waiters();
    }

    pub fn blocked_clients(&self) -> Vec<std::net::IpAddr> {
        self.blocked_clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect()
    }

    /// Waits while `ip` is blocked; returns false if the simulator stopped meanwhile.
    pub(crate) async fn pass_client(&self, ip: Option<std::net::IpAddr>) -> bool {
        let Some(ip) = ip else {
            return true;
        };
        let mut shutdown = self.shutdown.subscribe();
        loop {
            let notified = self.clients_changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let blocked = self
                .blocked_clients
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&ip);
            if !blocked {
                return true;
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = stopped(&mut shutdown) => return false,
            }
        }
    }

    pub fn instance_count(&self) -> usize {
        self.instances.len()
    }

    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    pub(crate) fn index_of(&self, dbid: Dbid) -> Result<usize, SimError> {
        self.by_dbid
            .get(&dbid)
            .copied()
            .ok_or(SimError::UnknownDbid(dbid))
    }

    fn lock(&self, idx: usize) -> (MutexGuard<'_, Group>, usize) {
        let inst = &self.instances[idx];
        let guard = self.groups[inst.group as usize]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        (guard, inst.slot as usize)
    }

    fn notify_group(&self, idx: usize) {
        for i in self.group_members[self.instances[idx].group as usize]
            .into_iter()
            .flatten()
        {
            self.instances[i as usize].changed.notify_waiters();
        }
    }

    pub(crate) fn addr(&self, idx: usize) -> SocketAddr {
        SocketAddr::new(
            self.cfg.host,
            self.instances[idx].port.load(Ordering::Relaxed),
        )
    }

    // ---- what the protocol server asks ----

    pub(crate) fn should_listen(&self, idx: usize) -> bool {
        let (g, s) = self.lock(idx);
        g.members[s].listening()
    }

    pub(crate) fn is_hung(&self, idx: usize) -> bool {
        let (g, s) = self.lock(idx);
        g.members[s].fault == Some(Fault::Hang)
    }

    pub(crate) fn gate(&self, idx: usize) -> Gate {
        let (mut g, s) = self.lock(idx);
        g.gate(s)
    }

    pub(crate) fn serve(&self, idx: usize) -> Serve {
        let (g, s) = self.lock(idx);
        g.serve(s)
    }

    pub(crate) fn probe(&self, idx: usize) -> ProbeReply {
        let (reply, switched) = {
            let (mut g, s) = self.lock(idx);
            g.probe(s, Instant::now(), self.cfg.mirror_down_grace)
        };
        let dbid = self.instances[idx].dbid;
        if switched {
            info!(
                dbid,
                "signaling configuration reload: setting synchronous_standby_names to '*'"
            );
        } else if reply.is_role_mirror {
            tracing::debug!(dbid, "received probe message while acting as mirror");
        }
        reply
    }

    pub(crate) fn syncrep_off(&self, idx: usize) -> ProbeReply {
        info!(
            dbid = self.instances[idx].dbid,
            "turning off synchronous wal replication due to FTS request"
        );
        let (mut g, s) = self.lock(idx);
        g.syncrep_off(s, Instant::now(), self.cfg.mirror_down_grace)
    }

    pub(crate) fn promote(self: &Arc<Self>, idx: usize) -> ProbeReply {
        let (reply, outcome, timer) = {
            let (mut g, s) = self.lock(idx);
            g.promote(s, Instant::now(), self.cfg.promote_delay)
        };
        let dbid = self.instances[idx].dbid;
        match outcome {
            PromoteOutcome::Promoted => {
                info!(dbid, "promoting mirror to primary due to FTS request");
                self.promotion_done(idx);
            }
            PromoteOutcome::Scheduled => info!(
                dbid,
                delay = %humantime::format_duration(self.cfg.promote_delay),
                "promoting mirror to primary due to FTS request"
            ),
            PromoteOutcome::Ignored => {
                info!(dbid, "ignoring promote request, walreceiver not running")
            }
        }
        if let Some(t) = timer {
            self.schedule(idx, t);
        }
        self.notify_group(idx);
        reply
    }

    /// PROMOTE as the instance's FTS handler runs it. A standby coordinator attached to a
    /// Cloudberry etcd first reads the promote-ready key, as an external-FTS build does:
    /// unless it is `1` the request is ignored; when it promotes it writes `0` back.
    pub(crate) async fn promote_gated(self: &Arc<Self>, idx: usize) -> ProbeReply {
        let inst = &self.instances[idx];
        let link = self.cloudberry.get().filter(|_| inst.content == -1);
        let eligible = {
            let (g, s) = self.lock(idx);
            let m = &g.members[s];
            m.role == Role::Mirror && m.promote_at.is_none() && m.phase == Phase::Running
        };
        if let (Some(link), true) = (link, eligible) {
            let ready = match link.promote_ready().await {
                Ok(ready) => ready,
                Err(e) => {
                    warn!(dbid = inst.dbid, error = %format!("{e:#}"), "cannot read the promote-ready key");
                    false
                }
            };
            if !ready {
                info!(
                    dbid = inst.dbid,
                    "ignoring promote request, standby not ready to promote..."
                );
                return ProbeReply {
                    is_role_mirror: true,
                    ..ProbeReply::default()
                };
            }
            if let Err(e) = link.set_promote_ready(false).await {
                warn!(dbid = inst.dbid, error = %format!("{e:#}"), "cannot reset the promote-ready key");
            }
        }
        self.promote(idx)
    }

    /// A content -1 instance that now acts as primary rewrites the Cloudberry blob as
    /// `activateStandby` does (in the background: the FTS reply does not wait for etcd).
    fn promotion_done(self: &Arc<Self>, idx: usize) {
        let inst = &self.instances[idx];
        let Some(link) = self.cloudberry.get().filter(|_| inst.content == -1) else {
            return;
        };
        let (link, dbid) = (Arc::clone(link), inst.dbid);
        tokio::spawn(async move {
            match link.activate_standby(dbid).await {
                Ok(()) => info!(dbid, "standby activated: configuration blob rewritten"),
                Err(e) => {
                    warn!(dbid, error = %format!("{e:#}"), "standby activated, but the blob was not rewritten")
                }
            }
        });
    }

    fn schedule(self: &Arc<Self>, idx: usize, timer: Timer) {
        let core = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(timer.after).await;
            let (next, promoted) = {
                let (mut g, s) = core.lock(idx);
                let was_primary = g.members[s].role == Role::Primary;
                let next = g.fire(s, timer.kind, timer.generation, Instant::now());
                let promoted = timer.kind == TimerKind::PromotionDone
                    && !was_primary
                    && g.members[s].role == Role::Primary;
                (next, promoted)
            };
            tracing::debug!(dbid = core.instances[idx].dbid, kind = ?timer.kind, "timer fired");
            if promoted {
                core.promotion_done(idx);
            }
            core.notify_group(idx);
            if let Some(next) = next {
                core.schedule(idx, next);
            }
        });
    }

    // ---- operator actions ----

    /// Links the coordinator pair to a Cloudberry etcd: writes the layout as the blob and, with
    /// a standby, the promote-ready key `1`. Returns the blob's key.
    pub async fn attach_cloudberry(&self, link: CbdbLink) -> anyhow::Result<String> {
        let key = link.write_blob(&self.segments()).await?;
        if self.cfg.standby {
            link.set_promote_ready(true).await?;
        }
        self.cloudberry
            .set(Arc::new(link))
            .map_err(|_| anyhow::anyhow!("a Cloudberry etcd is already attached"))?;
        Ok(key)
    }

    /// Sets the promote-ready key (the coordinator's `setStandbyPromoteReady`).
    pub async fn set_promote_ready(&self, ready: bool) -> Result<(), SimError> {
        let link = self.cloudberry.get().ok_or_else(|| {
            SimError::Conflict("no Cloudberry etcd attached (start with --cbdb-conf)".into())
        })?;
        info!(ready, "setting the standby promote-ready key");
        link.set_promote_ready(ready)
            .await
            .map_err(|e| SimError::Conflict(format!("{e:#}")))
    }

    /// Injects a fault; returns once the listener reflects it (closed for `down`).
    pub async fn set_fault(
        self: &Arc<Self>,
        dbid: Dbid,
        fault: Fault,
    ) -> Result<SegmentView, SimError> {
        let idx = self.index_of(dbid)?;
        info!(dbid, fault = %fault.describe(), "injecting fault");
        let timer = {
            let (mut g, s) = self.lock(idx);
            g.set_fault(s, fault, Instant::now())
        };
        if let Some(t) = timer {
            self.schedule(idx, t);
        }
        self.settle(idx).await
    }

    /// Removes the fault; a dead instance comes back in its current role.
    pub async fn clear(self: &Arc<Self>, dbid: Dbid) -> Result<SegmentView, SimError> {
        let idx = self.index_of(dbid)?;
        info!(dbid, "clearing fault");
        {
            let (mut g, s) = self.lock(idx);
            g.clear(s, Instant::now());
        }
        self.settle(idx).await
    }

    /// What `gprecoverseg` achieves: the instance is back as an in-sync mirror of the acting
    /// primary (or restarted, if it is itself the acting primary).
    pub async fn recover(self: &Arc<Self>, dbid: Dbid) -> Result<SegmentView, SimError> {
        let idx = self.index_of(dbid)?;
        {
            let (mut g, s) = self.lock(idx);
            g.recover(s, Instant::now())
                .map_err(|e| SimError::Conflict(format!("cannot recover dbid {dbid}: {e}")))?;
        }
        info!(dbid, "recovered");
        self.settle(idx).await
    }

    /// Clears every fault (used between test cases).
    pub async fn clear_all(self: &Arc<Self>) -> Result<(), SimError> {
        for (idx, inst) in self.instances.iter().enumerate() {
            let faulty = {
                let (g, s) = self.lock(idx);
                g.members[s].fault.is_some() || g.members[s].phase != Phase::Running
            };
            if faulty {
                self.clear(inst.dbid).await?;
            }
        }
        Ok(())
    }

    pub fn reset_counters(&self) {
        for inst in &self.instances {
            inst.counters.reset();
        }
    }

    /// Wakes everyone watching the group and waits until the listener matches the state.
    async fn settle(&self, idx: usize) -> Result<SegmentView, SimError> {
        self.notify_group(idx);
        let inst = &self.instances[idx];
        let deadline = tokio::time::Instant::now() + LISTENER_ACK_TIMEOUT;
        loop {
            let notified = inst.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if inst.listening.load(Ordering::Acquire) == self.should_listen(idx) {
                return Ok(self.view_at(idx));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(SimError::Timeout(format!(
                    "dbid {}: listener on {} did not follow the new state within {}s (port taken?)",
                    inst.dbid,
                    self.addr(idx),
                    LISTENER_ACK_TIMEOUT.as_secs()
                )));
            }
        }
    }

    // ---- views ----

    pub fn view(&self, dbid: Dbid) -> Result<SegmentView, SimError> {
        Ok(self.view_at(self.index_of(dbid)?))
    }

    pub fn views(&self) -> Vec<SegmentView> {
        (0..self.instances.len()).map(|i| self.view_at(i)).collect()
    }

    fn view_at(&self, idx: usize) -> SegmentView {
        let inst = &self.instances[idx];
        let (g, s) = self.lock(idx);
        let m = &g.members[s];
        let status = g.mirror_status(s);
        SegmentView {
            dbid: inst.dbid,
            content: inst.content,
            role: m.role,
            preferred_role: inst.preferred_role,
            host: self.cfg.host.to_string(),
            port: inst.port.load(Ordering::Relaxed),
            alive: m.alive(),
            listening: inst.listening.load(Ordering::Acquire),
            phase: m.phase,
            promoting: m.promote_at.is_some(),
            fault: m.fault.clone(),
            syncrep: m.syncrep,
            mirror_up: status.map(|s| s.0),
            in_sync: status.map(|s| s.1),
            counters: inst.counters.view(),
        }
    }

    /// The `gp_segment_configuration` rows as gpinitsystem would have written them, with the
    /// ports actually bound. Live roles and liveness are in [`SimCore::views`].
    pub fn segments(&self) -> Vec<Segment> {
        let mut rows = self.rows.clone();
        for row in &mut rows {
            if let Some(&idx) = self.by_dbid.get(&row.dbid) {
                row.port = self.instances[idx].port.load(Ordering::Relaxed) as i32;
            }
        }
        rows.sort_by_key(|r| r.dbid);
        rows
    }
}

/// Unpredictable 64 bits (salts, backend keys, garbage) without another dependency: every
/// `RandomState` carries fresh random SipHash keys.
pub(crate) fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

/// Logs a dbid/content mismatch the way a release build does, and goes on.
pub(crate) fn check_target(inst: &Instance, kind: MessageType, dbid: Dbid, content: ContentId) {
    if dbid != inst.dbid {
        warn!(
            "message type: {kind} received dbid:{dbid} doesn't match this segments configured dbid:{}",
            inst.dbid
        );
    }
    if content != inst.content {
        warn!(
            "message type: {kind} received contentid:{content} doesn't match this segments configured contentid:{}",
            inst.content
        );
    }
}

/// Resolves once the simulator is shutting down (the guard `wait_for` returns is not `Send`, so
/// it must not live inside a `select!` of a spawned task).
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}
