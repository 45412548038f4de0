//! Our client and `arrpc-host` together: mutual TLS, replay protection,
//! and bad input around signatures and TLS.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arrpc_client::tls::{Identity, Tls, Trust};
use arrpc_client::{BlockingClient, ClientConfig, Error};
use arrpc_host::config::{AuthConfig, Config, SecretSource, TlsConfig};
use arrpc_wire::envelope::{self, Stamp};
use arrpc_wire::reply::AUTH_FAILED;
use common::certs::{self, Ca, CertFiles};
use common::*;
use tokio_rustls::rustls;

const AUTH_REPLY: &str = "arrpc.error.AuthException: ";

/// Messages signed with the inline secret "k".
fn secret_k() -> AuthConfig {
    AuthConfig {
        secrets: vec![SecretSource::Value("k".into())],
        ..AuthConfig::default()
    }
}

fn auth_failed() -> String {
    format!("{AUTH_REPLY}{AUTH_FAILED}")
}

/// The echo handler, every setting at its default.
fn echo() -> Config {
    serving(vec![handler_config("echo", "echo")])
}

/// The echo handler with `[auth]` as given.
fn signed(auth: AuthConfig) -> Config {
    Config { auth, ..echo() }
}

/// A host serving `config` (the echo handler and some settings).
fn echo_host(config: Config, args: &[&str]) -> Host {
    Host::start_with(write_config_value(&config), args)
}

fn tls_args(files: &CertFiles) -> Vec<String> {
    vec![
        "--tls-cert".into(),
        files.cert.display().to_string(),
        "--tls-key".into(),
        files.key.display().to_string(),
    ]
}

/// The echo host with `config`, serving TLS with `cert` given on the
/// command line.
fn tls_echo_host(config: Config, cert: &CertFiles) -> Host {
    let args = tls_args(cert);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    echo_host(config, &args)
}

/// The echo host with `config`, serving TLS with a self-signed
/// certificate; the folder holds the files.
fn self_signed_echo_host(config: Config) -> (tempfile::TempDir, CertFiles, Host) {
    let dir = tempfile::tempdir().unwrap();
    let own = certs::self_signed(dir.path(), "own");
    let host = tls_echo_host(config, &own);
    (dir, own, host)
}

fn client_config(host: &Host, tls: Option<Tls>) -> ClientConfig {
    let mut config = ClientConfig::new(host.addr.to_string());
    config.connect_attempts = 1;
    config.timeout = Some(Duration::from_secs(10));
    config.tls = tls;
    config
}

/// Whether a second handshake with the same client settings resumes the
/// first one's session (after a message, so its tickets have arrived).
fn second_handshake_resumes(host: &Host, ca: &Path, identity: Option<&CertFiles>) -> bool {
    let config = certs::rustls_client(ca, identity);
    let mut first = certs::tls_connect(host.addr, config.clone());
    first.write_all(&[0x05]).unwrap();
    let mut reply = [0u8];
    first.read_exact(&mut reply).unwrap();
    let second = certs::tls_connect(host.addr, config);
    second.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
}

/// A resumed handshake skips the client certificate's check, so where
/// client certificates are verified the host offers no resumption; without
/// them it does (which shows the probe can see one).
#[test]
fn handshakes_that_verify_client_certificates_are_never_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "clients");
    let server = ca.server(dir.path(), "server", certs::local_names());
    let client = ca.client(dir.path(), "client");
    let plain = tls_echo_host(echo(), &server);
    assert!(second_handshake_resumes(&plain, &ca.cert, None));

    let mut args = tls_args(&server);
    args.extend(["--tls-client-ca".into(), ca.cert.display().to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mutual = echo_host(echo(), &args);
    assert!(!second_handshake_resumes(&mutual, &ca.cert, Some(&client)));
}

#[test]
fn mutual_tls_accepts_only_certificates_from_the_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "clients");
    let server = ca.server(dir.path(), "server", certs::local_names());
    let good = ca.client(dir.path(), "good");
    let stranger = Ca::new(dir.path(), "stranger").client(dir.path(), "stranger");
    let mut args = tls_args(&server);
    args.extend(["--tls-client-ca".into(), ca.cert.display().to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let host = echo_host(echo(), &args);
    let trust = Trust::CaFile(ca.cert.clone());

    let identity = |files: &CertFiles| Identity {
        cert: files.cert.clone(),
        key: files.key.clone(),
    };
    let tls = Tls::new(&trust, Some(&identity(&good))).unwrap();
    let mut client = BlockingClient::new(client_config(&host, Some(tls))).unwrap();
    assert_eq!(client.send::<_, String>("in").unwrap(), "in");
    assert_eq!(client.send::<_, String>("again").unwrap(), "again");

    for (name, tls, said) in [
        (
            "no certificate",
            Tls::new(&trust, None).unwrap(),
            "the server requires a client certificate (it sent alert CertificateRequired)",
        ),
        (
            "another CA's certificate",
            Tls::new(&trust, Some(&identity(&stranger))).unwrap(),
            "the server refused our client certificate (it sent alert UnknownCA)",
        ),
    ] {
        let mut client = BlockingClient::new(client_config(&host, Some(tls))).unwrap();
        match client.send::<_, String>("in") {
            Err(Error::Tls { source, .. }) => assert_eq!(source.to_string(), said, "{name}"),
            other => panic!("{name}: expected a refused handshake, got {other:?}"),
        }
    }
    let log = host.wait_for_log("UnknownIssuer");
    assert!(log.contains("TLS handshake failed"), "{log}");
    assert!(log.contains("peer sent no certificates"), "{log}");

    // `arrpc-host send` presents a certificate too.
    let out = host_command()
        .args(["send", "--addr", &host.addr.to_string()])
        .args(["--tls-ca", ca.cert.to_str().unwrap()])
        .args(["--tls-cert", good.cert.to_str().unwrap()])
        .args(["--tls-key", good.key.to_str().unwrap()])
        .arg("[1]")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "[1]\n");

    // Without one, `send` says which flags present one, for bare messages
    // and for calls alike.
    for call in [&[][..], &["--handler", "echo"]] {
        let out = host_command()
            .args(["send", "--addr", &host.addr.to_string()])
            .args(["--tls-ca", ca.cert.to_str().unwrap()])
            .args(call)
            .arg("[1]")
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!(
                "error: TLS handshake with {} failed: the server requires a client certificate \
                 (it sent alert CertificateRequired)\n\
                 hint: present a client certificate with --tls-cert FILE --tls-key FILE\n",
                host.addr
            ),
            "{call:?}"
        );
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A host that requires stamped envelopes signed with "stamp-secret".
fn replay_host() -> (Host, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    certs::write_private(&secret, "stamp-secret");
    let host = echo_host(
        signed(AuthConfig {
            secrets: vec![SecretSource::File(secret)],
            replay_protection: true,
            replay_window: Duration::from_secs(5),
            ..AuthConfig::default()
        }),
        &[],
    );
    (host, dir)
}

#[test]
fn replay_protection_refuses_replays_stale_stamps_and_seed_envelopes() {
    let (host, dir) = replay_host();
    let mut config = client_config(&host, None);
    config.auth_secret = Some(b"stamp-secret".to_vec());
    config.replay_protection = true;
    let mut client = BlockingClient::new(config).unwrap();
    for n in 0..3u8 {
        assert_eq!(client.send::<_, u8>(&n).unwrap(), n);
    }

    let mut wire = host.connect();
    let message = encode(&str_value("once"));
    let stamp = |timestamp_ms| Stamp {
        timestamp_ms,
        nonce: b"a-fresh-nonce-01",
    };
    let envelope = envelope::sign_stamped(b"stamp-secret", &message, stamp(now_ms()));
    assert_eq!(decode(&wire.call(&envelope)), str_value("once"));
    assert_eq!(error_text(&wire.call(&envelope)), Some(auth_failed()));
    host.wait_for_log("replayed envelope");

    let stale = stamp(now_ms() - 60_000);
    let stale = envelope::sign_stamped(
        b"stamp-secret",
        &message,
        Stamp {
            nonce: b"another-nonce-02",
            ..stale
        },
    );
    assert_eq!(error_text(&wire.call(&stale)), Some(auth_failed()));
    host.wait_for_log("outside the 5s window");

    let seed = envelope::sign(b"stamp-secret", &message);
    assert_eq!(error_text(&wire.call(&seed)), Some(auth_failed()));
    host.wait_for_log("no `arrpc.ts` field");

    // `arrpc-host send` stamps too.
    let out = host_command()
        .args(["send", "--addr", &host.addr.to_string()])
        .args([
            "--auth-secret-file",
            dir.path().join("secret").to_str().unwrap(),
        ])
        .args(["--replay-protection", "\"sent\""])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "\"sent\"\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `{"arrpc.sign": sign, "data": data}` with values already encoded.
fn raw_envelope(sign: &[u8], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x82];
    out.extend(encode(&str_value("arrpc.sign")));
    out.extend(sign);
    out.extend(encode(&str_value("data")));
    out.extend(data);
    out
}

#[test]
fn malformed_envelopes_get_a_clear_error_and_never_reach_the_handler() {
    let host = echo_host(signed(secret_k()), &["--debug"]);
    host.wait_for_log("is written inline");
    let mut wire = host.connect();

    // Signature is not hex.
    let not_hex = raw_envelope(
        &encode(&str_value("zz")),
        &encode(&rmpv::Value::Binary(vec![1])),
    );
    assert_eq!(error_text(&wire.call(&not_hex)), Some(auth_failed()));
    host.wait_for_log("reason=signature is not hex");

    // `data` is a string, not binary.
    let sign = encode(&str_value(&hex_mac(b"k", &[0xa1, b'x'])));
    let as_string = raw_envelope(&sign, &encode(&str_value("x")));
    assert_eq!(error_text(&wire.call(&as_string)), Some(auth_failed()));
    host.wait_for_log("no `data` field");

    // `data` is binary, correctly signed, but not one MessagePack value.
    for bad in [&[0x92, 0x01][..], &[0xc1], &[0x01, 0x02]] {
        let envelope = envelope::sign(b"k", bad);
        let reply = error_text(&wire.call(&envelope)).unwrap();
        assert_eq!(
            reply,
            "arrpc.error.RpcException: signed data is not exactly one MessagePack value"
        );
    }

    // A truncated envelope, then the peer leaves: logged, nothing else hurt.
    let good = envelope::sign(b"k", &encode(&str_value("fine")));
    let mut truncated = host.connect();
    truncated.write(&good[..good.len() / 2]);
    drop(truncated);
    host.wait_for_log("connection closed in the middle of a message");
    assert_eq!(decode(&wire.call(&good)), str_value("fine"));
}

#[test]
fn a_flood_of_bad_signatures_is_answered_in_full_but_logged_within_a_budget() {
    let host = echo_host(signed(secret_k()), &[]);
    let mut wire = host.connect();
    let forged = envelope::sign(b"not the secret", &encode(&str_value("x")));
    let flood = 300;
    wire.write(&forged.repeat(flood));
    for _ in 0..flood {
        assert_eq!(error_text(&wire.read().unwrap()), Some(auth_failed()));
    }
    // The next window's first line says how many were held back.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(error_text(&wire.call(&forged)), Some(auth_failed()));
    // Every refusal is either a line or counted in a later line's
    // `suppressed`; the log reader may lag a moment behind the replies.
    let tally = |log: &str| throttled_lines(log, "refusing message");
    let refusals = flood as u64 + 1;
    wait_until(
        host.with_log("every refusal logged or counted"),
        Duration::from_secs(10),
        || {
            let (lines, suppressed) = tally(&host.log());
            lines + suppressed >= refusals
        },
    );
    let (lines, suppressed) = tally(&host.log());
    assert_eq!(lines + suppressed, refusals, "{}", host.log());
    assert!(lines <= 40, "{lines} refusal lines logged");
    assert!(suppressed > 0);
}

/// The hex MAC a plain signed envelope carries for `data`.
fn hex_mac(secret: &[u8], data: &[u8]) -> String {
    let rmpv::Value::Map(fields) = decode(&envelope::sign(secret, data)) else {
        panic!("an envelope is a map");
    };
    let (_, mac) = fields
        .into_iter()
        .find(|(key, _)| key.as_str() == Some("arrpc.sign"))
        .unwrap();
    mac.as_str().unwrap().to_owned()
}

#[test]
fn garbage_and_stalled_handshakes_are_logged_and_others_carry_on() {
    // The command line's certificate replaces these files.
    let (_dir, own, host) = self_signed_echo_host(Config {
        tls: Some(TlsConfig {
            handshake_timeout: Duration::from_secs(1),
            ..TlsConfig::new("unused.pem".into(), "unused.key".into())
        }),
        ..echo()
    });
    let tls = || Some(Tls::new(&Trust::Pinned(own.cert.clone()), None).unwrap());

    // A stalled handshake holds up no one, and is closed at the timeout.
    let mut stalled = TcpStream::connect(host.addr).unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut client = BlockingClient::new(client_config(&host, tls())).unwrap();
    assert_eq!(client.send::<_, String>("meanwhile").unwrap(), "meanwhile");
    host.wait_for_log("TLS handshake not finished within 1s");
    // Closed by the host, well before the read times out.
    let mut rest = Vec::new();
    let read = stalled.read_to_end(&mut rest);
    assert!(read.is_ok() && rest.is_empty(), "{read:?} {rest:?}");

    // Plain arrpc (or anything else) where a handshake belongs.
    let mut garbage = TcpStream::connect(host.addr).unwrap();
    garbage
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    std::io::Write::write_all(&mut garbage, &encode(&str_value("plain text, not TLS"))).unwrap();
    // The host answers with a fatal `decode_error` TLS alert, then closes.
    let mut rest = Vec::new();
    let read = garbage.read_to_end(&mut rest);
    assert!(read.is_ok(), "{read:?}");
    assert_eq!(rest, [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 50]);
    let log = host.wait_for_log("TLS handshake failed");
    assert!(log.contains("peer=127.0.0.1:"), "{log}");
    assert_eq!(client.send::<_, String>("still").unwrap(), "still");
}

/// `arrpc-host send "hi"` to `host` with `args`, reading the system
/// certificate store from `ca_file` alone.
fn send_hi(host: &Host, args: &[&str], ca_file: &Path) -> Output {
    host_command()
        .args(["send", "--retries", "1", "--addr", &host.addr.to_string()])
        .args(args)
        .arg("\"hi\"")
        .env("SSL_CERT_FILE", ca_file)
        .env_remove("SSL_CERT_DIR")
        .output()
        .unwrap()
}

#[test]
fn send_tls_trusts_a_ca_in_the_system_store_and_the_mozilla_set_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "company");
    let server = ca.server(dir.path(), "server", certs::local_names());
    let host = tls_echo_host(echo(), &server);

    let system = send_hi(&host, &["--tls"], &ca.cert);
    assert_eq!(
        String::from_utf8_lossy(&system.stdout),
        "\"hi\"\n",
        "{}",
        String::from_utf8_lossy(&system.stderr)
    );
    let named = send_hi(
        &host,
        &[
            "--tls",
            "--tls-roots",
            "system",
            "--tls-server-name",
            "localhost",
        ],
        &ca.cert,
    );
    assert_eq!(String::from_utf8_lossy(&named.stdout), "\"hi\"\n");

    let mozilla = send_hi(&host, &["--tls", "--tls-roots", "mozilla"], &ca.cert);
    let stderr = String::from_utf8_lossy(&mozilla.stderr);
    assert_eq!(mozilla.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("is not signed by a public CA (the Mozilla root set)"),
        "{stderr}"
    );

    // A store with no certificate in it: one clear line, no handshake.
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "no certificates here\n").unwrap();
    let out = send_hi(&host, &["--tls"], &empty);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "error: no usable CA certificate in SSL_CERT_FILE={}; while SSL_CERT_FILE or \
             SSL_CERT_DIR is set, the system store is not read\n",
            empty.display()
        )
    );
}

#[test]
fn send_pins_a_self_signed_certificate_and_refuses_tls_options_without_tls() {
    let (_dir, own, host) = self_signed_echo_host(echo());
    let send = |extra: &[&str]| send_hi(&host, extra, &own.cert);
    let pinned = send(&["--tls-ca", own.cert.to_str().unwrap(), "--tls-self-signed"]);
    assert_eq!(String::from_utf8_lossy(&pinned.stdout), "\"hi\"\n");
    // A client certificate, or a choice of roots, needs TLS to be asked for;
    // a CA file leaves no roots to choose.
    for (stray, says) in [
        (
            &[
                "--tls-cert",
                own.cert.to_str().unwrap(),
                "--tls-key",
                own.key.to_str().unwrap(),
            ][..],
            "required arguments were not provided:\n  <--tls|--tls-ca <F>>",
        ),
        (
            &["--tls-roots", "mozilla"],
            "required arguments were not provided:\n  --tls",
        ),
        (
            &[
                "--tls",
                "--tls-ca",
                own.cert.to_str().unwrap(),
                "--tls-roots",
                "mozilla",
            ],
            "'--tls-ca <F>' cannot be used with '--tls-roots <ROOTS>'",
        ),
    ] {
        let out = send(stray);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stray:?}: {stderr}");
        // A usage error names what is missing or clashes, and sends nothing.
        assert!(stderr.contains(says), "{stray:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{stray:?}");
    }
}

/// Starts the host expecting it to refuse; returns its stderr.
fn refuses(config: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    start_refused(
        &format!("{config}\n{}", handler("echo", "echo", "")),
        args,
        env,
    )
}

#[test]
fn unusable_certificates_keys_and_secrets_stop_the_host_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let expired = certs::expired(dir.path(), "expired");
    let err = refuses(
        "",
        &tls_args(&expired)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        &[],
    );
    assert!(err.contains("expired.pem: certificate #1"), "{err}");
    assert!(err.contains("expired on") && err.contains("2021"), "{err}");

    let good = certs::self_signed(dir.path(), "good");
    certs::set_mode(&good.key, 0o644);
    let args = tls_args(&good);
    let err = refuses(
        "",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &[],
    );
    assert!(err.contains("good.key"), "{err}");
    assert!(err.contains("chmod 600"), "{err}");
    certs::set_mode(&good.key, 0o600);

    // A certificate where the key belongs.
    let swapped = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        good.cert.display(),
        dir.path().join("copy.pem").display()
    );
    std::fs::copy(&good.cert, dir.path().join("copy.pem")).unwrap();
    certs::set_mode(&dir.path().join("copy.pem"), 0o600);
    let err = refuses(&swapped, &[], &[]);
    assert!(err.contains("copy.pem: no PEM private key"), "{err}");
    assert!(err.contains("arrpc.toml"), "{err}");

    let missing = "[tls]\ncert = \"nowhere.pem\"\nkey = \"nowhere.key\"\n";
    let err = refuses(missing, &[], &[]);
    assert!(err.contains("nowhere.pem: cannot read"), "{err}");

    let err = refuses(
        "[auth]\nsecrets = [{ env = \"ARRPC_TEST_UNSET_SECRET\" }]",
        &[],
        &[],
    );
    assert!(err.contains("auth.secrets #1"), "{err}");
    assert!(
        err.contains("`ARRPC_TEST_UNSET_SECRET` is not set"),
        "{err}"
    );

    let err = refuses("", &["--tls-client-ca", "ca.pem"], &[]);
    assert!(err.contains("--tls-client-ca needs TLS"), "{err}");
}

#[test]
fn rpc_calls_are_signed_and_verified_like_bare_messages() {
    let host = Host::start_with_env(
        write_config_value(&Config {
            auth: AuthConfig {
                secrets: vec![SecretSource::Env("ARRPC_TEST_SECRET".into())],
                ..AuthConfig::default()
            },
            ..serving(vec![
                handler_config("echo", "echo"),
                handler_config("sum", "sum"),
            ])
        }),
        &[],
        &[("ARRPC_TEST_SECRET", "rpc-secret")],
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let numbers = vec![20u32, 22];

    let mut signed = client_config(&host, None);
    signed.auth_secret = Some(b"rpc-secret".to_vec());
    let reply: std::collections::BTreeMap<String, u64> = runtime
        .block_on(arrpc_client::RpcClient::new(signed).call("sum", &numbers))
        .unwrap();
    assert_eq!(reply["sum"], 42);

    // Unsigned and wrongly signed calls get a response their client can
    // match, carrying the Python arrpc package's auth error.
    for secret in [None, Some(b"wrong".to_vec())] {
        let mut config = client_config(&host, None);
        config.auth_secret = secret;
        let outcome = runtime.block_on(
            arrpc_client::RpcClient::new(config)
                .call::<_, std::collections::BTreeMap<String, u64>>("sum", &numbers),
        );
        match outcome {
            Err(Error::Auth(reason)) => assert_eq!(reason, AUTH_FAILED),
            other => panic!("expected an auth error, got {other:?}"),
        }
    }
}

#[test]
fn several_secrets_from_env_file_and_value_are_each_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    // One trailing line break is not part of the secret.
    std::fs::write(&file, "from-file\n").unwrap();
    #[cfg(unix)]
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let host = Host::start_with_env(
        write_config_value(&signed(AuthConfig {
            secrets: vec![
                SecretSource::Env("ARRPC_TEST_OLD".into()),
                SecretSource::File(file.clone()),
                SecretSource::Value("inline".into()),
            ],
            ..AuthConfig::default()
        })),
        &[],
        &[("ARRPC_TEST_OLD", "from-env")],
    );
    for secret in ["from-env", "from-file", "inline"] {
        let mut config = client_config(&host, None);
        config.auth_secret = Some(secret.as_bytes().to_vec());
        let mut client = BlockingClient::new(config).unwrap();
        assert_eq!(client.send::<_, String>(secret).unwrap(), secret);
    }
    for wrong in ["from-file\n", "from-env-", "", "another"] {
        let mut config = client_config(&host, None);
        config.auth_secret = Some(wrong.as_bytes().to_vec());
        let mut client = BlockingClient::new(config).unwrap();
        match client.send::<_, String>("x") {
            Err(Error::Auth(reason)) => assert_eq!(reason, AUTH_FAILED, "{wrong:?}"),
            other => panic!("{wrong:?}: expected an auth error, got {other:?}"),
        }
    }
    // An unsigned message never reaches the handler either.
    let error = error_text(&host.connect().call(&[0x01]));
    assert_eq!(error, Some(auth_failed()));
}

/// rustls client settings trusting `ca` that offer only `version`.
fn client_speaking(
    ca: &Path,
    version: &'static rustls::SupportedProtocolVersion,
) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

#[test]
fn tls_1_2_and_1_3_clients_are_both_served() {
    let (_dir, own, host) = self_signed_echo_host(echo());
    for (version, expected) in [
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let mut stream = certs::tls_connect(host.addr, client_speaking(&own.cert, version));
        assert_eq!(stream.conn.protocol_version(), Some(expected));
        certs::echo_byte(&mut stream, 0x07);
    }
}

#[test]
fn a_certificate_not_valid_yet_or_a_key_that_does_not_fit_stops_the_host_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let early = certs::not_yet_valid(dir.path(), "early");
    let err = refuses(
        "",
        &tls_args(&early)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        &[],
    );
    assert!(err.contains("early.pem: certificate #1"), "{err}");
    assert!(
        err.contains("is not valid before") && err.contains("2099"),
        "{err}"
    );

    // Two good pairs, each certificate given the other's key.
    let one = certs::self_signed(dir.path(), "one");
    let two = certs::self_signed(dir.path(), "two");
    let crossed = CertFiles {
        cert: one.cert.clone(),
        key: two.key.clone(),
    };
    let err = refuses(
        "",
        &tls_args(&crossed)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        &[],
    );
    assert!(
        err.contains(&format!(
            "{}: does not fit {}",
            two.key.display(),
            one.cert.display()
        )),
        "{err}"
    );
}
