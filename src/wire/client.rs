//! Native FTS client: one attempt = one connection, as the in-core prober does
//! (`docs/protocol.md`).
//!
//! [`send_message`] resolves the target, connects, sends a StartupMessage with `user` and
//! `gpconntype=fts`, authenticates (trust, cleartext, MD5, SCRAM-SHA-256 without channel
//! binding), sends `<TYPE> dbid=<d> contid=<c>` as a simple query, validates the one-row reply and
//! terminates. Every failure comes back as an [`AttemptError`] whose [`FailureKind`] says why;
//! nothing here panics on what the peer sends.
//!
//! The reply is validated more strictly than the in-core prober does. Greenplum's prober reads
//! only the first byte of each value and treats non-zero as true, so a text-format `f` (0x66)
//! would read as true. Segments always write the C bool as one raw byte 0x00 or 0x01, so this
//! client requires each value to be exactly that and reports anything else (`t`/`f`, `2`, empty,
//! longer values, NULL) as [`FailureKind::Protocol`]: a peer that answers differently is not a
//! Greenplum FTS handler, and guessing its meaning could mark a healthy mirror up or down.
//!
//! Connection close classification: a close at a message boundary is [`FailureKind::Reset`] (the
//! peer went away); a close in the middle of a message is [`FailureKind::Protocol`] (truncated
//! message).
//!
//! Cost per attempt on the happy path: one socket and one `BytesMut` (used for both directions);
//! no other heap allocations except those inside DNS resolution (pass IP addresses to avoid it)
//! and SCRAM.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::frontend;
use std::fmt::{self, Write as _};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::failure::{AttemptError, FailureKind};
use super::frame::{self, FrameError, MAX_MESSAGE_LEN};
use super::{MessageType, ProbeReply, GPCONNTYPE_FTS, GPCONNTYPE_PARAM, RESPONSE_COLUMNS};
use crate::model::{ContentId, Dbid};
pub use crate::secret::Secret;

/// Type oid of `bool`, the type of every reply column.
pub const BOOL_OID: u32 = 16;

/// Initial capacity of the per-attempt buffer: a whole FTS exchange fits without growing.
const BUF_CAPACITY: usize = 512;

/// Who the prober logs in as. Primaries authenticate normally and require a superuser; mirrors
/// accept any FTS connection without checks (`docs/protocol.md`, authentication).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: Option<Secret>,
    /// The local address connections are bound to (`probe.source_address`); None: the
    /// kernel chooses.
    pub source: Option<IpAddr>,
}

impl Credentials {
    pub fn new(user: impl Into<String>) -> Self {
        Credentials {
            user: user.into(),
            password: None,
            source: None,
        }
    }

    pub fn with_password(mut self, password: impl Into<Secret>) -> Self {
        self.password = Some(password.into());
        self
    }
}

/// The instance to message: where it listens and the dbid/content the query names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    /// An IP address (no DNS lookup) or a host name (resolved per attempt, IPv4 preferred).
    pub host: &'a str,
    pub port: u16,
    pub dbid: Dbid,
    pub content: ContentId,
}

/// Where an attempt was when it failed; named in timeout and I/O error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Resolve,
    Connect,
    Startup,
    Reply,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Resolve => "resolve",
            Phase::Connect => "connect",
            Phase::Startup => "startup",
            Phase::Reply => "reply",
        })
    }
}

/// One attempt: resolve, connect, startup, authenticate, send `<TYPE> dbid=<d> contid=<c>`, read
/// the 5-value reply. The whole attempt is bounded by `timeout`; on expiry the error is
/// [`FailureKind::Timeout`] naming the phase (resolve / connect / startup / reply).
pub async fn send_message(
    target: &Target<'_>,
    kind: MessageType,
    creds: &Credentials,
    timeout: Duration,
) -> Result<ProbeReply, AttemptError> {
    send_message_by(target, kind, creds, Instant::now() + timeout).await
}

/// Like [`send_message`], bounded by an absolute `deadline`. The message itself is never
/// written once the deadline has passed, even when the process was paused mid-attempt (a
/// timer only fires after the socket work that became ready meanwhile has run): the caller's
/// authority to act ends at that deadline.
pub async fn send_message_by(
    target: &Target<'_>,
    kind: MessageType,
    creds: &Credentials,
    deadline: Instant,
) -> Result<ProbeReply, AttemptError> {
    let mut phase = Phase::Resolve;
    let timeout = deadline.saturating_duration_since(Instant::now());
    let outcome = tokio::time::timeout_at(
        deadline.into(),
        attempt(target, kind, creds, deadline, &mut phase),
    )
    .await;
    let result = match outcome {
        Ok(result) => result,
        // A resolver that hangs (a DNS outage on this host) is this host's fault, not the
        // segment's: the attempt never reached it.
        Err(_) if matches!(phase, Phase::Resolve) => Err(AttemptError::new(
            FailureKind::Resolve,
            format!("host name not resolved within {timeout:?}"),
        )),
        Err(_) => Err(AttemptError::new(
            FailureKind::Timeout,
            format!("no answer within {timeout:?} (phase: {phase})"),
        )),
    };
    if let Err(e) = &result {
        tracing::debug!(
            host = target.host,
            port = target.port,
            dbid = target.dbid,
            content = target.content,
            message = kind.as_str(),
            "fts attempt failed: {}",
            e.full_text()
        );
    }
    result
}

async fn attempt(
    target: &Target<'_>,
    kind: MessageType,
    creds: &Credentials,
    deadline: Instant,
    phase: &mut Phase,
) -> Result<ProbeReply, AttemptError> {
    *phase = Phase::Resolve;
    let addr = resolve(target.host, target.port).await?;
    *phase = Phase::Connect;
    let mut stream = connect(addr, creds.source)
        .await
        .map_err(|e| io_error(e, Phase::Connect))?;
    stream
        .set_nodelay(true)
        .map_err(|e| io_error(e, Phase::Connect))?;
    let mut buf = BytesMut::with_capacity(BUF_CAPACITY);
    exchange(&mut stream, &mut buf, target, kind, creds, deadline, phase).await
}

/// Connects to `addr`, from `source` when one is configured (a source address this host
/// does not have fails with `EADDRNOTAVAIL`: a prober fault).
async fn connect(addr: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let Some(source) = source else {
        return TcpStream::connect(addr).await;
    };
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(addr).await
}

async fn resolve(host: &str, port: u16) -> Result<SocketAddr, AttemptError> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let addrs = tokio::net::lookup_host((bare, port)).await.map_err(|e| {
        AttemptError::new(
            FailureKind::Resolve,
            format!("could not resolve host {host:?}: {e}"),
        )
    })?;
    let mut first = None;
    for addr in addrs {
        if addr.is_ipv4() {
            return Ok(addr);
        }
        first.get_or_insert(addr);
    }
    first.ok_or_else(|| {
        AttemptError::new(
            FailureKind::Resolve,
            format!("host {host:?} resolved to no addresses"),
        )
    })
}

/// The protocol exchange over an established stream (generic so tests can drive it in memory).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    target: &Target<'_>,
    kind: MessageType,
    creds: &Credentials,
    deadline: Instant,
    phase: &mut Phase,
) -> Result<ProbeReply, AttemptError> {
    *phase = Phase::Startup;
    let at = buf.len();
    frontend::startup_message(
        [
            ("user", creds.user.as_str()),
            (GPCONNTYPE_PARAM, GPCONNTYPE_FTS),
        ],
        buf,
    )
    .map_err(|_| {
        buf.truncate(at);
        AttemptError::new(FailureKind::Auth, "user name contains a NUL byte")
    })?;
    flush(stream, buf, at, *phase).await?;
    authenticate(stream, buf, creds, *phase).await?;
    wait_ready(stream, buf, *phase).await?;

    *phase = Phase::Reply;
    if Instant::now() >= deadline {
        return Err(AttemptError::new(
            FailureKind::Timeout,
            format!("deadline passed before {kind} was written; not sent"),
        ));
    }
    let at = buf.len();
    frame::put_tagged(buf, b'Q', |b| {
        // Same text as `MessageType::query`, written in place.
        let _ = write!(
            b,
            "{} dbid={} contid={}",
            kind.as_str(),
            target.dbid,
            target.content
        );
        b.put_u8(0);
    });
    flush(stream, buf, at, *phase).await?;
    let reply = read_reply(stream, buf).await;

    // Polite close while the server still waits for us (as libpq's PQfinish does); the answer is
    // already complete, so a failure here does not matter.
    if reply
        .as_ref()
        .map_or_else(|e| e.kind == FailureKind::ErrorReply, |_| true)
    {
        let at = buf.len();
        frontend::terminate(buf);
        let _ = flush(stream, buf, at, *phase).await;
    }
    reply
}

/// Writes `buf[at..]` (outgoing bytes appended after any unread incoming ones) and removes them.
async fn flush<S: AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    at: usize,
    phase: Phase,
) -> Result<(), AttemptError> {
    let written = stream.write_all(&buf[at..]).await;
    buf.truncate(at);
    written.map_err(|e| io_error(e, phase))
}

async fn next_message<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    phase: Phase,
) -> Result<(u8, Bytes), AttemptError> {
    match frame::read_tagged(stream, buf).await {
        Ok(message) => Ok(message),
        Err(FrameError::BadLength(len)) => Err(protocol(format!(
            "message {} during {phase} has length {len}, outside 4..={MAX_MESSAGE_LEN}",
            Tag(buf.first().copied().unwrap_or(0))
        ))),
        Err(FrameError::Closed) if buf.is_empty() => Err(AttemptError::new(
            FailureKind::Reset,
            format!("server closed the connection during {phase}"),
        )),
        Err(FrameError::Closed) => Err(protocol(format!(
            "server closed the connection in the middle of a message during {phase} \
             ({} bytes of a truncated message)",
            buf.len()
        ))),
        Err(FrameError::Io(e)) => Err(io_error(e, phase)),
    }
}

// Authentication request codes (`AUTH_REQ_*`).
const AUTH_OK: i32 = 0;
const AUTH_KRB5: i32 = 2;
const AUTH_CLEARTEXT: i32 = 3;
const AUTH_MD5: i32 = 5;
const AUTH_SCM: i32 = 6;
const AUTH_GSS: i32 = 7;
const AUTH_GSS_CONT: i32 = 8;
const AUTH_SSPI: i32 = 9;
const AUTH_SASL: i32 = 10;
const AUTH_SASL_CONT: i32 = 11;
const AUTH_SASL_FIN: i32 = 12;

/// Runs the authentication exchange up to and including AuthenticationOk.
async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    creds: &Credentials,
    phase: Phase,
) -> Result<(), AttemptError> {
    loop {
        let mut body = expect_auth(stream, buf, phase).await?;
        let code = take_i32(&mut body)
            .ok_or_else(|| protocol("truncated authentication request".into()))?;
        match code {
            AUTH_OK => return Ok(()),
            AUTH_CLEARTEXT => {
                let password = need_password(creds, "a cleartext password")?;
                let at = buf.len();
                frontend::password_message(password.as_bytes(), buf).map_err(|_| {
                    buf.truncate(at);
                    AttemptError::new(FailureKind::Auth, "password contains a NUL byte")
                })?;
                flush(stream, buf, at, phase).await?;
            }
            AUTH_MD5 => {
                let password = need_password(creds, "an MD5 password")?;
                if body.len() != 4 {
                    return Err(protocol(format!(
                        "MD5 authentication request carries {} salt bytes, expected 4",
                        body.len()
                    )));
                }
                let salt = [body[0], body[1], body[2], body[3]];
                let hash = md5_hash(creds.user.as_bytes(), password.as_bytes(), salt);
                let at = buf.len();
                // The hash is hex text, so it cannot contain a NUL.
                let _ = frontend::password_message(hash.as_bytes(), buf);
                flush(stream, buf, at, phase).await?;
            }
            AUTH_SASL => scram(stream, buf, creds, body, phase).await?,
            AUTH_KRB5 => return Err(unsupported_auth("Kerberos V5")),
            AUTH_SCM => return Err(unsupported_auth("SCM credentials")),
            AUTH_GSS | AUTH_GSS_CONT => return Err(unsupported_auth("GSSAPI")),
            AUTH_SSPI => return Err(unsupported_auth("SSPI")),
            AUTH_SASL_CONT | AUTH_SASL_FIN => {
                return Err(protocol(format!(
                    "SASL authentication message (code {code}) without a SASL exchange"
                )))
            }
            other => {
                return Err(unsupported_auth(&format!(
                    "unknown authentication request code {other}"
                )))
            }
        }
    }
}

/// SCRAM-SHA-256 without channel binding (plain TCP). `mechanisms` is the body of the
/// AuthenticationSASL request after its code. Returns once the server's signature is verified;
/// AuthenticationOk follows and is read by the caller.
async fn scram<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    creds: &Credentials,
    mut mechanisms: Bytes,
    phase: Phase,
) -> Result<(), AttemptError> {
    let mut offered = false;
    let mut names = String::new();
    loop {
        let name = frame::take_cstr(&mut mechanisms)
            .ok_or_else(|| protocol("truncated SASL mechanism list".into()))?;
        if name.is_empty() {
            break;
        }
        offered |= name == sasl::SCRAM_SHA_256;
        if !names.is_empty() {
            names.push_str(", ");
        }
        names.push_str(&name);
    }
    if !offered {
        return Err(unsupported_auth(&format!(
            "SASL with mechanisms [{names}] (only {} is supported)",
            sasl::SCRAM_SHA_256
        )));
    }
    let password = need_password(creds, "SCRAM-SHA-256 authentication")?;
    let mut scram =
        sasl::ScramSha256::new(password.as_bytes(), sasl::ChannelBinding::unsupported());
    let at = buf.len();
    frontend::sasl_initial_response(sasl::SCRAM_SHA_256, scram.message(), buf)
        .map_err(|e| AttemptError::new(FailureKind::Auth, format!("SCRAM: {e}")))?;
    flush(stream, buf, at, phase).await?;

    let server_first = expect_auth_code(stream, buf, AUTH_SASL_CONT, phase).await?;
    scram.update(&server_first).map_err(|e| {
        AttemptError::new(
            FailureKind::Auth,
            format!("SCRAM: bad server-first-message: {e}"),
        )
    })?;
    let at = buf.len();
    frontend::sasl_response(scram.message(), buf)
        .map_err(|e| AttemptError::new(FailureKind::Auth, format!("SCRAM: {e}")))?;
    flush(stream, buf, at, phase).await?;

    let server_final = expect_auth_code(stream, buf, AUTH_SASL_FIN, phase).await?;
    scram.finish(&server_final).map_err(|e| {
        AttemptError::new(
            FailureKind::Auth,
            format!("SCRAM: server signature not verified: {e}"),
        )
    })
}

/// Reads the next Authentication message (skipping notices) and returns its body; an
/// ErrorResponse becomes the startup error.
async fn expect_auth<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    phase: Phase,
) -> Result<Bytes, AttemptError> {
    loop {
        let (tag, body) = next_message(stream, buf, phase).await?;
        match tag {
            b'R' => return Ok(body),
            b'E' => return Err(startup_error(body)),
            b'N' => continue,
            other => {
                return Err(protocol(format!(
                    "unexpected message {} during authentication",
                    Tag(other)
                )))
            }
        }
    }
}

async fn expect_auth_code<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    want: i32,
    phase: Phase,
) -> Result<Bytes, AttemptError> {
    let mut body = expect_auth(stream, buf, phase).await?;
    match take_i32(&mut body) {
        Some(code) if code == want => Ok(body),
        Some(code) => Err(protocol(format!(
            "authentication request code {code} in the middle of SCRAM, expected {want}"
        ))),
        None => Err(protocol("truncated authentication request".into())),
    }
}

/// After AuthenticationOk: skips ParameterStatus, BackendKeyData and notices until
/// ReadyForQuery. A FATAL here (recovery, unknown `gpconntype`, not a superuser) is the startup
/// error.
async fn wait_ready<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    phase: Phase,
) -> Result<(), AttemptError> {
    loop {
        let (tag, body) = next_message(stream, buf, phase).await?;
        match tag {
            b'Z' => return Ok(()),
            b'S' | b'K' | b'N' => continue,
            b'E' => return Err(startup_error(body)),
            other => {
                return Err(protocol(format!(
                    "unexpected message {} after AuthenticationOk (expected ReadyForQuery)",
                    Tag(other)
                )))
            }
        }
    }
}

/// Reads RowDescription, exactly one DataRow, CommandComplete and ReadyForQuery.
async fn read_reply<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Result<ProbeReply, AttemptError> {
    let mut described = false;
    let mut row: Option<ProbeReply> = None;
    let mut completed = false;
    loop {
        let (tag, body) = next_message(stream, buf, Phase::Reply).await?;
        match tag {
            b'T' if described => return Err(protocol("second RowDescription in reply".into())),
            b'T' => {
                check_row_description(&body)?;
                described = true;
            }
            b'D' if !described => {
                return Err(protocol("DataRow before RowDescription in reply".into()))
            }
            b'D' if row.is_some() => {
                return Err(protocol(
                    "reply has more than one DataRow (expected exactly 1)".into(),
                ))
            }
            b'D' => row = Some(parse_data_row(&body)?),
            b'C' if row.is_none() => {
                return Err(protocol("reply has no DataRow (expected exactly 1)".into()))
            }
            b'C' if completed => return Err(protocol("second CommandComplete in reply".into())),
            b'C' => completed = true,
            b'Z' => {
                return match row {
                    Some(reply) if completed => Ok(reply),
                    _ => Err(protocol(
                        "ReadyForQuery before a complete reply (RowDescription, DataRow, \
                         CommandComplete)"
                            .into(),
                    )),
                }
            }
            b'E' => return Err(server_error(FailureKind::ErrorReply, body)),
            b'N' | b'S' => continue,
            b'I' => return Err(protocol("empty query response to the FTS message".into())),
            other => {
                return Err(protocol(format!(
                    "unexpected message {} in reply",
                    Tag(other)
                )))
            }
        }
    }
}

/// Exactly five columns, each of type bool (the names are not checked).
fn check_row_description(mut body: &[u8]) -> Result<(), AttemptError> {
    let truncated = || protocol("truncated RowDescription".into());
    let count = take_i16(&mut body).ok_or_else(truncated)?;
    if count as usize != RESPONSE_COLUMNS.len() {
        return Err(protocol(format!(
            "RowDescription has {count} columns, expected {}",
            RESPONSE_COLUMNS.len()
        )));
    }
    for column in RESPONSE_COLUMNS {
        let name_end = body.iter().position(|b| *b == 0).ok_or_else(truncated)?;
        body = &body[name_end + 1..];
        // table oid (4), attnum (2), type oid (4), typlen (2), typmod (4), format (2)
        if body.len() < 18 {
            return Err(truncated());
        }
        let type_oid = u32::from_be_bytes([body[6], body[7], body[8], body[9]]);
        if type_oid != BOOL_OID {
            return Err(protocol(format!(
                "column {column} has type oid {type_oid}, expected {BOOL_OID} (bool)"
            )));
        }
        body = &body[18..];
    }
    if !body.is_empty() {
        return Err(protocol(format!(
            "{} trailing bytes after RowDescription",
            body.len()
        )));
    }
    Ok(())
}

/// Five non-null values, each exactly one raw byte 0x00 or 0x01 (see the module documentation).
fn parse_data_row(mut body: &[u8]) -> Result<ProbeReply, AttemptError> {
    let truncated = || protocol("truncated DataRow".into());
    let count = take_i16(&mut body).ok_or_else(truncated)?;
    if count as usize != RESPONSE_COLUMNS.len() {
        return Err(protocol(format!(
            "DataRow has {count} values, expected {}",
            RESPONSE_COLUMNS.len()
        )));
    }
    let mut values: [&[u8]; 5] = [&[]; 5];
    for (value, column) in values.iter_mut().zip(RESPONSE_COLUMNS) {
        let len = take_i32(&mut body).ok_or_else(truncated)?;
        if len == -1 {
            return Err(protocol(format!("value of column {column} is null")));
        }
        let len = usize::try_from(len).map_err(|_| truncated())?;
        if body.len() < len {
            return Err(truncated());
        }
        let (bytes, rest) = body.split_at(len);
        if !matches!(bytes, [0] | [1]) {
            return Err(protocol(format!(
                "value of column {column} is not a raw boolean byte (got {})",
                Shown(bytes)
            )));
        }
        *value = bytes;
        body = rest;
    }
    if !body.is_empty() {
        return Err(protocol(format!(
            "{} trailing bytes after DataRow",
            body.len()
        )));
    }
    ProbeReply::from_values(values).ok_or_else(truncated)
}

/// The fields of an ErrorResponse that matter here.
#[derive(Default)]
struct ErrorFields {
    severity: Option<String>,
    code: Option<String>,
    message: Option<String>,
    detail: Option<String>,
}

fn error_fields(mut body: Bytes) -> ErrorFields {
    let mut fields = ErrorFields::default();
    while let Some(&field) = body.first() {
        if field == 0 {
            break;
        }
        body.advance(1);
        let Some(value) = frame::take_cstr(&mut body) else {
            break;
        };
        match field {
            b'S' => fields.severity = Some(value),
            b'C' => fields.code = Some(value),
            b'M' => fields.message = Some(value),
            b'D' => fields.detail = Some(value),
            _ => {}
        }
    }
    fields
}

/// An ErrorResponse; authorization and privilege errors are prober faults in any phase.
fn server_error(kind: FailureKind, body: Bytes) -> AttemptError {
    let fields = error_fields(body);
    let message = match (fields.message, fields.severity) {
        (Some(m), _) => m,
        (None, Some(s)) => format!("{s} without a message"),
        (None, None) => "error response without a message".to_owned(),
    };
    AttemptError {
        kind: FailureKind::of_server_error(fields.code.as_deref(), &message, kind),
        message,
        sqlstate: fields.code,
        detail: fields.detail,
    }
}

/// ErrorResponse before ReadyForQuery: invalid password / authorization → Auth, "must be
/// superuser" → Permission, anything else (recovery, starting up, too many clients, unknown
/// parameter ...) → StartupError.
fn startup_error(body: Bytes) -> AttemptError {
    server_error(FailureKind::StartupError, body)
}

fn need_password<'c>(creds: &'c Credentials, what: &str) -> Result<&'c str, AttemptError> {
    creds.password.as_ref().map(Secret::expose).ok_or_else(|| {
        AttemptError::new(
            FailureKind::Auth,
            format!(
                "server requires {what} for user {:?} but no password is configured",
                creds.user
            ),
        )
    })
}

fn unsupported_auth(method: &str) -> AttemptError {
    AttemptError::new(
        FailureKind::Auth,
        format!("server requested unsupported authentication method: {method}"),
    )
}

fn protocol(message: String) -> AttemptError {
    AttemptError::new(FailureKind::Protocol, message)
}

fn io_error(e: io::Error, phase: Phase) -> AttemptError {
    AttemptError::new(FailureKind::of_io(&e), format!("{phase}: {e}"))
}

fn take_i16(body: &mut &[u8]) -> Option<i16> {
    (body.len() >= 2).then(|| body.get_i16())
}

fn take_i32<B: Buf>(body: &mut B) -> Option<i32> {
    (body.remaining() >= 4).then(|| body.get_i32())
}

/// A message tag for error messages: `'D'` or `0x07`.
struct Tag(u8);

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_ascii_graphic() {
            write!(f, "'{}'", self.0 as char)
        } else {
            write!(f, "0x{:02x}", self.0)
        }
    }
}

/// A short value for error messages: hex bytes, at most 8.
struct Shown<'a>(&'a [u8]);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("an empty value");
        }
        for (i, b) in self.0.iter().take(8).enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "0x{b:02x}")?;
        }
        if self.0.len() > 8 {
            write!(f, " ... ({} bytes)", self.0.len())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio::io::ReadBuf;

    /// Serves a fixed byte string in small chunks and swallows whatever is written.
    struct Scripted {
        input: Vec<u8>,
        pos: usize,
        chunk: usize,
        written: Vec<u8>,
    }

    impl AsyncRead for Scripted {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            out: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let end = (self.pos + self.chunk)
                .min(self.input.len())
                .min(self.pos + out.remaining());
            out.put_slice(&self.input[self.pos..end]);
            self.pos = end;
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Scripted {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.written.extend_from_slice(data);
            Poll::Ready(Ok(data.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    const TARGET: Target<'static> = Target {
        host: "127.0.0.1",
        port: 1,
        dbid: 2,
        content: 0,
    };

    fn run(input: Vec<u8>, chunk: usize) -> (Result<ProbeReply, AttemptError>, Vec<u8>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut stream = Scripted {
            input,
            pos: 0,
            chunk: chunk.max(1),
            written: Vec::new(),
        };
        let creds = Credentials::new("gpadmin").with_password("pw");
        let result = rt.block_on(async {
            let mut buf = BytesMut::new();
            let mut phase = Phase::Resolve;
            exchange(
                &mut stream,
                &mut buf,
                &TARGET,
                MessageType::Probe,
                &creds,
                Instant::now() + Duration::from_secs(60),
                &mut phase,
            )
            .await
        });
        (result, stream.written)
    }

    fn handshake() -> BytesMut {
        let mut out = BytesMut::new();
        frame::put_tagged(&mut out, b'R', |b| b.put_i32(0));
        frame::put_tagged(&mut out, b'S', |b| {
            frame::put_cstr(b, "server_version");
            frame::put_cstr(b, "12.12");
        });
        frame::put_tagged(&mut out, b'K', |b| {
            b.put_i32(42);
            b.put_i32(7);
        });
        frame::put_tagged(&mut out, b'Z', |b| b.put_u8(b'I'));
        out
    }

    fn reply(values: [u8; 5]) -> BytesMut {
        let mut out = handshake();
        frame::put_tagged(&mut out, b'T', |b| {
            b.put_i16(5);
            for (i, name) in RESPONSE_COLUMNS.iter().enumerate() {
                frame::put_cstr(b, name);
                b.put_u32(0);
                b.put_i16(i as i16 + 1);
                b.put_u32(BOOL_OID);
                b.put_i16(1);
                b.put_i32(-1);
                b.put_i16(0);
            }
        });
        frame::put_tagged(&mut out, b'D', |b| {
            b.put_i16(5);
            for v in values {
                b.put_i32(1);
                b.put_u8(v);
            }
        });
        frame::put_tagged(&mut out, b'C', |b| frame::put_cstr(b, "PROBE"));
        frame::put_tagged(&mut out, b'Z', |b| b.put_u8(b'I'));
        out
    }

    #[test]
    fn in_memory_exchange_parses_reply_and_writes_expected_messages() {
        for chunk in [1, 3, 4096] {
            let (result, written) = run(reply([1, 1, 0, 0, 1]).to_vec(), chunk);
            let reply = result.unwrap();
            assert!(reply.is_mirror_up && reply.is_in_sync && reply.request_retry);
            assert!(!reply.is_syncrep_enabled && !reply.is_role_mirror);
            let query = MessageType::Probe.query(TARGET.dbid, TARGET.content);
            let needle = [query.as_bytes(), &[0]].concat();
            assert!(written.windows(needle.len()).any(|w| w == needle));
            assert_eq!(&written[written.len() - 5..], &[b'X', 0, 0, 0, 4]);
        }
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let full = reply([0, 1, 0, 1, 0]);
        for cut in 0..full.len() {
            let (result, _) = run(full[..cut].to_vec(), 7);
            let err = result.unwrap_err();
            assert!(
                matches!(err.kind, FailureKind::Reset | FailureKind::Protocol),
                "cut at {cut}: {err}"
            );
        }
    }

    #[test]
    fn tags_and_values_are_shown_readably() {
        assert_eq!(Tag(b'D').to_string(), "'D'");
        assert_eq!(Tag(7).to_string(), "0x07");
        assert_eq!(Shown(b"t").to_string(), "0x74");
        assert_eq!(Shown(&[]).to_string(), "an empty value");
        assert_eq!(
            Shown(&[0; 10]).to_string(),
            "0x00 0x00 0x00 0x00 0x00 0x00 0x00 0x00 ... (10 bytes)"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Arbitrary bytes as the whole server side: always an error, never a panic or a hang.
        #[test]
        fn garbage_never_panics(input in proptest::collection::vec(any::<u8>(), 0..300), chunk in 1usize..64) {
            let (result, _) = run(input, chunk);
            prop_assert!(result.is_err());
        }

        /// A valid handshake followed by arbitrary bytes: an error or a reply, never a panic.
        #[test]
        fn garbage_after_handshake_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut input = handshake().to_vec();
            input.extend_from_slice(&tail);
            let _ = run(input, 16);
        }

        /// A valid reply with one byte flipped anywhere: never a panic.
        #[test]
        fn mutated_reply_never_panics(at in 0usize..400, byte in any::<u8>()) {
            let mut input = reply([1, 0, 1, 0, 1]).to_vec();
            let at = at % input.len();
            input[at] = byte;
            let _ = run(input, 5);
        }
    }
}
