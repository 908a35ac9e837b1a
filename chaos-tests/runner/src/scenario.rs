//! The fault scenarios. Each injects its faults at seeded random moments, records them with
//! what they must lead to (`Expect`), and waits long enough for the outcome; the checker then
//! judges the record. Any step that cannot be carried out is an error: a fault that was not
//! injected is a failure of the run, never a pass.

use fts_segsim::Fault as SimFault;
use std::time::Duration;

use super::cluster::{self, pg_container, ETCD, PG_PAIRS};
use super::docker::{self, ETCDNET, SEGNET};
use super::harness::{fail, sleep_ms, Harness, Result};
use super::history::{now_ms, Expect, QuorumLoss};
use super::{coordinator, observer_faults, runtime_faults};

/// Which ftsd cluster a scenario exercises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// fts-segsim pairs, FTS wire protocol (catalog database `segsim`).
    Segsim,
    /// Real PostgreSQL primary/standby pairs, PostgreSQL driver (catalog database `pgpairs`).
    PgPairs,
    /// The Cloudberry-mode cluster: ftsd's Cloudberry backend on the external-FTS blob in etcd,
    /// whose segments are the Cloudberry stand-in (fts-segsim, `chaos-cbsim`; not Cloudberry).
    Cbdb,
    /// The coordinator pair (content -1, real PostgreSQL, a VIP moved by `ftsd vip-agent`),
    /// watched by the pgpairs configuration's `[coordinator]` table.
    Coordinator,
}

impl Target {
    pub fn db(self) -> &'static str {
        match self {
            Target::Segsim => "segsim",
            Target::PgPairs | Target::Coordinator => "pgpairs",
            Target::Cbdb => super::cbdb::CBDB,
        }
    }
}

pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    pub target: Target,
    /// Part of the short (CI) mode.
    pub short: bool,
}

pub const ALL: &[Scenario] = &[
    Scenario { name: "kill-primary", about: "a primary dies (connection refused, like kill -9); its in-sync mirror must be promoted within the detection bound", target: Target::Segsim, short: true },
    Scenario { name: "kill-mirror", about: "a mirror dies; it must be marked down (after the mirror-down grace) and nothing promoted", target: Target::Segsim, short: false },
    Scenario { name: "kill-leader", about: "kill -9 the ftsd leader's host, then a primary dies: a follower takes over and promotes", target: Target::Segsim, short: true },
    Scenario { name: "pause-leader", about: "docker pause the leader past its lease; a primary dies; a follower promotes; the unpaused old leader must not write", target: Target::Segsim, short: true },
    Scenario { name: "partition-leader", about: "disconnect the leader from the segment network (not from etcd); a primary dies; promotion after the leader is reconnected at the latest", target: Target::Segsim, short: false },
    Scenario { name: "partition-leader-from-segments", about: "disconnect the leader from the segment network only (it keeps etcd and the catalog) for two to three detection times, then reconnect: no transition and no action message for any segment, since the other members could reach them all", target: Target::Segsim, short: true },
    Scenario { name: "isolate-etcd-member", about: "cut one etcd member off; a primary dies; promotion within lease TTL + detection", target: Target::Segsim, short: false },
    Scenario { name: "quorum-loss-failover", about: "kill two of three etcd members, then a primary dies: nothing may be written until quorum is back, then the promotion follows", target: Target::Segsim, short: true },
    Scenario { name: "catalog-down-failover", about: "a primary dies and the catalog is killed during detection; promotion after the catalog is back", target: Target::Segsim, short: false },
    Scenario { name: "double-fault", about: "primary and mirror of one content die together: at most one catalog flip, never two primaries", target: Target::Segsim, short: true },
    Scenario { name: "flapping-segment", about: "a primary flaps (down 100-300 ms, several times) below the retry window, then stays down: exactly one promotion", target: Target::Segsim, short: false },
    Scenario { name: "slow-segment", about: "a primary answers slowly: below the probe timeout nothing happens, above it the mirror is promoted (fts-segsim slow; tc netem is tried first)", target: Target::Segsim, short: false },
    Scenario { name: "restart-everything", about: "restart every container (etcd, catalog, segments, FTS hosts); then a primary dies and is promoted", target: Target::Segsim, short: false },
    Scenario { name: "stale-message-after-deposition", about: "the leader is frozen between its authority check and a PROMOTE/SYNCREP_OFF (fault point + docker pause); a follower takes office and acts; nothing the old leader sends may land after that", target: Target::Segsim, short: false },
    Scenario { name: "stalled-fence-holder", about: "the leader stalls between the fence statement and COMMIT (fault point + docker pause) while a primary is down: a follower ends its session and fails over within lease TTL + detection; the old leader writes nothing", target: Target::Segsim, short: false },
    Scenario { name: "half-open-catalog", about: "iptables drops the leader's catalog traffic; a primary dies: the leader hands office over after its failed cycles and a follower promotes", target: Target::Segsim, short: false },
    Scenario { name: "etcd-rebuilt", about: "all etcd members are killed, wiped and started as a new empty cluster; a primary dies: a leader acts with an epoch above every recorded one", target: Target::Segsim, short: false },
    Scenario { name: "bad-credentials", about: "the leader's probe password file is changed to a wrong word and its ftsd restarted (it reads the file at start) so that it leads with it: every primary answers 28P01, a prober fault: no transition, the prober-fault alarm raised", target: Target::Segsim, short: false },
    Scenario { name: "dns-outage", about: "name resolution fails on the leader's host (the segments are addressed by host name; the /etc/hosts entry removed, the resolver unreachable or refusing): no transition, the prober-fault alarm raised", target: Target::Segsim, short: false },
    Scenario { name: "cbdb-kill-primary", about: "Cloudberry mode (the blob in etcd; segments: the fts-segsim stand-in): a primary dies; its in-sync mirror is promoted in the blob within the detection bound, with history and evidence in etcd", target: Target::Cbdb, short: true },
    Scenario { name: "cbdb-kill-leader", about: "Cloudberry mode: kill -9 the leader's host, then a primary dies: a follower (queued on …/fts_ha_lock) takes over and promotes in the blob", target: Target::Cbdb, short: false },
    Scenario { name: "cbdb-pause-leader", about: "Cloudberry mode: docker pause the leader past its lease; a primary dies; a follower promotes in the blob; the unpaused old leader's blob writes are refused by etcd", target: Target::Cbdb, short: false },
    Scenario { name: "pg-kill-primary", about: "kill -9 a real PostgreSQL primary under write load: the synchronous standby is promoted and no acknowledged write is lost", target: Target::PgPairs, short: true },
    Scenario { name: "pg-kill-mirror", about: "kill -9 a real PostgreSQL standby under write load: it is marked down and writes continue", target: Target::PgPairs, short: false },
    Scenario { name: "pg-crash-restart-short", about: "a real PostgreSQL primary crashes and restarts, refusing connections with 57P03 (held in recovery) for less than postgres.restart_grace: no failover, no lost acknowledged write", target: Target::PgPairs, short: false },
    Scenario { name: "kill-coordinator", about: "kill -9 of the coordinator's PostgreSQL (its host and VIP agent keep running) under writes through the VIP: the standby is promoted once, the VIP moves, writes resume, no acknowledged write is lost", target: Target::Coordinator, short: true },
    Scenario { name: "partition-coordinator-from-leader", about: "the ftsd leader alone loses the coordinator (iptables on its host) while the other members reach it: no coordinator failover", target: Target::Coordinator, short: false },
    Scenario { name: "dual-vip", about: "a second VIP holder is injected (the address on the standby's host and a holder key): the vip_holders alarm within one interval, no failover", target: Target::Coordinator, short: false },
    Scenario { name: "pg-crash-restart-long", about: "a real PostgreSQL primary's crash restart is held in recovery longer than postgres.restart_grace: its standby is promoted; the old primary comes back read-write and is fenced before a write to it is acknowledged; no lost acknowledged write", target: Target::PgPairs, short: false },
];

pub fn find(name: &str) -> Option<&'static Scenario> {
    ALL.iter().find(|s| s.name == name)
}

pub async fn run(s: &Scenario, h: &mut Harness) -> Result<()> {
    match s.name {
        "kill-primary" | "cbdb-kill-primary" => kill_primary(h).await,
        "kill-mirror" => kill_mirror(h).await,
        "kill-leader" | "cbdb-kill-leader" => kill_leader(h).await,
        "pause-leader" | "cbdb-pause-leader" => pause_leader(h).await,
        "partition-leader" => partition_leader(h).await,
        "partition-leader-from-segments" => partition_leader_from_segments(h).await,
        "isolate-etcd-member" => isolate_etcd_member(h).await,
        "quorum-loss-failover" => quorum_loss_failover(h).await,
        "catalog-down-failover" => catalog_down_failover(h).await,
        "double-fault" => double_fault(h).await,
        "flapping-segment" => flapping_segment(h).await,
        "slow-segment" => slow_segment(h).await,
        "restart-everything" => restart_everything(h).await,
        "stale-message-after-deposition" => runtime_faults::stale_message_after_deposition(h).await,
        "stalled-fence-holder" => runtime_faults::stalled_fence_holder(h).await,
        "half-open-catalog" => runtime_faults::half_open_catalog(h).await,
        "etcd-rebuilt" => runtime_faults::etcd_rebuilt(h).await,
        "bad-credentials" => observer_faults::bad_credentials(h).await,
        "dns-outage" => observer_faults::dns_outage(h).await,
        "pg-kill-primary" => pg_kill_primary(h).await,
        "pg-kill-mirror" => pg_kill_mirror(h).await,
        "pg-crash-restart-short" => pg_crash_restart(h, false).await,
        "pg-crash-restart-long" => pg_crash_restart(h, true).await,
        "kill-coordinator" => coordinator::kill_coordinator(h).await,
        "partition-coordinator-from-leader" => {
            coordinator::partition_coordinator_from_leader(h).await
        }
        "dual-vip" => coordinator::dual_vip(h).await,
        other => fail(format!("unknown scenario {other}")),
    }
}

/// Takes a random content's primary down in the simulator; records the expected promotion
/// (allowed from `not_before`, or now, within `bound_ms`). Returns (content, old primary).
pub(crate) async fn fail_primary(h: &mut Harness, bound_ms: i64, why: &str) -> Result<(i16, i16)> {
    let content = h.pick_content().await?;
    let (p, _) = h.healthy_pair(content).await?;
    h.sim_fault(p.dbid, SimFault::Down).await?;
    let now = now_ms();
    h.record(
        format!(
            "{} primary dbid {} (content {content}) down{why}",
            cluster::sim_container(&h.db).0.trim_start_matches("chaos-"),
            p.dbid
        ),
        Some(content),
        Expect::Promotion {
            content,
            not_before: now,
            bound_ms,
        },
    );
    Ok((content, p.dbid))
}

/// `fail_primary`, then wait for the promotion so the next fault starts from a settled cluster.
async fn fail_primary_and_wait(h: &mut Harness, bound_ms: i64, why: &str) -> Result<()> {
    let (content, old) = fail_primary(h, bound_ms, why).await?;
    h.wait_promotion(content, old, bound_ms + h.timing.slack_ms + 2000)
        .await;
    Ok(())
}

async fn kill_primary(h: &mut Harness) -> Result<()> {
    h.jitter(0, 1500).await;
    let bound = h.detect();
    fail_primary_and_wait(h, bound, "").await
}

async fn kill_mirror(h: &mut Harness) -> Result<()> {
    h.jitter(0, 1500).await;
    let content = h.pick_content().await?;
    let (_, m) = h.pair(content).await?;
    h.sim_fault(m.dbid, SimFault::Down).await?;
    let bound = h.detect() + h.mirror_grace_ms;
    h.record(
        format!("segsim mirror dbid {} (content {content}) down", m.dbid),
        Some(content),
        Expect::MirrorDown {
            content,
            bound_ms: bound,
        },
    );
    h.wait_marked_down(m.dbid, bound + h.timing.slack_ms + 2000)
        .await;
    // Give a wrong promotion the chance to show.
    sleep_ms(2000).await;
    Ok(())
}

async fn kill_leader(h: &mut Harness) -> Result<()> {
    let (id, container, epoch) = h.leader().await?;
    h.jitter(0, 1000).await;
    docker::kill(container)?;
    let leader_fault = h.record(
        format!("kill -9 {container} (leader {id}, epoch {epoch})"),
        None,
        Expect::Nothing,
    );
    h.jitter(200, 1500).await;
    let bound = h.timing.lease_ttl_ms + h.detect();
    fail_primary_and_wait(h, bound, " after the leader was killed").await?;
    docker::start(container)?;
    h.healed(leader_fault);
    Ok(())
}

async fn pause_leader(h: &mut Harness) -> Result<()> {
    let (id, container, epoch) = h.leader().await?;
    h.jitter(0, 1000).await;
    docker::pause(container)?;
    let paused = h.record(
        format!("docker pause {container} (leader {id}, epoch {epoch})"),
        None,
        Expect::Nothing,
    );
    let ttl = h.timing.lease_ttl_ms as u64;
    h.jitter(0, ttl + 1000).await;
    let bound = h.timing.lease_ttl_ms + h.detect();
    fail_primary_and_wait(h, bound, " while the leader was paused").await?;
    // Past the lease for certain, then let the old leader run again.
    h.jitter(ttl, ttl + 2000).await;
    docker::unpause(container)?;
    h.healed(paused);
    h.note(format!(
        "{id} unpaused after its lease expired; any write it attempts must be fenced"
    ));
    sleep_ms(3000).await;
    Ok(())
}

/// Cuts `container` (the leader `id`) off the segment network only, and records it as a
/// fault of that observer alone: it keeps etcd (etcdnet) and the catalog (catnet), and the
/// other members still reach every segment. Returns the fault's index and the container's
/// segnet address for the reconnection.
fn cut_from_segments(
    h: &mut Harness,
    id: &str,
    container: &'static str,
    epoch: i64,
) -> Result<(usize, &'static str)> {
    let Some(&(_, _, _, segip)) = cluster::FTSD.iter().find(|f| f.0 == container) else {
        return fail(format!("{container} is not one of the FTS hosts"));
    };
    docker::disconnect(SEGNET, container)?;
    let cut = h.record(
        format!("disconnect {container} (leader {id}, epoch {epoch}) from segnet; it keeps etcd and the catalog"),
        None,
        Expect::ObserverFault {
            instance: id.to_string(),
            alarm: None,
            bound_ms: 0,
            alarm_metric: None,
        },
    );
    Ok((cut, segip))
}

async fn partition_leader(h: &mut Harness) -> Result<()> {
    let (id, container, epoch) = h.leader().await?;
    let (cut, segip) = cut_from_segments(h, &id, container, epoch)?;
    h.jitter(500, 2000).await;
    let away = h.rng.range(3000, 6000) as i64;
    // Promotion is due once the leader is reconnected (or earlier, by another instance).
    let bound = away + h.detect() + 2000;
    let (content, old) = fail_primary(h, bound, " while the leader was cut from segnet").await?;
    sleep_ms(away as u64).await;
    docker::connect(SEGNET, container, segip)?;
    h.healed(cut);
    h.wait_promotion(content, old, h.detect() + h.timing.slack_ms + 4000)
        .await;
    Ok(())
}

/// Issue 12: the leader alone loses the segment network, longer than the detection time,
/// while the catalog and etcd stay reachable and every segment is healthy. Its probes time
/// out (docker drops the packets between networks), which alone would read as lost primaries;
/// nothing may be written or sent, during the cut or when the network returns. A segment
/// failure during such a cut is `partition-leader`'s case.
async fn partition_leader_from_segments(h: &mut Harness) -> Result<()> {
    let (id, container, epoch) = h.leader().await?;
    h.jitter(0, 1000).await;
    let (cut, segip) = cut_from_segments(h, &id, container, epoch)?;
    let detect = h.detect() as u64;
    h.jitter(2 * detect, 3 * detect).await;
    docker::connect(SEGNET, container, segip)?;
    h.healed(cut);
    // A failover decided during the cut would commit or land now: give it the time to show.
    sleep_ms(detect + h.timing.slack_ms as u64).await;
    let (now, ..) = h.leader().await?;
    h.note(format!("leader after the cut: {now} (was {id})"));
    Ok(())
}

async fn isolate_etcd_member(h: &mut Harness) -> Result<()> {
    let (c, ip) = *h.rng.pick(&ETCD);
    docker::disconnect(ETCDNET, c)?;
    let cut = h.record(
        format!("disconnect {c} from etcdnet"),
        None,
        Expect::Nothing,
    );
    h.jitter(500, 2000).await;
    let bound = h.timing.lease_ttl_ms + h.detect();
    fail_primary_and_wait(h, bound, " with one etcd member isolated").await?;
    docker::connect(ETCDNET, c, ip)?;
    h.healed(cut);
    Ok(())
}

async fn quorum_loss_failover(h: &mut Harness) -> Result<()> {
    let first = h.rng.range(0, 2) as usize;
    let second = (first + 1 + h.rng.range(0, 1) as usize) % 3;
    let victims = [ETCD[first].0, ETCD[second].0];
    for v in victims {
        docker::kill(v)?;
    }
    let from = now_ms();
    let q = h.record(
        format!(
            "kill -9 {} and {} (etcd quorum lost)",
            victims[0], victims[1]
        ),
        None,
        Expect::Nothing,
    );
    // Past every leader's act-by deadline, so no write is allowed from here on.
    h.jitter(
        h.timing.lease_ttl_ms as u64 + 500,
        h.timing.lease_ttl_ms as u64 + 1500,
    )
    .await;
    let content = h.pick_content().await?;
    let (p, _) = h.healthy_pair(content).await?;
    h.sim_fault(p.dbid, SimFault::Down).await?;
    let pf = h.record(
        format!(
            "segsim primary dbid {} (content {content}) down without etcd quorum",
            p.dbid
        ),
        Some(content),
        Expect::Nothing,
    );
    // Long enough for a sitting leader to have failed over several times.
    sleep_ms((h.detect() * 2) as u64 + h.rng.range(0, 2000)).await;
    for v in victims {
        docker::start(v)?;
    }
    let to = now_ms();
    h.healed(q);
    h.quorum_losses.push(QuorumLoss { from, to });
    // A new session, a campaign and a cycle after quorum returns.
    let bound = 2 * h.timing.lease_ttl_ms + h.detect() + 2000;
    h.faults[pf].expect = Expect::Promotion {
        content,
        not_before: to,
        bound_ms: bound,
    };
    h.wait_promotion(content, p.dbid, bound + h.timing.slack_ms + 2000)
        .await;
    Ok(())
}

async fn catalog_down_failover(h: &mut Harness) -> Result<()> {
    h.jitter(0, 1000).await;
    let content = h.pick_content().await?;
    let (p, _) = h.pair(content).await?;
    h.sim_fault(p.dbid, SimFault::Down).await?;
    let pf = h.record(
        format!(
            "segsim primary dbid {} (content {content}) down, then the catalog killed",
            p.dbid
        ),
        Some(content),
        Expect::Nothing,
    );
    let at = h.faults[pf].at;
    h.jitter(200, 1500).await;
    docker::kill("chaos-catalog")?;
    let cf = h.record("kill -9 chaos-catalog".into(), None, Expect::Nothing);
    h.jitter(2000, 5000).await;
    docker::start("chaos-catalog")?;
    h.healed(cf);
    let back = now_ms();
    // PostgreSQL recovery and ftsd's reconnect backoff come on top of detection.
    let bound = (back - at) + h.detect() + 5000;
    h.faults[pf].expect = Expect::Promotion {
        content,
        not_before: at,
        bound_ms: bound,
    };
    h.wait_promotion(content, p.dbid, h.detect() + h.timing.slack_ms + 8000)
        .await;
    Ok(())
}

async fn double_fault(h: &mut Harness) -> Result<()> {
    h.jitter(0, 1000).await;
    let content = h.pick_content().await?;
    let (p, m) = h.pair(content).await?;
    let order = if h.rng.range(0, 1) == 0 {
        [p.dbid, m.dbid]
    } else {
        [m.dbid, p.dbid]
    };
    h.sim_fault(order[0], SimFault::Down).await?;
    h.jitter(0, 300).await;
    h.sim_fault(order[1], SimFault::Down).await?;
    h.record(
        format!(
            "segsim dbid {} then dbid {} (primary and mirror of content {content}) down",
            order[0], order[1]
        ),
        Some(content),
        Expect::Nothing,
    );
    sleep_ms((h.detect() + h.mirror_grace_ms + 3000) as u64).await;
    Ok(())
}

async fn flapping_segment(h: &mut Harness) -> Result<()> {
    let content = h.pick_content().await?;
    let (p, _) = h.pair(content).await?;
    let flaps = h.rng.range(3, 6);
    let start = now_ms();
    for _ in 0..flaps {
        h.sim_fault(p.dbid, SimFault::Down).await?;
        h.jitter(100, 300).await;
        let rows = cluster::rows(&h.db).await?;
        if !rows.iter().any(|r| r.dbid == p.dbid && r.role == 'p') {
            // Failed over on an outage shorter than the retry window: the NoTransition
            // expectation below makes the checker report it.
            h.faults.push(super::history::Fault {
                scenario: h.scenario.clone(),
                what: format!("segsim primary dbid {} flapping (down 100-300 ms)", p.dbid),
                content: Some(content),
                at: start,
                healed_at: None,
                expect: Expect::NoTransition {
                    content,
                    until: now_ms(),
                },
            });
            return Ok(());
        }
        let dbid = p.dbid;
        h.segsim(move |s| s.clear(dbid)).await?;
        h.jitter(500, 1500).await;
    }
    h.faults.push(super::history::Fault {
        scenario: h.scenario.clone(),
        what: format!(
            "segsim primary dbid {} flapped {flaps} times (down 100-300 ms)",
            p.dbid
        ),
        content: Some(content),
        at: start,
        healed_at: Some(now_ms()),
        expect: Expect::NoTransition {
            content,
            until: now_ms(),
        },
    });
    let bound = h.detect();
    h.sim_fault(p.dbid, SimFault::Down).await?;
    h.expect_promotion(
        format!(
            "segsim primary dbid {} (content {content}) down for good after flapping",
            p.dbid
        ),
        content,
        p.dbid,
        bound,
        2000,
    )
    .await;
    Ok(())
}

async fn slow_segment(h: &mut Harness) -> Result<()> {
    let (pg, _) = PG_PAIRS[0].1;
    match docker::exec(pg, &["tc", "qdisc", "add", "dev", "eth0", "root", "netem", "delay", "50ms"]) {
        Ok(_) => {
            docker::exec(pg, &["tc", "qdisc", "del", "dev", "eth0", "root"])?;
            h.note("tc netem works in the containers; the simulated segments are slowed through fts-segsim, which serves all of them from one container");
        }
        Err(e) => h.note(format!(
            "tc netem is not available here ({}); slowing the segment with fts-segsim's slow fault instead",
            e.message.lines().next().unwrap_or_default()
        )),
    }
    let content = h.pick_content().await?;
    let (p, _) = h.pair(content).await?;
    let below = Duration::from_millis(h.rng.range(100, 250));
    h.sim_fault(p.dbid, SimFault::Slow { delay: below }).await?;
    let hold = h.rng.range(3000, 5000) as i64;
    h.record(
        format!(
            "segsim primary dbid {} (content {content}) slow {below:?} (below the probe timeout)",
            p.dbid
        ),
        Some(content),
        Expect::NoTransition {
            content,
            until: now_ms() + hold,
        },
    );
    sleep_ms(hold as u64 + 200).await;
    let bound = h.detect();
    h.sim_fault(
        p.dbid,
        SimFault::Slow {
            delay: Duration::from_secs(3),
        },
    )
    .await?;
    h.expect_promotion(
        format!(
            "segsim primary dbid {} (content {content}) slow 3s (above the probe timeout)",
            p.dbid
        ),
        content,
        p.dbid,
        bound,
        2000,
    )
    .await;
    // The slow former primary must not keep acting: mark it down for the heal.
    h.sim_fault(p.dbid, SimFault::Down).await?;
    Ok(())
}

async fn restart_everything(h: &mut Harness) -> Result<()> {
    let all_but_ftsd: Vec<&str> = ETCD
        .iter()
        .map(|e| e.0)
        .chain(["chaos-catalog", "chaos-segsim"])
        .chain(PG_PAIRS.iter().flat_map(|(_, (p, _), (m, _))| [*p, *m]))
        // A PostgreSQL instance left dead by a pg scenario stays dead: started as it is, a
        // failed former primary would come back as a second primary (the pg heal rebuilds it).
        .filter(|c| !c.starts_with("chaos-pg") || docker::state(c).is_ok_and(|s| s == "running"))
        .collect();
    for (c, ..) in cluster::FTSD {
        docker::stop(c, 5)?;
    }
    let mut args = vec!["restart", "-t", "5"];
    args.extend(all_but_ftsd.iter().copied());
    docker::docker(&args)?;
    for (c, ..) in cluster::FTSD {
        docker::start(c)?;
    }
    h.record("restart every container".into(), None, Expect::Nothing);
    // fts-segsim re-seeds the catalog when it starts: take the new state as the baseline.
    let start = std::time::Instant::now();
    loop {
        if let Ok(b) = cluster::baseline(&h.db).await {
            if !b.0.is_empty() && b.0.iter().all(|r| r.status == 'u' && r.mode == 's') {
                h.rebaselined = Some(b);
                break;
            }
        }
        if start.elapsed() > Duration::from_secs(60) {
            return fail("the cluster did not come back within 60 s of the restart");
        }
        sleep_ms(500).await;
    }
    h.leader().await?;
    h.jitter(1000, 3000).await;
    let bound = h.detect();
    fail_primary_and_wait(h, bound, " after restarting everything").await
}

async fn pg_kill_primary(h: &mut Harness) -> Result<()> {
    h.jitter(0, 2000).await;
    let content = h.pick_content().await?;
    let (p, _) = h.healthy_pair(content).await?;
    let Some((container, _)) = pg_container(p.dbid) else {
        return fail(format!("no container for dbid {}", p.dbid));
    };
    docker::kill(container)?;
    let bound = h.detect() + 2000;
    h.expect_promotion(
        format!(
            "kill -9 {container} (pg primary dbid {}, content {content})",
            p.dbid
        ),
        content,
        p.dbid,
        bound,
        4000,
    )
    .await;
    Ok(())
}

async fn pg_kill_mirror(h: &mut Harness) -> Result<()> {
    h.jitter(0, 2000).await;
    let content = h.pick_content().await?;
    let (_, m) = h.pair(content).await?;
    let Some((container, _)) = pg_container(m.dbid) else {
        return fail(format!("no container for dbid {}", m.dbid));
    };
    docker::kill(container)?;
    let bound = h.detect() + h.mirror_grace_ms + 2000;
    h.record(
        format!(
            "kill -9 {container} (pg mirror dbid {}, content {content})",
            m.dbid
        ),
        Some(content),
        Expect::MirrorDown {
            content,
            bound_ms: bound,
        },
    );
    h.wait_marked_down(m.dbid, bound + h.timing.slack_ms + 2000)
        .await;
    sleep_ms(2000).await;
    Ok(())
}

/// `postgres.restart_grace` of the chaos cluster (chaos-tests/docker/etc/pgpairs.toml).
const RESTART_GRACE_MS: i64 = 6000;

/// The data directory of a `chaos-pg` instance.
const PG_DATA: &str = "/var/lib/postgresql/seg";

/// The `restore_command` of a held recovery: it waits until the harness touches
/// /tmp/chaos-release, then finds nothing (recovery goes on from the instance's own pg_wal).
const HOLD_RESTORE_COMMAND: &str = "while [ ! -e /tmp/chaos-release ]; do sleep 0.1; done; false";

/// Whether a connection error is PostgreSQL's answer while it starts up or recovers (57P03),
/// as opposed to no server at all (refused, reset, timed out).
fn is_57p03(e: &str) -> bool {
    e.contains("57P03")
        || e.contains("in recovery mode")
        || e.contains("not yet accepting connections")
        || e.contains("starting up")
}

/// Prepares a running primary so that its next crash recovery is held: `recovery.signal` in
/// its data directory (the startup process looks for it whenever it runs, also when the
/// postmaster reinitialises after a backend crash) and a waiting `restore_command` (reloadable
/// since PostgreSQL 14, so `ALTER SYSTEM` + `pg_reload_conf()`). Neither changes a running
/// primary. Hot standby stays on: a held archive recovery blocks in `restore_command` (for the
/// next timeline's history file) before it replays anything, so it never reaches a consistent
/// point and the postmaster answers every connection "the database system is in recovery
/// mode" (57P03) until the release.
async fn prepare_hold(container: &str, addr: &str) -> Result<()> {
    docker::exec(container, &["rm", "-f", "/tmp/chaos-release"])?;
    let client = cluster::connect(addr, "postgres").await?;
    let set = format!("ALTER SYSTEM SET restore_command = '{HOLD_RESTORE_COMMAND}'");
    let applied = async {
        client.batch_execute(&set).await?;
        client.batch_execute("SELECT pg_reload_conf()").await?;
        // The reload is asynchronous: wait until this backend sees the new value too.
        for _ in 0..100 {
            let row = client.query_one("SHOW restore_command", &[]).await?;
            if row.get::<_, String>(0) == HOLD_RESTORE_COMMAND {
                return Ok(true);
            }
            sleep_ms(50).await;
        }
        Ok::<_, tokio_postgres::Error>(false)
    }
    .await;
    match applied {
        Ok(true) => {}
        Ok(false) => return fail(format!("{container}: restore_command not reloaded in 5 s")),
        Err(e) => return fail(format!("{container}: setting restore_command: {e}")),
    }
    let signal = format!("{PG_DATA}/recovery.signal");
    docker::exec(
        container,
        &["su", "postgres", "-c", &format!("touch {signal}")],
    )?;
    Ok(())
}

/// Takes a prepared hold back: no `recovery.signal` (PostgreSQL removes it itself when a held
/// recovery ends) and no `restore_command`, so a later restart (or a base backup taken from
/// this instance, which copies `postgresql.auto.conf`) is not held.
async fn undo_hold(container: &str, addr: &str) -> Result<()> {
    let signal = format!("{PG_DATA}/recovery.signal");
    docker::exec(container, &["rm", "-f", &signal])?;
    let client = cluster::connect(addr, "postgres").await?;
    if let Err(e) = client
        .batch_execute("ALTER SYSTEM RESET restore_command; SELECT pg_reload_conf()")
        .await
    {
        return fail(format!("{container}: resetting restore_command: {e}"));
    }
    Ok(())
}

/// A crash restart as PostgreSQL makes one: a backend (a session the harness opened) is
/// killed with SIGKILL, so the postmaster, which keeps running and listening, terminates every
/// other server process, reinitialises shared memory and starts crash recovery, held by
/// [`prepare_hold`]. No connection is refused at any point. Returns the time of the kill once
/// the instance answers 57P03; a connection refused meanwhile (the postmaster gone) or a
/// hold that does not take is a failure of the run.
async fn crash_backend(container: &str, addr: &str) -> Result<i64> {
    let client = cluster::connect(addr, "postgres").await?;
    let pid: i32 = match client.query_one("SELECT pg_backend_pid()", &[]).await {
        Ok(row) => row.get(0),
        Err(e) => return fail(format!("{container}: reading a backend pid: {e}")),
    };
    let at = now_ms();
    docker::exec(container, &["sh", "-c", &format!("kill -KILL {pid}")])?;
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        match cluster::connect(addr, "postgres").await {
            Err(e) if is_57p03(&e.to_string()) => return Ok(at),
            Err(e) if start.elapsed() > Duration::from_secs(2) => {
                return fail(format!(
                    "{container}: not a crash restart: {e} after its backend {pid} was killed"
                ))
            }
            // The first attempt may still reach the old server before it notices the crash.
            _ => {}
        }
        sleep_ms(20).await;
    }
    fail(format!(
        "{container} did not answer 57P03 after its backend {pid} was killed"
    ))
}

/// Prepares the hold and crashes a backend; on failure the hold is taken back (best effort)
/// so that no later restart of the instance is held.
async fn crash_and_hold(container: &str, addr: &str) -> Result<i64> {
    let crashed = match prepare_hold(container, addr).await {
        Ok(()) => crash_backend(container, addr).await,
        Err(e) => Err(e),
    };
    if crashed.is_err() {
        // Release a hold that may have taken, then clear the preparation.
        let _ = docker::exec(container, &["touch", "/tmp/chaos-release"]);
        let _ = release_hold_wait(addr, 30).await;
        let _ = undo_hold(container, addr).await;
    }
    crashed
}

/// Lets a held restart finish (its recovery ends; it comes up read-write) and waits until it
/// accepts connections.
async fn release_hold(container: &str, addr: &str) -> Result<()> {
    docker::exec(container, &["touch", "/tmp/chaos-release"])?;
    if release_hold_wait(addr, 60).await {
        return Ok(());
    }
    fail(format!(
        "{container} did not accept connections after its release"
    ))
}

async fn release_hold_wait(addr: &str, secs: u64) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        if cluster::connect(addr, "postgres").await.is_ok() {
            return true;
        }
        sleep_ms(20).await;
    }
    false
}

/// A real PostgreSQL primary crashes and restarts held in recovery (57P03), under the write
/// load: for half the restart grace (`long` false: no transition while it is held) or past
/// it (`long`: its standby is promoted, and when the old primary comes back read-write it is
/// fenced: a write to it straight away must never be acknowledged, and a `fence` evidence
/// row follows).
async fn pg_crash_restart(h: &mut Harness, long: bool) -> Result<()> {
    h.jitter(0, 2000).await;
    let content = h.pick_content().await?;
    let (p, _) = h.healthy_pair(content).await?;
    let Some((container, addr)) = pg_container(p.dbid) else {
        return fail(format!("no container for dbid {}", p.dbid));
    };
    let what = format!(
        "crash restart of {container} (pg primary dbid {}, content {content}: kill -9 of a backend) held in recovery",
        p.dbid
    );
    if !long {
        let hold_ms = RESTART_GRACE_MS / 2;
        // From the kill: the whole fault, and a probe interval after the release to see it
        // back, allow no transition.
        let idx = h.record(
            format!("{what} for {hold_ms} ms (< restart_grace)"),
            Some(content),
            Expect::NoTransition {
                content,
                until: now_ms() + hold_ms + h.detect(),
            },
        );
        let at = crash_and_hold(container, addr).await?;
        h.faults[idx].at = at;
        sleep_ms((at + hold_ms - now_ms()).max(0) as u64).await;
        release_hold(container, addr).await?;
        h.healed(idx);
        let seen_back = now_ms() + h.detect();
        if let Expect::NoTransition { until, .. } = &mut h.faults[idx].expect {
            *until = (*until).max(seen_back);
        }
        undo_hold(container, addr).await?;
        // the primary keeps its role; its standby reconnects (the harness's heal waits for
        // the pair to be in sync again)
        sleep_ms(h.detect() as u64).await;
        let rows = cluster::rows("pgpairs").await?;
        if !rows
            .iter()
            .any(|r| r.dbid == p.dbid && r.role == 'p' && r.content == content)
        {
            return fail(format!(
                "dbid {} lost its primary role after a short restart",
                p.dbid
            ));
        }
        return Ok(());
    }
    // Bound from the kill: the grace runs from the first 57P03, which is at once.
    let bound = RESTART_GRACE_MS + h.detect() + 2000;
    let idx = h.record(
        format!("{what} past restart_grace"),
        Some(content),
        Expect::Promotion {
            content,
            not_before: now_ms(),
            bound_ms: bound,
        },
    );
    let at = crash_and_hold(container, addr).await?;
    h.faults[idx].at = at;
    h.faults[idx].expect = Expect::Promotion {
        content,
        not_before: at,
        bound_ms: bound,
    };
    h.wait_promotion(content, p.dbid, bound + h.timing.slack_ms + 2000)
        .await;
    // the old primary ends its recovery read-write while the catalog lists it as a mirror
    release_hold(container, addr).await?;
    let idx = h.record(
        format!(
            "{container} (former primary dbid {}) back read-write",
            p.dbid
        ),
        Some(content),
        Expect::Fenced {
            content,
            dbid: p.dbid,
            bound_ms: h.detect() + 2000,
        },
    );
    let client = cluster::connect(addr, "postgres").await?;
    let write = tokio::time::timeout(
        Duration::from_secs(20),
        client.batch_execute("INSERT INTO chaos_writes (seq) VALUES (-1)"),
    )
    .await;
    match write {
        Ok(Ok(())) => {
            return fail(format!(
                "a write to the former primary {container} was acknowledged"
            ))
        }
        Ok(Err(e)) => h.note(format!("write to the former primary refused: {e}")),
        Err(_) => {
            return fail(format!(
                "a write to the former primary {container} neither failed nor returned in 20 s: not fenced"
            ))
        }
    }
    sleep_ms(2000).await;
    // rebuilt as a standby of the new primary by the harness's heal, as an operator would
    docker::kill(container)?;
    h.healed(idx);
    Ok(())
}
