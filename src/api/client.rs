//! An authenticated client of the API: the one way to open a channel to an ftsd instance, used
//! by `ftsctl` and by instance-to-instance calls (which take their credentials from the
//! daemon's own `[api]` configuration through [`Credentials::for_instance`]).

use std::time::Duration;

use tonic::metadata::AsciiMetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Status};

use super::proto::fts_client::FtsClient;
use crate::config::{ApiConfig, Secret};
use crate::tls::pem::{self, PemError};

/// A connected, authenticated API client.
pub type ApiClient = FtsClient<InterceptedService<Channel, BearerToken>>;

/// What a client presents and trusts. PEM contents, read once.
#[derive(Clone, Default)]
pub struct Credentials {
    /// CA the server's certificate must chain to; set: TLS (`https`) for host:port addresses.
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate and key (mTLS).
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    pub token: Option<Secret>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("tls", &self.ca_pem.is_some())
            .field("client_certificate", &self.identity.is_some())
            .field("token", &self.token.is_some())
            .finish()
    }
}

impl Credentials {
    /// The daemon's credentials for calling another instance: its own certificate as the
    /// client certificate, `api.client_ca_file` (the CA of the instances' certificates) to
    /// verify the peer, and the API token. Every instance of a cluster accepts what it
    /// presents itself, so these are "the same credentials" operators give `ftsctl`.
    pub fn for_instance(api: &ApiConfig) -> Result<Credentials, PemError> {
        let identity = match (&api.tls_cert_file, &api.tls_key_file) {
            (Some(cert), Some(key)) => {
                Some((pem::read_certificates(cert)?, pem::read_private_key(key)?))
            }
            _ => None,
        };
        let ca_pem = api
            .client_ca_file
            .as_deref()
            .map(pem::read_certificates)
            .transpose()?;
        Ok(Credentials {
            ca_pem,
            identity,
            token: api.token.clone(),
        })
    }

    /// Whether an address without a scheme is reached over TLS.
    pub fn tls(&self) -> bool {
        self.ca_pem.is_some()
    }

    /// `address` as a URL: a `host:port` gets `https://` when a CA is configured.
    pub fn url(&self, address: &str) -> String {
        if address.contains("://") {
            address.to_owned()
        } else if self.tls() {
            format!("https://{address}")
        } else {
            format!("http://{address}")
        }
    }

    /// The endpoint for `address` with TLS configured, not yet connected.
    pub fn endpoint(&self, address: &str, timeout: Duration) -> Result<Endpoint, String> {
        let url = self.url(address);
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| format!("invalid endpoint {address:?}: {e}"))?
            .connect_timeout(timeout);
        if url.starts_with("https://") {
            let Some(ca) = &self.ca_pem else {
                return Err(format!(
                    "{address}: https needs the CA that signed the server's certificate \
                     (--cacert)"
                ));
            };
            let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
            if let Some((cert, key)) = &self.identity {
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| format!("{address}: TLS settings: {e}"))?;
        }
        Ok(endpoint)
    }

    /// Connects to `address` (`host:port` or a URL) within `timeout`.
    pub async fn connect(&self, address: &str, timeout: Duration) -> Result<ApiClient, String> {
        let endpoint = self.endpoint(address, timeout)?;
        let channel = match tokio::time::timeout(timeout, endpoint.connect()).await {
            Ok(Ok(channel)) => channel,
            Ok(Err(e)) => return Err(format!("{address}: {}", crate::error_chain::one_line(&e))),
            Err(_) => {
                return Err(format!(
                    "{address}: timed out after {}",
                    humantime::format_duration(timeout)
                ))
            }
        };
        let token = match &self.token {
            Some(t) => Some(
                AsciiMetadataValue::try_from(format!("Bearer {}", t.expose()))
                    .map_err(|_| "the token is not printable ASCII".to_owned())?,
            ),
            None => None,
        };
        Ok(FtsClient::with_interceptor(channel, BearerToken(token)))
    }
}

/// Adds `authorization: Bearer <token>` to every call (when a token is configured).
#[derive(Clone)]
pub struct BearerToken(Option<AsciiMetadataValue>);

impl Interceptor for BearerToken {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// Why a TLS connection to `address` is refused after the handshake, if it is: with TLS 1.3 a
/// server checks the client certificate only after the client has finished its side, so an
/// untrusted certificate surfaces as a connection closed under the first call, without a
/// reason. This opens one connection of its own and reads the server's alert.
pub async fn refused_certificate(credentials: &Credentials, address: &str) -> Option<String> {
    use tokio::io::AsyncReadExt;

    let ca = credentials.ca_pem.as_ref()?;
    let (cert, key) = credentials.identity.as_ref()?;
    let mut roots = rustls::RootCertStore::empty();
    for c in pem::certificates(ca).ok()? {
        roots.add(c).ok()?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_client_auth_cert(pem::certificates(cert).ok()?, pem::private_key(key).ok()?)
        .ok()?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    let authority = address.rsplit_once("://").map_or(address, |(_, a)| a);
    let (host, _) = authority.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = rustls_pki_types::ServerName::try_from(host.to_owned()).ok()?;
    let tcp = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(authority),
    )
    .await
    .ok()?
    .ok()?;
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let mut tls = match connector.connect(name, tcp).await {
        Ok(tls) => tls,
        Err(e) => return alert(&e),
    };
    let mut buf = [0u8; 1];
    match tokio::time::timeout(Duration::from_secs(2), tls.read(&mut buf)).await {
        Ok(Err(e)) => alert(&e),
        _ => None,
    }
}

/// The text of a TLS alert about certificates in `e`.
fn alert(e: &std::io::Error) -> Option<String> {
    let inner = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    match inner {
        rustls::Error::AlertReceived(a) => Some(format!("the server sent TLS alert {a:?}")),
        rustls::Error::InvalidCertificate(c) => Some(format!("invalid certificate: {c:?}")),
        _ => None,
    }
}
