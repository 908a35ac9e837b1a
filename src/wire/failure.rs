//! Why one attempt to message a segment failed, classified for logs, metrics and evidence.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The class of an attempt failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The host name or address did not resolve.
    Resolve,
    /// TCP connect was refused (nothing listening).
    Refused,
    /// The attempt did not complete within the per-attempt timeout (connect + reply).
    Timeout,
    /// The peer reset or closed the connection mid-exchange.
    Reset,
    /// Authentication was rejected, or the server asked for a method we cannot answer.
    Auth,
    /// The server answered startup with a FATAL error (recovery, starting up, resetting,
    /// too many clients, not a superuser ...).
    StartupError,
    /// The server answered the FTS query with an ErrorResponse (e.g. the disk I/O check).
    ErrorReply,
    /// The bytes broke the protocol: wrong message order, wrong column count or type,
    /// oversized message, garbage.
    Protocol,
    /// Any other local I/O error.
    Io,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Resolve => "resolve",
            FailureKind::Refused => "refused",
            FailureKind::Timeout => "timeout",
            FailureKind::Reset => "reset",
            FailureKind::Auth => "auth",
            FailureKind::StartupError => "startup_error",
            FailureKind::ErrorReply => "error_reply",
            FailureKind::Protocol => "protocol",
            FailureKind::Io => "io",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One failed attempt: its class plus what the server said, if anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct AttemptError {
    pub kind: FailureKind,
    /// Human-readable reason (the server's message for error replies).
    pub message: String,
    /// SQLSTATE of an ErrorResponse, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sqlstate: Option<String>,
    /// DETAIL of an ErrorResponse (carries `last replayed record at X/Y`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl AttemptError {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        AttemptError {
            kind,
            message: message.into(),
            sqlstate: None,
            detail: None,
        }
    }

    /// Message and detail as libpq's `PQerrorMessage` would join them, which is the text the
    /// in-core prober searches for the recovery and reset markers.
    pub fn full_text(&self) -> String {
        match &self.detail {
            Some(d) => format!("{}\nDETAIL:  {}", self.message, d),
            None => self.message.clone(),
        }
    }
}
