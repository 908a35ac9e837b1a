//! TLS material shared by every connection ftsd secures: the API and metrics listeners, API
//! clients (`ftsctl`, instance-to-instance calls), etcd, and PostgreSQL (catalog and the
//! `postgres` driver).
//!
//! * `pem` — reading certificate and key files once, checked, with errors that name the file.
//! * `listener` — a TLS listener for the metrics endpoint.

pub mod listener;
pub mod pem;
