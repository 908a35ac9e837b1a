//! One real PostgreSQL primary/standby pair (`PgPair`) as content 0 of a real catalog (primary
//! dbid 2, standby dbid 3), probed with the `postgres` driver: the set-up and catalog reads the
//! `pg_pairs` and `switchover` tests share; and the `[coordinator]` table of a pair watched as
//! the coordinator pair (`coordinator`, `switchover`).

use std::path::Path;

use fts_testkit::pg::PgServer;
use fts_testkit::pgpair::PgPair;
use ftsd::catalog::schema;
use ftsd::model::{Mode, Role, Status};

/// Starts the catalog (schema initialised) and the pair `seg0`, and writes the pair into the
/// catalog as content 0.
pub async fn start() -> (PgServer, PgPair) {
    let catalog = PgServer::builder().start().await.expect("catalog postgres");
    schema::init(&mut catalog.client().await.unwrap())
        .await
        .unwrap();
    let pair = PgPair::start("seg0").await.expect("pair");
    fts_segsim::catalog::write_catalog(&catalog.url(), &pair.segments(0, 2, 3))
        .await
        .unwrap();
    (catalog, pair)
}

/// (role, status, mode) of `dbid` in `catalog`.
pub async fn state(catalog: &PgServer, dbid: i16) -> (Role, Status, Mode) {
    let c = catalog.client().await.unwrap();
    let r = c
        .query_one(
            "SELECT role::text, status::text, mode::text FROM gp_segment_configuration WHERE dbid = $1",
            &[&dbid],
        )
        .await
        .unwrap();
    let ch = |i: usize| r.get::<_, String>(i).chars().next().unwrap();
    (
        Role::from_char(ch(0)).unwrap(),
        Status::from_char(ch(1)).unwrap(),
        Mode::from_char(ch(2)).unwrap(),
    )
}

/// (rule, evidence) of every evidence row in `catalog`, oldest first.
pub async fn evidence(catalog: &PgServer) -> Vec<(String, serde_json::Value)> {
    let c = catalog.client().await.unwrap();
    c.query("SELECT rule, evidence FROM fts_evidence ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// The `[coordinator]` table watching `pair` as the coordinator pair as the probe role (its
/// password in a file in `dir`), with `extra` keys.
pub fn coordinator_table(dir: &Path, pair: &PgPair, extra: &str) -> String {
    super::coordinator::table(
        dir,
        &format!("127.0.0.1:{}", pair.primary.port()),
        &format!("127.0.0.1:{}", pair.standby.port()),
        extra,
    )
}
