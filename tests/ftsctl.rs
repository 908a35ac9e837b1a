//! `ftsctl` and the ftsd API end to end: a real etcd, a real PostgreSQL catalog, `fts-segsim`
//! and two `ftsd` processes. Every subcommand against a known state (human and JSON output),
//! redirects from a follower, pause surviving a leader kill, probe-now, the metrics endpoint
//! parsed as Prometheus text, hooks, and clean errors for unreachable endpoints.

mod support;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etcd_client::Client;
use fts_segsim::Fault;
use fts_testkit::etcd::EtcdCluster;
use ftsd::election::members::{list, MemberInfo};
use ftsd::model::{Mode, Role, Status};
use serde_json::Value;
use support::{addresses, ftsctl, ftsctl_expect, stderr, stdout, wait_for, System};

const LIMIT: Duration = Duration::from_secs(30);

fn json(endpoint: &str, args: &[&str], code: i32) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = ftsctl_expect(endpoint, &all, code);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}):\n{out}"))
}

async fn members(etcd: &EtcdCluster) -> Vec<MemberInfo> {
    let Ok(mut c) = Client::connect(etcd.endpoints(), None).await else {
        return Vec::new();
    };
    list(&mut c, "/ftsd/test/members/")
        .await
        .unwrap_or_default()
}

async fn wait_leader(etcd: &EtcdCluster, want: &str) -> MemberInfo {
    wait_for(&format!("{want} to lead"), LIMIT, || async {
        members(etcd)
            .await
            .into_iter()
            .find(|m| m.role == "leader" && m.instance_id == want)
    })
    .await
}

/// Fetches and parses `/metrics` with a Prometheus text-format parser.
fn scrape(metrics: &str) -> prometheus_parse::Scrape {
    let body = ureq::get(&format!("http://{metrics}/metrics"))
        .call()
        .expect("GET /metrics")
        .into_body()
        .read_to_string()
        .unwrap();
    let lines = body.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text")
}

/// The value of the sample `name` whose labels include `labels` (0 if absent).
fn sample(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == name)
        .filter(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ftsctl_operates_a_two_instance_cluster() {
    let etcd = EtcdCluster::start(1).await.unwrap();
    let mut sys = System::start(2, Duration::from_millis(500)).await;
    sys.etcd_endpoints = etcd.endpoints();
    sys.lease_ttl = "3s".into();
    let hook_log = sys.dir.path().join("hooks.log");
    let hook = sys.dir.path().join("hook.sh");
    std::fs::write(
        &hook,
        format!(
            "echo \"$* | $FTSD_HOOK_EVENT $FTSD_INSTANCE_ID content=$FTSD_CONTENT dbid=$FTSD_DBID \
             old=$FTSD_OLD_ROLE$FTSD_OLD_STATUS$FTSD_OLD_MODE new=$FTSD_NEW_ROLE$FTSD_NEW_STATUS$FTSD_NEW_MODE \
             role=$FTSD_ROLE epoch=$FTSD_EPOCH reason=$FTSD_REASON\" >> {}\n",
            hook_log.display()
        ),
    )
    .unwrap();
    let hooks = format!(
        "[hooks]\non_transition = [\"/bin/sh\", \"{h}\"]\non_leader_change = [\"/bin/sh\", \"{h}\"]\ntimeout = \"5s\"\n",
        h = hook.display()
    );
    let a = sys.spawn_ftsd("a", &[], &hooks);
    let leader = wait_leader(&etcd, "a").await;
    let epoch_a = leader.epoch.unwrap();
    let b = sys.spawn_ftsd("b", &[], &hooks);
    let (api_a, metrics_a) = addresses(&sys.daemons[a].config);
    let (api_b, metrics_b) = addresses(&sys.daemons[b].config);
    wait_for("2 members", LIMIT, || async {
        (members(&etcd).await.len() == 2).then_some(())
    })
    .await;
    let rows = sys.rows().await;

    // status, answered by the follower: the leader, its epoch, both members, all healthy
    let st = wait_for("a finished cycle in the status", LIMIT, || {
        let v = json(&api_b, &["status"], 0);
        async move { (v["last_cycle_result"] == "ok").then_some(v) }
    })
    .await;
    assert_eq!(st["cluster"], "test");
    assert_eq!(st["instance_id"], "b");
    assert_eq!(st["leader_id"], "a");
    assert_eq!(st["leader_address"], api_a.as_str());
    assert_eq!(st["epoch"], epoch_a);
    assert!(st["leader_since_ms"].as_i64().unwrap() > 0);
    assert_eq!(st["members"].as_array().unwrap().len(), 2);
    assert_eq!(st["pause"]["paused"], false);
    assert_eq!(st["segments_total"], rows.len());
    assert_eq!(st["segments_down"], 0);
    let human = ftsctl_expect(&api_b, &["status"], 0);
    assert!(human.contains("cluster:     test\n"), "{human}");
    assert!(
        human.contains(&format!("leader:      a at {api_a} (epoch {epoch_a}")),
        "{human}"
    );
    assert!(human.contains("paused:      no\n"), "{human}");
    assert!(human.contains("etcd:        ok\n"), "{human}");
    assert!(
        human.contains(&format!("segments:    {} rows, 0 down", rows.len())),
        "{human}"
    );
    assert!(human.contains("MEMBER  ROLE"), "{human}");
    assert!(!human.contains('\x1b'), "no colours off a terminal");

    // segments: every catalog row, healthy, with the leader's last probe on the primaries
    let segs = json(&api_a, &["segments"], 0);
    let segs = segs["segments"].as_array().unwrap();
    assert_eq!(segs.len(), rows.len());
    assert!(segs.iter().all(|s| s["down"] == false));
    let p2 = segs.iter().find(|s| s["dbid"] == 2).unwrap();
    assert_eq!(
        (p2["role"].as_str(), p2["status"].as_str()),
        (Some("p"), Some("u"))
    );
    assert!(
        p2["last_probe"].as_str().unwrap().starts_with("replied"),
        "{p2}"
    );
    let human = ftsctl_expect(&api_a, &["segments"], 0);
    let header = human.lines().next().unwrap();
    assert!(
        header.starts_with("CONTENT  DBID  ROLE  PREFERRED  STATUS"),
        "{human}"
    );
    assert_eq!(human.lines().count(), rows.len() + 1, "{human}");
    assert_eq!(
        json(&api_a, &["segments", "--down"], 0)["segments"],
        Value::Array(vec![])
    );

    // the standard health service and server reflection (what grpcurl uses)
    grpc_health_and_reflection(&api_b).await;

    // members and leader
    let m = json(&api_b, &["members"], 0);
    let ids: Vec<&str> = m["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["instance_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "b"]);
    let human = ftsctl_expect(&api_b, &["members"], 0);
    assert!(
        human.lines().nth(1).unwrap().starts_with("a       leader"),
        "{human}"
    );
    let l = json(&api_b, &["leader"], 0);
    assert_eq!(
        (l["leader_id"].as_str(), l["epoch"].as_i64()),
        (Some("a"), Some(epoch_a))
    );
    assert!(ftsctl_expect(&api_b, &["leader"], 0)
        .starts_with(&format!("a at {api_a} (epoch {epoch_a}")));
    // nothing happened yet
    assert_eq!(ftsctl_expect(&api_b, &["history"], 0), "no history\n");
    assert_eq!(json(&api_b, &["explain", "0"], 4)["found"], false);

    // probe through the follower: redirected to the leader, which runs a fresh cycle
    let before = now_ms();
    let o = ftsctl(&api_b, &["probe", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("is a follower; sending the request to the leader"),
        "{}",
        stderr(&o)
    );
    let cycle: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(cycle["instance_id"], "a");
    assert!(
        cycle["started_at_ms"].as_i64().unwrap() >= before,
        "{cycle}"
    );
    assert_eq!(cycle["pairs"], 2);
    assert_eq!(cycle["reports"][0]["rule"], "healthy");
    let human = ftsctl_expect(&api_a, &["probe"], 0);
    assert!(human.starts_with("cycle on a started"), "{human}");
    assert!(human.contains("CONTENT  PRIMARY  MIRROR  RULE"), "{human}");

    // metrics before a failover
    let m0 = scrape(&metrics_a);
    assert_eq!(sample(&m0, "ftsd_is_leader", &[]), 1.0);
    assert_eq!(sample(&m0, "ftsd_epoch", &[]), epoch_a as f64);
    assert_eq!(sample(&m0, "ftsd_paused", &[]), 0.0);
    assert!(sample(&m0, "ftsd_cycles_total", &[("result", "ok")]) >= 1.0);
    assert!(sample(&m0, "ftsd_last_successful_cycle_timestamp_seconds", &[]) > 0.0);
    assert!(sample(&m0, "ftsd_etcd_keepalive_age_seconds", &[]) < 3.0);
    assert_eq!(
        sample(&m0, "ftsd_segments", &[("role", "p"), ("status", "u")]),
        rows.iter().filter(|r| r.role == Role::Primary).count() as f64
    );
    assert_eq!(sample(&m0, "ftsd_transitions_total", &[]), 0.0);
    let mb = scrape(&metrics_b);
    assert_eq!(sample(&mb, "ftsd_is_leader", &[]), 0.0);

    // a failover of content 0: primary dbid 2 dies, mirror dbid 4 takes over
    sys.sim.set_fault(2, Fault::Down).await.unwrap();
    sys.wait_state(4, (Role::Primary, Status::Up, Mode::NotInSync), LIMIT)
        .await;
    let m1 = wait_for("failover counted", LIMIT, || {
        let m = scrape(&metrics_a);
        async move {
            (sample(
                &m,
                "ftsd_messages_total",
                &[("type", "PROMOTE"), ("result", "ok")],
            ) >= 1.0)
                .then_some(m)
        }
    })
    .await;
    assert_eq!(
        sample(&m1, "ftsd_transitions_total", &[("kind", "failover")]),
        1.0
    );
    assert!(sample(&m1, "ftsd_probe_failures_total", &[]) >= 1.0);
    assert!(
        sample(&m1, "ftsd_probe_duration_seconds_count", &[])
            > sample(&m0, "ftsd_probe_duration_seconds_count", &[])
    );

    // the hook got both rows, with arguments and environment
    let expect_lines = [
        format!("transition 0 2 p/u/s m/d/n {epoch_a} failover | transition a content=0 dbid=2 old=pus new=mdn role= epoch={epoch_a} reason=failover"),
        format!("transition 0 4 m/u/s p/u/n {epoch_a} failover | transition a content=0 dbid=4 old=mus new=pun role= epoch={epoch_a} reason=failover"),
        format!("leader_change leader {epoch_a} elected | leader_change a content= dbid= old= new= role=leader epoch={epoch_a} reason=elected"),
    ];
    for line in &expect_lines {
        assert!(
            wait_hook(&hook_log, line).await,
            "hook line {line:?} missing:\n{}",
            std::fs::read_to_string(&hook_log).unwrap_or_default()
        );
    }
    let m = scrape(&metrics_a);
    assert!(
        sample(
            &m,
            "ftsd_hook_runs_total",
            &[("event", "transition"), ("result", "ok")]
        ) >= 2.0
    );
    assert!(
        sample(
            &m,
            "ftsd_hook_runs_total",
            &[("event", "leader_change"), ("result", "ok")]
        ) >= 1.0
    );

    // status now reports the down segment and exits 1; the gpstate-like filters find it
    let st = json(&api_b, &["status"], 1);
    assert_eq!(st["segments_down"], 1);
    assert_eq!(st["segments_not_preferred"], 2);
    let down = json(&api_b, &["segments", "--down"], 0);
    let down: Vec<i64> = down["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["dbid"].as_i64().unwrap())
        .collect();
    assert_eq!(down, [2]);
    let unbalanced = json(&api_b, &["segments", "--unbalanced"], 0);
    let unbalanced: Vec<i64> = unbalanced["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["dbid"].as_i64().unwrap())
        .collect();
    assert_eq!(unbalanced, [2, 4]);
    let either = json(&api_b, &["segments", "--down", "--unbalanced"], 0);
    assert_eq!(either["segments"].as_array().unwrap().len(), 2);
    let down_mirrors = json(&api_b, &["segments", "--down", "--mirrors"], 0);
    assert_eq!(down_mirrors["segments"][0]["dbid"], 2);
    let mirrors = json(&api_b, &["segments", "--mirrors"], 0);
    assert!(mirrors["segments"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["role"] == "m"));
    let human = ftsctl_expect(&api_b, &["segments", "--down"], 0);
    assert!(
        human.contains("down,not-preferred-role,not-in-sync"),
        "{human}"
    );

    // history: the two rows, joined with the evidence
    let h = json(&api_b, &["history", "--content", "0", "--since", "1h"], 0);
    let entries = h["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{h}");
    for e in entries {
        assert_eq!(
            (
                e["rule"].as_str(),
                e["epoch"].as_i64(),
                e["instance_id"].as_str()
            ),
            (Some("failover"), Some(epoch_a), Some("a"))
        );
    }
    assert_eq!(
        json(&api_b, &["history", "--dbid", "4"], 0)["entries"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        json(&api_b, &["history", "--content", "1"], 0)["entries"],
        Value::Array(vec![])
    );
    let human = ftsctl_expect(&api_b, &["history"], 0);
    assert!(human.starts_with("TIME"), "{human}");
    assert!(
        human.contains(
            "FTS: update role, status, and mode for dbid 4 with contentid 0 to p, u, and n"
        ),
        "{human}"
    );

    // explain: the evidence behind the failover
    let ex = json(&api_b, &["explain", "0"], 0);
    assert_eq!(
        (ex["found"].as_bool(), ex["rule"].as_str()),
        (Some(true), Some("failover"))
    );
    assert_eq!(ex["evidence"]["rule"], "failover");
    assert_eq!(ex["evidence"]["probe"]["target_dbid"], 2);
    let human = ftsctl_expect(&api_b, &["explain", "0"], 0);
    assert!(human.starts_with("content 0: failover at "), "{human}");
    assert!(
        human.contains("update:     dbid 4: m/u/s -> p/u/n"),
        "{human}"
    );
    assert!(human.contains("message:    PROMOTE to dbid 4"), "{human}");

    // pause through the follower: redirected, stored in etcd with who, when and why
    let o = ftsctl(&api_b, &["pause", "--reason", "rolling upgrade", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("is a follower"), "{}", stderr(&o));
    let p: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (p["paused"].as_bool(), p["reason"].as_str()),
        (Some(true), Some("rolling upgrade"))
    );
    assert!(p["by"].as_str().unwrap().contains('@'));
    let st = json(&api_b, &["status"], 1);
    assert_eq!(st["pause"]["reason"], "rolling upgrade");
    assert!(ftsctl_expect(&api_a, &["status"], 1).contains("paused:      yes, by "));
    wait_for("paused gauge", LIMIT, || {
        let m = scrape(&metrics_a);
        async move { (sample(&m, "ftsd_paused", &[]) == 1.0).then_some(()) }
    })
    .await;

    // kill -9 the leader: b takes over and honours the pause
    sys.daemons[a].child.kill().unwrap();
    let _ = sys.daemons[a].child.wait();
    let o = ftsctl(&api_a, &["status"]);
    assert_eq!(o.status.code(), Some(3));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("ftsctl: cannot reach ftsd: ") && !err.contains("panicked"),
        "{err}"
    );
    let new = wait_leader(&etcd, "b").await;
    assert!(new.epoch.unwrap() > epoch_a);
    assert_eq!(json(&api_b, &["status"], 1)["pause"]["paused"], true);
    sys.sim.set_fault(3, Fault::Down).await.unwrap();
    let cycle = json(&api_b, &["probe"], 0);
    assert_eq!(cycle["instance_id"], "b");
    assert_eq!(cycle["paused"], true);
    let pair1 = cycle["reports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["content"] == 1)
        .unwrap();
    assert_eq!(
        (pair1["rule"].as_str(), pair1["transition"].as_str()),
        (Some("failover"), Some("paused")),
        "{cycle}"
    );
    assert!(ftsctl_expect(&api_b, &["probe"], 0).contains("paused: nothing acted on"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        sys.row(3).await.role,
        Role::Primary,
        "a paused leader does not fail over"
    );
    assert_eq!(sample(&scrape(&metrics_b), "ftsd_paused", &[]), 1.0);

    // resume: the pending failover happens
    let r = json(&api_b, &["resume"], 0);
    assert_eq!(r["paused"], false);
    sys.wait_state(5, (Role::Primary, Status::Up, Mode::NotInSync), LIMIT)
        .await;
    assert!(
        wait_hook(
            &hook_log,
            &format!("leader_change leader {} elected", new.epoch.unwrap())
        )
        .await
    );
    assert!(wait_hook(&hook_log, "transition 1 5 m/u/s p/u/n").await);

    // watch: one frame of status and segments
    let w = ftsctl_expect(
        &api_b,
        &["watch", "--iterations", "1", "--interval", "100ms"],
        1,
    );
    assert!(
        w.contains("cluster:     test") && w.contains("CONTENT  DBID"),
        "{w}"
    );

    // discovery through etcd finds b
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_ftsctl"))
        .args([
            "--etcd",
            &etcd.endpoints().join(","),
            "--cluster",
            "test",
            "leader",
            "--json",
        ])
        .output()
        .unwrap();
    let l: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(l["leader_id"], "b", "{}", stderr(&o));
    assert!(sys.logs().contains("hook ran"), "{}", sys.logs());

    // etcd gone: status still answers from what the instance knows, and exits 1
    let mut etcd = etcd;
    etcd.kill(0).unwrap();
    let st = json(&api_b, &["status"], 1);
    assert!(!st["etcd_error"].as_str().unwrap().is_empty(), "{st}");
    assert_eq!(st["members"].as_array().unwrap().len(), 1);
    assert_eq!(st["members"][0]["instance_id"], "b");
    let human = ftsctl_expect(&api_b, &["status"], 1);
    assert!(human.contains("etcd:        unreachable: "), "{human}");
}

async fn grpc_health_and_reflection(api: &str) {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{health_check_response::ServingStatus, HealthCheckRequest};
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{api}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel.clone());
    let r = health
        .check(HealthCheckRequest {
            service: "ftsd.v1.Fts".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status, ServingStatus::Serving as i32);

    let mut refl = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = refl
        .server_reflection_info(tonic::codegen::tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("unexpected reflection answer {resp:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"ftsd.v1.Fts".to_string()), "{names:?}");
    assert!(
        names.contains(&"grpc.health.v1.Health".to_string()),
        "{names:?}"
    );
}

async fn wait_hook(log: &Path, needle: &str) -> bool {
    for _ in 0..100 {
        if std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with(needle) || l == needle)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[test]
fn unreachable_endpoints_fail_with_one_line() {
    let port = support::free_port();
    let o = ftsctl(&format!("127.0.0.1:{port}"), &["status"]);
    assert_eq!(o.status.code(), Some(3));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("Connection refused") && !err.contains("panicked"),
        "{err}"
    );
    assert!(stdout(&o).is_empty());
    // bad usage is exit 2, also one line of reason
    let o = ftsctl("127.0.0.1:1", &["history", "--since", "yesterday-ish"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).starts_with("ftsctl: --since"), "{}", stderr(&o));
}

#[test]
fn completions_and_man_page_come_from_the_cli_definition() {
    let o = ftsctl("x", &["completions", "bash"]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("_ftsctl()") && stdout(&o).contains("unbalanced"));
    let o = ftsctl("x", &["man"]);
    assert!(o.status.success());
    let man = stdout(&o);
    assert!(man.contains(".TH ftsctl 1"), "{man}");
    assert!(man.contains("Inspect and operate an ftsd cluster"), "{man}");
}

/// Single-instance mode (no etcd): the API answers with this instance as the leader, pause is
/// refused with a clear reason, and hooks that hang or fail are killed / logged while the
/// failovers go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_instance_api_and_hooks_that_hang_or_fail() {
    let mut sys = System::start(2, Duration::from_millis(500)).await;
    let hooks = r#"[hooks]
on_transition = ["/bin/sh", "-c", "if [ \"$FTSD_DBID\" = 2 ]; then sleep 30; else exit 3; fi"]
timeout = "1s"
"#;
    let solo = sys.spawn_ftsd("solo", &["--no-election"], hooks);
    let (api, metrics) = addresses(&sys.daemons[solo].config);
    let st = wait_for("first cycle", LIMIT, || {
        let o = ftsctl(&api, &["status", "--json"]);
        async move {
            let v: Value = serde_json::from_slice(&o.stdout).ok()?;
            (v["last_cycle_result"] == "ok").then_some(v)
        }
    })
    .await;
    assert_eq!(
        (st["leader_id"].as_str(), st["elected"].as_bool()),
        (Some("solo"), Some(false))
    );
    assert_eq!(st["epoch"], 1);

    sys.sim.set_fault(2, Fault::Down).await.unwrap();
    sys.wait_state(4, (Role::Primary, Status::Up, Mode::NotInSync), LIMIT)
        .await;
    sys.sim.set_fault(3, Fault::Down).await.unwrap();
    sys.wait_state(5, (Role::Primary, Status::Up, Mode::NotInSync), LIMIT)
        .await;
    let m = wait_for("hook results counted", LIMIT, || {
        let m = scrape(&metrics);
        async move {
            let n = sample(&m, "ftsd_hook_runs_total", &[("event", "transition")]);
            (n >= 4.0).then_some(m)
        }
    })
    .await;
    // dbid 2's hook hangs and is killed at the timeout; the three others exit 3
    assert_eq!(
        sample(&m, "ftsd_hook_runs_total", &[("result", "timeout")]),
        1.0
    );
    assert_eq!(
        sample(&m, "ftsd_hook_runs_total", &[("result", "failed")]),
        3.0
    );
    assert_eq!(
        sample(&m, "ftsd_transitions_total", &[("kind", "failover")]),
        2.0
    );
    let log = sys.daemons[solo].log_text();
    assert!(log.contains("hook timed out and was killed"), "{log}");
    assert!(log.contains("hook failed"), "{log}");

    // pause needs etcd
    let o = ftsctl(&api, &["pause", "--reason", "x"]);
    assert_eq!(o.status.code(), Some(4));
    assert!(stderr(&o).contains("pause needs etcd"), "{}", stderr(&o));
    assert_eq!(stderr(&o).lines().count(), 1);
    // status exits 1: two segments are down
    assert_eq!(json(&api, &["status"], 1)["segments_down"], 2);
    // watch --json: one document per refresh
    let out = ftsctl_expect(
        &api,
        &[
            "watch",
            "--json",
            "--iterations",
            "2",
            "--interval",
            "100ms",
        ],
        1,
    );
    let frames: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(frames.len(), 2, "{out}");
    for f in &frames {
        assert_eq!(f["status"]["leader_id"], "solo");
        assert_eq!(
            f["segments"].as_array().unwrap().len(),
            sys.rows().await.len()
        );
    }
}
