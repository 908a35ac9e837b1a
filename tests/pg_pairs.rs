//! The `postgres` driver end to end on real PostgreSQL 15 pairs: a primary and a
//! `pg_basebackup -R` standby with synchronous replication (`PgPair`), a real catalog, and the
//! real `ftsd` binary (`--no-election`) with `probe.driver = "postgres"`, connecting as the
//! dedicated probe role with only the documented grants. Layout: content 0 = primary dbid 2 +
//! standby dbid 3.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fts_testkit::pg::PgServer;
use fts_testkit::pgpair::{is_primary, PgPair, PROBE_PASSWORD, PROBE_ROLE};
use ftsd::catalog::postgres::{PgCatalog, PgCatalogConfig};
use ftsd::driver::SegmentDriver;
use ftsd::driver::{PgDriver, PgDriverSettings};
use ftsd::engine::SingleInstance;
use ftsd::engine::{run_cycle, Authority, CycleContext, ProbeSettings, TransitionOutcome};
use ftsd::model::{Epoch, Mode, Role, Segment, Status};
use ftsd::wire::MessageType;
use support::{history_text, wait_for, write_pg_driver_config, Daemon, PgDriverConfig};

use Mode::{InSync as S, NotInSync as N};
use Role::{Mirror as M, Primary as P};
use Status::{Down as D, Up as U};

// Generous: twelve tests share two cores, each with three PostgreSQL servers and an ftsd.
const LIMIT: Duration = Duration::from_secs(60);

struct PgSystem {
    // Dropped first: a failed test prints the daemon's log, which lives in `dir`.
    daemon: Option<Daemon>,
    catalog: PgServer,
    pair: PgPair,
    dir: tempfile::TempDir,
}

impl PgSystem {
    async fn start() -> PgSystem {
        let (catalog, pair) = support::pg_pair::start().await;
        PgSystem {
            catalog,
            pair,
            dir: tempfile::tempdir().unwrap(),
            daemon: None,
        }
    }

    /// Starts `ftsd run --no-election` with the postgres driver; the password comes from a file.
    async fn spawn_ftsd(&mut self, extra_postgres: &str) {
        let config = write_pg_driver_config(
            self.dir.path(),
            &PgDriverConfig {
                cluster: "pgtest",
                postgres: extra_postgres,
                catalog: &format!("url = \"{}\"", self.catalog.url()),
                ..PgDriverConfig::default()
            },
        );
        self.daemon = Some(Daemon::spawn(
            config,
            "single",
            &["run", "--no-election"],
            &[],
        ));
        // probing: the healthy pair's probe succeeded at least once
        for _ in 0..300 {
            if self.logs().contains("postgres probe") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("ftsd did not probe:\n{}", self.logs());
    }

    fn logs(&self) -> String {
        self.daemon
            .as_ref()
            .map(Daemon::log_text)
            .unwrap_or_default()
    }

    async fn state(&self, dbid: i16) -> (Role, Status, Mode) {
        support::pg_pair::state(&self.catalog, dbid).await
    }

    async fn wait_state(&self, dbid: i16, want: (Role, Status, Mode)) {
        wait_for(
            &format!("dbid {dbid} to become {want:?}"),
            LIMIT,
            || async { (self.state(dbid).await == want).then_some(()) },
        )
        .await
    }

    async fn history(&self) -> Vec<(i16, String)> {
        support::catalog_history(&self.catalog).await
    }

    /// (rule, evidence) of every evidence row, oldest first.
    async fn evidence(&self) -> Vec<(String, serde_json::Value)> {
        support::pg_pair::evidence(&self.catalog).await
    }

    async fn wait_evidence(&self, rule: &str) -> serde_json::Value {
        wait_for(&format!("evidence {rule}"), LIMIT, || async {
            self.evidence()
                .await
                .into_iter()
                .find(|(r, _)| r == rule)
                .map(|(_, e)| e)
        })
        .await
    }
}

/// Runs `sql` on `server` within 10 s; a commit that waits for a missing synchronous standby
/// fails the test instead of hanging it.
async fn write(server: &PgServer, sql: &str) {
    let client = server.client().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), client.batch_execute(sql))
        .await
        .unwrap_or_else(|_| panic!("write did not complete (blocked on sync rep?): {sql}"))
        .unwrap();
}

async fn in_recovery(server: &PgServer) -> bool {
    !is_primary(server).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_primary_is_replaced_by_its_promoted_standby_without_losing_a_commit() {
    let mut sys = PgSystem::start().await;
    sys.spawn_ftsd("").await;
    sys.wait_state(2, (P, U, S)).await;
    // committed under synchronous replication: acknowledged only once the standby has it
    write(
        &sys.pair.primary,
        "CREATE TABLE t (v text); INSERT INTO t VALUES ('acknowledged before the crash')",
    )
    .await;
    sys.pair.primary.kill().unwrap();

    sys.wait_state(3, (P, U, N)).await;
    assert_eq!(sys.state(2).await, (M, D, N));
    assert_eq!(
        sys.history().await,
        vec![
            history_text(2, 0, 'm', 'd', 'n'),
            history_text(3, 0, 'p', 'u', 'n')
        ]
    );
    let standby = &sys.pair.standby;
    wait_for("standby out of recovery", LIMIT, || async {
        (!in_recovery(standby).await).then_some(())
    })
    .await;
    let rows = standby
        .client()
        .await
        .unwrap()
        .query("SELECT v FROM t", &[])
        .await
        .unwrap();
    assert_eq!(
        rows.len(),
        1,
        "the acknowledged write survived the failover"
    );
    // the promoted standby accepts writes without waiting for its dead former primary
    write(standby, "INSERT INTO t VALUES ('after failover')").await;

    let (_, ev) = sys.evidence().await.into_iter().next().unwrap();
    assert_eq!(ev["rule"], "failover");
    assert_eq!(ev["message"]["kind"], "PROMOTE");
    assert_eq!(ev["driver"]["verdict"]["in_sync"], true, "{ev}");
    assert!(sys.logs().contains("PROMOTE"), "{}", sys.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_standby_turns_syncrep_off_and_back_on() {
    let mut sys = PgSystem::start().await;
    sys.spawn_ftsd("").await;
    sys.wait_state(3, (M, U, S)).await;
    sys.pair.standby.stop_immediate().unwrap();

    sys.wait_state(3, (M, D, N)).await;
    assert_eq!(sys.state(2).await, (P, U, N));
    wait_for("synchronous_standby_names cleared", LIMIT, || async {
        sys.pair
            .sync_names()
            .await
            .unwrap()
            .is_empty()
            .then_some(())
    })
    .await;
    write(
        &sys.pair.primary,
        "CREATE TABLE t (v int); INSERT INTO t VALUES (1)",
    )
    .await;

    sys.pair.standby.start().await.unwrap();
    sys.wait_state(3, (M, U, S)).await;
    assert_eq!(sys.state(2).await, (P, U, S));
    assert_eq!(sys.pair.sync_names().await.unwrap(), "\"seg0\"");
    assert_eq!(
        sys.pair.replication().await.unwrap(),
        Some(("streaming".into(), "sync".into()))
    );
    let h = sys.history().await;
    assert_eq!(
        h,
        vec![
            history_text(2, 0, 'p', 'u', 'n'),
            history_text(3, 0, 'm', 'd', 'n'),
            // back up first (the probe switches syncrep on), in sync from the next probe
            history_text(3, 0, 'm', 'u', 'n'),
            history_text(2, 0, 'p', 'u', 's'),
            history_text(3, 0, 'm', 'u', 's'),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_standby_is_not_promoted_and_the_refusal_is_recorded() {
    let mut sys = PgSystem::start().await;
    sys.spawn_ftsd("max_lag = 65536").await;
    sys.wait_state(3, (M, U, S)).await;
    // replay stops, WAL still arrives and is flushed: commits are acknowledged, replay lags
    write(&sys.pair.standby, "SELECT pg_wal_replay_pause()").await;
    write(
        &sys.pair.primary,
        "CREATE TABLE t AS SELECT g, repeat('x', 100) AS pad FROM generate_series(1, 20000) g",
    )
    .await;
    sys.wait_state(3, (M, U, N)).await;
    assert_eq!(sys.state(2).await, (P, U, N));

    sys.pair.primary.kill().unwrap();
    let ev = sys.wait_evidence("double_fault").await;
    let refusal = ev["refusal"].as_str().unwrap();
    assert!(refusal.contains("mode n"), "{refusal}");
    assert!(
        ev["driver"]["verdict"]["why"]
            .as_str()
            .unwrap()
            .contains("replay lag"),
        "{ev}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        in_recovery(&sys.pair.standby).await,
        "lagging standby promoted"
    );
    assert_eq!(sys.state(3).await, (M, U, N));
    assert_eq!(sys.state(2).await, (P, U, N));
    // one refusal row for the whole episode
    let refusals = sys
        .evidence()
        .await
        .iter()
        .filter(|(r, _)| r == "double_fault")
        .count();
    assert_eq!(refusals, 1);
    assert!(sys.logs().contains("double fault"), "{}", sys.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asynchronous_standby_is_not_promoted() {
    let mut sys = PgSystem::start().await;
    sys.spawn_ftsd("").await;
    sys.wait_state(3, (M, U, S)).await;
    // someone else is the synchronous standby: ours streams asynchronously
    sys.pair.set_sync_names("\"someone_else\"").await.unwrap();
    sys.wait_state(3, (M, U, N)).await;
    sys.pair.primary.kill().unwrap();
    let ev = sys.wait_evidence("double_fault").await;
    assert!(
        ev["driver"]["verdict"]["why"]
            .as_str()
            .unwrap()
            .contains("async"),
        "{ev}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        in_recovery(&sys.pair.standby).await,
        "async standby promoted"
    );
    assert_eq!(sys.state(3).await, (M, U, N));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_fault_changes_nothing() {
    let mut sys = PgSystem::start().await;
    sys.spawn_ftsd("").await;
    sys.wait_state(3, (M, U, S)).await;
    sys.pair.standby.stop_immediate().unwrap();
    sys.wait_state(3, (M, D, N)).await;
    sys.pair.primary.kill().unwrap();
    sys.wait_evidence("double_fault").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(sys.state(2).await, (P, U, N));
    assert_eq!(sys.state(3).await, (M, D, N));
    assert_eq!(sys.history().await.len(), 2);
}

/// Attempt failures reach the decision core with the same classes as the FTS client's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempt_failures_are_classified() {
    use ftsd::wire::failure::FailureKind;
    let mut pair = PgPair::start("seg0").await.unwrap();
    let rows = pair.segments(0, 2, 3);
    let t = Duration::from_secs(2);
    let ok = driver()
        .send(&rows[0], MessageType::Probe, Instant::now() + t)
        .await
        .unwrap();
    assert!(ok.is_mirror_up && ok.is_in_sync && ok.is_syncrep_enabled && !ok.is_role_mirror);
    let standby = driver()
        .send(&rows[1], MessageType::Probe, Instant::now() + t)
        .await
        .unwrap();
    assert!(standby.is_role_mirror && !standby.is_syncrep_enabled);

    let mut wrong = PgDriverSettings {
        password: Some("wrong".into()),
        ..probe_settings()
    };
    let err = PgDriver::new(wrong.clone())
        .send(&rows[0], MessageType::Probe, Instant::now() + t)
        .await
        .unwrap_err();
    assert_eq!(err.kind, FailureKind::Auth, "{err}");
    assert!(err.kind.is_prober_fault());
    wrong.password = Some(PROBE_PASSWORD.into());
    wrong.database = "no_such_db".into();
    let err = PgDriver::new(wrong)
        .send(&rows[0], MessageType::Probe, Instant::now() + t)
        .await
        .unwrap_err();
    assert_eq!(err.kind, FailureKind::StartupError, "{err}");
    assert_eq!(err.sqlstate.as_deref(), Some("3D000"));
    // a role without the privilege to connect: a prober fault, like a wrong password
    let admin = pair.primary.client().await.unwrap();
    for sql in [
        "CREATE DATABASE locked",
        "REVOKE CONNECT ON DATABASE locked FROM PUBLIC",
    ] {
        admin.batch_execute(sql).await.unwrap();
    }
    let locked = PgDriverSettings {
        database: "locked".into(),
        ..probe_settings()
    };
    let err = PgDriver::new(locked)
        .send(&rows[0], MessageType::Probe, Instant::now() + t)
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind, err.sqlstate.as_deref()),
        (FailureKind::Permission, Some("42501")),
        "{err}"
    );
    assert!(err.kind.is_prober_fault());

    pair.primary.kill().unwrap();
    let err = driver()
        .send(&rows[0], MessageType::Probe, Instant::now() + t)
        .await
        .unwrap_err();
    assert_eq!(err.kind, FailureKind::Refused, "{err}");
}

/// A context running cycles against the system's catalog with `authority`.
fn cycle_ctx<A: Authority>(
    sys: &PgSystem,
    driver: PgDriver,
    authority: A,
) -> Arc<CycleContext<PgDriver, Arc<PgCatalog>, A>> {
    Arc::new(CycleContext {
        driver,
        catalog: Arc::new(PgCatalog::new(PgCatalogConfig {
            statement_timeout: Duration::from_secs(5),
            ..PgCatalogConfig::new(sys.catalog.url())
        })),
        authority,
        settings: settings().into(),
        instance_id: "test".into(),
        stopping: Default::default(),
        refusals: Default::default(),
        quorum: Default::default(),
        brake: Default::default(),
    })
}

/// Issue 11 item 12: only the acting leader changes a server. Switching synchronous
/// replication back on (what a Greenplum primary does when probed) is made by the acting
/// leader after the probe, never by a probe of an observe-only (follower or paused) instance;
/// when the role may not do it, the probe still succeeds (a failed probe could fail over a
/// healthy primary) and the pair stays not in sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_acting_leader_switches_syncrep_back_on() {
    let sys = PgSystem::start().await;
    let rows = sys.pair.segments(0, 2, 3);
    let t = Duration::from_secs(2);
    sys.pair.set_sync_names("").await.unwrap();
    sys.pair
        .wait_replication(Some("async"), LIMIT)
        .await
        .unwrap();

    // an observe-only instance probes (twice, and the driver directly) and changes nothing
    let observer = cycle_ctx(&sys, driver(), ObserveOnly);
    for _ in 0..2 {
        let report = run_cycle(observer.clone()).await.unwrap();
        assert_eq!(report.reports[0].rule.as_str(), "resync", "{report:?}");
    }
    let reply = observer
        .driver
        .send(&rows[0], MessageType::Probe, Instant::now() + t)
        .await
        .unwrap();
    assert!(reply.is_mirror_up && !reply.is_in_sync && !reply.is_syncrep_enabled);
    assert_eq!(
        sys.pair.sync_names().await.unwrap(),
        "",
        "observe-only changed the server"
    );

    // acting, without the grant: the probe succeeds, the pair stays not in sync
    let su = sys.pair.primary.client().await.unwrap();
    su.batch_execute(&format!(
        "REVOKE ALTER SYSTEM ON PARAMETER synchronous_standby_names FROM {PROBE_ROLE}"
    ))
    .await
    .unwrap();
    let leader = cycle_ctx(&sys, driver(), SingleInstance::new(Epoch(1)));
    let report = run_cycle(leader.clone()).await.unwrap();
    assert!(matches!(
        report.reports[0].outcome,
        ftsd::core::ProbeOutcome::Replied { .. }
    ));
    assert_eq!(sys.pair.sync_names().await.unwrap(), "");
    assert_eq!(sys.state(3).await, (M, U, N));

    su.batch_execute(&format!(
        "GRANT ALTER SYSTEM ON PARAMETER synchronous_standby_names TO {PROBE_ROLE}"
    ))
    .await
    .unwrap();
    run_cycle(leader.clone()).await.unwrap();
    assert_eq!(sys.pair.sync_names().await.unwrap(), "\"seg0\"");
    sys.pair
        .wait_replication(Some("sync"), LIMIT)
        .await
        .unwrap();
    run_cycle(leader.clone()).await.unwrap();
    assert_eq!(
        sys.state(3).await,
        (M, U, S),
        "{:?}",
        leader.driver.verdict(0)
    );
}

/// Issue 11 item 13: a `synchronous_standby_names` that does not name the standby (a wrong
/// `postgres.sync_standby_names`) leaves it streaming asynchronously, never in sync, with
/// every commit waiting: alarmed once per episode (log, cycle report for the metric and hook)
/// and shown in the driver's evidence detail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_streaming_but_not_named_is_alarmed_once() {
    use ftsd::driver::AlarmKind;
    let sys = PgSystem::start().await;
    let ctx = cycle_ctx(&sys, driver(), SingleInstance::new(Epoch(1)));
    let report = run_cycle(ctx.clone()).await.unwrap();
    assert!(report.reports[0].alarms.is_empty(), "{report:?}");
    sys.pair.set_sync_names("\"typo\"").await.unwrap();
    sys.pair
        .wait_replication(Some("async"), LIMIT)
        .await
        .unwrap();
    let report = run_cycle(ctx.clone()).await.unwrap();
    let alarms = &report.reports[0].alarms;
    assert_eq!(alarms.len(), 1, "{alarms:?}");
    assert_eq!(alarms[0].kind, AlarmKind::SyncNamesMismatch);
    assert!(alarms[0].message.contains("typo"), "{alarms:?}");
    let detail = ctx.driver.probe_detail(0).unwrap();
    assert!(detail["standby_not_named_for_ms"].is_u64(), "{detail}");
    // once per episode
    let report = run_cycle(ctx.clone()).await.unwrap();
    assert!(report.reports[0].alarms.is_empty(), "{report:?}");
    // fixed, then wrong again: a new episode
    sys.pair.set_sync_names("\"seg0\"").await.unwrap();
    sys.pair
        .wait_replication(Some("sync"), LIMIT)
        .await
        .unwrap();
    run_cycle(ctx.clone()).await.unwrap();
    assert!(ctx.driver.probe_detail(0).unwrap()["standby_not_named_for_ms"].is_null());
    sys.pair.set_sync_names("\"typo\"").await.unwrap();
    sys.pair
        .wait_replication(Some("async"), LIMIT)
        .await
        .unwrap();
    let report = run_cycle(ctx.clone()).await.unwrap();
    assert_eq!(report.reports[0].alarms.len(), 1, "{report:?}");
}

/// Issue 11 item 3 (b): under `synchronous_commit = local` a commit is acknowledged before the
/// standby has it, so the pair is never in sync and a lost primary is not failed over; the
/// refusal's evidence says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synchronous_commit_local_rules_out_automatic_failover() {
    let mut sys = PgSystem::start().await;
    sys.spawn_ftsd("").await;
    sys.wait_state(3, (M, U, S)).await;
    let su = sys.pair.primary.client().await.unwrap();
    su.batch_execute("ALTER SYSTEM SET synchronous_commit = local")
        .await
        .unwrap();
    su.batch_execute("SELECT pg_reload_conf()").await.unwrap();
    sys.wait_state(3, (M, U, N)).await;
    assert_eq!(sys.state(2).await, (P, U, N));
    sys.pair.primary.kill().unwrap();
    let ev = sys.wait_evidence("double_fault").await;
    let why = ev["driver"]["verdict"]["why"].as_str().unwrap();
    assert!(why.contains("synchronous_commit = local"), "{ev}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(in_recovery(&sys.pair.standby).await, "standby promoted");
    assert_eq!(sys.state(3).await, (M, U, N));
}

/// Waits until ftsd has logged a failed probe of the held primary (SQLSTATE 57P03).
async fn wait_probe_refused_as_starting(sys: &PgSystem) {
    wait_for("a probe refused with 57P03", LIMIT, || async {
        let logs = sys.logs();
        (logs.contains("not accepting connections") || logs.contains("starting up")).then_some(())
    })
    .await
}

/// Issue 11 item 3 (a): a primary restarting (refusing connections with SQLSTATE 57P03 for
/// longer than the whole retry budget) within `postgres.restart_grace` is not failed over.
/// The restart is held in recovery by the test (`PgServer::start_held_in_recovery`, a
/// stand-in for a long crash recovery).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_restart_within_restart_grace_is_not_a_failover() {
    let mut sys = PgSystem::start().await;
    sys.spawn_ftsd("restart_grace = \"30s\"").await;
    sys.wait_state(3, (M, U, S)).await;
    sys.wait_state(2, (P, U, S)).await;
    sys.pair.primary.stop_immediate().unwrap();
    sys.pair.primary.start_held_in_recovery().await.unwrap();
    wait_probe_refused_as_starting(&sys).await;
    // three attempts of 57P03 take well under a second: without the grace this is a failover
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(in_recovery(&sys.pair.standby).await, "standby promoted");
    assert_eq!(sys.state(2).await.0, P);
    assert_eq!(sys.state(3).await.0, M);
    sys.pair.primary.release_recovery().await.unwrap();
    assert!(!in_recovery(&sys.pair.primary).await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sys.state(2).await.0, P);
    assert!(in_recovery(&sys.pair.standby).await);
    assert!(
        sys.history()
            .await
            .iter()
            .all(|(dbid, text)| *dbid != 3 || !text.contains("p")),
        "{:?}",
        sys.history().await
    );
}

/// Issue 11 item 3 (a) and (c): a restart longer than `postgres.restart_grace` is failed over;
/// when the old primary comes back read-write (the catalog lists it as a down mirror), ftsd
/// fences it: a client write to it never succeeds (it waits for its gone synchronous standby
/// until the fence ends the session, and is read-only afterwards), the fence is recorded as
/// evidence, and no acknowledged write is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_longer_than_grace_fails_over_and_the_old_primary_is_fenced() {
    let mut sys = PgSystem::start().await;
    let marker = sys.dir.path().join("fence-command.out");
    sys.spawn_ftsd(&format!(
        "restart_grace = \"2s\"\nfence_command = [\"/bin/sh\", \"-c\", \"echo \\\"$@ $FTSD_FENCE_DBID\\\" > {}\", \"fence\"]",
        marker.display()
    ))
    .await;
    sys.wait_state(3, (M, U, S)).await;
    sys.wait_state(2, (P, U, S)).await;
    write(
        &sys.pair.primary,
        "CREATE ROLE app LOGIN PASSWORD 'app-secret';
         CREATE TABLE t (v text); GRANT INSERT, SELECT ON t TO app;
         INSERT INTO t VALUES ('acknowledged before the crash')",
    )
    .await;
    sys.pair.primary.stop_immediate().unwrap();
    sys.pair.primary.start_held_in_recovery().await.unwrap();
    wait_probe_refused_as_starting(&sys).await;
    sys.wait_state(3, (P, U, N)).await;
    assert_eq!(sys.state(2).await, (M, D, N));
    assert!(
        sys.logs().contains("postgres.restart_grace"),
        "{}",
        sys.logs()
    );
    let standby = &sys.pair.standby;
    wait_for("standby out of recovery", LIMIT, || async {
        (!in_recovery(standby).await).then_some(())
    })
    .await;

    // the old primary ends its recovery read-write; a client writes to it at once
    sys.pair.primary.release_recovery().await.unwrap();
    let mut app = sys.pair.primary.pg_config();
    app.user("app").password("app-secret");
    let (client, conn) = app.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let late = tokio::time::timeout(
        Duration::from_secs(20),
        client.batch_execute("INSERT INTO t VALUES ('written to the old primary')"),
    )
    .await
    .expect("the write neither failed nor returned within 20 s");
    assert!(
        late.is_err(),
        "a write to the fenced old primary was acknowledged"
    );

    let ev = sys.wait_evidence("fence").await;
    assert_eq!(ev["upkeep"]["upkeep"], "fence", "{ev}");
    assert_eq!(ev["upkeep"]["dbid"], 2, "{ev}");
    let kinds: Vec<&str> = ev["alarms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"fenced"), "{ev}");
    // read-only from now on, also for new sessions
    let (client, conn) = app.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let err = client
        .batch_execute("INSERT INTO t VALUES ('after the fence')")
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("25006"), "{err}");
    assert!(sys.logs().contains("fenced dbid 2"), "{}", sys.logs());
    wait_for("the fence command ran", LIMIT, || async {
        std::fs::read_to_string(&marker)
            .ok()
            .filter(|s| !s.is_empty())
    })
    .await;
    let ran = std::fs::read_to_string(&marker).unwrap();
    assert!(ran.starts_with("0 2 127.0.0.1 "), "{ran}");
    assert!(ran.trim_end().ends_with(" 2"), "{ran}");

    // no acknowledged write lost: the promoted standby has it, and only it
    let rows = standby
        .client()
        .await
        .unwrap()
        .query("SELECT v FROM t", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(sys.state(3).await, (P, U, N));
}

/// Never promotes the mirror although the catalog still says in sync.
struct ObserveOnly;

impl Authority for ObserveOnly {
    fn acting_epoch(&self) -> Option<Epoch> {
        None
    }
    async fn confirm(&self) -> bool {
        false
    }
    fn fenced_out(&self, _current: Epoch) {}
}

fn driver() -> PgDriver {
    PgDriver::new(probe_settings())
}

/// The probe role's driver settings, as documented.
fn probe_settings() -> PgDriverSettings {
    PgDriverSettings {
        user: PROBE_ROLE.into(),
        password: Some(PROBE_PASSWORD.into()),
        database: "postgres".into(),
        max_lag: 0,
        sync_standby_names: String::new(),
        mirror_down_grace: Duration::ZERO,
        restart_grace: Duration::ZERO,
        fence_command: Vec::new(),
        fence_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(2),
        tls: Default::default(),
    }
}

fn settings() -> ProbeSettings {
    ProbeSettings {
        timeout: Duration::from_secs(2),
        retries: 1,
        retry_delay: Duration::from_millis(100),
        concurrency: 4,
        profile: ftsd::core::Profile::InCore,
    }
}

/// The catalog still has mode `s` (the transition to `n` was never written: this instance was
/// observe-only when it saw the standby go asynchronous), yet the guard refuses the failover
/// because the last successful probe of the primary saw the standby not in sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guard_refuses_a_standby_that_was_async_at_the_last_probe_even_if_the_catalog_says_in_sync()
{
    let mut sys = PgSystem::start().await;
    let catalog = Arc::new(PgCatalog::new(PgCatalogConfig {
        statement_timeout: Duration::from_secs(5),
        ..PgCatalogConfig::new(sys.catalog.url())
    }));
    let observer = Arc::new(CycleContext {
        driver: driver(),
        catalog: catalog.clone(),
        authority: ObserveOnly,
        settings: settings().into(),
        instance_id: "observer".into(),
        stopping: Default::default(),
        refusals: Default::default(),
        quorum: Default::default(),
        brake: Default::default(),
    });
    // the standby turns asynchronous: synchronous_standby_names names someone else
    sys.pair.set_sync_names("\"someone_else\"").await.unwrap();
    sys.pair
        .wait_replication(Some("async"), LIMIT)
        .await
        .unwrap();
    let report = run_cycle(observer.clone()).await.unwrap();
    assert_eq!(
        report.reports[0].transition,
        Some(TransitionOutcome::ObserveOnly)
    );
    assert_eq!(sys.state(3).await, (M, U, S), "catalog still says in sync");
    let verdict = observer.driver.verdict(0).unwrap();
    assert!(!verdict.in_sync, "{verdict:?}");

    sys.pair.primary.kill().unwrap();
    // the same driver (its memory), now acting
    let ctx = Arc::new(CycleContext {
        driver: Arc::into_inner(observer).unwrap().driver,
        catalog,
        authority: SingleInstance::new(Epoch(1)),
        settings: settings().into(),
        instance_id: "actor".into(),
        stopping: Default::default(),
        refusals: Default::default(),
        quorum: Default::default(),
        brake: Default::default(),
    });
    let report = run_cycle(ctx.clone()).await.unwrap();
    let r = &report.reports[0];
    assert_eq!(r.rule.as_str(), "double_fault", "{r:?}");
    assert_eq!(r.transition, Some(TransitionOutcome::RefusalRecorded));
    let ev = sys.wait_evidence("double_fault").await;
    assert!(
        ev["refusal"].as_str().unwrap().starts_with("driver veto"),
        "{ev}"
    );
    assert!(in_recovery(&sys.pair.standby).await);
    assert_eq!(sys.state(3).await, (M, U, S));
    assert!(sys.history().await.is_empty());
    // a later cycle does not add a second row, and PROMOTE itself is refused too
    run_cycle(ctx.clone()).await.unwrap();
    assert_eq!(sys.evidence().await.len(), 1);
    let standby: Segment = sys.pair.segments(0, 2, 3)[1].clone();
    let err = ctx
        .driver
        .send(
            &standby,
            MessageType::Promote,
            Instant::now() + Duration::from_secs(2),
        )
        .await
        .unwrap_err();
    assert!(err.message.contains("PROMOTE refused"), "{err}");
    assert!(in_recovery(&sys.pair.standby).await);
    drop(sys.daemon.take());
}
