//! The coordinator pair's records (etcd `coordinator/history`) as `Explain` and `History`
//! answers for content -1: the catalog lives on the coordinator, so ftsd keeps the pair's
//! history in etcd, and `ftsctl explain -1` / `ftsctl history --content -1` read it from there.

use serde_json::Value;

use super::proto;
use crate::coordinator::records::HistoryRecord;

/// One line on the other members' word, from a record's evidence: `b lost, c reached
/// (others_reach_it)`; None when the peers were not asked.
pub fn confirmations_line(evidence: &Value) -> Option<String> {
    let c = evidence.get("confirmations")?;
    let answers: Vec<String> = c["confirmations"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| {
                    format!(
                        "{} {}",
                        x["member"].as_str().unwrap_or("?"),
                        x["seen"].as_str().unwrap_or("?")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let verdict = c["tally"]["others"].as_str().unwrap_or("?");
    Some(if answers.is_empty() {
        format!("peers: none answered ({verdict})")
    } else {
        format!("peers: {} ({verdict})", answers.join(", "))
    })
}

/// `Explain` for content -1 from the newest coordinator record.
pub fn explain(r: Option<&HistoryRecord>) -> proto::ExplainResponse {
    match r {
        None => proto::ExplainResponse {
            content: -1,
            found: false,
            ..Default::default()
        },
        Some(r) => proto::ExplainResponse {
            content: -1,
            found: true,
            time_ms: r.time_us / 1000,
            epoch: r.epoch,
            instance_id: r.instance_id.clone(),
            rule: r.event.clone(),
            dbids: Vec::new(),
            evidence_json: record_evidence(r).to_string(),
            evidence_id: 0,
        },
    }
}

/// The evidence with the record's own fields, so `ftsctl explain -1` can show them.
fn record_evidence(r: &HistoryRecord) -> Value {
    let mut ev = r.evidence.clone();
    if let Value::Object(m) = &mut ev {
        m.insert("event".into(), Value::String(r.event.clone()));
        m.insert("from".into(), Value::String(r.from.clone()));
        m.insert("to".into(), Value::String(r.to.clone()));
        m.insert("desc".into(), Value::String(r.desc.clone()));
    }
    ev
}

/// A coordinator record as a history entry (dbid 0: ftsd knows the pair by address).
pub fn history_entry(r: &HistoryRecord) -> proto::HistoryEntry {
    let mut desc = format!("{} ({} -> {})", r.desc, r.from, r.to);
    if let Some(line) = confirmations_line(&r.evidence) {
        desc.push_str("; ");
        desc.push_str(&line);
    }
    proto::HistoryEntry {
        time_ms: r.time_us / 1000,
        dbid: 0,
        content: -1,
        desc,
        rule: r.event.clone(),
        epoch: r.epoch,
        instance_id: r.instance_id.clone(),
        evidence_id: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_peers_answers_are_one_line() {
        let ev = json!({"confirmations": {
            "tally": {"others": "SomeReach"},
            "confirmations": [
                {"member": "b", "seen": "lost"},
                {"member": "c", "seen": "reached"}
            ]
        }});
        assert_eq!(
            confirmations_line(&ev).unwrap(),
            "peers: b lost, c reached (SomeReach)"
        );
        assert_eq!(confirmations_line(&json!({})), None);
    }
}
