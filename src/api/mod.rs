//! The gRPC API every ftsd instance serves on `api.listen` (see `ftsd.proto` and docs/api.md),
//! with the standard health service and server reflection so `grpcurl` works unaided.
//!
//! * `state` — what the API knows: this instance's last cycle, the pause state, how to reach
//!   etcd and the catalog, whether it leads.
//! * `service` — the calls; mutating ones only on the leader, followers redirect.
//! * `convert` — model types to protobuf messages.
//! * `coordinator` — the coordinator pair's etcd records as content -1's explain and history.
//! * `limits` — bounds on what a caller may ask for.
//! * `auth` — which calls need credentials, and the layer that checks them.
//! * `tls` — the listeners' TLS settings.
//! * `client` — an authenticated client, for `ftsctl` and instance-to-instance calls.

pub mod auth;
pub mod client;
pub mod convert;
pub mod coordinator;
pub mod limits;
pub mod service;
pub mod state;
pub mod tls;

pub use state::{ApiState, Mode};

/// The generated protobuf types and gRPC stubs.
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("ftsd.v1");

    /// Encoded descriptor set of `ftsd.proto`, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/ftsd_descriptor.bin"));
}

/// Metadata key a follower puts on a refused mutating call: the leader's API address.
pub const LEADER_ADDRESS_KEY: &str = "ftsd-leader-address";

use std::net::SocketAddr;
use std::sync::Arc;

/// The address other hosts reach this instance's API at, published in the members registry
/// and in redirects: `api.listen`, with this host's name in place of an unspecified IP
/// (`0.0.0.0`, `::`).
pub fn advertised_address(listen: SocketAddr) -> String {
    if listen.ip().is_unspecified() {
        format!("{}:{}", crate::config::hostname(), listen.port())
    } else {
        listen.to_string()
    }
}

use tokio::sync::watch;

/// How the listeners are secured: TLS (when configured) and who may call what.
#[derive(Clone)]
pub struct Security {
    pub tls: Option<tls::ServerTls>,
    pub policy: auth::Policy,
}

impl Security {
    /// From `[api]`; reads the TLS files (once, at start-up).
    pub fn from_config(api: &crate::config::ApiConfig) -> Result<Self, crate::tls::pem::PemError> {
        Ok(Security {
            tls: tls::ServerTls::from_config(api)?,
            policy: auth::Policy::from_config(api),
        })
    }

    /// Plaintext, no credentials (tests and tools).
    pub fn none() -> Self {
        Security {
            tls: None,
            policy: auth::Policy::new(None, false, crate::config::ReadAuth::None),
        }
    }
}

/// Binds `addr` (a taken port fails start-up with a clear error) and serves the API, health
/// and reflection until `shutdown` turns true.
pub async fn serve(
    addr: SocketAddr,
    state: Arc<ApiState>,
    security: &Security,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let incoming = tonic::transport::server::TcpIncoming::bind(addr)?;
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<proto::fts_server::FtsServer<service::FtsService>>()
        .await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(std::io::Error::other)?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(std::io::Error::other)?;
    let fts = proto::fts_server::FtsServer::new(service::FtsService::new(state));
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &security.tls {
        builder = builder
            .tls_config(tls.tonic())
            .map_err(std::io::Error::other)?;
    }
    tracing::info!(
        %addr,
        tls = security.tls.is_some(),
        policy = ?security.policy,
        "API listening (gRPC)"
    );
    let mut builder = builder.layer(auth::AuthLayer::new(security.policy.clone()));
    Ok(tokio::spawn(async move {
        let stop = async move {
            let _ = shutdown.wait_for(|s| *s).await;
        };
        let served = builder
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(fts)
            .serve_with_incoming_shutdown(incoming, stop)
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "API server failed");
        }
    }))
}
