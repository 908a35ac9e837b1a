//! Epochs that stay monotonic across an etcd rebuild, and the pure rule a claim follows.
//!
//! An epoch is one `i64` (the fence compares it with `<=`) made of a **generation** (high bits)
//! and the leader key's etcd create **revision** (low [`REVISION_BITS`] bits). Within one etcd
//! the generation stays and revisions only grow. A rebuilt or restored etcd starts its
//! revisions low again; its first leader then finds a recorded epoch whose revision is above
//! its own and moves to the next generation, which outranks every epoch of the old etcd.
//!
//! Why a stale leader cannot do the same: every elected claim is made holding the fence row
//! lock after confirming in etcd (a linearizable request) that the claimer's leader key is
//! still its own, and moving to the next generation is allowed only when etcd's current
//! revision is below the recorded one. Revisions of one etcd never go backwards, so an etcd whose current revision
//! is below a recorded revision cannot have produced that epoch: the recorded epoch belongs to
//! an older etcd. A deposed leader of the *same* etcd fails the check (its key is gone, and
//! the current revision is at least its successor's), and a leader of the old etcd cannot
//! confirm a key in the new one. Because the check runs under the row lock, no claim can be
//! recorded between the check and the bump. Without etcd (`--no-election`) nothing is
//! confirmed, so such claims stay in generation 0, below every epoch of a rebuilt etcd.

use crate::model::Epoch;

/// Bits of an epoch that hold the revision: 2^44 ≈ 1.7e13 revisions per generation, 2^19
/// generations.
pub const REVISION_BITS: u32 = 44;
const REVISION_MASK: i64 = (1 << REVISION_BITS) - 1;

/// The epoch of `revision` in `generation`.
pub fn compose(generation: i64, revision: i64) -> Epoch {
    Epoch((generation << REVISION_BITS) | (revision & REVISION_MASK))
}

pub fn generation(epoch: Epoch) -> i64 {
    epoch.0 >> REVISION_BITS
}

pub fn revision(epoch: Epoch) -> i64 {
    epoch.0 & REVISION_MASK
}

/// What a claim does with the recorded epoch and its own revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimPlan {
    /// Record this epoch.
    Claim(Epoch),
    /// A newer leader holds the fence.
    Fenced,
}

/// The claim rule. `etcd_revision` is etcd's current revision, read after confirming that
/// our leader key is still ours; None without etcd (`--no-election`), whose claims stay in
/// generation 0 so they never outrank an elected epoch.
pub fn plan_claim(recorded: Epoch, own_revision: i64, etcd_revision: Option<i64>) -> ClaimPlan {
    let Some(now) = etcd_revision else {
        let plain = compose(0, own_revision);
        return if plain >= recorded {
            ClaimPlan::Claim(plain)
        } else {
            ClaimPlan::Fenced
        };
    };
    let same_generation = compose(generation(recorded), own_revision);
    if same_generation >= recorded {
        ClaimPlan::Claim(same_generation)
    } else if now < revision(recorded) {
        ClaimPlan::Claim(compose(generation(recorded) + 1, own_revision))
    } else {
        ClaimPlan::Fenced
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generation_zero_is_the_plain_revision() {
        // catalogs written before generations existed hold plain revisions
        assert_eq!(compose(0, 1234), Epoch(1234));
        assert_eq!((generation(Epoch(1234)), revision(Epoch(1234))), (0, 1234));
    }

    #[test]
    fn claim_table() {
        let rec = compose(2, 500);
        for (own, etcd, want) in [
            // a later leader of the same etcd
            (600, Some(700), ClaimPlan::Claim(compose(2, 600))),
            (500, Some(500), ClaimPlan::Claim(compose(2, 500))),
            // etcd's revision is below the recorded one: a rebuilt etcd, next generation
            (40, Some(41), ClaimPlan::Claim(compose(3, 40))),
            (40, Some(499), ClaimPlan::Claim(compose(3, 40))),
            // etcd has been past the recorded revision: a deposed leader of this etcd
            (40, Some(500), ClaimPlan::Fenced),
            (40, Some(9000), ClaimPlan::Fenced),
            // without etcd only generation 0 can be claimed, whatever the revision
            (600, None, ClaimPlan::Fenced),
            (1, None, ClaimPlan::Fenced),
        ] {
            assert_eq!(plan_claim(rec, own, etcd), want, "own {own}, etcd {etcd:?}");
        }
        // the single instance (revision 1) on a fresh catalog, and next to an elected one
        assert_eq!(plan_claim(Epoch(0), 1, None), ClaimPlan::Claim(Epoch(1)));
        assert_eq!(plan_claim(Epoch(57), 1, None), ClaimPlan::Fenced);
    }

    proptest! {
        /// Whatever is claimed outranks the recorded epoch, so the fence `epoch <= $mine`
        /// admits it and rejects everything recorded before.
        #[test]
        fn a_claim_never_goes_below_the_record(
            generation in 0i64..1000,
            recorded_rev in 1i64..1_000_000,
            own in 1i64..1_000_000,
            etcd in proptest::option::of(1i64..1_000_000),
        ) {
            let recorded = compose(generation, recorded_rev);
            if let ClaimPlan::Claim(e) = plan_claim(recorded, own, etcd) {
                prop_assert!(e >= recorded);
                prop_assert_eq!(revision(e), own);
            }
        }

        /// A deposed leader of the etcd that produced the record (its etcd has reached at
        /// least the recorded revision) never claims.
        #[test]
        fn a_deposed_leader_of_the_same_etcd_is_fenced(
            generation in 0i64..1000,
            recorded_rev in 2i64..1_000_000,
            below in 1i64..1_000_000,
            ahead in 0i64..1_000_000,
        ) {
            let own = below.min(recorded_rev - 1);
            let recorded = compose(generation, recorded_rev);
            prop_assert_eq!(
                plan_claim(recorded, own, Some(recorded_rev + ahead)),
                ClaimPlan::Fenced
            );
        }
    }
}
