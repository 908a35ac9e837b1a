//! The SQL catalog backend: `gp_segment_configuration` and `gp_configuration_history` in a
//! PostgreSQL or Greenplum coordinator database, fenced by the `fts_epoch` row.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio_postgres::{Client, Config};

use super::{schema, Catalog, CatalogError, EtcdRevision, Transition};
use crate::config::{CatalogConfig, ConnString};
use crate::core::epoch::{compose, generation, plan_claim, ClaimPlan};
use crate::model::{Epoch, Mode, Role, Segment, SegmentConfig, Status, UnreadableRow};
use crate::secret::Secret;
use crate::tls::postgres::PgTls;

/// Connection settings for the SQL catalog (the `[catalog]` table of the configuration).
#[derive(Debug, Clone)]
pub struct PgCatalogConfig {
    /// libpq-style URL or key/value string.
    pub url: ConnString,
    /// Overrides any password in `url` when set.
    pub password: Option<Secret>,
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
    pub lock_timeout: Duration,
    pub idle_in_transaction_timeout: Duration,
    /// Client-side bound on one call of the [`Catalog`] trait.
    pub call_timeout: Duration,
    /// TCP keepalive idle time and interval.
    pub keepalive: Duration,
    /// `catalog.sslmode` and its files, read.
    pub tls: PgTls,
}

impl PgCatalogConfig {
    /// The configuration's defaults for every setting but the URL.
    pub fn new(url: impl Into<String>) -> Self {
        PgCatalogConfig::from(&CatalogConfig {
            url: ConnString::new(url),
            ..CatalogConfig::default()
        })
    }

    /// The tokio-postgres settings of a catalog session. The server-side limits go into the
    /// startup packet's `options`, after whatever `options` the operator put in the URL, so they
    /// bound the very first query and operators can still add settings of their own (a later
    /// `-c` for the same name wins, so ours do).
    pub fn session_config(&self) -> Result<Config, CatalogError> {
        let mut cfg: Config = self.url.expose().parse().map_err(|e| {
            CatalogError::Unavailable(format!("invalid catalog url {}: {e}", self.url))
        })?;
        if let Some(pw) = &self.password {
            cfg.password(pw.expose());
        }
        cfg.connect_timeout(self.connect_timeout);
        if cfg.get_application_name().is_none() {
            cfg.application_name("ftsd");
        }
        cfg.keepalives(true)
            .keepalives_idle(self.keepalive)
            .keepalives_interval(self.keepalive)
            .keepalives_retries(3)
            .tcp_user_timeout(self.call_timeout);
        let ours = format!(
            "-c statement_timeout={} -c lock_timeout={} -c idle_in_transaction_session_timeout={}",
            self.statement_timeout.as_millis(),
            self.lock_timeout.as_millis(),
            self.idle_in_transaction_timeout.as_millis(),
        );
        let options = match cfg.get_options() {
            Some(user) if !user.trim().is_empty() => format!("{user} {ours}"),
            _ => ours,
        };
        cfg.options(options);
        self.tls.apply(&mut cfg);
        Ok(cfg)
    }
}

impl From<&CatalogConfig> for PgCatalogConfig {
    fn from(c: &CatalogConfig) -> Self {
        PgCatalogConfig {
            url: c.url.clone(),
            password: c.password.clone(),
            connect_timeout: c.connect_timeout,
            statement_timeout: c.statement_timeout,
            lock_timeout: c.lock_timeout,
            idle_in_transaction_timeout: c.idle_in_transaction_timeout,
            call_timeout: c.call_timeout,
            keepalive: c.keepalive,
            tls: PgTls::or_fail_closed(&c.tls, "catalog"),
        }
    }
}

/// The SQL backend. One connection, re-established after errors; transactions are serialized,
/// which also serializes this instance's writes per pair.
pub struct PgCatalog {
    config: PgCatalogConfig,
    client: Mutex<Option<Client>>,
}

/// tokio-postgres prints a server error as just "db error"; the server's message and SQLSTATE
/// (e.g. a lock timeout, 55P03) are what an operator needs.
fn unavailable(what: &str, e: tokio_postgres::Error) -> CatalogError {
    match e.as_db_error() {
        Some(db) => CatalogError::Unavailable(format!(
            "{what}: {} (SQLSTATE {})",
            db.message(),
            db.code().code()
        )),
        None => CatalogError::Unavailable(format!("{what}: {e}")),
    }
}

/// Work done on the catalog connection inside one call.
type ClientWork<'c, T> = Pin<Box<dyn Future<Output = Result<T, CatalogError>> + Send + 'c>>;

impl PgCatalog {
    pub fn new(config: PgCatalogConfig) -> Self {
        PgCatalog {
            config,
            client: Mutex::new(None),
        }
    }

    /// Opens a fresh connection.
    pub async fn connect(&self) -> Result<Client, CatalogError> {
        self.connect_with_options(None).await
    }

    /// `ftsd catalog init`: on plain PostgreSQL creates every missing table; on a Greenplum /
    /// Cloudberry coordinator creates only ftsd's own tables, over a utility-mode session so
    /// they live on the coordinator alone, then runs the startup schema check on an ordinary
    /// session, which refuses them if they ended up distributed anyway.
    pub async fn init_schema(&self) -> Result<Vec<schema::TableAction>, CatalogError> {
        let mut client = self.connect().await?;
        match schema::detect(&client).await? {
            schema::Flavor::PostgreSql => schema::init(&mut client).await,
            schema::Flavor::Greenplum { server_version_num } => {
                let option = schema::utility_mode_option(server_version_num);
                let mut utility = self.connect_with_options(Some(option)).await.map_err(|e| {
                    CatalogError::Unavailable(format!(
                        "the catalog is a Greenplum/Cloudberry coordinator, whose ftsd tables \
                         must be created in a utility-mode session ({option}): {e}"
                    ))
                })?;
                let actions = schema::init_tables(&mut utility, schema::is_ftsd_own).await?;
                schema::verify(&client).await?;
                Ok(actions)
            }
        }
    }

    async fn connect_with_options(&self, extra: Option<&str>) -> Result<Client, CatalogError> {
        let url = &self.config.url;
        let mut session = self.config.session_config()?;
        if let Some(extra) = extra {
            let options = format!("{} {extra}", session.get_options().unwrap_or_default());
            session.options(options.trim_start());
        }
        let connect = session.connect(self.config.tls.connector());
        let (client, conn) = tokio::time::timeout(self.config.connect_timeout, connect)
            .await
            .map_err(|_| {
                CatalogError::Unavailable(format!(
                    "connecting to {url}: timed out after {:?}",
                    self.config.connect_timeout
                ))
            })?
            .map_err(|e| {
                // The server's message and the TLS reason live in the source chain.
                let why = crate::error_chain::one_line(&e);
                CatalogError::Unavailable(format!("connecting to {url}: {why}"))
            })?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "catalog connection ended");
            }
        });
        Ok(client)
    }

    /// Runs `f` on a live connection, reconnecting first if the last one broke, all within
    /// `call_timeout`. A connection that fails or times out mid-operation is dropped so the next
    /// call starts clean (dropping an open transaction rolls it back).
    pub(crate) async fn with_client<T, F>(&self, f: F) -> Result<T, CatalogError>
    where
        F: for<'c> FnOnce(&'c mut Client) -> ClientWork<'c, T>,
    {
        let mut guard = self.client.lock().await;
        let call = async {
            if guard.as_ref().is_none_or(|c| c.is_closed()) {
                *guard = None;
                let client = self.connect().await?;
                schema::verify(&client).await?;
                *guard = Some(client);
            }
            let client = guard.as_mut().expect("connection was just established");
            let result = f(client).await;
            Ok::<_, CatalogError>((result, client.is_closed()))
        };
        let (result, broken) = match tokio::time::timeout(self.config.call_timeout, call).await {
            // Connecting or the schema check failed: there is no connection to drop.
            Ok(Err(e)) => (Err(e), false),
            Ok(Ok((Ok(v), broken))) => (Ok(v), broken),
            Ok(Ok((Err(e), broken))) => {
                let broken = broken || matches!(e, CatalogError::Unavailable(_));
                (Err(e), broken)
            }
            Err(_) => (
                Err(CatalogError::Unavailable(format!(
                    "no answer from the catalog within {:?} (catalog.call_timeout)",
                    self.config.call_timeout
                ))),
                true,
            ),
        };
        if broken {
            *guard = None;
        }
        result
    }
}

fn parse_char<T>(
    dbid: i16,
    column: &str,
    value: &str,
    parse: fn(char) -> Result<T, crate::model::BadCatalogChar>,
) -> Result<T, CatalogError> {
    let mut chars = value.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => parse(c).map_err(|e| {
            CatalogError::Corrupt(format!("gp_segment_configuration dbid={dbid}: {e}"))
        }),
        _ => Err(CatalogError::Corrupt(format!(
            "gp_segment_configuration dbid={dbid}: {column} is {value:?}, expected one character"
        ))),
    }
}

/// One row, or why it cannot be read. dbid and content are the table's non-null key columns
/// (checked by the schema verification), so a bad row can always be named and its content
/// refused alone.
fn segment_from_row(row: &tokio_postgres::Row) -> Result<Segment, UnreadableRow> {
    let dbid: i16 = row.get(0);
    let content: i16 = row.get(1);
    let read = || -> Result<Segment, CatalogError> {
        let text = |i: usize, column: &str| -> Result<String, CatalogError> {
            row.try_get::<_, Option<String>>(i)
                .map_err(|e| CatalogError::Corrupt(format!("dbid={dbid}: {column}: {e}")))?
                .ok_or_else(|| {
                    CatalogError::Corrupt(format!(
                        "gp_segment_configuration dbid={dbid}: {column} is NULL"
                    ))
                })
        };
        Ok(Segment {
            dbid,
            content,
            role: parse_char(dbid, "role", &text(2, "role")?, Role::from_char)?,
            preferred_role: parse_char(
                dbid,
                "preferred_role",
                &text(3, "preferred_role")?,
                Role::from_char,
            )?,
            mode: parse_char(dbid, "mode", &text(4, "mode")?, Mode::from_char)?,
            status: parse_char(dbid, "status", &text(5, "status")?, Status::from_char)?,
            port: row
                .try_get::<_, Option<i32>>(6)
                .ok()
                .flatten()
                .ok_or_else(|| {
                    CatalogError::Corrupt(format!(
                        "gp_segment_configuration dbid={dbid}: port is NULL"
                    ))
                })?,
            hostname: text(7, "hostname")?,
            address: text(8, "address")?,
            datadir: text(9, "datadir")?,
        })
    };
    read().map_err(|e| UnreadableRow {
        dbid,
        content,
        error: e.to_string(),
    })
}

const SELECT_CONFIG: &str = "SELECT dbid, content, role::text, preferred_role::text, mode::text, \
     status::text, port, hostname, address, datadir FROM gp_segment_configuration ORDER BY content, dbid";

const FENCE: &str = "UPDATE fts_epoch SET epoch = $1, instance_id = $2, updated_at = now() \
     WHERE id = 1 AND epoch <= $1";

/// Terminates the sessions of *this* application and role (other than the caller's) that hold
/// a lock on `fts_epoch`. Only a transaction that has run the fence `UPDATE` and not yet
/// committed holds one (`RowExclusiveLock`, released at commit or rollback), and outside a
/// stalled or deposed leader such a transaction lasts milliseconds. The row lock itself is not
/// listed in `pg_locks` (it lives in the tuple), the table-level lock its holder takes is.
const TERMINATE_FENCE_HOLDERS: &str = "SELECT l.pid, pg_terminate_backend(l.pid) \
     FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
     WHERE l.locktype = 'relation' AND l.relation = 'fts_epoch'::regclass \
       AND l.mode = 'RowExclusiveLock' AND l.granted AND l.pid <> pg_backend_pid() \
       AND a.usename = current_user \
       AND a.application_name = current_setting('application_name')";

/// etcd's current revision for a claim; an office etcd cannot confirm is retried later.
async fn etcd_now(etcd: &impl EtcdRevision) -> Result<Option<i64>, CatalogError> {
    match etcd.current().await {
        None => Ok(None),
        Some(Ok(revision)) => Ok(Some(revision)),
        Some(Err(why)) => Err(CatalogError::Unavailable(format!(
            "cannot confirm the office in etcd: {why}"
        ))),
    }
}

async fn current_epoch(client: &impl tokio_postgres::GenericClient) -> Epoch {
    match client
        .query_one("SELECT epoch FROM fts_epoch WHERE id = 1", &[])
        .await
    {
        Ok(row) => Epoch(row.get(0)),
        Err(_) => Epoch(-1),
    }
}

impl Catalog for PgCatalog {
    async fn load(&self) -> Result<SegmentConfig, CatalogError> {
        self.with_client(|client| {
            Box::pin(async move {
                let rows = client
                    .query(SELECT_CONFIG, &[])
                    .await
                    .map_err(|e| unavailable("reading gp_segment_configuration", e))?;
                let mut segments = Vec::with_capacity(rows.len());
                let mut unreadable = Vec::new();
                for row in &rows {
                    match segment_from_row(row) {
                        Ok(s) => segments.push(s),
                        Err(bad) => {
                            tracing::error!(
                                dbid = bad.dbid,
                                content = bad.content,
                                error = %bad.error,
                                "unreadable gp_segment_configuration row: its content is left alone"
                            );
                            unreadable.push(bad);
                        }
                    }
                }
                Ok(SegmentConfig::with_unreadable(segments, unreadable))
            })
        })
        .await
    }

    /// A claim that can win (the committed epoch is not newer than ours) first terminates any
    /// other ftsd session holding the fence lock: a former leader stopped between its fence
    /// `UPDATE` and `COMMIT` (SIGSTOP, VM stall, half-open connection) would otherwise block
    /// this claim and every transition for as long as it stays stopped. Its transaction rolls
    /// back; it wrote nothing. Callers claim only with their own authority established.
    async fn claim_epoch<E: EtcdRevision>(
        &self,
        revision: i64,
        instance_id: &str,
        etcd: E,
    ) -> Result<Epoch, CatalogError> {
        let instance_id = instance_id.to_string();
        self.with_client(move |client| {
            Box::pin(async move {
                // A plain read never waits for the row lock; it sees the last committed epoch.
                let committed = current_epoch(&*client).await;
                let now = etcd_now(&etcd).await?;
                if let ClaimPlan::Fenced = plan_claim(committed, revision, now) {
                    return Err(CatalogError::Fenced {
                        mine: compose(generation(committed), revision),
                        current: committed,
                    });
                }
                let ended = client
                    .query(TERMINATE_FENCE_HOLDERS, &[])
                    .await
                    .map_err(|e| unavailable("ending sessions that hold the fence", e))?;
                for row in &ended {
                    let pid: i32 = row.get(0);
                    tracing::warn!(pid, revision, "terminated a stalled ftsd session holding the epoch fence");
                }
                let tx = client
                    .transaction()
                    .await
                    .map_err(|e| unavailable("beginning the claim", e))?;
                let recorded = tx
                    .query_one("SELECT epoch FROM fts_epoch WHERE id = 1 FOR UPDATE", &[])
                    .await
                    .map(|row| Epoch(row.get(0)))
                    .map_err(|e| unavailable("locking the epoch fence", e))?;
                // Asked again with the row locked: no claim can land between answer and ours.
                let now = etcd_now(&etcd).await?;
                let ClaimPlan::Claim(epoch) = plan_claim(recorded, revision, now) else {
                    return Err(CatalogError::Fenced {
                        mine: compose(generation(recorded), revision),
                        current: recorded,
                    });
                };
                if generation(epoch) > generation(recorded) {
                    tracing::warn!(%recorded, %epoch, "the recorded epoch comes from an older etcd (etcd's revision is below it): moving to the next epoch generation");
                }
                tx.execute(FENCE, &[&epoch.0, &instance_id])
                    .await
                    .map_err(|e| unavailable("claiming epoch", e))?;
                tx.commit()
                    .await
                    .map_err(|e| unavailable("committing the claim", e))?;
                Ok(epoch)
            })
        })
        .await
    }

    async fn apply(&self, t: &Transition) -> Result<(), CatalogError> {
        let t = t.clone();
        self.with_client(|client| Box::pin(async move { apply_in_tx(client, &t).await }))
            .await
    }
}

/// The whole transition in one transaction; any early return drops the transaction, which
/// rolls it back.
async fn apply_in_tx(client: &mut Client, t: &Transition) -> Result<(), CatalogError> {
    let tx = client
        .transaction()
        .await
        .map_err(|e| unavailable("beginning transaction", e))?;
    let fenced = tx
        .execute(FENCE, &[&t.epoch.0, &t.instance_id])
        .await
        .map_err(|e| unavailable("checking epoch fence", e))?;
    if fenced == 0 {
        let current = current_epoch(&tx).await;
        return Err(CatalogError::Fenced {
            mine: t.epoch,
            current,
        });
    }
    if let Some(delay) = crate::engine::faults::delay_after_fence() {
        tracing::warn!(
            ?delay,
            content = t.content,
            "fault point: pausing while holding the epoch fence"
        );
        // The server-side session stays busy (not idle in transaction, which the server would
        // end by itself) and keeps the fence row locked, like a holder that never commits.
        tx.execute("SELECT pg_sleep($1)", &[&delay.as_secs_f64()])
            .await
            .map_err(|e| unavailable("fault point", e))?;
    }
    for (dbid, want) in &t.expect {
        let row = tx
            .query_opt(
                "SELECT role::text, status::text, mode::text FROM gp_segment_configuration \
                 WHERE dbid = $1 FOR UPDATE",
                &[dbid],
            )
            .await
            .map_err(|e| unavailable("re-reading the pair under the fence", e))?;
        let holds = row.is_some_and(|r| {
            let (role, status, mode): (String, String, String) = (r.get(0), r.get(1), r.get(2));
            [role, status, mode]
                == [
                    want.role.as_char().to_string(),
                    want.status.as_char().to_string(),
                    want.mode.as_char().to_string(),
                ]
        });
        if !holds {
            return Err(CatalogError::Stale {
                dbid: *dbid,
                expected: want.to_string(),
            });
        }
    }
    for u in &t.updates {
        tx.execute(
            r#"INSERT INTO gp_configuration_history ("time", dbid, "desc") VALUES (now(), $1, $2)"#,
            &[&u.dbid, &u.history_desc()],
        )
        .await
        .map_err(|e| unavailable("writing gp_configuration_history", e))?;
        let changed = tx
            .execute(
                r#"UPDATE gp_segment_configuration
                      SET role = $2::text::"char", status = $3::text::"char", mode = $4::text::"char"
                    WHERE dbid = $1 AND role = $5::text::"char" AND status = $6::text::"char"
                      AND mode = $7::text::"char""#,
                &[
                    &u.dbid,
                    &u.to.role.as_char().to_string(),
                    &u.to.status.as_char().to_string(),
                    &u.to.mode.as_char().to_string(),
                    &u.from.role.as_char().to_string(),
                    &u.from.status.as_char().to_string(),
                    &u.from.mode.as_char().to_string(),
                ],
            )
            .await
            .map_err(|e| unavailable("updating gp_segment_configuration", e))?;
        if changed != 1 {
            return Err(CatalogError::Stale {
                dbid: u.dbid,
                expected: u.from.to_string(),
            });
        }
    }
    let dbids: Vec<i16> = t.updates.iter().map(|u| u.dbid).collect();
    tx.execute(
        r#"INSERT INTO fts_evidence ("time", epoch, instance_id, content, rule, dbids, evidence)
           VALUES (now(), $1, $2, $3, $4, $5, $6)"#,
        &[
            &t.epoch.0,
            &t.instance_id,
            &t.content,
            &t.rule.as_str(),
            &dbids,
            &t.evidence,
        ],
    )
    .await
    .map_err(|e| unavailable("writing fts_evidence", e))?;
    tx.commit()
        .await
        .map_err(|e| unavailable("committing transition", e))
}
