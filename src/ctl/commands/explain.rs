//! `ftsctl explain`: the last transition ftsd made for a content and the evidence behind it.

use super::*;

/// `explain`.
pub(super) async fn run(cli: &Cli, ctx: &Ctx, content: i32) -> Outcome {
    let mut conn = connect_any(cli).await?;
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

impl Ctx {
    pub(super) fn explain_text(&self, r: &proto::ExplainResponse, ev: &Value) -> String {
        if !r.found {
            return format!("content {}: no transition by ftsd on record\n", r.content);
        }
        if r.content == -1 {
            return self.coordinator_explain_text(r, ev);
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
        push_attempts(&mut out, &attempts);
        if let Value::Object(m) = &ev["mirror_check"] {
            let attempts = m
                .get("attempts")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            out.push_str(&format!(
                "mirror:     dbid {} probed before the failover, {} attempt(s) in {} ms\n",
                m.get("target_dbid").cloned().unwrap_or(Value::Null),
                attempts.len(),
                m.get("elapsed_ms").cloned().unwrap_or(Value::Null)
            ));
            push_attempts(&mut out, &attempts);
        }
        if let Value::Object(o) = &ev["second_opinion"] {
            push_second_opinion(&mut out, o);
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
        if let Some(why) = ev["refusal"].as_str() {
            out.push_str(&format!(
                "refused:    {}\n",
                self.style.paint(why, Color::Yellow)
            ));
        }
        out
    }
}

/// The quorum gate's count and every member's answer (docs/safety.md).
fn push_second_opinion(out: &mut String, o: &serde_json::Map<String, Value>) {
    let tally = &o["tally"];
    let len = |v: &Value| v.as_array().map_or(0, Vec::len);
    out.push_str(&format!(
        "quorum:     confirmed by {} of {} live members ({} needed), waited {} ms\n",
        len(&tally["confirmed"]),
        len(&tally["live"]),
        tally["needed"],
        o.get("waited_ms").cloned().unwrap_or(Value::Null)
    ));
    if let Some(e) = o.get("registry_error").and_then(Value::as_str) {
        out.push_str(&format!("            members registry: {e}\n"));
    }
    for c in o
        .get("confirmations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        let mut line = format!(
            "            {}: {}",
            c["member"].as_str().unwrap_or("?"),
            c["seen"].as_str().unwrap_or("?")
        );
        if let Some(class) = c["class"].as_str() {
            line.push_str(&format!(" ({class})"));
        }
        line.push_str(&format!(" via {}", c["via"].as_str().unwrap_or("?")));
        if let Some(at) = c["observed_at_ms"].as_i64().filter(|t| *t > 0) {
            line.push_str(&format!(" at {}", time_only(at)));
        }
        if c["probed_on_demand"].as_bool() == Some(true) {
            line.push_str(", probed on demand");
        }
        if let Some(e) = c["error"].as_str() {
            line.push_str(&format!(": {e}"));
        }
        out.push_str(&line);
        out.push('\n');
    }
}

/// One line per attempt of an exchange recorded in evidence.
fn push_attempts(out: &mut String, attempts: &[Value]) {
    for a in attempts {
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
}

impl Ctx {
    /// Content -1: the coordinator pair's newest record in etcd (docs/coordinator.md), with
    /// what both probes returned, the decision and every other member's answer.
    fn coordinator_explain_text(&self, r: &proto::ExplainResponse, ev: &Value) -> String {
        let mut out = format!(
            "content -1 (coordinator): {} at {} by {} (epoch {})\n",
            self.style.paint(&r.rule, Color::Yellow),
            time_only(r.time_ms),
            r.instance_id,
            r.epoch
        );
        out.push_str(&format!(
            "pair:       {} -> {}\n",
            ev["from"].as_str().unwrap_or("?"),
            ev["to"].as_str().unwrap_or("?")
        ));
        if let Some(desc) = ev["desc"].as_str() {
            out.push_str(&format!("desc:       {desc}\n"));
        }
        out.push_str(&format!("decision:   {}\n", ev["decision"]));
        for (label, round) in [
            ("coordinator", "primary_round"),
            ("standby", "standby_round"),
        ] {
            let failures = ev[round]["failures"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let answered = !ev[round]["state"].is_null();
            out.push_str(&format!(
                "{:<11} {}, {} failed attempt(s) in {} ms\n",
                format!("{label}:"),
                if answered { "answered" } else { "no answer" },
                failures.len(),
                ev[round]["elapsed_ms"]
            ));
            for f in failures {
                out.push_str(&format!(
                    "              {}: {}\n",
                    f["kind"].as_str().unwrap_or("?"),
                    f["message"].as_str().unwrap_or("")
                ));
            }
        }
        let c = &ev["confirmations"];
        if c.is_object() {
            out.push_str(&format!(
                "peers:      {} (asked {}, waited {} ms, window {} ms)\n",
                c["tally"]["others"].as_str().unwrap_or("?"),
                c["tally"]["asked"],
                c["waited_ms"],
                c["window_ms"]
            ));
            if let Some(e) = c["registry_error"].as_str() {
                out.push_str(&format!("              members registry: {e}\n"));
            }
            for a in c["confirmations"].as_array().cloned().unwrap_or_default() {
                let mut line = format!(
                    "              {} {}",
                    a["member"].as_str().unwrap_or("?"),
                    a["seen"].as_str().unwrap_or("?")
                );
                if let Some(k) = a["class"].as_str() {
                    line.push_str(&format!(" ({k})"));
                }
                if let Some(at) = a["observed_at_ms"].as_i64().filter(|t| *t > 0) {
                    line.push_str(&format!(" at {}", time_only(at)));
                }
                if let Some(e) = a["error"].as_str() {
                    line.push_str(&format!(": {e}"));
                }
                out.push_str(&line);
                out.push('\n');
            }
        } else {
            out.push_str("peers:      not asked\n");
        }
        for step in ev["steps"].as_array().cloned().unwrap_or_default() {
            out.push_str(&format!(
                "step:       {} {}{}\n",
                step["step"].as_str().unwrap_or("?"),
                if step["ok"] == Value::Bool(true) {
                    "ok"
                } else {
                    "failed"
                },
                step["error"]
                    .as_str()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ));
        }
        out
    }
}
