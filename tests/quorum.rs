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
/// (127.0.0.4), with the second opinion on (`observe.mode` is off by default), observing
/// continuously, and waits until all three are registered.
async fn three_instances(etcd: &EtcdCluster) -> System {
    three_instances_observing(etcd, "continuous").await
}

/// Like [`three_instances`], with `observe.mode = mode`.
async fn three_instances_observing(etcd: &EtcdCluster, mode: &str) -> System {
    let mut sys = system(etcd, "3s").await;
    let spawn = |sys: &mut System, name: &str, ip: &str| {
        sys.spawn_ftsd_env(
            name,
            &[],
            "",
            &[
                ("FTSD_PROBE_SOURCE_ADDRESS", ip),
                ("FTSD_OBSERVE_MODE", mode),
            ],
        );
    };
    spawn(&mut sys, "a", "127.0.0.2");
    let leader = wait_leader(etcd, None).await;
    assert_eq!(leader.instance_id, "a");
    spawn(&mut sys, "b", "127.0.0.3");
    spawn(&mut sys, "c", "127.0.0.4");
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

/// One sample of a daemon's metrics, e.g. `ftsd_observation_rounds_total` (None while the
/// endpoint cannot be reached or the series is absent).
fn metric(d: &support::Daemon, series: &str) -> Option<f64> {
    let (_, metrics) = addresses(&d.config);
    let text = ureq::get(&format!("http://{metrics}/metrics"))
        .call()
        .ok()?
        .into_body()
        .read_to_string()
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// A follower's observation counters: (rounds, PROBEs in rounds, PROBEs to answer
/// `ConfirmDown`).
fn observation(d: &support::Daemon) -> (f64, f64, f64) {
    let get = |series: &str| metric(d, series).unwrap_or_else(|| panic!("{}: no {series}", d.name));
    (
        get("ftsd_observation_rounds_total"),
        get("ftsd_observation_probes_total{trigger=\"round\"}"),
        get("ftsd_observation_probes_total{trigger=\"confirm\"}"),
    )
}

/// Waits for `n` more of the leader's cycles than now (its log counts them).
async fn leader_cycles(leader: &support::Daemon, n: usize) {
    let cycles = |t: &str| t.matches("probe cycle finished").count();
    let seen = cycles(&leader.log_text());
    wait_for(&format!("{n} more leader cycles"), LIMIT, || async {
        (cycles(&leader.log_text()) >= seen + n).then_some(())
    })
    .await;
}

/// The followers "b" and "c" of a healthy on-demand system send no PROBE at all: no round,
/// nothing asked.
async fn followers_idle(sys: &System) {
    leader_cycles(&sys.daemons[0], 3).await;
    for f in &sys.daemons[1..] {
        assert_eq!(observation(f), (0.0, 0.0, 0.0), "{}", f.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_a_real_primary_loss_is_failed_over_once_with_confirmations_asked_for() {
    let etcd = EtcdCluster::start(1).await.unwrap();
    let sys = three_instances_observing(&etcd, "on-demand").await;
    followers_idle(&sys).await;
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
    let opinion = &failovers[0].2;
    let who = confirmed(opinion);
    assert!(who.len() >= 2, "{opinion}");
    assert!(who.contains(&"a".to_string()), "{opinion}");
    // Nobody reports in on-demand mode: every follower's confirmation was asked for.
    let confirmations = opinion["confirmations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for member in who.iter().filter(|m| *m != "a") {
        assert!(
            confirmations.iter().any(|c| c["member"] == member.as_str()
                && c["via"] == "confirm"
                && c["seen"] == "down"),
            "{member}: {opinion}"
        );
    }
    // The followers still ran no round; the confirmations came from PROBEs made when asked.
    let mut asked = 0.0;
    for f in &sys.daemons[1..] {
        let (rounds, round_probes, confirm_probes) = observation(f);
        assert_eq!((rounds, round_probes), (0.0, 0.0), "{}", f.name);
        asked += confirm_probes;
    }
    assert!(asked >= 1.0, "the followers made {asked} PROBEs when asked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_a_failure_only_the_leader_sees_fails_nothing_over() {
    let etcd = EtcdCluster::start(1).await.unwrap();
    let sys = three_instances_observing(&etcd, "on-demand").await;
    followers_idle(&sys).await;
    sys.sim.block_client(ip("127.0.0.2"));
    // The leader's probes hang; asked, the followers probe and the primaries answer them.
    let refused = wait_for(
        "refusals with the followers' on-demand answers",
        LIMIT,
        || async {
            let o = opinions(&sys).await;
            let answered_up = |op: &Value| {
                op["confirmations"].as_array().is_some_and(|cs| {
                    cs.iter().any(|c| {
                        c["via"] == "confirm" && c["seen"] == "up" && c["probed_on_demand"] == true
                    })
                })
            };
            let refusals: Vec<_> = o
                .iter()
                .filter(|(rule, _, op)| rule == "failover_unconfirmed" && confirmed(op) == ["a"])
                .collect();
            let contents: std::collections::BTreeSet<i64> =
                refusals.iter().map(|(_, c, _)| *c).collect();
            let asked = refusals.iter().any(|(_, _, op)| answered_up(op));
            (contents.len() == 2 && asked).then_some(o)
        },
    )
    .await;
    assert!(
        refused.iter().all(|(rule, _, _)| rule != "failover"),
        "{refused:?}"
    );
    let healthy = |t: &str| t.matches("probe cycle finished, all healthy").count();
    let leader = &sys.daemons[0];
    let before = healthy(&leader.log_text());
    sys.sim.unblock_client(ip("127.0.0.2"));
    wait_for("the leader to see the primaries again", LIMIT, || async {
        (healthy(&leader.log_text()) > before).then_some(())
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
    let mut asked = 0.0;
    for f in &sys.daemons[1..] {
        let (rounds, round_probes, confirm_probes) = observation(f);
        assert_eq!((rounds, round_probes), (0.0, 0.0), "{}", f.name);
        asked += confirm_probes;
    }
    assert!(asked >= 2.0, "the followers made {asked} PROBEs when asked");
}
