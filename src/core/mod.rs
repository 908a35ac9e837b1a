//! The functional core: probe outcomes plus the current configuration in, catalog transitions
//! and the next message out. Nothing here does I/O or reads a clock, so every rule of the
//! Greenplum decision table is tested directly (see `decide` tests) and by property tests.

pub mod brake;
pub mod coordinator;
pub mod decide;
pub mod epoch;
pub mod outcome;
pub mod profile;
pub mod shadow;
pub mod switchover;
pub mod transition;

pub use decide::{
    confirm_failover, decide_pair, failover_shape, plan_cycle, Decision, FailoverGuard,
    MirrorCheck, Refusal, Rule,
};
pub use outcome::{failure_kind, reply_wants_retry, restart_state, ProbeOutcome, RestartState};
pub use profile::{apply_profile, decide_lone_primary, Profile};
pub use transition::{NextMessage, RowUpdate};
