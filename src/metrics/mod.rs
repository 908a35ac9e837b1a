//! Prometheus metrics, served as the text exposition format (version 0.0.4) on
//! `api.metrics_listen` at `/metrics`.
//!
//! A small hand-written registry rather than a client crate: ftsd has a dozen fixed families
//! whose label sets are known, so counters and histograms fit in a few maps behind one lock
//! each, and the encoder is short enough to review against the format. The integration test
//! parses the output with a real Prometheus text parser. Metric names are listed in
//! docs/api.md.

pub mod server;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::engine::runner::CycleObserver;
use crate::engine::{CycleReport, TransitionOutcome};

/// Probe latency buckets (seconds): from a fast LAN reply to the default 20 s timeout.
const PROBE_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 20.0,
];
/// Cycle duration buckets (seconds).
const CYCLE_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0];

/// A fixed-bucket histogram.
#[derive(Debug)]
struct Histogram {
    bounds: &'static [f64],
    /// Non-cumulative counts per bucket; the last slot is +Inf.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        let i = self
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }

    fn encode(&self, out: &mut String, name: &str) {
        let mut cumulative = 0;
        for (i, n) in self.counts.iter().enumerate() {
            cumulative += n;
            let le = match self.bounds.get(i) {
                Some(b) => format_float(*b),
                None => "+Inf".into(),
            };
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_sum {}", format_float(self.sum));
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

fn format_float(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else if v.is_nan() {
        "NaN".into()
    } else if v > 0.0 {
        "+Inf".into()
    } else {
        "-Inf".into()
    }
}

/// Escapes a label value (backslash, double quote, newline), as the format requires.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[derive(Debug)]
struct Inner {
    probe_latency: Histogram,
    cycle_duration: Histogram,
    probe_failures: BTreeMap<String, u64>,
    transitions: BTreeMap<String, u64>,
    messages: BTreeMap<(String, String), u64>,
    cycles: BTreeMap<String, u64>,
    hooks: BTreeMap<(String, String), u64>,
    /// Configuration reloads by result (`applied`, `refused`, `invalid`).
    config_reloads: BTreeMap<&'static str, u64>,
    /// Driver alarms by kind (`sync_names_mismatch`, `fenced` ...).
    alarms: BTreeMap<String, u64>,
    last_success: Option<SystemTime>,
    /// (role, status, mode) → rows, from the last cycle's catalog snapshot.
    segments: BTreeMap<(char, char, char), u64>,
    /// Contents refused for their shape (two primaries, extra or unreadable rows) in the last
    /// cycle.
    refused_contents: u64,
    /// Refusal episodes begun (alarms raised), by rule.
    refusal_alarms: BTreeMap<String, u64>,
    /// Contents whose last probe failed with a prober fault, in the last cycle.
    prober_fault_contents: u64,
    /// Whether the brake on correlated failures was engaged after the last cycle.
    brake_engaged: bool,
    /// Failovers the brake held (once per content and engagement).
    brake_held: u64,
}

/// State read at scrape time rather than counted.
#[derive(Debug, Clone, Default)]
pub struct Live {
    pub is_leader: bool,
    pub epoch: Option<i64>,
    pub paused: bool,
    /// Time since the last acknowledged lease keepalive, while this instance holds a lease.
    pub keepalive_age: Option<Duration>,
    /// etcd streams reopened after a failure, by stream (elected instances only).
    pub etcd_reconnects: Vec<(&'static str, u64)>,
    /// The coordinator pair's last round, when `[coordinator]` is configured.
    pub coordinator: Option<CoordinatorGauges>,
    /// Shadow mode's verdicts by kind (shadow instances only).
    pub shadow: Vec<(&'static str, u64)>,
    /// The second opinion's observation (`observe.mode` on).
    pub observation: Option<crate::engine::observe_only::ObservationCounts>,
}

/// The coordinator pair as this instance's last round saw it.
#[derive(Debug, Clone, Copy, Default)]
pub struct CoordinatorGauges {
    /// Servers of the pair that answered writable (exactly 1 is healthy).
    pub writable: u32,
    /// Hosts registered as holding the VIP; None when etcd could not be read.
    pub vip_holders: Option<u32>,
}

/// The registry: counted by the probe loop (as a `CycleObserver`) and the hook runner.
#[derive(Debug)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            inner: Mutex::new(Inner {
                probe_latency: Histogram::new(&PROBE_BUCKETS),
                cycle_duration: Histogram::new(&CYCLE_BUCKETS),
                probe_failures: BTreeMap::new(),
                transitions: BTreeMap::new(),
                messages: BTreeMap::new(),
                cycles: BTreeMap::new(),
                hooks: BTreeMap::new(),
                // Every result from the start, so a first `invalid` shows as an increase.
                config_reloads: [("applied", 0), ("invalid", 0), ("refused", 0)].into(),
                alarms: BTreeMap::new(),
                last_success: None,
                segments: BTreeMap::new(),
                refused_contents: 0,
                refusal_alarms: BTreeMap::new(),
                prober_fault_contents: 0,
                brake_engaged: false,
                brake_held: 0,
            }),
        }
    }
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one alarm episode that begins outside the probe cycle (the coordinator pair's).
    pub fn alarm_raised(&self, rule: &str) {
        *self.lock().refusal_alarms.entry(rule.into()).or_default() += 1;
    }

    /// Counts one hook run (`event` transition / leader_change; `result` ok / failed / timeout).
    pub fn hook_ran(&self, event: &str, result: &str) {
        *self
            .lock()
            .hooks
            .entry((event.into(), result.into()))
            .or_default() += 1;
    }

    /// Counts one configuration reload (`applied`, `refused` or `invalid`).
    pub fn config_reloaded(&self, result: &'static str) {
        *self.lock().config_reloads.entry(result).or_default() += 1;
    }

    /// The exposition text.
    pub fn render(&self, live: &Live) -> String {
        let g = self.lock();
        let mut out = String::with_capacity(4096);
        let family = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
        };
        family(
            &mut out,
            "ftsd_probe_duration_seconds",
            "histogram",
            "Time to probe one primary in a cycle, retries included.",
        );
        g.probe_latency
            .encode(&mut out, "ftsd_probe_duration_seconds");
        family(
            &mut out,
            "ftsd_probe_failures_total",
            "counter",
            "Primaries whose probe failed after all attempts, by failure kind.",
        );
        for (reason, n) in &g.probe_failures {
            let _ = writeln!(
                out,
                "ftsd_probe_failures_total{{reason=\"{}\"}} {n}",
                escape(reason)
            );
        }
        family(
            &mut out,
            "ftsd_transitions_total",
            "counter",
            "Catalog transitions applied by this instance, by decision rule.",
        );
        for (kind, n) in &g.transitions {
            let _ = writeln!(
                out,
                "ftsd_transitions_total{{kind=\"{}\"}} {n}",
                escape(kind)
            );
        }
        family(
            &mut out,
            "ftsd_messages_total",
            "counter",
            "PROMOTE / SYNCREP_OFF messages sent to segments, by type and result.",
        );
        for ((kind, result), n) in &g.messages {
            let _ = writeln!(
                out,
                "ftsd_messages_total{{type=\"{}\",result=\"{}\"}} {n}",
                escape(kind),
                escape(result)
            );
        }
        family(
            &mut out,
            "ftsd_cycles_total",
            "counter",
            "Probe cycles run, by result (ok, paused, error).",
        );
        for (result, n) in &g.cycles {
            let _ = writeln!(
                out,
                "ftsd_cycles_total{{result=\"{}\"}} {n}",
                escape(result)
            );
        }
        family(
            &mut out,
            "ftsd_cycle_duration_seconds",
            "histogram",
            "Duration of completed probe cycles.",
        );
        g.cycle_duration
            .encode(&mut out, "ftsd_cycle_duration_seconds");
        family(
            &mut out,
            "ftsd_last_successful_cycle_timestamp_seconds",
            "gauge",
            "Unix time at which the last completed cycle started (0: none yet).",
        );
        let last = g
            .last_success
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let _ = writeln!(
            out,
            "ftsd_last_successful_cycle_timestamp_seconds {}",
            format_float(last)
        );
        family(
            &mut out,
            "ftsd_hook_runs_total",
            "counter",
            "Hook commands run, by event and result (ok, failed, timeout).",
        );
        for ((event, result), n) in &g.hooks {
            let _ = writeln!(
                out,
                "ftsd_hook_runs_total{{event=\"{}\",result=\"{}\"}} {n}",
                escape(event),
                escape(result)
            );
        }
        family(
            &mut out,
            "ftsd_config_reloads_total",
            "counter",
            "Configuration reloads (SIGHUP), by result: applied, refused (a changed key needs a restart; the rest applied), invalid (the file failed validation; nothing applied).",
        );
        for (result, n) in &g.config_reloads {
            let _ = writeln!(out, "ftsd_config_reloads_total{{result=\"{result}\"}} {n}");
        }
        family(
            &mut out,
            "ftsd_driver_alarms_total",
            "counter",
            "Alarms raised by the segment driver outside the decision table, by kind (sync_names_mismatch, writable_demoted_primary, fenced, fence_failed, fence_command_failed); each once per episode.",
        );
        for (kind, n) in &g.alarms {
            let _ = writeln!(
                out,
                "ftsd_driver_alarms_total{{kind=\"{}\"}} {n}",
                escape(kind)
            );
        }
        family(
            &mut out,
            "ftsd_segments",
            "gauge",
            "Rows of gp_segment_configuration by role, status and mode, as of this instance's last cycle.",
        );
        for ((role, status, mode), n) in &g.segments {
            let _ = writeln!(
                out,
                "ftsd_segments{{role=\"{role}\",status=\"{status}\",mode=\"{mode}\"}} {n}"
            );
        }
        family(
            &mut out,
            "ftsd_refused_contents",
            "gauge",
            "Contents left alone in the last cycle because their catalog rows cannot form a pair (two primaries, more than two rows, an unreadable row).",
        );
        let _ = writeln!(out, "ftsd_refused_contents {}", g.refused_contents);
        family(
            &mut out,
            "ftsd_alarms_total",
            "counter",
            "Refusal episodes begun, by rule: prober_fault (a probe failed on this observer's side: credentials, privileges, DNS, its own network), failover_unconfirmed (the mirror did not answer before a failover), double_fault, role_conflict, bad_shape.",
        );
        for (rule, n) in &g.refusal_alarms {
            let _ = writeln!(out, "ftsd_alarms_total{{rule=\"{}\"}} {n}", escape(rule));
        }
        family(
            &mut out,
            "ftsd_prober_fault_contents",
            "gauge",
            "Contents whose primary this instance could not probe for a reason on its own side in the last cycle (never counted as segment loss).",
        );
        let _ = writeln!(
            out,
            "ftsd_prober_fault_contents {}",
            g.prober_fault_contents
        );
        family(
            &mut out,
            "ftsd_brake_engaged",
            "gauge",
            "1 while the brake on correlated failures holds failovers (failovers within one window would span more segment hosts than brake.max_hosts); only `ftsctl brake release` ends it. As of this instance's last cycle.",
        );
        let _ = writeln!(out, "ftsd_brake_engaged {}", u8::from(g.brake_engaged));
        family(
            &mut out,
            "ftsd_brake_held_failovers_total",
            "counter",
            "Failovers the brake held, counted once per content and engagement.",
        );
        let _ = writeln!(out, "ftsd_brake_held_failovers_total {}", g.brake_held);
        family(
            &mut out,
            "ftsd_is_leader",
            "gauge",
            "1 while this instance holds office.",
        );
        let _ = writeln!(out, "ftsd_is_leader {}", live.is_leader as u8);
        family(
            &mut out,
            "ftsd_epoch",
            "gauge",
            "The epoch this instance holds (0 when not leading).",
        );
        let _ = writeln!(out, "ftsd_epoch {}", live.epoch.unwrap_or(0));
        family(
            &mut out,
            "ftsd_paused",
            "gauge",
            "1 while the cluster is in maintenance mode (ftsctl pause).",
        );
        let _ = writeln!(out, "ftsd_paused {}", live.paused as u8);
        if !live.etcd_reconnects.is_empty() {
            family(
                &mut out,
                "ftsd_etcd_reconnects_total",
                "counter",
                "etcd streams re-established after a failure, by stream (session, keepalive, pause_watch).",
            );
            for (stream, n) in &live.etcd_reconnects {
                let _ = writeln!(out, "ftsd_etcd_reconnects_total{{stream=\"{stream}\"}} {n}");
            }
        }
        if let Some(c) = &live.coordinator {
            family(
                &mut out,
                "ftsd_coordinator_writable",
                "gauge",
                "Servers of the coordinator pair that accepted writes in this instance's last round; exactly 1 is healthy (2: split brain, 0: the cluster cannot write).",
            );
            let _ = writeln!(out, "ftsd_coordinator_writable {}", c.writable);
            if let Some(n) = c.vip_holders {
                family(
                    &mut out,
                    "ftsd_vip_holders",
                    "gauge",
                    "Hosts whose ftsd vip-agent holds the coordinator's client-facing address (registered in etcd); exactly 1 is healthy.",
                );
                let _ = writeln!(out, "ftsd_vip_holders {n}");
            }
        }
        if !live.shadow.is_empty() {
            family(
                &mut out,
                "ftsd_shadow_transitions_total",
                "counter",
                "Shadow mode: transitions judged against the incumbent FTS, by verdict (agree, incumbent_only, shadow_only, different).",
            );
            for (verdict, n) in &live.shadow {
                let _ = writeln!(
                    out,
                    "ftsd_shadow_transitions_total{{verdict=\"{verdict}\"}} {n}"
                );
            }
        }
        if let Some(o) = &live.observation {
            family(
                &mut out,
                "ftsd_observation_rounds_total",
                "counter",
                "Observation rounds this instance ran as a follower (observe.mode = \"continuous\"): one PROBE of every primary each.",
            );
            let _ = writeln!(out, "ftsd_observation_rounds_total {}", o.rounds);
            family(
                &mut out,
                "ftsd_observation_probes_total",
                "counter",
                "PROBE exchanges (one primary, its whole retry budget) this instance made as an observer, by trigger: round (a continuous observation round), confirm (to answer the leader's ConfirmDown without an observation of its own).",
            );
            let _ = writeln!(
                out,
                "ftsd_observation_probes_total{{trigger=\"round\"}} {}",
                o.round_probes
            );
            let _ = writeln!(
                out,
                "ftsd_observation_probes_total{{trigger=\"confirm\"}} {}",
                o.confirm_probes
            );
        }
        if let Some(age) = live.keepalive_age {
            family(
                &mut out,
                "ftsd_etcd_keepalive_age_seconds",
                "gauge",
                "Time since the last acknowledged etcd lease keepalive (only while leading).",
            );
            let _ = writeln!(
                out,
                "ftsd_etcd_keepalive_age_seconds {}",
                format_float(age.as_secs_f64())
            );
        }
        out
    }
}

impl CycleObserver for Metrics {
    fn cycle_finished(&self, report: &CycleReport) {
        let mut g = self.lock();
        for p in &report.reports {
            g.probe_latency.observe(p.probe_ms as f64 / 1000.0);
            if let crate::core::ProbeOutcome::Failed { kind, .. } = &p.outcome {
                *g.probe_failures.entry(kind.to_string()).or_default() += 1;
            }
            if p.episode_began {
                *g.refusal_alarms.entry(p.rule.to_string()).or_default() += 1;
                if p.rule == crate::core::Rule::BrakeHeld {
                    g.brake_held += 1;
                }
            }
            if p.transition == Some(TransitionOutcome::Applied) {
                *g.transitions.entry(p.rule.to_string()).or_default() += 1;
            }
            for a in &p.alarms {
                *g.alarms.entry(a.kind.as_str().into()).or_default() += 1;
            }
            if let Some(msg) = &p.message {
                *g.messages
                    .entry((msg.kind.to_string(), msg.result.label().into()))
                    .or_default() += 1;
            }
        }
        g.cycle_duration.observe(report.duration.as_secs_f64());
        let result = if report.paused { "paused" } else { "ok" };
        *g.cycles.entry(result.into()).or_default() += 1;
        g.last_success = Some(report.started_at);
        g.refused_contents = report.refused_contents.len() as u64;
        if let Some(b) = &report.brake {
            g.brake_engaged = b.engaged;
        }
        g.prober_fault_contents = report
            .reports
            .iter()
            .filter(|p| p.rule == crate::core::Rule::ProberFault)
            .count() as u64;
        g.segments.clear();
        for s in &report.config.segments {
            *g.segments
                .entry((s.role.as_char(), s.status.as_char(), s.mode.as_char()))
                .or_default() += 1;
        }
    }

    fn cycle_failed(&self, _error: &str) {
        *self.lock().cycles.entry("error".into()).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_escapes_labels() {
        let m = Metrics::default();
        {
            let mut g = m.lock();
            g.probe_latency.observe(0.002);
            g.probe_latency.observe(30.0);
            g.probe_failures.insert("a\"b\\c\nd".into(), 1);
        }
        let text = m.render(&Live::default());
        assert!(text.contains("ftsd_probe_duration_seconds_bucket{le=\"0.001\"} 0\n"));
        assert!(text.contains("ftsd_probe_duration_seconds_bucket{le=\"0.0025\"} 1\n"));
        assert!(text.contains("ftsd_probe_duration_seconds_bucket{le=\"20\"} 1\n"));
        assert!(text.contains("ftsd_probe_duration_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("ftsd_probe_duration_seconds_count 2\n"));
        assert!(text.contains(r#"reason="a\"b\\c\nd""#), "{text}");
    }

    #[test]
    fn refused_contents_and_typed_outcomes_are_counted() {
        use crate::core::{ProbeOutcome, Rule};
        use crate::engine::{MessageOutcome, MessageResult, PairReport};
        use crate::model::BadContent;
        use crate::wire::{MessageType, ProbeReply};
        let pair = |transition, result| PairReport {
            content: 0,
            primary_dbid: 2,
            mirror_dbid: 5,
            rule: Rule::Failover,
            outcome: ProbeOutcome::Replied {
                reply: ProbeReply::default(),
            },
            attempts: 1,
            probe_ms: 1,
            reply_us: None,
            transition: Some(transition),
            message: Some(MessageOutcome {
                kind: MessageType::Promote,
                result,
            }),
            episode_began: false,
            refusal: None,
            mirror_check: None,
            epoch: None,
            updates: Vec::new(),
            intended: Vec::new(),
            alarms: vec![crate::driver::DriverAlarm {
                kind: crate::driver::AlarmKind::Fenced,
                content: 0,
                dbid: 2,
                message: "fenced".into(),
            }],
        };
        let report = CycleReport {
            started_at: SystemTime::now(),
            duration: Duration::from_millis(1),
            pairs: 2,
            skipped: 0,
            transitions_applied: 1,
            transitions_failed: 0,
            messages_sent: 1,
            messages_failed: 0,
            fenced: false,
            paused: false,
            config: Default::default(),
            rules: BTreeMap::new(),
            refused_contents: vec![BadContent {
                content: 1,
                reason: "content 1 has 2 primaries".into(),
            }],
            reports: vec![
                pair(TransitionOutcome::Applied, MessageResult::Delivered),
                pair(
                    TransitionOutcome::Failed("stale".into()),
                    MessageResult::NotSent("no authority".into()),
                ),
            ],
            brake: Some(crate::engine::BrakeSummary {
                engaged: true,
                ..Default::default()
            }),
        };
        let m = Metrics::default();
        m.cycle_finished(&report);
        let text = m.render(&Live::default());
        assert!(text.contains("ftsd_refused_contents 1\n"), "{text}");
        assert!(
            text.contains(r#"ftsd_transitions_total{kind="failover"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"result="ok"} 1"#), "{text}");
        assert!(text.contains(r#"result="not_sent"} 1"#), "{text}");
        assert!(
            text.contains(r#"ftsd_driver_alarms_total{kind="fenced"} 2"#),
            "{text}"
        );
        assert!(text.contains("\nftsd_brake_engaged 1\n"), "{text}");
        assert!(
            text.contains("\nftsd_brake_held_failovers_total 0\n"),
            "{text}"
        );
    }
}
