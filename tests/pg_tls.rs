//! TLS of PostgreSQL connections (`catalog.sslmode`, `postgres.sslmode` and their files) against
//! real PostgreSQL servers started with `ssl = on` and a `hostssl`-only `pg_hba.conf`, with
//! certificates from a test PKI made by `etcd/make-certs`:
//!
//! * `disable` is refused by the server with a clear error; `verify-full` with the right CA
//!   works; a wrong CA, or a host name the certificate does not carry, fails with the reason;
//!   `require` connects without verifying (it accepts both);
//! * a client certificate is presented to a server that requires one;
//! * end to end: the real `ftsd` (`--no-election`, `probe.driver = "postgres"`) reads and
//!   writes its catalog and probes and fails over a primary/standby pair, every connection
//!   over verified TLS (checked in `pg_stat_ssl` on the servers).

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use fts_testkit::pg::{PgServer, PgServerTls};
use fts_testkit::pgpair::{PgPair, PROBE_ROLE};
use fts_testkit::pki::Pki;
use ftsd::catalog::postgres::{PgCatalog, PgCatalogConfig};
use ftsd::catalog::{schema, Catalog};
use ftsd::config::{CatalogConfig, ConnString, PgTlsSettings, SslMode};
use ftsd::model::Role;
use support::{wait_for, write_pg_driver_config, Daemon, PgDriverConfig};

const LIMIT: Duration = Duration::from_secs(60);

/// A TLS-only server with the certificate `pg` of `pki` (valid for 127.0.0.1 and localhost),
/// also listening on 127.0.0.2, a name its certificate does not carry.
async fn tls_server(pki: &Pki, client_ca: Option<PathBuf>) -> PgServer {
    let (cert, key) = pki.server("pg");
    PgServer::builder()
        .tls(PgServerTls {
            cert,
            key,
            client_ca,
        })
        .setting("listen_addresses", "127.0.0.1,127.0.0.2")
        .start()
        .await
        .expect("TLS postgres")
}

/// A catalog on `pg` reached at `host` with `sslmode` and the given files.
fn catalog(
    pg: &PgServer,
    host: &str,
    mode: SslMode,
    ca: Option<&Path>,
    client: Option<(PathBuf, PathBuf)>,
) -> PgCatalog {
    let cfg = CatalogConfig {
        url: ConnString::new(format!(
            "postgresql://postgres@{host}:{}/postgres",
            pg.port()
        )),
        tls: PgTlsSettings {
            mode,
            ca_file: ca.map(Path::to_path_buf),
            cert_file: client.as_ref().map(|c| c.0.clone()),
            key_file: client.map(|c| c.1),
        },
        connect_timeout: Duration::from_secs(5),
        ..CatalogConfig::default()
    };
    PgCatalog::new(PgCatalogConfig::from(&cfg))
}

async fn seed(pg: &PgServer) {
    schema::init(&mut pg.client().await.unwrap()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_sslmodes_against_a_hostssl_only_server() {
    let pki = Pki::new(&[("pg", "127.0.0.1")], &[]).unwrap();
    let other = Pki::new(&[("pg", "127.0.0.1")], &[]).unwrap();
    let pg = tls_server(&pki, None).await;
    seed(&pg).await;
    let ca = pki.ca();

    // disable: the server has no plaintext line for us.
    let e = catalog(&pg, "127.0.0.1", SslMode::Disable, None, None)
        .load()
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("no pg_hba.conf entry"), "{e}");
    assert!(e.contains("no encryption"), "{e}");

    // verify-full with the right CA.
    let ok = catalog(&pg, "127.0.0.1", SslMode::VerifyFull, Some(&ca), None);
    ok.load().await.expect("verify-full with the right CA");
    // and the session is encrypted
    let config = PgCatalogConfig::from(&CatalogConfig {
        url: ConnString::new(format!(
            "postgresql://postgres@127.0.0.1:{}/postgres",
            pg.port()
        )),
        tls: PgTlsSettings {
            mode: SslMode::VerifyFull,
            ca_file: Some(ca.clone()),
            ..PgTlsSettings::default()
        },
        ..CatalogConfig::default()
    });
    let (client, conn) = config
        .session_config()
        .unwrap()
        .connect(config.tls.connector())
        .await
        .unwrap();
    tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));
    assert!(row.get::<_, String>(1).starts_with("TLSv1."));

    // A CA that did not sign the server's certificate.
    let e = catalog(
        &pg,
        "127.0.0.1",
        SslMode::VerifyFull,
        Some(&other.ca()),
        None,
    )
    .load()
    .await
    .unwrap_err()
    .to_string();
    // Both test CAs have the same subject, so rustls finds the "issuer" and reports the
    // signature that does not verify; with a differently named CA it is UnknownIssuer.
    assert!(e.contains("invalid peer certificate"), "{e}");
    assert!(
        e.contains("BadSignature") || e.contains("UnknownIssuer"),
        "{e}"
    );

    // The right CA, a host name the certificate does not carry.
    let e = catalog(&pg, "127.0.0.2", SslMode::VerifyFull, Some(&ca), None)
        .load()
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("invalid peer certificate"), "{e}");
    assert!(e.contains("127.0.0.2"), "{e}");

    // require encrypts without verifying: it accepts the unverifiable name too.
    catalog(&pg, "127.0.0.2", SslMode::Require, None, None)
        .load()
        .await
        .expect("require does not check the name");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_presents_a_client_certificate() {
    let pki = Pki::new(&[("pg", "127.0.0.1")], &["postgres"]).unwrap();
    let other = Pki::new(&[], &["postgres"]).unwrap();
    let pg = tls_server(&pki, Some(pki.ca())).await;
    seed(&pg).await;
    let ca = pki.ca();
    let e = catalog(&pg, "127.0.0.1", SslMode::VerifyFull, Some(&ca), None)
        .load()
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("certificate"), "{e}");
    let e = catalog(
        &pg,
        "127.0.0.1",
        SslMode::VerifyFull,
        Some(&ca),
        Some(other.client("postgres")),
    )
    .load()
    .await
    .unwrap_err()
    .to_string();
    assert!(!e.is_empty());
    catalog(
        &pg,
        "127.0.0.1",
        SslMode::VerifyFull,
        Some(&ca),
        Some(pki.client("postgres")),
    )
    .load()
    .await
    .expect("the client certificate of the server's CA is accepted");
}

/// Encrypted client backends of `application_name = 'ftsd'` on `pg`.
async fn ftsd_ssl_sessions(pg: &PgServer) -> (i64, i64) {
    let client = pg.client().await.unwrap();
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) \
             FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.application_name = 'ftsd'",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_uses_verified_tls_for_the_catalog_and_the_postgres_driver() {
    let pki = Pki::new(&[("pg", "127.0.0.1")], &[]).unwrap();
    let (cert, key) = pki.server("pg");
    let tls = PgServerTls {
        cert,
        key,
        client_ca: None,
    };
    let catalog = PgServer::builder()
        .tls(tls.clone())
        .start()
        .await
        .expect("catalog");
    seed(&catalog).await;
    let pair_builder = PgServer::builder()
        .auth(fts_testkit::pg::Auth::Scram)
        .password("test-superuser")
        .setting("wal_retrieve_retry_interval", "200ms")
        .setting("wal_receiver_status_interval", "1s")
        .tls(tls);
    let mut pair = PgPair::start_with(pair_builder, "seg0")
        .await
        .expect("pair");
    // The harness writes the configuration over the catalog's Unix socket.
    let socket = format!(
        "host={} port={} user=postgres dbname=postgres",
        catalog.socket_dir().display(),
        catalog.port()
    );
    fts_segsim::catalog::write_catalog(&socket, &pair.segments(0, 2, 3))
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let ca = pki.ca();
    let verified = format!(
        "sslmode = \"verify-full\"\nssl_ca_file = \"{}\"",
        ca.display()
    );
    let config = write_pg_driver_config(
        dir.path(),
        &PgDriverConfig {
            cluster: "pgtls",
            postgres: &verified,
            catalog: &format!(
                "url = \"postgresql://postgres@127.0.0.1:{}/postgres\"\n{verified}",
                catalog.port()
            ),
            ..PgDriverConfig::default()
        },
    );
    let daemon = Daemon::spawn(config, "single", &["run", "--no-election"], &[]);

    // The catalog session is encrypted, and so is a probe session on the primary.
    wait_for("an encrypted catalog session", LIMIT, || async {
        let (ssl, plain) = ftsd_ssl_sessions(&catalog).await;
        (ssl > 0 && plain == 0).then_some(())
    })
    .await;
    let client = pair.primary.client().await.unwrap();
    wait_for("an encrypted probe session on the primary", LIMIT, || {
        let client = &client;
        async move {
            let row = client
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
                     WHERE a.usename = $1 AND s.ssl",
                    &[&PROBE_ROLE],
                )
                .await
                .ok()?;
            (row.get::<_, i64>(0) > 0).then_some(())
        }
    })
    .await;
    drop(client);

    // A failover, over TLS all the way: the standby (dbid 3) becomes the primary.
    pair.primary.kill().unwrap();
    let admin = catalog.client().await.unwrap();
    wait_for("dbid 3 promoted in the catalog", LIMIT, || {
        let admin = &admin;
        async move {
            let row = admin
                .query_one(
                    "SELECT role::text FROM gp_segment_configuration WHERE dbid = 3",
                    &[],
                )
                .await
                .ok()?;
            (row.get::<_, String>(0) == Role::Primary.as_char().to_string()).then_some(())
        }
    })
    .await;
    let (_, plain) = ftsd_ssl_sessions(&catalog).await;
    assert_eq!(plain, 0, "no plaintext session of ftsd on the catalog");
    assert!(
        !daemon.log_text().contains("TLS settings unusable"),
        "{}",
        daemon.log_text()
    );
}
