//! The Cloudberry-mode cluster (`cbdb`) as the harness reads it: its configuration is the
//! Cloudberry external-FTS blob in the chaos etcd (written at start by `chaos-cbsim`, the
//! fts-segsim stand-in for Cloudberry, and then only by ftsd), and ftsd keeps its history and
//! evidence next to it under `…/ftsd/` (`docs/cloudberry.md`). The same rows the SQL
//! catalogs give the checker — configuration, history, evidence — are read from there, so
//! every invariant applies to the blob unchanged.

use std::time::Duration;

use etcd_client::{Client as Etcd, ConnectOptions, GetOptions};
use ftsd::catalog::cloudberry::blob;
use ftsd::catalog::cloudberry::conf::CbdbEtcdConf;
use ftsd::catalog::cloudberry::keys::CbdbKeys;
use ftsd::catalog::cloudberry::records::{EvidenceRecord, HistoryRecord};

use super::cluster::{ClusterError, ETCD};
use super::history::{EvidenceRow, HistoryRow, Row};

/// The catalog name of the Cloudberry-mode cluster (its ftsd `cluster`, its logs
/// `<host>-cbdb.log`).
pub const CBDB: &str = "cbdb";

/// fts-segsim's control API in `chaos-cbsim`.
pub const CBSIM_CONTROL: &str = "172.28.2.11:7070";

/// `chaos-tests/docker/etc/cbdb_etcd.conf`: the keys of the cluster.
pub fn keys() -> CbdbKeys {
    CbdbKeys::new(&CbdbEtcdConf {
        endpoints: ETCD.iter().map(|(_, ip)| format!("{ip}:2379")).collect(),
        account_id: "chaos".into(),
        cluster_id: CBDB.into(),
        namespace: "default".into(),
    })
}

fn etcd_err(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Etcd(e.to_string())
}

pub async fn connect() -> Result<Etcd, ClusterError> {
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
        .map_err(etcd_err)
}

/// The blob's rows (content ≥ 0) as the checker's rows.
pub fn rows_of(text: &str) -> Result<Vec<Row>, ClusterError> {
    let segments = blob::parse(text).map_err(|e| ClusterError::Catalog {
        db: CBDB.into(),
        message: format!("configuration blob: {e}"),
    })?;
    let mut rows: Vec<Row> = segments
        .into_iter()
        .filter(|s| s.content >= 0)
        .map(|s| Row {
            dbid: s.dbid,
            content: s.content,
            role: s.role.as_char(),
            status: s.status.as_char(),
            mode: s.mode.as_char(),
        })
        .collect();
    rows.sort_by_key(|r| r.dbid);
    Ok(rows)
}

fn records<T: serde::de::DeserializeOwned>(
    kvs: &[etcd_client::KeyValue],
) -> Result<Vec<T>, ClusterError> {
    kvs.iter()
        .map(|kv| {
            serde_json::from_slice(kv.value()).map_err(|e| ClusterError::Catalog {
                db: CBDB.into(),
                message: format!("{}: {e}", String::from_utf8_lossy(kv.key())),
            })
        })
        .collect()
}

/// The blob's rows and the newest history time, read at one etcd revision (a snapshot, as the
/// SQL baseline is), so history after this baseline replays exactly onto these rows. An absent
/// blob reads as no rows (the stand-in writes it when it starts).
pub async fn baseline() -> Result<(Vec<Row>, i64), ClusterError> {
    let k = keys();
    let mut etcd = connect().await?;
    let got = etcd.get(k.blob(), None).await.map_err(etcd_err)?;
    let revision = got.header().map_or(0, |h| h.revision());
    let rows = match got.kvs().first() {
        Some(kv) => rows_of(&String::from_utf8_lossy(kv.value()))?,
        None => Vec::new(),
    };
    let history = etcd
        .get(
            k.history_prefix(),
            Some(GetOptions::new().with_prefix().with_revision(revision)),
        )
        .await
        .map_err(etcd_err)?;
    let last = records::<HistoryRecord>(history.kvs())?
        .iter()
        .map(|h| h.time_us)
        .max()
        .unwrap_or(0);
    Ok((rows, last))
}

/// What a scenario left, read at one etcd revision: the blob's rows, the history (parsed, and
/// the texts that did not parse) and the evidence newer than `after_us`. One revision, so the
/// checker can require the blob to be exactly the baseline with the history applied.
pub async fn record(
    after_us: i64,
) -> Result<(Vec<Row>, Vec<HistoryRow>, Vec<String>, Vec<EvidenceRow>), ClusterError> {
    let k = keys();
    let mut etcd = connect().await?;
    let got = etcd.get(k.blob(), None).await.map_err(etcd_err)?;
    let revision = got.header().map_or(0, |h| h.revision());
    let rows = match got.kvs().first() {
        Some(kv) => rows_of(&String::from_utf8_lossy(kv.value()))?,
        None => Vec::new(),
    };
    let at = |prefix: String| {
        let mut etcd = etcd.clone();
        async move {
            etcd.get(
                prefix,
                Some(GetOptions::new().with_prefix().with_revision(revision)),
            )
            .await
            .map_err(etcd_err)
        }
    };
    let history = at(k.history_prefix()).await?;
    let evidence = at(k.evidence_prefix()).await?;
    let (history, unparsed) = history_rows(history.kvs(), after_us)?;
    Ok((
        rows,
        history,
        unparsed,
        evidence_rows(evidence.kvs(), after_us)?,
    ))
}

fn history_rows(
    kvs: &[etcd_client::KeyValue],
    after_us: i64,
) -> Result<(Vec<HistoryRow>, Vec<String>), ClusterError> {
    let mut parsed = Vec::new();
    let mut unparsed = Vec::new();
    for h in records::<HistoryRecord>(kvs)? {
        if h.time_us <= after_us {
            continue;
        }
        match HistoryRow::parse(h.time_us, h.dbid, &h.desc) {
            Some(row) => parsed.push(row),
            None => unparsed.push(format!("dbid {}: {}", h.dbid, h.desc)),
        }
    }
    Ok((parsed, unparsed))
}

fn evidence_rows(
    kvs: &[etcd_client::KeyValue],
    after_us: i64,
) -> Result<Vec<EvidenceRow>, ClusterError> {
    let mut rows: Vec<EvidenceRow> = records::<EvidenceRecord>(kvs)?
        .into_iter()
        .filter(|e| e.time_us > after_us)
        .map(|e| EvidenceRow {
            id: e.id,
            time_us: e.time_us,
            epoch: e.epoch,
            instance_id: e.instance_id,
            content: e.content,
            rule: e.rule,
            dbids: e.dbids,
        })
        .collect();
    rows.sort_by_key(|e| e.id);
    Ok(rows)
}

/// History records newer than `after_us`, in key (= time) order.
pub async fn history(after_us: i64) -> Result<(Vec<HistoryRow>, Vec<String>), ClusterError> {
    let mut etcd = connect().await?;
    let got = etcd
        .get(
            keys().history_prefix(),
            Some(GetOptions::new().with_prefix()),
        )
        .await
        .map_err(etcd_err)?;
    history_rows(got.kvs(), after_us)
}

/// Evidence records newer than `after_us`, by id.
pub async fn evidence(after_us: i64) -> Result<Vec<EvidenceRow>, ClusterError> {
    let mut etcd = connect().await?;
    let got = etcd
        .get(
            keys().evidence_prefix(),
            Some(GetOptions::new().with_prefix()),
        )
        .await
        .map_err(etcd_err)?;
    evidence_rows(got.kvs(), after_us)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_those_of_the_harness_cbdb_etcd_conf() {
        let conf = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docker/etc/cbdb_etcd.conf"
        ))
        .unwrap();
        let path = std::env::temp_dir().join(format!("fts-chaos-cbdb-{}.conf", std::process::id()));
        std::fs::write(&path, conf).unwrap();
        let read = CbdbEtcdConf::read(&path);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(CbdbKeys::new(&read.unwrap()), keys());
        assert_eq!(
            keys().blob(),
            "/cbdb/fts/default/chaos/cbdb/fts_dump_file_key"
        );
    }

    #[test]
    fn blob_rows_skip_content_minus_one_and_refuse_a_bad_line() {
        let text = "1 -1 p p n u 5432 cdw cdw /data/-1\n\
                    2 0 p p s u 40000 h 172.28.2.11 /data/0\n\
                    3 0 m m s u 40001 h 172.28.2.11 /data/1\n";
        let rows = rows_of(text).unwrap();
        assert_eq!(
            rows.iter()
                .map(|r| (r.dbid, r.role, r.status, r.mode))
                .collect::<Vec<_>>(),
            vec![(2, 'p', 'u', 's'), (3, 'm', 'u', 's')]
        );
        let err = rows_of("2 0 p p s u 40000 h\n").unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
    }
}
