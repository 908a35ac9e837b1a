//! ftsd: an external, highly available fault tolerance service for Greenplum / Cloudberry-style
//! MPP clusters. See README.md for the architecture.

pub mod model;
pub mod testkit;
pub mod wire;
