//! `ftsd preflight` end to end, the real binary against a real etcd, a real PostgreSQL catalog
//! that asks for a password, and `fts-segsim` primaries that ask for one (md5): every check
//! passes on a healthy set-up, and each broken component fails its own line and the exit
//! code — a wrong catalog password, a wrong probe password, a `--no-election` instance
//! already running, etcd stopped.

mod support;

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use fts_segsim::{SimConfig, Simulator};
use fts_testkit::etcd::EtcdCluster;
use fts_testkit::pg::{Auth, PgServer};
use ftsd::catalog::schema;
use ftsd::election::members::SINGLE_ROLE;
use support::elected::members;
use support::{wait_for, System};

const CATALOG_PASSWORD: &str = "catalog-secret";
const PROBE_PASSWORD: &str = "probe-secret";
const LIMIT: Duration = Duration::from_secs(30);

/// A catalog with a password (SCRAM), two md5-authenticating simulated pairs, and `etcd`.
async fn system(etcd: &EtcdCluster) -> System {
    let pg = PgServer::builder()
        .auth(Auth::Scram)
        .password(CATALOG_PASSWORD)
        .start()
        .await
        .expect("catalog postgres");
    let mut client = pg.client().await.unwrap();
    schema::init(&mut client).await.unwrap();
    let sim = Simulator::start(SimConfig {
        pairs: 2,
        auth: fts_segsim::Auth::Md5,
        password: Some(PROBE_PASSWORD.into()),
        mirror_down_grace: Duration::from_millis(500),
        ..SimConfig::default()
    })
    .await
    .expect("segsim");
    fts_segsim::catalog::write_catalog(&pg.url(), &sim.segments())
        .await
        .expect("write catalog");
    System {
        pg,
        sim,
        dir: tempfile::tempdir().unwrap(),
        daemons: Vec::new(),
        etcd_endpoints: etcd.endpoints(),
        lease_ttl: "3s".into(),
    }
}

/// The configuration of instance `name` with the probe password `probe_password`, and the
/// catalog password replaced by `catalog_password`.
fn config(sys: &System, name: &str, probe_password: &str, catalog_password: &str) -> PathBuf {
    let password_file = sys.dir.path().join(format!("{name}.probe-password"));
    std::fs::write(&password_file, probe_password).unwrap();
    let text = sys
        .config_text(name, "")
        .replacen(
            "retry_delay = \"200ms\"",
            &format!(
                "retry_delay = \"200ms\"\npassword_file = \"{}\"",
                password_file.display()
            ),
            1,
        )
        .replacen(
            &format!(":{CATALOG_PASSWORD}@"),
            &format!(":{catalog_password}@"),
            1,
        );
    let path = sys.dir.path().join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn preflight(config: &std::path::Path) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ftsd"))
        .arg("preflight")
        .arg("--config")
        .arg(config)
        .env_remove("RUST_LOG")
        .output()
        .expect("run ftsd preflight")
}

/// The report's line for `check` (its status word and the rest).
fn line<'a>(report: &'a str, check: &str) -> &'a str {
    report
        .lines()
        .find(|l| l[6..].starts_with(check))
        .unwrap_or_else(|| panic!("no {check:?} line in\n{report}"))
}

fn report(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_pass_then_each_broken_component_fails_its_line() {
    let mut etcd = EtcdCluster::start(1).await.unwrap();
    let sys = system(&etcd).await;

    let good = config(&sys, "pre", PROBE_PASSWORD, CATALOG_PASSWORD);
    let out = preflight(&good);
    let text = report(&out);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for check in [
        "config",
        "etcd quorum",
        "etcd permissions",
        "catalog",
        "another prober",
        "primary dbid=2 content=0",
        "primary dbid=3 content=1",
        "open files",
    ] {
        assert!(line(&text, check).starts_with("ok "), "{check}:\n{text}");
    }
    assert!(line(&text, "etcd quorum").contains("version 3."), "{text}");
    assert!(
        text.ends_with("preflight passed: 8 ok, 0 failed, 0 skipped\n"),
        "{text}"
    );

    // The catalog refuses our password: its line fails, and with it the primaries (which
    // come from the catalog) are skipped.
    let out = preflight(&config(&sys, "pre", PROBE_PASSWORD, "wrong"));
    let text = report(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let catalog = line(&text, "catalog");
    assert!(catalog.starts_with("FAIL"), "{text}");
    assert!(catalog.contains("password authentication failed"), "{text}");
    assert!(line(&text, "primaries").starts_with("skip"), "{text}");
    assert!(line(&text, "etcd quorum").starts_with("ok"), "{text}");

    // The primaries refuse our probe password: each primary's line fails.
    let out = preflight(&config(&sys, "pre", "wrong", CATALOG_PASSWORD));
    let text = report(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for dbid in [2, 3] {
        let l = line(&text, &format!("primary dbid={dbid}"));
        assert!(l.starts_with("FAIL") && l.contains("auth"), "{text}");
    }
    assert!(line(&text, "catalog").starts_with("ok"), "{text}");

    // etcd stopped: its line fails; what needs it is skipped; the rest is still checked.
    etcd.stop(0).unwrap();
    let out = preflight(&config(&sys, "pre", PROBE_PASSWORD, CATALOG_PASSWORD));
    let text = report(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(line(&text, "etcd quorum").starts_with("FAIL"), "{text}");
    assert!(
        line(&text, "etcd permissions").starts_with("skip"),
        "{text}"
    );
    assert!(line(&text, "another prober").starts_with("skip"), "{text}");
    assert!(line(&text, "catalog").starts_with("ok"), "{text}");
    assert!(line(&text, "primary dbid=2").starts_with("ok"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_no_election_instance_is_another_prober() {
    let etcd = EtcdCluster::start(1).await.unwrap();
    let mut sys = system(&etcd).await;
    let solo = config(&sys, "solo", PROBE_PASSWORD, CATALOG_PASSWORD);
    let log = sys.dir.path().join("solo.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_ftsd"))
        .args(["run", "--no-election", "--config"])
        .arg(&solo)
        .env_remove("RUST_LOG")
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    sys.daemons.push(support::Daemon {
        name: "solo".into(),
        child,
        log,
        config: solo,
    });
    wait_for("the --no-election instance registered", LIMIT, || async {
        members(&etcd)
            .await
            .iter()
            .any(|m| m.instance_id == "solo" && m.role == SINGLE_ROLE)
            .then_some(())
    })
    .await;

    let out = preflight(&config(&sys, "pre", PROBE_PASSWORD, CATALOG_PASSWORD));
    let text = report(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let l = line(&text, "another prober");
    assert!(l.starts_with("FAIL"), "{text}");
    assert!(
        l.contains("instance solo") && l.contains("--no-election"),
        "{text}"
    );
    // everything else is fine
    assert!(text.contains("1 failed"), "{text}");

    // Once it stops, its entry goes with its lease and the check passes again.
    drop(sys.daemons.pop());
    wait_for("the entry gone with the lease", LIMIT, || async {
        let out = preflight(&config(&sys, "pre", PROBE_PASSWORD, CATALOG_PASSWORD));
        out.status.success().then_some(())
    })
    .await;
}
