//! Scenarios for the runtime faults of issue 11: a leader frozen between its authority check
//! and a send, a leader stalled while it holds the catalog fence, a half-open catalog
//! connection, and an etcd rebuilt empty. Test-only fault points are armed per FTS host through
//! `/logs/faults-<host>-segsim.env` (read by `chaos-ftsd` when the container starts); every
//! wait for a fault point that never shows fails the run.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::cluster::{self, ETCD, FTSD};
use super::docker;
use super::harness::{fail, sleep_ms, Harness, Result};
use super::history::{now_ms, Expect, QuorumLoss};
use super::scenario::fail_primary;

/// Logged by ftsd at `FTS_INJECT_PAUSE_BEFORE_SEND` (`src/engine/faults.rs`).
const PAUSE_BEFORE_SEND_LOG: &str =
    "fault injection: pausing between the authority check and the send";
/// Logged by ftsd at `FTS_INJECT_DELAY_AFTER_FENCE` (`src/catalog/postgres.rs`).
const HOLDING_FENCE_LOG: &str = "fault point: pausing while holding the epoch fence";
/// Failed cycles after which a leader hands office over (`etcd.resign_after_failed_cycles`
/// in `docker/etc/segsim.toml`) and its catalog call limit (`catalog.call_timeout`).
const RESIGN_AFTER_FAILED_CYCLES: i64 = 3;
const CATALOG_CALL_TIMEOUT_MS: i64 = 3000;
const PROBE_INTERVAL_MS: i64 = 1000;

fn faults_file(h: &Harness, host: &str) -> PathBuf {
    h.logs.join(format!("faults-{host}-segsim.env"))
}

fn log_path(h: &Harness, host: &str) -> PathBuf {
    h.logs.join(format!("{host}-segsim.log"))
}

fn log_len(h: &Harness, host: &str) -> usize {
    std::fs::metadata(log_path(h, host)).map_or(0, |m| m.len() as usize)
}

/// Waits until `host`'s segsim log has a line containing `needle` past byte `from`.
async fn wait_log(h: &Harness, host: &str, from: usize, needle: &str, limit_ms: u64) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(limit_ms) {
        if let Ok(text) = std::fs::read(log_path(h, host)) {
            if text.len() > from && String::from_utf8_lossy(&text[from..]).contains(needle) {
                return true;
            }
        }
        sleep_ms(20).await;
    }
    false
}

/// Waits until `host` is this cluster's leader (its log says so in etcd's members registry).
async fn wait_leader_is(h: &Harness, host: &str, limit: Duration) -> Result<i64> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(Some((id, epoch))) = cluster::leader(&h.db).await {
            if id == host {
                return Ok(epoch);
            }
        }
        sleep_ms(250).await;
    }
    fail(format!("{host} did not become leader within {limit:?}"))
}

/// Arms `vars` on one seeded FTS host and makes it the leader: the other hosts are stopped,
/// the chosen one restarted (its ftsd reads the fault file at start), and once it leads the
/// others start again, unarmed. Returns (instance, container, epoch).
async fn arm_leader(h: &mut Harness, vars: &[(&str, &str)]) -> Result<(String, &'static str, i64)> {
    let (container, host, ..) = *h.rng.pick(&FTSD);
    let text: String = vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    std::fs::write(faults_file(h, host), text)
        .map_err(|e| super::harness::HarnessError::Other(format!("writing the fault file: {e}")))?;
    let epoch = restart_as_leader(h, container, host).await?;
    h.note(format!(
        "armed {} on {host}, which took office with epoch {epoch}",
        vars.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    ));
    Ok((host.to_string(), container, epoch))
}

/// Restarts `container` (FTS host `host`) so that its ftsd reads its files again and takes
/// office: the other FTS hosts are stopped, it is restarted, and once it leads the others
/// start again (also when it did not lead in time). Returns its epoch.
pub(crate) async fn restart_as_leader(h: &Harness, container: &str, host: &str) -> Result<i64> {
    for (c, ..) in FTSD.iter().filter(|f| f.0 != container) {
        docker::stop(c, 2)?;
    }
    docker::docker(&["restart", "-t", "2", container])?;
    let epoch = wait_leader_is(h, host, Duration::from_secs(30)).await;
    for (c, ..) in FTSD.iter().filter(|f| f.0 != container) {
        docker::start(c)?;
    }
    epoch
}

/// Removes the fault file and restarts the armed host without it (also after a failed run).
async fn disarm(h: &mut Harness, host: &str, container: &str) -> Result<()> {
    let _ = std::fs::remove_file(faults_file(h, host));
    let _ = docker::unpause(container);
    docker::docker(&["restart", "-t", "2", container])?;
    h.note(format!("{host} restarted without fault points"));
    Ok(())
}

/// Issue 11 #1: the leader freezes between its authority check and a PROMOTE / SYNCREP_OFF;
/// a follower takes office and acts; the old leader resumes. The checker's
/// `no_message_after_deposition` judges what fts-segsim received.
pub async fn stale_message_after_deposition(h: &mut Harness) -> Result<()> {
    let (id, container, epoch) = arm_leader(h, &[("FTS_INJECT_PAUSE_BEFORE_SEND", "2s")]).await?;
    let r = stale_message_body(h, &id, container, epoch).await;
    disarm(h, &id, container).await?;
    r
}

async fn stale_message_body(h: &mut Harness, id: &str, container: &str, epoch: i64) -> Result<()> {
    let mark = log_len(h, id);
    h.jitter(0, 1000).await;
    let ttl = h.timing.lease_ttl_ms;
    // Detection, the pause window, then a successor: its lease, its own detection.
    let bound = h.detect() + 2000 + ttl + h.detect();
    let (content, old) =
        fail_primary(h, bound, " with the leader armed to pause before sending").await?;
    if !wait_log(
        h,
        id,
        mark,
        PAUSE_BEFORE_SEND_LOG,
        (h.detect() + 3000) as u64,
    )
    .await
    {
        return fail(format!("{id} never reached the pause point before a send"));
    }
    docker::pause(container)?;
    let paused = h.record(
        format!("docker pause {container} (leader {id}, epoch {epoch}) between its authority check and a send"),
        None,
        Expect::Nothing,
    );
    // Past the lease for certain, and long enough for the successor to act.
    h.jitter((ttl + h.detect()) as u64, (ttl + h.detect() + 2000) as u64)
        .await;
    h.wait_promotion(content, old, h.timing.slack_ms).await;
    docker::unpause(container)?;
    h.healed(paused);
    h.note(format!(
        "{id} resumed inside its send window; no message of epoch {epoch} may land now"
    ));
    sleep_ms(3000).await;
    Ok(())
}

/// Issue 11 #4: the leader stalls between the fence statement and COMMIT (holding the
/// `fts_epoch` row lock); a follower must take office, end that session and fail over within
/// lease TTL + detection of the stall.
pub async fn stalled_fence_holder(h: &mut Harness) -> Result<()> {
    // The holder's session stays busy for 30 s (its statement and call limits raised above
    // that on this host only), so neither statement_timeout nor the server's idle-in-transaction
    // limit frees the fence in time: only the successor ending that session does.
    let vars = [
        ("FTS_INJECT_DELAY_AFTER_FENCE", "30s"),
        ("FTSD_CATALOG_STATEMENT_TIMEOUT", "60s"),
        ("FTSD_CATALOG_CALL_TIMEOUT", "90s"),
    ];
    let (id, container, epoch) = arm_leader(h, &vars).await?;
    let r = stalled_fence_body(h, &id, container, epoch).await;
    disarm(h, &id, container).await?;
    r
}

async fn stalled_fence_body(h: &mut Harness, id: &str, container: &str, epoch: i64) -> Result<()> {
    let mark = log_len(h, id);
    h.jitter(0, 1000).await;
    let content = h.pick_content().await?;
    let (p, _) = h.healthy_pair(content).await?;
    h.sim_fault(p.dbid, fts_segsim::Fault::Down).await?;
    let pf = h.record(
        format!(
            "segsim primary dbid {} (content {content}) down; the leader stalls holding the fence",
            p.dbid
        ),
        Some(content),
        Expect::Nothing,
    );
    let at = h.faults[pf].at;
    if !wait_log(h, id, mark, HOLDING_FENCE_LOG, (h.detect() + 3000) as u64).await {
        return fail(format!("{id} never reached the fence fault point"));
    }
    h.jitter(0, 300).await;
    docker::pause(container)?;
    let paused = h.record(
        format!("docker pause {container} (leader {id}, epoch {epoch}) between the fence statement and COMMIT"),
        None,
        Expect::Nothing,
    );
    let bound = (h.faults[paused].at - at) + h.timing.lease_ttl_ms + h.detect();
    h.faults[pf].expect = Expect::Promotion {
        content,
        not_before: at,
        bound_ms: bound,
    };
    h.wait_promotion(content, p.dbid, bound + h.timing.slack_ms)
        .await;
    sleep_ms(1000).await;
    docker::unpause(container)?;
    h.healed(paused);
    h.note(format!(
        "{id} resumed after its fence session was due to be ended; it must write nothing"
    ));
    sleep_ms(3000).await;
    Ok(())
}

/// Issue 11 #5: the leader's traffic to and from the catalog is dropped (a half-open
/// connection); a primary dies meanwhile. The leader's catalog calls time out, it hands office
/// over after its failed cycles, and a follower (which reaches the catalog) acts.
pub async fn half_open_catalog(h: &mut Harness) -> Result<()> {
    let (id, container, epoch) = h.leader().await?;
    h.jitter(0, 1000).await;
    let drop_rules: [[&str; 6]; 2] = [
        ["OUTPUT", "-d", cluster::CATALOG, "-j", "DROP", ""],
        ["INPUT", "-s", cluster::CATALOG, "-j", "DROP", ""],
    ];
    for rule in &drop_rules {
        let mut args = vec!["iptables", "-A"];
        args.extend(rule.iter().filter(|a| !a.is_empty()));
        docker::exec(container, &args)?;
    }
    let cut = h.record(
        format!("iptables DROP between {container} (leader {id}, epoch {epoch}) and the catalog"),
        None,
        Expect::Nothing,
    );
    h.jitter(0, PROBE_INTERVAL_MS as u64).await;
    // The leader's failed cycles (each ends at the catalog call limit), its hand-over, then
    // the successor's detection.
    let bound = RESIGN_AFTER_FAILED_CYCLES * (CATALOG_CALL_TIMEOUT_MS + PROBE_INTERVAL_MS)
        + h.timing.lease_ttl_ms
        + h.detect();
    let (content, old) =
        fail_primary(h, bound, " while the leader's catalog traffic is dropped").await?;
    h.wait_promotion(content, old, bound + h.timing.slack_ms)
        .await;
    for rule in &drop_rules {
        let mut args = vec!["iptables", "-D"];
        args.extend(rule.iter().filter(|a| !a.is_empty()));
        docker::exec(container, &args)?;
    }
    h.healed(cut);
    sleep_ms(2000).await;
    Ok(())
}

/// Issue 11 #6: every etcd member is replaced by an empty one (killed, data folder wiped,
/// started as a new cluster, so revisions start low again); a primary dies. A leader must act
/// (epochs stay above the recorded one), and nothing is written while etcd is down.
pub async fn etcd_rebuilt(h: &mut Harness) -> Result<()> {
    h.jitter(0, 1000).await;
    for (c, _) in ETCD {
        let name = c.trim_start_matches("chaos-");
        std::fs::write(h.logs.join(format!("etcd-wipe-{name}")), "").map_err(|e| {
            super::harness::HarnessError::Other(format!("writing the wipe marker: {e}"))
        })?;
    }
    let from = now_ms();
    for (c, _) in ETCD {
        docker::kill(c)?;
    }
    let gone = h.record(
        "kill -9 chaos-etcd1..3; data folders wiped; started as a new, empty cluster".into(),
        None,
        Expect::Nothing,
    );
    h.jitter(500, 1500).await;
    for (c, _) in ETCD {
        docker::start(c)?;
    }
    let to = now_ms();
    h.healed(gone);
    h.quorum_losses.push(QuorumLoss { from, to });
    // The markers are removed by the members as they wipe: proof the rebuild happened.
    let start = Instant::now();
    while ETCD.iter().any(|(c, _)| {
        h.logs
            .join(format!("etcd-wipe-{}", c.trim_start_matches("chaos-")))
            .exists()
    }) {
        if start.elapsed() > Duration::from_secs(10) {
            return fail("the etcd members did not wipe their data within 10 s");
        }
        sleep_ms(100).await;
    }
    // Revisions start again in the new etcd: the invariant checker scopes raw-revision epochs
    // (Cloudberry mode) to the incarnation they were taken in. Kept in the logs folder, as the
    // ftsd logs it is read with span every scenario of the run.
    super::cluster::record_etcd_rebuild(&h.logs, from)?;
    h.jitter(0, 500).await;
    // A new session and campaign on the empty etcd, then detection.
    let bound = 2 * h.timing.lease_ttl_ms + h.detect() + 2000;
    let (content, old) = fail_primary(h, bound, " after etcd was rebuilt empty").await?;
    h.wait_promotion(content, old, bound + h.timing.slack_ms + 2000)
        .await;
    let (id, _, epoch) = h.leader().await?;
    h.note(format!("leader after the rebuild: {id}, epoch {epoch}"));
    Ok(())
}
