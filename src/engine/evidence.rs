//! The evidence stored with every transition, so `ftsctl explain` can say why it happened.

use serde_json::{json, Value};

use super::{Exchange, ProbeSettings};
use crate::core::{Decision, ProbeOutcome};
use crate::model::Pair;

fn row(s: &crate::model::Segment) -> Value {
    json!({
        "dbid": s.dbid,
        "address": s.address,
        "port": s.port,
        "state": s.state(),
        "preferred_role": s.preferred_role,
    })
}

/// Builds the evidence document for one pair's decision.
pub fn build(
    instance_id: &str,
    pair: &Pair,
    probe: &Exchange,
    outcome: &ProbeOutcome,
    decision: &Decision,
    settings: &ProbeSettings,
) -> Value {
    json!({
        "instance_id": instance_id,
        "version": env!("CARGO_PKG_VERSION"),
        "rule": decision.rule,
        "content": pair.content(),
        "before": { "primary": row(&pair.primary), "mirror": row(&pair.mirror) },
        "expect": decision.expect,
        "probe": {
            "target_dbid": pair.primary.dbid,
            "elapsed_ms": probe.elapsed.as_millis() as u64,
            "attempts": probe.attempts,
            "outcome": outcome,
        },
        "settings": {
            "timeout_ms": settings.timeout.as_millis() as u64,
            "retries": settings.retries,
            "retry_delay_ms": settings.retry_delay.as_millis() as u64,
        },
        "updates": decision.updates,
        "message": decision.message.as_ref().map(|m| json!({
            "kind": m.kind, "target_dbid": m.target.dbid,
        })),
    })
}

/// The evidence of a decision on a content without a mirror (the `gpfts` profile).
pub fn lone_primary(
    instance_id: &str,
    primary: &crate::model::Segment,
    probe: &Exchange,
    outcome: &ProbeOutcome,
    decision: &Decision,
    settings: &ProbeSettings,
) -> Value {
    json!({
        "instance_id": instance_id,
        "version": env!("CARGO_PKG_VERSION"),
        "rule": decision.rule,
        "content": primary.content,
        "before": { "primary": row(primary), "mirror": null },
        "profile": settings.profile,
        "probe": {
            "target_dbid": primary.dbid,
            "elapsed_ms": probe.elapsed.as_millis() as u64,
            "attempts": probe.attempts,
            "outcome": outcome,
        },
        "settings": {
            "timeout_ms": settings.timeout.as_millis() as u64,
            "retries": settings.retries,
            "retry_delay_ms": settings.retry_delay.as_millis() as u64,
        },
        "updates": decision.updates,
    })
}

/// The PROBE of the mirror taken before a failover: what it answered, or how every attempt
/// failed.
pub fn mirror_check(pair: &Pair, probe: &Exchange) -> Value {
    json!({
        "target_dbid": pair.mirror.dbid,
        "elapsed_ms": probe.elapsed.as_millis() as u64,
        "attempts": probe.attempts,
    })
}

/// The evidence of a content refused for its shape: the reason and every row of the content
/// as read, including the unreadable ones with their error.
pub fn bad_shape(
    instance_id: &str,
    config: &crate::model::SegmentConfig,
    bad: &crate::model::BadContent,
) -> Value {
    let rows: Vec<Value> = config
        .segments
        .iter()
        .filter(|s| s.content == bad.content)
        .map(row)
        .collect();
    let unreadable: Vec<_> = config
        .unreadable
        .iter()
        .filter(|u| u.content == bad.content)
        .collect();
    json!({
        "instance_id": instance_id,
        "version": env!("CARGO_PKG_VERSION"),
        "rule": crate::core::Rule::BadShape,
        "content": bad.content,
        "refusal": bad.reason,
        "rows": rows,
        "unreadable": unreadable,
    })
}

/// The evidence of a fence: the pair as read, what the driver was asked to do and what came
/// of it (its alarms), and the driver's own detail.
pub fn fence(
    instance_id: &str,
    pair: &Pair,
    work: &crate::driver::Upkeep,
    alarms: &[crate::driver::DriverAlarm],
    driver: Option<Value>,
) -> Value {
    json!({
        "instance_id": instance_id,
        "version": env!("CARGO_PKG_VERSION"),
        "rule": crate::core::Rule::Fence,
        "content": pair.content(),
        "before": { "primary": row(&pair.primary), "mirror": row(&pair.mirror) },
        "upkeep": work,
        "alarms": alarms,
        "driver": driver,
    })
}
