//! Coordinator failover on a Cloudberry external-FTS cluster: a real etcd holding the
//! Cloudberry blob and promote-ready key, the real `ftsd` binary (elected, `catalog.backend =
//! "cloudberry"`), and `fts-segsim` serving the segments **and the coordinator pair**.
//!
//! STAND-IN: Cloudberry cannot be installed here. `fts-segsim --standby` stands in for the
//! coordinator and its standby *as their FTS handlers*: the coordinator answers PROBE with its
//! standby's replication state, the standby answers as a mirror, accepts PROMOTE only while
//! the promote-ready key reads `1` (writing `0` as it promotes) and then rewrites the blob as
//! `activateStandby` does. No SQL coordinator is involved in these tests (the notification
//! after a blob write, `gp_rewrite_segments_info`, has its PostgreSQL stand-in in
//! `tests/cloudberry.rs`; here it fails against the simulator and is only logged).

mod support;

use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
use fts_segsim::cloudberry::CbdbLink;
use fts_segsim::{Fault, SimConfig, Simulator};
use fts_testkit::etcd::EtcdCluster;
use ftsd::catalog::cloudberry::conf::CbdbEtcdConf;
use ftsd::catalog::cloudberry::coordinator::CoordinatorSettings;
use ftsd::catalog::cloudberry::{blob, CloudberryCatalog, CloudberrySettings};
use ftsd::catalog::queries::HistoryFilter;
use ftsd::catalog::CatalogError;
use ftsd::coordinator::records::{
    CoordinatorState, Extra, Fence, HistoryRecord, RecordError, Records,
};
use ftsd::election::EtcdOptions;
use ftsd::model::{Epoch, Mode, Role, Segment, Status};
use support::{free_port, wait_for, Daemon};

const LIMIT: Duration = Duration::from_secs(40);
const BASE: &str = "/cbdb/fts/default/acc/cl";

struct Cb {
    // Dropped first: a failed test prints the daemons' logs, which live in `dir`.
    daemons: Vec<Daemon>,
    etcd: EtcdCluster,
    sim: Simulator,
    dir: tempfile::TempDir,
    conf: CbdbEtcdConf,
}

impl Cb {
    /// etcd, one mirrored segment pair and the coordinator pair, the blob written and the
    /// promote-ready key `1` (the simulated coordinator's `setStandbyPromoteReady`).
    async fn start() -> Cb {
        let etcd = EtcdCluster::start(1).await.expect("etcd");
        let sim = Simulator::start(SimConfig {
            pairs: 1,
            standby: true,
            ..SimConfig::default()
        })
        .await
        .expect("segsim");
        let dir = tempfile::tempdir().unwrap();
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
        std::fs::write(
            dir.path().join("cbdb_etcd.conf"),
            format!(
                "gp_etcd_endpoints='{}'\ngp_etcd_account_id='acc'\ngp_etcd_cluster_id='cl'\ngp_etcd_namespace='default'\n",
                conf.endpoints.join(",")
            ),
        )
        .unwrap();
        sim.attach_cloudberry(CbdbLink::open(&dir.path().join("cbdb_etcd.conf")).unwrap())
            .await
            .expect("blob and promote-ready key");
        Cb {
            daemons: Vec::new(),
            etcd,
            sim,
            dir,
            conf,
        }
    }

    /// The coordinator's and the standby's rows as the simulator serves them.
    fn pair(&self) -> (Segment, Segment) {
        let rows = self.sim.segments();
        let c = rows
            .iter()
            .find(|r| r.content == -1 && r.role == Role::Primary)
            .unwrap();
        let s = rows
            .iter()
            .find(|r| r.content == -1 && r.role == Role::Mirror)
            .unwrap();
        (c.clone(), s.clone())
    }

    fn addr(r: &Segment) -> String {
        format!("{}:{}", r.address, r.port)
    }

    fn catalog(&self) -> CloudberryCatalog {
        CloudberryCatalog::new(CloudberrySettings {
            conf: self.conf.clone(),
            etcd: EtcdOptions {
                endpoints: self.conf.endpoint_urls(),
                dial_timeout: Duration::from_secs(2),
                ..EtcdOptions::default()
            },
            coordinator: CoordinatorSettings {
                user: "gpadmin".into(),
                connect_timeout: Duration::from_secs(1),
                tls: Default::default(),
            },
            elected: true,
            history_limit: 100,
            call_timeout: Duration::from_secs(5),
        })
    }

    fn records(&self) -> Records {
        Records::new(
            "/ftsd/cl/coordinator/".into(),
            EtcdOptions {
                endpoints: self.etcd.endpoints(),
                dial_timeout: Duration::from_secs(2),
                ..EtcdOptions::default()
            },
            Duration::from_secs(5),
        )
    }

    async fn client(&self) -> Client {
        Client::connect(self.etcd.endpoints(), None).await.unwrap()
    }

    async fn rows(&self) -> Vec<Segment> {
        self.catalog().read_rows().await.unwrap().0
    }

    async fn promote_ready(&self) -> Option<String> {
        self.catalog().standby_promote_ready().await.unwrap()
    }

    async fn state(&self) -> Option<CoordinatorState> {
        self.records().load().await.unwrap().state
    }

    async fn events(&self, event: &str) -> Vec<HistoryRecord> {
        self.records()
            .history(1000)
            .await
            .unwrap()
            .into_iter()
            .filter(|h| h.event == event)
            .collect()
    }

    /// One elected ftsd on the Cloudberry backend watching the pair, failover switched on.
    fn spawn(&mut self, name: &str) {
        let (c, s) = self.pair();
        let config = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                r#"cluster = "cl"
instance_id = "{name}"

[probe]
interval = "1s"
timeout = "500ms"
retries = 1
retry_delay = "200ms"
user = "gpadmin"

[catalog]
backend = "cloudberry"
cbdb_conf = "{conf}"

[etcd]
endpoints = [{endpoints}]
lease_ttl = "4s"
act_margin = "500ms"
dial_timeout = "1s"

[api]
listen = "127.0.0.1:{api}"
metrics_listen = "127.0.0.1:{metrics}"

[log]
level = "info,ftsd=debug"

[coordinator]
primary = "{primary}"
standby = "{standby}"
auto_failover = true
interval = "1s"
timeout = "500ms"
retries = 1
promote_timeout = "10s"
"#,
                conf = self.dir.path().join("cbdb_etcd.conf").display(),
                endpoints = self
                    .etcd
                    .endpoints()
                    .iter()
                    .map(|e| format!("\"{e}\""))
                    .collect::<Vec<_>>()
                    .join(", "),
                api = free_port(),
                metrics = free_port(),
                primary = Cb::addr(&c),
                standby = Cb::addr(&s),
            ),
        )
        .unwrap();
        self.daemons
            .push(Daemon::spawn(config, name, &["run"], &[]));
    }

    fn logs(&self) -> String {
        self.daemons.iter().map(Daemon::log_text).collect()
    }

    async fn wait_in_sync(&self) {
        wait_for(
            "the standby seen in sync through the FTS handler",
            LIMIT,
            || async {
                self.logs()
                    .contains("the coordinator's standby is in sync")
                    .then_some(())
            },
        )
        .await;
        // Nothing is failed over before the leader has recorded which server acts.
        wait_for("the acting coordinator recorded", LIMIT, || async {
            self.state().await
        })
        .await;
    }
}

/// The coordinator lost with the promote-ready key `1`: ftsd promotes the standby once through
/// its FTS handler (which consumes the key), and records the outcome together with the blob's
/// content -1 rows, their history rows and evidence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_coordinator_with_promote_ready_fails_over_and_updates_the_blob() {
    let mut cb = Cb::start().await;
    let (old, new) = cb.pair();
    cb.spawn("fts-a");
    cb.wait_in_sync().await;
    assert_eq!(cb.promote_ready().await.as_deref(), Some("1"));

    cb.sim.set_fault(old.dbid, Fault::Down).await.unwrap();
    let state = wait_for("the outcome recorded", LIMIT, || async {
        cb.state()
            .await
            .filter(|s| s.intent.is_none() && s.acting == Cb::addr(&new))
    })
    .await;
    assert!(state.rebuild, "the old coordinator is marked for rebuild");
    assert_eq!(cb.sim.view(new.dbid).unwrap().role, Role::Primary);
    // The standby consumed the key as it promoted.
    assert_eq!(cb.promote_ready().await.as_deref(), Some("0"));

    // The blob: the new coordinator acts (whether or not its activateStandby already dropped
    // the old line, which it does in the background).
    let rows = cb.rows().await;
    let n = rows.iter().find(|r| r.dbid == new.dbid).expect("new row");
    assert_eq!(
        (n.role, n.status, n.mode),
        (Role::Primary, Status::Up, Mode::NotInSync)
    );
    if let Some(o) = rows.iter().find(|r| r.dbid == old.dbid) {
        assert_eq!((o.role, o.status), (Role::Mirror, Status::Down), "{rows:?}");
    }
    // History rows and evidence for content -1, through the catalog as `ftsctl history` reads.
    let history = cb
        .catalog()
        .history(&HistoryFilter {
            content: Some(-1),
            limit: 100,
            ..HistoryFilter::default()
        })
        .await
        .unwrap();
    assert!(
        history
            .iter()
            .any(|h| h.dbid == new.dbid && h.rule.as_deref() == Some("coordinator_failover")),
        "{history:?}"
    );
    let evidence = cb
        .catalog()
        .last_evidence(-1)
        .await
        .unwrap()
        .expect("evidence");
    assert_eq!(evidence.rule, "coordinator_failover");
    assert!(evidence.evidence.to_string().contains("is_in_sync"));

    let promoted = cb.events("promoted").await;
    assert_eq!(promoted.len(), 1);
    assert!(promoted[0].evidence.to_string().contains("PROMOTE dbid="));
    // Once, and it stays so.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(cb.events("promoted").await.len(), 1);
    assert_eq!(cb.events("intent").await.len(), 1);
    assert!(!cb.logs().contains("panicked"));
    drop(cb.daemons.drain(..));
}

/// The promote-ready key absent or `0`: a refusal with evidence, no intent, nothing promoted,
/// the blob's content -1 rows untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promote_ready_key_not_1_refuses_with_evidence_and_promotes_nothing() {
    let mut cb = Cb::start().await;
    let (old, new) = cb.pair();
    // The key absent: `0` and a missing key are both "not ready".
    cb.client()
        .await
        .delete(format!("{BASE}/fts_standby_promote_ready_key"), None)
        .await
        .unwrap();
    cb.spawn("fts-a");
    cb.wait_in_sync().await;
    let before: Vec<Segment> = cb
        .rows()
        .await
        .into_iter()
        .filter(|r| r.content == -1)
        .collect();

    cb.sim.set_fault(old.dbid, Fault::Down).await.unwrap();
    let refused = wait_for("a promote_not_ready refusal", LIMIT, || async {
        cb.events("refused").await.into_iter().next()
    })
    .await;
    assert!(
        refused.desc.contains("promote_not_ready"),
        "{}",
        refused.desc
    );
    let ev = refused.evidence.to_string();
    assert!(ev.contains("promote_ready_key"), "{ev}");
    assert!(ev.contains("absent"), "{ev}");

    // Set to 0 rather than absent: still refused, nothing moves.
    cb.sim.set_promote_ready(false).await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(cb.events("intent").await.is_empty());
    assert!(cb.events("promoted").await.is_empty());
    assert!(cb.state().await.is_none_or(|s| s.intent.is_none()));
    assert_eq!(cb.sim.view(new.dbid).unwrap().role, Role::Mirror);
    let after: Vec<Segment> = cb
        .rows()
        .await
        .into_iter()
        .filter(|r| r.content == -1)
        .collect();
    assert_eq!(before, after, "the content -1 rows were not touched");
    assert!(cb.catalog().last_evidence(-1).await.unwrap().is_none());

    // The coordinator's `setStandbyPromoteReady(true)`: the failover proceeds.
    cb.sim.set_promote_ready(true).await.unwrap();
    wait_for("the failover once the key is 1", LIMIT, || async {
        cb.state()
            .await
            .filter(|s| s.intent.is_none() && s.acting == Cb::addr(&new))
    })
    .await;
    drop(cb.daemons.drain(..));
}

/// The content -1 change recording `new` as acting in place of `old`, at epoch 7.
async fn change(
    catalog: &CloudberryCatalog,
    old: &Segment,
    new: &Segment,
) -> Result<ftsd::catalog::cloudberry::pair::PairChange, CatalogError> {
    catalog
        .coordinator_change(
            Epoch(7),
            "fts-test",
            "coordinator_failover",
            (&old.address, old.port as u16),
            (&new.address, new.port as u16),
            serde_json::json!({"test": true}),
        )
        .await
}

/// The library path of the outcome: the content -1 change joined to the coordinator records'
/// transaction lands whole while the writer's leader key lives, and is refused whole — blob,
/// history, evidence, state — once it is gone (a deposed leader) or a newer epoch is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leaders_blob_write_is_refused() {
    let cb = Cb::start().await;
    let (old, new) = cb.pair();
    let catalog = cb.catalog();
    let records = cb.records();
    let mut client = cb.client().await;

    // A leader key under fts_ha_lock, bound to a lease, as the election makes one; ftsd's
    // epoch recorded as the leader's claim does.
    let lease = client.lease_grant(30, None).await.unwrap().id();
    let key = format!("{BASE}/fts_ha_lock/{lease:x}");
    let put = client
        .txn(Txn::new().and_then([TxnOp::put(
            key.clone(),
            "",
            Some(etcd_client::PutOptions::new().with_lease(lease)),
        )]))
        .await
        .unwrap();
    let revision = put.header().unwrap().revision();
    client
        .put(format!("{BASE}/ftsd/epoch"), "7", None)
        .await
        .unwrap();
    let fence = Fence {
        leader_key: key.clone().into_bytes(),
        revision,
    };
    let initial = catalog.read_blob().await.unwrap().unwrap().0;
    let outcome = |epoch: i64| CoordinatorState {
        acting: Cb::addr(&new),
        standby: Cb::addr(&old),
        rebuild: true,
        intent: None,
        last_failover_us: Some(1),
        catalog_update: None,
        epoch,
        instance_id: "fts-test".into(),
        updated_us: 1,
    };
    let history = |t: i64| HistoryRecord {
        time_us: t,
        event: "promoted".into(),
        from: Cb::addr(&old),
        to: Cb::addr(&new),
        epoch: 7,
        instance_id: "fts-test".into(),
        desc: "test".into(),
        evidence: serde_json::json!({}),
    };
    // Deposed: the lease is revoked, the leader key gone. Nothing lands.
    let c = change(&catalog, &old, &new).await.unwrap();
    assert_eq!(c.updates.len(), 2, "both content -1 rows change");
    client.lease_revoke(lease).await.unwrap();
    let read = records.load().await.unwrap();
    let refused = records
        .write_with(
            &fence,
            read.mod_revision,
            Some(&outcome(7)),
            &history(10),
            Extra {
                compares: c.compares,
                ops: c.ops,
            },
        )
        .await;
    assert!(
        matches!(refused, Err(RecordError::Rejected(_))),
        "{refused:?}"
    );
    assert_eq!(catalog.read_blob().await.unwrap().unwrap().0, initial);
    assert!(records.load().await.unwrap().state.is_none());
    assert!(records.history(10).await.unwrap().is_empty());
    assert!(catalog.last_evidence(-1).await.unwrap().is_none());

    // A newer epoch recorded: refused before anything is sent.
    client
        .put(format!("{BASE}/ftsd/epoch"), "9", None)
        .await
        .unwrap();
    assert!(matches!(
        change(&catalog, &old, &new).await,
        Err(CatalogError::Fenced { .. })
    ));
    client
        .put(format!("{BASE}/ftsd/epoch"), "7", None)
        .await
        .unwrap();

    // A live leader key: the same write lands whole.
    let lease = client.lease_grant(30, None).await.unwrap().id();
    let key = format!("{BASE}/fts_ha_lock/{lease:x}");
    let put = client
        .txn(
            Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(
                    key.clone(),
                    "",
                    Some(etcd_client::PutOptions::new().with_lease(lease)),
                )]),
        )
        .await
        .unwrap();
    let fence = Fence {
        leader_key: key.into_bytes(),
        revision: put.header().unwrap().revision(),
    };
    let c = change(&catalog, &old, &new).await.unwrap();
    let read = records.load().await.unwrap();
    records
        .write_with(
            &fence,
            read.mod_revision,
            Some(&outcome(7)),
            &history(11),
            Extra {
                compares: c.compares,
                ops: c.ops,
            },
        )
        .await
        .unwrap();
    let rows = blob::parse(&catalog.read_blob().await.unwrap().unwrap().0).unwrap();
    let n = rows.iter().find(|r| r.dbid == new.dbid).unwrap();
    let o = rows.iter().find(|r| r.dbid == old.dbid).unwrap();
    assert_eq!((n.role, n.status), (Role::Primary, Status::Up));
    assert_eq!(
        (o.role, o.status, o.mode),
        (Role::Mirror, Status::Down, Mode::NotInSync)
    );
    assert_eq!(
        rows.iter().filter(|r| r.content >= 0).count(),
        2,
        "segments untouched"
    );
    assert_eq!(records.history(10).await.unwrap().len(), 1);
    let h = catalog
        .history(&HistoryFilter {
            content: Some(-1),
            limit: 10,
            ..HistoryFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(h.len(), 2, "{h:?}");
}
