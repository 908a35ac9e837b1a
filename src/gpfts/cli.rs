//! `gpfts`'s command line (`F:u:d:n:W:L:U:aACDR:T:I:v`, long names as `gpfts` spells them),
//! with its defaults, and how it maps onto ftsd's configuration keys.

use std::path::PathBuf;

use clap::Parser;

/// The flags `gpstart -F` and operators' scripts pass to `gpfts`.
#[derive(Debug, Clone, Parser, PartialEq, Eq)]
#[command(name = "gpfts", disable_help_flag = true, disable_version_flag = true)]
pub struct GpftsArgs {
    /// etcd config file [default: $GPHOME/bin/config/cbdb_etcd_default.conf]
    #[arg(short = 'F', long = "etcd_conf_file")]
    pub etcd_conf_file: Option<PathBuf>,
    /// database user for the coordinator connection [default: the login user]
    #[arg(short = 'U', long = "user")]
    pub user: Option<String>,
    /// probe retries
    #[arg(short = 'R', long = "probe-retries", default_value_t = 5)]
    pub probe_retries: u32,
    /// probe timeout, seconds
    #[arg(short = 'T', long = "probe-timeout", default_value_t = 20)]
    pub probe_timeout: u64,
    /// probe interval, seconds
    #[arg(short = 'I', long = "probe-interval", default_value_t = 60)]
    pub probe_interval: u64,
    /// leader lease TTL, seconds
    #[arg(short = 'u', long = "etcd_lease_timeout", default_value_t = 30)]
    pub lease_timeout: u64,
    /// one probe cycle without election, then exit
    #[arg(short = 'A', long = "one-round")]
    pub one_round: bool,
    /// never promote the coordinator's standby
    #[arg(short = 'D', long = "disable-promote-standby")]
    pub disable_promote_standby: bool,
    /// log directory [default: $COORDINATOR_DATA_DIRECTORY/log/fts, else /tmp/fts]
    #[arg(short = 'd', long = "log_directory")]
    pub log_directory: Option<PathBuf>,
    /// lines per log file
    #[arg(short = 'n', long = "log_rotate_line", default_value_t = 5000)]
    pub log_rotate_line: u64,
    /// tolerate DNS failures (an unresolvable host is a failed probe)
    #[arg(short = 'C', long = "enable_k8s_compatible")]
    pub k8s_compatible: bool,
    /// standalone lease renewal
    #[arg(short = 'a')]
    pub standalone: bool,
    /// debug logging
    #[arg(short = 'v', long = "debug")]
    pub debug: bool,
    /// tool: 1 load -L into the blob, 2 print it, 3 delete it, 4 coordinator check, 5 print
    /// the promote-ready key
    #[arg(short = 'W', long = "warp-call", value_parser = clap::value_parser!(u8).range(1..=5))]
    pub warp_call: Option<u8>,
    /// file for -W 1
    #[arg(short = 'L')]
    pub load_file: Option<PathBuf>,
}

/// `gpfts`'s usage text, printed for unknown flags (exit 2).
pub const USAGE: &str = "\
gpfts: external FTS for Cloudberry (ftsd's gpfts-compatible entry point)

Usage:
  gpfts [OPTION]...

Options:
  -F, --etcd_conf_file=FILE        etcd config file (default $GPHOME/bin/config/cbdb_etcd_default.conf)
  -U, --user=NAME                  database user for the coordinator (default: login user)
  -R, --probe-retries=N            probe retries (default 5)
  -T, --probe-timeout=SECONDS      probe timeout (default 20)
  -I, --probe-interval=SECONDS     probe interval (default 60)
  -u, --etcd_lease_timeout=SECONDS leader lease TTL (default 30)
  -A, --one-round                  one probe round without election, then exit
  -D, --disable-promote-standby    never promote the coordinator's standby
  -d, --log_directory=DIR          log directory (default $COORDINATOR_DATA_DIRECTORY/log/fts or /tmp/fts)
  -n, --log_rotate_line=N          lines per log file (default 5000)
  -C, --enable_k8s_compatible      unresolvable hosts count as failed probes
  -a                               standalone lease renewal
  -v, --debug                      debug logging
  -W, --warp-call=N                1 load -L FILE into etcd, 2 print the configuration,
                                   3 delete it, 4 coordinator connectivity check,
                                   5 print the standby promote-ready key
  -L FILE                          file for -W 1
";

impl GpftsArgs {
    /// `-F`, or `gpfts`'s default under `$GPHOME`.
    pub fn conf_path(&self) -> Result<PathBuf, String> {
        if let Some(p) = &self.etcd_conf_file {
            return Ok(p.clone());
        }
        std::env::var_os("GPHOME")
            .map(|home| PathBuf::from(home).join("bin/config/cbdb_etcd_default.conf"))
            .ok_or_else(|| "no -F given and GPHOME is not set".to_owned())
    }

    /// `-d`, or `gpfts`'s default.
    pub fn log_dir(&self) -> PathBuf {
        self.log_directory.clone().unwrap_or_else(|| {
            std::env::var_os("COORDINATOR_DATA_DIRECTORY")
                .map(|d| PathBuf::from(d).join("log/fts"))
                .unwrap_or_else(|| PathBuf::from("/tmp/fts"))
        })
    }

    /// The ftsd configuration keys these flags set, as `(key, flag, value)`.
    pub fn settings(
        &self,
        cluster: &str,
    ) -> Result<Vec<(&'static str, &'static str, String)>, String> {
        let conf = self.conf_path()?;
        let mut s = vec![
            ("cluster", "-F (gp_etcd_cluster_id)", cluster.to_owned()),
            ("catalog.backend", "gpfts", "cloudberry".to_owned()),
            (
                "catalog.cbdb_conf",
                "-F",
                conf.to_string_lossy().into_owned(),
            ),
            ("probe.retries", "-R", self.probe_retries.to_string()),
            ("probe.timeout", "-T", format!("{}s", self.probe_timeout)),
            ("probe.interval", "-I", format!("{}s", self.probe_interval)),
            ("etcd.lease_ttl", "-u", format!("{}s", self.lease_timeout)),
            (
                "log.level",
                "-v",
                if self.debug { "debug" } else { "info" }.to_owned(),
            ),
        ];
        if let Some(user) = &self.user {
            s.push(("catalog.coordinator_user", "-U", user.clone()));
        }
        // Flags outrank FTSD_* variables: -D wins over FTSD_COORDINATOR_AUTO_FAILOVER.
        if self.disable_promote_standby {
            s.push(("coordinator.auto_failover", "-D", "false".to_owned()));
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<GpftsArgs, clap::Error> {
        GpftsArgs::try_parse_from(std::iter::once("gpfts").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_are_gpfts_defaults() {
        let a = parse(&[]).unwrap();
        assert_eq!(
            (
                a.probe_retries,
                a.probe_timeout,
                a.probe_interval,
                a.lease_timeout
            ),
            (5, 20, 60, 30)
        );
        assert_eq!(a.log_rotate_line, 5000);
        assert!(!a.one_round && a.warp_call.is_none());
    }

    #[test]
    fn observed_invocations_parse() {
        let a = parse(&["-F", "/tmp/cbdb_etcd.conf", "-d", "/tmp/log"]).unwrap();
        assert_eq!(
            a.etcd_conf_file.unwrap(),
            PathBuf::from("/tmp/cbdb_etcd.conf")
        );
        let a = parse(&["-U", "gpadmin", "-D", "-A"]).unwrap();
        assert!(a.one_round && a.disable_promote_standby);
        let a = parse(&["-U", "gpadmin", "-W", "1", "-L", "/tmp/gpfts_dump"]).unwrap();
        assert_eq!(a.warp_call, Some(1));
        // getopt-style clusters and attached values
        let a = parse(&["-DAv", "-R3", "--probe-timeout=7"]).unwrap();
        assert!(a.disable_promote_standby && a.one_round && a.debug);
        assert_eq!((a.probe_retries, a.probe_timeout), (3, 7));
    }

    #[test]
    fn disable_promote_standby_switches_coordinator_failover_off() {
        let has = |args: &[&str]| {
            parse(args).unwrap().settings("cl").unwrap().contains(&(
                "coordinator.auto_failover",
                "-D",
                "false".to_owned(),
            ))
        };
        assert!(has(&["-F", "/tmp/cbdb_etcd.conf", "-D"]));
        assert!(!has(&["-F", "/tmp/cbdb_etcd.conf"]));
    }

    #[test]
    fn unknown_flags_and_bad_values_are_refused() {
        assert!(parse(&["-X"]).is_err());
        assert!(parse(&["-W", "6"]).is_err());
        assert!(parse(&["--config", "x"]).is_err());
    }
}
