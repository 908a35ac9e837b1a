//! Checks on the merged configuration: required keys, ranges, formats, relations between keys,
//! and that referenced files are readable now (rather than at the first failover). Checks run in
//! key order and the first failure is reported.

use std::path::PathBuf;
use std::time::Duration;

use super::error::Origins;
use super::{Config, ConfigError};
use crate::tls::pem;

/// Upper bound for every duration: Greenplum's limit for its FTS GUCs, and far beyond any
/// sensible timeout, so arithmetic on deadlines cannot overflow.
const MAX_DURATION: Duration = Duration::from_secs(3600);
/// Lower bound for timeouts, which must be positive.
const MIN_TIMEOUT: Duration = Duration::from_millis(1);

/// Upper bound for `postgres.max_lag`: beyond this "in sync" would mean nothing.
const MAX_LAG: u64 = 1 << 40;

/// A failed check: the key to blame and the problem.
type Failure = (&'static str, String);

pub(crate) fn validate(cfg: &Config, origins: &Origins<'_>) -> Result<(), ConfigError> {
    check(cfg, origins).map_err(|(key, problem)| origins.invalid(cfg, key, problem))
}

/// Attaches a key to a problem.
fn on(key: &'static str) -> impl FnOnce(String) -> Failure {
    move |problem| (key, problem)
}

fn check(c: &Config, o: &Origins<'_>) -> Result<(), Failure> {
    required(o, "cluster", &c.cluster)?;
    cluster_name(&c.cluster).map_err(on("cluster"))?;
    if let Some(id) = &c.instance_id {
        if id.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
            return Err(("instance_id", "must not contain whitespace".to_owned()));
        }
    }

    let p = &c.probe;
    let one_second = Duration::from_secs(1);
    within(p.interval, one_second, MAX_DURATION).map_err(on("probe.interval"))?;
    within(p.timeout, MIN_TIMEOUT, MAX_DURATION).map_err(on("probe.timeout"))?;
    ordered(
        o,
        ("probe.timeout", p.timeout),
        ("probe.interval", p.interval),
    )?;
    count_within(p.retries, 1, 100).map_err(on("probe.retries"))?;
    within(p.retry_delay, Duration::ZERO, MAX_DURATION).map_err(on("probe.retry_delay"))?;
    count_within(p.concurrency, 1, 65536).map_err(on("probe.concurrency"))?;
    within(p.mirror_down_grace, Duration::ZERO, MAX_DURATION)
        .map_err(on("probe.mirror_down_grace"))?;
    required(o, "probe.user", &p.user)?;
    no_control(&p.user).map_err(on("probe.user"))?;
    within(p.min_down, Duration::ZERO, MAX_DURATION).map_err(on("probe.min_down"))?;
    if p.source_address.is_some() && p.driver != super::ProbeDriver::Fts {
        return Err((
            "probe.source_address",
            "applies to the fts driver only (the postgres driver cannot bind its connections)"
                .to_owned(),
        ));
    }
    if let Some(t) = c.observe.confirm_timeout {
        within(t, MIN_TIMEOUT, MAX_DURATION).map_err(on("observe.confirm_timeout"))?;
    }

    let pg = &c.postgres;
    required(o, "postgres.database", &pg.database)?;
    no_control(&pg.database).map_err(on("postgres.database"))?;
    if pg.max_lag > MAX_LAG {
        return Err((
            "postgres.max_lag",
            format!("must be at most {MAX_LAG} bytes (1 TiB)"),
        ));
    }
    no_control(&pg.sync_standby_names).map_err(on("postgres.sync_standby_names"))?;
    within(pg.restart_grace, Duration::ZERO, MAX_DURATION).map_err(on("postgres.restart_grace"))?;
    within(pg.fence_timeout, MIN_TIMEOUT, MAX_DURATION).map_err(on("postgres.fence_timeout"))?;
    pg_tls("postgres", &pg.tls)?;

    let cat = &c.catalog;
    let cloudberry = cat.backend == super::CatalogBackend::Cloudberry;
    if cloudberry {
        // The Cloudberry backend reads its etcd and keys from cbdb_etcd.conf at start.
        if cat.history_limit == 0 {
            return Err(("catalog.history_limit", "must be at least 1".to_owned()));
        }
    } else {
        required(o, "catalog.url", cat.url.expose())?;
        conn_string(cat.url.expose()).map_err(on("catalog.url"))?;
    }
    within(cat.connect_timeout, MIN_TIMEOUT, MAX_DURATION)
        .map_err(on("catalog.connect_timeout"))?;
    within(cat.statement_timeout, MIN_TIMEOUT, MAX_DURATION)
        .map_err(on("catalog.statement_timeout"))?;
    ordered(
        o,
        ("catalog.statement_timeout", cat.statement_timeout),
        ("catalog.call_timeout", cat.call_timeout),
    )?;
    within(cat.call_timeout, MIN_TIMEOUT, MAX_DURATION).map_err(on("catalog.call_timeout"))?;
    within(cat.keepalive, Duration::from_secs(1), MAX_DURATION).map_err(on("catalog.keepalive"))?;
    pg_tls("catalog", &cat.tls)?;
    if !cloudberry {
        let url: tokio_postgres::Config = cat
            .url
            .expose()
            .parse()
            .map_err(|_| ("catalog.url", "invalid connection string".to_owned()))?;
        // The URL's own sslmode is tokio-postgres's (no verification, and "prefer" falls back
        // to plaintext): only a "disable" that agrees with catalog.sslmode is accepted.
        let agrees = match url.get_ssl_mode() {
            tokio_postgres::config::SslMode::Prefer => true,
            tokio_postgres::config::SslMode::Disable => cat.tls.mode == super::SslMode::Disable,
            _ => false,
        };
        if !agrees {
            let problem = "sets an sslmode: use catalog.sslmode (disable, require or \
                           verify-full) instead, which also verifies the server";
            return Err(("catalog.url", problem.to_owned()));
        }
    }

    coordinator(c, o)?;
    vip(c)?;
    within(
        c.brake.window,
        Duration::from_secs(1),
        Duration::from_secs(24 * 3600),
    )
    .map_err(on("brake.window"))?;

    let e = &c.etcd;
    // Cloudberry: the endpoints of cbdb_etcd.conf are used instead.
    if e.endpoints.is_empty() && !cloudberry {
        return Err((
            "etcd.endpoints",
            "must list at least one endpoint".to_owned(),
        ));
    }
    for endpoint in &e.endpoints {
        etcd_endpoint(endpoint).map_err(on("etcd.endpoints"))?;
    }
    etcd_prefix(&e.prefix).map_err(on("etcd.prefix"))?;
    within(e.lease_ttl, Duration::from_secs(2), MAX_DURATION).map_err(on("etcd.lease_ttl"))?;
    if e.lease_ttl.subsec_nanos() != 0 {
        let problem = "must be a whole number of seconds (etcd leases have 1s granularity)";
        return Err(("etcd.lease_ttl", problem.to_owned()));
    }
    within(e.act_margin, MIN_TIMEOUT, MAX_DURATION).map_err(on("etcd.act_margin"))?;
    if e.act_margin >= e.lease_ttl / 2 {
        return Err(if o.is_default("etcd.act_margin") {
            let margin = show(e.act_margin);
            (
                "etcd.lease_ttl",
                format!("must be more than twice etcd.act_margin ({margin})"),
            )
        } else {
            let ttl = show(e.lease_ttl);
            (
                "etcd.act_margin",
                format!("must be less than half of etcd.lease_ttl ({ttl})"),
            )
        });
    }
    within(e.dial_timeout, MIN_TIMEOUT, MAX_DURATION).map_err(on("etcd.dial_timeout"))?;
    within(e.keepalive_interval, Duration::from_secs(1), MAX_DURATION)
        .map_err(on("etcd.keepalive_interval"))?;
    count_within(e.resign_after_failed_cycles, 0, 1000)
        .map_err(on("etcd.resign_after_failed_cycles"))?;

    // Catalog limits that depend on the (now valid) lease TTL.
    // A stalled former leader's lock must be gone, and a blocked claim must have given up,
    // within about one lease: the time a new leader may wait for its predecessor.
    within(c.catalog.lock_timeout, MIN_TIMEOUT, MAX_DURATION)
        .map_err(on("catalog.lock_timeout"))?;
    at_most_lease_ttl(c.catalog.lock_timeout, c.etcd.lease_ttl)
        .map_err(on("catalog.lock_timeout"))?;
    // Our own transactions never pause between statements, so one second of idleness already
    // means a stalled or cut-off instance.
    within(
        c.catalog.idle_in_transaction_timeout,
        Duration::from_secs(1),
        MAX_DURATION,
    )
    .map_err(on("catalog.idle_in_transaction_timeout"))?;
    at_most_lease_ttl(c.catalog.idle_in_transaction_timeout, c.etcd.lease_ttl)
        .map_err(on("catalog.idle_in_transaction_timeout"))?;
    match (&e.username, &e.password) {
        (Some(_), None) => {
            let problem = "needs a password (etcd.password_file or FTSD_ETCD_PASSWORD)";
            return Err(("etcd.username", problem.to_owned()));
        }
        (None, Some(_)) => {
            let key = if o.is_default("etcd.password") {
                "etcd.password_file"
            } else {
                "etcd.password"
            };
            return Err((key, "an etcd password needs etcd.username".to_owned()));
        }
        _ => {}
    }
    pem_files(
        ("etcd.ca_file", &e.ca_file),
        ("etcd.cert_file", &e.cert_file),
        ("etcd.key_file", &e.key_file),
    )?;

    let h = &c.hooks;
    within(h.timeout, MIN_TIMEOUT, MAX_DURATION).map_err(on("hooks.timeout"))?;
    for (key, argv) in [
        ("hooks.on_transition", &h.on_transition),
        ("hooks.on_leader_change", &h.on_leader_change),
        ("postgres.fence_command", &c.postgres.fence_command),
        ("coordinator.fence_command", &c.coordinator.fence_command),
        (
            "coordinator.promote_command",
            &c.coordinator.promote_command,
        ),
    ] {
        if argv
            .first()
            .is_some_and(|program| program.trim().is_empty())
        {
            return Err((
                key,
                "the program (first element) must not be empty".to_owned(),
            ));
        }
    }
    if c.api.listen == c.api.metrics_listen && c.api.listen.port() != 0 {
        return Err(if o.is_default("api.metrics_listen") {
            (
                "api.listen",
                "must differ from api.metrics_listen".to_owned(),
            )
        } else {
            (
                "api.metrics_listen",
                "must differ from api.listen".to_owned(),
            )
        });
    }

    api_auth(&c.api)?;

    required(o, "log.level", &c.log.level)?;
    // tracing-subscriber's directive parser panics on some non-ASCII input (byte slicing);
    // filter directives are ASCII anyway, so refuse anything else before it gets there.
    if let Some(bad) = c
        .log
        .level
        .chars()
        .find(|ch| !(ch.is_ascii_graphic() || *ch == ' '))
    {
        return Err((
            "log.level",
            format!("invalid filter: character {bad:?} (only printable ASCII, e.g. info or ftsd=debug,warn)"),
        ));
    }
    tracing_subscriber::EnvFilter::try_new(&c.log.level)
        .map_err(|e| ("log.level", format!("invalid filter: {e}")))?;
    Ok(())
}

/// The `[coordinator]` table: addresses given together, ranges, and probing that fits its round.
fn coordinator(c: &Config, o: &Origins<'_>) -> Result<(), Failure> {
    let k = &c.coordinator;
    match (k.primary.is_empty(), k.standby.is_empty()) {
        (true, true) => {}
        (false, false) => {
            host_port(&k.primary).map_err(on("coordinator.primary"))?;
            host_port(&k.standby).map_err(on("coordinator.standby"))?;
            if k.primary == k.standby {
                let problem = "must differ from coordinator.primary".to_owned();
                return Err(("coordinator.standby", problem));
            }
        }
        (true, false) => {
            let problem = "is required when coordinator.standby is set".to_owned();
            return Err(("coordinator.primary", problem));
        }
        (false, true) => {
            let problem = "is required when coordinator.primary is set".to_owned();
            return Err(("coordinator.standby", problem));
        }
    }
    if k.auto_failover && !k.enabled() {
        let problem = "needs coordinator.primary and coordinator.standby".to_owned();
        return Err(("coordinator.auto_failover", problem));
    }
    within(k.interval, Duration::from_secs(1), MAX_DURATION).map_err(on("coordinator.interval"))?;
    within(k.timeout, MIN_TIMEOUT, MAX_DURATION).map_err(on("coordinator.timeout"))?;
    ordered(
        o,
        ("coordinator.timeout", k.timeout),
        ("coordinator.interval", k.interval),
    )?;
    count_within(k.retries, 0, 100).map_err(on("coordinator.retries"))?;
    within(k.restart_grace, Duration::ZERO, MAX_DURATION)
        .map_err(on("coordinator.restart_grace"))?;
    required(o, "coordinator.user", &k.user)?;
    no_control(&k.user).map_err(on("coordinator.user"))?;
    required(o, "coordinator.database", &k.database)?;
    no_control(&k.database).map_err(on("coordinator.database"))?;
    if k.max_lag > MAX_LAG {
        return Err((
            "coordinator.max_lag",
            format!("must be at most {MAX_LAG} bytes (1 TiB)"),
        ));
    }
    within(k.fence_timeout, MIN_TIMEOUT, MAX_DURATION).map_err(on("coordinator.fence_timeout"))?;
    within(k.promote_timeout, Duration::from_secs(1), MAX_DURATION)
        .map_err(on("coordinator.promote_timeout"))?;
    within(
        k.failover_cooldown,
        Duration::ZERO,
        Duration::from_secs(7 * 24 * 3600),
    )
    .map_err(on("coordinator.failover_cooldown"))?;
    pg_tls("coordinator", &k.tls)?;
    Ok(())
}

/// The `[vip]` table: checked when an address is set (only `ftsd vip-agent` reads it).
fn vip(c: &Config) -> Result<(), Failure> {
    let v = &c.vip;
    within(v.interval, Duration::from_millis(100), MAX_DURATION).map_err(on("vip.interval"))?;
    no_control(&v.netns).map_err(on("vip.netns"))?;
    if v.address.is_empty() {
        return Ok(());
    }
    vip_address(&v.address).map_err(on("vip.address"))?;
    if v.interface.is_empty() && v.hook.is_empty() {
        let problem = "is required with vip.address (unless vip.hook manages the address)";
        return Err(("vip.interface", problem.to_owned()));
    }
    if v.interface
        .chars()
        .any(|ch| ch.is_whitespace() || ch.is_control() || ch == '/')
    {
        return Err(("vip.interface", "is not an interface name".to_owned()));
    }
    if !c.coordinator.enabled() {
        let problem = "needs coordinator.primary and coordinator.standby (the pair it follows)";
        return Err(("vip.address", problem.to_owned()));
    }
    if v.member != c.coordinator.primary && v.member != c.coordinator.standby {
        let problem = format!(
            "must be coordinator.primary ({}) or coordinator.standby ({}): the server on this host",
            c.coordinator.primary, c.coordinator.standby
        );
        return Err(("vip.member", problem));
    }
    Ok(())
}

/// `ADDRESS/PREFIX`, e.g. `10.0.0.100/24` or `2001:db8::10/64`.
pub(crate) fn vip_address(value: &str) -> Result<(std::net::IpAddr, u8), String> {
    let bad = || format!("{value:?} is not ADDRESS/PREFIX (e.g. 10.0.0.100/24)");
    let (addr, prefix) = value.split_once('/').ok_or_else(bad)?;
    let ip: std::net::IpAddr = addr.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(bad());
    }
    Ok((ip, prefix))
}

/// `host:port` (a bracketed IPv6 address is allowed) with a port from 1 to 65535.
pub(crate) fn host_port(value: &str) -> Result<(&str, u16), String> {
    let bad = || format!("{value:?} is not host:port (e.g. cdw:5432 or [::1]:5432)");
    let (host, port) = value.rsplit_once(':').ok_or_else(bad)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || host.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
        return Err(bad());
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok((host, p)),
        _ => Err(bad()),
    }
}

fn show(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(d)
}

/// An empty required value: "not set" if nothing set it, "empty" if something set it to "".
fn required(o: &Origins<'_>, key: &'static str, value: &str) -> Result<(), Failure> {
    match (value.is_empty(), o.is_default(key)) {
        (false, _) => Ok(()),
        (true, true) => Err((key, "is required but not set".to_owned())),
        (true, false) => Err((key, "must not be empty".to_owned())),
    }
}

fn within(value: Duration, min: Duration, max: Duration) -> Result<(), String> {
    if value >= min && value <= max {
        Ok(())
    } else if min.is_zero() {
        Err(format!("must be at most {}", show(max)))
    } else {
        Err(format!("must be between {} and {}", show(min), show(max)))
    }
}

fn at_most_lease_ttl(value: Duration, lease_ttl: Duration) -> Result<(), String> {
    if value <= lease_ttl {
        Ok(())
    } else {
        Err(format!(
            "must not exceed etcd.lease_ttl ({})",
            show(lease_ttl)
        ))
    }
}

fn count_within(value: u32, min: u32, max: u32) -> Result<(), String> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(format!("must be between {min} and {max}"))
    }
}

/// `small < large`; blames `small` unless only `large` was configured.
fn ordered(
    o: &Origins<'_>,
    (small_key, small): (&'static str, Duration),
    (large_key, large): (&'static str, Duration),
) -> Result<(), Failure> {
    if small < large {
        Ok(())
    } else if o.is_default(small_key) {
        let problem = format!("must be greater than {small_key} ({})", show(small));
        Err((large_key, problem))
    } else {
        let problem = format!("must be less than {large_key} ({})", show(large));
        Err((small_key, problem))
    }
}

/// The cluster name becomes part of etcd keys, so it is kept to a path-safe alphabet.
fn cluster_name(name: &str) -> Result<(), String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    if name.chars().all(ok) {
        Ok(())
    } else {
        Err("may only contain letters, digits, '_', '.' and '-'".to_owned())
    }
}

fn no_control(value: &str) -> Result<(), String> {
    if value.chars().any(char::is_control) {
        Err("must not contain control characters".to_owned())
    } else {
        Ok(())
    }
}

/// Must be something tokio-postgres accepts and that names a host and a user, which it needs to
/// connect. The parser's message is kept, except for the character it choked on, which could be
/// part of a password.
fn conn_string(url: &str) -> Result<(), String> {
    const FORMS: &str = "expected postgresql://user@host:port/db or 'host=... user=... dbname=...'";
    let pg: tokio_postgres::Config = url.parse().map_err(|e: tokio_postgres::Error| {
        let cause = std::error::Error::source(&e).map(ToString::to_string);
        let cause = cause.unwrap_or_default();
        let cause = cause.split(" but got").next().unwrap_or_default();
        format!("invalid connection string: {cause} ({FORMS})")
    })?;
    if pg.get_hosts().is_empty() {
        return Err(format!("connection string names no host ({FORMS})"));
    }
    if pg.get_user().is_none() {
        return Err(format!("connection string names no user ({FORMS})"));
    }
    Ok(())
}

/// `http://host:port` or `https://host:port` (an IPv6 host in brackets), optional trailing '/'.
fn etcd_endpoint(endpoint: &str) -> Result<(), String> {
    let Some(rest) = ["http://", "https://"]
        .into_iter()
        .find_map(|scheme| endpoint.strip_prefix(scheme))
    else {
        let problem = if endpoint.contains("://") {
            "has an unsupported scheme"
        } else {
            "has no scheme"
        };
        return Err(format!(
            "{endpoint:?} {problem} (expected http://host:port or https://host:port)"
        ));
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = match authority.strip_prefix('[') {
        Some(bracketed) => match bracketed.split_once(']') {
            Some((host, after)) => (host, after.strip_prefix(':')),
            None => (bracketed, None),
        },
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let bad_host = |c: char| c.is_whitespace() || c.is_control() || "/@?#[]".contains(c);
    if host.is_empty() || host.contains(bad_host) {
        return Err(format!("{endpoint:?} has no valid host"));
    }
    match port.map(str::parse::<u16>) {
        Some(Ok(port)) if port != 0 => Ok(()),
        Some(_) => Err(format!("{endpoint:?} has an invalid port")),
        None => Err(format!(
            "{endpoint:?} has no port (expected http(s)://host:port)"
        )),
    }
}

fn etcd_prefix(prefix: &str) -> Result<(), String> {
    let ok = prefix.len() > 1
        && prefix.starts_with('/')
        && !prefix.ends_with('/')
        && !prefix.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err("must start with '/', not end with '/', and contain no whitespace".to_owned())
    }
}

/// A CA file and a certificate/key pair (all optional, the pair given together), each checked
/// to hold what it should.
fn pem_files(
    (ca_key, ca): (&'static str, &Option<PathBuf>),
    (cert_key, cert): (&'static str, &Option<PathBuf>),
    (key_key, key): (&'static str, &Option<PathBuf>),
) -> Result<(), Failure> {
    let problem = |e: crate::tls::pem::PemError| e.problem;
    if let Some(ca) = ca {
        pem::read_certificates(ca)
            .map_err(problem)
            .map_err(on(ca_key))?;
    }
    if let Some(cert) = cert {
        pem::read_certificates(cert)
            .map_err(problem)
            .map_err(on(cert_key))?;
    }
    if let Some(key) = key {
        pem::read_private_key(key)
            .map_err(problem)
            .map_err(on(key_key))?;
    }
    match (cert, key) {
        (Some(_), None) => Err((
            cert_key,
            format!("is set but {key_key} is not (they must be given together)"),
        )),
        (None, Some(_)) => Err((
            key_key,
            format!("is set but {cert_key} is not (they must be given together)"),
        )),
        _ => Ok(()),
    }
}

/// `<table>.sslmode` and its files: verify-full needs the CA, a CA is only used by
/// verify-full, a client certificate needs TLS.
fn pg_tls(table: &'static str, t: &crate::tls::postgres::PgTlsSettings) -> Result<(), Failure> {
    use crate::tls::postgres::SslMode;
    let (mode, ca, cert, key) = match table {
        "catalog" => (
            "catalog.sslmode",
            "catalog.ssl_ca_file",
            "catalog.ssl_cert_file",
            "catalog.ssl_key_file",
        ),
        "coordinator" => (
            "coordinator.sslmode",
            "coordinator.ssl_ca_file",
            "coordinator.ssl_cert_file",
            "coordinator.ssl_key_file",
        ),
        _ => (
            "postgres.sslmode",
            "postgres.ssl_ca_file",
            "postgres.ssl_cert_file",
            "postgres.ssl_key_file",
        ),
    };
    pem_files((ca, &t.ca_file), (cert, &t.cert_file), (key, &t.key_file))?;
    match (t.mode, &t.ca_file, &t.cert_file) {
        (SslMode::VerifyFull, None, _) => Err((
            mode,
            format!("\"verify-full\" needs {ca} (the CA that signed the servers' certificates)"),
        )),
        (SslMode::Disable | SslMode::Require, Some(_), _) => Err((
            ca,
            format!(
                "is only used with {mode} = \"verify-full\" (\"require\" does not verify the \
                 server; set verify-full or remove the CA)"
            ),
        )),
        (SslMode::Disable, None, Some(_)) => Err((
            cert,
            format!("a client certificate needs TLS: set {mode} to \"require\" or \"verify-full\""),
        )),
        _ => Ok(()),
    }
}

/// TLS files of the API, and credentials that make sense together.
fn api_auth(a: &super::ApiConfig) -> Result<(), Failure> {
    pem_files(
        ("api.client_ca_file", &a.client_ca_file),
        ("api.tls_cert_file", &a.tls_cert_file),
        ("api.tls_key_file", &a.tls_key_file),
    )?;
    if a.client_ca_file.is_some() && a.tls_cert_file.is_none() {
        let problem = "client certificates need TLS: set api.tls_cert_file and api.tls_key_file";
        return Err(("api.client_ca_file", problem.to_owned()));
    }
    if a.read_auth == super::ReadAuth::Required
        && a.token_file.is_none()
        && a.client_ca_file.is_none()
    {
        let problem = "\"required\" needs a credential to check: set api.token_file or \
                       api.client_ca_file";
        return Err(("api.read_auth", problem.to_owned()));
    }
    if a.token.is_some() && a.token == a.metrics_token {
        let problem = "must differ from the API token (api.token_file): whoever scrapes \
                       metrics must not be able to pause failover";
        return Err(("api.metrics_token_file", problem.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        for good in [
            "http://127.0.0.1:2379",
            "https://etcd-1.example:2379/",
            "http://[::1]:2379",
        ] {
            assert_eq!(etcd_endpoint(good), Ok(()), "{good}");
        }
        for bad in [
            "127.0.0.1:2379",
            "grpc://a:1",
            "http://a",
            "http://:2379",
            "http://a:0",
            "http://a:x",
            "http://u@a:1",
            "http://[::1]",
            "http://a:1/v3",
        ] {
            assert!(etcd_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn vip_addresses() {
        assert!(vip_address("10.0.0.100/24").is_ok());
        assert!(vip_address("2001:db8::10/64").is_ok());
        assert!(vip_address("10.0.0.100").is_err());
        assert!(vip_address("10.0.0.100/33").is_err());
        assert!(vip_address("cdw/24").is_err());
    }

    #[test]
    fn host_ports() {
        assert_eq!(host_port("cdw:5432"), Ok(("cdw", 5432)));
        assert_eq!(host_port("[::1]:6000"), Ok(("::1", 6000)));
        assert!(host_port("cdw").is_err());
        assert!(host_port("cdw:0").is_err());
        assert!(host_port(":5432").is_err());
        assert!(host_port("c dw:5432").is_err());
    }

    #[test]
    fn prefixes() {
        assert!(etcd_prefix("/ftsd").is_ok());
        assert!(etcd_prefix("/a/b").is_ok());
        for bad in ["", "/", "ftsd", "/ftsd/", "/ft sd"] {
            assert!(etcd_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn conn_strings() {
        assert!(conn_string("postgresql://gpadmin@cdw:5432/postgres").is_ok());
        assert!(conn_string("host=cdw port=5432 user=gpadmin dbname=postgres").is_ok());
        assert!(conn_string("postgresql://cdw/postgres").is_err());
        assert!(conn_string("user=gpadmin dbname=postgres").is_err());
        let err = conn_string("host=h password secret").unwrap_err();
        assert!(!err.contains("`s`"), "{err}");
    }
}
