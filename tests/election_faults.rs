//! Elected `ftsd` instances under faults of their own making or of their surroundings: a
//! stalled former leader holding the catalog fence, a default-configured etcd that enforces
//! its keepalive policy, two instances configured with one `instance_id`, an etcd rebuilt
//! empty. Real etcd, real
//! PostgreSQL catalog, `fts-segsim`; the tests run one at a time.

mod support;

use std::time::{Duration, Instant, SystemTime};

use etcd_client::Client;
use fts_segsim::Fault;
use fts_testkit::etcd::EtcdCluster;
use ftsd::catalog::postgres::{PgCatalog, PgCatalogConfig};
use ftsd::catalog::{Catalog, CatalogError, NoEtcd, Transition};
use ftsd::core::epoch::{generation, revision};
use ftsd::core::Rule;
use ftsd::model::{Epoch, Mode, Role, Status};
use support::elected::{
    assert_all_evidence_from, catalog_epoch, leaders, members, stop_the_leader_at, system,
    wait_leader, wait_members, LIMIT,
};
use support::{content0_failover, wait_for};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_leader_holding_the_fence_is_ended_by_the_next_leaders_claim() {
    let _serial = SERIAL.lock().await;
    let etcd = EtcdCluster::start(1).await.unwrap();
    let mut sys = system(&etcd, "3s").await;
    // the first leader stops inside its transition; its session keeps the fts_epoch row
    // locked, busy (so the server's idle-in-transaction limit does not end it) for 40 s
    stop_the_leader_at(
        &mut sys,
        &etcd,
        &[
            ("FTS_INJECT_DELAY_AFTER_FENCE", "40s"),
            ("FTSD_CATALOG_STATEMENT_TIMEOUT", "60s"),
            ("FTSD_CATALOG_CALL_TIMEOUT", "90s"),
        ],
        "fault point: pausing while holding the epoch fence",
    )
    .await;
    let stopped = Instant::now();

    // lease TTL (3 s) + detection (interval 1 s, 3 attempts of ≤ 700 ms) + the claim; the
    // bound allows a loaded machine, not a fence held until the holder's statement ends
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
    assert_eq!(sys.history().await, content0_failover());
    assert_all_evidence_from(&sys, new.epoch.unwrap(), "new").await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_of_a_rebuilt_etcd_acts_at_once_and_old_epochs_stay_fenced() {
    let _serial = SERIAL.lock().await;
    let old_etcd = EtcdCluster::start(1).await.unwrap();
    // the old etcd's revisions run far above anything the rebuilt one reaches in this test
    let mut c = Client::connect(old_etcd.endpoints(), None).await.unwrap();
    for i in 0..300 {
        c.put("/filler", i.to_string(), None).await.unwrap();
    }
    let mut sys = system(&old_etcd, "3s").await;
    sys.spawn_ftsd("a", &[], "");
    let old = wait_leader(&old_etcd, None).await;
    let old_epoch = wait_for("the old leader's epoch recorded", LIMIT, || async {
        let e = catalog_epoch(&sys).await;
        (e > 0).then_some(e)
    })
    .await;
    assert_eq!(Some(old_epoch), old.epoch.filter(|e| *e > 300));

    // disaster: etcd is lost with its data; the instances restart against a new, empty one
    sys.daemons[0].child.kill().unwrap();
    sys.daemons[0].child.wait().unwrap();
    drop(old_etcd);
    let new_etcd = EtcdCluster::start(1).await.unwrap();
    sys.etcd_endpoints = new_etcd.endpoints();
    sys.spawn_ftsd("b", &[], "");
    sys.spawn_ftsd("c", &[], "");
    wait_leader(&new_etcd, None).await;
    let elected = Instant::now();
    let mut c = Client::connect(new_etcd.endpoints(), None).await.unwrap();
    let key_revision = c
        .leader("/ftsd/test/leader")
        .await
        .unwrap()
        .kv()
        .unwrap()
        .create_revision();
    assert!(key_revision < 300);
    let claimed = wait_for("the new leader's epoch recorded", LIMIT, || async {
        let e = catalog_epoch(&sys).await;
        (e != old_epoch).then_some(Epoch(e))
    })
    .await;
    // well within one lease TTL (3 s) of taking office
    assert!(elected.elapsed() < Duration::from_secs(3), "{}", sys.logs());
    assert_eq!((generation(claimed), revision(claimed)), (1, key_revision));
    assert!(claimed.0 > old_epoch);

    // the new leader acts, with the new epoch
    sys.sim.set_fault(2, Fault::Down).await.unwrap();
    sys.wait_state(4, (Role::Primary, Status::Up, Mode::NotInSync), LIMIT)
        .await;
    assert_eq!(sys.evidence().await[0].0, claimed.0);

    // a write or a claim carrying the old etcd's epoch is still rejected
    let catalog = PgCatalog::new(PgCatalogConfig::new(sys.pg.url()));
    let stale = Transition {
        epoch: Epoch(old_epoch),
        instance_id: "a".into(),
        content: 1,
        rule: Rule::MirrorDown,
        updates: Vec::new(),
        expect: Vec::new(),
        evidence: serde_json::json!({}),
    };
    assert!(matches!(
        catalog.apply(&stale).await,
        Err(CatalogError::Fenced { .. })
    ));
    assert!(matches!(
        catalog.claim_epoch(old_epoch, "a", NoEtcd).await,
        Err(CatalogError::Fenced { .. })
    ));
    assert_eq!(catalog_epoch(&sys).await, claimed.0);
    assert_eq!(sys.history().await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_cycles_keep_failing_hands_office_over() {
    let _serial = SERIAL.lock().await;
    let etcd = EtcdCluster::start(1).await.unwrap();
    let mut sys = system(&etcd, "3s").await;
    // "a" reaches the catalog's server but not its database: every cycle of "a" fails
    let url = sys.pg.url();
    let (server, _db) = url.rsplit_once('/').unwrap();
    let unreachable = format!("{server}/no_such_database");
    sys.spawn_ftsd_env("a", &[], "", &[("FTSD_CATALOG_URL", &unreachable)]);
    assert_eq!(wait_leader(&etcd, None).await.instance_id, "a");
    sys.spawn_ftsd("b", &[], "");
    wait_members(&etcd, 2).await;

    // 3 failed cycles (the default), 1 s apart, then "b" takes office and acts
    let b = wait_leader(&etcd, Some("a")).await;
    assert_eq!(b.instance_id, "b");
    assert!(sys.daemons[0]
        .log_text()
        .contains("probe cycles keep failing; handing office over to another instance"));
    sys.sim.set_fault(2, Fault::Down).await.unwrap();
    sys.wait_state(4, (Role::Primary, Status::Up, Mode::NotInSync), LIMIT)
        .await;
    // "b" completes its cycles and keeps office
    for _ in 0..20 {
        let l = leaders(&etcd).await;
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].instance_id, "b", "{}", sys.logs());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
