//! A PostgreSQL primary with one synchronous streaming-replication standby, for the `postgres`
//! segment driver's tests and benchmark.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use fts_testkit::pgpair::PgPair;
//! let mut pair = PgPair::start("seg0").await?; // primary + standby, in sync
//! pair.primary.kill()?; // kill -9 of the primary postmaster
//! # Ok(()) }
//! ```
//!
//! Both servers are [`PgServer`]s (temporary directories, killed with the test process). The
//! primary uses SCRAM for TCP with a superuser password, and has the dedicated probe role
//! [`PROBE_ROLE`] with exactly the grants docs/postgres-driver.md lists, created before the
//! base backup so the standby has it too. The standby is a `pg_basebackup` copy with
//! `application_name` = the pair's name, and the primary's `synchronous_standby_names` names
//! it (set with `ALTER SYSTEM`, as the driver itself does, so the driver can change it).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::pg::{Auth, PgServer, PgServerBuilder};
use ftsd::model::{ContentId, Dbid, Mode, Role, Segment, Status};

/// The probe role the pairs create, and its password.
pub const PROBE_ROLE: &str = "ftsd";
pub const PROBE_PASSWORD: &str = "ftsd-probe-secret";
const SUPERUSER_PASSWORD: &str = "pair-superuser-secret";

/// The minimal grants of the `postgres` driver's role on PostgreSQL 15 (docs/postgres-driver.md).
pub fn probe_role_sql(role: &str, password: &str) -> String {
    let role = format!("\"{}\"", role.replace('"', "\"\""));
    let password = password.replace('\'', "''");
    format!(
        "CREATE ROLE {role} LOGIN PASSWORD '{password}';
         GRANT pg_monitor TO {role};
         GRANT EXECUTE ON FUNCTION pg_promote(boolean, integer) TO {role};
         GRANT EXECUTE ON FUNCTION pg_reload_conf() TO {role};
         GRANT ALTER SYSTEM ON PARAMETER synchronous_standby_names TO {role};
         GRANT ALTER SYSTEM ON PARAMETER default_transaction_read_only TO {role};
         GRANT pg_signal_backend TO {role};"
    )
}

/// One primary/standby pair; see the module documentation.
pub struct PgPair {
    pub name: String,
    pub primary: PgServer,
    pub standby: PgServer,
}

impl PgPair {
    /// Starts a pair whose standby is named `name` and waits until it is synchronous.
    pub async fn start(name: &str) -> Result<PgPair> {
        let builder = PgServer::builder()
            .auth(Auth::Scram)
            .password(SUPERUSER_PASSWORD)
            // Fail over fast in tests: a standby notices a dead primary at once anyway (the
            // walsender exits with the postmaster); keep reconnect attempts frequent.
            .setting("wal_retrieve_retry_interval", "200ms")
            .setting("wal_receiver_status_interval", "1s");
        Self::start_with(builder, name).await
    }

    /// [`PgPair::start`] with a custom builder (settings apply to both servers).
    pub async fn start_with(builder: PgServerBuilder, name: &str) -> Result<PgPair> {
        Self::start_split(builder.clone(), builder, name).await
    }

    /// [`PgPair::start`] with a builder for each server (e.g. each in a network namespace
    /// of its own); the standby's authentication is the primary's.
    pub async fn start_split(
        primary: PgServerBuilder,
        standby: PgServerBuilder,
        name: &str,
    ) -> Result<PgPair> {
        let builder = standby;
        let primary = primary.start().await?;
        primary
            .client()
            .await?
            .batch_execute(&probe_role_sql(PROBE_ROLE, PROBE_PASSWORD))
            .await
            .context("creating the probe role")?;
        let standby = builder.start_standby(&primary, name).await?;
        let pair = PgPair {
            name: name.to_string(),
            primary,
            standby,
        };
        pair.set_sync_names(&format!("\"{name}\"")).await?;
        pair.wait_replication(Some("sync"), Duration::from_secs(30))
            .await?;
        Ok(pair)
    }

    /// `ALTER SYSTEM SET synchronous_standby_names` on the primary, and a reload.
    pub async fn set_sync_names(&self, value: &str) -> Result<()> {
        let c = self.primary.client().await?;
        c.batch_execute(&format!(
            "ALTER SYSTEM SET synchronous_standby_names = '{}'",
            value.replace('\'', "''")
        ))
        .await?;
        c.batch_execute("SELECT pg_reload_conf()").await?;
        Ok(())
    }

    /// The primary's `synchronous_standby_names`.
    pub async fn sync_names(&self) -> Result<String> {
        let row = self
            .primary
            .client()
            .await?
            .query_one("SHOW synchronous_standby_names", &[])
            .await?;
        Ok(row.get(0))
    }

    /// `(state, sync_state)` of the standby's row on the primary, if connected.
    pub async fn replication(&self) -> Result<Option<(String, String)>> {
        let rows = self
            .primary
            .client()
            .await?
            .query(
                "SELECT state, sync_state FROM pg_stat_replication WHERE application_name = $1",
                &[&self.name],
            )
            .await?;
        Ok(rows.first().map(|r| (r.get(0), r.get(1))))
    }

    /// Waits until the standby streams with `sync_state` (any when None).
    pub async fn wait_replication(&self, sync_state: Option<&str>, limit: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            if let Ok(Some((state, sync))) = self.replication().await {
                if state == "streaming" && sync_state.is_none_or(|s| s == sync) {
                    return Ok(());
                }
            }
            if start.elapsed() > limit {
                bail!(
                    "standby {} not streaming ({sync_state:?}) after {limit:?}; standby log:\n{}",
                    self.name,
                    self.standby.log_tail(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The two catalog rows of this pair as content `content`: primary `primary_dbid`
    /// (role p, in sync, up) and mirror `mirror_dbid`.
    pub fn segments(
        &self,
        content: ContentId,
        primary_dbid: Dbid,
        mirror_dbid: Dbid,
    ) -> Vec<Segment> {
        let row = |dbid, role, server: &PgServer| Segment {
            dbid,
            content,
            role,
            preferred_role: role,
            mode: Mode::InSync,
            status: Status::Up,
            port: i32::from(server.port()),
            hostname: server.host().to_string(),
            address: server.host().to_string(),
            datadir: server.data_dir().display().to_string(),
        };
        vec![
            row(primary_dbid, Role::Primary, &self.primary),
            row(mirror_dbid, Role::Mirror, &self.standby),
        ]
    }
}

/// Whether `server` is out of recovery (a primary).
pub async fn is_primary(server: &PgServer) -> Result<bool> {
    let row = server
        .client()
        .await?
        .query_one("SELECT NOT pg_is_in_recovery()", &[])
        .await?;
    Ok(row.get(0))
}
