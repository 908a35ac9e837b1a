//! ftsd: an external, highly available fault tolerance service for Greenplum / Cloudberry-style
//! MPP clusters. See README.md for the architecture.

pub mod api;
pub mod catalog;
pub mod config;
pub mod coordinator;
pub mod core;
pub mod ctl;
pub mod daemon;
pub mod driver;
pub mod election;
pub mod engine;
pub mod error_chain;
pub mod etcd_conn;
pub mod etcd_history;
pub mod gpfts;
pub mod hooks;
pub mod metrics;
pub mod model;
pub mod preflight;
pub mod secret;
pub mod shadow;
pub mod switchover;
pub mod tls;
pub mod wire;
