//! `fts-chaos`: runs fault scenarios against the containerised cluster that `chaos-tests/run`
//! brings up, checks the invariants from what was recorded and writes the report. See
//! chaos-tests/README.md.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use fts_chaos::{report, run, scenario, summary};

#[derive(Parser)]
#[command(
    name = "fts-chaos",
    version,
    about = "Chaos scenarios against the containerised ftsd cluster, with an invariant checker"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    /// The CI subset, one seed.
    Short,
    /// Every scenario, for every seed.
    Full,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run scenarios against the cluster already up (chaos-tests/run does that for you).
    Run {
        /// short: the CI subset with the first seed; full: every scenario × every seed.
        #[arg(long, value_enum, default_value_t = Mode::Short)]
        mode: Mode,
        /// Seed for fault timing and targets; repeat for several. Default: derived from the
        /// clock (printed). The full mode uses seed, seed+1, seed+2 when one is given.
        #[arg(long = "seed")]
        seeds: Vec<u64>,
        /// Run only this scenario (repeatable); see `fts-chaos list`.
        #[arg(long = "scenario")]
        scenarios: Vec<String>,
        /// Folder for report.md, timeline.svg and results.json.
        #[arg(long, default_value = "chaos-report")]
        out: PathBuf,
        /// Folder the containers write the ftsd logs to (mounted at /logs).
        #[arg(long)]
        logs: PathBuf,
        /// Exit 0 even when scenarios could not run here (e.g. the PostgreSQL driver is
        /// missing); they stay marked NOT RUN in the report.
        #[arg(long)]
        allow_not_run: bool,
    },
    /// List the scenarios.
    List,
    /// Fold several runs' results into one markdown table: per scenario runs, passes,
    /// violations and latency medians (then min / median / max), and the write totals.
    /// Exits 1 when any run failed or any invariant was violated.
    Summarize {
        /// A results.json written by `run`, or the --out folder that holds one; repeatable.
        #[arg(required = true)]
        results: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::List => {
            for s in scenario::ALL {
                println!(
                    "{:<24} {:<8} {}{}",
                    s.name,
                    s.target.db(),
                    s.about,
                    if s.short { " [short]" } else { "" }
                );
            }
            ExitCode::SUCCESS
        }
        Cmd::Summarize { results } => {
            let files: Result<Vec<_>, _> = results.iter().map(|p| summary::read(p)).collect();
            match files {
                Ok(files) => {
                    let s = summary::Summary::new(&files);
                    print!("{}", s.markdown());
                    if s.passed() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    eprintln!("fts-chaos: error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Cmd::Run {
            mode,
            seeds,
            scenarios,
            out,
            logs,
            allow_not_run,
        } => match run_cmd(mode, seeds, scenarios, out, logs, allow_not_run) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("fts-chaos: error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn run_cmd(
    mode: Mode,
    mut seeds: Vec<u64>,
    only: Vec<String>,
    out: PathBuf,
    logs: PathBuf,
    allow_not_run: bool,
) -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tokio_postgres=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    for name in &only {
        if scenario::find(name).is_none() {
            anyhow::bail!("unknown scenario {name:?} (see `fts-chaos list`)");
        }
    }
    let full = matches!(mode, Mode::Full);
    if seeds.is_empty() {
        seeds.push(fts_chaos::history::now_ms() as u64 % 1_000_000);
    }
    if full && seeds.len() == 1 {
        seeds = (0..3).map(|i| seeds[0] + i).collect();
    }
    println!(
        "fts-chaos: mode {}, seeds {seeds:?}",
        if full { "full" } else { "short" }
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = rt
        .block_on(run::run(run::Options {
            full,
            seeds,
            only,
            logs,
        }))
        .context("chaos run")?;
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let md = report::markdown(&result);
    std::fs::write(out.join("report.md"), &md)?;
    std::fs::write(out.join("timeline.svg"), report::svg(&result))?;
    std::fs::write(
        out.join("results.json"),
        serde_json::to_vec_pretty(&result)?,
    )?;
    let summary_end = md.find("\n## Scenarios").unwrap_or(md.len());
    println!(
        "\n{}\nreport: {}",
        &md[..summary_end],
        out.join("report.md").display()
    );
    let not_run = result.not_run();
    Ok(if result.failed() || (not_run > 0 && !allow_not_run) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
