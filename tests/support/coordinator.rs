//! The coordinator pair's records in the test etcd (state, history) and the `[coordinator]`
//! table the watching daemons get: shared by every coordinator test.

use std::path::Path;

use etcd_client::{Client, GetOptions};
use fts_testkit::pg::PgServer;
use fts_testkit::pgpair::{PROBE_PASSWORD, PROBE_ROLE};
use ftsd::coordinator::records::{CoordinatorState, HistoryRecord};

/// `<etcd.prefix>/<cluster>/coordinator/` of the test configurations.
pub const PREFIX: &str = "/ftsd/test/coordinator/";

/// The recorded state; `None` until the first record. The test's etcd is always up, so a
/// failed read is a test failure, never an absent record.
pub async fn state(endpoints: Vec<String>) -> Option<CoordinatorState> {
    let mut c = Client::connect(endpoints, None)
        .await
        .expect("connecting to the test etcd");
    let resp = c
        .get(format!("{PREFIX}state"), None)
        .await
        .expect("reading the coordinator state");
    resp.kvs()
        .first()
        .map(|kv| serde_json::from_slice(kv.value()).expect("a coordinator state record"))
}

/// Every history record, oldest first.
pub async fn history(endpoints: Vec<String>) -> Vec<HistoryRecord> {
    let mut c = Client::connect(endpoints, None)
        .await
        .expect("connecting to the test etcd");
    let resp = c
        .get(
            format!("{PREFIX}history/"),
            Some(GetOptions::new().with_prefix()),
        )
        .await
        .expect("reading the coordinator history");
    resp.kvs()
        .iter()
        .map(|kv| serde_json::from_slice(kv.value()).expect("a coordinator history record"))
        .collect()
}

/// The history records of one event (`intent`, `promoted`, `refused`, …).
pub async fn events(endpoints: Vec<String>, event: &str) -> Vec<HistoryRecord> {
    history(endpoints)
        .await
        .into_iter()
        .filter(|h| h.event == event)
        .collect()
}

/// The `[coordinator]` table watching `primary` / `standby` (`host:port`) as the probe role
/// (its password in a file in `dir`), with `extra` keys.
pub fn table(dir: &Path, primary: &str, standby: &str, extra: &str) -> String {
    let pw = dir.join("coordinator.password");
    std::fs::write(&pw, format!("{PROBE_PASSWORD}\n")).unwrap();
    format!(
        r#"[coordinator]
primary = "{primary}"
standby = "{standby}"
interval = "2s"
timeout = "1500ms"
retries = 2
user = "{PROBE_ROLE}"
password_file = "{}"
promote_timeout = "30s"
{extra}
"#,
        pw.display()
    )
}

/// Waits until the leader has recorded which server acts (its first round in office; before
/// it nothing is failed over) and returns the record.
pub async fn wait_recorded(endpoints: Vec<String>) -> CoordinatorState {
    super::wait_for(
        "the acting coordinator recorded in etcd",
        super::elected::LIMIT,
        || {
            let endpoints = endpoints.clone();
            async move { state(endpoints).await }
        },
    )
    .await
}

/// The table the coordinator tests write numbered rows into (`id` is the writer's sequence),
/// created on the coordinator before the daemons start.
pub async fn create_writes_table(coordinator: &PgServer) {
    coordinator
        .client()
        .await
        .unwrap()
        .batch_execute("CREATE TABLE writes (id bigint PRIMARY KEY)")
        .await
        .unwrap();
}
