//! Bounds on what a caller may ask for. Every input that sizes work or storage — rows read,
//! time waited, text kept in etcd — is checked here, and a value out of bounds is refused with
//! INVALID_ARGUMENT naming the bound, rather than clamped silently: a script asking for more
//! than it gets should learn so (documented in docs/api.md).

use std::time::Duration;

use tonic::Status;

/// `History.limit` when the request leaves it 0.
pub const DEFAULT_HISTORY_LIMIT: u32 = 1000;
/// Largest `History.limit`.
pub const MAX_HISTORY_LIMIT: u32 = 10_000;
/// `ProbeNow` wait when the request leaves it 0.
pub const DEFAULT_PROBE_WAIT: Duration = Duration::from_secs(60);
/// Longest `ProbeNow` wait.
pub const MAX_PROBE_WAIT: Duration = Duration::from_secs(3600);
/// Longest pause with an expiry (an indefinite pause stays possible).
pub const MAX_PAUSE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Longest pause reason, in characters.
pub const MAX_REASON_CHARS: usize = 1024;
/// Longest requester name (`by`), in characters.
pub const MAX_BY_CHARS: usize = 256;

pub fn history_limit(limit: u32) -> Result<u32, Status> {
    match limit {
        0 => Ok(DEFAULT_HISTORY_LIMIT),
        l if l > MAX_HISTORY_LIMIT => Err(Status::invalid_argument(format!(
            "limit {l} is more than the maximum {MAX_HISTORY_LIMIT}"
        ))),
        l => Ok(l),
    }
}

pub fn probe_wait(timeout_ms: u64) -> Result<Duration, Status> {
    match Duration::from_millis(timeout_ms) {
        d if d.is_zero() => Ok(DEFAULT_PROBE_WAIT),
        d if d > MAX_PROBE_WAIT => Err(Status::invalid_argument(format!(
            "timeout {} is more than the maximum {}",
            humantime::format_duration(d),
            humantime::format_duration(MAX_PROBE_WAIT)
        ))),
        d => Ok(d),
    }
}

/// How long a switchover may wait for the writes to stop and the standby to replay them.
pub const DEFAULT_SWITCHOVER_WAIT: Duration = Duration::from_secs(30);
pub const MAX_SWITCHOVER_WAIT: Duration = Duration::from_secs(600);

pub fn switchover_wait(timeout_ms: u64) -> Result<Duration, Status> {
    match Duration::from_millis(timeout_ms) {
        d if d.is_zero() => Ok(DEFAULT_SWITCHOVER_WAIT),
        d if d > MAX_SWITCHOVER_WAIT => Err(Status::invalid_argument(format!(
            "timeout {} is more than the maximum {}",
            humantime::format_duration(d),
            humantime::format_duration(MAX_SWITCHOVER_WAIT)
        ))),
        d => Ok(d),
    }
}

/// `None` for 0 (indefinitely).
pub fn pause_duration(duration_ms: u64) -> Result<Option<Duration>, Status> {
    match Duration::from_millis(duration_ms) {
        d if d.is_zero() => Ok(None),
        d if d > MAX_PAUSE => Err(Status::invalid_argument(format!(
            "pause duration {} is more than the maximum {} (pause without a duration to pause \
             until resumed)",
            humantime::format_duration(d),
            humantime::format_duration(MAX_PAUSE)
        ))),
        d => Ok(Some(d)),
    }
}

/// `text` trimmed, refused when longer than `max` characters or containing control
/// characters (it is shown in one-line status output and logs).
pub fn text(what: &str, text: &str, max: usize) -> Result<String, Status> {
    let text = text.trim();
    if text.chars().count() > max {
        return Err(Status::invalid_argument(format!(
            "{what} is longer than {max} characters"
        )));
    }
    if text.chars().any(char::is_control) {
        return Err(Status::invalid_argument(format!(
            "{what} must not contain control characters"
        )));
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests;
