//! The client's own checks of a server's certificate, where rustls's
//! WebPKI verifier alone would refuse what the Python arrpc package and
//! OpenSSL accept: a CA file that holds the server's own self-signed
//! certificate ([`CaFile`]), and a pinned certificate
//! ([`PinnedCertificate`]). Only which certificates are accepted differs
//! between them; [`Verifier`] checks handshake signatures for both, as
//! rustls's own verifiers do.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

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
    self, CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme,
};

/// A verifier that trusts the CAs in `certs`, the certificates of a CA
/// file, and a server's own certificate among them.
pub(super) fn ca_file(
    certs: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>, String> {
    let algorithms = provider.signature_verification_algorithms;
    Ok(Arc::new(Verifier {
        certificates: CaFile::new(certs, provider)?,
        algorithms,
    }))
}

/// A verifier that accepts exactly `certs` as the server's own.
pub(super) fn pinned(
    certs: Vec<CertificateDer<'static>>,
    provider: &CryptoProvider,
) -> Arc<dyn ServerCertVerifier> {
    Arc::new(Verifier {
        certificates: PinnedCertificate { certs },
        algorithms: provider.signature_verification_algorithms,
    })
}

/// Which server certificates a [`Verifier`] accepts: all that sets one
/// verifier apart from another.
trait Certificates: Debug + Send + Sync {
    /// Whether `end_entity` is the certificate of the server named
    /// `server_name`, as [`ServerCertVerifier::verify_server_cert`] decides.
    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error>;
}

/// Accepts the server certificates that `certificates` accepts, and checks
/// the server's handshake signatures with the crypto provider's algorithms,
/// as rustls's WebPKI verifier does.
#[derive(Debug)]
struct Verifier<C> {
    certificates: C,
    algorithms: WebPkiSupportedAlgorithms,
}

impl<C: Certificates> ServerCertVerifier for Verifier<C> {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.certificates
            .verify(end_entity, intermediates, server_name, ocsp_response, now)
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

impl Certificates for CaFile {
    fn verify(
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
}

/// Accepts exactly the pinned certificates, as the server's own.
#[derive(Debug)]
struct PinnedCertificate {
    certs: Vec<CertificateDer<'static>>,
}

impl Certificates for PinnedCertificate {
    fn verify(
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
}

/// Whether webpki refused a certificate as a CA certificate (CA:TRUE)
/// presented as a server's own.
pub(super) fn is_ca_used_as_end_entity(error: &OtherError) -> bool {
    matches!(
        error.0.downcast_ref::<webpki::Error>(),
        Some(webpki::Error::CaUsedAsEndEntity)
    )
}

/// Seconds since 1970 from a certificate, as rustls counts time.
fn unix_time(secs: i64) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(secs.try_into().unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa,
        KeyPair,
    };

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
        verifier.verify(cert, &[], &name, &[], UnixTime::now())
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
        let whole = verifier.verify(&own, &[], &name, &[], at(2031));
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
    fn handshake_signatures_are_checked_as_rustls_s_webpki_verifier_checks_them() {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let own = self_signed(&openssl_like(&["localhost"]));
        let mut roots = RootCertStore::empty();
        roots.add(own.clone()).unwrap();
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .unwrap();
        let schemes = webpki.supported_verify_schemes();
        let ca_file = super::ca_file(vec![own.clone()], provider.clone()).unwrap();
        assert_eq!(ca_file.supported_verify_schemes(), schemes);
        assert_eq!(
            pinned(vec![own], &provider).supported_verify_schemes(),
            schemes
        );
    }

    #[tokio::test]
    async fn both_verifiers_take_a_handshake_over_tls_1_2_and_1_3() {
        use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
        use tokio_rustls::{TlsAcceptor, TlsConnector};

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = KeyPair::generate().unwrap();
        let own = openssl_like(&["localhost"])
            .self_signed(&key)
            .unwrap()
            .der()
            .clone();
        let key = PrivateKeyDer::from(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![own.clone()], key)
            .unwrap();
        let server = TlsAcceptor::from(Arc::new(server));
        let verifiers = [
            super::ca_file(vec![own.clone()], provider.clone()).unwrap(),
            pinned(vec![own], &provider),
        ];
        for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
            for verifier in &verifiers {
                let client = rustls::ClientConfig::builder_with_provider(provider.clone())
                    .with_protocol_versions(&[version])
                    .unwrap()
                    .dangerous()
                    .with_custom_certificate_verifier(verifier.clone())
                    .with_no_client_auth();
                let (near, far) = tokio::io::duplex(1 << 16);
                let name = ServerName::try_from("localhost").unwrap();
                let (connected, accepted) = tokio::join!(
                    TlsConnector::from(Arc::new(client)).connect(name, near),
                    server.accept(far),
                );
                let connected = connected.unwrap_or_else(|e| panic!("{version:?}: {e}"));
                let (_, session) = connected.get_ref();
                accepted.unwrap();
                assert_eq!(session.protocol_version(), Some(version.version));
            }
        }
    }
}
