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

mod handshake;
mod roots;
mod verify;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrpc_wire::pem::{self, PemError};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{self, RootCertStore};

pub use handshake::HandshakeError;

use handshake::failed_handshake;

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
                verify::ca_file(pem::certificates(path)?, provider.clone()).map_err(|reason| {
                    TlsError::Certificate {
                        path: path.clone(),
                        reason,
                    }
                })?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(verifier)
        }
        Trust::System => builder.with_root_certificates(roots::system_roots(
            rustls_native_certs::load_native_certs(),
            &roots::store_variables(),
        )?),
        Trust::PublicCas => builder.with_root_certificates(RootCertStore::from_iter(
            webpki_roots::TLS_SERVER_ROOTS.iter().cloned(),
        )),
        Trust::Pinned(path) => builder
            .dangerous()
            .with_custom_certificate_verifier(verify::pinned(pem::certificates(path)?, &provider)),
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

/// The host part of `host:port` or `[v6]:port`.
pub(crate) fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(test)]
mod tests {
    use super::*;

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
