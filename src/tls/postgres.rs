//! TLS for PostgreSQL connections (the catalog and the `postgres` driver's segment
//! connections), with `sslmode`-style settings:
//!
//! * `disable` — plaintext.
//! * `require` — encrypted, but the server's certificate is **not** verified: it protects
//!   against someone reading the traffic, not against someone in the middle who answers in the
//!   server's place. A CA file is refused with this mode rather than silently ignored.
//! * `verify-full` — encrypted, and the server's certificate must chain to the configured CA
//!   and name the host connected to (DNS name or IP address, as written in the connection
//!   settings).
//!
//! Either TLS mode can present a client certificate (for `clientcert=verify-ca|verify-full` or
//! the `cert` method in `pg_hba.conf`). The rustls connector is the one every TLS connection
//! of ftsd uses (ring provider).

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::pem::{self, PemError};

/// `catalog.sslmode`, `postgres.sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Require,
    VerifyFull,
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Require => "require",
            SslMode::VerifyFull => "verify-full",
        }
    }

    pub fn parse(s: &str) -> Option<SslMode> {
        match s {
            "disable" => Some(SslMode::Disable),
            "require" => Some(SslMode::Require),
            "verify-full" => Some(SslMode::VerifyFull),
            _ => None,
        }
    }
}

/// The TLS settings of one kind of connection, as configured (paths).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTlsSettings {
    pub mode: SslMode,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl Default for PgTlsSettings {
    fn default() -> Self {
        PgTlsSettings {
            mode: SslMode::Disable,
            ca_file: None,
            cert_file: None,
            key_file: None,
        }
    }
}

/// A ready connector: the files read and checked once.
#[derive(Clone)]
pub struct PgTls {
    mode: SslMode,
    connector: MakeRustlsConnect,
}

impl std::fmt::Debug for PgTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTls").field("mode", &self.mode).finish()
    }
}

impl Default for PgTls {
    /// Plaintext.
    fn default() -> Self {
        PgTls::new(&PgTlsSettings::default()).expect("plaintext needs no files")
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl PgTls {
    /// Reads the files of `settings`. Errors name the file.
    pub fn new(settings: &PgTlsSettings) -> Result<PgTls, PemError> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default protocol versions");
        let builder = match (settings.mode, &settings.ca_file) {
            (SslMode::VerifyFull, Some(ca)) => {
                let pem_bytes = pem::read_certificates(ca)?;
                let mut roots = RootCertStore::empty();
                for cert in pem::certificates(&pem_bytes).map_err(|p| PemError {
                    path: ca.display().to_string(),
                    problem: p,
                })? {
                    roots.add(cert).map_err(|e| PemError {
                        path: ca.display().to_string(),
                        problem: format!("{}: not a usable CA certificate: {e}", ca.display()),
                    })?;
                }
                builder.with_root_certificates(roots)
            }
            // verify-full without a CA is refused by validation; an empty root store makes
            // every handshake fail rather than trust anything.
            (SslMode::VerifyFull, None) => builder.with_root_certificates(RootCertStore::empty()),
            _ => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoServerVerification(provider()))),
        };
        let config = match (&settings.cert_file, &settings.key_file) {
            (Some(cert), Some(key)) => {
                let cert_pem = pem::read_certificates(cert)?;
                let key_pem = pem::read_private_key(key)?;
                let chain = pem::certificates(&cert_pem).map_err(|p| PemError {
                    path: cert.display().to_string(),
                    problem: p,
                })?;
                let key_der = pem::private_key(&key_pem).map_err(|p| PemError {
                    path: key.display().to_string(),
                    problem: p,
                })?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| PemError {
                        path: key.display().to_string(),
                        problem: format!(
                            "{} does not go with {}: {e}",
                            key.display(),
                            cert.display()
                        ),
                    })?
            }
            _ => builder.with_no_client_auth(),
        };
        Ok(PgTls {
            mode: settings.mode,
            connector: MakeRustlsConnect::new(config),
        })
    }

    /// `new`, or — when a file cannot be read any more (it was checked when the configuration
    /// was loaded) — a connector that fails every TLS handshake, logged with the file: never
    /// a silent fall-back to less protection than configured.
    pub fn or_fail_closed(settings: &PgTlsSettings, what: &str) -> PgTls {
        PgTls::new(settings).unwrap_or_else(|e| {
            tracing::error!(connection = what, error = %e, "TLS settings unusable; every connection will fail");
            let config = ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .expect("the ring provider supports the default protocol versions")
                .with_root_certificates(RootCertStore::empty())
                .with_no_client_auth();
            PgTls {
                // Never plaintext, even if plaintext was configured: something is wrong.
                mode: if settings.mode == SslMode::Disable {
                    SslMode::VerifyFull
                } else {
                    settings.mode
                },
                connector: MakeRustlsConnect::new(config),
            }
        })
    }

    pub fn mode(&self) -> SslMode {
        self.mode
    }

    /// Sets tokio-postgres's own `sslmode` (which only knows whether to ask for TLS; the
    /// verification is this connector's).
    pub fn apply(&self, cfg: &mut tokio_postgres::Config) {
        cfg.ssl_mode(match self.mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Require | SslMode::VerifyFull => tokio_postgres::config::SslMode::Require,
        });
    }

    /// The connector to pass to `tokio_postgres::Config::connect`.
    pub fn connector(&self) -> MakeRustlsConnect {
        self.connector.clone()
    }
}

/// `require`: any server certificate is accepted, but the handshake's signatures are still
/// checked against the certificate presented (the session is encrypted to whoever holds its
/// key).
#[derive(Debug)]
struct NoServerVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoServerVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
