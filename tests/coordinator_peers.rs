//! The other observers' word on a lost coordinator (docs/coordinator.md, "Confirmation by the
//! other observers"), end to end: a real PostgreSQL primary/standby pair as the coordinator
//! pair, a real etcd, three real `ftsd` elected, no fence command.
//!
//! Each server is reached through a small TCP gate in this test that can refuse the
//! connections coming from one loopback address. The leader binds its coordinator connections
//! to 127.0.0.2 (`coordinator.source_address`), the others use 127.0.0.1: closing the gate to
//! 127.0.0.2 cuts the leader alone off the coordinator, as a broken route or firewall on the
//! leader's host would. (The gates also forward the standby, because PostgreSQL's default
//! `pg_hba.conf` admits TCP clients from 127.0.0.1 only.)

mod support;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fts_testkit::etcd::EtcdCluster;
use fts_testkit::pgpair::{is_primary, PgPair};
use ftsd::coordinator::records::{CoordinatorState, HistoryRecord};
use serde_json::Value;
use support::elected::{wait_leader, wait_members};
use support::{addresses, ftsctl, wait_for, System};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Generous: the machine is shared and loaded.
const LIMIT: Duration = Duration::from_secs(90);
const LEADER_SOURCE: &str = "127.0.0.2";

/// Forwards `127.0.0.1:port()` to a loopback port; a client from the blocked address is
/// disconnected as soon as it connects.
struct Gate {
    port: u16,
    blocked: Arc<Mutex<Option<IpAddr>>>,
    accept: JoinHandle<()>,
}

impl Gate {
    async fn start(target: u16) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let blocked: Arc<Mutex<Option<IpAddr>>> = Arc::default();
        let flag = blocked.clone();
        let accept = tokio::spawn(async move {
            let mut pumps = tokio::task::JoinSet::new();
            while let Ok((mut client, from)) = listener.accept().await {
                if *flag.lock().unwrap() == Some(from.ip()) {
                    drop(client);
                    continue;
                }
                pumps.spawn(async move {
                    let Ok(mut server) = TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
            }
        });
        Gate {
            port,
            blocked,
            accept,
        }
    }

    fn block(&self, from: &str) {
        *self.blocked.lock().unwrap() = Some(from.parse().unwrap());
    }

    fn address(&self) -> String {
        SocketAddr::from(([127, 0, 0, 1], self.port)).to_string()
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

struct Setup {
    etcd: EtcdCluster,
    sys: System,
    pair: PgPair,
    coordinator: Gate,
    standby: Gate,
}

impl Setup {
    /// The pair, its gates, and three instances: "a" first (the leader, its coordinator
    /// connections from 127.0.0.2), then "b" and "c"; returns once "a" saw the standby in
    /// sync and all three are registered.
    async fn start() -> Setup {
        let etcd = EtcdCluster::start(1).await.expect("etcd");
        let mut sys = support::elected::system(&etcd, "4s").await;
        let pair = PgPair::start("coordpeers").await.expect("coordinator pair");
        let coordinator = Gate::start(pair.primary.port()).await;
        let standby = Gate::start(pair.standby.port()).await;
        // No fence command: the failover needs every other live member's word.
        let table = support::coordinator::table(
            sys.dir.path(),
            &coordinator.address(),
            &standby.address(),
            "auto_failover = true",
        );
        sys.spawn_ftsd_env(
            "a",
            &[],
            &table,
            &[("FTSD_COORDINATOR_SOURCE_ADDRESS", LEADER_SOURCE)],
        );
        assert_eq!(wait_leader(&etcd, None).await.instance_id, "a");
        sys.spawn_ftsd("b", &[], &table);
        sys.spawn_ftsd("c", &[], &table);
        wait_members(&etcd, 3).await;
        let s = Setup {
            etcd,
            sys,
            pair,
            coordinator,
            standby,
        };
        for name in ["a", "b", "c"] {
            let d = s.sys.daemons.iter().find(|d| d.name == name).unwrap();
            wait_for(
                &format!("{name} to see the standby in sync"),
                LIMIT,
                || async {
                    d.log_text()
                        .contains("the coordinator's standby is in sync")
                        .then_some(())
                },
            )
            .await;
        }
        support::coordinator::wait_recorded(s.etcd.endpoints()).await;
        s
    }

    async fn events(&self, event: &str) -> Vec<HistoryRecord> {
        support::coordinator::events(self.etcd.endpoints(), event).await
    }

    async fn state(&self) -> Option<CoordinatorState> {
        support::coordinator::state(self.etcd.endpoints()).await
    }

    fn logs(&self) -> String {
        self.sys
            .daemons
            .iter()
            .map(|d| format!("--- {}\n{}", d.name, d.log_text()))
            .collect()
    }

    fn api(&self, name: &str) -> String {
        let d = self.sys.daemons.iter().find(|d| d.name == name).unwrap();
        addresses(&d.config).0
    }
}

/// Members whose answer in `evidence` says `seen`.
fn answered(evidence: &Value, seen: &str) -> Vec<String> {
    evidence["confirmations"]["confirmations"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|c| c["seen"] == seen)
                .filter_map(|c| c["member"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_coordinator_only_the_leader_loses_is_not_failed_over_and_a_real_loss_is() {
    let s = Setup::start().await;

    // The leader alone loses the coordinator: the others still reach it.
    s.coordinator.block(LEADER_SOURCE);
    let refused = wait_for("a recorded refusal", LIMIT, || async {
        let r = s.events("refused").await;
        (!r.is_empty()).then_some(r)
    })
    .await;
    let r = &refused[0];
    assert!(r.desc.contains("others_reach_it"), "{r:?}\n{}", s.logs());
    assert_eq!(r.instance_id, "a");
    let mut reached = answered(&r.evidence, "reached");
    reached.sort();
    assert_eq!(reached, ["b", "c"], "{}", r.evidence);
    assert_eq!(r.evidence["confirmations"]["tally"]["others"], "SomeReach");
    // A few more rounds: still nothing promoted, no intent.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        !is_primary(&s.pair.standby).await.unwrap(),
        "standby promoted\n{}",
        s.logs()
    );
    assert!(s.events("intent").await.is_empty(), "{}", s.logs());
    // ftsctl shows the answers.
    let out = ftsctl(&s.api("a"), &["explain", "-1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("refused") && text.contains("b reached") && text.contains("c reached"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ftsctl(&s.api("b"), &["history", "--content", "-1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("peers: b reached"), "{text}");

    // Now the coordinator dies for everyone: the others confirm, and the standby is promoted.
    let mut s = s;
    s.pair.primary.kill().unwrap();
    let standby = s.standby.address();
    let state = wait_for("the standby recorded as the coordinator", LIMIT, || async {
        s.state().await.filter(|st| st.acting == standby)
    })
    .await;
    assert!(state.rebuild && state.intent.is_none());
    assert!(is_primary(&s.pair.standby).await.unwrap());
    let promoted = s.events("promoted").await;
    assert_eq!(promoted.len(), 1, "{promoted:?}\n{}", s.logs());
    let lost = answered(&promoted[0].evidence, "lost");
    assert!(lost.len() >= 2, "{}", promoted[0].evidence);
    assert_eq!(
        promoted[0].evidence["confirmations"]["tally"]["others"],
        "AllLost"
    );
    let intents = s.events("intent").await;
    assert_eq!(intents.len(), 1);
    assert!(answered(&intents[0].evidence, "lost").len() >= 2);
}
