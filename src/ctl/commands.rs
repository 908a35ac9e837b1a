//! The subcommands: each prints its result (a table, or `--json`) and returns its exit code.

use std::io::IsTerminal;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use super::cli::{Cli, ColorChoice, Command};
use super::client::{connect_any, Connected};
use super::table::{cell, render, Cell, Color, Style};
use super::{exit, CtlError};
use crate::api::convert::from_ms;
use crate::api::proto;

type Outcome = Result<u8, CtlError>;

/// Runs the parsed command line; returns the exit code.
pub async fn run(cli: Cli) -> Outcome {
    let style = Style {
        color: match cli.color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
            }
        },
    };
    let ctx = Ctx {
        json: cli.json,
        style,
    };
    match &cli.command {
        Command::Completions { .. } | Command::Man { .. } => {
            unreachable!("handled without a connection")
        }
        Command::Watch {
            interval,
            iterations,
        } => return watch(&cli, &ctx, *interval, *iterations).await,
        _ => {}
    }
    // Reject a bad --since before contacting anything.
    if let Command::History {
        since: Some(since), ..
    } = &cli.command
    {
        parse_since(since)?;
    }
    let mut conn = connect_any(&cli).await?;
    match &cli.command {
        Command::Status => {
            let s = status(&mut conn).await?;
            ctx.emit(&s, || ctx.status_text(&s));
            Ok(status_code(&s))
        }
        Command::Segments {
            down,
            mirrors,
            unbalanced,
        } => {
            let mut r = conn
                .read(|mut c| async move { c.segments(proto::SegmentsRequest {}).await })
                .await?;
            // --down and --unbalanced select problems (either one, like gpstate -e);
            // --mirrors narrows to mirror rows.
            let problems = *down || *unbalanced;
            r.segments.retain(|s| {
                (!problems || (*down && s.down) || (*unbalanced && s.not_preferred_role))
                    && (!mirrors || s.role == "m")
            });
            ctx.emit(&r, || ctx.segments_text(&r.segments));
            Ok(exit::OK)
        }
        Command::History {
            content,
            dbid,
            since,
            limit,
        } => {
            let since_ms = match since {
                Some(s) => crate::api::convert::ms(parse_since(s)?),
                None => 0,
            };
            let req = proto::HistoryRequest {
                content: *content,
                dbid: *dbid,
                since_ms,
                limit: *limit,
            };
            let r = conn
                .read(|mut c| async move { c.history(req).await })
                .await?;
            ctx.emit(&r, || ctx.history_text(&r.entries));
            Ok(exit::OK)
        }
        Command::Members => {
            let s = status(&mut conn).await?;
            let doc = json!({ "members": s.members });
            ctx.emit(&doc, || ctx.members_text(&s.members));
            Ok(exit::OK)
        }
        Command::Leader => {
            let s = status(&mut conn).await?;
            let doc = json!({
                "leader_id": s.leader_id,
                "leader_address": s.leader_address,
                "epoch": s.epoch,
                "leader_since_ms": s.leader_since_ms,
            });
            ctx.emit(&doc, || {
                if s.leader_id.is_empty() {
                    "no leader elected\n".to_string()
                } else {
                    format!(
                        "{} at {} (epoch {}, since {})\n",
                        s.leader_id,
                        s.leader_address,
                        s.epoch,
                        when(s.leader_since_ms)
                    )
                }
            });
            Ok(if s.leader_id.is_empty() {
                exit::UNHEALTHY
            } else {
                exit::OK
            })
        }
        Command::Probe { wait } => {
            let timeout_ms = wait.as_millis() as u64;
            // The call lasts as long as the cycle; the server gives up after `wait`.
            conn.call_timeout = *wait + cli.timeout;
            let r = conn
                .mutate(
                    |mut c| async move { c.probe_now(proto::ProbeNowRequest { timeout_ms }).await },
                )
                .await?;
            ctx.emit(&r, || ctx.cycle_text(&r));
            Ok(exit::OK)
        }
        Command::Pause { reason } => {
            let by = requester();
            let reason = reason.clone();
            let r = conn
                .mutate(|mut c| {
                    let req = proto::PauseRequest {
                        reason: reason.clone(),
                        by: by.clone(),
                    };
                    async move { c.pause(req).await }
                })
                .await?;
            ctx.emit(&r, || ctx.pause_text(&r));
            Ok(exit::OK)
        }
        Command::Resume => {
            let by = requester();
            let r = conn
                .mutate(|mut c| {
                    let req = proto::ResumeRequest { by: by.clone() };
                    async move { c.resume(req).await }
                })
                .await?;
            ctx.emit(&r, || ctx.pause_text(&r));
            Ok(exit::OK)
        }
        Command::Explain { content } => {
            let content = *content;
            let r = conn
                .read(|mut c| async move { c.explain(proto::ExplainRequest { content }).await })
                .await?;
            let evidence: Value = serde_json::from_str(&r.evidence_json).unwrap_or(Value::Null);
            let doc = json!({
                "content": r.content,
                "found": r.found,
                "time_ms": r.time_ms,
                "epoch": r.epoch,
                "instance_id": r.instance_id,
                "rule": r.rule,
                "dbids": r.dbids,
                "evidence_id": r.evidence_id,
                "evidence": evidence,
            });
            ctx.emit(&doc, || ctx.explain_text(&r, &evidence));
            Ok(if r.found { exit::OK } else { exit::FAILED })
        }
        Command::Watch { .. } | Command::Completions { .. } | Command::Man { .. } => unreachable!(),
    }
}

async fn status(conn: &mut Connected) -> Result<proto::StatusResponse, CtlError> {
    conn.read(|mut c| async move { c.status(proto::StatusRequest {}).await })
        .await
}

/// `status`'s exit code: 1 when a segment is down, no leader is elected, or the catalog or
/// etcd is unreadable for the answering instance.
pub fn status_code(s: &proto::StatusResponse) -> u8 {
    if s.leader_id.is_empty()
        || s.segments_down > 0
        || !s.catalog_error.is_empty()
        || !s.etcd_error.is_empty()
    {
        exit::UNHEALTHY
    } else {
        exit::OK
    }
}

fn requester() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("{user}@{}", crate::config::hostname())
}

/// `--since`: a duration ago, or an RFC 3339 time.
pub fn parse_since(s: &str) -> Result<SystemTime, CtlError> {
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(SystemTime::now()
            .checked_sub(d)
            .unwrap_or(SystemTime::UNIX_EPOCH));
    }
    humantime::parse_rfc3339_weak(s).map_err(|_| CtlError {
        code: exit::USAGE,
        message: format!(
            "--since {s:?}: expected a duration (1h, 30m) or a time (2026-01-31T12:00:00Z)"
        ),
    })
}

/// "2026-01-31T12:00:00Z (5m ago)", or "-" for unknown.
fn when(ms: i64) -> String {
    if ms <= 0 {
        return "-".into();
    }
    let t = from_ms(ms);
    let ago = SystemTime::now()
        .duration_since(t)
        .map(|d| Duration::from_secs(d.as_secs()))
        .unwrap_or_default();
    format!(
        "{} ({} ago)",
        humantime::format_rfc3339_seconds(t),
        humantime::format_duration(ago)
    )
}

fn time_only(ms: i64) -> String {
    if ms <= 0 {
        "-".into()
    } else {
        humantime::format_rfc3339_seconds(from_ms(ms)).to_string()
    }
}

struct Ctx {
    json: bool,
    style: Style,
}

impl Ctx {
    /// Prints `doc` as JSON, or the human text.
    fn emit<T: serde::Serialize>(&self, doc: &T, text: impl FnOnce() -> String) {
        if self.json {
            match serde_json::to_string_pretty(doc) {
                Ok(s) => println!("{s}"),
                Err(e) => eprintln!("ftsctl: cannot encode JSON: {e}"),
            }
        } else {
            print!("{}", text());
        }
    }

    fn yes_no(&self, bad: bool, text: &str) -> String {
        self.style
            .paint(text, if bad { Color::Red } else { Color::Green })
    }

    fn status_text(&self, s: &proto::StatusResponse) -> String {
        let mut out = String::new();
        let leader = if s.leader_id.is_empty() {
            self.style.paint("none elected", Color::Red)
        } else {
            format!(
                "{} at {} (epoch {}, since {})",
                s.leader_id,
                s.leader_address,
                s.epoch,
                when(s.leader_since_ms)
            )
        };
        let pause = match &s.pause {
            Some(p) if p.paused => self.style.paint(
                &format!("yes, by {} at {}: {}", p.by, time_only(p.at_ms), p.reason),
                Color::Yellow,
            ),
            _ => "no".into(),
        };
        let cycle = if s.last_cycle_at_ms > 0 {
            format!(
                "{}, took {} ms, {}",
                when(s.last_cycle_at_ms),
                s.last_cycle_ms,
                s.last_cycle_result
            )
        } else {
            "-".into()
        };
        let segments = if s.catalog_error.is_empty() {
            format!(
                "{} rows, {} down, {} not in preferred role, {} not in sync",
                s.segments_total,
                self.yes_no(s.segments_down > 0, &s.segments_down.to_string()),
                s.segments_not_preferred,
                s.segments_not_in_sync
            )
        } else {
            self.style.paint(
                &format!("catalog unreadable: {}", s.catalog_error),
                Color::Red,
            )
        };
        let etcd = if s.etcd_error.is_empty() {
            if s.elected {
                "ok".to_string()
            } else {
                "not used (single-instance mode)".to_string()
            }
        } else {
            self.style
                .paint(&format!("unreachable: {}", s.etcd_error), Color::Red)
        };
        for (k, v) in [
            ("cluster", s.cluster.clone()),
            ("leader", leader),
            ("paused", pause),
            ("last cycle", cycle),
            ("segments", segments),
            ("etcd", etcd),
            ("answered by", s.instance_id.clone()),
        ] {
            out.push_str(&format!("{:<12} {v}\n", format!("{k}:")));
        }
        out.push('\n');
        out.push_str(&self.members_text(&s.members));
        out
    }

    fn members_text(&self, members: &[proto::Member]) -> String {
        let rows: Vec<Vec<Cell>> = members
            .iter()
            .map(|m| {
                vec![
                    m.instance_id.clone().into(),
                    cell(
                        &m.role,
                        if m.role == "leader" {
                            Color::Green
                        } else {
                            Color::Plain
                        },
                    ),
                    if m.epoch > 0 {
                        m.epoch.to_string().into()
                    } else {
                        "-".into()
                    },
                    m.host.clone().into(),
                    m.api_address.clone().into(),
                    m.version.clone().into(),
                    time_only(m.last_cycle_at_ms).into(),
                    if m.last_cycle_at_ms > 0 {
                        format!("{} ms", m.last_cycle_ms).into()
                    } else {
                        "-".into()
                    },
                    m.last_cycle_result.clone().into(),
                ]
            })
            .collect();
        render(
            self.style,
            &[
                "MEMBER",
                "ROLE",
                "EPOCH",
                "HOST",
                "API",
                "VERSION",
                "LAST CYCLE",
                "TOOK",
                "RESULT",
            ],
            &rows,
        )
    }

    fn segments_text(&self, segments: &[proto::Segment]) -> String {
        let rows: Vec<Vec<Cell>> = segments
            .iter()
            .map(|s| {
                let mut flags = Vec::new();
                if s.down {
                    flags.push("down");
                }
                if s.not_preferred_role {
                    flags.push("not-preferred-role");
                }
                if s.not_in_sync {
                    flags.push("not-in-sync");
                }
                let flag_color = if s.down {
                    Color::Red
                } else if flags.is_empty() {
                    Color::Plain
                } else {
                    Color::Yellow
                };
                let probe = if s.last_probe.is_empty() {
                    "-".to_string()
                } else {
                    format!("{} ({} ms)", s.last_probe, s.last_probe_ms)
                };
                vec![
                    s.content.to_string().into(),
                    s.dbid.to_string().into(),
                    s.role.clone().into(),
                    s.preferred_role.clone().into(),
                    cell(&s.status, if s.down { Color::Red } else { Color::Plain }),
                    s.mode.clone().into(),
                    format!("{}:{}", s.address, s.port).into(),
                    cell(
                        if flags.is_empty() {
                            "-".to_string()
                        } else {
                            flags.join(",")
                        },
                        flag_color,
                    ),
                    probe.into(),
                ]
            })
            .collect();
        render(
            self.style,
            &[
                "CONTENT",
                "DBID",
                "ROLE",
                "PREFERRED",
                "STATUS",
                "MODE",
                "ADDRESS",
                "FLAGS",
                "LAST PROBE",
            ],
            &rows,
        )
    }

    fn history_text(&self, entries: &[proto::HistoryEntry]) -> String {
        if entries.is_empty() {
            return "no history\n".into();
        }
        let rows: Vec<Vec<Cell>> = entries
            .iter()
            .map(|e| {
                vec![
                    time_only(e.time_ms).into(),
                    if e.content < -1 {
                        "?".to_string().into()
                    } else {
                        e.content.to_string().into()
                    },
                    e.dbid.to_string().into(),
                    if e.rule.is_empty() {
                        "-".to_string().into()
                    } else {
                        e.rule.clone().into()
                    },
                    if e.epoch > 0 {
                        e.epoch.to_string().into()
                    } else {
                        "-".to_string().into()
                    },
                    if e.instance_id.is_empty() {
                        "-".to_string().into()
                    } else {
                        e.instance_id.clone().into()
                    },
                    e.desc.clone().into(),
                ]
            })
            .collect();
        render(
            self.style,
            &[
                "TIME",
                "CONTENT",
                "DBID",
                "RULE",
                "EPOCH",
                "BY",
                "DESCRIPTION",
            ],
            &rows,
        )
    }

    fn cycle_text(&self, r: &proto::CycleReport) -> String {
        let mut out = format!(
            "cycle on {} started {}, took {} ms: {} pairs, {} transitions applied, {} failed, {} messages sent, {} failed{}{}\n\n",
            r.instance_id,
            time_only(r.started_at_ms),
            r.duration_ms,
            r.pairs,
            r.transitions_applied,
            r.transitions_failed,
            r.messages_sent,
            r.messages_failed,
            if r.paused { "; paused: nothing acted on" } else { "" },
            if r.fenced { "; fenced by a newer epoch" } else { "" },
        );
        let rows: Vec<Vec<Cell>> = r
            .reports
            .iter()
            .map(|p| {
                let healthy = p.rule == "healthy";
                vec![
                    p.content.to_string().into(),
                    p.primary_dbid.to_string().into(),
                    p.mirror_dbid.to_string().into(),
                    cell(&p.rule, if healthy { Color::Green } else { Color::Yellow }),
                    cell(
                        &p.outcome,
                        if p.outcome.starts_with("failed") {
                            Color::Red
                        } else {
                            Color::Plain
                        },
                    ),
                    p.attempts.to_string().into(),
                    p.probe_ms.to_string().into(),
                    dash(&p.transition).into(),
                    dash(&p.message).into(),
                ]
            })
            .collect();
        out.push_str(&render(
            self.style,
            &[
                "CONTENT",
                "PRIMARY",
                "MIRROR",
                "RULE",
                "OUTCOME",
                "ATTEMPTS",
                "MS",
                "TRANSITION",
                "MESSAGE",
            ],
            &rows,
        ));
        out
    }

    fn pause_text(&self, p: &proto::PauseState) -> String {
        if p.paused {
            format!(
                "{} by {} at {}: {}\n",
                self.style.paint("paused", Color::Yellow),
                p.by,
                time_only(p.at_ms),
                p.reason
            )
        } else {
            "not paused: failover enabled\n".into()
        }
    }

    fn explain_text(&self, r: &proto::ExplainResponse, ev: &Value) -> String {
        if !r.found {
            return format!("content {}: no transition by ftsd on record\n", r.content);
        }
        let mut out = format!(
            "content {}: {} at {} by {} (epoch {}), evidence #{}\n",
            r.content,
            self.style.paint(&r.rule, Color::Yellow),
            time_only(r.time_ms),
            r.instance_id,
            r.epoch,
            r.evidence_id
        );
        let seg = |v: &Value| {
            format!(
                "dbid {} {}:{} {}/{}/{}",
                v["dbid"],
                v["address"].as_str().unwrap_or("?"),
                v["port"],
                v["state"]["role"].as_str().unwrap_or("?"),
                v["state"]["status"].as_str().unwrap_or("?"),
                v["state"]["mode"].as_str().unwrap_or("?"),
            )
        };
        out.push_str(&format!(
            "before:     primary {}; mirror {}\n",
            seg(&ev["before"]["primary"]),
            seg(&ev["before"]["mirror"])
        ));
        let probe = &ev["probe"];
        let outcome = &probe["outcome"];
        let outcome_text = match outcome["outcome"].as_str() {
            Some("failed") => format!(
                "failed: {} (restart state {})",
                outcome["kind"].as_str().unwrap_or("?"),
                outcome["restart"]["state"].as_str().unwrap_or("?")
            ),
            Some(o) => format!("{o}: {}", outcome["reply"]),
            None => "?".into(),
        };
        let attempts = probe["attempts"].as_array().cloned().unwrap_or_default();
        out.push_str(&format!(
            "probe:      dbid {}, {} attempt(s) in {} ms: {}\n",
            probe["target_dbid"],
            attempts.len(),
            probe["elapsed_ms"],
            outcome_text
        ));
        for a in &attempts {
            let result = match (&a["error"], &a["reply"]) {
                (Value::Object(e), _) => format!(
                    "{}: {}",
                    e.get("kind").and_then(Value::as_str).unwrap_or("?"),
                    e.get("message").and_then(Value::as_str).unwrap_or("")
                ),
                (_, Value::Object(r)) => format!("reply {}", Value::Object(r.clone())),
                _ => "?".into(),
            };
            out.push_str(&format!(
                "  attempt {} at +{} ms ({} us): {result}\n",
                a["attempt"], a["started_ms"], a["elapsed_us"]
            ));
        }
        out.push_str(&format!(
            "settings:   timeout {} ms, retries {}, retry delay {} ms\n",
            ev["settings"]["timeout_ms"],
            ev["settings"]["retries"],
            ev["settings"]["retry_delay_ms"]
        ));
        for u in ev["updates"].as_array().cloned().unwrap_or_default() {
            let st = |s: &Value| {
                format!(
                    "{}/{}/{}",
                    s["role"].as_str().unwrap_or("?"),
                    s["status"].as_str().unwrap_or("?"),
                    s["mode"].as_str().unwrap_or("?")
                )
            };
            out.push_str(&format!(
                "update:     dbid {}: {} -> {}\n",
                u["dbid"],
                st(&u["from"]),
                st(&u["to"])
            ));
        }
        match &ev["message"] {
            Value::Object(m) => out.push_str(&format!(
                "message:    {} to dbid {}\n",
                m.get("kind").and_then(Value::as_str).unwrap_or("?"),
                m.get("target_dbid").cloned().unwrap_or(Value::Null)
            )),
            _ => out.push_str("message:    none\n"),
        }
        out
    }
}

fn dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.into()
    }
}

/// `watch`: status and segments, redrawn every `interval`; a failed refresh is shown and
/// retried rather than ending the view.
async fn watch(cli: &Cli, ctx: &Ctx, interval: Duration, iterations: u64) -> Outcome {
    let mut n = 0u64;
    let tty = std::io::stdout().is_terminal();
    let mut last;
    loop {
        n += 1;
        let frame = async {
            let mut conn = connect_any(cli).await?;
            let s = status(&mut conn).await?;
            let segs = conn
                .read(|mut c| async move { c.segments(proto::SegmentsRequest {}).await })
                .await?;
            Ok::<_, CtlError>((conn.address.clone(), s, segs))
        }
        .await;
        if tty && !ctx.json {
            print!("\x1b[2J\x1b[H");
        }
        match frame {
            Ok((address, s, segs)) => {
                last = status_code(&s);
                if ctx.json {
                    let doc = json!({ "status": s, "segments": segs.segments });
                    println!("{}", serde_json::to_string(&doc).unwrap_or_default());
                } else {
                    println!(
                        "ftsctl watch: {address}, every {}  ({})\n",
                        humantime::format_duration(interval),
                        humantime::format_rfc3339_seconds(SystemTime::now())
                    );
                    print!("{}", ctx.status_text(&s));
                    println!();
                    print!("{}", ctx.segments_text(&segs.segments));
                }
            }
            Err(e) => {
                last = e.code;
                if ctx.json {
                    println!("{}", json!({ "error": e.message }));
                } else {
                    println!("ftsctl: {}", e.message);
                }
            }
        }
        if iterations > 0 && n >= iterations {
            return Ok(last);
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(last),
        }
    }
}
