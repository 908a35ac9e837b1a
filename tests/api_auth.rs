//! TLS and authentication of the API and the metrics endpoint, end to end: two real `ftsd`
//! processes (real etcd, real PostgreSQL catalog, `fts-segsim`) serving TLS with a test PKI
//! made by `etcd/make-certs`, driven by the real `ftsctl`.
//!
//! Mutating calls are refused without credentials (exit code 5) and accepted with the token or
//! a client certificate of the configured CA; a certificate from another CA is refused; reads
//! are open with `read_auth = "none"` and refused with `"required"`; a pause with `--for`
//! expires by itself; the metrics endpoint wants its token; out-of-range inputs are refused;
//! the instance-to-instance credentials (`Credentials::for_instance`) are accepted.
//!
//! Against a TLS etcd that requires client certificates: the daemon elects itself through it
//! (`etcd.ca_file`, `etcd.cert_file`, `etcd.key_file`) and `ftsctl --etcd` finds it with
//! `--etcd-cacert`, `--etcd-cert`, `--etcd-key`; no or a foreign certificate is refused.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use fts_testkit::etcd::{EtcdCluster, EtcdTls};
use fts_testkit::pki::Pki;
use ftsd::api::client::Credentials;
use ftsd::api::proto;
use ftsd::config::{ApiConfig, Secret};
use serde_json::Value;
use support::{addresses, ftsctl, ftsctl_expect, stderr, stdout, wait_for, System};

const LIMIT: Duration = Duration::from_secs(30);
const TOKEN: &str = "api-token-0123456789abcdef";
const METRICS_TOKEN: &str = "metrics-token-0123456789abcdef";

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `a` followed by `b`.
fn cat<'a>(a: &[&'a str], b: &[&'a str]) -> Vec<&'a str> {
    a.iter().chain(b).copied().collect()
}

/// `curl` of an https URL with the test CA: (HTTP status, body).
fn curl(url: &str, ca: &Path, token: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", "--cacert", path(ca)]);
    cmd.args(["-o", "-", "-w", "\n%{http_code}"]);
    if let Some(t) = token {
        cmd.arg("-H").arg(format!("Authorization: Bearer {t}"));
    }
    let o = cmd.arg(url).output().expect("run curl");
    let out = stdout(&o);
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_and_metrics_need_credentials_over_tls() {
    let pki = Pki::new(&[("fts1", "127.0.0.1")], &["operator"]).unwrap();
    let other = Pki::new(&[], &["operator"]).unwrap();
    let ca = pki.ca();
    let (cert, key) = pki.server("fts1");
    let etcd = EtcdCluster::start(1).await.unwrap();
    let mut sys = System::start(1, Duration::from_millis(500)).await;
    sys.etcd_endpoints = etcd.endpoints();
    let token_file = sys.dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let metrics_token_file = sys.dir.path().join("metrics-token");
    std::fs::write(&metrics_token_file, format!("{METRICS_TOKEN}\n")).unwrap();
    let wrong_token_file = sys.dir.path().join("wrong-token");
    std::fs::write(&wrong_token_file, "not-the-token-0123456789\n").unwrap();

    let tls_env = [
        ("FTSD_API_TLS_CERT_FILE", path(&cert)),
        ("FTSD_API_TLS_KEY_FILE", path(&key)),
        ("FTSD_API_CLIENT_CA_FILE", path(&ca)),
        ("FTSD_API_TOKEN_FILE", path(&token_file)),
        ("FTSD_API_METRICS_TOKEN_FILE", path(&metrics_token_file)),
    ];
    let a = sys.spawn_ftsd_env("a", &[], "", &tls_env);
    let (api_a, metrics_a) = addresses(&sys.daemons[a].config);
    let ca_s = path(&ca).to_owned();
    let (op_cert, op_key) = pki.client("operator");
    let (bad_cert, bad_key) = other.client("operator");
    let cacert = ["--cacert", ca_s.as_str()];
    let tok = ["--cacert", ca_s.as_str(), "--token-file", path(&token_file)];
    let mtls = [
        "--cacert",
        ca_s.as_str(),
        "--cert",
        path(&op_cert),
        "--key",
        path(&op_key),
    ];

    // Reads need nothing but the CA (read_auth = none); a leader gets elected.
    let st = wait_for("a to lead", LIMIT, || {
        let o = ftsctl(&api_a, &cat(&["status", "--json"], &cacert));
        async move {
            let v: Value = serde_json::from_slice(&o.stdout).ok()?;
            (v["leader_id"] == "a").then_some(v)
        }
    })
    .await;
    assert_eq!(st["pause"]["paused"], false);

    // Plaintext against the TLS listener does not get through.
    let o = ftsctl(&api_a, &["status"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));

    // An unauthenticated pause is refused with exit code 5 and says what to pass.
    let o = ftsctl(&api_a, &cat(&["pause", "--reason", "x"], &cacert));
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("requires authentication: pass --token-file or --cert/--key"),
        "{err}"
    );
    // So is probe-now, and so is a wrong token (even for a read).
    let o = ftsctl(&api_a, &cat(&["probe"], &cacert));
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    let wrong = ["--token-file", path(&wrong_token_file)];
    let o = ftsctl(
        &api_a,
        &cat(&cat(&["pause", "--reason", "x"], &cacert), &wrong),
    );
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("invalid bearer token"),
        "{}",
        stderr(&o)
    );

    // With the token: pause, status shows it as indefinite, resume.
    let out = ftsctl_expect(&api_a, &cat(&["pause", "--reason", "maintenance"], &tok), 0);
    assert!(out.contains("indefinitely (until resumed)"), "{out}");
    let out = ftsctl_expect(&api_a, &cat(&["status"], &tok), 0);
    assert!(
        out.contains("yes, by ") && out.contains("indefinitely"),
        "{out}"
    );
    ftsctl_expect(&api_a, &cat(&["resume"], &tok), 0);

    // With a client certificate of the configured CA: a pause for 2s, which ends by itself.
    let args = cat(
        &["pause", "--reason", "short", "--for", "2s", "--json"],
        &mtls,
    );
    let p: Value = serde_json::from_str(&ftsctl_expect(&api_a, &args, 0)).unwrap();
    assert_eq!(p["paused"], true);
    assert!(p["until_ms"].as_i64().unwrap() > p["at_ms"].as_i64().unwrap());
    wait_for("the pause to expire", LIMIT, || {
        let o = ftsctl(&api_a, &cat(&["status", "--json"], &cacert));
        async move {
            let v: Value = serde_json::from_slice(&o.stdout).ok()?;
            (v["pause"]["paused"] == false).then_some(())
        }
    })
    .await;
    assert!(sys.daemons[a].log_text().contains("pause expired"));

    // A client certificate from another CA is refused.
    let bad = ["--cert", path(&bad_cert), "--key", path(&bad_key)];
    let o = ftsctl(
        &api_a,
        &cat(&cat(&["pause", "--reason", "x"], &cacert), &bad),
    );
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));

    // Bounded inputs are refused with the bound named.
    let o = ftsctl(&api_a, &cat(&["history", "--limit", "20000"], &tok));
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("maximum 10000"), "{}", stderr(&o));
    let o = ftsctl(
        &api_a,
        &cat(&["pause", "--reason", "x", "--for", "40days"], &tok),
    );
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("more than the maximum"),
        "{}",
        stderr(&o)
    );

    // The metrics endpoint: TLS, and its own token.
    let url = format!("https://{metrics_a}/metrics");
    let (code, _) = curl(&url, &ca, None);
    assert_eq!(code, 401);
    let (code, _) = curl(&url, &ca, Some(TOKEN));
    assert_eq!(code, 401, "the API token is not the metrics token");
    let (code, body) = curl(&url, &ca, Some(METRICS_TOKEN));
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("ftsd_paused 0"), "{body}");
    let (code, _) = curl(&format!("https://{metrics_a}/healthz"), &ca, None);
    assert_eq!(code, 200);

    // Instance-to-instance credentials: what a daemon presents to another instance.
    let instance = ApiConfig {
        tls_cert_file: Some(cert.clone()),
        tls_key_file: Some(key.clone()),
        client_ca_file: Some(ca.clone()),
        ..ApiConfig::default()
    };
    let by_cert = Credentials::for_instance(&instance).unwrap();
    let mut client = by_cert.connect(&api_a, LIMIT).await.unwrap();
    let paused = client
        .pause(proto::PauseRequest {
            reason: "peer".into(),
            by: "b".into(),
            duration_ms: 0,
        })
        .await
        .expect("the instance's certificate authenticates a mutating call")
        .into_inner();
    assert!(paused.paused);
    let by_token = Credentials {
        identity: None,
        token: Some(Secret::new(TOKEN)),
        ..by_cert.clone()
    };
    let mut client = by_token.connect(&api_a, LIMIT).await.unwrap();
    let resumed = client
        .resume(proto::ResumeRequest { by: "b".into() })
        .await
        .expect("the token authenticates a mutating call")
        .into_inner();
    assert!(!resumed.paused);
    let anonymous = Credentials {
        identity: None,
        token: None,
        ..by_cert
    };
    let mut client = anonymous.connect(&api_a, LIMIT).await.unwrap();
    let refused = client
        .probe_now(proto::ProbeNowRequest { timeout_ms: 0 })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    // read_auth = "required": a second instance refuses anonymous reads, answers with the token.
    let mut env_b = tls_env.to_vec();
    env_b.push(("FTSD_API_READ_AUTH", "required"));
    let b = sys.spawn_ftsd_env("b", &[], "", &env_b);
    let (api_b, _) = addresses(&sys.daemons[b].config);
    let args = cat(&["members", "--json"], &tok);
    wait_for("b to answer", LIMIT, || {
        let o = ftsctl(&api_b, &args);
        async move { o.status.success().then_some(()) }
    })
    .await;
    let o = ftsctl(&api_b, &cat(&["status"], &cacert));
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("requires authentication"),
        "{}",
        stderr(&o)
    );
    ftsctl_expect(&api_b, &cat(&["segments"], &mtls), 0);
}

/// The real `ftsctl` without `--endpoint` (it finds the instances through `--etcd`).
fn ftsctl_etcd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ftsctl"))
        .args(args)
        .env_remove("FTSCTL_ENDPOINT")
        .env_remove("FTSCTL_ETCD")
        .env("NO_COLOR", "1")
        .output()
        .expect("run ftsctl")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_and_ftsctl_use_a_tls_etcd_with_client_certificates() {
    let pki = Pki::new(&[("etcd", "127.0.0.1")], &["operator"]).unwrap();
    let other = Pki::new(&[], &["operator"]).unwrap();
    let (server_cert, server_key) = pki.server("etcd");
    let etcd = EtcdCluster::builder()
        .tls(EtcdTls {
            ca: pki.ca(),
            cert: server_cert,
            key: server_key,
        })
        .start()
        .await
        .unwrap();
    let endpoint = etcd.endpoints()[0].clone();
    assert!(endpoint.starts_with("https://"), "{endpoint}");
    let mut sys = System::start(1, Duration::from_millis(500)).await;
    sys.etcd_endpoints = etcd.endpoints();
    let ca = pki.ca();
    let (ftsd_cert, ftsd_key) = pki.client("ftsd");
    let a = sys.spawn_ftsd_env(
        "a",
        &[],
        "",
        &[
            ("FTSD_ETCD_CA_FILE", path(&ca)),
            ("FTSD_ETCD_CERT_FILE", path(&ftsd_cert)),
            ("FTSD_ETCD_KEY_FILE", path(&ftsd_key)),
        ],
    );
    let (api_a, _) = addresses(&sys.daemons[a].config);

    // The daemon is elected through the TLS etcd; ftsctl finds it there with its own
    // client certificate.
    let (op_cert, op_key) = pki.client("operator");
    let etcd_tls = [
        "--etcd",
        endpoint.as_str(),
        "--cluster",
        "test",
        "--etcd-cacert",
        path(&ca),
        "--etcd-cert",
        path(&op_cert),
        "--etcd-key",
        path(&op_key),
    ];
    let leader = wait_for("a to lead, seen through the TLS etcd", LIMIT, || {
        let o = ftsctl_etcd(&cat(&["leader", "--json"], &etcd_tls));
        async move {
            let v: Value = serde_json::from_slice(&o.stdout).ok()?;
            (v["leader_id"] == "a").then_some(v)
        }
    })
    .await;
    assert_eq!(leader["leader_address"], api_a.as_str());

    // No client certificate, or one from another CA: etcd refuses (exit 3, one line).
    let no_cert = [
        "--etcd",
        endpoint.as_str(),
        "--cluster",
        "test",
        "--etcd-cacert",
        path(&ca),
        "--timeout",
        "3s",
    ];
    let o = ftsctl_etcd(&cat(&["leader"], &no_cert));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("etcd"), "{}", stderr(&o));
    let (bad_cert, bad_key) = other.client("operator");
    let bad = ["--etcd-cert", path(&bad_cert), "--etcd-key", path(&bad_key)];
    let o = ftsctl_etcd(&cat(&cat(&["leader"], &no_cert), &bad));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    // https without a CA, or a CA file that is no certificate: a usage error naming the flag.
    let o = ftsctl_etcd(&["leader", "--etcd", endpoint.as_str(), "--cluster", "test"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--etcd-cacert"), "{}", stderr(&o));
    let o = ftsctl_etcd(&cat(
        &["leader", "--etcd-cacert", path(&op_key)],
        &["--etcd", endpoint.as_str(), "--cluster", "test"],
    ));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--etcd-cacert") && stderr(&o).contains("no PEM certificate"),
        "{}",
        stderr(&o)
    );
}
