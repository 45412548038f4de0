//! TLS for the TLS points: a self-signed certificate made fresh for each run
//! (so no key is ever committed), the acceptor the TLS ceiling serves with,
//! and a connector for the load generator that trusts that certificate alone.
//!
//! Everything uses rustls with the ring provider, as `arrpc-host` does, so
//! the host and its ceiling pay for the same cipher code.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls::crypto::{CryptoProvider, ring};
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The name the certificate is made for and the client asks for.
pub const SERVER_NAME: &str = "localhost";

/// A self-signed certificate and its key as PEM files in a temporary
/// folder, removed on drop.
pub struct SelfSigned {
    _dir: tempfile::TempDir,
    pub cert: PathBuf,
    pub key: PathBuf,
    der: CertificateDer<'static>,
}

impl SelfSigned {
    pub fn generate() -> anyhow::Result<SelfSigned> {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned()])?;
        let dir = tempfile::tempdir()?;
        let cert_path = dir.path().join("cert.pem");
        let key_path = dir.path().join("key.pem");
        std::fs::write(&cert_path, cert.pem())?;
        // The host refuses a key that group or others can read.
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key_path)?
            .write_all(signing_key.serialize_pem().as_bytes())?;
        Ok(SelfSigned {
            _dir: dir,
            cert: cert_path,
            key: key_path,
            der: cert.der().clone(),
        })
    }

    /// A client that trusts this certificate and nothing else.
    pub fn connector(&self) -> anyhow::Result<TlsConnector> {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone())?;
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsConnector::from(Arc::new(config)))
    }
}

/// Serves the certificate and key in these PEM files.
pub fn acceptor(cert: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            arrpc_wire::pem::certificate_chain(cert)?,
            arrpc_wire::pem::private_key(key)?,
        )?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}
