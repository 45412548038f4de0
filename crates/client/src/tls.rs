//! TLS for the client: which server certificate to trust, and which
//! certificate (if any) to present for mutual TLS.
//!
//! Four ways to trust a server: a CA file, the CAs this machine trusts (its
//! certificate store), or the public CAs of the Mozilla root set, with the
//! server's name (the host part of the address, or [`Tls::server_name`])
//! checked against its certificate; or, as the seed offers, the server's own
//! self-signed certificate, pinned: exactly those certificate bytes are
//! accepted, whatever names they carry. TLS 1.2 and 1.3 only.

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

/// Whom the client trusts to be the server. More ways may be added, so a
/// `match` on it needs a catch-all arm.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Trust {
    /// Servers with a certificate signed by a CA in this PEM file (the
    /// seed's `tls_cafile`).
    CaFile(PathBuf),
    /// Exactly the self-signed certificate(s) in this PEM file (the seed's
    /// `tls_cafile` with `tls_self_signed=True`).
    Pinned(PathBuf),
    /// Servers with a certificate from a CA this machine trusts, as curl and
    /// openssl do: the operating system's store (`rustls-native-certs`; on
    /// Linux the OpenSSL bundle and folder such as `/etc/ssl/certs`), or only
    /// `SSL_CERT_FILE` and `SSL_CERT_DIR` when either is set. Read by
    /// [`Tls::new`]; a company CA added to the store is trusted too.
    System,
    /// Servers with a certificate from a public CA: the Mozilla root set,
    /// built in (`webpki-roots`), so it is the same on every machine
    /// whatever its store holds.
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
    /// [`Trust::System`] found nothing to trust: where it looked, what went
    /// wrong there, and what to do.
    #[error("{0}")]
    NoSystemRoots(String),
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
            Trust::System => builder.with_root_certificates(system_roots(
                rustls_native_certs::load_native_certs(),
                &store_variables(),
            )?),
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

/// The variables that replace the operating system's certificate store
/// when set, as `NAME=value`.
fn store_variables() -> Vec<String> {
    ["SSL_CERT_FILE", "SSL_CERT_DIR"]
        .into_iter()
        .filter_map(|name| {
            std::env::var_os(name).map(|value| format!("{name}={}", value.to_string_lossy()))
        })
        .collect()
}

/// The trust anchors among `loaded`, read from the store that `variables`
/// (from [`store_variables`]) name. Certificates that cannot be read or
/// parsed are skipped, as other TLS clients skip them, and counted in a
/// warning; only a store with nothing usable left is an error.
fn system_roots(
    loaded: rustls_native_certs::CertificateResult,
    variables: &[String],
) -> Result<RootCertStore, TlsError> {
    let store = if variables.is_empty() {
        "the system certificate store".to_owned()
    } else {
        variables.join(" and ")
    };
    let mut roots = RootCertStore::empty();
    let (added, unparsable) = roots.add_parsable_certificates(loaded.certs);
    let mut problems = Vec::new();
    if unparsable > 0 {
        problems.push(format!("{unparsable} unparsable certificate(s)"));
    }
    if let Some(first) = loaded.errors.first() {
        problems.push(format!(
            "{} read error(s), the first: {first}",
            loaded.errors.len()
        ));
    }
    let problems = problems.join("; ");
    if added == 0 {
        let problems = if problems.is_empty() {
            String::new()
        } else {
            format!(" ({problems})")
        };
        let hint = if variables.is_empty() {
            "add CA certificates to it, or point SSL_CERT_FILE or SSL_CERT_DIR at PEM ones"
        } else {
            "while SSL_CERT_FILE or SSL_CERT_DIR is set, the system store is not read"
        };
        return Err(TlsError::NoSystemRoots(format!(
            "no usable CA certificate in {store}{problems}; {hint}"
        )));
    }
    if problems.is_empty() {
        tracing::debug!("trusting {added} CA certificate(s) from {store}");
    } else {
        tracing::warn!("trusting {added} CA certificate(s) from {store}, skipping {problems}");
    }
    Ok(roots)
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

    /// A PEM block that decodes, but to no certificate.
    const NOT_DER: &str = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";

    /// Loads `pem` as `SSL_CERT_FILE` would be, without touching the
    /// process environment.
    fn load(pem: &str) -> rustls_native_certs::CertificateResult {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), pem).unwrap();
        rustls_native_certs::load_certs_from_paths(Some(file.path()), None)
    }

    #[test]
    fn unusable_certificates_in_the_system_store_are_skipped() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params
            .self_signed(&rcgen::KeyPair::generate().unwrap())
            .unwrap();
        let roots = system_roots(load(&format!("{NOT_DER}{}", ca.pem())), &[]).unwrap();
        assert_eq!(roots.len(), 1);
    }

    #[test]
    fn a_system_store_with_nothing_usable_says_where_it_looked() {
        let err = system_roots(load(NOT_DER), &["SSL_CERT_FILE=store.pem".into()])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "no usable CA certificate in SSL_CERT_FILE=store.pem (1 unparsable certificate(s)); \
             while SSL_CERT_FILE or SSL_CERT_DIR is set, the system store is not read"
        );

        let loaded = rustls_native_certs::load_certs_from_paths(
            Some(Path::new("/nonexistent/ca.pem")),
            None,
        );
        let err = system_roots(loaded, &[]).unwrap_err().to_string();
        let store = "no usable CA certificate in the system certificate store";
        assert!(
            err.starts_with(&format!("{store} (1 read error(s), the first: ")),
            "{err}"
        );
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
        assert!(
            err.ends_with("point SSL_CERT_FILE or SSL_CERT_DIR at PEM ones"),
            "{err}"
        );
    }
}
