//! TLS on the message port: the server certificate, optional client
//! certificates (mutual TLS) and a bounded handshake.

use std::sync::Arc;
use std::time::Duration;

use arrpc_wire::pem::{self, PemError};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore};
use tokio_rustls::server::TlsStream;

use crate::config::TlsConfig;

/// Why the TLS settings cannot be used; each names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error("{path}: {reason}")]
    Rejected { path: String, reason: String },
}

/// Why one connection's handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("TLS handshake not finished within {0:?}")]
    TimedOut(Duration),
    #[error("TLS handshake failed: {0}")]
    Failed(#[from] std::io::Error),
}

/// Accepts TLS connections; shared by every connection task.
pub struct TlsListener {
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
}

impl TlsListener {
    /// Reads and checks the certificate, key and client CA named in `config`.
    pub fn new(config: &TlsConfig) -> Result<TlsListener, TlsSetupError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("ring supports TLS 1.2 and 1.3");
        let builder = match &config.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let rejected = |reason: String| TlsSetupError::Rejected {
                    path: path.display().to_string(),
                    reason,
                };
                let mut roots = RootCertStore::empty();
                for cert in pem::certificates(path)? {
                    roots.add(cert).map_err(|e| rejected(e.to_string()))?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(|e| rejected(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let server = builder
            .with_single_cert(
                pem::certificate_chain(&config.cert)?,
                pem::private_key(&config.key)?,
            )
            .map_err(|e| TlsSetupError::Rejected {
                path: config.key.display().to_string(),
                reason: format!("does not fit {}: {e}", config.cert.display()),
            })?;
        Ok(TlsListener {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            handshake_timeout: config.handshake_timeout,
        })
    }

    /// Runs the server side of the handshake, within the handshake timeout.
    pub async fn accept(&self, stream: TcpStream) -> Result<TlsStream<TcpStream>, HandshakeError> {
        tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(stream))
            .await
            .map_err(|_| HandshakeError::TimedOut(self.handshake_timeout))?
            .map_err(HandshakeError::Failed)
    }
}
