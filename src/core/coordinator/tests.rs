//! The coordinator failover rule by table, then property tests of its safety invariants.

use super::*;
use proptest::prelude::*;

const BOUND: u64 = 1024;

fn in_sync(lag: u64) -> Option<SyncSeen> {
    Some(SyncSeen {
        synchronous: true,
        replay_lag: Some(lag),
        why: "streaming, sync".into(),
    })
}

/// The coordinator lost, everything else in order: a failover.
fn lost() -> CoordinatorView {
    CoordinatorView {
        auto_failover: true,
        office: Office::Acting,
        primary: PrimarySeen::Lost,
        standby: StandbySeen::InRecovery { can_promote: true },
        last_sync: in_sync(0),
        max_lag: BOUND,
        others: OthersSee::NotAsked,
        braked: false,
        pending_intent: false,
        sync_source: SyncSource::Sql,
        promote_ready: PromoteReady::NotRequired,
        recorded: true,
    }
}

fn with(f: impl FnOnce(&mut CoordinatorView)) -> CoordinatorDecision {
    let mut v = lost();
    f(&mut v);
    decide(&v)
}

use CoordinatorDecision::{Complete, Failover, Healthy, Refuse, Resume, Standby};

/// A named change to the failover view and the decision it must lead to.
type Case = (
    &'static str,
    CoordinatorDecision,
    Box<dyn FnOnce(&mut CoordinatorView)>,
);

#[test]
fn table() {
    assert_eq!(decide(&lost()), Failover);
    assert_eq!(with(|v| v.others = OthersSee::AllLost), Failover);
    assert_eq!(with(|v| v.last_sync = in_sync(BOUND)), Failover);
    // Cloudberry: the FTS handler reports no replay lag; in sync with the key `1` fails over.
    assert_eq!(
        with(|v| {
            v.sync_source = SyncSource::FtsHandler;
            v.promote_ready = PromoteReady::Ready;
            v.last_sync = Some(SyncSeen {
                synchronous: true,
                replay_lag: None,
                why: "is_in_sync = 1, is_syncrep_enabled = 1".into(),
            });
        }),
        Failover
    );
    // Over SQL an unreported lag still refuses.
    assert_eq!(
        with(|v| v.last_sync = Some(SyncSeen {
            synchronous: true,
            replay_lag: None,
            why: String::new(),
        })),
        Refuse(Refusal::LagTooHigh)
    );
    let cases: Vec<Case> = vec![
        (
            "answers",
            Healthy,
            Box::new(|v| v.primary = PrimarySeen::Up { writable: true }),
        ),
        (
            "answers in recovery",
            Healthy,
            Box::new(|v| v.primary = PrimarySeen::Up { writable: false }),
        ),
        (
            "our fault",
            Refuse(Refusal::ProberFault),
            Box::new(|v| v.primary = PrimarySeen::ProberFault),
        ),
        (
            "switched off",
            Refuse(Refusal::AutoFailoverOff),
            Box::new(|v| v.auto_failover = false),
        ),
        (
            "follower",
            Standby,
            Box::new(|v| v.office = Office::NotLeader),
        ),
        (
            "paused",
            Refuse(Refusal::Paused),
            Box::new(|v| v.office = Office::Paused),
        ),
        (
            "past act-by",
            Refuse(Refusal::PastActBy),
            Box::new(|v| v.office = Office::PastActBy),
        ),
        (
            "braked",
            Refuse(Refusal::Braked),
            Box::new(|v| v.braked = true),
        ),
        (
            "no acting server recorded in etcd",
            Refuse(Refusal::NotRecorded),
            Box::new(|v| v.recorded = false),
        ),
        (
            "never seen",
            Refuse(Refusal::NeverSeenInSync),
            Box::new(|v| v.last_sync = None),
        ),
        (
            "async",
            Refuse(Refusal::NotInSync),
            Box::new(|v| {
                v.last_sync = Some(SyncSeen {
                    synchronous: false,
                    replay_lag: Some(0),
                    why: "async".into(),
                })
            }),
        ),
        (
            "lagging",
            Refuse(Refusal::LagTooHigh),
            Box::new(|v| v.last_sync = in_sync(BOUND + 1)),
        ),
        (
            "lag unknown",
            Refuse(Refusal::LagTooHigh),
            Box::new(|v| {
                v.last_sync = Some(SyncSeen {
                    synchronous: true,
                    replay_lag: None,
                    why: "no lsn".into(),
                })
            }),
        ),
        (
            "cloudberry, promote-ready key not 1",
            Refuse(Refusal::PromoteNotReady),
            Box::new(|v| v.promote_ready = PromoteReady::NotReady),
        ),
        (
            "cloudberry, lag not reported but over the bound when it is",
            Refuse(Refusal::LagTooHigh),
            Box::new(|v| {
                v.sync_source = SyncSource::FtsHandler;
                v.last_sync = in_sync(BOUND + 1);
            }),
        ),
        (
            "cloudberry, not in sync by the FTS reply",
            Refuse(Refusal::NotInSync),
            Box::new(|v| {
                v.sync_source = SyncSource::FtsHandler;
                v.promote_ready = PromoteReady::Ready;
                v.last_sync = Some(SyncSeen {
                    synchronous: false,
                    replay_lag: None,
                    why: "is_in_sync = 0".into(),
                })
            }),
        ),
        (
            "cloudberry, ready, but auto failover off (gpfts -D)",
            Refuse(Refusal::AutoFailoverOff),
            Box::new(|v| {
                v.sync_source = SyncSource::FtsHandler;
                v.promote_ready = PromoteReady::Ready;
                v.auto_failover = false;
            }),
        ),
        (
            "others reach it",
            Refuse(Refusal::OthersReachIt),
            Box::new(|v| v.others = OthersSee::SomeReach),
        ),
        (
            "others asked, not every one confirmed",
            Refuse(Refusal::NotConfirmed),
            Box::new(|v| v.others = OthersSee::Unconfirmed),
        ),
        (
            "standby gone",
            Refuse(Refusal::StandbyUnreachable),
            Box::new(|v| v.standby = StandbySeen::Unreachable),
        ),
        (
            "standby promoted by someone",
            Refuse(Refusal::StandbyAlreadyWritable),
            Box::new(|v| v.standby = StandbySeen::Writable),
        ),
        (
            "no way to promote",
            Refuse(Refusal::CannotPromote),
            Box::new(|v| v.standby = StandbySeen::InRecovery { can_promote: false }),
        ),
    ];
    for (name, want, change) in cases {
        let mut v = lost();
        change(&mut v);
        assert_eq!(decide(&v), want, "{name}");
    }
}

#[test]
fn a_pending_intent_is_finished_not_restarted() {
    let pending = |f: &dyn Fn(&mut CoordinatorView)| {
        let mut v = lost();
        v.pending_intent = true;
        // The sync rule was checked when the intent was recorded.
        v.last_sync = None;
        v.braked = true;
        f(&mut v);
        decide(&v)
    };
    assert_eq!(pending(&|_| {}), Resume);
    assert_eq!(pending(&|v| v.standby = StandbySeen::Writable), Complete);
    assert_eq!(
        pending(&|v| v.primary = PrimarySeen::Up { writable: true }),
        Refuse(Refusal::OldCoordinatorWritable)
    );
    // The old one answering read-only (fenced) does not stop the resume.
    assert_eq!(
        pending(&|v| v.primary = PrimarySeen::Up { writable: false }),
        Resume
    );
    assert_eq!(
        pending(&|v| v.standby = StandbySeen::Unreachable),
        Refuse(Refusal::StandbyUnreachable)
    );
    assert_eq!(pending(&|v| v.office = Office::NotLeader), Standby);
    assert_eq!(
        pending(&|v| v.auto_failover = false),
        Refuse(Refusal::AutoFailoverOff)
    );
    assert_eq!(
        pending(&|v| v.office = Office::Paused),
        Refuse(Refusal::Paused)
    );
    // Cloudberry: a PROMOTE the standby would ignore is not resent; a completed promotion
    // is recorded whatever the key says (the standby consumed it).
    assert_eq!(
        pending(&|v| v.promote_ready = PromoteReady::NotReady),
        Refuse(Refusal::PromoteNotReady)
    );
    assert_eq!(
        pending(&|v| {
            v.promote_ready = PromoteReady::NotReady;
            v.standby = StandbySeen::Writable;
        }),
        Complete
    );
}

#[test]
fn steps_in_order() {
    let run = |decision, fence, fail_at: Option<Step>| {
        let mut step = first_step(decision, fence).unwrap();
        let mut seen = vec![step];
        let resuming = decision != CoordinatorDecision::Failover;
        while !matches!(step, Step::Done | Step::Stopped(_)) {
            step = advance(step, Some(step) != fail_at, true, resuming);
            seen.push(step);
        }
        seen
    };
    use Step::*;
    assert_eq!(
        run(Failover, true, None),
        [Fence, RecordIntent, Promote, Verify, RecordOutcome, Done]
    );
    assert_eq!(
        run(Failover, false, None),
        [RecordIntent, Promote, Verify, RecordOutcome, Done]
    );
    assert_eq!(
        run(Failover, true, Some(Fence)),
        [Fence, Stopped(Stop::FenceFailed)]
    );
    assert_eq!(
        run(Resume, true, None),
        [Fence, Promote, Verify, RecordOutcome, Done]
    );
    assert_eq!(run(Complete, true, None), [Verify, RecordOutcome, Done]);
    assert_eq!(
        advance(Fence, true, false, false),
        Stopped(Stop::AuthorityLost)
    );
    assert_eq!(first_step(Healthy, true), None);
    assert_eq!(first_step(Refuse(Refusal::Braked), true), None);
}

#[test]
fn exactly_one_writable_server_and_one_vip_holder() {
    assert!(pair_alarms(Some(1), Some(1), true).is_empty());
    assert!(pair_alarms(Some(1), Some(0), false).is_empty());
    assert!(pair_alarms(None, None, true).is_empty());
    assert_eq!(
        pair_alarms(Some(2), Some(1), true),
        [PairAlarm::DualWritable]
    );
    assert_eq!(
        pair_alarms(Some(0), Some(1), true),
        [PairAlarm::NoneWritable]
    );
    assert_eq!(
        pair_alarms(Some(1), Some(2), false),
        [PairAlarm::VipHolders(2)]
    );
    assert_eq!(
        pair_alarms(Some(1), Some(0), true),
        [PairAlarm::VipHolders(0)]
    );
    assert_eq!(
        pair_alarms(Some(2), Some(2), true),
        [PairAlarm::DualWritable, PairAlarm::VipHolders(2)]
    );
}

fn arb_view() -> impl Strategy<Value = CoordinatorView> {
    let primary = prop_oneof![
        any::<bool>().prop_map(|writable| PrimarySeen::Up { writable }),
        Just(PrimarySeen::Lost),
        Just(PrimarySeen::ProberFault),
    ];
    let standby = prop_oneof![
        any::<bool>().prop_map(|can_promote| StandbySeen::InRecovery { can_promote }),
        Just(StandbySeen::Writable),
        Just(StandbySeen::Unreachable),
    ];
    let office = prop_oneof![
        Just(Office::Acting),
        Just(Office::NotLeader),
        Just(Office::Paused),
        Just(Office::PastActBy),
    ];
    let others = prop_oneof![
        Just(OthersSee::NotAsked),
        Just(OthersSee::AllLost),
        Just(OthersSee::SomeReach),
        Just(OthersSee::Unconfirmed),
    ];
    let sync = proptest::option::of(
        (any::<bool>(), proptest::option::of(0u64..4 * BOUND)).prop_map(
            |(synchronous, replay_lag)| SyncSeen {
                synchronous,
                replay_lag,
                why: String::new(),
            },
        ),
    );
    let source = prop_oneof![Just(SyncSource::Sql), Just(SyncSource::FtsHandler)];
    let ready = prop_oneof![
        Just(PromoteReady::NotRequired),
        Just(PromoteReady::Ready),
        Just(PromoteReady::NotReady),
    ];
    (
        (any::<bool>(), office, primary, standby, sync),
        (
            others,
            any::<bool>(),
            any::<bool>(),
            source,
            ready,
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                (auto_failover, office, primary, standby, last_sync),
                (others, braked, pending_intent, sync_source, promote_ready, recorded),
            )| {
                CoordinatorView {
                    auto_failover,
                    office,
                    primary,
                    standby,
                    last_sync,
                    max_lag: BOUND,
                    others,
                    braked,
                    pending_intent,
                    sync_source,
                    promote_ready,
                    // An intent lives in the recorded state.
                    recorded: recorded || pending_intent,
                }
            },
        )
}

fn promotes(d: CoordinatorDecision) -> bool {
    matches!(d, Failover | Resume)
}

proptest! {
    /// A promotion (new or resumed) happens only switched on, acting, with a standby in
    /// recovery that can be promoted, and never while the old coordinator answers writable.
    #[test]
    fn never_promote_without_the_guards(v in arb_view()) {
        let d = decide(&v);
        if promotes(d) || d == Complete {
            prop_assert!(v.auto_failover);
            prop_assert_eq!(v.office, Office::Acting);
        }
        if promotes(d) {
            prop_assert_eq!(v.standby, StandbySeen::InRecovery { can_promote: true });
            prop_assert_ne!(v.primary, PrimarySeen::Up { writable: true });
        }
    }

    /// A new failover needs the coordinator lost by our retries, no other observer reaching
    /// it, no brake, and the standby in sync within the lag bound at the last probe.
    #[test]
    fn a_new_failover_needs_a_standby_seen_in_sync(v in arb_view()) {
        if decide(&v) == Failover {
            prop_assert!(!v.pending_intent);
            prop_assert!(v.recorded, "no failover from the configured addresses alone");
            prop_assert_eq!(v.primary, PrimarySeen::Lost);
            prop_assert!(matches!(v.others, OthersSee::NotAsked | OthersSee::AllLost));
            prop_assert!(!v.braked);
            let sync = v.last_sync.as_ref().expect("seen in sync");
            prop_assert!(sync.synchronous);
            match v.sync_source {
                SyncSource::Sql => prop_assert!(sync.replay_lag.is_some_and(|l| l <= v.max_lag)),
                // The FTS reply has no lag; one that is known is still bounded.
                SyncSource::FtsHandler => prop_assert!(sync.replay_lag.is_none_or(|l| l <= v.max_lag)),
            }
        }
    }

    /// Cloudberry: no promotion is started or resumed unless the promote-ready key reads `1`.
    #[test]
    fn no_promotion_without_the_promote_ready_key(v in arb_view()) {
        if promotes(decide(&v)) {
            prop_assert_ne!(v.promote_ready, PromoteReady::NotReady);
        }
    }

    /// With an intent pending no second failover starts; without one, nothing resumes.
    #[test]
    fn intents_are_resumed_never_duplicated(v in arb_view()) {
        let d = decide(&v);
        if v.pending_intent {
            prop_assert_ne!(d, Failover);
        } else {
            prop_assert!(d != Resume && d != Complete);
        }
    }

    /// Whatever the steps report, the promotion never follows a failed fence, an unrecorded
    /// intent or lost authority, and nothing follows a stop.
    #[test]
    fn promote_only_after_fence_and_intent(
        fence in any::<bool>(),
        resuming in any::<bool>(),
        results in proptest::collection::vec((any::<bool>(), any::<bool>()), 1..8),
    ) {
        let decision = if resuming { Resume } else { Failover };
        let mut step = first_step(decision, fence).unwrap();
        let mut fenced = !fence;
        let mut intent = resuming;
        for (ok, authority) in results {
            let next = advance(step, ok, authority, resuming);
            if next == Step::Promote {
                prop_assert!(fenced || (step == Step::Fence && ok));
                prop_assert!(intent || (step == Step::RecordIntent && ok));
                prop_assert!(authority);
            }
            if let Step::Stopped(_) = step {
                prop_assert_eq!(next, step);
            }
            if step == Step::Fence && ok { fenced = true; }
            if step == Step::RecordIntent && ok { intent = true; }
            step = next;
        }
    }
}

fn sync(synchronous: bool, why: &str) -> SyncSeen {
    SyncSeen {
        synchronous,
        replay_lag: Some(0),
        why: why.into(),
    }
}

#[test]
fn a_detached_standby_keeps_its_in_sync_observation_only_while_commits_wait() {
    let was = sync(true, "streaming, sync");
    let gone = sync(false, "no standby connected to the coordinator");
    // Commits wait for a standby: the standby still has every acknowledged commit.
    let kept = remember_sync(Some(&was), &gone, true);
    assert!(kept.synchronous);
    assert!(kept.why.contains("commits wait"), "{}", kept.why);
    // Kept again next round: the explanation does not grow.
    assert_eq!(remember_sync(Some(&kept), &gone, true).why, kept.why);
    // Commits no longer wait (synchronous replication switched off): taken as seen.
    assert!(!remember_sync(Some(&was), &gone, false).synchronous);
    // Never seen in sync: nothing to keep.
    assert!(!remember_sync(None, &gone, true).synchronous);
    assert!(!remember_sync(Some(&gone), &gone, true).synchronous);
    // A fresh observation always wins otherwise.
    let back = sync(true, "streaming again");
    assert_eq!(remember_sync(Some(&gone), &back, false), back);
}

proptest! {
    /// Remembering never makes a standby in sync that was not seen in sync: either now, or
    /// before with every commit since waiting for a standby.
    #[test]
    fn remembering_never_invents_an_in_sync_standby(
        prev in proptest::option::of(any::<bool>()),
        now in any::<bool>(),
        commits_wait in any::<bool>(),
    ) {
        let prev = prev.map(|p| sync(p, "before"));
        let r = remember_sync(prev.as_ref(), &sync(now, "now"), commits_wait);
        if r.synchronous {
            prop_assert!(now || (commits_wait && prev.is_some_and(|p| p.synchronous)));
        }
    }
}
