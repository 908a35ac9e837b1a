//! Persistent local PostgreSQL primary/standby pairs for trying the `postgres` driver by hand
//! (`fts-pgpairs`). Unlike [`super::pgpair::PgPair`], these live in a directory of your choice
//! and keep running after the command exits; `pg_ctl` starts and stops them.
//!
//! Layout of `<dir>`: `pairs.json` (ports, names), `superuser.password`, `probe.password`
//! (both 0600), and `seg<i>/primary`, `seg<i>/standby` data directories with `server.log`
//! next to each. Pair `i` listens on `base_port + 2i` (primary) and `base_port + 2i + 1`
//! (standby), on 127.0.0.1 only, with SCRAM for TCP connections.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tokio_postgres::NoTls;

use super::pg::{pg_bin, server_user, RunAs};
use super::pgpair::{probe_role_sql, PROBE_ROLE};
use ftsd::model::{Mode, Role, Segment, Status};

const LAYOUT: &str = "pairs.json";
const SUPERUSER: &str = "postgres";

/// `pairs.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Layout {
    pub pairs: Vec<PairLayout>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PairLayout {
    pub content: i16,
    /// The standby's application_name, named in the primary's synchronous_standby_names.
    pub name: String,
    pub primary_port: u16,
    pub standby_port: u16,
}

/// The two data directories of pair `content`.
fn data_dirs(dir: &Path, content: i16) -> [PathBuf; 2] {
    let seg = dir.join(format!("seg{content}"));
    [seg.join("primary"), seg.join("standby")]
}

fn run_as() -> Result<Option<RunAs>> {
    server_user()
}

fn chown(path: &Path, user: Option<RunAs>) -> Result<()> {
    if let Some(u) = user {
        std::os::unix::fs::chown(path, Some(u.uid), Some(u.gid))
            .with_context(|| format!("chown {}", path.display()))?;
    }
    Ok(())
}

/// Runs a PostgreSQL program as the server's OS user; fails with its output.
fn run(program: &str, args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> Result<()> {
    let mut cmd = Command::new(pg_bin(program));
    cmd.args(args).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some(u) = run_as()? {
        cmd.uid(u.uid).gid(u.gid);
    }
    let out = cmd.output().with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn write_secret(path: &Path, value: &str) -> Result<()> {
    fs::write(path, format!("{value}\n")).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    Ok(())
}

fn read_secret(path: &Path) -> Result<String> {
    Ok(fs::read_to_string(path)
        .with_context(|| format!("reading {}", path.display()))?
        .trim_end_matches(['\n', '\r'])
        .to_string())
}

/// 24 hex characters from /dev/urandom.
fn random_password() -> Result<String> {
    use std::io::Read;
    let mut buf = [0u8; 12];
    fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

fn append(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

async fn client(port: u16, password: &str) -> Result<tokio_postgres::Client> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(port)
        .user(SUPERUSER)
        .password(password)
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(5));
    let (client, conn) = cfg
        .connect(NoTls)
        .await
        .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

fn pg_ctl_start(data: &Path) -> Result<()> {
    let log = data.with_file_name(format!(
        "{}.log",
        data.file_name().unwrap_or_default().to_string_lossy()
    ));
    run(
        "pg_ctl",
        &[
            "start".as_ref(),
            "-w".as_ref(),
            "-D".as_ref(),
            data.as_os_str(),
            "-l".as_ref(),
            log.as_os_str(),
        ],
        &[],
    )
}

/// Creates and starts `pairs` pairs in `dir` (which must not hold a layout yet).
pub async fn create(dir: &Path, pairs: u16, base_port: u16) -> Result<Layout> {
    if dir.join(LAYOUT).exists() {
        bail!(
            "{} already holds pairs; use start/stop/status",
            dir.display()
        );
    }
    let user = run_as()?;
    fs::create_dir_all(dir)?;
    chown(dir, user)?;
    let su_pw = random_password()?;
    let probe_pw = random_password()?;
    write_secret(&dir.join("superuser.password"), &su_pw)?;
    write_secret(&dir.join("probe.password"), &probe_pw)?;
    let mut layout = Layout { pairs: Vec::new() };
    for content in 0..pairs as i16 {
        let primary_port = base_port
            .checked_add(2 * content as u16)
            .context("port out of range")?;
        let p = PairLayout {
            content,
            name: format!("seg{content}_standby"),
            primary_port,
            standby_port: primary_port + 1,
        };
        create_pair(dir, &p, &su_pw, &probe_pw, user).await?;
        eprintln!(
            "pair {content}: primary 127.0.0.1:{} standby 127.0.0.1:{} (synchronous, {})",
            p.primary_port, p.standby_port, p.name
        );
        layout.pairs.push(p);
    }
    fs::write(dir.join(LAYOUT), serde_json::to_string_pretty(&layout)?)?;
    Ok(layout)
}

async fn create_pair(
    dir: &Path,
    p: &PairLayout,
    su_pw: &str,
    probe_pw: &str,
    user: Option<RunAs>,
) -> Result<()> {
    let [primary, standby] = data_dirs(dir, p.content);
    let seg = primary.parent().expect("data dirs have a parent");
    fs::create_dir_all(seg)?;
    chown(seg, user)?;
    let pwfile = seg.join("initdb.pw");
    write_secret(&pwfile, su_pw)?;
    chown(&pwfile, user)?;
    let initdb = run(
        "initdb",
        &[
            "-D".as_ref(),
            primary.as_os_str(),
            "-U".as_ref(),
            SUPERUSER.as_ref(),
            "-E".as_ref(),
            "UTF8".as_ref(),
            "--locale=C".as_ref(),
            "--auth-local=trust".as_ref(),
            "--auth-host=scram-sha-256".as_ref(),
            format!("--pwfile={}", pwfile.display()).as_ref(),
        ],
        &[],
    );
    let _ = fs::remove_file(&pwfile);
    initdb?;
    let socket_dir = dir.display();
    append(
        &primary.join("postgresql.conf"),
        &format!(
            "\n# fts-pgpairs\nlisten_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{socket_dir}'\nwal_receiver_status_interval = 1s\nwal_retrieve_retry_interval = 1s\n",
            p.primary_port
        ),
    )?;
    pg_ctl_start(&primary)?;
    client(p.primary_port, su_pw)
        .await?
        .batch_execute(&probe_role_sql(PROBE_ROLE, probe_pw))
        .await
        .context("creating the probe role")?;
    run(
        "pg_basebackup",
        &[
            "-h".as_ref(),
            "127.0.0.1".as_ref(),
            "-p".as_ref(),
            p.primary_port.to_string().as_ref(),
            "-U".as_ref(),
            SUPERUSER.as_ref(),
            "-D".as_ref(),
            standby.as_os_str(),
            "-X".as_ref(),
            "stream".as_ref(),
            "-c".as_ref(),
            "fast".as_ref(),
            "-w".as_ref(),
        ],
        &[("PGPASSWORD", su_pw)],
    )?;
    append(
        &standby.join("postgresql.conf"),
        &format!("port = {}\n", p.standby_port),
    )?;
    append(
        &standby.join("postgresql.auto.conf"),
        &format!(
            "primary_conninfo = 'host=127.0.0.1 port={} user={SUPERUSER} password={su_pw} application_name={}'\n",
            p.primary_port, p.name
        ),
    )?;
    let signal = standby.join("standby.signal");
    fs::write(&signal, "")?;
    chown(&signal, user)?;
    pg_ctl_start(&standby)?;
    let c = client(p.primary_port, su_pw).await?;
    c.batch_execute(&format!(
        "ALTER SYSTEM SET synchronous_standby_names = '\"{}\"'",
        p.name
    ))
    .await?;
    c.batch_execute("SELECT pg_reload_conf()").await?;
    let start = Instant::now();
    loop {
        let rows = c
            .query(
                "SELECT 1 FROM pg_stat_replication WHERE application_name = $1 \
                 AND state = 'streaming' AND sync_state = 'sync'",
                &[&p.name],
            )
            .await?;
        if !rows.is_empty() {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!("standby {} did not become synchronous within 60s", p.name);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn load(dir: &Path) -> Result<Layout> {
    let path = dir.join(LAYOUT);
    let text = fs::read_to_string(&path)
        .with_context(|| format!("reading {} (create pairs first)", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// The catalog rows: content `i` has primary dbid `2 + i` and mirror dbid `2 + n + i`, as
/// `gpinitsystem` numbers them (dbid 1 is the coordinator).
pub fn segments(dir: &Path, layout: &Layout) -> Vec<Segment> {
    let n = layout.pairs.len() as i16;
    let mut rows = Vec::new();
    for p in &layout.pairs {
        let [primary, standby] = data_dirs(dir, p.content);
        for (dbid, role, port, data) in [
            (2 + p.content, Role::Primary, p.primary_port, primary),
            (2 + n + p.content, Role::Mirror, p.standby_port, standby),
        ] {
            rows.push(Segment {
                dbid,
                content: p.content,
                role,
                preferred_role: role,
                mode: Mode::InSync,
                status: Status::Up,
                port: i32::from(port),
                hostname: "127.0.0.1".into(),
                address: "127.0.0.1".into(),
                datadir: data.display().to_string(),
            });
        }
    }
    rows
}

/// Whether the server in `data` is running (`pg_ctl status`).
fn running(data: &Path) -> Result<bool> {
    let mut cmd = Command::new(pg_bin("pg_ctl"));
    cmd.arg("status").arg("-D").arg(data);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    if let Some(u) = run_as()? {
        cmd.uid(u.uid).gid(u.gid);
    }
    Ok(cmd.status()?.success())
}

/// Starts every server of the layout that is not running.
pub fn start(dir: &Path) -> Result<()> {
    for p in load(dir)?.pairs {
        for data in data_dirs(dir, p.content) {
            if !running(&data)? {
                pg_ctl_start(&data)?;
            }
        }
    }
    Ok(())
}

/// Stops every running server (`mode`: smart, fast or immediate).
pub fn stop(dir: &Path, mode: &str) -> Result<()> {
    for p in load(dir)?.pairs {
        for data in data_dirs(dir, p.content) {
            if running(&data)? {
                run(
                    "pg_ctl",
                    &[
                        "stop".as_ref(),
                        "-w".as_ref(),
                        "-m".as_ref(),
                        mode.as_ref(),
                        "-D".as_ref(),
                        data.as_os_str(),
                    ],
                    &[],
                )?;
            }
        }
    }
    Ok(())
}

/// One line per server: running, primary or standby, and a primary's replication rows.
pub async fn status(dir: &Path) -> Result<Vec<String>> {
    let layout = load(dir)?;
    let pw = read_secret(&dir.join("superuser.password"))?;
    let mut lines = Vec::new();
    for p in &layout.pairs {
        for (port, data) in [p.primary_port, p.standby_port]
            .into_iter()
            .zip(data_dirs(dir, p.content))
        {
            let what = if !running(&data)? {
                "stopped".to_string()
            } else {
                match client(port, &pw).await {
                    Err(e) => format!("running, not answering: {e:#}"),
                    Ok(c) => {
                        let recovery: bool =
                            c.query_one("SELECT pg_is_in_recovery()", &[]).await?.get(0);
                        if recovery {
                            "standby (in recovery)".to_string()
                        } else {
                            let names: String = c
                                .query_one("SHOW synchronous_standby_names", &[])
                                .await?
                                .get(0);
                            let reps: Vec<String> = c
                                .query(
                                    "SELECT application_name || ' ' || state || ' ' || sync_state \
                                     FROM pg_stat_replication",
                                    &[],
                                )
                                .await?
                                .iter()
                                .map(|r| r.get(0))
                                .collect();
                            format!(
                                "primary, synchronous_standby_names={names:?}, replication: [{}]",
                                reps.join(", ")
                            )
                        }
                    }
                }
            };
            lines.push(format!(
                "content {} 127.0.0.1:{port} {}: {what}",
                p.content,
                data.display()
            ));
        }
    }
    Ok(lines)
}
