//! Scenarios for issue 12's failures that only the prober sees: the leader's probe password
//! goes wrong, or its name resolution fails. The segments are healthy for everyone else, so
//! nothing may change (invariant `no_transition_others_could_reach`) and the leader must raise
//! the prober-fault alarm: an evidence row with rule `prober_fault` (judged by the checker from
//! the catalog) and its `ftsd_alarms_total{rule="prober_fault"}` counter, read here from its
//! metrics endpoint. Every change to an FTS host is undone afterwards, also when the scenario
//! failed.

use std::time::Instant;

use super::docker;
use super::harness::{fail, sleep_ms, Harness, HarnessError, Result};
use super::history::{now_ms, Expect};
use super::runtime_faults::restart_as_leader;

/// The alarm rule ftsd gives a probe that failed on its own side.
const PROBER_FAULT: &str = "prober_fault";
/// The probe password file of the segsim configuration in every FTS host
/// (`docker/etc/segsim.toml`), and the word fts-segsim's primaries expect (`chaos-segsim`).
const PASSWORD_FILE: &str = "/etc/ftsd/segsim-probe.password";
const RIGHT_PASSWORD: &str = "chaos-probe-secret";
/// The name the segsim catalog gives the simulated segment host (`chaos-segsim`
/// `--catalog-host`); the FTS hosts resolve it through /etc/hosts (`extra_hosts` in
/// docker-compose.yml).
const SEGMENT_HOST_NAME: &str = "segsim-host";
/// The segsim ftsd's metrics endpoint inside an FTS host (`docker/etc/segsim.toml`).
const METRICS_PORT: u16 = 7471;

fn other(e: impl std::fmt::Display) -> HarnessError {
    HarnessError::Other(e.to_string())
}

/// `ftsd_alarms_total{rule="<rule>"}` of the segsim ftsd on `container` (0 while no episode of
/// that rule began). The image has no HTTP client: bash's /dev/tcp speaks to the endpoint.
pub(crate) fn alarms_total(container: &str, rule: &str) -> Result<i64> {
    let script = format!(
        "exec 3<>/dev/tcp/127.0.0.1/{METRICS_PORT} && \
         printf 'GET /metrics HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && \
         timeout 5 cat <&3"
    );
    let text = docker::exec(container, &["bash", "-c", &script])?;
    if !text.contains("ftsd_alarms_total") {
        return fail(format!(
            "{container}: the metrics endpoint did not answer with ftsd_alarms_total"
        ));
    }
    let prefix = format!("ftsd_alarms_total{{rule=\"{rule}\"}} ");
    match text.lines().find_map(|l| l.strip_prefix(&prefix)) {
        None => Ok(0),
        Some(n) => n
            .trim()
            .parse::<f64>()
            .map(|n| n as i64)
            .map_err(|e| other(format!("{container}: {prefix}{n}: {e}"))),
    }
}

/// Writes `text` into `path` inside `container`, in place (Docker bind-mounts /etc/hosts and
/// /etc/resolv.conf; a rename over them fails). The text travels in the environment, so no
/// character of it is shell syntax.
fn write_file(container: &str, path: &str, text: &str) -> Result<()> {
    let env = format!("CHAOS_TEXT={text}");
    let script = format!("printf '%s' \"$CHAOS_TEXT\" > {path}");
    docker::docker(&["exec", "-e", &env, container, "sh", "-c", &script]).map(drop)?;
    Ok(())
}

/// Issue 12: the leader's probe password file is changed to a wrong word at run time. ftsd
/// reads its password file when it starts (it has no reload), so the word takes effect the
/// way an operator's change would: that host's ftsd is restarted; the other FTS hosts are
/// stopped meanwhile so that it takes office again, with the wrong word. Every primary then
/// answers 28P01: a prober fault, no transition, the alarm raised. Healed by writing the right
/// word back and restarting the host, as an operator fixing the secret would.
pub async fn bad_credentials(h: &mut Harness) -> Result<()> {
    let (id, container, _) = h.leader().await?;
    h.jitter(0, 1000).await;
    let r = bad_credentials_body(h, &id, container).await;
    let restored = write_file(container, PASSWORD_FILE, RIGHT_PASSWORD)
        .and_then(|()| docker::docker(&["restart", "-t", "2", container]).map_err(Into::into));
    if let Some(idx) = h.faults.iter().rposition(
        |f| matches!(&f.expect, Expect::ObserverFault { instance, .. } if *instance == id),
    ) {
        h.healed(idx);
    }
    r?;
    restored?;
    h.note(format!(
        "{id}: the right password written back and ftsd restarted"
    ));
    // A failover decided with the wrong word would show now.
    sleep_ms((h.detect() + h.timing.slack_ms) as u64).await;
    Ok(())
}

async fn bad_credentials_body(h: &mut Harness, id: &str, container: &'static str) -> Result<()> {
    let word = format!("wrong-{}", h.rng.range(1000, 9999));
    write_file(container, PASSWORD_FILE, &word)?;
    let idx = h.record(
        format!("{container} (leader {id}): probe password file changed to a wrong word"),
        None,
        Expect::ObserverFault {
            instance: id.to_string(),
            alarm: Some(PROBER_FAULT.into()),
            bound_ms: 0,
            alarm_metric: None,
        },
    );
    let epoch = restart_as_leader(h, container, id).await?;
    let in_office = now_ms() - h.faults[idx].at;
    h.note(format!(
        "{id}'s ftsd restarted with the wrong password; it took office again with epoch {epoch} after {in_office} ms"
    ));
    let detect = h.detect();
    if let Expect::ObserverFault { bound_ms, .. } = &mut h.faults[idx].expect {
        // The restart and the campaign, then one cycle's detection.
        *bound_ms = in_office + detect;
    }
    // Long enough for several cycles, each of which would have failed over every content.
    h.jitter(2 * detect as u64, 3 * detect as u64).await;
    let counted = alarms_total(container, PROBER_FAULT)?;
    if let Expect::ObserverFault { alarm_metric, .. } = &mut h.faults[idx].expect {
        // The process started with the wrong word: every episode it counted is this fault's.
        *alarm_metric = Some(counted);
    }
    h.note(format!(
        "{id}: ftsd_alarms_total{{rule=\"{PROBER_FAULT}\"}} {counted} since the restart"
    ));
    let (now, ..) = h.leader().await?;
    if now != id {
        return fail(format!(
            "{id} lost office during the fault (leader now {now}): the scenario did not test what it meant to"
        ));
    }
    Ok(())
}

/// Issue 12: name resolution fails on the leader's host while the segments are addressed by
/// host name (the segsim catalog names them `segsim-host`, which the FTS hosts resolve
/// through /etc/hosts). The entry is removed and the resolver replaced: by seed, one that
/// never answers (an address nothing listens on: lookups hang past the probe timeout) or one
/// that refuses at once (the loopback, no DNS server there). Both are `resolve` failures of
/// this observer: no transition, the alarm raised. Healed by restoring both files.
pub async fn dns_outage(h: &mut Harness) -> Result<()> {
    let (id, container, epoch) = h.leader().await?;
    let hosts = docker::exec(container, &["cat", "/etc/hosts"])?;
    let resolv = docker::exec(container, &["cat", "/etc/resolv.conf"])?;
    if !hosts.contains(SEGMENT_HOST_NAME) {
        return fail(format!(
            "{container}'s /etc/hosts has no {SEGMENT_HOST_NAME} entry: the segments are not addressed by name"
        ));
    }
    h.jitter(0, 1000).await;
    let r = dns_outage_body(h, &id, container, epoch, &hosts).await;
    let restored = write_file(container, "/etc/hosts", &hosts)
        .and_then(|()| write_file(container, "/etc/resolv.conf", &resolv));
    if let Some(idx) = h.faults.iter().rposition(
        |f| matches!(&f.expect, Expect::ObserverFault { instance, .. } if *instance == id),
    ) {
        h.healed(idx);
    }
    r?;
    restored?;
    h.note(format!("{id}: /etc/hosts and /etc/resolv.conf restored"));
    sleep_ms((h.detect() + h.timing.slack_ms) as u64).await;
    Ok(())
}

async fn dns_outage_body(
    h: &mut Harness,
    id: &str,
    container: &'static str,
    epoch: i64,
    hosts: &str,
) -> Result<()> {
    let before = alarms_total(container, PROBER_FAULT)?;
    let (resolver, how) = if h.rng.range(0, 1) == 0 {
        ("192.0.2.53", "a resolver that never answers")
    } else {
        ("127.0.0.1", "a resolver that refuses")
    };
    let without: String = hosts
        .lines()
        .filter(|l| !l.split_whitespace().skip(1).any(|n| n == SEGMENT_HOST_NAME))
        .map(|l| format!("{l}\n"))
        .collect();
    write_file(container, "/etc/hosts", &without)?;
    write_file(
        container,
        "/etc/resolv.conf",
        &format!("nameserver {resolver}\n"),
    )?;
    let idx = h.record(
        format!(
            "{container} (leader {id}, epoch {epoch}): {SEGMENT_HOST_NAME} removed from /etc/hosts, {how} ({resolver}) in /etc/resolv.conf"
        ),
        None,
        Expect::ObserverFault {
            instance: id.to_string(),
            alarm: Some(PROBER_FAULT.into()),
            bound_ms: h.detect(),
            alarm_metric: None,
        },
    );
    // The fault must be real: the name no longer resolves on that host.
    let start = Instant::now();
    if docker::exec(
        container,
        &["timeout", "15", "getent", "hosts", SEGMENT_HOST_NAME],
    )
    .is_ok()
    {
        return fail(format!(
            "{SEGMENT_HOST_NAME} still resolves on {container}: the outage was not injected"
        ));
    }
    h.note(format!(
        "getent hosts {SEGMENT_HOST_NAME} on {container} failed after {} ms",
        start.elapsed().as_millis()
    ));
    let detect = h.detect() as u64;
    h.jitter(2 * detect, 3 * detect).await;
    let after = alarms_total(container, PROBER_FAULT)?;
    if let Expect::ObserverFault { alarm_metric, .. } = &mut h.faults[idx].expect {
        *alarm_metric = Some(after - before);
    }
    h.note(format!(
        "{id}: ftsd_alarms_total{{rule=\"{PROBER_FAULT}\"}} rose from {before} to {after}"
    ));
    let (now, ..) = h.leader().await?;
    if now != id {
        return fail(format!(
            "{id} lost office during the outage (leader now {now}): the scenario did not test what it meant to"
        ));
    }
    Ok(())
}
