//! `gpfts` compatibility: installed as `gpfts` (a symlink to `ftsd`), the binary takes
//! `gpfts`'s command line so `gpstart -F` and operators' scripts launch ftsd unchanged.
//!
//! * default: the elected daemon with the Cloudberry backend, campaigning on `…/fts_ha_lock`
//!   (the name `gpfts` locks, so the two queue in one line);
//! * `-A`: one probe cycle without election, then exit;
//! * `-W 1..5`: `gpfts`'s tools, through the same backend.
//!
//! * `cli` — the flags; `announce` — `…/fts_ha_hostname`; `tools` — `-A` and `-W`.

pub mod announce;
pub mod cli;
pub mod tools;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;

use crate::catalog::cloudberry::conf::CbdbEtcdConf;
use crate::config::Config;
use crate::daemon::{self, process, Election};
use cli::{GpftsArgs, USAGE};

/// Whether the program was started under the name `gpfts`.
pub fn invoked_as_gpfts() -> bool {
    std::env::args_os()
        .next()
        .map(std::path::PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n == "gpfts"))
        .unwrap_or(false)
}

/// The `gpfts` entry point: exit 2 with `gpfts`'s usage on a bad command line, 1 on failure.
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let args = match GpftsArgs::try_parse_from(args) {
        Ok(a) => a,
        Err(e) => {
            let first = e.to_string();
            let first = first.lines().next().unwrap_or_default();
            eprintln!("gpfts: {}\n\n{USAGE}", first.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("gpfts: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn config(args: &GpftsArgs) -> anyhow::Result<(Config, CbdbEtcdConf)> {
    let path = args.conf_path().map_err(anyhow::Error::msg)?;
    let conf = CbdbEtcdConf::read(&path)?;
    let settings = args
        .settings(&conf.cluster_id)
        .map_err(anyhow::Error::msg)?;
    let cfg = Config::from_settings(crate::config::process_env()?, &settings)?;
    Ok((cfg, conf))
}

fn run(args: GpftsArgs) -> anyhow::Result<()> {
    let (cfg, conf) = config(&args)?;
    let rt = process::runtime()?;
    if let Some(n) = args.warp_call {
        process::init_tracing(&cfg, None)?;
        return rt.block_on(tools::warp_call(&cfg, conf, n, args.load_file.as_deref()));
    }
    let log = args.log_dir().join("fts");
    process::init_tracing(&cfg, Some(&log))?;
    if args.one_round {
        return rt.block_on(tools::one_round(&cfg, conf));
    }
    rt.block_on(daemon::run(cfg, Election::Etcd, process::wait_for_signal()))
}
