//! The systemd notify protocol of the real `ftsd` binary, against a fake service manager: a
//! Unix datagram socket the test binds and names in `NOTIFY_SOCKET`, with `WATCHDOG_USEC`
//! set as systemd sets it for `WatchdogSec=`. Real etcd, real PostgreSQL catalog,
//! `fts-segsim`; the tests run one at a time.

mod support;

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fts_testkit::etcd::EtcdCluster;
use ftsd::engine::faults::{
    STALL_CYCLE, STALL_CYCLE_LOG, STALL_LEASE_KEEPER, STALL_LEASE_KEEPER_LOG,
};
use support::elected::{catalog_epoch, system, wait_leader, LIMIT};
use support::{addresses, wait_for, System};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `WATCHDOG_USEC` given to the daemon: 2 s, so it pings every second.
const WATCHDOG_USEC: &str = "2000000";

/// The fake service manager's end: every datagram received, in order.
struct NotifySocket {
    path: PathBuf,
    received: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl NotifySocket {
    fn bind(dir: &std::path::Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (received.clone(), stop.clone());
        let reader = std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while !s.load(Ordering::Relaxed) {
                if let Ok(n) = socket.recv(&mut buf) {
                    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                    r.lock().unwrap().push(msg);
                }
            }
        });
        NotifySocket {
            path,
            received,
            stop,
            reader: Some(reader),
        }
    }

    /// The environment a `Type=notify` unit with `WatchdogSec=2s` gives its process.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("NOTIFY_SOCKET", self.path.display().to_string()),
            ("WATCHDOG_USEC", WATCHDOG_USEC.to_string()),
        ]
    }

    /// Every `KEY=value` line received so far, in order.
    fn lines(&self) -> Vec<String> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .flat_map(|m| m.lines().map(str::to_string).collect::<Vec<_>>())
            .collect()
    }

    fn count(&self, line: &str) -> usize {
        self.lines().iter().filter(|l| *l == line).count()
    }

    fn statuses(&self) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter_map(|l| l.strip_prefix("STATUS=").map(str::to_string))
            .collect()
    }

    async fn wait_line(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.wait_line_from(0, what, pred).await
    }

    /// Like `wait_line`, among the lines after the first `from`.
    async fn wait_line_from(&self, from: usize, what: &str, pred: impl Fn(&str) -> bool) -> String {
        wait_for(what, LIMIT, || async {
            self.lines().into_iter().skip(from).find(|l| pred(l))
        })
        .await
    }

    /// Waits for `n` more `WATCHDOG=1` pings than `since`.
    async fn wait_pings(&self, since: usize, n: usize, what: &str) -> usize {
        wait_for(what, LIMIT, || async {
            let now = self.count("WATCHDOG=1");
            (now >= since + n).then_some(now)
        })
        .await
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

fn spawn(
    sys: &mut System,
    name: &str,
    args: &[&str],
    sock: &NotifySocket,
    extra: &[(&str, String)],
) {
    let mut env = sock.env();
    env.extend(extra.iter().cloned());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    sys.spawn_ftsd_env(name, args, "", &env);
}

fn api_answers(sys: &System, daemon: usize) -> bool {
    let (api, _) = addresses(&sys.daemons[daemon].config);
    std::net::TcpStream::connect(api).is_ok()
}

async fn wait_log(sys: &System, daemon: usize, text: &str) {
    wait_for(&format!("log line {text:?}"), LIMIT, || async {
        sys.daemons[daemon].log_text().contains(text).then_some(())
    })
    .await
}

async fn wait_exit(sys: &mut System, daemon: usize) -> std::process::ExitStatus {
    wait_for("ftsd to exit", LIMIT, || {
        let status = sys.daemons[daemon].child.try_wait().unwrap();
        async move { status }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_only_once_the_catalog_is_reachable_status_names_the_leader_stopping_on_sigterm() {
    let _serial = SERIAL.lock().await;
    let etcd = EtcdCluster::start(1).await.unwrap();
    let mut sys = system(&etcd, "3s").await;
    let sock = NotifySocket::bind(sys.dir.path());
    sys.pg.stop_immediate().unwrap();
    spawn(&mut sys, "a", &[], &sock, &[]);

    // The API is up and etcd elected us, but the catalog is down: not ready.
    wait_log(&sys, 0, "not ready yet: cannot read the catalog").await;
    wait_leader(&etcd, None).await;
    wait_for("the API to answer", LIMIT, || async {
        api_answers(&sys, 0).then_some(())
    })
    .await;
    wait_for("a second failed catalog read", LIMIT, || async {
        (sys.daemons[0]
            .log_text()
            .matches("not ready yet: cannot read the catalog")
            .count()
            >= 2)
            .then_some(())
    })
    .await;
    assert_eq!(
        sock.count("READY=1"),
        0,
        "{:?}\n{}",
        sock.lines(),
        sys.logs()
    );

    // The catalog comes up: ready, and the API still answers.
    sys.pg.start().await.unwrap();
    sock.wait_line("READY=1", |l| l == "READY=1").await;
    assert!(api_answers(&sys, 0));

    // The status names the role and the epoch the catalog holds, and the last cycle.
    let epoch = wait_for("the epoch claimed", LIMIT, || async {
        let c = sys.pg.client().await.ok()?;
        let row = c
            .query_opt("SELECT epoch FROM fts_epoch", &[])
            .await
            .ok()??;
        Some(row.get::<_, i64>(0))
    })
    .await;
    assert_eq!(catalog_epoch(&sys).await, epoch);
    let want = format!("leader, epoch {epoch}; last cycle ");
    sock.wait_line(
        "a status naming the leader's epoch and its last cycle",
        |l| {
            l.strip_prefix("STATUS=")
                .is_some_and(|s| s.starts_with(&want) && s.contains(": ok, 2 pairs"))
        },
    )
    .await;

    // SIGTERM: STOPPING=1, then a clean exit.
    assert_eq!(sock.count("STOPPING=1"), 0);
    sys.daemons[0].signal(libc::SIGTERM);
    let status = wait_exit(&mut sys, 0).await;
    assert!(status.success(), "{status:?}\n{}", sys.logs());
    assert_eq!(sock.count("STOPPING=1"), 1, "{:?}", sock.lines());
    assert_eq!(sock.count("READY=1"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_pings_go_on_without_etcd_and_stop_while_the_probe_loop_is_stalled() {
    let _serial = SERIAL.lock().await;
    let mut etcd = EtcdCluster::start(1).await.unwrap();
    let mut sys = system(&etcd, "3s").await;
    let sock = NotifySocket::bind(sys.dir.path());
    let stall = sys.dir.path().join("stall");
    spawn(
        &mut sys,
        "a",
        &[],
        &sock,
        &[(STALL_CYCLE, stall.display().to_string())],
    );
    sock.wait_line("READY=1", |l| l == "READY=1").await;
    wait_leader(&etcd, None).await;
    let pings = sock.wait_pings(0, 2, "watchdog pings").await;

    // etcd gone: the leader loses its lease and cannot open a new session, yet its loops turn.
    etcd.kill(0).unwrap();
    wait_log(&sys, 0, "etcd session failed").await;
    sock.wait_line("a status without an etcd session", |l| {
        l.starts_with("STATUS=no etcd session")
    })
    .await;
    // Longer than the lease keeper's and the probe loop's promises plus their slack: a
    // keeper or loop that stopped turning would have withheld a ping by now.
    let during_outage = sock.count("WATCHDOG=1");
    sock.wait_pings(during_outage, 15, "pings during the etcd outage")
        .await;
    assert!(!sys.daemons[0]
        .log_text()
        .contains("withholding the systemd watchdog ping"));
    assert!(sock.count("WATCHDOG=1") > pings);

    let before_restart = sock.lines().len();
    etcd.restart(0).await.unwrap();
    sock.wait_line_from(before_restart, "leader again", |l| {
        l.starts_with("STATUS=leader, epoch")
    })
    .await;

    // The probe loop stalls (fault point): the pings stop and the stuck loop is named.
    std::fs::write(&stall, "").unwrap();
    wait_log(&sys, 0, STALL_CYCLE_LOG).await;
    wait_log(&sys, 0, "withholding the systemd watchdog ping").await;
    assert!(sys.daemons[0].log_text().contains("probe loop overdue"));
    // Pings already sent before the log line are in; none may follow.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let withheld_at = sock.count("WATCHDOG=1");
    // Four ping intervals: a ping would have gone out in each.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(sock.count("WATCHDOG=1"), withheld_at, "{}", sys.logs());

    // Released (as systemd would not: it restarts the process), the pings resume.
    std::fs::remove_file(&stall).unwrap();
    sock.wait_pings(withheld_at, 2, "pings after the stall")
        .await;
    assert!(sys.daemons[0].is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_instance_is_ready_without_etcd() {
    let _serial = SERIAL.lock().await;
    let mut sys = System::start(2, Duration::from_millis(500)).await;
    let sock = NotifySocket::bind(sys.dir.path());
    spawn(&mut sys, "single", &["--no-election"], &sock, &[]);
    sock.wait_line("READY=1", |l| l == "READY=1").await;
    sock.wait_line("the single instance's status", |l| {
        l.strip_prefix("STATUS=").is_some_and(|s| {
            s.starts_with("single instance (--no-election), epoch 1; last cycle ")
                && s.contains(": ok, 2 pairs")
        })
    })
    .await;
    sock.wait_pings(0, 2, "watchdog pings").await;
    assert!(sock.statuses().iter().all(|s| !s.contains("leader")));
    sys.daemons[0].signal(libc::SIGTERM);
    assert!(wait_exit(&mut sys, 0).await.success());
    assert_eq!(sock.count("STOPPING=1"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_lease_keeper_thread_stops_the_watchdog_pings() {
    let _serial = SERIAL.lock().await;
    let etcd = EtcdCluster::start(1).await.unwrap();
    let mut sys = system(&etcd, "3s").await;
    let sock = NotifySocket::bind(sys.dir.path());
    let stall = sys.dir.path().join("stall-keeper");
    spawn(
        &mut sys,
        "a",
        &[],
        &sock,
        &[(STALL_LEASE_KEEPER, stall.display().to_string())],
    );
    sock.wait_line("READY=1", |l| l == "READY=1").await;
    wait_leader(&etcd, None).await;
    sock.wait_pings(0, 2, "watchdog pings").await;

    // The keeper's thread blocks: the lease lapses (the leader steps down, as it must), and
    // the stuck thread withholds the pings although the probe loop keeps turning.
    std::fs::write(&stall, "").unwrap();
    wait_log(&sys, 0, STALL_LEASE_KEEPER_LOG).await;
    wait_log(&sys, 0, "withholding the systemd watchdog ping").await;
    assert!(sys.daemons[0].log_text().contains("lease keeper overdue"));
    assert!(!sys.daemons[0].log_text().contains(STALL_CYCLE_LOG));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let withheld_at = sock.count("WATCHDOG=1");
    // Four ping intervals: a ping would have gone out in each.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(sock.count("WATCHDOG=1"), withheld_at, "{}", sys.logs());

    std::fs::remove_file(&stall).unwrap();
    sock.wait_pings(withheld_at, 2, "pings after the keeper is released")
        .await;
    wait_leader(&etcd, None).await;
}
