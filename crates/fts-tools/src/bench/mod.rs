//! Benchmarks behind `fts-bench` (see docs/performance.md): a probe cycle against
//! `fts-segsim` next to a bare-protocol baseline, and leader takeover after kill -9.
//! Figures come from running processes, never from timing assertions in tests.

pub mod baseline;
pub mod measure;
pub mod pg_failover;
pub mod probe;
pub mod takeover;
