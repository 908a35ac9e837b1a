//! The configuration turned into what each part of the daemon takes: catalog connection,
//! probe and loop settings, etcd options and the elector's settings.

use std::time::Duration;

use anyhow::Context;

use crate::catalog::any::AnyCatalog;
use crate::catalog::cloudberry::conf::CbdbEtcdConf;
use crate::catalog::cloudberry::keys::CbdbKeys;
use crate::catalog::postgres::PgCatalogConfig;
use crate::config::{CatalogBackend, Config};
use crate::election::{keys, ElectorSettings, EtcdOptions};
use crate::engine::runner::LoopSettings;
use crate::engine::ProbeSettings;

pub fn catalog_config(cfg: &Config) -> PgCatalogConfig {
    PgCatalogConfig::from(&cfg.catalog)
}

/// The configured catalog backend; `elected` when writers hold office through etcd.
pub fn catalog(cfg: &Config, elected: bool) -> anyhow::Result<AnyCatalog> {
    let etcd = etcd_options(cfg)?;
    AnyCatalog::from_config(cfg, etcd, elected)
        .map_err(|e| anyhow::anyhow!("catalog.cbdb_conf: {e}"))
}

/// Cloudberry: the endpoints and the election name come from `cbdb_etcd.conf`, so ftsd
/// queues on the same `…/fts_ha_lock` as `gpfts` (docs/cloudberry.md).
fn cloudberry_conf(cfg: &Config) -> anyhow::Result<Option<CbdbEtcdConf>> {
    if cfg.catalog.backend != CatalogBackend::Cloudberry {
        return Ok(None);
    }
    CbdbEtcdConf::read(&cfg.catalog.cbdb_conf)
        .map(Some)
        .map_err(|e| anyhow::anyhow!("catalog.cbdb_conf: {e}"))
}

pub fn probe_settings(cfg: &Config) -> ProbeSettings {
    ProbeSettings {
        timeout: cfg.probe.timeout,
        retries: cfg.probe.retries,
        retry_delay: cfg.probe.retry_delay,
        concurrency: cfg.probe.concurrency as usize,
        profile: cfg.probe.decision_profile.resolve(cfg.catalog.backend),
    }
}

/// The quorum gate's timing: observations count for one interval plus one retry budget (a
/// continuous observer always has one that recent); the leader waits for the others at most
/// `observe.confirm_timeout`, by default that same span (a staggered follower starts its
/// probe within one interval and ends it within one retry budget). The probe loop re-times
/// the window when a reload changes the probe timings. `peers` None: no other instance can
/// exist. `wake` starts the probe loop's next cycle when `probe.min_down` has passed for a
/// failover it refused.
pub fn second_opinion(
    cfg: &Config,
    table: std::sync::Arc<crate::engine::observations::ObservationTable>,
    peers: Option<std::sync::Arc<dyn crate::engine::second_opinion::Peers>>,
    wake: std::sync::Arc<tokio::sync::Notify>,
) -> crate::engine::second_opinion::SecondOpinion {
    let window =
        crate::engine::second_opinion::window_for(cfg.probe.interval, &probe_settings(cfg));
    crate::engine::second_opinion::SecondOpinion {
        table,
        peers,
        window: window.into(),
        confirm_timeout: cfg.observe.confirm_timeout,
        min_down: cfg.probe.min_down,
        wake: Some(wake),
    }
}

pub fn loop_settings(cfg: &Config) -> LoopSettings {
    LoopSettings {
        interval: cfg.probe.interval,
        // A cycle stopped by shutdown may still be waiting for one probe attempt.
        shutdown_grace: cfg.probe.timeout.max(Duration::from_secs(5)),
        probe: probe_settings(cfg),
        cycle_budget: cycle_budget(cfg),
    }
}

/// A generous bound on one probe cycle, for the watchdog liveness: three full probe rounds
/// (every attempt of every retry timing out: the probes, the PROMOTE / SYNCREP_OFF messages,
/// and a second wave when there are more primaries than `probe.concurrency`) plus four
/// catalog calls (the load, the epoch check, the transitions) each up to its call timeout.
/// Defaults: 3 × 6 × 21s + 4 × 15s ≈ 7.3 minutes. Only a cycle stuck past it stops the
/// watchdog pings; a slow one never does.
pub fn cycle_budget(cfg: &Config) -> Duration {
    let attempts = cfg.probe.retries.saturating_add(1);
    let probe_round = (cfg.probe.timeout + cfg.probe.retry_delay).saturating_mul(attempts);
    probe_round.saturating_mul(3) + cfg.catalog.call_timeout.saturating_mul(4)
}

fn read_pem(path: &Option<std::path::PathBuf>) -> anyhow::Result<Option<Vec<u8>>> {
    path.as_ref()
        .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
        .transpose()
}

/// Reads the TLS files now, so a file rotated later cannot half-apply.
/// The brake on correlated failures (`[brake]`).
pub fn brake(cfg: &Config) -> crate::engine::BrakeSettings {
    crate::engine::BrakeSettings {
        max_hosts: cfg.brake.max_hosts,
        window: cfg.brake.window,
    }
}

pub fn etcd_options(cfg: &Config) -> anyhow::Result<EtcdOptions> {
    // Cloudberry: the leader key must live in the etcd that holds the blob, since every blob
    // write compares it in the same transaction; cbdb_etcd.conf names that etcd.
    let endpoints = match cloudberry_conf(cfg)? {
        Some(conf) => conf.endpoint_urls(),
        None => cfg.etcd.endpoints.clone(),
    };
    Ok(EtcdOptions {
        endpoints,
        dial_timeout: cfg.etcd.dial_timeout,
        keepalive_interval: cfg.etcd.keepalive_interval,
        username: cfg.etcd.username.clone(),
        password: cfg.etcd.password.clone(),
        ca_pem: read_pem(&cfg.etcd.ca_file)?,
        cert_pem: read_pem(&cfg.etcd.cert_file)?,
        key_pem: read_pem(&cfg.etcd.key_file)?,
    })
}

pub fn elector_settings(
    cfg: &Config,
    etcd: EtcdOptions,
    instance_id: &str,
) -> anyhow::Result<ElectorSettings> {
    let election = match cloudberry_conf(cfg)? {
        Some(conf) => CbdbKeys::new(&conf).ha_lock(),
        None => keys::election(&cfg.etcd.prefix, &cfg.cluster),
    };
    Ok(ElectorSettings {
        etcd,
        election,
        instance_id: instance_id.to_string(),
        ttl: cfg.etcd.lease_ttl,
        margin: cfg.etcd.act_margin,
    })
}
