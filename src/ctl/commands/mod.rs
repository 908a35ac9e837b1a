//! The subcommands, one file each: each prints its result (a table, or `--json`) and returns
//! its exit code. [`run`] only dispatches; [`Ctx`] holds what every subcommand's output needs.

mod brake;
mod explain;
mod history;
mod leader;
mod members;
mod pause;
mod probe;
mod segments;
mod shadow;
mod status;
mod switchover;
mod watch;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::CommandFactory;
use serde_json::{json, Value};

use super::cli::{BrakeCommand, Cli, ColorChoice, Command};
use super::client::{connect_any, Connected};
use super::table::{cell, render, Cell, Color, Style};
use super::{exit, CtlError};
use crate::api::convert::from_ms;
use crate::api::proto;

pub use history::parse_since;
pub use status::status_code;

type Outcome = Result<u8, CtlError>;

/// `ftsctl`'s whole life after parsing: completions and the man page need no runtime, every
/// other subcommand runs on a current-thread runtime. Errors are printed as one line.
pub fn main(cli: Cli) -> ExitCode {
    match &cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "ftsctl",
                &mut std::io::stdout(),
            );
            return ExitCode::SUCCESS;
        }
        Command::Man { dir } => {
            let written = match dir {
                Some(dir) => clap_mangen::generate_to(Cli::command(), dir),
                None => clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()),
            };
            return match written {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ftsctl: {e}");
                    ExitCode::from(exit::FAILED)
                }
            };
        }
        _ => {}
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ftsctl: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("ftsctl: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}

/// Runs the parsed command line; returns the exit code.
pub async fn run(cli: Cli) -> Outcome {
    let ctx = Ctx::new(&cli);
    let cli = &cli;
    match &cli.command {
        Command::Status => status::run(cli, &ctx).await,
        Command::Segments {
            down,
            mirrors,
            unbalanced,
        } => segments::run(cli, &ctx, *down, *mirrors, *unbalanced).await,
        Command::History {
            content,
            dbid,
            since,
            limit,
        } => history::run(cli, &ctx, *content, *dbid, since.as_deref(), *limit).await,
        Command::Members => members::run(cli, &ctx).await,
        Command::Leader => leader::run(cli, &ctx).await,
        Command::Probe { wait } => probe::run(cli, &ctx, *wait).await,
        Command::Pause { reason, duration } => pause::pause(cli, &ctx, reason, *duration).await,
        Command::Resume => pause::resume(cli, &ctx).await,
        Command::Brake(BrakeCommand::Status) => brake::status(cli, &ctx).await,
        Command::Brake(BrakeCommand::Release { reason }) => brake::release(cli, &ctx, reason).await,
        Command::Explain { content } => explain::run(cli, &ctx, *content).await,
        Command::Shadow => shadow::run(cli, &ctx).await,
        Command::Switchover { content, wait } => switchover::run(cli, &ctx, *content, *wait).await,
        Command::Watch {
            interval,
            iterations,
        } => watch::run(cli, &ctx, *interval, *iterations).await,
        Command::Completions { .. } | Command::Man { .. } => {
            unreachable!("handled by main without a runtime")
        }
    }
}

/// "2026-01-31T12:00:00Z (5m ago)", or "-" for unknown.
pub(super) fn when(ms: i64) -> String {
    if ms <= 0 {
        return "-".into();
    }
    let t = from_ms(ms);
    let ago = SystemTime::now()
        .duration_since(t)
        .map(|d| Duration::from_secs(d.as_secs()))
        .unwrap_or_default();
    format!(
        "{} ({} ago)",
        humantime::format_rfc3339_seconds(t),
        humantime::format_duration(ago)
    )
}

pub(super) fn time_only(ms: i64) -> String {
    if ms <= 0 {
        "-".into()
    } else {
        humantime::format_rfc3339_seconds(from_ms(ms)).to_string()
    }
}

pub(super) struct Ctx {
    json: bool,
    style: Style,
}

impl Ctx {
    fn new(cli: &Cli) -> Self {
        let color = match cli.color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
            }
        };
        Ctx {
            json: cli.json,
            style: Style { color },
        }
    }

    /// Prints `doc` as JSON, or the human text.
    pub(super) fn emit<T: serde::Serialize>(&self, doc: &T, text: impl FnOnce() -> String) {
        if self.json {
            match serde_json::to_string_pretty(doc) {
                Ok(s) => println!("{s}"),
                Err(e) => eprintln!("ftsctl: cannot encode JSON: {e}"),
            }
        } else {
            print!("{}", text());
        }
    }

    pub(super) fn yes_no(&self, bad: bool, text: &str) -> String {
        self.style
            .paint(text, if bad { Color::Red } else { Color::Green })
    }
}
