//! `ftsd vip-agent` with a real etcd and real addresses: each "coordinator host" is a network
//! namespace the test creates, with an interface (a dummy one, or a veth pair where the kernel
//! has no dummy module), and the agents manage the VIP inside it (`vip.netns`). Needs root and
//! network-namespace support; without them the test says so and passes without running.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use etcd_client::{Client, GetOptions};
use fts_testkit::etcd::EtcdCluster;
use ftsd::coordinator::records::CoordinatorState;
use support::{wait_for, Daemon};

const VIP: &str = "192.0.2.77";
const LIMIT: Duration = Duration::from_secs(30);
const STATE: &str = "/ftsd/test/coordinator/state";
const HOLDERS: &str = "/ftsd/test/coordinator/vip/";

/// A network namespace with one interface `v0`, deleted on drop.
struct Netns(String);

impl Netns {
    fn create(name: String) -> Result<Netns, String> {
        let ok = |args: &[&str]| -> Result<(), String> {
            let out = Command::new("ip")
                .args(args)
                .output()
                .map_err(|e| format!("ip: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
            }
        };
        ok(&["netns", "add", &name])?;
        let ns = Netns(name);
        let n = ns.0.as_str();
        if ok(&["-n", n, "link", "add", "v0", "type", "dummy"]).is_err() {
            ok(&[
                "-n", n, "link", "add", "v0", "type", "veth", "peer", "name", "v1",
            ])?;
            ok(&["-n", n, "link", "set", "v1", "up"])?;
        }
        ok(&["-n", n, "link", "set", "v0", "up"])?;
        Ok(ns)
    }

    fn holds_vip(&self) -> bool {
        let out = Command::new("ip")
            .args(["-n", &self.0, "-o", "addr", "show", "dev", "v0"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains(&format!(" {VIP}/"))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn spawn_agent(dir: &Path, name: &str, etcd: &EtcdCluster, netns: &Netns, member: &str) -> Daemon {
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            r#"cluster = "test"

[catalog]
url = "postgresql://gpadmin@127.0.0.1:1/postgres"

[coordinator]
primary = "127.0.0.1:15001"
standby = "127.0.0.1:15002"

[vip]
address = "{VIP}/32"
interface = "v0"
member = "{member}"
interval = "200ms"
netns = "{ns}"

[etcd]
endpoints = [{endpoints}]
lease_ttl = "3s"
act_margin = "500ms"
dial_timeout = "1s"

[log]
level = "info,ftsd=debug"
"#,
            ns = netns.0,
            endpoints = etcd
                .endpoints()
                .iter()
                .map(|e| format!("\"{e}\""))
                .collect::<Vec<_>>()
                .join(", "),
        ),
    )
    .unwrap();
    Daemon::spawn(config, name, &["vip-agent"], &[])
}

async fn holders(etcd: &EtcdCluster) -> Vec<String> {
    let mut c = Client::connect(etcd.endpoints(), None).await.unwrap();
    c.get(
        HOLDERS,
        Some(GetOptions::new().with_prefix().with_keys_only()),
    )
    .await
    .unwrap()
    .kvs()
    .iter()
    .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vip_follows_the_acting_coordinator_and_is_dropped_without_a_lease() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: the VIP agent test needs root (network namespaces, ip addr add)");
        return;
    }
    let base = format!("ftsdvip{}", std::process::id());
    let (a, b) = match (
        Netns::create(format!("{base}a")),
        Netns::create(format!("{base}b")),
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("SKIPPED: cannot create network namespaces with an interface here: {e}");
            return;
        }
    };
    let mut etcd = EtcdCluster::start(1).await.expect("etcd");
    let dir = tempfile::tempdir().unwrap();
    let agent_a = spawn_agent(dir.path(), "agent-a", &etcd, &a, "127.0.0.1:15001");
    let agent_b = spawn_agent(dir.path(), "agent-b", &etcd, &b, "127.0.0.1:15002");
    let logs = || format!("{}\n---\n{}", agent_a.log_text(), agent_b.log_text());

    // No recorded state: nobody holds the VIP, not even the configured primary's host (after
    // an etcd rebuild it may be a former coordinator).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!a.holds_vip() && !b.holds_vip(), "{}", logs());
    assert!(holders(&etcd).await.is_empty());

    // The leader records host a as acting: it takes the VIP.
    let mut c = Client::connect(etcd.endpoints(), None).await.unwrap();
    let record = |acting: &str, standby: &str, failed_over: bool| {
        serde_json::to_vec(&CoordinatorState {
            acting: acting.into(),
            standby: standby.into(),
            rebuild: failed_over,
            intent: None,
            last_failover_us: failed_over.then_some(1),
            catalog_update: None,
            epoch: 1,
            instance_id: "test".into(),
            updated_us: 1,
        })
        .unwrap()
    };
    c.put(
        STATE,
        record("127.0.0.1:15001", "127.0.0.1:15002", false),
        None,
    )
    .await
    .unwrap();
    wait_for("host a to take the VIP", LIMIT, || async {
        a.holds_vip().then_some(())
    })
    .await;
    assert!(!b.holds_vip());
    wait_for("host a registered as the holder", LIMIT, || async {
        (holders(&etcd).await == [format!("{HOLDERS}127.0.0.1:15001")]).then_some(())
    })
    .await;

    // A failover recorded: the VIP moves to host b.
    c.put(
        STATE,
        record("127.0.0.1:15002", "127.0.0.1:15001", true),
        None,
    )
    .await
    .unwrap();
    wait_for("the VIP to move to host b", LIMIT, || async {
        (b.holds_vip() && !a.holds_vip()).then_some(())
    })
    .await;
    wait_for("host b registered as the only holder", LIMIT, || async {
        (holders(&etcd).await == [format!("{HOLDERS}127.0.0.1:15002")]).then_some(())
    })
    .await;

    // etcd unreachable: no agent can confirm its lease, so host b lets the VIP go.
    etcd.pause(0).unwrap();
    let dropped = tokio::time::timeout(LIMIT, async {
        while b.holds_vip() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    etcd.resume(0).unwrap();
    assert!(dropped.is_ok(), "VIP kept without a lease:\n{}", logs());
    assert!(!a.holds_vip());
    // Back with etcd: host b takes it again.
    wait_for("host b to take the VIP back", LIMIT, || async {
        b.holds_vip().then_some(())
    })
    .await;
    assert!(!a.holds_vip(), "{}", logs());
    drop(agent_a);
    drop(agent_b);
}
