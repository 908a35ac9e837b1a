//! `fts-segsim`: simulated Greenplum/Cloudberry segments answering the real FTS protocol, with a
//! control API for fault injection. See `fts_segsim` for the library side.

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use fts_segsim::ctl::{self, Client};
use fts_segsim::{catalog, layout, Auth, SimConfig, Simulator};
use ftsd::model::Dbid;

#[derive(Parser)]
#[command(
    name = "fts-segsim",
    version,
    about = "Simulated Greenplum segments speaking the FTS wire protocol"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve simulated segment instances and the control API until SIGTERM/SIGINT.
    Run(RunArgs),
    /// Write the gp_segment_configuration rows of a layout without serving it.
    WriteCatalog(WriteCatalogArgs),
    /// Talk to a running simulator's control API.
    Ctl(CtlArgs),
}

#[derive(Args, Clone)]
struct LayoutArgs {
    /// Number of mirrored contents (primary dbid c+2, mirror dbid C+c+2 for C contents).
    #[arg(long, default_value_t = 1)]
    pairs: u32,
    /// Extra contents with a primary only, numbered after the mirrored ones.
    #[arg(long, default_value_t = 0)]
    mirrorless: u32,
    /// Address every instance listens on (and that the catalog rows name, unless
    /// --catalog-host is given).
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Host name the catalog rows (--catalog, write-catalog) give every instance as hostname
    /// and address, instead of --host: the FTS then resolves it (e.g. through /etc/hosts or
    /// DNS) to the address --host listens on.
    #[arg(long, value_name = "NAME")]
    catalog_host: Option<String>,
    /// Instance i in dbid order listens on base-port + i; 0 lets the OS pick each port.
    #[arg(long, default_value_t = 0)]
    base_port: u16,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    layout: LayoutArgs,
    /// Address of the HTTP control API (port 0 picks a free port; see the ready log line).
    #[arg(long, env = "FTS_SEGSIM_CONTROL", default_value = "127.0.0.1:7070")]
    control: SocketAddr,
    /// How primaries authenticate FTS connections (mirrors never check).
    #[arg(long, value_enum, default_value_t = Auth::Trust)]
    auth: Auth,
    /// The superuser name primaries accept; other users are refused as non-superusers.
    #[arg(long, env = "FTS_SEGSIM_USER", default_value = "gpadmin")]
    user: String,
    /// File holding the password for --auth password/md5 (first line).
    #[arg(long, conflicts_with = "password")]
    password_file: Option<PathBuf>,
    /// Password for --auth password/md5 (prefer the environment over the command line).
    #[arg(long, env = "FTS_SEGSIM_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Simulated gp_fts_mark_mirror_down_grace_period (request_retry window).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    mirror_down_grace: Duration,
    /// Delay between accepting PROMOTE and acting as primary.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    promote_delay: Duration,
    /// Write gp_segment_configuration here at start (libpq URL or key=value string).
    #[arg(long, env = "FTS_SEGSIM_CATALOG")]
    catalog: Option<String>,
    /// Write the layout as a Cloudberry external-FTS blob into the etcd this cbdb_etcd.conf
    /// names (`…/fts_dump_file_key`) at start.
    #[arg(long, value_name = "CBDB_ETCD_CONF")]
    cbdb_conf: Option<std::path::PathBuf>,
    /// Also serve the coordinator (dbid 1, content -1) as an FTS-answering primary.
    #[arg(long)]
    coordinator: bool,
    /// Also serve a standby coordinator (content -1, next free dbid; implies --coordinator):
    /// the coordinator's PROBE answers report it, and it accepts PROMOTE. With --cbdb-conf it
    /// promotes only while the etcd promote-ready key is 1 (set to 1 at start) and rewrites the
    /// blob as activateStandby does.
    #[arg(long)]
    standby: bool,
    /// server_version reported to clients.
    #[arg(long, default_value = "12.12")]
    server_version: String,
    /// Log format on stderr; the level comes from RUST_LOG (default info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Args)]
struct WriteCatalogArgs {
    #[command(flatten)]
    layout: LayoutArgs,
    /// Catalog database (libpq URL or key=value string).
    #[arg(long, env = "FTS_SEGSIM_CATALOG")]
    catalog: String,
}

#[derive(Args)]
struct CtlArgs {
    /// Control API address (host:port or http:// URL).
    #[arg(long, env = "FTS_SEGSIM_CONTROL", default_value = "127.0.0.1:7070")]
    control: String,
    /// Print JSON instead of a table / summary line.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: CtlCmd,
}

#[derive(Subcommand)]
enum CtlCmd {
    /// List all instances.
    List,
    /// Show one instance.
    Show { dbid: Dbid },
    /// Inject a fault: down | hang | slow DUR | crash-restart DUR | recovery-progress |
    /// recovery-stuck | starting-up | resetting | mirror-disconnected | lagging | disk-error |
    /// garbage VARIANT (wrong_columns, wrong_type, text_bool, random_bytes, giant_length, two_rows).
    Fault {
        dbid: Dbid,
        kind: String,
        /// Duration for slow/crash-restart, variant for garbage.
        arg: Option<String>,
        /// crash-restart only: time spent "in recovery mode" after coming back.
        #[arg(long, value_parser = humantime::parse_duration)]
        recovery_for: Option<Duration>,
    },
    /// Remove an instance's fault (a dead instance comes back in its role).
    Clear { dbid: Dbid },
    /// Bring an instance back as an in-sync mirror of the acting primary (gprecoverseg).
    Recover { dbid: Dbid },
    /// Zero all message counters.
    ResetCounters,
    /// Remove every fault.
    ClearAll,
    /// Set the Cloudberry standby promote-ready key (simulators run with --cbdb-conf).
    PromoteReady {
        /// 1: the standby may promote; 0: it ignores PROMOTE.
        #[arg(value_parser = clap::value_parser!(u8).range(0..=1))]
        value: u8,
    },
    /// Connections from this source address hang, to every instance (one prober host cut
    /// off the segments).
    BlockClient { ip: std::net::IpAddr },
    /// Connections from this source address are served again.
    UnblockClient { ip: std::net::IpAddr },
    /// Check the control API is up.
    Health,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Ctl(args) => return run_ctl(args),
        Cmd::Run(args) => runtime().and_then(|rt| rt.block_on(run(args))),
        Cmd::WriteCatalog(args) => runtime().and_then(|rt| rt.block_on(write_catalog(args))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fts-segsim: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn sim_config(layout: &LayoutArgs) -> SimConfig {
    SimConfig {
        pairs: layout.pairs,
        mirrorless: layout.mirrorless,
        host: layout.host,
        base_port: layout.base_port,
        ..SimConfig::default()
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let password = match (&args.password_file, &args.password) {
        (Some(path), _) => {
            let raw = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read password file {}", path.display()))?;
            Some(raw.lines().next().unwrap_or_default().to_string())
        }
        (None, p) => p.clone(),
    };
    let cfg = SimConfig {
        auth: args.auth,
        user: args.user.clone(),
        password,
        mirror_down_grace: args.mirror_down_grace,
        promote_delay: args.promote_delay,
        coordinator: args.coordinator,
        standby: args.standby,
        server_version: args.server_version.clone(),
        ..sim_config(&args.layout)
    };
    let mut sim = Simulator::start(cfg).await?;
    if let Some(url) = &args.catalog {
        let rows = catalog::named(sim.segments(), args.layout.catalog_host.as_deref());
        catalog::write_catalog(url, &rows).await?;
    }
    if let Some(conf) = &args.cbdb_conf {
        let link = fts_segsim::cloudberry::CbdbLink::open(conf)?;
        let key = sim.attach_cloudberry(link).await?;
        tracing::info!("configuration blob written to {key}");
    }
    let control = sim.serve_control(args.control).await?;
    tracing::info!(
        "segsim ready pairs={} mirrorless={} instances={} control={control}",
        args.layout.pairs,
        args.layout.mirrorless,
        sim.instance_count()
    );
    wait_for_signal().await?;
    tracing::info!("shutting down");
    sim.shutdown();
    // Let the control server finish in-flight requests.
    tokio::time::sleep(Duration::from_millis(50)).await;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => {}
        r = tokio::signal::ctrl_c() => r.context("cannot install SIGINT handler")?,
    }
    Ok(())
}

async fn write_catalog(args: WriteCatalogArgs) -> anyhow::Result<()> {
    init_logging(LogFormat::Text);
    if args.layout.base_port == 0 {
        bail!("--base-port is required: the catalog must name the ports `run` will listen on");
    }
    let cfg = sim_config(&args.layout);
    let rows = catalog::named(layout(&cfg), args.layout.catalog_host.as_deref());
    catalog::write_catalog(&args.catalog, &rows).await?;
    Ok(())
}

fn run_ctl(args: CtlArgs) -> ExitCode {
    let client = Client::new(&args.control);
    let json = args.json;
    let print_one = |v: fts_segsim::SegmentView| {
        if json {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        } else {
            print!("{}", ctl::format_table(&[v]));
        }
    };
    let result = match args.cmd {
        CtlCmd::List => client.list().map(|views| {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&views).unwrap_or_default()
                );
            } else {
                print!("{}", ctl::format_table(&views));
            }
        }),
        CtlCmd::Show { dbid } => client.show(dbid).map(print_one),
        CtlCmd::Fault {
            dbid,
            kind,
            arg,
            recovery_for,
        } => match ctl::parse_fault(&kind, arg.as_deref(), recovery_for) {
            Ok(fault) => client.fault(dbid, &fault).map(print_one),
            Err(e) => {
                eprintln!("fts-segsim: error: {e}");
                return ExitCode::from(2);
            }
        },
        CtlCmd::Clear { dbid } => client.clear(dbid).map(print_one),
        CtlCmd::Recover { dbid } => client.recover(dbid).map(print_one),
        CtlCmd::ResetCounters => client.reset_counters().map(|v| println!("{v}")),
        CtlCmd::ClearAll => client.clear_all().map(|v| println!("{v}")),
        CtlCmd::PromoteReady { value } => client.promote_ready(value == 1).map(|v| println!("{v}")),
        CtlCmd::BlockClient { ip } => client.block_client(ip, true).map(|v| println!("{v}")),
        CtlCmd::UnblockClient { ip } => client.block_client(ip, false).map(|v| println!("{v}")),
        CtlCmd::Health => client.health().map(|v| println!("{v}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fts-segsim: error: {e}");
            ExitCode::FAILURE
        }
    }
}
