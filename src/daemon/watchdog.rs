//! A leader that cannot complete its probe cycles hands office over. A catalog this instance
//! cannot reach (a half-open connection, a moved VIP, a firewall) stops every transition while
//! the lease keeps renewing; another instance may reach it. After
//! `etcd.resign_after_failed_cycles` failed cycles in a row the elector is asked to step down
//! (it revokes its lease, so the next candidate in line takes office at once); a completed
//! cycle resets the count.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use crate::election::ElectedAuthority;
use crate::engine::runner::CycleObserver;
use crate::engine::CycleReport;

pub struct CycleWatchdog {
    authority: Arc<ElectedAuthority>,
    /// 0: never hand over.
    limit: u32,
    failed_in_a_row: AtomicU32,
}

impl CycleWatchdog {
    pub fn new(authority: Arc<ElectedAuthority>, limit: u32) -> Self {
        CycleWatchdog {
            authority,
            limit,
            failed_in_a_row: AtomicU32::new(0),
        }
    }
}

impl CycleObserver for CycleWatchdog {
    fn cycle_finished(&self, _report: &CycleReport) {
        self.failed_in_a_row.store(0, Ordering::Relaxed);
    }

    fn cycle_failed(&self, error: &str) {
        // Only a leader's failures count: an observe-only instance has no office to hand over.
        if self.limit == 0 || self.authority.office().is_none() {
            self.failed_in_a_row.store(0, Ordering::Relaxed);
            return;
        }
        let failed = self.failed_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
        if failed >= self.limit {
            tracing::error!(
                failed,
                error,
                "probe cycles keep failing; handing office over to another instance"
            );
            self.failed_in_a_row.store(0, Ordering::Relaxed);
            self.authority.hand_over.notify_one();
        }
    }
}
