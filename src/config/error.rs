//! Configuration errors, and the bookkeeping that lets each one name where the bad value came
//! from (file, environment variable or flag), so the operator reads one line and knows what to
//! edit.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::{keys, Config};

/// Why the configuration could not be loaded. `Display` is the single line to print (control
/// characters from the input are escaped, so it never spans lines); exit with
/// [`ConfigError::exit_code`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The configuration file could not be read.
    Read { path: PathBuf, reason: String },
    /// The file is not valid TOML.
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// The file has a key ftsd does not know (`key` is dotted, e.g. `probe.intervall`).
    UnknownKey {
        path: PathBuf,
        key: String,
        hint: Option<&'static str>,
    },
    /// An `FTSD_*` variable that is not a setting, or whose value is not UTF-8.
    Env { var: String, problem: String },
    /// A known key has a bad value. `at` names the source: `<file>: <key>` (with ` = <value>`
    /// when the file set it), `FTSD_VAR=<value>` or `--flag=<value>`.
    Invalid {
        at: String,
        key: String,
        problem: String,
    },
}

impl ConfigError {
    /// The process exit code for a configuration error (the usual "usage error" code).
    pub fn exit_code(&self) -> i32 {
        2
    }

    /// The key the error is about, if it is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::UnknownKey { key, .. } => Some(key),
            ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line = match self {
            ConfigError::Read { path, reason } => {
                format!("cannot read {}: {reason}", path.display())
            }
            ConfigError::Syntax {
                path,
                line,
                column,
                message,
            } => format!(
                "{}: invalid TOML at line {line}, column {column}: {message}",
                path.display()
            ),
            ConfigError::UnknownKey { path, key, hint } => {
                let hint = hint.map(|h| format!(" ({h})")).unwrap_or_default();
                format!("{}: unknown key '{key}'{hint}", path.display())
            }
            ConfigError::Env { var, problem } => format!("{var}: {problem}"),
            ConfigError::Invalid { at, problem, .. } => format!("{at}: {problem}"),
        };
        f.write_str(&one_line(&line))
    }
}

impl std::error::Error for ConfigError {}

/// Escapes control characters (newlines included) so input cannot split the error line.
fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// `io::Error`'s text without the trailing ` (os error N)`, which means nothing to an operator.
pub(crate) fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// Where a key's effective value came from.
#[derive(Debug, Clone)]
pub(crate) enum Origin {
    File,
    /// An environment variable or a flag: its name (`FTSD_X` or `--x`) and the text given,
    /// already masked if it may hold a secret.
    Text {
        name: String,
        value: String,
    },
}

/// The origin of every key that was set by something other than the defaults.
pub(crate) struct Origins<'p> {
    path: &'p Path,
    map: BTreeMap<String, Origin>,
}

impl<'p> Origins<'p> {
    pub(crate) fn new(path: &'p Path) -> Self {
        Origins {
            path,
            map: BTreeMap::new(),
        }
    }

    pub(crate) fn set(&mut self, key: &str, origin: Origin) {
        self.map.insert(key.to_owned(), origin);
    }

    pub(crate) fn is_default(&self, key: &str) -> bool {
        !self.map.contains_key(key)
    }

    /// `<file>: <key>` for a default, `<file>: <key> = <value>` for a file value,
    /// `NAME=<value>` for an environment variable or flag.
    pub(crate) fn at(&self, cfg: &Config, key: &str) -> String {
        let file = self.path.display();
        match self.map.get(key) {
            None => format!("{file}: {key}"),
            Some(Origin::File) => match keys::find(key).and_then(|k| (k.get)(cfg)) {
                Some(value) => format!("{file}: {key} = {value}"),
                None => format!("{file}: {key}"),
            },
            Some(Origin::Text { name, value }) => format!("{name}={value}"),
        }
    }

    /// The error for `key` having a value that fails validation.
    pub(crate) fn invalid(&self, cfg: &Config, key: &str, problem: String) -> ConfigError {
        ConfigError::Invalid {
            at: self.at(cfg, key),
            key: key.to_owned(),
            problem,
        }
    }

    /// Error prefix for a value that could not even be converted: the file's values are quoted
    /// inside the problem text instead, since the value has no rendering yet.
    pub(crate) fn parse_failed_in_file(&self, key: &str, problem: String) -> ConfigError {
        ConfigError::Invalid {
            at: format!("{}: {key}", self.path.display()),
            key: key.to_owned(),
            problem,
        }
    }
}
