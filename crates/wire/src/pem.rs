//! TLS certificates and private keys from PEM files, checked the way both
//! ends need them checked before they start.
//!
//! A certificate chain that has expired (or is not valid yet) is refused
//! with its dates, so the operator hears of it at start rather than from
//! every peer's failed handshake. A private key or secret file readable by
//! group or others is refused as ssh refuses one, except that a file the
//! kubelet mounted may be group-readable (see [`secret_mode`]).

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

/// A certificate or key file that cannot be used, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: no PEM certificate (`-----BEGIN CERTIFICATE-----`) found", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: not a PEM file: {reason}", path.display())]
    Malformed { path: PathBuf, reason: String },
    #[error("{}: certificate #{index} is not valid X.509: {reason}", path.display())]
    NotX509 {
        path: PathBuf,
        index: usize,
        reason: String,
    },
    #[error("{}: certificate #{index} ({subject}) expired on {not_after}", path.display())]
    Expired {
        path: PathBuf,
        index: usize,
        subject: String,
        not_after: String,
    },
    #[error("{}: certificate #{index} ({subject}) is not valid before {not_before}", path.display())]
    NotYetValid {
        path: PathBuf,
        index: usize,
        subject: String,
        not_before: String,
    },
    #[error("{}: no PEM private key (PKCS#8, PKCS#1 or SEC1) found", path.display())]
    NoKey { path: PathBuf },
    #[error(
        "{}: a key or secret file must not be accessible by group or others (mode {mode:04o}); run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    KeyPermissions { path: PathBuf, mode: u32 },
    #[error(
        "{}: a key or secret file must not be accessible by others or writable by its group (mode {mode:04o}); \
         it is in a volume the kubelet manages, so set `defaultMode: 0440` (or 0400) on the Secret \
         volume, or `mode` on its item, instead of chmod",
        path.display()
    )]
    MountedKeyPermissions { path: PathBuf, mode: u32 },
}

/// The certificates in a CA or pinned-certificate file, in file order.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let text = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PemError::Malformed {
            path: path.to_owned(),
            reason: pem_reason(&e),
        })?;
    if certs.is_empty() {
        return Err(PemError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// A certificate chain presented to peers (leaf first); every certificate
/// in it must be valid now.
pub fn certificate_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = certificates(path)?;
    let now = UnixTime::now().as_secs() as i64;
    for (index, cert) in certs.iter().enumerate() {
        let index = index + 1;
        let (_, parsed) =
            x509_parser::parse_x509_certificate(cert).map_err(|e| PemError::NotX509 {
                path: path.to_owned(),
                index,
                reason: e.to_string(),
            })?;
        let validity = parsed.validity();
        if validity.not_after.timestamp() < now {
            return Err(PemError::Expired {
                path: path.to_owned(),
                index,
                subject: parsed.subject().to_string(),
                not_after: validity.not_after.to_string(),
            });
        }
        if validity.not_before.timestamp() > now {
            return Err(PemError::NotYetValid {
                path: path.to_owned(),
                index,
                subject: parsed.subject().to_string(),
                not_before: validity.not_before.to_string(),
            });
        }
    }
    Ok(certs)
}

/// The private key in `path`, which only its owner may access.
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    secret_mode(path)?;
    let text = read(path)?;
    PrivateKeyDer::from_pem_slice(&text).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => PemError::NoKey {
            path: path.to_owned(),
        },
        e => PemError::Malformed {
            path: path.to_owned(),
            reason: pem_reason(&e),
        },
    })
}

/// Refuses a key or secret file that group or others can access, as ssh
/// does. In a folder the kubelet manages (a Secret, projected or CSI volume)
/// the group may read it too: Kubernetes hands secrets to a pod's group
/// (`fsGroup`, `defaultMode: 0440`, csi-driver-spiffe's 0440), and such a
/// volume is read-only, so chmod is no fix there. Others never may, which
/// refuses a Secret volume's default 0644 with the one-line manifest fix.
pub fn secret_mode(path: &Path) -> Result<(), PemError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|source| PemError::Read {
                path: path.to_owned(),
                source,
            })?
            .permissions()
            .mode()
            & 0o7777;
        let path = path.to_owned();
        if kubelet_managed(&path) {
            if mode & 0o027 != 0 {
                return Err(PemError::MountedKeyPermissions { path, mode });
            }
        } else if mode & 0o077 != 0 {
            return Err(PemError::KeyPermissions { path, mode });
        }
    }
    Ok(())
}

/// Whether `path` sits in a folder written by the kubelet's atomic writer,
/// which keeps the current files behind a `..data` symlink beside them.
pub fn kubelet_managed(path: &Path) -> bool {
    path.parent()
        .and_then(|folder| folder.join("..data").symlink_metadata().ok())
        .is_some_and(|meta| meta.file_type().is_symlink())
}

/// A PEM parse error in words: the parser prints the lines it means as
/// byte lists.
fn pem_reason(e: &rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error;
    match e {
        Error::MissingSectionEnd { end_marker } => format!(
            "no `-----END {}-----` line (is the file cut short?)",
            String::from_utf8_lossy(end_marker)
        ),
        Error::IllegalSectionStart { line } => format!(
            "malformed `-----BEGIN` line `{}`",
            String::from_utf8_lossy(line).trim()
        ),
        e => e.to_string(),
    }
}

/// SHA-256 over `parts`, each prefixed with its length so that bytes moving
/// from one part to the next still change it: what a set of certificate and
/// key files (or an SVID) holds, to tell a change from none.
pub fn fingerprint<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part);
    }
    hash.finalize().into()
}

/// [`fingerprint`] of the files' contents, in order.
pub fn files_fingerprint<'a>(
    files: impl IntoIterator<Item = &'a Path>,
) -> Result<[u8; 32], PemError> {
    let contents = files.into_iter().map(read).collect::<Result<Vec<_>, _>>()?;
    Ok(fingerprint(contents.iter().map(Vec::as_slice)))
}

fn read(path: &Path) -> Result<Vec<u8>, PemError> {
    std::fs::read(path).map_err(|source| PemError::Read {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        path
    }

    #[test]
    fn a_valid_chain_and_owner_only_key_load() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let cert_path = write(dir.path(), "c.pem", &cert.pem(), 0o644);
        let key_path = write(dir.path(), "k.pem", &key.serialize_pem(), 0o600);
        assert_eq!(certificate_chain(&cert_path).unwrap().len(), 1);
        assert!(private_key(&key_path).is_ok());
    }

    #[test]
    fn expired_certificates_are_refused_with_their_date() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        let cert = params.self_signed(&key).unwrap();
        let path = write(dir.path(), "old.pem", &cert.pem(), 0o644);
        let err = certificate_chain(&path).unwrap_err().to_string();
        assert!(err.contains("old.pem: certificate #1"), "{err}");
        assert!(err.contains("expired on") && err.contains("2021"), "{err}");
        // A CA or pinned file is only parsed, not judged by date.
        assert!(certificates(&path).is_ok());
    }

    #[cfg(unix)]
    #[test]
    fn keys_readable_by_others_are_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let path = write(dir.path(), "k.pem", &key.serialize_pem(), 0o644);
        let err = private_key(&path).unwrap_err().to_string();
        assert!(err.contains("mode 0644"), "{err}");
        assert!(err.contains("chmod 600"), "{err}");
    }

    /// Lays `key` out as the kubelet's atomic writer does: the real file in
    /// a timestamped folder, `..data` linking to it, and the visible name a
    /// link through `..data`.
    #[cfg(unix)]
    fn kubelet_volume(dir: &Path, key: &str, mode: u32) -> PathBuf {
        use std::os::unix::fs::symlink;
        let stamp = "..2026_11_28_18_00_00.123456789";
        std::fs::create_dir(dir.join(stamp)).unwrap();
        write(&dir.join(stamp), "tls.key", key, mode);
        symlink(stamp, dir.join("..data")).unwrap();
        symlink("..data/tls.key", dir.join("tls.key")).unwrap();
        dir.join("tls.key")
    }

    #[cfg(unix)]
    #[test]
    fn mounted_keys_may_be_group_readable_but_never_others() {
        let pem = rcgen::KeyPair::generate().unwrap().serialize_pem();
        for mode in [0o400, 0o440, 0o600, 0o640] {
            let dir = tempfile::tempdir().unwrap();
            let path = kubelet_volume(dir.path(), &pem, mode);
            assert!(private_key(&path).is_ok(), "mode {mode:o}");
        }
        for mode in [0o644, 0o444, 0o660, 0o604] {
            let dir = tempfile::tempdir().unwrap();
            let path = kubelet_volume(dir.path(), &pem, mode);
            let err = private_key(&path).unwrap_err().to_string();
            assert!(err.contains(&format!("mode {mode:04o}")), "{err}");
            assert!(err.contains("defaultMode: 0440"), "{err}");
            assert!(!err.contains("chmod 600"), "{err}");
        }
        // The same group-readable file outside such a folder is refused.
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "tls.key", &pem, 0o440);
        let err = private_key(&path).unwrap_err().to_string();
        assert!(
            err.contains("mode 0440") && err.contains("chmod 600"),
            "{err}"
        );
    }

    #[test]
    fn wrong_formats_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = write(dir.path(), "g.pem", "not pem at all\n", 0o600);
        assert!(matches!(
            certificates(&garbage),
            Err(PemError::NoCertificate { .. })
        ));
        assert!(matches!(private_key(&garbage), Err(PemError::NoKey { .. })));
        let key = rcgen::KeyPair::generate().unwrap().serialize_pem();
        let cut = write(dir.path(), "cut.pem", &key[..key.len() / 2], 0o600);
        let err = private_key(&cut).unwrap_err().to_string();
        assert!(
            err.contains("cut.pem: not a PEM file: no `-----END PRIVATE KEY-----` line"),
            "{err}"
        );
        let missing = dir.path().join("missing.pem");
        let err = certificates(&missing).unwrap_err().to_string();
        assert!(err.contains("missing.pem: cannot read"), "{err}");
    }
}
