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

/// A catalog connection that goes half-open mid-run (the proxy keeps it established but stops
/// forwarding) fails within `catalog.call_timeout` instead of the kernel's ~15 min TCP timeout,
/// the next cycle starts with the usual backoff, and cycles succeed again once the catalog is
/// reachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_catalog_connection_fails_within_the_call_timeout_and_cycles_go_on() {
    const FAILED: &str = "probe cycle could not start";
    let interval = Duration::from_secs(1); // support::PROBE_INTERVAL
    let (connect_timeout, call_timeout) = (Duration::from_secs(1), Duration::from_secs(2));
    let mut sys = System::start(1, Duration::from_millis(500)).await;
    let proxy = support::proxy::TcpProxy::start(sys.pg.port()).await;
    let url = format!("postgresql://postgres@127.0.0.1:{}/postgres", proxy.port());
    sys.spawn_ftsd_env(
        "single",
        &["--no-election"],
        "",
        &[
            ("FTSD_CATALOG_URL", &url),
            ("FTSD_CATALOG_CONNECT_TIMEOUT", "1s"),
            ("FTSD_CATALOG_STATEMENT_TIMEOUT", "1s"),
            ("FTSD_CATALOG_CALL_TIMEOUT", "2s"),
        ],
    );
    let probes = |sys: &System| sys.sim.view(2).unwrap().counters.probe;
    wait_for("first probe cycle", LIMIT, || async {
        (probes(&sys) > 0).then_some(())
    })
    .await;

    proxy.stall();
    let stalled_at = std::time::Instant::now();
    // The call in flight, or the next cycle's, gives up after call_timeout; slack for a loaded
    // machine only (a liveness bound).
    wait_for(
        "a catalog call to give up",
        interval + call_timeout + Duration::from_secs(3),
        || async { sys.logs().contains("catalog.call_timeout").then_some(()) },
    )
    .await;
    let gave_up_after = stalled_at.elapsed();
    let failures = sys.logs().matches(FAILED).count();
    assert!(failures >= 1, "{}", sys.logs());
    // The next cycle starts within two intervals and fails too (its reconnect cannot finish).
    wait_for(
        "the next cycle",
        2 * interval + connect_timeout + Duration::from_secs(1),
        || async { (sys.logs().matches(FAILED).count() > failures).then_some(()) },
    )
    .await;
    assert!(sys.daemons[0].is_running(), "{}", sys.logs());

    proxy.resume();
    let before = probes(&sys);
    wait_for("cycles to succeed again", LIMIT, || async {
        (probes(&sys) > before).then_some(())
    })
    .await;
    eprintln!("half-open catalog: first call gave up {gave_up_after:?} after the stall");
}

async fn sql(sys: &System, statement: &str) {
    let c = sys.pg.client().await.unwrap();
    c.batch_execute(statement).await.unwrap();
}

/// Roles swapped in the catalog behind ftsd's back (the shape a manual switchover leaves,
/// both rows up and in sync) while the segments have not switched: the catalog primary
/// answers as a mirror, but this is not the shape our failover leaves, so no PROMOTE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_swapped_behind_our_back_are_not_re_promoted() {
    let sys = started().await;
    sql(
        &sys,
        "UPDATE gp_segment_configuration SET role = 'm' WHERE dbid = 2;
         UPDATE gp_segment_configuration SET role = 'p' WHERE dbid = 4;",
    )
    .await;
    wait_for("the conflict recorded as evidence", LIMIT, || async {
        let ev = sys.evidence().await;
        ev.iter().any(|e| e.2 == "role_conflict").then_some(())
    })
    .await;
    // a few more cycles: still no PROMOTE, one evidence row, no catalog change
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        sys.sim.view(4).unwrap().counters.promote,
        0,
        "{}",
        sys.logs()
    );
    assert_eq!(sys.sim.view(4).unwrap().role, M);
    let ev = sys.evidence().await;
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert!(
        ev[0].3["refusal"]
            .as_str()
            .unwrap()
            .contains("not the p/u/n + m/d/n a failover leaves"),
        "{}",
        ev[0].3
    );
    assert!(sys.history().await.is_empty());
}

/// Primary row `s`, mirror row `n`: repaired to what the primary reports (in sync), with
/// a history row, so a later primary loss fails over instead of being a double fault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mismatched_modes_are_repaired_to_what_the_primary_reports() {
    let sys = started().await;
    sql(
        &sys,
        "UPDATE gp_segment_configuration SET mode = 'n' WHERE dbid = 4",
    )
    .await;
    wait_for("mode repaired", LIMIT, || async {
        sys.history()
            .await
            .contains(&history_text(4, 0, 'm', 'u', 's'))
            .then_some(())
    })
    .await;
    assert_eq!(sys.row(2).await.state_tuple(), (P, U, S));
    assert_eq!(sys.row(4).await.state_tuple(), (M, U, S));
    assert_eq!(
        sys.history().await.len(),
        1,
        "only the mismatched row is written"
    );
    let ev = sys.evidence().await;
    assert_eq!(ev[0].2, "resync");
    // and the repaired pair fails over
    sys.sim.set_fault(2, Fault::Down).await.unwrap();
    sys.wait_state(4, (P, U, N), LIMIT).await;
}

/// Three pairs: content 1 gets a second primary row, content 2 an unreadable mirror row
/// (mode `c`, GP5's change tracking, the check constraint dropped as on a real coordinator).
/// Both are refused and recorded; content 0 still fails over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contents_with_bad_rows_are_refused_and_the_others_fail_over() {
    let mut sys = System::start(3, Duration::from_millis(500)).await;
    let seg = |content: i16, role: Role| {
        sys.sim
            .segments()
            .into_iter()
            .find(|s| s.content == content && s.role == role)
            .unwrap()
            .dbid
    };
    let (p0, m0, m1, m2) = (seg(0, P), seg(0, M), seg(1, M), seg(2, M));
    sql(
        &sys,
        &format!(
            "ALTER TABLE gp_segment_configuration DROP CONSTRAINT gp_segment_configuration_mode_check;
             UPDATE gp_segment_configuration SET role = 'p' WHERE dbid = {m1};
             UPDATE gp_segment_configuration SET mode = 'c' WHERE dbid = {m2};"
        ),
    )
    .await;
    sys.spawn_ftsd("single", &["--no-election"], "");
    wait_for("both refusals recorded", LIMIT, || async {
        let ev = sys.evidence().await;
        let refused: Vec<i16> = ev
            .iter()
            .filter(|e| e.2 == "bad_shape")
            .map(|e| e.3["content"].as_i64().unwrap() as i16)
            .collect();
        (refused.len() == 2).then_some(refused)
    })
    .await;
    let ev = sys.evidence().await;
    let unreadable = ev
        .iter()
        .find(|e| e.3["content"] == 2)
        .map(|e| e.3["refusal"].as_str().unwrap().to_string())
        .unwrap();
    assert!(
        unreadable.contains(&format!("row dbid {m2} is unreadable")),
        "{unreadable}"
    );
    assert!(
        unreadable.contains("invalid mode value 'c'"),
        "{unreadable}"
    );
    sys.sim.set_fault(p0, Fault::Down).await.unwrap();
    // (`System::rows` cannot read the bad row either; the history names the failover)
    wait_for("content 0 failed over", LIMIT, || async {
        sys.history()
            .await
            .contains(&history_text(m0, 0, 'p', 'u', 'n'))
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        sys.evidence().await.len(),
        3,
        "each refusal once, plus the failover: {}",
        sys.logs()
    );
    let logs = sys.logs();
    assert!(logs.contains("content refused"), "{logs}");
}
