//! PEM files read and checked up front. Files are read once (at start-up, or when `ftsctl`
//! starts), so a certificate rotated on disk later cannot half-apply; a file that holds no
//! certificate or no private key is refused with the file named, rather than failing the first
//! handshake minutes later.

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why a PEM file was refused; `problem` (and `Display`) names the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{problem}")]
pub struct PemError {
    pub path: String,
    pub problem: String,
}

fn error(path: &Path, problem: impl std::fmt::Display) -> PemError {
    PemError {
        path: path.display().to_string(),
        problem: format!("{} {problem}", path.display()),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, PemError> {
    std::fs::read(path).map_err(|e| {
        let text = e.to_string();
        let reason = text.split(" (os error").next().unwrap_or(&text).to_owned();
        PemError {
            path: path.display().to_string(),
            problem: format!("cannot read {}: {reason}", path.display()),
        }
    })
}

/// The certificates in `pem` (one at least).
pub fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a valid PEM certificate file ({e})"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    Ok(certs)
}

/// The private key in `pem` (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            "holds no PEM private key (-----BEGIN PRIVATE KEY-----)".to_owned()
        }
        e => format!("not a valid PEM private key file ({e})"),
    })
}

/// A certificate file's bytes, checked to hold at least one certificate.
pub fn read_certificates(path: &Path) -> Result<Vec<u8>, PemError> {
    let pem = read(path)?;
    certificates(&pem).map_err(|p| error(path, p))?;
    Ok(pem)
}

/// A key file's bytes, checked to hold a private key.
pub fn read_private_key(path: &Path) -> Result<Vec<u8>, PemError> {
    let pem = read(path)?;
    private_key(&pem).map_err(|p| error(path, p))?;
    Ok(pem)
}

#[cfg(test)]
mod tests;
