//! The ledger's verdicts, case by case.

use super::*;
use crate::model::{Mode, Status};

use Mode::{InSync as S, NotInSync as N};
use Role::{Mirror as M, Primary as P};
use Status::{Down as D, Up as U};

fn st(role: Role, status: Status, mode: Mode) -> SegmentState {
    SegmentState { role, status, mode }
}

fn row(dbid: Dbid, content: ContentId, s: SegmentState) -> Segment {
    Segment {
        dbid,
        content,
        role: s.role,
        preferred_role: if dbid < 4 { P } else { M },
        mode: s.mode,
        status: s.status,
        port: 6000 + dbid as i32,
        hostname: "h".into(),
        address: "127.0.0.1".into(),
        datadir: format!("/d/{dbid}"),
    }
}

/// Content 0 (dbids 2/4) and content 1 (dbids 3/5).
fn config(c0: (SegmentState, SegmentState)) -> SegmentConfig {
    SegmentConfig::new(vec![
        row(2, 0, c0.0),
        row(3, 1, st(P, U, S)),
        row(4, 0, c0.1),
        row(5, 1, st(M, U, S)),
    ])
}

fn healthy() -> SegmentConfig {
    config((st(P, U, S), st(M, U, S)))
}

fn failed_over() -> SegmentConfig {
    config((st(M, D, N), st(P, U, N)))
}

fn failover_decision(cfg: &SegmentConfig) -> ShadowDecision {
    let p = cfg.by_dbid(2).unwrap();
    let m = cfg.by_dbid(4).unwrap();
    ShadowDecision {
        content: 0,
        rule: Rule::Failover,
        updates: vec![
            RowUpdate::new(p, st(M, D, N)),
            RowUpdate::new(m, st(P, U, N)),
        ],
        mirror_dbid: 4,
        mirror_check: Some(MirrorCheck::AnswersAsMirror),
    }
}

fn nothing(content: ContentId, rule: Rule) -> ShadowDecision {
    ShadowDecision {
        content,
        rule,
        updates: Vec::new(),
        mirror_dbid: if content == 0 { 4 } else { 5 },
        mirror_check: None,
    }
}

const W: Duration = Duration::from_secs(30);

fn kinds(v: &[Verdict]) -> Vec<(VerdictKind, ContentId, &'static str)> {
    v.iter().map(|v| (v.kind, v.content, v.first)).collect()
}

#[test]
fn shadow_first_then_the_incumbent_does_the_same() {
    let t = Instant::now();
    let mut l = Ledger::new(W);
    assert!(l.observe(&healthy(), t).is_empty());
    let cfg = healthy();
    assert!(l
        .decided(&[failover_decision(&cfg), nothing(1, Rule::Healthy)], t)
        .is_empty());
    assert_eq!(l.pending(), (1, 0));
    // The same decision next cycle keeps the original deadline.
    l.decided(&[failover_decision(&cfg)], t + Duration::from_secs(5));
    let v = l.observe(&failed_over(), t + Duration::from_secs(10));
    assert_eq!(kinds(&v), vec![(VerdictKind::Agree, 0, "shadow")]);
    assert_eq!(v[0].shadow_rule, Some(Rule::Failover));
    assert_eq!(l.pending(), (0, 0));
}

#[test]
fn incumbent_first_is_judged_on_the_rows_before_its_change() {
    let t = Instant::now();
    let mut l = Ledger::new(W);
    l.observe(&healthy(), t);
    assert!(l.observe(&failed_over(), t).is_empty());
    assert_eq!(l.pending(), (0, 1));
    // The shadow decides on the content as it was.
    let view = l.view(&failed_over());
    assert_eq!(view.by_dbid(2).unwrap().state(), st(P, U, S));
    assert_eq!(view.by_dbid(3).unwrap().state(), st(P, U, S));
    let v = l.decided(&[failover_decision(&view)], t);
    assert_eq!(kinds(&v), vec![(VerdictKind::Agree, 0, "incumbent")]);
    // Released: the next view is the real configuration.
    assert_eq!(l.view(&failed_over()), failed_over());
}

#[test]
fn a_mirror_already_promoted_by_the_incumbent_confirms_the_failover() {
    let t = Instant::now();
    let mut l = Ledger::new(W);
    l.observe(&healthy(), t);
    l.observe(&failed_over(), t);
    let mut d = nothing(0, Rule::FailoverUnconfirmed);
    d.mirror_check = Some(MirrorCheck::AnswersAsPrimary);
    let v = l.decided(&[d.clone()], t);
    assert_eq!(kinds(&v), vec![(VerdictKind::Agree, 0, "incumbent")]);

    // Unreachable is not an excuse: the shadow would not have failed over.
    let mut l = Ledger::new(W);
    l.observe(&healthy(), t);
    l.observe(&failed_over(), t);
    d.mirror_check = Some(MirrorCheck::Unreachable {
        kind: crate::wire::failure::FailureKind::Refused,
    });
    let v = l.decided(&[d], t);
    assert_eq!(
        kinds(&v),
        vec![(VerdictKind::IncumbentOnly, 0, "incumbent")]
    );
}

#[test]
fn a_change_the_shadow_would_not_make_diverges() {
    let t = Instant::now();
    let mut l = Ledger::new(W);
    l.observe(&healthy(), t);
    // Someone marks a healthy mirror down.
    let rogue = config((st(P, U, N), st(M, D, N)));
    l.observe(&rogue, t);
    let v = l.decided(&[nothing(0, Rule::Healthy)], t);
    assert_eq!(
        kinds(&v),
        vec![(VerdictKind::IncumbentOnly, 0, "incumbent")]
    );
    assert_eq!(v[0].incumbent, vec![(2, st(P, U, N)), (4, st(M, D, N))]);
    assert_eq!(v[0].shadow_rule, Some(Rule::Healthy));
}

#[test]
fn an_expectation_the_incumbent_never_meets_runs_out() {
    let t = Instant::now();
    let mut l = Ledger::new(W);
    l.observe(&healthy(), t);
    l.decided(&[failover_decision(&healthy())], t);
    assert!(l
        .observe(&healthy(), t + W - Duration::from_secs(1))
        .is_empty());
    let v = l.observe(&healthy(), t + W);
    assert_eq!(kinds(&v), vec![(VerdictKind::ShadowOnly, 0, "shadow")]);
    assert_eq!(l.pending(), (0, 0));
}

#[test]
fn a_different_change_differs() {
    let t = Instant::now();
    let mut l = Ledger::new(W);
    l.observe(&healthy(), t);
    l.decided(&[failover_decision(&healthy())], t);
    // The incumbent only marked the mirror down instead.
    let v = l.observe(&config((st(P, U, N), st(M, D, N))), t);
    assert_eq!(kinds(&v), vec![(VerdictKind::Different, 0, "shadow")]);
}

#[test]
fn a_fault_that_heals_before_anyone_acts_withdraws_the_expectation() {
    let t = Instant::now();
    let mut l = Ledger::new(W);
    l.observe(&healthy(), t);
    l.decided(&[failover_decision(&healthy())], t);
    assert!(l.decided(&[nothing(0, Rule::Healthy)], t).is_empty());
    assert_eq!(l.pending(), (0, 0));
    assert!(l.observe(&healthy(), t + W * 2).is_empty());
}

#[test]
fn a_held_content_the_shadow_never_decides_on_is_the_incumbents_alone() {
    let t = Instant::now();
    let mut l = Ledger::new(W);
    l.observe(&healthy(), t);
    l.observe(&failed_over(), t);
    assert!(l.decided(&[nothing(1, Rule::Healthy)], t).is_empty());
    let v = l.decided(&[], t + W);
    assert_eq!(
        kinds(&v),
        vec![(VerdictKind::IncumbentOnly, 0, "incumbent")]
    );
    assert_eq!(v[0].shadow_rule, None);
}
