//! The FTS client against a real (vanilla) PostgreSQL.
//!
//! Vanilla PostgreSQL authenticates the connection and only then rejects the unknown startup
//! parameter with FATAL 42704 `unrecognized configuration parameter "gpconntype"`. Getting that
//! error therefore proves the authentication method worked end to end. (Before that it checks
//! that the database, which defaults to the user name since we send none, exists.)

use fts_testkit::pg::{Auth, PgServer};
use ftsd::wire::client::{send_message, Credentials, Target};
use ftsd::wire::failure::{AttemptError, FailureKind};
use ftsd::wire::MessageType;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(10);
const PASSWORD: &str = "fts p@ss'word";

async fn probe(pg: &PgServer, creds: &Credentials) -> AttemptError {
    let target = Target {
        host: pg.host(),
        port: pg.port(),
        dbid: 2,
        content: 0,
    };
    send_message(&target, MessageType::Probe, creds, TIMEOUT)
        .await
        .expect_err("vanilla PostgreSQL cannot answer an FTS message")
}

fn assert_gpconntype_rejected(err: &AttemptError) {
    assert_eq!(err.kind, FailureKind::StartupError, "{err:?}");
    assert_eq!(err.sqlstate.as_deref(), Some("42704"), "{err:?}");
    assert_eq!(
        err.message,
        r#"unrecognized configuration parameter "gpconntype""#
    );
}

async fn check_auth_method(auth: Auth) {
    let pg = PgServer::builder()
        .auth(auth)
        .superuser("gpadmin")
        .password(PASSWORD)
        .start()
        .await
        .expect("start postgres");
    // We send no `database` (Greenplum blanks it for FTS connections); vanilla PostgreSQL
    // defaults it to the user name and checks it exists before looking at `gpconntype`.
    let client = pg.client().await.unwrap();
    client
        .batch_execute("create database gpadmin")
        .await
        .unwrap();

    let good = Credentials::new("gpadmin").with_password(PASSWORD);
    assert_gpconntype_rejected(&probe(&pg, &good).await);

    if auth == Auth::Trust {
        // No password needed at all.
        assert_gpconntype_rejected(&probe(&pg, &Credentials::new("gpadmin")).await);
        return;
    }

    let wrong = Credentials::new("gpadmin").with_password("not it");
    let err = probe(&pg, &wrong).await;
    assert_eq!(err.kind, FailureKind::Auth, "{auth:?}: {err:?}");
    assert_eq!(err.sqlstate.as_deref(), Some("28P01"), "{err:?}");

    let missing = Credentials::new("gpadmin");
    let err = probe(&pg, &missing).await;
    assert_eq!(err.kind, FailureKind::Auth, "{auth:?}: {err:?}");
    assert!(err.message.contains("no password is configured"), "{err}");

    // The server log confirms which pg_hba line (and so which method) rejected the password.
    let log = pg.log_tail(50);
    assert!(
        log.contains("password authentication failed for user \"gpadmin\""),
        "{log}"
    );
    let matched = format!("{}\"", auth.hba_method());
    assert!(
        log.lines()
            .any(|l| l.contains("Connection matched") && l.ends_with(&matched)),
        "{log}"
    );
    if auth == Auth::Md5 {
        // A SCRAM verifier would make the server fall back to SCRAM; the harness stores MD5.
        let row = client
            .query_one(
                "select rolpassword like 'md5%' from pg_authid where rolname = 'gpadmin'",
                &[],
            )
            .await
            .unwrap();
        assert!(row.get::<_, bool>(0), "password must be stored as MD5");
    }
}

#[tokio::test]
async fn trust() {
    check_auth_method(Auth::Trust).await;
}

#[tokio::test]
async fn cleartext_password() {
    check_auth_method(Auth::Password).await;
}

#[tokio::test]
async fn md5() {
    check_auth_method(Auth::Md5).await;
}

#[tokio::test]
async fn scram_sha_256() {
    check_auth_method(Auth::Scram).await;
}

#[tokio::test]
async fn stopped_server_refuses_and_restarted_one_answers() {
    let mut pg = PgServer::builder().start().await.expect("start postgres");
    let creds = Credentials::new("postgres");
    assert_gpconntype_rejected(&probe(&pg, &creds).await);

    pg.stop_immediate().unwrap();
    let err = probe(&pg, &creds).await;
    assert_eq!(err.kind, FailureKind::Refused, "{err:?}");

    pg.start().await.unwrap();
    assert_gpconntype_rejected(&probe(&pg, &creds).await);
}

#[tokio::test]
async fn nothing_listening_is_refused() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let target = Target {
        host: "127.0.0.1",
        port,
        dbid: 2,
        content: 0,
    };
    let err = send_message(
        &target,
        MessageType::Probe,
        &Credentials::new("gpadmin"),
        TIMEOUT,
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind, FailureKind::Refused, "{err:?}");
}

#[tokio::test]
async fn unresolvable_host_is_resolve() {
    let target = Target {
        host: "no-such-host.invalid",
        port: 5432,
        dbid: 2,
        content: 0,
    };
    let err = send_message(
        &target,
        MessageType::Probe,
        &Credentials::new("gpadmin"),
        TIMEOUT,
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind, FailureKind::Resolve, "{err:?}");
}
