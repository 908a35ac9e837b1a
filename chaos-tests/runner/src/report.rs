//! The run report: `report.md` (scenarios, seeds, fault times, latencies, invariant results),
//! `timeline.svg` (one lane per scenario: faults, heals, catalog transitions, leader terms) and
//! `results.json` (everything, for tooling).

use std::fmt::Write as _;

use super::invariants::Status;
use super::run::{Outcome, RunResult, ScenarioResult};

fn outcome_text(o: &Outcome) -> String {
    match o {
        Outcome::Passed => "PASS".into(),
        Outcome::Failed => "FAIL (invariant violated)".into(),
        Outcome::HarnessError(e) => format!("FAIL (harness: {e})"),
        Outcome::NotRun(why) => format!("NOT RUN — {why}"),
    }
}

fn status_text(s: Status) -> &'static str {
    match s {
        Status::Pass => "pass",
        Status::Fail => "**FAIL**",
        Status::NotApplicable => "n/a",
    }
}

/// (min, median, max) of the values.
pub fn stats(mut v: Vec<i64>) -> Option<(i64, i64, i64)> {
    if v.is_empty() {
        return None;
    }
    v.sort();
    Some((v[0], v[v.len() / 2], v[v.len() - 1]))
}

fn stat_line(name: &str, v: Vec<i64>) -> String {
    let n = v.len();
    match stats(v) {
        Some((a, b, c)) => format!("| {name} | {n} | {a} | {b} | {c} |\n"),
        None => format!("| {name} | 0 | – | – | – |\n"),
    }
}

fn opt(v: Option<i64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_else(|| "–".into())
}

pub fn markdown(r: &RunResult) -> String {
    let mut md = String::new();
    let verdict = if r.failed() { "FAILED" } else { "PASSED" };
    let _ = writeln!(md, "# Chaos run: {verdict}\n");
    let _ = writeln!(
        md,
        "Mode **{}**, seeds {:?}, {} scenario runs, {:.0} s. Reproduce one scenario with \
         `chaos-tests/run --scenario NAME --seed SEED`.\n",
        r.mode,
        r.seeds,
        r.scenarios.len(),
        (r.ended_at - r.started_at) as f64 / 1000.0
    );
    if let Some(why) = &r.pg_driver_missing {
        let _ = writeln!(
            md,
            "> **Failure notice:** the real-PostgreSQL-pair scenarios did not run: {why}\n"
        );
    }
    md.push_str("| scenario | seed | cluster | result |\n|---|---|---|---|\n");
    for s in &r.scenarios {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            s.name,
            s.seed,
            s.cluster,
            outcome_text(&s.outcome)
        );
    }
    md.push_str(
        "\n## Latencies (ms)\n\n| measure | n | min | median | max |\n|---|---|---|---|---|\n",
    );
    let all = || r.scenarios.iter().flat_map(|s| s.measures.iter());
    md.push_str(&stat_line(
        "detection (fault → first catalog transition)",
        all().filter_map(|m| m.detection_ms).collect(),
    ));
    md.push_str(&stat_line(
        "promotion (allowed → mirror promoted in catalog)",
        all().filter_map(|m| m.promotion_ms).collect(),
    ));
    md.push_str(&stat_line(
        "failover (allowed → new primary acting on the segments)",
        all().filter_map(|m| m.failover_ms).collect(),
    ));
    md.push_str(&stat_line(
        "leader takeover (leader fault → next took office)",
        all().filter_map(|m| m.takeover_ms).collect(),
    ));
    md.push_str(&stat_line(
        "coordinator promotion (coordinator lost → standby recorded promoted)",
        all().filter_map(|m| m.coord_promotion_ms).collect(),
    ));
    md.push_str(&stat_line(
        "coordinator write (coordinator lost → first write through the VIP on the new one)",
        all().filter_map(|m| m.coord_write_ms).collect(),
    ));
    md.push_str("\n## Invariants\n\n| invariant | pass | fail | n/a |\n|---|---|---|---|\n");
    let mut names: Vec<&str> = Vec::new();
    for s in &r.scenarios {
        for v in &s.verdicts {
            if !names.contains(&v.name) {
                names.push(v.name);
            }
        }
    }
    for name in names {
        let count = |st: Status| {
            r.scenarios
                .iter()
                .flat_map(|s| s.verdicts.iter())
                .filter(|v| v.name == name && v.status == st)
                .count()
        };
        let _ = writeln!(
            md,
            "| {name} | {} | {} | {} |",
            count(Status::Pass),
            count(Status::Fail),
            count(Status::NotApplicable)
        );
    }
    for v in &r.workload {
        let _ = writeln!(
            md,
            "| {} (whole run, {} acknowledged writes, {} unacknowledged) | {} | | |",
            v.name,
            r.workload_acks,
            r.workload_errors,
            status_text(v.status)
        );
    }
    md.push_str("\nTimeline: [timeline.svg](timeline.svg)\n\n## Scenarios\n");
    for s in &r.scenarios {
        scenario_section(&mut md, s);
    }
    md
}

fn scenario_section(md: &mut String, s: &ScenarioResult) {
    let _ = writeln!(
        md,
        "\n### {} (seed {}) — {}\n\n{}\n",
        s.name,
        s.seed,
        outcome_text(&s.outcome),
        s.about
    );
    if s.faults.is_empty() {
        return;
    }
    md.push_str("| fault | at (ms) | healed (ms) | detection | promotion | failover | takeover | coordinator promotion | first write via VIP |\n|---|---|---|---|---|---|---|---|---|\n");
    for (f, m) in s.faults.iter().zip(&s.measures) {
        let _ = writeln!(
            md,
            "| {} | +{} | {} | {} | {} | {} | {} | {} | {} |",
            f.what,
            f.at - s.started_at,
            f.healed_at
                .map(|h| format!("+{}", h - s.started_at))
                .unwrap_or_else(|| "–".into()),
            opt(m.detection_ms),
            opt(m.promotion_ms),
            opt(m.failover_ms),
            opt(m.takeover_ms),
            opt(m.coord_promotion_ms),
            opt(m.coord_write_ms)
        );
    }
    md.push('\n');
    for v in &s.verdicts {
        let _ = writeln!(
            md,
            "- {}: {} — {}",
            v.name,
            status_text(v.status),
            v.details.join("; ")
        );
    }
    if !s.terms.is_empty() {
        let terms: Vec<String> = s
            .terms
            .iter()
            .map(|t| {
                format!(
                    "{} epoch {} at +{} ms",
                    t.instance,
                    t.epoch,
                    t.at - s.started_at
                )
            })
            .collect();
        let _ = writeln!(md, "- leader terms: {}", terms.join(", "));
    }
    for n in &s.notes {
        let _ = writeln!(md, "- note: {n}");
    }
}

/// One lane per scenario; x is time since the scenario started.
pub fn svg(r: &RunResult) -> String {
    let lanes: Vec<&ScenarioResult> = r
        .scenarios
        .iter()
        .filter(|s| !s.faults.is_empty())
        .collect();
    let span = lanes
        .iter()
        .map(|s| s.ended_at - s.started_at)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let (left, width, lane_h) = (190.0, 900.0, 34.0);
    let height = 60.0 + lane_h * lanes.len() as f64;
    let x = |ms: i64| left + width * (ms.max(0) as f64 / span).min(1.0);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{height}" font-family="sans-serif" font-size="11">"#,
        left + width + 20.0
    );
    let _ = writeln!(
        out,
        r#"<text x="10" y="16">Chaos timeline ({} mode): red = fault, green = healed, blue = catalog transition, purple = leader took office</text>"#,
        r.mode
    );
    let mut t = 0;
    while (t as f64) <= span {
        let _ = writeln!(
            out,
            r##"<line x1="{0}" y1="26" x2="{0}" y2="{1}" stroke="#ddd"/><text x="{0}" y="{2}" fill="#666">{3}s</text>"##,
            x(t),
            height - 20.0,
            height - 6.0,
            t / 1000
        );
        t += 5000;
    }
    for (i, s) in lanes.iter().enumerate() {
        let y = 40.0 + lane_h * i as f64;
        let colour = match s.outcome {
            Outcome::Passed => "#000",
            _ => "#c00",
        };
        let _ = writeln!(
            out,
            r#"<text x="10" y="{}" fill="{colour}">{} #{}</text>"#,
            y + 12.0,
            s.name,
            s.seed
        );
        let _ = writeln!(
            out,
            r##"<line x1="{left}" y1="{0}" x2="{1}" y2="{0}" stroke="#999"/>"##,
            y + 8.0,
            left + width
        );
        for f in &s.faults {
            let fx = x(f.at - s.started_at);
            let _ = writeln!(
                out,
                r##"<rect x="{}" y="{y}" width="3" height="16" fill="#d22"><title>{}</title></rect>"##,
                fx - 1.5,
                escape(&f.what)
            );
            if let Some(h) = f.healed_at {
                let hx = x(h - s.started_at);
                let _ = writeln!(
                    out,
                    r##"<line x1="{fx}" y1="{0}" x2="{hx}" y2="{0}" stroke="#d22" stroke-width="2" opacity="0.4"/><rect x="{1}" y="{y}" width="3" height="16" fill="#2a2"/>"##,
                    y + 8.0,
                    hx - 1.5
                );
            }
        }
        for h in &s.history {
            let hx = x(h.time_ms() - s.started_at);
            let _ = writeln!(
                out,
                r##"<rect x="{}" y="{}" width="2" height="10" fill="#24c"><title>{}</title></rect>"##,
                hx - 1.0,
                y + 3.0,
                escape(&h.desc)
            );
        }
        for t in &s.terms {
            let tx = x(t.at - s.started_at);
            let _ = writeln!(
                out,
                r##"<circle cx="{tx}" cy="{}" r="4" fill="#829"><title>{} took office, epoch {}</title></circle>"##,
                y + 22.0,
                t.instance,
                t.epoch
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Expect, Fault};
    use crate::run::Measure;

    fn result() -> RunResult {
        RunResult {
            mode: "short".into(),
            seeds: vec![7],
            started_at: 0,
            ended_at: 30_000,
            scenarios: vec![ScenarioResult {
                name: "kill-primary".into(),
                about: "a primary dies".into(),
                seed: 7,
                cluster: "segsim".into(),
                outcome: Outcome::Failed,
                started_at: 1000,
                ended_at: 9000,
                faults: vec![Fault {
                    scenario: "kill-primary".into(),
                    what: "segsim primary dbid 2 <down>".into(),
                    content: Some(0),
                    at: 2000,
                    healed_at: None,
                    expect: Expect::Nothing,
                }],
                verdicts: vec![],
                measures: vec![Measure {
                    detection_ms: Some(1800),
                    ..Measure::default()
                }],
                notes: vec![],
                history: vec![],
                terms: vec![],
            }],
            workload: vec![],
            workload_acks: 0,
            workload_errors: 0,
            pg_driver_missing: Some("unknown key 'postgres'".into()),
        }
    }

    #[test]
    fn report_names_the_failure_the_seed_and_the_latency() {
        let r = result();
        let md = markdown(&r);
        assert!(md.starts_with("# Chaos run: FAILED"), "{md}");
        assert!(
            md.contains("| kill-primary | 7 | segsim | FAIL (invariant violated) |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| detection (fault → first catalog transition) | 1 | 1800 | 1800 | 1800 |"
            ),
            "{md}"
        );
        assert!(md.contains("Failure notice"), "{md}");
        let svg = svg(&r);
        assert!(svg.contains("&lt;down&gt;") && svg.ends_with("</svg>\n"));
    }

    #[test]
    fn stats_are_min_median_max() {
        assert_eq!(stats(vec![5, 1, 3]), Some((1, 3, 5)));
        assert_eq!(stats(vec![]), None);
    }
}
