//! Each invariant against a clean history (passes) and a crafted violation (fails).

use super::*;
use crate::history::{
    Ack, ActingSample, CoordAck, CoordAlarm, CoordEvent, CoordSample, Delivery, EvidenceRow, Fault,
    HistoryRow, QuorumLoss, Row, Survivors, Term, WritableRun,
};

const T0: i64 = 1_700_000_000_000; // ms

fn timing() -> Timing {
    Timing {
        lease_ttl_ms: 3000,
        act_margin_ms: 500,
        detect_ms: 3000,
        slack_ms: 2000,
    }
}

fn row(dbid: i16, content: i16, role: char, status: char, mode: char) -> Row {
    Row {
        dbid,
        content,
        role,
        status,
        mode,
    }
}

fn hist(at_ms: i64, dbid: i16, content: i16, r: char, s: char, m: char) -> HistoryRow {
    HistoryRow::parse(
        at_ms * 1000,
        dbid,
        &format!("FTS: update role, status, and mode for dbid {dbid} with contentid {content} to {r}, {s}, and {m}"),
    )
    .unwrap()
}

fn ev(id: i64, at_ms: i64, epoch: i64, who: &str, content: i16, dbids: &[i16]) -> EvidenceRow {
    EvidenceRow {
        id,
        time_us: at_ms * 1000,
        epoch,
        instance_id: who.into(),
        content,
        rule: "failover".into(),
        dbids: dbids.to_vec(),
    }
}

fn fault(at: i64, content: i16, expect: Expect) -> Fault {
    Fault {
        scenario: "test".into(),
        what: format!("fault at {at}"),
        content: Some(content),
        at,
        healed_at: None,
        expect,
    }
}

/// One pair (primary 2, mirror 6, content 0), primary failed at T0 and promoted at T0+2s by
/// ftsd1 in epoch 10: a history every invariant accepts.
fn clean() -> Recorded {
    Recorded {
        initial: vec![row(2, 0, 'p', 'u', 's'), row(6, 0, 'm', 'u', 's')],
        history: vec![
            hist(T0 + 2000, 2, 0, 'm', 'd', 'n'),
            hist(T0 + 2000, 6, 0, 'p', 'u', 'n'),
        ],
        evidence: vec![ev(1, T0 + 2000, 10, "ftsd1", 0, &[2, 6])],
        terms: vec![Term {
            instance: "ftsd1".into(),
            epoch: 10,
            at: T0 - 5000,
        }],
        deliveries: vec![delivery(T0 + 2100, "ftsd1", 6)],
        faults: vec![fault(
            T0,
            0,
            Expect::Promotion {
                content: 0,
                not_before: T0,
                bound_ms: 3000,
            },
        )],
        acks: vec![Ack {
            content: 0,
            seq: 1,
            at: T0 - 100,
            dbid: 2,
            in_sync: true,
        }],
        survivors: Some(vec![Survivors {
            content: 0,
            seqs: vec![1],
        }]),
        ..Recorded::default()
    }
}

fn delivery(at: i64, who: &str, dbid: i16) -> Delivery {
    Delivery {
        at,
        instance: who.into(),
        kind: "PROMOTE".into(),
        dbid,
    }
}

fn status_of(r: &Recorded, name_part: &str) -> Status {
    check_all(r, &timing())
        .into_iter()
        .find(|v| v.name.contains(name_part))
        .unwrap()
        .status
}

#[test]
fn a_clean_failover_passes_every_invariant() {
    for v in check_all(&clean(), &timing()) {
        assert_ne!(v.status, Status::Fail, "{}: {:?}", v.name, v.details);
    }
}

#[test]
fn a_blob_that_is_the_history_replayed_passes() {
    let mut r = clean();
    r.final_config = Some(vec![row(6, 0, 'p', 'u', 'n'), row(2, 0, 'm', 'd', 'n')]);
    assert_eq!(
        configuration_is_the_history_replayed(&r).status,
        Status::Pass
    );
    assert_eq!(
        configuration_is_the_history_replayed(&clean()).status,
        Status::NotApplicable,
        "nothing to compare without a final configuration"
    );
}

#[test]
fn a_blob_change_without_history_fails() {
    // The blob flipped content 0 but the history has no rows for it.
    let mut r = clean();
    r.history.clear();
    r.evidence.clear();
    r.final_config = Some(vec![row(6, 0, 'p', 'u', 'n'), row(2, 0, 'm', 'd', 'n')]);
    let v = configuration_is_the_history_replayed(&r);
    assert_eq!(v.status, Status::Fail);
    assert!(
        v.details
            .iter()
            .any(|d| d.contains("dbid 2: the configuration has m/d/n")),
        "{v:?}"
    );
}

#[test]
fn history_the_blob_does_not_hold_and_two_primaries_in_the_blob_fail() {
    let mut r = clean();
    // The history says failed over; the blob still has the old primary, and both primaries.
    r.final_config = Some(vec![row(2, 0, 'p', 'u', 's'), row(6, 0, 'p', 'u', 'n')]);
    let v = configuration_is_the_history_replayed(&r);
    assert_eq!(v.status, Status::Fail);
    assert!(v.details.iter().any(|d| d.contains("dbid 2")), "{v:?}");
    assert!(
        v.details
            .iter()
            .any(|d| d.contains("content 0 has primaries [2, 6]")),
        "{v:?}"
    );
}

#[test]
fn two_instances_in_one_epoch_fail() {
    let mut r = clean();
    r.evidence.push(ev(2, T0 + 9000, 10, "ftsd2", 0, &[6, 2]));
    r.history.push(hist(T0 + 9000, 6, 0, 'p', 'u', 's'));
    r.history.push(hist(T0 + 9000, 2, 0, 'm', 'u', 's'));
    let v = one_leader_per_epoch(&r);
    assert_eq!(v.status, Status::Fail);
    assert!(v.details.iter().any(|d| d.contains("2 instances")), "{v:?}");
}

/// Cloudberry mode: ftsd1 took office with epoch 10 (a raw etcd revision), etcd was rebuilt
/// empty at T0 + 10 s and ftsd3 took office with revision 10 of the new etcd.
fn epoch_taken_again_after_a_rebuild() -> Recorded {
    let mut r = clean();
    r.terms.push(Term {
        instance: "ftsd3".into(),
        epoch: 10,
        at: T0 + 20_000,
    });
    r
}

#[test]
fn an_epoch_taken_again_in_a_rebuilt_etcd_passes() {
    let mut r = epoch_taken_again_after_a_rebuild();
    r.etcd_rebuilds = vec![T0 + 10_000];
    let v = one_leader_per_epoch(&r);
    assert_eq!(v.status, Status::Pass, "{v:?}");
    // ... also when its transitions are the ones recorded (the new etcd's evidence).
    r.evidence = vec![ev(1, T0 + 21_000, 10, "ftsd3", 0, &[2, 6])];
    let v = one_leader_per_epoch(&r);
    assert_eq!(v.status, Status::Pass, "{v:?}");
}

#[test]
fn an_epoch_taken_twice_within_one_etcd_incarnation_fails() {
    let mut r = epoch_taken_again_after_a_rebuild();
    // Unscoped (no rebuild recorded, as for the SQL catalogs' generation epochs) ...
    let v = one_leader_per_epoch(&r);
    assert_eq!(v.status, Status::Fail, "{v:?}");
    // ... and with a rebuild before both or after both terms.
    for rebuild in [T0 - 10_000, T0 + 30_000] {
        r.etcd_rebuilds = vec![rebuild];
        let v = one_leader_per_epoch(&r);
        assert_eq!(v.status, Status::Fail, "rebuild at {rebuild}: {v:?}");
        assert!(
            v.details
                .iter()
                .any(|d| d.contains("2 instances took office")),
            "{v:?}"
        );
    }
    // Two rebuilds around the first term, the second term after both: still distinct.
    r.etcd_rebuilds = vec![T0 - 10_000, T0 + 10_000];
    assert_eq!(one_leader_per_epoch(&r).status, Status::Pass);
}

#[test]
fn evidence_matches_a_term_of_its_own_etcd_incarnation_only() {
    // ftsd1 took office with revision 10 before the rebuild; after it, a transition by ftsd1
    // with epoch 10 has no term of the new etcd behind it.
    let mut r = clean();
    r.etcd_rebuilds = vec![T0 + 10_000];
    r.evidence = vec![ev(1, T0 + 21_000, 10, "ftsd1", 0, &[2, 6])];
    let v = one_leader_per_epoch(&r);
    assert_eq!(v.status, Status::Fail, "{v:?}");
    assert!(
        v.details.iter().any(|d| d.contains("no ftsd log shows")),
        "{v:?}"
    );
}

#[test]
fn a_term_taken_again_in_a_rebuilt_etcd_starts_anew() {
    // Cloudberry mode, seed 3 of the chaos run: ftsd2 took office with revision 135 before
    // a rebuild and again after it, ftsd1 (revision 117) in between; ftsd2's PROMOTE after
    // its second term is from the sitting leader.
    let mut r = clean();
    r.deliveries.clear();
    for (who, epoch, at) in [
        ("ftsd2", 135, T0 - 60_000),
        ("ftsd1", 117, T0 - 10_000),
        ("ftsd2", 135, T0 + 1000),
    ] {
        r.terms.push(Term {
            instance: who.into(),
            epoch,
            at,
        });
    }
    r.deliveries.push(delivery(T0 + 2000, "ftsd2", 6));
    r.etcd_rebuilds = vec![T0 - 30_000];
    assert_eq!(no_message_after_deposition(&r).status, Status::Pass);
    // Without the rebuild, ftsd2's only term started before ftsd1's: a deposed leader's
    // message.
    r.etcd_rebuilds.clear();
    let v = no_message_after_deposition(&r);
    assert_eq!(v.status, Status::Fail, "{v:?}");
}

#[test]
fn a_stale_epoch_after_a_newer_one_fails() {
    let mut r = clean();
    r.terms.push(Term {
        instance: "ftsd2".into(),
        epoch: 12,
        at: T0,
    });
    r.evidence[0].epoch = 12;
    r.evidence[0].instance_id = "ftsd2".into();
    r.evidence.push(ev(2, T0 + 9000, 10, "ftsd1", 0, &[6, 2]));
    let v = one_leader_per_epoch(&r);
    assert_eq!(v.status, Status::Fail);
    assert!(v.details.iter().any(|d| d.contains("stale epoch")), "{v:?}");
}

#[test]
fn a_transition_by_an_instance_that_never_took_office_fails() {
    let mut r = clean();
    r.evidence[0].instance_id = "ftsd3".into();
    assert_eq!(one_leader_per_epoch(&r).status, Status::Fail);
}

#[test]
fn two_primaries_in_the_catalog_fail() {
    let mut r = clean();
    // The mirror is promoted but the old primary is left as primary.
    r.history.remove(0);
    r.evidence[0].dbids = vec![6];
    let v = one_primary_per_content(&r);
    assert_eq!(v.status, Status::Fail, "{v:?}");
    assert_eq!(history_and_evidence(&r).status, Status::Pass);
}

#[test]
fn two_live_acting_primaries_fail() {
    let mut r = clean();
    r.acting.push(ActingSample {
        at: T0 + 100,
        primaries: vec![(0, 2), (0, 6), (1, 3)],
    });
    assert_eq!(one_primary_per_content(&r).status, Status::Fail);
}

#[test]
fn promoting_an_out_of_sync_mirror_fails() {
    let mut r = clean();
    r.initial[1].mode = 'n';
    r.initial[0].mode = 'n';
    assert_eq!(status_of(&r, "not in sync"), Status::Fail);
    let mut r = clean();
    r.initial[1].status = 'd';
    assert_eq!(no_out_of_sync_promotion(&r).status, Status::Fail);
}

#[test]
fn missing_or_mismatched_evidence_fails() {
    let mut r = clean();
    r.evidence.clear();
    assert_eq!(history_and_evidence(&r).status, Status::Fail);
    let mut r = clean();
    r.evidence[0].dbids = vec![2];
    assert_eq!(history_and_evidence(&r).status, Status::Fail);
    let mut r = clean();
    r.evidence.push(ev(2, T0 + 2000, 10, "ftsd1", 0, &[2, 6]));
    assert_eq!(history_and_evidence(&r).status, Status::Fail);
    let mut r = clean();
    r.evidence.push(ev(2, T0 + 5000, 10, "ftsd1", 1, &[3, 7]));
    assert_eq!(history_and_evidence(&r).status, Status::Fail);
    let mut r = clean();
    r.history.push(hist(T0 + 2000, 6, 0, 'p', 'u', 'n'));
    assert_eq!(history_and_evidence(&r).status, Status::Fail);
    let mut r = clean();
    r.unparsed_history.push("something else".into());
    assert_eq!(history_and_evidence(&r).status, Status::Fail);
}

#[test]
fn a_refused_failover_needs_evidence_without_history() {
    let mut r = clean();
    let mut refusal = ev(2, T0 + 7000, 10, "ftsd1", 1, &[]);
    refusal.rule = "double_fault".into();
    r.evidence.push(refusal.clone());
    assert_eq!(history_and_evidence(&r).status, Status::Pass);
    // ... but a refusal that shares a transaction with row changes is inconsistent.
    refusal.id = 3;
    refusal.time_us = r.evidence[0].time_us;
    r.evidence.push(refusal);
    assert_eq!(history_and_evidence(&r).status, Status::Fail);
}

#[test]
fn a_write_while_etcd_has_no_quorum_fails() {
    let mut r = clean();
    // Quorum lost 10 s before the write and restored after it.
    r.quorum_losses.push(QuorumLoss {
        from: T0 - 8000,
        to: T0 + 4000,
    });
    assert_eq!(no_writes_without_quorum(&r, &timing()).status, Status::Fail);
    // Within the act-by grace (TTL − margin) of the loss it is allowed.
    r.quorum_losses[0].from = T0;
    assert_eq!(no_writes_without_quorum(&r, &timing()).status, Status::Pass);
}

#[test]
fn a_lost_acknowledged_write_fails() {
    let mut r = clean();
    r.survivors = Some(vec![Survivors {
        content: 0,
        seqs: vec![],
    }]);
    assert_eq!(acknowledged_writes_survive(&r).status, Status::Fail);
    // A write acknowledged while the pair was not in sync is not promised.
    r.acks[0].in_sync = false;
    assert_eq!(
        acknowledged_writes_survive(&r).status,
        Status::NotApplicable
    );
}

#[test]
fn a_missing_or_late_promotion_fails() {
    let mut r = clean();
    r.history.clear();
    r.evidence.clear();
    assert_eq!(
        failures_acted_on_in_time(&r, &timing()).status,
        Status::Fail
    );
    let mut r = clean();
    r.faults[0].expect = Expect::Promotion {
        content: 0,
        not_before: T0,
        bound_ms: 10,
    };
    r.faults[0].at = T0 - 10_000;
    // promoted 2 s after not_before, bound 10 ms + slack 2000 ms: 2000 <= 2010 passes
    assert_eq!(
        failures_acted_on_in_time(&r, &timing()).status,
        Status::Pass
    );
    r.history.iter_mut().for_each(|h| h.time_us += 1_000_000);
    r.evidence[0].time_us += 1_000_000;
    assert_eq!(
        failures_acted_on_in_time(&r, &timing()).status,
        Status::Fail
    );
}

#[test]
fn a_promotion_before_it_is_allowed_fails() {
    let mut r = clean();
    r.faults[0].expect = Expect::Promotion {
        content: 0,
        not_before: T0 + 5000,
        bound_ms: 3000,
    };
    let v = failures_acted_on_in_time(&r, &timing());
    assert_eq!(v.status, Status::Fail);
    assert!(
        v.details
            .iter()
            .any(|d| d.contains("before it was allowed")),
        "{v:?}"
    );
}

#[test]
fn mirror_failures_must_mark_the_mirror_down_and_not_promote() {
    let mut r = clean();
    r.faults[0].expect = Expect::MirrorDown {
        content: 0,
        bound_ms: 5000,
    };
    // The clean history promotes: wrong for a mirror failure.
    assert_eq!(
        failures_acted_on_in_time(&r, &timing()).status,
        Status::Fail
    );
    r.history = vec![
        hist(T0 + 4000, 6, 0, 'm', 'd', 'n'),
        hist(T0 + 4000, 2, 0, 'p', 'u', 'n'),
    ];
    r.evidence = vec![ev(1, T0 + 4000, 10, "ftsd1", 0, &[2, 6])];
    assert_eq!(
        failures_acted_on_in_time(&r, &timing()).status,
        Status::Pass
    );
    r.history.clear();
    r.evidence.clear();
    assert_eq!(
        failures_acted_on_in_time(&r, &timing()).status,
        Status::Fail
    );
}

#[test]
fn a_transition_where_none_is_allowed_fails() {
    let mut r = clean();
    r.faults[0].expect = Expect::NoTransition {
        content: 0,
        until: T0 + 5000,
    };
    assert_eq!(
        failures_acted_on_in_time(&r, &timing()).status,
        Status::Fail
    );
    r.faults[0].expect = Expect::NoTransition {
        content: 0,
        until: T0 + 1000,
    };
    assert_eq!(
        failures_acted_on_in_time(&r, &timing()).status,
        Status::Pass
    );
}

#[test]
fn a_former_primary_back_writable_must_be_fenced_in_time() {
    let mut r = clean();
    r.faults.push(fault(
        T0 + 4000,
        0,
        Expect::Fenced {
            content: 0,
            dbid: 2,
            bound_ms: 3000,
        },
    ));
    assert_eq!(
        failures_acted_on_in_time(&r, &timing()).status,
        Status::Fail,
        "no fence evidence"
    );
    let mut fence = ev(9, T0 + 60_000, 10, "ftsd1", 0, &[]);
    fence.rule = "fence".into();
    r.evidence.push(fence.clone());
    assert_eq!(
        failures_acted_on_in_time(&r, &timing()).status,
        Status::Fail,
        "too late"
    );
    r.evidence.pop();
    fence.time_us = (T0 + 5000) * 1000;
    r.evidence.push(fence);
    assert_eq!(
        failures_acted_on_in_time(&r, &timing()).status,
        Status::Pass
    );
    // a fence records no row change: it needs no history
    assert_eq!(history_and_evidence(&r).status, Status::Pass);
}

#[test]
fn promoting_twice_for_one_fault_fails() {
    let mut r = clean();
    r.history.push(hist(T0 + 6000, 6, 0, 'm', 'd', 'n'));
    r.history.push(hist(T0 + 6000, 2, 0, 'p', 'u', 'n'));
    r.evidence.push(ev(2, T0 + 6000, 10, "ftsd1", 0, &[2, 6]));
    assert_eq!(one_promotion_per_fault(&r).status, Status::Fail);
    // A second fault on the content in between makes the second promotion its own.
    r.faults.push(fault(T0 + 5000, 0, Expect::Nothing));
    assert_eq!(one_promotion_per_fault(&r).status, Status::Pass);
}

#[test]
fn a_message_from_a_deposed_leader_after_the_new_term_fails() {
    let name = "deposed leader";
    let mut r = clean();
    // ftsd2 takes office at T0+4s; ftsd1's PROMOTE lands 50 ms later.
    r.terms.push(Term {
        instance: "ftsd2".into(),
        epoch: 11,
        at: T0 + 4000,
    });
    assert_eq!(status_of(&r, name), Status::Pass);
    r.deliveries.push(delivery(T0 + 4050, "ftsd1", 6));
    assert_eq!(status_of(&r, name), Status::Fail);
    // The new leader's own messages after its term are fine.
    r.deliveries.pop();
    r.deliveries.push(delivery(T0 + 4050, "ftsd2", 6));
    assert_eq!(status_of(&r, name), Status::Pass);
    // A term starts at its first sign: ftsd3 observed as leader before it logs taking office.
    r.terms.push(Term {
        instance: "ftsd3".into(),
        epoch: 12,
        at: T0 + 6000,
    });
    r.deliveries.push(delivery(T0 + 5950, "ftsd3", 6));
    assert_eq!(status_of(&r, name), Status::Fail);
    r.observed.push(Term {
        instance: "ftsd3".into(),
        epoch: 12,
        at: T0 + 5900,
    });
    assert_eq!(status_of(&r, name), Status::Pass);
    // A message before anyone took office cannot be judged innocent.
    r.deliveries.push(delivery(T0 - 6000, "ftsd3", 6));
    assert_eq!(status_of(&r, name), Status::Fail);
}

/// `clean()` with a second pair (content 1: primary 3, mirror 7) and ftsd1 cut off the
/// segments from T0 - 1 s to T0 + 5 s, while content 0's primary failed at T0 (`clean`'s fault).
fn observer_cut(alarm: Option<&str>, alarm_metric: Option<i64>) -> Recorded {
    let mut r = clean();
    r.initial.push(row(3, 1, 'p', 'u', 's'));
    r.initial.push(row(7, 1, 'm', 'u', 's'));
    r.faults.push(Fault {
        scenario: "test".into(),
        what: "ftsd1 cut off the segments".into(),
        content: None,
        at: T0 - 1000,
        healed_at: Some(T0 + 5000),
        expect: Expect::ObserverFault {
            instance: "ftsd1".into(),
            alarm: alarm.map(str::to_string),
            bound_ms: 3000,
            alarm_metric,
        },
    });
    r
}

const OTHERS_COULD_REACH: &str = "other members could reach";

#[test]
fn a_transition_of_a_segment_the_others_could_reach_fails() {
    // content 0's primary itself failed: its promotion during the cut is legitimate
    let mut r = observer_cut(None, None);
    assert_eq!(status_of(&r, OTHERS_COULD_REACH), Status::Pass);
    // content 1 was not faulted: a failover of it during the cut is what issue 12 is about
    r.history.push(hist(T0 + 3000, 3, 1, 'm', 'd', 'n'));
    r.history.push(hist(T0 + 3000, 7, 1, 'p', 'u', 'n'));
    r.evidence.push(ev(2, T0 + 3000, 10, "ftsd1", 1, &[3, 7]));
    let v = no_transition_others_could_reach(&r, &timing());
    assert_eq!(v.status, Status::Fail, "{v:?}");
    assert!(v.details.iter().any(|d| d.contains("content 1")), "{v:?}");
    // ... and so is one committed just after the cut healed, within detection + slack
    let mut r = observer_cut(None, None);
    r.history.push(hist(T0 + 5000 + 4000, 7, 1, 'p', 'u', 'n'));
    r.history.push(hist(T0 + 5000 + 4000, 3, 1, 'm', 'd', 'n'));
    r.evidence.push(ev(2, T0 + 9000, 10, "ftsd1", 1, &[3, 7]));
    assert_eq!(status_of(&r, OTHERS_COULD_REACH), Status::Fail);
    // a change well after it (detection 3 s + slack 2 s past the heal) is not this invariant's
    r.history
        .iter_mut()
        .skip(2)
        .for_each(|h| h.time_us += 2_000_000);
    r.evidence[1].time_us += 2_000_000;
    assert_eq!(status_of(&r, OTHERS_COULD_REACH), Status::Pass);
}

#[test]
fn a_message_landing_for_a_segment_the_others_could_reach_fails() {
    let mut r = observer_cut(None, None);
    // the PROMOTE that lands when the network returns, with no catalog change at all
    r.deliveries.push(delivery(T0 + 5100, "ftsd1", 7));
    let v = no_transition_others_could_reach(&r, &timing());
    assert_eq!(v.status, Status::Fail, "{v:?}");
    assert!(
        v.details.iter().any(|d| d.contains("PROMOTE to dbid 7")),
        "{v:?}"
    );
}

#[test]
fn a_content_fault_healed_before_the_observer_fault_does_not_excuse_a_transition() {
    let mut r = observer_cut(None, None);
    // content 0's failure was over before the cut began; its flip during the cut is not
    // explained by it
    r.faults[0].at = T0 - 20_000;
    r.faults[0].healed_at = Some(T0 - 10_000);
    assert_eq!(status_of(&r, OTHERS_COULD_REACH), Status::Fail);
    // without any observer fault the invariant has nothing to judge
    r.faults.pop();
    assert_eq!(status_of(&r, OTHERS_COULD_REACH), Status::NotApplicable);
}

#[test]
fn an_observer_fault_with_an_alarm_needs_its_evidence_and_its_metric() {
    let mut alarm = ev(5, T0, 10, "ftsd1", 1, &[]);
    alarm.rule = "prober_fault".into();
    let mut r = observer_cut(Some("prober_fault"), Some(4));
    assert_eq!(
        failures_acted_on_in_time(&r, &timing()).status,
        Status::Fail,
        "no prober_fault evidence"
    );
    r.evidence.push(alarm.clone());
    assert_eq!(
        failures_acted_on_in_time(&r, &timing()).status,
        Status::Pass
    );
    // a refusal writes evidence without history
    assert_eq!(history_and_evidence(&r).status, Status::Pass);
    // raised by another instance: not this observer's alarm
    r.evidence.last_mut().unwrap().instance_id = "ftsd2".into();
    assert_eq!(
        failures_acted_on_in_time(&r, &timing()).status,
        Status::Fail
    );
    // too late: fault at T0 - 1 s, bound 3 s + slack 2 s
    let mut late = alarm.clone();
    late.time_us = (T0 + 4500) * 1000;
    let mut r = observer_cut(Some("prober_fault"), Some(4));
    r.evidence.push(late);
    assert_eq!(
        failures_acted_on_in_time(&r, &timing()).status,
        Status::Fail
    );
    // the metric must have risen, and must have been read
    for metric in [Some(0), None] {
        let mut r = observer_cut(Some("prober_fault"), metric);
        r.evidence.push(alarm.clone());
        assert_eq!(
            failures_acted_on_in_time(&r, &timing()).status,
            Status::Fail,
            "{metric:?}"
        );
    }
}

const C1: &str = "172.28.4.41:5432";
const C2: &str = "172.28.4.42:5432";

fn coord_event(at: i64, event: &str) -> CoordEvent {
    CoordEvent {
        at,
        event: event.into(),
        from: C1.into(),
        to: C2.into(),
        epoch: 10,
        instance: "ftsd1".into(),
    }
}

/// A sample in which every server of `writable` has answered writable for the last second.
fn coord_sample(at: i64, writable: &[&str], vip: &[&str]) -> CoordSample {
    CoordSample {
        at,
        writable: writable
            .iter()
            .map(|s| WritableRun {
                server: s.to_string(),
                since: at - 1000,
                last: at,
            })
            .collect(),
        vip: vip.iter().map(|s| s.to_string()).collect(),
    }
}

fn coord_ack(seq: i64, at: i64, server: &str) -> CoordAck {
    CoordAck {
        seq,
        at,
        server: server.into(),
    }
}

fn coord_fault(at: i64, healed_at: Option<i64>, expect: Expect) -> Fault {
    Fault {
        scenario: "test".into(),
        what: format!("coordinator fault at {at}"),
        content: None,
        at,
        healed_at,
        expect,
    }
}

/// The coordinator C1 killed at T0: intent and promotion recorded at T0+4s, the VIP moved
/// from coord1 to coord2, writes acknowledged by C1 before and by C2 from T0+7s, all of them
/// on C2 at the end: every invariant accepts it.
fn coordinator_failover() -> Recorded {
    Recorded {
        faults: vec![coord_fault(
            T0,
            None,
            Expect::CoordinatorFailover {
                from: C1.into(),
                not_before: T0,
                bound_ms: 5800,
                write_bound_ms: 10800,
            },
        )],
        coord_events: vec![
            coord_event(T0 + 3900, "intent"),
            coord_event(T0 + 4000, "promoted"),
        ],
        coord_samples: vec![
            coord_sample(T0 - 500, &[C1], &["chaos-coord1"]),
            coord_sample(T0 + 2000, &[], &["chaos-coord1"]),
            coord_sample(T0 + 4200, &[C2], &[]),
            coord_sample(T0 + 6000, &[C2], &["chaos-coord2"]),
        ],
        coord_acks: vec![
            coord_ack(1, T0 - 300, C1),
            coord_ack(2, T0 - 100, C1),
            coord_ack(3, T0 + 7000, C2),
        ],
        coord_survivors: Some(vec![1, 2, 3]),
        ..Recorded::default()
    }
}

#[test]
fn a_clean_coordinator_failover_passes_every_invariant() {
    let r = coordinator_failover();
    for v in check_all(&r, &timing()) {
        assert_ne!(v.status, Status::Fail, "{}: {:?}", v.name, v.details);
    }
    assert_eq!(status_of(&r, "single coordinator writer"), Status::Pass);
    assert_eq!(status_of(&r, "through the VIP lost"), Status::Pass);
    assert_eq!(status_of(&r, "acted on as expected"), Status::Pass);
    // Outside the coordinator scenarios there is nothing to judge.
    assert_eq!(
        status_of(&clean(), "single coordinator writer"),
        Status::NotApplicable
    );
    assert_eq!(
        status_of(&clean(), "through the VIP lost"),
        Status::NotApplicable
    );
}

#[test]
fn two_writable_coordinators_or_two_vip_holders_fail() {
    let mut r = coordinator_failover();
    r.coord_samples
        .push(coord_sample(T0 + 4100, &[C1, C2], &["chaos-coord2"]));
    assert_eq!(status_of(&r, "single coordinator writer"), Status::Fail);
    let mut r = coordinator_failover();
    r.coord_samples.push(coord_sample(
        T0 + 5000,
        &[C2],
        &["chaos-coord1", "chaos-coord2"],
    ));
    assert_eq!(status_of(&r, "single coordinator writer"), Status::Fail);
}

#[test]
fn a_killed_coordinators_last_answer_does_not_overlap_its_promoted_standby() {
    // C1 answered writable until T0 - 100 and was killed at T0; C2 was promoted 900 ms later.
    // At T0 + 900 the dead server's last answer is still under a second old.
    let mut r = coordinator_failover();
    let mut s = coord_sample(T0 + 900, &[C1, C2], &["chaos-coord1"]);
    s.writable[0].last = T0 - 100;
    s.writable[1].since = T0 + 900;
    r.coord_samples.push(s);
    assert_eq!(status_of(&r, "single coordinator writer"), Status::Pass);
    // Had C1 answered writable once more after C2's first writable answer, both were.
    let mut r = coordinator_failover();
    let mut s = coord_sample(T0 + 1000, &[C1, C2], &["chaos-coord1"]);
    s.writable[0].last = T0 + 950;
    s.writable[1].since = T0 + 900;
    r.coord_samples.push(s);
    assert_eq!(status_of(&r, "single coordinator writer"), Status::Fail);
}

#[test]
fn two_vip_holders_are_allowed_only_while_injected() {
    let injected = |healed: i64, sample_at: i64| Recorded {
        faults: vec![coord_fault(
            T0,
            Some(healed),
            Expect::VipAlarm {
                bound_ms: 1000,
                until: healed + 5000,
                holders_metric: Some(2),
            },
        )],
        coord_samples: vec![coord_sample(
            sample_at,
            &[C1],
            &["chaos-coord1", "chaos-coord2"],
        )],
        coord_alarms: vec![CoordAlarm {
            at: T0 + 800,
            instance: "ftsd2".into(),
            rule: "vip_holders".into(),
        }],
        ..Recorded::default()
    };
    let inside = injected(T0 + 4000, T0 + 2000);
    assert_eq!(
        status_of(&inside, "single coordinator writer"),
        Status::Pass
    );
    assert_eq!(status_of(&inside, "acted on as expected"), Status::Pass);
    let after = injected(T0 + 4000, T0 + 4000 + VIP_SETTLE_MS + 1);
    assert_eq!(status_of(&after, "single coordinator writer"), Status::Fail);
    let before = injected(T0 + 4000, T0 - 1);
    assert_eq!(
        status_of(&before, "single coordinator writer"),
        Status::Fail
    );
}

#[test]
fn a_lost_write_through_the_vip_fails() {
    let mut r = coordinator_failover();
    r.coord_survivors = Some(vec![1, 3]);
    assert_eq!(status_of(&r, "through the VIP lost"), Status::Fail);
    let mut r = coordinator_failover();
    r.coord_survivors = None;
    assert_eq!(
        status_of(&r, "through the VIP lost"),
        Status::Fail,
        "acknowledged writes whose fate cannot be read fail the check"
    );
}

#[test]
fn a_missing_late_repeated_or_wrong_coordinator_failover_fails() {
    let acted = |r: &Recorded| status_of(r, "acted on as expected");
    let mut none = coordinator_failover();
    none.coord_events.clear();
    assert_eq!(acted(&none), Status::Fail);
    let mut late = coordinator_failover();
    late.coord_events[1].at = T0 + 5800 + 2000 + 1;
    assert_eq!(acted(&late), Status::Fail);
    let mut twice = coordinator_failover();
    twice.coord_events.push(coord_event(T0 + 9000, "promoted"));
    assert_eq!(acted(&twice), Status::Fail);
    let mut wrong = coordinator_failover();
    wrong.coord_events[1].from = C2.into();
    assert_eq!(acted(&wrong), Status::Fail);
    let mut early = coordinator_failover();
    if let Expect::CoordinatorFailover { not_before, .. } = &mut early.faults[0].expect {
        *not_before = T0 + 4500;
    }
    assert_eq!(acted(&early), Status::Fail);
}

#[test]
fn writes_that_do_not_resume_on_the_new_coordinator_fail() {
    let mut r = coordinator_failover();
    r.coord_acks.retain(|a| a.server == C1);
    r.coord_survivors = Some(vec![1, 2]);
    assert_eq!(status_of(&r, "acted on as expected"), Status::Fail);
    let mut r = coordinator_failover();
    r.coord_acks[2].at = T0 + 10800 + 2000 + 1;
    assert_eq!(status_of(&r, "acted on as expected"), Status::Fail);
}

#[test]
fn a_coordinator_failover_where_none_is_allowed_fails() {
    let r = |events: Vec<CoordEvent>| Recorded {
        faults: vec![coord_fault(
            T0,
            Some(T0 + 12_000),
            Expect::NoCoordinatorFailover { until: T0 + 20_000 },
        )],
        coord_events: events,
        ..Recorded::default()
    };
    assert_eq!(status_of(&r(vec![]), "acted on as expected"), Status::Pass);
    assert_eq!(
        status_of(
            &r(vec![coord_event(T0 + 5000, "refused")]),
            "acted on as expected"
        ),
        Status::Pass,
        "a refusal is the expected outcome"
    );
    assert_eq!(
        status_of(
            &r(vec![coord_event(T0 + 5000, "intent")]),
            "acted on as expected"
        ),
        Status::Fail
    );
    assert_eq!(
        status_of(
            &r(vec![coord_event(T0 + 19_000, "promoted")]),
            "acted on as expected"
        ),
        Status::Fail,
        "a failover decided during the cut and recorded after it"
    );
}

#[test]
fn a_second_vip_holder_needs_its_alarm_its_gauge_and_no_failover() {
    let r = |alarm_at: Option<i64>, metric: Option<i64>, events: Vec<CoordEvent>| Recorded {
        faults: vec![coord_fault(
            T0,
            Some(T0 + 4000),
            Expect::VipAlarm {
                bound_ms: 1000,
                until: T0 + 12_000,
                holders_metric: metric,
            },
        )],
        coord_alarms: alarm_at
            .map(|at| CoordAlarm {
                at,
                instance: "ftsd3".into(),
                rule: "vip_holders".into(),
            })
            .into_iter()
            .collect(),
        coord_events: events,
        ..Recorded::default()
    };
    let acted = |r: Recorded| status_of(&r, "acted on as expected");
    assert_eq!(acted(r(Some(T0 + 900), Some(2), vec![])), Status::Pass);
    assert_eq!(acted(r(None, Some(2), vec![])), Status::Fail, "no alarm");
    assert_eq!(
        acted(r(Some(T0 + 1000 + 2000 + 1), Some(2), vec![])),
        Status::Fail,
        "a late alarm"
    );
    assert_eq!(
        acted(r(Some(T0 + 900), Some(1), vec![])),
        Status::Fail,
        "gauge at 1"
    );
    assert_eq!(
        acted(r(Some(T0 + 900), None, vec![])),
        Status::Fail,
        "gauge not read"
    );
    assert_eq!(
        acted(r(
            Some(T0 + 900),
            Some(2),
            vec![coord_event(T0 + 2000, "intent")]
        )),
        Status::Fail,
        "a failover caused by the second holder"
    );
}
