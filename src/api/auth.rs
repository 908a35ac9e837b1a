//! Who may call what on the API: one policy, applied by a tower layer in front of every gRPC
//! service before a call reaches it (docs/api.md, "Authentication").
//!
//! Every method has an [`Access`] class, decided in [`access`] alone. Only the methods listed
//! there as open or read-only are; every other path — any call added later included — is
//! mutating, so forgetting to classify a new call can only make it stricter.
//!
//! A caller is authenticated by a client certificate that the TLS layer verified against
//! `api.client_ca_file`, or by `authorization: Bearer <token>` equal to the content of
//! `api.token_file` (compared in constant time). With no credential configured at all,
//! mutating calls are accepted only from loopback, so an API bound to a public address is
//! never an open door for `pause`.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use subtle::ConstantTimeEq;
use tonic::codegen::http;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::Status;

use crate::config::{ApiConfig, ReadAuth, Secret};

/// What a call may do, hence what it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Carries nothing worth protecting (the gRPC health check, which load balancers and
    /// service managers poll without credentials).
    Open,
    /// Reads state: needs credentials only with `api.read_auth = "required"`.
    Read,
    /// Changes what the cluster does (probe now, pause, resume, switchover, and every call not
    /// listed as open or read-only): always needs credentials.
    Mutate,
}

/// The class of a gRPC method, by its request path (`/package.Service/Method`).
pub fn access(path: &str) -> Access {
    const READ: [&str; 6] = [
        "/ftsd.v1.Fts/Status",
        "/ftsd.v1.Fts/Segments",
        "/ftsd.v1.Fts/History",
        "/ftsd.v1.Fts/Explain",
        // Shadow mode's record: read-only, the shadow changes nothing anyway.
        "/ftsd.v1.Fts/Shadow",
        // The brake's record; releasing it (`BrakeRelease`) is mutating.
        "/ftsd.v1.Fts/BrakeStatus",
    ];
    if path.starts_with("/grpc.health.v1.Health/") {
        Access::Open
    } else if READ.contains(&path) || path.starts_with("/grpc.reflection.") {
        Access::Read
    } else {
        Access::Mutate
    }
}

/// The credentials a request presented (already verified where a TLS layer did that).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented {
    /// A client certificate the server's TLS layer verified against `api.client_ca_file`.
    ClientCertificate,
    /// The configured bearer token.
    Token,
    /// A bearer token that is not the configured one.
    WrongToken,
    Nothing,
}

/// The configured credentials.
#[derive(Clone)]
pub struct Policy {
    token: Option<Secret>,
    client_certificates: bool,
    read_auth: ReadAuth,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("token", &self.token.is_some())
            .field("client_certificates", &self.client_certificates)
            .field("read_auth", &self.read_auth)
            .finish()
    }
}

/// The message of a refused call; `ftsctl` maps UNAUTHENTICATED to its exit code 5.
const NEEDS_CREDENTIALS: &str = "requires authentication: pass --token-file or --cert/--key";

impl Policy {
    pub fn new(token: Option<Secret>, client_certificates: bool, read_auth: ReadAuth) -> Self {
        Policy {
            token,
            client_certificates,
            read_auth,
        }
    }

    pub fn from_config(api: &ApiConfig) -> Self {
        Policy::new(
            api.token.clone(),
            api.client_ca_file.is_some() && api.tls_cert_file.is_some(),
            api.read_auth,
        )
    }

    /// Whether any credential is configured.
    pub fn has_credentials(&self) -> bool {
        self.token.is_some() || self.client_certificates
    }

    /// The verdict on a call to `path` from `peer` presenting `presented`.
    pub fn check(
        &self,
        path: &str,
        presented: Presented,
        peer: Option<SocketAddr>,
    ) -> Result<(), Status> {
        let needs = match access(path) {
            Access::Open => false,
            Access::Read => self.read_auth == ReadAuth::Required,
            Access::Mutate => true,
        };
        if presented == Presented::WrongToken {
            // Refused even where no credential is needed: a wrong token is a misconfigured
            // client, better told now than when it first tries to pause.
            return Err(Status::unauthenticated(
                "invalid bearer token (not the server's api.token_file)",
            ));
        }
        if !needs {
            return Ok(());
        }
        if !self.has_credentials() {
            // Nothing to check against: only a caller on this host may change anything.
            if peer.is_some_and(|p| p.ip().is_loopback()) {
                return Ok(());
            }
            return Err(Status::unauthenticated(format!(
                "{path} {NEEDS_CREDENTIALS} (this server has none configured: set \
                 api.token_file or api.client_ca_file; until then it accepts mutating calls \
                 from loopback only)"
            )));
        }
        match presented {
            Presented::ClientCertificate | Presented::Token => Ok(()),
            Presented::WrongToken | Presented::Nothing => Err(Status::unauthenticated(format!(
                "{path} {NEEDS_CREDENTIALS}"
            ))),
        }
    }

    /// What a request presented: a verified client certificate, else its bearer token.
    pub fn presented<B>(&self, req: &http::Request<B>) -> Presented {
        let ext = req.extensions();
        let has_cert = ext
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(TlsConnectInfo::peer_certs)
            .is_some_and(|certs| !certs.is_empty());
        if has_cert && self.client_certificates {
            return Presented::ClientCertificate;
        }
        let Some(value) = req.headers().get(http::header::AUTHORIZATION) else {
            return Presented::Nothing;
        };
        let given = value
            .as_bytes()
            .strip_prefix(b"Bearer ")
            .map(<[u8]>::trim_ascii);
        match (&self.token, given) {
            (Some(token), Some(given)) if bool::from(token.expose().as_bytes().ct_eq(given)) => {
                Presented::Token
            }
            _ => Presented::WrongToken,
        }
    }
}

/// The peer's address, from tonic's connection info (plain TCP or TLS).
fn peer<B>(req: &http::Request<B>) -> Option<SocketAddr> {
    let ext = req.extensions();
    ext.get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            ext.get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|i| i.get_ref().remote_addr())
        })
}

/// The tower layer for `tonic::transport::Server::builder().layer(…)`.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    policy: Arc<Policy>,
}

impl AuthLayer {
    pub fn new(policy: Policy) -> Self {
        AuthLayer {
            policy: Arc::new(policy),
        }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            policy: self.policy.clone(),
        }
    }
}

/// The service [`AuthLayer`] wraps around the routes.
#[derive(Debug, Clone)]
pub struct Auth<S> {
    inner: S,
    policy: Arc<Policy>,
}

impl<S, B> tower_service::Service<http::Request<B>> for Auth<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path().to_owned();
        let presented = self.policy.presented(&req);
        match self.policy.check(&path, presented, peer(&req)) {
            Ok(()) => Box::pin(self.inner.call(req)),
            Err(status) => {
                tracing::warn!(
                    method = %path,
                    peer = ?peer(&req),
                    reason = %status.message(),
                    "API call refused"
                );
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests;
