//! `systemctl reload ftsd` (SIGHUP) end to end, with the real daemon binary, a real
//! PostgreSQL catalog, `fts-segsim` segments and, for the elected case, a real etcd: a new
//! probe interval takes effect, for the leader's cycles and for a follower's observation
//! rounds; a changed etcd endpoint is refused by name and the running etcd stays in use; an
//! invalid file changes nothing and the daemon keeps running.

mod support;

use std::time::Duration;

use fts_testkit::etcd::EtcdCluster;
use support::elected::{members, wait_leader};
use support::{wait_for, Daemon, System};

const LIMIT: Duration = Duration::from_secs(30);

/// The metrics text of a daemon (empty while it cannot be reached).
fn metrics_text(d: &Daemon) -> String {
    let (_, metrics) = support::addresses(&d.config);
    ureq::get(&format!("http://{metrics}/metrics"))
        .call()
        .map(|r| r.into_body().read_to_string().unwrap_or_default())
        .unwrap_or_default()
}

/// The value of one sample line, e.g. `ftsd_config_reloads_total{result="applied"}`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// Completed cycles (all results).
fn cycles(d: &Daemon) -> f64 {
    let text = metrics_text(d);
    text.lines()
        .filter(|l| l.starts_with("ftsd_cycles_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn reloads(d: &Daemon, result: &str) -> f64 {
    sample(
        &metrics_text(d),
        &format!("ftsd_config_reloads_total{{result=\"{result}\"}}"),
    )
    .unwrap_or(-1.0)
}

/// Rewrites `d`'s configuration file, replacing `from` by `to` (which must occur).
fn edit_config(d: &Daemon, from: &str, to: &str) {
    let text = std::fs::read_to_string(&d.config).unwrap();
    assert!(text.contains(from), "{from:?} not in\n{text}");
    std::fs::write(&d.config, text.replacen(from, to, 1)).unwrap();
}

async fn wait_reloads(d: &Daemon, result: &str, n: f64) {
    wait_for(&format!("{n} reloads {result}"), LIMIT, || async {
        (reloads(d, result) == n).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_interval_changes_the_cadence_and_an_invalid_file_changes_nothing() {
    let mut sys = System::start(2, Duration::from_millis(500)).await;
    // A 1-minute interval: after the first cycle, no other for a minute.
    let text = sys
        .config_text("single", "")
        .replacen("interval = \"1s\"", "interval = \"60s\"", 1);
    let d = spawn_with_config(&mut sys, "single", &text);
    wait_for("the first cycle", LIMIT, || async {
        (cycles(&sys.daemons[d]) >= 1.0).then_some(())
    })
    .await;
    let daemon = &sys.daemons[d];
    assert_eq!(reloads(daemon, "applied"), 0.0);
    let before = cycles(daemon);
    assert!(before < 3.0, "a 60s interval ran {before} cycles");

    // Reload with a 1s interval: cycles now follow each other every second. Under the old
    // interval, four more cycles would take three minutes.
    edit_config(daemon, "interval = \"60s\"", "interval = \"1s\"");
    daemon.signal(libc::SIGHUP);
    wait_reloads(daemon, "applied", 1.0).await;
    wait_for("four more cycles at the new interval", LIMIT, || async {
        (cycles(daemon) >= before + 4.0).then_some(())
    })
    .await;
    let log = daemon.log_text();
    assert!(
        log.contains("configuration reloaded; changed keys applied: probe.interval"),
        "{log}"
    );
    assert!(
        log.contains("reloaded probe settings in effect from this cycle"),
        "{log}"
    );

    // An invalid file: nothing changes, the daemon keeps probing at 1s and says why, naming
    // the key and the file.
    edit_config(daemon, "interval = \"1s\"", "interval = \"soon\"");
    daemon.signal(libc::SIGHUP);
    wait_reloads(daemon, "invalid", 1.0).await;
    let after_invalid = cycles(daemon);
    wait_for(
        "cycles go on at 1s after the invalid file",
        LIMIT,
        || async { (cycles(daemon) >= after_invalid + 3.0).then_some(()) },
    )
    .await;
    assert!(sys.daemons[d].is_running());
    let daemon = &sys.daemons[d];
    let log = daemon.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("the new configuration is invalid"))
        .unwrap_or_else(|| panic!("no invalid-reload line in\n{log}"));
    assert!(line.contains("probe.interval"), "{line}");
    assert!(
        line.contains(&daemon.config.display().to_string()),
        "{line}"
    );
    assert_eq!(reloads(daemon, "applied"), 1.0);
}

/// Starts `ftsd run --no-election` with the configuration `text`.
fn spawn_with_config(sys: &mut System, name: &str, text: &str) -> usize {
    let config = sys.dir.path().join(format!("{name}.toml"));
    std::fs::write(&config, text).unwrap();
    let log = sys.dir.path().join(format!("{name}.log"));
    let out = std::fs::File::create(&log).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_ftsd"))
        .arg("run")
        .arg("--config")
        .arg(&config)
        .arg("--no-election")
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("spawn ftsd");
    sys.daemons.push(Daemon {
        name: name.to_string(),
        child,
        log,
        config,
    });
    sys.daemons.len() - 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_etcd_endpoint_is_refused_and_the_running_one_stays_in_use() {
    let etcd = EtcdCluster::start(1).await.unwrap();
    let mut sys = support::elected::system(&etcd, "3s").await;
    let i = sys.spawn_ftsd("a", &[], "");
    wait_leader(&etcd, None).await;
    let daemon = &sys.daemons[i];
    let endpoint = etcd.endpoints()[0].clone();
    // The new file moves etcd (needs a restart) and also changes a reloadable key.
    edit_config(daemon, &format!("\"{endpoint}\""), "\"http://127.0.0.1:1\"");
    edit_config(daemon, "retry_delay = \"200ms\"", "retry_delay = \"100ms\"");
    daemon.signal(libc::SIGHUP);
    wait_reloads(daemon, "refused", 1.0).await;
    let log = daemon.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("need a restart"))
        .unwrap_or_else(|| panic!("no refusal line in\n{log}"));
    assert!(line.contains("etcd.endpoints"), "{line}");
    assert!(
        log.contains("configuration reloaded; changed keys applied: probe.retry_delay"),
        "{log}"
    );
    // The running etcd is still the one in use: this instance keeps office there and keeps
    // publishing its cycles to the members registry.
    let last = |m: &[ftsd::election::members::MemberInfo]| {
        m.iter()
            .find(|m| m.instance_id == "a")
            .and_then(|m| m.last_cycle_at)
    };
    let seen = last(&members(&etcd).await);
    wait_for(
        "the member entry to move on after the reload",
        LIMIT,
        || async {
            let now = last(&members(&etcd).await);
            (now.is_some() && now > seen).then_some(())
        },
    )
    .await;
    assert_eq!(wait_leader(&etcd, None).await.instance_id, "a");
    assert!(sys.daemons[i].is_running());
}

/// A follower's observation rounds (`observe.mode = "continuous"`) as its metrics count them.
fn observation_rounds(d: &Daemon) -> Option<f64> {
    sample(&metrics_text(d), "ftsd_observation_rounds_total")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_interval_re_times_the_followers_observation_rounds() {
    let etcd = EtcdCluster::start(1).await.unwrap();
    let mut sys = support::elected::system(&etcd, "3s").await;
    // Two elected instances observing continuously, both with a 1-minute interval: the
    // follower runs at most one observation round a minute.
    let mut spawn = |name: &str| {
        let text = sys
            .config_text(name, "[observe]\nmode = \"continuous\"\n")
            .replacen("interval = \"1s\"", "interval = \"60s\"", 1);
        let config = sys.dir.path().join(format!("{name}.toml"));
        std::fs::write(&config, text).unwrap();
        sys.daemons.push(Daemon::spawn(config, name, &["run"], &[]));
        sys.daemons.len() - 1
    };
    spawn("a");
    assert_eq!(wait_leader(&etcd, None).await.instance_id, "a");
    let b = spawn("b");
    support::elected::wait_members(&etcd, 2).await;
    let follower = &sys.daemons[b];
    let before = wait_for("the follower's observation metrics", LIMIT, || async {
        observation_rounds(follower)
    })
    .await;
    assert!(
        before < 2.0,
        "a 60s interval ran {before} observation rounds"
    );

    // Reload the follower with a 1s interval: its next round is re-timed at once, and its
    // rounds follow each other every second. Under the old interval, four more rounds would
    // take four minutes.
    edit_config(follower, "interval = \"60s\"", "interval = \"1s\"");
    follower.signal(libc::SIGHUP);
    wait_reloads(follower, "applied", 1.0).await;
    wait_for(
        "four more observation rounds at the new interval",
        LIMIT,
        || async {
            observation_rounds(follower)
                .is_some_and(|n| n >= before + 4.0)
                .then_some(())
        },
    )
    .await;
    let log = follower.log_text();
    assert!(
        log.contains("reloaded probe settings in effect from the next observation round"),
        "{log}"
    );
    // Each round PROBEs both primaries (the last round may still be under way).
    let probes = sample(
        &metrics_text(follower),
        "ftsd_observation_probes_total{trigger=\"round\"}",
    )
    .unwrap_or(0.0);
    assert!(probes >= 6.0, "{probes} probes");
}
