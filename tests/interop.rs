//! Interop with the real Python arrpc package, `arrpc==0.5.0` from PyPI: its
//! `Client` against `arrpc-host`, and our client and `arrpc-host send`
//! against its `Server`; plain, signed and over TLS. "Seed" in test names
//! and in `common::seed` means that package.

mod common;

use arrpc_client::tls::{HandshakeError, Tls, Trust};
use arrpc_client::{BlockingClient, ClientConfig, Error};
use arrpc_host::config::{AuthConfig, Config, SecretSource};
use arrpc_wire::reply::AUTH_FAILED;
use common::certs::{self, Ca};
use common::seed::{self, SeedServer};
use common::*;
use serde_json::{Value, json};

/// A host serving the echo handler, with `auth` and `args`.
fn echo_host(auth: AuthConfig, args: &[&str], env: &[(&str, &str)]) -> Host {
    let config = Config {
        auth,
        ..serving(vec![handler_config("echo", "echo")])
    };
    Host::start_with_env(write_config_value(&config), args, env)
}

fn call(host: &Host, message: Value, kwargs: Value) -> Value {
    json!({"port": host.addr.port(), "message": message, "kwargs": kwargs})
}

fn auth_error() -> Value {
    json!({"error": "AuthException", "message": AUTH_FAILED})
}

#[test]
fn seed_client_sends_plain_and_signed_messages_to_the_host() {
    let plain = echo_host(AuthConfig::default(), &[], &[]);
    let signed = echo_host(
        AuthConfig {
            secrets: vec![SecretSource::Env("ARRPC_TEST_SECRET".into())],
            ..AuthConfig::default()
        },
        &[],
        &[("ARRPC_TEST_SECRET", "right")],
    );
    let outcomes = seed::client_calls(&json!([
        call(&plain, json!({"foo": "bar"}), json!({})),
        call(
            &signed,
            json!({"foo": "bar"}),
            json!({"auth_secret": "right"})
        ),
        call(&signed, json!([1, 2, 3]), json!({"auth_secret": "wrong"})),
        call(&signed, json!({"foo": "bar"}), json!({})),
    ]));
    assert_eq!(outcomes[0], json!({"ok": {"foo": "bar"}}));
    assert_eq!(outcomes[1], json!({"ok": {"foo": "bar"}}));
    assert_eq!(outcomes[2], auth_error());
    assert_eq!(outcomes[3], auth_error());
    let log = signed.wait_for_log("envelope has no `arrpc.sign` field");
    assert!(
        log.contains("reason=signature does not match any accepted secret"),
        "{log}"
    );
    assert!(log.contains("peer=127.0.0.1:"), "{log}");
}

#[test]
fn seed_client_talks_tls_to_the_host_with_a_ca_and_self_signed() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "test");
    let server = ca.server(dir.path(), "server", certs::local_names());
    let own = certs::self_signed(dir.path(), "own");
    let secret = dir.path().join("secret");
    certs::write_private(&secret, "tls-and-signed\n");
    let ca_host = echo_host(
        AuthConfig::default(),
        &[
            "--tls-cert",
            server.cert.to_str().unwrap(),
            "--tls-key",
            server.key.to_str().unwrap(),
        ],
        &[],
    );
    let self_signed_host = echo_host(
        AuthConfig::default(),
        &[
            "--tls-cert",
            own.cert.to_str().unwrap(),
            "--tls-key",
            own.key.to_str().unwrap(),
            "--auth-secret-file",
            secret.to_str().unwrap(),
        ],
        &[],
    );
    let ca_file = ca.cert.to_str().unwrap();
    let own_file = own.cert.to_str().unwrap();
    // The Python arrpc package's TLS client sends once per Client;
    // seed_client.py uses a fresh one per call, as its users must.
    let outcomes = seed::client_calls(&json!([
        call(&ca_host, json!({"n": 1}), json!({"tls_cafile": ca_file})),
        call(&ca_host, json!({"n": 2}), json!({"tls_cafile": ca_file})),
        call(
            &self_signed_host,
            json!("hello"),
            json!({"tls_cafile": own_file, "tls_self_signed": true, "auth_secret": "tls-and-signed"})
        ),
        call(
            &self_signed_host,
            json!("hello"),
            json!({"tls_cafile": own_file, "tls_self_signed": true, "auth_secret": "nope"})
        ),
    ]));
    assert_eq!(outcomes[0], json!({"ok": {"n": 1}}));
    assert_eq!(outcomes[1], json!({"ok": {"n": 2}}));
    assert_eq!(outcomes[2], json!({"ok": "hello"}));
    assert_eq!(outcomes[3], auth_error());
}

fn client(addr: std::net::SocketAddr) -> ClientConfig {
    let mut config = ClientConfig::new(addr.to_string());
    config.connect_attempts = 2;
    config
}

/// Runs `arrpc-host send` and returns its stdout, asserting success.
fn send_cli(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = host_command()
        .arg("send")
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "send failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn our_client_and_send_talk_plain_and_signed_to_the_seed_server() {
    let plain = SeedServer::start(&[], &[]);
    let mut ours = BlockingClient::new(client(plain.addr)).unwrap();
    for n in 0..3 {
        let reply: Value = ours.send(&json!({"n": n})).unwrap();
        assert_eq!(reply, json!({"seed": {"n": n}}));
    }
    let addr = plain.addr.to_string();
    assert_eq!(
        send_cli(&["--addr", &addr, r#"{"foo":"bar"}"#], &[]),
        "{\"seed\":{\"foo\":\"bar\"}}\n"
    );

    let signed = SeedServer::start(
        &["--secret-env", "SEED_SECRET"],
        &[("SEED_SECRET", "shared")],
    );
    let mut config = client(signed.addr);
    config.auth_secret = Some(b"shared".to_vec());
    let reply: Value = BlockingClient::new(config).unwrap().send("hi").unwrap();
    assert_eq!(reply, json!({"seed": "hi"}));
    let mut unsigned = BlockingClient::new(client(signed.addr)).unwrap();
    match unsigned.send::<_, Value>("hi") {
        Err(Error::Auth(reason)) => assert_eq!(reason, AUTH_FAILED),
        other => panic!("expected an auth error, got {other:?}"),
    }
    let addr = signed.addr.to_string();
    let out = send_cli(
        &["--addr", &addr, "--auth-secret-env", "MY_SECRET", "[1,2]"],
        &[("MY_SECRET", "shared")],
    );
    assert_eq!(out, "{\"seed\":[1,2]}\n");
}

#[test]
fn our_client_and_send_talk_tls_to_the_seed_server() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "seed");
    let server = ca.server(dir.path(), "server", certs::local_names());
    let ca_signed = SeedServer::start(
        &[
            "--cert",
            server.cert.to_str().unwrap(),
            "--key",
            server.key.to_str().unwrap(),
        ],
        &[],
    );
    let mut config = client(ca_signed.addr);
    config.tls = Some(Tls::new(&Trust::CaFile(ca.cert.clone()), None).unwrap());
    let mut ours = BlockingClient::new(config).unwrap();
    // One TLS connection carries several messages (not 0: the Python arrpc
    // package drops falsy messages unanswered).
    for n in 1..3 {
        let reply: Value = ours.send(&n).unwrap();
        assert_eq!(reply, json!({"seed": n}));
    }
    let addr = ca_signed.addr.to_string();
    let ca_file = ca.cert.to_str().unwrap();
    assert_eq!(
        send_cli(&["--addr", &addr, "--tls-ca", ca_file, "\"x\""], &[]),
        "{\"seed\":\"x\"}\n"
    );
    // A certificate from another CA is refused by our side.
    let other = Ca::new(dir.path(), "other");
    let mut config = client(ca_signed.addr);
    config.tls = Some(Tls::new(&Trust::CaFile(other.cert.clone()), None).unwrap());
    match BlockingClient::new(config).unwrap().send::<_, Value>(&1) {
        Err(Error::Tls {
            source: HandshakeError::UnknownIssuer { .. },
            ..
        }) => {}
        other => panic!("expected a TLS error, got {other:?}"),
    }

    let own = certs::self_signed(dir.path(), "own");
    let self_signed = SeedServer::start(
        &[
            "--cert",
            own.cert.to_str().unwrap(),
            "--key",
            own.key.to_str().unwrap(),
            "--secret-env",
            "SEED_SECRET",
        ],
        &[("SEED_SECRET", "both")],
    );
    let mut config = client(self_signed.addr);
    config.tls = Some(Tls::new(&Trust::Pinned(own.cert.clone()), None).unwrap());
    config.auth_secret = Some(b"both".to_vec());
    let reply: Value = BlockingClient::new(config).unwrap().send("pinned").unwrap();
    assert_eq!(reply, json!({"seed": "pinned"}));
    let addr = self_signed.addr.to_string();
    let out = send_cli(
        &[
            "--addr",
            &addr,
            "--tls-ca",
            own.cert.to_str().unwrap(),
            "--tls-self-signed",
            "--auth-secret-env",
            "S",
            "{}",
        ],
        &[("S", "both")],
    );
    assert_eq!(out, "{\"seed\":{}}\n");
}
