//! Whether the daemon's own loops are still turning, for the systemd watchdog.
//!
//! Each loop that must keep turning (the probe loop; the lease keeper while a lease is held)
//! holds a [`Heartbeat`] and beats it each time round, promising the next beat within a bound
//! it knows from its own timing (the sleep it is about to take, a cycle's worst case, a
//! keepalive round's timeouts). The watchdog pinger asks [`Liveness::stalled`] before every
//! `WATCHDOG=1`: a loop past its promise is stuck, and the pings stop so systemd restarts the
//! process.
//!
//! What counts is that the loop turns, not that its work succeeds: a follower that sleeps, a
//! leader whose cycles fail against an unreachable catalog and a keeper retrying an
//! unreachable etcd all beat on time. An etcd outage therefore never stops the pings (it would
//! restart every instance at once, and the restarted ones could not campaign either); a loop
//! blocked forever does.
//!
//! A heartbeat is dropped with its loop: a lease keeper that ended (its lease lost, its session
//! closed) is no longer watched.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Added to every promise: a loaded host (or a stopped-the-world moment such as swapping) may
/// run a loop late by a few seconds, and a watchdog restart for that would be a failure only
/// we see turned into a leader change.
pub const SLACK: Duration = Duration::from_secs(5);

/// The loops being watched. Cheap to clone; clones share the registry.
#[derive(Clone, Default)]
pub struct Liveness {
    registry: Arc<Mutex<Registry>>,
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    sources: BTreeMap<u64, Source>,
}

struct Source {
    name: &'static str,
    /// The next beat is due by this instant.
    due: Instant,
}

/// A watched loop that is past its promised beat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stalled {
    pub name: &'static str,
    /// How long past the promise.
    pub overdue: Duration,
}

impl std::fmt::Display for Stalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} overdue by {}",
            self.name,
            humantime::format_duration(Duration::from_secs(self.overdue.as_secs()))
        )
    }
}

impl Liveness {
    /// Starts watching a loop named `name`, which promises its first beat within `first`.
    pub fn register(&self, name: &'static str, first: Duration) -> Heartbeat {
        self.register_at(name, Instant::now(), first)
    }

    fn register_at(&self, name: &'static str, now: Instant, first: Duration) -> Heartbeat {
        let mut registry = lock(&self.registry);
        let id = registry.next_id;
        registry.next_id += 1;
        registry.sources.insert(
            id,
            Source {
                name,
                due: now + first + SLACK,
            },
        );
        Heartbeat {
            registry: self.registry.clone(),
            id,
        }
    }

    /// The watched loops past their promise at `now` (empty: every loop is turning).
    pub fn stalled(&self, now: Instant) -> Vec<Stalled> {
        lock(&self.registry)
            .sources
            .values()
            .filter(|s| now > s.due)
            .map(|s| Stalled {
                name: s.name,
                overdue: now - s.due,
            })
            .collect()
    }

    /// How many loops are watched.
    pub fn watched(&self) -> usize {
        lock(&self.registry).sources.len()
    }
}

/// One watched loop; dropping it stops the watch.
pub struct Heartbeat {
    registry: Arc<Mutex<Registry>>,
    id: u64,
}

impl Heartbeat {
    /// The loop turned; it promises the next beat within `next` (plus [`SLACK`]).
    pub fn beat(&self, next: Duration) {
        self.beat_at(Instant::now(), next);
    }

    fn beat_at(&self, now: Instant, next: Duration) {
        if let Some(source) = lock(&self.registry).sources.get_mut(&self.id) {
            source.due = now + next + SLACK;
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        lock(&self.registry).sources.remove(&self.id);
    }
}

impl std::fmt::Debug for Heartbeat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Heartbeat").field("id", &self.id).finish()
    }
}

/// How often to send `WATCHDOG=1` for systemd's `WATCHDOG_USEC`: half the interval, as
/// sd_watchdog_enabled(3) advises, so one late ping is not a restart.
pub fn ping_interval(watchdog: Duration) -> Duration {
    (watchdog / 2).max(Duration::from_millis(1))
}

fn lock(m: &Mutex<Registry>) -> std::sync::MutexGuard<'_, Registry> {
    // A panic while holding the lock leaves the map consistent (every update is one insert,
    // remove or assignment).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn nothing_watched_is_never_stalled() {
        let l = Liveness::default();
        assert!(l.stalled(Instant::now() + 3600 * S).is_empty());
    }

    #[test]
    fn a_loop_is_stalled_only_past_its_promise_and_slack() {
        let l = Liveness::default();
        let t0 = Instant::now();
        let beat = l.register_at("probe loop", t0, 10 * S);
        assert!(l.stalled(t0 + 10 * S + SLACK).is_empty());
        assert_eq!(
            l.stalled(t0 + 10 * S + SLACK + S),
            vec![Stalled {
                name: "probe loop",
                overdue: S
            }]
        );
        drop(beat);
    }

    #[test]
    fn each_beat_renews_the_promise_with_its_own_bound() {
        let l = Liveness::default();
        let t0 = Instant::now();
        let beat = l.register_at("probe loop", t0, S);
        // a cycle starting: it may take up to a minute
        beat.beat_at(t0 + S, 60 * S);
        assert!(l.stalled(t0 + 60 * S).is_empty());
        // the sleep after it is short: the next beat is due soon
        beat.beat_at(t0 + 61 * S, S);
        assert!(l.stalled(t0 + 62 * S + SLACK).is_empty());
        assert_eq!(l.stalled(t0 + 63 * S + SLACK).len(), 1);
    }

    #[test]
    fn one_stuck_loop_is_enough_and_is_named() {
        let l = Liveness::default();
        let t0 = Instant::now();
        let probe = l.register_at("probe loop", t0, S);
        let keeper = l.register_at("lease keeper", t0, S);
        let later = t0 + 20 * S;
        probe.beat_at(later, S);
        let stalled = l.stalled(later);
        assert_eq!(stalled.len(), 1);
        assert_eq!(stalled[0].name, "lease keeper");
        assert_eq!(stalled[0].to_string(), "lease keeper overdue by 14s");
        drop(keeper);
        drop(probe);
    }

    #[test]
    fn a_finished_loop_is_no_longer_watched() {
        let l = Liveness::default();
        let t0 = Instant::now();
        let _probe = l.register_at("probe loop", t0, 3600 * S);
        let keeper = l.register_at("lease keeper", t0, S);
        assert_eq!(l.watched(), 2);
        drop(keeper);
        assert_eq!(l.watched(), 1);
        assert!(l.stalled(t0 + 60 * S).is_empty());
    }

    #[test]
    fn clones_share_the_registry_across_threads() {
        let l = Liveness::default();
        let other = l.clone();
        let t0 = Instant::now();
        let handle = std::thread::spawn(move || other.register_at("lease keeper", t0, S));
        let beat = handle.join().unwrap();
        assert_eq!(l.stalled(t0 + 10 * S).len(), 1);
        beat.beat_at(t0 + 10 * S, S);
        assert!(l.stalled(t0 + 10 * S).is_empty());
    }

    #[test]
    fn pings_go_at_half_the_watchdog_interval() {
        assert_eq!(ping_interval(30 * S), 15 * S);
        assert_eq!(ping_interval(Duration::ZERO), Duration::from_millis(1));
    }
}
