//! The FTS client against in-test TCP servers that answer correctly, wrongly or not at all.

use bytes::{BufMut, BytesMut};
use ftsd::wire::client::{send_message, Credentials, Target, BOOL_OID};
use ftsd::wire::failure::{AttemptError, FailureKind};
use ftsd::wire::frame::{self, put_cstr, put_tagged};
use ftsd::wire::{parse_last_replayed, MessageType, ProbeReply, RESPONSE_COLUMNS};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const TIMEOUT: Duration = Duration::from_secs(10);
const SHORT_TIMEOUT: Duration = Duration::from_millis(200);
const ONE: Option<&[u8]> = Some(&[1]);
const ZERO: Option<&[u8]> = Some(&[0]);

/// What the server does after reading the startup packet.
enum Script {
    /// AuthenticationOk + ReadyForQuery, read the query, send these bytes, drain until EOF.
    Reply(BytesMut),
    /// Like `Reply`, then close the connection.
    ReplyAndClose(BytesMut),
    /// Send these bytes instead of the handshake, drain until EOF.
    Startup(BytesMut),
    /// Never send anything.
    Silent,
    /// Handshake, read the query, never answer.
    SilentAfterQuery,
    /// Handshake, read the query, close.
    CloseAfterQuery,
}

/// What the server saw from the client.
#[derive(Debug, Default)]
struct Seen {
    protocol: i32,
    params: Vec<(String, String)>,
    query: Option<String>,
    terminated: bool,
}

async fn serve(script: Script) -> (u16, JoinHandle<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = BytesMut::new();
        let mut seen = Seen::default();
        let mut startup = frame::read_untagged(&mut sock, &mut buf).await.unwrap();
        seen.protocol = i32::from_be_bytes(startup[..4].try_into().unwrap());
        let _ = startup.split_to(4);
        while let Some(key) = frame::take_cstr(&mut startup).filter(|k| !k.is_empty()) {
            let value = frame::take_cstr(&mut startup).unwrap();
            seen.params.push((key, value));
        }
        match script {
            Script::Silent => drain(&mut sock, &mut buf, &mut seen).await,
            Script::Startup(bytes) => {
                write(&mut sock, &bytes).await;
                drain(&mut sock, &mut buf, &mut seen).await;
            }
            Script::Reply(bytes) => {
                write(&mut sock, &handshake()).await;
                read_query(&mut sock, &mut buf, &mut seen).await;
                write(&mut sock, &bytes).await;
                drain(&mut sock, &mut buf, &mut seen).await;
            }
            Script::ReplyAndClose(bytes) => {
                write(&mut sock, &handshake()).await;
                read_query(&mut sock, &mut buf, &mut seen).await;
                write(&mut sock, &bytes).await;
            }
            Script::SilentAfterQuery => {
                write(&mut sock, &handshake()).await;
                read_query(&mut sock, &mut buf, &mut seen).await;
                drain(&mut sock, &mut buf, &mut seen).await;
            }
            Script::CloseAfterQuery => {
                write(&mut sock, &handshake()).await;
                read_query(&mut sock, &mut buf, &mut seen).await;
            }
        }
        seen
    });
    (port, task)
}

async fn write(sock: &mut TcpStream, bytes: &[u8]) {
    use tokio::io::AsyncWriteExt;
    // The client may already have given up; that is part of some scenarios.
    let _ = sock.write_all(bytes).await;
}

async fn read_query(sock: &mut TcpStream, buf: &mut BytesMut, seen: &mut Seen) {
    let (tag, mut body) = frame::read_tagged(sock, buf).await.unwrap();
    assert_eq!(tag, b'Q');
    seen.query = frame::take_cstr(&mut body);
}

/// Reads client messages until EOF, noting a Terminate.
async fn drain(sock: &mut TcpStream, buf: &mut BytesMut, seen: &mut Seen) {
    while let Ok((tag, _)) = frame::read_tagged(sock, buf).await {
        seen.terminated |= tag == b'X';
    }
}

fn handshake() -> BytesMut {
    let mut out = BytesMut::new();
    put_tagged(&mut out, b'R', |b| b.put_i32(0));
    put_tagged(&mut out, b'S', |b| {
        put_cstr(b, "server_version");
        put_cstr(b, "12.12");
    });
    put_tagged(&mut out, b'K', |b| {
        b.put_i32(1234);
        b.put_i32(5678);
    });
    put_tagged(&mut out, b'Z', |b| b.put_u8(b'I'));
    out
}

fn row_description(out: &mut BytesMut, columns: usize, type_oid: u32) {
    put_tagged(out, b'T', |b| {
        b.put_i16(columns as i16);
        for i in 0..columns {
            put_cstr(b, RESPONSE_COLUMNS.get(i).copied().unwrap_or("extra"));
            b.put_u32(0);
            b.put_i16(i as i16 + 1);
            b.put_u32(type_oid);
            b.put_i16(1);
            b.put_i32(-1);
            b.put_i16(0);
        }
    });
}

fn data_row(out: &mut BytesMut, values: &[Option<&[u8]>]) {
    put_tagged(out, b'D', |b| {
        b.put_i16(values.len() as i16);
        for value in values {
            match value {
                Some(v) => {
                    b.put_i32(v.len() as i32);
                    b.put_slice(v);
                }
                None => b.put_i32(-1),
            }
        }
    });
}

fn complete_and_ready(out: &mut BytesMut) {
    put_tagged(out, b'C', |b| put_cstr(b, "PROBE"));
    put_tagged(out, b'Z', |b| b.put_u8(b'I'));
}

fn error_response(out: &mut BytesMut, severity: &str, code: &str, message: &str, detail: &str) {
    put_tagged(out, b'E', |b| {
        for (field, value) in [
            (b'S', severity),
            (b'V', severity),
            (b'C', code),
            (b'M', message),
        ] {
            b.put_u8(field);
            put_cstr(b, value);
        }
        if !detail.is_empty() {
            b.put_u8(b'D');
            put_cstr(b, detail);
        }
        b.put_u8(0);
    });
}

/// A well-formed reply whose five values are the given raw bytes.
fn reply_with(values: [&[u8]; 5]) -> BytesMut {
    let mut out = BytesMut::new();
    row_description(&mut out, 5, BOOL_OID);
    data_row(&mut out, &values.map(Some));
    complete_and_ready(&mut out);
    out
}

async fn run_with(
    script: Script,
    kind: MessageType,
    creds: &Credentials,
    timeout: Duration,
) -> (Result<ProbeReply, AttemptError>, Seen) {
    let (port, server) = serve(script).await;
    let target = Target {
        host: "127.0.0.1",
        port,
        dbid: 2,
        content: 0,
    };
    let result = send_message(&target, kind, creds, timeout).await;
    (result, server.await.unwrap())
}

async fn run(script: Script) -> (Result<ProbeReply, AttemptError>, Seen) {
    run_with(
        script,
        MessageType::Probe,
        &Credentials::new("gpadmin"),
        TIMEOUT,
    )
    .await
}

async fn failure(script: Script) -> AttemptError {
    run(script).await.0.expect_err("attempt must fail")
}

async fn protocol_error(script: Script, expect: &str) {
    let err = failure(script).await;
    assert_eq!(err.kind, FailureKind::Protocol, "{err:?}");
    assert!(
        err.message.contains(expect),
        "{:?} does not contain {expect:?}",
        err.message
    );
}

#[tokio::test]
async fn correct_reply_startup_packet_query_and_terminate() {
    let (result, seen) = run(Script::Reply(reply_with([&[1], &[0], &[1], &[0], &[1]]))).await;
    assert_eq!(
        result.unwrap(),
        ProbeReply {
            is_mirror_up: true,
            is_in_sync: false,
            is_syncrep_enabled: true,
            is_role_mirror: false,
            request_retry: true,
        }
    );
    assert_eq!(seen.protocol, 196608, "protocol 3.0");
    assert_eq!(
        seen.params,
        vec![
            ("user".to_owned(), "gpadmin".to_owned()),
            ("gpconntype".to_owned(), "fts".to_owned()),
        ],
        "only user and gpconntype: no database, no options"
    );
    assert_eq!(seen.query.as_deref(), Some("PROBE dbid=2 contid=0"));
    assert!(seen.terminated, "client sends Terminate after the reply");

    let (result, _) = run(Script::Reply(reply_with([&[0], &[1], &[0], &[1], &[0]]))).await;
    assert_eq!(
        result.unwrap(),
        ProbeReply {
            is_mirror_up: false,
            is_in_sync: true,
            is_syncrep_enabled: false,
            is_role_mirror: true,
            request_retry: false,
        }
    );
}

#[tokio::test]
async fn every_message_type_sends_its_text() {
    for (kind, text) in [
        (MessageType::SyncrepOff, "SYNCREP_OFF dbid=2 contid=0"),
        (MessageType::Promote, "PROMOTE dbid=2 contid=0"),
    ] {
        let (result, seen) = run_with(
            Script::Reply(reply_with([&[0]; 5])),
            kind,
            &Credentials::new("gpadmin"),
            TIMEOUT,
        )
        .await;
        assert_eq!(result.unwrap(), ProbeReply::default());
        assert_eq!(seen.query.as_deref(), Some(text));
    }
}

/// Stricter than the in-core prober (which treats any non-zero first byte as true): only the raw
/// bytes 0x00 and 0x01 are accepted.
#[tokio::test]
async fn values_must_be_raw_boolean_bytes() {
    for (values, column) in [
        ([&[2u8][..], &[0], &[0], &[0], &[0]], "is_mirror_up"),
        (
            [&b"t"[..], &b"f"[..], &b"f"[..], &b"f"[..], &b"f"[..]],
            "is_mirror_up",
        ),
        ([&[1u8][..], &b"f"[..], &[0], &[0], &[0]], "is_in_sync"),
        ([&[1u8][..], &[1], &[1], &[1], &[]], "request_retry"),
        (
            [&[1u8][..], &[1], &[1, 0], &[1], &[1]],
            "is_syncrep_enabled",
        ),
    ] {
        let expect = format!("value of column {column} is not a raw boolean byte");
        protocol_error(Script::Reply(reply_with(values)), &expect).await;
    }
}

#[tokio::test]
async fn null_value_is_rejected() {
    let mut out = BytesMut::new();
    row_description(&mut out, 5, BOOL_OID);
    data_row(&mut out, &[ONE, ONE, None, ZERO, ZERO]);
    complete_and_ready(&mut out);
    protocol_error(
        Script::Reply(out),
        "value of column is_syncrep_enabled is null",
    )
    .await;
}

#[tokio::test]
async fn four_columns_are_rejected() {
    let mut out = BytesMut::new();
    row_description(&mut out, 4, BOOL_OID);
    data_row(&mut out, &[ONE; 4]);
    complete_and_ready(&mut out);
    protocol_error(
        Script::Reply(out),
        "RowDescription has 4 columns, expected 5",
    )
    .await;
}

#[tokio::test]
async fn text_type_oid_is_rejected() {
    let mut out = BytesMut::new();
    row_description(&mut out, 5, 25);
    data_row(&mut out, &[ONE; 5]);
    complete_and_ready(&mut out);
    protocol_error(
        Script::Reply(out),
        "column is_mirror_up has type oid 25, expected 16 (bool)",
    )
    .await;
}

#[tokio::test]
async fn two_rows_are_rejected() {
    let mut out = BytesMut::new();
    row_description(&mut out, 5, BOOL_OID);
    data_row(&mut out, &[ONE; 5]);
    data_row(&mut out, &[ZERO; 5]);
    complete_and_ready(&mut out);
    protocol_error(Script::Reply(out), "more than one DataRow").await;
}

#[tokio::test]
async fn zero_rows_are_rejected() {
    let mut out = BytesMut::new();
    row_description(&mut out, 5, BOOL_OID);
    complete_and_ready(&mut out);
    protocol_error(Script::Reply(out), "no DataRow").await;
}

#[tokio::test]
async fn unexpected_message_in_reply_is_rejected() {
    let mut out = BytesMut::new();
    put_tagged(&mut out, b'G', |b| {
        b.put_u8(0);
        b.put_i16(0);
    });
    protocol_error(Script::Reply(out), "unexpected message 'G' in reply").await;
}

#[tokio::test]
async fn giant_length_prefix_is_rejected() {
    let out = BytesMut::from(&[b'D', 0x7f, 0xff, 0xff, 0xff][..]);
    protocol_error(Script::Reply(out), "length 2147483647").await;
}

#[tokio::test]
async fn close_mid_message_is_protocol_and_at_boundary_is_reset() {
    let mut out = BytesMut::new();
    row_description(&mut out, 5, BOOL_OID);
    out.truncate(out.len() - 3);
    protocol_error(Script::ReplyAndClose(out), "in the middle of a message").await;

    // A close at a message boundary is a reset, even mid-reply.
    let mut out = BytesMut::new();
    row_description(&mut out, 5, BOOL_OID);
    let err = failure(Script::ReplyAndClose(out)).await;
    assert_eq!(err.kind, FailureKind::Reset, "{err:?}");
}

#[tokio::test]
async fn garbage_is_rejected() {
    protocol_error(
        Script::Startup(BytesMut::from(&b"HTTP/1.1 400 Bad Request\r\n\r\n"[..])),
        "outside 4..=65536",
    )
    .await;

    // Deterministic pseudo-random bytes after a valid handshake.
    let mut state: u32 = 0x2545_f491;
    let garbage: Vec<u8> = (0..512)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 24) as u8
        })
        .collect();
    let err = failure(Script::Reply(BytesMut::from(&garbage[..]))).await;
    assert_eq!(err.kind, FailureKind::Protocol, "{err:?}");
}

#[tokio::test]
async fn silent_server_times_out_in_startup() {
    let (result, _) = run_with(
        Script::Silent,
        MessageType::Probe,
        &Credentials::new("gpadmin"),
        SHORT_TIMEOUT,
    )
    .await;
    let err = result.unwrap_err();
    assert_eq!(err.kind, FailureKind::Timeout, "{err:?}");
    assert!(err.message.contains("phase: startup"), "{err}");
}

#[tokio::test]
async fn silent_after_query_times_out_in_reply() {
    let (result, _) = run_with(
        Script::SilentAfterQuery,
        MessageType::Probe,
        &Credentials::new("gpadmin"),
        SHORT_TIMEOUT,
    )
    .await;
    let err = result.unwrap_err();
    assert_eq!(err.kind, FailureKind::Timeout, "{err:?}");
    assert!(err.message.contains("phase: reply"), "{err}");
}

#[tokio::test]
async fn close_after_startup_is_reset() {
    let err = failure(Script::CloseAfterQuery).await;
    assert_eq!(err.kind, FailureKind::Reset, "{err:?}");
}

#[tokio::test]
async fn error_response_to_the_query_is_error_reply() {
    let mut out = BytesMut::new();
    error_response(
        &mut out,
        "ERROR",
        "XX000",
        "disk IO check during FTS probe failed",
        "",
    );
    put_tagged(&mut out, b'Z', |b| b.put_u8(b'I'));
    let (result, seen) = run(Script::Reply(out)).await;
    let err = result.unwrap_err();
    assert!(seen.terminated, "client still sends Terminate");
    assert_eq!(err.kind, FailureKind::ErrorReply, "{err:?}");
    assert_eq!(err.message, "disk IO check during FTS probe failed");
    assert_eq!(err.sqlstate.as_deref(), Some("XX000"));
}

#[tokio::test]
async fn recovery_fatal_keeps_detail_lsn() {
    let mut out = BytesMut::new();
    error_response(
        &mut out,
        "FATAL",
        "57P03",
        "the database system is in recovery mode",
        "last replayed record at 0/3000060",
    );
    let err = failure(Script::Startup(out)).await;
    assert_eq!(err.kind, FailureKind::StartupError, "{err:?}");
    assert_eq!(err.sqlstate.as_deref(), Some("57P03"));
    assert_eq!(err.message, "the database system is in recovery mode");
    let text = err.full_text();
    assert!(text.contains("last replayed record at 0/3000060"), "{text}");
    assert_eq!(parse_last_replayed(&text), Some(0x3000060));
}

/// The failure of a startup answered with AuthenticationOk, then a FATAL `code`.
async fn fatal_after_authentication_ok(code: &str, message: &str) -> AttemptError {
    let mut out = BytesMut::new();
    put_tagged(&mut out, b'R', |b| b.put_i32(0));
    error_response(&mut out, "FATAL", code, message, "");
    failure(Script::Startup(out)).await
}

#[tokio::test]
async fn fatal_after_authentication_ok_is_startup_error() {
    let err = fatal_after_authentication_ok("53300", "sorry, too many clients already").await;
    assert_eq!(err.kind, FailureKind::StartupError, "{err:?}");
    assert_eq!(err.sqlstate.as_deref(), Some("53300"));
}

/// A segment refusing the probe role ("must be superuser", 42501) is a prober fault: the
/// segment answered, the role is what is wrong (docs/safety.md).
#[tokio::test]
async fn must_be_superuser_after_authentication_ok_is_a_permission_prober_fault() {
    let err =
        fatal_after_authentication_ok("42501", "must be superuser role to handle FTS request")
            .await;
    assert_eq!(err.kind, FailureKind::Permission, "{err:?}");
    assert!(err.kind.is_prober_fault());
    assert_eq!(err.sqlstate.as_deref(), Some("42501"));
}

#[tokio::test]
async fn auth_failures() {
    // Invalid authorization during startup is Auth, not StartupError.
    let mut out = BytesMut::new();
    error_response(
        &mut out,
        "FATAL",
        "28000",
        "no pg_hba.conf entry for host \"127.0.0.1\"",
        "",
    );
    assert_eq!(failure(Script::Startup(out)).await.kind, FailureKind::Auth);

    // Methods we cannot answer.
    for (code, name) in [(7, "GSSAPI"), (9, "SSPI"), (2, "Kerberos V5")] {
        let mut out = BytesMut::new();
        put_tagged(&mut out, b'R', |b| b.put_i32(code));
        let err = failure(Script::Startup(out)).await;
        assert_eq!(err.kind, FailureKind::Auth, "{err:?}");
        assert!(err.message.contains(name), "{err}");
    }

    // SASL without SCRAM-SHA-256.
    let mut out = BytesMut::new();
    put_tagged(&mut out, b'R', |b| {
        b.put_i32(10);
        put_cstr(b, "SCRAM-SHA-256-PLUS");
        b.put_u8(0);
    });
    let err = failure(Script::Startup(out)).await;
    assert_eq!(err.kind, FailureKind::Auth, "{err:?}");
    assert!(err.message.contains("SCRAM-SHA-256-PLUS"), "{err}");

    // A password is asked for but none is configured.
    let mut out = BytesMut::new();
    put_tagged(&mut out, b'R', |b| {
        b.put_i32(5);
        b.put_slice(&[1, 2, 3, 4]);
    });
    let err = failure(Script::Startup(out)).await;
    assert_eq!(err.kind, FailureKind::Auth, "{err:?}");
    assert!(err.message.contains("no password is configured"), "{err}");
}
