//! `ftsd run --no-election` end to end: real PostgreSQL catalog, `fts-segsim` segments speaking
//! the FTS protocol, the real daemon binary. Layout (2 pairs): content 0 = primary dbid 2 +
//! mirror dbid 4; content 1 = primary dbid 3 + mirror dbid 5.

mod support;

use std::time::Duration;

use fts_segsim::state::{Fault, GarbageVariant};
use ftsd::model::{Mode, Role, Status};
use support::{history_text, wait_for, System, PROBE_RETRIES};

use Mode::{InSync as S, NotInSync as N};
use Role::{Mirror as M, Primary as P};
use Status::{Down as D, Up as U};

const LIMIT: Duration = Duration::from_secs(20);

async fn started() -> System {
    let mut sys = System::start(2, Duration::from_millis(500)).await;
    sys.spawn_ftsd("single", &["--no-election"], "");
    // the daemon is probing once both primaries have seen a PROBE
    wait_for("first probe cycle", LIMIT, || async {
        let a = sys.sim.view(2).unwrap().counters.probe;
        let b = sys.sim.view(3).unwrap().counters.probe;
        (a > 0 && b > 0).then_some(())
    })
    .await;
    sys
}

fn attempts_kinds(evidence: &serde_json::Value) -> Vec<String> {
    evidence["probe"]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["error"]["kind"].as_str().unwrap_or("reply").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_killed_fails_over_promotes_and_records_why() {
    let sys = started().await;
    sys.sim.set_fault(2, Fault::Down).await.unwrap();
    sys.wait_state(4, (P, U, N), LIMIT).await;
    assert_eq!(sys.row(2).await.state_tuple(), (M, D, N));
    assert_eq!(
        sys.history().await,
        vec![
            history_text(2, 0, 'm', 'd', 'n'),
            history_text(4, 0, 'p', 'u', 'n')
        ]
    );
    // PROMOTE reached the mirror, which now answers as a primary
    wait_for("mirror promoted", LIMIT, || async {
        let v = sys.sim.view(4).unwrap();
        (v.role == P && v.counters.promote >= 1).then_some(())
    })
    .await;
    let ev = sys.evidence().await;
    assert_eq!(ev.len(), 1, "{ev:?}");
    let (epoch, instance, rule, doc) = &ev[0];
    assert_eq!(
        (*epoch, instance.as_str(), rule.as_str()),
        (1, "single", "failover")
    );
    assert_eq!(
        attempts_kinds(doc),
        vec!["refused"; PROBE_RETRIES as usize + 1],
        "every attempt recorded: {doc}"
    );
    // the other pair is untouched, and later cycles change nothing more
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(sys.history().await.len(), 2, "{}", sys.logs());
    assert_eq!(sys.row(3).await.state_tuple(), (P, U, S));
    // the new primary is probed and healthy: its mirror (old primary) stays down
    assert!(sys.sim.view(4).unwrap().counters.probe > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_lost_then_back_turns_syncrep_off_then_resyncs() {
    let sys = started().await;
    sys.sim.set_fault(4, Fault::Down).await.unwrap();
    sys.wait_state(4, (M, D, N), LIMIT).await;
    assert_eq!(sys.row(2).await.state_tuple(), (P, U, N));
    assert_eq!(
        sys.history().await,
        vec![
            history_text(2, 0, 'p', 'u', 'n'),
            history_text(4, 0, 'm', 'd', 'n')
        ]
    );
    wait_for("SYNCREP_OFF delivered", LIMIT, || async {
        let v = sys.sim.view(2).unwrap();
        (v.counters.syncrep_off >= 1 && !v.syncrep).then_some(())
    })
    .await;

    sys.sim.clear(4).await.unwrap();
    sys.wait_state(4, (M, U, S), LIMIT).await;
    assert_eq!(sys.row(2).await.state_tuple(), (P, U, S));
    let h = sys.history().await;
    assert_eq!(
        &h[2..],
        &[
            history_text(2, 0, 'p', 'u', 's'),
            history_text(4, 0, 'm', 'u', 's')
        ]
    );
    assert!(
        sys.sim.view(2).unwrap().syncrep,
        "primary switched syncrep back on"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_fault_changes_nothing() {
    let sys = started().await;
    sys.sim.set_fault(4, Fault::Down).await.unwrap();
    sys.wait_state(4, (M, D, N), LIMIT).await;
    let before = sys.rows().await;
    sys.sim.set_fault(2, Fault::Down).await.unwrap();
    wait_for("double fault logged", LIMIT, || async {
        sys.logs().contains("double fault").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        sys.rows().await,
        before,
        "double fault must not change the catalog"
    );
    assert_eq!(sys.history().await.len(), 2);
    assert_eq!(sys.sim.view(4).unwrap().counters.promote, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_primary_uses_every_retry_then_fails_over() {
    let sys = started().await;
    sys.sim.set_fault(2, Fault::Hang).await.unwrap();
    sys.wait_state(4, (P, U, N), LIMIT).await;
    let ev = sys.evidence().await;
    assert_eq!(
        attempts_kinds(&ev[0].3),
        vec!["timeout"; PROBE_RETRIES as usize + 1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_reply_is_a_failed_attempt_and_the_daemon_lives_on() {
    let mut sys = started().await;
    sys.sim
        .set_fault(
            2,
            Fault::Garbage {
                variant: GarbageVariant::GiantLength,
            },
        )
        .await
        .unwrap();
    sys.wait_state(4, (P, U, N), LIMIT).await;
    let ev = sys.evidence().await;
    assert_eq!(
        attempts_kinds(&ev[0].3),
        vec!["protocol"; PROBE_RETRIES as usize + 1]
    );
    // still alive and still probing
    let probes = sys.sim.view(3).unwrap().counters.probe;
    wait_for("more cycles", LIMIT, || async {
        (sys.sim.view(3).unwrap().counters.probe > probes + 1).then_some(())
    })
    .await;
    assert!(sys.daemons[0].is_running(), "{}", sys.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_making_progress_defers_and_stuck_recovery_fails_over() {
    let sys = started().await;
    sys.sim.set_fault(2, Fault::RecoveryProgress).await.unwrap();
    let probes = sys.sim.view(3).unwrap().counters.probe;
    wait_for("three cycles during recovery", LIMIT, || async {
        (sys.sim.view(3).unwrap().counters.probe >= probes + 3).then_some(())
    })
    .await;
    assert!(
        sys.history().await.is_empty(),
        "recovery making progress must defer"
    );
    sys.sim.set_fault(2, Fault::RecoveryStuck).await.unwrap();
    sys.wait_state(4, (P, U, N), LIMIT).await;
    let ev = sys.evidence().await;
    assert_eq!(
        ev[0].3["probe"]["outcome"]["restart"]["state"],
        "recovery_not_making_progress"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_restart_mid_run_applies_on_the_next_cycle() {
    let mut sys = started().await;
    sys.pg.stop_immediate().unwrap();
    sys.sim.set_fault(2, Fault::Down).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(sys.daemons[0].is_running(), "{}", sys.logs());
    assert_eq!(
        sys.sim.view(4).unwrap().counters.promote,
        0,
        "no PROMOTE without a committed catalog change"
    );
    sys.pg.start().await.unwrap();
    sys.wait_state(4, (P, U, N), LIMIT).await;
    assert_eq!(
        sys.history().await,
        vec![
            history_text(2, 0, 'm', 'd', 'n'),
            history_text(4, 0, 'p', 'u', 'n')
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly() {
    let mut sys = started().await;
    sys.daemons[0].signal(libc::SIGTERM);
    let status = wait_for("exit after SIGTERM", LIMIT, || {
        let st = sys.daemons[0].child.try_wait().unwrap();
        async move { st }
    })
    .await;
    assert!(status.success(), "{status:?}\n{}", sys.logs());
    assert!(sys.logs().contains("probe loop stopped"));
}

#[test]
fn bad_config_is_one_line_with_file_and_key_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let base = "cluster = \"c\"\n[catalog]\nurl = \"postgresql://u@h/db\"\n";
    let cases = [
        (
            "[probe]\nintervall = \"1s\"\n",
            "unknown key 'probe.intervall'",
        ),
        ("[probe]\ntimeout = \"20 sekunden\"\n", "probe.timeout"),
        ("[probe]\nretries = 0\n", "probe.retries"),
        (
            "[probe]\ninterval = \"10s\"\ntimeout = \"10s\"\n",
            "probe.timeout",
        ),
    ];
    for (text, needle) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, format!("{base}{text}")).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ftsd"))
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(needle), "{text}: {stderr}");
        assert!(stderr.contains("bad.toml"), "names the file: {stderr}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ftsd"))
        .args(["check-config", "--config", "/nonexistent/ftsd.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/ftsd.toml"));
}
