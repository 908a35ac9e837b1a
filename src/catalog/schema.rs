//! Table shapes: Greenplum's two catalog tables (`docs/catalog.md`) plus our own epoch and
//! evidence tables; `ftsd catalog init`, which creates them in a plain PostgreSQL database (for
//! standalone clusters and tests) or creates only our own two on a Greenplum / Cloudberry
//! coordinator; and the check that our tables are not distributed to segments there.

use tokio_postgres::{Client, GenericClient};

use super::CatalogError;

/// (column, type as `format_type` prints it)
type Shape = &'static [(&'static str, &'static str)];

pub const SEGMENT_CONFIGURATION: Shape = &[
    ("dbid", "smallint"),
    ("content", "smallint"),
    ("role", "\"char\""),
    ("preferred_role", "\"char\""),
    ("mode", "\"char\""),
    ("status", "\"char\""),
    ("port", "integer"),
    ("hostname", "text"),
    ("address", "text"),
    ("datadir", "text"),
];

pub const CONFIGURATION_HISTORY: Shape = &[
    ("time", "timestamp with time zone"),
    ("dbid", "smallint"),
    ("desc", "text"),
];

pub const EPOCH: Shape = &[
    ("id", "smallint"),
    ("epoch", "bigint"),
    ("instance_id", "text"),
    ("updated_at", "timestamp with time zone"),
];

pub const EVIDENCE: Shape = &[
    ("id", "bigint"),
    ("time", "timestamp with time zone"),
    ("epoch", "bigint"),
    ("instance_id", "text"),
    ("content", "smallint"),
    ("rule", "text"),
    ("dbids", "smallint[]"),
    ("evidence", "jsonb"),
];

pub(crate) struct Table {
    pub(crate) name: &'static str,
    shape: Shape,
    /// Real Greenplum variants append columns (warehouseid, can_dispatch); accept those.
    allow_trailing: bool,
    ddl: &'static str,
    /// Our own table (as opposed to one the database system owns on Greenplum).
    ftsd_own: bool,
}

const TABLES: &[Table] = &[
    Table {
        name: "gp_segment_configuration",
        shape: SEGMENT_CONFIGURATION,
        allow_trailing: true,
        ftsd_own: false,
        ddl: r#"CREATE TABLE gp_segment_configuration (
            dbid smallint NOT NULL PRIMARY KEY,
            content smallint NOT NULL,
            role "char" NOT NULL CHECK (role IN ('p', 'm')),
            preferred_role "char" NOT NULL CHECK (preferred_role IN ('p', 'm')),
            mode "char" NOT NULL CHECK (mode IN ('s', 'n')),
            status "char" NOT NULL CHECK (status IN ('u', 'd')),
            port integer NOT NULL,
            hostname text NOT NULL,
            address text NOT NULL,
            datadir text NOT NULL,
            UNIQUE (content, preferred_role))"#,
    },
    Table {
        name: "gp_configuration_history",
        shape: CONFIGURATION_HISTORY,
        allow_trailing: false,
        ftsd_own: false,
        ddl: r#"CREATE TABLE gp_configuration_history (
            "time" timestamp with time zone NOT NULL,
            dbid smallint NOT NULL,
            "desc" text)"#,
    },
    Table {
        name: "fts_epoch",
        shape: EPOCH,
        allow_trailing: false,
        ftsd_own: true,
        ddl: r#"CREATE TABLE fts_epoch (
            id smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
            epoch bigint NOT NULL,
            instance_id text NOT NULL,
            updated_at timestamp with time zone NOT NULL);
            INSERT INTO fts_epoch (id, epoch, instance_id, updated_at) VALUES (1, 0, '', now())"#,
    },
    Table {
        name: "fts_evidence",
        shape: EVIDENCE,
        allow_trailing: false,
        ftsd_own: true,
        ddl: r#"CREATE TABLE fts_evidence (
            id bigserial PRIMARY KEY,
            "time" timestamp with time zone NOT NULL,
            epoch bigint NOT NULL,
            instance_id text NOT NULL,
            content smallint NOT NULL,
            rule text NOT NULL,
            dbids smallint[] NOT NULL,
            evidence jsonb NOT NULL);
            CREATE INDEX fts_evidence_content_time ON fts_evidence (content, "time")"#,
    },
];

/// What `init` did per table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableAction {
    Created(&'static str),
    AlreadyPresent(&'static str),
}

async fn columns(
    client: &impl GenericClient,
    table: &str,
) -> Result<Vec<(String, String)>, CatalogError> {
    let rows = client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod)
               FROM pg_attribute a
              WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
              ORDER BY a.attnum",
            &[&table],
        )
        .await
        .map_err(|e| CatalogError::Unavailable(format!("reading shape of {table}: {e}")))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

fn shape_mismatch(table: &Table, found: &[(String, String)]) -> Option<String> {
    let want = table.shape;
    let too_short = found.len() < want.len();
    let too_long = found.len() > want.len() && !table.allow_trailing;
    let differs = want
        .iter()
        .zip(found)
        .any(|((wn, wt), (fname, ftype))| wn != fname || wt != ftype);
    if !(too_short || too_long || differs) {
        return None;
    }
    let fmt = |cols: Vec<String>| cols.join(", ");
    Some(format!(
        "table {} exists with columns ({}) but ftsd expects ({}{}); refusing to touch it",
        table.name,
        fmt(found.iter().map(|(n, t)| format!("{n} {t}")).collect()),
        fmt(want.iter().map(|(n, t)| format!("{n} {t}")).collect()),
        if table.allow_trailing { ", ..." } else { "" },
    ))
}

/// What kind of database holds the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Plain PostgreSQL: `ftsd catalog init` creates all four tables.
    PostgreSql,
    /// A Greenplum or Cloudberry coordinator: the system owns the two `gp_*` tables, and ours
    /// must be created in a utility-mode session so they are not distributed.
    Greenplum { server_version_num: i32 },
}

/// Recognises a Greenplum / Cloudberry coordinator by its version string, or by the presence
/// of `gp_distribution_policy` (which only those systems have; see [`verify`]).
pub async fn detect(client: &impl GenericClient) -> Result<Flavor, CatalogError> {
    let row = client
        .query_one(
            "SELECT version(), current_setting('server_version_num')::int,
                    to_regclass('gp_distribution_policy') IS NOT NULL",
            &[],
        )
        .await
        .map_err(|e| CatalogError::Unavailable(format!("detecting the catalog database: {e}")))?;
    let version: String = row.get(0);
    let has_policy: bool = row.get(2);
    if has_policy || version.contains("Greenplum") || version.contains("Cloudberry") {
        Ok(Flavor::Greenplum {
            server_version_num: row.get(1),
        })
    } else {
        Ok(Flavor::PostgreSql)
    }
}

/// The startup option that opens a utility-mode session on a Greenplum coordinator: a session
/// that does not dispatch to segments, so a table it creates gets no distribution policy and
/// lives on the coordinator only. Greenplum 7 and Cloudberry (PostgreSQL 12 and later) call the
/// setting `gp_role`; Greenplum 6 (PostgreSQL 9.4) calls it `gp_session_role`.
pub fn utility_mode_option(server_version_num: i32) -> &'static str {
    if server_version_num >= 120000 {
        "-c gp_role=utility"
    } else {
        "-c gp_session_role=utility"
    }
}

/// On a Greenplum / Cloudberry coordinator, our tables must not be distributed: a fence update
/// on a distributed table is a two-phase commit with the segment that holds the row, so losing
/// that segment's primary would block the very transition that repairs it. A table has a
/// `gp_distribution_policy` row exactly when it is distributed (hash or replicated).
async fn refuse_distributed(client: &impl GenericClient) -> Result<(), CatalogError> {
    let rows = client
        .query(
            "SELECT c.relname::text, p.policytype::text
               FROM gp_distribution_policy p JOIN pg_class c ON c.oid = p.localoid
              WHERE p.localoid IN (to_regclass('fts_epoch'), to_regclass('fts_evidence'))
              ORDER BY 1",
            &[],
        )
        .await
        .map_err(|e| CatalogError::Unavailable(format!("reading gp_distribution_policy: {e}")))?;
    match rows.first() {
        None => Ok(()),
        Some(row) => {
            let (table, policy): (String, String) = (row.get(0), row.get(1));
            Err(CatalogError::Schema(format!(
                "table {table} is distributed to the segments (gp_distribution_policy type \
                 {policy:?}): every fence update would be a two-phase commit with a segment; \
                 recreate it on the coordinator only with `ftsd catalog init` \
                 (see docs/catalog.md, Greenplum and Cloudberry)"
            )))
        }
    }
}

/// Verifies that every table exists with the expected shape and, on Greenplum / Cloudberry,
/// that ours are not distributed.
pub async fn verify(client: &Client) -> Result<(), CatalogError> {
    for table in TABLES {
        let found = columns(client, table.name).await?;
        if found.is_empty() {
            return Err(CatalogError::Schema(format!(
                "table {} does not exist (run `ftsd catalog init`)",
                table.name
            )));
        }
        if let Some(problem) = shape_mismatch(table, &found) {
            return Err(CatalogError::Schema(problem));
        }
    }
    if let Flavor::Greenplum { .. } = detect(client).await? {
        refuse_distributed(client).await?;
    }
    Ok(())
}

/// Creates the missing tables in one transaction. Tables that exist with the right shape are
/// left as they are; if any exists with another shape nothing is created at all.
pub async fn init(client: &mut Client) -> Result<Vec<TableAction>, CatalogError> {
    init_tables(client, |_| true).await
}

/// [`init`] for the tables `which` selects.
pub(crate) async fn init_tables(
    client: &mut Client,
    which: impl Fn(&Table) -> bool,
) -> Result<Vec<TableAction>, CatalogError> {
    let tx = client
        .transaction()
        .await
        .map_err(|e| CatalogError::Unavailable(e.to_string()))?;
    let mut actions = Vec::new();
    for table in TABLES.iter().filter(|t| which(t)) {
        let found = columns(&tx, table.name).await?;
        if found.is_empty() {
            tx.batch_execute(table.ddl)
                .await
                .map_err(|e| CatalogError::Schema(format!("creating {}: {e}", table.name)))?;
            actions.push(TableAction::Created(table.name));
        } else if let Some(problem) = shape_mismatch(table, &found) {
            return Err(CatalogError::Schema(problem));
        } else {
            actions.push(TableAction::AlreadyPresent(table.name));
        }
    }
    tx.commit()
        .await
        .map_err(|e| CatalogError::Unavailable(e.to_string()))?;
    Ok(actions)
}

/// Whether `table` is one of ftsd's own tables rather than one of the system's.
pub(crate) fn is_ftsd_own(table: &Table) -> bool {
    table.ftsd_own
}

#[cfg(test)]
mod tests {
    use super::utility_mode_option;

    #[test]
    fn utility_mode_setting_follows_the_greenplum_generation() {
        assert_eq!(utility_mode_option(90426), "-c gp_session_role=utility"); // Greenplum 6
        assert_eq!(utility_mode_option(120012), "-c gp_role=utility"); // Greenplum 7
        assert_eq!(utility_mode_option(140004), "-c gp_role=utility"); // Cloudberry
    }
}
