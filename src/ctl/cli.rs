//! The command line.

use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

/// Inspect and operate an ftsd cluster (the external FTS for Greenplum / Cloudberry).
///
/// ftsctl talks to the gRPC API of any ftsd instance. Read commands are answered by any
/// instance; mutating ones (probe, pause, resume) are redirected to the leader.
#[derive(Debug, Parser)]
#[command(name = "ftsctl", version)]
pub struct Cli {
    /// API address(es) of ftsd instances (host:port), tried in order. Default 127.0.0.1:7470
    /// unless --etcd is given.
    #[arg(
        long,
        short = 'e',
        value_delimiter = ',',
        env = "FTSCTL_ENDPOINT",
        global = true
    )]
    pub endpoint: Vec<String>,
    /// etcd endpoint(s) (http://host:port): find the instances in the members registry,
    /// leader first. Needs --cluster.
    #[arg(long, value_delimiter = ',', env = "FTSCTL_ETCD", global = true)]
    pub etcd: Vec<String>,
    /// Cluster name (the `cluster` key of the daemons' configuration), for --etcd.
    #[arg(long, env = "FTSCTL_CLUSTER", global = true)]
    pub cluster: Option<String>,
    /// etcd key prefix (the daemons' `etcd.prefix`), for --etcd.
    #[arg(
        long,
        default_value = "/ftsd",
        env = "FTSCTL_ETCD_PREFIX",
        global = true
    )]
    pub etcd_prefix: String,
    /// CA certificate (PEM) that signed the ftsd instances' API certificates: connect over TLS
    /// (host:port addresses become https://).
    #[arg(long, value_name = "PEM", env = "FTSCTL_CACERT", global = true)]
    pub cacert: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for mutual TLS; authenticates mutating calls. Needs --key and
    /// --cacert.
    #[arg(
        long,
        value_name = "PEM",
        env = "FTSCTL_CERT",
        global = true,
        requires = "key"
    )]
    pub cert: Option<std::path::PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(
        long,
        value_name = "PEM",
        env = "FTSCTL_KEY",
        global = true,
        requires = "cert"
    )]
    pub key: Option<std::path::PathBuf>,
    /// File holding the API bearer token (the daemons' api.token_file); authenticates
    /// mutating calls.
    #[arg(long, value_name = "PATH", env = "FTSCTL_TOKEN_FILE", global = true)]
    pub token_file: Option<std::path::PathBuf>,
    /// CA certificate (PEM) of a TLS etcd (https:// endpoints), for --etcd.
    #[arg(long, value_name = "PEM", env = "FTSCTL_ETCD_CACERT", global = true)]
    pub etcd_cacert: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for etcd, for --etcd. Needs --etcd-key.
    #[arg(
        long,
        value_name = "PEM",
        env = "FTSCTL_ETCD_CERT",
        global = true,
        requires = "etcd_key"
    )]
    pub etcd_cert: Option<std::path::PathBuf>,
    /// Private key (PEM) of --etcd-cert.
    #[arg(
        long,
        value_name = "PEM",
        env = "FTSCTL_ETCD_KEY",
        global = true,
        requires = "etcd_cert"
    )]
    pub etcd_key: Option<std::path::PathBuf>,
    /// Print JSON (one document; shapes in docs/api.md) instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Limit for connecting and for each call (probe waits longer: see `probe --wait`).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration, global = true)]
    pub timeout: Duration,
    /// When to use colours.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto, global = true)]
    pub color: ColorChoice,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// On a terminal, unless NO_COLOR is set.
    Auto,
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Cluster overview: leader, epoch, pause, last cycle, segment health, members. Exits 1
    /// when a segment is down or no leader is elected.
    Status,
    /// Every row of gp_segment_configuration with derived flags and the last probe result.
    Segments {
        /// Segments marked down (like gpstate -e); with --unbalanced, either.
        #[arg(long)]
        down: bool,
        /// Only mirror rows, i.e. role m (like gpstate -m); combines with the others.
        #[arg(long)]
        mirrors: bool,
        /// Segments not in their preferred role (like gpstate -e); with --down, either.
        #[arg(long)]
        unbalanced: bool,
    },
    /// Configuration history (gp_configuration_history) with ftsd's evidence, newest first.
    History {
        /// Only this content id.
        #[arg(long, allow_negative_numbers = true)]
        content: Option<i32>,
        /// Only this dbid.
        #[arg(long)]
        dbid: Option<i32>,
        /// Only entries newer than this: a duration ago (1h, 30m, 2days) or an RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// At most this many entries.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// The ftsd instances, their roles and last cycles.
    Members,
    /// The current leader. Exits 1 when none is elected.
    Leader,
    /// Run one probe cycle now on the leader and show its result.
    Probe {
        /// How long to wait for the cycle.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        wait: Duration,
    },
    /// Maintenance mode: keep probing and reporting, never fail over or write the catalog.
    /// Stored in etcd, so a new leader honours it.
    Pause {
        /// Why (shown by `status`).
        #[arg(long, short = 'r')]
        reason: String,
        /// End the pause by itself after this long (e.g. 30m, 2h; at most 30 days). Without
        /// it the cluster stays paused until `ftsctl resume`.
        #[arg(long = "for", value_name = "DURATION", value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
    },
    /// Leave maintenance mode.
    Resume,
    /// The brake on correlated failures: failovers that would span more segment hosts within
    /// one window than `brake.max_hosts` are held until an operator releases them.
    #[command(subcommand)]
    Brake(BrakeCommand),
    /// Show the evidence behind one content's last transition.
    Explain {
        /// Content id.
        #[arg(allow_negative_numbers = true)]
        content: i32,
    },
    /// Planned switchover of one pair, run by the leader: stop the writes on the primary,
    /// wait until the standby has replayed them, record the new primary, promote the standby.
    /// The old primary stays read-only and must be rebuilt as a standby (pg_basebackup /
    /// pg_rewind; gpinitstandby for the coordinator). Refused while paused or when the standby
    /// is not in sync. Exits 0 when done, 4 when aborted or stopped.
    Switchover {
        /// Content id of the pair; -1 is the coordinator pair.
        #[arg(long, allow_negative_numbers = true)]
        content: i32,
        /// Bound on stopping the writes and on the standby's replay (at most 10m); past it
        /// the switchover is undone.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        wait: Duration,
    },
    /// Shadow mode: how a `ftsd run --shadow` instance's decisions compared with the incumbent
    /// FTS's changes. Point --endpoint at the shadow instance. Exits 1 when any divergence was
    /// seen.
    Shadow,
    /// Refreshing view of status and segments.
    Watch {
        /// Refresh interval.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        interval: Duration,
        /// Stop after this many refreshes (0: until interrupted).
        #[arg(long, default_value_t = 0)]
        iterations: u64,
    },
    /// Print a shell completion script.
    Completions {
        /// Target shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), or with --dir write it and one page per subcommand there.
    Man {
        /// Directory to write ftsctl.1, ftsctl-status.1, ... into.
        #[arg(long, value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
    },
}

/// `ftsctl brake ...`.
#[derive(Debug, Subcommand)]
pub enum BrakeCommand {
    /// Whether the brake is engaged, what it counted, the failovers admitted within the
    /// window and the last release. Exits 1 while it is engaged.
    Status,
    /// Release an engaged brake (leader only): the held failovers are decided again from the
    /// next cycle's probes, and a new window starts. Recorded with who, when and why.
    Release {
        /// Why (recorded with the release and shown by `brake status`).
        #[arg(long, short = 'r')]
        reason: String,
    },
}
