//! "A server started by a test dies with the test process, even when no Drop runs": the test
//! re-executes its own binary running a helper test that starts the server on a runtime it then
//! drops, reports the server's pid, and waits; the parent kills it and watches the server go.
//! Shared by the PostgreSQL and etcd launcher tests, which differ only in what they start.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Alive = has a /proc entry that is not a zombie (a reparented, killed server may stay a zombie
/// until init reaps it).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next());
            !matches!(state, Some('Z') | Some('X') | None)
        }
        Err(_) => false,
    }
}

/// Where the helper must report, when this process was re-executed as the helper (`env` set).
pub fn helper_report_path(env: &str) -> Option<PathBuf> {
    std::env::var_os(env).map(PathBuf::from)
}

/// A single-worker runtime for the helper to start its server on and then drop.
pub fn helper_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// The helper's half: report `pid` and `dir` atomically, then wait to be killed.
pub fn report_and_wait(out: &Path, pid: u32, dir: &Path) -> ! {
    let tmp = out.with_extension("tmp");
    std::fs::write(&tmp, format!("{pid} {}", dir.display())).unwrap();
    std::fs::rename(&tmp, out).unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

/// The parent's half: runs test `helper` of this binary with `env` set, checks the reported
/// server (`what`) outlived the dropped runtime, kills the helper and asserts the server follows.
pub fn assert_server_dies_with_killed_helper(helper: &str, env: &str, what: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("pid");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([helper, "--exact", "--test-threads=1"])
        .env(env, &out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    let report = loop {
        if let Ok(text) = std::fs::read_to_string(&out) {
            break text;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("helper exited early with {status}");
        }
        assert!(Instant::now() < deadline, "helper did not report");
        std::thread::sleep(Duration::from_millis(50));
    };
    let (pid, dir) = report.split_once(' ').unwrap();
    let pid: u32 = pid.parse().unwrap();
    assert!(alive(pid), "{what} survives its runtime being dropped");

    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        assert!(
            Instant::now() < deadline,
            "{what} {pid} outlived the killed test process"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // No Drop ran in the killed process: its temporary directory is ours to remove.
    let _ = std::fs::remove_dir_all(dir);
}
