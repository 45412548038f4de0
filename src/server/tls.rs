//! TLS on the message port: the server certificate, optional client
//! certificates (mutual TLS) and a bounded handshake.
//!
//! The certificate, key and client CA are files that rotate under a running
//! host (cert-manager renewing into a Secret, the kubelet swapping its
//! folder). [`TlsListener::reload`] reads them again; a set that loads
//! whole replaces the one new handshakes get, while open connections keep
//! the one they started with. A set that does not load (a key that does not
//! fit, an expired certificate, a file caught half-written) leaves the
//! current one serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use arrpc_wire::pem::{self, PemError};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore};
use tokio_rustls::server::TlsStream;

use crate::config::{ClientCertificates, TlsConfig};

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

impl HandshakeError {
    /// The failure in a few words, for the metric label and the log: what
    /// an operator reading a failed handshake needs to know first.
    pub fn reason(&self) -> &'static str {
        use rustls::{CertificateError as C, Error as E};
        let HandshakeError::Failed(io) = self else {
            return "timeout";
        };
        match io.get_ref().and_then(|e| e.downcast_ref::<E>()) {
            Some(E::NoCertificatesPresented) => "no_client_certificate",
            Some(E::InvalidCertificate(C::UnknownIssuer)) => "unknown_ca",
            Some(E::InvalidCertificate(C::Expired | C::ExpiredContext { .. })) => "expired",
            Some(E::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. })) => {
                "not_yet_valid"
            }
            Some(E::InvalidCertificate(_)) => "bad_client_certificate",
            // The client refused the handshake, usually our certificate.
            Some(E::AlertReceived(_)) => "refused_by_client",
            Some(E::InvalidMessage(_) | E::InappropriateMessage { .. }) => "not_tls",
            Some(E::NoApplicationProtocol | E::PeerIncompatible(_)) => "incompatible",
            Some(_) => "other",
            None => "closed",
        }
    }
}

/// A certificate the host serves or trusts, for logs and the expiry metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// `cert` (the served leaf) or `client_ca`.
    pub role: &'static str,
    pub subject: String,
    /// Unix seconds.
    pub not_after: i64,
}

/// What [`TlsListener::reload`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Reloaded {
    /// The files hold what is already served.
    Unchanged,
    /// New handshakes get the new files; the leaf served now.
    Replaced(CertificateInfo),
}

/// Accepts TLS connections; shared by every connection task.
pub struct TlsListener {
    files: TlsConfig,
    /// What new handshakes get.
    current: ArcSwap<Material>,
    handshake_timeout: Duration,
}

/// One loaded set of files.
struct Material {
    acceptor: TlsAcceptor,
    /// Of the files' bytes as they were read, to tell a change from none.
    digest: [u8; 32],
    certificates: Vec<CertificateInfo>,
}

impl TlsListener {
    /// Reads and checks the certificate, key and client CA named in `config`.
    pub fn new(config: &TlsConfig) -> Result<TlsListener, TlsSetupError> {
        Ok(TlsListener {
            current: ArcSwap::from_pointee(Material::read(config)?),
            files: config.clone(),
            handshake_timeout: config.handshake_timeout,
        })
    }

    /// Reads the files again and, if they changed and load, serves them to
    /// new handshakes.
    pub fn reload(&self) -> Result<Reloaded, TlsSetupError> {
        if digest(&self.files)? == self.current.load().digest {
            return Ok(Reloaded::Unchanged);
        }
        let next = Material::read(&self.files)?;
        let leaf = next.certificates[0].clone();
        self.current.store(Arc::new(next));
        Ok(Reloaded::Replaced(leaf))
    }

    /// Whether client certificates are verified, so callers can be told
    /// apart by them.
    pub fn verifies_client_certificates(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// The served leaf, then each client CA.
    pub fn certificates(&self) -> Vec<CertificateInfo> {
        self.current.load().certificates.clone()
    }

    /// The folders the files sit in, as configured: a symlinked file's own
    /// folder, not the one it resolves to, which the kubelet replaces.
    pub fn folders(&self) -> Vec<PathBuf> {
        let mut folders: Vec<PathBuf> = self
            .files()
            .filter_map(|file| file.parent().map(Path::to_path_buf))
            .collect();
        folders.sort();
        folders.dedup();
        folders
    }

    /// The certificate, key and client CA files, as configured.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        files(&self.files)
    }

    /// How often [`TlsListener::reload`] should run without a file event.
    pub fn recheck_interval(&self) -> Duration {
        self.files.recheck_interval
    }

    /// Runs the server side of the handshake, within the handshake timeout.
    pub async fn accept(&self, stream: TcpStream) -> Result<TlsStream<TcpStream>, HandshakeError> {
        let acceptor = self.current.load().acceptor.clone();
        tokio::time::timeout(self.handshake_timeout, acceptor.accept(stream))
            .await
            .map_err(|_| HandshakeError::TimedOut(self.handshake_timeout))?
            .map_err(HandshakeError::Failed)
    }
}

impl Material {
    fn read(config: &TlsConfig) -> Result<Material, TlsSetupError> {
        // Hashed first: a change racing the reads below shows as a
        // difference at the next check, never as none.
        let digest = digest(config)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("ring supports TLS 1.2 and 1.3");
        let mut certificates = Vec::new();
        let builder = match &config.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let rejected = |reason: String| TlsSetupError::Rejected {
                    path: path.display().to_string(),
                    reason,
                };
                let mut roots = RootCertStore::empty();
                for cert in pem::certificates(path)? {
                    certificates.push(info("client_ca", &cert));
                    roots.add(cert).map_err(|e| rejected(e.to_string()))?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider);
                let verifier = match config.client_certificates {
                    ClientCertificates::Required => verifier,
                    ClientCertificates::Optional => verifier.allow_unauthenticated(),
                };
                let verifier = verifier.build().map_err(|e| rejected(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let chain = pem::certificate_chain(&config.cert)?;
        certificates.insert(0, info("cert", &chain[0]));
        let mut server = builder
            .with_single_cert(chain, pem::private_key(&config.key)?)
            .map_err(|e| TlsSetupError::Rejected {
                path: config.key.display().to_string(),
                reason: format!("does not fit {}: {e}", config.cert.display()),
            })?;
        if config.client_ca.is_some() {
            // A resumed handshake skips the client certificate's check, so a
            // certificate from a CA no longer trusted would still get in.
            server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
            server.send_tls13_tickets = 0;
        }
        Ok(Material {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            digest,
            certificates,
        })
    }
}

fn files(config: &TlsConfig) -> impl Iterator<Item = &Path> {
    [&config.cert, &config.key]
        .into_iter()
        .chain(&config.client_ca)
        .map(PathBuf::as_path)
}

/// SHA-256 over the files' contents, in order.
fn digest(config: &TlsConfig) -> Result<[u8; 32], PemError> {
    let mut hash = Sha256::new();
    for file in files(config) {
        let bytes = std::fs::read(file).map_err(|source| PemError::Read {
            path: file.to_owned(),
            source,
        })?;
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(&bytes);
    }
    Ok(hash.finalize().into())
}

/// Subject and expiry of a certificate the PEM module already parsed once.
fn info(role: &'static str, cert: &CertificateDer<'_>) -> CertificateInfo {
    match x509_parser::parse_x509_certificate(cert) {
        Ok((_, parsed)) => CertificateInfo {
            role,
            subject: parsed.subject().to_string(),
            not_after: parsed.validity().not_after.timestamp(),
        },
        Err(_) => CertificateInfo {
            role,
            subject: "(not X.509)".into(),
            not_after: 0,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Files {
        dir: tempfile::TempDir,
        config: TlsConfig,
    }

    /// A self-signed certificate for `name` and its key, written where
    /// `files` reads them.
    fn write_pair(files: &Files, name: &str) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(&files.config.cert, cert.pem()).unwrap();
        write_key(files, &key.serialize_pem());
    }

    fn write_key(files: &Files, pem: &str) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(&files.config.key, pem).unwrap();
        std::fs::set_permissions(&files.config.key, std::fs::Permissions::from_mode(0o600))
            .unwrap();
    }

    fn files() -> Files {
        let dir = tempfile::tempdir().unwrap();
        let config = TlsConfig::new(dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let files = Files { dir, config };
        write_pair(&files, "first");
        files
    }

    #[test]
    fn unchanged_files_are_not_loaded_again_and_changed_ones_are() {
        let files = files();
        let listener = TlsListener::new(&files.config).unwrap();
        assert_eq!(listener.certificates()[0].subject, "CN=first");
        assert_eq!(listener.reload().unwrap(), Reloaded::Unchanged);

        write_pair(&files, "second");
        match listener.reload().unwrap() {
            Reloaded::Replaced(leaf) => assert_eq!(leaf.subject, "CN=second"),
            other => panic!("expected a replacement, got {other:?}"),
        }
        assert_eq!(listener.certificates()[0].subject, "CN=second");
        assert_eq!(listener.reload().unwrap(), Reloaded::Unchanged);
    }

    #[test]
    fn a_set_that_does_not_load_keeps_the_current_one() {
        let files = files();
        let listener = TlsListener::new(&files.config).unwrap();
        // A key that does not fit the certificate.
        write_key(&files, &rcgen::KeyPair::generate().unwrap().serialize_pem());
        let err = listener.reload().unwrap_err().to_string();
        assert!(err.contains("tls.key: does not fit"), "{err}");
        // A key caught half-written.
        let key = rcgen::KeyPair::generate().unwrap().serialize_pem();
        write_key(&files, &key[..key.len() / 2]);
        let err = listener.reload().unwrap_err().to_string();
        assert!(err.contains("is the file cut short?"), "{err}");
        assert_eq!(listener.certificates()[0].subject, "CN=first");
        assert_eq!(
            listener.folders(),
            vec![files.dir.path().to_path_buf()],
            "one folder holds both files"
        );
    }
}
