//! Benchmarks behind `fts-bench` (see docs/performance.md): a probe cycle against
//! `fts-segsim` next to a bare-protocol baseline, leader takeover after kill -9, and the
//! failover of real PostgreSQL pairs (a segment pair, by one or several (quorum) instances;
//! the coordinator pair behind a VIP).
//! Figures come from running processes, never from timing assertions in tests.

pub mod baseline;
pub mod coordinator_failover;
pub mod measure;
pub mod pg_failover;
pub mod pg_quorum;
pub mod probe;
pub mod takeover;
