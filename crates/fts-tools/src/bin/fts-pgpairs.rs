//! `fts-pgpairs`: local PostgreSQL primary/standby pairs with synchronous replication, for
//! trying `ftsd` with `probe.driver = "postgres"` (see docs/postgres-driver.md).

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use fts_testkit::localpairs;
use fts_testkit::pgpair::PROBE_ROLE;

/// Create, start, stop and register local PostgreSQL primary/standby pairs (loopback only).
#[derive(Parser)]
#[command(name = "fts-pgpairs", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// initdb N primaries, pg_basebackup a standby of each, set synchronous replication,
    /// create the probe role with its minimal grants, and start everything.
    Create {
        /// Number of pairs.
        #[arg(long, default_value_t = 2)]
        pairs: u16,
        /// Directory for the data directories, logs, passwords and pairs.json.
        #[arg(long)]
        dir: PathBuf,
        /// Port of pair 0's primary; pair i uses base-port + 2i and base-port + 2i + 1.
        #[arg(long, default_value_t = 6000)]
        base_port: u16,
    },
    /// Write the pairs into gp_segment_configuration of a catalog (created beforehand with
    /// `ftsd catalog init`), replacing every row.
    Register {
        #[arg(long)]
        dir: PathBuf,
        /// Catalog connection string, e.g. postgresql://postgres@127.0.0.1:5432/postgres.
        #[arg(long)]
        catalog: String,
    },
    /// Start every server of the pairs that is not running.
    Start {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Stop every running server of the pairs.
    Stop {
        #[arg(long)]
        dir: PathBuf,
        /// pg_ctl shutdown mode: smart, fast or immediate.
        #[arg(long, default_value = "fast", value_parser = ["smart", "fast", "immediate"])]
        mode: String,
    },
    /// One line per server: running or not, primary or standby, replication state.
    Status {
        #[arg(long)]
        dir: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Cmd::Create {
            pairs,
            dir,
            base_port,
        } => {
            rt.block_on(localpairs::create(&dir, pairs, base_port))?;
            println!(
                "created {pairs} pairs in {dir}\n\nftsd configuration for them:\n\n\
                 [probe]\ndriver = \"postgres\"\nuser = \"{PROBE_ROLE}\"\n\
                 password_file = \"{pw}\"\n\nthen: fts-pgpairs register --dir {dir} --catalog URL",
                dir = dir.display(),
                pw = dir.join("probe.password").display()
            );
        }
        Cmd::Register { dir, catalog } => {
            let layout = localpairs::load(&dir)?;
            let rows = localpairs::segments(&dir, &layout);
            rt.block_on(fts_segsim::catalog::write_catalog(&catalog, &rows))?;
            println!("registered {} segments", rows.len());
        }
        Cmd::Start { dir } => localpairs::start(&dir)?,
        Cmd::Stop { dir, mode } => localpairs::stop(&dir, &mode)?,
        Cmd::Status { dir } => {
            for line in rt.block_on(localpairs::status(&dir))? {
                println!("{line}");
            }
        }
    }
    Ok(())
}
