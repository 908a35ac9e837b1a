//! Writes the simulated layout into a `gp_segment_configuration` table (created beforehand by
//! `ftsd catalog init`), so ftsd reads a catalog that matches what the simulator serves.

use tokio_postgres::NoTls;

use ftsd::model::Segment;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot connect to catalog database: {0}")]
    Connect(String),
    #[error(
        "table gp_segment_configuration does not exist in the catalog database; \
         create it first with `ftsd catalog init`"
    )]
    MissingTable,
    #[error("writing gp_segment_configuration failed: {0}")]
    Write(String),
}

fn flatten(e: tokio_postgres::Error) -> String {
    ftsd::error_chain::one_line(&e)
}

fn connect_error(e: tokio_postgres::Error) -> CatalogError {
    CatalogError::Connect(flatten(e))
}

fn write_error(e: tokio_postgres::Error) -> CatalogError {
    CatalogError::Write(flatten(e))
}

/// One array per column, in row order; `"char"` columns travel as text and are cast in SQL
/// (casting the parameter itself would make it a `"char"` parameter, which text cannot bind to).
const INSERT: &str = r#"
INSERT INTO gp_segment_configuration
    (dbid, content, role, preferred_role, mode, status, port, hostname, address, datadir)
SELECT d, c, r::"char", pr::"char", m::"char", s::"char", p, h, a, dd
FROM unnest($1::int2[], $2::int2[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::int4[], $8::text[], $9::text[], $10::text[])
    AS t(d, c, r, pr, m, s, p, h, a, dd)
"#;

/// `rows` with `host` (when given) as every row's hostname and address: the catalog then names
/// the simulated host by a name the FTS must resolve, as clusters addressed by host name do.
pub fn named(mut rows: Vec<Segment>, host: Option<&str>) -> Vec<Segment> {
    if let Some(host) = host {
        for row in &mut rows {
            row.hostname = host.to_string();
            row.address = host.to_string();
        }
    }
    rows
}

/// Replaces every row of `gp_segment_configuration` with `rows`, in one transaction.
/// `url` is a libpq-style URL or key/value string.
pub async fn write_catalog(url: &str, rows: &[Segment]) -> Result<(), CatalogError> {
    let config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| CatalogError::Connect(format!("invalid connection string: {}", flatten(e))))?;
    write_catalog_with(&config, rows).await
}

/// [`write_catalog`] with a prepared configuration (e.g. with a `search_path` option).
pub async fn write_catalog_with(
    config: &tokio_postgres::Config,
    rows: &[Segment],
) -> Result<(), CatalogError> {
    let (mut client, connection) = config.connect(NoTls).await.map_err(connect_error)?;
    let driver = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "catalog connection ended with an error");
        }
    });
    let result = write(&mut client, rows).await;
    drop(client);
    let _ = driver.await;
    result
}

async fn write(client: &mut tokio_postgres::Client, rows: &[Segment]) -> Result<(), CatalogError> {
    let exists = client
        .query_one(
            "SELECT to_regclass('gp_segment_configuration') IS NOT NULL",
            &[],
        )
        .await
        .map_err(write_error)?;
    if !exists.get::<_, bool>(0) {
        return Err(CatalogError::MissingTable);
    }
    let chars = |f: fn(&Segment) -> char| -> Vec<String> {
        rows.iter().map(|r| f(r).to_string()).collect()
    };
    let dbid: Vec<i16> = rows.iter().map(|r| r.dbid).collect();
    let content: Vec<i16> = rows.iter().map(|r| r.content).collect();
    let role = chars(|r| r.role.as_char());
    let preferred = chars(|r| r.preferred_role.as_char());
    let mode = chars(|r| r.mode.as_char());
    let status = chars(|r| r.status.as_char());
    let port: Vec<i32> = rows.iter().map(|r| r.port).collect();
    let hostname: Vec<&str> = rows.iter().map(|r| r.hostname.as_str()).collect();
    let address: Vec<&str> = rows.iter().map(|r| r.address.as_str()).collect();
    let datadir: Vec<&str> = rows.iter().map(|r| r.datadir.as_str()).collect();

    let tx = client.transaction().await.map_err(write_error)?;
    tx.execute("DELETE FROM gp_segment_configuration", &[])
        .await
        .map_err(write_error)?;
    tx.execute(
        INSERT,
        &[
            &dbid, &content, &role, &preferred, &mode, &status, &port, &hostname, &address,
            &datadir,
        ],
    )
    .await
    .map_err(write_error)?;
    tx.commit().await.map_err(write_error)?;
    tracing::info!(rows = rows.len(), "wrote gp_segment_configuration");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{layout, SimConfig};

    #[test]
    fn a_catalog_host_names_every_row_and_leaves_the_rest() {
        let cfg = SimConfig {
            pairs: 2,
            base_port: 7000,
            ..SimConfig::default()
        };
        let rows = layout(&cfg);
        assert_eq!(named(rows.clone(), None), rows);
        let renamed = named(rows.clone(), Some("seghost"));
        assert!(renamed
            .iter()
            .all(|r| r.hostname == "seghost" && r.address == "seghost"));
        let ports = |rs: &[Segment]| rs.iter().map(|r| (r.dbid, r.port)).collect::<Vec<_>>();
        assert_eq!(ports(&renamed), ports(&rows));
    }
}
