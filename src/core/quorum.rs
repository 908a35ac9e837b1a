//! The second-opinion rule: a failover is committed only when a majority of the live members
//! (the lease-bound members registry) has seen the primary fail within the current window.
//!
//! Pure: the shell gathers the votes (the leader's own observation, the reports followers
//! pushed, the answers to `ConfirmDown`) and the live member list; this decides. Each member
//! counts once, whatever it sent; a vote from an instance that is not a live member, an
//! observation older than the window, and a failure on the voter's own side (a prober fault)
//! never count.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::wire::failure::FailureKind;

/// One member's view of the primary, as it reached the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Vote {
    /// The instance that observed.
    pub member: String,
    /// When its observation ended (Unix milliseconds, its own clock).
    pub observed_at_ms: i64,
    /// None: the primary answered it. Some(class): its probe failed with that class.
    pub failure: Option<FailureKind>,
    /// How the leader learnt it: `own`, `report` (ReportDown), `confirm` (ConfirmDown).
    pub via: &'static str,
}

impl Vote {
    /// Whether this vote says the primary is lost: a failure, and not one on the voter's side.
    pub fn seen_down(&self) -> bool {
        self.failure.is_some_and(|k| !k.is_prober_fault())
    }
}

/// The result of counting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// The live members counted (the leader included), sorted.
    pub live: Vec<String>,
    /// Members whose counted vote says the primary is lost, sorted.
    pub confirmed: Vec<String>,
    /// The majority of `live`: `live.len() / 2 + 1`.
    pub needed: usize,
}

impl Tally {
    pub fn reached(&self) -> bool {
        self.confirmed.len() >= self.needed
    }

    /// "confirmed by k of n live members (m needed)".
    pub fn summary(&self) -> String {
        format!(
            "confirmed by {} of {} live members ({} needed)",
            self.confirmed.len(),
            self.live.len(),
            self.needed
        )
    }
}

/// Counts `votes` against the live members. `me` (the leader) is a live member even when the
/// registry read does not list it yet. A vote counts when its member is live, it saw the
/// primary lost (not a prober fault) and it was observed at or after `window_start_ms`; a
/// member that sent several votes counts once.
pub fn tally(live: &[String], me: &str, votes: &[Vote], window_start_ms: i64) -> Tally {
    let mut members: BTreeSet<&str> = live.iter().map(String::as_str).collect();
    members.insert(me);
    let confirmed: BTreeSet<&str> = votes
        .iter()
        .filter(|v| members.contains(v.member.as_str()))
        .filter(|v| v.seen_down() && v.observed_at_ms >= window_start_ms)
        .map(|v| v.member.as_str())
        .collect();
    Tally {
        needed: members.len() / 2 + 1,
        live: members.into_iter().map(str::to_owned).collect(),
        confirmed: confirmed.into_iter().map(str::to_owned).collect(),
    }
}

/// Whether a quorum is needed at all: with the leader as the only live member the rule
/// degenerates to its own observation (single-instance behaviour).
pub fn needs_peers(live: &[String], me: &str) -> bool {
    live.iter().any(|m| m != me)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn vote(member: &str, at: i64, failure: Option<FailureKind>) -> Vote {
        Vote {
            member: member.into(),
            observed_at_ms: at,
            failure,
            via: "confirm",
        }
    }

    fn live(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    const DOWN: Option<FailureKind> = Some(FailureKind::Timeout);

    #[test]
    fn table() {
        struct Case {
            name: &'static str,
            live: &'static [&'static str],
            votes: Vec<Vote>,
            confirmed: usize,
            needed: usize,
            reached: bool,
        }
        let cases = [
            Case {
                name: "alone: its own observation is the majority",
                live: &["a"],
                votes: vec![vote("a", 10, DOWN)],
                confirmed: 1,
                needed: 1,
                reached: true,
            },
            Case {
                name: "registry does not list the leader yet: it counts itself",
                live: &[],
                votes: vec![vote("a", 10, DOWN)],
                confirmed: 1,
                needed: 1,
                reached: true,
            },
            Case {
                name: "three members, only the leader saw it",
                live: &["a", "b", "c"],
                votes: vec![
                    vote("a", 10, DOWN),
                    vote("b", 10, None),
                    vote("c", 10, None),
                ],
                confirmed: 1,
                needed: 2,
                reached: false,
            },
            Case {
                name: "three members, leader and one follower",
                live: &["a", "b", "c"],
                votes: vec![vote("a", 10, DOWN), vote("b", 10, DOWN)],
                confirmed: 2,
                needed: 2,
                reached: true,
            },
            Case {
                name: "a member voting twice counts once",
                live: &["a", "b", "c"],
                votes: vec![vote("a", 10, DOWN), vote("a", 11, DOWN)],
                confirmed: 1,
                needed: 2,
                reached: false,
            },
            Case {
                name: "a vote from a non-member does not count",
                live: &["a", "b", "c"],
                votes: vec![vote("a", 10, DOWN), vote("x", 10, DOWN)],
                confirmed: 1,
                needed: 2,
                reached: false,
            },
            Case {
                name: "an observation older than the window does not count",
                live: &["a", "b", "c"],
                votes: vec![vote("a", 10, DOWN), vote("b", 4, DOWN)],
                confirmed: 1,
                needed: 2,
                reached: false,
            },
            Case {
                name: "a prober fault is not a confirmation",
                live: &["a", "b", "c"],
                votes: vec![
                    vote("a", 10, DOWN),
                    vote("b", 10, Some(FailureKind::Auth)),
                    vote("c", 10, Some(FailureKind::Local)),
                ],
                confirmed: 1,
                needed: 2,
                reached: false,
            },
            Case {
                name: "two members need both",
                live: &["a", "b"],
                votes: vec![vote("a", 10, DOWN)],
                confirmed: 1,
                needed: 2,
                reached: false,
            },
            Case {
                name: "refused counts like a timeout",
                live: &["a", "b", "c", "d", "e"],
                votes: vec![
                    vote("a", 10, DOWN),
                    vote("c", 10, Some(FailureKind::Refused)),
                    vote("e", 12, Some(FailureKind::Reset)),
                ],
                confirmed: 3,
                needed: 3,
                reached: true,
            },
        ];
        for c in cases {
            let t = tally(&live(c.live), "a", &c.votes, 5);
            assert_eq!(t.confirmed.len(), c.confirmed, "{}", c.name);
            assert_eq!(t.needed, c.needed, "{}", c.name);
            assert_eq!(t.reached(), c.reached, "{}", c.name);
        }
    }

    #[test]
    fn the_summary_names_the_counts() {
        let t = tally(&live(&["a", "b", "c"]), "a", &[vote("a", 10, DOWN)], 0);
        assert_eq!(t.summary(), "confirmed by 1 of 3 live members (2 needed)");
    }

    #[test]
    fn alone_needs_no_peers() {
        assert!(!needs_peers(&live(&["a"]), "a"));
        assert!(!needs_peers(&[], "a"));
        assert!(needs_peers(&live(&["a", "b"]), "a"));
    }

    fn failure() -> impl Strategy<Value = Option<FailureKind>> {
        prop_oneof![
            Just(None),
            Just(Some(FailureKind::Timeout)),
            Just(Some(FailureKind::Refused)),
            Just(Some(FailureKind::Auth)),
            Just(Some(FailureKind::Local)),
            Just(Some(FailureKind::Resolve)),
        ]
    }

    proptest! {
        /// Never a failover with fewer than a majority of the live members; each member
        /// counts once; only live members count.
        #[test]
        fn never_fewer_than_a_majority(
            n in 1usize..7,
            raw in proptest::collection::vec((0usize..9, 0i64..20, failure()), 0..20),
            window_start in 0i64..20,
        ) {
            let members: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
            let votes: Vec<Vote> = raw
                .iter()
                .map(|(who, at, f)| vote(&format!("m{who}"), *at, *f))
                .collect();
            let t = tally(&members, "m0", &votes, window_start);
            // Distinct live members with a valid vote, counted independently.
            let valid: BTreeSet<&str> = votes
                .iter()
                .filter(|v| members.contains(&v.member))
                .filter(|v| v.seen_down() && v.observed_at_ms >= window_start)
                .map(|v| v.member.as_str())
                .collect();
            prop_assert_eq!(t.confirmed.len(), valid.len());
            prop_assert_eq!(t.live.len(), n);
            if t.reached() {
                prop_assert!(2 * t.confirmed.len() > n);
            } else {
                prop_assert!(2 * t.confirmed.len() <= n);
            }
            // Duplicating every vote changes nothing.
            let doubled: Vec<Vote> = votes.iter().chain(votes.iter()).cloned().collect();
            prop_assert_eq!(tally(&members, "m0", &doubled, window_start), t);
        }
    }
}
