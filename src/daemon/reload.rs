//! Configuration reload on SIGHUP (`systemctl reload ftsd`): the file is read again as at
//! start (file, environment, flags); [`crate::config::reload::diff`] decides what takes
//! effect; this shell applies it — the probe settings through the loop's `watch` channel
//! (taken before the next cycle), the hooks and the log level at once — and logs and counts
//! the outcome. A file that fails validation changes nothing.

use std::sync::Arc;

use tokio::signal::unix::Signal;
use tokio::sync::watch;

use super::process::LogFilter;
use super::settings;
use crate::config::reload::diff;
use crate::config::{Config, ConfigError};
use crate::engine::runner::LoopSettings;
use crate::hooks::Hooks;
use crate::metrics::Metrics;

/// How the daemon reloads: where the configuration comes from and the log filter to adjust.
pub struct Reload {
    /// Loads the configuration as at start.
    pub load: Box<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>,
    /// The global subscriber's filter (None: leave logging alone, e.g. in-process tests).
    pub log: Option<LogFilter>,
}

/// A reload source with its SIGHUP handler already installed: installed when the daemon
/// starts, so a SIGHUP during start-up (etcd, catalog, listeners) waits instead of killing
/// the process with the signal's default action.
pub struct Armed {
    reload: Reload,
    hangup: Signal,
}

impl Reload {
    pub fn arm(self) -> std::io::Result<Armed> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Armed {
            reload: self,
            hangup: signal(SignalKind::hangup())?,
        })
    }
}

/// What a reload changes in the running daemon.
pub struct Targets {
    pub live: watch::Sender<LoopSettings>,
    pub hooks: Hooks,
    pub metrics: Arc<Metrics>,
    /// Shadow mode runs without hooks whatever the file says.
    pub without_hooks: bool,
}

impl Armed {
    /// Reloads on every SIGHUP, starting from `running`, until the task is dropped.
    pub async fn follow(mut self, mut running: Config, targets: Targets) {
        while self.hangup.recv().await.is_some() {
            running = reload_once(&self.reload, running, &targets);
        }
    }
}

/// One reload; returns the configuration now running.
fn reload_once(reload: &Reload, running: Config, targets: &Targets) -> Config {
    let mut new = match (reload.load)() {
        Ok(cfg) => cfg,
        Err(e) => {
            tracing::error!(
                error = %e,
                "configuration reload refused: the new configuration is invalid; keeping the whole running configuration"
            );
            targets.metrics.config_reloaded("invalid");
            return running;
        }
    };
    if targets.without_hooks {
        new.hooks.on_transition = Vec::new();
        new.hooks.on_leader_change = Vec::new();
    }
    let plan = diff(&running, &new);
    let result = plan.result();
    if !plan.refused_keys.is_empty() {
        tracing::warn!(
            keys = %plan.refused_keys.join(", "),
            "configuration reload: changed keys need a restart and keep their running values: {}",
            plan.refused_keys.join(", ")
        );
    }
    let cfg = plan.apply;
    if let Some(log) = &reload.log {
        if let Err(e) = log.set(&cfg.log.level) {
            // Validation parsed the same filter, so this is not expected.
            tracing::error!(error = %e, "log.level: cannot apply the reloaded filter");
        }
    }
    targets.hooks.reconfigure(
        cfg.hooks.on_transition.clone(),
        cfg.hooks.on_leader_change.clone(),
        cfg.hooks.timeout,
    );
    // Only a change wakes the probe loop (it starts the next cycle at once).
    let loop_settings = settings::loop_settings(&cfg);
    targets.live.send_if_modified(|current| {
        let changed = *current != loop_settings;
        *current = loop_settings;
        changed
    });
    tracing::info!(
        applied = %plan.applied_keys.join(", "),
        "configuration reloaded; changed keys applied: {}",
        if plan.applied_keys.is_empty() {
            "none".to_string()
        } else {
            plan.applied_keys.join(", ")
        }
    );
    targets.metrics.config_reloaded(result);
    cfg
}
