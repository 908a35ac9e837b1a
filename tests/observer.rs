//! A failure only this observer sees is not a segment failure (docs/safety.md), end to end
//! with the real `ftsd` and `ftsctl` binaries, a real PostgreSQL catalog and `fts-segsim`:
//! a wrong probe password fails nothing over and raises the alarm (log, hook, metric,
//! `ftsctl status` / `segments` / `explain`); a failover whose mirror this observer cannot
//! reach is refused with that evidence, and goes ahead once the mirror answers.
//! Layout (2 pairs): content 0 = primary dbid 2 + mirror dbid 4; content 1 = 3 + 5.

mod support;

use std::path::Path;
use std::time::Duration;

use fts_segsim::{Auth, Fault, SimConfig};
use ftsd::model::{Mode, Role, Status};
use serde_json::Value;
use support::{addresses, ftsctl_expect, wait_for, System};

use Mode::{InSync as S, NotInSync as N};
use Role::{Mirror as M, Primary as P};
use Status::{Down as D, Up as U};

const LIMIT: Duration = Duration::from_secs(30);

/// A transition hook that appends "<event> <content>" to `file`.
fn recording_hook(file: &Path) -> String {
    format!(
        "[hooks]\non_transition = [\"/bin/sh\", \"-c\", \"echo \\\"$FTSD_HOOK_EVENT $FTSD_CONTENT\\\" >> {}\"]\ntimeout = \"5s\"\n",
        file.display()
    )
}

fn lines(file: &Path) -> Vec<String> {
    let mut l: Vec<String> = std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect();
    l.sort();
    l
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_probe_password_fails_nothing_over_and_raises_the_alarm() {
    let mut sys = System::start_sim(SimConfig {
        pairs: 2,
        auth: Auth::Md5,
        password: Some("right".into()),
        ..SimConfig::default()
    })
    .await;
    let hook_file = sys.dir.path().join("hooks.txt");
    let d = sys.spawn_ftsd_env(
        "single",
        &["--no-election"],
        &recording_hook(&hook_file),
        &[("FTSD_PROBE_PASSWORD", "wrong")],
    );
    let (api, metrics) = addresses(&sys.daemons[d].config);
    wait_for("the prober-fault alarm of both contents", LIMIT, || async {
        (lines(&hook_file) == ["prober_fault 0", "prober_fault 1"]).then_some(())
    })
    .await;
    // several more cycles: still nothing changed, and the alarm was raised once per content
    wait_for("three more cycles", LIMIT, || async {
        (sys.daemons[d].log_text().matches("still refused").count() >= 6).then_some(())
    })
    .await;
    assert_eq!(sys.history().await, vec![], "{}", sys.logs());
    for (dbid, want) in [
        (2, (P, U, S)),
        (3, (P, U, S)),
        (4, (M, U, S)),
        (5, (M, U, S)),
    ] {
        assert_eq!(sys.row(dbid).await.state_tuple(), want, "dbid {dbid}");
    }
    for mirror in [4, 5] {
        let v = sys.sim.view(mirror).unwrap();
        assert_eq!((v.role, v.counters.promote), (M, 0), "dbid {mirror}");
    }
    assert_eq!(lines(&hook_file), ["prober_fault 0", "prober_fault 1"]);
    let ev = sys.evidence().await;
    assert_eq!(
        ev.iter().map(|e| e.2.as_str()).collect::<Vec<_>>(),
        ["prober_fault", "prober_fault"],
        "one evidence row per episode"
    );
    let log = sys.daemons[d].log_text();
    assert_eq!(
        log.matches("prober fault: this observer cannot probe the primary")
            .count(),
        2,
        "logged once per episode:\n{log}"
    );

    // ftsctl: status names the alarm and exits 1; segments and explain say why
    let status = ftsctl_expect(&api, &["status"], 1);
    assert!(
        status.contains("alarm:       prober_fault: content 0 primary dbid 2: prober fault (auth)"),
        "{status}"
    );
    let json: Value = serde_json::from_str(&ftsctl_expect(&api, &["status", "--json"], 1)).unwrap();
    assert_eq!(json["alarms"].as_array().unwrap().len(), 2, "{json}");
    let segments = ftsctl_expect(&api, &["segments"], 0);
    assert!(
        segments.contains("failed: auth (prober fault: this observer's side, not the segment's)"),
        "{segments}"
    );
    let explain = ftsctl_expect(&api, &["explain", "0"], 0);
    assert!(explain.contains("content 0: prober_fault"), "{explain}");
    assert!(
        explain.contains("auth: password authentication failed"),
        "{explain}"
    );
    assert!(
        explain.contains("refused:    prober fault (auth)"),
        "{explain}"
    );
    let text = reqwest_free_get(&metrics).await;
    assert!(
        text.contains("ftsd_alarms_total{rule=\"prober_fault\"} 2\n"),
        "{text}"
    );
    assert!(text.contains("ftsd_prober_fault_contents 2\n"), "{text}");
}

/// GET /metrics with a bare HTTP/1.0 request (no client library needed for one call).
async fn reqwest_free_get(addr: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_is_refused_while_the_mirror_does_not_answer_this_observer() {
    let mut sys = System::start(2, Duration::from_millis(500)).await;
    let hook_file = sys.dir.path().join("hooks.txt");
    let d = sys.spawn_ftsd("single", &["--no-election"], &recording_hook(&hook_file));
    let (api, _) = addresses(&sys.daemons[d].config);
    wait_for("first probe cycle", LIMIT, || async {
        (sys.sim.view(2).unwrap().counters.probe > 0).then_some(())
    })
    .await;
    // the mirror is unreachable first, then the primary goes
    sys.sim.set_fault(4, Fault::Down).await.unwrap();
    sys.sim.set_fault(2, Fault::Down).await.unwrap();
    wait_for("the refusal's alarm", LIMIT, || async {
        lines(&hook_file)
            .contains(&"failover_unconfirmed 0".to_string())
            .then_some(())
    })
    .await;
    assert_eq!(sys.history().await, vec![], "{}", sys.logs());
    assert_eq!(sys.row(4).await.state_tuple(), (M, U, S));
    let ev = sys.evidence().await;
    let (_, _, rule, doc) = ev.last().unwrap();
    assert_eq!(rule, "failover_unconfirmed");
    assert!(
        doc["refusal"]
            .as_str()
            .unwrap()
            .starts_with("mirror unreachable from this observer: dbid 4"),
        "{doc}"
    );
    assert_eq!(doc["mirror_check"]["target_dbid"], 4, "{doc}");
    let explain = ftsctl_expect(&api, &["explain", "0"], 0);
    assert!(
        explain.contains("mirror:     dbid 4 probed before the failover"),
        "{explain}"
    );
    assert!(
        explain.contains("refused:    mirror unreachable from this observer"),
        "{explain}"
    );
    // the mirror answers again: the failover goes ahead, with the check in its evidence
    sys.sim.clear(4).await.unwrap();
    sys.wait_state(4, (P, U, N), LIMIT).await;
    assert_eq!(sys.row(2).await.state_tuple(), (M, D, N));
    let ev = sys.evidence().await;
    let (_, _, rule, doc) = ev.last().unwrap();
    assert_eq!(rule, "failover");
    assert!(
        doc["mirror_check"]["attempts"][0]["reply"]["is_role_mirror"]
            .as_bool()
            .unwrap(),
        "{doc}"
    );
}
