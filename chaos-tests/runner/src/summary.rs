//! Several runs folded into one table: `fts-chaos summarize` reads the `results.json` of each
//! invocation (a full run over 20 seeds is ten invocations of two seeds) and gives, per
//! scenario, runs, passes, invariant violations and latency medians, and over everything the
//! write workload's totals. `docs/performance.md` is written from its output.
//!
//! It reads its own narrow view of `results.json` rather than [`crate::run::RunResult`]: the
//! verdicts hold `&'static str` names, the rest is much that a summary does not need, and a
//! file written by an older harness (no coordinator measures, say) must still be read.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::invariants::Status;
use super::report::stats;
use super::run::{Measure, Outcome};

/// What reading or parsing one `results.json` failed on, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a chaos results.json: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

#[derive(Debug, Deserialize)]
pub struct RunFile {
    pub seeds: Vec<u64>,
    pub scenarios: Vec<ScenarioRun>,
    #[serde(default)]
    pub workload: Vec<VerdictLine>,
    #[serde(default)]
    pub workload_acks: u64,
    #[serde(default)]
    pub workload_errors: u64,
}

#[derive(Debug, Deserialize)]
pub struct ScenarioRun {
    pub name: String,
    pub seed: u64,
    pub outcome: Outcome,
    #[serde(default)]
    pub verdicts: Vec<VerdictLine>,
    #[serde(default)]
    pub measures: Vec<Measure>,
}

#[derive(Debug, Deserialize)]
pub struct VerdictLine {
    pub name: String,
    pub status: Status,
    #[serde(default)]
    pub details: Vec<String>,
}

/// The latency columns, in table order, with how each is read off one fault's measures.
type Column = (&'static str, fn(&Measure) -> Option<i64>);
const COLUMNS: [Column; 6] = [
    ("detection", |m| m.detection_ms),
    ("promotion", |m| m.promotion_ms),
    ("failover", |m| m.failover_ms),
    ("takeover", |m| m.takeover_ms),
    ("coordinator promotion", |m| m.coord_promotion_ms),
    ("first write via VIP", |m| m.coord_write_ms),
];

/// The verdicts whose pass note counts writes: `"<n> checked"`.
const IN_SYNC_WRITES: &str = "no acknowledged write lost on in-sync pairs";
const VIP_WRITES: &str = "no acknowledged write through the VIP lost";

/// Reads `path`, or `path/results.json` when it is a folder.
pub fn read(path: &Path) -> Result<RunFile, Error> {
    let file = if path.is_dir() {
        path.join("results.json")
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read(&file).map_err(|source| Error::Read {
        path: file.clone(),
        source,
    })?;
    serde_json::from_slice(&text).map_err(|source| Error::Parse { path: file, source })
}

#[derive(Debug, Default)]
struct ScenarioRow {
    name: String,
    runs: usize,
    passed: usize,
    violations: usize,
    latencies: [Vec<i64>; COLUMNS.len()],
}

/// Everything the files hold, folded.
#[derive(Debug, Default)]
pub struct Summary {
    rows: Vec<ScenarioRow>,
    seeds: Vec<u64>,
    acks: u64,
    unacknowledged: u64,
    in_sync_checked: u64,
    vip_checked: u64,
    /// A write verdict failed: some acknowledged write is missing.
    writes_lost: bool,
    /// Every failed verdict and every run that did not pass, one line each.
    failures: Vec<String>,
}

impl Summary {
    pub fn new(files: &[RunFile]) -> Summary {
        let mut s = Summary::default();
        for f in files {
            s.seeds.extend(&f.seeds);
            s.acks += f.workload_acks;
            s.unacknowledged += f.workload_errors;
            for v in &f.workload {
                s.count_writes(v, "whole run");
            }
            for run in &f.scenarios {
                s.add(run);
            }
        }
        s.seeds.sort_unstable();
        s.seeds.dedup();
        s
    }

    fn add(&mut self, run: &ScenarioRun) {
        let at = match self.rows.iter().position(|r| r.name == run.name) {
            Some(i) => i,
            None => {
                self.rows.push(ScenarioRow {
                    name: run.name.clone(),
                    ..ScenarioRow::default()
                });
                self.rows.len() - 1
            }
        };
        let row = &mut self.rows[at];
        row.runs += 1;
        let whose = format!("{} seed {}", run.name, run.seed);
        match &run.outcome {
            Outcome::Passed => row.passed += 1,
            Outcome::Failed => {}
            Outcome::HarnessError(why) => self.failures.push(format!("{whose}: harness: {why}")),
            Outcome::NotRun(why) => self.failures.push(format!("{whose}: not run: {why}")),
        }
        for m in &run.measures {
            for (i, (_, read)) in COLUMNS.iter().enumerate() {
                row.latencies[i].extend(read(m));
            }
        }
        for v in &run.verdicts {
            if v.status == Status::Fail {
                self.rows[at].violations += 1;
            }
            self.count_writes(v, &whose);
        }
    }

    /// Adds a write verdict's count, and records any failed verdict with where it came from.
    fn count_writes(&mut self, v: &VerdictLine, whose: &str) {
        let is_writes = matches!(v.name.as_str(), IN_SYNC_WRITES | VIP_WRITES);
        if v.status == Status::Fail {
            self.writes_lost |= is_writes;
            self.failures
                .push(format!("{whose}: {}: {}", v.name, v.details.join("; ")));
            return;
        }
        let checked = v
            .details
            .first()
            .and_then(|d| d.strip_suffix(" checked"))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        match v.name.as_str() {
            IN_SYNC_WRITES => self.in_sync_checked += checked,
            VIP_WRITES => self.vip_checked += checked,
            _ => {}
        }
    }

    pub fn runs(&self) -> usize {
        self.rows.iter().map(|r| r.runs).sum()
    }

    /// True when every run passed and no verdict failed.
    pub fn passed(&self) -> bool {
        self.failures.is_empty() && self.rows.iter().all(|r| r.passed == r.runs)
    }

    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let passed: usize = self.rows.iter().map(|r| r.passed).sum();
        let violations: usize = self.rows.iter().map(|r| r.violations).sum();
        let _ = writeln!(
            md,
            "{} scenarios × seeds {} = **{} runs, {passed} passed, {violations} violations**. \
             Write workload on the real PostgreSQL pairs: **{} acknowledged writes** ({} of them \
             acknowledged while their pair was in sync, the ones promised to survive), {} not \
             acknowledged. Through the coordinator's VIP: **{} acknowledged writes**. Writes \
             lost: **{}**.\n",
            self.rows.len(),
            seed_ranges(&self.seeds),
            self.runs(),
            self.acks,
            self.in_sync_checked,
            self.unacknowledged,
            self.vip_checked,
            if self.writes_lost {
                "see the failures below"
            } else {
                "0"
            }
        );
        md.push_str("| scenario | runs | passed | violations |");
        for (name, _) in COLUMNS {
            let _ = write!(md, " {name} |");
        }
        md.push_str("\n|---|---:|---:|---:|");
        md.push_str(&"---:|".repeat(COLUMNS.len()));
        md.push('\n');
        for r in &self.rows {
            let _ = write!(
                md,
                "| {} | {} | {} | {} |",
                r.name, r.runs, r.passed, r.violations
            );
            for v in &r.latencies {
                match stats(v.clone()) {
                    Some((_, median, _)) => {
                        let _ = write!(md, " {median} |");
                    }
                    None => md.push_str("  |"),
                }
            }
            md.push('\n');
        }
        md.push_str(
            "\nMedians in ms. Ranges (n, min / median / max, ms):\n\n\
             | scenario | measure | n | min | median | max |\n|---|---|---:|---:|---:|---:|\n",
        );
        for r in &self.rows {
            for (i, (name, _)) in COLUMNS.iter().enumerate() {
                if let Some((lo, median, hi)) = stats(r.latencies[i].clone()) {
                    let _ = writeln!(
                        md,
                        "| {} | {name} | {} | {lo} | {median} | {hi} |",
                        r.name,
                        r.latencies[i].len()
                    );
                }
            }
        }
        if !self.failures.is_empty() {
            md.push_str("\nFailures:\n\n");
            for f in &self.failures {
                let _ = writeln!(md, "- {f}");
            }
        }
        md
    }
}

/// `[3, 4, 5, 7]` → `3–5, 7`.
fn seed_ranges(seeds: &[u64]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < seeds.len() {
        let mut j = i;
        while j + 1 < seeds.len() && seeds[j + 1] == seeds[j] + 1 {
            j += 1;
        }
        parts.push(if j == i {
            seeds[i].to_string()
        } else {
            format!("{}–{}", seeds[i], seeds[j])
        });
        i = j + 1;
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Expect, Fault};
    use crate::invariants::Verdict;
    use crate::run::{RunResult, ScenarioResult};

    fn scenario(name: &str, seed: u64, outcome: Outcome, promotion: i64) -> ScenarioResult {
        ScenarioResult {
            name: name.into(),
            about: String::new(),
            seed,
            cluster: "pgpairs".into(),
            outcome,
            started_at: 0,
            ended_at: 1,
            faults: vec![Fault {
                scenario: name.into(),
                what: "kill".into(),
                content: Some(0),
                at: 0,
                healed_at: None,
                expect: Expect::Nothing,
            }],
            verdicts: vec![Verdict {
                name: VIP_WRITES,
                status: Status::Pass,
                details: vec!["7 checked".into()],
            }],
            measures: vec![Measure {
                promotion_ms: Some(promotion),
                ..Measure::default()
            }],
            notes: vec![],
            history: vec![],
            terms: vec![],
        }
    }

    fn file(seeds: Vec<u64>, scenarios: Vec<ScenarioResult>, in_sync: Verdict) -> RunFile {
        let written = RunResult {
            mode: "full".into(),
            seeds,
            started_at: 0,
            ended_at: 1,
            scenarios,
            workload: vec![in_sync],
            workload_acks: 100,
            workload_errors: 2,
            pg_driver_missing: None,
        };
        // Through JSON, as `fts-chaos run` writes it: the summary must read that very shape.
        serde_json::from_slice(&serde_json::to_vec(&written).unwrap()).unwrap()
    }

    fn in_sync(status: Status, detail: &str) -> Verdict {
        Verdict {
            name: IN_SYNC_WRITES,
            status,
            details: vec![detail.into()],
        }
    }

    #[test]
    fn runs_are_folded_per_scenario_with_medians_and_write_totals() {
        let a = file(
            vec![15, 16],
            vec![
                scenario("kill-primary", 15, Outcome::Passed, 900),
                scenario("kill-primary", 16, Outcome::Passed, 1100),
            ],
            in_sync(Status::Pass, "60 checked"),
        );
        let b = file(
            vec![17],
            vec![scenario("kill-primary", 17, Outcome::Passed, 1000)],
            in_sync(Status::Pass, "40 checked"),
        );
        let s = Summary::new(&[a, b]);
        assert!(s.passed());
        assert_eq!(s.runs(), 3);
        let md = s.markdown();
        assert!(
            md.contains("seeds 15–17 = **3 runs, 3 passed, 0 violations**"),
            "{md}"
        );
        assert!(
            md.contains("**200 acknowledged writes** (100 of them"),
            "{md}"
        );
        assert!(md.contains("VIP: **21 acknowledged writes**"), "{md}");
        assert!(md.contains("Writes lost: **0**"), "{md}");
        assert!(
            md.contains("| kill-primary | 3 | 3 | 0 |  | 1000 |"),
            "{md}"
        );
        assert!(
            md.contains("| kill-primary | promotion | 3 | 900 | 1000 | 1100 |"),
            "{md}"
        );
    }

    #[test]
    fn a_lost_write_or_a_harness_error_fails_the_summary_and_is_named() {
        let mut failed = scenario("pg-kill-primary", 3, Outcome::Failed, 5000);
        failed.verdicts.push(Verdict {
            name: "never two primaries",
            status: Status::Fail,
            details: vec!["content 0: dbid 2 and 5".into()],
        });
        let f = file(
            vec![3],
            vec![
                failed,
                scenario(
                    "kill-leader",
                    3,
                    Outcome::HarnessError("no leader".into()),
                    1,
                ),
            ],
            in_sync(Status::Fail, "content 1: 4 acknowledged writes lost"),
        );
        let s = Summary::new(&[f]);
        assert!(!s.passed());
        let md = s.markdown();
        assert!(md.contains("**2 runs, 0 passed, 1 violations**"), "{md}");
        assert!(
            md.contains("Writes lost: **see the failures below**"),
            "{md}"
        );
        assert!(
            md.contains("- whole run: no acknowledged write lost on in-sync pairs: content 1: 4"),
            "{md}"
        );
        assert!(
            md.contains("- pg-kill-primary seed 3: never two primaries: content 0"),
            "{md}"
        );
        assert!(
            md.contains("- kill-leader seed 3: harness: no leader"),
            "{md}"
        );
    }

    #[test]
    fn a_file_that_is_not_a_report_is_named_in_the_error() {
        let dir = std::env::temp_dir().join(format!("fts-chaos-summary-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("results.json"), b"{\"seeds\": 3}").unwrap();
        let err = read(&dir).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            err.contains("results.json is not a chaos results.json"),
            "{err}"
        );
        let missing = read(Path::new("/nonexistent/results.json")).unwrap_err();
        assert!(missing
            .to_string()
            .starts_with("cannot read /nonexistent/results.json"));
    }

    #[test]
    fn seeds_are_written_as_ranges() {
        assert_eq!(seed_ranges(&[3, 4, 5, 7, 9, 10]), "3–5, 7, 9–10");
        assert_eq!(seed_ranges(&[]), "");
    }
}
