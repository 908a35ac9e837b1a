//! The quorum gate before a failover: the leader counts its own observation, the losses other
//! members reported (`ReportDown`) and, when those are not yet a majority of the live members,
//! asks the others (`ConfirmDown`), all bounded by one deadline sized from the peers' retry
//! budget and the leader's act-by deadline. The counting is `core::quorum`; this gathers.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::Notify;

use super::observations::ObservationTable;
use crate::core::quorum::{self, Tally, Vote};
use crate::model::Dbid;
use crate::wire::failure::FailureKind;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A live member as the registry lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerMember {
    pub instance_id: String,
    pub api_address: String,
    /// Whether it holds office.
    pub leader: bool,
    /// When its last probe cycle started (the leader's: the phase followers stagger against).
    pub last_cycle_at: Option<SystemTime>,
}

/// A member's answer to `ConfirmDown`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerAnswer {
    /// Its observation: `failure` None when the primary answered it, `age` how long before
    /// its answer the observation ended, `probed` whether it probed for this question (no
    /// fresh observation of its own).
    Seen {
        failure: Option<FailureKind>,
        age: Duration,
        probed: bool,
    },
    /// It has no observation within the window and could not make one in time.
    Unknown,
    /// The call failed (unreachable, refused, deadline).
    Error(String),
}

/// The other instances, as the gate reaches them.
pub trait Peers: Send + Sync + 'static {
    /// The live members (this instance included when registered).
    fn live_members(&self) -> BoxFuture<'_, Result<Vec<PeerMember>, String>>;

    /// Asks `peer` whether it has seen `dbid` fail within `window`; must return by
    /// `deadline`.
    fn confirm_down<'a>(
        &'a self,
        peer: &'a PeerMember,
        dbid: Dbid,
        window: Duration,
        deadline: Instant,
    ) -> BoxFuture<'a, PeerAnswer>;

    /// Asks `peer` what its own coordinator watch last saw of the coordinator at `address`
    /// (`host:port`) within `window` (`ConfirmDown` for content -1); must return by
    /// `deadline`. Peers that cannot ask answer with an error (nothing confirmed).
    fn confirm_coordinator_down<'a>(
        &'a self,
        peer: &'a PeerMember,
        address: &'a str,
        window: Duration,
        deadline: Instant,
    ) -> BoxFuture<'a, PeerAnswer> {
        let _ = (peer, address, window, deadline);
        Box::pin(async { PeerAnswer::Error("cannot ask about the coordinator".into()) })
    }

    /// Tells `leader` that this instance saw primary `dbid` fail (`ReportDown`). Best effort:
    /// a lost report only means the leader asks with `ConfirmDown` instead.
    fn report_down<'a>(
        &'a self,
        leader: &'a PeerMember,
        dbid: Dbid,
        observed_at: SystemTime,
        failure: FailureKind,
    ) -> BoxFuture<'a, ()>;
}

/// The gate's settings and its inputs.
pub struct SecondOpinion {
    pub table: Arc<ObservationTable>,
    /// None: no other instance can exist (`--no-election`, shadow): today's behaviour.
    pub peers: Option<Arc<dyn Peers>>,
    /// How recent an observation must be to count: one interval plus one retry budget, so a
    /// continuous observer always has one. Re-timed by the probe loop, between two cycles,
    /// when a reload changes the probe timings ([`window_for`]).
    pub window: Window,
    /// The longest the leader waits for the others' answers (before the act-by cap):
    /// `observe.confirm_timeout`, or the window when it is not set.
    pub confirm_timeout: Option<Duration>,
    /// A primary must have been seen down at least this long (0: no minimum).
    pub min_down: Duration,
    /// The probe loop's wake. A failover refused because the primary has been seen down for
    /// less than `min_down` is decided again as soon as it has been (a cycle starts then),
    /// not one interval later: otherwise `probe.min_down` would cost a whole interval.
    pub wake: Option<Arc<Notify>>,
}

impl Default for SecondOpinion {
    fn default() -> Self {
        SecondOpinion {
            table: Arc::default(),
            peers: None,
            window: Duration::from_secs(60).into(),
            confirm_timeout: Some(Duration::ZERO),
            min_down: Duration::ZERO,
            wake: None,
        }
    }
}

/// The window of the second opinion for a probe interval and the probe settings: one
/// interval plus one retry budget (`(retries + 1) × timeout + retries × retry_delay`), the
/// longest a continuous observer goes without a fresh observation.
pub fn window_for(interval: Duration, probe: &super::ProbeSettings) -> Duration {
    interval + super::observe_only::retry_budget(probe)
}

/// The window, replaced between two cycles when a reload changes the probe timings (the
/// followers' observation rounds are re-timed by the same reload).
#[derive(Debug)]
pub struct Window(RwLock<Duration>);

impl Window {
    pub fn get(&self) -> Duration {
        *self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set(&self, window: Duration) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = window;
    }
}

impl From<Duration> for Window {
    fn from(window: Duration) -> Self {
        Window(RwLock::new(window))
    }
}

/// How long before the act-by deadline the gate stops waiting, leaving the catalog write and
/// the PROMOTE their time under the same lease renewal.
const ACT_BY_RESERVE: Duration = Duration::from_millis(300);

/// One counted (or not counted) answer, for the evidence.
#[derive(Debug, Clone, Serialize)]
pub struct Confirmation {
    pub member: String,
    /// `own`, `report` or `confirm`.
    pub via: &'static str,
    /// `down`, `up`, `prober_fault`, `unknown` or `error`.
    pub seen: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<FailureKind>,
    /// When it observed, Unix milliseconds on this instance's clock (0: unknown).
    pub observed_at_ms: i64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub probed_on_demand: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What the gate found.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// Only this instance is live (or no peers exist): its own observation decides.
    Alone,
    /// A majority saw it.
    Confirmed(Evidence),
    /// Fewer than a majority saw it within the deadline.
    NotConfirmed(Evidence),
    /// Seen down for less than `probe.min_down`.
    DownTooBriefly { down: Duration },
}

#[derive(Debug, Clone, Serialize)]
pub struct Evidence {
    pub tally: Tally,
    pub confirmations: Vec<Confirmation>,
    pub window_ms: u64,
    pub waited_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry_error: Option<String>,
}

impl Evidence {
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or_else(|e| json!({ "error": e.to_string() }))
    }
}

/// Unix milliseconds of `t` (0 before the epoch): observation times in the evidence.
pub(crate) fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The live members, read by `deadline`; an unreadable or late registry is the error text
/// recorded as evidence (the caller then cannot count a majority).
pub(crate) async fn live_members_by(
    peers: &dyn Peers,
    deadline: Instant,
) -> Result<Vec<PeerMember>, String> {
    match tokio::time::timeout_at(deadline.into(), peers.live_members()).await {
        Ok(read) => read,
        Err(_) => Err("members registry read timed out".to_owned()),
    }
}

fn seen_label(failure: Option<FailureKind>) -> &'static str {
    match failure {
        None => "up",
        Some(k) if k.is_prober_fault() => "prober_fault",
        Some(_) => "down",
    }
}

impl SecondOpinion {
    /// The gate for a failover of primary `dbid` that this instance (`me`) decided from its
    /// own failed probe. `act_by`: the authority's deadline, which the wait never reaches.
    pub async fn confirm(&self, me: &str, dbid: Dbid, act_by: Option<Instant>) -> Verdict {
        let started = Instant::now();
        // One count, one window (a reload between two cycles re-times the next count).
        let window = self.window.get();
        let confirm_timeout = self.confirm_timeout.unwrap_or(window);
        let own = self.table.own(dbid);
        if !self.min_down.is_zero() {
            let down = own
                .and_then(|o| o.down_since)
                .map(|s| s.elapsed())
                .unwrap_or_default();
            if down < self.min_down {
                if let Some(wake) = &self.wake {
                    // Decide again once the minimum has passed: that cycle's probe ends at
                    // least `min_down` after the episode began.
                    let (wake, rest) = (wake.clone(), self.min_down - down);
                    tokio::spawn(async move {
                        tokio::time::sleep(rest).await;
                        wake.notify_one();
                    });
                }
                return Verdict::DownTooBriefly { down };
            }
        }
        let Some(peers) = &self.peers else {
            return Verdict::Alone;
        };
        let mut deadline = started + confirm_timeout;
        if let Some(act_by) = act_by {
            deadline = deadline.min(act_by.checked_sub(ACT_BY_RESERVE).unwrap_or(act_by));
        }
        let (live, registry_error) = match live_members_by(peers.as_ref(), deadline).await {
            Ok(live) => (live, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        let names: Vec<String> = live.iter().map(|m| m.instance_id.clone()).collect();
        if registry_error.is_none() && !quorum::needs_peers(&names, me) {
            return Verdict::Alone;
        }
        let window_start_ms = unix_ms(SystemTime::now()) - window.as_millis() as i64;
        let mut confirmations = Vec::new();
        if let Some(o) = own {
            confirmations.push(Confirmation {
                member: me.to_owned(),
                via: "own",
                seen: seen_label(o.failure),
                class: o.failure,
                observed_at_ms: unix_ms(o.at),
                probed_on_demand: false,
                error: None,
            });
        }
        let add_reports = |confirmations: &mut Vec<Confirmation>| {
            for (member, r) in self.table.reports(dbid, window) {
                let dup = confirmations
                    .iter()
                    .any(|c| c.member == member && c.via == "report");
                if member != me && !dup {
                    confirmations.push(Confirmation {
                        member,
                        via: "report",
                        seen: seen_label(Some(r.failure)),
                        class: Some(r.failure),
                        observed_at_ms: unix_ms(r.received_at),
                        probed_on_demand: false,
                        error: None,
                    });
                }
            }
        };
        add_reports(&mut confirmations);
        let count = |confirmations: &[Confirmation]| {
            let votes: Vec<Vote> = confirmations
                .iter()
                .filter(|c| c.observed_at_ms > 0)
                .map(|c| Vote {
                    member: c.member.clone(),
                    observed_at_ms: c.observed_at_ms,
                    failure: match c.seen {
                        "down" | "prober_fault" => c.class,
                        _ => None,
                    },
                    via: c.via,
                })
                .collect();
            quorum::tally(&names, me, &votes, window_start_ms)
        };
        let mut tally = count(&confirmations);
        if !tally.reached() && registry_error.is_none() {
            let mut asks = tokio::task::JoinSet::new();
            for peer in live.iter().filter(|m| m.instance_id != me) {
                if tally.confirmed.contains(&peer.instance_id) {
                    continue;
                }
                let peers = peers.clone();
                let peer = peer.clone();
                asks.spawn(async move {
                    let asked = SystemTime::now();
                    let answer = peers.confirm_down(&peer, dbid, window, deadline).await;
                    (peer.instance_id, asked, answer)
                });
            }
            loop {
                let next = tokio::time::timeout_at(deadline.into(), asks.join_next()).await;
                let Ok(Some(Ok((member, asked, answer)))) = next else {
                    break;
                };
                confirmations.push(match answer {
                    PeerAnswer::Seen {
                        failure,
                        age,
                        probed,
                    } => Confirmation {
                        member,
                        via: "confirm",
                        seen: seen_label(failure),
                        class: failure,
                        // The answer was made after we asked: the observation is no later than
                        // `asked - age` would put it only if the answer came at once, so this
                        // errs on the old side.
                        observed_at_ms: unix_ms(asked) - age.as_millis() as i64,
                        probed_on_demand: probed,
                        error: None,
                    },
                    PeerAnswer::Unknown => Confirmation {
                        member,
                        via: "confirm",
                        seen: "unknown",
                        class: None,
                        observed_at_ms: 0,
                        probed_on_demand: false,
                        error: None,
                    },
                    PeerAnswer::Error(e) => Confirmation {
                        member,
                        via: "confirm",
                        seen: "error",
                        class: None,
                        observed_at_ms: 0,
                        probed_on_demand: false,
                        error: Some(e),
                    },
                });
                add_reports(&mut confirmations);
                tally = count(&confirmations);
                if tally.reached() {
                    break;
                }
            }
            asks.abort_all();
            add_reports(&mut confirmations);
            tally = count(&confirmations);
        }
        let evidence = Evidence {
            tally,
            confirmations,
            window_ms: window.as_millis() as u64,
            waited_ms: started.elapsed().as_millis() as u64,
            registry_error,
        };
        // Without the member list nobody knows what a majority is: never act on that.
        if evidence.registry_error.is_none() && evidence.tally.reached() {
            Verdict::Confirmed(evidence)
        } else {
            Verdict::NotConfirmed(evidence)
        }
    }
}

#[cfg(test)]
mod tests;
