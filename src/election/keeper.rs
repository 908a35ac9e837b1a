//! Keeps the election lease alive from a dedicated OS thread with its own runtime and its own
//! etcd connection, and publishes the act-by deadline.
//!
//! The deadline is computed from the *send* time of the last acknowledged keepalive (etcd's Go
//! client uses the receive time): etcd renews the lease no earlier than it receives the request,
//! so `send + TTL` can never be later than the server-side expiry. The margin covers clock-rate
//! drift between this host and the etcd leader.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::authority::Reconnects;
use super::connect::Rotation;
use super::EtcdOptions;
use crate::daemon::liveness::{Heartbeat, Liveness};

/// What the keeper publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseStatus {
    /// Alive; acting is allowed strictly before `act_by`.
    Alive { act_by: Instant, last_ack: Instant },
    /// The lease is gone for good (expired on the server, or never acknowledged within TTL).
    Lost { reason: String },
}

/// Handle to the keeper thread; dropping it stops the thread (the lease is left to expire or
/// revoked by the elector).
pub struct KeeperHandle {
    pub status: watch::Receiver<LeaseStatus>,
    stop: Arc<Mutex<bool>>,
    stop_tx: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Drop for KeeperHandle {
    fn drop(&mut self) {
        *self.stop.lock().unwrap_or_else(|e| e.into_inner()) = true;
        if let Some(tx) = self.stop_tx.take() {
            let _ = tx.send(());
        }
        // Never block an async caller on the join: the thread ends within one tick.
        self.thread.take();
    }
}

/// Starts keeping `lease_id` alive. `ttl` is the granted TTL, `margin` the safety margin.
/// `granted_at` is when the grant request was sent: the first deadline counts from there.
pub fn spawn(
    options: EtcdOptions,
    lease_id: i64,
    ttl: Duration,
    margin: Duration,
    granted_at: Instant,
    reconnects: Arc<Reconnects>,
    liveness: &Liveness,
) -> std::io::Result<KeeperHandle> {
    let initial = LeaseStatus::Alive {
        act_by: granted_at + ttl.saturating_sub(margin),
        last_ack: granted_at,
    };
    let (tx, rx) = watch::channel(initial);
    let stop = Arc::new(Mutex::new(false));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let stop_flag = stop.clone();
    // Watched from now until the thread ends: a keeper blocked anywhere stops the systemd
    // watchdog pings; one retrying an unreachable etcd keeps turning and does not.
    let heartbeat = liveness.register("lease keeper", keeper_round(&options, ttl));
    let thread = thread::Builder::new()
        .name(format!("lease-keeper-{lease_id:x}"))
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(LeaseStatus::Lost {
                        reason: format!("cannot start keeper runtime: {e}"),
                    });
                    return;
                }
            };
            rt.block_on(async move {
                tokio::select! {
                    _ = keep(options, lease_id, ttl, margin, granted_at, Outputs { tx: &tx, stop: &stop_flag, reconnects: &reconnects, heartbeat: &heartbeat }) => {}
                    _ = stop_rx => {}
                }
            });
        })?;
    Ok(KeeperHandle {
        status: rx,
        stop,
        stop_tx: Some(stop_tx),
        thread: Some(thread),
    })
}

/// Where the keeper reports: its status, the stop flag it polls, the reconnect counter, its
/// liveness.
struct Outputs<'a> {
    tx: &'a watch::Sender<LeaseStatus>,
    stop: &'a Mutex<bool>,
    reconnects: &'a Reconnects,
    heartbeat: &'a Heartbeat,
}

/// Three keepalives per TTL, as etcd's own clients do, so two may be lost in a row.
fn keepalive_tick(ttl: Duration) -> Duration {
    (ttl / 3).max(Duration::from_millis(200))
}

/// The longest one round of [`keep`] takes: a connection attempt (bounded by twice the dial
/// timeout), then either the retry pause or one keepalive exchange and the wait for the next
/// tick (one tick each).
fn keeper_round(options: &EtcdOptions, ttl: Duration) -> Duration {
    options.dial_timeout * 2 + keepalive_tick(ttl) * 2
}

async fn keep(
    options: EtcdOptions,
    lease_id: i64,
    ttl: Duration,
    margin: Duration,
    granted_at: Instant,
    out: Outputs<'_>,
) {
    let Outputs {
        tx,
        stop,
        reconnects,
        heartbeat,
    } = out;
    let tick = keepalive_tick(ttl);
    let round = keeper_round(&options, ttl);
    // Server-side expiry is no earlier than this; past it without an ack the lease is gone.
    let mut last_ack_sent = granted_at;
    let mut etcd = Rotation::new(options.clone(), lease_id);
    let mut stream = None;
    loop {
        crate::engine::faults::stall_lease_keeper();
        heartbeat.beat(round);
        if *stop.lock().unwrap_or_else(|e| e.into_inner()) {
            return;
        }
        if Instant::now() >= last_ack_sent + ttl {
            let _ = tx.send(LeaseStatus::Lost {
                reason: format!(
                    "no keepalive acknowledged within the lease TTL ({})",
                    humantime::format_duration(ttl)
                ),
            });
            return;
        }
        let client = match etcd.client().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "lease keeper cannot reach etcd; retrying");
                tokio::time::sleep(tick / 2).await;
                continue;
            }
        };
        let sent_at = Instant::now();
        // Opening the stream is itself a full keepalive round trip: etcd-client sends the
        // first request and consumes its response, failing with "lease not found" when etcd
        // answers TTL 0. Later rounds send on the open stream and read one response.
        let exchange = async {
            match stream.as_mut() {
                None => {
                    stream = Some(client.lease_keep_alive(lease_id).await?);
                    Ok(Some(ttl.as_secs() as i64))
                }
                Some((keeper, responses)) => {
                    let keeper: &mut etcd_client::LeaseKeeper = keeper;
                    let responses: &mut etcd_client::LeaseKeepAliveStream = responses;
                    keeper.keep_alive().await?;
                    responses.message().await.map(|r| r.map(|r| r.ttl()))
                }
            }
        };
        match tokio::time::timeout(tick, exchange).await {
            Ok(Ok(Some(server_ttl))) if server_ttl > 0 => {
                last_ack_sent = sent_at;
                let server_ttl = Duration::from_secs(server_ttl as u64).min(ttl);
                let _ = tx.send(LeaseStatus::Alive {
                    act_by: sent_at + server_ttl.saturating_sub(margin),
                    last_ack: Instant::now(),
                });
            }
            Ok(Ok(Some(_))) => {
                let _ = tx.send(LeaseStatus::Lost {
                    reason: "etcd reports the lease expired (TTL 0)".into(),
                });
                return;
            }
            Ok(Err(etcd_client::Error::LeaseKeepAliveError(msg))) if msg.contains("not found") => {
                let _ = tx.send(LeaseStatus::Lost {
                    reason: format!("etcd no longer knows the lease: {msg}"),
                });
                return;
            }
            Ok(Ok(None)) => {
                tracing::warn!("lease keepalive stream closed by etcd; reopening");
                reconnects.keepalive.fetch_add(1, Ordering::Relaxed);
                stream = None;
            }
            Ok(Err(e)) => {
                // Streams break when the member carrying them dies: reopen on a fresh
                // connection.
                tracing::warn!(error = %e, "lease keepalive failed; reopening the stream");
                reconnects.keepalive.fetch_add(1, Ordering::Relaxed);
                stream = None;
                etcd.failed();
            }
            Err(_) => {
                tracing::warn!(timeout = ?tick, "lease keepalive not acknowledged in time; reopening");
                reconnects.keepalive.fetch_add(1, Ordering::Relaxed);
                stream = None;
                etcd.failed();
            }
        }
        let next = sent_at + tick;
        let now = Instant::now();
        if next > now {
            tokio::time::sleep(next - now).await;
        }
    }
}
