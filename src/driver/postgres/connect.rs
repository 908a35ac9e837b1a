//! One fresh connection per attempt, and the classification of tokio-postgres errors into the
//! same [`FailureKind`]s the FTS wire client reports, so the decision core reads both alike.

use std::time::Duration;

use tokio_postgres::Client;

use super::PgDriverSettings;
use crate::model::Segment;
use crate::wire::failure::{AttemptError, FailureKind};

/// Connects to `target` as the probe role. The caller bounds the whole attempt with the
/// per-attempt timeout; `connect_timeout` is set too so a hung TCP connect is reported as such.
pub(super) async fn connect(
    settings: &PgDriverSettings,
    target: &Segment,
    timeout: Duration,
) -> Result<Client, AttemptError> {
    let port = crate::driver::tcp_port(target)?;
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(&target.address)
        .port(port)
        .user(&settings.user)
        .dbname(&settings.database)
        .application_name("ftsd")
        .connect_timeout(timeout);
    if let Some(pw) = &settings.password {
        cfg.password(pw.expose());
    }
    settings.tls.apply(&mut cfg);
    let (client, connection) = cfg
        .connect(settings.tls.connector())
        .await
        .map_err(|e| classify(&e, true))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "segment connection ended");
        }
    });
    Ok(client)
}

/// The server's `server_version_num` (150004 for PostgreSQL 15.4), read from the server itself
/// so the caller picks the function names it understands (`xlog`/`location` before
/// PostgreSQL 10, no `pg_promote()` before 12).
pub(crate) async fn server_version_num(client: &Client) -> Result<i32, AttemptError> {
    let row = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .map_err(|e| classify(&e, false))?;
    Ok(row.get(0))
}

/// Maps a tokio-postgres error to a failure class. `connecting`: the error came from
/// connection startup, where a server error means the server refused the session (starting
/// up, in recovery, too many clients ...), as the FTS client's `StartupError`.
pub(crate) fn classify(e: &tokio_postgres::Error, connecting: bool) -> AttemptError {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        // Authorization (class 28) and privilege (42501, "must be superuser") errors are
        // prober faults: the server answered, our role is what is wrong.
        let default = if connecting {
            FailureKind::StartupError
        } else {
            FailureKind::ErrorReply
        };
        let kind = FailureKind::of_server_error(Some(code), db.message(), default);
        return AttemptError {
            kind,
            message: db.message().to_string(),
            sqlstate: Some(code.to_string()),
            detail: db.detail().map(str::to_string),
        };
    }
    let text = flatten(e);
    if e.is_closed() {
        return AttemptError::new(FailureKind::Reset, text);
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            let kind = match FailureKind::of_io(io) {
                FailureKind::Io if text.contains("lookup address") => FailureKind::Resolve,
                kind => kind,
            };
            return AttemptError::new(kind, text);
        }
        source = s.source();
    }
    let kind = if text.contains("timeout") || text.contains("timed out") {
        FailureKind::Timeout
    } else if text.contains("lookup address") {
        FailureKind::Resolve
    } else {
        FailureKind::Protocol
    };
    AttemptError::new(kind, text)
}

fn flatten(e: &tokio_postgres::Error) -> String {
    crate::error_chain::one_line(e)
}

/// A SQL string literal that is correct whatever `standard_conforming_strings` says: values
/// containing a backslash use the `E''` form with backslashes doubled.
pub(super) fn quote_literal(s: &str) -> String {
    let quoted = s.replace('\'', "''");
    if s.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_quoted() {
        assert_eq!(quote_literal(""), "''");
        assert_eq!(quote_literal("\"s1\""), "'\"s1\"'");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("a\\b'"), "E'a\\\\b'''");
    }
}
