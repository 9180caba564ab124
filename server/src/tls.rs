//! TLS through rustls when a certificate and key are configured.

use std::path::Path;
use std::sync::Arc;

use pgwire::tokio::TlsAcceptor;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;

use crate::error::{Error, Result};

pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor> {
    let pem =
        std::fs::read(cert).map_err(|e| Error::io(format!("reading {}", cert.display()), e))?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Config(format!("{}: {e}", cert.display())))?;
    if certificates.is_empty() {
        return Err(Error::Config(format!(
            "{}: no certificate found",
            cert.display()
        )));
    }
    let private_key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| Error::Config(format!("{}: {e}", key.display())))?;
    let config = ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::Config(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certificates, private_key)
    .map_err(|e| Error::Config(format!("TLS certificate and key: {e}")))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
