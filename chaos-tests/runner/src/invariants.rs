//! The checker: each invariant is a pure function of what was recorded (`Recorded`) and
//! returns a verdict with the evidence for every violation. The unit tests feed each one a
//! crafted history that violates it, so every check is known to be able to fail.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::history::{replay, transactions, CoordEvent, Expect, Millis, Recorded, Term, Timing};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    Pass,
    Fail,
    /// Nothing in this run could exercise it (e.g. no workload without real pairs).
    NotApplicable,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub name: &'static str,
    pub status: Status,
    /// One line per violation (or, for a pass, a short note of what was checked).
    pub details: Vec<String>,
}

fn verdict(name: &'static str, checked: usize, violations: Vec<String>) -> Verdict {
    let status = if !violations.is_empty() {
        Status::Fail
    } else if checked == 0 {
        Status::NotApplicable
    } else {
        Status::Pass
    };
    let details = if violations.is_empty() {
        vec![format!("{checked} checked")]
    } else {
        violations
    };
    Verdict {
        name,
        status,
        details,
    }
}

fn ts(us: i64) -> String {
    let ms = us.div_euclid(1000);
    let secs = ms.div_euclid(1000);
    format!(
        "{}.{:03}",
        humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64)
        ),
        ms.rem_euclid(1000)
    )
}

/// Every per-scenario check, in report order. `acknowledged_writes_survive` is judged once
/// for the whole run, since the workload spans every scenario.
pub fn check_all(r: &Recorded, t: &Timing) -> Vec<Verdict> {
    vec![
        one_leader_per_epoch(r),
        one_primary_per_content(r),
        no_out_of_sync_promotion(r),
        history_and_evidence(r),
        no_writes_without_quorum(r, t),
        no_message_after_deposition(r),
        failures_acted_on_in_time(r, t),
        one_promotion_per_fault(r),
        no_transition_others_could_reach(r, t),
        configuration_is_the_history_replayed(r),
        coordinator_single_writer(r),
        coordinator_writes_survive(r),
    ]
}

/// Whether a coordinator history event starts or completes a failover.
fn is_failover_event(e: &CoordEvent) -> bool {
    e.event == "intent" || e.event == "promoted"
}

/// Windows in which two VIP holders are the injected fault itself (dual-vip): from the
/// injection until the harness took it back, plus the agents' interval to notice.
fn injected_vip_windows(r: &Recorded) -> Vec<(Millis, Millis)> {
    r.faults
        .iter()
        .filter(|f| matches!(f.expect, Expect::VipAlarm { .. }))
        .map(|f| {
            (
                f.at,
                f.healed_at
                    .unwrap_or(Millis::MAX)
                    .saturating_add(VIP_SETTLE_MS),
            )
        })
        .collect()
}

/// How long after an injected second VIP holder is taken back a sample may still show it (the
/// agents' interval, 1 s in the chaos cluster, with margin).
pub const VIP_SETTLE_MS: i64 = 2000;

/// The coordinator pair has a single writer: in no sample do both servers acknowledge writes
/// (out of recovery, not read-only, not waiting for a standby they lack) with runs of such
/// answers that overlap in time ([`CoordSample::overlapping_writers`]), and in no sample do
/// both coordinator hosts carry the VIP — except while the harness itself injected the second
/// holder (dual-vip). Not applicable outside the coordinator scenarios (no samples).
pub fn coordinator_single_writer(r: &Recorded) -> Verdict {
    let windows = injected_vip_windows(r);
    let mut bad = Vec::new();
    for s in &r.coord_samples {
        let both = s.overlapping_writers();
        if !both.is_empty() {
            bad.push(format!(
                "{}: {} coordinator servers accept writes: {}",
                ts(s.at * 1000),
                both.len(),
                both.join(", ")
            ));
        }
        let injected = windows.iter().any(|(a, b)| s.at >= *a && s.at <= *b);
        if s.vip.len() > 1 && !injected {
            bad.push(format!(
                "{}: {} hosts carry the VIP: {}",
                ts(s.at * 1000),
                s.vip.len(),
                s.vip.join(", ")
            ));
        }
    }
    // One line per episode is enough evidence; keep the first few.
    let n = bad.len();
    if n > 5 {
        bad.truncate(5);
        bad.push(format!("… {} violating samples in all", n));
    }
    verdict(
        "single coordinator writer, single VIP holder",
        r.coord_samples.len(),
        bad,
    )
}

/// Every write acknowledged through the VIP is on the acting coordinator at the end. The pair
/// replicates synchronously, so an acknowledged commit is on the standby that gets promoted.
pub fn coordinator_writes_survive(r: &Recorded) -> Verdict {
    const NAME: &str = "no acknowledged write through the VIP lost";
    let Some(found) = &r.coord_survivors else {
        if r.coord_acks.is_empty() {
            return verdict(NAME, 0, Vec::new());
        }
        return verdict(
            NAME,
            r.coord_acks.len(),
            vec![format!(
                "{} writes were acknowledged through the VIP but the acting coordinator's rows could not be read at the end",
                r.coord_acks.len()
            )],
        );
    };
    let found: BTreeSet<i64> = found.iter().copied().collect();
    let lost: Vec<_> = r
        .coord_acks
        .iter()
        .filter(|a| !found.contains(&a.seq))
        .collect();
    let bad = if lost.is_empty() {
        Vec::new()
    } else {
        vec![format!(
            "{} of {} acknowledged writes lost, e.g. seq {} acked at {} by {}",
            lost.len(),
            r.coord_acks.len(),
            lost[0].seq,
            ts(lost[0].at * 1000),
            lost[0].server
        )]
    };
    verdict(NAME, r.coord_acks.len(), bad)
}

/// The configuration as it stands at the end (the Cloudberry blob, read at one etcd revision
/// with the history) is exactly the baseline with every history row applied, and has one
/// primary per content: every change of the blob came with its history rows (and, by
/// invariant 4, its evidence), and no history row claims a change the blob does not hold.
/// Not applicable where no final configuration was read (the SQL catalogs).
pub fn configuration_is_the_history_replayed(r: &Recorded) -> Verdict {
    const NAME: &str = "configuration at the end = baseline + history (blob)";
    let Some(actual) = &r.final_config else {
        return verdict(NAME, 0, Vec::new());
    };
    let (_, states) = replay(&r.initial, &r.history);
    let mut expected = states
        .last()
        .map_or_else(|| r.initial.clone(), |(_, rows)| rows.clone());
    expected.sort_by_key(|x| x.dbid);
    let mut actual = actual.clone();
    actual.sort_by_key(|x| x.dbid);
    let mut bad = Vec::new();
    let dbids: BTreeSet<i16> = expected.iter().chain(&actual).map(|x| x.dbid).collect();
    for dbid in dbids {
        let want = expected.iter().find(|x| x.dbid == dbid);
        let got = actual.iter().find(|x| x.dbid == dbid);
        if want != got {
            bad.push(format!(
                "dbid {dbid}: the configuration has {}, the baseline with the history replayed {}",
                got.map_or("no row".into(), |x| format!(
                    "{}/{}/{}",
                    x.role, x.status, x.mode
                )),
                want.map_or("no row".into(), |x| format!(
                    "{}/{}/{}",
                    x.role, x.status, x.mode
                )),
            ));
        }
    }
    let mut per: BTreeMap<i16, Vec<i16>> = BTreeMap::new();
    for x in actual.iter().filter(|x| x.role == 'p') {
        per.entry(x.content).or_default().push(x.dbid);
    }
    for (content, primaries) in per {
        if primaries.len() > 1 {
            bad.push(format!(
                "the configuration at the end: content {content} has primaries {primaries:?}"
            ));
        }
    }
    verdict(NAME, actual.len(), bad)
}

/// Which etcd incarnation `at` falls in: the number of rebuilds at or before it (0: the first).
fn incarnation(rebuilds: &[Millis], at: Millis) -> usize {
    rebuilds.iter().filter(|&&b| b <= at).count()
}

/// At most one leader's transitions accepted per epoch, none from a stale epoch, and each from
/// an instance that took office with that epoch (per its log).
pub fn one_leader_per_epoch(r: &Recorded) -> Verdict {
    let mut bad = Vec::new();
    let mut by_epoch: BTreeMap<i64, BTreeSet<&str>> = BTreeMap::new();
    let mut ev: Vec<_> = r.evidence.iter().collect();
    ev.sort_by_key(|e| e.id);
    let mut highest = i64::MIN;
    for e in &ev {
        by_epoch.entry(e.epoch).or_default().insert(&e.instance_id);
        if e.epoch < highest {
            bad.push(format!(
                "evidence {} (content {}, {}) by {} carries epoch {} after epoch {} was accepted: stale epoch",
                e.id, e.content, ts(e.time_us), e.instance_id, e.epoch, highest
            ));
        }
        highest = highest.max(e.epoch);
        let inc = incarnation(&r.etcd_rebuilds, e.time_us.div_euclid(1000));
        if !r.terms.is_empty()
            && !r.terms.iter().any(|t| {
                t.epoch == e.epoch
                    && t.instance == e.instance_id
                    && incarnation(&r.etcd_rebuilds, t.at) == inc
            })
        {
            bad.push(format!(
                "evidence {} by {} carries epoch {}, but no ftsd log shows {} taking office with it",
                e.id, e.instance_id, e.epoch, e.instance_id
            ));
        }
    }
    for (epoch, who) in &by_epoch {
        if who.len() > 1 {
            bad.push(format!(
                "epoch {epoch}: transitions accepted from {} instances: {}",
                who.len(),
                who.iter().copied().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    // Keyed by etcd incarnation too: where epochs are raw etcd revisions (Cloudberry mode) a
    // rebuilt etcd hands out the same numbers again; within one incarnation it stays strict.
    let mut term_epochs: BTreeMap<(usize, i64), BTreeSet<&str>> = BTreeMap::new();
    for t in &r.terms {
        term_epochs
            .entry((incarnation(&r.etcd_rebuilds, t.at), t.epoch))
            .or_default()
            .insert(&t.instance);
    }
    for ((inc, epoch), who) in term_epochs {
        if who.len() > 1 {
            let scope = if r.etcd_rebuilds.is_empty() {
                String::new()
            } else {
                format!(" (etcd incarnation {inc})")
            };
            bad.push(format!(
                "epoch {epoch}{scope}: {} instances took office with it: {}",
                who.len(),
                who.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    verdict(
        "at most one leader per epoch, no stale epoch",
        ev.len(),
        bad,
    )
}

/// At most one primary per content after every catalog transaction, and at most one live
/// segment acting as primary per content in every sample of the segments themselves.
pub fn one_primary_per_content(r: &Recorded) -> Verdict {
    let mut bad = Vec::new();
    let (_, mut states) = replay(&r.initial, &r.history);
    states.insert(0, (0, r.initial.clone()));
    for (time_us, rows) in &states {
        let mut per: BTreeMap<i16, Vec<i16>> = BTreeMap::new();
        for row in rows.iter().filter(|x| x.role == 'p') {
            per.entry(row.content).or_default().push(row.dbid);
        }
        for (content, dbids) in per {
            if dbids.len() > 1 {
                bad.push(format!(
                    "catalog after transaction at {}: content {content} has primaries {dbids:?}",
                    ts(*time_us)
                ));
            }
        }
    }
    for s in &r.acting {
        let mut per: BTreeMap<i16, Vec<i16>> = BTreeMap::new();
        for (content, dbid) in &s.primaries {
            per.entry(*content).or_default().push(*dbid);
        }
        for (content, dbids) in per {
            if dbids.len() > 1 {
                bad.push(format!(
                    "segments at {}: content {content} has live primaries {dbids:?}",
                    ts(s.at * 1000)
                ));
            }
        }
    }
    verdict(
        "at most one primary per content",
        states.len() + r.acting.len(),
        bad,
    )
}

/// A mirror is promoted only if the catalog had it up and in sync just before.
pub fn no_out_of_sync_promotion(r: &Recorded) -> Verdict {
    let (promotions, _) = replay(&r.initial, &r.history);
    let bad = promotions
        .iter()
        .filter(|p| p.before.mode != 's' || p.before.status != 'u')
        .map(|p| {
            format!(
                "{}: dbid {} (content {}) promoted while {}/{} (status/mode) — not an in-sync mirror",
                ts(p.time_us),
                p.dbid,
                p.content,
                p.before.status,
                p.before.mode
            )
        })
        .collect();
    verdict(
        "no promotion of a mirror that was not in sync",
        promotions.len(),
        bad,
    )
}

/// Every transition (history rows of one transaction) has exactly one evidence row with an
/// epoch, an instance and the same dbids, and every evidence row has its history rows, except
/// a refusal (empty dbids), which must have none.
pub fn history_and_evidence(r: &Recorded) -> Verdict {
    let mut bad: Vec<String> = r
        .unparsed_history
        .iter()
        .map(|d| format!("history row not in the in-core FTS format: {d:?}"))
        .collect();
    let txs = transactions(&r.history);
    for tx in &txs {
        let dbids: BTreeSet<i16> = tx.iter().map(|h| h.dbid).collect();
        let matching: Vec<_> = r
            .evidence
            .iter()
            .filter(|e| e.time_us == tx[0].time_us)
            .collect();
        match matching.as_slice() {
            [e] => {
                let ev: BTreeSet<i16> = e.dbids.iter().copied().collect();
                if ev != dbids {
                    bad.push(format!(
                        "transition at {}: history dbids {dbids:?}, evidence {} names {ev:?}",
                        ts(tx[0].time_us),
                        e.id
                    ));
                }
                if e.epoch <= 0 || e.instance_id.is_empty() {
                    bad.push(format!(
                        "evidence {} has no epoch/instance ({} / {:?})",
                        e.id, e.epoch, e.instance_id
                    ));
                }
            }
            [] => bad.push(format!(
                "transition at {} (dbids {dbids:?}) has no evidence row",
                ts(tx[0].time_us)
            )),
            many => bad.push(format!(
                "transition at {} has {} evidence rows",
                ts(tx[0].time_us),
                many.len()
            )),
        }
        let mut seen = BTreeSet::new();
        for h in tx {
            if !seen.insert(h.dbid) {
                bad.push(format!(
                    "transition at {}: dbid {} has more than one history row",
                    ts(h.time_us),
                    h.dbid
                ));
            }
        }
    }
    for e in &r.evidence {
        let has_history = txs.iter().any(|tx| tx[0].time_us == e.time_us);
        // A refused failover (rule double_fault, data-loss guard) is recorded with empty dbids
        // and changes no row: it must have no history rows, and needs none.
        if e.dbids.is_empty() {
            if has_history {
                bad.push(format!(
                    "evidence {} ({}) records a refusal (no dbids) but history rows share its transaction",
                    e.id,
                    ts(e.time_us)
                ));
            }
            continue;
        }
        if !has_history {
            bad.push(format!(
                "evidence {} ({}, content {}) has no history rows",
                e.id,
                ts(e.time_us),
                e.content
            ));
        }
    }
    verdict(
        "every transition has one history row per changed row and one evidence row",
        txs.len(),
        bad,
    )
}

/// Nothing is written to the catalog while etcd has no quorum, once a leader's act-by deadline
/// (at most lease TTL − act margin after its last acknowledged keepalive) has passed.
pub fn no_writes_without_quorum(r: &Recorded, t: &Timing) -> Verdict {
    let grace = t.lease_ttl_ms - t.act_margin_ms;
    let mut bad = Vec::new();
    for q in &r.quorum_losses {
        let from = q.from + grace;
        for e in &r.evidence {
            let at = e.time_us.div_euclid(1000);
            if at >= from && at <= q.to {
                bad.push(format!(
                    "evidence {} (content {}, by {} epoch {}) written at {} while etcd had no quorum ({} .. {}, act-by grace {grace} ms)",
                    e.id, e.content, e.instance_id, e.epoch, ts(e.time_us), ts(q.from * 1000), ts(q.to * 1000)
                ));
            }
        }
    }
    verdict(
        "zero catalog writes while etcd has no quorum",
        r.quorum_losses.len(),
        bad,
    )
}

/// No action message from a deposed leader lands once a newer leader exists: each PROMOTE /
/// SYNCREP_OFF fts-segsim received must come from the instance that took office last before
/// it landed. A leader's act-by deadline ends at least the act margin before its lease
/// expires, and a successor takes office only after that, so a message still in flight from a
/// legitimate attempt lands before the successor's term and needs no tolerance here.
pub fn no_message_after_deposition(r: &Recorded) -> Verdict {
    let mut bad = Vec::new();
    let mut checked = 0;
    // Each term starts at its earliest sign in any log, within its etcd incarnation: where
    // epochs are raw etcd revisions, one instance may take the same number again after a
    // rebuild, and that is a new term.
    let mut starts: BTreeMap<(usize, i64, &str), i64> = BTreeMap::new();
    for t in r.terms.iter().chain(&r.observed) {
        let inc = incarnation(&r.etcd_rebuilds, t.at);
        let at = starts
            .entry((inc, t.epoch, t.instance.as_str()))
            .or_insert(t.at);
        *at = (*at).min(t.at);
    }
    for d in &r.deliveries {
        let Some(sitting) = starts
            .iter()
            .map(|(&(_, epoch, instance), &at)| Term {
                instance: instance.to_string(),
                epoch,
                at,
            })
            .filter(|t| t.at <= d.at)
            .max_by_key(|t| (t.at, t.epoch))
        else {
            bad.push(format!(
                "{} to dbid {} from {} landed at {} before any leader took office",
                d.kind,
                d.dbid,
                d.instance,
                ts(d.at * 1000)
            ));
            continue;
        };
        checked += 1;
        if sitting.instance != d.instance {
            bad.push(format!(
                "{} to dbid {} from {} landed at {}, after {} took office with epoch {} at {}",
                d.kind,
                d.dbid,
                d.instance,
                ts(d.at * 1000),
                sitting.instance,
                sitting.epoch,
                ts(sitting.at * 1000)
            ));
        }
    }
    verdict(
        "no action message from a deposed leader after a newer one took office",
        checked,
        bad,
    )
}

/// Every write acknowledged while its pair was in sync is on the primary at the end.
pub fn acknowledged_writes_survive(r: &Recorded) -> Verdict {
    let Some(survivors) = &r.survivors else {
        return verdict("no acknowledged write lost on in-sync pairs", 0, Vec::new());
    };
    let mut bad = Vec::new();
    let mut checked = 0;
    for content in r.acks.iter().map(|a| a.content).collect::<BTreeSet<_>>() {
        let found: BTreeSet<i64> = survivors
            .iter()
            .filter(|s| s.content == content)
            .flat_map(|s| s.seqs.iter().copied())
            .collect();
        let lost: Vec<_> = r
            .acks
            .iter()
            .filter(|a| a.content == content && a.in_sync)
            .inspect(|_| checked += 1)
            .filter(|a| !found.contains(&a.seq))
            .collect();
        if !lost.is_empty() {
            bad.push(format!(
                "content {content}: {} acknowledged writes lost, e.g. seq {} acked at {} via dbid {}",
                lost.len(),
                lost[0].seq,
                ts(lost[0].at * 1000),
                lost[0].dbid
            ));
        }
    }
    verdict("no acknowledged write lost on in-sync pairs", checked, bad)
}

fn first_promotion_after(r: &Recorded, content: i16, after: Millis) -> Option<Millis> {
    let (promotions, _) = replay(&r.initial, &r.history);
    promotions
        .iter()
        .filter(|p| p.content == content && p.time_us.div_euclid(1000) >= after)
        .map(|p| p.time_us.div_euclid(1000))
        .min()
}

/// Each injected failure is acted on as expected: a promotion (when allowed) within the
/// bound plus slack, a mirror marked down, or no transition while none is allowed.
pub fn failures_acted_on_in_time(r: &Recorded, t: &Timing) -> Verdict {
    let mut bad = Vec::new();
    let mut checked = 0;
    let (promotions, _) = replay(&r.initial, &r.history);
    for f in &r.faults {
        match &f.expect {
            Expect::Promotion {
                content,
                not_before,
                bound_ms,
            } => {
                checked += 1;
                let early = promotions.iter().find(|p| {
                    p.content == *content
                        && p.time_us.div_euclid(1000) >= f.at
                        && p.time_us.div_euclid(1000) < *not_before
                });
                if let Some(p) = early {
                    bad.push(format!(
                        "{}: content {content} promoted at {}, before it was allowed ({})",
                        f.what,
                        ts(p.time_us),
                        ts(*not_before * 1000)
                    ));
                }
                let limit = bound_ms + t.slack_ms;
                match first_promotion_after(r, *content, *not_before) {
                    Some(at) if at - not_before <= limit => {}
                    Some(at) => bad.push(format!(
                        "{}: content {content} promoted {} ms after it was allowed, bound {bound_ms} ms + slack {} ms",
                        f.what,
                        at - not_before,
                        t.slack_ms
                    )),
                    None => bad.push(format!(
                        "{}: content {content} never promoted (bound {bound_ms} ms + slack {} ms)",
                        f.what, t.slack_ms
                    )),
                }
            }
            Expect::MirrorDown { content, bound_ms } => {
                checked += 1;
                let (_, states) = replay(&r.initial, &r.history);
                let marked = states.iter().find(|(time_us, rows)| {
                    time_us.div_euclid(1000) >= f.at
                        && rows
                            .iter()
                            .any(|x| x.content == *content && x.role == 'm' && x.status == 'd')
                });
                match marked {
                    Some((time_us, _)) if time_us.div_euclid(1000) - f.at <= bound_ms + t.slack_ms => {}
                    Some((time_us, _)) => bad.push(format!(
                        "{}: mirror of content {content} marked down {} ms after the fault, bound {bound_ms} ms + slack {} ms",
                        f.what,
                        time_us.div_euclid(1000) - f.at,
                        t.slack_ms
                    )),
                    None => bad.push(format!(
                        "{}: mirror of content {content} never marked down",
                        f.what
                    )),
                }
                if let Some(p) = promotions.iter().find(|p| {
                    p.content == *content
                        && p.time_us.div_euclid(1000) >= f.at
                        && f.healed_at.is_none_or(|h| p.time_us.div_euclid(1000) <= h)
                }) {
                    bad.push(format!(
                        "{}: content {content} promoted at {} although only its mirror failed",
                        f.what,
                        ts(p.time_us)
                    ));
                }
            }
            Expect::NoTransition { content, until } => {
                checked += 1;
                for h in r.history.iter().filter(|h| {
                    h.content == *content && h.time_ms() >= f.at && h.time_ms() <= *until
                }) {
                    bad.push(format!(
                        "{}: content {content} changed at {} ({}) although no transition was allowed until {}",
                        f.what,
                        ts(h.time_us),
                        h.desc,
                        ts(*until * 1000)
                    ));
                }
            }
            Expect::Fenced {
                content,
                dbid,
                bound_ms,
            } => {
                checked += 1;
                let fence = r
                    .evidence
                    .iter()
                    .filter(|e| e.rule == "fence" && e.content == *content)
                    .map(|e| e.time_us.div_euclid(1000))
                    .filter(|at| *at >= f.at)
                    .min();
                match fence {
                    Some(at) if at - f.at <= bound_ms + t.slack_ms => {}
                    Some(at) => bad.push(format!(
                        "{}: dbid {dbid} fenced {} ms after it came back, bound {bound_ms} ms + slack {} ms",
                        f.what,
                        at - f.at,
                        t.slack_ms
                    )),
                    None => bad.push(format!(
                        "{}: dbid {dbid} (content {content}) came back writable and was never fenced",
                        f.what
                    )),
                }
            }
            Expect::ObserverFault {
                instance,
                alarm: Some(rule),
                bound_ms,
                alarm_metric,
            } => {
                checked += 1;
                let raised = r
                    .evidence
                    .iter()
                    .filter(|e| e.rule == *rule && e.instance_id == *instance)
                    .map(|e| e.time_us.div_euclid(1000))
                    .filter(|at| *at >= f.at)
                    .min();
                match raised {
                    Some(at) if at - f.at <= bound_ms + t.slack_ms => {}
                    Some(at) => bad.push(format!(
                        "{}: {instance} raised the {rule} alarm {} ms after the fault, bound {bound_ms} ms + slack {} ms",
                        f.what,
                        at - f.at,
                        t.slack_ms
                    )),
                    None => bad.push(format!(
                        "{}: {instance} wrote no {rule} evidence (the alarm was never raised)",
                        f.what
                    )),
                }
                match alarm_metric {
                    Some(n) if *n >= 1 => {}
                    Some(n) => bad.push(format!(
                        "{}: {instance}'s ftsd_alarms_total{{rule=\"{rule}\"}} rose by {n} over the fault",
                        f.what
                    )),
                    None => bad.push(format!(
                        "{}: {instance}'s ftsd_alarms_total{{rule=\"{rule}\"}} could not be read",
                        f.what
                    )),
                }
            }
            Expect::CoordinatorFailover {
                from,
                not_before,
                bound_ms,
                write_bound_ms,
            } => {
                checked += 1;
                coordinator_failover_in_time(
                    r,
                    t,
                    f,
                    (from.as_str(), *not_before, *bound_ms, *write_bound_ms),
                    &mut bad,
                );
            }
            Expect::NoCoordinatorFailover { until } => {
                checked += 1;
                no_coordinator_failover(r, f, *until, &mut bad);
            }
            Expect::VipAlarm {
                bound_ms,
                until,
                holders_metric,
            } => {
                checked += 1;
                let raised = r
                    .coord_alarms
                    .iter()
                    .filter(|a| a.rule == "vip_holders" && a.at >= f.at)
                    .min_by_key(|a| a.at);
                match raised {
                    Some(a) if a.at - f.at <= bound_ms + t.slack_ms => {}
                    Some(a) => bad.push(format!(
                        "{}: the vip_holders alarm was raised {} ms after the injection (by {}), bound {bound_ms} ms + slack {} ms",
                        f.what,
                        a.at - f.at,
                        a.instance,
                        t.slack_ms
                    )),
                    None => bad.push(format!(
                        "{}: no ftsd raised the vip_holders alarm",
                        f.what
                    )),
                }
                match holders_metric {
                    Some(n) if *n >= 2 => {}
                    Some(n) => bad.push(format!(
                        "{}: the leader's ftsd_vip_holders read at most {n} during the injection",
                        f.what
                    )),
                    None => bad.push(format!(
                        "{}: the leader's ftsd_vip_holders could not be read",
                        f.what
                    )),
                }
                no_coordinator_failover(r, f, *until, &mut bad);
            }
            Expect::ObserverFault { alarm: None, .. } | Expect::Nothing => {}
        }
    }
    verdict(
        "every injected failure acted on as expected within its bound",
        checked,
        bad,
    )
}

/// A lost coordinator: its standby promoted exactly once, in time, and writes through the VIP
/// acknowledged by another server in time. `e` is (old coordinator, not_before, bound,
/// write bound).
fn coordinator_failover_in_time(
    r: &Recorded,
    t: &Timing,
    f: &super::history::Fault,
    e: (&str, Millis, i64, i64),
    bad: &mut Vec<String>,
) {
    let (from, not_before, bound_ms, write_bound_ms) = e;
    let promoted: Vec<&CoordEvent> = r
        .coord_events
        .iter()
        .filter(|e| e.event == "promoted" && e.at >= f.at)
        .collect();
    if let Some(early) = promoted.iter().find(|e| e.at < not_before) {
        bad.push(format!(
            "{}: coordinator failover recorded at {}, before it was allowed ({})",
            f.what,
            ts(early.at * 1000),
            ts(not_before * 1000)
        ));
    }
    match promoted.iter().map(|e| e.at).min() {
        Some(at) if at - not_before <= bound_ms + t.slack_ms => {}
        Some(at) => bad.push(format!(
            "{}: the standby promoted {} ms after the coordinator was lost, bound {bound_ms} ms + slack {} ms",
            f.what,
            at - not_before,
            t.slack_ms
        )),
        None => bad.push(format!(
            "{}: the coordinator's standby was never promoted",
            f.what
        )),
    }
    if promoted.len() > 1 {
        bad.push(format!(
            "{}: the coordinator failed over {} times ({})",
            f.what,
            promoted.len(),
            promoted
                .iter()
                .map(|e| format!("{} -> {} at {}", e.from, e.to, ts(e.at * 1000)))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if let Some(e) = promoted.iter().find(|e| e.from != from) {
        bad.push(format!(
            "{}: the failover recorded replaces {}, not the lost coordinator {from}",
            f.what, e.from
        ));
    }
    let resumed = r
        .coord_acks
        .iter()
        .filter(|a| a.at >= not_before && a.server != from)
        .map(|a| a.at)
        .min();
    match resumed {
        Some(at) if at - not_before <= write_bound_ms + t.slack_ms => {}
        Some(at) => bad.push(format!(
            "{}: the first write through the VIP on the new coordinator came {} ms after the loss, bound {write_bound_ms} ms + slack {} ms",
            f.what,
            at - not_before,
            t.slack_ms
        )),
        None => bad.push(format!(
            "{}: no write through the VIP was acknowledged by another server after the loss",
            f.what
        )),
    }
}

/// No coordinator failover started or completed from the fault until `until`.
fn no_coordinator_failover(
    r: &Recorded,
    f: &super::history::Fault,
    until: Millis,
    bad: &mut Vec<String>,
) {
    for e in r
        .coord_events
        .iter()
        .filter(|e| is_failover_event(e) && e.at >= f.at && e.at <= until)
    {
        bad.push(format!(
            "{}: coordinator {} recorded at {} ({} -> {}, by {} epoch {}) although no failover was allowed until {}",
            f.what,
            e.event,
            ts(e.at * 1000),
            e.from,
            e.to,
            e.instance,
            e.epoch,
            ts(until * 1000)
        ));
    }
}

/// No transition for a segment that the other members could reach. While only one FTS
/// instance has lost its view of the segments (an [`Expect::ObserverFault`]: its own network
/// path, credentials or resolver failed, not the segments), and until detection + slack after
/// that fault healed (a cycle decided during the fault may commit or send late, as the
/// PROMOTEs that landed when an FTS host's network came back did before issue 12), no content
/// may change in the catalog and no PROMOTE / SYNCREP_OFF may land for its instances — unless
/// that content was itself faulted: a fault recorded for it, injected before the change and
/// not healed before the observer's fault began. The harness knows which host it cut, so the
/// other members could reach every segment it did not fault.
pub fn no_transition_others_could_reach(r: &Recorded, t: &Timing) -> Verdict {
    let mut bad = Vec::new();
    let mut checked = 0;
    // A dbid's content never changes.
    let content_of: BTreeMap<i16, i16> = r
        .initial
        .iter()
        .map(|x| (x.dbid, x.content))
        .chain(r.history.iter().map(|h| (h.dbid, h.content)))
        .collect();
    let txs = transactions(&r.history);
    for f in &r.faults {
        let Expect::ObserverFault { instance, .. } = &f.expect else {
            continue;
        };
        checked += 1;
        let end = f
            .healed_at
            .map_or(Millis::MAX, |h| h.saturating_add(t.detect_ms + t.slack_ms));
        let faulted = |content: i16, at: Millis| {
            r.faults.iter().any(|g| {
                g.content == Some(content) && g.at <= at && g.healed_at.is_none_or(|h| h >= f.at)
            })
        };
        for tx in &txs {
            let at = tx[0].time_ms();
            if at < f.at || at > end {
                continue;
            }
            for content in tx.iter().map(|h| h.content).collect::<BTreeSet<_>>() {
                if faulted(content, at) {
                    continue;
                }
                let rows: Vec<&str> = tx
                    .iter()
                    .filter(|h| h.content == content)
                    .map(|h| h.desc.as_str())
                    .collect();
                bad.push(format!(
                    "{}: content {content} changed at {} ({}) although only {instance} had lost its view and the other members could reach it",
                    f.what,
                    ts(tx[0].time_us),
                    rows.join("; ")
                ));
            }
        }
        for d in r.deliveries.iter().filter(|d| d.at >= f.at && d.at <= end) {
            match content_of.get(&d.dbid) {
                Some(&content) if faulted(content, d.at) => {}
                Some(&content) => bad.push(format!(
                    "{}: {} to dbid {} (content {content}) from {} landed at {} although only {instance} had lost its view and the other members could reach it",
                    f.what,
                    d.kind,
                    d.dbid,
                    d.instance,
                    ts(d.at * 1000)
                )),
                None => bad.push(format!(
                    "{}: {} to unknown dbid {} from {} landed at {}",
                    f.what,
                    d.kind,
                    d.dbid,
                    d.instance,
                    ts(d.at * 1000)
                )),
            }
        }
    }
    verdict(
        "no transition for a segment that the other members could reach",
        checked,
        bad,
    )
}

/// No content is promoted more than once per fault: between a fault and the next fault on the
/// same content (or the end of the record), at most one promotion of that content.
pub fn one_promotion_per_fault(r: &Recorded) -> Verdict {
    let (promotions, _) = replay(&r.initial, &r.history);
    let mut bad = Vec::new();
    let mut faults: Vec<_> = r.faults.iter().collect();
    faults.sort_by_key(|f| f.at);
    let mut checked = 0;
    for (i, f) in faults.iter().enumerate() {
        let Some(content) = f.content else {
            continue;
        };
        checked += 1;
        let end = faults[i + 1..]
            .iter()
            .find(|g| g.content == Some(content))
            .map(|g| g.at)
            .unwrap_or(Millis::MAX);
        let n: Vec<_> = promotions
            .iter()
            .filter(|p| {
                p.content == content
                    && p.time_us.div_euclid(1000) >= f.at
                    && p.time_us.div_euclid(1000) < end
            })
            .collect();
        if n.len() > 1 {
            bad.push(format!(
                "{}: content {content} promoted {} times ({})",
                f.what,
                n.len(),
                n.iter()
                    .map(|p| format!("dbid {} at {}", p.dbid, ts(p.time_us)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    verdict("no content promoted more than once per fault", checked, bad)
}

#[cfg(test)]
mod tests;
