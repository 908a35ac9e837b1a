//! `gpfts -A` (one cycle, no election) and `gpfts -W n` (the blob tools), through the
//! Cloudberry backend.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context;

use crate::catalog::any::{cloudberry_settings, coordinator_settings};
use crate::catalog::cloudberry::conf::CbdbEtcdConf;
use crate::catalog::cloudberry::coordinator::{self, Notified};
use crate::catalog::cloudberry::{blob, CloudberryCatalog};
use crate::catalog::{Catalog, CatalogError, NoEtcd};
use crate::config::Config;
use crate::daemon::settings;
use crate::engine::authority::SINGLE_INSTANCE_EPOCH;
use crate::engine::cycle::run_cycle;
use crate::engine::{CycleContext, SingleInstance};

fn catalog(cfg: &Config, conf: CbdbEtcdConf, elected: bool) -> anyhow::Result<CloudberryCatalog> {
    let etcd = settings::etcd_options(cfg)?;
    Ok(CloudberryCatalog::new(cloudberry_settings(
        cfg, conf, etcd, elected,
    )))
}

/// `-A`: claims the single-instance epoch (refused once an elected leader has governed the
/// cluster: the fence keeps a one-shot run from acting beside or after a leader), runs one
/// cycle and reports it.
pub async fn one_round(cfg: &Config, conf: CbdbEtcdConf) -> anyhow::Result<()> {
    let catalog = Arc::new(catalog(cfg, conf, false)?);
    let instance_id = cfg.effective_instance_id();
    let epoch = match catalog
        .claim_epoch(SINGLE_INSTANCE_EPOCH.0, &instance_id, NoEtcd)
        .await
    {
        Ok(e) => e,
        Err(CatalogError::Fenced { current, .. }) => anyhow::bail!(
            "an elected ftsd leader recorded epoch {current}; a one-round run does not act \
             on a cluster a leader governs"
        ),
        Err(e) => return Err(e).context("recording the one-round epoch"),
    };
    let ctx = Arc::new(CycleContext {
        driver: crate::driver::from_config(cfg),
        catalog,
        authority: SingleInstance::new(epoch),
        settings: settings::probe_settings(cfg).into(),
        instance_id,
        stopping: AtomicBool::new(false),
        refusals: Default::default(),
        brake: Default::default(),
    });
    let report = run_cycle(ctx).await.context("probe round")?;
    tracing::info!(
        pairs = report.reports.len(),
        duration_ms = report.duration.as_millis() as u64,
        "one round done"
    );
    Ok(())
}

/// `-W n`.
pub async fn warp_call(
    cfg: &Config,
    conf: CbdbEtcdConf,
    n: u8,
    load_file: Option<&Path>,
) -> anyhow::Result<()> {
    let catalog = catalog(cfg, conf, false)?;
    let key = catalog.keys().blob();
    match n {
        1 => {
            let path = load_file.context("-W 1 needs -L FILE")?;
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            catalog
                .put_blob(&text)
                .await
                .with_context(|| format!("{}", path.display()))?;
            eprintln!("gpfts: wrote {} into {key}", path.display());
        }
        2 => match catalog.read_blob().await? {
            Some((text, _)) => print!("{text}"),
            None => anyhow::bail!("{key} is absent"),
        },
        3 => {
            let deleted = catalog.delete_blob().await?;
            eprintln!(
                "gpfts: {key} {}",
                if deleted { "deleted" } else { "was absent" }
            );
        }
        4 => {
            let (text, _) = catalog
                .read_blob()
                .await?
                .with_context(|| format!("{key} is absent"))?;
            let rows = blob::parse(&text).with_context(|| key.clone())?;
            let coord = coordinator::active(&rows).context("no live coordinator in the blob")?;
            // gpfts sends 'abc': the coordinator refuses it by its line count, which proves
            // the connection and the function without changing anything.
            match coordinator::rewrite_segments_info(&coordinator_settings(cfg), coord, "abc").await
            {
                Notified::Failed(e) => {
                    anyhow::bail!("coordinator {}:{}: {e}", coord.address, coord.port)
                }
                other => println!(
                    "coordinator {}:{} reachable ({other:?})",
                    coord.address, coord.port
                ),
            }
        }
        5 => match catalog.standby_promote_ready().await? {
            Some(v) => println!("{v}"),
            None => anyhow::bail!("{} is absent", catalog.keys().standby_promote_ready()),
        },
        other => anyhow::bail!("unknown -W {other}"),
    }
    Ok(())
}
