//! Model and catalog types to protobuf messages.

use std::time::{SystemTime, UNIX_EPOCH};

use super::proto;
use crate::catalog::queries::{EvidenceRow, HistoryRow};
use crate::core::ProbeOutcome;
use crate::election::members::MemberInfo;
use crate::election::pause::PauseInfo;
use crate::engine::{CycleReport, PairReport};
use crate::model::{Role, Segment};

/// Unix milliseconds; 0 for "unknown".
pub fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn opt_ms(t: Option<SystemTime>) -> i64 {
    t.map(ms).unwrap_or(0)
}

pub fn from_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64)
}

pub fn member(m: &MemberInfo) -> proto::Member {
    proto::Member {
        instance_id: m.instance_id.clone(),
        host: m.host.clone(),
        api_address: m.api_address.clone(),
        version: m.version.clone(),
        role: m.role.clone(),
        epoch: m.epoch.unwrap_or(0),
        started_at_ms: ms(m.started_at),
        last_cycle_at_ms: opt_ms(m.last_cycle_at),
        last_cycle_ms: m.last_cycle_ms.unwrap_or(0),
        last_cycle_result: m.last_cycle_result.clone().unwrap_or_default(),
    }
}

pub fn pause(p: Option<&PauseInfo>) -> proto::PauseState {
    match p {
        Some(p) => proto::PauseState {
            paused: true,
            by: p.by.clone(),
            at_ms: ms(p.at),
            reason: p.reason.clone(),
            until_ms: opt_ms(p.until),
        },
        None => proto::PauseState::default(),
    }
}

/// The brake's record as the API shows it; `error` when it could not be read.
pub fn brake(
    b: &crate::engine::Brake,
    record: Option<&crate::core::brake::BrakeRecord>,
    primary_hosts: usize,
    error: &str,
) -> proto::BrakeState {
    use crate::core::brake::HostLimit;
    let settings = b.settings;
    let max_hosts = match settings.max_hosts {
        HostLimit::Auto => format!(
            "auto ({} of {primary_hosts} hosts with primaries)",
            HostLimit::Auto.resolve(primary_hosts).unwrap_or(1)
        ),
        other => other.to_string(),
    };
    let mut state = proto::BrakeState {
        max_hosts,
        window_ms: settings.window.as_millis() as u64,
        store: if b.in_etcd_mode() { "etcd" } else { "process" }.into(),
        error: error.into(),
        ..Default::default()
    };
    let Some(r) = record else {
        return state;
    };
    if let Some(e) = &r.engaged {
        state.engaged = true;
        state.engaged_at_ms = ms(e.at);
        state.hosts = e.hosts.iter().cloned().collect();
        state.limit = e.limit as u32;
        state.held_contents = e.contents.iter().map(|c| i32::from(*c)).collect();
        state.engaged_by = format!("{} (epoch {})", e.instance_id, e.epoch);
    }
    if let Some(rel) = &r.released {
        state.released_by = rel.by.clone();
        state.released_at_ms = ms(rel.at);
        state.release_reason = rel.reason.clone();
    }
    let now = SystemTime::now();
    state.admitted = r
        .admitted
        .iter()
        .filter(|a| crate::core::brake::counts(r, a, settings.window, now))
        .map(|a| proto::BrakeAdmitted {
            host: a.host.clone(),
            content: i32::from(a.content),
            at_ms: ms(a.at),
        })
        .collect();
    state
}

/// The status alarm line of an engaged brake.
pub fn brake_alarm(b: &proto::BrakeState) -> String {
    format!(
        "brake engaged: {} hosts in window > limit {} ({}); failovers of contents {} held; \
         release with `ftsctl brake release --reason ...`",
        b.hosts.len(),
        b.limit,
        b.hosts.join(", "),
        b.held_contents
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// "replied" or "failed: <kind>" (with the restart state when it mattered).
pub fn outcome(o: &ProbeOutcome) -> String {
    match o {
        ProbeOutcome::Replied { reply } => {
            let mut s = String::from("replied");
            if reply.is_role_mirror {
                s.push_str(" (as mirror)");
            } else if !reply.is_mirror_up {
                s.push_str(" (mirror down)");
            } else if !reply.is_in_sync {
                s.push_str(" (not in sync)");
            }
            s
        }
        ProbeOutcome::Failed { kind, .. } if kind.is_prober_fault() => {
            format!("failed: {kind} (prober fault: this observer's side, not the segment's)")
        }
        ProbeOutcome::Failed { kind, restart } => match restart {
            crate::core::RestartState::NotRestarting => format!("failed: {kind}"),
            other => format!(
                "failed: {kind} ({})",
                serde_json::to_value(other)
                    .ok()
                    .and_then(|v| v.get("state").and_then(|s| s.as_str()).map(String::from))
                    .unwrap_or_default()
            ),
        },
    }
}

pub fn pair(p: &PairReport) -> proto::PairReport {
    proto::PairReport {
        content: p.content.into(),
        primary_dbid: p.primary_dbid.into(),
        mirror_dbid: p.mirror_dbid.into(),
        rule: p.rule.to_string(),
        outcome: outcome(&p.outcome),
        attempts: p.attempts as u32,
        probe_ms: p.probe_ms,
        reply_us: p.reply_us.unwrap_or(0),
        transition: p
            .transition
            .as_ref()
            .map(|t| t.to_string())
            .unwrap_or_default(),
        message: p
            .message
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default(),
    }
}

/// The alarms of a cycle, one line per content that ftsd is not acting on for a reason an
/// operator must fix or look at: prober faults and unconfirmed failovers.
pub fn alarms(r: &CycleReport) -> Vec<String> {
    use crate::core::Rule;
    r.reports
        .iter()
        .filter(|p| matches!(p.rule, Rule::ProberFault | Rule::FailoverUnconfirmed))
        .chain(
            // A brake that cannot read its record holds failovers without being engaged.
            r.reports.iter().filter(|p| {
                p.rule == Rule::BrakeHeld && r.brake.as_ref().is_some_and(|b| b.error.is_some())
            }),
        )
        .map(|p| {
            format!(
                "{}: content {} primary dbid {}: {}",
                p.rule,
                p.content,
                p.primary_dbid,
                p.refusal.as_deref().unwrap_or("")
            )
        })
        .collect()
}

pub fn cycle(instance_id: &str, r: &CycleReport) -> proto::CycleReport {
    proto::CycleReport {
        instance_id: instance_id.into(),
        started_at_ms: ms(r.started_at),
        duration_ms: r.duration.as_millis() as u64,
        pairs: r.pairs as u32,
        skipped: r.skipped as u32,
        transitions_applied: r.transitions_applied as u32,
        transitions_failed: r.transitions_failed as u32,
        messages_sent: r.messages_sent as u32,
        messages_failed: r.messages_failed as u32,
        fenced: r.fenced,
        paused: r.paused,
        reports: r.reports.iter().map(pair).collect(),
    }
}

/// One catalog row (of `all`) with its derived flags and, if this instance probed it in
/// `last`, the probe result.
pub fn segment(s: &Segment, all: &[Segment], last: Option<&CycleReport>) -> proto::Segment {
    let has_peer = all
        .iter()
        .any(|o| o.content == s.content && o.dbid != s.dbid);
    let mut out = proto::Segment {
        dbid: s.dbid.into(),
        content: s.content.into(),
        role: s.role.to_string(),
        preferred_role: s.preferred_role.to_string(),
        mode: s.mode.to_string(),
        status: s.status.to_string(),
        port: s.port,
        hostname: s.hostname.clone(),
        address: s.address.clone(),
        datadir: s.datadir.clone(),
        down: !s.is_up(),
        not_preferred_role: s.role != s.preferred_role,
        // Only mirrored contents can be out of sync; the coordinator pair (content -1) is not
        // managed by FTS and is left unflagged.
        not_in_sync: s.content >= 0 && has_peer && !s.in_sync(),
        ..Default::default()
    };
    if let Some(r) = last {
        if let Some(p) = r
            .reports
            .iter()
            .find(|p| p.primary_dbid == s.dbid && s.role == Role::Primary)
        {
            out.last_probe = outcome(&p.outcome);
            out.last_probe_ms = p.probe_ms;
            out.last_reply_us = p.reply_us.unwrap_or(0);
            out.last_probe_at_ms = ms(r.started_at);
        }
    }
    out
}

/// The coordinator pair as the watch's last round saw it (`gpstate -f`'s view).
pub fn coordinator_pair(c: &crate::coordinator::PairStatus) -> proto::CoordinatorPair {
    let side = |w: Option<bool>| match w {
        Some(true) => "writable",
        Some(false) => "in recovery",
        None => "unreachable",
    };
    proto::CoordinatorPair {
        acting: c.acting.clone(),
        standby: c.standby.clone(),
        acting_status: if c.acting_read_only {
            "read-only".into()
        } else {
            side(c.acting_writable).into()
        },
        standby_status: if c.standby_read_only {
            "read-only".into()
        } else {
            side(c.standby_writable).into()
        },
        sync: match c.in_sync {
            Some(true) => "in sync",
            Some(false) => "not in sync",
            None => "unknown",
        }
        .into(),
        replay_lag: c
            .replay_lag
            .and_then(|l| i64::try_from(l).ok())
            .unwrap_or(-1),
        rebuild: c.rebuild,
        intent_pending: c.intent_pending,
        decision: c.decision.clone(),
    }
}

pub fn history(h: &HistoryRow) -> proto::HistoryEntry {
    proto::HistoryEntry {
        time_ms: ms(h.time),
        dbid: h.dbid.into(),
        content: h.content.map(i32::from).unwrap_or(-2),
        desc: h.desc.clone(),
        rule: h.rule.clone().unwrap_or_default(),
        epoch: h.epoch.unwrap_or(0),
        instance_id: h.instance_id.clone().unwrap_or_default(),
        evidence_id: h.evidence_id.unwrap_or(0),
    }
}

/// A switchover's report.
pub fn switchover(r: &crate::switchover::Report) -> proto::SwitchoverResponse {
    proto::SwitchoverResponse {
        content: r.content.into(),
        from: r.from.clone(),
        to: r.to.clone(),
        outcome: r.outcome.clone(),
        steps: r
            .steps
            .iter()
            .map(|s| proto::SwitchoverStep {
                step: s.step.clone(),
                ok: s.ok,
                detail: s.detail.clone(),
                at_ms: s.at_ms,
            })
            .collect(),
        next: r.next.clone(),
    }
}

/// Shadow mode's record.
pub fn shadow(instance_id: &str, s: &crate::shadow::ShadowSummary) -> proto::ShadowResponse {
    use crate::core::shadow::VerdictKind;
    let count = |k: VerdictKind| s.counts.get(&k).copied().unwrap_or(0);
    proto::ShadowResponse {
        instance_id: instance_id.to_owned(),
        window_ms: s.window.as_millis() as u64,
        agree: count(VerdictKind::Agree),
        incumbent_only: count(VerdictKind::IncumbentOnly),
        shadow_only: count(VerdictKind::ShadowOnly),
        different: count(VerdictKind::Different),
        expecting: s.expecting as u32,
        judging: s.judging as u32,
        recent: s
            .recent
            .iter()
            .map(|r| proto::ShadowVerdict {
                at_ms: ms(r.at),
                verdict: r.verdict.kind.as_str().to_owned(),
                content: r.verdict.content.into(),
                shadow_rule: r
                    .verdict
                    .shadow_rule
                    .map(|x| x.as_str().to_owned())
                    .unwrap_or_default(),
                shadow: crate::shadow::book::describe(&r.verdict.shadow),
                incumbent: crate::shadow::book::describe(&r.verdict.incumbent),
                first: r.verdict.first.to_owned(),
            })
            .collect(),
    }
}

pub fn explain(content: i32, e: Option<&EvidenceRow>) -> proto::ExplainResponse {
    match e {
        None => proto::ExplainResponse {
            content,
            found: false,
            ..Default::default()
        },
        Some(e) => proto::ExplainResponse {
            content,
            found: true,
            time_ms: ms(e.time),
            epoch: e.epoch,
            instance_id: e.instance_id.clone(),
            rule: e.rule.clone(),
            dbids: e.dbids.iter().map(|d| i32::from(*d)).collect(),
            evidence_json: e.evidence.to_string(),
            evidence_id: e.id,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Mode, Status};

    fn seg(
        dbid: i16,
        content: i16,
        role: Role,
        preferred: Role,
        status: Status,
        mode: Mode,
    ) -> Segment {
        Segment {
            dbid,
            content,
            role,
            preferred_role: preferred,
            mode,
            status,
            port: 6000,
            hostname: "h".into(),
            address: "a".into(),
            datadir: "/d".into(),
        }
    }

    #[test]
    fn derived_flags() {
        use Role::{Mirror as M, Primary as P};
        let all = vec![
            // coordinator without standby: mode n is normal there
            seg(1, -1, P, P, Status::Up, Mode::NotInSync),
            // content 0 after a failover
            seg(2, 0, M, P, Status::Down, Mode::NotInSync),
            seg(4, 0, P, M, Status::Up, Mode::NotInSync),
            // an unmirrored content
            seg(3, 1, P, P, Status::Up, Mode::NotInSync),
        ];
        let flags = |i: usize| {
            let s = segment(&all[i], &all, None);
            (s.down, s.not_preferred_role, s.not_in_sync)
        };
        assert_eq!(flags(0), (false, false, false));
        assert_eq!(flags(1), (true, true, true));
        assert_eq!(flags(2), (false, true, true));
        assert_eq!(flags(3), (false, false, false));
    }
}
