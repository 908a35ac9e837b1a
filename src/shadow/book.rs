//! The shadow's record: the ledger of open expectations, the verdicts so far (counted, and the
//! most recent kept for `ftsctl shadow`), each logged as it is reached.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::core::shadow::{Ledger, ShadowDecision, Verdict, VerdictKind};
use crate::engine::runner::CycleObserver;
use crate::engine::CycleReport;
use crate::model::SegmentConfig;

/// Verdicts kept for `ftsctl shadow`.
const RECENT: usize = 100;

/// A verdict and when it was reached.
#[derive(Debug, Clone, Serialize)]
pub struct Recorded {
    #[serde(with = "humantime_serde")]
    pub at: SystemTime,
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// What `ftsctl shadow` shows.
#[derive(Debug, Clone, Serialize)]
pub struct ShadowSummary {
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Verdicts so far, by kind (every kind listed).
    pub counts: BTreeMap<VerdictKind, u64>,
    /// Contents the shadow would change and is waiting on the incumbent for.
    pub expecting: usize,
    /// Contents the incumbent changed that the shadow has yet to judge.
    pub judging: usize,
    /// The most recent verdicts, oldest first.
    pub recent: Vec<Recorded>,
}

struct Record {
    counts: BTreeMap<VerdictKind, u64>,
    recent: VecDeque<Recorded>,
}

/// Shared by the shadow's catalog (every read) and its probe loop (every cycle's decisions).
pub struct ShadowBook {
    window: Duration,
    ledger: Mutex<Ledger>,
    record: Mutex<Record>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ShadowBook {
    pub fn new(window: Duration) -> Self {
        ShadowBook {
            window,
            ledger: Mutex::new(Ledger::new(window)),
            record: Mutex::new(Record {
                counts: VerdictKind::ALL.iter().map(|k| (*k, 0)).collect(),
                recent: VecDeque::with_capacity(RECENT),
            }),
        }
    }

    /// A configuration just read: records the verdicts it settles and returns what the shadow
    /// decides on (held contents as they were before the incumbent changed them).
    pub fn observed(&self, config: &SegmentConfig) -> SegmentConfig {
        let (verdicts, view) = {
            let mut ledger = lock(&self.ledger);
            let verdicts = ledger.observe(config, Instant::now());
            (verdicts, ledger.view(config))
        };
        self.record(verdicts);
        view
    }

    fn record(&self, verdicts: Vec<Verdict>) {
        if verdicts.is_empty() {
            return;
        }
        let mut record = lock(&self.record);
        for v in verdicts {
            log(&v);
            *record.counts.entry(v.kind).or_default() += 1;
            if record.recent.len() == RECENT {
                record.recent.pop_front();
            }
            record.recent.push_back(Recorded {
                at: SystemTime::now(),
                verdict: v,
            });
        }
    }

    /// Verdict counts by kind, for the metrics endpoint.
    pub fn counts(&self) -> Vec<(&'static str, u64)> {
        lock(&self.record)
            .counts
            .iter()
            .map(|(k, n)| (k.as_str(), *n))
            .collect()
    }

    pub fn summary(&self) -> ShadowSummary {
        let (expecting, judging) = lock(&self.ledger).pending();
        let record = lock(&self.record);
        ShadowSummary {
            window: self.window,
            counts: record.counts.clone(),
            expecting,
            judging,
            recent: record.recent.iter().cloned().collect(),
        }
    }
}

/// `dbid 2 -> m/d/n, dbid 4 -> p/u/n`, or `nothing`.
pub fn describe(s: &[(i16, crate::model::SegmentState)]) -> String {
    let parts: Vec<String> = s
        .iter()
        .map(|(d, st)| format!("dbid {d} -> {st}"))
        .collect();
    if parts.is_empty() {
        "nothing".into()
    } else {
        parts.join(", ")
    }
}

fn log(v: &Verdict) {
    let rule = v.shadow_rule.map(|r| r.as_str()).unwrap_or("none");
    let (shadow, incumbent) = (describe(&v.shadow), describe(&v.incumbent));
    match v.kind {
        VerdictKind::Agree => tracing::info!(
            content = v.content,
            verdict = v.kind.as_str(),
            first = v.first,
            rule,
            %incumbent,
            "shadow agrees with the incumbent FTS"
        ),
        _ => tracing::warn!(
            content = v.content,
            verdict = v.kind.as_str(),
            first = v.first,
            rule,
            %shadow,
            %incumbent,
            "shadow diverges from the incumbent FTS"
        ),
    }
}

impl CycleObserver for ShadowBook {
    fn cycle_finished(&self, report: &CycleReport) {
        let decisions: Vec<ShadowDecision> = report
            .reports
            .iter()
            .map(|r| ShadowDecision {
                content: r.content,
                rule: r.rule,
                updates: r.intended.clone(),
                mirror_dbid: r.mirror_dbid,
                mirror_check: r.mirror_check,
            })
            .collect();
        let verdicts = lock(&self.ledger).decided(&decisions, Instant::now());
        self.record(verdicts);
    }
}
