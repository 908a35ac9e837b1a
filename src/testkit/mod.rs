//! Test support that runs real components instead of mocks.
//!
//! This lives in the library (not only under `tests/`) because the demo and the benchmark start
//! the same throwaway servers. Nothing in here is used by the daemon itself.
//!
//! * [`pg::PgServer`]: a throwaway PostgreSQL server on a free loopback port, in a temporary
//!   directory, killed and removed on drop.

pub mod pg;
