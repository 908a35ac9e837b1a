//! Coordinator failover end to end: a real PostgreSQL primary/standby pair with synchronous
//! replication as the coordinator pair (`PgPair`), a real etcd, a catalog with a simulated
//! segment pair, and the real `ftsd` binary, elected. The coordinator is probed as the
//! dedicated probe role with the documented grants.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::Client;
use fts_testkit::etcd::EtcdCluster;
use fts_testkit::pgpair::{is_primary, PgPair};
use ftsd::coordinator::records::{
    CoordinatorState, Fence, HistoryRecord, Intent, IntentKind, RecordError, Records,
};
use ftsd::election::EtcdOptions;
use support::elected::{wait_leader, LIMIT};
use support::{wait_for, System};

use support::coordinator::PREFIX;

struct Setup {
    etcd: EtcdCluster,
    sys: System,
    pair: PgPair,
}

impl Setup {
    async fn start() -> Setup {
        let etcd = EtcdCluster::start(1).await.expect("etcd");
        let sys = support::elected::system(&etcd, "4s").await;
        let pair = PgPair::start("coord").await.expect("coordinator pair");
        Setup { etcd, sys, pair }
    }

    /// The `[coordinator]` table for this pair, with `extra` keys.
    fn config(&self, extra: &str) -> String {
        support::pg_pair::coordinator_table(self.sys.dir.path(), &self.pair, extra)
    }

    fn standby_addr(&self) -> String {
        format!("127.0.0.1:{}", self.pair.standby.port())
    }

    fn primary_addr(&self) -> String {
        format!("127.0.0.1:{}", self.pair.primary.port())
    }

    async fn client(&self) -> Client {
        Client::connect(self.etcd.endpoints(), None).await.unwrap()
    }

    async fn state(&self) -> Option<CoordinatorState> {
        support::coordinator::state(self.etcd.endpoints()).await
    }

    async fn events(&self, event: &str) -> Vec<HistoryRecord> {
        support::coordinator::events(self.etcd.endpoints(), event).await
    }

    /// Starts two elected daemons watching the pair and waits until both have seen the
    /// standby in sync.
    async fn spawn(&mut self, extra: &str) -> String {
        let config = self.config(extra);
        self.sys.spawn_ftsd("fts-a", &[], &config);
        self.sys.spawn_ftsd("fts-b", &[], &config);
        let leader = wait_leader(&self.etcd, None).await.instance_id;
        let sys = &self.sys;
        wait_for("the leader to see the standby in sync", LIMIT, || async {
            sys.daemons
                .iter()
                .find(|d| d.name == leader)
                .is_some_and(|d| {
                    d.log_text()
                        .contains("the coordinator's standby is in sync")
                })
                .then_some(())
        })
        .await;
        support::coordinator::wait_recorded(self.etcd.endpoints()).await;
        leader
    }

    /// Creates the writes table, starts the daemons with automatic failover and a writer on
    /// the coordinator, and waits for its first acknowledged writes.
    async fn spawn_writing(&mut self) -> (Arc<Mutex<Vec<i64>>>, tokio::task::JoinHandle<()>) {
        support::coordinator::create_writes_table(&self.pair.primary).await;
        self.spawn("auto_failover = true").await;
        let (acked, writer) = start_writer(&self.pair);
        wait_for("some acknowledged writes", LIMIT, || async {
            (acked.lock().unwrap().len() > 20).then_some(())
        })
        .await;
        (acked, writer)
    }

    fn logs(&self) -> String {
        self.sys
            .daemons
            .iter()
            .map(|d| format!("--- {}\n{}", d.name, d.log_text()))
            .collect()
    }
}

/// Inserts rows one by one on the coordinator until a commit fails; returns the acknowledged
/// ids as they come.
fn start_writer(pair: &PgPair) -> (Arc<Mutex<Vec<i64>>>, tokio::task::JoinHandle<()>) {
    let acked = Arc::new(Mutex::new(Vec::new()));
    let config = pair.primary.pg_config();
    let sink = acked.clone();
    let task = tokio::spawn(async move {
        let Ok((client, conn)) = config.connect(tokio_postgres::NoTls).await else {
            return;
        };
        tokio::spawn(conn);
        for id in 0i64.. {
            match client
                .execute("INSERT INTO writes (id) VALUES ($1)", &[&id])
                .await
            {
                Ok(_) => sink.lock().unwrap().push(id),
                Err(_) => return,
            }
        }
    });
    (acked, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_the_coordinator_promotes_the_standby_once_and_loses_no_acknowledged_write() {
    let mut s = Setup::start().await;
    let (acked, writer) = s.spawn_writing().await;
    s.pair.primary.kill().unwrap();
    let _ = writer.await;
    let acked = acked.lock().unwrap().clone();

    let standby = s.standby_addr();
    let state = wait_for(
        "the standby recorded as the coordinator",
        LIMIT * 2,
        || async { s.state().await.filter(|st| st.acting == standby) },
    )
    .await;
    assert!(state.rebuild, "the old coordinator is marked for rebuild");
    assert!(state.intent.is_none());
    assert_eq!(state.standby, s.primary_addr());
    assert!(is_primary(&s.pair.standby).await.unwrap());

    // Every acknowledged write is on the new coordinator, and it takes new ones.
    let client = s.pair.standby.client().await.unwrap();
    let rows = client.query("SELECT id FROM writes", &[]).await.unwrap();
    let present: std::collections::BTreeSet<i64> = rows.iter().map(|r| r.get(0)).collect();
    for id in &acked {
        assert!(present.contains(id), "acknowledged write {id} lost");
    }
    client
        .execute("INSERT INTO writes (id) VALUES (-1)", &[])
        .await
        .expect("the new coordinator accepts writes");

    // Promoted once: a few more rounds change nothing.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let promoted = s.events("promoted").await;
    assert_eq!(promoted.len(), 1, "{promoted:?}\n{}", s.logs());
    assert_eq!(s.events("intent").await.len(), 1);
    assert_eq!(promoted[0].to, standby);
    assert!(promoted[0].evidence["steps"].is_array());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_standby_not_in_sync_is_refused_with_evidence() {
    let mut s = Setup::start().await;
    s.spawn("auto_failover = true").await;
    // Asynchronous replication: commits no longer wait for the standby.
    s.pair.set_sync_names("").await.unwrap();
    let sys = &s.sys;
    wait_for("the standby seen out of sync", LIMIT, || async {
        sys.daemons
            .iter()
            .any(|d| {
                d.log_text()
                    .contains("the coordinator's standby is not in sync")
            })
            .then_some(())
    })
    .await;
    // Let every instance see it at least once more before the kill.
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.pair.primary.kill().unwrap();
    let refused = wait_for("a recorded refusal", LIMIT, || async {
        let r = s.events("refused").await;
        (!r.is_empty()).then_some(r)
    })
    .await;
    assert!(
        refused[0].desc.contains("not_in_sync"),
        "{refused:?}\n{}",
        s.logs()
    );
    assert_eq!(refused[0].evidence["decision"]["Refuse"], "NotInSync");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !is_primary(&s.pair.standby).await.unwrap(),
        "standby promoted"
    );
    assert!(s.events("intent").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_fence_command_stops_the_failover_before_the_intent() {
    let mut s = Setup::start().await;
    let fence = s.sys.dir.path().join("fence.sh");
    std::fs::write(
        &fence,
        "#!/bin/sh\necho \"cannot reach the PDU for $3\" >&2\nexit 3\n",
    )
    .unwrap();
    std::fs::set_permissions(&fence, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    s.spawn(&format!(
        "auto_failover = true\nfence_command = [\"{}\"]",
        fence.display()
    ))
    .await;
    s.pair.primary.kill().unwrap();
    let failed = wait_for("a recorded fence failure", LIMIT, || async {
        let r = s.events("fence_failed").await;
        (!r.is_empty()).then_some(r)
    })
    .await;
    let steps = failed[0].evidence["steps"].to_string();
    assert!(steps.contains("cannot reach the PDU"), "{steps}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !is_primary(&s.pair.standby).await.unwrap(),
        "standby promoted"
    );
    assert!(s.events("intent").await.is_empty());
    assert!(s.state().await.is_none_or(|st| st.intent.is_none()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_recorded_intent_is_resumed_by_a_new_leader_and_finished_once() {
    let mut s = Setup::start().await;
    // A previous leader recorded the intent and died before promoting.
    s.pair.primary.kill().unwrap();
    let intent = CoordinatorState {
        acting: s.primary_addr(),
        standby: s.standby_addr(),
        rebuild: false,
        intent: Some(Intent {
            id: 1,
            kind: IntentKind::Failover,
            from: s.primary_addr(),
            to: s.standby_addr(),
            epoch: 1,
            instance_id: "gone".into(),
            standby_replay_lsn: None,
        }),
        last_failover_us: None,
        catalog_update: None,
        epoch: 1,
        instance_id: "gone".into(),
        updated_us: 1,
    };
    s.client()
        .await
        .put(
            format!("{PREFIX}state"),
            serde_json::to_vec(&intent).unwrap(),
            None,
        )
        .await
        .unwrap();
    let config = s.config("auto_failover = true");
    s.sys.spawn_ftsd("fts-a", &[], &config);
    let standby = s.standby_addr();
    let state = wait_for("the resumed failover recorded", LIMIT * 2, || async {
        s.state().await.filter(|st| st.acting == standby)
    })
    .await;
    assert!(state.intent.is_none() && state.rebuild);
    assert!(is_primary(&s.pair.standby).await.unwrap());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(s.events("promoted").await.len(), 1, "{}", s.logs());
    // The intent was not recorded a second time: it was resumed.
    assert!(s.events("intent").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deposed_leaders_intent_write_is_rejected_by_etcd() {
    let etcd = EtcdCluster::start(1).await.expect("etcd");
    let mut c = Client::connect(etcd.endpoints(), None).await.unwrap();
    let lease = c.lease_grant(30, None).await.unwrap().id();
    let key = b"/ftsd/test/leader/abc".to_vec();
    let put = c
        .put(
            key.clone(),
            "me",
            Some(etcd_client::PutOptions::new().with_lease(lease)),
        )
        .await
        .unwrap();
    let revision = put.header().unwrap().revision();
    let records = Records::new(
        PREFIX.into(),
        EtcdOptions {
            endpoints: etcd.endpoints(),
            dial_timeout: Duration::from_secs(2),
            keepalive_interval: Duration::from_secs(10),
            username: None,
            password: None,
            ca_pem: None,
            cert_pem: None,
            key_pem: None,
        },
        Duration::from_secs(5),
    );
    let fence = Fence {
        leader_key: key,
        revision,
    };
    let state = CoordinatorState {
        acting: "a:1".into(),
        standby: "b:1".into(),
        rebuild: false,
        intent: None,
        last_failover_us: None,
        catalog_update: None,
        epoch: revision,
        instance_id: "me".into(),
        updated_us: 1,
    };
    let history = |t| HistoryRecord {
        time_us: t,
        event: "intent".into(),
        from: "a:1".into(),
        to: "b:1".into(),
        epoch: revision,
        instance_id: "me".into(),
        desc: String::new(),
        evidence: serde_json::Value::Null,
    };
    let read = records.load().await.unwrap();
    let written = records
        .write(&fence, read.mod_revision, Some(&state), &history(1))
        .await
        .expect("the leader's write lands");
    // A write decided on the old read is refused: the state changed since.
    assert!(matches!(
        records
            .write(&fence, read.mod_revision, Some(&state), &history(2))
            .await,
        Err(RecordError::Rejected(_))
    ));
    // The lease is gone (the leader was deposed): its key with it, and the write is refused.
    c.lease_revoke(lease).await.unwrap();
    assert!(matches!(
        records
            .write(&fence, written, Some(&state), &history(3))
            .await,
        Err(RecordError::Rejected(_))
    ));
    let history = records.history(10).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].time_us, 1);
}

/// The metrics text of a daemon.
fn metrics_text(config: &std::path::Path) -> String {
    let (_, metrics) = support::addresses(config);
    ureq::get(&format!("http://{metrics}/metrics"))
        .call()
        .map(|r| r.into_body().read_to_string().unwrap_or_default())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_vip_holder_or_writable_coordinator_raises_the_alarm() {
    let mut s = Setup::start().await;
    let leader = s.spawn("").await;
    let d = s.sys.daemons.iter().find(|d| d.name == leader).unwrap();
    let config = d.config.clone();
    wait_for("the pair's gauges", LIMIT, || async {
        metrics_text(&config)
            .contains("ftsd_coordinator_writable 1")
            .then_some(())
    })
    .await;

    // Two agents claim the address (one injected by hand).
    let mut c = s.client().await;
    let lease = c.lease_grant(60, None).await.unwrap().id();
    for member in ["127.0.0.1:1", "127.0.0.1:2"] {
        c.put(
            format!("{PREFIX}vip/{member}"),
            "{}",
            Some(etcd_client::PutOptions::new().with_lease(lease)),
        )
        .await
        .unwrap();
    }
    wait_for("the VIP alarm", LIMIT, || async {
        (metrics_text(&config).contains("ftsd_vip_holders 2")
            && d.log_text().contains("2 hosts hold the coordinator VIP"))
        .then_some(())
    })
    .await;
    let (api, _) = support::addresses(&config);
    let out = support::ftsctl(&api, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("alarm:") && text.contains("2 hosts hold the coordinator VIP"),
        "{text}"
    );
    assert!(text.contains("coordinator:"), "{text}");
    assert_eq!(out.status.code(), Some(1), "an alarm makes status exit 1");
    c.lease_revoke(lease).await.unwrap();

    // The standby promoted behind ftsd's back: two writable coordinators.
    s.pair
        .standby
        .client()
        .await
        .unwrap()
        .batch_execute("SELECT pg_promote()")
        .await
        .unwrap();
    wait_for("the split-brain alarm", LIMIT, || async {
        (metrics_text(&config).contains("ftsd_coordinator_writable 2")
            && d.log_text().contains("coordinator_dual_writable"))
        .then_some(())
    })
    .await;
    assert!(
        metrics_text(&config).contains("ftsd_alarms_total{rule=\"coordinator_dual_writable\"} 1")
    );
    // Never acted on: nothing promoted or recorded by ftsd.
    assert!(s.events("promoted").await.is_empty());
}

/// The catalog's content -1 rows follow the promotion (applied by the leader from the change
/// the outcome left pending in etcd, under the catalog's epoch fence), and coordinator
/// records lost from etcd are rebuilt from what the servers answer, never from the
/// configuration, which names the former coordinator as the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_catalog_rows_follow_a_promotion_and_a_lost_state_is_adopted_from_the_servers() {
    let mut s = Setup::start().await;
    let (primary_port, standby_port) = (
        i32::from(s.pair.primary.port()),
        i32::from(s.pair.standby.port()),
    );
    let catalog = s.sys.pg.client().await.unwrap();
    // The simulated cluster's own coordinator row gives way to the real pair's.
    catalog
        .execute(
            "DELETE FROM gp_segment_configuration WHERE content = -1",
            &[],
        )
        .await
        .unwrap();
    catalog
        .execute(
            "INSERT INTO gp_segment_configuration \
             (dbid, content, role, preferred_role, mode, status, port, hostname, address, datadir) \
             VALUES (1, -1, 'p', 'p', 's', 'u', $1, 'localhost', '127.0.0.1', '/coordinator'), \
                    (99, -1, 'm', 'm', 's', 'u', $2, 'localhost', '127.0.0.1', '/standby')",
            &[&primary_port, &standby_port],
        )
        .await
        .unwrap();
    s.spawn("auto_failover = true").await;
    let (primary, standby) = (s.primary_addr(), s.standby_addr());

    // Nothing recorded yet: the leader records the server that accepts writes.
    let first = wait_for("the acting coordinator recorded", LIMIT, || async {
        s.state().await
    })
    .await;
    assert_eq!(
        (first.acting.as_str(), first.rebuild),
        (primary.as_str(), false)
    );
    let adopted = s.events("adopted").await;
    assert_eq!(adopted.len(), 1, "{adopted:?}");
    assert_eq!(adopted[0].to, primary);

    s.pair.primary.kill().unwrap();
    let state = wait_for(
        "the promotion recorded and the catalog rows updated",
        LIMIT * 2,
        || async {
            s.state()
                .await
                .filter(|st| st.acting == standby && st.catalog_update.is_none())
        },
    )
    .await;
    assert!(state.rebuild);
    let rows = s.sys.rows().await;
    let row = |dbid: i16| rows.iter().find(|r| r.dbid == dbid).unwrap();
    use ftsd::model::{Mode, Role, Status};
    assert_eq!(
        (row(99).role, row(99).status, row(99).mode),
        (Role::Primary, Status::Up, Mode::NotInSync),
        "the promoted standby acts, with no standby of its own"
    );
    assert_eq!(
        (row(1).role, row(1).status, row(1).mode),
        (Role::Mirror, Status::Down, Mode::NotInSync),
        "the former coordinator is down, to be rebuilt"
    );
    let history: Vec<i16> = s.sys.history().await.iter().map(|(d, _)| *d).collect();
    assert!(history.contains(&1) && history.contains(&99), "{history:?}");
    let evidence = s.sys.evidence().await;
    assert!(
        evidence
            .iter()
            .any(|(_, _, rule, e)| rule == "coordinator_failover"
                && e["coordinator"]["to"] == standby.as_str()),
        "{evidence:?}"
    );
    assert_eq!(s.events("catalog_updated").await.len(), 1);

    // etcd loses the coordinator's records (rebuilt from nothing): the configuration still
    // names the dead former coordinator as the primary, the servers say otherwise.
    s.client()
        .await
        .delete(format!("{PREFIX}state"), None)
        .await
        .unwrap();
    let again = wait_for("the acting coordinator recorded again", LIMIT, || async {
        s.state().await
    })
    .await;
    assert_eq!(again.acting, standby, "{}", s.logs());
    assert_eq!(again.standby, primary);
    assert!(
        again.rebuild,
        "an unreachable former coordinator is to be rebuilt"
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(s.events("promoted").await.len(), 1, "{}", s.logs());
    assert_eq!(s.events("adopted").await.len(), 2);
}

/// The standby detaches (its WAL receiver stopped, the server still in recovery) while the
/// coordinator still requires a synchronous standby: every commit waits, so the standby holds
/// every acknowledged one and the in-sync observation stands. When the coordinator is then
/// lost, the standby is promoted and no acknowledged write is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_detached_standby_while_commits_wait_is_failed_over_with_every_acknowledged_write() {
    let mut s = Setup::start().await;
    let (acked, writer) = s.spawn_writing().await;
    let standby_client = s.pair.standby.client().await.unwrap();
    for sql in [
        "ALTER SYSTEM SET primary_conninfo = ''",
        "SELECT pg_reload_conf()",
    ] {
        standby_client.batch_execute(sql).await.unwrap();
    }
    let sys = &s.sys;
    wait_for("the detached standby noticed", LIMIT, || async {
        sys.daemons
            .iter()
            .any(|d| d.log_text().contains("commits wait for one"))
            .then_some(())
    })
    .await;
    let before = acked.lock().unwrap().len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        acked.lock().unwrap().len() <= before + 1,
        "commits were acknowledged with no standby attached"
    );
    s.pair.primary.kill().unwrap();
    let _ = writer.await;
    let acked = acked.lock().unwrap().clone();

    let standby = s.standby_addr();
    wait_for(
        "the standby recorded as the coordinator",
        LIMIT * 2,
        || async { s.state().await.filter(|st| st.acting == standby) },
    )
    .await;
    let rows = standby_client
        .query("SELECT id FROM writes", &[])
        .await
        .unwrap();
    let present: std::collections::BTreeSet<i64> = rows.iter().map(|r| r.get(0)).collect();
    for id in &acked {
        assert!(present.contains(id), "acknowledged write {id} lost");
    }
    assert_eq!(s.events("promoted").await.len(), 1, "{}", s.logs());
}
