//! The coordinator pair (issue 14) as the harness sees it: two coordinator hosts on coordnet
//! (`chaos-coord1`/`chaos-coord2`, each a real PostgreSQL 15 server and `ftsd vip-agent`), the
//! records the pgpairs ftsd keeps about them in etcd (`/ftsd/pgpairs/coordinator/…`), a writer
//! that writes through the VIP from the host, a sampler of the writable servers and of the
//! hosts carrying the VIP, the heal between scenarios, and the three coordinator scenarios.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Client as Etcd, ConnectOptions, GetOptions, PutOptions};
use ftsd::coordinator::records::{CoordinatorState, HistoryRecord};
use tokio_postgres::NoTls;

use super::cluster::{self, ETCD, ETCD_PREFIX};
use super::docker;
use super::harness::{fail, sleep_ms, Harness, HarnessError, Result, ACKNOWLEDGING_PRIMARY};
use super::history::{now_ms, CoordAck, CoordEvent, CoordSample, Expect, Millis, WritableRun};
use super::invariants::VIP_SETTLE_MS;

/// The ftsd cluster whose configuration (`docker/etc/pgpairs.toml`) watches the pair.
pub const CLUSTER: &str = "pgpairs";
/// The coordinator hosts: container and coordnet address (the server listens on 5432).
pub const COORD: [(&str, &str); 2] = [
    ("chaos-coord1", "172.28.4.41"),
    ("chaos-coord2", "172.28.4.42"),
];
/// The client-facing address the agents move (`vip.address`).
pub const VIP: &str = "172.28.4.100";
const VIP_CIDR: &str = "172.28.4.100/24";
/// The pgpairs ftsd's metrics endpoint inside an FTS host (`docker/etc/pgpairs.toml`).
const METRICS_PORT: u16 = 7481;

/// `coordinator.interval` (and `vip.interval`) of the chaos cluster.
pub const INTERVAL_MS: i64 = 1000;
/// A lost coordinator is noticed within interval + (retries + 1) × timeout + retries ×
/// retry_delay (1 s, 3 × 800 ms, 2 × 200 ms).
pub const DETECT_MS: i64 = INTERVAL_MS + 3 * 800 + 2 * 200;
/// Recording the intent, `pg_promote()`, the write check and recording the outcome.
pub const PROMOTE_MS: i64 = 2000;
/// The VIP's move once the outcome is recorded: the new host's agent interval, its duplicate
/// check (`arping -D`, two probes a second apart), the gratuitous ARP, the writer's reconnect.
pub const VIP_MOVE_MS: i64 = INTERVAL_MS + 3000 + 1000;

pub type Host = (&'static str, &'static str);

/// `host:port` of a coordinator host's server, as the configuration and etcd name it.
pub fn member(ip: &str) -> String {
    format!("{ip}:5432")
}

/// `host:port` of the server whose `cluster_name` is `name` (the host name, `coord1`).
fn server_of(name: &str) -> Option<String> {
    COORD
        .iter()
        .find(|(c, _)| c.strip_prefix("chaos-") == Some(name))
        .map(|(_, ip)| member(ip))
}

fn by_member(m: &str) -> Option<Host> {
    COORD.iter().copied().find(|(_, ip)| member(ip) == m)
}

fn other(e: impl std::fmt::Display) -> HarnessError {
    HarnessError::Other(e.to_string())
}

fn prefix() -> String {
    ftsd::election::keys::coordinator_prefix(ETCD_PREFIX, CLUSTER)
}

async fn etcd() -> Result<Etcd> {
    let endpoints: Vec<String> = ETCD
        .iter()
        .map(|(_, ip)| format!("http://{ip}:2379"))
        .collect();
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        .with_timeout(Duration::from_secs(2))
        .with_require_leader(true);
    Etcd::connect(endpoints, Some(options))
        .await
        .map_err(|e| other(format!("etcd: {e}")))
}

/// The recorded state of the pair (None before the first record).
pub async fn state() -> Result<Option<CoordinatorState>> {
    let mut c = etcd().await?;
    let resp = c
        .get(format!("{}state", prefix()), None)
        .await
        .map_err(|e| other(format!("etcd: {e}")))?;
    match resp.kvs().first() {
        None => Ok(None),
        Some(kv) => serde_json::from_slice(kv.value())
            .map(Some)
            .map_err(|e| other(format!("the coordinator state in etcd: {e}"))),
    }
}

/// (acting, standby) hosts as etcd records them (the configured pair before any record).
pub fn roles(state: Option<&CoordinatorState>) -> Result<(Host, Host)> {
    let Some(s) = state else {
        return Ok((COORD[0], COORD[1]));
    };
    match (by_member(&s.acting), by_member(&s.standby)) {
        (Some(a), Some(b)) if a != b => Ok((a, b)),
        _ => fail(format!(
            "etcd names {} acting and {} standby: not the chaos pair",
            s.acting, s.standby
        )),
    }
}

/// The pair's history records written at or after `from`, oldest first.
pub async fn events(from: Millis) -> Result<Vec<CoordEvent>> {
    let mut c = etcd().await?;
    let resp = c
        .get(
            format!("{}history/", prefix()),
            Some(GetOptions::new().with_prefix()),
        )
        .await
        .map_err(|e| other(format!("etcd: {e}")))?;
    let mut out = Vec::new();
    for kv in resp.kvs() {
        let h: HistoryRecord = serde_json::from_slice(kv.value()).map_err(|e| {
            other(format!(
                "coordinator history {}: {e}",
                String::from_utf8_lossy(kv.key())
            ))
        })?;
        let at = h.time_us.div_euclid(1000);
        if at >= from {
            out.push(CoordEvent {
                at,
                event: h.event,
                from: h.from,
                to: h.to,
                epoch: h.epoch,
                instance: h.instance_id,
            });
        }
    }
    out.sort_by_key(|e| e.at);
    Ok(out)
}

/// The VIP holder keys the agents (or an injection) registered.
pub async fn holder_keys() -> Result<Vec<String>> {
    let mut c = etcd().await?;
    let resp = c
        .get(
            format!("{}vip/", prefix()),
            Some(GetOptions::new().with_prefix().with_keys_only()),
        )
        .await
        .map_err(|e| other(format!("etcd: {e}")))?;
    Ok(resp
        .kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect())
}

/// Whether the kernel's FIB dump of a network namespace (`/proc/<pid>/net/fib_trie`) has `ip`
/// as a local address: a `|-- IP` line followed by `/32 host LOCAL`.
pub fn fib_has_local(fib_trie: &str, ip: &str) -> bool {
    let needle = format!("|-- {ip}");
    let mut lines = fib_trie.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim() == needle
            && lines
                .peek()
                .is_some_and(|next| next.contains("/32 host LOCAL"))
        {
            return true;
        }
    }
    false
}

/// Which coordinator hosts carry the VIP: read from each container's network namespace through
/// /proc (no `docker exec` per sample: the sampler runs four times a second on a 2-core
/// machine). The container's pid is looked up again when the read fails (a restart).
struct VipReader {
    pids: [Option<u32>; 2],
}

impl VipReader {
    fn pid(container: &str) -> Option<u32> {
        docker::docker(&["inspect", "-f", "{{.State.Pid}}", container])
            .ok()?
            .trim()
            .parse()
            .ok()
            .filter(|p| *p > 0)
    }

    /// Whether each host carries the VIP; None when its namespace cannot be read.
    fn read(&mut self) -> [Option<bool>; 2] {
        let mut out = [None, None];
        for (i, (container, _)) in COORD.iter().enumerate() {
            for _ in 0..2 {
                if self.pids[i].is_none() {
                    self.pids[i] = Self::pid(container);
                }
                let Some(pid) = self.pids[i] else { break };
                match std::fs::read_to_string(format!("/proc/{pid}/net/fib_trie")) {
                    Ok(text) => {
                        out[i] = Some(fib_has_local(&text, VIP));
                        break;
                    }
                    Err(_) => self.pids[i] = None,
                }
            }
        }
        out
    }
}

/// Whether `container` carries the VIP now.
pub fn holds_vip(container: &str) -> Result<bool> {
    let pid = VipReader::pid(container)
        .ok_or_else(|| other(format!("{container}: no running process")))?;
    std::fs::read_to_string(format!("/proc/{pid}/net/fib_trie"))
        .map(|t| fib_has_local(&t, VIP))
        .map_err(|e| other(format!("{container}: reading its addresses: {e}")))
}

async fn connect(host: &str, timeout: Duration) -> Option<tokio_postgres::Client> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(host)
        .port(5432)
        .user("postgres")
        .dbname("postgres")
        .connect_timeout(timeout);
    let (client, conn) = tokio::time::timeout(timeout * 2, config.connect(NoTls))
        .await
        .ok()?
        .ok()?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Some(client)
}

const TABLE: &str = "CREATE TABLE IF NOT EXISTS chaos_coord_writes (seq bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())";

/// The writer through the VIP and the sampler, for one coordinator scenario.
pub struct CoordProbe {
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<CoordAck>>>,
    samples: Arc<Mutex<Vec<CoordSample>>>,
    errors: Arc<Mutex<u64>>,
    /// Sequence numbers of this probe's writes start above this.
    base: i64,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Writes numbered rows through the VIP, one at a time, and records each acknowledged commit
/// with the server that answered. A commit is acknowledged only when PostgreSQL answered it;
/// a slow one is abandoned by dropping the connection, never cancelled (a cancelled
/// synchronous-replication wait would commit locally with only a warning).
async fn writer(
    base: i64,
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<CoordAck>>>,
    errors: Arc<Mutex<u64>>,
) {
    let mut seq = base;
    let mut session: Option<(tokio_postgres::Client, String)> = None;
    while !stop.load(Ordering::Relaxed) {
        if session.is_none() {
            if let Some(c) = connect(VIP, Duration::from_secs(1)).await {
                // Which server answered: not `inet_server_addr()`, which is the VIP itself,
                // but its `cluster_name` (chaos-coord starts each server with its host name).
                let server = c
                    .query_one("SELECT current_setting('cluster_name')", &[])
                    .await
                    .ok()
                    .and_then(|r| server_of(&r.get::<_, String>(0)));
                if let (Some(server), Ok(())) = (server, c.batch_execute(TABLE).await) {
                    session = Some((c, server));
                }
            }
            if session.is_none() {
                sleep_ms(100).await;
                continue;
            }
        }
        let Some((client, server)) = session.as_ref() else {
            continue;
        };
        seq += 1;
        let insert = tokio::time::timeout(
            Duration::from_secs(3),
            client.execute("INSERT INTO chaos_coord_writes (seq) VALUES ($1)", &[&seq]),
        )
        .await;
        match insert {
            Ok(Ok(1)) => {
                acks.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(CoordAck {
                        seq,
                        at: now_ms(),
                        server: server.clone(),
                    });
                sleep_ms(20).await;
            }
            _ => {
                *errors.lock().unwrap_or_else(|e| e.into_inner()) += 1;
                session = None;
            }
        }
    }
}

impl CoordProbe {
    pub fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(Mutex::new(Vec::new()));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(0));
        let base = now_ms() * 1000;
        let mut tasks = vec![tokio::spawn(writer(
            base,
            stop.clone(),
            acks.clone(),
            errors.clone(),
        ))];
        // Per server: since when its answers have said it acknowledges writes (None: its
        // latest answer said it does not), and when it last answered; one task each, so a
        // dead server's timeouts do not slow the other's sampling.
        type Latest = [(Option<Millis>, Millis); 2];
        let latest: Arc<Mutex<Latest>> = Arc::new(Mutex::new([(None, 0); 2]));
        for (i, (_, ip)) in COORD.iter().copied().enumerate() {
            let (s, latest) = (stop.clone(), latest.clone());
            tasks.push(tokio::spawn(async move {
                let mut client: Option<tokio_postgres::Client> = None;
                while !s.load(Ordering::Relaxed) {
                    if client.as_ref().is_none_or(|c| c.is_closed()) {
                        client = connect(ip, Duration::from_millis(500)).await;
                    }
                    if let Some(c) = &client {
                        let q = c.query_one(ACKNOWLEDGING_PRIMARY, &[]);
                        match tokio::time::timeout(Duration::from_millis(500), q).await {
                            Ok(Ok(row)) => {
                                let now = now_ms();
                                let mut l = latest.lock().unwrap_or_else(|e| e.into_inner());
                                let since = row.get::<_, bool>(0).then(|| l[i].0.unwrap_or(now));
                                l[i] = (since, now);
                            }
                            _ => client = None,
                        }
                    }
                    sleep_ms(100).await;
                }
            }));
        }
        let (s, out) = (stop.clone(), samples.clone());
        tasks.push(tokio::spawn(async move {
            let reader = Arc::new(Mutex::new(VipReader { pids: [None, None] }));
            while !s.load(Ordering::Relaxed) {
                let r = reader.clone();
                let vip = tokio::task::spawn_blocking(move || {
                    r.lock().unwrap_or_else(|e| e.into_inner()).read()
                })
                .await
                .unwrap_or([None, None]);
                let at = now_ms();
                let state = *latest.lock().unwrap_or_else(|e| e.into_inner());
                let writable = COORD
                    .iter()
                    .zip(state)
                    .filter_map(|((_, ip), (since, last))| {
                        let since = since.filter(|_| at - last < 1000)?;
                        Some(WritableRun {
                            server: member(ip),
                            since,
                            last,
                        })
                    })
                    .collect();
                let vip = COORD
                    .iter()
                    .zip(vip)
                    .filter(|(_, held)| *held == Some(true))
                    .map(|((c, _), _)| c.to_string())
                    .collect();
                out.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(CoordSample { at, writable, vip });
                sleep_ms(250).await;
            }
        }));
        CoordProbe {
            stop,
            acks,
            samples,
            errors,
            base,
            tasks,
        }
    }

    /// Acknowledged writes so far.
    pub fn acks(&self) -> Vec<CoordAck> {
        self.acks.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Stops the writer and the sampler; reads this probe's rows from the acting coordinator
    /// (None if they cannot be read). Returns (acks, samples, survivors, failed writes).
    pub async fn finish(self) -> (Vec<CoordAck>, Vec<CoordSample>, Option<Vec<i64>>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        let acks = std::mem::take(&mut *self.acks.lock().unwrap_or_else(|e| e.into_inner()));
        let samples = std::mem::take(&mut *self.samples.lock().unwrap_or_else(|e| e.into_inner()));
        let errors = *self.errors.lock().unwrap_or_else(|e| e.into_inner());
        let mut survivors = None;
        for _ in 0..20 {
            if let Some(seqs) = read_survivors(self.base).await {
                survivors = Some(seqs);
                break;
            }
            sleep_ms(1000).await;
        }
        (acks, samples, survivors, errors)
    }
}

/// The sequence numbers above `base` on the acting coordinator, once etcd has no pending
/// intent (a failover in flight has no settled acting server yet).
async fn read_survivors(base: i64) -> Option<Vec<i64>> {
    let st = state().await.ok()?;
    if st.as_ref().is_some_and(|s| s.intent.is_some()) {
        return None;
    }
    let ((_, ip), _) = roles(st.as_ref()).ok()?;
    let c = connect(ip, Duration::from_secs(2)).await?;
    let rows = c
        .query(
            "SELECT seq FROM chaos_coord_writes WHERE seq > $1 ORDER BY seq",
            &[&base],
        )
        .await
        .ok()?;
    Some(rows.iter().map(|r| r.get(0)).collect())
}

/// What one server says about itself: in recovery, its `synchronous_standby_names`, and
/// whether `standby_ip` streams from it as a synchronous standby.
struct ServerState {
    in_recovery: bool,
    sync_names: String,
    sync_standby: bool,
}

async fn server_state(ip: &str, standby_ip: &str) -> Option<ServerState> {
    let c = connect(ip, Duration::from_secs(1)).await?;
    let q = format!(
        "SELECT pg_is_in_recovery(), current_setting('synchronous_standby_names'), \
         EXISTS (SELECT 1 FROM pg_stat_replication WHERE client_addr = '{standby_ip}'::inet \
                 AND state = 'streaming' AND sync_state IN ('sync', 'quorum'))"
    );
    let row = tokio::time::timeout(Duration::from_secs(2), c.query_one(&q, &[]))
        .await
        .ok()?
        .ok()?;
    Some(ServerState {
        in_recovery: row.get(0),
        sync_names: row.get(1),
        sync_standby: row.get(2),
    })
}

/// Discards `host`'s data directory and restarts it as a fresh standby of `primary_ip` (the
/// `rebuild-from` marker of `chaos-coord`), as an operator rebuilds a former coordinator.
fn rebuild(host: Host, primary_ip: &str) -> Result<()> {
    let (container, _) = host;
    let marker = std::env::temp_dir().join(format!("rebuild-from-{container}"));
    std::fs::write(&marker, primary_ip)
        .map_err(|e| other(format!("writing {}: {e}", marker.display())))?;
    let dest = format!("{container}:/var/lib/postgresql/rebuild-from");
    let copied = docker::docker(&["cp", &marker.to_string_lossy(), &dest]);
    let _ = std::fs::remove_file(&marker);
    copied?;
    docker::docker(&["restart", "-t", "2", container])?;
    tracing::info!(
        container,
        primary_ip,
        "coordinator host rebuilt as a standby"
    );
    Ok(())
}

/// Heals the coordinator pair before a coordinator scenario: both hosts running; the server
/// etcd names as acting is a primary (a killed one that etcd still names is restarted; the
/// configured primary in recovery while etcd has recorded nothing for 30 s — no server was
/// writable for ftsd to record — is promoted); the other one is its synchronous standby
/// (rebuilt from it otherwise); the acting server commits synchronously again (ftsd clears
/// `synchronous_standby_names` on the server it promotes); no failover intent pending;
/// exactly one holder key and the VIP on the acting host only. Then gives every ftsd a round to see the standby in sync.
pub async fn heal(limit: Duration) -> Result<()> {
    let start = Instant::now();
    let mut last = String::from("not checked yet");
    let mut rebuilt_at: Option<Instant> = None;
    let mut restarted_at: Option<Instant> = None;
    let mut unhealthy_since: Option<Instant> = None;
    let recent =
        |t: Option<Instant>, secs: u64| t.is_some_and(|t| t.elapsed() < Duration::from_secs(secs));
    while start.elapsed() < limit {
        for (c, _) in COORD {
            match docker::state(c)?.as_str() {
                "running" => {}
                "paused" => docker::unpause(c)?,
                _ => docker::start(c)?,
            }
        }
        let st = match state().await {
            Ok(st) => st,
            Err(e) => {
                last = e.to_string();
                sleep_ms(500).await;
                continue;
            }
        };
        // Nothing recorded (etcd rebuilt): the leader records the server that accepts writes
        // within a few rounds of taking office; only when it cannot (no server writable) does
        // the heal promote the configured primary.
        if st.is_none() && start.elapsed() < Duration::from_secs(30) {
            last = "no coordinator state recorded in etcd yet".into();
            sleep_ms(500).await;
            continue;
        }
        if let Some(i) = st.as_ref().and_then(|s| s.intent.as_ref()) {
            last = format!("a failover intent {} -> {} is pending", i.from, i.to);
            sleep_ms(500).await;
            continue;
        }
        let (acting, standby) = roles(st.as_ref())?;
        let Some(a) = server_state(acting.1, standby.1).await else {
            last = format!("the acting coordinator {} does not answer", acting.0);
            if !recent(restarted_at, 20) {
                tracing::warn!(
                    container = acting.0,
                    "restarting the acting coordinator's host"
                );
                docker::docker(&["restart", "-t", "2", acting.0])?;
                restarted_at = Some(Instant::now());
            }
            sleep_ms(1000).await;
            continue;
        };
        if a.in_recovery {
            last = format!(
                "{} is named acting but is in recovery; promoting it",
                acting.0
            );
            tracing::warn!("{last}");
            if let Some(c) = connect(acting.1, Duration::from_secs(1)).await {
                let _ = c.batch_execute("SELECT pg_promote()").await;
            }
            sleep_ms(1000).await;
            continue;
        }
        if a.sync_names != "*" {
            if let Some(c) = connect(acting.1, Duration::from_secs(1)).await {
                // Two statements: ALTER SYSTEM cannot run in the implicit transaction of a
                // multi-statement query.
                for sql in [
                    "ALTER SYSTEM SET synchronous_standby_names = '*'",
                    "SELECT pg_reload_conf()",
                ] {
                    c.batch_execute(sql).await.map_err(|e| {
                        other(format!(
                            "{}: {sql}: {}",
                            acting.0,
                            e.as_db_error()
                                .map_or(e.to_string(), |d| d.message().to_string())
                        ))
                    })?;
                }
            }
            last = format!("{} did not commit synchronously; set again", acting.0);
            sleep_ms(500).await;
            continue;
        }
        let s = server_state(standby.1, acting.1).await;
        let standby_ok = s.as_ref().is_some_and(|s| s.in_recovery) && a.sync_standby;
        if !standby_ok {
            last = format!("{} is not a synchronous standby of {}", standby.0, acting.0);
            let since = *unhealthy_since.get_or_insert_with(Instant::now);
            // A server out of recovery (a former coordinator), one whose host runs no
            // PostgreSQL process at all (killed; nothing restarts it) or one not streaming
            // for a while is rebuilt; one that is taking its base backup gets time for it.
            let out_of_recovery = s.as_ref().is_some_and(|s| !s.in_recovery);
            let dead =
                s.is_none() && docker::exec(standby.0, &["pgrep", "-u", "postgres"]).is_err();
            // A base backup under load has taken 40 s here: never restart one sooner.
            if !recent(rebuilt_at, 60)
                && (out_of_recovery || dead || since.elapsed() > Duration::from_secs(60))
            {
                rebuild(standby, acting.1)?;
                rebuilt_at = Some(Instant::now());
                unhealthy_since = None;
            }
            sleep_ms(1000).await;
            continue;
        }
        unhealthy_since = None;
        let holders = holder_keys().await.unwrap_or_default();
        let on_acting = holds_vip(acting.0).unwrap_or(false);
        let on_standby = holds_vip(standby.0).unwrap_or(true);
        if holders.len() != 1 || !on_acting || on_standby {
            last = format!(
                "VIP holder keys {holders:?}, on {}: {on_acting}, on {}: {on_standby}",
                acting.0, standby.0
            );
            sleep_ms(500).await;
            continue;
        }
        // Every ftsd probes the pair every interval: one more round sees the standby in sync.
        sleep_ms(2 * INTERVAL_MS as u64 + 500).await;
        return Ok(());
    }
    fail(format!(
        "the coordinator pair did not heal within {limit:?}: {last}"
    ))
}

/// `ftsd_vip_holders` of the pgpairs ftsd on `container` (its metrics endpoint, through bash's
/// /dev/tcp: the image has no HTTP client).
fn vip_holders_gauge(container: &str) -> Result<i64> {
    let script = format!(
        "exec 3<>/dev/tcp/127.0.0.1/{METRICS_PORT} && \
         printf 'GET /metrics HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && \
         timeout 5 cat <&3"
    );
    let text = docker::exec(container, &["bash", "-c", &script])?;
    text.lines()
        .find_map(|l| l.strip_prefix("ftsd_vip_holders "))
        .and_then(|n| n.trim().parse::<f64>().ok())
        .map(|n| n as i64)
        .ok_or_else(|| other(format!("{container}: no ftsd_vip_holders in its metrics")))
}

/// `ip addr add|del` of the VIP on `container`'s coordnet interface (its name depends on the
/// order docker attached the networks).
fn vip_command(container: &str, op: &str) -> Result<()> {
    let script = format!(
        "dev=$(ip -4 -o addr show | awk '$4 ~ /^172\\.28\\.4\\./ {{print $2; exit}}') && ip addr {op} {VIP_CIDR} dev \"$dev\""
    );
    docker::exec(container, &["sh", "-c", &script]).map(drop)?;
    Ok(())
}

fn probe(h: &Harness) -> Result<&CoordProbe> {
    h.coord
        .as_ref()
        .ok_or_else(|| other("the coordinator probe is not running"))
}

/// Waits until a write through the VIP has been acknowledged since `since`; an error after
/// `limit_ms` (no workload, nothing to judge).
async fn wait_for_writes(h: &Harness, since: Millis, limit_ms: u64) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(limit_ms) {
        if probe(h)?.acks().iter().any(|a| a.at >= since) {
            return Ok(());
        }
        sleep_ms(100).await;
    }
    fail(format!(
        "no write through the VIP {VIP} was acknowledged within {limit_ms} ms"
    ))
}

/// kill -9 of the coordinator's PostgreSQL under the write load through the VIP: the standby
/// is promoted once, the VIP moves, writes resume, no acknowledged write is lost.
pub async fn kill_coordinator(h: &mut Harness) -> Result<()> {
    wait_for_writes(h, now_ms(), 10_000).await?;
    h.jitter(500, 2000).await;
    let st = state().await?;
    let (acting, standby) = roles(st.as_ref())?;
    // Every PostgreSQL process of the host, like `kill -9` of the server; the host (and its
    // VIP agent) keeps running.
    // The fault's time is taken before the command: the kill lands while `docker exec` runs.
    let at = now_ms();
    docker::exec(acting.0, &["pkill", "-KILL", "-u", "postgres"])?;
    let bound = DETECT_MS + PROMOTE_MS;
    let write_bound = bound + VIP_MOVE_MS;
    h.record(
        format!(
            "kill -9 of PostgreSQL on {} (the coordinator {}; its host and VIP agent keep running)",
            acting.0,
            member(acting.1)
        ),
        None,
        Expect::CoordinatorFailover {
            from: member(acting.1),
            not_before: at,
            bound_ms: bound,
            write_bound_ms: write_bound,
        },
    );
    let new = member(standby.1);
    let limit = Duration::from_millis((write_bound + h.timing.slack_ms + 5000) as u64);
    let start = Instant::now();
    while start.elapsed() < limit {
        let moved = state()
            .await
            .ok()
            .flatten()
            .is_some_and(|s| s.acting == new && s.intent.is_none());
        let resumed = probe(h)?
            .acks()
            .iter()
            .any(|a| a.at >= at && a.server == new);
        if moved && resumed {
            h.note(format!(
                "{} acting and written through the VIP {} ms after the kill",
                standby.0,
                now_ms() - at
            ));
            break;
        }
        sleep_ms(200).await;
    }
    // Writes go on through the new coordinator for a while: a late second failover or a
    // second writer would show now.
    sleep_ms(3000).await;
    Ok(())
}

const IPTABLES_RULES: [(&str, &str); 2] = [("OUTPUT", "-d"), ("INPUT", "-s")];

fn iptables(container: &str, op: &str, ip: &str) -> Result<()> {
    for (chain, dir) in IPTABLES_RULES {
        docker::exec(container, &["iptables", op, chain, dir, ip, "-j", "DROP"])?;
    }
    Ok(())
}

/// The leader of the pgpairs cluster alone loses the coordinator (iptables drops its traffic
/// to and from the coordinator's address both ways; it keeps etcd, the catalog, the standby,
/// and the other members keep reaching the coordinator) for three to four detection times:
/// no failover, during the cut or after it.
pub async fn partition_coordinator_from_leader(h: &mut Harness) -> Result<()> {
    wait_for_writes(h, now_ms(), 10_000).await?;
    let (id, container, epoch) = h.leader().await?;
    let st = state().await?;
    let (acting, _) = roles(st.as_ref())?;
    h.jitter(500, 1500).await;
    iptables(container, "-I", acting.1)?;
    let cut = h.record(
        format!(
            "iptables on {container} ({id} in office, epoch {epoch}) drops its traffic with the coordinator {}; the other FTS hosts still reach it",
            member(acting.1)
        ),
        None,
        Expect::NoCoordinatorFailover { until: now_ms() },
    );
    let hold = h.rng.range(3 * DETECT_MS as u64, 4 * DETECT_MS as u64);
    sleep_ms(hold).await;
    let undone = iptables(container, "-D", acting.1);
    h.healed(cut);
    undone?;
    // A failover decided during the cut would be recorded now: give it the time to show.
    let settle = DETECT_MS + PROMOTE_MS + h.timing.slack_ms;
    h.faults[cut].expect = Expect::NoCoordinatorFailover {
        until: now_ms() + settle,
    };
    sleep_ms(settle as u64).await;
    let (now, ..) = h.leader().await?;
    h.note(format!("pgpairs leader after the cut: {now} (was {id})"));
    Ok(())
}

/// Removes what `partition_coordinator_from_leader` may have left behind (a scenario that
/// failed between adding and deleting the rules): every FTS host's DROP rules for both
/// coordinator addresses.
pub fn clear_iptables() {
    for (c, ..) in cluster::FTSD {
        for (_, ip) in COORD {
            while iptables(c, "-D", ip).is_ok() {}
        }
    }
}

/// A second VIP holder: the address added on the standby's host by hand and a holder key
/// registered for it (what a second agent that believes it acts would do). Every ftsd must
/// raise the `vip_holders` alarm within one interval, the leader's gauge must read 2, and
/// nothing may fail over because of it.
pub async fn dual_vip(h: &mut Harness) -> Result<()> {
    wait_for_writes(h, now_ms(), 10_000).await?;
    let (_, leader, _) = h.leader().await?;
    let st = state().await?;
    let (_, standby) = roles(st.as_ref())?;
    h.jitter(500, 1500).await;
    let mut client = etcd().await?;
    let lease = client
        .lease_grant(60, None)
        .await
        .map_err(|e| other(format!("etcd: {e}")))?
        .id();
    // The injection window opens before the address goes up: a sample taken while `docker
    // exec` runs may already see two holders.
    let at = now_ms();
    vip_command(standby.0, "add")?;
    let key = format!("{}vip/injected-{}", prefix(), standby.0);
    let put = client
        .put(
            key.clone(),
            r#"{"injected":"by the chaos harness"}"#,
            Some(PutOptions::new().with_lease(lease)),
        )
        .await;
    let idx = h.record(
        format!(
            "a second VIP holder: {VIP} added on {} (the standby's host) and a holder key registered for it",
            standby.0
        ),
        None,
        Expect::VipAlarm {
            bound_ms: INTERVAL_MS,
            until: now_ms(),
            holders_metric: None,
        },
    );
    h.faults[idx].at = at;
    let injected = async {
        put.map_err(|e| other(format!("etcd: {e}")))?;
        let hold = Duration::from_millis(h.rng.range(3000, 5000));
        let start = Instant::now();
        let mut highest: Option<i64> = None;
        let mut stray_gone: Option<Millis> = None;
        while start.elapsed() < hold {
            if let Ok(n) = vip_holders_gauge(leader) {
                highest = Some(highest.map_or(n, |m| m.max(n)));
            }
            if stray_gone.is_none() && holds_vip(standby.0).is_ok_and(|held| !held) {
                stray_gone = Some(now_ms() - at);
            }
            sleep_ms(300).await;
        }
        Ok::<_, HarnessError>((highest, stray_gone))
    }
    .await;
    // Take the injection back, whatever happened.
    let revoked = client.lease_revoke(lease).await;
    let _ = vip_command(standby.0, "del");
    h.healed(idx);
    let (highest, stray_gone) = injected?;
    revoked.map_err(|e| other(format!("etcd: revoking the injected holder: {e}")))?;
    match stray_gone {
        Some(ms) => h.note(format!(
            "{}'s VIP agent removed the stray address {ms} ms after the injection (its host does not act)",
            standby.0
        )),
        None => h.note(format!(
            "the stray address stayed on {} until the harness removed it",
            standby.0
        )),
    }
    let settle = DETECT_MS + PROMOTE_MS + h.timing.slack_ms;
    h.faults[idx].expect = Expect::VipAlarm {
        bound_ms: INTERVAL_MS,
        until: now_ms() + settle,
        holders_metric: highest,
    };
    sleep_ms((settle + VIP_SETTLE_MS) as u64).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_local_address_in_the_fib_dump() {
        let fib = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n     +-- 172.28.4.0/24 2 0 2\n        |-- 172.28.4.0\n           /24 link UNICAST\n        |-- 172.28.4.100\n           /32 host LOCAL\nLocal:\n";
        assert!(fib_has_local(fib, "172.28.4.100"));
        assert!(
            !fib_has_local(fib, "172.28.4.0"),
            "a route, not a local address"
        );
        assert!(!fib_has_local(fib, "172.28.4.10"));
    }

    #[test]
    fn roles_follow_the_record() {
        assert_eq!(roles(None).unwrap(), (COORD[0], COORD[1]));
        let s = CoordinatorState {
            acting: member(COORD[1].1),
            standby: member(COORD[0].1),
            rebuild: true,
            intent: None,
            last_failover_us: None,
            catalog_update: None,
            epoch: 1,
            instance_id: "ftsd1".into(),
            updated_us: 1,
        };
        assert_eq!(roles(Some(&s)).unwrap(), (COORD[1], COORD[0]));
    }

    #[test]
    fn a_session_through_the_vip_names_its_server_by_cluster_name() {
        assert_eq!(server_of("coord2").as_deref(), Some("172.28.4.42:5432"));
        assert_eq!(server_of("pg1p"), None);
    }
}
