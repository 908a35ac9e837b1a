//! The simulator's link to a Cloudberry external-FTS etcd (`--cbdb-conf`): it writes the
//! simulated layout as the configuration blob, in the line format Cloudberry uses, so ftsd's
//! Cloudberry backend (or `gpfts`) reads a configuration that matches what the simulator
//! serves, and it plays the etcd side of the coordinator pair:
//!
//! * the coordinator's `setStandbyPromoteReady`: the promote-ready key is `1` at start when a
//!   standby is simulated (an operator or test can set it with `POST /promote-ready/{0|1}`);
//! * the standby's PROMOTE gate: a standby promotes only while the key is `1`, and writes `0`
//!   as it promotes;
//! * `activateStandby`: once the standby acts as coordinator it rewrites the blob, dropping the
//!   old coordinator's line and recording itself `p`/`p`, with an unconditional put as the
//!   real coordinator does.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use ftsd::catalog::cloudberry::conf::CbdbEtcdConf;
use ftsd::catalog::cloudberry::coordinator::CoordinatorSettings;
use ftsd::catalog::cloudberry::{blob, CloudberryCatalog, CloudberrySettings};
use ftsd::election::EtcdOptions;
use ftsd::model::{Dbid, Role, Segment};

/// The etcd of one Cloudberry cluster, as the simulator's coordinator pair uses it.
pub struct CbdbLink {
    catalog: CloudberryCatalog,
}

impl CbdbLink {
    /// Reads `conf` (strictly, as ftsd does); etcd is dialled on first use.
    pub fn open(conf: &Path) -> anyhow::Result<Self> {
        let conf = CbdbEtcdConf::read(conf)?;
        let catalog = CloudberryCatalog::new(CloudberrySettings {
            etcd: EtcdOptions {
                endpoints: conf.endpoint_urls(),
                dial_timeout: Duration::from_secs(5),
                ..EtcdOptions::default()
            },
            conf,
            coordinator: CoordinatorSettings {
                user: String::new(),
                connect_timeout: Duration::from_secs(5),
            },
            elected: false,
            history_limit: 1,
            call_timeout: Duration::from_secs(10),
        });
        Ok(CbdbLink { catalog })
    }

    /// The blob's key.
    pub fn blob_key(&self) -> String {
        self.catalog.keys().blob()
    }

    /// Puts `rows` (coordinator pair first, then by dbid, as the coordinator writes it) as the
    /// blob; returns its key.
    pub async fn write_blob(&self, rows: &[Segment]) -> anyhow::Result<String> {
        let mut rows = rows.to_vec();
        rows.sort_by_key(|r| (r.content != -1, r.dbid));
        self.catalog
            .put_blob(&blob::render(&rows))
            .await
            .with_context(|| format!("cannot write {}", self.blob_key()))?;
        Ok(self.blob_key())
    }

    /// Writes the promote-ready key (`1` or `0`).
    pub async fn set_promote_ready(&self, ready: bool) -> anyhow::Result<()> {
        self.catalog
            .set_standby_promote_ready(ready)
            .await
            .context("cannot write the standby promote-ready key")
    }

    /// Whether the promote-ready key reads `1`; an absent key is "not ready".
    pub async fn promote_ready(&self) -> anyhow::Result<bool> {
        let value = self
            .catalog
            .standby_promote_ready()
            .await
            .context("cannot read the standby promote-ready key")?;
        Ok(value.as_deref().map(str::trim) == Some("1"))
    }

    /// `activateStandby` in an external-FTS build: the blob without the old coordinator's line,
    /// the standby `p`/`p`. Unconditional, as the coordinator's put is.
    pub async fn activate_standby(&self, standby: Dbid) -> anyhow::Result<()> {
        let Some((text, _)) = self.catalog.read_blob().await? else {
            anyhow::bail!("{} is absent", self.blob_key());
        };
        let rows = activated(blob::parse(&text)?, standby);
        self.catalog
            .put_blob(&blob::render(&rows))
            .await
            .with_context(|| format!("cannot write {}", self.blob_key()))
    }
}

/// The rows after `catalog_activate_standby`: other content -1 rows dropped, the standby's role
/// and preferred role `p`, everything else as it was.
pub fn activated(rows: Vec<Segment>, standby: Dbid) -> Vec<Segment> {
    rows.into_iter()
        .filter(|r| r.content != -1 || r.dbid == standby)
        .map(|mut r| {
            if r.dbid == standby {
                r.role = Role::Primary;
                r.preferred_role = Role::Primary;
            }
            r
        })
        .collect()
}

/// Puts `rows` as the blob of the cluster `conf` names (`fts-segsim --cbdb-conf` without a
/// running simulator's link).
pub async fn write_blob(conf: &Path, rows: &[Segment]) -> anyhow::Result<String> {
    CbdbLink::open(conf)?.write_blob(rows).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{layout, SimConfig};

    #[test]
    fn activation_drops_the_old_coordinator_and_makes_the_standby_preferred_primary() {
        let rows = layout(&SimConfig {
            pairs: 1,
            standby: true,
            base_port: 7000,
            ..SimConfig::default()
        });
        let after = activated(rows.clone(), 4);
        assert_eq!(after.len(), rows.len() - 1);
        assert!(after.iter().all(|r| r.dbid != 1));
        let standby = after.iter().find(|r| r.dbid == 4).unwrap();
        assert_eq!(
            (standby.role, standby.preferred_role),
            (Role::Primary, Role::Primary)
        );
        let segment_rows: Vec<_> = rows.iter().filter(|r| r.content >= 0).collect();
        let after_segments: Vec<_> = after.iter().filter(|r| r.content >= 0).collect();
        assert_eq!(segment_rows, after_segments, "segment rows untouched");
    }
}
