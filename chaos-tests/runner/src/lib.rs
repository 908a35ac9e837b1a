//! The chaos harness behind `fts-chaos` and `chaos-tests/run`: the whole system in containers
//! (3 etcd, a catalog PostgreSQL, fts-segsim, real PostgreSQL primary/standby pairs, a
//! coordinator pair with its VIP, 3 FTS hosts), faults injected with the `docker` CLI, and a checker that proves the invariants from
//! what was recorded. Everything that needs Docker lives behind `fts-chaos run`; the checker and
//! report are pure and unit-tested in the normal test suite.

pub mod cbdb;
pub mod cluster;
pub mod coordinator;
pub mod docker;
pub mod harness;
pub mod history;
pub mod invariants;
pub mod observer_faults;
pub mod report;
pub mod rng;
pub mod run;
pub mod runtime_faults;
pub mod scenario;
pub mod summary;
pub mod workload;
