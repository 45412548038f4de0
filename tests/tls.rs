//! Certificates made with the `openssl` command as the arrpc tutorials make
//! them (self-signed, and so CA:TRUE) trusted through a CA file by our
//! client and `arrpc-host send`, against `arrpc-host` and the Python arrpc
//! package's server; and refused handshakes told in plain words, with the
//! `send` flag that fixes them.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;

use arrpc_client::tls::{HandshakeError, Tls, Trust};
use arrpc_client::{BlockingClient, ClientConfig, Error};
use common::certs::{self, CertFiles};
use common::seed::{self, SeedServer};
use common::*;
use serde_json::{Value, json};

/// The tutorial's certificate: `-subj /CN=localhost -addext
/// subjectAltName=DNS:localhost,IP:127.0.0.1`.
fn tutorial_cert(dir: &Path, file: &str) -> CertFiles {
    certs::openssl_self_signed(dir, file, "localhost", "DNS:localhost,IP:127.0.0.1")
}

fn path(file: &Path) -> &str {
    file.to_str().unwrap()
}

/// `arrpc-host` serving the echo handler over TLS with `cert`, or plain.
fn host(cert: Option<&CertFiles>) -> Host {
    let config = write_config_value(&serving(vec![handler_config("echo", "echo")]));
    match cert {
        Some(cert) => Host::start_with(
            config,
            &["--tls-cert", path(&cert.cert), "--tls-key", path(&cert.key)],
        ),
        None => Host::start_with(config, &[]),
    }
}

/// The Python arrpc package's server over TLS with `cert`, or plain.
fn python_server(cert: Option<&CertFiles>) -> SeedServer {
    match cert {
        Some(cert) => {
            SeedServer::start(&["--cert", path(&cert.cert), "--key", path(&cert.key)], &[])
        }
        None => SeedServer::start(&[], &[]),
    }
}

/// `arrpc-host send` of `message` to `addr` with `args`.
fn send(addr: SocketAddr, args: &[&str], message: &str) -> Output {
    host_command()
        .args(["send", "--retries", "1", "--timeout", "3s"])
        .args(["--addr", &addr.to_string()])
        .args(args)
        .arg(message)
        .output()
        .unwrap()
}

/// What a successful `send` printed.
fn printed(out: Output) -> String {
    assert!(
        out.status.success(),
        "send failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// What a refused `send` said.
fn refusal(out: Output) -> String {
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    stderr
}

/// Our library client at `addr`, trusting `trust`.
fn client(addr: SocketAddr, trust: Trust) -> BlockingClient {
    let mut config = ClientConfig::new(addr.to_string());
    config.connect_attempts = 1;
    config.tls = Some(Tls::new(&trust, None).unwrap());
    BlockingClient::new(config).unwrap()
}

/// Why our library client's message to `addr` was refused.
fn handshake_error(addr: SocketAddr, trust: Trust) -> HandshakeError {
    match client(addr, trust).send::<_, Value>(&1) {
        Err(Error::Tls { source, .. }) => source,
        other => panic!("expected a refused handshake, got {other:?}"),
    }
}

#[test]
fn the_tutorial_certificate_as_ca_file_is_trusted_as_python_trusts_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = tutorial_cert(dir.path(), "server");
    let ca = path(&server.cert);
    let host = host(Some(&server));
    let python = python_server(Some(&server));

    assert_eq!(
        printed(send(host.addr, &["--tls-ca", ca], "\"hi\"")),
        "\"hi\"\n"
    );
    let by_name = ["--tls-ca", ca, "--tls-server-name", "localhost"];
    assert_eq!(printed(send(host.addr, &by_name, "[1]")), "[1]\n");
    let rpc = ["--tls-ca", ca, "--handler", "echo"];
    assert_eq!(printed(send(host.addr, &rpc, "[2]")), "[2]\n");
    assert_eq!(
        printed(send(python.addr, &["--tls-ca", ca], "\"hi\"")),
        "{\"seed\":\"hi\"}\n"
    );

    let trust = || Trust::CaFile(server.cert.clone());
    let reply: Value = client(host.addr, trust()).send("lib").unwrap();
    assert_eq!(reply, json!("lib"));
    let reply: Value = client(python.addr, trust()).send("lib").unwrap();
    assert_eq!(reply, json!({"seed": "lib"}));

    // The Python arrpc package's client trusts the same file the same way.
    let outcomes = seed::client_calls(&json!([
        {"port": host.addr.port(), "message": "py", "kwargs": {"tls_cafile": ca}}
    ]));
    assert_eq!(outcomes, [json!({"ok": "py"})]);
}

#[test]
fn a_certificate_for_another_name_is_refused_naming_the_names_it_has() {
    let dir = tempfile::tempdir().unwrap();
    let other =
        certs::openssl_self_signed(dir.path(), "other", "other.example", "DNS:other.example");
    let ca = path(&other.cert);
    let host = host(Some(&other));

    assert_eq!(
        refusal(send(host.addr, &["--tls-ca", ca], "1")),
        format!(
            "error: TLS handshake with {} failed: the server's certificate is for \
             other.example, not 127.0.0.1\n\
             hint: connect by one of the certificate's names, or check one with \
             --tls-server-name (e.g. --tls-server-name other.example)\n",
            host.addr
        )
    );
    let named = ["--tls-ca", ca, "--tls-server-name", "other.example"];
    assert_eq!(printed(send(host.addr, &named, "1")), "1\n");

    match handshake_error(host.addr, Trust::CaFile(other.cert.clone())) {
        HandshakeError::WrongName {
            expected,
            presented,
        } => {
            assert_eq!(expected, "127.0.0.1");
            assert_eq!(presented, ["other.example"]);
        }
        other => panic!("expected a wrong name, got {other:?}"),
    }
}

#[test]
fn a_self_signed_certificate_not_in_the_ca_file_has_an_unknown_issuer() {
    let dir = tempfile::tempdir().unwrap();
    let server = tutorial_cert(dir.path(), "server");
    // Made the same way, so with the same name, but another key.
    let stranger = tutorial_cert(dir.path(), "stranger");
    let host = host(Some(&server));
    let python = python_server(Some(&server));

    for addr in [host.addr, python.addr] {
        assert_eq!(
            refusal(send(addr, &["--tls-ca", path(&stranger.cert)], "1")),
            format!(
                "error: TLS handshake with {addr} failed: the server's certificate is not \
                 signed by a CA in {}\n\
                 hint: pass the CA that signed it with --tls-ca FILE, or the server's own \
                 certificate with --tls-ca FILE --tls-self-signed\n",
                stranger.cert.display()
            )
        );
        match handshake_error(addr, Trust::CaFile(stranger.cert.clone())) {
            HandshakeError::UnknownIssuer { trusted } => {
                assert_eq!(trusted, format!("a CA in {}", stranger.cert.display()))
            }
            other => panic!("expected an unknown issuer, got {other:?}"),
        }
    }
}

#[test]
fn an_expired_certificate_is_refused_with_its_date() {
    let dir = tempfile::tempdir().unwrap();
    // arrpc-host refuses to serve it; the Python arrpc package serves it.
    let expired = certs::expired(dir.path(), "expired");
    let python = python_server(Some(&expired));

    assert_eq!(
        refusal(send(python.addr, &["--tls-ca", path(&expired.cert)], "1")),
        format!(
            "error: TLS handshake with {} failed: the server's certificate expired on \
             Jan  1 00:00:00 2021 +00:00\n\
             hint: renew the server's certificate, or set this machine's clock right if it \
             is wrong\n",
            python.addr
        )
    );
    assert!(matches!(
        handshake_error(python.addr, Trust::CaFile(expired.cert.clone())),
        HandshakeError::Expired { .. }
    ));
}

#[test]
fn a_server_without_tls_is_said_not_to_speak_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = tutorial_cert(dir.path(), "server");
    let host = host(None);
    let python = python_server(None);

    let ca = ["--tls-ca", path(&server.cert)];
    let rpc = ["--tls-ca", path(&server.cert), "--handler", "echo"];
    for (addr, args) in [(host.addr, &ca[..]), (host.addr, &rpc), (python.addr, &ca)] {
        let said = refusal(send(addr, args, "1"));
        assert!(
            said.starts_with(&format!("error: TLS handshake with {addr} failed: ")),
            "{said}"
        );
        assert!(said.contains("not speak TLS"), "{said}");
        assert!(
            said.ends_with("hint: for a server without TLS, drop --tls and --tls-ca\n"),
            "{said}"
        );
    }
}
