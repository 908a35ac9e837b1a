//! The configuration turned into what each part of the daemon takes: catalog connection,
//! probe and loop settings, etcd options and the elector's settings.

use std::time::Duration;

use anyhow::Context;

use crate::catalog::postgres::PgCatalogConfig;
use crate::config::Config;
use crate::election::{keys, ElectorSettings, EtcdOptions};
use crate::engine::runner::LoopSettings;
use crate::engine::ProbeSettings;

pub fn catalog_config(cfg: &Config) -> PgCatalogConfig {
    PgCatalogConfig::from(&cfg.catalog)
}

pub fn probe_settings(cfg: &Config) -> ProbeSettings {
    ProbeSettings {
        timeout: cfg.probe.timeout,
        retries: cfg.probe.retries,
        retry_delay: cfg.probe.retry_delay,
        concurrency: cfg.probe.concurrency as usize,
    }
}

pub fn loop_settings(cfg: &Config) -> LoopSettings {
    LoopSettings {
        interval: cfg.probe.interval,
        // A cycle stopped by shutdown may still be waiting for one probe attempt.
        shutdown_grace: cfg.probe.timeout.max(Duration::from_secs(5)),
    }
}

fn read_pem(path: &Option<std::path::PathBuf>) -> anyhow::Result<Option<Vec<u8>>> {
    path.as_ref()
        .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
        .transpose()
}

/// Reads the TLS files now, so a file rotated later cannot half-apply.
pub fn etcd_options(cfg: &Config) -> anyhow::Result<EtcdOptions> {
    Ok(EtcdOptions {
        endpoints: cfg.etcd.endpoints.clone(),
        dial_timeout: cfg.etcd.dial_timeout,
        keepalive_interval: cfg.etcd.keepalive_interval,
        username: cfg.etcd.username.clone(),
        password: cfg.etcd.password.clone(),
        ca_pem: read_pem(&cfg.etcd.ca_file)?,
        cert_pem: read_pem(&cfg.etcd.cert_file)?,
        key_pem: read_pem(&cfg.etcd.key_file)?,
    })
}

pub fn elector_settings(cfg: &Config, etcd: EtcdOptions, instance_id: &str) -> ElectorSettings {
    ElectorSettings {
        etcd,
        election: keys::election(&cfg.etcd.prefix, &cfg.cluster),
        instance_id: instance_id.to_string(),
        ttl: cfg.etcd.lease_ttl,
        margin: cfg.etcd.act_margin,
    }
}
