//! Probing the coordinator pair over SQL: a fresh connection per attempt, a trivial query, and
//! the standby's replication state from both sides — the walsender row in
//! `pg_stat_replication` on the coordinator, `pg_is_in_recovery()` and the WAL receiver on the
//! standby. Each server's version is read from the server itself (`server_version_num`), so a
//! Greenplum 6 standby (PostgreSQL 9.4, no `pg_promote()`, `xlog` function names) is probed
//! with the queries it understands.

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_postgres::Client;

use crate::core::coordinator::SyncSeen;
use crate::driver::postgres::connect::{classify, server_version_num};
use crate::driver::postgres::probe::DURABLE_COMMIT;
use crate::secret::Secret;
use crate::wire::failure::{AttemptError, FailureKind};

/// How to reach one server of the pair.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl Endpoint {
    /// Parses `host:port` (validated by the configuration already).
    pub fn parse(value: &str) -> Option<Endpoint> {
        let (host, port) = crate::config::host_port(value).ok()?;
        Some(Endpoint {
            host: host.to_owned(),
            port,
        })
    }
}

/// Credentials and bounds shared by every connection.
#[derive(Debug, Clone)]
pub struct ConnectSettings {
    pub user: String,
    pub database: String,
    pub password: Option<Secret>,
    /// Bound on one attempt, connection included.
    pub timeout: Duration,
    /// `coordinator.sslmode` and its files, read once (a file unreadable at start makes every
    /// connection fail, never fall back to plaintext).
    pub tls: crate::tls::postgres::PgTls,
    /// `coordinator.source_address`: the local address connections are bound to (None: the
    /// kernel chooses).
    pub source: Option<std::net::IpAddr>,
}

/// Opens a session to `endpoint`; the caller bounds the whole attempt.
pub async fn connect(s: &ConnectSettings, endpoint: &Endpoint) -> Result<Client, AttemptError> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(&endpoint.host)
        .port(endpoint.port)
        .user(&s.user)
        .dbname(&s.database)
        .application_name("ftsd-coordinator")
        .connect_timeout(s.timeout);
    if let Some(pw) = &s.password {
        cfg.password(pw.expose());
    }
    s.tls.apply(&mut cfg);
    let Some(source) = s.source else {
        let (client, connection) = cfg
            .connect(s.tls.connector())
            .await
            .map_err(|e| classify_connect(&e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "coordinator connection ended");
            }
        });
        return Ok(client);
    };
    let stream = bound_stream(source, endpoint, s.timeout).await?;
    let mut make = s.tls.connector();
    let tls = tokio_postgres::tls::MakeTlsConnect::<tokio::net::TcpStream>::make_tls_connect(
        &mut make,
        &endpoint.host,
    )
    .map_err(|e| AttemptError::new(FailureKind::Local, format!("TLS setup: {e}")))?;
    let (client, connection) = cfg
        .connect_raw(stream, tls)
        .await
        .map_err(|e| classify_connect(&e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "coordinator connection ended");
        }
    });
    Ok(client)
}

/// A TCP connection to `endpoint` from the local address `source`, bounded by `timeout`.
async fn bound_stream(
    source: std::net::IpAddr,
    endpoint: &Endpoint,
    timeout: Duration,
) -> Result<tokio::net::TcpStream, AttemptError> {
    let started = Instant::now();
    let addresses = tokio::time::timeout(
        timeout,
        tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port)),
    )
    .await
    .map_err(|_| AttemptError::new(FailureKind::Resolve, "name lookup timed out"))?
    .map_err(|e| AttemptError::new(FailureKind::Resolve, format!("lookup address: {e}")))?;
    let Some(target) = addresses
        .into_iter()
        .find(|a| a.is_ipv4() == source.is_ipv4())
    else {
        return Err(AttemptError::new(
            FailureKind::Resolve,
            format!(
                "{endpoint} has no address of the family of coordinator.source_address {source}"
            ),
        ));
    };
    let io = |e: std::io::Error| AttemptError::new(FailureKind::of_io(&e), e.to_string());
    let socket = if source.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(io)?;
    socket.bind((source, 0).into()).map_err(io)?;
    let left = timeout.saturating_sub(started.elapsed());
    match tokio::time::timeout(left, socket.connect(target)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(e)) => Err(io(e)),
        Err(_) => Err(AttemptError::new(FailureKind::Timeout, "connect timed out")),
    }
}

/// A failed connection's class. A TLS handshake that fails on the certificate (an unknown CA,
/// a host name it does not carry, an expired one) means the server answered: what is wrong is
/// this prober's trust settings or the server's certificate, not the coordinator's liveness.
/// It is a prober fault (`auth`), so a certificate problem never fails the coordinator over.
fn classify_connect(e: &tokio_postgres::Error) -> AttemptError {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let tls = s.downcast_ref::<rustls::Error>().or_else(|| {
            s.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        // Certificates and alerts only: a server that dies mid-handshake shows as a reset.
        let about_trust = |t: &rustls::Error| {
            matches!(
                t,
                rustls::Error::InvalidCertificate(_)
                    | rustls::Error::NoCertificatesPresented
                    | rustls::Error::UnsupportedNameType
                    | rustls::Error::AlertReceived(_)
            )
        };
        if let Some(t) = tls.filter(|t| about_trust(t)) {
            return AttemptError::new(FailureKind::Auth, format!("TLS handshake: {t}"));
        }
        source = s.source();
    }
    classify(e, true)
}

/// The one physical walsender the coordinator reports (the standby's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WalSender {
    pub application_name: String,
    pub state: Option<String>,
    pub sync_state: Option<String>,
    pub replay_lag: Option<i64>,
}

/// What one successful attempt on the coordinator read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PrimaryState {
    pub version_num: i32,
    pub in_recovery: bool,
    pub synchronous_commit: String,
    pub synchronous_standby_names: String,
    /// `default_transaction_read_only` is on: writes were stopped at the database level (a
    /// switchover in progress, or interrupted); not counted as writable.
    pub read_only: bool,
    /// Physical walsenders (backups and logical ones left out).
    pub walsenders: Vec<WalSender>,
}

impl PrimaryState {
    /// No standby is attached and the server still requires a synchronous one, so every
    /// commit waits: nothing is acknowledged that a standby has not flushed.
    pub fn commits_wait_for_a_standby(&self) -> bool {
        !self.in_recovery
            && self.walsenders.is_empty()
            && !self.synchronous_standby_names.trim().is_empty()
            && DURABLE_COMMIT.contains(&self.synchronous_commit.as_str())
    }
}

/// What one successful attempt on the standby read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StandbyState {
    pub version_num: i32,
    pub in_recovery: bool,
    /// `pg_stat_wal_receiver.status` (None: no receiver running, or a server without the
    /// view, before 9.6).
    pub receiver: Option<String>,
    pub replay_lsn: Option<String>,
    /// `default_transaction_read_only` is on (a former coordinator left read-only by a
    /// switchover, awaiting its rebuild): not counted as writable.
    pub read_only: bool,
}

impl PrimaryState {
    /// Out of recovery and not read-only: it accepts writes.
    pub fn writable(&self) -> bool {
        !self.in_recovery && !self.read_only
    }
}

impl StandbyState {
    /// Out of recovery and not read-only: it accepts writes.
    pub fn writable(&self) -> bool {
        !self.in_recovery && !self.read_only
    }

    /// `pg_promote()` exists from PostgreSQL 12 on.
    pub fn has_pg_promote(&self) -> bool {
        self.version_num >= 120_000
    }
}

/// Physical walsenders only: `backup` ones are base backups; one attached to a database is
/// logical. Function names changed in PostgreSQL 10 (`xlog` → `wal`, `location` → `lsn`).
fn replication_query(version_num: i32) -> &'static str {
    if version_num >= 100_000 {
        "SELECT coalesce(r.application_name, ''), r.state, r.sync_state, \
                pg_wal_lsn_diff(pg_current_wal_lsn(), r.replay_lsn)::bigint \
           FROM pg_stat_replication r \
          WHERE r.state IS DISTINCT FROM 'backup' \
            AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a \
                             WHERE a.pid = r.pid AND a.datid IS NOT NULL) \
          ORDER BY r.pid"
    } else {
        "SELECT coalesce(r.application_name, ''), r.state, r.sync_state, \
                pg_xlog_location_diff(pg_current_xlog_location(), r.replay_location)::bigint \
           FROM pg_stat_replication r \
          WHERE r.state IS DISTINCT FROM 'backup' \
          ORDER BY r.pid"
    }
}

/// One attempt on the coordinator.
pub async fn read_primary(
    s: &ConnectSettings,
    at: &Endpoint,
) -> Result<PrimaryState, AttemptError> {
    bounded(s.timeout, async {
        let client = connect(s, at).await?;
        let version_num = server_version_num(&client).await?;
        let row = client
            .query_one(
                "SELECT pg_is_in_recovery(), current_setting('synchronous_commit'), \
                        current_setting('synchronous_standby_names'), \
                        current_setting('default_transaction_read_only') = 'on'",
                &[],
            )
            .await
            .map_err(|e| classify(&e, false))?;
        let in_recovery: bool = row.get(0);
        let walsenders = if in_recovery {
            Vec::new()
        } else {
            client
                .query(replication_query(version_num), &[])
                .await
                .map_err(|e| classify(&e, false))?
                .iter()
                .map(|r| WalSender {
                    application_name: r.get(0),
                    state: r.get(1),
                    sync_state: r.get(2),
                    replay_lag: r.get(3),
                })
                .collect()
        };
        Ok(PrimaryState {
            version_num,
            in_recovery,
            synchronous_commit: row.get(1),
            synchronous_standby_names: row.get(2),
            read_only: row.get(3),
            walsenders,
        })
    })
    .await
}

/// One attempt on the standby.
pub async fn read_standby(
    s: &ConnectSettings,
    at: &Endpoint,
) -> Result<StandbyState, AttemptError> {
    bounded(s.timeout, async {
        let client = connect(s, at).await?;
        let version_num = server_version_num(&client).await?;
        let sql = if version_num >= 100_000 {
            "SELECT pg_is_in_recovery(), \
                    (SELECT status FROM pg_stat_wal_receiver LIMIT 1), \
                    pg_last_wal_replay_lsn()::text, \
                    current_setting('default_transaction_read_only') = 'on'"
        } else if version_num >= 90_600 {
            "SELECT pg_is_in_recovery(), \
                    (SELECT status FROM pg_stat_wal_receiver LIMIT 1), \
                    pg_last_xlog_replay_location()::text, \
                    current_setting('default_transaction_read_only') = 'on'"
        } else {
            "SELECT pg_is_in_recovery(), NULL::text, pg_last_xlog_replay_location()::text, \
                    current_setting('default_transaction_read_only') = 'on'"
        };
        let row = client
            .query_one(sql, &[])
            .await
            .map_err(|e| classify(&e, false))?;
        Ok(StandbyState {
            version_num,
            in_recovery: row.get(0),
            receiver: row.get(1),
            replay_lsn: row.get(2),
            read_only: row.get(3),
        })
    })
    .await
}

async fn bounded<T>(
    limit: Duration,
    f: impl std::future::Future<Output = Result<T, AttemptError>>,
) -> Result<T, AttemptError> {
    tokio::time::timeout(limit, f).await.unwrap_or_else(|_| {
        Err(AttemptError::new(
            FailureKind::Timeout,
            format!("no answer within {limit:?}"),
        ))
    })
}

/// The attempts of one round on one server.
#[derive(Debug, Clone, Serialize)]
pub struct Round<T> {
    /// The successful read, if any attempt succeeded.
    pub state: Option<T>,
    /// Every failed attempt, in order.
    pub failures: Vec<AttemptError>,
    pub elapsed_ms: u64,
}

impl<T> Round<T> {
    /// The round failed and its last failure was on this prober's side.
    pub fn prober_fault(&self) -> bool {
        self.state.is_none()
            && self
                .failures
                .last()
                .is_some_and(|f| f.kind.is_prober_fault())
    }

    /// The round failed because the server is starting up or in crash recovery (57P03).
    pub fn restarting(&self) -> bool {
        self.state.is_none()
            && self
                .failures
                .last()
                .is_some_and(|f| f.sqlstate.as_deref() == Some("57P03"))
    }
}

/// Up to `retries + 1` attempts, `retry_delay` apart, stopping at the first success.
pub async fn round<T, F, Fut>(retries: u32, retry_delay: Duration, mut attempt: F) -> Round<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, AttemptError>>,
{
    let start = Instant::now();
    let mut failures = Vec::new();
    for n in 0..=retries {
        if n > 0 {
            tokio::time::sleep(retry_delay).await;
        }
        match attempt().await {
            Ok(state) => {
                return Round {
                    state: Some(state),
                    failures,
                    elapsed_ms: millis(start),
                }
            }
            Err(e) => failures.push(e),
        }
    }
    Round {
        state: None,
        failures,
        elapsed_ms: millis(start),
    }
}

fn millis(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Whether the standby is in sync, from both sides: exactly one physical walsender,
/// streaming, a synchronous standby, commits waiting for its flush, and (when the standby
/// answered) its WAL receiver streaming. The lag is reported for the decision's bound.
pub fn judge_sync(primary: &PrimaryState, standby: Option<&StandbyState>) -> SyncSeen {
    let not = |why: String| SyncSeen {
        synchronous: false,
        replay_lag: None,
        why,
    };
    if primary.in_recovery {
        return not("the coordinator is in recovery".into());
    }
    let sender = match primary.walsenders.as_slice() {
        [one] => one,
        [] => return not("no standby connected to the coordinator".into()),
        many => {
            return not(format!(
                "{} physical walsenders on the coordinator; which one is the standby is ambiguous",
                many.len()
            ))
        }
    };
    let replay_lag = sender.replay_lag.and_then(|l| u64::try_from(l).ok());
    let with_lag = |synchronous, why: String| SyncSeen {
        synchronous,
        replay_lag,
        why,
    };
    if sender.state.as_deref() != Some("streaming") {
        return with_lag(false, format!("walsender state {:?}", sender.state));
    }
    if !matches!(sender.sync_state.as_deref(), Some("sync" | "quorum")) {
        return with_lag(
            false,
            format!("walsender sync_state {:?}", sender.sync_state),
        );
    }
    if !DURABLE_COMMIT.contains(&primary.synchronous_commit.as_str()) {
        return with_lag(
            false,
            format!(
                "synchronous_commit = {} does not wait for the standby's flush",
                primary.synchronous_commit
            ),
        );
    }
    match standby {
        Some(s) if !s.in_recovery => with_lag(false, "the standby is out of recovery".into()),
        Some(s) if s.receiver.is_some() && s.receiver.as_deref() != Some("streaming") => with_lag(
            false,
            format!("the standby's WAL receiver is {:?}", s.receiver),
        ),
        _ => with_lag(
            true,
            format!(
                "streaming, sync_state {}, application_name {:?}",
                sender.sync_state.as_deref().unwrap_or_default(),
                sender.application_name
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn primary(sync: &str) -> PrimaryState {
        PrimaryState {
            version_num: 150_000,
            in_recovery: false,
            synchronous_commit: "on".into(),
            synchronous_standby_names: "\"s\"".into(),
            read_only: false,
            walsenders: vec![WalSender {
                application_name: "s".into(),
                state: Some("streaming".into()),
                sync_state: Some(sync.into()),
                replay_lag: Some(128),
            }],
        }
    }

    fn standby(receiver: Option<&str>) -> StandbyState {
        StandbyState {
            version_num: 150_000,
            in_recovery: true,
            receiver: receiver.map(str::to_owned),
            replay_lsn: Some("0/3000000".into()),
            read_only: false,
        }
    }

    #[test]
    fn commits_wait_only_without_a_standby_while_one_is_required() {
        let mut p = primary("sync");
        assert!(!p.commits_wait_for_a_standby(), "a standby is attached");
        p.walsenders.clear();
        assert!(p.commits_wait_for_a_standby());
        for commit in ["local", "off", "remote_write"] {
            let mut q = p.clone();
            q.synchronous_commit = commit.into();
            assert!(
                !q.commits_wait_for_a_standby(),
                "synchronous_commit = {commit}"
            );
        }
        p.synchronous_standby_names = " ".into();
        assert!(!p.commits_wait_for_a_standby(), "no standby required");
    }

    #[test]
    fn in_sync_needs_both_sides() {
        let ok = judge_sync(&primary("sync"), Some(&standby(Some("streaming"))));
        assert!(ok.synchronous, "{}", ok.why);
        assert_eq!(ok.replay_lag, Some(128));
        assert!(judge_sync(&primary("quorum"), None).synchronous);
        assert!(!judge_sync(&primary("async"), None).synchronous);
        assert!(!judge_sync(&primary("potential"), None).synchronous);
        assert!(!judge_sync(&primary("sync"), Some(&standby(Some("stopping")))).synchronous);
        let mut out = standby(None);
        out.in_recovery = false;
        assert!(!judge_sync(&primary("sync"), Some(&out)).synchronous);
        let mut local = primary("sync");
        local.synchronous_commit = "local".into();
        assert!(!judge_sync(&local, None).synchronous);
        let mut none = primary("sync");
        none.walsenders.clear();
        assert!(!judge_sync(&none, None).synchronous);
        let mut two = primary("sync");
        two.walsenders.push(two.walsenders[0].clone());
        assert!(!judge_sync(&two, None).synchronous);
    }

    #[test]
    fn endpoints() {
        let e = Endpoint::parse("[::1]:5432").unwrap();
        assert_eq!(e.host, "::1");
        assert_eq!(e.to_string(), "[::1]:5432");
        assert_eq!(Endpoint::parse("cdw:6000").unwrap().to_string(), "cdw:6000");
    }
}
