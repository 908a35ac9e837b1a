//! `ftsctl`: inspect and operate an ftsd cluster through its API (see docs/api.md).
//!
//! * `cli` — the clap definition (also the source of the man page and completions).
//! * `client` — endpoint discovery (`--endpoint` list, or the members registry in etcd) and
//!   following a follower's redirect to the leader for mutating calls.
//! * `table` — aligned tables, colours only on a terminal.
//! * `commands` — one file per subcommand: human output, `--json`, exit code.

pub mod cli;
pub mod client;
pub mod commands;
pub mod table;

/// Exit codes, documented in docs/api.md.
pub mod exit {
    /// Success; for `status`, a healthy cluster.
    pub const OK: u8 = 0;
    /// The cluster is unhealthy: a segment is down, or no leader (`status`, `leader`).
    pub const UNHEALTHY: u8 = 1;
    /// Bad command line (clap's own exit code).
    pub const USAGE: u8 = 2;
    /// No ftsd instance (or etcd, with `--etcd`) could be reached.
    pub const UNREACHABLE: u8 = 3;
    /// An instance answered but refused or failed the call.
    pub const FAILED: u8 = 4;
    /// The call needs credentials that were not given or were refused (no or a wrong
    /// `--token-file`, no or an untrusted `--cert`), or TLS refused a certificate.
    pub const AUTH: u8 = 5;
}

/// A one-line error with its exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CtlError {
    pub code: u8,
    pub message: String,
}

impl CtlError {
    pub fn unreachable(message: impl Into<String>) -> Self {
        CtlError {
            code: exit::UNREACHABLE,
            message: message.into(),
        }
    }
    pub fn failed(message: impl Into<String>) -> Self {
        CtlError {
            code: exit::FAILED,
            message: message.into(),
        }
    }
    pub fn auth(message: impl Into<String>) -> Self {
        CtlError {
            code: exit::AUTH,
            message: message.into(),
        }
    }
}

pub use crate::error_chain::one_line as error_chain;
