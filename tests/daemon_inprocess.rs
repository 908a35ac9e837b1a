//! The daemon started in-process through `ftsd::daemon::run` (as the binary does), two
//! elected instances against a real etcd, a real PostgreSQL catalog and `fts-segsim`: the
//! leader fails a pair over, and each instance stops cleanly when its shutdown future fires.

mod support;

use std::time::{Duration, Instant};

use fts_segsim::Fault;
use fts_testkit::etcd::EtcdCluster;
use ftsd::config::{Config, Overrides};
use ftsd::daemon::{self, Election};
use ftsd::model::{Mode, Role, Status};
use support::elected::{catalog_epoch, members, system, wait_leader, wait_members, LIMIT};
use support::{content0_failover, wait_for, System};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A daemon running in this process and the sender that stops it.
struct InProcess {
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

fn start(sys: &System, name: &str) -> InProcess {
    let path = sys.dir.path().join(format!("{name}.toml"));
    std::fs::write(&path, sys.config_text(name, "")).unwrap();
    let no_env: [(&str, &str); 0] = [];
    let cfg = Config::load(&path, no_env, &Overrides::default()).unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(daemon::run(cfg, Election::Etcd, async move {
        let _ = stopped.await;
    }));
    InProcess { stop, task }
}

/// Fires the shutdown future and waits for `run` to return.
async fn stop(d: InProcess) -> Duration {
    let t0 = Instant::now();
    d.stop.send(()).unwrap();
    let result = tokio::time::timeout(LIMIT, d.task)
        .await
        .expect("run returns after shutdown")
        .unwrap();
    result.expect("run ends without error");
    t0.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_process_daemon_fails_over_and_shuts_down_cleanly() {
    let etcd = EtcdCluster::start(1).await.unwrap();
    let sys = system(&etcd, "3s").await;
    let mut running = vec![("a", start(&sys, "a")), ("b", start(&sys, "b"))];
    wait_members(&etcd, 2).await;
    let leader = wait_leader(&etcd, None).await;
    let epoch = leader.epoch.unwrap();
    wait_for("epoch claimed in the catalog", LIMIT, || async {
        (catalog_epoch(&sys).await == epoch).then_some(())
    })
    .await;

    // the leader acts: a killed primary is failed over, with its epoch in the evidence
    sys.sim.set_fault(2, Fault::Down).await.unwrap();
    sys.wait_state(4, (Role::Primary, Status::Up, Mode::NotInSync), LIMIT)
        .await;
    assert_eq!(sys.history().await, content0_failover());
    assert_eq!(sys.evidence().await[0].0, epoch);

    // the leader stops: it resigns, so the follower takes office well before the 3 s TTL
    let i = running
        .iter()
        .position(|(n, _)| *n == leader.instance_id)
        .unwrap();
    let (_, d) = running.remove(i);
    let took = stop(d).await;
    assert!(took < Duration::from_secs(10), "shutdown took {took:?}");
    let next = wait_leader(&etcd, Some(&leader.instance_id)).await;
    assert!(next.epoch.unwrap() > epoch);
    wait_for("the new epoch claimed", LIMIT, || async {
        (catalog_epoch(&sys).await == next.epoch.unwrap()).then_some(())
    })
    .await;

    // the last one stops too and leaves nothing behind in etcd
    let (_, d) = running.pop().unwrap();
    stop(d).await;
    assert!(members(&etcd).await.is_empty());
}
