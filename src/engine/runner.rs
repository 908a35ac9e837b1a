//! The daemon's main loop: one cycle per interval (measured from cycle start, as Greenplum
//! does), catalog outages retried with backoff, a clean stop on shutdown.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::{watch, Notify};

use super::{run_cycle, Authority, CycleContext, CycleReport, ProbeSettings, SegmentDriver};
use crate::catalog::Catalog;

/// Loop timing and the probe settings of each cycle.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoopSettings {
    pub interval: Duration,
    /// How long a stop waits for the running cycle's in-flight pairs to finish acting.
    pub shutdown_grace: Duration,
    /// Given to the cycle context before each cycle.
    pub probe: ProbeSettings,
    /// A generous bound on one cycle (probe retries, messages, catalog calls included): the
    /// loop promises its next turn within it while a cycle runs (see `daemon::liveness`).
    pub cycle_budget: Duration,
}

/// Hooks the loop reports to (metrics, API state); no-ops by default.
pub trait CycleObserver: Send + Sync + 'static {
    fn cycle_finished(&self, _report: &CycleReport) {}
    fn cycle_failed(&self, _error: &str) {}
    /// The loop turned and promises its next turn within `next` (the systemd watchdog's
    /// liveness, `daemon::liveness`).
    fn loop_turned(&self, _next: Duration) {}
}

impl CycleObserver for () {}

/// Several observers, called in order.
impl CycleObserver for Vec<Arc<dyn CycleObserver>> {
    fn cycle_finished(&self, report: &CycleReport) {
        for o in self {
            o.cycle_finished(report);
        }
    }
    fn cycle_failed(&self, error: &str) {
        for o in self {
            o.cycle_failed(error);
        }
    }
    fn loop_turned(&self, next: Duration) {
        for o in self {
            o.loop_turned(next);
        }
    }
}

/// Runs cycles until `shutdown` turns true. `wake` starts the next cycle early (probe now).
///
/// `live` holds the settings; a new value (a configuration reload) is taken before the next
/// cycle, which then starts at once rather than after the old interval.
pub async fn run_loop<D, C, A, O>(
    ctx: Arc<CycleContext<D, C, A>>,
    mut live: watch::Receiver<LoopSettings>,
    wake: Arc<Notify>,
    observer: Arc<O>,
    mut shutdown: watch::Receiver<bool>,
) where
    D: SegmentDriver,
    C: Catalog,
    A: Authority,
    O: CycleObserver,
{
    let backoff_for = |s: &LoopSettings| {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(s.interval.max(Duration::from_secs(1)))
            .with_jitter()
            .without_max_times()
    };
    let mut settings = *live.borrow_and_update();
    ctx.settings.set(settings.probe);
    ctx.quorum.window.set(super::second_opinion::window_for(
        settings.interval,
        &settings.probe,
    ));
    let mut backoff_builder = backoff_for(&settings);
    let mut backoff = backoff_builder.build();
    loop {
        super::faults::stall_cycle_loop().await;
        if *shutdown.borrow() {
            break;
        }
        // No cycle is running here: the new settings apply to the whole next cycle.
        // (`reloaded` below has already marked the value seen: compare, not `has_changed`.)
        {
            let new = *live.borrow_and_update();
            if new != settings {
                tracing::info!(
                    interval = %humantime::format_duration(new.interval),
                    timeout = %humantime::format_duration(new.probe.timeout),
                    retries = new.probe.retries,
                    retry_delay = %humantime::format_duration(new.probe.retry_delay),
                    concurrency = new.probe.concurrency,
                    "reloaded probe settings in effect from this cycle"
                );
                settings = new;
                ctx.settings.set(settings.probe);
                // The second opinion's window follows: the followers' rounds are re-timed
                // by the same reload (`observe_only::run`).
                ctx.quorum.window.set(super::second_opinion::window_for(
                    settings.interval,
                    &settings.probe,
                ));
                backoff_builder = backoff_for(&settings);
                backoff = backoff_builder.build();
            }
        }
        if !ctx.authority.should_probe() {
            observer.loop_turned(settings.interval);
            tokio::select! {
                _ = tokio::time::sleep(settings.interval) => {}
                _ = wake.notified() => {}
                _ = shutdown.changed() => {}
                _ = reloaded(&mut live) => {}
            }
            continue;
        }
        observer.loop_turned(settings.cycle_budget + settings.shutdown_grace);
        let cycle_start = tokio::time::Instant::now();
        let mut cycle = tokio::spawn(run_cycle(ctx.clone()));
        let joined = tokio::select! {
            r = &mut cycle => r,
            _ = shutdown.changed() => {
                ctx.stopping.store(true, Ordering::Relaxed);
                tracing::info!(grace = ?settings.shutdown_grace, "stopping: letting pairs already decided finish");
                match tokio::time::timeout(settings.shutdown_grace, &mut cycle).await {
                    Ok(r) => r,
                    Err(_) => {
                        // Every transition is one transaction and a PROMOTE cut short is
                        // re-sent by the next leader (decision row 3), so aborting is safe.
                        tracing::warn!("cycle did not finish within the shutdown grace; aborting it");
                        cycle.abort();
                        break;
                    }
                }
            }
        };
        let next_delay = match joined {
            Ok(Ok(report)) => {
                backoff = backoff_builder.build();
                log_report(&report);
                observer.cycle_finished(&report);
                settings.interval.saturating_sub(cycle_start.elapsed())
            }
            Ok(Err(e)) => {
                let delay = backoff.next().unwrap_or(settings.interval);
                tracing::error!(error = %e, retry_in = ?delay, "probe cycle could not start");
                observer.cycle_failed(&e.to_string());
                delay
            }
            Err(e) => {
                tracing::error!(error = %e, "probe cycle task failed");
                observer.cycle_failed(&e.to_string());
                settings.interval
            }
        };
        if ctx.stopping.load(Ordering::Relaxed) {
            break;
        }
        observer.loop_turned(next_delay);
        tokio::select! {
            _ = tokio::time::sleep(next_delay) => {}
            _ = wake.notified() => tracing::info!("probe requested; starting a cycle now"),
            _ = shutdown.changed() => {}
            _ = reloaded(&mut live) => {}
        }
    }
    ctx.stopping.store(true, Ordering::Relaxed);
    tracing::info!("probe loop stopped");
}

/// Completes when new settings arrive; never, once nobody can send any.
async fn reloaded(live: &mut watch::Receiver<LoopSettings>) {
    if live.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn log_report(r: &CycleReport) {
    let unhealthy = r.rules.iter().any(|(rule, _)| {
        !matches!(
            rule,
            crate::core::Rule::Healthy | crate::core::Rule::RetryRequested
        )
    });
    let rules: Vec<String> = r.rules.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if unhealthy || r.transitions_failed > 0 || r.messages_failed > 0 {
        tracing::info!(
            pairs = r.pairs,
            duration_ms = r.duration.as_millis() as u64,
            applied = r.transitions_applied,
            failed = r.transitions_failed,
            messages = r.messages_sent,
            messages_failed = r.messages_failed,
            rules = %rules.join(","),
            "probe cycle finished"
        );
    } else {
        tracing::debug!(
            pairs = r.pairs,
            duration_ms = r.duration.as_millis() as u64,
            "probe cycle finished, all healthy"
        );
    }
}
