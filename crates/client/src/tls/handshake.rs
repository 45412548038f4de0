//! Why a TLS handshake failed, in words a user can act on
//! ([`HandshakeError`]): rustls's errors and the server's alerts, told
//! against whom the settings trust and whether they present a certificate,
//! so the user learns which file or setting to change.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::rustls::pki_types::UnixTime;
use tokio_rustls::rustls::{self, AlertDescription, CertificateError};

use super::verify::is_ca_used_as_end_entity;
use super::{Tls, Trust};

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

impl Tls {
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

/// Why a handshake failed that neither side's settings refused.
pub(super) fn failed_handshake(error: std::io::Error) -> HandshakeError {
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio_rustls::rustls::RootCertStore;
    use tokio_rustls::rustls::pki_types::ServerName;

    use super::*;
    use crate::tls::Loaded;

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
        let new_year_2021 = UnixTime::since_unix_epoch(Duration::from_secs(1_609_459_200));
        let expired = CertificateError::ExpiredContext {
            time: UnixTime::now(),
            not_after: new_year_2021,
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
}
