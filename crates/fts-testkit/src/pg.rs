//! A throwaway PostgreSQL server for tests, the demo and the benchmark.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use fts_testkit::pg::{Auth, PgServer};
//! let mut pg = PgServer::builder().auth(Auth::Scram).password("secret").start().await?;
//! let client = pg.client().await?;
//! client.simple_query("select 1").await?;
//! pg.stop_immediate()?; // crash it; the data directory stays
//! pg.start().await?; // crash recovery, same port
//! # Ok(()) }
//! ```
//!
//! How it works:
//!
//! * `initdb` runs into a fresh temporary directory, then `postgres` is started as a **direct
//!   child** listening on `127.0.0.1` at a free port, with its Unix socket in the temporary
//!   directory and its stdout/stderr appended to `<tmp>/server.log` ([`PgServer::log_tail`]).
//! * `initdb` refuses to run as root, so when the effective uid is 0 both programs run as the
//!   `postgres` OS user (the temporary directory is chowned to it); otherwise they run as the
//!   current user.
//! * Binaries come from `pg_config --bindir`, else the highest `/usr/lib/postgresql/*/bin`, else
//!   `PATH`.
//! * Local (Unix socket) connections are always `trust`; TCP connections use the configured
//!   [`Auth`]. [`PgServer::url`], [`PgServer::pg_config`] and [`PgServer::client`] connect over TCP
//!   with the configured superuser and password.
//!
//! Cleanup:
//!
//! * [`Drop`] stops the postmaster (SIGQUIT, i.e. `pg_ctl stop -m immediate`, which also ends its
//!   backends and releases shared memory; SIGKILL if it has not exited after 5 s), reaps it and
//!   removes the temporary directory. Drop runs during unwinding, so a panicking test cleans up too.
//! * If the test process itself is killed (no unwinding, no Drop), the postmaster still dies: it
//!   is started with `prctl(PR_SET_PDEATHSIG, SIGKILL)`. The kernel ties that signal to the
//!   *thread* that forked the child, so every postmaster is forked by one dedicated spawner thread
//!   that lives as long as the process; a server therefore survives the runtime or thread that
//!   created it and dies only with the process. Its backends notice the postmaster's death and
//!   exit on their own. Only the temporary directory is left behind in that case.

use super::process::{self, free_port, read_from, spawn_tied_to_process, stop, Launch};
use anyhow::{anyhow, bail, Context, Result};
use std::ffi::CStr;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tokio_postgres::NoTls;

/// The loopback address every server listens on.
pub const HOST: &str = process::LOOPBACK;

/// How many fresh ports a first start tries when the chosen port is taken in the meantime.
const PORT_ATTEMPTS: usize = 5;
/// How long [`Drop`] and [`PgServer::stop_immediate`] wait after SIGQUIT before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The `pg_hba.conf` method for TCP connections (Unix socket connections are always `trust`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Auth {
    /// No password asked.
    #[default]
    Trust,
    /// Cleartext password (`password` method).
    Password,
    /// MD5 challenge; the superuser's password is stored MD5-hashed so the server really uses it
    /// (PostgreSQL switches to SCRAM when the stored hash is SCRAM).
    Md5,
    /// SCRAM-SHA-256.
    Scram,
}

impl Auth {
    /// The method name as written in `pg_hba.conf`.
    pub fn hba_method(self) -> &'static str {
        match self {
            Auth::Trust => "trust",
            Auth::Password => "password",
            Auth::Md5 => "md5",
            Auth::Scram => "scram-sha-256",
        }
    }
}

/// Configures and starts a [`PgServer`]; see [`PgServer::builder`].
#[derive(Debug, Clone)]
pub struct PgServerBuilder {
    auth: Auth,
    superuser: String,
    password: Option<String>,
    settings: Vec<(String, String)>,
    start_timeout: Duration,
    tls: Option<PgServerTls>,
    /// Where the harness (and a standby's WAL receiver) connects; see [`PgServerBuilder::host`].
    host: String,
    /// `listen_addresses`; the connect host when None.
    listen: Option<String>,
    /// A fixed port instead of a free one.
    fixed_port: Option<u16>,
    /// A named network namespace (`/run/netns/NAME`) the postmaster runs in.
    netns: Option<String>,
    /// Extra `pg_hba.conf` lines.
    hba: Vec<String>,
}

/// TLS for [`PgServerBuilder::tls`]: `ssl = on` with these files, and `hostssl` instead of
/// `host` in `pg_hba.conf`, so TCP clients must use TLS.
#[derive(Debug, Clone)]
pub struct PgServerTls {
    /// The server certificate and key (PEM).
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set: clients must present a certificate signed by this CA
    /// (`clientcert=verify-ca`).
    pub client_ca: Option<PathBuf>,
}

impl Default for PgServerBuilder {
    fn default() -> Self {
        PgServerBuilder {
            auth: Auth::Trust,
            superuser: "postgres".into(),
            password: None,
            settings: Vec::new(),
            start_timeout: Duration::from_secs(20),
            tls: None,
            host: HOST.into(),
            listen: None,
            fixed_port: None,
            netns: None,
            hba: Vec::new(),
        }
    }
}

impl PgServerBuilder {
    /// `pg_hba.conf` method for TCP connections (default [`Auth::Trust`]).
    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    /// Name of the bootstrap superuser (`initdb -U`, default `postgres`).
    pub fn superuser(mut self, name: impl Into<String>) -> Self {
        self.superuser = name.into();
        self
    }

    /// Password of the superuser, set at initdb time (`--pwfile`). Required unless [`Auth::Trust`].
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// An extra `-c key=value` server setting; later settings win over earlier ones and over the
    /// defaults.
    pub fn setting(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((key.into(), value.into()));
        self
    }

    /// TCP connections only over TLS (see [`PgServerTls`]). The harness itself then talks to
    /// the server over its Unix socket ([`PgServer::client`]).
    pub fn tls(mut self, tls: PgServerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The address the harness connects to over TCP, and a standby's `primary_conninfo`
    /// names (default `127.0.0.1`); also `listen_addresses` unless [`PgServerBuilder::listen`]
    /// says otherwise. Must be reachable from this process.
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }

    /// `listen_addresses` (e.g. `*`, so a virtual IP added later is served too).
    pub fn listen(mut self, addresses: impl Into<String>) -> Self {
        self.listen = Some(addresses.into());
        self
    }

    /// A fixed TCP port instead of a free one (e.g. the same port for both servers of a pair
    /// behind one virtual IP, each in a network namespace of its own).
    pub fn port(mut self, port: u16) -> Self {
        self.fixed_port = Some(port);
        self
    }

    /// Runs the postmaster inside the named network namespace (`ip netns add NAME`): the
    /// process enters it with `setns(2)` before dropping to the server user (which could not
    /// enter it any more). Needs root. `initdb` and `pg_basebackup` run in ours.
    pub fn netns(mut self, name: impl Into<String>) -> Self {
        self.netns = Some(name.into());
        self
    }

    /// An extra `pg_hba.conf` line, appended after `initdb` (a standby gets the primary's file
    /// with its base backup), e.g. `host all all 10.0.0.0/24 scram-sha-256`.
    pub fn hba_line(mut self, line: impl Into<String>) -> Self {
        self.hba.push(line.into());
        self
    }

    /// How long to wait for the server to accept connections (default 20 s).
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Runs initdb and starts the server; returns once `select 1` succeeds over TCP.
    pub async fn start(self) -> Result<PgServer> {
        if self.auth != Auth::Trust && self.password.is_none() {
            bail!(
                "auth method {} needs a superuser password (PgServerBuilder::password)",
                self.auth.hba_method()
            );
        }
        let bins = bins();
        let mut server = self.unstarted()?;
        server.initdb(&bins.initdb).await?;
        server.append_hba()?;
        server.install_tls()?;
        server.first_start().await?;
        if server.cfg.auth == Auth::Md5 {
            server.store_md5_password().await?;
        }
        Ok(server)
    }
}

impl PgServerBuilder {
    /// A server in a fresh temporary directory, with no data directory yet.
    fn unstarted(self) -> Result<PgServer> {
        let run_as = server_user()?;
        let dir = tempfile::Builder::new()
            .prefix("ftsd-pg-")
            .tempdir()
            .context("creating the temporary directory")?;
        if let Some(user) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(user.uid), Some(user.gid))
                .with_context(|| format!("chown {} to the postgres user", dir.path().display()))?;
        }
        Ok(PgServer {
            data_dir: dir.path().join("data"),
            log_path: dir.path().join("server.log"),
            postgres_bin: bins().postgres.clone(),
            run_as,
            port: 0,
            child: None,
            cfg: self,
            dir,
        })
    }

    /// Starts a streaming-replication standby of `primary`: `pg_basebackup` of it, then
    /// `standby.signal` and a `primary_conninfo` with `application_name` (the name the primary
    /// lists in `pg_stat_replication` and `synchronous_standby_names`). The superuser, password
    /// and auth method are the primary's (the data directory is a copy of it); the builder's
    /// settings and start timeout apply. Returns once the standby accepts connections.
    pub async fn start_standby(
        mut self,
        primary: &PgServer,
        application_name: &str,
    ) -> Result<PgServer> {
        self.auth = primary.cfg.auth;
        self.superuser = primary.cfg.superuser.clone();
        self.password = primary.cfg.password.clone();
        let mut server = self.unstarted()?;
        server.basebackup(primary, application_name).await?;
        // The copy has the primary's TLS files and pg_hba.conf; the key's owner and mode and
        // the `ssl` settings are the server's own.
        server.install_tls()?;
        server.first_start().await?;
        Ok(server)
    }
}

/// A running (or stopped) throwaway PostgreSQL server. See the module documentation.
#[derive(Debug)]
pub struct PgServer {
    cfg: PgServerBuilder,
    postgres_bin: PathBuf,
    run_as: Option<RunAs>,
    port: u16,
    child: Option<Child>,
    data_dir: PathBuf,
    log_path: PathBuf,
    // Declared last: removed only after `Drop::drop` has stopped the server.
    dir: TempDir,
}

impl PgServer {
    /// A builder with defaults: trust, superuser `postgres`, no password.
    pub fn builder() -> PgServerBuilder {
        PgServerBuilder::default()
    }

    /// `postgresql://<superuser>[:<password>]@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        let mut url = format!("postgresql://{}", percent_encode(&self.cfg.superuser));
        if let Some(pw) = &self.cfg.password {
            url.push(':');
            url.push_str(&percent_encode(pw));
        }
        url.push_str(&format!("@{}:{}/postgres", self.cfg.host, self.port));
        url
    }

    /// The TCP port; stays the same across [`PgServer::stop_immediate`] / [`PgServer::start`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address the harness connects to: `127.0.0.1` unless [`PgServerBuilder::host`].
    pub fn host(&self) -> &str {
        &self.cfg.host
    }

    pub fn superuser(&self) -> &str {
        &self.cfg.superuser
    }

    pub fn password(&self) -> Option<&str> {
        self.cfg.password.as_deref()
    }

    pub fn auth(&self) -> Auth {
        self.cfg.auth
    }

    /// The data directory (`<tmp>/data`).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The temporary directory holding the data directory, the log and the Unix socket.
    pub fn base_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The directory of the Unix socket (`trust` for any user).
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Process id of the running postmaster.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the postmaster is running (reaps it if it has exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(_) => {
                self.child = None;
                false
            }
            None => false,
        }
    }

    /// Connection settings for the superuser over TCP, database `postgres`.
    pub fn pg_config(&self) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.cfg.host)
            .port(self.port)
            .user(&self.cfg.superuser)
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(5));
        if let Some(pw) = &self.cfg.password {
            config.password(pw);
        }
        config
    }

    /// A connected client (superuser; TCP, or the Unix socket when the server is TLS-only); its
    /// connection task is spawned on the current runtime.
    pub async fn client(&self) -> Result<tokio_postgres::Client> {
        let mut config = self.pg_config();
        if self.cfg.tls.is_some() {
            config.host_path(self.dir.path());
        }
        let (client, connection) = config
            .connect(NoTls)
            .await
            .with_context(|| format!("connecting to {}", self.redacted_url()))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("testkit postgres connection ended: {e}");
            }
        });
        Ok(client)
    }

    /// Crashes the server the way `pg_ctl stop -m immediate` does (SIGQUIT to the postmaster,
    /// which ends its backends without a checkpoint; SIGKILL after 5 s) and reaps it. The data
    /// directory is kept; [`PgServer::start`] runs crash recovery on it. Blocks until the
    /// postmaster has exited (milliseconds). A no-op when the server is not running.
    pub fn stop_immediate(&mut self) -> Result<()> {
        match self.child.take() {
            Some(child) => stop(child, libc::SIGQUIT, STOP_GRACE).context("stopping postgres"),
            None => Ok(()),
        }
    }

    /// Kills the postmaster with SIGKILL (`kill -9`) and reaps it, as a host or process crash
    /// would: no shutdown at all. Its backends notice the postmaster's death and exit on their
    /// own. A no-op when the server is not running.
    pub fn kill(&mut self) -> Result<()> {
        match self.child.take() {
            Some(child) => stop(child, libc::SIGKILL, Duration::ZERO).context("killing postgres"),
            None => Ok(()),
        }
    }

    /// Starts the server again on the same port and data directory (e.g. after
    /// [`PgServer::stop_immediate`], to simulate a restart). Fails if it is already running or
    /// the port has been taken meanwhile.
    pub async fn start(&mut self) -> Result<()> {
        if self.is_running() {
            bail!("postgres on port {} is already running", self.port);
        }
        match self.launch().await {
            Ok(()) => Ok(()),
            Err(Launch::PortTaken(e)) | Err(Launch::Failed(e)) => Err(e),
        }
    }

    /// Starts the server again (after [`PgServer::stop_immediate`] or [`PgServer::kill`])
    /// *held in recovery*: it refuses every connection with SQLSTATE 57P03 ("starting up" /
    /// "not accepting connections") until [`PgServer::release_recovery`]. Returns once it
    /// answers so.
    ///
    /// A stand-in for a long crash recovery, which cannot be paused from outside: the server
    /// runs archive recovery (`recovery.signal`) with `hot_standby = off`, and its
    /// `restore_command` waits for a release file. Released, it replays its own WAL, ends
    /// recovery on a new timeline and comes up read-write, as a crash-restarted primary does.
    pub async fn start_held_in_recovery(&mut self) -> Result<()> {
        if self.is_running() {
            bail!("postgres on port {} is already running", self.port);
        }
        let release = self.dir.path().join("recovery.release");
        let _ = fs::remove_file(&release);
        fs::write(self.data_dir.join("recovery.signal"), "").context("writing recovery.signal")?;
        let saved = self.cfg.settings.clone();
        self.cfg.settings.extend([
            ("hot_standby".to_string(), "off".to_string()),
            (
                "restore_command".to_string(),
                format!(
                    "while [ ! -e '{}' ]; do sleep 0.1; done; false",
                    release.display()
                ),
            ),
        ]);
        let spawned = self.spawn_postmaster().await;
        self.cfg.settings = saved;
        spawned.map_err(|(Launch::PortTaken(e) | Launch::Failed(e))| e)?;
        let deadline = Instant::now() + self.cfg.start_timeout;
        loop {
            match self.client().await {
                Ok(_) => bail!("postgres accepted connections although held in recovery"),
                Err(e) => {
                    let code = e
                        .downcast_ref::<tokio_postgres::Error>()
                        .and_then(|e| e.code().map(|c| c.code().to_string()));
                    if code.as_deref() == Some("57P03") {
                        return Ok(());
                    }
                }
            }
            if !self.is_running() {
                bail!(
                    "postgres exited while held in recovery:\n{}",
                    self.log_tail(30)
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "postgres did not answer 57P03 within {:?}:\n{}",
                    self.cfg.start_timeout,
                    self.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Lets a server started with [`PgServer::start_held_in_recovery`] finish recovery, and
    /// waits until it accepts connections.
    pub async fn release_recovery(&mut self) -> Result<()> {
        fs::write(self.dir.path().join("recovery.release"), "")
            .context("writing the release file")?;
        let offset = fs::metadata(&self.log_path).map(|m| m.len()).unwrap_or(0);
        self.wait_ready(offset)
            .await
            .map_err(|(Launch::PortTaken(e) | Launch::Failed(e))| e)
    }

    /// The last `n` lines of the server log (stdout and stderr of every start).
    pub fn log_tail(&self, n: usize) -> String {
        process::tail(&self.log_path, n)
    }

    fn redacted_url(&self) -> String {
        format!(
            "postgresql://{}@{}:{}/postgres",
            self.cfg.superuser, self.cfg.host, self.port
        )
    }

    async fn initdb(&self, initdb: &Path) -> Result<()> {
        let base = self.dir.path();
        let mut cmd = tokio::process::Command::new(initdb);
        cmd.arg("-D")
            .arg(&self.data_dir)
            .arg("-U")
            .arg(&self.cfg.superuser)
            .args([
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--auth-local=trust",
            ])
            .arg(format!("--auth-host={}", self.cfg.auth.hba_method()))
            .current_dir(base)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let pwfile = base.join("pwfile");
        if let Some(pw) = &self.cfg.password {
            fs::write(&pwfile, format!("{pw}\n")).context("writing the password file")?;
            fs::set_permissions(&pwfile, fs::Permissions::from_mode(0o600))?;
            if let Some(user) = self.run_as {
                std::os::unix::fs::chown(&pwfile, Some(user.uid), Some(user.gid))?;
            }
            cmd.arg(format!("--pwfile={}", pwfile.display()));
        }
        if let Some(user) = self.run_as {
            cmd.uid(user.uid).gid(user.gid);
        }
        let output = cmd.output().await;
        let _ = fs::remove_file(&pwfile);
        let output = output.with_context(|| format!("running {}", initdb.display()))?;
        if !output.status.success() {
            bail!(
                "initdb failed ({}):\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    async fn basebackup(&self, primary: &PgServer, application_name: &str) -> Result<()> {
        let mut cmd = tokio::process::Command::new(&bins().pg_basebackup);
        cmd.arg("-h")
            .arg(&primary.cfg.host)
            .arg("-p")
            .arg(primary.port.to_string())
            .arg("-U")
            .arg(&self.cfg.superuser)
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-X", "stream", "-c", "fast", "--no-sync", "-w"])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let Some(pw) = &self.cfg.password {
            cmd.env("PGPASSWORD", pw);
        }
        if let Some(user) = self.run_as {
            // libpq looks for ~/.postgresql/postgresql.crt on TLS connections; the caller's
            // home (root's) is unreadable to the server user, which libpq treats as an error.
            cmd.uid(user.uid).gid(user.gid).env("HOME", self.dir.path());
        }
        let output = cmd.output().await.context("running pg_basebackup")?;
        if !output.status.success() {
            bail!(
                "pg_basebackup failed ({}):\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let mut conninfo = format!(
            "host={} port={} user={} application_name={}",
            primary.cfg.host,
            primary.port,
            conninfo_value(&self.cfg.superuser),
            conninfo_value(application_name)
        );
        if let Some(pw) = &self.cfg.password {
            conninfo.push_str(&format!(" password={}", conninfo_value(pw)));
        }
        let auto = self.data_dir.join("postgresql.auto.conf");
        let mut text = fs::read_to_string(&auto).unwrap_or_default();
        text.push_str(&format!(
            "primary_conninfo = {}\n",
            quote_literal(&conninfo)
        ));
        fs::write(&auto, text).context("writing primary_conninfo")?;
        let signal = self.data_dir.join("standby.signal");
        fs::write(&signal, "").context("writing standby.signal")?;
        if let Some(user) = self.run_as {
            for f in [&auto, &signal] {
                std::os::unix::fs::chown(f, Some(user.uid), Some(user.gid))?;
            }
        }
        Ok(())
    }

    fn append_hba(&self) -> Result<()> {
        if self.cfg.hba.is_empty() {
            return Ok(());
        }
        let path = self.data_dir.join("pg_hba.conf");
        let mut text = fs::read_to_string(&path).context("reading pg_hba.conf")?;
        for line in &self.cfg.hba {
            text.push_str(line);
            text.push('\n');
        }
        fs::write(&path, text).context("writing pg_hba.conf")
    }

    /// Copies the TLS files into the data directory (the server wants its key private and
    /// owned by its user), turns `ssl` on and makes every TCP line of `pg_hba.conf` `hostssl`.
    fn install_tls(&mut self) -> Result<()> {
        let Some(tls) = self.cfg.tls.clone() else {
            return Ok(());
        };
        let mut files = vec![("server.crt", &tls.cert), ("server.key", &tls.key)];
        if let Some(ca) = &tls.client_ca {
            files.push(("root.crt", ca));
        }
        for (name, from) in files {
            let to = self.data_dir.join(name);
            fs::copy(from, &to).with_context(|| format!("copying {}", from.display()))?;
            fs::set_permissions(&to, fs::Permissions::from_mode(0o600))?;
            if let Some(user) = self.run_as {
                std::os::unix::fs::chown(&to, Some(user.uid), Some(user.gid))?;
            }
        }
        let hba_path = self.data_dir.join("pg_hba.conf");
        let hba = fs::read_to_string(&hba_path).context("reading pg_hba.conf")?;
        let clientcert = if tls.client_ca.is_some() {
            " clientcert=verify-ca"
        } else {
            ""
        };
        let hba: String = hba
            .lines()
            .map(|line| match line.strip_prefix("host ") {
                Some(rest) => format!("hostssl {rest}{clientcert}\n"),
                None => format!("{line}\n"),
            })
            .collect();
        fs::write(&hba_path, hba).context("writing pg_hba.conf")?;
        let mut settings = vec![
            ("ssl", "on"),
            ("ssl_cert_file", "server.crt"),
            ("ssl_key_file", "server.key"),
        ];
        if tls.client_ca.is_some() {
            settings.push(("ssl_ca_file", "root.crt"));
        }
        for (k, v) in settings {
            self.cfg.settings.push((k.into(), v.into()));
        }
        Ok(())
    }

    /// First start: picks a free port and retries with a fresh one if another process grabbed it
    /// between our probe bind and the postmaster's bind.
    async fn first_start(&mut self) -> Result<()> {
        if let Some(port) = self.cfg.fixed_port {
            self.port = port;
            return self
                .launch()
                .await
                .map_err(|(Launch::PortTaken(e) | Launch::Failed(e))| e);
        }
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            self.port = free_port()?;
            match self.launch().await {
                Ok(()) => return Ok(()),
                Err(Launch::PortTaken(e)) => last = Some(e),
                Err(Launch::Failed(e)) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("no free port"))).context(format!(
            "postgres could not bind a port in {PORT_ATTEMPTS} attempts"
        ))
    }

    async fn launch(&mut self) -> Result<(), Launch> {
        let log_offset = self.spawn_postmaster().await?;
        self.wait_ready(log_offset).await
    }

    /// Starts the postmaster without waiting for it; returns the log offset of this start.
    async fn spawn_postmaster(&mut self) -> Result<u64, Launch> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .context("opening the server log")?;
        let log_offset = log.metadata().map(|m| m.len()).unwrap_or(0);
        let stdout = log.try_clone().context("duplicating the log handle")?;
        let base = self.dir.path();

        let mut cmd = Command::new(&self.postgres_bin);
        cmd.arg("-D")
            .arg(&self.data_dir)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-c")
            .arg(format!(
                "listen_addresses={}",
                self.cfg.listen.as_deref().unwrap_or(&self.cfg.host)
            ))
            .arg("-c")
            .arg(format!("unix_socket_directories={}", base.display()))
            .args(["-c", "fsync=off"])
            .args(["-c", "max_connections=200"])
            .args(["-c", "log_min_messages=warning"]);
        for (key, value) in &self.cfg.settings {
            cmd.arg("-c").arg(format!("{key}={value}"));
        }
        cmd.current_dir(base)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log);
        match (&self.cfg.netns, self.run_as) {
            (Some(ns), run_as) => enter_netns(&mut cmd, ns, run_as)?,
            (None, Some(user)) => {
                cmd.uid(user.uid).gid(user.gid);
            }
            (None, None) => {}
        }
        if self.run_as.is_some() {
            // A standby's walreceiver is a libpq client (see `basebackup`).
            cmd.env("HOME", base);
        }
        let child = spawn_tied_to_process(cmd)
            .await
            .with_context(|| format!("starting {}", self.postgres_bin.display()))?;
        self.child = Some(child);
        Ok(log_offset)
    }

    async fn wait_ready(&mut self, log_offset: u64) -> Result<(), Launch> {
        let deadline = Instant::now() + self.cfg.start_timeout;
        loop {
            let exited = match self.child.as_mut() {
                Some(child) => child.try_wait().context("waiting for postgres")?,
                None => return Err(Launch::Failed(anyhow!("postgres is not running"))),
            };
            if let Some(status) = exited {
                self.child = None;
                let log = read_from(&self.log_path, log_offset);
                let err = anyhow!(
                    "postgres exited with {status} while starting on port {}; log tail:\n{}",
                    self.port,
                    self.log_tail(30)
                );
                let bind_failed = log.contains("could not bind")
                    || log.contains("could not create any TCP/IP sockets")
                    || log.contains("Address already in use");
                return Err(if bind_failed {
                    Launch::PortTaken(err)
                } else {
                    Launch::Failed(err)
                });
            }
            if let Ok(Ok(())) = tokio::time::timeout(Duration::from_secs(2), self.ping()).await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let tail = self.log_tail(30);
                let _ = self.stop_immediate();
                return Err(Launch::Failed(anyhow!(
                    "postgres did not accept connections on port {} within {:?}; log tail:\n{tail}",
                    self.port,
                    self.cfg.start_timeout
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn ping(&self) -> Result<()> {
        let client = self.client().await?;
        client.simple_query("select 1").await?;
        Ok(())
    }

    /// PostgreSQL answers an `md5` pg_hba line with SCRAM when the stored password is a SCRAM
    /// verifier (the default since 14), so store it MD5-hashed to exercise real MD5 auth.
    async fn store_md5_password(&self) -> Result<()> {
        let pw = self.cfg.password.as_deref().unwrap_or_default();
        let client = self.client().await?;
        client
            .batch_execute(&format!(
                "SET password_encryption = 'md5'; ALTER ROLE {} PASSWORD {}",
                quote_ident(&self.cfg.superuser),
                quote_literal(pw)
            ))
            .await
            .context("storing the superuser password as MD5")?;
        Ok(())
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            if let Err(e) = stop(child, libc::SIGQUIT, STOP_GRACE) {
                tracing::warn!("testkit: stopping postgres failed: {e}");
            }
        }
        // `self.dir` (TempDir) is dropped after this and removes the directory.
    }
}

/// Makes `cmd` enter the network namespace `name` in the child, then drop to `run_as`. The
/// order matters: `setns` needs privileges the server user does not have, and std applies
/// `Command::uid` before any pre-exec hook, so the credentials are changed here instead. The
/// parent-death signal set by `spawn_tied_to_process` comes after this hook, so the
/// credential change does not clear it.
fn enter_netns(cmd: &mut Command, name: &str, run_as: Option<RunAs>) -> Result<(), Launch> {
    let path = Path::new("/run/netns").join(name);
    let ns = fs::File::open(&path)
        .with_context(|| format!("opening the network namespace {}", path.display()))?;
    // SAFETY: runs in the forked child before exec and only makes async-signal-safe system
    // calls (setns, setgroups, setgid, setuid) without allocating; `ns` is owned by the hook.
    unsafe {
        cmd.pre_exec(move || {
            use std::os::fd::AsRawFd;
            if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(user) = run_as {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(user.gid) != 0
                    || libc::setuid(user.uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct RunAs {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// The OS user the server runs as: `postgres` when we are root, else ourselves (`None`).
pub(crate) fn server_user() -> Result<Option<RunAs>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name: &CStr = c"postgres";
    // SAFETY: all pointers point to live, correctly sized buffers owned by this frame; the
    // strings getpwnam_r writes into `buf` are not used after it returns (we copy uid/gid).
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwnam_r(
            name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        );
        if rc != 0 || result.is_null() {
            bail!("running as root, but there is no `postgres` OS user to run the server as (initdb refuses root)");
        }
        Ok(Some(RunAs {
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
        }))
    }
}

struct Bins {
    initdb: PathBuf,
    postgres: PathBuf,
    pg_basebackup: PathBuf,
}

fn bins() -> &'static Bins {
    static BINS: OnceLock<Bins> = OnceLock::new();
    BINS.get_or_init(|| match locate_bindir() {
        Some(dir) => Bins {
            initdb: dir.join("initdb"),
            postgres: dir.join("postgres"),
            pg_basebackup: dir.join("pg_basebackup"),
        },
        None => Bins {
            initdb: "initdb".into(),
            postgres: "postgres".into(),
            pg_basebackup: "pg_basebackup".into(),
        },
    })
}

/// A PostgreSQL program (`pg_ctl`, `initdb` ...) from the same directory the testkit uses.
pub(crate) fn pg_bin(name: &str) -> PathBuf {
    match locate_bindir() {
        Some(dir) => dir.join(name),
        None => name.into(),
    }
}

fn locate_bindir() -> Option<PathBuf> {
    let has_bins = |dir: &Path| dir.join("postgres").is_file() && dir.join("initdb").is_file();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_bins(&dir) {
            return Some(dir);
        }
    }
    let mut best: Option<(Vec<u32>, PathBuf)> = None;
    for entry in fs::read_dir("/usr/lib/postgresql").ok()?.flatten() {
        let name = entry.file_name();
        let Ok(version) = name
            .to_string_lossy()
            .split('.')
            .map(str::parse::<u32>)
            .collect::<Result<Vec<_>, _>>()
        else {
            continue;
        };
        let dir = entry.path().join("bin");
        if has_bins(&dir) && best.as_ref().is_none_or(|(v, _)| version > *v) {
            best = Some((version, dir));
        }
    }
    best.map(|(_, dir)| dir)
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A libpq key/value value: single-quoted, with `\` and `'` escaped.
fn conninfo_value(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_and_encoding() {
        assert_eq!(percent_encode("a b@c:d/é"), "a%20b%40c%3Ad%2F%C3%A9");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }

    #[test]
    fn finds_binaries() {
        let bins = bins();
        assert!(bins.postgres.ends_with("postgres"));
        assert!(bins.initdb.ends_with("initdb"));
    }
}
