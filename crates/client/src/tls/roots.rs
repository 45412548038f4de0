//! The CAs this machine trusts ([`Trust::System`](super::Trust::System)):
//! the operating system's certificate store, or what `SSL_CERT_FILE` and
//! `SSL_CERT_DIR` name when either is set, as curl and openssl read them.
//! Stores often hold a certificate or two that cannot be used, so those are
//! skipped with a warning, and a store with nothing usable says where it
//! looked and what to do.

use tokio_rustls::rustls::RootCertStore;

use super::TlsError;

/// The variables that replace the operating system's certificate store
/// when set, as `NAME=value`.
pub(super) fn store_variables() -> Vec<String> {
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
pub(super) fn system_roots(
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

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
