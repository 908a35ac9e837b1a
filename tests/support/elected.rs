//! Helpers for systems whose daemons are elected through a real etcd: the members registry
//! as the daemons publish it, and waiting for a leader.

use std::time::Duration;

use etcd_client::Client;
use fts_testkit::etcd::EtcdCluster;
use ftsd::election::members::{list, MemberInfo};

use super::{wait_for, System};

pub const LIMIT: Duration = Duration::from_secs(30);

/// A catalog with two simulated pairs whose daemons will use `etcd` with lease TTL `ttl`.
pub async fn system(etcd: &EtcdCluster, ttl: &str) -> System {
    let mut sys = System::start(2, Duration::from_millis(500)).await;
    sys.etcd_endpoints = etcd.endpoints();
    sys.lease_ttl = ttl.into();
    sys
}

/// The live members (empty when etcd cannot be reached).
pub async fn members(etcd: &EtcdCluster) -> Vec<MemberInfo> {
    let Ok(mut c) = Client::connect(etcd.endpoints(), None).await else {
        return Vec::new();
    };
    list(&mut c, "/ftsd/test/members/")
        .await
        .unwrap_or_default()
}

pub async fn leaders(etcd: &EtcdCluster) -> Vec<MemberInfo> {
    members(etcd)
        .await
        .into_iter()
        .filter(|m| m.role == "leader")
        .collect()
}

/// Waits for exactly one leader, other than `not`.
pub async fn wait_leader(etcd: &EtcdCluster, not: Option<&str>) -> MemberInfo {
    wait_for("a leader", LIMIT, || async {
        let l = leaders(etcd).await;
        (l.len() == 1 && Some(l[0].instance_id.as_str()) != not).then(|| l[0].clone())
    })
    .await
}

/// Waits until `n` members are registered.
pub async fn wait_members(etcd: &EtcdCluster, n: usize) {
    wait_for(&format!("{n} members"), LIMIT, || async {
        (members(etcd).await.len() == n).then_some(())
    })
    .await
}

/// The epoch recorded in the catalog's fence row.
pub async fn catalog_epoch(sys: &System) -> i64 {
    let c = sys.pg.client().await.unwrap();
    c.query_one("SELECT epoch FROM fts_epoch", &[])
        .await
        .unwrap()
        .get(0)
}

/// Starts "old" with the fault point and settings `env`, waits until it leads, starts "new",
/// fails the primary of content 0 and SIGSTOPs "old" as soon as its log shows `at` (the fault
/// point reached). Returns when "old" is stopped there.
pub async fn stop_the_leader_at(
    sys: &mut System,
    etcd: &EtcdCluster,
    env: &[(&str, &str)],
    at: &str,
) {
    sys.spawn_ftsd_env("old", &[], "", env);
    let old = wait_leader(etcd, None).await;
    assert_eq!(old.instance_id, "old");
    sys.spawn_ftsd("new", &[], "");
    wait_members(etcd, 2).await;
    sys.sim.set_fault(2, fts_segsim::Fault::Down).await.unwrap();
    wait_for(&format!("old leader at {at:?}"), LIMIT, || async {
        sys.daemons[0].log_text().contains(at).then_some(())
    })
    .await;
    sys.daemons[0].signal(libc::SIGSTOP);
}

/// Every evidence row was written with `epoch` by `instance`.
pub async fn assert_all_evidence_from(sys: &System, epoch: i64, instance: &str) {
    for (e, i, _, _) in sys.evidence().await {
        assert_eq!((e, i.as_str()), (epoch, instance));
    }
}
