//! Configuration loading: defaults, precedence, the exact one-line errors, secret masking, and
//! the shipped sample file. The environment is passed in, never read from the process.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fts_testkit::pki::Pki;
use ftsd::catalog::postgres::PgCatalogConfig;
use ftsd::config::{Config, ConfigError, LogFormat, Overrides, ProbeConfig};
use tempfile::TempDir;

/// The required keys, without a table header so that tests can append top-level keys.
const MINIMAL: &str =
    "cluster = \"gp1\"\ncatalog.url = \"postgresql://gpadmin@cdw:5432/postgres\"\n";

struct Case {
    dir: TempDir,
    path: PathBuf,
}

impl Case {
    fn new(text: &str) -> Case {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ftsd.toml");
        std::fs::write(&path, text).unwrap();
        Case { dir, path }
    }

    /// A file next to the config; returns its path.
    fn file(&self, name: &str, content: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    fn load(&self, env: &[(&str, &str)], overrides: &Overrides) -> Result<Config, ConfigError> {
        Config::load(&self.path, env.iter().copied(), overrides)
    }

    /// The error line, with the temporary directory shown as if the file were `ftsd.toml` in
    /// the current directory.
    fn error(&self, env: &[(&str, &str)], overrides: &Overrides) -> String {
        let err = self
            .load(env, overrides)
            .expect_err("configuration should be rejected");
        assert_eq!(err.exit_code(), 2);
        let line = err.to_string();
        assert!(!line.contains('\n'), "not one line: {line:?}");
        line.replace(&format!("{}/", self.dir.path().display()), "")
    }
}

fn load_ok(text: &str) -> Config {
    Case::new(text).load(&[], &Overrides::default()).unwrap()
}

/// The error for `extra` appended to a valid minimal file.
fn file_error(extra: &str) -> String {
    Case::new(&format!("{MINIMAL}{extra}")).error(&[], &Overrides::default())
}

fn env_error(env: &[(&str, &str)]) -> String {
    Case::new(MINIMAL).error(env, &Overrides::default())
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn defaults_are_greenplums() {
    let probe = ProbeConfig::default();
    assert_eq!(probe.interval, secs(60)); // gp_fts_probe_interval
    assert_eq!(probe.timeout, secs(20)); // gp_fts_probe_timeout
    assert_eq!(probe.retries, 5); // gp_fts_probe_retries
    assert_eq!(probe.retry_delay, secs(1));
    assert_eq!(probe.mirror_down_grace, secs(30)); // gp_fts_mark_mirror_down_grace_period

    let cfg = load_ok(MINIMAL);
    assert_eq!(cfg.probe, probe);
    assert_eq!(cfg.cluster, "gp1");
    assert_eq!(cfg.instance_id, None);
    assert_eq!(cfg.probe.concurrency, 256);
    assert_eq!(cfg.probe.user, "gpadmin");
    assert_eq!(cfg.catalog.connect_timeout, secs(5));
    assert_eq!(cfg.catalog.statement_timeout, secs(10));
    assert_eq!(cfg.etcd.endpoints, ["http://127.0.0.1:2379"]);
    assert_eq!(cfg.etcd.prefix, "/ftsd");
    assert_eq!(cfg.etcd.lease_ttl, secs(10));
    assert_eq!(cfg.etcd.act_margin, secs(1));
    assert_eq!(cfg.etcd.dial_timeout, secs(2));
    assert_eq!(cfg.api.listen.to_string(), "127.0.0.1:7470");
    assert_eq!(cfg.api.metrics_listen.to_string(), "127.0.0.1:7471");
    assert_eq!(cfg.log.format, LogFormat::Text);
    assert_eq!(cfg.log.level, "info");
}

#[test]
fn file_values_are_read() {
    let cfg = load_ok(&format!(
        "{MINIMAL}instance_id = \"a\"\n[probe]\ninterval = \"2m\"\ntimeout = \"500ms\"\n\
         retries = 100\nconcurrency = 65536\n[etcd]\nendpoints = [\"https://e1:2379\", \
         \"http://[::1]:2379\"]\nlease_ttl = \"3s\"\n[log]\nformat = \"json\"\n\
         level = \"info,ftsd=debug\"\n"
    ));
    assert_eq!(cfg.instance_id.as_deref(), Some("a"));
    assert_eq!(cfg.effective_instance_id(), "a");
    assert_eq!(cfg.probe.interval, secs(120));
    assert_eq!(cfg.probe.timeout, Duration::from_millis(500));
    assert_eq!(cfg.probe.retries, 100);
    assert_eq!(cfg.probe.concurrency, 65536);
    assert_eq!(cfg.etcd.endpoints, ["https://e1:2379", "http://[::1]:2379"]);
    assert_eq!(cfg.etcd.lease_ttl, secs(3));
    assert_eq!(cfg.log.format, LogFormat::Json);
}

#[test]
fn default_instance_id_is_hostname_and_pid() {
    let id = load_ok(MINIMAL).effective_instance_id();
    let pid = std::process::id().to_string();
    let (host, id_pid) = id.rsplit_once(':').unwrap();
    assert!(!host.is_empty());
    assert_eq!(id_pid, pid);
    assert_eq!(host, ftsd::config::hostname());
}

#[test]
fn file_errors() {
    let cases: &[(&str, &str)] = &[
        (
            "[probe]\nintervall = \"5s\"\n",
            "ftsd.toml: unknown key 'probe.intervall'",
        ),
        (
            "[prob]\ninterval = \"5s\"\n",
            "ftsd.toml: unknown key 'prob'",
        ),
        ("verbose = true\n", "ftsd.toml: unknown key 'verbose'"),
        (
            "[probe]\npassword = \"x\"\n",
            "ftsd.toml: unknown key 'probe.password' (passwords are not read from the file: \
             use password_file or FTSD_<TABLE>_PASSWORD)",
        ),
        (
            "probe = 5\n",
            "ftsd.toml: probe: expected a table, found integer",
        ),
        (
            "[probe]\nretries = \"5\"\n",
            "ftsd.toml: probe.retries: expected an integer, found string",
        ),
        (
            "[probe]\ninterval = 60\n",
            "ftsd.toml: probe.interval: expected a duration string such as \"60s\", found integer",
        ),
        (
            "[etcd]\nendpoints = \"http://a:2379\"\n",
            "ftsd.toml: etcd.endpoints: expected an array of strings, found string",
        ),
        (
            "[probe]\nretries = 0\n",
            "ftsd.toml: probe.retries = 0: must be between 1 and 100",
        ),
        (
            "[probe]\nretries = 101\n",
            "ftsd.toml: probe.retries = 101: must be between 1 and 100",
        ),
        (
            "[probe]\nretries = -1\n",
            "ftsd.toml: probe.retries: -1 is out of range",
        ),
        (
            "[probe]\nconcurrency = 0\n",
            "ftsd.toml: probe.concurrency = 0: must be between 1 and 65536",
        ),
        (
            "[probe]\nconcurrency = 65537\n",
            "ftsd.toml: probe.concurrency = 65537: must be between 1 and 65536",
        ),
        (
            "[probe]\ninterval = \"500ms\"\n",
            "ftsd.toml: probe.interval = \"500ms\": must be between 1s and 1h",
        ),
        (
            "[probe]\ninterval = \"10s\"\n",
            "ftsd.toml: probe.interval = \"10s\": must be greater than probe.timeout (20s)",
        ),
        (
            "[probe]\ntimeout = \"60s\"\n",
            "ftsd.toml: probe.timeout = \"1m\": must be less than probe.interval (1m)",
        ),
        (
            "[probe]\ntimeout = \"0s\"\n",
            "ftsd.toml: probe.timeout = \"0s\": must be between 1ms and 1h",
        ),
        (
            "[probe]\nmirror_down_grace = \"2h\"\n",
            "ftsd.toml: probe.mirror_down_grace = \"2h\": must be at most 1h",
        ),
        (
            "[probe]\nuser = \"\"\n",
            "ftsd.toml: probe.user = \"\": must not be empty",
        ),
        (
            "[etcd]\nendpoints = [\"127.0.0.1:2379\"]\n",
            "ftsd.toml: etcd.endpoints = [\"127.0.0.1:2379\"]: \"127.0.0.1:2379\" has no scheme \
             (expected http://host:port or https://host:port)",
        ),
        (
            "[etcd]\nendpoints = []\n",
            "ftsd.toml: etcd.endpoints = []: must list at least one endpoint",
        ),
        (
            "[etcd]\nprefix = \"ftsd\"\n",
            "ftsd.toml: etcd.prefix = \"ftsd\": must start with '/', not end with '/', and \
             contain no whitespace",
        ),
        (
            "[etcd]\nlease_ttl = \"1s\"\n",
            "ftsd.toml: etcd.lease_ttl = \"1s\": must be between 2s and 1h",
        ),
        (
            "[etcd]\nlease_ttl = \"2500ms\"\n",
            "ftsd.toml: etcd.lease_ttl = \"2s 500ms\": must be a whole number of seconds (etcd \
             leases have 1s granularity)",
        ),
        (
            "[etcd]\nact_margin = \"5s\"\n",
            "ftsd.toml: etcd.act_margin = \"5s\": must be less than half of etcd.lease_ttl (10s)",
        ),
        (
            "[etcd]\nlease_ttl = \"2s\"\n",
            "ftsd.toml: etcd.lease_ttl = \"2s\": must be more than twice etcd.act_margin (1s)",
        ),
        (
            "[etcd]\nusername = \"ftsd\"\n",
            "ftsd.toml: etcd.username = \"ftsd\": needs a password (etcd.password_file or \
             FTSD_ETCD_PASSWORD)",
        ),
        (
            "[etcd]\nca_file = \"/nonexistent/ca.pem\"\n",
            "ftsd.toml: etcd.ca_file = \"/nonexistent/ca.pem\": cannot read /nonexistent/ca.pem: \
             No such file or directory",
        ),
        (
            "[api]\nlisten = \"localhost:7470\"\n",
            "ftsd.toml: api.listen: invalid socket address \"localhost:7470\" (expected ip:port, \
             e.g. 127.0.0.1:7470)",
        ),
        (
            "[api]\nmetrics_listen = \"127.0.0.1:7470\"\n",
            "ftsd.toml: api.metrics_listen = \"127.0.0.1:7470\": must differ from api.listen",
        ),
        (
            "[log]\nformat = \"xml\"\n",
            "ftsd.toml: log.format: invalid log format \"xml\" (expected \"text\" or \"json\")",
        ),
        (
            "[log]\nlevel = \"=x=\"\n",
            "ftsd.toml: log.level = \"=x=\": invalid filter: invalid filter directive",
        ),
        (
            "[probe]\nretries = 5\nretries = 6\n",
            "ftsd.toml: invalid TOML at line 5, column 1: duplicate key",
        ),
    ];
    for (extra, expected) in cases {
        assert_eq!(&file_error(extra), expected, "for {extra:?}");
    }
}

#[test]
fn bad_duration_names_key_and_value() {
    let line = file_error("[probe]\ntimeout = \"20 sekunden\"\n");
    let expected = "ftsd.toml: probe.timeout: invalid duration \"20 sekunden\": unknown time unit \
                    \"sekunden\", supported units:";
    assert!(line.starts_with(expected), "{line}");
}

#[test]
fn required_keys() {
    let url = "[catalog]\nurl = \"postgresql://gpadmin@cdw/postgres\"\n";
    let none = Overrides::default();
    assert_eq!(
        Case::new(url).error(&[], &none),
        "ftsd.toml: cluster: is required but not set"
    );
    assert_eq!(
        Case::new(&format!("cluster = \"\"\n{url}")).error(&[], &none),
        "ftsd.toml: cluster = \"\": must not be empty"
    );
    assert_eq!(
        Case::new(&format!("cluster = \"a/b\"\n{url}")).error(&[], &none),
        "ftsd.toml: cluster = \"a/b\": may only contain letters, digits, '_', '.' and '-'"
    );
    assert_eq!(
        Case::new("cluster = \"gp1\"\n").error(&[], &none),
        "ftsd.toml: catalog.url: is required but not set"
    );
    assert_eq!(
        Case::new("cluster = \"gp1\"\n[catalog]\nurl = \"postgresql://cdw/postgres\"\n")
            .error(&[], &none),
        "ftsd.toml: catalog.url = \"postgresql://cdw/postgres\": connection string names no user \
         (expected postgresql://user@host:port/db or 'host=... user=... dbname=...')"
    );
    assert_eq!(
        Case::new("cluster = \"gp1\"\n[catalog]\nurl = \"cdw:5432\"\n").error(&[], &none),
        "ftsd.toml: catalog.url = \"cdw:5432\": invalid connection string: unexpected EOF \
         (expected postgresql://user@host:port/db or 'host=... user=... dbname=...')"
    );
    assert_eq!(
        Case::new("cluster = ").error(&[], &none),
        "ftsd.toml: invalid TOML at line 1, column 11: string values must be quoted, expected \
         literal string"
    );
}

#[test]
fn missing_file() {
    let err = Config::load(
        Path::new("/nonexistent/ftsd.toml"),
        std::iter::empty::<(&str, &str)>(),
        &Overrides::default(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot read /nonexistent/ftsd.toml: No such file or directory"
    );
    assert_eq!(err.exit_code(), 2);
}

#[test]
fn password_file_errors() {
    let case = Case::new(MINIMAL);
    let none = Overrides::default();
    let text = format!("{MINIMAL}[probe]\npassword_file = \"/nonexistent/pw\"\n");
    assert_eq!(
        Case::new(&text).error(&[], &none),
        "ftsd.toml: probe.password_file = \"/nonexistent/pw\": cannot read /nonexistent/pw: No \
         such file or directory"
    );
    let empty = case.file("empty.pw", "\n");
    let text = format!(
        "{MINIMAL}[probe]\npassword_file = \"{}\"\n",
        empty.display()
    );
    let line = Case::new(&text).error(&[], &none);
    assert!(
        line.ends_with(&format!("{} is empty", empty.display())),
        "{line}"
    );
    let dir = case.dir.path().display().to_string();
    let line = env_error(&[("FTSD_CATALOG_PASSWORD_FILE", &dir)]);
    assert_eq!(
        line,
        format!("FTSD_CATALOG_PASSWORD_FILE={dir}: cannot read {dir}: Is a directory")
    );
}

#[test]
fn etcd_tls_files() {
    let case = Case::new(MINIMAL);
    let pki = Pki::new(&[], &[]).unwrap();
    let (cert, key) = pki.client("ftsd");
    let tls = |extra: &str| format!("{MINIMAL}[etcd]\n{extra}");
    let both = tls(&format!(
        "cert_file = \"{}\"\nkey_file = \"{}\"\nca_file = \"{}\"\n",
        cert.display(),
        key.display(),
        cert.display()
    ));
    let cfg = load_ok(&both);
    assert_eq!(cfg.etcd.key_file.as_deref(), Some(key.as_path()));
    let none = Overrides::default();
    let line = Case::new(&tls(&format!("cert_file = \"{}\"\n", cert.display()))).error(&[], &none);
    assert!(
        line.ends_with("is set but etcd.key_file is not (they must be given together)"),
        "{line}"
    );
    let line = Case::new(&tls(&format!("key_file = \"{}\"\n", key.display()))).error(&[], &none);
    assert!(line.starts_with("ftsd.toml: etcd.key_file = "), "{line}");
    // A file that holds no certificate (or no key) is named with the key that points to it.
    let junk = case.file("junk.pem", "not a certificate");
    let line = Case::new(&tls(&format!("ca_file = \"{}\"\n", junk.display()))).error(&[], &none);
    assert!(line.starts_with("ftsd.toml: etcd.ca_file = "), "{line}");
    assert!(
        line.ends_with(&format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            junk.display()
        )),
        "{line}"
    );
    let line = Case::new(&tls(&format!(
        "cert_file = \"{}\"\nkey_file = \"{}\"\n",
        cert.display(),
        cert.display()
    )))
    .error(&[], &none);
    assert!(line.starts_with("ftsd.toml: etcd.key_file = "), "{line}");
    assert!(line.contains("holds no PEM private key"), "{line}");
}

#[test]
fn api_auth_settings() {
    let case = Case::new(MINIMAL);
    let pki = Pki::new(&[("fts1", "127.0.0.1")], &[]).unwrap();
    let (cert, key) = pki.server("fts1");
    let token = case.file("token", "0123456789abcdef0123\n");
    let metrics_token = case.file("mtoken", "fedcba9876543210fedc\n");
    let api = |extra: &str| format!("{MINIMAL}[api]\n{extra}");
    let full = api(&format!(
        "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\nclient_ca_file = \"{}\"\n\
         token_file = \"{}\"\nread_auth = \"required\"\nmetrics_token_file = \"{}\"\n",
        cert.display(),
        key.display(),
        pki.ca().display(),
        token.display(),
        metrics_token.display()
    ));
    let cfg = load_ok(&full);
    assert_eq!(
        cfg.api.token.as_ref().unwrap().expose(),
        "0123456789abcdef0123"
    );
    assert_eq!(cfg.api.read_auth, ftsd::config::ReadAuth::Required);
    assert!(!cfg.render_masked().contains("0123456789abcdef0123"));
    assert_eq!(load_ok(&cfg.render_masked()), cfg);

    let none = Overrides::default();
    let short = case.file("short", "abc\n");
    let line =
        Case::new(&api(&format!("token_file = \"{}\"\n", short.display()))).error(&[], &none);
    assert!(line.starts_with("ftsd.toml: api.token_file = "), "{line}");
    assert!(line.contains("at least 16 characters"), "{line}");
    let line = Case::new(&api("read_auth = \"required\"\n")).error(&[], &none);
    assert!(line.contains("api.read_auth"), "{line}");
    assert!(
        line.contains("api.token_file or api.client_ca_file"),
        "{line}"
    );
    let line = Case::new(&api(&format!(
        "client_ca_file = \"{}\"\n",
        pki.ca().display()
    )))
    .error(&[], &none);
    assert!(line.contains("client certificates need TLS"), "{line}");
    let line = Case::new(&api(&format!(
        "token_file = \"{0}\"\nmetrics_token_file = \"{0}\"\n",
        token.display()
    )))
    .error(&[], &none);
    assert!(
        line.starts_with("ftsd.toml: api.metrics_token_file"),
        "{line}"
    );
    let line = Case::new(&api("read_auth = \"maybe\"\n")).error(&[], &none);
    assert!(line.contains("expected \"none\" or \"required\""), "{line}");
    let line =
        Case::new(&api(&format!("tls_cert_file = \"{}\"\n", cert.display()))).error(&[], &none);
    assert!(
        line.ends_with("is set but api.tls_key_file is not (they must be given together)"),
        "{line}"
    );
}

#[test]
fn env_errors() {
    assert_eq!(
        env_error(&[("FTSD_PROBE_RETRIES", "abc")]),
        "FTSD_PROBE_RETRIES=abc: invalid number"
    );
    assert_eq!(
        env_error(&[("FTSD_PROBE_RETRIES", "0")]),
        "FTSD_PROBE_RETRIES=0: must be between 1 and 100"
    );
    assert!(env_error(&[("FTSD_PROBE_INTERVAL", "5x")])
        .starts_with("FTSD_PROBE_INTERVAL=5x: invalid duration: unknown time unit \"x\""));
    assert_eq!(
        env_error(&[("FTSD_PROBE_INTERVALL", "5s")]),
        "FTSD_PROBE_INTERVALL: no such setting (FTSD_* variables are reserved for configuration \
         keys, see docs/configuration.md)"
    );
    assert_eq!(
        env_error(&[("FTSD_ETCD_ENDPOINTS", "http://a:2379,b:2379")]),
        "FTSD_ETCD_ENDPOINTS=http://a:2379,b:2379: \"b:2379\" has no scheme (expected \
         http://host:port or https://host:port)"
    );
    assert_eq!(
        env_error(&[("FTSD_CLUSTER", "")]),
        "FTSD_CLUSTER=: must not be empty"
    );
    assert_eq!(
        env_error(&[("FTSD_LOG_FORMAT", "yaml")]),
        "FTSD_LOG_FORMAT=yaml: invalid log format (expected \"text\" or \"json\")"
    );
    // A bad value in the file and in the environment: the environment's wins, so it is the one
    // reported (and the file's value is irrelevant).
    assert_eq!(
        Case::new(&format!("{MINIMAL}[probe]\ninterval = \"10s\"\n"))
            .error(&[("FTSD_PROBE_TIMEOUT", "10s")], &Overrides::default()),
        "FTSD_PROBE_TIMEOUT=10s: must be less than probe.interval (10s)"
    );
}

#[test]
fn flag_errors() {
    let case = Case::new(MINIMAL);
    let flags = Overrides {
        probe_retries: Some("abc".into()),
        ..Overrides::default()
    };
    assert_eq!(
        case.error(&[], &flags),
        "--probe-retries=abc: invalid number"
    );
    let flags = Overrides {
        api_listen: Some("127.0.0.1:7471".into()),
        ..Overrides::default()
    };
    assert_eq!(
        case.error(&[], &flags),
        "--api-listen=127.0.0.1:7471: must differ from api.metrics_listen"
    );
}

#[test]
fn precedence_defaults_file_env_flags() {
    let case = Case::new(&format!(
        "{MINIMAL}instance_id = \"from-file\"\n[probe]\ninterval = \"30s\"\ntimeout = \"5s\"\n\
         retries = 3\n[log]\nlevel = \"debug\"\n"
    ));
    let env = [
        ("FTSD_PROBE_INTERVAL", "40s"),
        ("FTSD_PROBE_RETRIES", "4"),
        ("FTSD_CLUSTER", "gp-env"),
        ("FTSD_LOG_FORMAT", "json"),
        ("FTSD_ETCD_ENDPOINTS", "http://a:2379, http://b:2379"),
        ("FTSD_INSTANCE_ID", ""),
        ("FTSD_CONFIG", "/ignored/here.toml"),
        ("PATH", "/usr/bin"),
        ("FTSDX", "not ours"),
    ];
    let cfg = case.load(&env, &Overrides::default()).unwrap();
    assert_eq!(cfg.probe.interval, secs(40)); // env over file
    assert_eq!(cfg.probe.timeout, secs(5)); // file over default
    assert_eq!(cfg.probe.retries, 4);
    assert_eq!(cfg.probe.retry_delay, secs(1)); // default
    assert_eq!(cfg.cluster, "gp-env");
    assert_eq!(cfg.instance_id, None); // an empty variable clears an optional key
    assert_eq!(cfg.log.format, LogFormat::Json);
    assert_eq!(cfg.log.level, "debug");
    assert_eq!(cfg.etcd.endpoints, ["http://a:2379", "http://b:2379"]);

    let flags = Overrides {
        cluster: Some("gp-flag".into()),
        probe_interval: Some("50s".into()),
        probe_timeout: Some("6s".into()),
        probe_retries: Some("7".into()),
        catalog_url: Some("host=h user=u dbname=d".into()),
        etcd_endpoints: Some("https://c:2379".into()),
        log_format: Some("text".into()),
        log_level: Some("warn".into()),
        api_listen: Some("0.0.0.0:1".into()),
        metrics_listen: Some("0.0.0.0:2".into()),
    };
    let cfg = case.load(&env, &flags).unwrap();
    assert_eq!(cfg.cluster, "gp-flag");
    assert_eq!(cfg.probe.interval, secs(50));
    assert_eq!(cfg.probe.timeout, secs(6));
    assert_eq!(cfg.probe.retries, 7);
    assert_eq!(cfg.catalog.url.expose(), "host=h user=u dbname=d");
    assert_eq!(cfg.etcd.endpoints, ["https://c:2379"]);
    assert_eq!(cfg.log.format, LogFormat::Text);
    assert_eq!(cfg.log.level, "warn");
    assert_eq!(cfg.api.listen.to_string(), "0.0.0.0:1");
    assert_eq!(cfg.api.metrics_listen.to_string(), "0.0.0.0:2");
}

#[test]
fn passwords_are_loaded_and_never_shown() {
    let case = Case::new("");
    let probe_pw = case.file("probe.pw", "probe-secret-1\n");
    let etcd_pw = case.file("etcd.pw", "etcd-secret-2\r\n");
    let catalog_pw = case.file("catalog.pw", "catalog-secret-3");
    let text = format!(
        "cluster = \"gp1\"\n[probe]\npassword_file = \"{}\"\n[catalog]\n\
         url = \"postgresql://u:url-secret-4@h:5432/db?sslmode=disable\"\npassword_file = \"{}\"\n\
         [etcd]\nusername = \"ftsd\"\npassword_file = \"{}\"\n",
        probe_pw.display(),
        catalog_pw.display(),
        etcd_pw.display()
    );
    std::fs::write(&case.path, text).unwrap();
    let cfg = case.load(&[], &Overrides::default()).unwrap();
    assert_eq!(
        cfg.probe.password.as_ref().unwrap().expose(),
        "probe-secret-1"
    );
    assert_eq!(
        cfg.etcd.password.as_ref().unwrap().expose(),
        "etcd-secret-2"
    );
    assert_eq!(
        cfg.catalog.password.as_ref().unwrap().expose(),
        "catalog-secret-3"
    );

    let shown = [
        cfg.render_masked(),
        format!("{cfg:?}"),
        cfg.catalog.url.to_string(),
    ];
    for text in &shown {
        for secret in [
            "probe-secret-1",
            "etcd-secret-2",
            "catalog-secret-3",
            "url-secret-4",
        ] {
            assert!(!text.contains(secret), "{secret} leaked into:\n{text}");
        }
    }
    let rendered = &shown[0];
    assert!(rendered.contains("url = \"postgresql://u:********@h:5432/db?sslmode=disable\""));
    assert_eq!(
        rendered.matches("# password = \"********\"").count(),
        3,
        "{rendered}"
    );

    // The environment password wins over the file; the separate password wins over the URL's.
    let env = [("FTSD_PROBE_PASSWORD", "env-secret-5")];
    let cfg = case.load(&env, &Overrides::default()).unwrap();
    assert_eq!(
        cfg.probe.password.as_ref().unwrap().expose(),
        "env-secret-5"
    );
    assert!(!cfg.render_masked().contains("env-secret-5"));
    let pg = PgCatalogConfig::from(&cfg.catalog)
        .session_config()
        .unwrap();
    assert_eq!(pg.get_password(), Some(&b"catalog-secret-3"[..]));
    assert_eq!(pg.get_connect_timeout(), Some(&secs(5)));
    assert_eq!(
        pg.get_options(),
        Some("-c statement_timeout=10000 -c lock_timeout=3000 -c idle_in_transaction_session_timeout=5000")
    );
    assert_eq!(pg.get_tcp_user_timeout(), Some(&secs(15)));
    assert_eq!(pg.get_keepalives_idle(), secs(5));
}

#[test]
fn secrets_in_rejected_values_are_masked() {
    let line = env_error(&[("FTSD_CATALOG_URL", "postgresql://u:url-secret@/db")]);
    assert!(!line.contains("url-secret"), "{line}");
    assert!(
        line.starts_with("FTSD_CATALOG_URL=postgresql://u:********@/db: "),
        "{line}"
    );
    let text = "cluster = \"gp1\"\n[catalog]\nurl = \"host=h password=kv-secret\"\n";
    let line = Case::new(text).error(&[], &Overrides::default());
    assert!(!line.contains("kv-secret"), "{line}");
    // A password without an etcd user is reported without showing the password.
    let line = env_error(&[("FTSD_ETCD_PASSWORD", "etcd-secret")]);
    assert_eq!(
        line,
        "FTSD_ETCD_PASSWORD=********: an etcd password needs etcd.username"
    );
}

#[test]
fn rendered_config_loads_back_identically() {
    let text = format!(
        "{MINIMAL}instance_id = \"x\\\"y\"\n[probe]\ninterval = \"90s\"\nretry_delay = \"250ms\"\n\
         [etcd]\nendpoints = [\"http://a:1\", \"http://b:2\"]\n[log]\nformat = \"json\"\n"
    );
    let cfg = load_ok(&text);
    let again = load_ok(&cfg.render_masked());
    assert_eq!(cfg, again);
}

fn sample_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/ftsd.toml.example")
}

#[test]
fn sample_file_validates_and_documents_the_defaults() {
    let sample = std::fs::read_to_string(sample_path()).unwrap();
    let cfg = Config::load(
        &sample_path(),
        std::iter::empty::<(&str, &str)>(),
        &Overrides::default(),
    )
    .unwrap();

    // Uncommenting every `# key = value` line must change nothing: those are the defaults.
    let uncommented: String = sample
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest) if is_assignment(rest) => rest,
            _ => line,
        })
        .map(|line| format!("{line}\n"))
        .collect();
    assert_ne!(uncommented, sample);
    assert_eq!(load_ok(&uncommented), cfg);

    // Every key appears, either set, commented with its default, or as an example.
    for (key, _) in ftsd::config::all_keys() {
        let (table, leaf) = key.split_once('.').unwrap_or(("", key));
        let section = match table {
            "" => sample.split("\n[").next().unwrap(),
            table => sample
                .split(&format!("[{table}]\n"))
                .nth(1)
                .unwrap()
                .split("\n[")
                .next()
                .unwrap(),
        };
        let shown = section.lines().any(|line| {
            let line = line.trim_start_matches("# e.g. ").trim_start_matches("# ");
            line.starts_with(&format!("{leaf} = "))
        });
        assert!(shown, "sample file does not show {key}");
    }
}

fn is_assignment(s: &str) -> bool {
    s.split_once(" = ").is_some_and(|(k, _)| {
        !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
    })
}

#[test]
fn reference_documents_every_key_and_variable() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
    let doc = std::fs::read_to_string(path).unwrap();
    for (key, var) in ftsd::config::all_keys() {
        assert!(
            doc.contains(&format!("`{key}`")),
            "docs/configuration.md lacks `{key}`"
        );
        assert!(
            doc.contains(&format!("`{var}`")),
            "docs/configuration.md lacks `{var}`"
        );
    }
    for var in [
        "FTSD_PROBE_PASSWORD",
        "FTSD_CATALOG_PASSWORD",
        "FTSD_ETCD_PASSWORD",
        "FTSD_CONFIG",
    ] {
        assert!(
            doc.contains(&format!("`{var}`")),
            "docs/configuration.md lacks {var}"
        );
    }
}

mod no_panics {
    use super::*;
    use proptest::prelude::*;

    const VARS: &[&str] = &[
        "FTSD_CLUSTER",
        "FTSD_PROBE_INTERVAL",
        "FTSD_PROBE_RETRIES",
        "FTSD_CATALOG_URL",
        "FTSD_ETCD_ENDPOINTS",
        "FTSD_ETCD_LEASE_TTL",
        "FTSD_API_LISTEN",
        "FTSD_LOG_LEVEL",
        "FTSD_PROBE_PASSWORD_FILE",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn any_file_gives_a_config_or_one_line(text in "(?s).{0,200}") {
            let case = Case::new(&text);
            if let Err(e) = case.load(&[], &Overrides::default()) {
                prop_assert!(!e.to_string().contains('\n'));
            }
        }

        #[test]
        fn any_env_value_gives_a_config_or_one_line(
            var in prop::sample::select(VARS),
            value in "(?s).{0,60}",
        ) {
            let case = Case::new(MINIMAL);
            if let Err(e) = case.load(&[(var, value.as_str())], &Overrides::default()) {
                prop_assert!(!e.to_string().contains('\n'));
            }
        }

        #[test]
        fn conn_string_passwords_are_masked(
            password in "[A-Za-z0-9%!#$^&*()+=_-]{4,20}",
            text in "(?s).{0,80}",
        ) {
            use ftsd::config::ConnString;
            // A marker that occurs nowhere else in the strings below.
            let password = format!("Zq{password}");
            for url in [
                format!("postgresql://u:{password}@h:5432/db"),
                // '&' separates parameters, so a password has it percent-encoded.
                format!("postgres://u@h/db?sslmode=disable&password={}", password.replace('&', "%26")),
                format!("host=h password={password} dbname=db"),
                format!("host=h password='{password} x' dbname=db"),
            ] {
                let shown = ConnString::new(url.as_str()).to_string();
                let hidden = !shown.contains(&password) && !shown.contains(&password.replace('&', "%26"));
                prop_assert!(hidden, "{url} shown as {shown}");
            }
            // Arbitrary text must not panic the masking.
            let _ = ConnString::new(text).to_string();
        }

        #[test]
        fn toml_shaped_values_never_panic(
            key in prop::sample::select(&["interval", "timeout", "retries", "concurrency", "user"][..]),
            value in prop_oneof![
                any::<i64>().prop_map(|i| i.to_string()),
                "[0-9]{1,25}(ns|ms|s|m|h|d|y)".prop_map(|s| format!("\"{s}\"")),
                any::<f64>().prop_map(|f| format!("{f:?}")),
                Just("[]".to_owned()),
                Just("{}".to_owned()),
            ],
        ) {
            let case = Case::new(&format!("{MINIMAL}[probe]\n{key} = {value}\n"));
            if let Err(e) = case.load(&[], &Overrides::default()) {
                prop_assert!(!e.to_string().contains('\n'));
            }
        }
    }
}

#[test]
fn postgres_driver_keys() {
    use ftsd::config::ProbeDriver;
    let cfg = load_ok(MINIMAL);
    assert_eq!(cfg.probe.driver, ProbeDriver::Fts);
    assert_eq!(cfg.postgres.database, "postgres");
    assert_eq!(cfg.postgres.max_lag, 16 * 1024 * 1024);
    assert_eq!(cfg.postgres.sync_standby_names, "");

    let cfg = load_ok(&format!(
        "{MINIMAL}[probe]\ndriver = \"postgres\"\n[postgres]\ndatabase = \"fts\"\nmax_lag = 0\n\
         sync_standby_names = \"FIRST 1 (s1)\"\n"
    ));
    assert_eq!(cfg.probe.driver, ProbeDriver::Postgres);
    assert_eq!(cfg.postgres.database, "fts");
    assert_eq!(cfg.postgres.max_lag, 0);
    assert_eq!(cfg.postgres.sync_standby_names, "FIRST 1 (s1)");
    assert_eq!(load_ok(&cfg.render_masked()), cfg);

    let env = Case::new(MINIMAL)
        .load(
            &[
                ("FTSD_PROBE_DRIVER", "postgres"),
                ("FTSD_POSTGRES_MAX_LAG", "1024"),
            ],
            &Overrides::default(),
        )
        .unwrap();
    assert_eq!(env.probe.driver, ProbeDriver::Postgres);
    assert_eq!(env.postgres.max_lag, 1024);

    assert_eq!(
        file_error("[probe]\ndriver = \"pg\"\n"),
        "ftsd.toml: probe.driver: invalid probe driver \"pg\" (expected \"fts\" or \"postgres\")"
    );
    assert_eq!(
        file_error("[postgres]\nmax_lag = -1\n"),
        "ftsd.toml: postgres.max_lag: -1 is out of range"
    );
    assert_eq!(
        env_error(&[("FTSD_POSTGRES_MAX_LAG", "2000000000000")]),
        "FTSD_POSTGRES_MAX_LAG=2000000000000: must be at most 1099511627776 bytes (1 TiB)"
    );
    assert_eq!(
        file_error("[postgres]\ndatabase = \"\"\n"),
        "ftsd.toml: postgres.database = \"\": must not be empty"
    );
}

/// The catalog's lock limits are bounded by the lease TTL: their defaults shrink with a short
/// lease, and an explicit value above the lease is refused naming the key.
#[test]
fn catalog_lock_limits_are_bounded_by_the_lease() {
    let cfg = load_ok(MINIMAL);
    assert_eq!(cfg.catalog.lock_timeout, secs(3));
    assert_eq!(cfg.catalog.idle_in_transaction_timeout, secs(5));
    assert_eq!(cfg.catalog.call_timeout, secs(15));
    let cfg = load_ok(&format!("{MINIMAL}[etcd]\nlease_ttl = \"3s\"\n"));
    assert_eq!(cfg.catalog.lock_timeout, Duration::from_millis(1500));
    assert_eq!(
        cfg.catalog.idle_in_transaction_timeout,
        Duration::from_millis(1500)
    );
    let line = env_error(&[
        ("FTSD_ETCD_LEASE_TTL", "4s"),
        ("FTSD_CATALOG_IDLE_IN_TRANSACTION_TIMEOUT", "5s"),
    ]);
    assert_eq!(
        line,
        "FTSD_CATALOG_IDLE_IN_TRANSACTION_TIMEOUT=5s: must not exceed etcd.lease_ttl (4s)"
    );
    let line = env_error(&[("FTSD_CATALOG_CALL_TIMEOUT", "5s")]);
    assert!(
        line.starts_with("FTSD_CATALOG_CALL_TIMEOUT=5s: must be greater than"),
        "{line}"
    );
}

#[test]
fn postgres_tls_settings() {
    let case = Case::new(MINIMAL);
    let pki = Pki::new(&[], &[]).unwrap();
    let (cert, key) = pki.client("ftsd");
    let ca = pki.ca();
    let with = |table: &str, extra: &str| format!("{MINIMAL}[{table}]\n{extra}");
    // MINIMAL has a [catalog] table: the catalog keys go through the environment.
    let full = with(
        "postgres",
        &format!(
            "sslmode = \"verify-full\"\nssl_ca_file = \"{}\"\nssl_cert_file = \"{}\"\nssl_key_file = \"{}\"\n",
            ca.display(),
            cert.display(),
            key.display()
        ),
    );
    let cfg = load_ok(&full);
    assert_eq!(cfg.postgres.tls.mode, ftsd::config::SslMode::VerifyFull);
    assert_eq!(load_ok(&cfg.render_masked()), cfg);
    let none = Overrides::default();
    let line = Case::new(&with("postgres", "sslmode = \"verify-full\"\n")).error(&[], &none);
    assert!(
        line.starts_with("ftsd.toml: postgres.sslmode = \"verify-full\""),
        "{line}"
    );
    assert!(line.contains("needs postgres.ssl_ca_file"), "{line}");
    let line = Case::new(&with(
        "postgres",
        &format!(
            "sslmode = \"require\"\nssl_ca_file = \"{}\"\n",
            ca.display()
        ),
    ))
    .error(&[], &none);
    assert!(
        line.contains("is only used with postgres.sslmode = \"verify-full\""),
        "{line}"
    );
    let line = Case::new(&with(
        "postgres",
        &format!(
            "ssl_cert_file = \"{}\"\nssl_key_file = \"{}\"\n",
            cert.display(),
            key.display()
        ),
    ))
    .error(&[], &none);
    assert!(line.contains("a client certificate needs TLS"), "{line}");
    let line = Case::new(&with("postgres", "sslmode = \"prefer\"\n")).error(&[], &none);
    assert!(
        line.contains("expected \"disable\", \"require\" or \"verify-full\""),
        "{line}"
    );
    let junk = case.file("junk.pem", "junk");
    let env = [
        ("FTSD_CATALOG_SSLMODE", "verify-full"),
        ("FTSD_CATALOG_SSL_CA_FILE", junk.to_str().unwrap()),
    ];
    let line = case.error(&env, &none);
    assert!(line.starts_with("FTSD_CATALOG_SSL_CA_FILE="), "{line}");
    assert!(line.contains("holds no PEM certificate"), "{line}");
    let env = [("FTSD_CATALOG_URL", "postgresql://u@h/db?sslmode=require")];
    let line = case.error(&env, &none);
    assert!(line.contains("use catalog.sslmode"), "{line}");
}
