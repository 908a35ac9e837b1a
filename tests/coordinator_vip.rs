//! Coordinator failover seen by a client that writes through the virtual IP: the two
//! coordinator hosts are network namespaces on a LAN with this process (`fts_testkit::netns`),
//! a real PostgreSQL coordinator runs on host `a` and its synchronous standby on host `b`,
//! `ftsd vip-agent` runs on each host, a real etcd here is reachable from both, and three
//! real `ftsd` here watch the pair with `coordinator.auto_failover = true`
//! (`fts_testkit::vipnet`). Needs root and network-namespace support; without root the test
//! says so and passes without running.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions};
use fts_testkit::netns::Lan;
use fts_testkit::pgpair::is_primary;
use fts_testkit::vipnet::{postmaster_start_time, CoordinatorLan, VipWriter};
use ftsd::coordinator::records::{CoordinatorState, HistoryRecord};
use support::elected::{wait_leader, LIMIT};
use support::{wait_for, System};

use support::coordinator::PREFIX;

async fn state(net: &CoordinatorLan) -> Option<CoordinatorState> {
    support::coordinator::state(net.etcd_endpoints()).await
}

async fn events(net: &CoordinatorLan, event: &str) -> Vec<HistoryRecord> {
    support::coordinator::events(net.etcd_endpoints(), event).await
}

async fn vip_holder_keys(net: &CoordinatorLan) -> Vec<String> {
    let mut c = Client::connect(net.etcd_endpoints(), None).await.unwrap();
    c.get(
        format!("{PREFIX}vip/"),
        Some(GetOptions::new().with_prefix().with_keys_only()),
    )
    .await
    .unwrap()
    .kvs()
    .iter()
    .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
    .collect()
}

/// The `[coordinator]` table of the watching daemons.
fn coordinator_table(net: &CoordinatorLan, sys: &System) -> String {
    support::coordinator::table(
        sys.dir.path(),
        &net.primary_addr(),
        &net.standby_addr(),
        "auto_failover = true",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_writing_through_the_vip_loses_no_acknowledged_write_across_a_kill_9() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: the VIP failover test needs root (network namespaces, veth pairs)");
        return;
    }
    if let Err(e) = Lan::create(&["probe"]) {
        eprintln!("SKIPPED: cannot create network namespaces here: {e:#}");
        return;
    }
    let mut net = CoordinatorLan::start().await.expect("the coordinator LAN");
    support::coordinator::create_writes_table(&net.pair.primary).await;
    let mut sys = support::elected::system(&net.etcd, "4s").await;
    net.spawn_agents(
        std::path::Path::new(env!("CARGO_BIN_EXE_ftsd")),
        sys.dir.path(),
        "test",
    )
    .await
    .unwrap();
    let table = coordinator_table(&net, &sys);
    for name in ["fts-a", "fts-b", "fts-c"] {
        sys.spawn_ftsd(name, &[], &table);
    }
    wait_leader(&net.etcd, None).await;
    // The leader records host a's server, the one that accepts writes, as acting.
    wait_for("host a to take the VIP", LIMIT, || async {
        (net.holds_vip(0) && !net.holds_vip(1)).then_some(())
    })
    .await;
    wait_for(
        "every instance to see the standby in sync",
        LIMIT,
        || async {
            sys.daemons
                .iter()
                .all(|d| {
                    d.log_text()
                        .contains("the coordinator's standby is in sync")
                })
                .then_some(())
        },
    )
    .await;

    let writer = VipWriter::start(net.vip_config());
    wait_for("writes acknowledged through the VIP", LIMIT, || async {
        (writer.acked().len() > 50).then_some(())
    })
    .await;
    let old = postmaster_start_time(&net.pair.primary).await.unwrap();
    let new = postmaster_start_time(&net.pair.standby).await.unwrap();
    assert_eq!(
        writer.servers(),
        std::slice::from_ref(&old),
        "writes went to the coordinator"
    );

    let killed = Instant::now();
    net.pair.primary.kill().unwrap();

    let standby = net.standby_addr();
    let recorded = wait_for(
        "the standby recorded as the coordinator",
        LIMIT * 2,
        || async { state(&net).await.filter(|st| st.acting == standby) },
    )
    .await;
    assert!(
        recorded.rebuild,
        "the old coordinator is marked for rebuild"
    );
    assert!(recorded.intent.is_none());
    assert_eq!(recorded.standby, net.primary_addr());
    wait_for("the VIP to move to host b", LIMIT, || async {
        (net.holds_vip(1) && !net.holds_vip(0)).then_some(())
    })
    .await;
    // The client's writes resume through the VIP, on the promoted standby.
    wait_for(
        "writes acknowledged by the new coordinator",
        LIMIT,
        || async {
            let first = writer.first_on(&new, killed)?;
            (writer.acked().iter().filter(|a| a.at > first.at).count() >= 50).then_some(())
        },
    )
    .await;
    let servers = writer.servers();
    let resumed = writer.first_on(&new, killed).map(|a| a.at - killed);
    let acked = writer.stop().await;
    assert_eq!(servers, [old, new], "only the two coordinators served");

    // Every acknowledged write is on the new coordinator, read at its own address.
    assert!(is_primary(&net.pair.standby).await.unwrap());
    let rows = net
        .pair
        .standby
        .client()
        .await
        .unwrap()
        .query("SELECT id FROM writes", &[])
        .await
        .unwrap();
    let present: BTreeSet<i64> = rows.iter().map(|r| r.get(0)).collect();
    let lost: Vec<i64> = acked
        .iter()
        .map(|a| a.id)
        .filter(|id| !present.contains(id))
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged writes lost: {lost:?} (of {})",
        acked.len()
    );
    let on_old = acked.iter().filter(|a| a.server == 0).count();
    let on_new = acked.iter().filter(|a| a.server == 1).count();
    assert!(on_old > 50 && on_new >= 50, "{on_old} / {on_new}");
    eprintln!(
        "acknowledged through the VIP: {on_old} by the old coordinator, {on_new} by the new \
         one (first {resumed:?} after the kill), none lost"
    );

    // Promoted exactly once: more rounds change nothing; one host holds the VIP.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let promoted = events(&net, "promoted").await;
    assert_eq!(promoted.len(), 1, "{promoted:?}\n{}", sys.logs());
    assert_eq!(promoted[0].to, standby);
    assert_eq!(events(&net, "intent").await.len(), 1);
    assert!(
        net.holds_vip(1) && !net.holds_vip(0),
        "{}",
        net.agent_logs()
    );
    assert_eq!(
        vip_holder_keys(&net).await,
        [format!("{PREFIX}vip/{standby}")],
        "{}",
        net.agent_logs()
    );
}
