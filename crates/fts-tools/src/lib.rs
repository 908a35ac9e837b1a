//! The operator-facing tools around the daemon that are not part of the product: the benchmarks
//! behind `fts-bench` (also used by `fts-demo` to start its simulator), the local demo
//! `fts-demo`, and `fts-pgpairs` (local PostgreSQL primary/standby pairs to try the `postgres`
//! driver by hand).

pub mod bench;
