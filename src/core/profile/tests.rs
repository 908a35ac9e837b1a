//! The `gpfts` profile row by row, then property tests: the safety invariants hold under it
//! over many cycles, and a primary it marked down comes back with its first reply.

use std::collections::HashMap;

use super::*;
use crate::core::decide::{apply_updates, confirm_failover, decide_pair};
use crate::core::{FailoverGuard, MirrorCheck, ProbeOutcome, RestartState};
use crate::model::{ContentId, Segment, SegmentConfig};
use crate::wire::failure::FailureKind;
use crate::wire::{MessageType, ProbeReply};
use proptest::prelude::*;

use Mode::{InSync as S, NotInSync as N};
use Role::{Mirror as M, Primary as P};
use Status::{Down as D, Up as U};

fn st(role: Role, status: Status, mode: Mode) -> SegmentState {
    SegmentState { role, status, mode }
}

fn row(dbid: i16, content: i16, s: SegmentState) -> Segment {
    Segment {
        dbid,
        content,
        role: s.role,
        preferred_role: s.role,
        mode: s.mode,
        status: s.status,
        port: 6000 + dbid as i32,
        hostname: format!("sdw{dbid}"),
        address: "127.0.0.1".into(),
        datadir: format!("/data/{dbid}"),
    }
}

/// Content 0: primary dbid 2, mirror dbid 5.
fn pair(p: SegmentState, m: SegmentState) -> Pair {
    Pair {
        primary: row(2, 0, p),
        mirror: row(5, 0, m),
    }
}

fn lost() -> ProbeOutcome {
    ProbeOutcome::Failed {
        kind: FailureKind::Refused,
        restart: RestartState::NotRestarting,
    }
}

fn decide(
    profile: Profile,
    pair: &Pair,
    outcome: &ProbeOutcome,
    guard: &FailoverGuard,
) -> Decision {
    apply_profile(profile, pair, decide_pair(pair, outcome, guard))
}

fn changes(d: &Decision) -> Vec<(i16, SegmentState)> {
    d.updates.iter().map(|u| (u.dbid, u.to)).collect()
}

#[test]
fn a_double_fault_marks_the_primary_down_under_gpfts_only() {
    // Mirror already marked down (row 2 happened earlier), then the primary is lost.
    let p = pair(st(P, U, N), st(M, D, N));
    let in_core = decide(Profile::InCore, &p, &lost(), &FailoverGuard::Clear);
    assert_eq!(in_core.rule, Rule::DoubleFault);
    assert!(in_core.is_noop());

    let d = decide(Profile::Gpfts, &p, &lost(), &FailoverGuard::Clear);
    assert_eq!(d.rule, Rule::PrimaryDown);
    assert_eq!(changes(&d), vec![(2, st(P, D, N))]);
    assert_eq!(
        d.message, None,
        "no message: nobody to promote, nothing to unblock"
    );
    assert_eq!(d.refusal, None);
    assert_eq!(
        d.updates[0].history_desc(),
        "FTS: update role, status, and mode for dbid 2 with contentid 0 to p, d, and n"
    );
}

#[test]
fn the_mirror_keeps_its_role_and_status_and_takes_mode_n() {
    // A mirror up but not in sync (catching up) when the primary is lost.
    let p = pair(st(P, U, N), st(M, U, N));
    let d = decide(Profile::Gpfts, &p, &lost(), &FailoverGuard::Clear);
    assert_eq!(changes(&d), vec![(2, st(P, D, N))]);
}

#[test]
fn a_primary_already_down_keeps_the_refusal() {
    let p = pair(st(P, D, N), st(M, D, N));
    let d = decide(Profile::Gpfts, &p, &lost(), &FailoverGuard::Clear);
    assert_eq!(d.rule, Rule::DoubleFault, "alarm and evidence as in-core");
    assert!(d.is_noop());
    assert!(matches!(d.refusal, Some(Refusal::NotInSync { .. })));
}

#[test]
fn ftsd_s_own_refusals_and_every_other_row_pass_unchanged() {
    let in_sync = pair(st(P, U, S), st(M, U, S));
    // Driver veto: ftsd's own refusal, not gpfts's double fault.
    let vetoed = FailoverGuard::Veto("data-loss guard".into());
    assert_eq!(
        decide(Profile::Gpfts, &in_sync, &lost(), &vetoed),
        decide(Profile::InCore, &in_sync, &lost(), &vetoed)
    );
    // Prober fault.
    let prober = ProbeOutcome::Failed {
        kind: FailureKind::Auth,
        restart: RestartState::NotRestarting,
    };
    let d = decide(Profile::Gpfts, &in_sync, &prober, &FailoverGuard::Clear);
    assert_eq!(d.rule, Rule::ProberFault);
    assert!(d.is_noop());
    // A failover stays a failover; an unconfirmed one stays refused.
    let d = decide(Profile::Gpfts, &in_sync, &lost(), &FailoverGuard::Clear);
    assert_eq!(d.rule, Rule::Failover);
    let unconfirmed = confirm_failover(
        d,
        5,
        &MirrorCheck::Unreachable {
            kind: FailureKind::Timeout,
        },
    );
    let d = apply_profile(Profile::Gpfts, &in_sync, unconfirmed.clone());
    assert_eq!(d, unconfirmed);
    // A restarting primary is not lost.
    let restarting = ProbeOutcome::Failed {
        kind: FailureKind::StartupError,
        restart: RestartState::Resetting,
    };
    let p = pair(st(P, U, N), st(M, D, N));
    assert_eq!(
        decide(Profile::Gpfts, &p, &restarting, &FailoverGuard::Clear).rule,
        Rule::Restarting
    );
}

#[test]
fn the_primary_comes_back_up_with_its_first_reply() {
    let p = pair(st(P, D, N), st(M, D, N));
    // Mirror still gone, syncrep already off: row 4, the primary is marked up.
    let reply = ProbeOutcome::Replied {
        reply: ProbeReply::default(),
    };
    let d = decide(Profile::Gpfts, &p, &reply, &FailoverGuard::Clear);
    assert_eq!(d.rule, Rule::Resync);
    assert_eq!(changes(&d), vec![(2, st(P, U, N))]);
}

// ---------------------------------------------------------------------------------------------
// Contents without a mirror (gpfts probes them; the engine decides them under this profile only)

fn replied(is_role_mirror: bool) -> ProbeOutcome {
    ProbeOutcome::Replied {
        reply: ProbeReply {
            is_role_mirror,
            ..ProbeReply::default()
        },
    }
}

fn failed(kind: FailureKind, restart: RestartState) -> ProbeOutcome {
    ProbeOutcome::Failed { kind, restart }
}

/// Every row of the table for a lone primary (content 3, dbid 7): its state in the
/// configuration, the probe's outcome, then the rule, the row written (if any) and whether it
/// is refused.
#[test]
fn lone_primary_table() {
    let lost = failed(FailureKind::Refused, RestartState::NotRestarting);
    let timeout = failed(FailureKind::Timeout, RestartState::NotRestarting);
    let stuck = failed(
        FailureKind::StartupError,
        RestartState::RecoveryNotMakingProgress { lsn: 7 },
    );
    let resetting = failed(FailureKind::StartupError, RestartState::Resetting);
    let recovering = failed(
        FailureKind::StartupError,
        RestartState::RecoveryMakingProgress { lsn: 9 },
    );
    let starting = failed(
        FailureKind::StartupError,
        RestartState::StartingUp { elapsed_ms: 10 },
    );
    let auth = failed(FailureKind::Auth, RestartState::NotRestarting);
    let resolve = failed(FailureKind::Resolve, RestartState::NotRestarting);
    #[rustfmt::skip]
    let table: Vec<(SegmentState, ProbeOutcome, Rule, Option<SegmentState>, bool)> = vec![
        // answers as a primary
        (st(P, U, N), replied(false), Rule::Healthy, None, false),
        (st(P, D, N), replied(false), Rule::Resync, Some(st(P, U, N)), false),
        // only the status comes back; the mode stays as recorded
        (st(P, D, S), replied(false), Rule::Resync, Some(st(P, U, S)), false),
        // answers as a mirror: nobody to promote, nothing written, alarmed
        (st(P, U, N), replied(true), Rule::RoleConflict, None, true),
        (st(P, D, N), replied(true), Rule::RoleConflict, None, true),
        // lost: marked down as gpfts writes it
        (st(P, U, N), lost, Rule::PrimaryDown, Some(st(P, D, N)), false),
        (st(P, U, S), timeout, Rule::PrimaryDown, Some(st(P, D, N)), false),
        (st(P, U, N), stuck, Rule::PrimaryDown, Some(st(P, D, N)), false),
        // already down: not written again
        (st(P, D, N), lost, Rule::PrimaryDown, None, false),
        (st(P, D, S), timeout, Rule::PrimaryDown, None, false),
        // restarting: not lost
        (st(P, U, N), resetting, Rule::Restarting, None, false),
        (st(P, U, N), recovering, Rule::Restarting, None, false),
        (st(P, U, N), starting, Rule::Restarting, None, false),
        // a failure on this observer's side is never a loss
        (st(P, U, N), auth, Rule::ProberFault, None, true),
        (st(P, U, N), resolve, Rule::ProberFault, None, true),
        (st(P, D, N), resolve, Rule::ProberFault, None, true),
    ];
    for (i, (state, outcome, rule, write, refused)) in table.into_iter().enumerate() {
        let primary = row(7, 3, state);
        let d = decide_lone_primary(&primary, &outcome);
        assert_eq!(d.content, 3, "row {i}");
        assert_eq!(d.rule, rule, "row {i}: {state} {outcome:?}");
        assert_eq!(
            changes(&d),
            write.map(|to| (7, to)).into_iter().collect::<Vec<_>>(),
            "row {i}: {state} {outcome:?}"
        );
        assert_eq!(d.refusal.is_some(), refused, "row {i}: {d:?}");
        assert_eq!(
            d.message, None,
            "row {i}: a lone primary is never sent anything"
        );
        assert!(d.expect.is_empty(), "row {i}");
    }
}

#[test]
fn lone_primary_marked_down_has_the_in_core_history_text() {
    let d = decide_lone_primary(
        &row(7, 3, st(P, U, N)),
        &failed(FailureKind::Refused, RestartState::NotRestarting),
    );
    assert_eq!(
        d.updates[0].history_desc(),
        "FTS: update role, status, and mode for dbid 7 with contentid 3 to p, d, and n"
    );
    let refused = decide_lone_primary(&row(7, 3, st(P, U, N)), &replied(true));
    assert_eq!(
        refused.refusal.unwrap().to_string(),
        "the content has no mirror and its primary dbid 7 answers as a mirror: someone else \
         changed it; nothing is marked"
    );
}

#[test]
fn profile_names() {
    assert_eq!(Profile::default(), Profile::InCore);
    assert_eq!(Profile::Gpfts.to_string(), "gpfts");
    assert_eq!(
        serde_json::to_string(&Profile::InCore).unwrap(),
        "\"in-core\""
    );
}

// ---------------------------------------------------------------------------------------------
// Property tests

/// Any pair state, including ones a gpfts-profile double fault leaves.
fn arb_state(role: Role) -> impl Strategy<Value = SegmentState> {
    (prop_oneof![Just(U), Just(D)], prop_oneof![Just(S), Just(N)])
        .prop_map(move |(status, mode)| st(role, status, mode))
}

fn arb_config(max: usize) -> impl Strategy<Value = SegmentConfig> {
    // Legitimate starting shapes; later shapes come from the decisions themselves.
    let start = prop_oneof![
        Just((st(P, U, S), st(M, U, S))),
        Just((st(P, U, N), st(M, U, N))),
        Just((st(P, U, N), st(M, D, N))),
        Just((st(P, D, N), st(M, D, N))),
    ];
    prop::collection::vec(start, 1..=max).prop_map(|contents| {
        let n = contents.len() as i16;
        let mut rows = Vec::new();
        for (c, (ps, ms)) in contents.into_iter().enumerate() {
            let c = c as i16;
            rows.push(row(c + 2, c, ps));
            rows.push(row(n + c + 2, c, ms));
        }
        SegmentConfig::new(rows)
    })
}

fn arb_outcome() -> impl Strategy<Value = ProbeOutcome> {
    let reply = any::<[bool; 5]>().prop_map(|b| ProbeOutcome::Replied {
        reply: ProbeReply {
            is_mirror_up: b[0],
            is_in_sync: b[1],
            is_syncrep_enabled: b[2],
            is_role_mirror: b[3],
            request_retry: b[4],
        },
    });
    let kind = prop_oneof![
        Just(FailureKind::Refused),
        Just(FailureKind::Timeout),
        Just(FailureKind::Reset),
        Just(FailureKind::Auth),
        Just(FailureKind::Resolve),
        Just(FailureKind::StartupError),
    ];
    let restart = prop_oneof![
        3 => Just(RestartState::NotRestarting),
        1 => Just(RestartState::Resetting),
        1 => (1u64..100).prop_map(|lsn| RestartState::RecoveryNotMakingProgress { lsn }),
    ];
    prop_oneof![
        2 => reply,
        1 => (kind, restart).prop_map(|(kind, restart)| ProbeOutcome::Failed { kind, restart }),
    ]
}

fn plan(
    profile: Profile,
    cfg: &SegmentConfig,
    outcomes: &HashMap<ContentId, ProbeOutcome>,
) -> Vec<Decision> {
    cfg.probe_pairs()
        .pairs
        .iter()
        .filter_map(|p| {
            outcomes.get(&p.content()).map(|o| {
                // The engine's order: the table, the mirror check (confirmed here), the profile.
                let d = confirm_failover(
                    decide_pair(p, o, &FailoverGuard::Clear),
                    p.mirror.dbid,
                    &MirrorCheck::AnswersAsMirror,
                );
                apply_profile(profile, p, d)
            })
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Under the gpfts profile, over many cycles: one primary per content, modes agree, `s`
    /// implies up, a promotion only of an up in-sync mirror by a failover, a primary marked
    /// down only by the double-fault row (without a message or a role change), every update
    /// changes its row, and an identical second cycle changes nothing.
    #[test]
    fn gpfts_profile_keeps_the_safety_invariants(
        (cfg, cycles) in arb_config(5).prop_flat_map(|cfg| {
            let n = cfg.segments.len() / 2;
            (Just(cfg), prop::collection::vec(prop::collection::vec(arb_outcome(), n), 1..6))
        })
    ) {
        let mut cfg = cfg;
        for cycle in cycles {
            let contents: std::collections::BTreeSet<_> = cfg.segments.iter().map(|s| s.content).collect();
            let outcomes: HashMap<_, _> = contents.into_iter().zip(cycle).collect();
            let before = cfg.clone();
            let decisions = plan(Profile::Gpfts, &cfg, &outcomes);
            for d in &decisions {
                for u in &d.updates {
                    let old = before.by_dbid(u.dbid).unwrap();
                    prop_assert_eq!(u.from, old.state(), "computed from the snapshot");
                    prop_assert_ne!(u.from, u.to, "an update changes its row");
                    if old.role == M && u.to.role == P {
                        prop_assert_eq!(d.rule, Rule::Failover);
                        prop_assert_eq!(old.state(), st(M, U, S), "promoted a mirror not in sync");
                    }
                    if u.to.role == P && u.to.status == D {
                        prop_assert_eq!(d.rule, Rule::PrimaryDown);
                        prop_assert_eq!(u.from.role, P, "marking down never changes a role");
                    }
                }
                if d.rule == Rule::PrimaryDown {
                    prop_assert!(d.message.is_none(), "{:?}", d);
                    prop_assert!(d.updates.iter().all(|u| u.from.role == u.to.role), "{:?}", d);
                }
                apply_updates(&mut cfg, &d.updates);
            }
            for c in cfg.segments.iter().map(|s| s.content).collect::<std::collections::BTreeSet<_>>() {
                let rows: Vec<_> = cfg.segments.iter().filter(|s| s.content == c).collect();
                prop_assert_eq!(rows.iter().filter(|s| s.role == P).count(), 1, "{:?}", rows);
                prop_assert_eq!(rows[0].mode, rows[1].mode, "{:?}", rows);
                for r in &rows {
                    if r.mode == S {
                        prop_assert_eq!(r.status, U, "{:?}", r);
                    }
                }
            }
            // Deciding again on the result with the same outcomes changes nothing, except where
            // the primary changed hands: the outcome would then be another instance's.
            let flipped: std::collections::BTreeSet<ContentId> = decisions
                .iter()
                .filter(|d| d.updates.iter().any(|u| u.from.role != u.to.role))
                .map(|d| d.content)
                .collect();
            for d in plan(Profile::Gpfts, &cfg, &outcomes) {
                if !flipped.contains(&d.content) {
                    prop_assert!(d.updates.is_empty(), "second identical cycle changed {:?}", d);
                }
            }
        }
    }

    /// The in-core profile is the table itself.
    #[test]
    fn in_core_profile_is_the_table(p in arb_state(P), m in arb_state(M), o in arb_outcome()) {
        let the_pair = pair(p, m);
        let d = decide_pair(&the_pair, &o, &FailoverGuard::Clear);
        prop_assert_eq!(apply_profile(Profile::InCore, &the_pair, d.clone()), d);
    }

    /// The gpfts profile only ever replaces a double-fault refusal, and what it writes instead
    /// never sends a message or changes a role.
    #[test]
    fn gpfts_profile_changes_only_double_faults(p in arb_state(P), m in arb_state(M), o in arb_outcome()) {
        let the_pair = pair(p, m);
        let d = decide_pair(&the_pair, &o, &FailoverGuard::Clear);
        let g = apply_profile(Profile::Gpfts, &the_pair, d.clone());
        if g != d {
            prop_assert_eq!(d.rule, Rule::DoubleFault);
            prop_assert_eq!(g.rule, Rule::PrimaryDown);
            prop_assert!(g.message.is_none());
            prop_assert!(g.updates.iter().all(|u| u.from.role == u.to.role));
        }
        if let Some(msg) = &g.message {
            prop_assert!(msg.kind != MessageType::Promote || matches!(g.rule, Rule::Failover | Rule::RePromote));
        }
    }

    /// A lone primary: no decision changes its role or sends anything, a written row always
    /// changes, a row is marked down only by `primary_down` after a loss that is neither a
    /// prober fault nor a restart, and deciding again on the result with the same outcome
    /// changes nothing.
    #[test]
    fn lone_primary_never_changes_a_role_and_settles(state in arb_state(P), o in arb_outcome()) {
        let primary = row(7, 3, state);
        let d = decide_lone_primary(&primary, &o);
        prop_assert!(d.message.is_none());
        for u in &d.updates {
            prop_assert_eq!(u.dbid, 7);
            prop_assert_eq!(u.from, state);
            prop_assert_ne!(u.from, u.to);
            prop_assert_eq!(u.to.role, P, "{:?}", d);
            if u.to.status == D {
                prop_assert_eq!(d.rule, Rule::PrimaryDown);
                let lost = matches!(
                    &o,
                    ProbeOutcome::Failed { kind, restart }
                        if !kind.is_prober_fault()
                            && matches!(restart, RestartState::NotRestarting | RestartState::RecoveryNotMakingProgress { .. })
                );
                prop_assert!(lost, "{:?} after {:?}", d, o);
            }
        }
        let mut after = primary.clone();
        if let Some(u) = d.updates.first() {
            after.status = u.to.status;
            after.mode = u.to.mode;
        }
        prop_assert!(decide_lone_primary(&after, &o).updates.is_empty());
    }

    /// A primary a double fault marked down is marked up by its next reply that is not a
    /// request to wait for the mirror (row 1) nor a mirror's answer.
    #[test]
    fn a_primary_marked_down_comes_back_with_a_reply(m in arb_state(M), reply in any::<[bool; 5]>()) {
        let the_pair = pair(st(P, D, N), st(M, m.status, N));
        let reply = ProbeReply {
            is_mirror_up: reply[0],
            is_in_sync: reply[1],
            is_syncrep_enabled: reply[2],
            is_role_mirror: reply[3],
            request_retry: reply[4],
        };
        let d = decide(Profile::Gpfts, &the_pair, &ProbeOutcome::Replied { reply }, &FailoverGuard::Clear);
        let waits = reply.is_syncrep_enabled && !reply.is_mirror_up && reply.request_retry;
        if !reply.is_role_mirror && !waits {
            prop_assert!(
                d.updates.iter().any(|u| u.dbid == 2 && u.to.status == U),
                "{:?}", d
            );
        }
    }
}
