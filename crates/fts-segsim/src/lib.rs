//! `fts-segsim`: simulated Greenplum segments that speak the real FTS wire protocol (server side),
//! with injectable faults, so the prober can be tested, demonstrated and benchmarked without a
//! real cluster.
//!
//! In-process use (tests):
//!
//! ```no_run
//! # async fn demo() -> Result<(), fts_segsim::SimError> {
//! use fts_segsim::{Fault, SimConfig, Simulator};
//! let mut sim = Simulator::start(SimConfig { pairs: 2, base_port: 0, ..SimConfig::default() }).await?;
//! let control = sim.serve_control("127.0.0.1:0".parse().unwrap()).await?;
//! let rows = sim.segments(); // gp_segment_configuration rows with the real ports
//! sim.set_fault(4, Fault::Down).await?;
//! # let _ = (control, rows); Ok(()) }
//! ```

pub mod catalog;
pub mod cloudberry;
pub mod control;
pub mod ctl;
mod instances;
mod limits;
mod listener;
pub mod reply;
mod server;
pub mod state;

use serde::{Deserialize, Serialize};
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use ftsd::model::{Dbid, Mode, Role, Segment, Status};

pub use self::instances::{CounterView, SegmentView, SimCore};
pub use self::limits::ensure_fd_limit;
pub use self::listener::Simulator;
pub use self::state::{Fault, GarbageVariant, Phase};

/// How a primary authenticates the FTS connection (mirrors never do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Auth {
    #[default]
    Trust,
    /// AuthenticationCleartextPassword.
    Password,
    /// AuthenticationMD5Password with a random salt.
    Md5,
}

/// Everything that shapes a simulated cluster.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Mirrored contents 0..pairs-1.
    pub pairs: u32,
    /// Extra contents with a primary only, numbered after the mirrored ones.
    pub mirrorless: u32,
    pub host: IpAddr,
    /// Instance i (in dbid order) listens on base_port+i; 0 lets the OS pick each port.
    pub base_port: u16,
    pub auth: Auth,
    /// The superuser name a primary accepts.
    pub user: String,
    pub password: Option<String>,
    /// `gp_fts_mark_mirror_down_grace_period`.
    pub mirror_down_grace: Duration,
    /// Time between accepting PROMOTE and acting as primary.
    pub promote_delay: Duration,
    /// Also serve the coordinator (dbid 1, content -1) as an FTS-answering primary.
    pub coordinator: bool,
    /// Also serve a standby coordinator (content -1, the last dbid, `m`/`m`): the coordinator
    /// then reports the standby's replication in its PROBE answers, as an external-FTS
    /// Cloudberry coordinator does, and the standby accepts PROMOTE. Implies `coordinator`.
    pub standby: bool,
    /// Reported in ParameterStatus `server_version`.
    pub server_version: String,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            pairs: 1,
            mirrorless: 0,
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            base_port: 0,
            auth: Auth::Trust,
            user: "gpadmin".to_string(),
            password: None,
            mirror_down_grace: Duration::from_secs(30),
            promote_delay: Duration::ZERO,
            coordinator: false,
            standby: false,
            server_version: "12.12".to_string(),
        }
    }
}

impl SimConfig {
    /// Number of segment instances (coordinator not counted).
    pub fn segment_instances(&self) -> usize {
        2 * self.pairs as usize + self.mirrorless as usize
    }

    /// Whether the coordinator is served (asked for, or implied by a standby).
    pub fn serves_coordinator(&self) -> bool {
        self.coordinator || self.standby
    }

    /// Number of instances that listen.
    pub fn served_instances(&self) -> usize {
        self.segment_instances() + self.serves_coordinator() as usize + self.standby as usize
    }

    fn validate(&self) -> Result<(), SimError> {
        let contents = self.pairs as usize + self.mirrorless as usize;
        if contents == 0 {
            return Err(SimError::Config(
                "need at least one content (--pairs or --mirrorless)".into(),
            ));
        }
        // dbids are int2 and start at 2.
        if self.served_instances() + 2 > i16::MAX as usize {
            return Err(SimError::Config(format!(
                "{} instances exceed the int2 dbid range",
                self.served_instances()
            )));
        }
        if self.base_port != 0 && self.base_port as usize + self.served_instances() > 65536 {
            return Err(SimError::Config(format!(
                "base port {} + {} instances runs past port 65535",
                self.base_port,
                self.served_instances()
            )));
        }
        if self.auth != Auth::Trust && self.password.is_none() {
            return Err(SimError::Config(
                "--auth password/md5 needs a password (--password-file or FTS_SEGSIM_PASSWORD)"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// The `gp_segment_configuration` rows of the layout gpinitsystem would create: primaries of
/// contents 0..C-1 get dbids 2..C+1, mirrors follow, the coordinator is dbid 1 and a standby
/// (when configured) takes the next free dbid, as `gp_add_master_standby` numbers it. Rows are
/// in serving order (instance i listens on base_port+i) with the coordinator, then the standby,
/// last. With base_port 0
/// every port is 0 here (the OS picks at bind time; [`SimCore::segments`] has the real ones).
pub fn layout(cfg: &SimConfig) -> Vec<Segment> {
    let contents = cfg.pairs + cfg.mirrorless;
    let host = cfg.host.to_string();
    let row = |dbid: i32, content: i32, role: Role, index: usize, dir: String| Segment {
        dbid: dbid as Dbid,
        content: content as i16,
        role,
        preferred_role: role,
        // Only a mirrored pair is synchronized; mirror-less primaries and a coordinator without
        // standby are `n`, as gpinitsystem leaves them; `gp_add_master_standby` records the
        // standby `s`, and the coordinator's row agrees with it.
        mode: Mode::from_in_sync(if content < 0 {
            cfg.standby
        } else {
            (content as u32) < cfg.pairs
        }),
        status: Status::Up,
        port: if cfg.base_port == 0 {
            0
        } else {
            cfg.base_port as i32 + index as i32
        },
        hostname: host.clone(),
        address: host.clone(),
        datadir: dir,
    };
    let mut rows = Vec::with_capacity(cfg.served_instances() + 1);
    for c in 0..contents as i32 {
        rows.push(row(
            c + 2,
            c,
            Role::Primary,
            rows.len(),
            format!("/data/primary/gpseg{c}"),
        ));
    }
    for c in 0..cfg.pairs as i32 {
        let dbid = contents as i32 + c + 2;
        rows.push(row(
            dbid,
            c,
            Role::Mirror,
            rows.len(),
            format!("/data/mirror/gpseg{c}"),
        ));
    }
    let n = rows.len();
    rows.push(row(
        1,
        -1,
        Role::Primary,
        n,
        "/data/coordinator/gpseg-1".into(),
    ));
    if cfg.standby {
        let dbid = rows.len() as i32 + 1;
        rows.push(row(
            dbid,
            -1,
            Role::Mirror,
            n + 1,
            "/data/standby/gpseg-1".into(),
        ));
    }
    rows
}

/// Errors of the simulator API; the control server maps them to HTTP statuses.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("unknown dbid {0}")]
    UnknownDbid(Dbid),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Config(String),
    // The io::Error is shown in the message, not chained as a source, so one-line reports
    // (`{:#}`) do not print it twice.
    #[error("{context}: {error}")]
    Io { context: String, error: io::Error },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_gpinitsystem_numbering() {
        let cfg = SimConfig {
            pairs: 2,
            mirrorless: 1,
            base_port: 7000,
            ..SimConfig::default()
        };
        let got: Vec<_> = layout(&cfg)
            .iter()
            .map(|s| (s.dbid, s.content, s.role.as_char(), s.port))
            .collect();
        assert_eq!(
            got,
            vec![
                (2, 0, 'p', 7000),
                (3, 1, 'p', 7001),
                (4, 2, 'p', 7002),
                (5, 0, 'm', 7003),
                (6, 1, 'm', 7004),
                (1, -1, 'p', 7005),
            ]
        );
    }

    #[test]
    fn standby_takes_the_next_dbid_and_both_coordinator_rows_are_in_sync() {
        let cfg = SimConfig {
            pairs: 1,
            standby: true,
            base_port: 7000,
            ..SimConfig::default()
        };
        assert!(cfg.serves_coordinator());
        assert_eq!(cfg.served_instances(), 4);
        let got: Vec<_> = layout(&cfg)
            .iter()
            .map(|s| {
                (
                    s.dbid,
                    s.content,
                    s.role.as_char(),
                    s.preferred_role.as_char(),
                    s.mode.as_char(),
                    s.port,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (2, 0, 'p', 'p', 's', 7000),
                (3, 0, 'm', 'm', 's', 7001),
                (1, -1, 'p', 'p', 's', 7002),
                (4, -1, 'm', 'm', 's', 7003),
            ]
        );
    }
}
