//! The SQL catalog backend against a real PostgreSQL: schema init and shape checks, fenced
//! transactions, compare-and-set on rows, history text and evidence, reconnect after a restart.

use std::time::Duration;

use fts_testkit::pg::PgServer;
use ftsd::catalog::postgres::{PgCatalog, PgCatalogConfig};
use ftsd::catalog::schema::{self, TableAction};
use ftsd::catalog::{Catalog, CatalogError, NoEtcd, Transition};
use ftsd::core::{decide_pair, FailoverGuard, ProbeOutcome, RestartState, Rule};
use ftsd::model::{Epoch, Mode, Role, Status};
use ftsd::wire::failure::FailureKind;

fn catalog_for(pg: &PgServer) -> PgCatalog {
    PgCatalog::new(PgCatalogConfig {
        connect_timeout: Duration::from_secs(3),
        statement_timeout: Duration::from_secs(5),
        ..PgCatalogConfig::new(pg.url())
    })
}

/// Two pairs, in sync, like gpinitsystem lays them out: primaries dbid 2,3; mirrors 4,5.
async fn seed(pg: &PgServer) -> tokio_postgres::Client {
    let mut client = pg.client().await.unwrap();
    schema::init(&mut client).await.unwrap();
    client
        .batch_execute(
            r#"INSERT INTO gp_segment_configuration VALUES
             (1, -1, 'p', 'p', 'n', 'u', 5432, 'cdw', 'cdw', '/data/coordinator'),
             (2, 0, 'p', 'p', 's', 'u', 6000, 'sdw1', '127.0.0.1', '/data/p0'),
             (3, 1, 'p', 'p', 's', 'u', 6001, 'sdw2', '127.0.0.1', '/data/p1'),
             (4, 0, 'm', 'm', 's', 'u', 7000, 'sdw2', '127.0.0.1', '/data/m0'),
             (5, 1, 'm', 'm', 's', 'u', 7001, 'sdw1', '127.0.0.1', '/data/m1')"#,
        )
        .await
        .unwrap();
    client
}

fn failover_of_content_0(cfg: &ftsd::model::SegmentConfig, epoch: Epoch) -> Transition {
    let pair = cfg
        .probe_pairs()
        .pairs
        .into_iter()
        .find(|p| p.content() == 0)
        .unwrap();
    let d = decide_pair(
        &pair,
        &ProbeOutcome::Failed {
            kind: FailureKind::Refused,
            restart: RestartState::NotRestarting,
        },
        &FailoverGuard::Clear,
    );
    assert_eq!(d.rule, Rule::Failover);
    Transition {
        epoch,
        instance_id: "test-1".into(),
        content: 0,
        rule: d.rule,
        updates: d.updates,
        expect: Vec::new(),
        evidence: serde_json::json!({"why": "test"}),
    }
}

async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn init_is_idempotent_and_refuses_foreign_shapes() {
    let pg = PgServer::builder().start().await.unwrap();
    let mut client = pg.client().await.unwrap();
    let first = schema::init(&mut client).await.unwrap();
    assert!(
        first.iter().all(|a| matches!(a, TableAction::Created(_))),
        "{first:?}"
    );
    assert_eq!(first.len(), 4);
    let second = schema::init(&mut client).await.unwrap();
    assert!(second
        .iter()
        .all(|a| matches!(a, TableAction::AlreadyPresent(_))));
    schema::verify(&client).await.unwrap();

    // a table of the same name with another shape is never touched
    let other = PgServer::builder().start().await.unwrap();
    let mut c2 = other.client().await.unwrap();
    c2.batch_execute(
        "CREATE TABLE gp_configuration_history (time timestamptz, dbid int4, note text)",
    )
    .await
    .unwrap();
    let err = schema::init(&mut c2).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, CatalogError::Schema(_)), "{msg}");
    assert!(
        msg.contains("gp_configuration_history exists with columns"),
        "{msg}"
    );
    assert!(msg.contains("refusing to touch it"), "{msg}");
    // nothing else was created either (one transaction)
    assert_eq!(
        count(
            &c2,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'gp_segment_configuration'"
        )
        .await,
        0
    );
    // a catalog whose tables are missing is reported as such when ftsd reads it
    let err = catalog_for(&other).load().await.unwrap_err();
    assert!(
        err.to_string()
            .contains("does not exist (run `ftsd catalog init`)")
            || err.to_string().contains("refusing"),
        "{err}"
    );
}

#[tokio::test]
async fn failover_transaction_writes_rows_history_and_evidence() {
    let pg = PgServer::builder().start().await.unwrap();
    let client = seed(&pg).await;
    let catalog = catalog_for(&pg);
    assert_eq!(
        catalog.claim_epoch(7, "test-1", NoEtcd).await.unwrap(),
        Epoch(7)
    );
    let cfg = catalog.load().await.unwrap();
    assert_eq!(cfg.segments.len(), 5);
    catalog
        .apply(&failover_of_content_0(&cfg, Epoch(7)))
        .await
        .unwrap();

    let after = catalog.load().await.unwrap();
    let p = after.by_dbid(2).unwrap();
    let m = after.by_dbid(4).unwrap();
    assert_eq!(
        (p.role, p.status, p.mode),
        (Role::Mirror, Status::Down, Mode::NotInSync)
    );
    assert_eq!(
        (m.role, m.status, m.mode),
        (Role::Primary, Status::Up, Mode::NotInSync)
    );
    assert_eq!(
        p.preferred_role,
        Role::Primary,
        "preferred role is never changed by FTS"
    );
    // the other pair is untouched
    assert_eq!(after.by_dbid(3).unwrap().mode, Mode::InSync);

    let rows = client
        .query(
            r#"SELECT dbid, "desc" FROM gp_configuration_history ORDER BY ctid"#,
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(i16, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        got,
        vec![
            (
                2,
                "FTS: update role, status, and mode for dbid 2 with contentid 0 to m, d, and n"
                    .to_string()
            ),
            (
                4,
                "FTS: update role, status, and mode for dbid 4 with contentid 0 to p, u, and n"
                    .to_string()
            ),
        ]
    );
    let ev = client
        .query_one(
            r#"SELECT e.epoch, e.rule, e.dbids, e.evidence->>'why',
                      (SELECT count(*) FROM gp_configuration_history h WHERE h."time" = e."time")
                 FROM fts_evidence e"#,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(ev.get::<_, i64>(0), 7);
    assert_eq!(ev.get::<_, String>(1), "failover");
    assert_eq!(ev.get::<_, Vec<i16>>(2), vec![2, 4]);
    assert_eq!(ev.get::<_, String>(3), "test");
    assert_eq!(
        ev.get::<_, i64>(4),
        2,
        "history rows join their evidence on the transaction time"
    );
}

#[tokio::test]
async fn a_fenced_out_epoch_writes_nothing() {
    let pg = PgServer::builder().start().await.unwrap();
    let client = seed(&pg).await;
    let old = catalog_for(&pg);
    let new = catalog_for(&pg);
    old.claim_epoch(5, "old", NoEtcd).await.unwrap();
    let snapshot = old.load().await.unwrap();
    // a newer leader takes office
    new.claim_epoch(9, "new", NoEtcd).await.unwrap();

    let err = old
        .apply(&failover_of_content_0(&snapshot, Epoch(5)))
        .await
        .unwrap_err();
    match err {
        CatalogError::Fenced { mine, current } => {
            assert_eq!((mine, current), (Epoch(5), Epoch(9)))
        }
        other => panic!("expected Fenced, got {other}"),
    }
    let err = old.claim_epoch(5, "old", NoEtcd).await.unwrap_err();
    assert!(matches!(err, CatalogError::Fenced { .. }));
    assert_eq!(
        count(&client, "SELECT count(*) FROM gp_configuration_history").await,
        0
    );
    assert_eq!(count(&client, "SELECT count(*) FROM fts_evidence").await, 0);
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM gp_segment_configuration WHERE mode = 'n' AND content >= 0"
        )
        .await,
        0
    );
    // the newer epoch writes fine
    new.apply(&failover_of_content_0(&snapshot, Epoch(9)))
        .await
        .unwrap();
    assert_eq!(
        count(&client, "SELECT count(*) FROM gp_configuration_history").await,
        2
    );
}

#[tokio::test]
async fn a_stale_snapshot_is_rolled_back_whole() {
    let pg = PgServer::builder().start().await.unwrap();
    let client = seed(&pg).await;
    let catalog = catalog_for(&pg);
    let snapshot = catalog.load().await.unwrap();
    // someone (an operator, gprecoverseg) changed the mirror row after our read
    client
        .execute(
            "UPDATE gp_segment_configuration SET status = 'd', mode = 'n' WHERE dbid = 4",
            &[],
        )
        .await
        .unwrap();
    let err = catalog
        .apply(&failover_of_content_0(&snapshot, Epoch(1)))
        .await
        .unwrap_err();
    assert!(matches!(err, CatalogError::Stale { dbid: 4, .. }), "{err}");
    // the primary's row, updated earlier in the same transaction, was rolled back too
    let p = catalog.load().await.unwrap();
    assert_eq!(p.by_dbid(2).unwrap().role, Role::Primary);
    assert_eq!(
        count(&client, "SELECT count(*) FROM gp_configuration_history").await,
        0
    );
}

#[tokio::test]
async fn reconnects_after_the_catalog_restarts() {
    let mut pg = PgServer::builder().start().await.unwrap();
    let _client = seed(&pg).await;
    let catalog = catalog_for(&pg);
    let snapshot = catalog.load().await.unwrap();
    pg.stop_immediate().unwrap();
    let err = catalog.load().await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    let err = catalog
        .apply(&failover_of_content_0(&snapshot, Epoch(1)))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    pg.start().await.unwrap();
    catalog
        .apply(&failover_of_content_0(&snapshot, Epoch(1)))
        .await
        .unwrap();
    let client = pg.client().await.unwrap();
    assert_eq!(
        count(&client, "SELECT count(*) FROM gp_configuration_history").await,
        2
    );
}

async fn show(client: &tokio_postgres::Client, setting: &str) -> String {
    client
        .query_one(&format!("SHOW {setting}"), &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn session_keeps_the_urls_options_and_adds_the_lock_and_idle_limits() {
    let pg = PgServer::builder().start().await.unwrap();
    let url = format!("{}?options=-c%20work_mem%3D7777kB", pg.url());
    let catalog = PgCatalog::new(PgCatalogConfig {
        lock_timeout: Duration::from_millis(1500),
        idle_in_transaction_timeout: Duration::from_secs(4),
        ..PgCatalogConfig::new(url)
    });
    let client = catalog.connect().await.unwrap();
    assert_eq!(show(&client, "work_mem").await, "7777kB");
    assert_eq!(show(&client, "lock_timeout").await, "1500ms");
    assert_eq!(
        show(&client, "idle_in_transaction_session_timeout").await,
        "4s"
    );
    assert_eq!(show(&client, "statement_timeout").await, "10s");
}

/// A former leader stalled (SIGSTOP, cut off) between its fence statement and COMMIT leaves a
/// session idle in transaction that holds the `fts_epoch` row lock; the server ends it after
/// `idle_in_transaction_timeout`, and the next claim goes through.
#[tokio::test]
async fn a_stalled_session_holding_the_fence_row_is_ended_by_the_server() {
    let pg = PgServer::builder().start().await.unwrap();
    let _admin = seed(&pg).await;
    let stalled = PgCatalog::new(PgCatalogConfig {
        idle_in_transaction_timeout: Duration::from_secs(1),
        ..PgCatalogConfig::new(pg.url())
    });
    let stalled = stalled.connect().await.unwrap();
    stalled
        .batch_execute("BEGIN; UPDATE fts_epoch SET epoch = 5, instance_id = 'old' WHERE id = 1")
        .await
        .unwrap();

    // The new leader waits on the lock (no lock_timeout of its own here) until the server ends
    // the stalled session.
    let waiter = pg.client().await.unwrap();
    let started = std::time::Instant::now();
    let claimed = tokio::time::timeout(
        Duration::from_secs(8),
        waiter.execute(
            "UPDATE fts_epoch SET epoch = 6, instance_id = 'new' WHERE id = 1 AND epoch <= 6",
            &[],
        ),
    )
    .await
    .expect("the fence row stayed locked: the stalled session was not ended")
    .unwrap();
    assert_eq!(claimed, 1);
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert!(stalled.query_one("SELECT 1", &[]).await.is_err());
    let row = waiter
        .query_one("SELECT epoch, instance_id FROM fts_epoch", &[])
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, i64>(0), row.get::<_, String>(1)),
        (6, "new".into())
    );
}

/// A fence statement blocked by another session's row lock fails with a lock timeout (and the
/// caller retries later) instead of waiting for the whole statement timeout or forever.
#[tokio::test]
async fn a_blocked_fence_statement_fails_with_a_lock_timeout() {
    let pg = PgServer::builder().start().await.unwrap();
    let _admin = seed(&pg).await;
    let holder = pg.client().await.unwrap();
    holder
        .batch_execute("BEGIN; SELECT * FROM fts_epoch FOR UPDATE")
        .await
        .unwrap();
    let catalog = PgCatalog::new(PgCatalogConfig {
        lock_timeout: Duration::from_millis(500),
        statement_timeout: Duration::from_secs(30),
        call_timeout: Duration::from_secs(40),
        ..PgCatalogConfig::new(pg.url())
    });
    let started = std::time::Instant::now();
    let err = catalog
        .claim_epoch(3, "blocked", NoEtcd)
        .await
        .expect_err("the row is locked");
    assert!(started.elapsed() < Duration::from_secs(5), "{err}");
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("lock timeout"), "{err}");
    holder.batch_execute("ROLLBACK").await.unwrap();
    catalog.claim_epoch(3, "blocked", NoEtcd).await.unwrap();
}

/// Greenplum cannot run here, so a plain PostgreSQL plays the coordinator: a stand-in
/// `gp_distribution_policy` table (only the two columns the check reads) makes it look like
/// Greenplum to the detection, and a row for `fts_epoch` in it says the fence table is
/// distributed. The startup schema check must refuse that, and accept the table without it.
#[tokio::test]
async fn the_schema_check_refuses_a_distributed_fence_table() {
    let pg = PgServer::builder().start().await.unwrap();
    let admin = seed(&pg).await;
    admin
        .batch_execute(
            r#"CREATE TABLE gp_distribution_policy (localoid oid, policytype "char");
               INSERT INTO gp_distribution_policy VALUES ('fts_epoch'::regclass, 'p')"#,
        )
        .await
        .unwrap();
    assert!(matches!(
        schema::detect(&admin).await.unwrap(),
        schema::Flavor::Greenplum { .. }
    ));
    let err = catalog_for(&pg)
        .load()
        .await
        .expect_err("distributed fence");
    let text = err.to_string();
    assert!(matches!(err, CatalogError::Schema(_)), "{text}");
    assert!(text.contains("fts_epoch is distributed"), "{text}");

    admin
        .batch_execute("DELETE FROM gp_distribution_policy")
        .await
        .unwrap();
    let cfg = catalog_for(&pg).load().await.unwrap();
    assert_eq!(cfg.segments.len(), 5);
}

/// On a (stand-in) Greenplum coordinator `catalog init` creates ftsd's tables only over a
/// utility-mode session; plain PostgreSQL does not know the utility-mode setting, so init fails
/// saying so, and creates nothing in an ordinary (distributing) session instead.
#[tokio::test]
async fn init_on_greenplum_uses_a_utility_mode_session_or_creates_nothing() {
    let pg = PgServer::builder().start().await.unwrap();
    let admin = pg.client().await.unwrap();
    admin
        .batch_execute(r#"CREATE TABLE gp_distribution_policy (localoid oid, policytype "char")"#)
        .await
        .unwrap();
    let err = catalog_for(&pg)
        .init_schema()
        .await
        .expect_err("no utility mode here");
    assert!(err.to_string().contains("gp_role=utility"), "{err}");
    let tables = count(
        &admin,
        "SELECT count(*) FROM pg_class WHERE relname IN ('fts_epoch', 'fts_evidence')",
    )
    .await;
    assert_eq!(tables, 0);

    // Plain PostgreSQL: every table.
    admin
        .batch_execute("DROP TABLE gp_distribution_policy")
        .await
        .unwrap();
    assert_eq!(
        schema::detect(&admin).await.unwrap(),
        schema::Flavor::PostgreSql
    );
    assert_eq!(catalog_for(&pg).init_schema().await.unwrap().len(), 4);
}

/// A row the model cannot read (GP5's change-tracking mode `c`, a NULL address) is skipped
/// and named; every other row, including its content's peer, is read normally.
#[tokio::test]
async fn an_unreadable_row_is_skipped_and_named_not_the_whole_read_failed() {
    let pg = PgServer::builder().start().await.unwrap();
    let client = seed(&pg).await;
    client
        .batch_execute(
            "ALTER TABLE gp_segment_configuration DROP CONSTRAINT gp_segment_configuration_mode_check;
             ALTER TABLE gp_segment_configuration ALTER COLUMN address DROP NOT NULL;
             UPDATE gp_segment_configuration SET mode = 'c' WHERE dbid = 5;
             UPDATE gp_segment_configuration SET address = NULL WHERE dbid = 1;",
        )
        .await
        .unwrap();
    let cfg = catalog_for(&pg).load().await.unwrap();
    let read: Vec<i16> = cfg.segments.iter().map(|s| s.dbid).collect();
    assert_eq!(read, vec![2, 4, 3]);
    let bad: Vec<(i16, i16)> = cfg.unreadable.iter().map(|u| (u.dbid, u.content)).collect();
    assert_eq!(bad, vec![(1, -1), (5, 1)]);
    assert!(
        cfg.unreadable[0].error.contains("address is NULL"),
        "{:?}",
        cfg.unreadable
    );
    assert!(
        cfg.unreadable[1].error.contains("invalid mode value 'c'"),
        "{:?}",
        cfg.unreadable
    );
    let set = cfg.probe_pairs();
    assert_eq!(set.pairs.len(), 1);
    assert_eq!(set.pairs[0].content(), 0);
    assert_eq!(set.refused.len(), 1);
    assert_eq!(set.refused[0].content, 1);
}

/// A transition's expected rows are re-read under the fence: a pair changed since the
/// snapshot makes it Stale and nothing (not even its evidence) is written.
#[tokio::test]
async fn expected_rows_are_re_checked_under_the_fence() {
    let pg = PgServer::builder().start().await.unwrap();
    let client = seed(&pg).await;
    let catalog = catalog_for(&pg);
    let state = |role, status, mode| ftsd::model::SegmentState { role, status, mode };
    let t = |expect_mirror| Transition {
        epoch: Epoch(3),
        instance_id: "test-1".into(),
        content: 0,
        rule: Rule::RePromote,
        updates: Vec::new(),
        expect: vec![
            (2, state(Role::Primary, Status::Up, Mode::InSync)),
            (4, expect_mirror),
        ],
        evidence: serde_json::json!({"why": "test"}),
    };
    catalog
        .apply(&t(state(Role::Mirror, Status::Up, Mode::InSync)))
        .await
        .unwrap();
    assert_eq!(count(&client, "SELECT count(*) FROM fts_evidence").await, 1);
    let err = catalog
        .apply(&t(state(Role::Mirror, Status::Down, Mode::NotInSync)))
        .await
        .unwrap_err();
    assert!(matches!(err, CatalogError::Stale { dbid: 4, .. }), "{err}");
    assert_eq!(count(&client, "SELECT count(*) FROM fts_evidence").await, 1);
}
