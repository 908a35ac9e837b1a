//! Leader election through etcd leases (v3 election API), and the authority it grants.
//!
//! * `connect` — etcd client options: endpoints with failover, TLS, user/password, and the
//!   "require leader" metadata so a member cut off from quorum fails calls instead of hanging.
//! * `keeper` — the lease keepalive loop on its own OS thread, runtime and connection, so no
//!   probe cycle can delay it; it publishes the **act-by deadline** (send time of the last
//!   acknowledged keepalive + TTL − margin, on the monotonic clock).
//! * `elector` — campaign, verify the own key after Campaign returns, take office (the epoch is
//!   the leader key's create revision), watch for loss, resign on shutdown.
//! * `authority` — what the probe cycle asks before every write and message.
//! * `pause` — the maintenance-mode key every leader honours.
//! * `members` — the `<prefix>/<cluster>/members/<id>` registry bound to the lease.

pub mod authority;
pub mod brake;
pub mod connect;
pub mod elector;
pub mod keeper;
pub mod keys;
pub mod members;
pub mod pause;

pub use authority::{ElectedAuthority, Leadership, OfficeEvent, StepDownReason};
pub use connect::EtcdOptions;
pub use elector::{run_elector, ElectorSettings};
