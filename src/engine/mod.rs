//! The imperative shell around the decision core: probe every pair with bounded concurrency,
//! retries and timeouts, feed outcomes to `core::decide_pair`, apply the resulting transitions
//! to the catalog (fenced) and only then send PROMOTE / SYNCREP_OFF.

pub mod attempts;
pub mod authority;
pub mod brake;
pub mod cycle;
pub mod evidence;
pub mod faults;
pub mod runner;

pub use crate::driver::SegmentDriver;
pub use attempts::{exchange, AttemptRecord, Exchange};
pub use authority::{Authority, SingleInstance};
pub use brake::{Brake, BrakeSettings, BrakeSummary};
pub use cycle::{
    run_cycle, CycleContext, CycleReport, MessageOutcome, MessageResult, PairReport, RefusalLog,
    TransitionOutcome,
};

use std::time::Duration;

/// Probe mechanics, as Greenplum's `gp_fts_probe_*` settings define them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeSettings {
    /// Per attempt: connect + startup + reply.
    pub timeout: Duration,
    /// Retries after the first attempt: `retries + 1` attempts in all.
    pub retries: u32,
    /// Pause between a failed attempt and the next.
    pub retry_delay: Duration,
    /// Attempts in flight at once across all pairs.
    pub concurrency: usize,
    /// Whose decisions to follow where the in-core FTS and `gpfts` differ.
    pub profile: crate::core::Profile,
}

/// The probe settings of a [`CycleContext`]: read by the cycle, replaced by the probe loop
/// between two cycles when the configuration is reloaded. Every pair task of a cycle has
/// finished before the loop replaces them, so one cycle never mixes old and new settings.
#[derive(Debug)]
pub struct LiveProbeSettings(std::sync::RwLock<ProbeSettings>);

impl LiveProbeSettings {
    pub fn get(&self) -> ProbeSettings {
        *self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set(&self, settings: ProbeSettings) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = settings;
    }
}

impl From<ProbeSettings> for LiveProbeSettings {
    fn from(settings: ProbeSettings) -> Self {
        LiveProbeSettings(std::sync::RwLock::new(settings))
    }
}
