use super::*;

const PAUSE: &str = "/ftsd.v1.Fts/Pause";
const STATUS: &str = "/ftsd.v1.Fts/Status";

fn remote() -> Option<SocketAddr> {
    Some("10.0.0.9:51000".parse().unwrap())
}

fn local() -> Option<SocketAddr> {
    Some("127.0.0.1:51000".parse().unwrap())
}

#[test]
fn unknown_methods_are_mutating() {
    assert_eq!(access(PAUSE), Access::Mutate);
    assert_eq!(access("/ftsd.v1.Fts/Resume"), Access::Mutate);
    assert_eq!(access("/ftsd.v1.Fts/ProbeNow"), Access::Mutate);
    assert_eq!(access("/ftsd.v1.Fts/Switchover"), Access::Mutate);
    assert_eq!(access("/ftsd.v1.Fts/ReleaseBrake"), Access::Mutate);
    assert_eq!(access("/other.Service/Status"), Access::Mutate);
    assert_eq!(access(STATUS), Access::Read);
    assert_eq!(
        access("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
        Access::Read
    );
    assert_eq!(access("/grpc.health.v1.Health/Check"), Access::Open);
}

#[test]
fn every_proto_method_has_a_deliberate_class() {
    // A method added to the .proto fails here until its class is decided (by default it is
    // mutating; a read-only one must be listed in `access`).
    let expected = [
        ("Status", Access::Read),
        ("Segments", Access::Read),
        ("History", Access::Read),
        ("Explain", Access::Read),
        ("Shadow", Access::Read),
        ("BrakeStatus", Access::Read),
        ("ProbeNow", Access::Mutate),
        ("BrakeRelease", Access::Mutate),
        ("Pause", Access::Mutate),
        ("Resume", Access::Mutate),
        // Changes which server is the primary: the most consequential call there is.
        ("Switchover", Access::Mutate),
    ];
    let proto = include_str!("../ftsd.proto");
    let methods: Vec<&str> = proto
        .lines()
        .filter_map(|l| l.trim().strip_prefix("rpc "))
        .filter_map(|l| l.split('(').next())
        .collect();
    assert!(methods.len() >= expected.len(), "{methods:?}");
    for m in methods {
        let Some((_, want)) = expected.iter().find(|(name, _)| *name == m) else {
            panic!("new API method {m}: decide its class in api/auth.rs and list it here");
        };
        assert_eq!(access(&format!("/ftsd.v1.Fts/{m}")), *want, "{m}");
    }
}

#[test]
fn mutating_calls_need_credentials() {
    let p = Policy::new(Some(Secret::new("0123456789abcdef")), true, ReadAuth::None);
    assert!(p.check(PAUSE, Presented::Token, remote()).is_ok());
    assert!(p
        .check(PAUSE, Presented::ClientCertificate, remote())
        .is_ok());
    let e = p.check(PAUSE, Presented::Nothing, local()).unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    assert!(e.message().contains("requires authentication"), "{e:?}");
    assert!(p.check(PAUSE, Presented::WrongToken, remote()).is_err());
    assert!(p.check(STATUS, Presented::Nothing, remote()).is_ok());
    assert!(p.check(STATUS, Presented::WrongToken, remote()).is_err());
}

#[test]
fn read_auth_required_covers_reads_not_health() {
    let p = Policy::new(
        Some(Secret::new("0123456789abcdef")),
        false,
        ReadAuth::Required,
    );
    assert!(p.check(STATUS, Presented::Nothing, local()).is_err());
    assert!(p.check(STATUS, Presented::Token, remote()).is_ok());
    assert!(p
        .check("/grpc.health.v1.Health/Check", Presented::Nothing, remote())
        .is_ok());
}

#[test]
fn without_credentials_only_loopback_may_mutate() {
    let p = Policy::new(None, false, ReadAuth::None);
    assert!(p.check(PAUSE, Presented::Nothing, local()).is_ok());
    assert!(p.check(PAUSE, Presented::Nothing, None).is_err());
    let e = p.check(PAUSE, Presented::Nothing, remote()).unwrap_err();
    assert!(e.message().contains("loopback only"), "{e:?}");
    assert!(p.check(STATUS, Presented::Nothing, remote()).is_ok());
}

#[test]
fn reads_the_bearer_token() {
    let p = Policy::new(Some(Secret::new("0123456789abcdef")), true, ReadAuth::None);
    let req = |auth: Option<&str>| {
        let mut b = http::Request::builder().uri(PAUSE);
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        b.body(()).unwrap()
    };
    assert_eq!(p.presented(&req(None)), Presented::Nothing);
    assert_eq!(
        p.presented(&req(Some("Bearer 0123456789abcdef"))),
        Presented::Token
    );
    assert_eq!(
        p.presented(&req(Some("Bearer 0123456789abcdeX"))),
        Presented::WrongToken
    );
    assert_eq!(
        p.presented(&req(Some("Basic 0123456789abcdef"))),
        Presented::WrongToken
    );
    // No TLS connection info: a client certificate cannot have been verified.
    let none = Policy::new(None, true, ReadAuth::None);
    assert_eq!(none.presented(&req(None)), Presented::Nothing);
}
