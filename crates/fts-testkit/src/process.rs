//! Process plumbing shared by the test harnesses: spawning servers that die with the test
//! process, stopping and reaping them, free loopback ports and log files.

use anyhow::{anyhow, Context, Result};
use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

/// The loopback address every throwaway server listens on.
pub(crate) const LOOPBACK: &str = "127.0.0.1";

type SpawnJob = Box<dyn FnOnce() + Send>;

/// Spawns `cmd` with `prctl(PR_SET_PDEATHSIG, SIGKILL)`, so the server is killed by the kernel
/// when the test process dies without running any `Drop`.
///
/// The kernel ties the parent-death signal to the *thread* that forked the child, so every
/// server is forked by one dedicated spawner thread that lives as long as the process: a server
/// survives the runtime or thread that created it and dies only with the process.
///
/// Credentials set on `cmd` (`uid`/`gid`) are applied by std before the pre-exec hook, which
/// matters because a credential change clears the parent-death signal.
pub(crate) async fn spawn_tied_to_process(mut cmd: Command) -> Result<Child> {
    let parent = std::process::id();
    // SAFETY: runs in the forked child before exec and only calls async-signal-safe functions
    // (prctl, getppid) without allocating.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() as u32 != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    spawn_from_spawner_thread(cmd).await
}

async fn spawn_from_spawner_thread(mut cmd: Command) -> Result<Child> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnJob>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("testkit-spawner".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
            })
            .expect("starting the testkit spawner thread");
        tx
    });
    let (tx, rx) = tokio::sync::oneshot::channel();
    spawner
        .send(Box::new(move || {
            let _ = tx.send(cmd.spawn());
        }))
        .map_err(|_| anyhow!("the testkit spawner thread is gone"))?;
    Ok(rx
        .await
        .map_err(|_| anyhow!("the testkit spawner thread dropped the request"))??)
}

/// Sends `signal` to a running child.
pub(crate) fn signal(child: &Child, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: plain kill(2) on our own child; it is not reaped while we hold `child`, so the pid
    // cannot have been reused.
    if unsafe { libc::kill(child.id() as libc::pid_t, signal) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Waits until every thread of `pid` is stopped (`T` in `/proc/<pid>/task/*/stat`, as after
/// SIGSTOP); false if that did not happen within `timeout`.
pub(crate) fn wait_stopped(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if all_threads_stopped(pid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    let mut any = false;
    for task in tasks.flatten() {
        let Ok(stat) = fs::read_to_string(task.path().join("stat")) else {
            continue; // the thread just exited
        };
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        if state != Some('T') {
            return false;
        }
        any = true;
    }
    any
}

/// Sends `sig` (plus SIGCONT, so a stopped process can act on it), waits up to `grace`, then
/// SIGKILL; always reaps the child. Blocks until the process has exited.
pub(crate) fn stop(mut child: Child, sig: libc::c_int, grace: Duration) -> io::Result<()> {
    if child.try_wait()?.is_some() {
        return Ok(());
    }
    if sig != libc::SIGKILL {
        signal(&child, sig)?;
        signal(&child, libc::SIGCONT)?;
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    child.kill()?;
    child.wait().map(drop)
}

/// A loopback port that was free a moment ago.
pub(crate) fn free_port() -> Result<u16> {
    Ok(free_ports(1)?[0])
}

/// `n` distinct loopback ports that were free a moment ago (all probe sockets are held at the
/// same time, so the ports differ from each other).
pub(crate) fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind((LOOPBACK, 0)).context("binding 127.0.0.1:0"))
        .collect::<Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// The contents of `path` from byte `offset` on (empty if unreadable).
pub(crate) fn read_from(path: &Path, offset: u64) -> String {
    let mut text = Vec::new();
    if let Ok(mut file) = fs::File::open(path) {
        if file.seek(SeekFrom::Start(offset)).is_ok() {
            let _ = file.read_to_end(&mut text);
        }
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// The last `n` lines of `path` (empty if unreadable).
pub(crate) fn tail(path: &Path, n: usize) -> String {
    let text = fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The current size of `path` (0 if it does not exist), to read only what a new start appends.
pub(crate) fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Why a server launch failed: a port taken between choosing and binding it (retry on fresh
/// ports) or anything else (give up).
pub(crate) enum Launch {
    PortTaken(anyhow::Error),
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for Launch {
    fn from(e: anyhow::Error) -> Self {
        Launch::Failed(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_free_ports() {
        let ports = free_ports(6).unwrap();
        let mut sorted = ports.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 6, "{ports:?}");
        assert!(free_port().unwrap() > 0);
    }

    #[test]
    fn sees_a_stopped_process() {
        let child = Command::new("sleep").arg("30").spawn().unwrap();
        assert!(!wait_stopped(child.id(), Duration::from_millis(20)));
        signal(&child, libc::SIGSTOP).unwrap();
        assert!(wait_stopped(child.id(), Duration::from_secs(10)));
        stop(child, libc::SIGKILL, Duration::ZERO).unwrap();
    }

    #[test]
    fn tails_and_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        assert_eq!(tail(&path, 3), "");
        assert_eq!(file_len(&path), 0);
        fs::write(&path, "a\nb\nc\nd\n").unwrap();
        assert_eq!(tail(&path, 2), "c\nd");
        assert_eq!(tail(&path, 10), "a\nb\nc\nd");
        assert_eq!(read_from(&path, 4), "c\nd\n");
        assert_eq!(file_len(&path), 8);
    }
}
