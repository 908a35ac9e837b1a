//! `fts-segsim --cbdb-conf`: the layout written as a Cloudberry external-FTS blob into a real
//! etcd, read back by ftsd's Cloudberry backend.

use std::time::Duration;

use fts_segsim::{SimConfig, Simulator};
use fts_testkit::etcd::EtcdCluster;
use ftsd::catalog::cloudberry::blob;

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
    let dir = std::env::temp_dir().join(format!("segsim-cbdb-{}", std::process::id()));
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
