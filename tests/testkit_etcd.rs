//! The etcd test harness against real etcd servers.

#[path = "support/orphan.rs"]
mod orphan;
use orphan::alive;

use fts_testkit::etcd::EtcdCluster;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Generous: these bound polling loops and are never reached when things work.
const WAIT: Duration = Duration::from_secs(20);

/// Process state letter from /proc (`T` = stopped).
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// POST a JSON body to etcd's v3 HTTP gateway, off the runtime thread.
async fn gateway(endpoint: String, path: &'static str, body: Value) -> Value {
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .proxy(None)
            .build()
            .into();
        agent
            .post(format!("{endpoint}{path}"))
            .send_json(body)
            .unwrap_or_else(|e| panic!("POST {endpoint}{path}: {e}"))
            .body_mut()
            .read_json::<Value>()
            .unwrap()
    })
    .await
    .unwrap()
}

async fn put(endpoint: String, key: &str, value: &str) {
    let body = json!({ "key": base64(key.as_bytes()), "value": base64(value.as_bytes()) });
    let reply = gateway(endpoint, "/v3/kv/put", body).await;
    assert!(reply["header"]["revision"].is_string(), "{reply}");
}

/// The base64 value stored under `key`, if any.
async fn get(endpoint: String, key: &str) -> Option<String> {
    let reply = gateway(
        endpoint,
        "/v3/kv/range",
        json!({ "key": base64(key.as_bytes()) }),
    )
    .await;
    reply["kvs"][0]["value"].as_str().map(str::to_owned)
}

#[test]
fn base64_matches_known_vectors() {
    assert_eq!(base64(b""), "");
    assert_eq!(base64(b"f"), "Zg==");
    assert_eq!(base64(b"fo"), "Zm8=");
    assert_eq!(base64(b"foo"), "Zm9v");
    assert_eq!(base64(b"foobar"), "Zm9vYmFy");
}

#[tokio::test]
async fn single_member_serves_restarts_and_drop_cleans_up() {
    let mut etcd = EtcdCluster::start(1).await.expect("start");
    assert_eq!(etcd.len(), 1);
    let endpoint = etcd.member_endpoint(0);
    assert_eq!(etcd.endpoints(), vec![endpoint.clone()]);
    assert_eq!(
        endpoint,
        format!("http://127.0.0.1:{}", etcd.client_port(0))
    );
    assert_ne!(etcd.client_port(0), etcd.peer_port(0));
    assert_eq!(etcd.member_name(0), "m0");
    assert!(etcd.is_healthy(0).await);
    assert_eq!(etcd.wait_quorum(WAIT).await.expect("quorum"), 0);
    assert!(
        etcd.log_tail(0, 50).contains("3.4"),
        "{}",
        etcd.log_tail(0, 50)
    );

    put(endpoint.clone(), "ftsd/leader", "node-a").await;
    assert_eq!(
        get(endpoint.clone(), "ftsd/leader").await,
        Some(base64(b"node-a"))
    );
    assert_eq!(get(endpoint.clone(), "ftsd/none").await, None);

    // Graceful stop, then restart on the same port and data dir: the data is still there.
    let pid = etcd.pid(0).expect("running");
    etcd.stop(0).expect("stop");
    assert!(!etcd.is_running(0));
    assert_eq!(etcd.pid(0), None);
    assert!(!alive(pid), "etcd {pid} still alive after stop");
    assert!(!etcd.is_healthy(0).await);
    assert!(etcd.pause(0).is_err(), "pausing a stopped member fails");
    etcd.stop(0).expect("stopping a stopped member is a no-op");
    assert!(etcd.data_dir(0).join("member").is_dir(), "data dir kept");
    etcd.restart(0).await.expect("restart");
    assert!(
        etcd.restart(0).await.is_err(),
        "restart while running fails"
    );
    etcd.wait_healthy(0, WAIT)
        .await
        .expect("healthy after restart");
    assert_eq!(etcd.member_endpoint(0), endpoint, "restart keeps the port");
    assert_eq!(
        get(endpoint.clone(), "ftsd/leader").await,
        Some(base64(b"node-a"))
    );

    let pid = etcd.pid(0).expect("running");
    let dir = etcd.base_dir().to_path_buf();
    assert!(dir.is_dir());
    drop(etcd);
    assert!(!alive(pid), "drop kills etcd {pid}");
    assert!(!dir.exists(), "drop removes {}", dir.display());
}

#[tokio::test]
async fn three_members_lose_and_regain_quorum() {
    let mut etcd = EtcdCluster::builder()
        .members(3)
        .arg("--log-level=warn")
        .start()
        .await
        .expect("start");
    let endpoints = etcd.endpoints();
    assert_eq!(endpoints.len(), 3);
    let mut ports: Vec<u16> = (0..3)
        .flat_map(|i| [etcd.client_port(i), etcd.peer_port(i)])
        .collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 6, "every member has its own two ports");
    for i in 0..3 {
        assert!(etcd.is_healthy(i).await, "member {i} healthy after start");
    }
    // A write through one member is readable through another.
    put(endpoints[0].clone(), "k", "v1").await;
    assert_eq!(get(endpoints[2].clone(), "k").await, Some(base64(b"v1")));

    // One member down: the other two keep quorum.
    let pid0 = etcd.pid(0).unwrap();
    etcd.kill(0).expect("kill 0");
    assert!(!etcd.is_running(0));
    assert!(!alive(pid0), "killed member {pid0} is gone");
    assert!(etcd.data_dir(0).is_dir(), "data dir kept after kill");
    etcd.wait_healthy(1, WAIT).await.expect("1 healthy");
    etcd.wait_healthy(2, WAIT).await.expect("2 healthy");
    let healthy = etcd.wait_quorum(WAIT).await.expect("quorum with 2 of 3");
    assert!(healthy == 1 || healthy == 2);
    assert!(etcd.wait_healthy(0, WAIT).await.is_err(), "0 is down");

    // Two members down: no quorum.
    etcd.kill(1).expect("kill 1");
    let deadline = Instant::now() + WAIT;
    while etcd.is_healthy(2).await {
        assert!(Instant::now() < deadline, "member 2 still healthy alone");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(etcd.is_running(2), "the lone member keeps running");
    assert!(
        etcd.wait_quorum(Duration::from_millis(1500)).await.is_err(),
        "one of three members cannot have quorum"
    );

    // Both back on the same ports and data: healthy again, data intact.
    etcd.restart(0).await.expect("restart 0");
    etcd.restart(1).await.expect("restart 1");
    assert_ne!(etcd.pid(0), Some(pid0));
    assert_eq!(etcd.endpoints(), endpoints, "restarts keep the ports");
    for i in 0..3 {
        etcd.wait_healthy(i, WAIT).await.expect("healthy again");
    }
    assert_eq!(get(endpoints[1].clone(), "k").await, Some(base64(b"v1")));

    // A paused member stays a process but answers nothing; the others carry on.
    let pid2 = etcd.pid(2).unwrap();
    etcd.pause(2).expect("pause");
    assert_eq!(proc_state(pid2), Some('T'));
    assert!(etcd.is_running(2));
    assert!(!etcd.is_healthy(2).await, "a paused member is not healthy");
    etcd.wait_healthy(0, WAIT)
        .await
        .expect("0 healthy with 2 paused");
    etcd.wait_healthy(1, WAIT)
        .await
        .expect("1 healthy with 2 paused");
    put(endpoints[0].clone(), "k", "v2").await;
    etcd.resume(2).expect("resume");
    etcd.wait_healthy(2, WAIT)
        .await
        .expect("2 healthy after resume");
    let deadline = Instant::now() + WAIT;
    while get(endpoints[2].clone(), "k").await != Some(base64(b"v2")) {
        assert!(Instant::now() < deadline, "member 2 did not catch up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Graceful stop works on a paused member too.
    etcd.pause(1).expect("pause 1");
    etcd.stop(1).expect("stop paused member");
    assert!(!etcd.is_running(1));

    let pids: Vec<u32> = (0..3).filter_map(|i| etcd.pid(i)).collect();
    assert_eq!(pids.len(), 2);
    let dir = etcd.base_dir().to_path_buf();
    drop(etcd);
    for pid in pids {
        assert!(!alive(pid), "drop kills etcd {pid}");
    }
    assert!(!dir.exists(), "drop removes {}", dir.display());
}

#[tokio::test]
async fn a_member_that_cannot_start_fails_fast_with_its_log() {
    let started = Instant::now();
    let err = EtcdCluster::builder()
        .arg("--no-such-flag")
        .start()
        .await
        .expect_err("etcd rejects an unknown flag");
    let msg = format!("{err:#}");
    assert!(msg.contains("exited while starting"), "{msg}");
    assert!(msg.contains("no-such-flag"), "log tail included: {msg}");
    assert!(
        started.elapsed() < WAIT,
        "fails without waiting for the timeout"
    );
}

const CHILD_ENV: &str = "FTSD_TESTKIT_ETCD_PDEATHSIG_CHILD";

/// Runs only when re-executed by `members_die_with_the_test_process`: starts a cluster on a
/// runtime that is then dropped (the members must survive that), reports the pids and waits to be
/// killed.
#[test]
fn etcd_pdeathsig_child_helper() {
    let Some(out) = orphan::helper_report_path(CHILD_ENV) else {
        return;
    };
    let rt = orphan::helper_runtime();
    let etcd = rt.block_on(EtcdCluster::start(1)).expect("start");
    drop(rt);
    orphan::report_and_wait(&out, etcd.pid(0).unwrap(), etcd.base_dir());
}

#[test]
fn members_die_with_the_test_process() {
    orphan::assert_server_dies_with_killed_helper("etcd_pdeathsig_child_helper", CHILD_ENV, "etcd");
}
