//! The brake on correlated failures (docs/safety.md), end to end with the real `ftsd` and
//! `ftsctl` binaries, a real etcd, a real PostgreSQL catalog and `fts-segsim`: primaries lost
//! on more hosts than the limit are not failed over, the alarm is raised (log, hook, metric,
//! `ftsctl status`, `explain`) and holds until `ftsctl brake release`, after which the
//! failovers go through; a loss on one host fails over at once.
//!
//! Layout (4 pairs): content c = primary dbid c+2, mirror dbid c+6. The simulator serves
//! every instance on 127.0.0.1; the catalog rows are given host names so that the brake, which
//! counts hosts by `hostname`, sees a cluster spread over several hosts.

mod support;

use std::path::Path;
use std::time::Duration;

use fts_segsim::Fault;
use fts_testkit::etcd::EtcdCluster;
use ftsd::model::{Mode, Role, Status};
use support::elected::wait_leader;
use support::{addresses, ftsctl, history_text, wait_for, System};

use Mode::{InSync as S, NotInSync as N};
use Role::{Mirror as M, Primary as P};
use Status::{Down as D, Up as U};

const LIMIT: Duration = Duration::from_secs(30);

/// Runs ftsctl expecting exit `code`; returns stdout.
fn expect(endpoint: &str, args: &[&str], code: i32) -> String {
    let o = ftsctl(endpoint, args);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(
        o.status.code(),
        Some(code),
        "ftsctl {args:?}\nstdout:\n{out}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// A transition hook that appends "<event> <content>" to `file`.
fn recording_hook(file: &Path) -> String {
    format!(
        "[hooks]\non_transition = [\"/bin/sh\", \"-c\", \"echo \\\"$FTSD_HOOK_EVENT $FTSD_CONTENT\\\" >> {}\"]\ntimeout = \"5s\"\n",
        file.display()
    )
}

fn lines(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

/// GET /metrics with a bare HTTP/1.0 request.
async fn metrics_text(addr: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// Names the hosts of the catalog rows: `primary(c)` and `mirror(c)` give content c's hosts.
async fn name_hosts(sys: &System, primary: fn(i16) -> String, mirror: fn(i16) -> String) {
    let client = sys.pg.client().await.unwrap();
    for s in sys.rows().await.iter().filter(|s| s.content >= 0) {
        let host = if s.role == P {
            primary(s.content)
        } else {
            mirror(s.content)
        };
        client
            .execute(
                "UPDATE gp_segment_configuration SET hostname = $1 WHERE dbid = $2",
                &[&host, &s.dbid],
            )
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primaries_lost_on_more_hosts_than_the_limit_are_held_until_an_operator_releases_them() {
    let etcd = EtcdCluster::start(1).await.unwrap();
    let mut sys = System::start(4, Duration::from_millis(500)).await;
    sys.etcd_endpoints = etcd.endpoints();
    sys.lease_ttl = "3s".into();
    // one primary per host (sdw1..sdw4), each mirror on the next host: the default limit is
    // half of the 4 hosts carrying primaries, 2
    name_hosts(
        &sys,
        |c| format!("sdw{}", c + 1),
        |c| format!("sdw{}", (c + 1) % 4 + 1),
    )
    .await;
    let hook_file = sys.dir.path().join("hooks.txt");
    let d = sys.spawn_ftsd("fts-a", &[], &recording_hook(&hook_file));
    let (api, metrics) = addresses(&sys.daemons[d].config);
    wait_leader(&etcd, None).await;
    wait_for("first probe cycle", LIMIT, || async {
        (sys.sim.view(2).unwrap().counters.probe > 0).then_some(())
    })
    .await;

    // primaries lost on three hosts at once: more than 2
    for dbid in [2, 3, 4] {
        sys.sim.set_fault(dbid, Fault::Down).await.unwrap();
    }
    wait_for("the brake's alarm", LIMIT, || async {
        lines(&hook_file)
            .contains(&"brake_engaged -1".to_string())
            .then_some(())
    })
    .await;
    // several more cycles: still held
    wait_for("three more cycles", LIMIT, || async {
        (sys.daemons[d]
            .log_text()
            .matches("brake engaged: failovers held")
            .count()
            >= 3)
            .then_some(())
    })
    .await;
    assert_eq!(sys.history().await, vec![], "{}", sys.logs());
    for (dbid, want) in [
        (2, (P, U, S)),
        (6, (M, U, S)),
        (7, (M, U, S)),
        (8, (M, U, S)),
    ] {
        assert_eq!(sys.row(dbid).await.state_tuple(), want, "dbid {dbid}");
    }
    for mirror in [6, 7, 8] {
        let v = sys.sim.view(mirror).unwrap();
        assert_eq!((v.role, v.counters.promote), (M, 0), "dbid {mirror}");
    }
    let log = sys.daemons[d].log_text();
    assert_eq!(
        log.matches("brake engaged: failovers on too many hosts at once")
            .count(),
        1,
        "logged once per engagement:\n{log}"
    );
    assert_eq!(
        lines(&hook_file)
            .iter()
            .filter(|l| *l == "brake_engaged -1")
            .count(),
        1
    );

    // ftsctl: status names the alarm and exits 1; explain says why; brake status has it all
    let status = expect(&api, &["status"], 1);
    assert!(
        status
            .contains("alarm:       brake engaged: 3 hosts in window > limit 2 (sdw1, sdw2, sdw3)"),
        "{status}"
    );
    let explain = expect(&api, &["explain", "1"], 0);
    assert!(explain.contains("content 1: brake_held"), "{explain}");
    assert!(
        explain.contains("refused:    brake engaged: 3 hosts in window > limit 2"),
        "{explain}"
    );
    let brake = expect(&api, &["brake", "status"], 1);
    assert!(
        brake.contains("held:        failovers of contents 0, 1, 2"),
        "{brake}"
    );
    assert!(brake.contains("record in etcd"), "{brake}");
    let text = metrics_text(&metrics).await;
    assert!(text.contains("\nftsd_brake_engaged 1\n"), "{text}");
    assert!(
        text.contains("\nftsd_brake_held_failovers_total 3\n"),
        "{text}"
    );
    // the engagement is in etcd, where a next leader would find it
    let mut client = etcd_client::Client::connect(etcd.endpoints(), None)
        .await
        .unwrap();
    let kv = client.get("/ftsd/test/brake", None).await.unwrap();
    let record: serde_json::Value = serde_json::from_slice(kv.kvs()[0].value()).unwrap();
    assert_eq!(record["engaged"]["limit"], 2, "{record}");

    // a release without a reason is refused; with one, the failovers go through
    let o = ftsctl(&api, &["brake", "release", "--reason", ""]);
    assert_ne!(o.status.code(), Some(0));
    let released = expect(&api, &["brake", "release", "--reason", "racks checked"], 0);
    assert!(released.contains("not engaged"), "{released}");
    for mirror in [6, 7, 8] {
        sys.wait_state(mirror, (P, U, N), LIMIT).await;
    }
    let history = sys.history().await;
    for c in 0..3i16 {
        assert!(
            history.contains(&history_text(c + 2, c, 'm', 'd', 'n')),
            "content {c}: {history:?}"
        );
        assert!(
            history.contains(&history_text(c + 6, c, 'p', 'u', 'n')),
            "content {c}: {history:?}"
        );
    }
    assert_eq!(sys.row(9).await.state_tuple(), (M, U, S));
    let brake = expect(&api, &["brake", "status"], 0);
    assert!(brake.contains("racks checked"), "{brake}");
    wait_for("the gauge to drop", LIMIT, || async {
        metrics_text(&metrics)
            .await
            .contains("\nftsd_brake_engaged 0\n")
            .then_some(())
    })
    .await;
    // the failover evidence is the fresh decision's, not the held one's
    let ev = sys.evidence().await;
    let (_, _, rule, _) = ev.last().unwrap();
    assert_eq!(rule, "failover");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primaries_lost_on_one_host_fail_over_at_once() {
    let mut sys = System::start(4, Duration::from_millis(500)).await;
    // contents 0 and 1 have their primaries on sdw1, 2 on sdw2, 3 on sdw3: limit 1 host
    name_hosts(
        &sys,
        |c| format!("sdw{}", c.max(1)),
        |c| format!("sdw{}", c.max(1) % 3 + 1),
    )
    .await;
    let d = sys.spawn_ftsd("single", &["--no-election"], "");
    let (api, _) = addresses(&sys.daemons[d].config);
    wait_for("first probe cycle", LIMIT, || async {
        (sys.sim.view(2).unwrap().counters.probe > 0).then_some(())
    })
    .await;
    // the whole host sdw1 goes: two contents, one host
    for dbid in [2, 3] {
        sys.sim.set_fault(dbid, Fault::Down).await.unwrap();
    }
    for mirror in [6, 7] {
        sys.wait_state(mirror, (P, U, N), LIMIT).await;
    }
    for primary in [2, 3] {
        assert_eq!(sys.row(primary).await.state_tuple(), (M, D, N));
    }
    let brake = expect(&api, &["brake", "status"], 0);
    assert!(brake.contains("brake:       not engaged"), "{brake}");
    assert!(brake.contains("record in process"), "{brake}");
    assert!(brake.contains("sdw1 (content 0"), "{brake}");
    let status = expect(&api, &["status"], 1);
    assert!(!status.contains("brake engaged"), "{status}");
    assert!(!sys.daemons[d].log_text().contains("brake engaged"));
}
