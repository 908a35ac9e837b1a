//! The backend the configuration selects (`catalog.backend`), behind one type so the daemon
//! and the API serve either without caring which.

use std::time::Duration;

use super::cloudberry::conf::CbdbEtcdConf;
use super::cloudberry::coordinator::CoordinatorSettings;
use super::cloudberry::{CloudberryCatalog, CloudberrySettings};
use super::postgres::{PgCatalog, PgCatalogConfig};
use super::queries::{EvidenceRow, HistoryFilter, HistoryRow};
use super::{Catalog, CatalogError, EtcdRevision, Transition};
use crate::config::{CatalogBackend, Config};
use crate::election::EtcdOptions;
use crate::model::{ContentId, Epoch, SegmentConfig};

/// Boxed: the two backends differ much in size, and there is one of each per daemon.
pub enum AnyCatalog {
    Postgres(Box<PgCatalog>),
    Cloudberry(Box<CloudberryCatalog>),
}

/// The login user, `gpfts`'s default for `-U`.
pub fn login_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "gpadmin".into())
}

/// How the Cloudberry backend reaches the coordinator (`catalog.coordinator_user`).
pub fn coordinator_settings(cfg: &Config) -> CoordinatorSettings {
    CoordinatorSettings {
        user: cfg
            .catalog
            .coordinator_user
            .clone()
            .unwrap_or_else(login_user),
        connect_timeout: cfg.catalog.connect_timeout,
        tls: crate::tls::postgres::PgTls::or_fail_closed(&cfg.catalog.tls, "catalog"),
    }
}

/// The Cloudberry backend's settings: the etcd and keys of `cbdb_etcd.conf`, with ftsd's etcd
/// credentials and timeouts. `elected`: writers hold office on `…/fts_ha_lock`.
pub fn cloudberry_settings(
    cfg: &Config,
    conf: CbdbEtcdConf,
    etcd: EtcdOptions,
    elected: bool,
) -> CloudberrySettings {
    CloudberrySettings {
        etcd: EtcdOptions {
            endpoints: conf.endpoint_urls(),
            ..etcd
        },
        conf,
        coordinator: coordinator_settings(cfg),
        elected,
        history_limit: cfg.catalog.history_limit as usize,
        call_timeout: cfg.catalog.call_timeout.max(Duration::from_secs(1)),
    }
}

impl AnyCatalog {
    /// The backend of `cfg`; the Cloudberry one reads `catalog.cbdb_conf` now.
    pub fn from_config(cfg: &Config, etcd: EtcdOptions, elected: bool) -> Result<Self, String> {
        match cfg.catalog.backend {
            CatalogBackend::Postgres => Ok(AnyCatalog::Postgres(Box::new(PgCatalog::new(
                PgCatalogConfig::from(&cfg.catalog),
            )))),
            CatalogBackend::Cloudberry => {
                let conf = CbdbEtcdConf::read(&cfg.catalog.cbdb_conf).map_err(|e| e.to_string())?;
                Ok(AnyCatalog::Cloudberry(Box::new(CloudberryCatalog::new(
                    cloudberry_settings(cfg, conf, etcd, elected),
                ))))
            }
        }
    }

    pub async fn history(&self, filter: &HistoryFilter) -> Result<Vec<HistoryRow>, CatalogError> {
        match self {
            AnyCatalog::Postgres(c) => c.history(filter).await,
            AnyCatalog::Cloudberry(c) => c.history(filter).await,
        }
    }

    pub async fn last_evidence(
        &self,
        content: ContentId,
    ) -> Result<Option<EvidenceRow>, CatalogError> {
        match self {
            AnyCatalog::Postgres(c) => c.last_evidence(content).await,
            AnyCatalog::Cloudberry(c) => c.last_evidence(content).await,
        }
    }
}

impl Catalog for AnyCatalog {
    async fn load(&self) -> Result<SegmentConfig, CatalogError> {
        match self {
            AnyCatalog::Postgres(c) => c.load().await,
            AnyCatalog::Cloudberry(c) => c.load().await,
        }
    }

    async fn claim_epoch<E: EtcdRevision>(
        &self,
        revision: i64,
        instance_id: &str,
        etcd: E,
    ) -> Result<Epoch, CatalogError> {
        match self {
            AnyCatalog::Postgres(c) => c.claim_epoch(revision, instance_id, etcd).await,
            AnyCatalog::Cloudberry(c) => c.claim_epoch(revision, instance_id, etcd).await,
        }
    }

    async fn apply(&self, t: &Transition) -> Result<(), CatalogError> {
        match self {
            AnyCatalog::Postgres(c) => c.apply(t).await,
            AnyCatalog::Cloudberry(c) => c.apply(t).await,
        }
    }
}
