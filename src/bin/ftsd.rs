//! `ftsd`: the external FTS daemon.

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use tokio::sync::{watch, Notify};

use ftsd::api::state::cycle_result;
use ftsd::catalog::postgres::{PgCatalog, PgCatalogConfig};
use ftsd::catalog::{schema, Catalog, CatalogError};
use ftsd::config::{Config, ConfigArgs, LogFormat};
use ftsd::driver::{self, AnyDriver};
use ftsd::election::members::{MemberInfo, Membership};
use ftsd::election::{keys, run_elector, ElectedAuthority, ElectorSettings, EtcdOptions};
use ftsd::engine::authority::SINGLE_INSTANCE_EPOCH;
use ftsd::engine::runner::{run_loop, CycleObserver, LoopSettings};
use ftsd::engine::{Authority, CycleContext, CycleReport, ProbeSettings, SingleInstance};

/// External, highly available FTS for Greenplum / Cloudberry clusters.
#[derive(Parser)]
#[command(name = "ftsd", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Probe the segments and fail over: elect a leader through etcd, or run alone with
    /// --no-election.
    Run {
        #[command(flatten)]
        config: ConfigArgs,
        /// Run as the only instance, without etcd election, with a fixed epoch. Never run two
        /// instances like this against one cluster: nothing would stop both from acting.
        #[arg(long)]
        no_election: bool,
    },
    /// Validate the configuration and print the effective values (secrets masked).
    CheckConfig {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Catalog administration.
    Catalog {
        #[command(subcommand)]
        command: CatalogCommand,
    },
    /// Print a shell completion script.
    Completions {
        /// Target shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), or with --dir write it and one page per subcommand there.
    Man {
        /// Directory to write ftsd.1, ftsd-run.1, ... into.
        #[arg(long, value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
    },
}

#[derive(Subcommand)]
enum CatalogCommand {
    /// Create gp_segment_configuration, gp_configuration_history (Greenplum's shapes) and
    /// ftsd's fts_epoch and fts_evidence tables in a plain PostgreSQL database. Tables that
    /// already exist with the right shape are kept; any other shape is refused.
    Init {
        #[command(flatten)]
        config: ConfigArgs,
    },
}

fn load(args: &ConfigArgs) -> Result<Config, ExitCode> {
    args.load().map_err(|e| {
        eprintln!("ftsd: {e}");
        ExitCode::from(e.exit_code() as u8)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "ftsd", &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Command::Man { dir } => {
            let written = match dir {
                Some(dir) => clap_mangen::generate_to(Cli::command(), dir),
                None => clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()),
            };
            return match written {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ftsd: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::CheckConfig { config } => match load(&config) {
            Ok(cfg) => {
                print!("{}", cfg.render_masked());
                return ExitCode::SUCCESS;
            }
            Err(code) => return code,
        },
        Command::Catalog {
            command: CatalogCommand::Init { config },
        } => match load(&config) {
            Ok(cfg) => runtime().and_then(|rt| rt.block_on(catalog_init(&cfg))),
            Err(code) => return code,
        },
        Command::Run {
            config,
            no_election,
        } => match load(&config) {
            Ok(cfg) => {
                init_tracing(&cfg);
                runtime().and_then(|rt| rt.block_on(run(cfg, no_election)))
            }
            Err(code) => return code,
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("ftsd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn init_tracing(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&cfg.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cfg.log.format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.with_ansi(false).init(),
    }
}

fn catalog_config(cfg: &Config) -> PgCatalogConfig {
    PgCatalogConfig::from(&cfg.catalog)
}

async fn catalog_init(cfg: &Config) -> anyhow::Result<()> {
    let catalog = PgCatalog::new(catalog_config(cfg));
    for action in catalog.init_schema().await? {
        match action {
            schema::TableAction::Created(t) => println!("created {t}"),
            schema::TableAction::AlreadyPresent(t) => {
                println!("kept {t} (already present with the expected shape)")
            }
        }
    }
    Ok(())
}

fn probe_settings(cfg: &Config) -> ProbeSettings {
    ProbeSettings {
        timeout: cfg.probe.timeout,
        retries: cfg.probe.retries,
        retry_delay: cfg.probe.retry_delay,
        concurrency: cfg.probe.concurrency as usize,
    }
}

fn read_pem(path: &Option<std::path::PathBuf>) -> anyhow::Result<Option<Vec<u8>>> {
    path.as_ref()
        .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
        .transpose()
}

fn etcd_options(cfg: &Config) -> anyhow::Result<EtcdOptions> {
    Ok(EtcdOptions {
        endpoints: cfg.etcd.endpoints.clone(),
        dial_timeout: cfg.etcd.dial_timeout,
        username: cfg.etcd.username.clone(),
        password: cfg.etcd.password.clone(),
        ca_pem: read_pem(&cfg.etcd.ca_file)?,
        cert_pem: read_pem(&cfg.etcd.cert_file)?,
        key_pem: read_pem(&cfg.etcd.key_file)?,
    })
}

/// Publishes each cycle's timing into the members registry entry.
struct MemberObserver(Arc<Membership>);

impl CycleObserver for MemberObserver {
    fn cycle_finished(&self, report: &CycleReport) {
        let result = cycle_result(report);
        self.0.update(|m| {
            m.last_cycle_at = Some(report.started_at);
            m.last_cycle_ms = Some(report.duration.as_millis() as u64);
            m.last_cycle_result = Some(result);
        });
    }

    fn cycle_failed(&self, error: &str) {
        self.0.update(|m| {
            m.last_cycle_at = Some(SystemTime::now());
            m.last_cycle_ms = None;
            m.last_cycle_result = Some(format!("error: {error}"));
        });
    }
}

async fn run(cfg: Config, no_election: bool) -> anyhow::Result<()> {
    let instance_id = cfg.effective_instance_id();
    tracing::info!(
        instance = %instance_id,
        cluster = %cfg.cluster,
        version = env!("CARGO_PKG_VERSION"),
        "ftsd starting with configuration:\n{}",
        cfg.render_masked()
    );
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = shutdown_tx.send(true);
    });

    let catalog = Arc::new(PgCatalog::new(catalog_config(&cfg)));
    let driver = driver::from_config(&cfg);
    let loop_settings = LoopSettings {
        interval: cfg.probe.interval,
        shutdown_grace: cfg.probe.timeout.max(Duration::from_secs(5)),
    };
    let wake = Arc::new(Notify::new());

    if no_election {
        tracing::warn!(
            epoch = %SINGLE_INSTANCE_EPOCH,
            "single-instance mode (--no-election): no leader election; this instance alone acts"
        );
        let authority = SingleInstance::new(SINGLE_INSTANCE_EPOCH);
        let observers = ftsd::api::daemon::start(
            &cfg,
            &instance_id,
            PgCatalog::new(catalog_config(&cfg)),
            ftsd::api::Mode::Single {
                epoch: SINGLE_INSTANCE_EPOCH.0,
            },
            wake.clone(),
            shutdown_rx.clone(),
        )
        .await?;
        claim_single_epoch(&catalog, &authority, &instance_id).await;
        let ctx = context(driver, catalog, authority, &cfg, instance_id);
        run_loop(ctx, loop_settings, wake, Arc::new(observers), shutdown_rx).await;
        return Ok(());
    }

    let etcd = etcd_options(&cfg)?;
    let membership = Arc::new(Membership::new(
        keys::member(&cfg.etcd.prefix, &cfg.cluster, &instance_id),
        MemberInfo {
            instance_id: instance_id.clone(),
            host: ftsd::config::hostname(),
            api_address: ftsd::api::advertised_address(cfg.api.listen),
            version: env!("CARGO_PKG_VERSION").to_string(),
            role: "follower".into(),
            epoch: None,
            started_at: SystemTime::now(),
            last_cycle_at: None,
            last_cycle_ms: None,
            last_cycle_result: None,
            leader_since: None,
        },
    ));
    let authority = ElectedAuthority::new(
        cfg.etcd.dial_timeout.max(Duration::from_secs(1)),
        wake.clone(),
    );
    let mut observers = ftsd::api::daemon::start(
        &cfg,
        &instance_id,
        PgCatalog::new(catalog_config(&cfg)),
        ftsd::api::Mode::Elected {
            authority: authority.clone(),
            etcd: etcd.clone(),
            prefix: cfg.etcd.prefix.clone(),
            act_window: cfg.etcd.lease_ttl.saturating_sub(cfg.etcd.act_margin),
        },
        wake.clone(),
        shutdown_rx.clone(),
    )
    .await?;
    observers.push(Arc::new(MemberObserver(membership.clone())));
    // The elector resigns only once the probe loop has stopped: a resign lets a follower take
    // office at once, and a message of ours still in flight would then act beside it.
    let (elector_stop_tx, elector_stop_rx) = watch::channel(false);
    let elector = tokio::spawn(run_elector(
        ElectorSettings {
            etcd,
            election: keys::election(&cfg.etcd.prefix, &cfg.cluster),
            instance_id: instance_id.clone(),
            ttl: cfg.etcd.lease_ttl,
            margin: cfg.etcd.act_margin,
        },
        authority.clone(),
        catalog.clone(),
        membership.clone(),
        elector_stop_rx,
    ));
    let ctx = context(driver, catalog, authority, &cfg, instance_id);
    run_loop(ctx, loop_settings, wake, Arc::new(observers), shutdown_rx).await;
    let _ = elector_stop_tx.send(true);
    // Wait for the resign so followers take over at once.
    let _ = tokio::time::timeout(Duration::from_secs(5), elector).await;
    Ok(())
}

fn context<A: Authority>(
    driver: AnyDriver,
    catalog: Arc<PgCatalog>,
    authority: A,
    cfg: &Config,
    instance_id: String,
) -> Arc<CycleContext<AnyDriver, Arc<PgCatalog>, A>> {
    Arc::new(CycleContext {
        driver,
        catalog,
        authority,
        settings: probe_settings(cfg),
        instance_id,
        stopping: AtomicBool::new(false),
        refusals: Default::default(),
    })
}

/// Records the fixed epoch; a catalog that is down is retried by the transitions themselves.
async fn claim_single_epoch(catalog: &PgCatalog, authority: &SingleInstance, instance_id: &str) {
    match catalog
        .claim_epoch(SINGLE_INSTANCE_EPOCH, instance_id)
        .await
    {
        Ok(()) => {}
        Err(CatalogError::Fenced { current, .. }) => authority.fenced_out(current),
        Err(e) => tracing::warn!(error = %e, "cannot record the epoch in the catalog yet"),
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received; stopping"),
        _ = int.recv() => tracing::info!("SIGINT received; stopping"),
    }
}
