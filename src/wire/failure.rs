//! Why one attempt to message a segment failed, classified for logs, metrics and evidence.
//!
//! Some classes say nothing about the segment: ftsd runs on hosts of its own, so its
//! credentials, its DNS and its own network stack are not the dispatcher's data path. Those
//! are *prober faults* ([`FailureKind::is_prober_fault`]): the decision core never counts them
//! as a lost primary (docs/safety.md).

use serde::{Deserialize, Serialize};
use std::fmt;

/// The class of an attempt failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The host name or address did not resolve (this host's resolver): a prober fault.
    Resolve,
    /// TCP connect was refused (nothing listening).
    Refused,
    /// The attempt did not complete within the per-attempt timeout (connect + reply).
    Timeout,
    /// The peer reset or closed the connection mid-exchange.
    Reset,
    /// Authentication was rejected (SQLSTATE class 28: 28P01, 28000), or the server asked for
    /// a method we cannot answer: a prober fault (the segment answered).
    Auth,
    /// The probe role lacks a privilege ("must be superuser", SQLSTATE 42501): a prober fault
    /// (the segment answered).
    Permission,
    /// The connection could not even leave this host: no route from here (`ENETUNREACH`),
    /// no local address, out of file descriptors (`EMFILE`, `ENFILE`), buffers or memory, a
    /// local firewall (`EPERM`/`EACCES` on connect): a prober fault.
    Local,
    /// The server answered startup with a FATAL error (recovery, starting up, resetting,
    /// too many clients, not a superuser ...).
    StartupError,
    /// The server answered the FTS query with an ErrorResponse (e.g. the disk I/O check).
    ErrorReply,
    /// The bytes broke the protocol: wrong message order, wrong column count or type,
    /// oversized message, garbage.
    Protocol,
    /// Any other I/O error (e.g. `EHOSTUNREACH`, which a dead host on the same subnet
    /// produces too, so it counts as a segment failure).
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
            FailureKind::Permission => "permission",
            FailureKind::Local => "local",
            FailureKind::StartupError => "startup_error",
            FailureKind::ErrorReply => "error_reply",
            FailureKind::Protocol => "protocol",
            FailureKind::Io => "io",
        }
    }
}

impl FailureKind {
    /// Whether the failure belongs to this prober rather than to the segment: our password,
    /// our privileges, our resolver, our own host's network stack. Such a failure proves
    /// nothing about the primary (an authentication failure even proves it is up), so it is
    /// never counted as a lost primary.
    pub fn is_prober_fault(self) -> bool {
        matches!(
            self,
            FailureKind::Auth | FailureKind::Permission | FailureKind::Resolve | FailureKind::Local
        )
    }

    /// The class of a local I/O error from connecting or talking to a segment: the errors
    /// that cannot have come from the segment's side are [`FailureKind::Local`].
    pub fn of_io(e: &std::io::Error) -> FailureKind {
        use std::io::ErrorKind as K;
        if let Some(code) = e.raw_os_error() {
            if [
                libc::ENETUNREACH,
                libc::EADDRNOTAVAIL,
                libc::EMFILE,
                libc::ENFILE,
                libc::ENOBUFS,
                libc::ENOMEM,
                libc::EPERM,
                libc::EACCES,
            ]
            .contains(&code)
            {
                return FailureKind::Local;
            }
        }
        match e.kind() {
            K::ConnectionRefused => FailureKind::Refused,
            K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
                FailureKind::Reset
            }
            K::TimedOut => FailureKind::Timeout,
            _ => FailureKind::Io,
        }
    }

    /// The class of a server error by SQLSTATE and text, for errors whose default class is
    /// `default` (a startup FATAL or an error reply): authorization and privilege errors are
    /// prober faults whatever phase they came in.
    pub fn of_server_error(sqlstate: Option<&str>, message: &str, default: FailureKind) -> Self {
        match sqlstate {
            Some(code) if code.starts_with("28") => FailureKind::Auth,
            Some("42501") => FailureKind::Permission,
            _ if message.contains("must be superuser") => FailureKind::Permission,
            _ => default,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[test]
    fn own_side_failures_are_prober_faults_and_segment_side_ones_are_not() {
        let k = |code| FailureKind::of_io(&io::Error::from_raw_os_error(code));
        for code in [
            libc::ENETUNREACH,
            libc::EMFILE,
            libc::ENFILE,
            libc::EADDRNOTAVAIL,
        ] {
            assert_eq!(k(code), FailureKind::Local, "errno {code}");
            assert!(k(code).is_prober_fault());
        }
        assert_eq!(k(libc::ECONNREFUSED), FailureKind::Refused);
        assert_eq!(k(libc::ECONNRESET), FailureKind::Reset);
        assert_eq!(k(libc::ETIMEDOUT), FailureKind::Timeout);
        // a dead host on the same subnet answers EHOSTUNREACH too: a segment failure
        assert_eq!(k(libc::EHOSTUNREACH), FailureKind::Io);
        for kind in [
            FailureKind::Refused,
            FailureKind::Timeout,
            FailureKind::Reset,
            FailureKind::StartupError,
            FailureKind::ErrorReply,
            FailureKind::Protocol,
            FailureKind::Io,
        ] {
            assert!(!kind.is_prober_fault(), "{kind}");
        }
        let srv = FailureKind::of_server_error;
        let d = FailureKind::StartupError;
        assert_eq!(
            srv(Some("28P01"), "password authentication failed", d),
            FailureKind::Auth
        );
        assert_eq!(
            srv(Some("28000"), "no pg_hba.conf entry", d),
            FailureKind::Auth
        );
        assert_eq!(
            srv(Some("42501"), "permission denied", d),
            FailureKind::Permission
        );
        assert_eq!(
            srv(None, "must be superuser to connect in FTS mode", d),
            FailureKind::Permission
        );
        assert_eq!(
            srv(Some("57P03"), "the database system is starting up", d),
            d
        );
        assert_eq!(srv(Some("53300"), "too many clients", d), d);
    }
}
