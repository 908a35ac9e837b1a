//! Building a [`Config`]: defaults, then the file, then `FTSD_*` variables, then flags, then the
//! passwords, then validation. Each layer records where it set a key so errors can name the
//! source.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::error::{io_reason, Origin, Origins};
use super::keys::{self, Input, ENV_CONFIG_PATH, ENV_PREFIX, PASSWORD_TABLES, TABLES};
use super::render::mask_conn_string;
use super::{validate, Config, ConfigError, Overrides, Secret, MASK};

impl Config {
    /// Loads and validates the configuration.
    ///
    /// `env` is the environment to read `FTSD_*` variables from (pass [`process_env`]'s result
    /// in the daemon, a literal list in tests); other variables are ignored. `overrides` are the
    /// command-line flags. Precedence: defaults < file < env < overrides.
    pub fn load<I, K, V>(path: &Path, env: I, overrides: &Overrides) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_owned(),
            reason: io_reason(&e),
        })?;
        let table = parse_toml(path, &text)?;

        let mut cfg = Config::defaults();
        let mut origins = Origins::new(path);
        apply_file(&mut cfg, &mut origins, path, &table)?;

        let env_passwords = apply_env(&mut cfg, &mut origins, &ftsd_vars(env))?;

        for (key, flag, value) in overrides.entries() {
            if let Some(value) = value {
                apply_text(&mut cfg, &mut origins, key, flag, value)?;
            }
        }

        load_passwords(&mut cfg, &mut origins, &env_passwords)?;
        load_tokens(&mut cfg, &origins)?;
        cap_lock_limits_by_lease(&mut cfg, &origins);
        validate::validate(&cfg, &origins)?;
        Ok(cfg)
    }
}

impl Config {
    /// The configuration from the defaults, `FTSD_*` variables of `env`, and `(key, source,
    /// value)` settings converted like environment variables, which win (the `gpfts` entry
    /// point builds one from its flags; `source` names the flag in errors).
    pub fn from_settings<I, K, V>(
        env: I,
        settings: &[(&str, &str, String)],
    ) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let path = Path::new("(command line)");
        let mut cfg = Config::defaults();
        let mut origins = Origins::new(path);
        let env_passwords = apply_env(&mut cfg, &mut origins, &ftsd_vars(env))?;
        for (key, source, value) in settings {
            apply_text(&mut cfg, &mut origins, key, source, value)?;
        }
        load_passwords(&mut cfg, &mut origins, &env_passwords)?;
        load_tokens(&mut cfg, &origins)?;
        cap_lock_limits_by_lease(&mut cfg, &origins);
        validate::validate(&cfg, &origins)?;
        Ok(cfg)
    }
}

/// The `FTSD_*` variables of `env`, sorted, so that with several bad variables the same one is
/// always reported.
fn ftsd_vars<I, K, V>(env: I) -> BTreeMap<String, String>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    env.into_iter()
        .filter(|(k, _)| k.as_ref().starts_with(ENV_PREFIX))
        .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned()))
        .collect()
}

/// The catalog's lock limits must not exceed the lease TTL (a new leader waits about one lease
/// for its predecessor), so their defaults are capped at half of it; values set explicitly are
/// left to validation.
fn cap_lock_limits_by_lease(cfg: &mut Config, origins: &Origins<'_>) {
    let half_lease = cfg.etcd.lease_ttl / 2;
    let catalog = &mut cfg.catalog;
    for (key, value) in [
        ("catalog.lock_timeout", &mut catalog.lock_timeout),
        (
            "catalog.idle_in_transaction_timeout",
            &mut catalog.idle_in_transaction_timeout,
        ),
    ] {
        if origins.is_default(key) {
            *value = (*value).min(half_lease);
        }
    }
}

/// The process environment's `FTSD_*` variables, for [`Config::load`]. A variable whose value is
/// not UTF-8 is an error rather than being skipped, since skipping would silently fall back to
/// the file's value.
pub fn process_env() -> Result<Vec<(String, String)>, ConfigError> {
    let mut vars = Vec::new();
    for (name, value) in std::env::vars_os() {
        let Some(name) = name.to_str().filter(|n| n.starts_with(ENV_PREFIX)) else {
            continue;
        };
        let value = value.into_string().map_err(|_| ConfigError::Env {
            var: name.to_owned(),
            problem: "value is not valid UTF-8".to_owned(),
        })?;
        vars.push((name.to_owned(), value));
    }
    Ok(vars)
}

fn parse_toml(path: &Path, text: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>().map_err(|e| {
        let offset = e.span().map_or(0, |span| span.start);
        let before = text.get(..offset).unwrap_or(text);
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
        ConfigError::Syntax {
            path: path.to_owned(),
            line,
            column,
            message: e.message().to_owned(),
        }
    })
}

fn apply_file(
    cfg: &mut Config,
    origins: &mut Origins<'_>,
    path: &Path,
    table: &toml::Table,
) -> Result<(), ConfigError> {
    for (name, value) in table {
        if !TABLES.contains(&name.as_str()) {
            apply_file_value(cfg, origins, path, name, value)?;
            continue;
        }
        let toml::Value::Table(inner) = value else {
            return Err(ConfigError::Invalid {
                at: format!("{}: {name}", path.display()),
                key: name.clone(),
                problem: format!("expected a table, found {}", value.type_str()),
            });
        };
        for (leaf, value) in inner {
            apply_file_value(cfg, origins, path, &format!("{name}.{leaf}"), value)?;
        }
    }
    Ok(())
}

fn apply_file_value(
    cfg: &mut Config,
    origins: &mut Origins<'_>,
    path: &Path,
    name: &str,
    value: &toml::Value,
) -> Result<(), ConfigError> {
    let Some(key) = keys::find(name) else {
        let is_password = name
            .strip_suffix(".password")
            .is_some_and(|table| PASSWORD_TABLES.contains(&table));
        return Err(ConfigError::UnknownKey {
            path: path.to_owned(),
            key: name.to_owned(),
            hint: is_password.then_some(
                "passwords are not read from the file: use password_file or FTSD_<TABLE>_PASSWORD",
            ),
        });
    };
    (key.set)(cfg, &Input::File(value))
        .map_err(|problem| origins.parse_failed_in_file(key.name, problem))?;
    origins.set(key.name, Origin::File);
    Ok(())
}

/// Applies the key variables; returns the password variables by table.
fn apply_env(
    cfg: &mut Config,
    origins: &mut Origins<'_>,
    env: &BTreeMap<String, String>,
) -> Result<BTreeMap<&'static str, String>, ConfigError> {
    let mut passwords = BTreeMap::new();
    for (var, value) in env {
        if var == ENV_CONFIG_PATH {
            continue;
        }
        if let Some(table) = keys::password_table(var) {
            passwords.insert(table, value.clone());
            continue;
        }
        let Some(key) = keys::find_by_env(var) else {
            return Err(ConfigError::Env {
                var: var.clone(),
                problem: "no such setting (FTSD_* variables are reserved for configuration keys, \
                          see docs/configuration.md)"
                    .to_owned(),
            });
        };
        apply_text(cfg, origins, key.name, var, value)?;
    }
    Ok(passwords)
}

/// Applies text from an environment variable or flag (`source`) to `name`.
fn apply_text(
    cfg: &mut Config,
    origins: &mut Origins<'_>,
    name: &str,
    source: &str,
    value: &str,
) -> Result<(), ConfigError> {
    let key = keys::find(name).ok_or_else(|| ConfigError::Env {
        var: source.to_owned(),
        problem: format!("internal error: no key {name}"),
    })?;
    let shown = if key.name == "catalog.url" {
        mask_conn_string(value)
    } else {
        value.to_owned()
    };
    match (key.set)(cfg, &Input::Text(value)) {
        Ok(()) => {
            origins.set(
                key.name,
                Origin::Text {
                    name: source.to_owned(),
                    value: shown,
                },
            );
            Ok(())
        }
        Err(problem) => Err(ConfigError::Invalid {
            at: format!("{source}={shown}"),
            key: key.name.to_owned(),
            problem,
        }),
    }
}

/// Sets each table's password from `FTSD_<TABLE>_PASSWORD` if that is non-empty, else from the
/// table's `password_file` if set. The variable wins so a deployment can inject the secret
/// without editing the file.
fn load_passwords(
    cfg: &mut Config,
    origins: &mut Origins<'_>,
    env_passwords: &BTreeMap<&'static str, String>,
) -> Result<(), ConfigError> {
    for table in PASSWORD_TABLES {
        let file = password_fields(cfg, table).0.clone();
        let password = if let Some(password) = env_passwords.get(table).filter(|p| !p.is_empty()) {
            let name = keys::env_var(&format!("{table}.password"));
            let value = MASK.to_owned();
            origins.set(&format!("{table}.password"), Origin::Text { name, value });
            Some(Secret::new(password.clone()))
        } else if let Some(file) = file {
            let file_key = format!("{table}.password_file");
            Some(read_password_file(&file).map_err(|p| origins.invalid(cfg, &file_key, p))?)
        } else {
            None
        };
        *password_fields(cfg, table).1 = password;
    }
    Ok(())
}

/// Shortest bearer token accepted: a token is the whole credential, so a short one could be
/// guessed.
pub(crate) const MIN_TOKEN_LEN: usize = 16;

/// Reads `api.token_file` and `api.metrics_token_file` (first line, like a password file).
fn load_tokens(cfg: &mut Config, origins: &Origins<'_>) -> Result<(), ConfigError> {
    for key in ["api.token_file", "api.metrics_token_file"] {
        let file = match key {
            "api.token_file" => cfg.api.token_file.clone(),
            _ => cfg.api.metrics_token_file.clone(),
        };
        let token = match file {
            Some(file) => {
                let token = read_password_file(&file).map_err(|p| origins.invalid(cfg, key, p))?;
                let len = token.expose().chars().count();
                if len < MIN_TOKEN_LEN || token.expose().chars().any(char::is_whitespace) {
                    let problem = format!(
                        "the token in {} must be at least {MIN_TOKEN_LEN} characters without \
                         whitespace (e.g. `openssl rand -hex 32`)",
                        file.display()
                    );
                    return Err(origins.invalid(cfg, key, problem));
                }
                Some(token)
            }
            None => None,
        };
        match key {
            "api.token_file" => cfg.api.token = token,
            _ => cfg.api.metrics_token = token,
        }
    }
    Ok(())
}

/// A password table's `password_file` and `password` fields.
fn password_fields<'c>(
    cfg: &'c mut Config,
    table: &str,
) -> (&'c Option<PathBuf>, &'c mut Option<Secret>) {
    match table {
        "probe" => (&cfg.probe.password_file, &mut cfg.probe.password),
        "catalog" => (&cfg.catalog.password_file, &mut cfg.catalog.password),
        "coordinator" => (
            &cfg.coordinator.password_file,
            &mut cfg.coordinator.password,
        ),
        _ => (&cfg.etcd.password_file, &mut cfg.etcd.password),
    }
}

/// The first line's worth of a password file: trailing newlines (as editors and `echo` leave
/// them) are not part of the password.
fn read_password_file(path: &Path) -> Result<Secret, String> {
    let shown = path.display();
    let bytes =
        std::fs::read(path).map_err(|e| format!("cannot read {shown}: {}", io_reason(&e)))?;
    let text = String::from_utf8(bytes).map_err(|_| format!("{shown} is not valid UTF-8"))?;
    let password = text.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        return Err(format!("{shown} is empty"));
    }
    Ok(Secret::new(password))
}
