//! The decision table row by row, then property tests of the safety invariants.

use super::*;
use crate::core::outcome::reply_wants_retry;
use crate::wire::failure::FailureKind;
use proptest::prelude::*;

fn row(dbid: i16, content: i16, role: Role, pref: Role, st: SegmentState) -> Segment {
    Segment {
        dbid,
        content,
        role,
        preferred_role: pref,
        mode: st.mode,
        status: st.status,
        port: 6000 + dbid as i32,
        hostname: format!("sdw{dbid}"),
        address: "127.0.0.1".into(),
        datadir: format!("/data/{dbid}"),
    }
}

fn st(role: Role, status: Status, mode: Mode) -> SegmentState {
    SegmentState { role, status, mode }
}

use Mode::{InSync as S, NotInSync as N};
use Role::{Mirror as M, Primary as P};
use Status::{Down as D, Up as U};

/// Content 0: primary dbid 2, mirror dbid 5, in the given states.
fn pair(p: (Status, Mode), m: (Status, Mode)) -> Pair {
    Pair {
        primary: row(2, 0, P, P, st(P, p.0, p.1)),
        mirror: row(5, 0, M, M, st(M, m.0, m.1)),
    }
}

fn reply(mirror_up: u8, in_sync: u8, syncrep: u8, role_mirror: u8, retry: u8) -> ProbeOutcome {
    ProbeOutcome::Replied {
        reply: ProbeReply {
            is_mirror_up: mirror_up != 0,
            is_in_sync: in_sync != 0,
            is_syncrep_enabled: syncrep != 0,
            is_role_mirror: role_mirror != 0,
            request_retry: retry != 0,
        },
    }
}

fn failed(restart: RestartState) -> ProbeOutcome {
    ProbeOutcome::Failed {
        kind: FailureKind::Refused,
        restart,
    }
}

fn changes(d: &Decision) -> Vec<(i16, SegmentState)> {
    d.updates.iter().map(|u| (u.dbid, u.to)).collect()
}

fn msg(d: &Decision) -> Option<(MessageType, i16)> {
    d.message.as_ref().map(|m| (m.kind, m.target.dbid))
}

struct Case {
    name: &'static str,
    pair: Pair,
    outcome: ProbeOutcome,
    rule: Rule,
    changes: Vec<(i16, SegmentState)>,
    message: Option<(MessageType, i16)>,
}

fn table() -> Vec<Case> {
    let in_sync = pair((U, S), (U, S));
    let mirror_down = pair((U, N), (D, N));
    vec![
        Case {
            name: "row 1: retry requested, retries exhausted, mirror up in catalog",
            pair: in_sync.clone(),
            outcome: reply(0, 0, 1, 0, 1),
            rule: Rule::RetryRequested,
            changes: vec![],
            message: None,
        },
        Case {
            name: "row 1b: retry requested, mirror already down",
            pair: mirror_down.clone(),
            outcome: reply(0, 0, 1, 0, 1),
            rule: Rule::RetryRequested,
            changes: vec![],
            message: None,
        },
        Case {
            name: "row 1c: retry requested with syncrep off: flag ignored, row 4 marks mirror down",
            pair: in_sync.clone(),
            outcome: reply(0, 0, 0, 0, 1),
            rule: Rule::Resync,
            changes: vec![(2, st(P, U, N)), (5, st(M, D, N))],
            message: None,
        },
        Case {
            name: "row 2: mirror lost while in sync",
            pair: in_sync.clone(),
            outcome: reply(0, 0, 1, 0, 0),
            rule: Rule::MirrorDown,
            changes: vec![(2, st(P, U, N)), (5, st(M, D, N))],
            message: Some((MessageType::SyncrepOff, 2)),
        },
        Case {
            name: "row 2: mirror up in catalog but pair not in sync",
            pair: pair((U, N), (U, N)),
            outcome: reply(0, 0, 1, 0, 0),
            rule: Rule::MirrorDown,
            changes: vec![(5, st(M, D, N))],
            message: Some((MessageType::SyncrepOff, 2)),
        },
        Case {
            name: "row 2 / row 8 retry: catalog already down, SYNCREP_OFF sent again",
            pair: mirror_down.clone(),
            outcome: reply(0, 0, 1, 0, 0),
            rule: Rule::MirrorDown,
            changes: vec![],
            message: Some((MessageType::SyncrepOff, 2)),
        },
        Case {
            name: "row 3: catalog primary still a mirror: PROMOTE again",
            pair: Pair {
                primary: row(5, 0, P, M, st(P, U, N)),
                mirror: row(2, 0, M, P, st(M, D, N)),
            },
            outcome: reply(0, 0, 0, 1, 0),
            rule: Rule::RePromote,
            changes: vec![],
            message: Some((MessageType::Promote, 5)),
        },
        Case {
            name: "row 4: healthy in-sync pair",
            pair: in_sync.clone(),
            outcome: reply(1, 1, 1, 0, 0),
            rule: Rule::Healthy,
            changes: vec![],
            message: None,
        },
        Case {
            name: "row 4: mirror back and in sync",
            pair: mirror_down.clone(),
            outcome: reply(1, 1, 1, 0, 0),
            rule: Rule::Resync,
            changes: vec![(2, st(P, U, S)), (5, st(M, U, S))],
            message: None,
        },
        Case {
            name: "row 4: mirror back but still catching up",
            pair: mirror_down.clone(),
            outcome: reply(1, 0, 1, 0, 0),
            rule: Rule::Resync,
            changes: vec![(5, st(M, U, N))],
            message: None,
        },
        Case {
            name: "row 4: mirror up but fell out of sync",
            pair: in_sync.clone(),
            outcome: reply(1, 0, 1, 0, 0),
            rule: Rule::Resync,
            changes: vec![(2, st(P, U, N)), (5, st(M, U, N))],
            message: None,
        },
        Case {
            name: "row 4: mirror down with syncrep already off",
            pair: pair((U, N), (U, N)),
            outcome: reply(0, 0, 0, 0, 0),
            rule: Rule::Resync,
            changes: vec![(5, st(M, D, N))],
            message: None,
        },
        Case {
            name: "row 4: after failover, new primary without mirror, syncrep off, in grace",
            pair: Pair {
                primary: row(5, 0, P, M, st(P, U, N)),
                mirror: row(2, 0, M, P, st(M, D, N)),
            },
            outcome: reply(0, 0, 0, 0, 1),
            rule: Rule::Healthy,
            changes: vec![],
            message: None,
        },
        Case {
            name: "row 4: contradictory in_sync with mirror down is read as not in sync",
            pair: in_sync.clone(),
            outcome: reply(0, 1, 0, 0, 0),
            rule: Rule::Resync,
            changes: vec![(2, st(P, U, N)), (5, st(M, D, N))],
            message: None,
        },
        Case {
            name: "row 5: recovery making progress",
            pair: in_sync.clone(),
            outcome: failed(RestartState::RecoveryMakingProgress { lsn: 0x100 }),
            rule: Rule::Restarting,
            changes: vec![],
            message: None,
        },
        Case {
            name: "row 5: resetting",
            pair: in_sync.clone(),
            outcome: failed(RestartState::Resetting),
            rule: Rule::Restarting,
            changes: vec![],
            message: None,
        },
        Case {
            name: "row 5: a driver's restart window (57P03 within postgres.restart_grace)",
            pair: in_sync.clone(),
            outcome: failed(RestartState::StartingUp { elapsed_ms: 1500 }),
            rule: Rule::Restarting,
            changes: vec![],
            message: None,
        },
        Case {
            name: "row 6: primary lost, mirror in sync: failover",
            pair: in_sync.clone(),
            outcome: failed(RestartState::NotRestarting),
            rule: Rule::Failover,
            changes: vec![(2, st(M, D, N)), (5, st(P, U, N))],
            message: Some((MessageType::Promote, 5)),
        },
        Case {
            name: "row 6: recovery not making progress counts as dead",
            pair: in_sync.clone(),
            outcome: failed(RestartState::RecoveryNotMakingProgress { lsn: 0x100 }),
            rule: Rule::Failover,
            changes: vec![(2, st(M, D, N)), (5, st(P, U, N))],
            message: Some((MessageType::Promote, 5)),
        },
        Case {
            name: "row 7: primary lost, mirror not in sync: double fault",
            pair: mirror_down.clone(),
            outcome: failed(RestartState::NotRestarting),
            rule: Rule::DoubleFault,
            changes: vec![],
            message: None,
        },
        Case {
            name: "row 7: primary lost, mirror up but not in sync",
            pair: pair((U, N), (U, N)),
            outcome: failed(RestartState::NotRestarting),
            rule: Rule::DoubleFault,
            changes: vec![],
            message: None,
        },
        Case {
            name: "row 6f follow-up: new primary unreachable after failover is a double fault",
            pair: Pair {
                primary: row(5, 0, P, M, st(P, U, N)),
                mirror: row(2, 0, M, P, st(M, D, N)),
            },
            outcome: failed(RestartState::NotRestarting),
            rule: Rule::DoubleFault,
            changes: vec![],
            message: None,
        },
        Case {
            name: "mismatched modes (primary s, mirror n), pair in sync: mirror row repaired to s",
            pair: pair((U, S), (U, N)),
            outcome: reply(1, 1, 1, 0, 0),
            rule: Rule::Resync,
            changes: vec![(5, st(M, U, S))],
            message: None,
        },
        Case {
            name: "mismatched modes (primary s, mirror n), pair not in sync: primary row to n",
            pair: pair((U, S), (U, N)),
            outcome: reply(1, 0, 1, 0, 0),
            rule: Rule::Resync,
            changes: vec![(2, st(P, U, N))],
            message: None,
        },
        Case {
            name: "mismatched modes (primary n, mirror s), pair in sync: primary row to s",
            pair: pair((U, N), (U, S)),
            outcome: reply(1, 1, 1, 0, 0),
            rule: Rule::Resync,
            changes: vec![(2, st(P, U, S))],
            message: None,
        },
        Case {
            name: "mismatched modes, primary lost: never promoted (double fault)",
            pair: pair((U, S), (U, N)),
            outcome: failed(RestartState::NotRestarting),
            rule: Rule::DoubleFault,
            changes: vec![],
            message: None,
        },
        Case {
            name: "inconsistent catalog (mirror s but down) never promotes",
            pair: pair((U, S), (D, S)),
            outcome: failed(RestartState::NotRestarting),
            rule: Rule::DoubleFault,
            changes: vec![],
            message: None,
        },
    ]
}

/// Prober faults (the probe failed on this side) change nothing, whatever the pair's shape
/// and however restarting it looked; segment-side failures of an in-sync pair fail over.
#[test]
fn prober_faults_never_change_a_pair() {
    use FailureKind::*;
    let the_pair = pair((U, S), (U, S));
    for kind in [Auth, Permission, Resolve, Local] {
        for restart in [RestartState::NotRestarting, RestartState::Resetting] {
            let d = decide_pair(
                &the_pair,
                &ProbeOutcome::Failed { kind, restart },
                &FailoverGuard::Clear,
            );
            assert_eq!(d.rule, Rule::ProberFault, "{kind}");
            assert!(d.is_noop(), "{d:?}");
            assert_eq!(d.refusal, Some(Refusal::ProberFault { kind }));
        }
    }
    for kind in [
        Refused,
        Timeout,
        Reset,
        StartupError,
        ErrorReply,
        Protocol,
        Io,
    ] {
        let outcome = ProbeOutcome::Failed {
            kind,
            restart: RestartState::NotRestarting,
        };
        let d = decide_pair(&the_pair, &outcome, &FailoverGuard::Clear);
        assert_eq!(d.rule, Rule::Failover, "{kind}");
    }
}

/// Before a failover the mirror is probed: only an answer as a mirror lets it stand.
#[test]
fn a_failover_needs_the_mirror_to_answer_as_a_mirror() {
    let the_pair = pair((U, S), (U, S));
    let lost = failed(RestartState::NotRestarting);
    let d = || decide_pair(&the_pair, &lost, &FailoverGuard::Clear);
    let ok = confirm_failover(d(), 5, &MirrorCheck::AnswersAsMirror);
    assert_eq!(
        (ok.rule, msg(&ok)),
        (Rule::Failover, Some((MessageType::Promote, 5)))
    );
    let gone = confirm_failover(
        d(),
        5,
        &MirrorCheck::Unreachable {
            kind: FailureKind::Timeout,
        },
    );
    assert_eq!(gone.rule, Rule::FailoverUnconfirmed);
    assert!(gone.is_noop());
    assert!(gone
        .refusal
        .as_ref()
        .unwrap()
        .to_string()
        .starts_with("mirror unreachable from this observer"));
    let primary = confirm_failover(d(), 5, &MirrorCheck::AnswersAsPrimary);
    assert_eq!(primary.rule, Rule::FailoverUnconfirmed);
    assert!(primary.is_noop());
    // the primary answered the PROBE sent with the mirror check: its loss was this observer's
    let back = confirm_failover(
        d(),
        5,
        &MirrorCheck::PrimaryAnswersAgain { primary_dbid: 2 },
    );
    assert_eq!(back.rule, Rule::FailoverUnconfirmed);
    assert!(back.is_noop());
    assert!(back
        .refusal
        .as_ref()
        .unwrap()
        .to_string()
        .starts_with("primary dbid 2 answered a PROBE again"));
    // any other decision passes unchanged
    let healthy = decide_pair(&the_pair, &reply(1, 1, 1, 0, 0), &FailoverGuard::Clear);
    let checked = confirm_failover(
        healthy.clone(),
        5,
        &MirrorCheck::Unreachable {
            kind: FailureKind::Timeout,
        },
    );
    assert_eq!(checked, healthy);
}

#[test]
fn decision_table_row_by_row() {
    for case in table() {
        let d = decide_pair(&case.pair, &case.outcome, &FailoverGuard::Clear);
        assert_eq!(d.rule, case.rule, "{}", case.name);
        assert_eq!(changes(&d), case.changes, "{}", case.name);
        assert_eq!(msg(&d), case.message, "{}", case.name);
        for u in &d.updates {
            let before = if u.dbid == case.pair.primary.dbid {
                &case.pair.primary
            } else {
                &case.pair.mirror
            };
            assert_eq!(u.from, before.state(), "{}: from-state", case.name);
        }
    }
}

/// Row 3's reply (the catalog primary answers as a mirror) from every pair shape other than
/// the one a failover leaves (p/u/n + m/d/n): someone else changed the roles, so no message.
#[test]
fn re_promote_is_refused_from_every_shape_but_the_failover_one() {
    let states = [(U, S), (U, N), (D, S), (D, N)];
    let mut refused = 0;
    for p in states {
        for m in states {
            let the_pair = pair(p, m);
            for outcome in [
                reply(0, 0, 0, 1, 0),
                reply(1, 1, 1, 1, 0),
                reply(0, 0, 0, 1, 1),
            ] {
                let d = decide_pair(&the_pair, &outcome, &FailoverGuard::Clear);
                if (p, m) == ((U, N), (D, N)) {
                    assert_eq!(d.rule, Rule::RePromote, "{p:?} {m:?}");
                    assert_eq!(msg(&d), Some((MessageType::Promote, 2)));
                    assert_eq!(
                        d.expect,
                        vec![(2, st(P, U, N)), (5, st(M, D, N))],
                        "re-checked under the fence"
                    );
                    continue;
                }
                refused += 1;
                assert_eq!(d.rule, Rule::RoleConflict, "{p:?} {m:?} {outcome:?}");
                assert!(d.message.is_none() && d.updates.is_empty(), "{d:?}");
                assert!(
                    matches!(d.refusal, Some(Refusal::NotFailoverShape { .. })),
                    "{d:?}"
                );
            }
        }
    }
    assert_eq!(refused, 15 * 3);
}

#[test]
fn a_vetoed_failover_is_refused_with_the_drivers_reason() {
    let veto = FailoverGuard::Veto("standby 5 was async at the last probe".into());
    let d = decide_pair(
        &pair((U, S), (U, S)),
        &failed(RestartState::NotRestarting),
        &veto,
    );
    assert_eq!(d.rule, Rule::DoubleFault);
    assert!(d.updates.is_empty() && d.message.is_none());
    assert_eq!(
        d.refusal.as_ref().map(|r| r.to_string()),
        Some("driver veto: standby 5 was async at the last probe".into())
    );
    // a veto never changes anything but a failover
    for outcome in [reply(1, 1, 1, 0, 0), reply(0, 0, 1, 0, 0)] {
        let with = decide_pair(&pair((U, S), (U, S)), &outcome, &veto);
        let without = decide_pair(&pair((U, S), (U, S)), &outcome, &FailoverGuard::Clear);
        assert_eq!(with, without);
    }
}

#[test]
fn plan_cycle_refuses_contents_that_cannot_form_a_pair() {
    let p0 = pair((U, S), (U, S));
    let rows = vec![
        p0.primary.clone(),
        p0.mirror.clone(),
        row(3, 1, P, P, st(P, U, S)),
        row(6, 1, P, M, st(P, U, S)),
    ];
    let cfg = SegmentConfig::new(rows);
    let outcomes: HashMap<_, _> = [(0, failed(RestartState::NotRestarting))].into();
    let plan = plan_cycle(&cfg, &outcomes, &HashMap::new());
    let rules: Vec<_> = plan.iter().map(|d| (d.content, d.rule)).collect();
    assert_eq!(rules, vec![(0, Rule::Failover), (1, Rule::BadShape)]);
    assert!(plan[1].updates.is_empty() && plan[1].message.is_none());
}

#[test]
fn request_retry_is_retried_only_while_catalog_has_mirror_up() {
    let r = ProbeReply {
        request_retry: true,
        is_syncrep_enabled: true,
        ..Default::default()
    };
    assert!(reply_wants_retry(&r, &pair((U, S), (U, S)).mirror));
    assert!(!reply_wants_retry(&r, &pair((U, N), (D, N)).mirror));
    let no = ProbeReply::default();
    assert!(!reply_wants_retry(&no, &pair((U, S), (U, S)).mirror));
}

#[test]
fn history_text_is_exactly_greenplums() {
    let d = decide_pair(
        &pair((U, S), (U, S)),
        &failed(RestartState::NotRestarting),
        &FailoverGuard::Clear,
    );
    let texts: Vec<_> = d.updates.iter().map(|u| u.history_desc()).collect();
    assert_eq!(
        texts,
        vec![
            "FTS: update role, status, and mode for dbid 2 with contentid 0 to m, d, and n",
            "FTS: update role, status, and mode for dbid 5 with contentid 0 to p, u, and n",
        ]
    );
}

#[test]
fn plan_cycle_skips_unprobed_and_mirrorless_contents() {
    let p0 = pair((U, S), (U, S));
    let mut rows = vec![p0.primary.clone(), p0.mirror.clone()];
    rows.push(row(3, 1, P, P, st(P, U, N))); // content 1 has no mirror
    let cfg = SegmentConfig::new(rows);
    let mut outcomes = HashMap::new();
    outcomes.insert(1, failed(RestartState::NotRestarting));
    assert!(plan_cycle(&cfg, &outcomes, &HashMap::new()).is_empty());
    outcomes.insert(0, failed(RestartState::NotRestarting));
    let plan = plan_cycle(&cfg, &outcomes, &HashMap::new());
    assert_eq!(plan.len(), 1);
    assert_eq!(plan[0].rule, Rule::Failover);
}

// ---------------------------------------------------------------------------------------------
// Property tests

/// Catalog states a pair can legitimately be in (what Greenplum's own FTS and gprecoverseg
/// produce), with either instance acting as primary.
fn arb_pair_state() -> impl Strategy<Value = (SegmentState, SegmentState)> {
    prop_oneof![
        Just((st(P, U, S), st(M, U, S))),
        Just((st(P, U, N), st(M, U, N))),
        Just((st(P, U, N), st(M, D, N))),
    ]
}

fn arb_config(max_contents: usize) -> impl Strategy<Value = SegmentConfig> {
    prop::collection::vec((arb_pair_state(), any::<bool>()), 1..=max_contents).prop_map(
        |contents| {
            let n = contents.len() as i16;
            let mut rows = Vec::new();
            for (c, ((ps, ms), swapped)) in contents.into_iter().enumerate() {
                let c = c as i16;
                let (pref_p, pref_m) = if swapped { (M, P) } else { (P, M) };
                rows.push(row(c + 2, c, ps.role, pref_p, ps));
                rows.push(row(n + c + 2, c, ms.role, pref_m, ms));
            }
            SegmentConfig::new(rows)
        },
    )
}

fn arb_kind() -> impl Strategy<Value = FailureKind> {
    use FailureKind::*;
    prop_oneof![
        Just(Resolve),
        Just(Refused),
        Just(Timeout),
        Just(Reset),
        Just(Auth),
        Just(Permission),
        Just(StartupError),
        Just(ErrorReply),
        Just(Protocol),
        Just(Local),
        Just(Io),
    ]
}

fn arb_mirror_check() -> impl Strategy<Value = MirrorCheck> {
    prop_oneof![
        Just(MirrorCheck::AnswersAsMirror),
        Just(MirrorCheck::AnswersAsPrimary),
        Just(MirrorCheck::PrimaryAnswersAgain { primary_dbid: 2 }),
        arb_kind().prop_map(|kind| MirrorCheck::Unreachable { kind }),
    ]
}

fn arb_outcome() -> impl Strategy<Value = ProbeOutcome> {
    let reply = (
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(a, b, c, d, e)| ProbeOutcome::Replied {
            reply: ProbeReply {
                is_mirror_up: a,
                is_in_sync: b,
                is_syncrep_enabled: c,
                is_role_mirror: d,
                request_retry: e,
            },
        });
    let restart = prop_oneof![
        Just(RestartState::NotRestarting),
        (1u64..1000).prop_map(|lsn| RestartState::RecoveryMakingProgress { lsn }),
        (0u64..100_000).prop_map(|elapsed_ms| RestartState::StartingUp { elapsed_ms }),
        (1u64..1000).prop_map(|lsn| RestartState::RecoveryNotMakingProgress { lsn }),
        Just(RestartState::Resetting),
    ];
    prop_oneof![
        3 => reply,
        1 => (restart, arb_kind()).prop_map(|(restart, kind)| ProbeOutcome::Failed { kind, restart }),
    ]
}

/// Per cycle, each content's probe outcome and whether the driver vetoes its failover.
type Cycles = Vec<Vec<(ProbeOutcome, bool)>>;

fn arb_cycles() -> impl Strategy<Value = (SegmentConfig, Cycles)> {
    arb_config(6).prop_flat_map(|cfg| {
        let n = cfg.segments.len() / 2;
        let cycles = prop::collection::vec(
            prop::collection::vec((arb_outcome(), prop::bool::weighted(0.2)), n),
            1..6,
        );
        (Just(cfg), cycles)
    })
}

fn outcomes_for(
    cfg: &SegmentConfig,
    outcomes: &[ProbeOutcome],
) -> HashMap<ContentId, ProbeOutcome> {
    let contents: std::collections::BTreeSet<_> = cfg.segments.iter().map(|s| s.content).collect();
    contents.into_iter().zip(outcomes.iter().copied()).collect()
}

fn check_invariants(before: &SegmentConfig, after: &SegmentConfig, plan: &[Decision]) {
    let contents: std::collections::BTreeSet<_> =
        after.segments.iter().map(|s| s.content).collect();
    for c in contents {
        let rows: Vec<_> = after.segments.iter().filter(|s| s.content == c).collect();
        let primaries = rows.iter().filter(|s| s.role == P).count();
        assert_eq!(
            primaries, 1,
            "content {c} must have exactly one primary: {rows:?}"
        );
        assert_eq!(
            rows[0].mode, rows[1].mode,
            "content {c}: pair modes differ: {rows:?}"
        );
        for r in &rows {
            if r.role == P {
                assert_eq!(r.status, U, "an acting primary is never marked down: {r:?}");
            }
            if r.mode == S {
                assert_eq!(r.status, U, "mode s implies up: {r:?}");
            }
        }
    }
    for d in plan {
        let mut seen = std::collections::HashSet::new();
        for u in &d.updates {
            assert!(seen.insert(u.dbid), "one update per row per decision");
            assert_eq!(u.content, d.content);
            let old = before.by_dbid(u.dbid).unwrap();
            assert_eq!(
                u.from,
                old.state(),
                "update must be computed from the snapshot"
            );
            if old.role == M && u.to.role == P {
                // promotion: only an up mirror recorded in sync, paired with an in-sync primary
                assert_eq!(old.mode, S, "promoted a mirror that was not in sync");
                assert_eq!(old.status, U, "promoted a mirror that was down");
                assert_eq!(d.rule, Rule::Failover);
                let msg = d.message.as_ref().expect("failover sends PROMOTE");
                assert_eq!((msg.kind, msg.target.dbid), (MessageType::Promote, u.dbid));
            }
            assert_ne!(u.from, u.to, "an update must change something");
        }
        if let Some(m) = &d.message {
            if m.kind == MessageType::Promote && d.rule == Rule::Failover {
                assert!(!d.updates.is_empty(), "catalog flip precedes PROMOTE");
            }
        }
    }
}

/// Any pair shape, including ones only a hand edit or another writer makes.
fn arb_any_pair() -> impl Strategy<Value = Pair> {
    let half = (prop_oneof![Just(U), Just(D)], prop_oneof![Just(S), Just(N)]);
    (half.clone(), half).prop_map(|(p, m)| pair(p, m))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// The driver's veto is inside the table: a vetoed pair is never promoted, whatever its
    /// shape and whatever the probe said.
    #[test]
    fn a_vetoed_failover_never_promotes(the_pair in arb_any_pair(), outcome in arb_outcome()) {
        let d = decide_pair(&the_pair, &outcome, &FailoverGuard::Veto("guard".into()));
        prop_assert!(d.rule != Rule::Failover, "{:?}", d);
        prop_assert!(
            !d.updates.iter().any(|u| u.from.role == M && u.to.role == P),
            "vetoed pair promoted in the catalog: {:?}", d
        );
        if let Some(m) = &d.message {
            prop_assert!(
                !(m.kind == MessageType::Promote && m.target.dbid == the_pair.mirror.dbid),
                "vetoed pair's mirror sent PROMOTE: {:?}", d
            );
        }
    }

    /// A failure on the prober's side never changes a row or sends a message, and a failover
    /// survives the check before acting only when the mirror answered as a mirror.
    #[test]
    fn prober_faults_and_unconfirmed_failovers_never_act(
        the_pair in arb_any_pair(),
        outcome in arb_outcome(),
        check in arb_mirror_check(),
    ) {
        let d = decide_pair(&the_pair, &outcome, &FailoverGuard::Clear);
        if let ProbeOutcome::Failed { kind, .. } = outcome {
            if kind.is_prober_fault() {
                prop_assert_eq!(d.rule, Rule::ProberFault);
                prop_assert!(d.is_noop(), "{:?}", d);
            }
        }
        let checked = confirm_failover(d.clone(), the_pair.mirror.dbid, &check);
        let promotes = |d: &Decision| d.message.as_ref().is_some_and(|m| m.kind == MessageType::Promote && d.rule == Rule::Failover);
        if promotes(&checked) {
            prop_assert_eq!(check, MirrorCheck::AnswersAsMirror);
        }
        if check != MirrorCheck::AnswersAsMirror && d.rule == Rule::Failover {
            prop_assert_eq!(checked.rule, Rule::FailoverUnconfirmed);
            prop_assert!(checked.is_noop(), "{:?}", checked);
        }
        if d.rule != Rule::Failover {
            prop_assert_eq!(checked, d);
        }
    }

    /// PROMOTE is only ever sent by a failover of an in-sync pair, or again (row 3) from the
    /// exact shape a failover leaves, with that shape re-checked under the fence.
    #[test]
    fn promote_only_from_a_failover_or_its_shape(the_pair in arb_any_pair(), outcome in arb_outcome()) {
        let d = decide_pair(&the_pair, &outcome, &FailoverGuard::Clear);
        if let Some(m) = d.message.as_ref().filter(|m| m.kind == MessageType::Promote) {
            match d.rule {
                Rule::Failover => {
                    prop_assert_eq!(the_pair.mirror.state(), st(M, U, S));
                    prop_assert_eq!(m.target.dbid, the_pair.mirror.dbid);
                }
                Rule::RePromote => {
                    prop_assert!(failover_shape(&the_pair), "{:?}", the_pair);
                    prop_assert_eq!(d.expect.len(), 2);
                }
                other => prop_assert!(false, "PROMOTE from rule {}", other),
            }
        }
    }

    #[test]
    fn safety_invariants_hold_over_many_cycles((cfg, cycles) in arb_cycles()) {
        let mut cfg = cfg;
        for cycle in cycles {
            let outcomes: Vec<_> = cycle.iter().map(|(o, _)| *o).collect();
            let map = outcomes_for(&cfg, &outcomes);
            let vetoes: HashMap<ContentId, String> = map
                .keys()
                .zip(cycle.iter())
                .filter(|(_, (_, veto))| *veto)
                .map(|(c, _)| (*c, "guard".to_string()))
                .collect();
            let plan = plan_cycle(&cfg, &map, &vetoes);
            let before = cfg.clone();
            for d in &plan {
                apply_updates(&mut cfg, &d.updates);
                if vetoes.contains_key(&d.content) {
                    prop_assert!(d.rule != Rule::Failover, "vetoed failover went ahead: {:?}", d);
                }
            }
            check_invariants(&before, &cfg, &plan);

            // a repeated identical cycle changes nothing
            let again = plan_cycle(&cfg, &map, &vetoes);
            for d in &again {
                prop_assert!(d.updates.is_empty(), "second identical cycle changed {:?}", d);
            }
        }
    }

    #[test]
    fn every_update_has_exactly_one_history_row_naming_it(cfg in arb_config(4), outcome in arb_outcome()) {
        for pair in cfg.probe_pairs().pairs {
            let d = decide_pair(&pair, &outcome, &FailoverGuard::Clear);
            for u in &d.updates {
                let text = u.history_desc();
                let expected_prefix = format!("for dbid {} with contentid {} ", u.dbid, u.content);
                prop_assert!(text.contains(&expected_prefix));
                let expected_suffix = format!(
                    "to {}, {}, and {}", u.to.role, u.to.status, u.to.mode
                );
                prop_assert!(text.ends_with(&expected_suffix));
            }
        }
    }
}

#[test]
fn an_unconfirmed_failover_says_whether_the_members_could_be_counted() {
    let counted = Refusal::NotConfirmedByQuorum {
        primary_dbid: 9,
        confirmed: vec!["a".into()],
        live: 3,
        needed: 2,
        registry_error: None,
    };
    assert!(counted
        .to_string()
        .starts_with("primary dbid 9 loss confirmed by 1 of 3 live members (2 needed: a)"));
    // The registry read failed: "1 of 1 (1 needed)" would read as a quorum reached.
    let uncounted = Refusal::NotConfirmedByQuorum {
        primary_dbid: 9,
        confirmed: vec!["a".into()],
        live: 1,
        needed: 1,
        registry_error: Some("members registry read timed out".into()),
    };
    let text = uncounted.to_string();
    assert!(
        text.contains("the members registry could not be read (members registry read timed out)"),
        "{text}"
    );
    assert!(!text.contains("1 of 1"), "{text}");
}
