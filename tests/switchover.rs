//! Planned switchover (`ftsctl switchover`) end to end: real etcd, real PostgreSQL 15
//! primary/standby pairs with synchronous replication (`PgPair`), a real catalog, and the real
//! `ftsd` (elected) and `ftsctl` binaries. Segment pairs use the `postgres` driver (content 0 =
//! primary dbid 2 + standby dbid 3); the coordinator pair is configured by address.

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fts_testkit::etcd::EtcdCluster;
use fts_testkit::pg::PgServer;
use fts_testkit::pgpair::{is_primary, PgPair};
use ftsd::coordinator::records::CoordinatorState;
use ftsd::engine::faults::{PAUSE_IN_SWITCHOVER, PAUSE_IN_SWITCHOVER_LOG};
use ftsd::model::{Mode, Role, Status};
use support::elected::{wait_leader, LIMIT};
use support::{
    addresses, etcd_table, ftsctl, wait_for, write_pg_driver_config, Daemon, PgDriverConfig,
};

use Mode::{InSync as S, NotInSync as N};
use Role::{Mirror as M, Primary as P};
use Status::{Down as D, Up as U};

const APP_ROLE: &str = "app";
const APP_PASSWORD: &str = "app-secret";

/// A catalog with one `postgres`-driver pair and elected daemons.
struct PairSystem {
    // Dropped first: a failed test prints the daemons' logs, which live in `dir`.
    daemons: Vec<Daemon>,
    etcd: EtcdCluster,
    catalog: PgServer,
    pair: PgPair,
    dir: tempfile::TempDir,
}

impl PairSystem {
    async fn start() -> PairSystem {
        let etcd = EtcdCluster::start(1).await.expect("etcd");
        let (catalog, pair) = support::pg_pair::start().await;
        // The application: an ordinary role (the probe role may end its sessions) writing to
        // one table.
        pair.primary
            .client()
            .await
            .unwrap()
            .batch_execute(&format!(
                "CREATE ROLE {APP_ROLE} LOGIN PASSWORD '{APP_PASSWORD}';
                 CREATE TABLE writes (id bigint PRIMARY KEY);
                 GRANT SELECT, INSERT ON writes TO {APP_ROLE};"
            ))
            .await
            .unwrap();
        PairSystem {
            etcd,
            catalog,
            pair,
            dir: tempfile::tempdir().unwrap(),
            daemons: Vec::new(),
        }
    }

    /// Starts an elected `ftsd` with the postgres driver; returns its index.
    fn spawn(&mut self, name: &str, extra_postgres: &str, env: &[(&str, &str)]) -> usize {
        let config = write_pg_driver_config(
            self.dir.path(),
            &PgDriverConfig {
                instance: name,
                mirror_down_grace: "0s",
                postgres: extra_postgres,
                catalog: &format!("url = \"{}\"", self.catalog.url()),
                extra: &etcd_table(&self.etcd.endpoints(), "3s"),
                ..PgDriverConfig::default()
            },
        );
        self.daemons
            .push(Daemon::spawn(config, name, &["run"], env));
        self.daemons.len() - 1
    }

    fn api(&self, i: usize) -> String {
        addresses(&self.daemons[i].config).0
    }

    fn logs(&self) -> String {
        support::logs(&self.daemons)
    }

    async fn state(&self, dbid: i16) -> (Role, Status, Mode) {
        support::pg_pair::state(&self.catalog, dbid).await
    }

    async fn rules(&self) -> Vec<(String, serde_json::Value)> {
        support::pg_pair::evidence(&self.catalog).await
    }

    /// Waits until the elected leader has probed the pair in sync and recorded its epoch.
    async fn wait_acting(&self, i: usize) {
        let _ = wait_leader(&self.etcd, None).await;
        wait_for("the pair in sync in the catalog", LIMIT, || async {
            (self.state(2).await == (P, U, S) && self.state(3).await == (M, U, S)).then_some(())
        })
        .await;
        let d = &self.daemons[i];
        wait_for("the leader acting and probing", LIMIT, || async {
            d.log_text().contains("postgres probe").then_some(())
        })
        .await;
    }
}

/// `ftsctl switchover --content CONTENT ARGS…` against `api`, on a blocking thread: with
/// `--wait` it takes seconds, while the test's own tasks (the writer) keep running.
fn switchover(
    api: &str,
    content: &str,
    args: &[&str],
) -> tokio::task::JoinHandle<std::process::Output> {
    let mut argv = vec!["switchover".to_string(), "--content".into(), content.into()];
    argv.extend(args.iter().map(|a| a.to_string()));
    let api = api.to_string();
    tokio::task::spawn_blocking(move || {
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        ftsctl(&api, &argv)
    })
}

/// A switchover of `content` that must succeed within `--wait 20s` (`logs` is shown when it
/// does not); returns its stdout.
async fn switchover_done(api: &str, content: &str, logs: impl FnOnce() -> String) -> String {
    let out = switchover(api, content, &["--wait", "20s"]).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        logs()
    );
    stdout
}

/// `default_transaction_read_only` of `server` as a new session sees it.
async fn read_only(server: &PgServer) -> bool {
    let c = server.client().await.unwrap();
    let v: String = c
        .query_one("SHOW default_transaction_read_only", &[])
        .await
        .unwrap()
        .get(0);
    v == "on"
}

/// A client inserting rows one by one as the application role, into whichever server takes
/// them: `servers` in order, reconnecting after every error. Returns the acknowledged ids.
fn start_writer(
    servers: Vec<tokio_postgres::Config>,
    stop: Arc<AtomicBool>,
) -> (Arc<Mutex<Vec<i64>>>, tokio::task::JoinHandle<()>) {
    let acked = Arc::new(Mutex::new(Vec::new()));
    let sink = acked.clone();
    let task = tokio::spawn(async move {
        let mut id = 0i64;
        let mut current: Option<tokio_postgres::Client> = None;
        let mut which = 0usize;
        while !stop.load(Ordering::Relaxed) {
            let client = match current.take() {
                Some(c) => c,
                None => {
                    let mut cfg = servers[which % servers.len()].clone();
                    cfg.user(APP_ROLE).password(APP_PASSWORD);
                    match cfg.connect(tokio_postgres::NoTls).await {
                        Ok((c, conn)) => {
                            tokio::spawn(conn);
                            c
                        }
                        Err(_) => {
                            which += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                    }
                }
            };
            id += 1;
            let r = tokio::time::timeout(
                Duration::from_secs(5),
                client.execute("INSERT INTO writes (id) VALUES ($1)", &[&id]),
            )
            .await;
            match r {
                Ok(Ok(_)) => {
                    sink.lock().unwrap().push(id);
                    current = Some(client);
                }
                // Not acknowledged (read-only, in recovery, session ended, timed out): try
                // the next server.
                _ => {
                    which += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    });
    (acked, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn switchover_round_trip_loses_no_acknowledged_write() {
    let mut sys = PairSystem::start().await;
    let a = sys.spawn("fts-a", "", &[]);
    sys.wait_acting(a).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (acked, writer) = start_writer(
        vec![sys.pair.primary.pg_config(), sys.pair.standby.pg_config()],
        stop.clone(),
    );
    wait_for("writes acknowledged before", LIMIT, || async {
        (acked.lock().unwrap().len() > 50).then_some(())
    })
    .await;

    let api = sys.api(a);
    let stdout = switchover_done(&api, "0", || sys.logs()).await;
    assert!(stdout.contains(": done"), "{stdout}");
    assert!(
        stdout.contains("pg_basebackup"),
        "the rebuild is named: {stdout}"
    );

    // The writer carries on against the new primary.
    let before = acked.lock().unwrap().len();
    wait_for("writes acknowledged after", LIMIT, || async {
        (acked.lock().unwrap().len() > before + 50).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();

    assert_eq!(sys.state(3).await, (P, U, N));
    assert_eq!(sys.state(2).await, (M, D, N));
    assert!(is_primary(&sys.pair.standby).await.unwrap(), "promoted");
    // The old primary stays out of recovery but read-only: fenced, to be rebuilt.
    assert!(is_primary(&sys.pair.primary).await.unwrap());
    assert!(
        read_only(&sys.pair.primary).await,
        "the old primary stays read-only"
    );

    let acked = acked.lock().unwrap().clone();
    let rows = sys
        .pair
        .standby
        .client()
        .await
        .unwrap()
        .query("SELECT id FROM writes", &[])
        .await
        .unwrap();
    let present: BTreeSet<i64> = rows.iter().map(|r| r.get(0)).collect();
    let lost: Vec<&i64> = acked.iter().filter(|id| !present.contains(id)).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    // Nothing written to the old primary after the switch is acknowledged and missing.
    assert!(acked.len() > 100);

    let rules = sys.rules().await;
    let (_, ev) = rules
        .iter()
        .find(|(r, _)| r == "switchover")
        .unwrap_or_else(|| panic!("{rules:?}"));
    assert_eq!(ev["from"]["dbid"], 2, "{ev}");
    assert_eq!(ev["to"]["dbid"], 3, "{ev}");
    assert!(ev["writes_stopped"]["final_lsn"].is_string(), "{ev}");
    assert!(ev["standby_replayed"].is_string(), "{ev}");
    // A planned switchover is not an interrupted one: no writes were restored on the old
    // primary afterwards, and no fence alarm.
    let logs = sys.logs();
    assert!(!logs.contains("made writable again"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn switchover_is_refused_when_the_standby_is_not_in_sync() {
    let mut sys = PairSystem::start().await;
    let a = sys.spawn("fts-a", "max_lag = 1024", &[]);
    sys.wait_acting(a).await;
    // The standby keeps receiving and flushing (commits are acknowledged) but stops
    // replaying: its replay lag grows past postgres.max_lag.
    sys.pair
        .standby
        .client()
        .await
        .unwrap()
        .batch_execute("SELECT pg_wal_replay_pause()")
        .await
        .unwrap();
    sys.pair
        .primary
        .client()
        .await
        .unwrap()
        .batch_execute("INSERT INTO writes SELECT generate_series(1, 5000)")
        .await
        .unwrap();

    let api = sys.api(a);
    let out = switchover(&api, "0", &[]).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(4), "{stderr}\n{}", sys.logs());
    assert!(stderr.contains("refused"), "{stderr}");
    // Two refusals are right here, depending on whether the probe loop has already seen the
    // lag and marked the pair not in sync in the catalog before the request arrives (a
    // race the test cannot order): the request's own probe ("the standby is not in sync") or
    // the catalog ("the catalog does not have the pair in sync").
    let not_in_sync =
        |s: &str| s.contains("not in sync") || s.contains("does not have the pair in sync");
    assert!(not_in_sync(&stderr), "{stderr}");

    // The refusal is recorded with its evidence; nothing changed.
    let rules = sys.rules().await;
    let (_, ev) = rules
        .iter()
        .find(|(r, _)| r == "switchover_refused")
        .unwrap_or_else(|| panic!("{rules:?}"));
    assert!(not_in_sync(ev["refusal"].as_str().unwrap()), "{ev}");
    assert!(ev["check"].is_object(), "{ev}");
    assert!(!rules.iter().any(|(r, _)| r == "switchover"));
    assert_eq!(sys.state(2).await.0, P);
    assert!(
        !read_only(&sys.pair.primary).await,
        "the primary was never made read-only"
    );
    assert!(
        !is_primary(&sys.pair.standby).await.unwrap(),
        "not promoted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_deposed_mid_switchover_sends_nothing_further_and_the_next_undoes_it() {
    let mut sys = PairSystem::start().await;
    // The first leader pauses after stopping the writes and before its catalog transaction.
    let a = sys.spawn("fts-a", "", &[(PAUSE_IN_SWITCHOVER, "8s")]);
    wait_leader(&sys.etcd, None).await;
    sys.wait_acting(a).await;
    let b = sys.spawn("fts-b", "", &[]);
    support::elected::wait_members(&sys.etcd, 2).await;

    let api = sys.api(a);
    let call = switchover(&api, "0", &["--wait", "10s"]);
    wait_for(
        "the switchover paused before its catalog write",
        LIMIT,
        || async {
            sys.daemons[a]
                .log_text()
                .contains(PAUSE_IN_SWITCHOVER_LOG)
                .then_some(())
        },
    )
    .await;
    assert!(read_only(&sys.pair.primary).await, "writes stopped first");
    // Deposed right here: stopped past its lease; fts-b takes office.
    sys.daemons[a].signal(libc::SIGSTOP);
    let leader = wait_leader(&sys.etcd, Some("fts-a")).await;
    assert_eq!(leader.instance_id, "fts-b");
    // The next leader finds a read-only catalog primary with its standby in sync and no
    // switchover of its own: nothing was promoted, so it makes the primary writable again.
    wait_for("the primary writable again", LIMIT, || async {
        (!read_only(&sys.pair.primary).await).then_some(())
    })
    .await;
    sys.daemons[a].signal(libc::SIGCONT);

    let out = call.await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(4), "{stdout}\n{}", sys.logs());
    assert!(stdout.contains("stopped"), "{stdout}");
    // The deposed leader wrote and sent nothing further: the catalog still has the old
    // primary, the standby is still a standby, the primary stays writable.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(sys.state(2).await.0, P);
    assert_eq!(sys.state(3).await.0, M);
    assert!(
        !is_primary(&sys.pair.standby).await.unwrap(),
        "not promoted"
    );
    assert!(!read_only(&sys.pair.primary).await);
    let rules = sys.rules().await;
    assert!(
        !rules.iter().any(|(r, _)| r == "switchover"),
        "{rules:?}\n{}",
        sys.logs()
    );
    let a_log = sys.daemons[a].log_text();
    assert!(!a_log.contains("PROMOTE delivered"), "{a_log}");
    assert!(
        sys.daemons[b].log_text().contains("made writable again"),
        "{}",
        sys.logs()
    );
    // The primary takes writes again.
    sys.pair
        .primary
        .client()
        .await
        .unwrap()
        .batch_execute("INSERT INTO writes VALUES (-1)")
        .await
        .unwrap();
}

/// The coordinator pair: a `PgPair` configured by address, watched by an elected daemon over a
/// catalog with simulated segments.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn coordinator_switchover_moves_the_acting_coordinator_key() {
    let etcd = EtcdCluster::start(1).await.expect("etcd");
    let mut sys = support::elected::system(&etcd, "4s").await;
    let pair = PgPair::start("coord").await.expect("coordinator pair");
    let (primary, standby) = (
        format!("127.0.0.1:{}", pair.primary.port()),
        format!("127.0.0.1:{}", pair.standby.port()),
    );
    let config = support::pg_pair::coordinator_table(sys.dir.path(), &pair, "");
    let i = sys.spawn_ftsd("fts-a", &[], &config);
    wait_leader(&etcd, None).await;
    let d = &sys.daemons[i];
    wait_for("the standby seen in sync", LIMIT, || async {
        d.log_text()
            .contains("the coordinator's standby is in sync")
            .then_some(())
    })
    .await;
    support::coordinator::wait_recorded(etcd.endpoints()).await;
    let api = addresses(&d.config).0;

    // Display: the pair like gpstate -f, in segments and status.
    let seg = ftsctl(&api, &["segments"]);
    let text = String::from_utf8_lossy(&seg.stdout).to_string();
    assert!(
        text.contains("coordinator") && text.contains(&primary),
        "{text}"
    );
    assert!(
        text.contains("standby") && text.contains(&standby),
        "{text}"
    );
    assert!(text.contains("in sync"), "{text}");
    let json = ftsctl(&api, &["--json", "segments"]);
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(doc["coordinator"]["acting"], primary.as_str(), "{doc}");
    assert_eq!(doc["coordinator"]["acting_status"], "writable", "{doc}");
    assert_eq!(doc["coordinator"]["standby_status"], "in recovery", "{doc}");
    let status = String::from_utf8_lossy(&ftsctl(&api, &["status"]).stdout).to_string();
    assert!(
        status.contains("standby:") && status.contains(&standby),
        "{status}"
    );

    let stdout = switchover_done(&api, "-1", || sys.logs()).await;
    assert!(stdout.contains("gpinitstandby"), "{stdout}");

    let mut c = etcd_client::Client::connect(etcd.endpoints(), None)
        .await
        .unwrap();
    let resp = c.get("/ftsd/test/coordinator/state", None).await.unwrap();
    let state: CoordinatorState = serde_json::from_slice(resp.kvs()[0].value()).unwrap();
    assert_eq!(state.acting, standby, "the acting coordinator key moved");
    assert_eq!(state.standby, primary);
    assert!(state.rebuild, "the old coordinator is marked for rebuild");
    assert!(state.intent.is_none());
    let history = c
        .get(
            "/ftsd/test/coordinator/history/",
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    let events: Vec<String> = history
        .kvs()
        .iter()
        .map(|kv| {
            serde_json::from_slice::<serde_json::Value>(kv.value()).unwrap()["event"]
                .as_str()
                .unwrap()
                .to_string()
        })
        // The catalog's rows follow in a later round (this catalog lists no coordinator).
        .filter(|e| !e.starts_with("catalog_"))
        .collect();
    // The acting server recorded in the leader's first round, then the switchover.
    assert_eq!(events, ["adopted", "intent", "promoted"], "{events:?}");

    assert!(is_primary(&pair.standby).await.unwrap(), "promoted");
    assert!(
        read_only(&pair.primary).await,
        "the old coordinator stays read-only"
    );
    pair.standby
        .client()
        .await
        .unwrap()
        .batch_execute("CREATE TABLE after_switchover (v int)")
        .await
        .unwrap();
    // No split brain is reported: the old coordinator does not count as writable; the display
    // shows it as the standby to rebuild.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let json = ftsctl(&api, &["--json", "segments"]);
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(doc["coordinator"]["acting"], standby.as_str(), "{doc}");
    assert_eq!(doc["coordinator"]["acting_status"], "writable", "{doc}");
    assert_eq!(doc["coordinator"]["standby_status"], "read-only", "{doc}");
    assert_eq!(doc["coordinator"]["rebuild"], true, "{doc}");
    let text = String::from_utf8_lossy(&ftsctl(&api, &["segments"]).stdout).to_string();
    assert!(text.contains("gpinitstandby"), "{text}");
    let logs = sys.logs();
    assert!(!logs.contains("coordinator_dual_writable"), "{logs}");
}
