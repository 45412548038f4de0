//! TLS on the message port: the server certificate, optional client
//! certificates (mutual TLS) and a bounded handshake.
//!
//! The certificate, key and client CAs come from files that rotate under a
//! running host (cert-manager renewing into a Secret, the kubelet swapping
//! its folder), or from the SPIFFE Workload API, whose agent pushes a new
//! SVID and trust bundle as they rotate. Either way a new set is loaded into
//! one [`Material`] and, if it loads whole, replaces the one new handshakes
//! get, while open connections keep the one they started with. A set that
//! does not load (a key that does not fit, an expired certificate, a file
//! caught half-written) leaves the current one serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use arrpc_client::spiffe::{self, Svid};
use arrpc_wire::pem::{self, PemError};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore};
use tokio_rustls::server::TlsStream;
use x509_parser::extensions::GeneralName;

use crate::admin::Readiness;
use crate::config::{ClientCertificates, SpiffeConfig, TlsConfig};
use crate::telemetry::Metrics;

/// Why the TLS settings cannot be used; each names the file or socket at
/// fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error("{path}: {reason}")]
    Rejected { path: String, reason: String },
    #[error(transparent)]
    Spiffe(#[from] spiffe::SpiffeError),
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
    /// Its subject alternative names: `DNS:...`, `IP:...`, `URI:spiffe://...`.
    pub names: Vec<String>,
    /// Unix seconds.
    pub not_after: i64,
}

/// The served identity in one line: subject, names, expiry.
impl std::fmt::Display for CertificateInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let until = std::time::UNIX_EPOCH + Duration::from_secs(self.not_after.max(0) as u64);
        write!(
            f,
            "{} [{}] until {}",
            self.subject,
            self.names.join(", "),
            humantime::format_rfc3339_seconds(until)
        )
    }
}

/// What [`TlsListener::reload`] or [`TlsListener::apply_svid`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Reloaded {
    /// The files or the agent hold what is already served.
    Unchanged,
    /// New handshakes get the new set; the leaf served now.
    Replaced(CertificateInfo),
}

/// Accepts TLS connections; shared by every connection task.
pub struct TlsListener {
    origin: Origin,
    /// What new handshakes get.
    current: ArcSwap<Material>,
    handshake_timeout: Duration,
    recheck_interval: Duration,
}

/// Where the certificate, key and client CAs come from.
enum Origin {
    Files(Files),
    Spiffe {
        source: spiffe::Source,
        client_certificates: ClientCertificates,
    },
}

/// The files named in `[tls]`.
struct Files {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    client_certificates: ClientCertificates,
}

/// One loaded set of certificate, key and client CAs.
struct Material {
    acceptor: TlsAcceptor,
    /// Of the set's bytes as they were read, to tell a change from none.
    digest: [u8; 32],
    certificates: Vec<CertificateInfo>,
}

impl TlsListener {
    /// Reads and checks the certificate, key and client CA named in `config`.
    pub fn new(config: &TlsConfig) -> Result<TlsListener, TlsSetupError> {
        let (Some(cert), Some(key)) = (&config.cert, &config.key) else {
            return Err(TlsSetupError::Rejected {
                path: "[tls]".into(),
                reason: "cert and key are required without [tls.spiffe]".into(),
            });
        };
        let files = Files {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: config.client_ca.clone(),
            client_certificates: config.client_certificates,
        };
        Ok(TlsListener {
            current: ArcSwap::from_pointee(Material::read(&files)?),
            origin: Origin::Files(files),
            handshake_timeout: config.handshake_timeout,
            recheck_interval: config.recheck_interval,
        })
    }

    /// Connects to the SPIFFE Workload API and serves its first SVID,
    /// waiting up to `spiffe.startup_timeout` for it.
    pub async fn spiffe(
        config: &TlsConfig,
        spiffe: &SpiffeConfig,
    ) -> Result<TlsListener, TlsSetupError> {
        let client_certificates = config.client_certificates;
        let api = spiffe.workload_api();
        let source = tokio::task::spawn_blocking(move || spiffe::Source::connect(&api))
            .await
            .map_err(|e| TlsSetupError::Rejected {
                path: "[tls.spiffe]".into(),
                reason: e.to_string(),
            })??;
        let material = match source.current() {
            spiffe::Current::Svid(svid) => Material::from_svid(&svid, client_certificates)?,
            spiffe::Current::Withdrawn(reason) => {
                return Err(TlsSetupError::Rejected {
                    path: source.socket().to_owned(),
                    reason: format!("no usable SVID: {reason}"),
                });
            }
        };
        Ok(TlsListener {
            current: ArcSwap::from_pointee(material),
            origin: Origin::Spiffe {
                source,
                client_certificates,
            },
            handshake_timeout: config.handshake_timeout,
            recheck_interval: config.recheck_interval,
        })
    }

    /// Reads the files again and, if they changed and load, serves them to
    /// new handshakes. The SPIFFE source pushes its changes instead
    /// ([`TlsListener::apply_svid`]), so for it there is nothing to read.
    pub fn reload(&self) -> Result<Reloaded, TlsSetupError> {
        let Origin::Files(files) = &self.origin else {
            return Ok(Reloaded::Unchanged);
        };
        if files.digest()? == self.current.load().digest {
            return Ok(Reloaded::Unchanged);
        }
        Ok(self.publish(Material::read(files)?))
    }

    /// Serves `svid` from the SPIFFE Workload API to new handshakes, if it
    /// differs from the current one and loads.
    pub fn apply_svid(&self, svid: &Svid) -> Result<Reloaded, TlsSetupError> {
        let Origin::Spiffe {
            client_certificates,
            ..
        } = &self.origin
        else {
            return Ok(Reloaded::Unchanged);
        };
        if svid_digest(svid) == self.current.load().digest {
            return Ok(Reloaded::Unchanged);
        }
        Ok(self.publish(Material::from_svid(svid, *client_certificates)?))
    }

    /// Follows the SPIFFE Workload API, as a task of `tasks` (none when this
    /// listener's identity is from files): each
    /// SVID and bundle the agent pushes reaches new handshakes and the
    /// expiry metric, and while the agent withdraws this workload's
    /// identity `/readyz` answers 503 (the last SVID serves on until then).
    pub fn follow_spiffe(
        self: &Arc<Self>,
        metrics: Arc<Metrics>,
        readiness: Arc<Readiness>,
        tasks: &mut JoinSet<()>,
    ) {
        let Some(source) = self.spiffe_source().cloned() else {
            return;
        };
        let tls = self.clone();
        tasks.spawn(async move {
            let mut updates = source.updates();
            // The first pass applies whatever changed since the listener
            // was made, before these updates were subscribed to.
            loop {
                match source.current() {
                    spiffe::Current::Withdrawn(reason) => {
                        tracing::error!(
                            socket = source.socket(),
                            %reason,
                            "SPIFFE identity withdrawn: not ready; the last SVID serves until the agent sends one"
                        );
                        readiness.hold(
                            "spiffe",
                            format!("the SPIFFE Workload API withdrew this workload's identity ({reason})"),
                        );
                    }
                    spiffe::Current::Svid(svid) => {
                        readiness.release("spiffe");
                        match tls.apply_svid(&svid) {
                            Ok(Reloaded::Unchanged) => {}
                            Ok(Reloaded::Replaced(leaf)) => {
                                metrics.tls_reload(true);
                                metrics.certificates_served(
                                    tls.certificates()
                                        .iter()
                                        .map(|c| (c.role, c.subject.as_str(), c.not_after)),
                                );
                                tracing::info!(
                                    spiffe_id = %svid.spiffe_id,
                                    not_after = %humantime::format_rfc3339_seconds(
                                        std::time::UNIX_EPOCH
                                            + Duration::from_secs(leaf.not_after.max(0) as u64)
                                    ),
                                    "SVID or trust bundle from the SPIFFE Workload API: new handshakes get it"
                                );
                            }
                            Err(e) => {
                                metrics.tls_reload(false);
                                tracing::error!(error = %e, "SVID from the SPIFFE Workload API not loaded; still serving the previous one");
                            }
                        }
                    }
                }
                if !updates.changed().await {
                    break;
                }
            }
            tracing::warn!(
                socket = source.socket(),
                "SPIFFE Workload API source closed"
            );
        });
    }

    fn publish(&self, next: Material) -> Reloaded {
        let leaf = next.certificates[0].clone();
        self.current.store(Arc::new(next));
        Reloaded::Replaced(leaf)
    }

    /// The Workload API source, when the certificate comes from it.
    pub fn spiffe_source(&self) -> Option<&spiffe::Source> {
        match &self.origin {
            Origin::Spiffe { source, .. } => Some(source),
            Origin::Files(_) => None,
        }
    }

    /// Whether client certificates are verified, so callers can be told
    /// apart by them.
    pub fn verifies_client_certificates(&self) -> bool {
        match &self.origin {
            Origin::Files(files) => files.client_ca.is_some(),
            Origin::Spiffe { .. } => true,
        }
    }

    /// The served leaf, then each client CA.
    pub fn certificates(&self) -> Vec<CertificateInfo> {
        self.current.load().certificates.clone()
    }

    /// What new handshakes are shown, and where it comes from.
    pub fn identity(&self) -> String {
        let leaf = &self.current.load().certificates[0];
        match &self.origin {
            Origin::Files(files) => format!("{leaf}, from {}", files.cert.display()),
            Origin::Spiffe { source, .. } => {
                format!(
                    "{leaf}, from the SPIFFE Workload API at {}",
                    source.socket()
                )
            }
        }
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

    /// The certificate, key and client CA files, as configured; none for
    /// the SPIFFE source.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        let files = match &self.origin {
            Origin::Files(files) => Some(files.paths()),
            Origin::Spiffe { .. } => None,
        };
        files.into_iter().flatten()
    }

    /// How often [`TlsListener::reload`] should run without a file event.
    pub fn recheck_interval(&self) -> Duration {
        self.recheck_interval
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

impl Files {
    fn paths(&self) -> impl Iterator<Item = &Path> {
        [&self.cert, &self.key]
            .into_iter()
            .chain(&self.client_ca)
            .map(PathBuf::as_path)
    }

    /// SHA-256 over the files' contents, in order.
    fn digest(&self) -> Result<[u8; 32], PemError> {
        pem::files_fingerprint(self.paths())
    }
}

impl Material {
    fn read(files: &Files) -> Result<Material, TlsSetupError> {
        // Hashed first: a change racing the reads below shows as a
        // difference at the next check, never as none.
        let digest = files.digest()?;
        let client_cas = match &files.client_ca {
            Some(path) => Some((path.display().to_string(), pem::certificates(path)?)),
            None => None,
        };
        let chain = pem::certificate_chain(&files.cert)?;
        let key = pem::private_key(&files.key)?;
        let fit = |reason: String| TlsSetupError::Rejected {
            path: files.key.display().to_string(),
            reason: format!("does not fit {}: {reason}", files.cert.display()),
        };
        let client_cas = client_cas.map(|cas| (cas, files.client_certificates));
        Material::build(chain, key, client_cas, digest, fit)
    }

    /// The set an SVID and its trust bundle make; the bundle verifies
    /// client certificates.
    fn from_svid(
        svid: &Svid,
        client_certificates: ClientCertificates,
    ) -> Result<Material, TlsSetupError> {
        let bundle = (
            format!("the trust bundle of {}", svid.spiffe_id),
            svid.bundle.clone(),
        );
        Material::build(
            svid.chain.clone(),
            svid.key.clone_key(),
            Some((bundle, client_certificates)),
            svid_digest(svid),
            |reason| TlsSetupError::Rejected {
                path: svid.spiffe_id.clone(),
                reason: format!("the SVID does not fit its key: {reason}"),
            },
        )
    }

    /// Server settings for `chain` and `key`, verifying clients by
    /// `client_cas` (named for errors) when given.
    fn build(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        client_cas: Option<(ClientCas, ClientCertificates)>,
        digest: [u8; 32],
        misfit: impl FnOnce(String) -> TlsSetupError,
    ) -> Result<Material, TlsSetupError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("ring supports TLS 1.2 and 1.3");
        let mut certificates = vec![info("cert", &chain[0])];
        let verifies_clients = client_cas.is_some();
        let builder = match client_cas {
            None => builder.with_no_client_auth(),
            Some(((path, cas), client_certificates)) => {
                let rejected = |reason: String| TlsSetupError::Rejected {
                    path: path.clone(),
                    reason,
                };
                let mut roots = RootCertStore::empty();
                for cert in cas {
                    certificates.push(info("client_ca", &cert));
                    roots.add(cert).map_err(|e| rejected(e.to_string()))?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider);
                let verifier = match client_certificates {
                    ClientCertificates::Required => verifier,
                    ClientCertificates::Optional => verifier.allow_unauthenticated(),
                };
                let verifier = verifier.build().map_err(|e| rejected(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut server = builder
            .with_single_cert(chain, key)
            .map_err(|e| misfit(e.to_string()))?;
        if verifies_clients {
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

/// Client CA certificates, and what to name them by in errors.
type ClientCas = (String, Vec<CertificateDer<'static>>);

/// SHA-256 over an SVID's chain, key and bundle.
fn svid_digest(svid: &Svid) -> [u8; 32] {
    pem::fingerprint(
        svid.chain
            .iter()
            .map(|c| c.as_ref())
            .chain([svid.key.secret_der()])
            .chain(svid.bundle.iter().map(|c| c.as_ref())),
    )
}

/// A subject alternative name as OpenSSL prints it: `DNS:a.b`,
/// `IP:127.0.0.1`, `URI:spiffe://...`.
fn name_text(name: &GeneralName<'_>) -> String {
    match name {
        GeneralName::DNSName(dns) => format!("DNS:{dns}"),
        GeneralName::URI(uri) => format!("URI:{uri}"),
        GeneralName::IPAddress(bytes) => match <[u8; 4]>::try_from(*bytes) {
            Ok(v4) => format!("IP:{}", std::net::Ipv4Addr::from(v4)),
            Err(_) => match <[u8; 16]>::try_from(*bytes) {
                Ok(v6) => format!("IP:{}", std::net::Ipv6Addr::from(v6)),
                Err(_) => format!("IP:{bytes:02x?}"),
            },
        },
        other => other.to_string(),
    }
}

/// Subject and expiry of a certificate the PEM module already parsed once.
fn info(role: &'static str, cert: &CertificateDer<'_>) -> CertificateInfo {
    match x509_parser::parse_x509_certificate(cert) {
        Ok((_, parsed)) => CertificateInfo {
            role,
            subject: parsed.subject().to_string(),
            names: match parsed.subject_alternative_name() {
                Ok(Some(names)) => names.value.general_names.iter().map(name_text).collect(),
                _ => Vec::new(),
            },
            not_after: parsed.validity().not_after.timestamp(),
        },
        Err(_) => CertificateInfo {
            role,
            subject: "(not X.509)".into(),
            names: Vec::new(),
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
        std::fs::write(files.config.cert.as_ref().unwrap(), cert.pem()).unwrap();
        write_key(files, &key.serialize_pem());
    }

    fn write_key(files: &Files, pem: &str) {
        use std::os::unix::fs::PermissionsExt;
        let key = files.config.key.as_ref().unwrap();
        std::fs::write(key, pem).unwrap();
        std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o600)).unwrap();
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
