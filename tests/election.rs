//! Several `ftsd` instances against a real etcd (1 or 3 members), a real PostgreSQL catalog and
//! `fts-segsim`: one leader, takeover, fencing of a deposed leader, freeze without quorum.
//! The tests run one at a time (they each start several servers and measure takeovers).

mod support;

use std::time::{Duration, Instant, SystemTime};

use etcd_client::Client;
use fts_segsim::Fault;
use fts_testkit::etcd::EtcdCluster;
use ftsd::election::members::MemberInfo;
use ftsd::model::{Mode, Role, Status};
use support::elected::{
    assert_all_evidence_from, catalog_epoch, leaders, members, stop_the_leader_at, system,
    wait_leader, wait_members, LIMIT,
};
use support::{content0_failover, wait_for, System};

use Mode::NotInSync as N;
use Role::Primary as P;
use Status::Up as U;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn index_of(sys: &System, name: &str) -> usize {
    sys.daemons.iter().position(|d| d.name == name).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_elect_exactly_one_leader() {
    let _serial = SERIAL.lock().await;
    let etcd = EtcdCluster::start(1).await.unwrap();
    let mut sys = system(&etcd, "3s").await;
    for n in ["a", "b", "c"] {
        sys.spawn_ftsd(n, &[], "");
    }
    wait_for("3 members", LIMIT, || async {
        (members(&etcd).await.len() == 3).then_some(())
    })
    .await;
    let leader = wait_leader(&etcd, None).await;
    let epoch = leader.epoch.expect("leader publishes its epoch");
    // the election key names the same instance, and the catalog holds its epoch
    let mut c = Client::connect(etcd.endpoints(), None).await.unwrap();
    let resp = c.leader("/ftsd/test/leader").await.unwrap();
    assert_eq!(resp.kv().unwrap().value_str().unwrap(), leader.instance_id);
    assert_eq!(resp.kv().unwrap().create_revision(), epoch);
    wait_for("epoch recorded in the catalog", LIMIT, || async {
        (catalog_epoch(&sys).await == epoch).then_some(())
    })
    .await;
    // followers stand by: only the leader probes
    for _ in 0..20 {
        assert!(leaders(&etcd).await.len() <= 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let logs = sys.logs();
    assert_eq!(logs.matches("took office as leader").count(), 1, "{logs}");
    // and the leader acts: a failover carries its epoch
    sys.sim.set_fault(2, Fault::Down).await.unwrap();
    sys.wait_state(4, (P, U, N), LIMIT).await;
    let ev = sys.evidence().await;
    assert_eq!(
        (ev[0].0, ev[0].1.as_str()),
        (epoch, leader.instance_id.as_str()),
        "{}",
        sys.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_leader_hands_over_within_the_lease() {
    let _serial = SERIAL.lock().await;
    let etcd = EtcdCluster::start(1).await.unwrap();
    let mut sys = system(&etcd, "3s").await;
    for n in ["a", "b", "c"] {
        sys.spawn_ftsd(n, &[], "");
    }
    let old = wait_leader(&etcd, None).await;
    let i = index_of(&sys, &old.instance_id);
    let killed_at = SystemTime::now();
    let t0 = Instant::now();
    sys.daemons[i].child.kill().unwrap();
    let new = wait_for("new leader completes a cycle", LIMIT, || async {
        let l = leaders(&etcd).await;
        l.into_iter().find(|m| {
            m.instance_id != old.instance_id && m.last_cycle_at.is_some_and(|t| t > killed_at)
        })
    })
    .await;
    let took = t0.elapsed();
    let new_epoch = new.epoch.unwrap();
    assert!(new_epoch > old.epoch.unwrap(), "epochs increase");
    // TTL 3 s + 1 s is the target (benchmarked in docs/performance.md); allow slack for a
    // loaded CI machine without letting a lease-unrelated stall pass.
    assert!(
        took < Duration::from_secs(6),
        "takeover took {took:?}\n{}",
        sys.logs()
    );
    // the new leader acts
    sys.sim.set_fault(3, Fault::Down).await.unwrap();
    sys.wait_state(5, (P, U, N), LIMIT).await;
    assert_eq!(sys.evidence().await[0].0, new_epoch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leaders_pending_write_is_rejected_by_the_fence() {
    let _serial = SERIAL.lock().await;
    let etcd = EtcdCluster::start(1).await.unwrap();
    let mut sys = system(&etcd, "3s").await;
    // the first leader pauses between its authority check and its catalog write
    stop_the_leader_at(
        &mut sys,
        &etcd,
        &[("FTS_INJECT_DELAY_BEFORE_APPLY", "8s")],
        "fault injection: delaying the catalog write",
    )
    .await;

    // the follower takes over after the lease expires and fails the pair over itself
    let new = wait_leader(&etcd, Some("old")).await;
    sys.wait_state(4, (P, U, N), LIMIT).await;
    // PROMOTE follows the commit, so it may still be on its way when the rows are seen.
    let promotes = wait_for("PROMOTE of the new primary", LIMIT, || async {
        let n = sys.sim.view(4).unwrap().counters.promote;
        (n >= 1).then_some(n)
    })
    .await;

    sys.daemons[0].signal(libc::SIGCONT);
    wait_for("old leader's write fenced", LIMIT, || async {
        sys.daemons[0].log_text().contains("fenced").then_some(())
    })
    .await;
    let old_log = sys.daemons[0].log_text();
    assert!(
        old_log.contains("transition not applied; no message sent"),
        "{old_log}"
    );
    // nothing the old leader decided reached the catalog or a segment
    assert_eq!(sys.history().await, content0_failover());
    assert_all_evidence_from(&sys, new.epoch.unwrap(), "new").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        sys.sim.view(4).unwrap().counters.promote,
        promotes,
        "no PROMOTE from the old leader"
    );
    assert_eq!(catalog_epoch(&sys).await, new.epoch.unwrap());
}

/// An "old" leader started with the pause-before-send fault point and a "new" follower; the
/// mirror of content 0 is then lost, and this returns once the old leader has recorded it down
/// and sits between the authority check and the send of its SYNCREP_OFF.
async fn old_leader_about_to_send_syncrep_off(
    etcd: &EtcdCluster,
    ttl: &str,
    pause: &str,
) -> (System, MemberInfo) {
    let mut sys = system(etcd, ttl).await;
    sys.spawn_ftsd_env(
        "old",
        &[],
        "",
        &[(ftsd::engine::faults::PAUSE_BEFORE_SEND, pause)],
    );
    let old = wait_leader(etcd, None).await;
    assert_eq!(old.instance_id, "old");
    sys.spawn_ftsd("new", &[], "");
    wait_members(etcd, 2).await;
    sys.sim.set_fault(4, Fault::Down).await.unwrap();
    wait_for(
        "old leader between its check and the send",
        LIMIT,
        || async {
            sys.daemons[0]
                .log_text()
                .contains(ftsd::engine::faults::PAUSE_BEFORE_SEND_LOG)
                .then_some(())
        },
    )
    .await;
    (sys, old)
}

/// Issue 11 #1: a leader paused (SIGSTOP) after the authority check of a SYNCREP_OFF attempt
/// and before the send, resumed once a newer leader has recorded the pair back in sync, must
/// not deliver its message: the attempt is bounded by the act-by deadline, which has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leaders_message_is_never_delivered_after_a_new_epoch() {
    let _serial = SERIAL.lock().await;
    let etcd = EtcdCluster::start(1).await.unwrap();
    // the mirror goes: the old leader records it down and is about to send SYNCREP_OFF
    let (sys, old) = old_leader_about_to_send_syncrep_off(&etcd, "3s", "2s").await;
    sys.daemons[0].signal(libc::SIGSTOP);
    assert_eq!(
        sys.row(4).await.state_tuple(),
        (Role::Mirror, Status::Down, N)
    );

    // the mirror comes back; the new leader takes office and records the pair in sync
    sys.sim.clear(4).await.unwrap();
    let new = wait_leader(&etcd, Some("old")).await;
    assert!(new.epoch > old.epoch);
    sys.wait_state(4, (Role::Mirror, U, Mode::InSync), LIMIT)
        .await;
    let before = sys.sim.view(2).unwrap().counters.syncrep_off;

    // the old leader resumes past its act-by deadline: its SYNCREP_OFF must never arrive
    sys.daemons[0].signal(libc::SIGCONT);
    wait_for("old leader done with the message", LIMIT, || async {
        let log = sys.daemons[0].log_text();
        (log.contains("message not sent") || log.contains("message delivered")).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let primary = sys.sim.view(2).unwrap();
    assert_eq!(
        primary.counters.syncrep_off,
        before,
        "a SYNCREP_OFF arrived after the new epoch: {}",
        sys.logs()
    );
    assert!(
        primary.syncrep,
        "the primary still replicates synchronously"
    );
    assert_eq!(sys.row(2).await.state_tuple(), (P, U, Mode::InSync));
}

/// Issue 11 #1: on SIGTERM the leader stops its probe loop (letting a decided message finish
/// under its lease) before it resigns, so no follower is in office while that message is in
/// flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_leader_finishes_its_message_before_it_resigns() {
    let _serial = SERIAL.lock().await;
    let etcd = EtcdCluster::start(1).await.unwrap();
    let (sys, old) = old_leader_about_to_send_syncrep_off(&etcd, "10s", "1500ms").await;
    sys.daemons[0].signal(libc::SIGTERM);
    let new = wait_leader(&etcd, Some("old")).await;
    let delivered = sys.sim.view(2).unwrap().counters.syncrep_off;
    assert!(new.epoch > old.epoch);
    assert!(
        delivered >= 1,
        "a follower took office before the old leader's SYNCREP_OFF was done: {}",
        sys.logs()
    );
    let old_log = sys.daemons[0].log_text();
    let sent_at = old_log.find("message delivered").expect("delivered");
    let resigned_at = old_log.find("resigned leadership").expect("resigned");
    assert!(sent_at < resigned_at, "{old_log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_etcd_quorum_nothing_is_written_until_it_returns() {
    let _serial = SERIAL.lock().await;
    let mut etcd = EtcdCluster::start(3).await.unwrap();
    let mut sys = system(&etcd, "3s").await;
    sys.spawn_ftsd("a", &[], "");
    sys.spawn_ftsd("b", &[], "");
    let leader = wait_leader(&etcd, None).await;
    let leader = index_of(&sys, &leader.instance_id);
    etcd.kill(1).unwrap();
    etcd.kill(2).unwrap();
    // the leader's act-by deadline passes within the TTL (a follower's campaign also "steps
    // down" when its lease is lost, possibly earlier: only the leader's own line counts)
    wait_for("leader stepped down", LIMIT, || async {
        sys.daemons[leader]
            .log_text()
            .contains("stepped down")
            .then_some(())
    })
    .await;
    sys.sim.set_fault(2, Fault::Down).await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(sys.history().await.is_empty(), "{}", sys.logs());
    assert_eq!(sys.sim.view(4).unwrap().counters.promote, 0);
    assert!(
        sys.logs().contains("observe-only"),
        "probing continues observe-only"
    );

    etcd.restart(1).await.unwrap();
    etcd.restart(2).await.unwrap();
    sys.wait_state(4, (P, U, N), LIMIT).await;
    assert_eq!(sys.history().await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_resigns_and_a_follower_takes_over_well_under_the_ttl() {
    let _serial = SERIAL.lock().await;
    let etcd = EtcdCluster::start(1).await.unwrap();
    let mut sys = system(&etcd, "10s").await;
    sys.spawn_ftsd("a", &[], "");
    sys.spawn_ftsd("b", &[], "");
    let old = wait_leader(&etcd, None).await;
    wait_for("2 members", LIMIT, || async {
        (members(&etcd).await.len() == 2).then_some(())
    })
    .await;
    let i = index_of(&sys, &old.instance_id);
    let t0 = Instant::now();
    sys.daemons[i].signal(libc::SIGTERM);
    wait_leader(&etcd, Some(&old.instance_id)).await;
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "takeover after resign took {took:?} (TTL 10s)"
    );
    let st = wait_for("old leader exits", LIMIT, || {
        let st = sys.daemons[i].child.try_wait().unwrap();
        async move { st }
    })
    .await;
    assert!(st.success(), "{}", sys.logs());
    assert!(sys.daemons[i].log_text().contains("resigned leadership"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_an_etcd_member_never_doubles_leadership() {
    let _serial = SERIAL.lock().await;
    let mut etcd = EtcdCluster::start(3).await.unwrap();
    let mut sys = system(&etcd, "3s").await;
    for n in ["a", "b", "c"] {
        sys.spawn_ftsd(n, &[], "");
    }
    wait_leader(&etcd, None).await;
    for member in 0..3 {
        etcd.kill(member).unwrap();
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until {
            let l = leaders(&etcd).await;
            assert!(l.len() <= 1, "two leaders: {l:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        etcd.restart(member).await.unwrap();
        wait_leader(&etcd, None).await;
    }
    // the epochs the catalog saw only ever increased, and a failover still works
    sys.sim.set_fault(2, Fault::Down).await.unwrap();
    sys.wait_state(4, (P, U, N), LIMIT).await;
    let logs = sys.logs();
    let mut epochs: Vec<i64> = logs
        .lines()
        .filter(|l| l.contains("took office as leader"))
        .filter_map(|l| {
            l.split("epoch=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    let n = epochs.len();
    epochs.sort();
    epochs.dedup();
    assert_eq!(epochs.len(), n, "each term has its own epoch: {epochs:?}");
}
