//! Handlers that call out: the `net` guest makes HTTP requests and TCP
//! connections from inside the sandbox, against real servers on 127.0.0.1
//! (plain HTTP, HTTPS with a test CA, a TCP echo server) and a real DNS
//! server, and the tests check what each allow list lets through, which
//! addresses are refused after DNS, the timeouts, the response cap, the
//! pooling and the `traceparent` that goes out.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arrpc_host::config::{Config, HandlerConfig, OutboundHost};
use common::certs::{Ca, local_names};
use common::dns::Dns;
use common::web::HttpServer;
use common::*;
use rmpv::Value;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

fn entries(texts: &[&str]) -> Vec<OutboundHost> {
    texts
        .iter()
        .map(|t| OutboundHost::try_from(t.to_string()).unwrap())
        .collect()
}

/// The `net` handler allowed `hosts`, with the rest of its settings as
/// `settings` makes them.
fn net(hosts: &[&str], settings: impl FnOnce(HandlerConfig) -> HandlerConfig) -> Config {
    serving(vec![settings(HandlerConfig {
        allowed_outbound_hosts: entries(hosts),
        ..handler_config("net", "net")
    })])
}

fn message(pairs: &[(&str, Value)]) -> Value {
    Value::Map(
        pairs
            .iter()
            .map(|(k, v)| (Value::from(*k), v.clone()))
            .collect(),
    )
}

fn get(url: &str) -> Value {
    message(&[("op", "get".into()), ("url", url.into())])
}

/// The body `net` got for a GET, or the error text it replied with.
fn body_of(wire: &mut Wire, request: &Value) -> Result<Vec<u8>, String> {
    let reply = wire.call(&encode(request));
    if let Some(error) = error_text(&reply) {
        return Err(error);
    }
    let reply = decode(&reply);
    let field = |name| {
        reply
            .as_map()
            .unwrap()
            .iter()
            .find(|(k, _)| k.as_str() == Some(name))
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(field("status").as_u64(), Some(200), "{reply}");
    Ok(field("body").as_slice().unwrap().to_vec())
}

fn refused_with(wire: &mut Wire, request: &Value, code: &str) {
    match body_of(wire, request) {
        Ok(body) => panic!("{request} was sent: {}", String::from_utf8_lossy(&body)),
        Err(error) => assert!(error.contains(code), "{request}: {error}"),
    }
}

#[test]
fn a_handler_reaches_exactly_the_hosts_its_entries_name() {
    let server = HttpServer::start();
    let other = HttpServer::start();
    let host = InProcessHost::start(net(
        &[&format!("http://127.0.0.1:{}", server.addr.port())],
        |h| h,
    ));
    let mut wire = host.connect();
    assert_eq!(
        body_of(&mut wire, &get(&server.url("http", "/hello"))).unwrap(),
        b"hello"
    );
    // Another port, another scheme, another host: refused before any
    // connection is made.
    for url in [
        other.url("http", "/hello"),
        server.url("https", "/hello"),
        format!("http://127.0.0.2:{}/hello", server.addr.port()),
        format!("http://localhost:{}/hello", server.addr.port()),
    ] {
        refused_with(&mut wire, &get(&url), "HttpRequestDenied");
    }
    assert_eq!(other.connections(), 0);
    assert_eq!(server.connections(), 1);
    let requests = |result| {
        host.metric(
            "arrpc_outbound_requests_total",
            &[("handler", "net"), ("kind", "http"), ("result", result)],
        )
    };
    assert_eq!(requests("ok"), 1.0);
    assert_eq!(requests("denied"), 4.0);
}

#[test]
fn a_refused_request_is_logged_naming_the_handler_and_the_url() {
    let host = Host::start_config(&net(&["https://api.example.com"], |h| h));
    let mut wire = host.connect();
    refused_with(
        &mut wire,
        &get("http://api.example.com/prices?sku=1"),
        "HttpRequestDenied",
    );
    let log = host.wait_for_log("outbound HTTP request refused");
    let line = log
        .lines()
        .find(|l| l.contains("outbound HTTP request refused"))
        .unwrap();
    assert!(
        line.contains("handler=net") && line.contains("http://api.example.com/prices?sku=1"),
        "{line}"
    );
}

/// A guest can make refused requests as fast as it likes: each is
/// answered and counted, but their log lines stay within a budget, the
/// lines held back counted in a later line's `suppressed`.
#[test]
fn a_flood_of_refused_requests_is_logged_within_a_budget() {
    let host = Host::start_config(&net(&[], |h| h));
    let mut wire = host.connect();
    let request = encode(&get("http://api.example.com/"));
    let flood = 100;
    wire.write(&request.repeat(flood));
    for _ in 0..flood {
        let error = error_text(&wire.read().unwrap()).unwrap();
        assert!(error.contains("HttpRequestDenied"), "{error}");
    }
    // The next window's first line says how many were held back.
    std::thread::sleep(Duration::from_millis(1100));
    refused_with(
        &mut wire,
        &get("http://api.example.com/"),
        "HttpRequestDenied",
    );
    let tally = |log: &str| throttled_lines(log, "outbound HTTP request refused");
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
    assert_eq!(lines + suppressed, refusals);
    assert!(lines <= 40, "{lines} refusal lines logged");
    assert!(suppressed > 0);
}

#[test]
fn https_is_verified_against_the_configured_ca_and_refused_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "outbound");
    let files = ca.server(dir.path(), "server", local_names());
    let tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            CertificateDer::pem_file_iter(&files.cert)
                .unwrap()
                .map(Result::unwrap)
                .collect(),
            PrivateKeyDer::from_pem_file(&files.key).unwrap(),
        )
        .unwrap();
    let server = HttpServer::start_with(Some(Arc::new(tls)));
    let allowed = format!("https://127.0.0.1:{}", server.addr.port());

    let trusted = InProcessHost::start(Config {
        outbound: arrpc_host::config::OutboundConfig {
            ca_file: Some(ca.cert.clone()),
            ..Default::default()
        },
        ..net(&[&allowed], |h| h)
    });
    let url = server.url("https", "/hello");
    assert_eq!(
        body_of(&mut trusted.connect(), &get(&url)).unwrap(),
        b"hello"
    );

    // A CA file that does not hold the server's CA: the handshake fails.
    let stranger = Ca::new(dir.path(), "stranger");
    let untrusted = InProcessHost::start(Config {
        outbound: arrpc_host::config::OutboundConfig {
            ca_file: Some(stranger.cert.clone()),
            ..Default::default()
        },
        ..net(&[&allowed], |h| h)
    });
    refused_with(&mut untrusted.connect(), &get(&url), "TlsCertificateError");
}

/// The DNS server answers an allowed name with the cloud metadata address,
/// then with loopback: the host refuses both after resolving, and
/// connects to a loopback address only when an entry names it literally.
#[test]
fn names_that_resolve_to_guarded_addresses_are_refused_after_dns() {
    let server = HttpServer::start();
    let port = server.addr.port();
    let dns = Dns::start("svc.test", &[Ipv4Addr::new(169, 254, 169, 254)], 0);
    let config = |hosts: &[&str]| Config {
        outbound: arrpc_host::config::OutboundConfig {
            resolver: Some(dns.addr),
            ..Default::default()
        },
        ..net(hosts, |h| h)
    };
    let name_only = format!("http://svc.test:{port}");
    let host = InProcessHost::start(config(&[&name_only]));
    let mut wire = host.connect();
    let url = format!("http://svc.test:{port}/hello");
    refused_with(&mut wire, &get(&url), "DestinationIpProhibited");
    dns.set(&[Ipv4Addr::LOCALHOST]);
    refused_with(&mut wire, &get(&url), "DestinationIpProhibited");
    assert_eq!(server.connections(), 0);
    assert_eq!(
        host.metric(
            "arrpc_outbound_requests_total",
            &[
                ("handler", "net"),
                ("target", &name_only),
                ("result", "denied")
            ],
        ),
        2.0
    );

    // With loopback named literally, the name goes through, to the address
    // that was checked.
    let literal = format!("http://127.0.0.1:{port}");
    let host = InProcessHost::start(config(&[&name_only, &literal]));
    assert_eq!(body_of(&mut host.connect(), &get(&url)).unwrap(), b"hello");
    assert_eq!(server.connections(), 1);
    assert!(
        server.requests()[0].contains(&format!("host: svc.test:{port}")),
        "{:?}",
        server.requests()
    );
}

#[test]
fn a_stalled_server_gives_a_timeout_well_inside_the_handler_timeout() {
    let server = HttpServer::start();
    let allowed = format!("http://127.0.0.1:{}", server.addr.port());
    let host = InProcessHost::start(net(&[&allowed], |h| HandlerConfig {
        timeout: Duration::from_secs(20),
        ..h
    }));
    let mut wire = host.connect();
    // A failed body read carries its reason as text: wasmtime-wasi-http 48
    // hands the guest no error code for it.
    for (path, timeout, code) in [
        ("/stall", "first_byte_ms", "ConnectionReadTimeout"),
        ("/trickle", "between_bytes_ms", "connection read timeout"),
    ] {
        let started = Instant::now();
        let request = message(&[
            ("op", "get".into()),
            ("url", server.url("http", path).into()),
            (timeout, 300.into()),
        ]);
        refused_with(&mut wire, &request, code);
        let took = started.elapsed();
        assert!(took < Duration::from_secs(5), "{path} took {took:?}");
    }
}

/// A guest that asks to wait longer than its handler may is held to the
/// handler's `timeout`: waiting on the network counts.
#[test]
fn waiting_on_the_network_counts_against_the_handler_timeout() {
    let server = HttpServer::start();
    let allowed = format!("http://127.0.0.1:{}", server.addr.port());
    let host = InProcessHost::start(net(&[&allowed], |h| HandlerConfig {
        timeout: Duration::from_millis(800),
        ..h
    }));
    let started = Instant::now();
    let request = message(&[
        ("op", "get".into()),
        ("url", server.url("http", "/stall").into()),
        ("first_byte_ms", 60_000.into()),
    ]);
    let error = body_of(&mut host.connect(), &request).unwrap_err();
    let took = started.elapsed();
    // Whichever fires first at the deadline: the request's capped timeout
    // or the handler's own.
    assert!(
        error.contains("exceeded its timeout of 800 ms") || error.contains("ConnectionReadTimeout"),
        "{error}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn a_response_longer_than_the_cap_ends_in_an_error() {
    let server = HttpServer::start();
    let allowed = format!("http://127.0.0.1:{}", server.addr.port());
    let host = InProcessHost::start(Config {
        outbound: arrpc_host::config::OutboundConfig {
            max_response_bytes: 1000,
            ..Default::default()
        },
        ..net(&[&allowed], |h| h)
    });
    let mut wire = host.connect();
    assert_eq!(
        body_of(&mut wire, &get(&server.url("http", "/big/1000")))
            .unwrap()
            .len(),
        1000
    );
    refused_with(
        &mut wire,
        &get(&server.url("http", "/big/5000")),
        "HTTP response body size exceeds limit: 1000 bytes",
    );
}

/// Each message runs in a fresh instance, yet its requests reuse the
/// handler's kept-alive connections. A connection goes back to the pool a
/// moment after its response ends, and a request that finds none idle
/// starts a new one while it waits, so a few may open; one per request
/// would mean no pooling. `arrpc-bench outbound` measures the rate.
#[test]
fn fresh_instances_share_kept_alive_connections() {
    let server = HttpServer::start();
    let allowed = format!("http://127.0.0.1:{}", server.addr.port());
    let host = InProcessHost::start(net(&[&allowed], |h| h));
    let mut wire = host.connect();
    for _ in 0..30 {
        assert_eq!(
            body_of(&mut wire, &get(&server.url("http", "/hello"))).unwrap(),
            b"hello"
        );
    }
    assert_eq!(server.requests().len(), 30);
    assert!(
        server.connections() <= 3,
        "{} connections",
        server.connections()
    );
}

#[test]
fn the_callers_trace_goes_out_as_a_child_span() {
    let server = HttpServer::start();
    let allowed = format!("http://127.0.0.1:{}", server.addr.port());
    let host = InProcessHost::start(net(&[&allowed], |h| h));
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace}-00f067aa0ba902b7-01");
    let message = encode(&get(&server.url("http", "/hello")));
    let reply = host
        .connect()
        .call(&arrpc_wire::trace::wrap(&traceparent, &message));
    assert_eq!(error_text(&reply), None);
    let head = server.requests().pop().unwrap();
    let sent = head
        .lines()
        .find_map(|l| l.strip_prefix("traceparent: "))
        .unwrap_or_else(|| panic!("no traceparent in {head}"));
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!(parts.len(), 4, "{sent}");
    assert_eq!((parts[0], parts[1], parts[3]), ("00", trace, "01"));
    assert_ne!(parts[2], "00f067aa0ba902b7");
    assert_eq!(parts[2].len(), 16);
}

/// A TCP echo server on 127.0.0.1 that counts its connections.
fn tcp_echo() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            counted.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut buf = [0; 64];
                if let Ok(n) = stream.read(&mut buf) {
                    let _ = stream.write_all(&buf[..n]);
                }
            });
        }
    });
    (addr, count)
}

fn tcp(addr: SocketAddr, data: &[u8]) -> Value {
    message(&[
        ("op", "tcp".into()),
        ("addr", addr.to_string().into()),
        ("send", Value::Binary(data.to_vec())),
    ])
}

#[test]
fn tcp_entries_open_exactly_their_addresses() {
    let (allowed, count) = tcp_echo();
    let (other, other_count) = tcp_echo();
    let host = InProcessHost::start(net(&[&format!("tcp://{allowed}")], |h| h));
    let mut wire = host.connect();
    let reply = decode(&wire.call(&encode(&tcp(allowed, b"ping"))));
    assert_eq!(
        reply,
        message(&[("received", Value::Binary(b"ping".to_vec()))])
    );
    let error = error_text(&wire.call(&encode(&tcp(other, b"ping")))).unwrap();
    assert!(error.contains("access-denied"), "{error}");
    assert_eq!(
        (
            count.load(Ordering::SeqCst),
            other_count.load(Ordering::SeqCst)
        ),
        (1, 0)
    );
    // Names are the host's to resolve, for HTTP; a guest gets no lookup.
    let error = error_text(&wire.call(&encode(&message(&[
        ("op", "resolve".into()),
        ("name", "localhost".into()),
    ]))))
    .unwrap();
    assert!(error.contains("net: resolve:"), "{error}");
}

/// A handler with no entries can open no socket, resolve no name and send
/// no request, and nothing reaches the servers.
#[test]
fn a_handler_with_no_entries_has_no_network() {
    let server = HttpServer::start();
    let (echo, count) = tcp_echo();
    let host = InProcessHost::start(net(&[], |h| h));
    let mut wire = host.connect();
    refused_with(
        &mut wire,
        &get(&server.url("http", "/hello")),
        "HttpRequestDenied",
    );
    let error = error_text(&wire.call(&encode(&tcp(echo, b"ping")))).unwrap();
    assert!(
        error.starts_with("arrpc.error.RpcException: net: tcp: "),
        "{error}"
    );
    let error = error_text(&wire.call(&encode(&message(&[
        ("op", "resolve".into()),
        ("name", "localhost".into()),
    ]))))
    .unwrap();
    assert!(
        error.starts_with("arrpc.error.RpcException: net: resolve: "),
        "{error}"
    );
    assert_eq!((server.connections(), count.load(Ordering::SeqCst)), (0, 0));
}

#[test]
fn a_bad_entry_is_refused_at_start_naming_the_handler_and_the_entry() {
    let config = format!(
        "{}allowed_outbound_hosts = [\"https://api.example.com/v1\"]\n",
        handler("fetch", "net", "")
    );
    let error = start_refused(&config, &[], &[]);
    assert!(
        error.contains(
            "handler #1 (`fetch`): allowed_outbound_hosts: \"https://api.example.com/v1\": a path is not allowed"
        ),
        "{error}"
    );
}

#[test]
fn check_prints_each_handlers_outbound_rights() {
    let config = write_config(&format!(
        "[server]\ndefault_handler = \"net\"\n{}{}",
        handler(
            "net",
            "net",
            "allowed_outbound_hosts = [\"https://*.shop.svc:8443\", \"tcp://10.0.0.0/8:5432\"]"
        ),
        handler("echo", "echo", "")
    ));
    let out = check_config(&config.path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(
            "    outbound: https://*.shop.svc:8443\n    outbound: tcp://10.0.0.0/8:5432\n"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("echo.wasm  sha256:"), "{stdout}");
    let echo = stdout.split("echo.wasm").nth(1).unwrap();
    assert!(echo.contains("    outbound: none"), "{stdout}");
}
