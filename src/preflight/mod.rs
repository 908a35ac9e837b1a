//! `ftsd preflight`: what has to hold before an instance is started, checked from the FTS
//! host with the instance's own configuration and credentials, one line per check.
//!
//! * this module — the results and their report (pure, unit-tested);
//! * `checks` — the checks themselves: etcd, catalog, other probers, the primaries, the
//!   open-file limit. Each is a small function returning [`CheckResult`]s.

pub mod checks;

use std::fmt::Write as _;

/// How one check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Fail,
    /// Not checked: it depends on a check that failed, or does not apply here.
    Skip,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        }
    }
}

/// One line of the report: what was checked, how it ended, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// Short name, e.g. `etcd quorum`, `primary dbid=2`.
    pub check: String,
    pub status: Status,
    /// What was seen (ok), what is wrong (fail) or why it was not checked (skip).
    pub detail: String,
}

impl CheckResult {
    pub fn ok(check: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(check, Status::Ok, detail)
    }

    pub fn fail(check: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(check, Status::Fail, detail)
    }

    pub fn skip(check: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(check, Status::Skip, detail)
    }

    fn new(check: impl Into<String>, status: Status, detail: impl Into<String>) -> Self {
        CheckResult {
            check: check.into(),
            status,
            detail: detail.into(),
        }
    }
}

/// Whether the report allows a start: no check failed.
pub fn passed(results: &[CheckResult]) -> bool {
    results.iter().all(|r| r.status != Status::Fail)
}

/// The report: one line per check (`status  check  detail`, columns aligned; a detail that
/// spans lines is joined into one, control characters escaped), then a summary line.
pub fn render(results: &[CheckResult]) -> String {
    let width = results
        .iter()
        .map(|r| r.check.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for r in results {
        let _ = writeln!(
            out,
            "{:<4}  {:<width$}  {}",
            r.status.as_str(),
            r.check,
            one_line(&r.detail),
        );
    }
    let count = |s: Status| results.iter().filter(|r| r.status == s).count();
    let _ = writeln!(
        out,
        "preflight {}: {} ok, {} failed, {} skipped",
        if passed(results) { "passed" } else { "FAILED" },
        count(Status::Ok),
        count(Status::Fail),
        count(Status::Skip),
    );
    out
}

/// Error texts from servers can span lines; a report line must not.
fn one_line(s: &str) -> String {
    let joined = s
        .split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| !l.is_empty());
    joined
        .collect::<Vec<_>>()
        .join(" / ")
        .chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_aligned_lines_and_a_summary() {
        let results = vec![
            CheckResult::ok("config", "/etc/ftsd/ftsd.toml is valid"),
            CheckResult::fail("etcd quorum", "connecting to etcd timed out"),
            CheckResult::skip("etcd permissions", "etcd unreachable"),
        ];
        assert_eq!(
            render(&results),
            "ok    config            /etc/ftsd/ftsd.toml is valid\n\
             FAIL  etcd quorum       connecting to etcd timed out\n\
             skip  etcd permissions  etcd unreachable\n\
             preflight FAILED: 1 ok, 1 failed, 1 skipped\n"
        );
        assert!(!passed(&results));
    }

    #[test]
    fn skips_alone_pass() {
        let results = vec![
            CheckResult::ok("config", "valid"),
            CheckResult::skip("another prober", "no etcd"),
        ];
        assert!(passed(&results));
        assert!(render(&results).ends_with("preflight passed: 1 ok, 0 failed, 1 skipped\n"));
        assert!(passed(&[]));
    }

    #[test]
    fn a_detail_never_spans_lines() {
        let r = [CheckResult::fail(
            "primary dbid=2",
            "FATAL: password authentication failed\nDETAIL: role \"x\"\r\n\tbad\u{7}",
        )];
        let text = render(&r);
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(
            text.starts_with(
                "FAIL  primary dbid=2  FATAL: password authentication failed / DETAIL: role \"x\" / bad\\u{7}\n"
            ),
            "{text}"
        );
    }
}
