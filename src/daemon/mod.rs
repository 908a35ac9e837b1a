//! The daemon assembled from its configuration: [`run`] builds the catalog, the driver, the
//! authority (etcd election or `--no-election`), the services (API, metrics, hooks, pause
//! watch), the epoch claim and the probe loop, and runs them until a shutdown future fires.
//! `src/bin/ftsd.rs` only parses the command line and calls it; tests call it in-process.
//!
//! * `settings` — the config turned into each part's settings.
//! * `services` — API, metrics, hooks and pause-watch start-up.
//! * `claim` — recording the epoch in the catalog, from the elector's office events or for the
//!   single instance.
//! * `members` — this instance's members-registry entry and the duplicate `instance_id` check.
//! * `watchdog` — a leader whose cycles keep failing hands office over.
//! * `process` — logging and shutdown signals of the `ftsd` and `gpfts` entry points.
//! * `systemd` — readiness, status, stopping and watchdog notifications (`Type=notify`).
//! * `liveness` — whether the probe loop and the lease keeper are still turning, for the
//!   watchdog.
//! * `reload` — SIGHUP: the configuration read again and its reloadable part applied.

pub mod claim;
pub mod liveness;
pub mod members;
pub mod peers;
pub mod process;
pub mod reload;
pub mod services;
pub mod settings;
pub mod systemd;
pub mod watchdog;

use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{watch, Notify};

use crate::catalog::any::AnyCatalog;
use crate::catalog::postgres::PgCatalog;
use crate::catalog::{schema, NoEtcd};
use crate::config::Config;
use crate::driver::{self, AnyDriver};
use crate::election::{run_elector, ElectedAuthority};
use crate::engine::authority::SINGLE_INSTANCE_EPOCH;
use crate::engine::runner::{run_loop, LoopSettings};
use crate::engine::{Authority, Brake, CycleContext, SingleInstance};
use crate::shadow::{ShadowAuthority, ShadowBook, ShadowCatalog, ShadowDriver};

/// How this instance holds authority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Election {
    /// Elected through etcd leases.
    Etcd,
    /// `--no-election`: this instance alone acts, with a fixed epoch.
    None,
    /// `--shadow`: probes and decides, never acts or campaigns; compares its decisions with
    /// the incumbent FTS's changes, each side waiting up to `window` (None: the default,
    /// see [`shadow_window`]).
    Shadow { window: Option<Duration> },
}

/// How long shadow mode waits for the other side by default: two probe intervals plus one
/// primary's full retry budget, so an incumbent with the same timing as ours is always in
/// time.
pub fn shadow_window(cfg: &Config) -> Duration {
    cfg.probe.interval * 2 + (cfg.probe.timeout + cfg.probe.retry_delay) * (cfg.probe.retries + 1)
}

/// Runs the daemon until `shutdown` completes; returns after a leader has resigned. Fails
/// before any probing when an address cannot be bound, a TLS file cannot be read or a live
/// member already uses this `instance_id`.
pub async fn run(
    cfg: Config,
    election: Election,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run_with_reload(cfg, election, shutdown, None).await
}

/// [`run`], reloading the configuration on SIGHUP from `reload` (docs/operations.md).
pub async fn run_with_reload(
    cfg: Config,
    election: Election,
    shutdown: impl Future<Output = ()> + Send + 'static,
    reload: Option<reload::Reload>,
) -> anyhow::Result<()> {
    // Armed first: from here on a SIGHUP waits for the daemon to be up.
    let reload = reload
        .map(reload::Reload::arm)
        .transpose()
        .context("installing the SIGHUP handler")?;
    let instance_id = cfg.effective_instance_id();
    tracing::info!(
        instance = %instance_id,
        cluster = %cfg.cluster,
        version = env!("CARGO_PKG_VERSION"),
        "ftsd starting with configuration:\n{}",
        cfg.render_masked()
    );
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let _signal = AbortOnDrop(tokio::spawn(async move {
        shutdown.await;
        let _ = shutdown_tx.send(true);
        // After the flag, so the status task has stopped updating the line.
        systemd::stopping();
    }));
    // Start-up (services, the epoch claim) comes before the probe loop's first turn.
    let sd = systemd::Systemd::new(settings::cycle_budget(&cfg));
    match election {
        Election::None => run_single(cfg, instance_id, shutdown_rx, reload, sd).await,
        Election::Etcd => run_elected(cfg, instance_id, shutdown_rx, reload, sd).await,
        Election::Shadow { window } => {
            let window = window.unwrap_or_else(|| shadow_window(&cfg));
            run_shadow(cfg, instance_id, window, shutdown_rx, reload, sd).await
        }
    }
}

/// `ftsd catalog init`: creates ftsd's tables (and Greenplum's, in a plain PostgreSQL).
pub async fn init_catalog(cfg: &Config) -> anyhow::Result<Vec<schema::TableAction>> {
    let catalog = PgCatalog::new(settings::catalog_config(cfg));
    Ok(catalog.init_schema().await?)
}

async fn run_single(
    cfg: Config,
    instance_id: String,
    shutdown: watch::Receiver<bool>,
    reload: Option<reload::Armed>,
    sd: systemd::Systemd,
) -> anyhow::Result<()> {
    tracing::warn!(
        epoch = %SINGLE_INSTANCE_EPOCH,
        "single-instance mode (--no-election): no leader election; this instance alone acts"
    );
    let wake = Arc::new(Notify::new());
    let services = services::start(
        &cfg,
        &instance_id,
        settings::catalog(&cfg, false)?,
        crate::api::Mode::Single {
            epoch: SINGLE_INSTANCE_EPOCH.0,
        },
        wake.clone(),
        shutdown.clone(),
    )
    .await?;
    let catalog = Arc::new(settings::catalog(&cfg, false)?);
    let ready = catalog.clone();
    let _notifier = sd.start(
        async move { systemd::catalog_readable(&*ready).await },
        || systemd::Role::Single {
            epoch: SINGLE_INSTANCE_EPOCH.0,
        },
        shutdown.clone(),
    );
    let coordinator = match crate::coordinator::CoordinatorSettings::from_config(&cfg) {
        Some(settings) => {
            if settings.auto_failover {
                tracing::warn!(
                    "coordinator.auto_failover needs leader election (the intent is recorded in a fenced etcd transaction); single-instance mode only watches the coordinator pair"
                );
            }
            let watcher = crate::coordinator::Watcher::new(
                settings,
                None,
                settings::etcd_options(&cfg)?,
                &cfg.etcd.prefix,
                &cfg.cluster,
                instance_id.clone(),
                reporting(&cfg, &services),
            );
            if let Some(pair) = crate::coordinator::cloudberry::CbPair::from_config(
                &cfg,
                settings::etcd_options(&cfg)?,
                false,
            )
            .map_err(|e| anyhow::anyhow!("catalog.cbdb_conf: {e}"))?
            {
                watcher.attach_cloudberry(pair);
            }
            services.state.set_coordinator(watcher.clone());
            Some(AbortOnDrop(tokio::spawn(watcher.run(shutdown.clone()))))
        }
        None => None,
    };
    // No etcd: the brake's record lives in this process (docs/safety.md).
    let brake = Arc::new(Brake::in_process(settings::brake(&cfg)));
    services.state.set_brake(brake.clone());
    let ctx = context(
        &cfg,
        catalog.clone(),
        SingleInstance::new(SINGLE_INSTANCE_EPOCH),
        instance_id,
        settings::second_opinion(&cfg, Default::default(), None, wake.clone()),
        brake,
    );
    services
        .state
        .set_switchover(Arc::new(crate::switchover::PairSwitchover::new(
            ctx.clone(),
        )));
    // One attempt before the first cycle: the single instance's transitions carry the same
    // fixed epoch through the fence, so a catalog that is down now is claimed by them later.
    let first = std::sync::atomic::AtomicBool::new(true);
    let once = || first.swap(false, std::sync::atomic::Ordering::Relaxed);
    // The fixed epoch is revision 1 of generation 0: any elected epoch outranks it.
    let revision = SINGLE_INSTANCE_EPOCH.0;
    claim::claim(
        &*catalog,
        &ctx.authority,
        revision,
        &ctx.instance_id,
        NoEtcd,
        once,
    )
    .await;
    // Registered in the members registry so that other hosts see a prober acting outside
    // the election (`ftsd preflight`, `ftsctl members`).
    let membership = members::membership(&cfg, &ctx.instance_id);
    let registration = match settings::etcd_options(&cfg) {
        Ok(etcd) => Some(AbortOnDrop(tokio::spawn(members::register_single(
            etcd,
            membership.clone(),
            cfg.etcd.lease_ttl,
        )))),
        Err(e) => {
            tracing::warn!(error = %e, "not registering in the members registry");
            None
        }
    };
    let mut observers = services.observers.clone();
    observers.push(Arc::new(members::MemberObserver(membership)));
    observers.push(sd.loop_watch.clone());
    let (live, reloader) = follow_reloads(reload, &cfg, &services, false);
    run_loop(ctx, live, wake, Arc::new(observers), shutdown).await;
    drop(reloader);
    drop(registration);
    drop(coordinator);
    Ok(())
}

/// Shadow mode: the parts that cannot act (docs/shadow.md). No election, no epoch claim, no
/// members-registry entry, no hooks that act.
async fn run_shadow(
    mut cfg: Config,
    instance_id: String,
    window: Duration,
    shutdown: watch::Receiver<bool>,
    reload: Option<reload::Armed>,
    sd: systemd::Systemd,
) -> anyhow::Result<()> {
    // The incumbent is in charge: a shadow's refusal episodes must not page anyone.
    cfg.hooks.on_transition = Default::default();
    cfg.hooks.on_leader_change = Default::default();
    tracing::warn!(
        window = %humantime::format_duration(window),
        backend = cfg.catalog.backend.as_str(),
        "shadow mode: probing and deciding as a leader would, never writing or messaging; comparing with the incumbent FTS"
    );
    let wake = Arc::new(Notify::new());
    let book = Arc::new(ShadowBook::new(window));
    let services = services::start(
        &cfg,
        &instance_id,
        settings::catalog(&cfg, false)?,
        crate::api::Mode::Shadow { book: book.clone() },
        wake.clone(),
        shutdown.clone(),
    )
    .await?;
    let (live, reloader) = follow_reloads(reload, &cfg, &services, true);
    let mut observers = services.observers;
    observers.push(book.clone());
    observers.push(sd.loop_watch.clone());
    let catalog = Arc::new(settings::catalog(&cfg, false)?);
    let ready = catalog.clone();
    let _notifier = sd.start(
        async move { systemd::catalog_readable(&*ready).await },
        || systemd::Role::Shadow,
        shutdown.clone(),
    );
    let ctx = Arc::new(CycleContext {
        driver: ShadowDriver::new(driver::from_config(&cfg)),
        catalog: ShadowCatalog::new(catalog, book),
        authority: ShadowAuthority,
        settings: settings::probe_settings(&cfg).into(),
        instance_id,
        stopping: AtomicBool::new(false),
        refusals: Default::default(),
        quorum: Default::default(),
        // A shadow never acts: its failovers pass the gate and are not acted on anyway.
        brake: Arc::new(Brake::in_process(settings::brake(&cfg))),
    });
    run_loop(ctx, live, wake, Arc::new(observers), shutdown).await;
    drop(reloader);
    Ok(())
}

async fn run_elected(
    cfg: Config,
    instance_id: String,
    shutdown: watch::Receiver<bool>,
    reload: Option<reload::Armed>,
    sd: systemd::Systemd,
) -> anyhow::Result<()> {
    let etcd = settings::etcd_options(&cfg)?;
    members::ensure_unique(&cfg, &etcd, &instance_id).await?;
    let wake = Arc::new(Notify::new());
    let membership = members::membership(&cfg, &instance_id);
    let authority = ElectedAuthority::new(
        cfg.etcd.dial_timeout.max(Duration::from_secs(1)),
        wake.clone(),
        sd.liveness.clone(),
    );
    let services = services::start(
        &cfg,
        &instance_id,
        settings::catalog(&cfg, true)?,
        crate::api::Mode::Elected {
            authority: authority.clone(),
            etcd: Box::new(etcd.clone()),
            prefix: cfg.etcd.prefix.clone(),
            act_window: cfg.etcd.lease_ttl.saturating_sub(cfg.etcd.act_margin),
        },
        wake.clone(),
        shutdown.clone(),
    )
    .await?;
    let mut observers = services.observers.clone();
    observers.push(Arc::new(members::MemberObserver(membership.clone())));
    observers.push(Arc::new(watchdog::CycleWatchdog::new(
        authority.clone(),
        cfg.etcd.resign_after_failed_cycles,
    )));
    observers.push(sd.loop_watch.clone());
    let catalog = Arc::new(settings::catalog(&cfg, true)?);
    let (ready_catalog, session) = (catalog.clone(), authority.session());
    let role_of = authority.clone();
    let _notifier = sd.start(
        async move {
            systemd::catalog_readable(&*ready_catalog).await;
            systemd::session_open(session).await;
        },
        move || match role_of.office() {
            Some(office) => systemd::Role::Leader {
                epoch: office.epoch().0,
            },
            None if *role_of.session().borrow() => systemd::Role::Follower,
            None => systemd::Role::NoSession,
        },
        shutdown.clone(),
    );
    let announcer = match &*catalog {
        AnyCatalog::Cloudberry(_) => Some(AbortOnDrop(tokio::spawn(
            crate::gpfts::announce::follow_office(
                catalog.clone(),
                authority.office_events(),
                authority.clone(),
            ),
        ))),
        AnyCatalog::Postgres(_) => None,
    };
    // Started below, once the peers it asks are known.
    let coordinator_watch = match crate::coordinator::CoordinatorSettings::from_config(&cfg) {
        Some(settings) => {
            let watcher = crate::coordinator::Watcher::new(
                settings,
                Some(authority.clone()),
                etcd.clone(),
                &cfg.etcd.prefix,
                &cfg.cluster,
                instance_id.clone(),
                reporting(&cfg, &services),
            );
            // Cloudberry: probed and promoted through the FTS handlers, as gpfts does.
            if let Some(pair) =
                crate::coordinator::cloudberry::CbPair::from_config(&cfg, etcd.clone(), true)
                    .map_err(|e| anyhow::anyhow!("catalog.cbdb_conf: {e}"))?
            {
                watcher.attach_cloudberry(pair);
            } else {
                // The SQL catalog's content -1 rows follow a promotion, applied by the acting
                // leader under the catalog's epoch fence.
                watcher.attach_catalog(catalog.clone());
            }
            services.state.set_coordinator(watcher.clone());
            Some(watcher)
        }
        None => None,
    };
    let claimer = AbortOnDrop(tokio::spawn(claim::follow_office(
        catalog.clone(),
        authority.clone(),
        membership.clone(),
        instance_id.clone(),
        authority.office_events(),
    )));
    let brake = Arc::new(Brake::in_etcd(
        settings::brake(&cfg),
        crate::election::brake::EtcdBook::new(
            crate::election::keys::brake(&cfg.etcd.prefix, &cfg.cluster),
            etcd.clone(),
            authority.clone(),
            cfg.etcd.dial_timeout.max(Duration::from_secs(1)),
        ),
    ));
    services.state.set_brake(brake.clone());
    // The elector resigns only once the probe loop has stopped: a resign lets a follower take
    // office at once, and a message of ours still in flight would then act beside it.
    let (elector_stop, elector_stopped) = watch::channel(false);
    let elector = tokio::spawn(run_elector(
        settings::elector_settings(&cfg, etcd, &instance_id)?,
        authority.clone(),
        membership,
        elector_stopped,
    ));
    // With `observe.mode` on, every instance observes and the leader acts on a quorum
    // (docs/safety.md); off (the default), the leader acts on its own observation.
    let observe = cfg.observe.mode != crate::engine::observe_only::ObserveMode::Off;
    if observe && cfg.api.listen.ip().is_loopback() {
        tracing::warn!(
            listen = %cfg.api.listen,
            "api.listen is a loopback address: instances on other hosts cannot reach this one \
             to confirm a lost primary (ConfirmDown), and a failover needs a majority of the live \
             members; listen on an address the other FTS hosts reach"
        );
    }
    // Without a coordinator fence command, a coordinator failover needs every other live
    // member's word (docs/coordinator.md), whatever `observe.mode` says.
    let coordinator_asks = coordinator_watch.is_some() && cfg.coordinator.fence_command.is_empty();
    if coordinator_asks && !observe && cfg.api.listen.ip().is_loopback() {
        tracing::warn!(
            listen = %cfg.api.listen,
            "api.listen is a loopback address and coordinator.fence_command is empty: instances \
             on other hosts cannot confirm a lost coordinator (ConfirmDown), and without a fence \
             command a coordinator failover needs every other live member's confirmation; listen \
             on an address the other FTS hosts reach, or configure a fence command"
        );
    }
    let api_peers: Option<Arc<dyn crate::engine::second_opinion::Peers>> =
        if observe || coordinator_asks {
            let credentials = crate::api::client::Credentials::for_instance(&cfg.api)
                .context("reading the API credentials for instance-to-instance calls (api.*)")?;
            Some(Arc::new(peers::ApiPeers::new(
                services.state.clone(),
                credentials,
                instance_id.clone(),
            )))
        } else {
            None
        };
    let coordinator = coordinator_watch.map(|watcher| {
        if let Some(p) = &api_peers {
            watcher.set_peers(p.clone());
        }
        AbortOnDrop(tokio::spawn(watcher.run(shutdown.clone())))
    });
    let table = Arc::new(crate::engine::observations::ObservationTable::default());
    // The probe loop's settings, fed by SIGHUP: the observation loop reads the same ones.
    let (live, reloader) = follow_reloads(reload, &cfg, &services, false);
    let (peers, observing) = if let (true, Some(peers)) = (observe, api_peers) {
        let observer = Arc::new(crate::engine::observe_only::Observer::new(
            crate::engine::observe_only::ProbeOnly::new(driver::from_config(&cfg)),
            crate::engine::observe_only::ConfigReader::new(catalog.clone()),
            table.clone(),
            live.clone(),
            cfg.observe.mode,
            instance_id.clone(),
            wake.clone(),
        ));
        services.state.set_observer(observer.clone());
        let standing_by = {
            let authority = authority.clone();
            Arc::new(move || !authority.should_probe())
        };
        let observing = AbortOnDrop(tokio::spawn(crate::engine::observe_only::run(
            observer,
            peers.clone(),
            standing_by,
            shutdown.clone(),
        )));
        (Some(peers), Some(observing))
    } else {
        (None, None)
    };
    let ctx = context(
        &cfg,
        catalog,
        authority,
        instance_id,
        settings::second_opinion(&cfg, table, peers, wake.clone()),
        brake,
    );
    services
        .state
        .set_switchover(Arc::new(crate::switchover::PairSwitchover::new(
            ctx.clone(),
        )));
    run_loop(ctx, live, wake, Arc::new(observers), shutdown).await;
    drop(reloader);
    let _ = elector_stop.send(true);
    // Wait for the resign so followers take over at once.
    let _ = tokio::time::timeout(Duration::from_secs(5), elector).await;
    drop(observing);
    drop(claimer);
    drop(announcer);
    drop(coordinator);
    Ok(())
}

/// The probe loop's settings channel, and the task that feeds it on SIGHUP (when `reload`
/// is set); the task ends when its handle is dropped.
fn follow_reloads(
    reload: Option<reload::Armed>,
    cfg: &Config,
    services: &services::Services,
    without_hooks: bool,
) -> (watch::Receiver<LoopSettings>, Option<AbortOnDrop>) {
    let (tx, rx) = watch::channel(settings::loop_settings(cfg));
    let task = reload.map(|armed| {
        let targets = reload::Targets {
            live: tx,
            hooks: services.hooks.clone(),
            metrics: services.metrics.clone(),
            without_hooks,
        };
        AbortOnDrop(tokio::spawn(armed.follow(cfg.clone(), targets)))
    });
    (rx, task)
}

/// How the coordinator watch reports: metrics, the alarm hook, and whether a VIP agent is
/// expected to hold the address (the same configuration file names one).
fn reporting(cfg: &Config, services: &services::Services) -> crate::coordinator::Reporting {
    crate::coordinator::Reporting {
        metrics: Some(services.metrics.clone()),
        hooks: Some(services.hooks.clone()),
        vip_expected: !cfg.vip.address.is_empty(),
    }
}

fn context<A: Authority>(
    cfg: &Config,
    catalog: Arc<AnyCatalog>,
    authority: A,
    instance_id: String,
    quorum: crate::engine::second_opinion::SecondOpinion,
    brake: Arc<Brake>,
) -> Arc<CycleContext<AnyDriver, Arc<AnyCatalog>, A>> {
    Arc::new(CycleContext {
        driver: driver::from_config(cfg),
        catalog,
        authority,
        settings: settings::probe_settings(cfg).into(),
        instance_id,
        stopping: AtomicBool::new(false),
        refusals: Default::default(),
        quorum,
        brake,
    })
}

/// A task that ends with the value owning it (the daemon's helpers must not outlive [`run`]
/// when it is called in-process).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
