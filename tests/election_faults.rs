//! Elected `ftsd` instances under faults of their own making or of their surroundings: a
//! stalled former leader holding the catalog fence, a default-configured etcd that enforces
//! its keepalive policy, two instances configured with one `instance_id`. Real etcd, real
//! PostgreSQL catalog, `fts-segsim`; the tests run one at a time.

mod support;

use std::time::{Duration, Instant, SystemTime};

use ftsd::model::{Mode, Role, Status};
use ftsd::segsim::Fault;
use ftsd::testkit::etcd::EtcdCluster;
use support::elected::{catalog_epoch, members, system, wait_leader, wait_members, LIMIT};
use support::{history_text, wait_for};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_leader_holding_the_fence_is_ended_by_the_next_leaders_claim() {
    let _serial = SERIAL.lock().await;
    let etcd = EtcdCluster::start(1).await.unwrap();
    let mut sys = system(&etcd, "3s").await;
    // the first leader stops inside its transition, holding the fts_epoch row lock
    sys.spawn_ftsd_env("old", &[], "", &[("FTS_INJECT_DELAY_AFTER_FENCE", "15s")]);
    let old = wait_leader(&etcd, None).await;
    assert_eq!(old.instance_id, "old");
    sys.spawn_ftsd("new", &[], "");
    wait_members(&etcd, 2).await;

    sys.sim.set_fault(2, Fault::Down).await.unwrap();
    wait_for("old leader holds the fence", LIMIT, || async {
        sys.daemons[0]
            .log_text()
            .contains("fault point: pausing while holding the epoch fence")
            .then_some(())
    })
    .await;
    sys.daemons[0].signal(libc::SIGSTOP);
    let stopped = Instant::now();

    // lease TTL (3 s) + detection (interval 1 s, 3 attempts of ≤ 700 ms) + the claim; the
    // bound allows a loaded machine, not a fence held until the old leader resumes
    let new = wait_leader(&etcd, Some("old")).await;
    sys.wait_state(4, (Role::Primary, Status::Up, Mode::NotInSync), LIMIT)
        .await;
    let took = stopped.elapsed();
    assert!(
        took < Duration::from_secs(20),
        "failover took {took:?} with a stalled leader\n{}",
        sys.logs()
    );
    assert!(sys.daemons[1]
        .log_text()
        .contains("terminated a stalled ftsd session holding the epoch fence"));

    // the old leader resumes: its transaction is gone, it writes nothing
    sys.daemons[0].signal(libc::SIGCONT);
    wait_for("old leader's transition failed", LIMIT, || async {
        sys.daemons[0]
            .log_text()
            .contains("transition not applied; no message sent")
            .then_some(())
    })
    .await;
    assert_eq!(
        sys.history().await,
        vec![
            history_text(2, 0, 'm', 'd', 'n'),
            history_text(4, 0, 'p', 'u', 'n')
        ]
    );
    for (epoch, instance, _, _) in sys.evidence().await {
        assert_eq!((epoch, instance.as_str()), (new.epoch.unwrap(), "new"));
    }
    assert_eq!(catalog_epoch(&sys).await, new.epoch.unwrap());
}

/// `ftsd_etcd_reconnects_total` of the daemon whose config is `config`.
fn reconnects(config: &std::path::Path) -> u64 {
    let text = std::fs::read_to_string(config).unwrap();
    let addr = text
        .lines()
        .find_map(|l| l.strip_prefix("metrics_listen = "))
        .unwrap()
        .trim_matches('"')
        .to_string();
    let body = ureq::get(&format!("http://{addr}/metrics"))
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap();
    let counts: Vec<u64> = body
        .lines()
        .filter(|l| l.starts_with("ftsd_etcd_reconnects_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(counts.len(), 3, "{body}");
    counts.iter().sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_stay_up_against_etcds_default_keepalive_policy() {
    let _serial = SERIAL.lock().await;
    // the test kit passes no --grpc-keepalive-min-time: etcd's default (5 s) applies
    let etcd = EtcdCluster::start(1).await.unwrap();
    let mut sys = system(&etcd, "3s").await;
    for n in ["a", "b", "c"] {
        sys.spawn_ftsd(n, &[], "");
    }
    wait_members(&etcd, 3).await;
    wait_leader(&etcd, None).await;
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        let ids: Vec<String> = members(&etcd)
            .await
            .into_iter()
            .map(|m| m.instance_id)
            .collect();
        assert_eq!(ids, ["a", "b", "c"], "members flickered\n{}", sys.logs());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for d in &sys.daemons {
        let log = d.log_text();
        assert_eq!(log.matches("etcd session open").count(), 1, "{log}");
        for bad in [
            "etcd session failed",
            "cannot follow the pause key",
            "reopening",
        ] {
            assert!(!log.contains(bad), "{}: {bad}\n{log}", d.name);
        }
        assert_eq!(reconnects(&d.config), 0, "{}", d.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_live_instance_with_the_same_id_refuses_to_start() {
    let _serial = SERIAL.lock().await;
    let etcd = EtcdCluster::start(1).await.unwrap();
    let mut sys = system(&etcd, "2s").await;
    sys.spawn_ftsd("a", &[], "");
    sys.spawn_ftsd("b", &[], "");
    wait_members(&etcd, 2).await;
    let leader = wait_leader(&etcd, None).await;

    let twin = sys.spawn_ftsd_env("a-twin", &[], "", &[("FTSD_INSTANCE_ID", "a")]);
    let status = wait_for("the twin exits", LIMIT, || {
        let st = sys.daemons[twin].child.try_wait().unwrap();
        async move { st }
    })
    .await;
    let log = sys.daemons[twin].log_text();
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("instance_id \"a\" is already registered by a live member"),
        "{log}"
    );
    assert!(!log.contains("took office"), "{log}");
    assert_eq!(
        wait_leader(&etcd, None).await.instance_id,
        leader.instance_id
    );
    assert_eq!(members(&etcd).await.len(), 2);

    // a restart after kill -9 is not a twin: the dead entry expires with its lease
    sys.daemons[1].child.kill().unwrap();
    sys.daemons[1].child.wait().unwrap();
    let killed = SystemTime::now();
    let again = sys.spawn_ftsd_env("b-again", &[], "", &[("FTSD_INSTANCE_ID", "b")]);
    wait_for("the restarted b registers", LIMIT, || async {
        members(&etcd)
            .await
            .iter()
            .any(|m| m.instance_id == "b" && m.started_at > killed)
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        sys.daemons[again].is_running(),
        "{}",
        sys.daemons[again].log_text()
    );
}
