//! The running chaos cluster as the harness sees it from the host: fixed addresses (see
//! `chaos-tests/docker-compose.yml`), catalog reads, the etcd members registry, fts-segsim's
//! control API and the ftsd logs.

use std::path::Path;
use std::time::Duration;

use etcd_client::{Client as Etcd, ConnectOptions, GetOptions};
use tokio_postgres::{Client, NoTls};

use super::cbdb;
use super::history::{CoordAlarm, Delivery, EvidenceRow, HistoryRow, Millis, Row, Term};

/// The catalog's address on catnet, a network of its own: cutting an FTS host off the
/// segments (segnet) leaves its catalog path intact.
pub const CATALOG: &str = "172.28.3.5";
pub const SEGSIM_CONTROL: &str = "172.28.2.10:7070";

/// The control API of the simulator behind the cluster `db`: fts-segsim for `segsim`, the
/// Cloudberry stand-in for `cbdb`.
pub fn sim_control(db: &str) -> &'static str {
    if db == cbdb::CBDB {
        cbdb::CBSIM_CONTROL
    } else {
        SEGSIM_CONTROL
    }
}

/// The simulator container behind the cluster `db`, and its log file in the logs folder.
pub fn sim_container(db: &str) -> (&'static str, &'static str) {
    if db == cbdb::CBDB {
        ("chaos-cbsim", "cbsim.log")
    } else {
        ("chaos-segsim", "segsim.log")
    }
}
pub const ETCD_PREFIX: &str = "/ftsd";

/// An etcd member: container name and address on etcdnet.
pub const ETCD: [(&str, &str); 3] = [
    ("chaos-etcd1", "172.28.1.11"),
    ("chaos-etcd2", "172.28.1.12"),
    ("chaos-etcd3", "172.28.1.13"),
];

/// An FTS host: container, instance id, etcdnet address, segnet address.
pub const FTSD: [(&str, &str, &str, &str); 3] = [
    ("chaos-ftsd1", "ftsd1", "172.28.1.21", "172.28.2.21"),
    ("chaos-ftsd2", "ftsd2", "172.28.1.22", "172.28.2.22"),
    ("chaos-ftsd3", "ftsd3", "172.28.1.23", "172.28.2.23"),
];

/// The containers on catnet (the catalog's network) and their addresses there: the catalog,
/// fts-segsim (it seeds the catalog when it starts) and the FTS hosts.
pub const CATNET_NODES: [(&str, &str); 5] = [
    ("chaos-catalog", "172.28.3.5"),
    ("chaos-segsim", "172.28.3.10"),
    ("chaos-ftsd1", "172.28.3.21"),
    ("chaos-ftsd2", "172.28.3.22"),
    ("chaos-ftsd3", "172.28.3.23"),
];

/// A container and its address.
pub type Node = (&'static str, &'static str);

/// A real PostgreSQL pair: content, (primary container, address), (mirror container, address).
pub const PG_PAIRS: [(i16, Node, Node); 2] = [
    (
        0,
        ("chaos-pg1p", "172.28.2.31"),
        ("chaos-pg1m", "172.28.2.32"),
    ),
    (
        1,
        ("chaos-pg2p", "172.28.2.33"),
        ("chaos-pg2m", "172.28.2.34"),
    ),
];

/// The container and address of `dbid` in the pgpairs layout (primary dbid 2+c, mirror dbid
/// 2+c+pairs, as `fts-chaos` seeds the catalog).
pub fn pg_container(dbid: i16) -> Option<(&'static str, &'static str)> {
    let n = PG_PAIRS.len() as i16;
    PG_PAIRS.iter().find_map(|(content, p, m)| {
        if dbid == content + 2 {
            Some(*p)
        } else if dbid == content + 2 + n {
            Some(*m)
        } else {
            None
        }
    })
}

pub fn ftsd_container(instance: &str) -> Option<&'static str> {
    FTSD.iter().find(|f| f.1 == instance).map(|f| f.0)
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("catalog {db}: {message}")]
    Catalog { db: String, message: String },
    #[error("etcd: {0}")]
    Etcd(String),
    #[error("{0}")]
    File(String),
}

fn pg_err(db: &str) -> impl Fn(tokio_postgres::Error) -> ClusterError + '_ {
    move |e| {
        let mut message = e.to_string();
        if let Some(s) = std::error::Error::source(&e) {
            message = format!("{message}: {s}");
        }
        ClusterError::Catalog {
            db: db.to_string(),
            message,
        }
    }
}

/// A connection to a PostgreSQL server of the cluster (trust authentication, user postgres).
pub async fn connect(host: &str, db: &str) -> Result<Client, ClusterError> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(host)
        .port(5432)
        .user("postgres")
        .dbname(db)
        .connect_timeout(Duration::from_secs(2));
    let (client, conn) = config.connect(NoTls).await.map_err(pg_err(db))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// The catalog's configuration rows (content ≥ 0) and the newest history time, read in one
/// snapshot, so history after this baseline replays exactly onto these rows. `cbdb` reads
/// the Cloudberry blob and ftsd's records in etcd instead ([`cbdb`]).
pub async fn baseline(db: &str) -> Result<(Vec<Row>, i64), ClusterError> {
    if db == cbdb::CBDB {
        return cbdb::baseline().await;
    }
    let mut c = connect(CATALOG, db).await?;
    let tx = c
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .start()
        .await
        .map_err(pg_err(db))?;
    let rows = tx
        .query(
            "SELECT dbid, content, role::text, status::text, mode::text
               FROM gp_segment_configuration WHERE content >= 0 ORDER BY dbid",
            &[],
        )
        .await
        .map_err(pg_err(db))?;
    let last: i64 = tx
        .query_one(
            r#"SELECT coalesce((extract(epoch FROM max("time")) * 1000000)::int8, 0)
                 FROM gp_configuration_history"#,
            &[],
        )
        .await
        .map_err(pg_err(db))?
        .get(0);
    tx.commit().await.map_err(pg_err(db))?;
    let ch = |s: String| s.chars().next().unwrap_or('?');
    Ok((
        rows.into_iter()
            .map(|r| Row {
                dbid: r.get(0),
                content: r.get(1),
                role: ch(r.get(2)),
                status: ch(r.get(3)),
                mode: ch(r.get(4)),
            })
            .collect(),
        last,
    ))
}

/// Current rows (content ≥ 0).
pub async fn rows(db: &str) -> Result<Vec<Row>, ClusterError> {
    baseline(db).await.map(|(r, _)| r)
}

/// History rows newer than `after_us` (parsed; unparsable texts returned separately).
pub async fn history(
    db: &str,
    after_us: i64,
) -> Result<(Vec<HistoryRow>, Vec<String>), ClusterError> {
    if db == cbdb::CBDB {
        return cbdb::history(after_us).await;
    }
    let c = connect(CATALOG, db).await?;
    let rows = c
        .query(
            r#"SELECT (extract(epoch FROM "time") * 1000000)::int8, dbid, coalesce("desc", '')
                 FROM gp_configuration_history
                WHERE (extract(epoch FROM "time") * 1000000)::int8 > $1
                ORDER BY "time", ctid"#,
            &[&after_us],
        )
        .await
        .map_err(pg_err(db))?;
    let mut parsed = Vec::new();
    let mut unparsed = Vec::new();
    for r in rows {
        let (t, dbid, desc): (i64, i16, String) = (r.get(0), r.get(1), r.get(2));
        match HistoryRow::parse(t, dbid, &desc) {
            Some(h) => parsed.push(h),
            None => unparsed.push(format!("dbid {dbid}: {desc}")),
        }
    }
    Ok((parsed, unparsed))
}

pub async fn evidence(db: &str, after_us: i64) -> Result<Vec<EvidenceRow>, ClusterError> {
    if db == cbdb::CBDB {
        return cbdb::evidence(after_us).await;
    }
    let c = connect(CATALOG, db).await?;
    let rows = c
        .query(
            r#"SELECT id, (extract(epoch FROM "time") * 1000000)::int8, epoch, instance_id,
                      content, rule, dbids
                 FROM fts_evidence
                WHERE (extract(epoch FROM "time") * 1000000)::int8 > $1 ORDER BY id"#,
            &[&after_us],
        )
        .await
        .map_err(pg_err(db))?;
    Ok(rows
        .into_iter()
        .map(|r| EvidenceRow {
            id: r.get(0),
            time_us: r.get(1),
            epoch: r.get(2),
            instance_id: r.get(3),
            content: r.get(4),
            rule: r.get(5),
            dbids: r.get(6),
        })
        .collect())
}

/// The leader of `cluster` per the members registry: (instance id, epoch).
pub async fn leader(cluster: &str) -> Result<Option<(String, i64)>, ClusterError> {
    let endpoints: Vec<String> = ETCD
        .iter()
        .map(|(_, ip)| format!("http://{ip}:2379"))
        .collect();
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        .with_timeout(Duration::from_secs(2))
        .with_require_leader(true);
    let mut etcd = Etcd::connect(endpoints, Some(options))
        .await
        .map_err(|e| ClusterError::Etcd(e.to_string()))?;
    let prefix = ftsd::election::keys::members_prefix(ETCD_PREFIX, cluster);
    let resp = etcd
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await
        .map_err(|e| ClusterError::Etcd(e.to_string()))?;
    for kv in resp.kvs() {
        if let Ok(m) = serde_json::from_slice::<ftsd::election::members::MemberInfo>(kv.value()) {
            if m.role == "leader" {
                return Ok(Some((m.instance_id, m.epoch.unwrap_or(0))));
            }
        }
    }
    Ok(None)
}

/// The action messages (PROMOTE, SYNCREP_OFF) in fts-segsim's JSON log (`<dir>/segsim.log`)
/// that landed at or after `from`, each with the FTS host that sent it (by segnet address;
/// an unknown address is kept as is, so the checker cannot match it to a term).
pub fn read_deliveries(dir: &Path, from: Millis) -> Vec<Delivery> {
    read_deliveries_in(dir, "segsim.log", from)
}

/// [`read_deliveries`] from the simulator log `file` (`cbsim.log` for the Cloudberry stand-in).
pub fn read_deliveries_in(dir: &Path, file: &str, from: Millis) -> Vec<Delivery> {
    let Ok(text) = std::fs::read_to_string(dir.join(file)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let Some(f) = v.get("fields") else { continue };
        if f.get("message").and_then(|m| m.as_str()) != Some("received an action message") {
            continue;
        }
        let at = v.get("timestamp").and_then(parse_ts).unwrap_or(0);
        if at < from {
            continue;
        }
        let peer = f.get("peer").and_then(|p| p.as_str()).unwrap_or("");
        let instance = FTSD
            .iter()
            .find(|h| h.3 == peer)
            .map_or(peer.to_string(), |h| h.1.to_string());
        out.push(Delivery {
            at,
            instance,
            kind: f
                .get("kind")
                .and_then(|k| k.as_str())
                .unwrap_or("")
                .to_string(),
            dbid: f.get("dbid").and_then(as_i64).unwrap_or(0) as i16,
        });
    }
    out
}

fn parse_ts(v: &serde_json::Value) -> Option<Millis> {
    let t = humantime::parse_rfc3339_weak(v.as_str()?.trim_end_matches('Z')).ok()?;
    Some(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as i64)
}

fn as_i64(v: &serde_json::Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_str()?.parse().ok())
}

/// The file (in the logs folder) listing when etcd was rebuilt empty, one time (ms) a line.
const ETCD_REBUILDS: &str = "etcd-rebuilds";

/// Records that etcd was rebuilt empty at `at` (the members were killed then; no term can
/// start between the kill and the new cluster).
pub fn record_etcd_rebuild(dir: &Path, at: Millis) -> Result<(), ClusterError> {
    use std::io::Write;
    let path = dir.join(ETCD_REBUILDS);
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| writeln!(f, "{at}"))
        .map_err(|e| ClusterError::File(format!("{}: {e}", path.display())))
}

/// When etcd was rebuilt empty during this run (sorted; empty when it never was). A line that
/// does not parse is an error naming the file: dropping it would merge two incarnations.
pub fn etcd_rebuilds(dir: &Path) -> Result<Vec<Millis>, ClusterError> {
    let path = dir.join(ETCD_REBUILDS);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ClusterError::File(format!("{}: {e}", path.display()))),
    };
    let mut at = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.trim()
                .parse::<Millis>()
                .map_err(|e| ClusterError::File(format!("{}: bad line {l:?}: {e}", path.display())))
        })
        .collect::<Result<Vec<_>, _>>()?;
    at.sort_unstable();
    Ok(at)
}

/// What the ftsd logs of one cluster say: terms (took office) and configurations the FTS
/// hosts refused to start (`chaos-ftsd` writes those).
#[derive(Debug, Default, Clone)]
pub struct Logs {
    pub terms: Vec<Term>,
    /// `leader observed` lines (by any instance, the leader itself included): the new leader's
    /// engine may act before its own `took office` line is written.
    pub observed: Vec<Term>,
    pub rejected: Vec<String>,
    /// Log lines about fencing and stepping down, kept for the report.
    pub notable: Vec<(Millis, String, String)>,
    /// Coordinator alarms raised (an `alarm` field on a line other than the one clearing it).
    pub coord_alarms: Vec<CoordAlarm>,
}

/// Reads `<dir>/<host>-<cluster>.log` of every FTS host.
pub fn read_logs(dir: &Path, cluster: &str) -> Logs {
    let mut logs = Logs::default();
    for (_, instance, _, _) in FTSD {
        let path = dir.join(format!("{instance}-{cluster}.log"));
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let first_term = logs.terms.len();
        // (time, etcd revision, catalog epoch) of each `epoch recorded in the catalog` line.
        let mut recorded: Vec<(Millis, i64, i64)> = Vec::new();
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if v.get("chaos").is_some() {
                let err = v.get("error").and_then(|e| e.as_str()).unwrap_or("");
                logs.rejected.push(format!("{instance}: {}", err.trim()));
                continue;
            }
            let msg = v.get("message").and_then(|m| m.as_str()).unwrap_or("");
            let at = v.get("timestamp").and_then(parse_ts).unwrap_or(0);
            if let Some(rule) = v.get("alarm").and_then(|a| a.as_str()) {
                if msg != "coordinator alarm cleared" {
                    logs.coord_alarms.push(CoordAlarm {
                        at,
                        instance: instance.to_string(),
                        rule: rule.to_string(),
                    });
                    logs.notable
                        .push((at, instance.to_string(), format!("alarm {rule}: {msg}")));
                }
                continue;
            }
            if msg == "took office as leader" {
                if let Some(epoch) = v.get("epoch").and_then(as_i64) {
                    logs.terms.push(Term {
                        instance: instance.to_string(),
                        epoch,
                        at,
                    });
                }
            } else if msg == "epoch recorded in the catalog" {
                let revision = v.get("revision").and_then(as_i64);
                if let (Some(revision), Some(epoch)) = (revision, v.get("epoch").and_then(as_i64)) {
                    recorded.push((at, revision, epoch));
                }
            } else if msg == "leader observed" {
                let leader = v.get("leader").and_then(|l| l.as_str());
                if let (Some(leader), Some(epoch)) = (leader, v.get("epoch").and_then(as_i64)) {
                    logs.observed.push(Term {
                        instance: leader.to_string(),
                        epoch,
                        at,
                    });
                }
            } else if msg.contains("fenced")
                || msg.contains("stepped down")
                || msg.contains("terminated")
            {
                logs.notable
                    .push((at, instance.to_string(), msg.to_string()));
            }
        }
        // Across an etcd rebuild the catalog epoch is generation × 2^44 + revision while
        // `took office` names the etcd revision, and the two lines come from different tasks in
        // either order: a term takes the epoch recorded for its revision nearest in time (a
        // revision recurs only after another rebuild), so it carries what its writes are
        // fenced with.
        for t in &mut logs.terms[first_term..] {
            if let Some(&(_, _, epoch)) = recorded
                .iter()
                .filter(|(at, revision, _)| *revision == t.epoch && (at - t.at).abs() < 10_000)
                .min_by_key(|(at, ..)| (at - t.at).abs())
            {
                t.epoch = epoch;
            }
        }
    }
    logs.terms.sort_by_key(|t| t.at);
    logs.observed.sort_by_key(|t| t.at);
    logs.notable.sort();
    logs.coord_alarms.sort_by_key(|a| a.at);
    logs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_carry_the_recorded_epoch_and_deliveries_their_sender() {
        let dir = std::env::temp_dir().join(format!("fts-chaos-logs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("ftsd2-segsim.log"),
            concat!(
                r#"{"timestamp":"2026-11-26T10:23:06.645468Z","message":"took office as leader","epoch":6}"#, "\n",
                r#"{"timestamp":"2026-11-26T10:23:06.711376Z","message":"epoch recorded in the catalog","epoch":"17592186044422","revision":6}"#, "\n",
                r#"{"timestamp":"2026-11-26T10:40:00.100000Z","message":"epoch recorded in the catalog","epoch":"35184372088838","revision":6}"#, "\n",
                r#"{"timestamp":"2026-11-26T10:40:00.110000Z","message":"took office as leader","epoch":6}"#, "\n",
                r#"{"timestamp":"2026-11-26T10:23:06.600000Z","message":"leader observed","leader":"ftsd2","epoch":6}"#, "\n",
                r#"{"timestamp":"2026-11-26T10:24:00.000000Z","level":"ERROR","message":"2 hosts hold the coordinator VIP (exactly 1 expected)","content":-1,"alarm":"vip_holders"}"#, "\n",
                r#"{"timestamp":"2026-11-26T10:24:05.000000Z","level":"INFO","message":"coordinator alarm cleared","content":-1,"alarm":"vip_holders"}"#, "\n",
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("segsim.log"),
            concat!(
                r#"{"timestamp":"2026-11-26T10:23:07.000000Z","fields":{"message":"received an action message","dbid":9,"kind":"PROMOTE","peer":"172.28.2.22"}}"#, "\n",
                r#"{"timestamp":"2026-11-26T10:23:08.000000Z","fields":{"message":"received an action message","dbid":9,"kind":"PROMOTE","peer":"10.0.0.9"}}"#, "\n",
            ),
        )
        .unwrap();
        let logs = read_logs(&dir, "segsim");
        assert_eq!(logs.terms.len(), 2);
        assert_eq!(logs.terms[0].epoch, 17592186044422);
        assert_eq!(
            logs.terms[1].epoch, 35184372088838,
            "recorded before took office, after a second rebuild"
        );
        assert_eq!(logs.observed.len(), 1);
        assert_eq!(
            logs.coord_alarms.len(),
            1,
            "raised once, the clearing line is not one"
        );
        assert_eq!(logs.coord_alarms[0].rule, "vip_holders");
        let d = read_deliveries(&dir, 0);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(
            (d[0].instance.as_str(), d[0].kind.as_str(), d[0].dbid),
            ("ftsd2", "PROMOTE", 9)
        );
        assert_eq!(d[1].instance, "10.0.0.9", "an unknown sender stays unknown");
    }
}
