//! The peers' confirmation of a lost coordinator (docs/coordinator.md, "Confirmation by the
//! other observers"): what this instance's own watch last saw of each coordinator address,
//! answered to a leader's `ConfirmDown`; and, on the leader, asking every other live member
//! before a failover without a fence command. The rule is
//! [`crate::core::coordinator::others`]; this gathers and answers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::core::coordinator::others::{self, OthersTally, PeerSeen, PeerView};
use crate::engine::second_opinion::{live_members_by, unix_ms, PeerAnswer, Peers};
use crate::wire::failure::FailureKind;

/// One round's observation of a coordinator address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub at: Instant,
    /// None: a session succeeded. Some(class): every attempt failed, the last with that class.
    pub failure: Option<FailureKind>,
}

/// The last observation per address, shared by the watch (which records) and the API (which
/// answers from it).
#[derive(Debug, Default)]
pub struct Observations {
    last: Mutex<HashMap<String, Seen>>,
    changed: Notify,
}

impl Observations {
    pub fn record(&self, address: &str, failure: Option<FailureKind>) {
        super::lock(&self.last).insert(
            address.to_owned(),
            Seen {
                at: Instant::now(),
                failure,
            },
        );
        self.changed.notify_waiters();
    }

    fn get(&self, address: &str) -> Option<Seen> {
        super::lock(&self.last).get(address).copied()
    }

    /// The answer to a leader's question about `address`: at once when the last observation
    /// within `window` lost it; otherwise the first observation that ends after the question
    /// (the watch runs every interval), or at `deadline` the last one within `window`, if any.
    /// A reach older than the question is not final: the coordinator may have died since.
    pub async fn answer(&self, address: &str, window: Duration, deadline: Instant) -> PeerAnswer {
        let asked = Instant::now();
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let fresh = self.get(address).filter(|s| s.at.elapsed() <= window);
            let lost = fresh.is_some_and(|s| s.failure.is_some_and(|k| !k.is_prober_fault()));
            if lost || fresh.is_some_and(|s| s.at > asked) || Instant::now() >= deadline {
                return match fresh {
                    Some(s) => PeerAnswer::Seen {
                        failure: s.failure,
                        age: s.at.elapsed(),
                        probed: false,
                    },
                    None => PeerAnswer::Unknown,
                };
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
        }
    }
}

/// One member's answer, for the evidence.
#[derive(Debug, Clone, Serialize)]
pub struct Confirmation {
    pub member: String,
    /// `reached`, `lost`, `prober_fault`, `unknown` or `no_answer`.
    pub seen: PeerSeen,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<FailureKind>,
    /// When its observation ended, Unix milliseconds on the leader's clock (0: unknown).
    pub observed_at_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What the leader gathered.
#[derive(Debug, Clone, Serialize)]
pub struct Gathered {
    pub tally: OthersTally,
    /// The server asked about.
    pub coordinator: String,
    pub confirmations: Vec<Confirmation>,
    pub window_ms: u64,
    pub waited_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry_error: Option<String>,
}

impl Gathered {
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or_else(|e| json!({ "error": e.to_string() }))
    }
}

/// Asks every other live member what it saw of `address` within `window`, all answers due by
/// `deadline`, and counts them. `fence_command`: asked only without one (the caller checks
/// first; this is the same rule, so a call with a fence command asks nobody).
pub async fn gather(
    peers: &Arc<dyn Peers>,
    me: &str,
    address: &str,
    fence_command: bool,
    window: Duration,
    deadline: Instant,
) -> Gathered {
    let started = Instant::now();
    let (live, registry_error) = match live_members_by(peers.as_ref(), deadline).await {
        Ok(live) => (Some(live), None),
        Err(e) => (None, Some(e)),
    };
    let names: Option<Vec<String>> = live
        .as_ref()
        .map(|l| l.iter().map(|m| m.instance_id.clone()).collect());
    let mut confirmations = Vec::new();
    let mut views = Vec::new();
    if let (Some(live), true) = (
        &live,
        others::ask_peers(fence_command, names.as_deref(), me),
    ) {
        let mut asks = tokio::task::JoinSet::new();
        for peer in live.iter().filter(|m| m.instance_id != me) {
            let peers = peers.clone();
            let peer = peer.clone();
            let address = address.to_owned();
            asks.spawn(async move {
                let asked = SystemTime::now();
                let answer = peers
                    .confirm_coordinator_down(&peer, &address, window, deadline)
                    .await;
                (peer.instance_id, asked, answer)
            });
        }
        let mut answered = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline.into(), asks.join_next()).await {
                Ok(Some(Ok(a))) => answered.push(a),
                Ok(Some(Err(_))) => {}
                Ok(None) | Err(_) => break,
            }
        }
        asks.abort_all();
        for peer in live.iter().filter(|m| m.instance_id != me) {
            let found = answered.iter().find(|(m, _, _)| *m == peer.instance_id);
            let (seen, class, at, error) = match found {
                Some((_, asked, PeerAnswer::Seen { failure, age, .. })) => {
                    let at = unix_ms(*asked) - age.as_millis() as i64;
                    let seen = match failure {
                        None => PeerSeen::Reached,
                        Some(k) if k.is_prober_fault() => PeerSeen::ProberFault,
                        Some(_) => PeerSeen::Lost,
                    };
                    (seen, *failure, at, None)
                }
                Some((_, _, PeerAnswer::Unknown)) => (PeerSeen::Unknown, None, 0, None),
                Some((_, _, PeerAnswer::Error(e))) => {
                    (PeerSeen::NoAnswer, None, 0, Some(e.clone()))
                }
                None => (
                    PeerSeen::NoAnswer,
                    None,
                    0,
                    Some("no answer before the deadline".into()),
                ),
            };
            views.push(PeerView {
                member: peer.instance_id.clone(),
                seen,
                observed_at_ms: at,
            });
            confirmations.push(Confirmation {
                member: peer.instance_id.clone(),
                seen,
                class,
                observed_at_ms: at,
                error,
            });
        }
    }
    let window_start_ms = unix_ms(SystemTime::now()) - window.as_millis() as i64;
    Gathered {
        tally: others::count(names.as_deref(), me, &views, window_start_ms),
        coordinator: address.to_owned(),
        confirmations,
        window_ms: window.as_millis() as u64,
        waited_ms: started.elapsed().as_millis() as u64,
        registry_error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAR: Duration = Duration::from_secs(3600);

    #[tokio::test]
    async fn a_fresh_loss_is_answered_at_once() {
        let o = Observations::default();
        o.record("c:1", Some(FailureKind::Refused));
        let a = o.answer("c:1", FAR, Instant::now() + FAR).await;
        assert!(matches!(
            a,
            PeerAnswer::Seen {
                failure: Some(FailureKind::Refused),
                ..
            }
        ));
    }

    #[tokio::test]
    async fn another_address_is_unknown() {
        let o = Observations::default();
        o.record("c:1", Some(FailureKind::Refused));
        let soon = Instant::now() + Duration::from_millis(20);
        assert_eq!(o.answer("c:2", FAR, soon).await, PeerAnswer::Unknown);
    }

    #[tokio::test]
    async fn an_older_reach_waits_for_the_next_round() {
        let o = Arc::new(Observations::default());
        o.record("c:1", None);
        let o2 = o.clone();
        let waiter = tokio::spawn(async move { o2.answer("c:1", FAR, Instant::now() + FAR).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        o.record("c:1", Some(FailureKind::Timeout));
        assert!(matches!(
            waiter.await.unwrap(),
            PeerAnswer::Seen {
                failure: Some(FailureKind::Timeout),
                ..
            }
        ));
    }

    #[tokio::test]
    async fn at_the_deadline_the_last_fresh_reach_is_the_answer() {
        let o = Observations::default();
        o.record("c:1", None);
        let soon = Instant::now() + Duration::from_millis(20);
        assert!(matches!(
            o.answer("c:1", FAR, soon).await,
            PeerAnswer::Seen { failure: None, .. }
        ));
    }

    #[tokio::test]
    async fn a_stale_observation_is_unknown() {
        let o = Observations::default();
        o.record("c:1", Some(FailureKind::Refused));
        tokio::time::sleep(Duration::from_millis(5)).await;
        let soon = Instant::now() + Duration::from_millis(10);
        assert_eq!(
            o.answer("c:1", Duration::from_millis(1), soon).await,
            PeerAnswer::Unknown
        );
    }
}
