//! TLS for the listeners that serve it — the HTTP listener (ingest and the
//! API) and syslog/GELF/Fluent listeners with `protocol = "tls"`:
//! certificate chain and key from PEM files, reloadable in place.
//!
//! Each listener's [`Certificates`] is the rustls certificate resolver of
//! its server configuration, so a reload ([`reload_all`], on SIGHUP) changes
//! what new handshakes get while every open connection keeps the session
//! it has — nothing is dropped, as with nginx's reload. A reload that fails
//! (a missing file, a key that does not match) keeps the certificate in use
//! and says why.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, Weak};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("reading certificate {}: {source}", path.display())]
    ReadCertificate {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("parsing certificate {}: {source}", path.display())]
    ParseCertificate {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("no certificate in {}", .0.display())]
    NoCertificate(PathBuf),
    #[error("reading private key {}: {source}", path.display())]
    ReadKey {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("certificate and key do not match: {0}")]
    Mismatch(rustls::Error),
    #[error("TLS protocol versions: {0}")]
    Versions(rustls::Error),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsSetupError> {
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|source| TlsSetupError::ReadCertificate {
            path: cert.to_path_buf(),
            source,
        })?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsSetupError::ParseCertificate {
            path: cert.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsSetupError::NoCertificate(cert.to_path_buf()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsSetupError::ReadKey {
        path: key.to_path_buf(),
        source,
    })?;
    CertifiedKey::from_der(certs, key, &provider()).map_err(TlsSetupError::Mismatch)
}

/// A listener's certificate and key, and the files they come from.
#[derive(Debug)]
pub struct Certificates {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

/// Every listener's certificates in this process, for [`reload_all`] (weak:
/// a listener that stopped is forgotten).
static LOADED: Mutex<Vec<Weak<Certificates>>> = Mutex::new(Vec::new());

impl Certificates {
    /// Loads the files now (an error here stops the listener from starting).
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Self>, TlsSetupError> {
        let loaded = Arc::new(Self {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(Arc::new(load(cert, key)?)),
        });
        let mut all = LOADED.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|c| c.strong_count() > 0);
        all.push(Arc::downgrade(&loaded));
        Ok(loaded)
    }

    /// Reads the files again; on failure the certificate in use stays.
    pub fn reload(&self) -> Result<(), TlsSetupError> {
        let fresh = Arc::new(load(&self.cert, &self.key)?);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    /// A server configuration presenting these certificates (ALPN as
    /// given: `h2` and `http/1.1` for HTTP, none for log streams).
    pub fn server_config(
        self: &Arc<Self>,
        alpn: &[&[u8]],
    ) -> Result<rustls::ServerConfig, TlsSetupError> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsSetupError::Versions)?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

/// Reloads every listener's certificates (SIGHUP): each certificate file
/// with what became of it.
pub fn reload_all() -> Vec<(PathBuf, Result<(), TlsSetupError>)> {
    let all: Vec<Arc<Certificates>> = LOADED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter_map(Weak::upgrade)
        .collect();
    all.iter().map(|c| (c.cert.clone(), c.reload())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_are_named() {
        let err = Certificates::load(Path::new("/nonexistent/cert.pem"), Path::new("/x"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/cert.pem"), "{err}");
    }
}
