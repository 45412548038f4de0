//! Per-handler access by the caller's verified identity: a real host
//! serving mutual TLS, real rustls clients presenting workload certificates
//! (SPIFFE IDs and DNS names, as cert-manager and SPIRE issue them), and
//! the real Python arrpc client, which cannot present one.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use arrpc_host::config::{
    AccessConfig, Allowed, ClientCertificates, Config, HandlerConfig, TlsConfig,
};
use common::admin::{admin_of, scrape};
use common::certs::{self, Ca, CertFiles};
use common::*;
use rmpv::Value;
use serde_json::json;
use tokio_rustls::rustls::{ClientConnection, StreamOwned};

const WEB: &str = "spiffe://cluster.local/ns/shop/sa/web";
const BILLING: &str = "spiffe://cluster.local/ns/billing/sa/api";

/// Mutual TLS, clients without a certificate let in, and handlers open to
/// different callers, all echoing: `orders` (the default handler) to
/// `orders`, `by-name` to one DNS name, `internal` to any certificate,
/// `public` to anyone, and `fallback` listing nobody, so `[access]
/// default_allow` (billing only) applies.
fn mutual_tls(server: &CertFiles, ca: &Ca, orders: Allowed) -> Config {
    let echo = |name: &str, allow: Option<Allowed>| HandlerConfig {
        allow: allow.map(|entry| vec![entry]),
        ..handler_config(name, "echo")
    };
    Config {
        tls: Some(TlsConfig {
            client_ca: Some(ca.cert.clone()),
            client_certificates: ClientCertificates::Optional,
            ..TlsConfig::new(server.cert.clone(), server.key.clone())
        }),
        access: AccessConfig {
            default_allow: vec![Allowed::SpiffeId(BILLING.into())],
        },
        ..serving(vec![
            echo("orders", Some(orders)),
            echo(
                "by-name",
                Some(Allowed::DnsName("checkout.shop.svc".into())),
            ),
            echo("internal", Some(Allowed::Authenticated)),
            echo("public", Some(Allowed::Anyone)),
            echo("fallback", None),
        ])
    }
}

fn connect(
    addr: SocketAddr,
    ca: &Path,
    identity: Option<&CertFiles>,
) -> StreamOwned<ClientConnection, TcpStream> {
    certs::tls_connect(addr, certs::rustls_client(ca, identity))
}

fn refused(who: &str, handler: &str) -> Value {
    Value::from(format!(
        "arrpc.error.AuthException: {who} may not call `{handler}`"
    ))
}

/// On one connection each caller reaches exactly the handlers whose list
/// names it, refusals carry the Python arrpc client's AuthException text
/// naming caller and handler, the connection stays usable after one, and
/// the decisions are counted.
#[test]
fn each_handler_admits_only_the_callers_its_list_names() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "cluster");
    let server = ca.server(dir.path(), "server", certs::local_names());
    let web = ca.workload(dir.path(), "web", Some(WEB), &[]);
    let billing = ca.workload(dir.path(), "billing", Some(BILLING), &[]);
    let named = ca.workload(dir.path(), "named", None, &["checkout.shop.svc"]);
    let host = Host::start_with(
        write_config_value(&mutual_tls(
            &server,
            &ca,
            Allowed::SpiffePrefix("spiffe://cluster.local/ns/shop/".into()),
        )),
        &["--admin-listen", "127.0.0.1:0"],
    );
    let admin = admin_of(&host);

    let expectations: [(&str, Option<&CertFiles>, &str, [bool; 5]); 4] = [
        // orders, by-name, internal, public, fallback
        ("web", Some(&web), WEB, [true, false, true, true, false]),
        (
            "billing",
            Some(&billing),
            BILLING,
            [false, false, true, true, true],
        ),
        (
            "named",
            Some(&named),
            "the certificate for checkout.shop.svc",
            [false, true, true, true, false],
        ),
        ("none", None, "", [false, false, false, true, false]),
    ];
    let methods = ["orders", "by-name", "internal", "public", "fallback"];
    for (caller, identity, who, allowed) in expectations {
        let mut stream = connect(host.addr, &ca.cert, identity);
        let who = if identity.is_none() {
            let local = stream.sock.local_addr().unwrap();
            format!("a caller without a client certificate ({local})")
        } else {
            who.to_owned()
        };
        for (method, allowed) in methods.iter().zip(allowed) {
            let error = rpc_error_on(&mut stream, method);
            if allowed {
                assert!(error.is_nil(), "{caller} -> {method}: {error:?}");
            } else {
                assert_eq!(error, refused(&who, method), "{caller} -> {method}");
            }
        }
        // Still usable after the refusals.
        assert!(rpc_error_on(&mut stream, "public").is_nil());
    }

    let metrics = scrape(admin);
    let decisions = |handler: &str, result: &str| {
        metrics.value(
            "arrpc_access_decisions_total",
            &[("handler", handler), ("result", result)],
        )
    };
    assert_eq!(decisions("orders", "allowed"), 1.0);
    assert_eq!(decisions("orders", "refused"), 3.0);
    assert_eq!(decisions("internal", "allowed"), 3.0);
    assert_eq!(decisions("fallback", "allowed"), 1.0);
    // Open to anyone: no decision to count.
    assert_eq!(decisions("public", "allowed"), 0.0);
    assert_eq!(
        metrics.value(
            "arrpc_messages_total",
            &[("handler", "by-name"), ("outcome", "access_denied")]
        ),
        3.0
    );
}

/// The Python arrpc client presents no certificate: with client
/// certificates optional it connects, its message to a restricted default
/// handler raises AuthException naming it, and one open to anyone answers.
#[test]
fn python_clients_reach_handlers_open_to_anyone_only() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "cluster");
    let server = ca.server(dir.path(), "server", certs::local_names());
    let restricted = mutual_tls(&server, &ca, Allowed::Authenticated);
    let mut open = restricted.clone();
    open.server.default_handler = Some("public".into());
    let (restricted, open) = (Host::start_config(&restricted), Host::start_config(&open));
    let kwargs = json!({"tls_cafile": ca.cert});
    let outcomes = seed::client_calls(&json!([
        {"port": restricted.addr.port(), "message": "hi", "kwargs": kwargs},
        {"port": open.addr.port(), "message": "hi", "kwargs": kwargs},
    ]));
    assert_eq!(outcomes[0]["error"], "AuthException", "{outcomes:?}");
    let message = outcomes[0]["message"].as_str().unwrap();
    assert!(
        message.starts_with("a caller without a client certificate (127.0.0.1:")
            && message.ends_with(") may not call `orders`"),
        "{message}"
    );
    assert_eq!(outcomes[1], json!({"ok": "hi"}));
}

/// Allow lists change with the config, without a restart: `orders` moves
/// from the shop namespace to billing.
#[test]
fn allow_lists_reload_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "cluster");
    let server = ca.server(dir.path(), "server", certs::local_names());
    let web = ca.workload(dir.path(), "web", Some(WEB), &[]);
    let billing = ca.workload(dir.path(), "billing", Some(BILLING), &[]);
    let host = Host::start_config(&mutual_tls(&server, &ca, Allowed::SpiffeId(WEB.into())));
    let orders = |identity: &CertFiles| {
        rpc_error_on(&mut connect(host.addr, &ca.cert, Some(identity)), "orders")
    };
    assert!(orders(&web).is_nil());
    assert_eq!(orders(&billing), refused(BILLING, "orders"));

    let path = host.config.path.clone();
    let moved =
        toml::to_string(&mutual_tls(&server, &ca, Allowed::SpiffeId(BILLING.into()))).unwrap();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, moved).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    wait_until(
        host.with_log("billing let into orders"),
        Duration::from_secs(15),
        || orders(&billing).is_nil(),
    );
    assert_eq!(orders(&web), refused(WEB, "orders"));
}

/// Allow lists that name callers by certificate while the port verifies
/// none could never admit anyone: refused at start naming the key, and on
/// reload, leaving the running config in force.
#[test]
fn identities_without_client_certificates_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let own = certs::self_signed(dir.path(), "own");
    let tls = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        own.cert.display(),
        own.key.display()
    );
    let err = start_refused(
        &format!(
            "{tls}{}",
            handler("guarded", "echo", "allow = [\"authenticated\"]")
        ),
        &[],
        &[],
    );
    assert!(
        err.contains(
            "handler #1 (`guarded`): allow lists \"authenticated\", but the message port verifies no client certificates: set tls.client_ca"
        ),
        "{err}"
    );

    let host = Host::start(&format!("{tls}{}", handler("guarded", "echo", "")));
    std::fs::write(
        &host.config.path,
        format!(
            "{tls}[access]\ndefault_allow = [\"{WEB}\"]\n{}",
            handler("guarded", "echo", "")
        ),
    )
    .unwrap();
    host.wait_for_log("config reload refused; nothing changed: access.default_allow lists");
    let mut stream = certs::tls_connect(host.addr, certs::rustls_client(&own.cert, None));
    assert!(rpc_error_on(&mut stream, "guarded").is_nil());
}

/// Failed handshakes are counted by what went wrong, so an operator can
/// tell a missing client certificate from a wrong CA, an expired one, a
/// client that distrusts the server, a peer that does not speak TLS, and
/// one that never finishes.
#[test]
fn failed_handshakes_are_counted_by_reason() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "cluster");
    let server = ca.server(dir.path(), "server", certs::local_names());
    let stranger = Ca::new(dir.path(), "stranger");
    // Long enough that no real handshake here times out on a busy machine,
    // which would count it as a timeout rather than by its reason; the
    // silent peer still shows the timeout.
    let handshake_timeout = Duration::from_secs(5);
    let host = Host::start_with(
        write_config_value(&Config {
            tls: Some(TlsConfig {
                client_ca: Some(ca.cert.clone()),
                handshake_timeout,
                ..TlsConfig::new(server.cert.clone(), server.key.clone())
            }),
            ..serving(vec![handler_config("echo", "echo")])
        }),
        &["--admin-listen", "127.0.0.1:0"],
    );
    let admin = admin_of(&host);
    let attempt = |trust: &Path, identity: Option<&CertFiles>| {
        // TLS 1.3 clients learn of a refused certificate only on reading.
        if let Ok(mut stream) =
            certs::try_tls_connect(host.addr, certs::rustls_client(trust, identity))
        {
            let _ = stream.write_all(&[1]);
            let _ = stream.read(&mut [0u8; 1]);
        }
    };
    attempt(&ca.cert, None);
    attempt(&ca.cert, Some(&stranger.client(dir.path(), "stranger")));
    attempt(&ca.cert, Some(&ca.expired_client(dir.path(), "expired")));
    attempt(&stranger.cert, Some(&ca.client(dir.path(), "good")));
    let mut plain = TcpStream::connect(host.addr).unwrap();
    plain.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let _ = plain.read(&mut [0u8; 64]);
    let _silent = TcpStream::connect(host.addr).unwrap();

    for reason in [
        "no_client_certificate",
        "unknown_ca",
        "expired",
        "refused_by_client",
        "not_tls",
        "timeout",
    ] {
        let failures = "arrpc_tls_handshake_failures_total";
        let labels = [("reason", reason)];
        wait_until(
            format!("one {reason} handshake failure counted"),
            handshake_timeout + Duration::from_secs(30),
            || {
                scrape(admin)
                    .try_value(failures, &labels)
                    .is_some_and(|n| n >= 1.0)
            },
        );
        let metrics = scrape(admin);
        assert_eq!(metrics.value(failures, &labels), 1.0, "{metrics}");
    }
    host.wait_for_log("reason=unknown_ca");
}
