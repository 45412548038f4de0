//! Certificates made fresh for each test with rcgen, or with the `openssl`
//! command as users make them; no key is committed.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ClientConnection, RootCertStore, StreamOwned};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A certificate file and its key file (mode 600), in a test's folder.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A certificate authority that issues server and client certificates.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// The CA certificate (PEM), to trust.
    pub cert: PathBuf,
}

/// The names a local test server answers to.
pub fn local_names() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into()]
}

impl Ca {
    pub fn new(dir: &Path, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let cert = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&cert, issuer.pem()).unwrap();
        Ca { issuer, cert }
    }

    /// A server certificate for `names`.
    pub fn server(&self, dir: &Path, file: &str, names: Vec<String>) -> CertFiles {
        self.issue(dir, file, names, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate for mutual TLS.
    pub fn client(&self, dir: &Path, file: &str) -> CertFiles {
        self.issue(
            dir,
            file,
            vec!["client".into()],
            ExtendedKeyUsagePurpose::ClientAuth,
        )
    }

    /// A client certificate that expired on 2021-01-01.
    pub fn expired_client(&self, dir: &Path, file: &str) -> CertFiles {
        let mut params = CertificateParams::new(vec!["client".to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        write_pair(dir, file, &cert.pem(), &key)
    }

    /// A client certificate for a workload: its SPIFFE ID (a URI SAN) and
    /// DNS names, as cert-manager or SPIRE issue them.
    pub fn workload(
        &self,
        dir: &Path,
        file: &str,
        spiffe_id: Option<&str>,
        dns: &[&str],
    ) -> CertFiles {
        let mut params =
            CertificateParams::new(dns.iter().map(|d| d.to_string()).collect::<Vec<_>>()).unwrap();
        if let Some(id) = spiffe_id {
            params
                .subject_alt_names
                .push(rcgen::SanType::URI(id.try_into().unwrap()));
        }
        params.distinguished_name.push(DnType::CommonName, file);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        write_pair(dir, file, &cert.pem(), &key)
    }

    fn issue(
        &self,
        dir: &Path,
        file: &str,
        names: Vec<String>,
        usage: ExtendedKeyUsagePurpose,
    ) -> CertFiles {
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, file);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        write_pair(dir, file, &cert.pem(), &key)
    }
}

/// A self-signed server certificate for the local names.
pub fn self_signed(dir: &Path, file: &str) -> CertFiles {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(local_names())
        .unwrap()
        .self_signed(&key)
        .unwrap();
    write_pair(dir, file, &cert.pem(), &key)
}

/// A self-signed certificate that expired on 2021-01-01.
pub fn expired(dir: &Path, file: &str) -> CertFiles {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(local_names()).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let cert = params.self_signed(&key).unwrap();
    write_pair(dir, file, &cert.pem(), &key)
}

/// A self-signed certificate valid only from 2099-01-01.
pub fn not_yet_valid(dir: &Path, file: &str) -> CertFiles {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(local_names()).unwrap();
    params.not_before = rcgen::date_time_ymd(2099, 1, 1);
    params.not_after = rcgen::date_time_ymd(2100, 1, 1);
    let cert = params.self_signed(&key).unwrap();
    write_pair(dir, file, &cert.pem(), &key)
}

/// A self-signed certificate made as every arrpc tutorial makes one:
/// `openssl req -x509 -newkey rsa:2048 -nodes -subj /CN={common_name}
/// -addext subjectAltName={names} -keyout {file}.key -out {file}.crt`,
/// which OpenSSL marks CA:TRUE. The key is made mode 600, as the host
/// requires.
pub fn openssl_self_signed(dir: &Path, file: &str, common_name: &str, names: &str) -> CertFiles {
    let cert = dir.join(format!("{file}.crt"));
    let key = dir.join(format!("{file}.key"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes"])
        .args(["-subj", &format!("/CN={common_name}")])
        .args(["-addext", &format!("subjectAltName={names}")])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap_or_else(|e| {
            panic!("these tests need the `openssl` command (apt-get install openssl): {e}")
        });
    assert!(
        out.status.success(),
        "openssl req failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("CA:TRUE"),
        "this openssl made a certificate without CA:TRUE, unlike the one users report"
    );
    set_mode(&key, 0o600);
    CertFiles { cert, key }
}

fn write_pair(dir: &Path, file: &str, cert_pem: &str, key: &KeyPair) -> CertFiles {
    let cert = dir.join(format!("{file}.pem"));
    let key_path = dir.join(format!("{file}.key"));
    std::fs::write(&cert, cert_pem).unwrap();
    write_private(&key_path, &key.serialize_pem());
    CertFiles {
        cert,
        key: key_path,
    }
}

/// Writes a file only its owner may read, as keys and secrets must be.
pub fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    set_mode(path, 0o600);
}

pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// rustls client settings trusting the CA in `ca`, presenting `identity`
/// when given; resumption on, as rustls has it by default.
pub fn rustls_client(ca: &Path, identity: Option<&CertFiles>) -> Arc<rustls::ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    Arc::new(match identity {
        Some(files) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(&files.cert)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_file(&files.key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    })
}

/// A TLS connection to `addr` as `localhost`, its handshake done.
pub fn tls_connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> StreamOwned<ClientConnection, TcpStream> {
    try_tls_connect(addr, config).unwrap()
}

/// [`tls_connect`], for a handshake that may fail.
pub fn try_tls_connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<StreamOwned<ClientConnection, TcpStream>> {
    let conn = ClientConnection::new(config, "localhost".try_into().unwrap()).unwrap();
    let socket = TcpStream::connect(addr)?;
    socket.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut stream = StreamOwned::new(conn, socket);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(stream)
}

/// A one-byte message (a fixint) on an open connection, which an echo
/// handler serving bare messages answers with the same byte.
pub fn echo_byte(stream: &mut (impl std::io::Read + std::io::Write), byte: u8) {
    stream.write_all(&[byte]).unwrap();
    let mut reply = [0u8; 1];
    stream.read_exact(&mut reply).unwrap();
    assert_eq!(reply, [byte]);
}
