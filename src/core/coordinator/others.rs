//! The other observers' word on a lost coordinator, without I/O: whether the leader asks them
//! at all, and what their answers add up to (`OthersSee`).
//!
//! Without a fence command nothing stops an old coordinator that only this instance lost: it
//! may still serve its clients, and promoting the standby would make two writable
//! coordinators. So before such a failover the leader asks every other live member (the
//! lease-bound members registry) for its own fresh observation of the same server, and:
//!
//! * any live member that **reached** it within the window refuses the failover
//!   (`others_reach_it`): the loss is the leader's, not the cluster's;
//! * every other live member must have **lost** it within the window; one that did not
//!   answer, answered "unknown", saw only a failure on its own side (a prober fault) or an
//!   observation older than the window leaves the loss unconfirmed (`not_confirmed`);
//! * with one live member (the leader alone), the leader's retries are the confirmation;
//! * with a fence command the peers are not asked: the fence stops the old coordinator before
//!   anything is promoted (and a failing fence stops the failover).
//!
//! Unlike the segments' majority rule, one member that reaches the coordinator is enough to
//! refuse: a majority protects against one prober's false alarm, but without a fence a
//! single client path that still reaches the old coordinator is a path to a second writable
//! one. Members that are not live (not in the registry) never count either way.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::OthersSee;

/// What one member said about the coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerSeen {
    /// A session on the coordinator succeeded (it answered, writable or not).
    Reached,
    /// Every attempt of its round failed on the server's or the network's side.
    Lost,
    /// Its attempts failed on its own side (password, resolver, network stack): it knows
    /// nothing about the coordinator.
    ProberFault,
    /// No observation of that server within the window, and none came in time.
    Unknown,
    /// The call failed (unreachable, refused, deadline).
    NoAnswer,
}

/// One member's answer, as the leader counts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerView {
    pub member: String,
    pub seen: PeerSeen,
    /// When its observation ended, Unix milliseconds on the leader's clock (0: unknown).
    pub observed_at_ms: i64,
}

/// What the answers add up to, with the members behind it (for the evidence).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OthersTally {
    pub others: OthersSee,
    /// The live members other than the leader, sorted.
    pub asked: Vec<String>,
    /// Those that reached the coordinator within the window.
    pub reached: Vec<String>,
    /// Those that lost it within the window.
    pub lost: Vec<String>,
    /// Those that confirmed neither.
    pub unconfirmed: Vec<String>,
}

/// Whether the leader asks the other members before a failover: only without a fence command,
/// and only when someone else is live (`live` None: the registry could not be read, so
/// nobody knows whether someone else is live — ask, and let [`count`] refuse).
pub fn ask_peers(fence_command: bool, live: Option<&[String]>, me: &str) -> bool {
    !fence_command && live.is_none_or(|l| l.iter().any(|m| m != me))
}

/// Counts the answers of the live members other than `me`. `live` None: the registry could
/// not be read (unconfirmed whatever the answers). An observation counts when it ended at or
/// after `window_start_ms`; a member that answered several times counts by its most telling
/// answer (a reach wins over a loss).
pub fn count(
    live: Option<&[String]>,
    me: &str,
    views: &[PeerView],
    window_start_ms: i64,
) -> OthersTally {
    let Some(live) = live else {
        return OthersTally {
            others: OthersSee::Unconfirmed,
            asked: Vec::new(),
            reached: Vec::new(),
            lost: Vec::new(),
            unconfirmed: Vec::new(),
        };
    };
    let asked: BTreeSet<&str> = live
        .iter()
        .map(String::as_str)
        .filter(|m| *m != me)
        .collect();
    let fresh = |member: &str, seen: PeerSeen| {
        views.iter().any(|v| {
            v.member == member
                && v.seen == seen
                && v.observed_at_ms > 0
                && v.observed_at_ms >= window_start_ms
        })
    };
    let (mut reached, mut lost, mut unconfirmed) = (Vec::new(), Vec::new(), Vec::new());
    for m in &asked {
        if fresh(m, PeerSeen::Reached) {
            reached.push(m.to_string());
        } else if fresh(m, PeerSeen::Lost) {
            lost.push(m.to_string());
        } else {
            unconfirmed.push(m.to_string());
        }
    }
    let others = if asked.is_empty() {
        OthersSee::NotAsked
    } else if !reached.is_empty() {
        OthersSee::SomeReach
    } else if !unconfirmed.is_empty() {
        OthersSee::Unconfirmed
    } else {
        OthersSee::AllLost
    };
    OthersTally {
        others,
        asked: asked.into_iter().map(str::to_owned).collect(),
        reached,
        lost,
        unconfirmed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn view(member: &str, seen: PeerSeen, at: i64) -> PeerView {
        PeerView {
            member: member.into(),
            seen,
            observed_at_ms: at,
        }
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn whether_the_peers_are_asked() {
        let three = names(&["a", "b", "c"]);
        let alone = names(&["a"]);
        // (fence command, live, asked)
        let cases: [(bool, Option<&[String]>, bool); 6] = [
            (false, Some(&three), true),
            (true, Some(&three), false),
            (false, Some(&alone), false),
            (false, Some(&[]), false),
            (false, None, true),
            (true, None, false),
        ];
        for (fence, live, asked) in cases {
            assert_eq!(ask_peers(fence, live, "a"), asked, "{fence} {live:?}");
        }
    }

    #[test]
    fn table() {
        use OthersSee::*;
        use PeerSeen::*;
        let live = names(&["a", "b", "c"]);
        // window starts at 100; "a" is the leader.
        // (name, live members, answers, verdict)
        type Case = (&'static str, Option<Vec<String>>, Vec<PeerView>, OthersSee);
        let cases: Vec<Case> = vec![
            (
                "both others lost it",
                Some(live.clone()),
                vec![view("b", Lost, 150), view("c", Lost, 120)],
                AllLost,
            ),
            (
                "one reaches it",
                Some(live.clone()),
                vec![view("b", Lost, 150), view("c", Reached, 120)],
                SomeReach,
            ),
            (
                "one reaches it, the other did not answer",
                Some(live.clone()),
                vec![view("b", NoAnswer, 0), view("c", Reached, 120)],
                SomeReach,
            ),
            (
                "one did not answer",
                Some(live.clone()),
                vec![view("b", Lost, 150), view("c", NoAnswer, 0)],
                Unconfirmed,
            ),
            (
                "one knows nothing",
                Some(live.clone()),
                vec![view("b", Lost, 150), view("c", Unknown, 0)],
                Unconfirmed,
            ),
            (
                "a prober fault is no loss",
                Some(live.clone()),
                vec![view("b", Lost, 150), view("c", ProberFault, 150)],
                Unconfirmed,
            ),
            (
                "a loss older than the window does not count",
                Some(live.clone()),
                vec![view("b", Lost, 150), view("c", Lost, 99)],
                Unconfirmed,
            ),
            (
                "a reach older than the window does not refuse, nor confirm",
                Some(live.clone()),
                vec![view("b", Lost, 150), view("c", Reached, 50)],
                Unconfirmed,
            ),
            (
                "a member that is not live does not count",
                Some(names(&["a", "b"])),
                vec![view("b", Lost, 150), view("c", Reached, 150)],
                AllLost,
            ),
            (
                "the leader's own answer is not a peer's",
                Some(live.clone()),
                vec![
                    view("a", Reached, 150),
                    view("b", Lost, 150),
                    view("c", Lost, 150),
                ],
                AllLost,
            ),
            ("alone", Some(names(&["a"])), vec![], NotAsked),
            (
                "registry not listing the leader yet, nobody else",
                Some(vec![]),
                vec![],
                NotAsked,
            ),
            (
                "registry unreadable",
                None,
                vec![view("b", Lost, 150), view("c", Lost, 150)],
                Unconfirmed,
            ),
            (
                "a reach wins over the same member's loss",
                Some(live.clone()),
                vec![
                    view("b", Lost, 150),
                    view("b", Reached, 150),
                    view("c", Lost, 150),
                ],
                SomeReach,
            ),
        ];
        for (name, live, views, want) in cases {
            let t = count(live.as_deref(), "a", &views, 100);
            assert_eq!(t.others, want, "{name}: {t:?}");
        }
    }

    fn seen() -> impl Strategy<Value = PeerSeen> {
        prop_oneof![
            Just(PeerSeen::Reached),
            Just(PeerSeen::Lost),
            Just(PeerSeen::ProberFault),
            Just(PeerSeen::Unknown),
            Just(PeerSeen::NoAnswer),
        ]
    }

    const MEMBERS: [&str; 5] = ["a", "b", "c", "d", "e"];

    fn views() -> impl Strategy<Value = Vec<PeerView>> {
        proptest::collection::vec(
            (0..MEMBERS.len(), seen(), 0i64..200).prop_map(|(i, seen, at)| PeerView {
                member: MEMBERS[i].into(),
                seen,
                observed_at_ms: at,
            }),
            0..10,
        )
    }

    fn live() -> impl Strategy<Value = Vec<String>> {
        proptest::sample::subsequence(MEMBERS.to_vec(), 0..=MEMBERS.len())
            .prop_map(|v| v.into_iter().map(str::to_owned).collect())
    }

    proptest! {
        /// A failover is never confirmed while a live member reached the coordinator within
        /// the window, and "all lost" means exactly that every other live member lost it.
        #[test]
        fn all_lost_only_when_every_other_live_member_lost_it(
            live in live(),
            views in views(),
            start in 0i64..200,
        ) {
            let t = count(Some(&live), "a", &views, start);
            let fresh = |m: &str, s: PeerSeen| views.iter().any(|v| {
                v.member == m && v.seen == s && v.observed_at_ms > 0 && v.observed_at_ms >= start
            });
            let others: Vec<&String> = live.iter().filter(|m| *m != "a").collect();
            if others.iter().any(|m| fresh(m, PeerSeen::Reached)) {
                prop_assert_eq!(t.others, OthersSee::SomeReach);
            }
            if t.others == OthersSee::AllLost {
                prop_assert!(!others.is_empty());
                for m in &others {
                    prop_assert!(fresh(m, PeerSeen::Lost) && !fresh(m, PeerSeen::Reached));
                }
            }
            prop_assert_eq!(t.others == OthersSee::NotAsked, others.is_empty());
            // Every asked member is in exactly one list.
            prop_assert_eq!(t.reached.len() + t.lost.len() + t.unconfirmed.len(), t.asked.len());
        }

        /// Answers from members that are not live change nothing.
        #[test]
        fn answers_from_members_not_live_do_not_count(
            live in live(),
            views in views(),
            start in 0i64..200,
        ) {
            let kept: Vec<PeerView> =
                views.iter().filter(|v| live.contains(&v.member)).cloned().collect();
            prop_assert_eq!(
                count(Some(&live), "a", &views, start),
                count(Some(&live), "a", &kept, start)
            );
        }

        /// Without the registry nothing is confirmed.
        #[test]
        fn an_unreadable_registry_never_confirms(views in views(), start in 0i64..200) {
            prop_assert_eq!(count(None, "a", &views, start).others, OthersSee::Unconfirmed);
        }
    }
}
