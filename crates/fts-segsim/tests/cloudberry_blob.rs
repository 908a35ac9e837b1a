//! `fts-segsim --cbdb-conf`: the layout written as a Cloudberry external-FTS blob into a real
//! etcd, read back by ftsd's Cloudberry backend.

use std::time::Duration;

use fts_segsim::cloudberry::CbdbLink;
use fts_segsim::{Fault, SimConfig, Simulator};
use fts_testkit::etcd::EtcdCluster;
use ftsd::catalog::cloudberry::blob;
use ftsd::model::Role;
use ftsd::wire::client::{send_message, Credentials, Target};
use ftsd::wire::{MessageType, ProbeReply};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layout_becomes_a_blob_in_the_conf_s_etcd() {
    let etcd = EtcdCluster::start(1).await.unwrap();
    let sim = Simulator::start(SimConfig {
        pairs: 2,
        coordinator: true,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let (dir, conf) = conf_for(&etcd, "layout");
    let key = fts_segsim::cloudberry::write_blob(&conf, &sim.segments())
        .await
        .unwrap();
    assert_eq!(key, "/cbdb/fts/default/a/c/fts_dump_file_key");
    let mut client = etcd_client::Client::connect(etcd.endpoints(), None)
        .await
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), client.get(key, None))
        .await
        .unwrap()
        .unwrap();
    let text = resp.kvs()[0].value_str().unwrap().to_owned();
    let rows = blob::parse(&text).unwrap();
    // The coordinator line first, then every instance by dbid, with the ports it serves on.
    assert_eq!(rows[0].content, -1);
    assert_eq!(rows.len(), sim.segments().len());
    for r in &rows {
        let served = sim
            .segments()
            .into_iter()
            .find(|s| s.dbid == r.dbid)
            .unwrap();
        assert_eq!(r, &served);
    }
    let _ = std::fs::remove_dir_all(dir);
}

fn conf_for(etcd: &EtcdCluster, tag: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("segsim-cbdb-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("cbdb_etcd.conf");
    std::fs::write(
        &conf,
        format!(
            "gp_etcd_endpoints='{}'\ngp_etcd_account_id='a'\ngp_etcd_cluster_id='c'\ngp_etcd_namespace='default'\n",
            etcd.endpoints()[0].trim_start_matches("http://")
        ),
    )
    .unwrap();
    (dir, conf)
}

async fn send(sim: &Simulator, dbid: i16, kind: MessageType) -> ProbeReply {
    let addr = sim.addr(dbid).unwrap();
    let host = addr.ip().to_string();
    let target = Target {
        host: &host,
        port: addr.port(),
        dbid,
        content: sim.view(dbid).unwrap().content,
    };
    send_message(
        &target,
        kind,
        &Credentials::new("gpadmin"),
        Duration::from_secs(10),
    )
    .await
    .unwrap_or_else(|e| panic!("{kind} to dbid {dbid}: {e}"))
}

async fn etcd_value(client: &mut etcd_client::Client, key: &str) -> Option<String> {
    let resp = tokio::time::timeout(Duration::from_secs(5), client.get(key, None))
        .await
        .unwrap()
        .unwrap();
    resp.kvs()
        .first()
        .map(|kv| kv.value_str().unwrap().to_owned())
}

/// The coordinator pair as an external-FTS Cloudberry cluster has it: the coordinator's PROBE
/// answer reports its standby, the standby answers as a mirror, PROMOTE is refused while the
/// promote-ready key is not `1`, and once promoted the standby resets the key and rewrites the
/// blob as `activateStandby` does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_pair_answers_and_the_standby_promotes_only_when_ready() {
    let etcd = EtcdCluster::start(1).await.unwrap();
    let sim = Simulator::start(SimConfig {
        pairs: 1,
        standby: true,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let (dir, conf) = conf_for(&etcd, "standby");
    let key = sim
        .attach_cloudberry(CbdbLink::open(&conf).unwrap())
        .await
        .unwrap();
    let ready_key = "/cbdb/fts/default/a/c/fts_standby_promote_ready_key";
    let mut client = etcd_client::Client::connect(etcd.endpoints(), None)
        .await
        .unwrap();
    assert_eq!(
        etcd_value(&mut client, ready_key).await.as_deref(),
        Some("1")
    );
    let rows = blob::parse(&etcd_value(&mut client, &key).await.unwrap()).unwrap();
    let coordinator_rows: Vec<_> = rows
        .iter()
        .map(|r| (r.dbid, r.content, r.role.as_char(), r.mode.as_char()))
        .take(2)
        .collect();
    assert_eq!(coordinator_rows, [(1, -1, 'p', 's'), (4, -1, 'm', 's')]);

    // The coordinator reports its standby streaming and in sync; the standby is a mirror.
    let r = send(&sim, 1, MessageType::Probe).await;
    assert_eq!(r.to_bytes(), [1, 1, 1, 0, 0]);
    let r = send(&sim, 4, MessageType::Probe).await;
    assert_eq!(r.to_bytes(), [0, 0, 0, 1, 0]);

    // The coordinator dies; its PROBE answer would now be unreachable. Not ready: ignored.
    sim.set_fault(1, Fault::Down).await.unwrap();
    sim.set_promote_ready(false).await.unwrap();
    let r = send(&sim, 4, MessageType::Promote).await;
    assert!(r.is_role_mirror, "not ready: the standby stays a mirror");
    assert_eq!(sim.view(4).unwrap().role, Role::Mirror);

    // Ready: promotes, writes 0 back, and the blob loses the old coordinator's line.
    sim.set_promote_ready(true).await.unwrap();
    let r = send(&sim, 4, MessageType::Promote).await;
    assert!(!r.is_role_mirror);
    assert_eq!(sim.view(4).unwrap().role, Role::Primary);
    assert_eq!(
        etcd_value(&mut client, ready_key).await.as_deref(),
        Some("0")
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let rows = loop {
        let rows = blob::parse(&etcd_value(&mut client, &key).await.unwrap()).unwrap();
        if rows.iter().all(|r| r.dbid != 1) {
            break rows;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "blob not rewritten: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let standby = rows.iter().find(|r| r.dbid == 4).unwrap();
    assert_eq!(
        (standby.role, standby.preferred_role),
        (Role::Primary, Role::Primary)
    );
    assert_eq!(rows.iter().filter(|r| r.content == 0).count(), 2);
    // A second PROMOTE is idempotent and needs no key.
    let r = send(&sim, 4, MessageType::Promote).await;
    assert!(!r.is_role_mirror);
    let _ = std::fs::remove_dir_all(dir);
}

/// Without a Cloudberry etcd there is no promote-ready key to set.
#[tokio::test]
async fn promote_ready_needs_an_attached_etcd() {
    let sim = Simulator::start(SimConfig {
        standby: true,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let err = sim.set_promote_ready(true).await.unwrap_err();
    assert!(err.to_string().contains("--cbdb-conf"), "{err}");
}
