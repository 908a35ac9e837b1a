use proptest::prelude::*;

use super::*;

fn view() -> SwitchoverView {
    SwitchoverView {
        authority: Authority::Acting,
        catalog_in_sync: true,
        probe_in_sync: Ok(()),
        standby_in_recovery: Ok(()),
    }
}

#[test]
fn check_table() {
    assert_eq!(check(&view()), Ok(()));
    let cases: Vec<(SwitchoverView, SwitchoverRefusal)> = vec![
        (
            SwitchoverView {
                authority: Authority::Paused,
                ..view()
            },
            SwitchoverRefusal::Paused,
        ),
        (
            SwitchoverView {
                authority: Authority::NotActing,
                ..view()
            },
            SwitchoverRefusal::NotActing,
        ),
        (
            SwitchoverView {
                catalog_in_sync: false,
                ..view()
            },
            SwitchoverRefusal::CatalogNotInSync,
        ),
        (
            SwitchoverView {
                probe_in_sync: Err("lag 99 > 16".into()),
                ..view()
            },
            SwitchoverRefusal::NotInSync("lag 99 > 16".into()),
        ),
        (
            SwitchoverView {
                standby_in_recovery: Err("out of recovery".into()),
                ..view()
            },
            SwitchoverRefusal::StandbyNotInRecovery("out of recovery".into()),
        ),
        // the pause outranks everything else: maintenance means hands off
        (
            SwitchoverView {
                authority: Authority::Paused,
                probe_in_sync: Err("x".into()),
                ..view()
            },
            SwitchoverRefusal::Paused,
        ),
    ];
    for (v, want) in cases {
        assert_eq!(check(&v), Err(want), "{v:?}");
    }
}

#[test]
fn the_happy_path() {
    let mut s = FIRST;
    let mut seen = vec![s];
    while !is_final(s) {
        s = advance(s, true, true);
        seen.push(s);
    }
    assert_eq!(
        seen,
        [
            Step::ReadOnly,
            Step::WaitReplay,
            Step::RecordTransition,
            Step::Promote,
            Step::Done
        ]
    );
}

#[test]
fn replay_not_reached_is_undone() {
    assert_eq!(advance(Step::WaitReplay, false, true), Step::Undo);
    assert_eq!(advance(Step::Undo, true, true), Step::Aborted);
    // deposed while waiting: nothing more is sent, the next leader undoes it
    assert_eq!(
        advance(Step::WaitReplay, false, false),
        Step::Stopped(Stop::AuthorityLost)
    );
    assert_eq!(
        advance(Step::WaitReplay, true, false),
        Step::Stopped(Stop::AuthorityLost)
    );
}

#[test]
fn after_the_catalog_records_the_new_primary_there_is_no_undo() {
    assert_eq!(
        advance(Step::Promote, false, true),
        Step::Stopped(Stop::PromoteFailed)
    );
    assert_eq!(
        advance(Step::RecordTransition, true, false),
        Step::Stopped(Stop::AuthorityLost)
    );
}

proptest! {
    /// Whatever the steps' results and however authority comes and goes: PROMOTE only right
    /// after the catalog recorded the new primary, that only right after the replay was
    /// reached, never an undo once the catalog has it, never a step without authority, and an
    /// end within a few steps.
    #[test]
    fn the_order_holds(results in proptest::collection::vec((any::<bool>(), any::<bool>()), 8)) {
        let mut step = FIRST;
        let mut recorded = false;
        let mut n = 0;
        for (ok, authority) in results {
            if is_final(step) {
                break;
            }
            let next = advance(step, ok, authority);
            if next == Step::Promote {
                prop_assert!(step == Step::RecordTransition && ok);
            }
            if next == Step::RecordTransition {
                prop_assert!(step == Step::WaitReplay && ok);
            }
            if step == Step::RecordTransition && ok {
                recorded = true;
            }
            if recorded {
                prop_assert!(next != Step::Undo && next != Step::Aborted);
            }
            if !authority && !is_final(next) {
                prop_assert!(false, "{next:?} without authority");
            }
            step = next;
            n += 1;
        }
        prop_assert!(n <= 5);
    }
}
