//! The preflight checks. Each talks to one real component with the instance's own
//! configuration and credentials and reports what it saw; none changes anything a running
//! cluster depends on (the etcd probe key is our own and deleted again; the catalog is only
//! read; the primaries get a PROBE, which a segment answers without acting).

use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions};

use super::CheckResult;
use crate::catalog::any::AnyCatalog;
use crate::catalog::cloudberry::keys::CbdbKeys;
use crate::catalog::postgres::PgCatalog;
use crate::catalog::Catalog;
use crate::config::{CatalogBackend, Config};
use crate::daemon::settings;
use crate::driver::SegmentDriver;
use crate::election::keys;
use crate::election::members::{self, MemberInfo, SINGLE_ROLE};
use crate::error_chain::one_line as error_chain;
use crate::model::{Role, Segment};
use crate::wire::MessageType;

/// File descriptors beyond one per probe in flight: the catalog, etcd channels, API and
/// metrics clients, hook pipes, the log (the unit file's `LimitNOFILE` comment counts them).
pub const FD_MARGIN: u64 = 256;

/// Runs every check for `cfg` as instance `instance_id`, in report order.
pub async fn run(cfg: &Config, instance_id: &str) -> Vec<CheckResult> {
    let mut out = Vec::new();
    let etcd = etcd(cfg, instance_id, &mut out).await;
    let primaries = catalog(cfg, &mut out).await;
    other_probers(cfg, instance_id, etcd, &mut out).await;
    match primaries {
        Some(primaries) => out.extend(probe_primaries(cfg, &primaries).await),
        None => out.push(CheckResult::skip(
            "primaries",
            "the catalog could not be read",
        )),
    }
    out.push(open_files(cfg.probe.concurrency, nofile_limit()));
    out
}

/// The bound on one etcd or catalog call.
fn call_timeout(cfg: &Config) -> Duration {
    cfg.etcd.dial_timeout.max(Duration::from_secs(2)) * 2
}

/// etcd: reachable with a quorum (a linearizable read), its version, and read/write on our
/// prefix (a probe key written and deleted). Returns the client when etcd is usable.
async fn etcd(cfg: &Config, instance_id: &str, out: &mut Vec<CheckResult>) -> Option<Client> {
    let options = match settings::etcd_options(cfg) {
        Ok(o) => o,
        Err(e) => {
            out.push(CheckResult::fail("etcd quorum", format!("{e:#}")));
            out.push(CheckResult::skip(
                "etcd permissions",
                "etcd settings unusable",
            ));
            return None;
        }
    };
    let endpoints = options.endpoints.join(",");
    let limit = call_timeout(cfg);
    let unreachable = |out: &mut Vec<CheckResult>, why: String| {
        out.push(CheckResult::fail(
            "etcd quorum",
            format!("etcd {endpoints}: {why}"),
        ));
        out.push(CheckResult::skip("etcd permissions", "etcd unreachable"));
    };
    let mut client = match options.connect().await {
        Ok(c) => c,
        Err(e) => {
            unreachable(out, error_chain(&e));
            return None;
        }
    };
    // A linearizable read goes through the raft leader: it succeeds only with a quorum.
    let election = keys::election(&cfg.etcd.prefix, &cfg.cluster);
    match bounded(limit, client.get(election.as_str(), None)).await {
        Ok(_) => {}
        Err(e) => {
            unreachable(out, format!("no quorum read: {e}"));
            return None;
        }
    }
    let version = match bounded(limit, client.status()).await {
        Ok(s) => s.version().to_string(),
        Err(e) => format!("unknown ({e})"),
    };
    let members = match bounded(limit, client.member_list()).await {
        Ok(m) => format!("{} members", m.members().len()),
        Err(e) => format!("members unknown ({e})"),
    };
    out.push(CheckResult::ok(
        "etcd quorum",
        format!("{endpoints}: quorum read ok, {members}, version {version}"),
    ));
    let probe_key = format!(
        "{}/{}/preflight/{instance_id}",
        cfg.etcd.prefix.trim_end_matches('/'),
        cfg.cluster
    );
    let written = bounded(limit, client.put(probe_key.as_str(), "preflight", None)).await;
    let deleted = match written {
        Ok(_) => bounded(limit, client.delete(probe_key.as_str(), None))
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    };
    match deleted {
        Ok(()) => out.push(CheckResult::ok(
            "etcd permissions",
            format!("wrote and deleted {probe_key}"),
        )),
        Err(e) => out.push(CheckResult::fail(
            "etcd permissions",
            format!("cannot write and delete {probe_key}: {e}"),
        )),
    }
    Some(client)
}

/// The catalog: reachable, the segment configuration readable, and (SQL backend) a
/// read-write session whose role may write every table ftsd writes. Returns the primaries.
async fn catalog(cfg: &Config, out: &mut Vec<CheckResult>) -> Option<Vec<Segment>> {
    let limit = call_timeout(cfg).max(cfg.catalog.call_timeout);
    let catalog = match settings::catalog(cfg, false) {
        Ok(c) => c,
        Err(e) => {
            out.push(CheckResult::fail("catalog", format!("{e:#}")));
            return None;
        }
    };
    let config = match tokio::time::timeout(limit, catalog.load()).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            out.push(CheckResult::fail(
                "catalog",
                format!("cannot read the segment configuration: {e}"),
            ));
            return None;
        }
        Err(_) => {
            out.push(CheckResult::fail(
                "catalog",
                format!("reading the segment configuration timed out after {limit:?}"),
            ));
            return None;
        }
    };
    let primaries: Vec<Segment> = config
        .segments
        .iter()
        .filter(|s| s.role == Role::Primary && s.content >= 0)
        .cloned()
        .collect();
    let read = format!(
        "{} rows, {} primaries",
        config.segments.len(),
        primaries.len()
    );
    match &catalog {
        AnyCatalog::Postgres(_) => match writable(cfg, limit).await {
            Ok(()) => out.push(CheckResult::ok(
                "catalog",
                format!("{read}; read-write session, write privileges on ftsd's tables"),
            )),
            Err(e) => out.push(CheckResult::fail("catalog", format!("{read}; {e}"))),
        },
        AnyCatalog::Cloudberry(_) => out.push(CheckResult::ok(
            "catalog",
            format!("{read} (Cloudberry: kept in etcd; writes need the etcd permissions above)"),
        )),
    }
    Some(primaries)
}

/// Tables ftsd writes and the privileges the writes need.
const WRITES: [(&str, &str); 4] = [
    ("gp_segment_configuration", "SELECT,UPDATE"),
    ("gp_configuration_history", "INSERT"),
    ("fts_epoch", "SELECT,INSERT,UPDATE"),
    ("fts_evidence", "INSERT"),
];

/// The SQL catalog accepts writes from our role: not a read-only (standby) session, and every
/// privilege the writes need. Checked with the privilege functions, so nothing is written
/// and no lock is taken.
async fn writable(cfg: &Config, limit: Duration) -> Result<(), String> {
    let pg = PgCatalog::new(settings::catalog_config(cfg));
    let client = tokio::time::timeout(limit, pg.connect())
        .await
        .map_err(|_| "connecting timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let read_only: String = client
        .query_one("SHOW transaction_read_only", &[])
        .await
        .map_err(|e| error_chain(&e))?
        .get(0);
    if read_only == "on" {
        return Err(
            "the session is read-only (a standby, or default_transaction_read_only)".into(),
        );
    }
    let mut missing = Vec::new();
    for (table, privileges) in WRITES {
        let row = client
            .query_one(
                "SELECT to_regclass($1) IS NOT NULL AND has_table_privilege($1, $2)",
                &[&table, &privileges],
            )
            .await
            .map_err(|e| error_chain(&e))?;
        if !row.get::<_, bool>(0) {
            missing.push(format!("{privileges} on {table}"));
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the role lacks {} (or the table is missing: ftsd catalog init)",
            missing.join(", ")
        ))
    }
}

/// No other prober acts on this cluster: no `--no-election` instance in the members
/// registry, and (Cloudberry) no `gpfts` holding the election lock. A leader key held by
/// another ftsd is normal: that instance leads and this one will follow.
async fn other_probers(
    cfg: &Config,
    instance_id: &str,
    etcd: Option<Client>,
    out: &mut Vec<CheckResult>,
) {
    let Some(mut client) = etcd else {
        out.push(CheckResult::skip("another prober", "etcd unreachable"));
        return;
    };
    let limit = call_timeout(cfg);
    let prefix = keys::members_prefix(&cfg.etcd.prefix, &cfg.cluster);
    let registered = match bounded(limit, members::list(&mut client, &prefix)).await {
        Ok(m) => m,
        Err(e) => {
            out.push(CheckResult::fail(
                "another prober",
                format!("cannot read the members registry {prefix}: {e}"),
            ));
            return;
        }
    };
    let mut found = single_instances(&registered, instance_id);
    if cfg.catalog.backend == CatalogBackend::Cloudberry {
        match gpfts_holders(cfg, &mut client, &registered, limit).await {
            Ok(holders) => found.extend(holders),
            Err(e) => {
                out.push(CheckResult::fail(
                    "another prober",
                    format!("cannot read the gpfts lock: {e:#}"),
                ));
                return;
            }
        }
    }
    if found.is_empty() {
        let others = registered
            .iter()
            .filter(|m| m.instance_id != instance_id)
            .count();
        out.push(CheckResult::ok(
            "another prober",
            format!(
                "none acting outside the election ({others} other elected instances registered)"
            ),
        ));
    } else {
        out.push(CheckResult::fail("another prober", found.join("; ")));
    }
}

/// Registered instances, other than `me`, that run without election.
pub fn single_instances(registered: &[MemberInfo], me: &str) -> Vec<String> {
    registered
        .iter()
        .filter(|m| m.role == SINGLE_ROLE && m.instance_id != me)
        .map(|m| {
            format!(
                "instance {} on {} (API {}) runs with --no-election",
                m.instance_id, m.host, m.api_address
            )
        })
        .collect()
}

/// Holders of Cloudberry's election lock that are not registered ftsd instances: `gpfts`.
async fn gpfts_holders(
    cfg: &Config,
    client: &mut Client,
    registered: &[MemberInfo],
    limit: Duration,
) -> anyhow::Result<Vec<String>> {
    let conf = crate::catalog::cloudberry::conf::CbdbEtcdConf::read(&cfg.catalog.cbdb_conf)
        .map_err(|e| anyhow::anyhow!("catalog.cbdb_conf: {e}"))?;
    let lock = CbdbKeys::new(&conf).ha_lock();
    let resp = bounded(
        limit,
        client.get(lock.as_str(), Some(GetOptions::new().with_prefix())),
    )
    .await?;
    Ok(resp
        .kvs()
        .iter()
        .filter(|kv| {
            let holder = String::from_utf8_lossy(kv.value());
            !registered.iter().any(|m| m.instance_id == holder)
        })
        .map(|kv| {
            format!(
                "{} is held by {:?}, not a registered ftsd instance (a gpfts?)",
                kv.key_str().unwrap_or("?"),
                String::from_utf8_lossy(kv.value())
            )
        })
        .collect())
}

/// One PROBE to every primary with our credentials: each answers, or says why not.
async fn probe_primaries(cfg: &Config, primaries: &[Segment]) -> Vec<CheckResult> {
    if primaries.is_empty() {
        return vec![CheckResult::fail(
            "primaries",
            "the catalog lists no primary segment",
        )];
    }
    let driver = std::sync::Arc::new(crate::driver::from_config(cfg));
    let timeout = cfg.probe.timeout;
    let mut probes = tokio::task::JoinSet::new();
    for (i, p) in primaries.iter().cloned().enumerate() {
        let driver = driver.clone();
        probes.spawn(async move {
            let name = format!("primary dbid={} content={}", p.dbid, p.content);
            let at = format!("{}:{}", p.address, p.port);
            let deadline = Instant::now() + timeout;
            let result = match driver.send(&p, MessageType::Probe, deadline).await {
                Ok(_) => CheckResult::ok(name, format!("{at} answered PROBE")),
                Err(e) => CheckResult::fail(
                    name,
                    format!("{at}: {}: {}", e.kind.as_str(), e.full_text()),
                ),
            };
            (i, result)
        });
    }
    let mut out: Vec<(usize, CheckResult)> = Vec::new();
    while let Some(joined) = probes.join_next().await {
        match joined {
            Ok(r) => out.push(r),
            Err(e) => out.push((usize::MAX, CheckResult::fail("primaries", e.to_string()))),
        }
    }
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

/// RLIMIT_NOFILE (soft) of this process, which a service started the same way inherits.
pub fn nofile_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and nothing else.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (rc == 0).then_some(limit.rlim_cur)
}

/// The open-file limit covers `probe.concurrency` sockets plus [`FD_MARGIN`].
pub fn open_files(concurrency: u32, limit: Option<u64>) -> CheckResult {
    let need = concurrency as u64 + FD_MARGIN;
    match limit {
        None => CheckResult::skip("open files", "cannot read RLIMIT_NOFILE"),
        Some(l) if l == libc::RLIM_INFINITY || l >= need => CheckResult::ok(
            "open files",
            format!("limit {l} >= probe.concurrency {concurrency} + {FD_MARGIN}"),
        ),
        Some(l) => CheckResult::fail(
            "open files",
            format!(
                "limit {l} < probe.concurrency {concurrency} + {FD_MARGIN}: raise LimitNOFILE (systemctl edit ftsd) or lower probe.concurrency"
            ),
        ),
    }
}

async fn bounded<T, E: std::fmt::Display>(
    limit: Duration,
    call: impl std::future::Future<Output = Result<T, E>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(limit, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(anyhow::anyhow!("{e}")),
        Err(_) => Err(anyhow::anyhow!("timed out after {limit:?}")),
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::preflight::Status;

    #[test]
    fn open_file_limit_table() {
        let cases = [
            (256, Some(8192), Status::Ok),
            (256, Some(512), Status::Ok),
            (256, Some(511), Status::Fail),
            (7936, Some(8192), Status::Ok),
            (8000, Some(8192), Status::Fail),
            (65536, Some(libc::RLIM_INFINITY), Status::Ok),
            (256, None, Status::Skip),
        ];
        for (concurrency, limit, want) in cases {
            let r = open_files(concurrency, limit);
            assert_eq!(r.status, want, "{concurrency} {limit:?}: {r:?}");
        }
    }

    fn member(id: &str, role: &str) -> MemberInfo {
        MemberInfo {
            instance_id: id.into(),
            host: "h".into(),
            api_address: "127.0.0.1:7470".into(),
            version: "0".into(),
            role: role.into(),
            epoch: None,
            started_at: SystemTime::UNIX_EPOCH,
            last_cycle_at: None,
            last_cycle_ms: None,
            last_cycle_result: None,
            leader_since: None,
        }
    }

    #[test]
    fn only_other_single_instances_count() {
        let registered = [
            member("a", "leader"),
            member("b", "follower"),
            member("c", SINGLE_ROLE),
            member("me", SINGLE_ROLE),
        ];
        let found = single_instances(&registered, "me");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("instance c"), "{found:?}");
        assert!(single_instances(&registered[..2], "me").is_empty());
    }
}
