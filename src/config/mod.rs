//! The daemon's configuration: a TOML file, overlaid by `FTSD_*` environment variables, overlaid
//! by command-line flags (defaults < file < env < flags).
//!
//! Every key is declared once, in [`keys`]; loading, the environment overlay, the masked printout
//! and the reference in `docs/configuration.md` all follow that one list, so a key cannot exist
//! in one place and be missing in another. Loading either yields a fully validated [`Config`] or
//! a [`ConfigError`] whose `Display` is the single line the daemon prints before exiting with
//! [`ConfigError::exit_code`].
//!
//! Secrets (the four passwords and a password embedded in the catalog URL) are kept in types
//! whose `Debug` and `Display` print `********`, so logging a `Config` with `{:?}` is safe.

mod args;
mod error;
mod keys;
mod load;
pub mod reload;
mod render;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use args::{ConfigArgs, Overrides};
pub use error::ConfigError;
pub use load::process_env;
pub(crate) use validate::{host_port, vip_address};

/// Where the daemon looks for its configuration when neither `--config` nor `FTSD_CONFIG` is set.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/ftsd/ftsd.toml";

/// Every configuration key (dotted, e.g. `probe.interval`) with the environment variable that
/// overrides it, in documentation order.
pub fn all_keys() -> impl Iterator<Item = (&'static str, String)> {
    keys::KEYS.iter().map(|k| (k.name, k.env_var()))
}

pub use crate::secret::{Secret, MASK};
pub use crate::tls::postgres::{PgTlsSettings, SslMode};

/// A libpq connection string (`postgresql://user@host:port/db` or `host=... dbname=...`).
/// Operators do put passwords in these, so `Debug`/`Display` mask the password part; the raw
/// text is only available through [`ConnString::expose`].
#[derive(Clone, PartialEq, Eq, Default)]
pub struct ConnString(String);

impl ConnString {
    pub fn new(value: impl Into<String>) -> Self {
        ConnString(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ConnString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", render::mask_conn_string(&self.0))
    }
}

impl fmt::Display for ConnString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&render::mask_conn_string(&self.0))
    }
}

/// The effective configuration. Built only by [`Config::load`], which validates it, so code that
/// holds one may rely on every documented range and relation.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Cluster name; part of every etcd key, hence restricted to `[A-Za-z0-9_.-]+`.
    pub cluster: String,
    /// Name of this daemon instance in elections and logs; see [`Config::effective_instance_id`].
    pub instance_id: Option<String>,
    pub probe: ProbeConfig,
    /// How the instances that do not act observe, and how the leader waits for their
    /// confirmation of a lost primary (docs/safety.md).
    pub observe: ObserveConfig,
    /// Settings of the `postgres` probe driver (plain PostgreSQL streaming-replication pairs).
    pub postgres: PostgresConfig,
    pub catalog: CatalogConfig,
    /// The coordinator pair (content -1): probing and failover; see docs/coordinator.md.
    pub coordinator: CoordinatorConfig,
    /// `ftsd vip-agent`: the client-facing address of the coordinator pair.
    pub vip: VipConfig,
    pub etcd: EtcdConfig,
    /// The brake on correlated failures (docs/safety.md).
    pub brake: BrakeConfig,
    pub api: ApiConfig,
    pub hooks: HooksConfig,
    pub log: LogConfig,
}

/// How segments are probed. Defaults are Greenplum's `gp_fts_probe_*` GUC defaults, so a cluster
/// moved from the built-in FTS keeps its failure-detection timing.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeConfig {
    /// How segments are probed and told to act: the FTS wire protocol (Greenplum/Cloudberry
    /// segments, `fts-segsim`) or SQL on plain PostgreSQL primary/standby pairs.
    pub driver: ProbeDriver,
    /// Time between the starts of two probe cycles (`gp_fts_probe_interval`).
    pub interval: Duration,
    /// Limit for one probe attempt, connection included (`gp_fts_probe_timeout`).
    pub timeout: Duration,
    /// Retries after a failed attempt before a segment counts as failed this cycle:
    /// `retries + 1` attempts in all, as with `gp_fts_probe_retries`.
    pub retries: u32,
    /// Pause between two attempts on the same segment.
    pub retry_delay: Duration,
    /// Upper bound on probes in flight at once.
    pub concurrency: u32,
    /// For drivers whose segments do not compute `request_retry` themselves: how long a mirror
    /// may be disconnected before it is marked down (`gp_fts_mark_mirror_down_grace_period`).
    pub mirror_down_grace: Duration,
    /// Whose decisions to follow where the in-core FTS and Cloudberry's `gpfts` differ.
    pub decision_profile: DecisionProfile,
    /// Role used for FTS connections to primaries.
    pub user: String,
    pub password_file: Option<PathBuf>,
    /// From `FTSD_PROBE_PASSWORD`, else from `password_file`.
    pub password: Option<Secret>,
    /// A primary must have been seen down at least this long before a failover (0: no
    /// minimum beyond the retry budget, Greenplum's behaviour).
    pub min_down: Duration,
    /// The local address FTS probe connections are bound to (None: the kernel chooses).
    pub source_address: Option<std::net::IpAddr>,
}

/// `[observe]`: the second opinion (docs/safety.md).
#[derive(Debug, Clone, PartialEq)]
pub struct ObserveConfig {
    /// `off` (the default): no second opinion, the leader acts on its own observation;
    /// `continuous`: followers probe every primary once per interval, staggered against the
    /// leader; `on-demand`: they probe only when the leader asks them to confirm a loss.
    pub mode: ObserveMode,
    /// The longest the leader waits for the other members' confirmations (never past its
    /// act-by deadline). None: one interval plus one probe retry budget.
    pub confirm_timeout: Option<Duration>,
}

impl Default for ObserveConfig {
    fn default() -> Self {
        ObserveConfig {
            mode: ObserveMode::Off,
            confirm_timeout: None,
        }
    }
}

pub use crate::engine::observe_only::ObserveMode;

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            driver: ProbeDriver::Fts,
            interval: Duration::from_secs(60),
            timeout: Duration::from_secs(20),
            retries: 5,
            retry_delay: Duration::from_secs(1),
            concurrency: 256,
            mirror_down_grace: Duration::from_secs(30),
            decision_profile: DecisionProfile::Auto,
            user: "gpadmin".to_owned(),
            password_file: None,
            password: None,
            min_down: Duration::ZERO,
            source_address: None,
        }
    }
}

/// `probe.decision_profile`: whose decision table ftsd follows where the in-core FTS and
/// Cloudberry's external `gpfts` differ (docs/decisions.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecisionProfile {
    /// `gpfts` on the Cloudberry backend, the in-core FTS on the SQL one.
    Auto,
    InCore,
    Gpfts,
}

impl DecisionProfile {
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionProfile::Auto => "auto",
            DecisionProfile::InCore => "in-core",
            DecisionProfile::Gpfts => "gpfts",
        }
    }

    /// The profile in effect for a cluster kept in `backend`.
    pub fn resolve(self, backend: CatalogBackend) -> crate::core::Profile {
        use crate::core::Profile;
        match (self, backend) {
            (DecisionProfile::InCore, _) => Profile::InCore,
            (DecisionProfile::Gpfts, _) => Profile::Gpfts,
            (DecisionProfile::Auto, CatalogBackend::Cloudberry) => Profile::Gpfts,
            (DecisionProfile::Auto, CatalogBackend::Postgres) => Profile::InCore,
        }
    }
}

/// The segment driver, chosen per cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeDriver {
    /// The FTS wire protocol (`gpconntype=fts`): Greenplum/Cloudberry segments and `fts-segsim`.
    Fts,
    /// SQL on vanilla PostgreSQL streaming-replication pairs (see docs/postgres-driver.md).
    Postgres,
}

impl ProbeDriver {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeDriver::Fts => "fts",
            ProbeDriver::Postgres => "postgres",
        }
    }
}

/// The `postgres` driver: what counts as in sync and what to restore when a standby is back.
#[derive(Debug, Clone, PartialEq)]
pub struct PostgresConfig {
    /// Database the driver connects to on every segment.
    pub database: String,
    /// Replay lag (bytes between the primary's current WAL position and the standby's replay
    /// position) still counted as in sync.
    pub max_lag: u64,
    /// `synchronous_standby_names` to set on a primary whose standby is streaming again;
    /// empty: the standby's quoted `application_name` as seen in `pg_stat_replication`.
    pub sync_standby_names: String,
    /// How long a primary that answers "starting up / in recovery" (SQLSTATE 57P03) counts as
    /// restarting rather than failed: no failover within it.
    pub restart_grace: Duration,
    /// argv of a command run (with the target appended) to fence a former primary that
    /// answers writable while the catalog lists it as a mirror; empty: none.
    pub fence_command: Vec<String>,
    /// Bound on one `fence_command` run (the process is killed then).
    pub fence_timeout: Duration,
    /// TLS of the driver's connections to primaries and standbys: `postgres.sslmode`,
    /// `postgres.ssl_ca_file`, `postgres.ssl_cert_file`, `postgres.ssl_key_file`.
    pub tls: PgTlsSettings,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            database: "postgres".to_owned(),
            max_lag: 16 * 1024 * 1024,
            sync_standby_names: String::new(),
            restart_grace: Duration::from_secs(60),
            fence_command: Vec::new(),
            fence_timeout: Duration::from_secs(30),
            tls: PgTlsSettings::default(),
        }
    }
}

/// Where the segment configuration lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatalogBackend {
    /// `gp_segment_configuration` in PostgreSQL or on a Greenplum coordinator (`catalog.url`).
    Postgres,
    /// The configuration blob a Cloudberry `--enable-external-fts` cluster keeps in etcd
    /// (`catalog.cbdb_conf`); see docs/cloudberry.md.
    Cloudberry,
}

impl CatalogBackend {
    pub fn as_str(self) -> &'static str {
        match self {
            CatalogBackend::Postgres => "postgres",
            CatalogBackend::Cloudberry => "cloudberry",
        }
    }
}

/// Connection to the coordinator's catalog (`gp_segment_configuration`).
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogConfig {
    /// `postgres` (default) or `cloudberry`.
    pub backend: CatalogBackend,
    /// `cloudberry`: the `cbdb_etcd.conf` naming the etcd and the cluster's keys.
    pub cbdb_conf: PathBuf,
    /// `cloudberry`: the user ftsd connects to the coordinator as (`gpfts -U`); the login
    /// user when unset.
    pub coordinator_user: Option<String>,
    /// `cloudberry`: history rows and evidence rows kept in etcd (each).
    pub history_limit: u32,
    /// Required; there is no safe guess for where the coordinator runs.
    pub url: ConnString,
    pub password_file: Option<PathBuf>,
    /// From `FTSD_CATALOG_PASSWORD`, else from `password_file`; wins over a password in `url`.
    pub password: Option<Secret>,
    pub connect_timeout: Duration,
    /// Server-side limit per statement (`statement_timeout`).
    pub statement_timeout: Duration,
    /// Server-side limit on waiting for a row lock (`lock_timeout`): a fence statement blocked
    /// by another session fails instead of waiting.
    pub lock_timeout: Duration,
    /// The server ends a session of ours left idle inside a transaction this long
    /// (`idle_in_transaction_session_timeout`), so a stalled former leader cannot keep the
    /// fence row locked.
    pub idle_in_transaction_timeout: Duration,
    /// Client-side limit for one catalog call (connecting and checking the schema included):
    /// bounds a call on a half-open connection, which no server-side timeout can.
    pub call_timeout: Duration,
    /// TCP keepalive idle time and probe interval on the catalog connection; also its
    /// `TCP_USER_TIMEOUT` together with `call_timeout`.
    pub keepalive: Duration,
    /// TLS of the catalog connection (and, with `cloudberry`, of the coordinator call):
    /// `catalog.sslmode`, `catalog.ssl_ca_file`, `catalog.ssl_cert_file`,
    /// `catalog.ssl_key_file`.
    pub tls: PgTlsSettings,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        CatalogConfig {
            backend: CatalogBackend::Postgres,
            cbdb_conf: PathBuf::from("/tmp/cbdb_etcd.conf"),
            coordinator_user: None,
            history_limit: 1000,
            url: ConnString::default(),
            password_file: None,
            password: None,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(10),
            lock_timeout: Duration::from_secs(3),
            idle_in_transaction_timeout: Duration::from_secs(5),
            call_timeout: Duration::from_secs(15),
            keepalive: Duration::from_secs(5),
            tls: PgTlsSettings::default(),
        }
    }
}

/// The coordinator and its standby (content -1), watched over SQL by every instance and failed
/// over by the leader (docs/coordinator.md). Off unless `primary` and `standby` are set; automatic
/// failover is off unless `auto_failover` is true, like `gpfts -D`.
#[derive(Debug, Clone, PartialEq)]
pub struct CoordinatorConfig {
    /// `host:port` of the coordinator as first set up; empty: the pair is not watched.
    pub primary: String,
    /// `host:port` of its standby.
    pub standby: String,
    /// Promote the standby when the coordinator is lost (and every guard holds).
    pub auto_failover: bool,
    /// Time between two probe rounds of the pair.
    pub interval: Duration,
    /// Limit for one probe attempt, connection included.
    pub timeout: Duration,
    /// Retries after a failed attempt before the coordinator counts as lost this round.
    pub retries: u32,
    /// How long a coordinator refusing sessions as starting up / in recovery (SQLSTATE 57P03)
    /// counts as restarting rather than lost.
    pub restart_grace: Duration,
    /// Role the probes, the promotion and the write check connect as.
    pub user: String,
    pub database: String,
    pub password_file: Option<PathBuf>,
    /// From `FTSD_COORDINATOR_PASSWORD`, else from `password_file`.
    pub password: Option<Secret>,
    /// Replay lag (bytes) of the standby still counted as in sync.
    pub max_lag: u64,
    /// argv run (with the old coordinator appended) before promoting; a non-zero exit aborts
    /// the failover. Empty: the failover needs every observer to have lost the coordinator.
    pub fence_command: Vec<String>,
    pub fence_timeout: Duration,
    /// argv run (with the standby appended) to promote a server without `pg_promote()`
    /// (before PostgreSQL 12), e.g. `gpactivatestandby` over ssh. Empty: `pg_promote()`.
    pub promote_command: Vec<String>,
    /// Bound on the promotion (either way) and on the write check after it.
    pub promote_timeout: Duration,
    /// No automatic failover within this long after the last one (the brake).
    pub failover_cooldown: Duration,
    /// TLS of every connection to the pair (probes, promotion, write check, switchover):
    /// `coordinator.sslmode`, `coordinator.ssl_ca_file`, `coordinator.ssl_cert_file`,
    /// `coordinator.ssl_key_file`.
    pub tls: PgTlsSettings,
    /// Local IP address the pair's connections are bound to (None: the kernel chooses).
    pub source_address: Option<std::net::IpAddr>,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            primary: String::new(),
            standby: String::new(),
            auto_failover: false,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(3),
            retries: 3,
            restart_grace: Duration::from_secs(60),
            user: "gpadmin".to_owned(),
            database: "postgres".to_owned(),
            password_file: None,
            password: None,
            max_lag: 16 * 1024 * 1024,
            fence_command: Vec::new(),
            fence_timeout: Duration::from_secs(30),
            promote_command: Vec::new(),
            promote_timeout: Duration::from_secs(60),
            failover_cooldown: Duration::from_secs(600),
            tls: PgTlsSettings::default(),
            source_address: None,
        }
    }
}

impl CoordinatorConfig {
    /// Whether the pair is watched at all.
    pub fn enabled(&self) -> bool {
        !self.primary.is_empty()
    }
}

/// `ftsd vip-agent` (one per coordinator host): holds the client-facing address while etcd
/// records this host's server as the acting coordinator (docs/coordinator.md).
#[derive(Debug, Clone, PartialEq)]
pub struct VipConfig {
    /// The address with its prefix length, e.g. `10.0.0.100/24`; empty: no agent.
    pub address: String,
    /// The interface it is added to.
    pub interface: String,
    /// Which server of the pair runs on this host: `coordinator.primary` or
    /// `coordinator.standby`, as written there.
    pub member: String,
    /// Time between two checks of the recorded state and the interface.
    pub interval: Duration,
    /// argv run instead of `ip` / `arping`, with `up|down ADDRESS INTERFACE` appended, for
    /// sites with their own VIP tooling. Empty: `ip addr add/del`, `arping`.
    pub hook: Vec<String>,
    /// A named network namespace the interface lives in (`ip -n`); empty: the agent's own.
    pub netns: String,
}

impl Default for VipConfig {
    fn default() -> Self {
        VipConfig {
            address: String::new(),
            interface: String::new(),
            member: String::new(),
            interval: Duration::from_secs(1),
            hook: Vec::new(),
            netns: String::new(),
        }
    }
}

/// The etcd cluster that holds leadership and the shared state.
#[derive(Debug, Clone, PartialEq)]
pub struct EtcdConfig {
    /// `http(s)://host:port`, one per member.
    pub endpoints: Vec<String>,
    /// Key prefix; keys are `<prefix>/<cluster>/...`.
    pub prefix: String,
    /// Leader lease TTL. etcd counts whole seconds, so only whole seconds are accepted.
    pub lease_ttl: Duration,
    /// The leader stops acting this long before its lease could have expired.
    pub act_margin: Duration,
    pub dial_timeout: Duration,
    /// HTTP/2 keepalive ping interval on etcd connections that carry a stream. gRPC servers
    /// answer pings more frequent than their minimum (etcd's `--grpc-keepalive-min-time`,
    /// default 5s) with GOAWAY `too_many_pings`, tearing down every stream on the connection.
    pub keepalive_interval: Duration,
    /// A leader whose probe cycles fail this many times in a row (catalog unreachable or
    /// unreadable) hands office over; 0: never.
    pub resign_after_failed_cycles: u32,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    /// From `FTSD_ETCD_PASSWORD`, else from `password_file`.
    pub password: Option<Secret>,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            endpoints: vec!["http://127.0.0.1:2379".to_owned()],
            prefix: "/ftsd".to_owned(),
            lease_ttl: Duration::from_secs(10),
            act_margin: Duration::from_secs(1),
            dial_timeout: Duration::from_secs(2),
            keepalive_interval: Duration::from_secs(10),
            resign_after_failed_cycles: 3,
            username: None,
            password_file: None,
            password: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
        }
    }
}

/// The daemon's own API and metrics endpoints: addresses, TLS and who may call what
/// (docs/api.md, "Authentication").
#[derive(Debug, Clone, PartialEq)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    pub metrics_listen: SocketAddr,
    /// This instance's certificate (PEM, chain allowed): both listeners speak TLS when set.
    /// Also the client certificate this instance presents in instance-to-instance calls.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// CA whose client certificates authenticate API callers (mTLS); also the CA that
    /// instance-to-instance calls verify the other instances' certificates with.
    pub client_ca_file: Option<PathBuf>,
    /// File holding the bearer token that authenticates API callers.
    pub token_file: Option<PathBuf>,
    /// Read from `token_file` at load time.
    pub token: Option<Secret>,
    /// Whether read-only calls need credentials too.
    pub read_auth: ReadAuth,
    /// File holding the bearer token `GET /metrics` requires; unset: metrics are open.
    pub metrics_token_file: Option<PathBuf>,
    /// Read from `metrics_token_file` at load time.
    pub metrics_token: Option<Secret>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7470)),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 7471)),
            tls_cert_file: None,
            tls_key_file: None,
            client_ca_file: None,
            token_file: None,
            token: None,
            read_auth: ReadAuth::None,
            metrics_token_file: None,
            metrics_token: None,
        }
    }
}

/// `api.read_auth`: whether read-only API calls need credentials. Mutating calls always do
/// once any credential is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadAuth {
    /// Anyone who reaches the API may read (status, segments, history, explain).
    None,
    /// Read-only calls need a token or a client certificate, like mutating ones.
    Required,
}

impl ReadAuth {
    pub fn as_str(self) -> &'static str {
        match self {
            ReadAuth::None => "none",
            ReadAuth::Required => "required",
        }
    }
}

/// The brake on correlated failures: failovers within one window that would span more
/// segment hosts than `max_hosts` are held until an operator releases them.
#[derive(Debug, Clone, PartialEq)]
pub struct BrakeConfig {
    /// `"auto"` (half of the hosts carrying primaries, at least 1), `"off"`, or a count >= 1.
    pub max_hosts: crate::core::brake::HostLimit,
    /// How far back admitted failovers count.
    pub window: Duration,
}

impl Default for BrakeConfig {
    fn default() -> Self {
        BrakeConfig {
            max_hosts: crate::core::brake::HostLimit::Auto,
            window: Duration::from_secs(600),
        }
    }
}

/// Operator commands run on events (see docs/api.md for their arguments and environment).
/// Each is an argv array, run without a shell; empty means no hook.
#[derive(Debug, Clone, PartialEq)]
pub struct HooksConfig {
    /// Run once per changed catalog row.
    pub on_transition: Vec<String>,
    /// Run when this instance takes or leaves office.
    pub on_leader_change: Vec<String>,
    /// A hook still running after this is killed.
    pub timeout: Duration,
}

impl Default for HooksConfig {
    fn default() -> Self {
        HooksConfig {
            on_transition: Vec::new(),
            on_leader_change: Vec::new(),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Log output.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing_subscriber::EnvFilter` directive string, e.g. `info,ftsd=debug`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl Config {
    /// The configuration before the file is read. `cluster` and `catalog.url` are empty here:
    /// they are required, and validation reports them if nothing sets them.
    fn defaults() -> Config {
        Config {
            cluster: String::new(),
            instance_id: None,
            probe: ProbeConfig::default(),
            observe: ObserveConfig::default(),
            postgres: PostgresConfig::default(),
            catalog: CatalogConfig::default(),
            coordinator: CoordinatorConfig::default(),
            vip: VipConfig::default(),
            etcd: EtcdConfig::default(),
            brake: BrakeConfig::default(),
            api: ApiConfig::default(),
            hooks: HooksConfig::default(),
            log: LogConfig::default(),
        }
    }

    /// `instance_id` if configured, else `hostname:pid`, which is unique among live daemons and
    /// tells an operator where to look.
    pub fn effective_instance_id(&self) -> String {
        match &self.instance_id {
            Some(id) => id.clone(),
            None => format!("{}:{}", hostname(), std::process::id()),
        }
    }

    /// The effective configuration as TOML, with every secret replaced by `********`. Meant for
    /// `ftsd --print-config` and the startup log.
    pub fn render_masked(&self) -> String {
        render::render_masked(self)
    }
}

/// This machine's host name: `gethostname(2)`, else `/proc/sys/kernel/hostname`, else
/// `localhost`.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes, which is the length passed.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        if let Ok(name) = std::str::from_utf8(&buf[..end]) {
            if !name.is_empty() {
                return name.to_owned();
            }
        }
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}
