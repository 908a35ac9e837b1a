//! `ftsctl`: inspect and operate an ftsd cluster. The binary only parses the command line; the
//! logic lives in `ftsd::ctl`.

use std::process::ExitCode;

use clap::Parser;

use ftsd::ctl::cli::Cli;

fn main() -> ExitCode {
    ftsd::ctl::commands::main(Cli::parse())
}
