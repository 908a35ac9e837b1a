//! The coordinator pair over TLS (`coordinator.sslmode` and its files): a real PostgreSQL
//! primary/standby pair that accepts TCP clients only over TLS (`hostssl` lines only in
//! `pg_hba.conf`, so a plaintext probe would be refused), a real etcd and the real `ftsd`,
//! elected. With `verify-full` and the right CA the pair is probed and a kill -9 of the
//! coordinator fails over to the standby; with a CA that did not sign the servers'
//! certificates, the coordinator's loss is never seen (a prober fault) and nothing is
//! promoted.

mod support;

use std::path::Path;
use std::time::Duration;

use fts_testkit::etcd::EtcdCluster;
use fts_testkit::pg::{Auth, PgServer, PgServerTls};
use fts_testkit::pgpair::{is_primary, PgPair};
use fts_testkit::pki::Pki;
use ftsd::coordinator::records::{CoordinatorState, HistoryRecord};
use support::elected::{wait_leader, LIMIT};
use support::{wait_for, System};

/// A synchronous pair whose servers take TCP clients over TLS only, with the certificate
/// `pg` of `pki` (valid for 127.0.0.1).
async fn tls_pair(pki: &Pki) -> PgPair {
    let (cert, key) = pki.server("pg");
    let builder = PgServer::builder()
        .auth(Auth::Scram)
        .password("tls-pair-superuser")
        .setting("wal_retrieve_retry_interval", "200ms")
        .setting("wal_receiver_status_interval", "1s")
        .tls(PgServerTls {
            cert,
            key,
            client_ca: None,
        });
    PgPair::start_with(builder, "coordtls")
        .await
        .expect("TLS coordinator pair")
}

fn coordinator_table(sys: &System, pair: &PgPair, ca: &Path) -> String {
    let extra = format!(
        "auto_failover = true\nsslmode = \"verify-full\"\nssl_ca_file = \"{}\"",
        ca.display()
    );
    support::pg_pair::coordinator_table(sys.dir.path(), pair, &extra)
}

async fn state(etcd: &EtcdCluster) -> Option<CoordinatorState> {
    support::coordinator::state(etcd.endpoints()).await
}

async fn history(etcd: &EtcdCluster) -> Vec<HistoryRecord> {
    support::coordinator::history(etcd.endpoints()).await
}

fn logs(sys: &System) -> String {
    sys.daemons
        .iter()
        .map(|d| format!("--- {}\n{}", d.name, d.log_text()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tls_only_coordinator_pair_is_probed_with_verify_full_and_fails_over() {
    let pki = Pki::new(&[("pg", "127.0.0.1")], &[]).unwrap();
    let etcd = EtcdCluster::start(1).await.expect("etcd");
    let mut sys = support::elected::system(&etcd, "4s").await;
    let mut pair = tls_pair(&pki).await;
    let table = coordinator_table(&sys, &pair, &pki.ca());
    sys.spawn_ftsd("fts-a", &[], &table);
    wait_leader(&etcd, None).await;
    // Seeing the standby in sync needs a session on each server: over TLS, since the
    // servers refuse any other TCP client.
    let s = &sys;
    wait_for("the standby seen in sync over TLS", LIMIT, || async {
        s.daemons[0]
            .log_text()
            .contains("the coordinator's standby is in sync")
            .then_some(())
    })
    .await;
    support::coordinator::wait_recorded(etcd.endpoints()).await;

    pair.primary.kill().unwrap();
    let standby = format!("127.0.0.1:{}", pair.standby.port());
    let recorded = wait_for(
        "the standby recorded as the coordinator",
        LIMIT * 2,
        || async { state(&etcd).await.filter(|st| st.acting == standby) },
    )
    .await;
    assert!(recorded.rebuild && recorded.intent.is_none());
    assert!(is_primary(&pair.standby).await.unwrap(), "{}", logs(&sys));
    let promoted: Vec<_> = history(&etcd)
        .await
        .into_iter()
        .filter(|h| h.event == "promoted")
        .collect();
    assert_eq!(promoted.len(), 1, "{promoted:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_certificate_this_instance_does_not_trust_never_counts_as_a_lost_coordinator() {
    let pki = Pki::new(&[("pg", "127.0.0.1")], &[]).unwrap();
    let stranger = Pki::new(&[], &[]).unwrap();
    let etcd = EtcdCluster::start(1).await.expect("etcd");
    let mut sys = support::elected::system(&etcd, "4s").await;
    let pair = tls_pair(&pki).await;
    // A CA that did not sign the servers' certificates: every handshake fails on them.
    let table = coordinator_table(&sys, &pair, &stranger.ca());
    sys.spawn_ftsd("fts-a", &[], &table);
    wait_leader(&etcd, None).await;
    let refused = wait_for("a recorded refusal", LIMIT, || async {
        let r: Vec<_> = history(&etcd)
            .await
            .into_iter()
            .filter(|h| h.event == "refused")
            .collect();
        (!r.is_empty()).then_some(r)
    })
    .await;
    assert!(
        refused[0].desc.contains("prober_fault"),
        "{refused:?}\n{}",
        logs(&sys)
    );
    let round = refused[0].evidence["primary_round"].to_string();
    assert!(round.contains("TLS handshake"), "{round}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !is_primary(&pair.standby).await.unwrap(),
        "standby promoted"
    );
    assert!(history(&etcd).await.iter().all(|h| h.event != "intent"));
}
