//! The list of configuration keys, and the conversion of raw values (a TOML value from the file,
//! or the text of an environment variable or flag) into the typed fields of [`Config`].
//!
//! A key's name *is* its field path (`probe.interval` is `Config::probe.interval`), so the table
//! cannot drift from the structs, and its environment variable is derived from the name
//! (`FTSD_PROBE_INTERVAL`). The field's type decides how the value is parsed and printed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::render::toml_string;
use super::{
    CatalogBackend, Config, ConnString, DecisionProfile, LogFormat, ObserveMode, ProbeDriver,
    ReadAuth, SslMode,
};

/// Prefix of every configuration environment variable.
pub(crate) const ENV_PREFIX: &str = "FTSD_";

/// Environment variables that start with `FTSD_` without being keys.
pub(crate) const ENV_CONFIG_PATH: &str = "FTSD_CONFIG";

/// Tables that have a password, taken from `FTSD_<TABLE>_PASSWORD` or `<table>.password_file`.
pub(crate) const PASSWORD_TABLES: [&str; 4] = ["probe", "catalog", "coordinator", "etcd"];

/// The TOML tables; every other top-level name is a plain key.
pub(crate) const TABLES: [&str; 11] = [
    "probe",
    "observe",
    "postgres",
    "catalog",
    "coordinator",
    "vip",
    "etcd",
    "brake",
    "api",
    "hooks",
    "log",
];

/// A raw value before conversion.
pub(crate) enum Input<'a> {
    /// From the configuration file.
    File(&'a toml::Value),
    /// From an environment variable or a flag: plain text, lists comma-separated.
    Text(&'a str),
}

impl Input<'_> {
    /// The value as text; a file value must be a TOML string (`what` names what was expected).
    fn text(&self, what: &str) -> Result<&str, String> {
        match self {
            Input::File(toml::Value::String(s)) => Ok(s),
            Input::File(other) => Err(format!("expected {what}, found {}", other.type_str())),
            Input::Text(s) => Ok(s),
        }
    }

    /// A conversion failure: file values are quoted in the message, text values are not (the
    /// message prefix `FTSD_X=value` already shows them).
    fn bad(&self, raw: &str, what: &str, why: Option<&dyn std::fmt::Display>) -> String {
        let head = match self {
            Input::File(_) => format!("{what} {raw:?}"),
            Input::Text(_) => what.to_owned(),
        };
        match why {
            Some(why) => format!("{head}: {why}"),
            None => head,
        }
    }

    fn is_empty_string(&self) -> bool {
        match self {
            Input::File(toml::Value::String(s)) => s.is_empty(),
            Input::File(_) => false,
            Input::Text(s) => s.is_empty(),
        }
    }
}

/// How a field type is read from a raw value and printed back as a TOML value.
pub(crate) trait Field: Sized {
    fn parse(input: &Input<'_>) -> Result<Self, String>;
    /// The value as TOML, secrets masked; `None` for an unset optional key.
    fn render(&self) -> Option<String>;
}

impl Field for String {
    fn parse(input: &Input<'_>) -> Result<Self, String> {
        input.text("a string").map(str::to_owned)
    }
    fn render(&self) -> Option<String> {
        Some(toml_string(self))
    }
}

impl Field for PathBuf {
    fn parse(input: &Input<'_>) -> Result<Self, String> {
        input.text("a path string").map(PathBuf::from)
    }
    fn render(&self) -> Option<String> {
        Some(toml_string(&self.to_string_lossy()))
    }
}

/// Optional keys: an empty string (in the file, or an empty variable) leaves the key unset, which
/// is how an environment variable clears a value the file set.
impl<T: Field> Field for Option<T> {
    fn parse(input: &Input<'_>) -> Result<Self, String> {
        if input.is_empty_string() {
            return Ok(None);
        }
        T::parse(input).map(Some)
    }
    fn render(&self) -> Option<String> {
        self.as_ref().and_then(T::render)
    }
}

impl Field for ConnString {
    fn parse(input: &Input<'_>) -> Result<Self, String> {
        input.text("a connection string").map(ConnString::new)
    }
    fn render(&self) -> Option<String> {
        Some(toml_string(&self.to_string()))
    }
}

impl Field for Duration {
    fn parse(input: &Input<'_>) -> Result<Self, String> {
        let raw = input.text("a duration string such as \"60s\"")?;
        humantime::parse_duration(raw).map_err(|e| input.bad(raw, "invalid duration", Some(&e)))
    }
    fn render(&self) -> Option<String> {
        Some(toml_string(&humantime::format_duration(*self).to_string()))
    }
}

impl Field for bool {
    fn parse(input: &Input<'_>) -> Result<Self, String> {
        match input {
            Input::File(toml::Value::Boolean(b)) => Ok(*b),
            Input::File(other) => Err(format!(
                "expected true or false, found {}",
                other.type_str()
            )),
            Input::Text(s) => match s.trim() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err("expected true or false".to_owned()),
            },
        }
    }
    fn render(&self) -> Option<String> {
        Some(self.to_string())
    }
}

impl Field for u32 {
    fn parse(input: &Input<'_>) -> Result<Self, String> {
        match input {
            Input::File(toml::Value::Integer(i)) => {
                u32::try_from(*i).map_err(|_| format!("{i} is out of range"))
            }
            Input::File(other) => Err(format!("expected an integer, found {}", other.type_str())),
            Input::Text(s) => s.trim().parse().map_err(|_| "invalid number".to_owned()),
        }
    }
    fn render(&self) -> Option<String> {
        Some(self.to_string())
    }
}

impl Field for u64 {
    fn parse(input: &Input<'_>) -> Result<Self, String> {
        match input {
            Input::File(toml::Value::Integer(i)) => {
                u64::try_from(*i).map_err(|_| format!("{i} is out of range"))
            }
            Input::File(other) => Err(format!("expected an integer, found {}", other.type_str())),
            Input::Text(s) => s.trim().parse().map_err(|_| "invalid number".to_owned()),
        }
    }
    fn render(&self) -> Option<String> {
        Some(self.to_string())
    }
}

/// Lists: a TOML array of strings in the file, comma-separated text elsewhere.
impl Field for Vec<String> {
    fn parse(input: &Input<'_>) -> Result<Self, String> {
        match input {
            Input::File(toml::Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    toml::Value::String(s) => Ok(s.clone()),
                    other => Err(format!(
                        "expected an array of strings, found an array containing {}",
                        other.type_str()
                    )),
                })
                .collect(),
            Input::File(other) => Err(format!(
                "expected an array of strings, found {}",
                other.type_str()
            )),
            Input::Text(s) => Ok(s
                .split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(str::to_owned)
                .collect()),
        }
    }
    fn render(&self) -> Option<String> {
        let items: Vec<String> = self.iter().map(|s| toml_string(s)).collect();
        Some(format!("[{}]", items.join(", ")))
    }
}

impl Field for SocketAddr {
    fn parse(input: &Input<'_>) -> Result<Self, String> {
        let raw = input.text("an address string such as \"127.0.0.1:7470\"")?;
        raw.trim().parse().map_err(|_| {
            let what = "invalid socket address";
            format!(
                "{} (expected ip:port, e.g. 127.0.0.1:7470)",
                input.bad(raw, what, None)
            )
        })
    }
    fn render(&self) -> Option<String> {
        Some(toml_string(&self.to_string()))
    }
}

impl Field for LogFormat {
    fn parse(input: &Input<'_>) -> Result<Self, String> {
        let raw = input.text("\"text\" or \"json\"")?;
        match raw.trim() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!(
                "{} (expected \"text\" or \"json\")",
                input.bad(raw, "invalid log format", None)
            )),
        }
    }
    fn render(&self) -> Option<String> {
        Some(toml_string(self.as_str()))
    }
}

impl Field for ProbeDriver {
    fn parse(input: &Input<'_>) -> Result<Self, String> {
        let raw = input.text("\"fts\" or \"postgres\"")?;
        match raw.trim() {
            "fts" => Ok(ProbeDriver::Fts),
            "postgres" => Ok(ProbeDriver::Postgres),
            _ => Err(format!(
                "{} (expected \"fts\" or \"postgres\")",
                input.bad(raw, "invalid probe driver", None)
            )),
        }
    }
    fn render(&self) -> Option<String> {
        Some(toml_string(self.as_str()))
    }
}

impl Field for CatalogBackend {
    fn parse(input: &Input<'_>) -> Result<Self, String> {
        let raw = input.text("\"postgres\" or \"cloudberry\"")?;
        match raw.trim() {
            "postgres" => Ok(CatalogBackend::Postgres),
            "cloudberry" => Ok(CatalogBackend::Cloudberry),
            _ => Err(format!(
                "{} (expected \"postgres\" or \"cloudberry\")",
                input.bad(raw, "invalid catalog backend", None)
            )),
        }
    }
    fn render(&self) -> Option<String> {
        Some(toml_string(self.as_str()))
    }
}

impl Field for DecisionProfile {
    fn parse(input: &Input<'_>) -> Result<Self, String> {
        let raw = input.text("\"auto\", \"in-core\" or \"gpfts\"")?;
        match raw.trim() {
            "auto" => Ok(DecisionProfile::Auto),
            "in-core" => Ok(DecisionProfile::InCore),
            "gpfts" => Ok(DecisionProfile::Gpfts),
            _ => Err(format!(
                "{} (expected \"auto\", \"in-core\" or \"gpfts\")",
                input.bad(raw, "invalid decision profile", None)
            )),
        }
    }
    fn render(&self) -> Option<String> {
        Some(toml_string(self.as_str()))
    }
}

impl Field for ReadAuth {
    fn parse(input: &Input<'_>) -> Result<Self, String> {
        let raw = input.text("\"none\" or \"required\"")?;
        match raw.trim() {
            "none" => Ok(ReadAuth::None),
            "required" => Ok(ReadAuth::Required),
            _ => Err(format!(
                "{} (expected \"none\" or \"required\")",
                input.bad(raw, "invalid read_auth", None)
            )),
        }
    }
    fn render(&self) -> Option<String> {
        Some(toml_string(self.as_str()))
    }
}

impl Field for SslMode {
    fn parse(input: &Input<'_>) -> Result<Self, String> {
        let expected = "\"disable\", \"require\" or \"verify-full\"";
        let raw = input.text(expected)?;
        SslMode::parse(raw.trim()).ok_or_else(|| {
            format!(
                "{} (expected {expected})",
                input.bad(raw, "invalid sslmode", None)
            )
        })
    }
    fn render(&self) -> Option<String> {
        Some(toml_string(self.as_str()))
    }
}

impl Field for ObserveMode {
    fn parse(input: &Input<'_>) -> Result<Self, String> {
        let expected = "\"off\", \"continuous\" or \"on-demand\"";
        let raw = input.text(expected)?;
        match raw.trim() {
            "off" => Ok(ObserveMode::Off),
            "continuous" => Ok(ObserveMode::Continuous),
            "on-demand" => Ok(ObserveMode::OnDemand),
            _ => Err(format!(
                "{} (expected {expected})",
                input.bad(raw, "invalid observe mode", None)
            )),
        }
    }
    fn render(&self) -> Option<String> {
        Some(toml_string(self.as_str()))
    }
}

impl Field for std::net::IpAddr {
    fn parse(input: &Input<'_>) -> Result<Self, String> {
        let raw = input.text("an IP address")?;
        raw.trim()
            .parse()
            .map_err(|e| input.bad(raw, "invalid IP address", Some(&e)))
    }
    fn render(&self) -> Option<String> {
        Some(toml_string(&self.to_string()))
    }
}

/// `brake.max_hosts`: `"auto"`, `"off"` or a number of hosts (at least 1; 0 is refused so
/// that nobody turns the brake off by a number that reads like "hold everything").
impl Field for crate::core::brake::HostLimit {
    fn parse(input: &Input<'_>) -> Result<Self, String> {
        use crate::core::brake::HostLimit;
        let expected = "(expected \"auto\", \"off\" or a number of hosts >= 1)";
        let n = match input {
            Input::File(toml::Value::Integer(i)) => *i,
            Input::File(toml::Value::String(_)) | Input::Text(_) => {
                let raw = input.text("a string")?;
                match raw.trim() {
                    "auto" => return Ok(HostLimit::Auto),
                    "off" => return Ok(HostLimit::Off),
                    t => t.parse::<i64>().map_err(|_| {
                        format!("{} {expected}", input.bad(raw, "invalid host limit", None))
                    })?,
                }
            }
            Input::File(other) => {
                return Err(format!(
                    "expected \"auto\", \"off\" or an integer, found {}",
                    other.type_str()
                ))
            }
        };
        match u32::try_from(n) {
            Ok(0) => Err("0 hosts is not a limit: use \"off\" to turn the brake off".into()),
            Ok(n) => Ok(HostLimit::Hosts(n)),
            Err(_) => Err(format!("{n} is out of range {expected}")),
        }
    }
    fn render(&self) -> Option<String> {
        use crate::core::brake::HostLimit;
        match self {
            HostLimit::Hosts(n) => Some(n.to_string()),
            other => Some(toml_string(&other.to_string())),
        }
    }
}

/// One configuration key.
pub(crate) struct Key {
    /// Dotted name, `table.key` or a top-level `key`.
    pub name: &'static str,
    /// Converts a raw value and stores it; `Err` is the problem text.
    pub set: fn(&mut Config, &Input<'_>) -> Result<(), String>,
    /// The current value as TOML (masked), `None` if unset.
    pub get: fn(&Config) -> Option<String>,
}

impl Key {
    /// `FTSD_PROBE_INTERVAL` for `probe.interval`.
    pub fn env_var(&self) -> String {
        env_var(self.name)
    }
}

pub(crate) fn env_var(name: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        name.replace('.', "_").to_ascii_uppercase()
    )
}

/// Declares a key whose name is the path of its field in `Config`, or (`"name" => path`) a
/// key of a table whose settings are a struct several tables share: `postgres.sslmode` is
/// `Config::postgres.tls.mode`, as `catalog.sslmode` is `Config::catalog.tls.mode`.
macro_rules! key {
    ($name:literal => $first:ident $(. $rest:ident)*) => {
        Key {
            name: $name,
            set: |c, v| {
                c.$first$(.$rest)* = Field::parse(v)?;
                Ok(())
            },
            get: |c| Field::render(&c.$first$(.$rest)*),
        }
    };
    ($first:ident $(. $rest:ident)*) => {
        Key {
            name: concat!(stringify!($first) $(, ".", stringify!($rest))*),
            set: |c, v| {
                c.$first$(.$rest)* = Field::parse(v)?;
                Ok(())
            },
            get: |c| Field::render(&c.$first$(.$rest)*),
        }
    };
}

/// Every key, in the order of the documentation and the masked printout: top-level keys first,
/// then each table's keys together.
pub(crate) const KEYS: &[Key] = &[
    key!(cluster),
    key!(instance_id),
    key!(probe.driver),
    key!(probe.interval),
    key!(probe.timeout),
    key!(probe.retries),
    key!(probe.retry_delay),
    key!(probe.concurrency),
    key!(probe.mirror_down_grace),
    key!(probe.decision_profile),
    key!(probe.user),
    key!(probe.password_file),
    key!(probe.min_down),
    key!(probe.source_address),
    key!(observe.mode),
    key!(observe.confirm_timeout),
    key!(postgres.database),
    key!(postgres.max_lag),
    key!(postgres.sync_standby_names),
    key!(postgres.restart_grace),
    key!(postgres.fence_command),
    key!(postgres.fence_timeout),
    key!("postgres.sslmode" => postgres.tls.mode),
    key!("postgres.ssl_ca_file" => postgres.tls.ca_file),
    key!("postgres.ssl_cert_file" => postgres.tls.cert_file),
    key!("postgres.ssl_key_file" => postgres.tls.key_file),
    key!(catalog.backend),
    key!(catalog.url),
    key!(catalog.password_file),
    key!(catalog.connect_timeout),
    key!(catalog.statement_timeout),
    key!(catalog.lock_timeout),
    key!(catalog.idle_in_transaction_timeout),
    key!(catalog.call_timeout),
    key!(catalog.keepalive),
    key!("catalog.sslmode" => catalog.tls.mode),
    key!("catalog.ssl_ca_file" => catalog.tls.ca_file),
    key!("catalog.ssl_cert_file" => catalog.tls.cert_file),
    key!("catalog.ssl_key_file" => catalog.tls.key_file),
    key!(catalog.cbdb_conf),
    key!(catalog.coordinator_user),
    key!(catalog.history_limit),
    key!(coordinator.primary),
    key!(coordinator.standby),
    key!(coordinator.auto_failover),
    key!(coordinator.interval),
    key!(coordinator.timeout),
    key!(coordinator.retries),
    key!(coordinator.restart_grace),
    key!(coordinator.user),
    key!(coordinator.database),
    key!(coordinator.password_file),
    key!(coordinator.max_lag),
    key!(coordinator.fence_command),
    key!(coordinator.fence_timeout),
    key!(coordinator.promote_command),
    key!(coordinator.promote_timeout),
    key!(coordinator.failover_cooldown),
    key!("coordinator.sslmode" => coordinator.tls.mode),
    key!("coordinator.ssl_ca_file" => coordinator.tls.ca_file),
    key!("coordinator.ssl_cert_file" => coordinator.tls.cert_file),
    key!("coordinator.ssl_key_file" => coordinator.tls.key_file),
    key!(coordinator.source_address),
    key!(vip.address),
    key!(vip.interface),
    key!(vip.member),
    key!(vip.interval),
    key!(vip.hook),
    key!(vip.netns),
    key!(etcd.endpoints),
    key!(etcd.prefix),
    key!(etcd.lease_ttl),
    key!(etcd.act_margin),
    key!(etcd.dial_timeout),
    key!(etcd.keepalive_interval),
    key!(etcd.resign_after_failed_cycles),
    key!(etcd.username),
    key!(etcd.password_file),
    key!(etcd.ca_file),
    key!(etcd.cert_file),
    key!(etcd.key_file),
    key!(brake.max_hosts),
    key!(brake.window),
    key!(api.listen),
    key!(api.metrics_listen),
    key!(api.tls_cert_file),
    key!(api.tls_key_file),
    key!(api.client_ca_file),
    key!(api.token_file),
    key!(api.read_auth),
    key!(api.metrics_token_file),
    key!(hooks.on_transition),
    key!(hooks.on_leader_change),
    key!(hooks.timeout),
    key!(log.format),
    key!(log.level),
];

pub(crate) fn find(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

pub(crate) fn find_by_env(var: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.env_var() == var)
}

/// The table whose password `FTSD_<TABLE>_PASSWORD` sets, if `var` is such a variable.
pub(crate) fn password_table(var: &str) -> Option<&'static str> {
    PASSWORD_TABLES
        .into_iter()
        .find(|table| env_var(&format!("{table}.password")) == var)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn names_and_env_vars_are_unique() {
        let names: BTreeSet<_> = KEYS.iter().map(|k| k.name).collect();
        assert_eq!(names.len(), KEYS.len());
        let mut vars: BTreeSet<String> = KEYS.iter().map(Key::env_var).collect();
        vars.insert(ENV_CONFIG_PATH.to_owned());
        for table in PASSWORD_TABLES {
            vars.insert(env_var(&format!("{table}.password")));
        }
        assert_eq!(vars.len(), KEYS.len() + 1 + PASSWORD_TABLES.len());
    }

    #[test]
    fn every_key_is_top_level_or_in_a_table() {
        for key in KEYS {
            if let Some((table, _)) = key.name.split_once('.') {
                assert!(TABLES.contains(&table), "{}", key.name);
            } else {
                assert!(!TABLES.contains(&key.name), "{}", key.name);
            }
        }
    }

    #[test]
    fn tls_keys_reach_their_own_tables_settings() {
        // Their names are spelled out (the fields sit in the shared `PgTlsSettings`): each
        // must set its own table's field and leave the other table alone.
        use std::path::Path;
        for table in ["postgres", "catalog", "coordinator"] {
            let mut c = Config::defaults();
            for (key, value) in [
                ("sslmode", "verify-full"),
                ("ssl_ca_file", "/k/ca.pem"),
                ("ssl_cert_file", "/k/cert.pem"),
                ("ssl_key_file", "/k/key.pem"),
            ] {
                let name = format!("{table}.{key}");
                let k = find(&name).unwrap_or_else(|| panic!("{name} is a key"));
                (k.set)(&mut c, &Input::Text(value)).unwrap();
                assert_eq!((k.get)(&c), Some(toml_string(value)), "{name}");
            }
            let tls = |t: &str| match t {
                "postgres" => c.postgres.tls.clone(),
                "catalog" => c.catalog.tls.clone(),
                _ => c.coordinator.tls.clone(),
            };
            let mine = tls(table);
            assert_eq!(mine.mode, SslMode::VerifyFull, "{table}");
            assert_eq!(mine.ca_file.as_deref(), Some(Path::new("/k/ca.pem")));
            assert_eq!(mine.cert_file.as_deref(), Some(Path::new("/k/cert.pem")));
            assert_eq!(mine.key_file.as_deref(), Some(Path::new("/k/key.pem")));
            for other in ["postgres", "catalog", "coordinator"] {
                if other != table {
                    assert_eq!(tls(other), Default::default(), "{other} untouched");
                }
            }
        }
    }

    #[test]
    fn env_var_names() {
        assert_eq!(
            find("probe.retry_delay").unwrap().env_var(),
            "FTSD_PROBE_RETRY_DELAY"
        );
        assert_eq!(find_by_env("FTSD_CLUSTER").unwrap().name, "cluster");
        assert_eq!(password_table("FTSD_ETCD_PASSWORD"), Some("etcd"));
        assert_eq!(password_table("FTSD_API_PASSWORD"), None);
    }
}
