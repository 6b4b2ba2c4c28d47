//! TLS for the listener (`--tls-cert`, `--tls-key`): the PEM files are read and checked at start,
//! so a bad path, a file without a certificate or key, or a key that does not belong to the
//! certificate stops the server with a clear message. poem's rustls listener would only log
//! them at the first connection.

use std::{
    io,
    path::{Path, PathBuf},
    sync::Arc,
};

use poem::listener::{RustlsCertificate, RustlsConfig};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {}: {source}", path.display())]
    Read { what: &'static str, path: PathBuf, source: io::Error },
    #[error("no PEM certificate in --tls-cert {}", .0.display())]
    NoCertificate(PathBuf),
    #[error("no PEM private key (PKCS#8, PKCS#1 or SEC1) in --tls-key {}", .0.display())]
    NoKey(PathBuf),
    #[error("--tls-cert and --tls-key do not make a usable pair: {0}")]
    Unusable(rustls::Error),
}

/// Reads and checks the certificate chain and key; returns poem's listener configuration.
pub async fn load(cert: &Path, key: &Path) -> Result<RustlsConfig, TlsError> {
    let read = |what, path: &Path| {
        let path = path.to_owned();
        async move {
            tokio::fs::read(&path).await.map_err(|source| TlsError::Read { what, path, source })
        }
    };
    let cert_pem = read("--tls-cert", cert).await?;
    let key_pem = read("--tls-key", key).await?;

    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|_| TlsError::NoCertificate(cert.to_owned()))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert.to_owned()));
    }
    let private_key =
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::NoKey(key.to_owned()))?;
    // The same checks rustls makes when serving: a supported key that matches the certificate.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_no_client_auth().with_single_cert(chain, private_key))
        .map_err(TlsError::Unusable)?;

    Ok(RustlsConfig::new().fallback(RustlsCertificate::new().cert(cert_pem).key(key_pem)))
}
