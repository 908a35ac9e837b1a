//! The brake on correlated failures (docs/safety.md, "the brake"): when the failovers
//! admitted within one window plus those a cycle proposes would span more segment hosts than
//! the limit, the whole cycle's failovers are held, and the brake stays engaged until an
//! operator releases it.
//!
//! The failures clusters actually have take out one host, or one rack; a loss that spans more
//! than half of the hosts at once is more likely this observer's own view (its network, its
//! resolver, a switch between it and the segments) or a network event that the failovers
//! would not survive either, and failing over half the cluster doubles the load on the
//! survivors. Holding costs a human decision in the rare real case; not holding can cost the
//! whole cluster's primaries in the likely false one.
//!
//! Pure: the record, the proposals and the clock come in, a verdict and the next record go
//! out; the shell (`engine::brake`) reads and writes the record (etcd, fenced by the leader's
//! epoch; or in process) around it.

use std::collections::BTreeSet;
use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::model::ContentId;

/// `brake.max_hosts`: how many segment hosts the failovers within one window may span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostLimit {
    /// Half of the hosts that carry primaries (rounded down), and at least 1: a cluster may
    /// always lose one host.
    Auto,
    /// No brake.
    Off,
    /// At most this many hosts (at least 1).
    Hosts(u32),
}

impl HostLimit {
    /// The limit for a cluster whose acting primaries run on `primary_hosts` hosts; None: no
    /// limit.
    pub fn resolve(self, primary_hosts: usize) -> Option<usize> {
        match self {
            HostLimit::Auto => Some((primary_hosts / 2).max(1)),
            HostLimit::Off => None,
            HostLimit::Hosts(n) => Some(n.max(1) as usize),
        }
    }
}

impl fmt::Display for HostLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostLimit::Auto => f.write_str("auto"),
            HostLimit::Off => f.write_str("off"),
            HostLimit::Hosts(n) => write!(f, "{n}"),
        }
    }
}

/// A failover the brake let through, recorded before its catalog commit (so a commit that
/// then fails still counts: the brake errs on the side of holding).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Admitted {
    pub host: String,
    pub content: ContentId,
    #[serde(with = "humantime_serde")]
    pub at: SystemTime,
}

/// A failover a cycle proposes: the content and the host of the primary it gives up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposed {
    pub content: ContentId,
    pub host: String,
}

/// The brake engaged: what it counted and who engaged it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Engagement {
    #[serde(with = "humantime_serde")]
    pub at: SystemTime,
    /// The hosts counted: failovers admitted within the window plus those proposed.
    pub hosts: BTreeSet<String>,
    pub limit: usize,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// The contents whose failovers were held when it engaged.
    pub contents: BTreeSet<ContentId>,
    pub epoch: i64,
    pub instance_id: String,
}

/// An operator's release (`ftsctl brake release`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub by: String,
    #[serde(with = "humantime_serde")]
    pub at: SystemTime,
    pub reason: String,
    /// The hosts the released engagement counted: failovers from them may proceed for one
    /// window after the release even beyond the limit. Any other host still counts.
    pub hosts: BTreeSet<String>,
}

/// The brake's record: `<prefix>/<cluster>/brake` in etcd, or in process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrakeRecord {
    /// Failovers admitted within the current window (older ones are dropped on each write).
    #[serde(default)]
    pub admitted: Vec<Admitted>,
    /// Set while the brake holds; only a release clears it.
    #[serde(default)]
    pub engaged: Option<Engagement>,
    /// The last release.
    #[serde(default)]
    pub released: Option<Release>,
}

/// The rule's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The resolved `brake.max_hosts` (None: off).
    pub max_hosts: Option<usize>,
    pub window: Duration,
}

/// Who would write an engagement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Writer {
    pub epoch: i64,
    pub instance_id: String,
}

/// The brake's verdict on one cycle's failovers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Commit them (the record lists them as admitted).
    Proceed,
    /// Commit none of them.
    Hold(Held),
}

/// Why a cycle's failovers are held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    /// The hosts counted when the brake engaged.
    pub hosts: BTreeSet<String>,
    pub limit: usize,
    /// This cycle engaged it (the alarm is raised once per engagement).
    pub newly: bool,
}

impl fmt::Display for Held {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hosts: Vec<&str> = self.hosts.iter().map(String::as_str).collect();
        write!(
            f,
            "brake engaged: {} hosts in window > limit {} ({}); failovers held until an \
             operator runs `ftsctl brake release`",
            self.hosts.len(),
            self.limit,
            hosts.join(", ")
        )
    }
}

/// Whether an admitted failover still counts at `now`: it is within the window, and not
/// older than the last release (a release starts a new window).
pub fn counts(
    record: &BrakeRecord,
    admitted: &Admitted,
    window: Duration,
    now: SystemTime,
) -> bool {
    let in_window = now.checked_sub(window).is_none_or(|ago| admitted.at > ago);
    let since_release = record.released.as_ref().is_none_or(|r| admitted.at >= r.at);
    in_window && since_release
}

/// The hosts a release still exempts at `now`: those of the engagement it released, for one
/// window after it.
fn allowance(record: &BrakeRecord, window: Duration, now: SystemTime) -> BTreeSet<String> {
    match &record.released {
        Some(r) if now < r.at + window => r.hosts.clone(),
        _ => BTreeSet::new(),
    }
}

/// Judges one cycle's proposed failovers (content + host of the primary given up) against
/// the record. Returns the verdict and the record to write (unchanged when nothing changes).
///
/// * Nothing proposed, or the brake off: proceed.
/// * Engaged (and not released): hold, whatever is proposed — only an operator ends it.
/// * Otherwise count the distinct hosts of the failovers admitted since the window start plus
///   those proposed, less the hosts a recent release exempts: more than the limit engages the
///   brake and holds them all; else they are admitted (recorded with `now`).
pub fn judge(
    record: &BrakeRecord,
    proposed: &[Proposed],
    limits: Limits,
    now: SystemTime,
    writer: &Writer,
) -> (Verdict, BrakeRecord) {
    let Some(limit) = limits.max_hosts else {
        return (Verdict::Proceed, record.clone());
    };
    if proposed.is_empty() {
        return (Verdict::Proceed, record.clone());
    }
    if let Some(e) = &record.engaged {
        let held = Held {
            hosts: e.hosts.clone(),
            limit: e.limit,
            newly: false,
        };
        return (Verdict::Hold(held), record.clone());
    }
    let hosts: BTreeSet<String> = record
        .admitted
        .iter()
        .filter(|a| counts(record, a, limits.window, now))
        .map(|a| a.host.clone())
        .chain(proposed.iter().map(|p| p.host.clone()))
        .collect();
    let exempt = allowance(record, limits.window, now);
    let counted = hosts.difference(&exempt).count();
    let mut next = record.clone();
    next.admitted
        .retain(|a| counts(record, a, limits.window, now));
    if counted > limit {
        next.engaged = Some(Engagement {
            at: now,
            hosts: hosts.clone(),
            limit,
            window: limits.window,
            contents: proposed.iter().map(|p| p.content).collect(),
            epoch: writer.epoch,
            instance_id: writer.instance_id.clone(),
        });
        let held = Held {
            hosts,
            limit,
            newly: true,
        };
        return (Verdict::Hold(held), next);
    }
    next.admitted.extend(proposed.iter().map(|p| Admitted {
        host: p.host.clone(),
        content: p.content,
        at: now,
    }));
    (Verdict::Proceed, next)
}

/// Why a release was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReleaseError {
    #[error("the brake is not engaged: nothing to release")]
    NotEngaged,
}

/// An operator's release: clears the engagement and starts a new window at `now`; the hosts
/// it counted may fail over (beyond the limit) for one window. The held failovers are decided
/// again from the next cycle's probes, never from the held decisions.
pub fn release(
    record: &BrakeRecord,
    by: &str,
    reason: &str,
    now: SystemTime,
) -> Result<BrakeRecord, ReleaseError> {
    let engaged = record.engaged.as_ref().ok_or(ReleaseError::NotEngaged)?;
    Ok(BrakeRecord {
        admitted: Vec::new(),
        engaged: None,
        released: Some(Release {
            by: by.to_owned(),
            at: now,
            reason: reason.to_owned(),
            hosts: engaged.hosts.clone(),
        }),
    })
}

#[cfg(test)]
mod tests;
