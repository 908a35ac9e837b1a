use std::collections::HashMap;
use std::sync::Mutex;

use super::*;

/// Peers that answer from a script; an unscripted peer hangs until the deadline.
struct Scripted {
    live: Result<Vec<PeerMember>, String>,
    answers: HashMap<String, (Duration, PeerAnswer)>,
    asked: Mutex<Vec<(String, Instant)>>,
}

impl Scripted {
    fn new(ids: &[&str]) -> Self {
        Scripted {
            live: Ok(ids
                .iter()
                .map(|id| PeerMember {
                    instance_id: id.to_string(),
                    api_address: format!("{id}:1"),
                    leader: false,
                    last_cycle_at: None,
                })
                .collect()),
            answers: HashMap::new(),
            asked: Mutex::new(Vec::new()),
        }
    }

    fn answer(mut self, id: &str, after: Duration, a: PeerAnswer) -> Self {
        self.answers.insert(id.to_string(), (after, a));
        self
    }
}

impl Peers for Scripted {
    fn live_members(&self) -> BoxFuture<'_, Result<Vec<PeerMember>, String>> {
        Box::pin(async move { self.live.clone() })
    }

    fn confirm_down<'a>(
        &'a self,
        peer: &'a PeerMember,
        _dbid: Dbid,
        _window: Duration,
        deadline: Instant,
    ) -> BoxFuture<'a, PeerAnswer> {
        Box::pin(async move {
            self.asked
                .lock()
                .unwrap()
                .push((peer.instance_id.clone(), deadline));
            match self.answers.get(&peer.instance_id) {
                Some((after, a)) => {
                    tokio::time::sleep(*after).await;
                    a.clone()
                }
                None => {
                    tokio::time::sleep_until(deadline.into()).await;
                    PeerAnswer::Error("deadline".into())
                }
            }
        })
    }

    fn report_down<'a>(
        &'a self,
        _leader: &'a PeerMember,
        _dbid: Dbid,
        _observed_at: SystemTime,
        _failure: FailureKind,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}

fn gate(peers: Option<Arc<dyn Peers>>, table: Arc<ObservationTable>) -> SecondOpinion {
    SecondOpinion {
        table,
        peers,
        window: Duration::from_secs(10).into(),
        confirm_timeout: Some(Duration::from_millis(300)),
        min_down: Duration::ZERO,
        wake: None,
    }
}

fn down() -> PeerAnswer {
    PeerAnswer::Seen {
        failure: Some(FailureKind::Timeout),
        age: Duration::from_millis(5),
        probed: false,
    }
}

fn up() -> PeerAnswer {
    PeerAnswer::Seen {
        failure: None,
        age: Duration::from_millis(5),
        probed: false,
    }
}

fn table_with_own_loss() -> Arc<ObservationTable> {
    let t = Arc::new(ObservationTable::default());
    t.record(2, Some(FailureKind::Timeout));
    t
}

#[tokio::test]
async fn without_peers_the_own_observation_decides() {
    let g = gate(None, table_with_own_loss());
    assert!(matches!(g.confirm("a", 2, None).await, Verdict::Alone));
}

#[tokio::test]
async fn the_only_live_member_decides_alone() {
    let g = gate(Some(Arc::new(Scripted::new(&["a"]))), table_with_own_loss());
    assert!(matches!(g.confirm("a", 2, None).await, Verdict::Alone));
}

#[tokio::test]
async fn a_loss_only_the_leader_sees_is_not_confirmed() {
    let peers = Scripted::new(&["a", "b", "c"])
        .answer("b", Duration::ZERO, up())
        .answer("c", Duration::ZERO, up());
    let g = gate(Some(Arc::new(peers)), table_with_own_loss());
    let Verdict::NotConfirmed(e) = g.confirm("a", 2, None).await else {
        panic!("confirmed");
    };
    assert_eq!(e.tally.confirmed, vec!["a".to_string()]);
    assert_eq!(
        e.tally.summary(),
        "confirmed by 1 of 3 live members (2 needed)"
    );
    assert_eq!(e.confirmations.len(), 3);
}

#[tokio::test]
async fn one_peer_that_saw_it_makes_a_majority_of_three_without_waiting_for_the_third() {
    // c never answers: the gate must not wait for it once b has confirmed.
    let peers = Scripted::new(&["a", "b", "c"]).answer("b", Duration::ZERO, down());
    let g = SecondOpinion {
        confirm_timeout: Some(Duration::from_secs(3600)),
        ..gate(Some(Arc::new(peers)), table_with_own_loss())
    };
    let Verdict::Confirmed(e) = g.confirm("a", 2, None).await else {
        panic!("not confirmed");
    };
    assert_eq!(e.tally.confirmed, vec!["a".to_string(), "b".to_string()]);
}

#[tokio::test]
async fn a_report_already_received_confirms_without_asking() {
    let table = table_with_own_loss();
    table.report(2, "c", SystemTime::now(), FailureKind::Refused);
    let peers = Arc::new(Scripted::new(&["a", "b", "c"]));
    let g = gate(Some(peers.clone()), table);
    let Verdict::Confirmed(e) = g.confirm("a", 2, None).await else {
        panic!("not confirmed");
    };
    assert!(peers.asked.lock().unwrap().is_empty());
    assert_eq!(e.confirmations[1].via, "report");
}

#[tokio::test]
async fn a_report_arriving_while_waiting_counts() {
    let table = table_with_own_loss();
    let peers =
        Arc::new(Scripted::new(&["a", "b", "c"]).answer("b", Duration::from_millis(50), up()));
    let g = SecondOpinion {
        confirm_timeout: Some(Duration::from_millis(500)),
        ..gate(Some(peers), table.clone())
    };
    let reporter = {
        let table = table.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            table.report(2, "c", SystemTime::now(), FailureKind::Timeout);
        })
    };
    let verdict = g.confirm("a", 2, None).await;
    reporter.await.unwrap();
    assert!(matches!(verdict, Verdict::Confirmed(_)), "{verdict:?}");
}

#[tokio::test]
async fn prober_faults_and_non_members_do_not_confirm() {
    let table = table_with_own_loss();
    table.report(2, "stranger", SystemTime::now(), FailureKind::Timeout);
    let peers = Scripted::new(&["a", "b", "c"])
        .answer(
            "b",
            Duration::ZERO,
            PeerAnswer::Seen {
                failure: Some(FailureKind::Auth),
                age: Duration::ZERO,
                probed: true,
            },
        )
        .answer("c", Duration::ZERO, PeerAnswer::Unknown);
    let g = gate(Some(Arc::new(peers)), table);
    assert!(matches!(
        g.confirm("a", 2, None).await,
        Verdict::NotConfirmed(_)
    ));
}

#[tokio::test]
async fn an_unreadable_registry_never_confirms() {
    let peers = Scripted {
        live: Err("etcd unavailable".into()),
        ..Scripted::new(&[])
    };
    let g = gate(Some(Arc::new(peers)), table_with_own_loss());
    let Verdict::NotConfirmed(e) = g.confirm("a", 2, None).await else {
        panic!("confirmed");
    };
    assert!(e.registry_error.is_some());
}

#[tokio::test]
async fn the_wait_ends_before_the_act_by_deadline() {
    let peers = Arc::new(Scripted::new(&["a", "b", "c"]));
    let g = SecondOpinion {
        confirm_timeout: Some(Duration::from_secs(3600)),
        ..gate(Some(peers.clone()), table_with_own_loss())
    };
    let act_by = Instant::now() + Duration::from_millis(400);
    let verdict = g.confirm("a", 2, Some(act_by)).await;
    assert!(matches!(verdict, Verdict::NotConfirmed(_)));
    let asked = peers.asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 2);
    for (_, deadline) in asked {
        assert!(deadline + ACT_BY_RESERVE <= act_by);
    }
}

/// The refusal wakes the probe loop once the minimum has passed, so the loss is decided again
/// then rather than one interval later; without a loss to wait for, nothing wakes it.
#[tokio::test]
async fn a_refusal_for_min_down_wakes_the_loop_once_the_minimum_has_passed() {
    let wake = Arc::new(Notify::new());
    let g = SecondOpinion {
        min_down: Duration::from_millis(50),
        wake: Some(wake.clone()),
        ..gate(None, table_with_own_loss())
    };
    let asked = Instant::now();
    let Verdict::DownTooBriefly { down } = g.confirm("a", 2, None).await else {
        panic!("not refused");
    };
    tokio::time::timeout(Duration::from_secs(60), wake.notified())
        .await
        .expect("the loop was never woken");
    assert!(down + asked.elapsed() >= Duration::from_millis(50));
    // Once down long enough: no refusal, no wake.
    assert!(matches!(g.confirm("a", 2, None).await, Verdict::Alone));
    let quiet = tokio::time::timeout(Duration::from_millis(200), wake.notified()).await;
    assert!(quiet.is_err(), "woken without a refusal");
}

#[tokio::test]
async fn a_primary_down_for_less_than_min_down_waits() {
    let g = SecondOpinion {
        min_down: Duration::from_secs(3600),
        ..gate(None, table_with_own_loss())
    };
    assert!(matches!(
        g.confirm("a", 2, None).await,
        Verdict::DownTooBriefly { .. }
    ));
}
