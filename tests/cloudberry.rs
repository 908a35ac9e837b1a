//! The Cloudberry backend against a real etcd holding a Cloudberry-format blob, `fts-segsim`
//! segments, and a real PostgreSQL standing in for the coordinator.
//!
//! STAND-IN: Cloudberry cannot be installed here. The "coordinator" is a plain PostgreSQL
//! server defining `gp_rewrite_segments_info(text)` in plpgsql with the documented behaviour:
//! it refuses a blob whose line count differs from the one it last stored, and otherwise
//! records the call and the blob in a table (the real function stores into etcd and refreshes
//! the coordinator's cache, which plpgsql cannot). The tests check what it recorded.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, GetOptions};
use fts_segsim::{Fault, SimConfig, Simulator};
use fts_testkit::etcd::EtcdCluster;
use fts_testkit::pg::PgServer;
use ftsd::catalog::cloudberry::conf::CbdbEtcdConf;
use ftsd::catalog::cloudberry::coordinator::CoordinatorSettings;
use ftsd::catalog::cloudberry::{blob, CloudberryCatalog, CloudberrySettings};
use ftsd::catalog::queries::HistoryFilter;
use ftsd::catalog::{Catalog, CatalogError, NoEtcd};
use ftsd::core::shadow::VerdictKind;
use ftsd::core::Rule;
use ftsd::driver::FtsWireDriver;
use ftsd::election::EtcdOptions;
use ftsd::engine::cycle::run_cycle;
use ftsd::engine::runner::CycleObserver;
use ftsd::engine::{CycleContext, ProbeSettings, SingleInstance};
use ftsd::model::{Epoch, Mode, Role, Segment, Status};
use ftsd::shadow::{ShadowAuthority, ShadowBook, ShadowCatalog, ShadowDriver};
use ftsd::wire::client::Credentials;

const STAND_IN: &str = r#"
CREATE TABLE cbdb_standin_blob (id int PRIMARY KEY, blob text NOT NULL);
CREATE TABLE cbdb_standin_calls (id serial, blob text NOT NULL, accepted bool NOT NULL);
CREATE FUNCTION pg_catalog.gp_rewrite_segments_info(b text) RETURNS bool AS $$
DECLARE cur text;
BEGIN
  SELECT blob INTO cur FROM cbdb_standin_blob WHERE id = 1;
  IF cur IS NOT NULL AND cardinality(string_to_array(rtrim(cur, E'\n'), E'\n'))
                      <> cardinality(string_to_array(rtrim(b, E'\n'), E'\n')) THEN
    INSERT INTO cbdb_standin_calls (blob, accepted) VALUES (b, false);
    RAISE WARNING 'Ignored update from fts, Current segments counts changed.';
    RETURN false;
  END IF;
  INSERT INTO cbdb_standin_calls (blob, accepted) VALUES (b, true);
  INSERT INTO cbdb_standin_blob VALUES (1, b) ON CONFLICT (id) DO UPDATE SET blob = excluded.blob;
  RETURN true;
END $$ LANGUAGE plpgsql;
"#;

struct Cluster {
    etcd: EtcdCluster,
    coordinator: PgServer,
    sim: Simulator,
    conf: CbdbEtcdConf,
    initial: String,
}

impl Cluster {
    async fn start(pairs: u32) -> Cluster {
        Cluster::start_with(SimConfig {
            pairs,
            ..SimConfig::default()
        })
        .await
    }

    async fn start_with(sim: SimConfig) -> Cluster {
        let etcd = EtcdCluster::start(1).await.expect("etcd");
        let coordinator = PgServer::builder()
            .start()
            .await
            .expect("coordinator stand-in");
        coordinator
            .client()
            .await
            .unwrap()
            .batch_execute(STAND_IN)
            .await
            .unwrap();
        let sim = Simulator::start(sim).await.expect("segsim");
        let conf = CbdbEtcdConf {
            endpoints: etcd
                .endpoints()
                .iter()
                .map(|e| e.trim_start_matches("http://").to_owned())
                .collect(),
            account_id: "acc".into(),
            cluster_id: "cl".into(),
            namespace: "default".into(),
        };
        let rows: Vec<Segment> = sim
            .segments()
            .into_iter()
            .map(|mut s| {
                if s.content == -1 {
                    s.address = coordinator.host().into();
                    s.port = coordinator.port().into();
                }
                s
            })
            .collect();
        let initial = blob::render(&rows);
        let c = Cluster {
            etcd,
            coordinator,
            sim,
            conf,
            initial,
        };
        c.client()
            .await
            .put(c.blob_key(), c.initial.clone(), None)
            .await
            .unwrap();
        c
    }

    fn blob_key(&self) -> String {
        "/cbdb/fts/default/acc/cl/fts_dump_file_key".into()
    }

    async fn client(&self) -> Client {
        Client::connect(self.etcd.endpoints(), None).await.unwrap()
    }

    fn catalog(&self, elected: bool) -> CloudberryCatalog {
        CloudberryCatalog::new(CloudberrySettings {
            elected,
            ..self.settings()
        })
    }

    fn settings(&self) -> CloudberrySettings {
        CloudberrySettings {
            conf: self.conf.clone(),
            etcd: EtcdOptions {
                endpoints: self.conf.endpoint_urls(),
                dial_timeout: Duration::from_secs(2),
                ..EtcdOptions::default()
            },
            coordinator: CoordinatorSettings {
                user: self.coordinator.superuser().into(),
                connect_timeout: Duration::from_secs(2),
                tls: Default::default(),
            },
            elected: false,
            history_limit: 100,
            call_timeout: Duration::from_secs(5),
        }
    }

    async fn blob(&self) -> (String, i64) {
        let mut c = self.client().await;
        let r = c.get(self.blob_key(), None).await.unwrap();
        let kv = &r.kvs()[0];
        (
            String::from_utf8(kv.value().to_vec()).unwrap(),
            kv.mod_revision(),
        )
    }

    async fn blob_versions(&self) -> i64 {
        let mut c = self.client().await;
        c.get(self.blob_key(), None).await.unwrap().kvs()[0].version()
    }

    async fn coordinator_calls(&self) -> Vec<(String, bool)> {
        let rows = self
            .coordinator
            .client()
            .await
            .unwrap()
            .query(
                "SELECT blob, accepted FROM cbdb_standin_calls ORDER BY id",
                &[],
            )
            .await
            .unwrap();
        rows.iter().map(|r| (r.get(0), r.get(1))).collect()
    }
}

fn context(
    catalog: Arc<CloudberryCatalog>,
    epoch: Epoch,
) -> Arc<CycleContext<FtsWireDriver, Arc<CloudberryCatalog>, SingleInstance>> {
    context_with(catalog, epoch, ftsd::core::Profile::Gpfts)
}

fn context_with(
    catalog: Arc<CloudberryCatalog>,
    epoch: Epoch,
    profile: ftsd::core::Profile,
) -> Arc<CycleContext<FtsWireDriver, Arc<CloudberryCatalog>, SingleInstance>> {
    Arc::new(CycleContext {
        driver: FtsWireDriver {
            credentials: Credentials::new("gpadmin"),
        },
        catalog,
        authority: SingleInstance::new(epoch),
        settings: ProbeSettings {
            timeout: Duration::from_millis(500),
            retries: 1,
            retry_delay: Duration::from_millis(100),
            concurrency: 8,
            profile,
        }
        .into(),
        instance_id: "fts-test".into(),
        stopping: AtomicBool::new(false),
        refusals: Default::default(),
        brake: Default::default(),
    })
}

/// The expected blob after content 0's primary (dbid 2) fails over to its mirror (dbid 4).
fn after_failover(initial: &str) -> String {
    let mut rows = blob::parse(initial).unwrap();
    for r in rows.iter_mut() {
        match r.dbid {
            2 => {
                r.role = ftsd::model::Role::Mirror;
                r.status = ftsd::model::Status::Down;
                r.mode = ftsd::model::Mode::NotInSync;
            }
            4 => {
                r.role = ftsd::model::Role::Primary;
                r.mode = ftsd::model::Mode::NotInSync;
            }
            _ => {}
        }
    }
    blob::render(&rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_loss_is_one_fenced_blob_update_and_the_coordinator_is_told() {
    let c = Cluster::start(2).await;
    let catalog = Arc::new(c.catalog(false));
    let epoch = catalog.claim_epoch(1, "fts-test", NoEtcd).await.unwrap();
    let ctx = context(catalog.clone(), epoch);
    run_cycle(ctx.clone()).await.unwrap();
    assert_eq!(
        c.blob().await.0,
        c.initial,
        "a healthy cycle writes nothing"
    );
    let versions = c.blob_versions().await;

    c.sim.set_fault(2, Fault::Down).await.unwrap();
    run_cycle(ctx.clone()).await.unwrap();

    let want = after_failover(&c.initial);
    assert_eq!(
        c.blob().await.0,
        want,
        "the exact line format, only dbids 2 and 4 changed"
    );
    assert_eq!(c.blob_versions().await, versions + 1, "one blob write");
    assert_eq!(
        c.coordinator_calls().await,
        vec![(want.clone(), true)],
        "the coordinator stand-in got the written blob once"
    );

    // History and evidence were written with the blob, and read back as the API serves them.
    let history = catalog
        .history(&HistoryFilter {
            limit: 10,
            ..HistoryFilter::default()
        })
        .await
        .unwrap();
    let mut descs: Vec<_> = history.iter().map(|h| (h.dbid, h.desc.clone())).collect();
    descs.sort();
    assert_eq!(
        descs,
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
    let ev = catalog
        .last_evidence(0)
        .await
        .unwrap()
        .expect("evidence of content 0");
    assert_eq!(ev.epoch, epoch.0);
    assert_eq!(Some(ev.id), history[0].evidence_id);

    // The next cycle sees the failover done and writes nothing more.
    run_cycle(ctx).await.unwrap();
    assert_eq!(c.blob_versions().await, versions + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_writer_is_rejected_by_etcd() {
    let c = Cluster::start(1).await;
    let old = Arc::new(c.catalog(false));
    let old_epoch = old.claim_epoch(1, "old", NoEtcd).await.unwrap();
    let old_ctx = context(old.clone(), old_epoch);
    old.load().await.unwrap();

    // A newer writer records a higher epoch (generation 0, revision 2).
    let new = c.catalog(false);
    assert_eq!(new.claim_epoch(2, "new", NoEtcd).await.unwrap(), Epoch(2));
    // The old one can no longer claim either.
    assert!(matches!(
        old.claim_epoch(1, "old", NoEtcd).await,
        Err(CatalogError::Fenced { .. })
    ));

    c.sim.set_fault(2, Fault::Down).await.unwrap();
    let report = run_cycle(old_ctx).await.unwrap();
    assert_eq!(
        c.blob().await.0,
        c.initial,
        "etcd refused the deposed write"
    );
    assert_eq!(c.blob_versions().await, 1);
    assert!(c.coordinator_calls().await.is_empty());
    assert!(
        format!("{report:?}").contains("enced"),
        "the cycle reports being fenced: {report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_changed_after_the_decision_is_not_overwritten() {
    let c = Cluster::start(1).await;
    let catalog = Arc::new(c.catalog(false));
    let epoch = catalog.claim_epoch(1, "fts-test", NoEtcd).await.unwrap();
    catalog.load().await.unwrap();
    // Someone (gprecoverseg, the coordinator) rewrites the blob after our read.
    let edited = c
        .initial
        .replacen("/data/mirror/gpseg0", "/data/mirror2/gpseg0", 1);
    c.client()
        .await
        .put(c.blob_key(), edited.clone(), None)
        .await
        .unwrap();
    let t = demote_dbid2(&c.initial, epoch);
    assert!(matches!(
        catalog.apply(&t).await,
        Err(CatalogError::Stale { .. })
    ));
    assert_eq!(c.blob().await.0, edited);
}

/// Content 0's primary (dbid 2) marked down, as one transition of `epoch`.
fn demote_dbid2(initial: &str, epoch: Epoch) -> ftsd::catalog::Transition {
    let segs = blob::parse(initial).unwrap();
    let primary = segs.iter().find(|s| s.dbid == 2).unwrap();
    ftsd::catalog::Transition {
        epoch,
        instance_id: "fts-test".into(),
        content: 0,
        rule: ftsd::core::Rule::Failover,
        updates: vec![ftsd::core::RowUpdate::new(
            primary,
            ftsd::model::SegmentState {
                role: ftsd::model::Role::Mirror,
                status: ftsd::model::Status::Down,
                mode: ftsd::model::Mode::NotInSync,
            },
        )],
        expect: vec![],
        evidence: serde_json::json!({}),
    }
}

/// An elected writer whose leader key is gone (its lease lapsed) is refused by etcd even
/// before any successor has claimed a newer epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_key_is_gone_cannot_write() {
    let c = Cluster::start(1).await;
    let mut client = c.client().await;
    let lease = client.lease_grant(30, None).await.unwrap().id();
    let put = client
        .put(
            format!("/cbdb/fts/default/acc/cl/fts_ha_lock/{lease:x}"),
            "",
            Some(etcd_client::PutOptions::new().with_lease(lease)),
        )
        .await
        .unwrap();
    let rev = put.header().unwrap().revision();
    let catalog = Arc::new(c.catalog(true));
    let epoch = catalog.claim_epoch(rev, "leader", NoEtcd).await.unwrap();
    catalog.load().await.unwrap();
    client.lease_revoke(lease).await.unwrap();
    let err = catalog.apply(&demote_dbid2(&c.initial, epoch)).await;
    assert!(matches!(err, Err(CatalogError::Fenced { .. })), "{err:?}");
    assert_eq!(c.blob().await.0, c.initial);
    assert!(c.coordinator_calls().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_blob_is_named_by_line_and_nothing_acts() {
    let c = Cluster::start(1).await;
    let bad = c.initial.replacen(" p p s u ", " p p s ", 1);
    c.client()
        .await
        .put(c.blob_key(), bad.clone(), None)
        .await
        .unwrap();
    let catalog = Arc::new(c.catalog(false));
    let epoch = catalog.claim_epoch(1, "fts-test", NoEtcd).await.unwrap();
    c.sim.set_fault(2, Fault::Down).await.unwrap();
    let err = run_cycle(context(catalog, epoch))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("fts_dump_file_key: configuration blob line 2: expected 10 fields"),
        "{err}"
    );
    assert_eq!(c.blob().await.0, bad);
    assert!(c.coordinator_calls().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_and_evidence_stay_bounded() {
    let c = Cluster::start(2).await;
    let catalog = Arc::new(CloudberryCatalog::new(CloudberrySettings {
        history_limit: 1,
        ..c.settings()
    }));
    let epoch = catalog.claim_epoch(1, "fts-test", NoEtcd).await.unwrap();
    let ctx = context(catalog.clone(), epoch);
    c.sim.set_fault(2, Fault::Down).await.unwrap();
    run_cycle(ctx.clone()).await.unwrap();
    c.sim.set_fault(3, Fault::Down).await.unwrap();
    run_cycle(ctx).await.unwrap();
    let count = |p: &'static str| {
        let c = &c;
        async move {
            c.client()
                .await
                .get(
                    format!("/cbdb/fts/default/acc/cl/ftsd/{p}/"),
                    Some(GetOptions::new().with_prefix().with_count_only()),
                )
                .await
                .unwrap()
                .count()
        }
    };
    // The second transition's deletes removed the first one's rows in its transaction; one
    // transition's own rows are always kept whole.
    assert_eq!(count("history").await, 2);
    assert_eq!(count("evidence").await, 1);
    assert!(catalog.last_evidence(0).await.unwrap().is_none());
    assert_eq!(catalog.last_evidence(1).await.unwrap().unwrap().content, 1);
}

// ---- the `gpfts` entry point (the real binary, started through a symlink named `gpfts`) ----

struct Gpfts {
    dir: tempfile::TempDir,
}

impl Gpfts {
    fn new(c: &Cluster) -> Gpfts {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_ftsd"), dir.path().join("gpfts")).unwrap();
        let conf = format!(
            "gp_etcd_endpoints='{}'\ngp_etcd_account_id='acc'\ngp_etcd_cluster_id='cl'\ngp_etcd_namespace='default'\n",
            c.conf.endpoints.join(",")
        );
        std::fs::write(dir.path().join("cbdb_etcd.conf"), conf).unwrap();
        Gpfts { dir }
    }

    fn command(&self, c: &Cluster, args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new(self.dir.path().join("gpfts"));
        cmd.arg("-F")
            .arg(self.dir.path().join("cbdb_etcd.conf"))
            .arg("-U")
            .arg(c.coordinator.superuser())
            .arg("-d")
            .arg(self.dir.path().join("log"))
            .args(args)
            .env_remove("RUST_LOG")
            .env("FTSD_API_LISTEN", format!("127.0.0.1:{}", free_port()))
            .env(
                "FTSD_API_METRICS_LISTEN",
                format!("127.0.0.1:{}", free_port()),
            );
        cmd
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log/fts")).unwrap_or_default()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpfts_w2_prints_the_blob_and_w1_loads_one() {
    let c = Cluster::start(1).await;
    let g = Gpfts::new(&c);
    let out = g.command(&c, &["-W", "2"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), c.initial);

    // -W 1 loads a file verbatim; a malformed one is refused naming the line.
    let file = g.dir.path().join("dump");
    let edited = c
        .initial
        .replacen("/data/mirror/gpseg0", "/data/m/gpseg0", 1);
    std::fs::write(&file, &edited).unwrap();
    let out = g
        .command(&c, &["-W", "1", "-L"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(c.blob().await.0, edited);
    std::fs::write(&file, "1 -1 p p n u 5432 h a\n").unwrap();
    let out = g
        .command(&c, &["-W", "1", "-L"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 1: expected 10 fields"));
    assert_eq!(c.blob().await.0, edited);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpfts_unknown_flag_prints_usage_and_exits_2() {
    let c = Cluster::start(1).await;
    let g = Gpfts::new(&c);
    let out = g.command(&c, &["-X"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Usage:\n  gpfts [OPTION]..."), "{err}");
    assert!(err.contains("-W, --warp-call=N"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpfts_one_round_fails_over_a_lost_primary_and_exits() {
    let c = Cluster::start(2).await;
    let g = Gpfts::new(&c);
    c.sim.set_fault(2, Fault::Down).await.unwrap();
    let out = g
        .command(&c, &["-A", "-D", "-R", "1", "-T", "1", "-I", "2"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        g.log()
    );
    assert_eq!(c.blob().await.0, after_failover(&c.initial));
    assert_eq!(c.coordinator_calls().await.len(), 1);
    assert!(g.log().contains("one round done"), "{}", g.log());
}

/// `etcdctl lock` stands in for a running `gpfts` holding its lock: ftsd (started as `gpfts`,
/// elected) queues behind it and neither probes nor writes; once the lock is released it takes
/// office and acts, and writes `fts_ha_hostname`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_gpfts_lock_keeps_ftsd_from_acting() {
    use std::io::BufRead;
    let c = Cluster::start(2).await;
    let g = Gpfts::new(&c);
    let mut lock = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", c.etcd.endpoints().join(",")))
        .args(["lock", "/cbdb/fts/default/acc/cl/fts_ha_lock"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("etcdctl (scripts/setup-debian installs etcd-client)");
    // etcdctl prints the lock key once it holds the lock.
    let mut first = String::new();
    std::io::BufReader::new(lock.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(
        first.starts_with("/cbdb/fts/default/acc/cl/fts_ha_lock/"),
        "{first}"
    );

    let _daemon = KillOnDrop(
        g.command(&c, &["-R", "1", "-T", "1", "-I", "2", "-u", "4"])
            .spawn()
            .unwrap(),
    );
    c.sim.set_fault(2, Fault::Down).await.unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let held = c.blob().await.0;
    let _ = lock.kill();
    let _ = lock.wait();
    assert_eq!(
        held,
        c.initial,
        "ftsd acted while gpfts's lock was held:\n{}",
        g.log()
    );

    // Released: ftsd takes office and fails content 0 over.
    let want = after_failover(&c.initial);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while c.blob().await.0 != want {
        if std::time::Instant::now() > deadline {
            std::fs::write("/tmp/cb-lock-test.log", g.log()).unwrap();
            panic!("no failover after release:\n{}", g.log());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let host = c
        .client()
        .await
        .get("/cbdb/fts/default/acc/cl/fts_ha_hostname", None)
        .await
        .unwrap();
    assert_eq!(
        host.kvs()[0].value_str().unwrap(),
        ftsd::config::hostname(),
        "fts_ha_hostname"
    );
}

/// A child process that must not outlive a failed test.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// As the SQL fence, a transition records its epoch when the record is older (a single
/// instance whose start-up claim found etcd down claims through its first transition).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transition_records_an_older_epoch_as_the_sql_fence_does() {
    let c = Cluster::start(2).await;
    let catalog = Arc::new(c.catalog(false));
    c.sim.set_fault(2, Fault::Down).await.unwrap();
    run_cycle(context(catalog, Epoch(1))).await.unwrap();
    assert_eq!(c.blob().await.0, after_failover(&c.initial));
    let mut client = c.client().await;
    let epoch = client
        .get("/cbdb/fts/default/acc/cl/ftsd/epoch", None)
        .await
        .unwrap();
    assert_eq!(epoch.kvs()[0].value_str().unwrap(), "1");
}

// ---- decision profile and shadow mode on the blob ----

/// Content 0 (pairs = 1: primary dbid 2, mirror dbid 3) with its mirror already marked down.
fn with_mirror_down(initial: &str) -> String {
    let mut rows = blob::parse(initial).unwrap();
    for r in rows.iter_mut().filter(|r| r.content == 0) {
        r.mode = Mode::NotInSync;
        if r.dbid == 3 {
            r.status = Status::Down;
        }
    }
    blob::render(&rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_double_fault_marks_the_primary_down_in_the_blob_as_gpfts_does() {
    let c = Cluster::start(1).await;
    let start = with_mirror_down(&c.initial);
    c.client()
        .await
        .put(c.blob_key(), start.clone(), None)
        .await
        .unwrap();
    let catalog = Arc::new(c.catalog(false));
    let epoch = catalog.claim_epoch(1, "fts-test", NoEtcd).await.unwrap();
    let ctx = context(catalog.clone(), epoch);
    c.sim.set_fault(3, Fault::Down).await.unwrap();
    c.sim.set_fault(2, Fault::Down).await.unwrap();
    let report = run_cycle(ctx.clone()).await.unwrap();
    assert_eq!(report.reports[0].rule, Rule::PrimaryDown, "{report:?}");

    let rows = blob::parse(&c.blob().await.0).unwrap();
    let state = |dbid: i16| {
        let r = rows.iter().find(|r| r.dbid == dbid).unwrap();
        (r.role, r.status, r.mode)
    };
    assert_eq!(state(2), (Role::Primary, Status::Down, Mode::NotInSync));
    assert_eq!(state(3), (Role::Mirror, Status::Down, Mode::NotInSync));
    let history = catalog
        .history(&HistoryFilter {
            limit: 10,
            ..HistoryFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        history.iter().map(|h| h.desc.as_str()).collect::<Vec<_>>(),
        ["FTS: update role, status, and mode for dbid 2 with contentid 0 to p, d, and n"]
    );
    assert_eq!(
        c.coordinator_calls().await.len(),
        1,
        "the coordinator was told"
    );
    // Still lost: nothing more is written.
    let versions = c.blob_versions().await;
    run_cycle(ctx.clone()).await.unwrap();
    assert_eq!(c.blob_versions().await, versions);

    // The primary comes back: its first reply marks it up again.
    c.sim.clear(2).await.unwrap();
    run_cycle(ctx).await.unwrap();
    let rows = blob::parse(&c.blob().await.0).unwrap();
    let p = rows.iter().find(|r| r.dbid == 2).unwrap();
    assert_eq!((p.role, p.status), (Role::Primary, Status::Up));
}

/// A primary without a mirror (content 1 here): the in-core profile leaves it alone; the gpfts
/// profile probes it, marks it `p/d/n` in the blob when it is lost (one fenced write with its
/// history row and evidence, the coordinator told, no role changed anywhere) and up again with
/// its first reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_primary_without_a_mirror_is_marked_down_in_the_blob_as_gpfts_does() {
    let c = Cluster::start_with(SimConfig {
        pairs: 1,
        mirrorless: 1,
        ..SimConfig::default()
    })
    .await;
    let lone = c
        .sim
        .segments()
        .into_iter()
        .find(|s| s.content == 1)
        .expect("content 1")
        .dbid;
    let catalog = Arc::new(c.catalog(false));
    let epoch = catalog.claim_epoch(1, "fts-test", NoEtcd).await.unwrap();
    let gpfts = context(catalog.clone(), epoch);
    let in_core = context_with(catalog.clone(), epoch, ftsd::core::Profile::InCore);

    let report = run_cycle(gpfts.clone()).await.unwrap();
    let lone_report = report
        .reports
        .iter()
        .find(|r| r.content == 1)
        .expect("the gpfts profile probes content 1");
    assert_eq!(
        (
            lone_report.primary_dbid,
            lone_report.mirror_dbid,
            lone_report.rule
        ),
        (lone, 0, Rule::Healthy)
    );
    assert_eq!(
        c.blob().await.0,
        c.initial,
        "a healthy cycle writes nothing"
    );
    let versions = c.blob_versions().await;

    c.sim.set_fault(lone, Fault::Down).await.unwrap();
    // The in-core FTS does not probe contents without a mirror: nothing is written.
    let report = run_cycle(in_core).await.unwrap();
    assert!(report.reports.iter().all(|r| r.content != 1), "{report:?}");
    assert_eq!(c.blob_versions().await, versions);

    let report = run_cycle(gpfts.clone()).await.unwrap();
    let r = report.reports.iter().find(|r| r.content == 1).unwrap();
    assert_eq!(r.rule, Rule::PrimaryDown, "{report:?}");
    assert!(r.message.is_none(), "nothing is sent: there is no mirror");
    let (text, _) = c.blob().await;
    let mut want = blob::parse(&c.initial).unwrap();
    for row in want.iter_mut().filter(|r| r.dbid == lone) {
        row.status = Status::Down;
        row.mode = Mode::NotInSync;
    }
    assert_eq!(
        text,
        blob::render(&want),
        "only the lone primary's status and mode changed, in the exact line format"
    );
    assert_eq!(c.blob_versions().await, versions + 1, "one blob write");
    assert_eq!(c.coordinator_calls().await, vec![(text.clone(), true)]);
    let rows = blob::parse(&text).unwrap();
    for content in [-1, 0, 1] {
        let primaries = rows
            .iter()
            .filter(|r| r.content == content && r.role == Role::Primary)
            .count();
        assert_eq!(primaries, 1, "content {content}: {text}");
    }
    let history = catalog
        .history(&HistoryFilter {
            limit: 10,
            ..HistoryFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        history.iter().map(|h| h.desc.clone()).collect::<Vec<_>>(),
        [format!(
            "FTS: update role, status, and mode for dbid {lone} with contentid 1 to p, d, and n"
        )]
    );
    let ev = catalog
        .last_evidence(1)
        .await
        .unwrap()
        .expect("evidence of content 1");
    assert_eq!(ev.epoch, epoch.0);
    assert_eq!(Some(ev.id), history[0].evidence_id);

    // Still lost: nothing more is written.
    run_cycle(gpfts.clone()).await.unwrap();
    assert_eq!(c.blob_versions().await, versions + 1);

    // It answers again: marked up with its first reply.
    c.sim.clear(lone).await.unwrap();
    let report = run_cycle(gpfts).await.unwrap();
    let r = report.reports.iter().find(|r| r.content == 1).unwrap();
    assert_eq!(r.rule, Rule::Resync, "{report:?}");
    let rows = blob::parse(&c.blob().await.0).unwrap();
    let p = rows.iter().find(|r| r.dbid == lone).unwrap();
    assert_eq!((p.role, p.status), (Role::Primary, Status::Up));
}

/// A shadow beside an acting instance on the blob: it agrees whichever side moves first, and
/// writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_agrees_with_the_acting_instance_on_the_blob() {
    let c = Cluster::start(2).await;
    let acting_catalog = Arc::new(c.catalog(false));
    let epoch = acting_catalog
        .claim_epoch(1, "fts-test", NoEtcd)
        .await
        .unwrap();
    let acting = context(acting_catalog, epoch);
    let book = Arc::new(ShadowBook::new(Duration::from_secs(60)));
    let shadow = Arc::new(CycleContext {
        driver: ShadowDriver::new(FtsWireDriver {
            credentials: Credentials::new("gpadmin"),
        }),
        catalog: ShadowCatalog::new(Arc::new(c.catalog(false)), book.clone()),
        authority: ShadowAuthority,
        settings: acting.settings.get().into(),
        instance_id: "shadow".into(),
        stopping: AtomicBool::new(false),
        refusals: Default::default(),
        brake: Default::default(),
    });
    let shadow_cycle = || async {
        let report = run_cycle(shadow.clone()).await.unwrap();
        book.cycle_finished(&report);
    };
    shadow_cycle().await;
    let versions = c.blob_versions().await;

    // The incumbent first: content 0's primary dies and the acting instance fails it over
    // before the shadow looks.
    c.sim.set_fault(2, Fault::Down).await.unwrap();
    run_cycle(acting.clone()).await.unwrap();
    shadow_cycle().await;
    // The shadow first: content 1's primary dies, the shadow decides, then the incumbent acts.
    c.sim.set_fault(3, Fault::Down).await.unwrap();
    shadow_cycle().await;
    run_cycle(acting.clone()).await.unwrap();
    shadow_cycle().await;

    let s = book.summary();
    let firsts: Vec<_> = s
        .recent
        .iter()
        .map(|r| (r.verdict.kind, r.verdict.content, r.verdict.first))
        .collect();
    assert_eq!(
        firsts,
        [
            (VerdictKind::Agree, 0, "incumbent"),
            (VerdictKind::Agree, 1, "shadow")
        ],
        "{s:#?}"
    );
    assert_eq!((s.expecting, s.judging), (0, 0));
    assert_eq!(
        c.blob_versions().await,
        versions + 2,
        "only the acting instance's two failovers were written"
    );
}
