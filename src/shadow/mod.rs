//! Shadow mode (`ftsd run --shadow`): probe and decide exactly as the leader would, act on
//! nothing, and compare with what the incumbent FTS (Greenplum's in-core FTS, `gpfts`, or
//! another ftsd) actually does. How an operator earns trust before switching.
//!
//! A shadow instance is assembled from parts that cannot act, rather than from acting parts
//! told not to:
//!
//! * [`ShadowAuthority`] never holds an epoch, so the cycle never reaches a write or a message;
//!   the instance never campaigns, claims an epoch or registers as a member;
//! * [`ShadowCatalog`] only reads: it has no write path, and its `claim_epoch`/`apply` refuse;
//! * [`ShadowDriver`] only PROBEs: PROMOTE and SYNCREP_OFF are refused before any connection,
//!   and driver upkeep (fencing, restoring sync replication) is never run.
//!
//! What the incumbent does is read from the configuration itself: every cycle's read is
//! compared with the previous one ([`crate::core::shadow::Ledger`]), so the same code watches
//! `gp_segment_configuration` (in-core FTS, another ftsd) and the Cloudberry blob (`gpfts`).
//! [`ShadowBook`] keeps the verdicts (log lines, the `ftsd_shadow_transitions_total` metric,
//! `ftsctl shadow`).

pub mod authority;
pub mod book;
pub mod catalog;
pub mod driver;

pub use authority::ShadowAuthority;
pub use book::{ShadowBook, ShadowSummary};
pub use catalog::ShadowCatalog;
pub use driver::ShadowDriver;
