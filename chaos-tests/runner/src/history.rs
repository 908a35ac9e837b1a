//! What a chaos run records, in plain data: the catalog before a scenario, the catalog's own
//! history and evidence rows, leader terms from the ftsd logs, the faults the harness injected
//! with what they should lead to, and the workload's acknowledgements. The checker
//! (`invariants`) works on these values only, so it is tested with crafted histories.

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch (catalog `now()`, log timestamps and the harness's clock
/// all come from the same kernel clock: the containers share the host's).
pub type Millis = i64;

pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// One `gp_segment_configuration` row, as characters (`p`/`m`, `u`/`d`, `s`/`n`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    pub dbid: i16,
    pub content: i16,
    pub role: char,
    pub status: char,
    pub mode: char,
}

/// One `gp_configuration_history` row with the state its text announces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryRow {
    /// Transaction time in microseconds (exact: rows of one transaction share it).
    pub time_us: i64,
    pub dbid: i16,
    pub content: i16,
    pub role: char,
    pub status: char,
    pub mode: char,
    pub desc: String,
}

impl HistoryRow {
    /// Parses the in-core FTS text `FTS: update role, status, and mode for dbid D with
    /// contentid C to R, S, and M`; `None` for any other text.
    pub fn parse(time_us: i64, dbid: i16, desc: &str) -> Option<HistoryRow> {
        let rest = desc.strip_prefix("FTS: update role, status, and mode for dbid ")?;
        let (d, rest) = rest.split_once(" with contentid ")?;
        let (c, rest) = rest.split_once(" to ")?;
        let parts: Vec<&str> = rest.split(", ").collect();
        let [r, s, m] = parts.as_slice() else {
            return None;
        };
        let ch = |s: &str| {
            let mut it = s.trim_start_matches("and ").chars();
            let c = it.next()?;
            it.next().is_none().then_some(c)
        };
        (d.parse::<i16>().ok()? == dbid).then_some(())?;
        Some(HistoryRow {
            time_us,
            dbid,
            content: c.parse().ok()?,
            role: ch(r)?,
            status: ch(s)?,
            mode: ch(m)?,
            desc: desc.to_string(),
        })
    }

    pub fn time_ms(&self) -> Millis {
        self.time_us.div_euclid(1000)
    }
}

/// One `fts_evidence` row (the document itself is kept out; the report links by id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceRow {
    pub id: i64,
    pub time_us: i64,
    pub epoch: i64,
    pub instance_id: String,
    pub content: i16,
    pub rule: String,
    pub dbids: Vec<i16>,
}

/// `took office as leader` from an ftsd log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Term {
    pub instance: String,
    pub epoch: i64,
    pub at: Millis,
}

/// An action message (PROMOTE, SYNCREP_OFF) as fts-segsim received it: when it landed, the
/// FTS host that sent it (by its segnet address) and the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub at: Millis,
    pub instance: String,
    pub kind: String,
    pub dbid: i16,
}

/// What an injected fault must lead to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expect {
    /// A mirror of `content` is promoted no earlier than `not_before` and within `bound_ms` of
    /// it (the failure is injected earlier; promotion may only become allowed later, e.g. when
    /// etcd regains quorum).
    Promotion {
        content: i16,
        not_before: Millis,
        bound_ms: i64,
    },
    /// The mirror of `content` is marked down within `bound_ms`, and nothing is promoted.
    MirrorDown { content: i16, bound_ms: i64 },
    /// `content` has no transition at all until `until`.
    NoTransition { content: i16, until: Millis },
    /// `dbid`, a former primary the catalog lists as a mirror, came back writable: a `fence`
    /// evidence row for it within `bound_ms`.
    Fenced {
        content: i16,
        dbid: i16,
        bound_ms: i64,
    },
    /// Only FTS instance `instance` lost its view of the segments (its network path to them,
    /// its credentials, its resolver); every segment stays reachable for the other members.
    /// No content whose primary was not itself faulted may change, from the fault until
    /// detection + slack after it healed (invariant `no_transition_others_could_reach`). With
    /// `alarm`, that instance must also write an evidence row with this rule within
    /// `bound_ms`, and its ftsd must have counted the episode (`alarm_metric`, the increase of
    /// `ftsd_alarms_total{rule}` over the fault as the harness read it; `None`: not read).
    ObserverFault {
        instance: String,
        alarm: Option<String>,
        bound_ms: i64,
        alarm_metric: Option<i64>,
    },
    /// The coordinator `from` (`host:port`) was lost at the fault: its standby is promoted
    /// exactly once (a `promoted` record in etcd) no earlier than `not_before` and within
    /// `bound_ms` of it, and a write through the VIP is acknowledged by another server within
    /// `write_bound_ms` of it.
    CoordinatorFailover {
        from: String,
        not_before: Millis,
        bound_ms: i64,
        write_bound_ms: i64,
    },
    /// No coordinator failover (no `intent` or `promoted` record) from the fault until `until`.
    NoCoordinatorFailover { until: Millis },
    /// A second VIP holder was injected: the `vip_holders` alarm is raised (an ftsd log line)
    /// within `bound_ms`, the leader's `ftsd_vip_holders` gauge read at least 2 during the
    /// injection (`holders_metric`, the highest value the harness read; `None`: not read), and
    /// no coordinator failover follows until `until`. Two VIP holders are expected from the
    /// fault until it healed (the single-writer invariant leaves that window out).
    VipAlarm {
        bound_ms: i64,
        until: Millis,
        holders_metric: Option<i64>,
    },
    /// Nothing is required beyond the general invariants (e.g. a double fault: there is no
    /// in-sync mirror to promote).
    Nothing,
}

/// One injected fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    pub scenario: String,
    /// Short description: `kill -9 chaos-ftsd2 (leader)`, `segsim down dbid 3`, ...
    pub what: String,
    /// The content whose pair the fault concerns (none for leader-only or etcd-only faults).
    pub content: Option<i16>,
    pub at: Millis,
    /// When the harness undid it (container started, network reconnected, fault cleared).
    pub healed_at: Option<Millis>,
    pub expect: Expect,
}

/// An interval during which the harness kept etcd without quorum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumLoss {
    pub from: Millis,
    pub to: Millis,
}

/// A write the workload saw committed (acknowledged) on `content`'s primary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub content: i16,
    pub seq: i64,
    pub at: Millis,
    /// The primary it went through (dbid) and whether the pair was in sync at the time
    /// according to the catalog (only those writes are promised to survive a failover).
    pub dbid: i16,
    pub in_sync: bool,
}

/// The sequence numbers found on a content's primary at the end of the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Survivors {
    pub content: i16,
    pub seqs: Vec<i64>,
}

/// A sample of which segment instances act as primary (segment side, not catalog).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActingSample {
    pub at: Millis,
    /// (content, dbid) of every live instance acting as primary.
    pub primaries: Vec<(i16, i16)>,
}

/// One record of the coordinator pair's history in etcd (`<prefix>/<cluster>/coordinator/
/// history/…`): `intent`, `promoted`, `refused`, `fence_failed`, ….
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoordEvent {
    pub at: Millis,
    pub event: String,
    /// `host:port` of the old coordinator and of the standby.
    pub from: String,
    pub to: String,
    pub epoch: i64,
    pub instance: String,
}

/// A sample of the coordinator pair: the servers that answered, at their latest answer, that
/// they acknowledge writes, and the coordinator hosts (containers) whose interface carries the
/// VIP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoordSample {
    pub at: Millis,
    pub writable: Vec<WritableRun>,
    pub vip: Vec<String>,
}

/// One server's (`host:port`) current run of answers saying it acknowledges writes: its first
/// and its latest such answer, with no answer between saying otherwise. Two servers were
/// writable at once only where their runs overlap: a server killed at T answered last before
/// T, so the run of a standby promoted after T does not overlap its run, however recent the
/// dead server's last answer still is when the sample is taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WritableRun {
    pub server: String,
    pub since: Millis,
    pub last: Millis,
}

impl CoordSample {
    /// The servers whose writable runs share an instant (all of them, if they do).
    pub fn overlapping_writers(&self) -> Vec<&str> {
        let since = self.writable.iter().map(|r| r.since).max();
        let last = self.writable.iter().map(|r| r.last).min();
        match (since, last) {
            (Some(since), Some(last)) if self.writable.len() > 1 && since <= last => {
                self.writable.iter().map(|r| r.server.as_str()).collect()
            }
            _ => Vec::new(),
        }
    }
}

/// A write through the VIP that the coordinator acknowledged, and which server answered
/// (`host:port`, from the session's `cluster_name`: `inet_server_addr()` would be the VIP).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoordAck {
    pub seq: i64,
    pub at: Millis,
    pub server: String,
}

/// A coordinator alarm raised in an ftsd log (`vip_holders`, `coordinator_dual_writable`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoordAlarm {
    pub at: Millis,
    pub instance: String,
    pub rule: String,
}

/// Timing settings the bounds are computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timing {
    pub lease_ttl_ms: i64,
    pub act_margin_ms: i64,
    /// interval + (retries + 1) x timeout + retries x retry_delay.
    pub detect_ms: i64,
    pub slack_ms: i64,
}

/// Everything the checker looks at for one scenario.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded {
    /// The catalog at the scenario's start, and the history/evidence written after it.
    pub initial: Vec<Row>,
    pub history: Vec<HistoryRow>,
    /// History rows whose text could not be parsed (reported, and a violation).
    pub unparsed_history: Vec<String>,
    pub evidence: Vec<EvidenceRow>,
    pub terms: Vec<Term>,
    /// When the harness rebuilt etcd empty (etcd-rebuilt: the moment it killed the members),
    /// given only for a cluster whose epochs are raw etcd revisions (Cloudberry mode, where
    /// nothing outside etcd carries a generation): revisions start again in the new etcd, so
    /// an epoch is unique only within one etcd incarnation. Empty elsewhere: the SQL catalogs'
    /// epochs move to a new generation after a rebuild and stay unique across it.
    #[serde(default)]
    pub etcd_rebuilds: Vec<Millis>,
    /// `leader observed` lines of every log: a term starts at the earliest of these and its
    /// `took office` line (a leader may act before it logs taking office).
    pub observed: Vec<Term>,
    /// Action messages fts-segsim received during the scenario (empty for the real pairs).
    pub deliveries: Vec<Delivery>,
    pub faults: Vec<Fault>,
    pub quorum_losses: Vec<QuorumLoss>,
    pub acting: Vec<ActingSample>,
    pub acks: Vec<Ack>,
    pub survivors: Option<Vec<Survivors>>,
    /// The configuration at the end, read at the same etcd revision as the history and
    /// evidence (the Cloudberry blob; None for the SQL catalogs, where history is written in
    /// the catalog's own transactions).
    pub final_config: Option<Vec<Row>>,
    /// The coordinator pair (coordinator scenarios only): its history records in etcd written
    /// during the scenario, samples of its writable servers and VIP holders, the writes
    /// acknowledged through the VIP, the sequence numbers on the acting coordinator at the end
    /// (None: not read), and the alarms the ftsd logs raised.
    pub coord_events: Vec<CoordEvent>,
    pub coord_samples: Vec<CoordSample>,
    pub coord_acks: Vec<CoordAck>,
    pub coord_survivors: Option<Vec<i64>>,
    pub coord_alarms: Vec<CoordAlarm>,
}

/// History rows grouped by transaction (same time), oldest first.
pub fn transactions(history: &[HistoryRow]) -> Vec<Vec<&HistoryRow>> {
    let mut sorted: Vec<&HistoryRow> = history.iter().collect();
    sorted.sort_by_key(|h| h.time_us);
    let mut out: Vec<Vec<&HistoryRow>> = Vec::new();
    for h in sorted {
        match out.last_mut() {
            Some(group) if group[0].time_us == h.time_us => group.push(h),
            _ => out.push(vec![h]),
        }
    }
    out
}

/// A promotion: a row that was a mirror becomes primary, at `time_us`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promotion {
    pub time_us: i64,
    pub content: i16,
    pub dbid: i16,
    /// The promoted row's state just before.
    pub before: Row,
}

/// Replays the history over the initial rows: every promotion, and the rows after each
/// transaction (for the one-primary check).
pub fn replay(initial: &[Row], history: &[HistoryRow]) -> (Vec<Promotion>, Vec<(i64, Vec<Row>)>) {
    let mut rows: Vec<Row> = initial.to_vec();
    let mut promotions = Vec::new();
    let mut states = Vec::new();
    for tx in transactions(history) {
        for h in tx.iter() {
            match rows.iter_mut().find(|r| r.dbid == h.dbid) {
                Some(r) => {
                    if r.role == 'm' && h.role == 'p' {
                        promotions.push(Promotion {
                            time_us: h.time_us,
                            content: r.content,
                            dbid: r.dbid,
                            before: r.clone(),
                        });
                    }
                    r.role = h.role;
                    r.status = h.status;
                    r.mode = h.mode;
                }
                None => rows.push(Row {
                    dbid: h.dbid,
                    content: h.content,
                    role: h.role,
                    status: h.status,
                    mode: h.mode,
                }),
            }
        }
        states.push((tx[0].time_us, rows.clone()));
    }
    (promotions, states)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_in_core_history_text() {
        let h = HistoryRow::parse(
            5,
            6,
            "FTS: update role, status, and mode for dbid 6 with contentid 0 to p, u, and n",
        )
        .unwrap();
        assert_eq!((h.content, h.role, h.status, h.mode), (0, 'p', 'u', 'n'));
        assert!(
            HistoryRow::parse(5, 7, &h.desc).is_none(),
            "dbid must match"
        );
        assert!(HistoryRow::parse(5, 6, "gprecoverseg did something").is_none());
    }
}
