//! `ftsd`: the external FTS daemon. Parses the command line; `ftsd::daemon` does the rest.

use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};

use ftsd::catalog::schema::TableAction;
use ftsd::config::{Config, ConfigArgs};
use ftsd::daemon::{self, Election};

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
    /// --no-election. SIGHUP reloads the configuration: probe timings, hooks and log level
    /// take effect at the next cycle; keys that need a restart keep their running values.
    Run {
        #[command(flatten)]
        config: ConfigArgs,
        /// Run as the only instance, without etcd election, with a fixed epoch. Never run two
        /// instances like this against one cluster: nothing would stop both from acting.
        #[arg(long)]
        no_election: bool,
        /// Shadow mode: probe and decide as the leader would, but never write the catalog,
        /// send PROMOTE/SYNCREP_OFF or campaign; compare with what the incumbent FTS does and
        /// report agreement and divergence (`ftsctl shadow`, metrics, log).
        #[arg(long, conflicts_with = "no_election")]
        shadow: bool,
        /// Shadow mode: how long either side may lag the other before a divergence is
        /// reported (default: 2 probe intervals + one primary's full retry budget).
        #[arg(long, requires = "shadow", value_parser = humantime::parse_duration, value_name = "DURATION")]
        shadow_window: Option<std::time::Duration>,
    },
    /// Hold the coordinator pair's client-facing address (vip.address) on this host while
    /// etcd records this host's server (vip.member) as the acting coordinator and this
    /// agent's etcd lease is alive; one agent per coordinator host.
    VipAgent {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Check, before starting an instance, what it needs: a valid configuration; an etcd
    /// quorum, its version, and write permission on our prefix; a reachable catalog our role
    /// may write; no other prober acting on the cluster (a --no-election instance, a gpfts
    /// holding its lock); a PROBE answered by every primary with our credentials; an
    /// open-file limit covering probe.concurrency. One line per check (ok, FAIL or skip, and
    /// why); exits 1 if any check fails, 2 if the configuration is invalid.
    Preflight {
        #[command(flatten)]
        config: ConfigArgs,
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
    // Installed as `gpfts` (a symlink), ftsd takes gpfts's command line.
    if ftsd::gpfts::invoked_as_gpfts() {
        return ftsd::gpfts::main(std::env::args_os());
    }
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
        Command::Preflight { config } => return preflight(&config),
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
        Command::VipAgent { config } => match load(&config) {
            Ok(cfg) => {
                init_tracing(&cfg);
                runtime().and_then(|rt| {
                    rt.block_on(ftsd::coordinator::vip::run(
                        cfg,
                        daemon::process::wait_for_signal(),
                    ))
                })
            }
            Err(code) => return code,
        },
        Command::Run {
            config,
            no_election,
            shadow,
            shadow_window,
        } => match load(&config) {
            Ok(cfg) => {
                // stderr cannot fail to open
                let log = daemon::process::init_tracing(&cfg, None).ok();
                let reload = daemon::reload::Reload {
                    load: Box::new(move || config.load()),
                    log,
                };
                let election = if shadow {
                    Election::Shadow {
                        window: shadow_window,
                    }
                } else if no_election {
                    Election::None
                } else {
                    Election::Etcd
                };
                runtime().and_then(|rt| {
                    rt.block_on(daemon::run_with_reload(
                        cfg,
                        election,
                        daemon::process::wait_for_signal(),
                        Some(reload),
                    ))
                })
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
    daemon::process::runtime().context("starting the async runtime")
}

fn init_tracing(cfg: &Config) {
    // stderr cannot fail to open
    let _ = daemon::process::init_tracing(cfg, None);
}

/// `ftsd preflight`: the report on stdout; exit 0 when every check passed.
fn preflight(args: &ConfigArgs) -> ExitCode {
    use ftsd::preflight::{self, CheckResult};
    let cfg = match args.load() {
        Ok(cfg) => cfg,
        Err(e) => {
            print!(
                "{}",
                preflight::render(&[CheckResult::fail("config", e.to_string())])
            );
            return ExitCode::from(e.exit_code() as u8);
        }
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ftsd: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let mut results = vec![CheckResult::ok(
        "config",
        format!("{} is valid", args.config.display()),
    )];
    results.extend(rt.block_on(preflight::checks::run(&cfg, &cfg.effective_instance_id())));
    print!("{}", preflight::render(&results));
    if preflight::passed(&results) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn catalog_init(cfg: &Config) -> anyhow::Result<()> {
    for action in ftsd::daemon::init_catalog(cfg).await? {
        match action {
            TableAction::Created(t) => println!("created {t}"),
            TableAction::AlreadyPresent(t) => {
                println!("kept {t} (already present with the expected shape)")
            }
        }
    }
    Ok(())
}
