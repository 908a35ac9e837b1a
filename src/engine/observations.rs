//! What this instance has recently seen of each primary: its own probes (leader or follower,
//! the last one per dbid: when it ended, ok or the failure class, since when it is down) and
//! the losses other members reported to it (`ReportDown`). The leader counts both toward the
//! quorum a failover needs; a follower answers `ConfirmDown` from its own entries.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::sync::Notify;

use crate::model::Dbid;
use crate::wire::failure::FailureKind;

/// One of this instance's own observations of a primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// When the probe (all its attempts) ended.
    pub at: SystemTime,
    pub at_instant: Instant,
    /// None: it answered. Some(class): every attempt failed; the class of the exchange.
    pub failure: Option<FailureKind>,
    /// Since when it is down (the end of the first failed probe of this episode), by the
    /// monotonic clock; None while it answers.
    pub down_since: Option<Instant>,
}

impl Observation {
    /// Whether it says the primary is lost: a failure on the segment's side, not a prober
    /// fault.
    pub fn seen_down(&self) -> bool {
        self.failure.is_some_and(|k| !k.is_prober_fault())
    }

    pub fn age(&self) -> Duration {
        self.at_instant.elapsed()
    }
}

/// A loss another member reported (`ReportDown`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// When it arrived here (the report is sent right after the observation, so this is the
    /// observation's time on this instance's clock, late by the call's transit at most).
    pub received: Instant,
    pub received_at: SystemTime,
    /// The reporter's own time of the observation (its clock), for the evidence.
    pub observed_at: SystemTime,
    pub failure: FailureKind,
}

#[derive(Debug, Default)]
struct Entry {
    own: Option<Observation>,
    /// A probe of this dbid started and has not ended.
    in_flight: bool,
    reports: BTreeMap<String, Report>,
}

/// The table, shared by the probe loops, the quorum gate and the API.
#[derive(Debug, Default)]
pub struct ObservationTable {
    entries: Mutex<HashMap<Dbid, Entry>>,
    /// Woken on every recorded observation or report.
    changed: Notify,
}

/// One row of [`ObservationTable::snapshot`], for the API.
#[derive(Debug, Clone, Serialize)]
pub struct ObservationRow {
    pub dbid: Dbid,
    pub age_ms: u64,
    pub failure: Option<FailureKind>,
    pub down_ms: Option<u64>,
    pub reported_by: Vec<String>,
}

impl ObservationTable {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<Dbid, Entry>) -> T) -> T {
        f(&mut self.entries.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// A probe of `dbid` starts.
    pub fn begin(&self, dbid: Dbid) {
        self.with(|m| m.entry(dbid).or_default().in_flight = true);
    }

    /// A probe of `dbid` ended: `failure` None when it answered.
    pub fn record(&self, dbid: Dbid, failure: Option<FailureKind>) -> Observation {
        let now = Instant::now();
        let obs = self.with(|m| {
            let e = m.entry(dbid).or_default();
            let down = failure.is_some_and(|k| !k.is_prober_fault());
            let down_since = match (down, e.own.and_then(|o| o.down_since)) {
                (false, _) => None,
                (true, Some(since)) => Some(since),
                (true, None) => Some(now),
            };
            let obs = Observation {
                at: SystemTime::now(),
                at_instant: now,
                failure,
                down_since,
            };
            e.own = Some(obs);
            e.in_flight = false;
            // Other members' reports stay theirs even when the primary answers us: the
            // window ages them out.
            obs
        });
        self.changed.notify_waiters();
        obs
    }

    /// A probe of `dbid` was abandoned (shutdown) without a result.
    pub fn abandon(&self, dbid: Dbid) {
        self.with(|m| {
            if let Some(e) = m.get_mut(&dbid) {
                e.in_flight = false;
            }
        });
        self.changed.notify_waiters();
    }

    /// Another member's report of a loss.
    pub fn report(&self, dbid: Dbid, member: &str, observed_at: SystemTime, failure: FailureKind) {
        self.with(|m| {
            m.entry(dbid).or_default().reports.insert(
                member.to_owned(),
                Report {
                    received: Instant::now(),
                    received_at: SystemTime::now(),
                    observed_at,
                    failure,
                },
            );
        });
        self.changed.notify_waiters();
    }

    pub fn own(&self, dbid: Dbid) -> Option<Observation> {
        self.with(|m| m.get(&dbid).and_then(|e| e.own))
    }

    /// Reports received within `window`, by member.
    pub fn reports(&self, dbid: Dbid, window: Duration) -> Vec<(String, Report)> {
        self.with(|m| {
            m.get(&dbid)
                .map(|e| {
                    e.reports
                        .iter()
                        .filter(|(_, r)| r.received.elapsed() <= window)
                        .map(|(k, r)| (k.clone(), r.clone()))
                        .collect()
                })
                .unwrap_or_default()
        })
    }

    /// Our own observation of `dbid` to answer a `ConfirmDown` with: at once when the last
    /// one within `window` saw the primary lost; otherwise, while a probe of it is in flight or
    /// this instance keeps probing (`continuous`), the first observation that ends after the
    /// question (or `deadline`, whichever comes first); at `deadline` (or at once, when
    /// nothing is coming) the last observation within `window`, if any. Never probes itself.
    pub async fn answer(
        &self,
        dbid: Dbid,
        window: Duration,
        deadline: Instant,
        continuous: bool,
    ) -> Option<Observation> {
        let asked = Instant::now();
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (own, in_flight) =
                self.with(|m| m.get(&dbid).map_or((None, false), |e| (e.own, e.in_flight)));
            let fresh = own.filter(|o| o.age() <= window);
            if fresh.is_some_and(|o| o.seen_down() || o.at_instant > asked) {
                return fresh;
            }
            if (!in_flight && !continuous) || Instant::now() >= deadline {
                return fresh;
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
        }
    }

    /// Every entry, for `ftsctl` and the evidence.
    pub fn snapshot(&self) -> Vec<ObservationRow> {
        let mut rows: Vec<ObservationRow> = self.with(|m| {
            m.iter()
                .filter_map(|(dbid, e)| {
                    let o = e.own?;
                    Some(ObservationRow {
                        dbid: *dbid,
                        age_ms: o.age().as_millis() as u64,
                        failure: o.failure,
                        down_ms: o.down_since.map(|s| s.elapsed().as_millis() as u64),
                        reported_by: e.reports.keys().cloned().collect(),
                    })
                })
                .collect()
        });
        rows.sort_by_key(|r| r.dbid);
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn down_since_is_kept_across_failed_probes_and_reset_by_an_answer() {
        let t = ObservationTable::default();
        let first = t.record(2, Some(FailureKind::Timeout));
        let second = t.record(2, Some(FailureKind::Refused));
        assert_eq!(first.down_since, second.down_since);
        assert!(second.seen_down());
        let up = t.record(2, None);
        assert_eq!(up.down_since, None);
        let prober = t.record(2, Some(FailureKind::Auth));
        assert!(!prober.seen_down());
        assert_eq!(prober.down_since, None);
    }

    #[tokio::test]
    async fn answer_returns_a_fresh_loss_at_once() {
        let t = ObservationTable::default();
        t.record(2, Some(FailureKind::Timeout));
        let far = Instant::now() + Duration::from_secs(3600);
        let a = t.answer(2, Duration::from_secs(10), far, true).await;
        assert!(a.unwrap().seen_down());
    }

    #[tokio::test]
    async fn answer_without_observation_or_probe_coming_is_none_at_once() {
        let t = ObservationTable::default();
        let far = Instant::now() + Duration::from_secs(3600);
        assert_eq!(t.answer(2, Duration::from_secs(10), far, false).await, None);
    }

    #[tokio::test]
    async fn answer_waits_for_the_probe_in_flight() {
        let t = std::sync::Arc::new(ObservationTable::default());
        t.record(2, None);
        t.begin(2);
        let t2 = t.clone();
        let waiter = tokio::spawn(async move {
            let far = Instant::now() + Duration::from_secs(3600);
            t2.answer(2, Duration::from_secs(10), far, false).await
        });
        tokio::task::yield_now().await;
        t.record(2, Some(FailureKind::Reset));
        assert!(waiter.await.unwrap().unwrap().seen_down());
    }

    #[tokio::test]
    async fn answer_gives_a_new_observation_that_the_primary_answered() {
        let t = std::sync::Arc::new(ObservationTable::default());
        t.record(2, None);
        let t2 = t.clone();
        let waiter = tokio::spawn(async move {
            let far = Instant::now() + Duration::from_secs(3600);
            t2.answer(2, Duration::from_secs(10), far, true).await
        });
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        t.record(2, None);
        assert_eq!(waiter.await.unwrap().unwrap().failure, None);
    }

    #[tokio::test]
    async fn answer_gives_the_last_fresh_observation_at_the_deadline() {
        let t = ObservationTable::default();
        t.record(2, None);
        t.begin(2);
        let soon = Instant::now() + Duration::from_millis(20);
        let a = t.answer(2, Duration::from_secs(10), soon, true).await;
        assert_eq!(a.unwrap().failure, None);
    }

    #[test]
    fn reports_age_out_of_the_window() {
        let t = ObservationTable::default();
        t.report(2, "b", SystemTime::now(), FailureKind::Timeout);
        assert_eq!(t.reports(2, Duration::from_secs(10)).len(), 1);
        std::thread::sleep(Duration::from_millis(5));
        assert!(t.reports(2, Duration::from_millis(1)).is_empty());
    }
}
