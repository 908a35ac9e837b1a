//! Table shapes: Greenplum's two catalog tables (reference 3.1, 3.2) plus our own epoch and
//! evidence tables, and `ftsd catalog init`, which creates them in a plain PostgreSQL database
//! for standalone clusters and tests.

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

struct Table {
    name: &'static str,
    shape: Shape,
    /// Real Greenplum variants append columns (warehouseid, can_dispatch); accept those.
    allow_trailing: bool,
    ddl: &'static str,
}

const TABLES: &[Table] = &[
    Table {
        name: "gp_segment_configuration",
        shape: SEGMENT_CONFIGURATION,
        allow_trailing: true,
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
        ddl: r#"CREATE TABLE gp_configuration_history (
            "time" timestamp with time zone NOT NULL,
            dbid smallint NOT NULL,
            "desc" text)"#,
    },
    Table {
        name: "fts_epoch",
        shape: EPOCH,
        allow_trailing: false,
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

/// Verifies that every table exists with the expected shape.
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
    Ok(())
}

/// Creates the missing tables in one transaction. Tables that exist with the right shape are
/// left as they are; if any exists with another shape nothing is created at all.
pub async fn init(client: &mut Client) -> Result<Vec<TableAction>, CatalogError> {
    let tx = client
        .transaction()
        .await
        .map_err(|e| CatalogError::Unavailable(e.to_string()))?;
    let mut actions = Vec::new();
    for table in TABLES {
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
