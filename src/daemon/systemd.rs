//! The systemd service protocol (`Type=notify`, sd_notify(3)) through the `sd-notify` crate:
//!
//! * `READY=1` once, when the API is serving, the catalog has been read and (elected) an etcd
//!   session is open, so `systemctl start` returns only for a daemon that can do its job;
//! * `STATUS=` whenever the role or the last cycle changes (`systemctl status` shows it);
//! * `WATCHDOG=1` at half of `WATCHDOG_USEC` while every watched loop is turning
//!   ([`super::liveness`]);
//! * `STOPPING=1` when a stop signal arrives.
//!
//! Without `NOTIFY_SOCKET` (not started by systemd, or in-process tests) every message is a
//! no-op, and without `WATCHDOG_USEC` no pinger runs.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use sd_notify::NotifyState;
use tokio::sync::{watch, Notify};

use super::liveness::{self, Heartbeat, Liveness};
use crate::catalog::Catalog;
use crate::engine::runner::CycleObserver;
use crate::engine::CycleReport;

/// The longest cause of a failed cycle kept in the status line.
const MAX_ERROR_CHARS: usize = 120;

/// What this instance is, for the status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Leader {
        epoch: i64,
    },
    Follower,
    /// Elected mode without an etcd session: observe-only until etcd is back.
    NoSession,
    Single {
        epoch: i64,
    },
    Shadow,
}

/// How the last cycle ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Finished {
        pairs: usize,
        applied: usize,
        failed: usize,
    },
    Failed(String),
}

/// The last cycle, for the status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastCycle {
    pub at: SystemTime,
    pub outcome: Outcome,
}

/// The `STATUS=` text: the role (and epoch), then the last cycle's time and result.
pub fn status_line(role: &Role, last: Option<&LastCycle>) -> String {
    let role = match role {
        Role::Leader { epoch } => format!("leader, epoch {epoch}"),
        Role::Follower => "follower".to_string(),
        Role::NoSession => "no etcd session (observe-only until etcd is back)".to_string(),
        Role::Single { epoch } => format!("single instance (--no-election), epoch {epoch}"),
        Role::Shadow => "shadow (never acts)".to_string(),
    };
    let cycle = match last {
        None => "no cycle run yet".to_string(),
        Some(last) => {
            let at = humantime::format_rfc3339_seconds(last.at);
            match &last.outcome {
                Outcome::Finished {
                    pairs,
                    applied,
                    failed,
                } => {
                    let mut s = format!("last cycle {at}: ok, {pairs} pairs");
                    if *applied > 0 || *failed > 0 {
                        s.push_str(&format!(", {applied} changes applied, {failed} failed"));
                    }
                    s
                }
                Outcome::Failed(error) => {
                    // One line, bounded: systemd shows the status on one line.
                    let collapsed = error.split_whitespace().collect::<Vec<_>>().join(" ");
                    let mut one_line: String = collapsed.chars().take(MAX_ERROR_CHARS).collect();
                    if collapsed.chars().count() > MAX_ERROR_CHARS {
                        one_line.push('…');
                    }
                    format!("last cycle {at}: failed: {one_line}")
                }
            }
        }
    };
    format!("{role}; {cycle}")
}

/// Sends `states`; a failure is logged, never fatal (systemd then times the start out or
/// restarts us through the watchdog, which is the right outcome for a broken channel).
fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// `STOPPING=1`: the daemon is shutting down (a leader resigns first).
pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// The probe loop's part: beats the loop's heartbeat and keeps the last cycle for the status.
pub struct LoopWatch {
    heartbeat: Heartbeat,
    last: Mutex<Option<LastCycle>>,
    changed: Notify,
}

impl LoopWatch {
    fn record(&self, outcome: Outcome) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(LastCycle {
            at: SystemTime::now(),
            outcome,
        });
        self.changed.notify_one();
    }

    fn last(&self) -> Option<LastCycle> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl CycleObserver for LoopWatch {
    fn cycle_finished(&self, r: &CycleReport) {
        self.record(Outcome::Finished {
            pairs: r.pairs,
            applied: r.transitions_applied,
            failed: r.transitions_failed,
        });
    }

    fn cycle_failed(&self, error: &str) {
        self.record(Outcome::Failed(error.to_string()));
    }

    fn loop_turned(&self, next: Duration) {
        self.heartbeat.beat(next);
    }
}

/// The daemon's systemd integration: the liveness the loops beat in and the probe loop's
/// observer.
pub struct Systemd {
    pub liveness: Liveness,
    pub loop_watch: Arc<LoopWatch>,
}

impl Systemd {
    /// `first_turn`: how long the probe loop may take to turn the first time (the services
    /// and the epoch claim come before it).
    pub fn new(first_turn: Duration) -> Systemd {
        let liveness = Liveness::default();
        let heartbeat = liveness.register("probe loop", first_turn);
        Systemd {
            liveness,
            loop_watch: Arc::new(LoopWatch {
                heartbeat,
                last: Mutex::new(None),
                changed: Notify::new(),
            }),
        }
    }

    /// Starts the notifier: `READY=1` once `ready` completes, the status line from `role` and
    /// the last cycle, and the watchdog pings. Readiness and status end when `shutdown` turns
    /// true (`STOPPING=1` has been sent then, see [`stopping`]); the pings go on until the
    /// returned guard drops, as stopping takes its time too.
    pub fn start(
        &self,
        ready: impl Future<Output = ()> + Send + 'static,
        role: impl Fn() -> Role + Send + Sync + 'static,
        mut shutdown: watch::Receiver<bool>,
    ) -> Tasks {
        let loop_watch = self.loop_watch.clone();
        let status = tokio::spawn(async move {
            let stopping = async move {
                let _ = shutdown.wait_for(|stop| *stop).await;
            };
            let notify_status = async move {
                ready.await;
                let line = status_line(&role(), loop_watch.last().as_ref());
                tracing::info!(status = %line, "ready: notifying systemd");
                notify(&[NotifyState::Ready, NotifyState::Status(&line)]);
                follow_status(role, loop_watch, line).await;
            };
            tokio::select! {
                _ = stopping => {}
                _ = notify_status => {}
            }
        });
        let pinger = sd_notify::watchdog_enabled().map(|interval| {
            let every = liveness::ping_interval(interval);
            tracing::info!(
                watchdog = %humantime::format_duration(interval),
                ping_every = %humantime::format_duration(every),
                "systemd watchdog enabled"
            );
            tokio::spawn(ping(self.liveness.clone(), every))
        });
        Tasks(Some(status).into_iter().chain(pinger).collect())
    }
}

/// Sends `STATUS=` whenever the line changes: at once after a cycle, within a second after a
/// change of role.
async fn follow_status(
    role: impl Fn() -> Role + Send + Sync + 'static,
    loop_watch: Arc<LoopWatch>,
    mut sent: String,
) {
    loop {
        tokio::select! {
            _ = loop_watch.changed.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let line = status_line(&role(), loop_watch.last().as_ref());
        if line != sent {
            notify(&[NotifyState::Status(&line)]);
            sent = line;
        }
    }
}

/// `WATCHDOG=1` every `every` while no watched loop is stalled. A stall is logged once, when
/// it starts; systemd restarts the process when the pings have been missing for
/// `WatchdogSec`.
async fn ping(liveness: Liveness, every: Duration) {
    let mut stalled_before = false;
    loop {
        let stalled = liveness.stalled(Instant::now());
        if stalled.is_empty() {
            if stalled_before {
                tracing::warn!("every watched loop is turning again; watchdog pings resume");
            }
            notify(&[NotifyState::Watchdog]);
        } else if !stalled_before {
            let which: Vec<String> = stalled.iter().map(ToString::to_string).collect();
            tracing::error!(
                stalled = %which.join(", "),
                "a loop is stuck: withholding the systemd watchdog ping (systemd restarts ftsd \
                 when WatchdogSec passes without one)"
            );
        }
        stalled_before = !stalled.is_empty();
        tokio::time::sleep(every).await;
    }
}

/// Completes once `catalog` can be read, retrying with a capped pause; each failure is logged
/// (an operator whose `systemctl start` hangs looks here).
pub async fn catalog_readable<C: Catalog>(catalog: &C) {
    let mut pause = Duration::from_millis(200);
    loop {
        match catalog.load().await {
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?pause, "not ready yet: cannot read the catalog");
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// Completes once an etcd session is open.
pub async fn session_open(mut session: watch::Receiver<bool>) {
    if session.wait_for(|open| *open).await.is_err() {
        // The authority is gone: the daemon is stopping; never ready.
        std::future::pending::<()>().await;
    }
}

/// The notifier's tasks; aborted on drop.
pub struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> SystemTime {
        humantime::parse_rfc3339("2026-11-26T15:00:00Z").unwrap()
    }

    #[test]
    fn status_names_the_role_and_epoch() {
        assert_eq!(
            status_line(&Role::Leader { epoch: 42 }, None),
            "leader, epoch 42; no cycle run yet"
        );
        assert_eq!(
            status_line(&Role::Follower, None),
            "follower; no cycle run yet"
        );
        assert_eq!(
            status_line(&Role::Single { epoch: 1 }, None),
            "single instance (--no-election), epoch 1; no cycle run yet"
        );
        assert!(status_line(&Role::NoSession, None).starts_with("no etcd session"));
        assert!(status_line(&Role::Shadow, None).starts_with("shadow"));
    }

    #[test]
    fn status_shows_the_last_cycle_time_and_result() {
        let quiet = LastCycle {
            at: at(),
            outcome: Outcome::Finished {
                pairs: 2,
                applied: 0,
                failed: 0,
            },
        };
        assert_eq!(
            status_line(&Role::Leader { epoch: 7 }, Some(&quiet)),
            "leader, epoch 7; last cycle 2026-11-26T15:00:00Z: ok, 2 pairs"
        );
        let busy = LastCycle {
            outcome: Outcome::Finished {
                pairs: 2,
                applied: 2,
                failed: 1,
            },
            ..quiet
        };
        assert_eq!(
            status_line(&Role::Leader { epoch: 7 }, Some(&busy)),
            "leader, epoch 7; last cycle 2026-11-26T15:00:00Z: ok, 2 pairs, 2 changes applied, 1 failed"
        );
    }

    #[test]
    fn a_failed_cycle_is_one_bounded_line() {
        let long = format!("catalog unreachable:\n  {}", "x".repeat(500));
        let last = LastCycle {
            at: at(),
            outcome: Outcome::Failed(long),
        };
        let line = status_line(&Role::Follower, Some(&last));
        assert!(!line.contains('\n'), "{line}");
        assert!(line.starts_with(
            "follower; last cycle 2026-11-26T15:00:00Z: failed: catalog unreachable: xxx"
        ));
        assert!(line.ends_with('…'));
        assert!(line.chars().count() < 200, "{line}");
    }
}
