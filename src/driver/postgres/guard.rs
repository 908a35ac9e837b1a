//! The data-loss guard and the driver's memory per content (verdicts, restart and
//! misconfiguration episodes, pending changes and alarms, demoted primaries seen writable).
//!
//! The decision core allows a failover when the catalog says the pair is in sync (mode `s`).
//! The catalog follows the probes, but with a delay: a probe that saw the standby lagging or
//! asynchronous changes the mode only once its transition commits, which may not happen
//! (observe-only follower, catalog unreachable, fenced). The guard closes that gap with the
//! rule Greenplum applies to its own in-sync flag: a standby is promoted only if the last
//! successful probe of its primary saw it synchronous and caught up.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::probe::Assessment;
use crate::driver::{AlarmKind, DriverAlarm};
use crate::model::{ContentId, Dbid};

/// What the last successful probe of a content's primary concluded about its standby.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// The primary that was probed.
    pub primary_dbid: Dbid,
    pub in_sync: bool,
    pub why: String,
    #[serde(skip)]
    pub at: Instant,
}

#[derive(Debug, Default)]
struct ContentState {
    verdict: Option<Verdict>,
    /// Since when the primary `.0` has reported no standby connected while syncrep is on.
    missing_since: Option<(Dbid, Instant)>,
    /// The last probe's assessment, for evidence.
    last: Option<(Dbid, Assessment)>,
    /// Since when the primary `.0` has refused connections as starting up / in recovery
    /// (SQLSTATE 57P03); `.2`: the end of the restart grace was logged.
    starting: Option<(Dbid, Instant, bool)>,
    /// Since when the primary `.0` has streamed to a standby `synchronous_standby_names` does
    /// not name; `.2`: alarmed for this episode.
    unnamed: Option<(Dbid, Instant, bool)>,
    /// `synchronous_standby_names` to switch back on at the primary `.0` (acting leader only).
    restore: Option<(Dbid, String)>,
    /// Alarms raised by probes, handed to the next survey.
    alarms: Vec<DriverAlarm>,
    /// A row the catalog lists as a mirror that answered as a writable primary.
    pub(super) demoted: Option<Demoted>,
    /// A switchover of this content runs in this process (its primary `dbid`): its read-only
    /// primary is its doing, not one to make writable again.
    switching: Option<Dbid>,
    /// The catalog primary `.0` answered read-only (`default_transaction_read_only` on) with
    /// its standby streaming in sync at the last probe: an interrupted switchover's, unless
    /// one runs here.
    read_only_primary: Option<Dbid>,
}

/// One episode of a demoted primary answering writable: from the first such answer until it
/// answers as a standby (rebuilt) or another row is concerned.
#[derive(Debug, Clone, Serialize)]
pub struct Demoted {
    pub dbid: Dbid,
    #[serde(skip)]
    pub since: Instant,
    /// The SQL fence succeeded (read-only, sessions ended).
    pub fenced: bool,
    /// `fence_command` ran (successfully or not) in this episode.
    pub command_ran: bool,
    /// A failure was alarmed in this episode.
    pub failure_alarmed: bool,
}

/// Per-content memory shared by every attempt.
#[derive(Debug, Default)]
pub struct Memory(Mutex<HashMap<ContentId, ContentState>>);

impl Memory {
    fn with<T>(&self, content: ContentId, f: impl FnOnce(&mut ContentState) -> T) -> T {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(map.entry(content).or_default())
    }

    /// Records a successful probe of `primary` and returns `request_retry`: whether a missing
    /// standby is still inside `grace` (the driver's stand-in for Greenplum's
    /// `gp_fts_mark_mirror_down_grace_period`, which a plain PostgreSQL primary cannot compute).
    pub fn record_probe(
        &self,
        content: ContentId,
        primary: Dbid,
        a: &Assessment,
        grace: Duration,
        now: Instant,
    ) -> bool {
        self.with(content, |st| {
            st.last = Some((primary, a.clone()));
            if st.starting.is_some_and(|s| s.0 == primary) {
                st.starting = None;
            }
            if a.reply.is_role_mirror {
                // A standby answered where the catalog has a primary: it says nothing about
                // a standby of its own, so the verdict stays as it was.
                st.missing_since = None;
                return false;
            }
            let verdict = Verdict {
                primary_dbid: primary,
                in_sync: a.reply.is_in_sync,
                why: a.why.clone(),
                at: now,
            };
            if a.reply.is_mirror_up || !a.reply.is_syncrep_enabled {
                st.missing_since = None;
                st.verdict = Some(verdict);
                return false;
            }
            let since = match st.missing_since {
                Some((dbid, since)) if dbid == primary => since,
                _ => {
                    st.missing_since = Some((primary, now));
                    now
                }
            };
            let within_grace = now.duration_since(since) < grace;
            // While synchronous replication stays on, a primary without its standby cannot
            // acknowledge a commit, so the standby still holds every acknowledged commit: the
            // verdict from when it was last seen stays until the grace ends (and the mirror is
            // marked down, syncrep off). A dying primary's last answer is typically this one
            // (its walsender exits first); it must not veto the failover that follows.
            let keeps_verdict = within_grace
                && st
                    .verdict
                    .as_ref()
                    .is_some_and(|v| v.primary_dbid == primary);
            if !keeps_verdict {
                st.verdict = Some(verdict);
            }
            within_grace
        })
    }

    /// A PROBE of `primary` was refused with SQLSTATE 57P03: starts the restart clock unless
    /// it runs already for this primary.
    pub fn note_starting(&self, content: ContentId, primary: Dbid, now: Instant) {
        self.with(content, |st| match st.starting {
            Some((dbid, _, _)) if dbid == primary => {}
            _ => st.starting = Some((primary, now, false)),
        })
    }

    /// How long `primary` has been starting up, while that is less than `grace`; logs once
    /// when the grace is exceeded.
    pub fn starting_within(
        &self,
        content: ContentId,
        primary: Dbid,
        grace: Duration,
        now: Instant,
    ) -> Option<Duration> {
        self.with(content, |st| {
            let (dbid, since, logged) = st.starting.as_mut()?;
            if *dbid != primary {
                return None;
            }
            let elapsed = now.saturating_duration_since(*since);
            if elapsed < grace {
                return Some(elapsed);
            }
            if !*logged {
                *logged = true;
                tracing::warn!(
                    dbid = primary,
                    ?elapsed,
                    ?grace,
                    "primary still starting up / in recovery after postgres.restart_grace: \
                     counted as failed"
                );
            }
            None
        })
    }

    /// Tracks a standby streaming without being named in `synchronous_standby_names`; returns
    /// an alarm once per episode, when it has lasted `grace`.
    pub fn track_unnamed(
        &self,
        content: ContentId,
        primary: Dbid,
        unnamed: bool,
        grace: Duration,
        now: Instant,
    ) -> Option<Duration> {
        self.with(content, |st| {
            if !unnamed {
                st.unnamed = None;
                return None;
            }
            let (_, since, alarmed) = match &mut st.unnamed {
                Some(u) if u.0 == primary => u,
                other => other.insert((primary, now, false)),
            };
            let lasted = now.saturating_duration_since(*since);
            if *alarmed || lasted < grace {
                return None;
            }
            *alarmed = true;
            Some(lasted)
        })
    }

    /// Since when the current "streaming but not named" episode runs, if any.
    pub fn unnamed_since(&self, content: ContentId) -> Option<Instant> {
        self.with(content, |st| st.unnamed.map(|u| u.1))
    }

    pub fn want_restore(&self, content: ContentId, want: Option<(Dbid, String)>) {
        self.with(content, |st| st.restore = want)
    }

    pub fn restore(&self, content: ContentId) -> Option<(Dbid, String)> {
        self.with(content, |st| st.restore.clone())
    }

    /// Marks (Some) or clears (None) a switchover of `content` from the primary `dbid`
    /// running in this process.
    /// Ending one also forgets the read-only primary seen meanwhile (the switchover's own
    /// doing); the next probe sees it again if it is still read-only.
    pub fn set_switching(&self, content: ContentId, primary: Option<Dbid>) {
        self.with(content, |st| {
            st.switching = primary;
            st.read_only_primary = None;
        })
    }

    /// Whether a switchover of `content` runs in this process.
    pub fn switching(&self, content: ContentId) -> bool {
        self.with(content, |st| st.switching.is_some())
    }

    /// Records whether the catalog primary `dbid` answered read-only with an in-sync standby.
    pub fn saw_read_only_primary(&self, content: ContentId, dbid: Dbid, read_only: bool) {
        self.with(content, |st| {
            st.read_only_primary = read_only.then_some(dbid)
        })
    }

    /// The catalog primary to make writable again: seen read-only with its standby in sync,
    /// and no switchover of the content running here.
    pub fn read_only_primary(&self, content: ContentId) -> Option<Dbid> {
        self.with(content, |st| {
            st.read_only_primary.filter(|_| st.switching.is_none())
        })
    }

    pub fn push_alarm(&self, alarm: DriverAlarm) {
        self.with(alarm.content, |st| st.alarms.push(alarm))
    }

    pub fn take_alarms(&self, content: ContentId) -> Vec<DriverAlarm> {
        self.with(content, |st| std::mem::take(&mut st.alarms))
    }

    /// Records what the demoted row `dbid` answered. `writable`: as a primary accepting
    /// writes; returns the alarm when that starts an episode.
    pub fn saw_demoted(
        &self,
        content: ContentId,
        dbid: Dbid,
        writable: bool,
        now: Instant,
    ) -> Option<DriverAlarm> {
        self.with(content, |st| {
            if !writable {
                return None;
            }
            if st.demoted.as_ref().is_some_and(|d| d.dbid == dbid) {
                return None;
            }
            st.demoted = Some(Demoted {
                dbid,
                since: now,
                fenced: false,
                command_ran: false,
                failure_alarmed: false,
            });
            Some(DriverAlarm {
                kind: AlarmKind::WritableDemotedPrimary,
                content,
                dbid,
                message: String::new(),
            })
        })
    }

    /// The demoted row answered as a standby: the episode is over.
    pub fn demoted_is_standby(&self, content: ContentId, dbid: Dbid) {
        self.with(content, |st| {
            if st.demoted.as_ref().is_some_and(|d| d.dbid == dbid) {
                st.demoted = None;
            }
        })
    }

    pub fn update_demoted<T>(
        &self,
        content: ContentId,
        f: impl FnOnce(Option<&mut Demoted>) -> T,
    ) -> T {
        self.with(content, |st| f(st.demoted.as_mut()))
    }

    /// Records a probe whose replication rows were hidden: evidence only; neither the verdict
    /// nor the missing-standby clock changes on what could not be seen.
    pub fn record_blind(&self, content: ContentId, primary: Dbid, a: &Assessment) {
        self.with(content, |st| st.last = Some((primary, a.clone())));
    }

    pub fn verdict(&self, content: ContentId) -> Option<Verdict> {
        self.with(content, |st| st.verdict.clone())
    }

    /// The last assessment and verdict of `content` as JSON, for evidence.
    pub fn detail(&self, content: ContentId) -> Option<serde_json::Value> {
        self.with(content, |st| {
            let (primary, last) = st.last.as_ref()?;
            Some(serde_json::json!({
                "driver": "postgres",
                "probed_dbid": primary,
                "last_probe": last,
                "standby_not_named_for_ms": st.unnamed.map(|u| u.1.elapsed().as_millis() as u64),
                "demoted_primary": st.demoted,
                "verdict": st.verdict.as_ref().map(|v| serde_json::json!({
                    "primary_dbid": v.primary_dbid,
                    "in_sync": v.in_sync,
                    "why": v.why,
                    "age_ms": v.at.elapsed().as_millis() as u64,
                })),
            }))
        })
    }
}

/// May `target` (a standby of `content`) be promoted? Refused when the last successful probe
/// of another instance of the content (its primary) saw the standby not in sync. Without a
/// verdict (e.g. ftsd started after the primary died) the catalog's mode, which the decision
/// core has already required to be `s`, is all there is to go on.
pub fn check(verdict: Option<&Verdict>, target: Dbid) -> Result<(), String> {
    match verdict {
        Some(v) if v.primary_dbid != target && !v.in_sync => Err(format!(
            "the last successful probe of primary dbid {} ({:.1}s ago) saw its standby not in \
             sync: {}",
            v.primary_dbid,
            v.at.elapsed().as_secs_f64(),
            v.why
        )),
        Some(_) => Ok(()),
        None => {
            tracing::warn!(
                target_dbid = target,
                "no probe of this pair's primary has succeeded since ftsd started; relying on \
                 the catalog's in-sync mode"
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::postgres::probe::{assess, Observed, StandbyRow};

    fn assessed(state: &str, sync: &str, names: &str) -> Assessment {
        assess(
            &Observed {
                in_recovery: false,
                synchronous_standby_names: names.into(),
                synchronous_commit: "on".into(),
                read_only: false,
                standbys: if state.is_empty() {
                    vec![]
                } else {
                    vec![StandbyRow {
                        application_name: "s".into(),
                        state: Some(state.into()),
                        sync_state: Some(sync.into()),
                        replay_lag: Some(0),
                    }]
                },
            },
            0,
        )
    }

    #[test]
    fn refuses_after_a_probe_saw_the_standby_async() {
        let m = Memory::default();
        let now = Instant::now();
        let grace = Duration::ZERO;
        m.record_probe(0, 2, &assessed("streaming", "sync", "s"), grace, now);
        assert!(check(m.verdict(0).as_ref(), 4).is_ok());
        m.record_probe(0, 2, &assessed("streaming", "async", "x"), grace, now);
        let err = check(m.verdict(0).as_ref(), 4).unwrap_err();
        assert!(err.contains("primary dbid 2"), "{err}");
        // the primary itself (already promoted) is never refused, and other contents are
        // unaffected
        assert!(check(m.verdict(0).as_ref(), 2).is_ok());
        assert!(check(m.verdict(1).as_ref(), 5).is_ok());
        // a standby answering in the primary's place keeps the old verdict
        let mut standby = assessed("", "", "s");
        standby.reply.is_role_mirror = true;
        m.record_probe(0, 4, &standby, grace, now);
        assert!(check(m.verdict(0).as_ref(), 4).is_err());
    }

    #[test]
    fn restart_clock_runs_per_primary_and_ends_at_the_grace() {
        let m = Memory::default();
        let t0 = Instant::now();
        let grace = Duration::from_secs(10);
        assert_eq!(m.starting_within(0, 2, grace, t0), None, "no episode yet");
        m.note_starting(0, 2, t0);
        m.note_starting(0, 2, t0 + Duration::from_secs(5)); // keeps the first time
        assert_eq!(
            m.starting_within(0, 2, grace, t0 + Duration::from_secs(9)),
            Some(Duration::from_secs(9))
        );
        assert_eq!(m.starting_within(0, 2, grace, t0 + grace), None);
        assert_eq!(m.starting_within(0, 3, grace, t0), None, "another primary");
        // a successful probe ends the episode
        m.record_probe(0, 2, &assessed("streaming", "sync", "s"), grace, t0 + grace);
        assert_eq!(m.starting_within(0, 2, grace, t0 + grace), None);
        m.note_starting(0, 2, t0 + grace);
        assert!(m.starting_within(0, 2, grace, t0 + grace).is_some());
    }

    #[test]
    fn unnamed_standby_alarms_once_per_episode_after_the_grace() {
        let m = Memory::default();
        let t0 = Instant::now();
        let grace = Duration::from_secs(3);
        assert_eq!(m.track_unnamed(0, 2, true, grace, t0), None);
        assert_eq!(
            m.track_unnamed(0, 2, true, grace, t0 + Duration::from_secs(2)),
            None
        );
        assert_eq!(
            m.track_unnamed(0, 2, true, grace, t0 + Duration::from_secs(3)),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            m.track_unnamed(0, 2, true, grace, t0 + Duration::from_secs(9)),
            None
        );
        // fixed, then wrong again: a new episode
        assert_eq!(
            m.track_unnamed(0, 2, false, grace, t0 + Duration::from_secs(10)),
            None
        );
        assert_eq!(m.unnamed_since(0), None);
        let t1 = t0 + Duration::from_secs(11);
        assert_eq!(m.track_unnamed(0, 2, true, grace, t1), None);
        assert!(m.track_unnamed(0, 2, true, grace, t1 + grace).is_some());
    }

    #[test]
    fn a_standby_missing_within_the_grace_keeps_its_in_sync_verdict() {
        // The primary's walsender exits before the primary stops answering (postmaster killed,
        // host going down): its last answer says "no standby". Syncrep is still on, so no
        // commit was acknowledged without the standby; the failover that follows must go on.
        let m = Memory::default();
        let t0 = Instant::now();
        let grace = Duration::from_secs(3);
        m.record_probe(0, 2, &assessed("streaming", "sync", "s"), grace, t0);
        let gone = assessed("", "", "s");
        assert!(m.record_probe(0, 2, &gone, grace, t0 + Duration::from_secs(1)));
        assert!(check(m.verdict(0).as_ref(), 4).is_ok());
        // once the grace is over the mirror is marked down: the standby is out of sync
        let over = t0 + Duration::from_secs(1) + grace;
        assert!(!m.record_probe(0, 2, &gone, grace, over));
        assert!(check(m.verdict(0).as_ref(), 4).is_err());
        // without a grace the first such answer counts at once
        let m = Memory::default();
        m.record_probe(
            0,
            2,
            &assessed("streaming", "sync", "s"),
            Duration::ZERO,
            t0,
        );
        assert!(!m.record_probe(0, 2, &gone, Duration::ZERO, t0));
        assert!(check(m.verdict(0).as_ref(), 4).is_err());
        // an async verdict is not upgraded by the grace
        let m = Memory::default();
        m.record_probe(0, 2, &assessed("streaming", "async", "x"), grace, t0);
        assert!(m.record_probe(0, 2, &gone, grace, t0 + Duration::from_secs(1)));
        assert!(check(m.verdict(0).as_ref(), 4).is_err());
    }

    #[test]
    fn missing_standby_asks_for_retries_until_the_grace_ends() {
        let m = Memory::default();
        let t0 = Instant::now();
        let grace = Duration::from_secs(2);
        let gone = assessed("", "", "s");
        assert!(m.record_probe(0, 2, &gone, grace, t0));
        assert!(m.record_probe(0, 2, &gone, grace, t0 + Duration::from_secs(1)));
        assert!(!m.record_probe(0, 2, &gone, grace, t0 + Duration::from_secs(2)));
        // back, then gone again: a new grace period
        m.record_probe(0, 2, &assessed("streaming", "sync", "s"), grace, t0);
        assert!(m.record_probe(0, 2, &gone, grace, t0 + Duration::from_secs(3)));
        // syncrep off: nothing to retry for
        assert!(!m.record_probe(0, 2, &assessed("", "", ""), grace, t0));
    }

    #[test]
    fn a_read_only_primary_is_restored_only_when_no_switchover_runs_here() {
        let m = Memory::default();
        m.saw_read_only_primary(0, 2, true);
        assert_eq!(
            m.read_only_primary(0),
            Some(2),
            "an interrupted switchover's"
        );
        m.set_switching(0, Some(2));
        m.saw_read_only_primary(0, 2, true);
        assert_eq!(
            m.read_only_primary(0),
            None,
            "our own switchover's: hands off"
        );
        // Ending it forgets what was seen meanwhile; the next probe tells again.
        m.set_switching(0, None);
        assert_eq!(m.read_only_primary(0), None);
        m.saw_read_only_primary(0, 2, false);
        assert_eq!(m.read_only_primary(0), None, "writable: nothing to do");
        m.saw_read_only_primary(0, 2, true);
        assert_eq!(m.read_only_primary(1), None, "per content");
    }
}
