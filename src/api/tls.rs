//! Server-side TLS of the API and metrics listeners, from `api.tls_cert_file`,
//! `api.tls_key_file` and `api.client_ca_file`.
//!
//! Client certificates are optional at the TLS layer (`client_auth_optional`): a caller without
//! one still connects, and [`super::auth`] decides per method whether that is enough. A
//! certificate that is presented must chain to the client CA, or the handshake fails.

use std::sync::Arc;

use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::config::ApiConfig;
use crate::tls::pem::{self, PemError};

/// A TLS handshake that has not finished by then is dropped (a client that connects and says
/// nothing must not hold a connection slot).
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The files read once, at start-up.
#[derive(Clone)]
pub struct ServerTls {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    client_ca_pem: Option<Vec<u8>>,
}

impl ServerTls {
    /// `None` when `api.tls_cert_file` is unset (plaintext listeners).
    pub fn from_config(api: &ApiConfig) -> Result<Option<ServerTls>, PemError> {
        let (Some(cert), Some(key)) = (&api.tls_cert_file, &api.tls_key_file) else {
            return Ok(None);
        };
        Ok(Some(ServerTls {
            cert_pem: pem::read_certificates(cert)?,
            key_pem: pem::read_private_key(key)?,
            client_ca_pem: api
                .client_ca_file
                .as_deref()
                .map(pem::read_certificates)
                .transpose()?,
        }))
    }

    /// For tonic's server (the gRPC API).
    pub fn tonic(&self) -> ServerTlsConfig {
        let mut tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .timeout(HANDSHAKE_TIMEOUT);
        if let Some(ca) = &self.client_ca_pem {
            tls = tls
                .client_ca_root(Certificate::from_pem(ca))
                .client_auth_optional(true);
        }
        tls
    }

    /// For the metrics endpoint: server authentication only (the metrics token is the
    /// credential there).
    pub fn rustls(&self) -> Result<Arc<rustls::ServerConfig>, String> {
        let certs = pem::certificates(&self.cert_pem)?;
        let key = pem::private_key(&self.key_pem)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| format!("api.tls_cert_file / api.tls_key_file: {e}"))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}
