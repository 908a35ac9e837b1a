//! Shadow mode's bookkeeping: what the shadow would have changed, what the incumbent FTS did
//! change, and the verdict on each transition. A pure state machine (time is passed in), driven
//! by the shadow's probe loop: [`Ledger::observe`] with each configuration it reads, and
//! [`Ledger::decided`] with each cycle's decisions.
//!
//! The two sides rarely move in the same cycle, so each waits for the other:
//!
//! * **Shadow first**: the shadow's decision would change a content; it is *expected* for up to
//!   `window`. The incumbent's change to the same states agrees; a different change differs;
//!   nothing within the window is `shadow_only` (a change the incumbent never made).
//! * **Incumbent first**: a content changed in the configuration that the shadow did not
//!   expect. The content is *held*: the shadow's next cycle sees it as it was before the
//!   change ([`Ledger::view`]) and decides on it with its own probes. Deciding the same states
//!   agrees; anything else is `incumbent_only` (a change the shadow would not have made).
//!   A failover the shadow's pre-promotion mirror check could not confirm because the mirror
//!   already answers as the primary the incumbent made it counts as the same failover.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::decide::{MirrorCheck, Rule};
use super::transition::RowUpdate;
use crate::model::{ContentId, Dbid, Role, Segment, SegmentConfig, SegmentState};

/// How the two FTS compared on one transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictKind {
    /// Both made (or would have made) the same change.
    Agree,
    /// The incumbent changed a content the shadow would have left as it was.
    IncumbentOnly,
    /// The shadow would have changed a content; the incumbent did not within the window.
    ShadowOnly,
    /// Both changed the content, to different states.
    Different,
}

impl VerdictKind {
    pub const ALL: [VerdictKind; 4] = [
        VerdictKind::Agree,
        VerdictKind::IncumbentOnly,
        VerdictKind::ShadowOnly,
        VerdictKind::Different,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            VerdictKind::Agree => "agree",
            VerdictKind::IncumbentOnly => "incumbent_only",
            VerdictKind::ShadowOnly => "shadow_only",
            VerdictKind::Different => "different",
        }
    }
}

/// One judged transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub kind: VerdictKind,
    pub content: ContentId,
    /// The rule the shadow decided by, when it decided.
    pub shadow_rule: Option<Rule>,
    /// The states the shadow would have written.
    pub shadow: Vec<(Dbid, SegmentState)>,
    /// The states the incumbent wrote.
    pub incumbent: Vec<(Dbid, SegmentState)>,
    /// Which side moved first (`shadow` or `incumbent`).
    pub first: &'static str,
}

/// What the shadow decided for one content in a cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowDecision {
    pub content: ContentId,
    pub rule: Rule,
    /// The rows the decision would write.
    pub updates: Vec<RowUpdate>,
    pub mirror_dbid: Dbid,
    pub mirror_check: Option<MirrorCheck>,
}

#[derive(Debug, Clone)]
struct Expected {
    rule: Rule,
    to: Vec<(Dbid, SegmentState)>,
    since: Instant,
}

#[derive(Debug, Clone)]
struct Held {
    before: Vec<Segment>,
    changed: Vec<(Dbid, SegmentState)>,
    since: Instant,
}

/// The shadow's open expectations and held incumbent changes.
#[derive(Debug)]
pub struct Ledger {
    window: Duration,
    last: Option<SegmentConfig>,
    expected: BTreeMap<ContentId, Expected>,
    held: BTreeMap<ContentId, Held>,
}

impl Ledger {
    /// `window`: how long either side waits for the other before a divergence is declared.
    pub fn new(window: Duration) -> Self {
        Ledger {
            window,
            last: None,
            expected: BTreeMap::new(),
            held: BTreeMap::new(),
        }
    }

    /// A configuration just read: compares it with the previous one, and returns verdicts on
    /// the incumbent's changes that meet an expectation, and on expectations that ran out.
    pub fn observe(&mut self, config: &SegmentConfig, now: Instant) -> Vec<Verdict> {
        let mut verdicts = Vec::new();
        if let Some(last) = &self.last {
            for Change {
                content,
                before,
                changed,
            } in changes(last, config)
            {
                match self.expected.remove(&content) {
                    Some(e) => verdicts.push(Verdict {
                        kind: if same_states(&e.to, &changed) {
                            VerdictKind::Agree
                        } else {
                            VerdictKind::Different
                        },
                        content,
                        shadow_rule: Some(e.rule),
                        shadow: e.to,
                        incumbent: changed,
                        first: "shadow",
                    }),
                    None => {
                        let held = self.held.entry(content).or_insert(Held {
                            before,
                            changed: Vec::new(),
                            since: now,
                        });
                        // A second change before the shadow judged the first: judge where the
                        // content ended, from where it was.
                        merge(&mut held.changed, changed);
                    }
                }
            }
        }
        self.last = Some(config.clone());
        let window = self.window;
        let expired: Vec<ContentId> = self
            .expected
            .iter()
            .filter(|(_, e)| now.saturating_duration_since(e.since) >= window)
            .map(|(c, _)| *c)
            .collect();
        for content in expired {
            let e = self.expected.remove(&content).expect("listed above");
            verdicts.push(Verdict {
                kind: VerdictKind::ShadowOnly,
                content,
                shadow_rule: Some(e.rule),
                shadow: e.to,
                incumbent: Vec::new(),
                first: "shadow",
            });
        }
        verdicts
    }

    /// The configuration the shadow decides on: `config` with every held content as it was
    /// before the incumbent changed it.
    pub fn view(&self, config: &SegmentConfig) -> SegmentConfig {
        if self.held.is_empty() {
            return config.clone();
        }
        let mut view = config.clone();
        for held in self.held.values() {
            for before in &held.before {
                if let Some(row) = view.segments.iter_mut().find(|s| s.dbid == before.dbid) {
                    *row = before.clone();
                }
            }
        }
        view
    }

    /// The decisions of a cycle that decided on [`Ledger::view`]: judges every held content,
    /// and opens (or keeps) an expectation for every other content the shadow would change.
    /// A content the shadow no longer would change drops its expectation without a verdict
    /// (the fault healed before either side acted).
    pub fn decided(&mut self, decisions: &[ShadowDecision], now: Instant) -> Vec<Verdict> {
        let mut verdicts = Vec::new();
        for d in decisions {
            let to: Vec<(Dbid, SegmentState)> = d.updates.iter().map(|u| (u.dbid, u.to)).collect();
            if let Some(held) = self.held.remove(&d.content) {
                let agrees =
                    same_states(&to, &held.changed) || promoted_before_our_check(d, &held.changed);
                verdicts.push(Verdict {
                    kind: if agrees {
                        VerdictKind::Agree
                    } else {
                        VerdictKind::IncumbentOnly
                    },
                    content: d.content,
                    shadow_rule: Some(d.rule),
                    shadow: to,
                    incumbent: held.changed,
                    first: "incumbent",
                });
                continue;
            }
            if to.is_empty() {
                self.expected.remove(&d.content);
                continue;
            }
            match self.expected.get_mut(&d.content) {
                Some(e) if e.to == to => {}
                _ => {
                    self.expected.insert(
                        d.content,
                        Expected {
                            rule: d.rule,
                            to,
                            since: now,
                        },
                    );
                }
            }
        }
        // A held content the cycle did not decide on (its probe never finished): judged as the
        // incumbent's alone once the window has passed.
        let window = self.window;
        let stale: Vec<ContentId> = self
            .held
            .iter()
            .filter(|(_, h)| now.saturating_duration_since(h.since) >= window)
            .map(|(c, _)| *c)
            .collect();
        for content in stale {
            let h = self.held.remove(&content).expect("listed above");
            verdicts.push(Verdict {
                kind: VerdictKind::IncumbentOnly,
                content,
                shadow_rule: None,
                shadow: Vec::new(),
                incumbent: h.changed,
                first: "incumbent",
            });
        }
        verdicts
    }

    /// Contents waiting for the other side: (expected by the shadow, held from the incumbent).
    pub fn pending(&self) -> (usize, usize) {
        (self.expected.len(), self.held.len())
    }
}

/// New states of rows, by dbid.
type States = Vec<(Dbid, SegmentState)>;

/// One content's change between two reads: the rows before, and the new states of the rows
/// that changed.
struct Change {
    content: ContentId,
    before: Vec<Segment>,
    changed: States,
}

/// Per content whose rows changed state. Rows added or removed are not transitions of the
/// decision table and are ignored.
fn changes(before: &SegmentConfig, after: &SegmentConfig) -> Vec<Change> {
    let mut by_content: BTreeMap<ContentId, States> = BTreeMap::new();
    for new in &after.segments {
        let Some(old) = before.by_dbid(new.dbid) else {
            continue;
        };
        if old.state() != new.state() {
            by_content
                .entry(new.content)
                .or_default()
                .push((new.dbid, new.state()));
        }
    }
    by_content
        .into_iter()
        .map(|(content, changed)| Change {
            content,
            before: before
                .segments
                .iter()
                .filter(|s| s.content == content)
                .cloned()
                .collect(),
            changed,
        })
        .collect()
}

fn same_states(a: &[(Dbid, SegmentState)], b: &[(Dbid, SegmentState)]) -> bool {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort_by_key(|x| x.0);
    b.sort_by_key(|x| x.0);
    a == b
}

fn merge(into: &mut Vec<(Dbid, SegmentState)>, more: Vec<(Dbid, SegmentState)>) {
    for (dbid, state) in more {
        match into.iter_mut().find(|(d, _)| *d == dbid) {
            Some(slot) => slot.1 = state,
            None => into.push((dbid, state)),
        }
    }
}

/// The shadow decided a failover on the held (pre-change) rows, and its check before acting
/// found the mirror answering as a primary: because the incumbent had already promoted it.
fn promoted_before_our_check(d: &ShadowDecision, changed: &[(Dbid, SegmentState)]) -> bool {
    d.rule == Rule::FailoverUnconfirmed
        && d.mirror_check == Some(MirrorCheck::AnswersAsPrimary)
        && changed
            .iter()
            .any(|(dbid, s)| *dbid == d.mirror_dbid && s.role == Role::Primary)
}

#[cfg(test)]
mod tests;
