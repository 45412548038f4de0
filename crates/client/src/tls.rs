//! TLS for the client: which server certificate to trust, and which
//! certificate (if any) to present for mutual TLS.
//!
//! Three ways to trust a server: a CA file or the public CAs (the Mozilla
//! root set), with the server's name (the host part of the address, or
//! [`Tls::server_name`]) checked against its certificate; or, as the seed
//! offers, the server's own self-signed certificate, pinned: exactly those
//! certificate bytes are accepted, whatever names they carry. TLS 1.2 and
//! 1.3 only.

use std::path::PathBuf;
use std::sync::Arc;

use arrpc_wire::pem::{self, PemError};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{
    WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature,
};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{
    self, CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// Whom the client trusts to be the server.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Servers with a certificate signed by a CA in this PEM file (the
    /// seed's `tls_cafile`).
    CaFile(PathBuf),
    /// Exactly the self-signed certificate(s) in this PEM file (the seed's
    /// `tls_cafile` with `tls_self_signed=True`).
    Pinned(PathBuf),
    /// Servers with a certificate from a public CA: the Mozilla root set,
    /// built in (`webpki-roots`), so it is the same on every machine.
    PublicCas,
}

/// A client certificate chain and its key, for mutual TLS.
#[derive(Debug, Clone)]
pub struct Identity {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Why TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error("{}: not a usable certificate: {reason}", path.display())]
    Certificate { path: PathBuf, reason: String },
    #[error("{}: cannot use this certificate and key: {reason}", path.display())]
    Identity { path: PathBuf, reason: String },
}

/// Ready-to-use client TLS settings; cheap to clone.
#[derive(Clone, Debug)]
pub struct Tls {
    config: Arc<rustls::ClientConfig>,
    /// Name the server's certificate must carry; defaults to the host part
    /// of the address. Ignored for a pinned certificate.
    pub server_name: Option<String>,
}

impl Tls {
    /// Reads the trusted certificates and the client identity.
    pub fn new(trust: &Trust, identity: Option<&Identity>) -> Result<Tls, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("ring supports TLS 1.2 and 1.3");
        let builder = match trust {
            Trust::CaFile(path) => {
                let mut roots = RootCertStore::empty();
                for cert in pem::certificates(path)? {
                    roots.add(cert).map_err(|e| TlsError::Certificate {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                }
                builder.with_root_certificates(roots)
            }
            Trust::PublicCas => builder.with_root_certificates(RootCertStore::from_iter(
                webpki_roots::TLS_SERVER_ROOTS.iter().cloned(),
            )),
            Trust::Pinned(path) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedCertificate {
                    certs: pem::certificates(path)?,
                    algorithms: provider.signature_verification_algorithms,
                })),
        };
        let config = match identity {
            Some(identity) => builder
                .with_client_auth_cert(
                    pem::certificate_chain(&identity.cert)?,
                    pem::private_key(&identity.key)?,
                )
                .map_err(|e| TlsError::Identity {
                    path: identity.key.clone(),
                    reason: e.to_string(),
                })?,
            None => builder.with_no_client_auth(),
        };
        Ok(Tls {
            config: Arc::new(config),
            server_name: None,
        })
    }

    /// Runs the handshake over `stream` to the server at `addr`.
    pub(crate) async fn connect(
        &self,
        addr: &str,
        stream: TcpStream,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let name = self
            .server_name
            .clone()
            .unwrap_or_else(|| host_of(addr).to_owned());
        let name = ServerName::try_from(name).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("server name: {e}"),
            )
        })?;
        TlsConnector::from(self.config.clone())
            .connect(name, stream)
            .await
    }
}

/// The host part of `host:port` or `[v6]:port`.
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Accepts exactly the pinned certificates, as the server's own.
#[derive(Debug)]
struct PinnedCertificate {
    certs: Vec<CertificateDer<'static>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.certs.iter().any(|pinned| pinned == end_entity) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn the_host_part_of_an_address_is_the_server_name() {
        assert_eq!(host_of("example.com:8080"), "example.com");
        assert_eq!(host_of("127.0.0.1:1"), "127.0.0.1");
        assert_eq!(host_of("[::1]:8080"), "::1");
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let err = Tls::new(
            &Trust::CaFile(Path::new("/nonexistent/ca.pem").into()),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("/nonexistent/ca.pem: cannot read"), "{err}");
    }
}
