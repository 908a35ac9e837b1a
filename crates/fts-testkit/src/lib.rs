//! Test support that runs real components instead of mocks.
//!
//! A crate of its own (not only a module under `tests/`) because the demo and the benchmark start
//! the same throwaway servers; the daemon never depends on it.
//!
//! * [`pg::PgServer`]: a throwaway PostgreSQL server on a free loopback port, in a temporary
//!   directory, killed and removed on drop.
//! * [`etcd::EtcdCluster`]: a throwaway etcd cluster (1, 3 or N members) on free loopback ports,
//!   with kill / stop / restart / pause / resume per member, killed and removed on drop;
//!   optionally with TLS and client-certificate authentication on the client port.
//! * [`pki::Pki`]: a throwaway CA with server and client certificates (by `etcd/make-certs`).
//! * [`netns::Lan`]: a throwaway LAN of network namespaces ("hosts") joined to this one
//!   (root only), and [`vipnet::CoordinatorLan`]: a coordinator pair on two such hosts with
//!   `ftsd vip-agent` moving a virtual IP between them.
//!
//! Servers are direct children started with a parent-death signal from one shared spawner
//! thread, so they die with the test process even when no `Drop` runs.

pub mod etcd;
pub mod localpairs;
pub mod netns;
pub mod pg;
pub mod pgpair;
pub mod pki;
mod process;
pub mod vipnet;
