//! Who may act. The cycle asks before every catalog write and again before every message;
//! in single-instance mode the answer is always yes with a fixed epoch, under election it
//! comes from the etcd lease and its act-by deadline.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::model::Epoch;

pub trait Authority: Send + Sync + 'static {
    /// The epoch to fence writes with, or None when this instance must not act now
    /// (follower, lease past its act-by deadline, paused ...). Must be cheap: it is called
    /// for every transition.
    fn acting_epoch(&self) -> Option<Epoch>;

    /// Until when the epoch `acting_epoch` returns may be acted on (the act-by deadline:
    /// before the lease can have expired), or None when authority does not lapse by itself
    /// (single instance). Every PROMOTE / SYNCREP_OFF attempt must end by then.
    fn deadline(&self) -> Option<Instant> {
        None
    }

    /// A stronger check right before sending PROMOTE or SYNCREP_OFF, which the catalog fence
    /// cannot protect.
    fn confirm(&self) -> impl Future<Output = bool> + Send;

    /// The catalog rejected our epoch: someone newer has taken office.
    fn fenced_out(&self, current: Epoch);

    /// Whether to run probe cycles at all. Followers that know a live leader stand by without
    /// adding probe load; a leader that lost etcd keeps probing in observe-only mode.
    fn should_probe(&self) -> bool {
        true
    }

    /// Maintenance mode (`ftsctl pause`): probe and report, never act. An implementation that
    /// can be paused returns None from `acting_epoch` while this is true.
    fn paused(&self) -> bool {
        false
    }
}

/// `--no-election`: this instance alone acts, with a fixed epoch.
pub struct SingleInstance {
    epoch: Epoch,
    fenced: AtomicBool,
}

impl SingleInstance {
    pub fn new(epoch: Epoch) -> Self {
        SingleInstance {
            epoch,
            fenced: AtomicBool::new(false),
        }
    }
}

/// The epoch single-instance mode writes with. Any elected leader's epoch (an etcd revision)
/// is higher once a cluster has been elected once, so a forgotten `--no-election` instance is
/// fenced out rather than fighting a real leader.
pub const SINGLE_INSTANCE_EPOCH: Epoch = Epoch(1);

impl Authority for SingleInstance {
    fn acting_epoch(&self) -> Option<Epoch> {
        (!self.fenced.load(Ordering::Relaxed)).then_some(self.epoch)
    }

    async fn confirm(&self) -> bool {
        true
    }

    fn fenced_out(&self, current: Epoch) {
        self.fenced.store(true, Ordering::Relaxed);
        tracing::error!(
            mine = %self.epoch,
            %current,
            "single-instance epoch fenced out by a newer epoch in the catalog; observe-only until restarted"
        );
    }
}
