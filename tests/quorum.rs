//! The second opinion end to end (docs/safety.md): three real `ftsd` binaries elected through
//! a real etcd, a real PostgreSQL catalog and `fts-segsim`. Each instance binds its probes to
//! its own loopback address (`probe.source_address`), so the simulator can cut one instance
//! off the segments (`block_client`) while the others still reach them.
//! Layout (2 pairs): content 0 = primary dbid 2 + mirror dbid 4; content 1 = 3 + 5.

mod support;

use std::net::IpAddr;
use std::time::Duration;

use fts_segsim::Fault;
use fts_testkit::etcd::EtcdCluster;
use ftsd::model::{Mode, Role, Status};
use serde_json::Value;
use support::elected::{system, wait_leader, wait_members};
use support::{addresses, content0_failover, ftsctl, wait_for, System};

/// Generous: the machine is shared and loaded.
const LIMIT: Duration = Duration::from_secs(90);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Starts "a" (the leader, probing from 127.0.0.2), then "b" (127.0.0.3) and "c"
/// (127.0.0.4), with the second opinion on (`observe.mode` is off by default), and waits
/// until all three are registered.
async fn three_instances(etcd: &EtcdCluster) -> System {
    let mut sys = system(etcd, "3s").await;
    sys.spawn_ftsd_env(
        "a",
        &[],
        "",
        &[
            ("FTSD_PROBE_SOURCE_ADDRESS", "127.0.0.2"),
            ("FTSD_OBSERVE_MODE", "continuous"),
        ],
    );
    let leader = wait_leader(etcd, None).await;
    assert_eq!(leader.instance_id, "a");
    sys.spawn_ftsd_env(
        "b",
        &[],
        "",
        &[
            ("FTSD_PROBE_SOURCE_ADDRESS", "127.0.0.3"),
            ("FTSD_OBSERVE_MODE", "continuous"),
        ],
    );
    sys.spawn_ftsd_env(
        "c",
        &[],
        "",
        &[
            ("FTSD_PROBE_SOURCE_ADDRESS", "127.0.0.4"),
            ("FTSD_OBSERVE_MODE", "continuous"),
        ],
    );
    wait_members(etcd, 3).await;
    sys
}

/// Evidence rows with their second-opinion section.
async fn opinions(sys: &System) -> Vec<(String, i64, Value)> {
    sys.evidence()
        .await
        .into_iter()
        .filter(|(_, _, _, ev)| ev.get("second_opinion").is_some())
        .map(|(_, _, rule, ev)| {
            let content = ev["content"].as_i64().unwrap_or(-2);
            (rule, content, ev["second_opinion"].clone())
        })
        .collect()
}

fn confirmed(opinion: &Value) -> Vec<String> {
    opinion["tally"]["confirmed"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_unreachable_from_the_leader_only_fail_nothing_over() {
    let etcd = EtcdCluster::start(1).await.unwrap();
    let sys = three_instances(&etcd).await;
    sys.sim.block_client(ip("127.0.0.2"));
    // The leader decides to fail both contents over and asks the others, who still reach
    // every primary: the count stays at 1 of 3 and the failovers are refused.
    let refused = wait_for(
        "refusals with the second opinion of 1 of 3",
        LIMIT,
        || async {
            let o = opinions(&sys).await;
            let contents: std::collections::BTreeSet<i64> = o
                .iter()
                .filter(|(rule, _, op)| rule == "failover_unconfirmed" && confirmed(op) == ["a"])
                .map(|(_, c, _)| *c)
                .collect();
            (contents.len() == 2).then_some(o)
        },
    )
    .await;
    for (_, _, op) in &refused {
        assert_eq!(
            op["tally"]["live"].as_array().map(Vec::len),
            Some(3),
            "{op}"
        );
    }
    let healthy = |t: &str| t.matches("probe cycle finished, all healthy").count();
    let log = &sys.daemons[0];
    let before = healthy(&log.log_text());
    sys.sim.unblock_client(ip("127.0.0.2"));
    // The leader's probes answer again: nothing is left to decide.
    wait_for("the leader to see the primaries again", LIMIT, || async {
        (healthy(&log.log_text()) > before).then_some(())
    })
    .await;
    assert!(sys.history().await.is_empty(), "{}", sys.logs());
    for s in sys.rows().await.iter().filter(|s| s.content >= 0) {
        assert_eq!(s.role, s.preferred_role, "dbid {}", s.dbid);
        assert_eq!(
            (s.status, s.mode),
            (Status::Up, Mode::InSync),
            "dbid {}",
            s.dbid
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_primary_loss_is_failed_over_once_with_confirmations_from_a_majority() {
    let etcd = EtcdCluster::start(1).await.unwrap();
    let sys = three_instances(&etcd).await;
    sys.sim.set_fault(2, Fault::Down).await.unwrap();
    sys.wait_state(4, (Role::Primary, Status::Up, Mode::NotInSync), LIMIT)
        .await;
    sys.wait_state(2, (Role::Mirror, Status::Down, Mode::NotInSync), LIMIT)
        .await;
    assert_eq!(sys.history().await, content0_failover(), "{}", sys.logs());
    let failovers: Vec<_> = opinions(&sys)
        .await
        .into_iter()
        .filter(|(rule, _, _)| rule == "failover")
        .collect();
    assert_eq!(failovers.len(), 1, "{failovers:?}");
    let who = confirmed(&failovers[0].2);
    assert!(who.len() >= 2, "{who:?}");
    assert!(who.contains(&"a".to_string()), "{who:?}");
    // `ftsctl explain` shows the count and who saw what.
    let (api, _) = addresses(&sys.daemons[0].config);
    let out = ftsctl(&api, &["explain", "0"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("quorum:     confirmed by"), "{text}");
    for member in &who {
        assert!(
            text.contains(&format!("            {member}: down")),
            "{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_only_one_follower_cannot_reach_is_not_failed_over() {
    let etcd = EtcdCluster::start(1).await.unwrap();
    let sys = three_instances(&etcd).await;
    sys.sim.block_client(ip("127.0.0.3"));
    // "b" observes, sees every primary fail and reports it to the leader, which records
    // the reports and starts cycles early, but its own probes and "c"'s answer: no quorum.
    let leader = &sys.daemons[0];
    wait_for("the leader to receive b's reports", LIMIT, || async {
        let text = leader.log_text();
        (text.contains("a member reported a primary lost") && text.contains("reporter=b"))
            .then_some(())
    })
    .await;
    // Several more of the leader's cycles with b's reports on record.
    let cycles = |t: &str| t.matches("probe cycle finished").count();
    let seen = cycles(&leader.log_text());
    wait_for("more leader cycles", LIMIT, || async {
        (cycles(&leader.log_text()) >= seen + 5).then_some(())
    })
    .await;
    sys.sim.unblock_client(ip("127.0.0.3"));
    assert!(sys.history().await.is_empty(), "{}", sys.logs());
    assert!(
        opinions(&sys).await.is_empty(),
        "the leader never had a failover to confirm"
    );
}
