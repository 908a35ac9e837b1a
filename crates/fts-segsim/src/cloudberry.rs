//! Writes the simulated layout as a Cloudberry external-FTS configuration blob into the etcd
//! a `cbdb_etcd.conf` names, in the line format Cloudberry uses, so ftsd's Cloudberry backend
//! (or `gpfts`) reads a configuration that matches what the simulator serves.

use std::path::Path;
use std::time::Duration;

use ftsd::catalog::cloudberry::conf::CbdbEtcdConf;
use ftsd::catalog::cloudberry::coordinator::CoordinatorSettings;
use ftsd::catalog::cloudberry::{blob, CloudberryCatalog, CloudberrySettings};
use ftsd::election::EtcdOptions;
use ftsd::model::Segment;

/// Puts `rows` (coordinator first, then by dbid, as the coordinator writes it) as the blob.
pub async fn write_blob(conf: &Path, rows: &[Segment]) -> anyhow::Result<String> {
    let conf = CbdbEtcdConf::read(conf)?;
    let catalog = CloudberryCatalog::new(CloudberrySettings {
        etcd: EtcdOptions {
            endpoints: conf.endpoint_urls(),
            dial_timeout: Duration::from_secs(5),
            ..EtcdOptions::default()
        },
        conf,
        coordinator: CoordinatorSettings {
            user: String::new(),
            connect_timeout: Duration::from_secs(5),
        },
        elected: false,
        history_limit: 1,
        call_timeout: Duration::from_secs(10),
    });
    let mut rows = rows.to_vec();
    rows.sort_by_key(|r| (r.content != -1, r.dbid));
    let text = blob::render(&rows);
    catalog.put_blob(&text).await?;
    Ok(catalog.keys().blob())
}
