//! The write workload on the real PostgreSQL pairs: per content, a task keeps inserting
//! numbered rows through the content's current primary (looked up in the `pgpairs` catalog)
//! and records every acknowledged commit, so a lost acknowledged write is found at the end.
//!
//! A commit counts as acknowledged only when PostgreSQL answered it without a notice: a
//! synchronous-replication wait cancelled by the client would commit locally with a WARNING, so
//! the workload never cancels; it abandons a slow commit by dropping the connection (no ack).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_postgres::NoTls;

use super::cluster::{self, PG_PAIRS};
use super::history::{now_ms, Ack, Survivors};

const TABLE: &str = "CREATE TABLE IF NOT EXISTS chaos_writes (seq bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())";

pub struct Workload {
    stop: Arc<AtomicBool>,
    pub acks: Arc<Mutex<Vec<Ack>>>,
    pub errors: Arc<Mutex<u64>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// The catalog's primary of `content` and whether its pair is in sync: (dbid, address, in_sync).
async fn primary_of(content: i16) -> Option<(i16, String, bool)> {
    let c = cluster::connect(cluster::CATALOG, "pgpairs").await.ok()?;
    let row = c
        .query_opt(
            "SELECT dbid, address, mode::text = 's' FROM gp_segment_configuration
              WHERE content = $1 AND role = 'p' AND status = 'u'",
            &[&content],
        )
        .await
        .ok()??;
    Some((row.get(0), row.get(1), row.get(2)))
}

async fn connect(addr: &str) -> Option<tokio_postgres::Client> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(addr)
        .port(5432)
        .user("postgres")
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(2));
    let (client, conn) = config.connect(NoTls).await.ok()?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Some(client)
}

/// Whether the catalog has `content`'s pair in sync with `dbid` as its primary.
async fn in_sync(catalog: &tokio_postgres::Client, content: i16, dbid: i16) -> bool {
    catalog
        .query_opt(
            "SELECT 1 FROM gp_segment_configuration
              WHERE content = $1 AND dbid = $2 AND role = 'p' AND status = 'u' AND mode = 's'",
            &[&content, &dbid],
        )
        .await
        .map(|r| r.is_some())
        .unwrap_or(false)
}

async fn writer(
    content: i16,
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<Ack>>>,
    errors: Arc<Mutex<u64>>,
) {
    let mut seq: i64 = 0;
    let mut session: Option<(i16, tokio_postgres::Client, tokio_postgres::Client)> = None;
    while !stop.load(Ordering::Relaxed) {
        if session.is_none() {
            if let (Some((dbid, addr, _)), Ok(catalog)) = (
                primary_of(content).await,
                cluster::connect(cluster::CATALOG, "pgpairs").await,
            ) {
                if let Some(c) = connect(&addr).await {
                    if c.batch_execute(TABLE).await.is_ok() {
                        session = Some((dbid, c, catalog));
                    }
                }
            }
            if session.is_none() {
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
        }
        let Some((dbid, client, catalog)) = session.as_ref() else {
            continue;
        };
        seq += 1;
        // Promised to survive only if the pair was in sync before and after the commit (the
        // FTS turns synchronous replication off only after recording that in the catalog).
        let before = in_sync(catalog, content, *dbid).await;
        let insert = tokio::time::timeout(
            Duration::from_secs(3),
            client.execute("INSERT INTO chaos_writes (seq) VALUES ($1)", &[&seq]),
        )
        .await;
        match insert {
            Ok(Ok(1)) => {
                let after = in_sync(catalog, content, *dbid).await;
                acks.lock().unwrap_or_else(|e| e.into_inner()).push(Ack {
                    content,
                    seq,
                    at: now_ms(),
                    dbid: *dbid,
                    in_sync: before && after,
                });
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            _ => {
                *errors.lock().unwrap_or_else(|e| e.into_inner()) += 1;
                session = None;
            }
        }
    }
}

impl Workload {
    pub fn start() -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(0));
        let tasks = PG_PAIRS
            .iter()
            .map(|(content, ..)| {
                tokio::spawn(writer(*content, stop.clone(), acks.clone(), errors.clone()))
            })
            .collect();
        Workload {
            stop,
            acks,
            errors,
            tasks,
        }
    }

    /// Writes that got no acknowledgement (timeouts, lost connections) so far.
    pub fn errors(&self) -> u64 {
        *self.errors.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops the writers, then reads every content's rows from its current primary.
    pub async fn finish(self) -> (Vec<Ack>, Option<Vec<Survivors>>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        let acks = std::mem::take(&mut *self.acks.lock().unwrap_or_else(|e| e.into_inner()));
        let mut survivors = Vec::new();
        for (content, ..) in PG_PAIRS {
            let Some((_, addr, _)) = primary_of(content).await else {
                return (acks, None);
            };
            let Some(c) = connect(&addr).await else {
                return (acks, None);
            };
            let Ok(rows) = c
                .query("SELECT seq FROM chaos_writes ORDER BY seq", &[])
                .await
            else {
                return (acks, None);
            };
            survivors.push(Survivors {
                content,
                seqs: rows.iter().map(|r| r.get(0)).collect(),
            });
        }
        (acks, Some(survivors))
    }
}
