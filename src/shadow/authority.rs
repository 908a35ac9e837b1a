//! The authority of a shadow instance: none, ever.

use crate::engine::Authority;
use crate::model::Epoch;

/// Never acts: no epoch, no confirmation, probing always.
#[derive(Debug, Default)]
pub struct ShadowAuthority;

impl Authority for ShadowAuthority {
    fn acting_epoch(&self) -> Option<Epoch> {
        None
    }

    async fn confirm(&self) -> bool {
        false
    }

    fn fenced_out(&self, _current: Epoch) {}
}
