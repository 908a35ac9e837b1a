//! Command-line flags for the configuration, for the daemon to `#[command(flatten)]`.
//!
//! Override flags take text and go through the same conversion as environment variables, so a
//! bad flag value gets the same one-line message and exit code as any other configuration
//! error (`--probe-retries=abc: invalid number`).

use std::path::PathBuf;

use super::{process_env, Config, ConfigError, DEFAULT_CONFIG_PATH};

/// `--config` and the override flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArgs {
    /// Configuration file (TOML). Every key can also be set by an FTSD_<TABLE>_<KEY>
    /// environment variable, which overrides the file; the flags below override both.
    #[arg(long = "config", env = "FTSD_CONFIG", value_name = "PATH", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,

    #[command(flatten)]
    pub overrides: Overrides,
}

impl ConfigArgs {
    /// Loads the configuration from `--config`, the process environment and the flags.
    pub fn load(&self) -> Result<Config, ConfigError> {
        Config::load(&self.config, process_env()?, &self.overrides)
    }
}

/// Command-line overrides of the main keys; `None` leaves the key to the environment, the file
/// or the default. Values are text, parsed like the matching environment variable.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct Overrides {
    /// Cluster name, part of every etcd key; letters, digits, '_', '.', '-' [key: cluster]
    #[arg(long, value_name = "NAME")]
    pub cluster: Option<String>,

    /// Coordinator catalog connection, postgresql://user@host:port/db or 'host=... dbname=...'
    /// [key: catalog.url]
    #[arg(long, value_name = "URL")]
    pub catalog_url: Option<String>,

    /// etcd endpoints, comma-separated http(s)://host:port [key: etcd.endpoints]
    #[arg(long, value_name = "URL,...")]
    pub etcd_endpoints: Option<String>,

    /// Time between probe cycles, e.g. 60s [key: probe.interval]
    #[arg(long, value_name = "DURATION")]
    pub probe_interval: Option<String>,

    /// Limit for one probe attempt, e.g. 20s; must be less than the interval
    /// [key: probe.timeout]
    #[arg(long, value_name = "DURATION")]
    pub probe_timeout: Option<String>,

    /// Retries after a failed probe attempt, 1-100; retries+1 attempts in all [key: probe.retries]
    #[arg(long, value_name = "N")]
    pub probe_retries: Option<String>,

    /// Log output format: text or json [key: log.format]
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,

    /// Log filter directives, e.g. info or info,ftsd=debug [key: log.level]
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,

    /// Address of the API server, ip:port [key: api.listen]
    #[arg(long, value_name = "ADDR")]
    pub api_listen: Option<String>,

    /// Address of the metrics server, ip:port [key: api.metrics_listen]
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
}

impl Overrides {
    /// (key, flag, value) for every flag, in key order.
    pub(crate) fn entries(&self) -> [(&'static str, &'static str, Option<&str>); 10] {
        [
            ("cluster", "--cluster", self.cluster.as_deref()),
            (
                "probe.interval",
                "--probe-interval",
                self.probe_interval.as_deref(),
            ),
            (
                "probe.timeout",
                "--probe-timeout",
                self.probe_timeout.as_deref(),
            ),
            (
                "probe.retries",
                "--probe-retries",
                self.probe_retries.as_deref(),
            ),
            ("catalog.url", "--catalog-url", self.catalog_url.as_deref()),
            (
                "etcd.endpoints",
                "--etcd-endpoints",
                self.etcd_endpoints.as_deref(),
            ),
            ("api.listen", "--api-listen", self.api_listen.as_deref()),
            (
                "api.metrics_listen",
                "--metrics-listen",
                self.metrics_listen.as_deref(),
            ),
            ("log.format", "--log-format", self.log_format.as_deref()),
            ("log.level", "--log-level", self.log_level.as_deref()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: ConfigArgs,
    }

    #[test]
    fn flags_match_keys() {
        let cmd = Cli::command();
        for (key, flag, _) in Overrides::default().entries() {
            assert!(super::super::keys::find(key).is_some(), "{key}");
            let long = flag.trim_start_matches("--");
            let arg = cmd.get_arguments().find(|a| a.get_long() == Some(long));
            let help = arg.and_then(|a| a.get_help()).map(ToString::to_string);
            assert!(
                help.is_some_and(|h| h.contains(key)),
                "{flag} must document {key}"
            );
        }
    }

    #[test]
    fn parses_flags() {
        let cli = Cli::try_parse_from([
            "ftsd",
            "--config",
            "/tmp/x.toml",
            "--probe-interval",
            "5s",
            "--metrics-listen=127.0.0.1:9",
        ])
        .unwrap();
        assert_eq!(cli.config.config, PathBuf::from("/tmp/x.toml"));
        assert_eq!(cli.config.overrides.probe_interval.as_deref(), Some("5s"));
        assert_eq!(
            cli.config.overrides.metrics_listen.as_deref(),
            Some("127.0.0.1:9")
        );
    }
}
