//! Wire-level tests of the segment simulator: a minimal raw FTS client written here (on
//! `postgres_protocol::message::frontend`) talks to simulators started in-process on OS-chosen
//! loopback ports, and the `fts-segsim` binary is exercised for `ctl` and `run`.
//!
//! No test asserts that something happens *within* a time; "never answers" is checked by a short
//! wait that can only pass, and everything else waits generously for an event.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use postgres_protocol::message::frontend;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use fts_segsim::{Auth, Fault, GarbageVariant, Phase, SimConfig, Simulator};
use ftsd::model::Role;
use ftsd::wire::frame::{read_tagged, take_cstr};
use ftsd::wire::{parse_last_replayed, RESPONSE_COLUMNS};

/// Generous bound for anything that should happen; only hit when something is broken.
const PATIENCE: Duration = Duration::from_secs(20);
/// How long "never answers" is watched.
const SILENCE: Duration = Duration::from_millis(300);

// ------------------------------------------------------------------------------------------
// A minimal raw FTS client.

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ErrorInfo {
    severity: String,
    code: String,
    message: String,
    detail: Option<String>,
}

fn parse_error(mut body: Bytes) -> ErrorInfo {
    let mut e = ErrorInfo::default();
    while body.has_remaining() {
        let field = body.get_u8();
        if field == 0 {
            break;
        }
        let value = take_cstr(&mut body).expect("error field string");
        match field {
            b'S' => e.severity = value,
            b'C' => e.code = value,
            b'M' => e.message = value,
            b'D' => e.detail = Some(value),
            _ => {}
        }
    }
    e
}

struct Session {
    stream: TcpStream,
    buf: BytesMut,
    /// Messages seen during startup.
    startup: Vec<(u8, Bytes)>,
}

#[derive(Debug)]
enum Opened {
    Ready,
    Fatal(ErrorInfo),
}

impl Session {
    async fn connect(addr: SocketAddr) -> io::Result<Session> {
        let stream = tokio::time::timeout(PATIENCE, TcpStream::connect(addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect"))??;
        Ok(Session {
            stream,
            buf: BytesMut::new(),
            startup: Vec::new(),
        })
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send");
    }

    async fn send_startup(&mut self, params: &[(&str, &str)]) {
        let mut out = BytesMut::new();
        frontend::startup_message(params.iter().copied(), &mut out).unwrap();
        self.send(&out).await;
    }

    async fn read_msg(&mut self) -> io::Result<(u8, Bytes)> {
        match tokio::time::timeout(PATIENCE, read_tagged(&mut self.stream, &mut self.buf)).await {
            Ok(r) => r.map_err(|e| io::Error::other(e.to_string())),
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "no message")),
        }
    }

    /// Runs authentication to ReadyForQuery.
    async fn finish_startup(&mut self, user: &str, password: Option<&str>) -> Opened {
        loop {
            let (tag, mut body) = self.read_msg().await.expect("startup reply");
            self.startup.push((tag, body.clone()));
            match tag {
                b'R' => match body.get_i32() {
                    0 => {}
                    3 => {
                        let mut out = BytesMut::new();
                        frontend::password_message(password.unwrap_or("").as_bytes(), &mut out)
                            .unwrap();
                        self.send(&out).await;
                    }
                    5 => {
                        let salt = [body[0], body[1], body[2], body[3]];
                        let hash = postgres_protocol::authentication::md5_hash(
                            user.as_bytes(),
                            password.unwrap_or("").as_bytes(),
                            salt,
                        );
                        let mut out = BytesMut::new();
                        frontend::password_message(hash.as_bytes(), &mut out).unwrap();
                        self.send(&out).await;
                    }
                    other => panic!("unexpected auth request {other}"),
                },
                b'E' => return Opened::Fatal(parse_error(body)),
                b'Z' => return Opened::Ready,
                _ => {}
            }
        }
    }

    async fn open(
        addr: SocketAddr,
        user: &str,
        password: Option<&str>,
    ) -> Result<Session, ErrorInfo> {
        let mut s = Session::connect(addr).await.expect("connect");
        s.send_startup(&[("user", user), ("gpconntype", "fts")])
            .await;
        match s.finish_startup(user, password).await {
            Opened::Ready => Ok(s),
            Opened::Fatal(e) => Err(e),
        }
    }

    async fn send_query(&mut self, q: &str) {
        let mut out = BytesMut::new();
        frontend::query(q, &mut out).unwrap();
        self.send(&out).await;
    }

    /// Sends a query and collects messages up to ReadyForQuery.
    async fn query(&mut self, q: &str) -> Vec<(u8, Bytes)> {
        self.send_query(q).await;
        let mut msgs = Vec::new();
        loop {
            let m = self.read_msg().await.expect("query reply");
            let done = m.0 == b'Z';
            msgs.push(m);
            if done {
                return msgs;
            }
        }
    }

    /// Every byte until the server closes.
    async fn read_to_end(&mut self) -> Vec<u8> {
        let mut all = self.buf.split().to_vec();
        tokio::time::timeout(PATIENCE, self.stream.read_to_end(&mut all))
            .await
            .expect("server closes")
            .expect("read");
        all
    }

    async fn read_exact_raw(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            let got = tokio::time::timeout(PATIENCE, self.stream.read_buf(&mut self.buf))
                .await
                .expect("bytes arrive")
                .expect("read");
            assert!(got > 0, "closed early");
        }
        self.buf.split_to(n).to_vec()
    }

    /// True if nothing arrives during SILENCE (EOF counts as "something").
    async fn silent(&mut self) -> bool {
        let mut byte = [0u8; 1];
        tokio::time::timeout(SILENCE, self.stream.read(&mut byte))
            .await
            .is_err()
    }
}

/// One FTS exchange as the in-core prober does it: connect, authenticate, one query.
async fn fts(
    addr: SocketAddr,
    user: &str,
    password: Option<&str>,
    q: &str,
) -> Result<Vec<(u8, Bytes)>, ErrorInfo> {
    let mut s = Session::open(addr, user, password).await?;
    Ok(s.query(q).await)
}

/// `fts` to segment `dbid` of `sim` as the probe user.
async fn ask(
    sim: &Simulator,
    dbid: i16,
    password: Option<&str>,
    q: &str,
) -> Result<Vec<(u8, Bytes)>, ErrorInfo> {
    fts(sim.addr(dbid).unwrap(), "gpadmin", password, q).await
}

/// The five values of the single DataRow of a well-formed reply.
fn values(msgs: &[(u8, Bytes)]) -> [u8; 5] {
    let rows: Vec<&Bytes> = msgs.iter().filter(|m| m.0 == b'D').map(|m| &m.1).collect();
    assert_eq!(rows.len(), 1, "one DataRow in {msgs:?}");
    let row = rows[0];
    assert_eq!(&row[..2], &[0, 5]);
    let mut v = [0u8; 5];
    for (i, out) in v.iter_mut().enumerate() {
        let at = 2 + i * 5;
        assert_eq!(&row[at..at + 4], &[0, 0, 0, 1], "1-byte value");
        *out = row[at + 4];
    }
    v
}

fn error_of(msgs: &[(u8, Bytes)]) -> ErrorInfo {
    let e = msgs.iter().find(|m| m.0 == b'E').expect("ErrorResponse");
    parse_error(e.1.clone())
}

async fn probe(sim: &Simulator, dbid: i16) -> [u8; 5] {
    let v = sim.view(dbid).unwrap();
    let msgs = ask(
        sim,
        dbid,
        Some("secret"),
        &format!("PROBE dbid={dbid} contid={}", v.content),
    )
    .await
    .unwrap_or_else(|e| panic!("probe {dbid}: {e:?}"));
    values(&msgs)
}

async fn start(cfg: SimConfig) -> Simulator {
    Simulator::start(cfg).await.expect("simulator starts")
}

fn pairs(n: u32) -> SimConfig {
    SimConfig {
        pairs: n,
        base_port: 0,
        ..SimConfig::default()
    }
}

fn md5_cfg() -> SimConfig {
    SimConfig {
        auth: Auth::Md5,
        password: Some("secret".into()),
        ..pairs(1)
    }
}

// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn primary_probe_reply_is_byte_exact_and_turns_syncrep_on() {
    let sim = start(pairs(2)).await;
    assert!(!sim.view(2).unwrap().syncrep);
    let msgs = ask(&sim, 2, None, "PROBE dbid=2 contid=0").await.unwrap();
    let tags: Vec<u8> = msgs.iter().map(|m| m.0).collect();
    assert_eq!(tags, b"TDCZ");

    let mut expected = BytesMut::new();
    expected.put_i16(5);
    for (i, name) in RESPONSE_COLUMNS.iter().enumerate() {
        expected.put_slice(name.as_bytes());
        expected.put_u8(0);
        expected.put_i32(0); // table oid
        expected.put_i16(i as i16); // attnum
        expected.put_i32(16); // BOOLOID
        expected.put_i16(1);
        expected.put_i32(-1);
        expected.put_i16(0);
    }
    assert_eq!(msgs[0].1, expected.freeze());
    // mirror up, in sync, syncrep switched on by the probe itself, not a mirror, no retry
    assert_eq!(
        &msgs[1].1[..],
        &[0, 5, 0, 0, 0, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0]
    );
    assert_eq!(&msgs[2].1[..], b"PROBE\0");
    assert_eq!(&msgs[3].1[..], b"I");
    assert!(sim.view(2).unwrap().syncrep);
    assert_eq!(sim.view(2).unwrap().counters.probe, 1);
    assert_eq!(sim.view(2).unwrap().counters.connections, 1);

    // Startup carried the usual greeting.
    let mut s = Session::open(sim.addr(3).unwrap(), "gpadmin", None)
        .await
        .unwrap();
    let startup_tags: Vec<u8> = s.startup.iter().map(|m| m.0).collect();
    assert_eq!(startup_tags.first(), Some(&b'R'));
    assert!(startup_tags.contains(&b'S') && startup_tags.contains(&b'K'));
    assert!(s
        .startup
        .iter()
        .any(|(t, b)| *t == b'S' && b.starts_with(b"server_version\x0012.12\0")));
    assert_eq!(
        values(&s.query("PROBE dbid=3 contid=1").await),
        [1, 1, 1, 0, 0]
    );
    // Several messages per connection are served; Terminate closes.
    assert_eq!(
        values(&s.query("PROBE dbid=3 contid=1").await),
        [1, 1, 1, 0, 0]
    );
    let mut out = BytesMut::new();
    frontend::terminate(&mut out);
    s.send(&out).await;
    assert!(s.read_to_end().await.is_empty());
}

#[tokio::test]
async fn mirror_answers_without_authentication() {
    let sim = start(md5_cfg()).await;
    // Wrong user, no password: a mirror does FakeClientAuthentication.
    let mut s = Session::open(sim.addr(3).unwrap(), "nobody", None)
        .await
        .unwrap();
    assert_eq!(&s.startup[0], &(b'R', Bytes::from_static(&[0, 0, 0, 0])));
    assert_eq!(
        values(&s.query("PROBE dbid=3 contid=0").await),
        [0, 0, 0, 1, 0]
    );
    assert_eq!(
        values(&s.query("SYNCREP_OFF dbid=3 contid=0").await),
        [0, 0, 0, 1, 0]
    );
}

#[tokio::test]
async fn md5_and_cleartext_authentication_on_primary() {
    let sim = start(md5_cfg()).await;
    let addr = sim.addr(2).unwrap();
    let msgs = fts(addr, "gpadmin", Some("secret"), "PROBE dbid=2 contid=0")
        .await
        .unwrap();
    assert_eq!(values(&msgs), [1, 1, 1, 0, 0]);

    let err = fts(addr, "gpadmin", Some("wrong"), "PROBE dbid=2 contid=0")
        .await
        .unwrap_err();
    assert_eq!(
        (err.severity.as_str(), err.code.as_str()),
        ("FATAL", "28P01")
    );
    assert_eq!(
        err.message,
        "password authentication failed for user \"gpadmin\""
    );

    let err = fts(addr, "alice", Some("secret"), "PROBE dbid=2 contid=0")
        .await
        .unwrap_err();
    assert_eq!(err.code, "42501");
    assert_eq!(err.message, "must be superuser role to handle FTS request");

    // A client without a password gives up at the request: the server just closes.
    let mut s = Session::connect(addr).await.unwrap();
    s.send_startup(&[("user", "gpadmin"), ("gpconntype", "fts")])
        .await;
    let (tag, body) = s.read_msg().await.unwrap();
    assert_eq!((tag, &body[..4]), (b'R', &[0, 0, 0, 5][..]));
    drop(s);

    let sim = start(SimConfig {
        auth: Auth::Password,
        ..md5_cfg()
    })
    .await;
    let addr = sim.addr(2).unwrap();
    let mut s = Session::open(addr, "gpadmin", Some("secret"))
        .await
        .unwrap();
    assert_eq!(&s.startup[0], &(b'R', Bytes::from_static(&[0, 0, 0, 3])));
    assert_eq!(
        values(&s.query("PROBE dbid=2 contid=0").await),
        [1, 1, 1, 0, 0]
    );
    let err = fts(addr, "gpadmin", Some("nope"), "PROBE dbid=2 contid=0")
        .await
        .unwrap_err();
    assert_eq!(err.code, "28P01");

    // Trust still refuses non-superusers on a primary.
    let sim = start(pairs(1)).await;
    let err = fts(sim.addr(2).unwrap(), "alice", None, "PROBE dbid=2 contid=0")
        .await
        .unwrap_err();
    assert_eq!(err.code, "42501");
}

#[tokio::test]
async fn syncrep_off_and_counters() {
    let sim = start(pairs(1)).await;
    assert_eq!(probe(&sim, 2).await, [1, 1, 1, 0, 0]);
    let msgs = ask(&sim, 2, None, "SYNCREP_OFF dbid=2 contid=0")
        .await
        .unwrap();
    assert_eq!(values(&msgs), [1, 1, 0, 0, 0]);
    assert_eq!(
        &msgs.iter().find(|m| m.0 == b'C').unwrap().1[..],
        b"SYNCREP_OFF\0"
    );
    let v = sim.view(2).unwrap();
    assert!(!v.syncrep);
    assert_eq!(
        (
            v.counters.probe,
            v.counters.syncrep_off,
            v.counters.connections
        ),
        (1, 1, 2)
    );
    sim.reset_counters();
    assert_eq!(sim.view(2).unwrap().counters, Default::default());
}

#[tokio::test]
async fn promote_makes_mirror_answer_as_primary() {
    let sim = start(SimConfig {
        mirror_down_grace: Duration::from_secs(3600),
        ..pairs(1)
    })
    .await;
    // PROMOTE to a primary is ignored.
    let msgs = ask(&sim, 2, None, "PROMOTE dbid=2 contid=0").await.unwrap();
    assert_eq!(values(&msgs), [0, 0, 0, 0, 0]);
    assert_eq!(sim.view(2).unwrap().role, Role::Primary);

    sim.set_fault(2, Fault::Down).await.unwrap();
    let msgs = ask(&sim, 3, None, "PROMOTE dbid=3 contid=0").await.unwrap();
    assert_eq!(values(&msgs), [0, 0, 0, 0, 0], "promoted at reply time");
    assert_eq!(
        &msgs.iter().find(|m| m.0 == b'C').unwrap().1[..],
        b"PROMOTE\0"
    );
    let v = sim.view(3).unwrap();
    assert_eq!(
        (v.role, v.mirror_up, v.counters.promote),
        (Role::Primary, Some(false), 1)
    );
    // Now a primary whose mirror (the old primary) is down: inside the grace since promotion.
    assert_eq!(probe(&sim, 3).await, [0, 0, 0, 0, 1]);
    // Idempotent.
    let msgs = ask(&sim, 3, None, "PROMOTE dbid=3 contid=0").await.unwrap();
    assert_eq!(values(&msgs), [0, 0, 0, 0, 0]);
    assert_eq!(sim.view(3).unwrap().role, Role::Primary);

    // gprecoverseg: the old primary comes back as a mirror, in sync.
    sim.recover(2).await.unwrap();
    assert_eq!(sim.view(2).unwrap().role, Role::Mirror);
    assert_eq!(probe(&sim, 2).await, [0, 0, 0, 1, 0]);
    assert_eq!(probe(&sim, 3).await, [1, 1, 1, 0, 0]);
    // Recovering the acting primary's peer again is fine; both mirrors is not reachable.
    sim.recover(2).await.unwrap();
}

#[tokio::test]
async fn delayed_promotion_is_observable() {
    let sim = start(SimConfig {
        promote_delay: Duration::from_secs(3600),
        ..pairs(1)
    })
    .await;
    let msgs = ask(&sim, 3, None, "PROMOTE dbid=3 contid=0").await.unwrap();
    assert_eq!(
        values(&msgs),
        [0, 0, 0, 1, 0],
        "still a mirror while promoting"
    );
    assert!(sim.view(3).unwrap().promoting);
    let err = ask(&sim, 3, None, "PROBE dbid=3 contid=0")
        .await
        .unwrap_err();
    assert_eq!(
        (err.code.as_str(), err.message.as_str()),
        ("57P03", "mirror is being promoted.")
    );
    // The primary no longer has a streaming mirror.
    assert_eq!(probe(&sim, 2).await[0], 0);
}

#[tokio::test]
async fn request_retry_follows_the_grace_period() {
    let sim = start(SimConfig {
        mirror_down_grace: Duration::from_secs(3600),
        ..pairs(2)
    })
    .await;
    assert_eq!(probe(&sim, 2).await, [1, 1, 1, 0, 0]);
    sim.set_fault(4, Fault::Down).await.unwrap();
    assert_eq!(
        probe(&sim, 2).await,
        [0, 0, 1, 0, 1],
        "mirror down inside grace"
    );
    sim.set_fault(5, Fault::MirrorDisconnected).await.unwrap();
    assert_eq!(probe(&sim, 3).await, [0, 0, 0, 0, 1]);
    sim.set_fault(5, Fault::Lagging).await.unwrap();
    assert_eq!(
        probe(&sim, 3).await,
        [1, 0, 1, 0, 0],
        "lagging: up, not in sync, syncrep on"
    );
    sim.clear(5).await.unwrap();
    assert_eq!(probe(&sim, 3).await, [1, 1, 1, 0, 0]);
    // The fault may also be set on the primary (its view of the walreceiver).
    sim.set_fault(3, Fault::MirrorDisconnected).await.unwrap();
    assert_eq!(probe(&sim, 3).await, [0, 0, 1, 0, 1]);
    sim.set_fault(3, Fault::Hang).await.unwrap();
    sim.clear(3).await.unwrap();

    let sim = start(SimConfig {
        mirror_down_grace: Duration::ZERO,
        ..pairs(1)
    })
    .await;
    sim.set_fault(3, Fault::Hang).await.unwrap();
    assert_eq!(probe(&sim, 2).await, [0, 0, 0, 0, 0], "grace 0: no retry");
}

#[tokio::test]
async fn garbage_variants_are_sent() {
    let sim = start(pairs(1)).await;
    let addr = sim.addr(2).unwrap();
    for variant in GarbageVariant::ALL {
        sim.set_fault(2, Fault::Garbage { variant }).await.unwrap();
        let mut s = Session::open(addr, "gpadmin", None).await.unwrap();
        match variant {
            GarbageVariant::WrongColumns => {
                let msgs = s.query("PROBE dbid=2 contid=0").await;
                assert_eq!(&msgs[0].1[..2], &[0, 4], "RowDescription with 4 fields");
                assert_eq!(&msgs[1].1[..2], &[0, 4], "DataRow with 4 values");
            }
            GarbageVariant::WrongType => {
                let msgs = s.query("PROBE dbid=2 contid=0").await;
                let oid_at = 2 + RESPONSE_COLUMNS[0].len() + 1 + 4 + 2;
                assert_eq!(&msgs[0].1[oid_at..oid_at + 4], &25i32.to_be_bytes());
            }
            GarbageVariant::TextBool => {
                let msgs = s.query("PROBE dbid=2 contid=0").await;
                let row = &msgs[1].1;
                assert_eq!(row[6], b't');
                assert_eq!(row[21], b'f', "is_role_mirror as text f (non-zero!)");
            }
            GarbageVariant::TwoRows => {
                let msgs = s.query("PROBE dbid=2 contid=0").await;
                let tags: Vec<u8> = msgs.iter().map(|m| m.0).collect();
                assert_eq!(tags, b"TDDCZ");
            }
            GarbageVariant::RandomBytes => {
                s.send_query("PROBE dbid=2 contid=0").await;
                let bytes = s.read_to_end().await;
                assert_eq!(bytes.len(), 64);
            }
            GarbageVariant::GiantLength => {
                s.send_query("PROBE dbid=2 contid=0").await;
                let head = s.read_exact_raw(5).await;
                assert_eq!(head, [b'T', 0x7f, 0xff, 0xff, 0xff]);
                assert!(s.silent().await, "the promised body never comes");
            }
        }
    }
    sim.clear(2).await.unwrap();
    assert_eq!(probe(&sim, 2).await, [1, 1, 1, 0, 0]);
}

#[tokio::test]
async fn down_refuses_connections_and_clear_restores() {
    let sim = start(pairs(1)).await;
    let addr = sim.addr(3).unwrap();
    // An idle established connection dies with the instance.
    let mut idle = Session::open(addr, "gpadmin", None).await.unwrap();
    let v = sim.set_fault(3, Fault::Down).await.unwrap();
    assert!(!v.listening && !v.alive);
    let err = TcpStream::connect(addr).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    assert!(idle.read_to_end().await.is_empty());
    sim.clear(3).await.unwrap();
    assert_eq!(probe(&sim, 3).await, [0, 0, 0, 1, 0]);

    // crash-restart: down (long enough to observe), then cleared by hand.
    let hour = Duration::from_secs(3600);
    let v = sim
        .set_fault(
            3,
            Fault::CrashRestart {
                down_for: hour,
                recovery_for: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(v.phase, Phase::Crashed);
    assert_eq!(
        TcpStream::connect(addr).await.unwrap_err().kind(),
        io::ErrorKind::ConnectionRefused
    );
    sim.clear(3).await.unwrap();

    // crash-restart that ends by itself: back in the previous role once down + recovery pass.
    sim.set_fault(
        3,
        Fault::CrashRestart {
            down_for: Duration::from_millis(100),
            recovery_for: Some(Duration::from_millis(100)),
        },
    )
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let v = sim.view(3).unwrap();
        if v.fault.is_none() && v.listening {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "crash-restart never ended: {v:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(probe(&sim, 3).await, [0, 0, 0, 1, 0]);
}

#[tokio::test]
async fn hang_never_answers_until_cleared() {
    let sim = start(pairs(1)).await;
    let addr = sim.addr(2).unwrap();
    let mut established = Session::open(addr, "gpadmin", None).await.unwrap();
    sim.set_fault(2, Fault::Hang).await.unwrap();

    let mut fresh = Session::connect(addr)
        .await
        .expect("the kernel still accepts");
    fresh
        .send_startup(&[("user", "gpadmin"), ("gpconntype", "fts")])
        .await;
    assert!(fresh.silent().await, "no answer to startup");
    established.send_query("PROBE dbid=2 contid=0").await;
    assert!(established.silent().await, "no answer to the query");

    // Like SIGCONT: the queued work is answered.
    sim.clear(2).await.unwrap();
    assert!(matches!(
        fresh.finish_startup("gpadmin", None).await,
        Opened::Ready
    ));
    let mut msgs = Vec::new();
    loop {
        let m = established.read_msg().await.unwrap();
        let done = m.0 == b'Z';
        msgs.push(m);
        if done {
            break;
        }
    }
    assert_eq!(values(&msgs), [1, 1, 1, 0, 0]);
}

#[tokio::test]
async fn slow_still_answers() {
    let sim = start(pairs(1)).await;
    sim.set_fault(
        2,
        Fault::Slow {
            delay: Duration::from_millis(50),
        },
    )
    .await
    .unwrap();
    assert_eq!(probe(&sim, 2).await, [1, 1, 1, 0, 0]);
}

#[tokio::test]
async fn recovery_faults_report_replay_position() {
    let sim = start(pairs(1)).await;
    let addr = sim.addr(2).unwrap();
    let lsn =
        |e: &ErrorInfo| parse_last_replayed(e.detail.as_deref().expect("detail")).expect("lsn");

    sim.set_fault(2, Fault::RecoveryProgress).await.unwrap();
    let a = fts(addr, "gpadmin", None, "PROBE dbid=2 contid=0")
        .await
        .unwrap_err();
    let b = fts(addr, "gpadmin", None, "PROBE dbid=2 contid=0")
        .await
        .unwrap_err();
    assert_eq!((a.severity.as_str(), a.code.as_str()), ("FATAL", "57P03"));
    assert_eq!(a.message, "the database system is in recovery mode");
    assert!(a
        .detail
        .as_deref()
        .unwrap()
        .starts_with("last replayed record at "));
    assert!(lsn(&b) > lsn(&a), "progressing");

    sim.set_fault(2, Fault::RecoveryStuck).await.unwrap();
    let a = fts(addr, "gpadmin", None, "PROBE dbid=2 contid=0")
        .await
        .unwrap_err();
    let b = fts(addr, "gpadmin", None, "PROBE dbid=2 contid=0")
        .await
        .unwrap_err();
    assert_eq!(lsn(&a), lsn(&b), "stuck");

    sim.set_fault(2, Fault::StartingUp).await.unwrap();
    let a = fts(addr, "gpadmin", None, "PROBE dbid=2 contid=0")
        .await
        .unwrap_err();
    let b = fts(addr, "gpadmin", None, "PROBE dbid=2 contid=0")
        .await
        .unwrap_err();
    assert_eq!(a.message, "the database system is starting up");
    assert!(lsn(&b) > lsn(&a));
    // A starting mirror lets FTS through (CAC_STARTUP exception) but is not streaming.
    sim.set_fault(3, Fault::StartingUp).await.unwrap();
    assert_eq!(probe(&sim, 3).await, [0, 0, 0, 1, 0]);

    sim.set_fault(2, Fault::Resetting).await.unwrap();
    let e = fts(addr, "gpadmin", None, "PROBE dbid=2 contid=0")
        .await
        .unwrap_err();
    assert_eq!(
        (e.message.as_str(), e.detail),
        ("the database system is resetting", None)
    );
}

#[tokio::test]
async fn disk_error_and_bad_queries() {
    let sim = start(pairs(1)).await;
    let addr = sim.addr(2).unwrap();
    sim.set_fault(2, Fault::DiskError).await.unwrap();
    let mut s = Session::open(addr, "gpadmin", None).await.unwrap();
    let msgs = s.query("PROBE dbid=2 contid=0").await;
    let e = error_of(&msgs);
    assert_eq!((e.severity.as_str(), e.code.as_str()), ("ERROR", "XX000"));
    assert_eq!(e.message, "disk IO check during FTS probe failed");
    // Only PROBE does the disk check.
    assert_eq!(
        values(&s.query("SYNCREP_OFF dbid=2 contid=0").await),
        [1, 1, 0, 0, 0]
    );
    sim.clear(2).await.unwrap();

    let mut s = Session::open(addr, "gpadmin", None).await.unwrap();
    let e = error_of(&s.query("PROBE").await);
    assert_eq!(
        (e.severity.as_str(), e.message.as_str()),
        ("ERROR", "received invalid FTS query: PROBE")
    );
    let e = error_of(&s.query("HELLO dbid=2 contid=0").await);
    assert_eq!(
        e.message,
        "received unknown FTS query: HELLO dbid=2 contid=0"
    );
    // Mismatched target: executed anyway, as release builds do.
    assert_eq!(
        values(&s.query("PROBE dbid=9 contid=7").await),
        [1, 1, 1, 0, 0]
    );
    // Extended protocol is refused, the connection stays usable.
    let mut out = BytesMut::new();
    frontend::sync(&mut out);
    s.send(&out).await;
    let (tag, body) = s.read_msg().await.unwrap();
    assert_eq!(tag, b'E');
    assert_eq!(
        parse_error(body).message,
        "protocol 'S' is not supported in a GPDB message handler connection"
    );
    assert_eq!(s.read_msg().await.unwrap().0, b'Z');
    // A hostile length closes the connection instead of allocating.
    s.send(&[b'Q', 0x7f, 0xff, 0xff, 0xff]).await;
    assert!(s.read_to_end().await.is_empty());
    assert_eq!(sim.view(2).unwrap().counters.invalid, 3);
}

#[tokio::test]
async fn startup_edge_cases() {
    let sim = start(pairs(1)).await;
    let addr = sim.addr(2).unwrap();

    // Not an FTS connection.
    let mut s = Session::connect(addr).await.unwrap();
    s.send_startup(&[("user", "gpadmin"), ("database", "postgres")])
        .await;
    let Opened::Fatal(e) = s.finish_startup("gpadmin", None).await else {
        panic!()
    };
    assert_eq!((e.severity.as_str(), e.code.as_str()), ("FATAL", "08004"));

    let mut s = Session::connect(addr).await.unwrap();
    s.send_startup(&[("user", "gpadmin"), ("gpconntype", "bogus")])
        .await;
    let Opened::Fatal(e) = s.finish_startup("gpadmin", None).await else {
        panic!()
    };
    assert_eq!(e.message, "invalid value for option: \"gpconntype\"");

    let mut s = Session::connect(addr).await.unwrap();
    s.send_startup(&[("gpconntype", "fts")]).await;
    let Opened::Fatal(e) = s.finish_startup("gpadmin", None).await else {
        panic!()
    };
    assert_eq!(e.code, "28000");

    // SSLRequest is declined with 'N', then the real startup proceeds.
    let mut s = Session::connect(addr).await.unwrap();
    let mut out = BytesMut::new();
    frontend::ssl_request(&mut out);
    s.send(&out).await;
    assert_eq!(s.read_exact_raw(1).await, b"N");
    s.send_startup(&[("user", "gpadmin"), ("gpconntype", "fts")])
        .await;
    assert!(matches!(
        s.finish_startup("gpadmin", None).await,
        Opened::Ready
    ));
    assert_eq!(
        values(&s.query("PROBE dbid=2 contid=0").await),
        [1, 1, 1, 0, 0]
    );

    // CancelRequest: closed without a word.
    let mut s = Session::connect(addr).await.unwrap();
    let mut out = BytesMut::new();
    frontend::cancel_request(1, 2, &mut out);
    s.send(&out).await;
    assert!(s.read_to_end().await.is_empty());

    // Protocol 2.0 is refused; 3.1 is negotiated down to 3.0.
    for (version, expect_fatal) in [(0x0002_0000, true), (0x0003_0001, false)] {
        let mut s = Session::connect(addr).await.unwrap();
        let mut body = BytesMut::new();
        body.put_i32(version);
        for kv in [
            "user",
            "gpadmin",
            "gpconntype",
            "fts",
            "_pq_.extra",
            "1",
            "",
        ] {
            body.put_slice(kv.as_bytes());
            body.put_u8(0);
        }
        let mut pkt = BytesMut::new();
        pkt.put_i32(body.len() as i32 + 4);
        pkt.put_slice(&body);
        s.send(&pkt).await;
        let opened = s.finish_startup("gpadmin", None).await;
        if expect_fatal {
            let Opened::Fatal(e) = opened else { panic!() };
            assert_eq!(e.code, "0A000");
        } else {
            assert!(matches!(opened, Opened::Ready));
            let v = &s.startup[0];
            assert_eq!(v.0, b'v');
            assert_eq!(&v.1[..], b"\0\x03\0\0\0\0\0\x01_pq_.extra\0");
        }
    }

    // Garbage instead of a startup packet: closed, the server survives.
    let mut s = Session::connect(addr).await.unwrap();
    s.send(&[0xff; 16]).await;
    assert!(s.read_to_end().await.is_empty());
    assert_eq!(probe(&sim, 2).await, [1, 1, 1, 0, 0]);
}

#[tokio::test]
async fn coordinator_and_mirrorless_primaries() {
    let sim = start(SimConfig {
        mirrorless: 1,
        coordinator: true,
        mirror_down_grace: Duration::ZERO,
        ..pairs(1)
    })
    .await;
    let dbids: Vec<(i16, i16)> = sim.views().iter().map(|v| (v.dbid, v.content)).collect();
    assert_eq!(dbids, [(2, 0), (3, 1), (4, 0), (1, -1)]);
    // No mirror: never up, never syncrep.
    assert_eq!(probe(&sim, 3).await, [0, 0, 0, 0, 0]);
    assert_eq!(probe(&sim, 1).await, [0, 0, 0, 0, 0]);
    let rows = sim.segments();
    assert_eq!(
        rows.iter().map(|r| r.dbid).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert_eq!(rows[0].port as u16, sim.addr(1).unwrap().port());
}

/// Hostile input at every stage: the server answers with an error or closes, and never panics
/// (a panic hook watches for panics raised in the simulator's own source files).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_never_panics() {
    static PANICS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info
            .location()
            .is_some_and(|l| l.file().contains("fts-segsim/src/"))
        {
            PANICS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        previous(info);
    }));

    let sim = start(pairs(1)).await;
    let addr = sim.addr(2).unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for case in 0..300 {
        let len = (next() % 64) as usize;
        let junk: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let mut s = Session::connect(addr).await.unwrap();
        match case % 3 {
            // Junk instead of a startup packet (sometimes with a plausible length).
            0 => {
                let mut pkt = BytesMut::new();
                if case % 2 == 0 {
                    pkt.put_i32(junk.len() as i32 + 4);
                }
                pkt.put_slice(&junk);
                s.send(&pkt).await;
            }
            // A well-framed startup packet with junk parameters.
            1 => {
                let mut pkt = BytesMut::new();
                pkt.put_i32(junk.len() as i32 + 8);
                pkt.put_i32(196608);
                pkt.put_slice(&junk);
                s.send(&pkt).await;
            }
            // Junk after a successful startup.
            _ => {
                s.send_startup(&[("user", "gpadmin"), ("gpconntype", "fts")])
                    .await;
                assert!(matches!(
                    s.finish_startup("gpadmin", None).await,
                    Opened::Ready
                ));
                s.send(&junk).await;
            }
        }
        // Half-close: whatever the server makes of it, it must answer or close, not wait.
        let _ = s.stream.shutdown().await;
        let _ = s.read_to_end().await;
    }
    assert_eq!(probe(&sim, 2).await, [1, 1, 1, 0, 0]);
    assert_eq!(PANICS.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn two_thousand_instances_start_and_answer() {
    probe_every_instance(1000, 0).await;
}

/// The full scale target (20,000 instances, fewer if the hard descriptor limit does not allow it
/// and cannot be raised); run with `cargo test --release -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn twenty_thousand_instances_start_and_answer() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    // Server and client sockets of the test share the process: keep room for both.
    let n_pairs = 10_000.min((lim.rlim_max.saturating_sub(600) / 2) as u32);
    let t0 = std::time::Instant::now();
    // Fixed ports below the ephemeral range: letting the kernel pick 20k ephemeral ports one by
    // one is quadratic and leaves few for the client side.
    let base_port = std::env::var("FTS_SEGSIM_SCALE_BASE_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(12_000);
    probe_every_instance(n_pairs, base_port).await;
    let rss = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or("")
        .to_string();
    eprintln!(
        "{} instances started and probed in {:?}; {rss}",
        2 * n_pairs,
        t0.elapsed()
    );
}

async fn probe_every_instance(n_pairs: u32, base_port: u16) {
    let t0 = std::time::Instant::now();
    let sim = start(SimConfig {
        base_port,
        ..pairs(n_pairs)
    })
    .await;
    eprintln!("started {} instances in {:?}", 2 * n_pairs, t0.elapsed());
    let views = sim.views();
    assert_eq!(views.len(), 2 * n_pairs as usize);
    let sem = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = tokio::task::JoinSet::new();
    for v in views {
        let addr = sim.addr(v.dbid).unwrap();
        let sem = Arc::clone(&sem);
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await.unwrap();
            let q = format!("PROBE dbid={} contid={}", v.dbid, v.content);
            let msgs = fts(addr, "gpadmin", None, &q).await.expect("answer");
            (v.role, values(&msgs))
        });
    }
    let mut answered = 0;
    while let Some(r) = tasks.join_next().await {
        let (role, vals) = r.unwrap();
        match role {
            Role::Primary => assert_eq!(vals, [1, 1, 1, 0, 0]),
            Role::Mirror => assert_eq!(vals, [0, 0, 0, 1, 0]),
        }
        answered += 1;
    }
    assert_eq!(answered, 2 * n_pairs as usize);
}

// ------------------------------------------------------------------------------------------
// Control API and binary.

async fn ctl(control: &str, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_fts-segsim"))
        .arg("ctl")
        .arg("--control")
        .arg(control)
        .args(args)
        .output()
        .await
        .expect("run fts-segsim ctl")
}

#[tokio::test]
async fn ctl_subcommands_drive_the_http_api() {
    let mut sim = start(pairs(2)).await;
    let control = sim
        .serve_control("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
        .to_string();

    let out = ctl(&control, &["list"]).await;
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 5);
    assert!(lines[0].starts_with("DBID") && lines[0].contains("SYNCREP_OFF"));
    let col = lines[0].find("ADDRESS").unwrap();
    assert!(
        lines
            .iter()
            .skip(1)
            .all(|l| l[col..].starts_with("127.0.0.1:")),
        "aligned:\n{table}"
    );

    let out = ctl(&control, &["list", "--json"]).await;
    let views: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(views.len(), 4);

    let out = ctl(&control, &["fault", "4", "down"]).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        TcpStream::connect(sim.addr(4).unwrap())
            .await
            .unwrap_err()
            .kind(),
        io::ErrorKind::ConnectionRefused
    );
    let out = ctl(&control, &["fault", "2", "slow", "2s"]).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("slow 2s"));
    let out = ctl(&control, &["fault", "3", "garbage", "two_rows", "--json"]).await;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["fault"],
        serde_json::json!({"fault": "garbage", "variant": "two_rows"})
    );
    let out = ctl(&control, &["fault", "5", "crash-restart", "1h"]).await;
    assert!(out.status.success());
    assert_eq!(sim.view(5).unwrap().phase, Phase::Crashed);

    let out = ctl(&control, &["--json", "show", "2"]).await;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["fault"]["delay"], "2s");

    for dbid in ["2", "3", "4", "5"] {
        assert!(ctl(&control, &["clear", dbid]).await.status.success());
    }
    assert_eq!(probe(&sim, 4).await, [0, 0, 0, 1, 0]);
    assert!(ctl(&control, &["recover", "4"]).await.status.success());

    // Errors: unknown dbid (404 from the API), bad fault words (usage), unreachable address.
    let out = ctl(&control, &["show", "99"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));
    let out = ctl(&control, &["fault", "2", "explode"]).await;
    assert!(!out.status.success());
    let out = ctl("127.0.0.1:1", &["list"]).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cannot reach control API"));
}

#[tokio::test]
async fn http_api_errors_are_json() {
    let mut sim = start(pairs(1)).await;
    let control = sim
        .serve_control("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let result = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let base = format!("http://{control}");
        let post = |path: &str, body: &str| {
            let mut r = agent
                .post(&format!("{base}{path}"))
                .content_type("application/json")
                .send(body)
                .unwrap();
            let v: serde_json::Value = r.body_mut().read_json().unwrap();
            (r.status().as_u16(), v)
        };
        vec![
            post("/segments/2/fault", "{not json"),
            post("/segments/2/fault", r#"{"fault":"slow"}"#),
            post("/segments/99/fault", r#"{"fault":"down"}"#),
            post("/segments/abc/clear", ""),
            post("/nope", ""),
            post("/segments/2/fault", r#"{"fault":"slow","delay":"1ms"}"#),
        ]
    })
    .await
    .unwrap();
    let statuses: Vec<u16> = result.iter().map(|r| r.0).collect();
    assert_eq!(statuses, [400, 400, 404, 400, 404, 200]);
    assert!(result[..5].iter().all(|r| r.1["error"].is_string()));
    assert_eq!(result[5].1["fault"]["fault"], "slow");
}

#[tokio::test]
async fn run_binary_reports_ready_and_stops_on_sigterm() {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_fts-segsim"))
        .args([
            "run",
            "--pairs",
            "2",
            "--mirrorless",
            "1",
            "--base-port",
            "0",
            "--control",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn fts-segsim run");
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let control = tokio::time::timeout(PATIENCE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(at) = line.find("segsim ready") {
                let rest = &line[at..];
                let addr = rest.split("control=").nth(1).unwrap();
                return addr.split_whitespace().next().unwrap().to_string();
            }
        }
        panic!("no ready line");
    })
    .await
    .expect("ready in time");
    let out = ctl(&control, &["list", "--json"]).await;
    let views: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(views.len(), 5, "2 pairs + 1 mirrorless primary");
    let port = views[0]["port"].as_u64().unwrap() as u16;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let msgs = fts(addr, "gpadmin", None, "PROBE dbid=2 contid=0")
        .await
        .unwrap();
    assert_eq!(values(&msgs), [1, 1, 1, 0, 0]);

    let pid = child.id().expect("running") as i32;
    // SAFETY: plain kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .expect("exits")
        .unwrap();
    assert!(status.success(), "{status:?}");
}

/// Against a real throwaway PostgreSQL (testkit), in a throw-away schema.
#[tokio::test]
async fn catalog_rows_are_written_when_a_database_is_available() {
    use fts_segsim::catalog::{write_catalog_with, CatalogError};
    let pg = fts_testkit::pg::PgServer::builder().start().await.unwrap();
    let url = pg.url();
    let schema = format!("segsim_test_{}", std::process::id());
    let mut config: tokio_postgres::Config = url.parse().unwrap();
    let (admin, conn) = config.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    admin
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
        ))
        .await
        .unwrap();
    config.options(format!("-c search_path={schema}"));

    let sim = start(SimConfig {
        mirrorless: 1,
        ..pairs(2)
    })
    .await;
    let rows = sim.segments();
    let err = write_catalog_with(&config, &rows).await.unwrap_err();
    assert!(matches!(err, CatalogError::MissingTable), "{err}");

    admin
        .batch_execute(&format!(
            r#"CREATE TABLE {schema}.gp_segment_configuration (dbid int2, content int2, role "char",
               preferred_role "char", mode "char", status "char", port int4, hostname text,
               address text, datadir text);
               INSERT INTO {schema}.gp_segment_configuration VALUES (99, 0, 'p', 'p', 's', 'u', 1, 'x', 'x', 'x')"#
        ))
        .await
        .unwrap();
    write_catalog_with(&config, &rows).await.unwrap();
    let got = admin
        .query(
            &format!(
                "SELECT dbid, content, role::text, preferred_role::text, mode::text, status::text, port, address
                 FROM {schema}.gp_segment_configuration ORDER BY dbid"
            ),
            &[],
        )
        .await
        .unwrap();
    admin
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
    /// dbid, content, role, preferred_role, mode, status, port, address
    type Row = (i16, i16, String, String, String, String, i32, String);
    let got: Vec<Row> = got
        .iter()
        .map(|r| {
            (
                r.get(0),
                r.get(1),
                r.get(2),
                r.get(3),
                r.get(4),
                r.get(5),
                r.get(6),
                r.get(7),
            )
        })
        .collect();
    let want: Vec<_> = rows
        .iter()
        .map(|s| {
            (
                s.dbid,
                s.content,
                s.role.to_string(),
                s.preferred_role.to_string(),
                s.mode.to_string(),
                s.status.to_string(),
                s.port,
                s.address.clone(),
            )
        })
        .collect();
    assert_eq!(got, want);
    assert_eq!(got.len(), 6, "coordinator + 2 pairs + 1 mirrorless primary");
    assert!(got
        .iter()
        .filter(|r| r.1 >= 0)
        .all(|r| r.6 == sim.addr(r.0).unwrap().port() as i32));
}
