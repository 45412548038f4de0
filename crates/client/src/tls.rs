//! TLS for the client: which server certificate to trust, which
//! certificate (if any) to present for mutual TLS, and why a handshake
//! failed, in words a user can act on ([`HandshakeError`]).
//!
//! Four ways to trust a server: a CA file, the CAs this machine trusts (its
//! certificate store), or the public CAs of the Mozilla root set, with the
//! server's name (the host part of the address, or [`Tls::server_name`])
//! checked against its certificate; or, as the Python arrpc package offers, the
//! server's own self-signed certificate, pinned: exactly those certificate
//! bytes are accepted, whatever names they carry. A CA file may also hold the
//! server's own self-signed certificate, as the Python arrpc package and
//! OpenSSL allow: then its name and dates are checked. TLS 1.2 and 1.3 only.
//!
//! The CA file and the client's certificate and key rotate under a
//! long-lived client (cert-manager renewing into a mounted Secret): each new
//! connection compares the files' contents with what was loaded and loads
//! them again when they changed. A set that does not load (a key that does
//! not fit, a file caught half-written) is logged with the file and reason,
//! and the previous one stays in use.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrpc_wire::pem::{self, PemError};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::client::{WebPkiServerVerifier, verify_server_name};
use tokio_rustls::rustls::crypto::{
    CryptoProvider, WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature,
};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::server::ParsedCertificate;
use tokio_rustls::rustls::{
    self, AlertDescription, CertificateError, DigitallySignedStruct, OtherError, RootCertStore,
    SignatureScheme,
};

/// Whom the client trusts to be the server. More ways may be added, so a
/// `match` on it needs a catch-all arm.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Trust {
    /// Servers with a certificate signed by a CA in this PEM file, or a
    /// self-signed one that is itself in the file (OpenSSL marks those
    /// CA:TRUE), its names and dates checked (the Python arrpc package's
    /// `tls_cafile`).
    CaFile(PathBuf),
    /// Exactly the self-signed certificate(s) in this PEM file (the Python
    /// arrpc package's `tls_cafile` with `tls_self_signed=True`).
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
    /// Servers with an SVID from the trust bundle the SPIFFE Workload API
    /// (a SPIRE agent) sends, whatever their SPIFFE ID; this workload's own
    /// SVID is presented as its client certificate. Both rotate as the agent
    /// pushes them.
    #[cfg(feature = "spiffe")]
    Spiffe(crate::spiffe::Source),
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
    #[cfg(feature = "spiffe")]
    #[error(transparent)]
    Spiffe(#[from] crate::spiffe::SpiffeError),
    /// A client certificate was given with [`Trust::Spiffe`], which
    /// presents the workload's SVID.
    #[error("{}: the SPIFFE Workload API's SVID is presented; give no client certificate with it", path.display())]
    IdentityWithSpiffe { path: PathBuf },
}

/// Ready-to-use client TLS settings; cheap to clone, and clones share the
/// settings as reloaded.
#[derive(Clone, Debug)]
pub struct Tls {
    loaded: Arc<Mutex<Loaded>>,
    /// Whom the settings trust, to say so when a server is refused.
    trust: Trust,
    /// The certificate presented, read again when its files change.
    identity: Option<Identity>,
    /// Whether a client certificate is presented, to tell a server that
    /// wants one from one that refuses ours.
    presents_identity: bool,
    /// Name the server's certificate must carry; defaults to the host part
    /// of the address. Ignored for a pinned certificate.
    pub server_name: Option<String>,
}

/// The settings as last loaded from the files.
#[derive(Debug)]
struct Loaded {
    config: Arc<rustls::ClientConfig>,
    /// Of the files' contents when they were read.
    digest: [u8; 32],
    /// The last change that did not load, so it is logged once.
    refused: Option<String>,
}

impl Tls {
    /// Reads the trusted certificates and the client identity.
    pub fn new(trust: &Trust, identity: Option<&Identity>) -> Result<Tls, TlsError> {
        // Hashed first: a change racing the reads shows at the next check.
        let digest = digest(trust, identity)?;
        Ok(Tls {
            loaded: Arc::new(Mutex::new(Loaded {
                config: Arc::new(client_config(trust, identity)?),
                digest,
                refused: None,
            })),
            trust: trust.clone(),
            identity: identity.cloned(),
            presents_identity: identity.is_some() || presents_svid(trust),
            server_name: None,
        })
    }

    /// The settings for a new connection: loaded again first if the files
    /// changed since, and the current ones if the change does not load.
    fn config(&self) -> Arc<rustls::ClientConfig> {
        let mut loaded = crate::lock(&self.loaded);
        let identity = self.identity.as_ref();
        let next = digest(&self.trust, identity)
            .map_err(TlsError::from)
            .and_then(|digest| {
                if digest == loaded.digest {
                    return Ok(None);
                }
                Ok(Some((client_config(&self.trust, identity)?, digest)))
            });
        match next {
            Ok(None) => {}
            Ok(Some((config, digest))) => {
                tracing::info!(files = %self.files(), "TLS files changed: new connections use them");
                *loaded = Loaded {
                    config: Arc::new(config),
                    digest,
                    refused: None,
                };
            }
            Err(e) => {
                let reason = e.to_string();
                if loaded.refused.as_ref() != Some(&reason) {
                    tracing::warn!(error = %reason, "TLS files changed but not loaded; still using the previous ones");
                    loaded.refused = Some(reason);
                }
            }
        }
        loaded.config.clone()
    }

    /// The files these settings are read from, for logs.
    fn files(&self) -> String {
        files(&self.trust, self.identity.as_ref())
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Runs the handshake over `stream` to the server at `addr`.
    pub async fn connect(
        &self,
        addr: &str,
        stream: TcpStream,
    ) -> Result<TlsStream<TcpStream>, HandshakeError> {
        let name = self
            .server_name
            .clone()
            .unwrap_or_else(|| host_of(addr).to_owned());
        let name = ServerName::try_from(name.clone())
            .map_err(|e| HandshakeError::BadServerName(format!("{name:?}: {e}")))?;
        TlsConnector::from(self.config())
            .connect(name, stream)
            .await
            .map_err(|e| self.refusal(&e).unwrap_or_else(|| failed_handshake(e)))
    }

    /// Why the server and these settings did not agree, when `error` (from
    /// the handshake or from reading just after it, where a TLS 1.3 server
    /// refuses a client certificate) says so; `None` for other failures,
    /// such as a dropped connection.
    pub(crate) fn refusal(&self, error: &std::io::Error) -> Option<HandshakeError> {
        let error = error.get_ref()?.downcast_ref::<rustls::Error>()?;
        Some(match error {
            rustls::Error::InvalidCertificate(certificate) => {
                self.refused_certificate(certificate)?
            }
            rustls::Error::AlertReceived(alert) => self.refused_by_server(*alert)?,
            _ => return None,
        })
    }

    /// Why the server's certificate was refused.
    fn refused_certificate(&self, error: &CertificateError) -> Option<HandshakeError> {
        Some(match error {
            CertificateError::UnknownIssuer => HandshakeError::UnknownIssuer {
                trusted: self.trusted(),
            },
            CertificateError::ApplicationVerificationFailure => match &self.trust {
                Trust::Pinned(path) => HandshakeError::NotPinned { file: path.clone() },
                _ => return None,
            },
            CertificateError::NotValidForNameContext {
                expected,
                presented,
            } => HandshakeError::WrongName {
                expected: expected.to_str().into_owned(),
                presented: presented.iter().map(|name| plain_name(name)).collect(),
            },
            CertificateError::ExpiredContext { not_after, .. } => HandshakeError::Expired {
                not_after: date(*not_after),
            },
            CertificateError::NotValidYetContext { not_before, .. } => {
                HandshakeError::NotYetValid {
                    not_before: date(*not_before),
                }
            }
            CertificateError::Other(other) if is_ca_used_as_end_entity(other) => {
                HandshakeError::CaCertificate {
                    ca_file: match &self.trust {
                        Trust::CaFile(path) => Some(path.clone()),
                        _ => None,
                    },
                }
            }
            _ => return None,
        })
    }

    /// What a TLS alert from the server says about this client.
    fn refused_by_server(&self, alert: AlertDescription) -> Option<HandshakeError> {
        use AlertDescription as A;
        Some(match alert {
            A::CertificateRequired => HandshakeError::ClientCertificateRequired { alert },
            // What a TLS 1.2 server sends when it wanted a certificate.
            A::HandshakeFailure if !self.presents_identity => {
                HandshakeError::ClientCertificateRequired { alert }
            }
            A::HandshakeFailure
            | A::BadCertificate
            | A::UnsupportedCertificate
            | A::CertificateRevoked
            | A::CertificateExpired
            | A::CertificateUnknown
            | A::UnknownCA
            | A::AccessDenied
                if self.presents_identity =>
            {
                HandshakeError::ClientCertificateRefused { alert }
            }
            A::CloseNotify => return None,
            alert => HandshakeError::Alert { alert },
        })
    }

    /// Whom these settings trust, in words.
    fn trusted(&self) -> String {
        match &self.trust {
            Trust::CaFile(path) => format!("a CA in {}", path.display()),
            Trust::Pinned(path) => format!("the certificate in {}", path.display()),
            Trust::System => "a CA this machine trusts".to_owned(),
            Trust::PublicCas => "a public CA (the Mozilla root set)".to_owned(),
            #[cfg(feature = "spiffe")]
            Trust::Spiffe(source) => format!(
                "a CA in the trust bundle from the SPIFFE Workload API at {}",
                source.socket()
            ),
        }
    }
}

/// Whether `trust` presents a certificate of its own.
fn presents_svid(trust: &Trust) -> bool {
    match trust {
        #[cfg(feature = "spiffe")]
        Trust::Spiffe(_) => true,
        _ => false,
    }
}

/// Client settings from the files that `trust` and `identity` name, or
/// from the SPIFFE Workload API.
fn client_config(
    trust: &Trust,
    identity: Option<&Identity>,
) -> Result<rustls::ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("ring supports TLS 1.2 and 1.3");
    let builder = match trust {
        Trust::CaFile(path) => {
            let verifier =
                CaFile::new(pem::certificates(path)?, provider.clone()).map_err(|reason| {
                    TlsError::Certificate {
                        path: path.clone(),
                        reason,
                    }
                })?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
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
        #[cfg(feature = "spiffe")]
        Trust::Spiffe(source) => {
            if let Some(identity) = identity {
                return Err(TlsError::IdentityWithSpiffe {
                    path: identity.cert.clone(),
                });
            }
            return Ok(source.client_config()?);
        }
    };
    Ok(match identity {
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
    })
}

/// The files `trust` and `identity` read: the ones that can change.
fn files<'a>(trust: &'a Trust, identity: Option<&'a Identity>) -> impl Iterator<Item = &'a Path> {
    let trusted = match trust {
        Trust::CaFile(path) | Trust::Pinned(path) => Some(path.as_path()),
        _ => None,
    };
    trusted.into_iter().chain(
        identity
            .into_iter()
            .flat_map(|i| [i.cert.as_path(), i.key.as_path()]),
    )
}

/// SHA-256 over the contents of the files the settings are read from.
fn digest(trust: &Trust, identity: Option<&Identity>) -> Result<[u8; 32], PemError> {
    pem::files_fingerprint(files(trust, identity))
}

/// Why a TLS handshake with a server failed, in words a user can act on.
/// The server's certificate and the client's settings decide most of these;
/// another attempt meets the same outcome. More may be added, so a `match`
/// on it needs a catch-all arm.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// No CA the client trusts signed the server's certificate: trust the CA
    /// that did ([`Trust::CaFile`]), or the server's own certificate.
    #[error("the server's certificate is not signed by {trusted}")]
    UnknownIssuer { trusted: String },
    /// The server's certificate is not the pinned one ([`Trust::Pinned`]).
    #[error("the server's certificate is not the one in {}", file.display())]
    NotPinned { file: PathBuf },
    /// The certificate is not for the name the client checked; connect by
    /// one of its names or check one of them ([`Tls::server_name`]).
    #[error(
        "the server's certificate is for {}, not {expected}",
        if presented.is_empty() { "no host name or address".to_owned() } else { presented.join(", ") }
    )]
    WrongName {
        expected: String,
        presented: Vec<String>,
    },
    /// The server's certificate has expired (or the client's clock is wrong).
    #[error("the server's certificate expired on {not_after}")]
    Expired { not_after: String },
    /// The server's certificate is not valid yet (or a clock is wrong).
    #[error("the server's certificate is not valid before {not_before}")]
    NotYetValid { not_before: String },
    /// The server presents a CA certificate (basicConstraints CA:TRUE) as
    /// its own, and the CA file does not hold that very certificate.
    #[error(
        "the server's certificate is a CA certificate (basicConstraints CA:TRUE), {}",
        match ca_file {
            Some(file) => format!("trusted as a server's own only if {} holds that very certificate", file.display()),
            None => "not trusted as a server's own".to_owned(),
        }
    )]
    CaCertificate { ca_file: Option<PathBuf> },
    /// The server requires a client certificate and none was presented (a
    /// TLS 1.2 server says so with a handshake_failure alert).
    #[error("the server requires a client certificate (it sent alert {alert:?})")]
    ClientCertificateRequired { alert: AlertDescription },
    /// The server refused the client certificate presented.
    #[error("the server refused our client certificate (it sent alert {alert:?})")]
    ClientCertificateRefused { alert: AlertDescription },
    /// The server ended the handshake for another reason.
    #[error("the server ended the handshake with alert {alert:?}")]
    Alert { alert: AlertDescription },
    /// What came back was not TLS: the server speaks plain arrpc, or
    /// something else.
    #[error("the server does not speak TLS (its reply is not a TLS handshake)")]
    NotTls,
    /// The server hung up mid-handshake, as a server that does not speak
    /// TLS may after reading the client's greeting as garbage.
    #[error("the server closed the connection during the TLS handshake; it may not speak TLS")]
    ClosedByServer,
    /// No handshake within the connect timeout.
    #[error("no TLS handshake within {0:?}; the server may not speak TLS")]
    TimedOut(Duration),
    /// The name to check the certificate for is neither a host name nor an
    /// IP address.
    #[error("cannot check the server's certificate for {0}")]
    BadServerName(String),
    /// Any other failure, as rustls or the connection reported it.
    #[error(transparent)]
    Other(Arc<std::io::Error>),
}

/// Why a handshake failed that neither side's settings refused.
fn failed_handshake(error: std::io::Error) -> HandshakeError {
    let tls = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    match tls {
        Some(
            rustls::Error::InvalidMessage(_)
            | rustls::Error::InappropriateMessage { .. }
            | rustls::Error::InappropriateHandshakeMessage { .. },
        ) => HandshakeError::NotTls,
        _ if error.kind() == std::io::ErrorKind::UnexpectedEof => HandshakeError::ClosedByServer,
        _ => HandshakeError::Other(Arc::new(error)),
    }
}

/// Whether webpki refused a certificate as a CA certificate (CA:TRUE)
/// presented as a server's own.
fn is_ca_used_as_end_entity(error: &OtherError) -> bool {
    matches!(
        error.0.downcast_ref::<webpki::Error>(),
        Some(webpki::Error::CaUsedAsEndEntity)
    )
}

/// A name from webpki's list of a certificate's names (`DnsName("a.b")`,
/// `IpAddress(127.0.0.1)`) as a user writes it.
fn plain_name(presented: &str) -> String {
    let inner = presented
        .strip_prefix("DnsName(\"")
        .and_then(|rest| rest.strip_suffix("\")"))
        .or_else(|| {
            presented
                .strip_prefix("IpAddress(")
                .and_then(|rest| rest.strip_suffix(')'))
        });
    inner.unwrap_or(presented).to_owned()
}

/// A certificate date as OpenSSL and the host's own checks print it.
fn date(time: UnixTime) -> String {
    let secs = i64::try_from(time.as_secs()).unwrap_or(i64::MAX);
    match x509_parser::time::ASN1Time::from_timestamp(secs) {
        Ok(time) => time.to_string(),
        Err(_) => format!("{secs} seconds after 1970"),
    }
}

/// The host part of `host:port` or `[v6]:port`.
pub(crate) fn host_of(addr: &str) -> &str {
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

/// Trusts the CAs of a CA file as rustls does, and also a server's own
/// certificate that is itself in the file. OpenSSL marks the self-signed
/// certificates it makes CA:TRUE, and webpki refuses any CA certificate as
/// a server's own, where OpenSSL (and so the Python arrpc package) accepts
/// one that is a trust anchor itself.
#[derive(Debug)]
struct CaFile {
    webpki: Arc<WebPkiServerVerifier>,
    /// The file's certificates as read, to compare byte for byte.
    certs: Vec<CertificateDer<'static>>,
}

impl CaFile {
    /// Trusts `certs`, the certificates of a CA file.
    fn new(
        certs: Vec<CertificateDer<'static>>,
        provider: Arc<CryptoProvider>,
    ) -> Result<CaFile, String> {
        let mut roots = RootCertStore::empty();
        for cert in &certs {
            roots.add(cert.clone()).map_err(|e| e.to_string())?;
        }
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(CaFile { webpki, certs })
    }

    /// Checks a CA:TRUE server certificate that webpki `refused`: accepted
    /// only when it is one of the file's certificates, valid at `now`, fit
    /// for a server and issued to `server_name`.
    fn verify_own(
        &self,
        end_entity: &CertificateDer<'_>,
        server_name: &ServerName<'_>,
        now: UnixTime,
        refused: rustls::Error,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let (_, cert) = x509_parser::parse_x509_certificate(end_entity)
            .map_err(|_| CertificateError::BadEncoding)?;
        if !self.certs.iter().any(|own| own == end_entity) {
            // Self-signed and not in the file: nobody trusted vouches for it.
            // Signed by another: a CA posing as a server.
            return Err(if cert.subject().as_raw() == cert.issuer().as_raw() {
                CertificateError::UnknownIssuer.into()
            } else {
                refused
            });
        }
        let validity = cert.validity();
        let not_before = unix_time(validity.not_before.timestamp());
        let not_after = unix_time(validity.not_after.timestamp());
        if now < not_before {
            return Err(CertificateError::NotValidYetContext {
                time: now,
                not_before,
            }
            .into());
        }
        if now > not_after {
            return Err(CertificateError::ExpiredContext {
                time: now,
                not_after,
            }
            .into());
        }
        let usage = cert
            .extended_key_usage()
            .map_err(|_| CertificateError::BadEncoding)?;
        if usage.is_some_and(|usage| !usage.value.server_auth && !usage.value.any) {
            return Err(CertificateError::InvalidPurpose.into());
        }
        verify_server_name(&ParsedCertificate::try_from(end_entity)?, server_name)?;
        Ok(ServerCertVerified::assertion())
    }
}

impl ServerCertVerifier for CaFile {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(other)))
                if is_ca_used_as_end_entity(&other) =>
            {
                let refused = CertificateError::Other(other).into();
                self.verify_own(end_entity, server_name, now, refused)
            }
            verified => verified,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// Seconds since 1970 from a certificate, as rustls counts time.
fn unix_time(secs: i64) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(secs.try_into().unwrap_or(0)))
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
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa,
        KeyPair,
    };
    use std::path::Path;

    /// Parameters like those of `openssl req -x509 -subj /CN=localhost
    /// -addext subjectAltName=DNS:localhost,IP:127.0.0.1`: CA:TRUE.
    fn openssl_like(names: &[&str]) -> CertificateParams {
        let names = names
            .iter()
            .map(|name| name.to_string())
            .collect::<Vec<_>>();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
    }

    fn self_signed(params: &CertificateParams) -> CertificateDer<'static> {
        params
            .self_signed(&KeyPair::generate().unwrap())
            .unwrap()
            .der()
            .clone()
    }

    fn ca_file(certs: &[&CertificateDer<'static>]) -> CaFile {
        let certs = certs.iter().map(|cert| (*cert).clone()).collect();
        CaFile::new(certs, Arc::new(rustls::crypto::ring::default_provider())).unwrap()
    }

    fn verify(
        verifier: &CaFile,
        cert: &CertificateDer<'_>,
        name: &str,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let name = ServerName::try_from(name.to_owned()).unwrap();
        verifier.verify_server_cert(cert, &[], &name, &[], UnixTime::now())
    }

    fn at(year: i32) -> UnixTime {
        let date = rcgen::date_time_ymd(year, 1, 1);
        unix_time(date.unix_timestamp())
    }

    #[test]
    fn a_ca_true_self_signed_certificate_in_the_file_is_the_server_s_own() {
        let own = self_signed(&openssl_like(&["localhost", "127.0.0.1"]));
        let verifier = ca_file(&[&own]);
        verify(&verifier, &own, "localhost").unwrap();
        verify(&verifier, &own, "127.0.0.1").unwrap();

        match verify(&verifier, &own, "other.example") {
            Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                presented,
                ..
            })) => assert_eq!(presented.len(), 2, "{presented:?}"),
            other => panic!("expected a wrong name, got {other:?}"),
        }
        // A stranger with the same subject is not the server's own.
        let stranger = self_signed(&openssl_like(&["localhost"]));
        match verify(&verifier, &stranger, "localhost") {
            Err(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => {}
            other => panic!("expected an unknown issuer, got {other:?}"),
        }
    }

    #[test]
    fn a_ca_true_certificate_signed_by_a_ca_in_the_file_is_still_refused() {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let verifier = ca_file(&[ca.der()]);

        let leaf = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        let leaf = leaf.signed_by(&KeyPair::generate().unwrap(), &ca).unwrap();
        verify(&verifier, leaf.der(), "localhost").unwrap();

        let posing = openssl_like(&["localhost"])
            .signed_by(&KeyPair::generate().unwrap(), &ca)
            .unwrap();
        match verify(&verifier, posing.der(), "localhost") {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(other))) => {
                assert!(is_ca_used_as_end_entity(&other), "{other:?}")
            }
            other => panic!("expected a CA as a server's own, got {other:?}"),
        }
    }

    #[test]
    fn the_server_s_own_certificate_must_be_valid_now_and_meant_for_servers() {
        let mut params = openssl_like(&["localhost"]);
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2030, 1, 1);
        let own = self_signed(&params);
        let verifier = ca_file(&[&own]);
        let name = ServerName::try_from("localhost").unwrap();
        let refused = || CertificateError::BadEncoding.into();
        verifier
            .verify_own(&own, &name, at(2025), refused())
            .unwrap();
        match verifier.verify_own(&own, &name, at(2019), refused()) {
            Err(rustls::Error::InvalidCertificate(CertificateError::NotValidYetContext {
                not_before,
                ..
            })) => assert_eq!(not_before, at(2020)),
            other => panic!("expected not valid yet, got {other:?}"),
        }
        match verifier.verify_own(&own, &name, at(2031), refused()) {
            Err(rustls::Error::InvalidCertificate(CertificateError::ExpiredContext {
                not_after,
                ..
            })) => assert_eq!(not_after, at(2030)),
            other => panic!("expected expired, got {other:?}"),
        }
        // Whichever check sees it first, a whole verification refuses it too.
        let whole = verifier.verify_server_cert(&own, &[], &name, &[], at(2031));
        assert!(
            matches!(
                whole,
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::ExpiredContext { .. }
                ))
            ),
            "{whole:?}"
        );

        let mut params = openssl_like(&["localhost"]);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_only = self_signed(&params);
        match verify(&ca_file(&[&client_only]), &client_only, "localhost") {
            Err(rustls::Error::InvalidCertificate(CertificateError::InvalidPurpose)) => {}
            other => panic!("expected a wrong purpose, got {other:?}"),
        }
    }

    #[test]
    fn refusals_are_told_in_plain_words() {
        let tls = Tls {
            loaded: Arc::new(Mutex::new(Loaded {
                config: Arc::new(
                    rustls::ClientConfig::builder_with_provider(Arc::new(
                        rustls::crypto::ring::default_provider(),
                    ))
                    .with_safe_default_protocol_versions()
                    .unwrap()
                    .with_root_certificates(RootCertStore::empty())
                    .with_no_client_auth(),
                ),
                digest: [0; 32],
                refused: None,
            })),
            trust: Trust::CaFile("server.crt".into()),
            identity: None,
            presents_identity: false,
            server_name: None,
        };
        let said = |error: rustls::Error| {
            let io = std::io::Error::new(std::io::ErrorKind::InvalidData, error);
            tls.refusal(&io).map(|refusal| refusal.to_string())
        };
        assert_eq!(
            said(CertificateError::UnknownIssuer.into()).unwrap(),
            "the server's certificate is not signed by a CA in server.crt"
        );
        let wrong_name = CertificateError::NotValidForNameContext {
            expected: ServerName::try_from("127.0.0.1").unwrap(),
            presented: vec![
                "DnsName(\"other.example\")".to_owned(),
                "IpAddress(10.0.0.1)".to_owned(),
            ],
        };
        assert_eq!(
            said(wrong_name.into()).unwrap(),
            "the server's certificate is for other.example, 10.0.0.1, not 127.0.0.1"
        );
        let expired = CertificateError::ExpiredContext {
            time: at(2025),
            not_after: at(2021),
        };
        assert_eq!(
            said(expired.into()).unwrap(),
            "the server's certificate expired on Jan  1 00:00:00 2021 +00:00"
        );
        assert_eq!(
            said(rustls::Error::AlertReceived(
                AlertDescription::HandshakeFailure
            ))
            .unwrap(),
            "the server requires a client certificate (it sent alert HandshakeFailure)"
        );
        assert_eq!(said(rustls::Error::DecryptError), None);

        let garbage = rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType);
        let garbage = std::io::Error::new(std::io::ErrorKind::InvalidData, garbage);
        assert!(matches!(failed_handshake(garbage), HandshakeError::NotTls));
        let closed = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
        assert!(matches!(
            failed_handshake(closed),
            HandshakeError::ClosedByServer
        ));
    }

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
