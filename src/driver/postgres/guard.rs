//! The data-loss guard and the driver's memory per content.
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
            if a.reply.is_role_mirror {
                // A standby answered where the catalog has a primary: it says nothing about
                // a standby of its own, so the verdict stays as it was.
                st.missing_since = None;
                return false;
            }
            st.verdict = Some(Verdict {
                primary_dbid: primary,
                in_sync: a.reply.is_in_sync,
                why: a.why.clone(),
                at: now,
            });
            if a.reply.is_mirror_up || !a.reply.is_syncrep_enabled {
                st.missing_since = None;
                return false;
            }
            let since = match st.missing_since {
                Some((dbid, since)) if dbid == primary => since,
                _ => {
                    st.missing_since = Some((primary, now));
                    now
                }
            };
            now.duration_since(since) < grace
        })
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
}
