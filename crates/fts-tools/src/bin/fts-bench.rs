//! `fts-bench`: the benchmarks of docs/performance.md.

use std::time::Duration;

use clap::{Parser, Subcommand};
use fts_tools::bench::{coordinator_failover, measure, pg_failover, pg_quorum, probe, takeover};

/// ftsd benchmarks: probe-cycle cost against fts-segsim, leader takeover after kill -9,
/// failover of a real PostgreSQL pair (by one instance or by several acting on a quorum), and
/// coordinator failover behind a virtual IP.
#[derive(Parser)]
#[command(name = "fts-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Probe cycles against fts-segsim next to a bare connect+startup+query baseline.
    Probe {
        /// Segment instances to simulate, comma-separated (each size is half primaries,
        /// half mirrors; one PROBE per primary per cycle).
        #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
        segments: Vec<usize>,
        /// Measured cycles per size and mode (after one warm-up cycle).
        #[arg(long, default_value_t = 5)]
        cycles: usize,
        /// Probes in flight at once (ftsd's probe.concurrency).
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
        /// Per-attempt timeout.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Leader takeover time after kill -9, over several runs.
    Takeover {
        /// Lease TTLs to measure, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "3s,10s", value_parser = humantime::parse_duration)]
        ttl: Vec<Duration>,
        /// Kill -9 runs per TTL.
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// ftsd instances (the leader and its followers).
        #[arg(long, default_value_t = 3)]
        instances: usize,
    },
    /// Failover of a real PostgreSQL pair with the postgres driver: kill -9 of the primary's
    /// postmaster until the promoted standby commits a write, over several runs; with
    /// `--instances 3`, by three elected instances acting on a quorum (real etcd), and with
    /// `--flaps N`, the flapping check (N short outages of the primary: no failover).
    PgFailover {
        /// Kill -9 runs (each with a fresh pair and fresh daemons); 0 with `--flaps` runs
        /// only the flapping check.
        #[arg(long, default_value_t = 10)]
        runs: usize,
        /// ftsd instances: 1 runs `ftsd run --no-election`; more are elected through a real
        /// etcd with the second opinion on (`observe.mode`).
        #[arg(long, default_value_t = 1)]
        instances: usize,
        /// observe.mode of the instances when there are several: continuous or on-demand.
        #[arg(long, default_value = "continuous", value_parser = ["continuous", "on-demand"])]
        observe: String,
        /// probe.min_down of the daemons (flaps shorter than it never fail over).
        #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
        min_down: Duration,
        /// etcd.lease_ttl of the instances when there are several.
        #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
        lease_ttl: Duration,
        /// After the kill runs, this many flaps of the primary (100–300 ms each, alternately
        /// a refused port and a frozen postmaster, 1–2 s apart) with the same configuration;
        /// the check fails unless nothing was failed over. Needs `--instances` > 1.
        #[arg(long, default_value_t = 0)]
        flaps: usize,
        /// Keep the daemons' logs and configurations of the multi-instance bench (their
        /// directory is printed); a failed run keeps them anyway.
        #[arg(long)]
        keep_logs: bool,
        /// probe.interval of the daemon.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        interval: Duration,
        /// probe.timeout of the daemon (must be less than the interval).
        #[arg(long, default_value = "999ms", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// probe.retries of the daemon.
        #[arg(long, default_value_t = 2)]
        retries: u32,
        /// probe.retry_delay of the daemon.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        retry_delay: Duration,
    },
    /// Coordinator failover behind a virtual IP (needs root): a real PostgreSQL coordinator
    /// and synchronous standby on two network-namespace hosts with `ftsd vip-agent` on each,
    /// elected ftsd instances watching with auto_failover; kill -9 of the coordinator's
    /// postmaster until a client's write commits through the VIP on the promoted standby.
    CoordinatorFailover {
        /// Kill -9 runs (each with a fresh set-up).
        #[arg(long, default_value_t = 10)]
        runs: usize,
        /// coordinator.interval of the daemons.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        interval: Duration,
        /// coordinator.timeout of the daemons (must be less than the interval).
        #[arg(long, default_value = "999ms", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// coordinator.retries of the daemons.
        #[arg(long, default_value_t = 2)]
        retries: u32,
        /// probe.retry_delay of the daemons (also between the coordinator's attempts, at
        /// most a quarter of coordinator.interval).
        #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
        retry_delay: Duration,
        /// etcd.lease_ttl of the daemons.
        #[arg(long, default_value = "4s", value_parser = humantime::parse_duration)]
        lease_ttl: Duration,
        /// ftsd instances watching the pair.
        #[arg(long, default_value_t = 3)]
        instances: usize,
    },
    /// Internal: one measured worker process of `probe`.
    #[command(hide = true)]
    ProbeWorker {
        #[arg(long)]
        mode: String,
        #[arg(long)]
        catalog: String,
        #[arg(long)]
        cycles: usize,
        #[arg(long)]
        concurrency: usize,
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Cmd::ProbeWorker {
            mode,
            catalog,
            cycles,
            concurrency,
            timeout,
        } => {
            let r = rt.block_on(probe::worker(&mode, &catalog, cycles, concurrency, timeout))?;
            println!("{}", serde_json::to_string(&r)?);
        }
        Cmd::Probe {
            segments,
            cycles,
            concurrency,
            timeout,
        } => {
            let results = rt.block_on(probe::run(&segments, cycles, concurrency, timeout))?;
            println!("| segments | probes/cycle | mode | cycle min / median / max | CPU per cycle | peak RSS | failed |");
            println!("|---:|---:|---|---|---:|---:|---:|");
            for (n, r) in &results {
                let d: Vec<Duration> = r
                    .cycles_ms
                    .iter()
                    .map(|ms| Duration::from_secs_f64(ms / 1000.0))
                    .collect();
                let (lo, med, hi) = measure::summary(&d);
                println!(
                    "| {n} | {} | {} | {} / {} / {} | {:.1} ms | {:.1} MiB | {} |",
                    r.pairs,
                    r.mode,
                    measure::ms(lo),
                    measure::ms(med),
                    measure::ms(hi),
                    r.cpu_ms_per_cycle,
                    r.peak_rss_mib,
                    r.failed
                );
            }
            for pair in results.chunks(2) {
                if let [(n, base), (_, f)] = pair {
                    let med = |r: &probe::WorkerResult| {
                        let mut v = r.cycles_ms.clone();
                        v.sort_by(f64::total_cmp);
                        v[v.len() / 2]
                    };
                    println!(
                        "{n} segments: ftsd/baseline median wall = {:.2}x, CPU = {:.2}x",
                        med(f) / med(base),
                        f.cpu_ms_per_cycle / base.cpu_ms_per_cycle
                    );
                }
            }
        }
        Cmd::PgFailover {
            runs,
            interval,
            timeout,
            retries,
            retry_delay,
            instances,
            observe,
            min_down,
            lease_ttl,
            flaps,
            keep_logs,
        } => {
            let settings = pg_failover::PgFailoverSettings {
                interval,
                timeout,
                retries,
                retry_delay,
                min_down,
            };
            let quorum = pg_quorum::QuorumSettings {
                instances,
                observe,
                lease_ttl,
                keep_logs,
            };
            if instances == 0 {
                anyhow::bail!("--instances must be at least 1");
            }
            if flaps > 0 && instances == 1 {
                anyhow::bail!("--flaps needs --instances 2 or more");
            }
            let mode = if instances == 1 {
                "single".to_string()
            } else {
                format!("{instances} × {}", quorum.observe)
            };
            if runs > 0 {
                let samples = if instances == 1 {
                    rt.block_on(pg_failover::run(settings, runs))?
                } else {
                    rt.block_on(pg_quorum::run(settings, &quorum, runs))?
                };
                let (lo, med, hi) = measure::summary(&samples);
                let p99 = measure::percentile(&samples, 0.99);
                println!("| instances | interval | timeout | retries | retry_delay | min_down | runs | kill -9 → write on promoted standby min / median / p99 / max |");
                println!("|---|---|---|---:|---|---|---:|---|");
                println!(
                    "| {mode} | {} | {} | {} | {} | {} | {} | {} / {} / {} / {} |",
                    humantime::format_duration(interval),
                    humantime::format_duration(timeout),
                    retries,
                    humantime::format_duration(retry_delay),
                    humantime::format_duration(min_down),
                    samples.len(),
                    measure::ms(lo),
                    measure::ms(med),
                    measure::ms(p99),
                    measure::ms(hi)
                );
            }
            if flaps > 0 {
                let r = rt.block_on(pg_quorum::flaps(settings, &quorum, flaps))?;
                let refusals: Vec<String> = r
                    .refusals
                    .iter()
                    .map(|(why, n)| format!("{n} × {why}"))
                    .collect();
                println!(
                    "flapping check ({mode}): {} flaps ({} port refused, {} postmaster frozen), {} to {}; \
                     transitions: {}; primary still primary: {}; standby still in recovery: {}",
                    r.refused + r.frozen,
                    r.refused,
                    r.frozen,
                    measure::ms(r.shortest),
                    measure::ms(r.longest),
                    r.transitions,
                    r.primary_kept,
                    r.standby_kept
                );
                println!(
                    "refused decisions during the flaps: {}",
                    if refusals.is_empty() {
                        "none".to_string()
                    } else {
                        refusals.join("; ")
                    }
                );
                if r.transitions != 0 || !r.primary_kept || !r.standby_kept {
                    anyhow::bail!("the flapping check failed: a flap was failed over");
                }
            }
        }
        Cmd::CoordinatorFailover {
            runs,
            interval,
            timeout,
            retries,
            retry_delay,
            lease_ttl,
            instances,
        } => {
            let settings = coordinator_failover::CoordinatorFailoverSettings {
                interval,
                timeout,
                retries,
                retry_delay,
                lease_ttl,
                instances,
            };
            let samples = rt.block_on(coordinator_failover::run(settings, runs))?;
            let column = |f: fn(&coordinator_failover::CoordinatorFailoverSample) -> Duration| {
                let v: Vec<Duration> = samples.iter().map(f).collect();
                let (lo, med, hi) = measure::summary(&v);
                format!(
                    "{} / {} / {}",
                    measure::ms(lo),
                    measure::ms(med),
                    measure::ms(hi)
                )
            };
            println!(
                "settings: coordinator.interval {}, timeout {}, retries {}, probe.retry_delay {}, lease_ttl {}, {} instances, vip.interval 200ms; {} runs",
                humantime::format_duration(interval),
                humantime::format_duration(timeout),
                retries,
                humantime::format_duration(retry_delay),
                humantime::format_duration(lease_ttl),
                instances,
                samples.len()
            );
            println!("| from kill -9 of the coordinator to | min / median / max |");
            println!("|---|---|");
            println!(
                "| intent recorded (loss confirmed) | {} |",
                column(|s| s.intent)
            );
            println!(
                "| promotion verified and recorded | {} |",
                column(|s| s.promoted)
            );
            println!("| VIP on the standby's host | {} |", column(|s| s.vip));
            println!(
                "| **first write committed through the VIP** | {} |",
                column(|s| s.write)
            );
            let acked: usize = samples.iter().map(|s| s.acked).sum();
            let lost: usize = samples.iter().map(|s| s.lost).sum();
            println!("acknowledged writes: {acked}, lost: {lost}");
            if lost > 0 {
                anyhow::bail!("{lost} acknowledged writes lost");
            }
        }
        Cmd::Takeover {
            ttl,
            runs,
            instances,
        } => {
            println!("| TTL | runs | in office min / median / max | first cycle done min / median / max |");
            println!("|---|---:|---|---|");
            for t in ttl {
                let samples = rt.block_on(takeover::run(t, runs, instances))?;
                let office: Vec<_> = samples.iter().map(|s| s.office).collect();
                let cycle: Vec<_> = samples.iter().map(|s| s.first_cycle).collect();
                let (a, b, c) = measure::summary(&office);
                let (d, e, f) = measure::summary(&cycle);
                println!(
                    "| {} | {} | {} / {} / {} | {} / {} / {} |",
                    humantime::format_duration(t),
                    samples.len(),
                    measure::ms(a),
                    measure::ms(b),
                    measure::ms(c),
                    measure::ms(d),
                    measure::ms(e),
                    measure::ms(f)
                );
            }
        }
    }
    Ok(())
}
