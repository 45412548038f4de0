//! Handlers written in other languages, built with their real toolchains
//! (installed on first use by `handlers/install-toolchains.sh`) and served by a real
//! `arrpc-host`: Python (componentize-py), JavaScript (componentize-qjs), C
//! (clang, with the bindings committed in `handlers/c-bindings`) and Zig
//! (`zig build-exe`, with the same C bindings). Each
//! example component echoes when served under a name ending in `echo`,
//! adds numbers under a name ending in `sum`, with the Rust `sum` handler's
//! replies and error texts, under a name ending in `caller` replies with
//! the caller's verified identity, asked of the host through the imported
//! `client` interface (arrpc:handler@0.3.0), and under a name ending in
//! `relay` calls an `[[upstream]]` through the imported `upstream`
//! interface, and under a name ending in `fetch` makes an HTTP request
//! through `wasi:http`, to a real server on 127.0.0.1. Under a
//! name ending in `count` each example increments a counter in a
//! `[[store]]` (`wasi:keyvalue`, an embedded redb file in a temporary
//! folder), which outlives the host; the Python and JavaScript examples
//! keep sessions in one under a name ending in `session`, through their
//! dict-like wrappers of the bindings.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use arrpc_client::{BlockingClient, ClientConfig, Error};
use common::certs::{self, Ca};
use common::toolchains::toolchain;
use common::web::HttpServer;
use common::*;
use rmpv::Value;
use serde::Deserialize;
use serde::de::IgnoredAny;

/// Builds `handlers/<lang>-example` once per test process with its build.sh.
/// Builds run one at a time: two tests of one language share one build.
fn example(lang: &str) -> PathBuf {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("handlers/{lang}-example"));
    let module = dir.join(format!("{lang}-example.wasm"));
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if built.iter().any(|b| b == lang) {
        return module;
    }
    toolchain(lang);
    run_sh(
        &dir.join("build.sh"),
        &[],
        &[],
        &format!("building the {lang} example failed"),
    );
    built.push(lang.into());
    module
}

/// A host serving the `lang` example under `name` as its only handler.
fn serve(lang: &str, name: &str) -> Host {
    Host::start(&format!(
        "[[handler]]\nname = \"{name}\"\nmodule = \"{}\"\ntimeout = \"10s\"\n",
        example(lang).display()
    ))
}

fn client(host: &Host) -> BlockingClient {
    let mut config = ClientConfig::new(host.addr.to_string());
    config.timeout = Some(Duration::from_secs(20));
    BlockingClient::new(config).unwrap()
}

#[derive(Debug, Deserialize, PartialEq)]
struct Total<N> {
    sum: N,
    count: usize,
}

/// Echo returns the payload's exact bytes, whatever their MessagePack types.
fn assert_echoes(lang: &str) {
    let host = serve(lang, &format!("{lang}-echo"));
    let mut wire = host.connect();
    let payload = encode(&Value::Map(vec![
        (str_value("text"), str_value("héllo")),
        (str_value("bytes"), Value::Binary(vec![0, 1, 255])),
        (str_value("float"), Value::F64(2.5)),
        (str_value("big"), Value::from(u64::MAX)),
        (
            str_value("nested"),
            Value::Array(vec![Value::Nil, Value::from(true)]),
        ),
    ]));
    assert_eq!(wire.call(&payload), payload);
    assert_eq!(
        wire.call(&encode(&Value::from(-7))),
        encode(&Value::from(-7))
    );
}

/// Sum decodes the message, computes, and encodes a map; bad shapes and
/// overflow come back as the handler's own error text.
fn assert_sums(lang: &str) {
    let host = serve(lang, &format!("{lang}-sum"));
    let mut client = client(&host);
    let total: Total<i64> = client.send(&[1, 2, 39]).unwrap();
    assert_eq!(total, Total { sum: 42, count: 3 });
    let total: Total<f64> = client
        .send(&HashMap::from([("numbers", [1.5, 2.0, -0.5])]))
        .unwrap();
    assert_eq!(total, Total { sum: 3.0, count: 3 });
    let total: Total<u64> = client.send(&[u64::MAX - 1, 1]).unwrap();
    assert_eq!(
        total,
        Total {
            sum: u64::MAX,
            count: 2
        }
    );
    let total: Total<i64> = client.send::<[i64; 0], _>(&[]).unwrap();
    assert_eq!(total, Total { sum: 0, count: 0 });
    // Exact while a running total passes 2^53 (where JavaScript's floats
    // stop counting by one), and on both sides of the most arguments a
    // JavaScript call takes (65,535), where its SDK changes how it makes
    // an array of numbers.
    let safe = (1i64 << 53) - 1;
    let mut long = vec![1i64; 70_000];
    long[69_999] = safe - 69_999;
    let most: Vec<i64> = (0..65_535).collect();
    let past: Vec<i64> = (0..65_536).map(|i| i * 3 - 7).collect();
    for numbers in [vec![safe, 2, -2], vec![-safe, -2, 2], long, most, past] {
        let total: Total<i64> = client.send(&numbers).unwrap();
        let expected: i64 = numbers.iter().sum();
        assert_eq!(
            (total.sum, total.count),
            (expected, numbers.len()),
            "{lang}"
        );
    }
    // Floats with no fraction still make a float sum, except in
    // JavaScript, whose numbers do not tell 2.0 from 2: its handler gets
    // the numbers 1 and 2 (as @msgpack/msgpack decodes them), and their sum
    // is written as the integer 3.
    let floats = encode(&Value::Array(vec![Value::F64(1.0), Value::F64(2.0)]));
    let three = if lang == "js" {
        Value::from(3)
    } else {
        Value::F64(3.0)
    };
    assert_eq!(
        decode(&host.connect().call(&floats)),
        Value::Map(vec![
            (str_value("sum"), three),
            (str_value("count"), Value::from(2))
        ]),
        "{lang}"
    );

    let expected = r#"sum: expected an array of numbers or {"numbers": [...]}"#;
    match client.send::<_, IgnoredAny>("nope") {
        Err(Error::Rpc(reason)) => assert_eq!(reason, format!("{expected}, got a string")),
        other => panic!("expected the handler's error, got {other:?}"),
    }
    match client.send::<_, IgnoredAny>(&(1, "two")) {
        Err(Error::Rpc(reason)) => {
            assert_eq!(reason, format!("{expected}, got a string at index 1"))
        }
        other => panic!("expected the handler's error, got {other:?}"),
    }
    match client.send::<_, IgnoredAny>(&[u64::MAX, 1]) {
        Err(Error::Rpc(reason)) => assert_eq!(reason, "sum: integer overflow"),
        other => panic!("expected the handler's error, got {other:?}"),
    }
    // After the errors the same connection still serves.
    let total: Total<i64> = client.send(&[-5, 5]).unwrap();
    assert_eq!(total, Total { sum: 0, count: 2 });
}

#[test]
fn python_echo() {
    assert_echoes("python");
}

#[test]
fn python_sum() {
    assert_sums("python");
}

#[test]
fn js_echo() {
    assert_echoes("js");
}

#[test]
fn js_sum() {
    assert_sums("js");
}

#[test]
fn c_echo() {
    assert_echoes("c");
}

#[test]
fn c_sum() {
    assert_sums("c");
}

#[test]
fn zig_echo() {
    assert_echoes("zig");
}

#[test]
fn zig_sum() {
    assert_sums("zig");
}

/// A map whose only key is not "numbers", and "numbers" holding no array,
/// are each named in the error.
#[test]
fn zig_sum_names_the_shape_it_got() {
    let host = serve("zig", "zig-sum");
    let mut client = client(&host);
    let expected = r#"sum: expected an array of numbers or {"numbers": [...]}"#;
    match client.send::<_, IgnoredAny>(&HashMap::from([("values", [1])])) {
        Err(Error::Rpc(reason)) => assert_eq!(
            reason,
            format!(r#"{expected}, got a map with the key "values""#)
        ),
        other => panic!("expected the handler's error, got {other:?}"),
    }
    match client.send::<_, IgnoredAny>(&HashMap::from([("numbers", 3)])) {
        Err(Error::Rpc(reason)) => assert_eq!(
            reason,
            format!(r#"{expected}, got "numbers" holding an integer"#)
        ),
        other => panic!("expected the handler's error, got {other:?}"),
    }
    let total: Total<i64> = client.send(&[-300, -70000, 1]).unwrap();
    assert_eq!(
        total,
        Total {
            sum: -70299,
            count: 3
        }
    );
}

/// One bare message on an open stream and its reply.
fn bare_call(stream: &mut (impl Read + Write), value: &Value) -> Value {
    stream.write_all(&encode(value)).unwrap();
    let mut buffer = Vec::new();
    loop {
        if let Some(len) = arrpc_wire::frame::value_len(&buffer) {
            return decode(&buffer[..len]);
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "connection closed");
        buffer.extend_from_slice(&chunk[..n]);
    }
}

/// Over mutual TLS the example, asking the host through its language's
/// bindings of the `client` import, gets the client certificate's SPIFFE
/// ID and DNS names, a certificate with DNS names only (no SPIFFE ID), and
/// no caller when the client presents no certificate.
fn assert_caller(lang: &str) {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "cluster");
    let server = ca.server(dir.path(), "server", certs::local_names());
    let web = "spiffe://cluster.local/ns/shop/sa/web-frontend-with-a-long-service-account";
    let both = ca.workload(dir.path(), "both", Some(web), &["web.shop.svc", "web"]);
    let named = ca.workload(dir.path(), "named", None, &["checkout.shop.svc"]);
    let host = Host::start(&format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\nclient_certificates = \"optional\"\n\
         [[handler]]\nname = \"{lang}-caller\"\nmodule = \"{}\"\ntimeout = \"10s\"\n",
        server.cert.display(),
        server.key.display(),
        ca.cert.display(),
        example(lang).display()
    ));
    let caller = |spiffe_id: Option<&str>, dns_names: &[&str]| {
        Value::Map(vec![
            (
                str_value("spiffe_id"),
                spiffe_id.map_or(Value::Nil, str_value),
            ),
            (
                str_value("dns_names"),
                Value::Array(dns_names.iter().map(|d| str_value(d)).collect()),
            ),
        ])
    };
    let cases = [
        (Some(&both), caller(Some(web), &["web.shop.svc", "web"])),
        (Some(&named), caller(None, &["checkout.shop.svc"])),
        (None, Value::Nil),
    ];
    for (identity, expected) in cases {
        let mut stream = certs::tls_connect(host.addr, certs::rustls_client(&ca.cert, identity));
        assert_eq!(bare_call(&mut stream, &Value::Nil), expected, "{lang}");
    }
    let loaded = host.wait_for_log("loaded handler");
    assert!(loaded.contains("world=0.3.0"), "{lang}: {loaded}");
}

#[test]
fn python_caller() {
    assert_caller("python");
}

#[test]
fn js_caller() {
    assert_caller("js");
}

#[test]
fn c_caller() {
    assert_caller("c");
}

#[test]
fn zig_caller() {
    assert_caller("zig");
}

/// Served under a name with no operation's suffix, the example answers
/// with an error that lists its operations, and logs why.
fn assert_no_operation(lang: &str, operations: &str) {
    let name = format!("{lang}-other");
    let host = serve(lang, &name);
    match client(&host).send::<_, IgnoredAny>(&[1]) {
        Err(Error::Rpc(reason)) => assert_eq!(
            reason,
            format!("{name}: serve this component under a name ending in {operations}")
        ),
        other => panic!("expected the handler's error, got {other:?}"),
    }
    host.wait_for_log("no operation for the name");
}

#[test]
fn a_name_the_example_has_no_operation_for_is_an_error() {
    assert_no_operation(
        "python",
        "echo, identity, sum, caller, relay, fetch, count, session or samples",
    );
}

/// QuickJS has no console of its own: the example's console.js writes to
/// the WASI stderr the host logs.
#[test]
fn js_a_name_with_no_operation_is_an_error() {
    assert_no_operation(
        "js",
        "echo, identity, sum, caller, relay, fetch, count or session",
    );
}

#[test]
fn c_a_name_with_no_operation_is_an_error() {
    assert_no_operation("c", "echo, sum, caller, relay, fetch or count");
}

#[test]
fn zig_a_name_with_no_operation_is_an_error() {
    assert_no_operation("zig", "echo, sum, caller, relay, fetch or count");
}

/// What the example served by `host` as its default handler answered
/// `message`, or the text of its error reply.
fn ask(host: &Host, message: &Value) -> Result<Value, String> {
    let reply = host.connect().call(&encode(message));
    match error_text(&reply) {
        Some(error) => Err(error
            .strip_prefix("arrpc.error.RpcException: ")
            .unwrap_or(&error)
            .to_owned()),
        None => Ok(decode(&reply)),
    }
}

fn map(pairs: Vec<(&str, Value)>) -> Value {
    Value::Map(pairs.into_iter().map(|(k, v)| (str_value(k), v)).collect())
}

/// The `relay` operation's message: call `method` of `upstream` with
/// `params`.
fn relay(upstream: &str, method: &str, params: Value) -> Value {
    map(vec![
        ("upstream", str_value(upstream)),
        ("method", str_value(method)),
        ("params", params),
    ])
}

/// Served as `<lang>-relay` with `upstreams = ["remote", "local"]`, the
/// example calls an arrpc-host serving the Rust `echo` and `sum` handlers
/// (over TCP) and its own host's `<lang>-echo` (in process). It gets back
/// exactly what the upstream answered, and a failed call as the
/// `call-error` case that says whether it may have run: the upstream's own
/// error text as `remote`, an upstream its entry does not list as `denied`.
fn assert_relays(lang: &str) {
    let remote = InProcessHost::start(serving(vec![
        handler_config("echo", "echo"),
        handler_config("sum", "sum"),
    ]));
    let module = example(lang);
    let host = Host::start(&format!(
        "[server]\ndefault_handler = \"{lang}-relay\"\n\
         [[handler]]\nname = \"{lang}-relay\"\nmodule = \"{module}\"\ntimeout = \"10s\"\n\
         upstreams = [\"remote\", \"local\"]\n\
         [[handler]]\nname = \"{lang}-echo\"\nmodule = \"{module}\"\ntimeout = \"10s\"\n\
         [[upstream]]\nname = \"remote\"\naddress = \"{remote}\"\n\
         [[upstream]]\nname = \"local\"\nhandler = \"{lang}-echo\"\n\
         [[upstream]]\nname = \"unlisted\"\naddress = \"{remote}\"\n",
        module = module.display(),
        remote = remote.addr,
    ));
    let params = Value::Array(vec![
        str_value("héllo"),
        Value::Binary(vec![0, 1, 255]),
        Value::from(u64::MAX),
        Value::Nil,
    ]);
    assert_eq!(
        ask(&host, &relay("remote", "echo", params.clone())),
        Ok(params.clone()),
        "{lang}"
    );
    assert_eq!(
        ask(&host, &relay("local", "echo", params.clone())),
        Ok(params.clone()),
        "{lang}"
    );
    let numbers = Value::Array(vec![1.into(), 2.into(), 39.into()]);
    assert_eq!(
        ask(&host, &relay("remote", "sum", numbers)),
        Ok(map(vec![("sum", 42.into()), ("count", 3.into())])),
        "{lang}"
    );
    assert_eq!(
        ask(&host, &relay("remote", "sum", str_value("nope"))),
        Err(r#"relay: remote: sum: expected an array of numbers or {"numbers": [...]}, got a string"#.into()),
        "{lang}"
    );
    assert_eq!(
        ask(&host, &relay("unlisted", "echo", params)),
        Err(format!(
            "relay: denied: handler `{lang}-relay` may not call upstream `unlisted`: its upstreams do not list it"
        )),
    );
    assert_eq!(
        ask(&host, &Value::Array(vec![1.into()])),
        Err(r#"relay: expected {"upstream": name, "method": name, "params": value}"#.into()),
        "{lang}"
    );
}

#[test]
fn python_relay() {
    assert_relays("python");
}

#[test]
fn js_relay() {
    assert_relays("js");
}

#[test]
fn c_relay() {
    assert_relays("c");
}

#[test]
fn zig_relay() {
    assert_relays("zig");
}

/// The example served as `<lang>-fetch`, allowed `http://<server>`, one
/// instance serving message after message, as the entries `arrpc-host new`
/// prints for Python and JavaScript have it.
fn serve_fetch(lang: &str, server: &HttpServer) -> Host {
    Host::start(&format!(
        "[[handler]]\nname = \"{lang}-fetch\"\nmodule = \"{}\"\ntimeout = \"10s\"\n\
         allowed_outbound_hosts = [\"http://{}\"]\nreuse = {}\n",
        example(lang).display(),
        server.addr,
        arrpc_host::cli::INTERPRETED_REUSE
    ))
}

/// The `fetch` operation's reply: status, headers and body.
fn response(status: u16, body: &str) -> Value {
    map(vec![
        ("status", status.into()),
        (
            "headers",
            map(vec![
                ("content-type", str_value("text/plain; charset=utf-8")),
                ("x-served-by", str_value("arrpc tests")),
                ("content-length", str_value(&body.len().to_string())),
            ]),
        ),
        ("body", Value::Binary(body.as_bytes().to_vec())),
    ])
}

/// The map a reply decodes to, its keys sorted, so two maps compare equal
/// whatever order the guest wrote them in.
fn sorted(value: Value) -> Value {
    match value {
        Value::Map(mut entries) => {
            entries.sort_by_key(|(k, _)| k.to_string());
            Value::Map(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        other => other,
    }
}

/// Served as `<lang>-fetch`, the example GETs a URL its entry allows, with
/// the headers the message gives, and replies with the status, headers and
/// body it received; a 404 is a response like any other. A host its entry
/// does not list is refused before anything is sent, and the example
/// replies with wasi:http's reason.
fn assert_fetches(lang: &str) {
    let server = HttpServer::start();
    let host = serve_fetch(lang, &server);
    let get = |path: &str| {
        map(vec![
            ("url", str_value(&server.url("http", path))),
            ("headers", map(vec![("x-token", str_value("t1"))])),
        ])
    };
    assert_eq!(
        ask(&host, &get("/hello?x=1")).map(sorted),
        Ok(sorted(response(200, "GET /hello?x=1: héllo"))),
        "{lang}"
    );
    let sent = server.requests();
    assert!(
        sent[0].starts_with("GET /hello?x=1 HTTP/1.1\r\n"),
        "{lang}: {sent:?}"
    );
    assert!(
        sent[0].to_lowercase().contains("\r\nx-token: t1\r\n"),
        "{lang}: {sent:?}"
    );
    assert_eq!(
        ask(&host, &get("/missing")).map(sorted),
        Ok(sorted(response(404, "nothing here"))),
        "{lang}"
    );

    let elsewhere = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", elsewhere.local_addr().unwrap());
    let refused = ask(&host, &map(vec![("url", str_value(&url))])).unwrap_err();
    // Every language names the wasi:http error code's case alike.
    assert_eq!(refused, "fetch: HttpRequestDenied", "{lang}");
    assert_eq!(server.requests().len(), 2, "{lang}");
}

/// componentize-py's `poll_loop` sends the request.
#[test]
fn python_fetch() {
    assert_fetches("python");
}

/// fetch.js sends the request, through the js-fetch component build.sh
/// composes in.
#[test]
fn js_fetch() {
    assert_fetches("js");
}

/// The C example sends the request through the wasi:http bindings
/// committed in `handlers/c-bindings/http`.
#[test]
fn c_fetch() {
    assert_fetches("c");
}

/// The Zig example sends the request through the same C bindings.
#[test]
fn zig_fetch() {
    assert_fetches("zig");
}

/// fetch.js sends a body, with its length, and the method given.
#[test]
fn js_fetch_posts_a_body() {
    let server = HttpServer::start();
    let host = serve_fetch("js", &server);
    let post = map(vec![
        ("url", str_value(&server.url("http", "/orders"))),
        ("method", str_value("post")),
        (
            "headers",
            map(vec![("content-type", str_value("application/json"))]),
        ),
        ("body", str_value(r#"{"item":"tea","count":2}"#)),
    ]);
    assert_eq!(
        ask(&host, &post).map(sorted),
        Ok(sorted(response(200, "POST /orders: héllo")))
    );
    let sent = server.requests();
    let request = sent[0].to_lowercase();
    assert!(
        request.starts_with("post /orders http/1.1\r\n"),
        "{request}"
    );
    assert!(
        request.contains("\r\ncontent-type: application/json\r\n"),
        "{request}"
    );
    assert!(request.contains("\r\ncontent-length: 24\r\n"), "{request}");
    assert!(
        request.ends_with("\r\n\r\n{\"item\":\"tea\",\"count\":2}"),
        "{request}"
    );
}

/// A server on 127.0.0.1 that reads each request's head and answers it
/// with `reply`, raw bytes, then closes the connection.
fn answer_with(reply: &'static [u8]) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut head = Vec::new();
            let mut byte = [0];
            while !head.ends_with(b"\r\n\r\n") && matches!(stream.read(&mut byte), Ok(1)) {
                head.push(byte[0]);
            }
            let _ = stream.write_all(reply);
        }
    });
    addr
}

/// The C and Zig examples, which read the body a chunk at a time, reply
/// with a body many reads long; a header the response repeats gets its
/// values joined with ", ", and a value's bytes that are no UTF-8 become
/// U+FFFD, as in the Python example's replies. A message of another shape
/// gets the Python example's error text.
#[test]
fn c_and_zig_fetch_long_bodies_and_repeated_headers() {
    let server = HttpServer::start();
    let odd = answer_with(
        b"HTTP/1.1 200 OK\r\nset-cookie: a=1\r\nx-name: caf\xe9\r\nset-cookie: b=2\r\n\
          content-length: 2\r\n\r\nok",
    );
    for lang in ["c", "zig"] {
        let host = Host::start(&format!(
            "[[handler]]\nname = \"{lang}-fetch\"\nmodule = \"{}\"\ntimeout = \"10s\"\n\
             allowed_outbound_hosts = [\"http://{}\", \"http://{odd}\"]\n",
            example(lang).display(),
            server.addr,
        ));
        let long = "x".repeat(300_000);
        let url = server.url("http", &format!("/big/{}", long.len()));
        assert_eq!(
            ask(&host, &map(vec![("url", str_value(&url))])).map(sorted),
            Ok(sorted(response(200, &long))),
            "{lang}"
        );
        let url = format!("http://{odd}/cookies");
        assert_eq!(
            ask(&host, &map(vec![("url", str_value(&url))])).map(sorted),
            Ok(sorted(map(vec![
                ("status", 200.into()),
                (
                    "headers",
                    map(vec![
                        ("set-cookie", str_value("a=1, b=2")),
                        ("x-name", str_value("caf\u{fffd}")),
                        ("content-length", str_value("2")),
                    ])
                ),
                ("body", Value::Binary(b"ok".to_vec())),
            ]))),
            "{lang}"
        );
        assert_eq!(
            ask(&host, &Value::Array(vec![1.into()])),
            Err(r#"fetch: expected {"url": "http://...", "headers"?: {name: value}}"#.into()),
            "{lang}"
        );
    }
}

/// The Python and JavaScript entries in the shipped `arrpc.toml` (commented
/// out there), uncommented and with absolute paths.
fn shipped_entry(name: &str) -> String {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(repo.join("arrpc.toml")).unwrap();
    let start = text
        .find(&format!("# [[handler]]\n# name = \"{name}\"\n"))
        .unwrap_or_else(|| panic!("arrpc.toml has no commented entry for {name}"));
    let entry: Vec<&str> = text[start..]
        .lines()
        .map_while(|line| line.strip_prefix("# "))
        .collect();
    (entry.join("\n") + "\n").replace("\"handlers/", &format!("\"{}/handlers/", repo.display()))
}

/// The examples' entries keep an instance for as many messages as
/// `arrpc-host new` does for Python and JavaScript, and serve as written.
#[test]
fn the_shipped_example_entries_reuse_instances() {
    for lang in ["python", "js"] {
        let name = format!("{lang}-sum");
        let entry = shipped_entry(&name);
        let config: toml::Table = toml::from_str(&entry).unwrap();
        let reuse = config["handler"][0]
            .get("reuse")
            .and_then(|r| r.as_integer());
        assert_eq!(
            reuse,
            Some(arrpc_host::cli::INTERPRETED_REUSE.into()),
            "{entry}"
        );
        example(lang);
        let host = Host::start(&entry);
        let total: Total<i64> = client(&host).send(&[1, 2, 39]).unwrap();
        assert_eq!(total, Total { sum: 42, count: 3 });
    }
}

/// A reused JavaScript instance serves thousands of messages, each
/// decoding a thousand numbers, within a 24 MiB cap: QuickJS frees what
/// each message made, and the host would replace an instance grown past
/// half its cap. Served with the shipped entry.
#[test]
fn a_reused_js_instance_serves_thousands_of_messages_within_a_small_cap() {
    example("js");
    let host = Host::start(&(shipped_entry("js-sum") + "max_memory_mib = 24\ntimeout = \"10s\"\n"));
    let mut client = client(&host);
    let ints: Vec<i64> = (0..1000).collect();
    let floats = HashMap::from([("numbers", (0..1000).map(f64::from).collect::<Vec<_>>())]);
    for i in 0..2500 {
        let total: Total<f64> = if i % 2 == 0 {
            client.send(&ints)
        } else {
            client.send(&floats)
        }
        .unwrap_or_else(|e| panic!("message {i}: {e}"));
        assert_eq!(
            total,
            Total {
                sum: 499_500.0,
                count: 1000
            }
        );
    }
}

/// A host serving the `lang` example as `<lang>-<operation>`, allowed the
/// store `kept` and not `elsewhere`, both embedded in `dir`: a second host
/// on the same `dir` opens the same files.
fn serve_stores(lang: &str, operation: &str, dir: &Path) -> Host {
    Host::start(&format!(
        "[[store]]\nname = \"kept\"\npath = \"{kept}\"\n\
         [[store]]\nname = \"elsewhere\"\npath = \"{elsewhere}\"\n\
         [[handler]]\nname = \"{lang}-{operation}\"\nmodule = \"{module}\"\ntimeout = \"10s\"\n\
         stores = [\"kept\"]\n",
        kept = dir.join("kept.redb").display(),
        elsewhere = dir.join("elsewhere.redb").display(),
        module = example(lang).display(),
    ))
}

/// The `count` operation's message: add `by` (1 when none) to `key` in
/// `store`.
fn count(store: &str, key: &str, by: Option<i64>) -> Value {
    let mut fields = vec![("store", str_value(store)), ("key", str_value(key))];
    fields.extend(by.map(|by| ("by", Value::from(by))));
    map(fields)
}

/// Served as `<lang>-count`, the example increments a counter through
/// `wasi:keyvalue/atomics` and replies with its new value, by 1 or by what
/// the message says; another key counts apart. A store its entry does not
/// list is `access-denied`. Stopped and started again on the same file,
/// the host serves the count where it was.
fn assert_counts(lang: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut host = serve_stores(lang, "count", dir.path());
    assert_eq!(
        ask(&host, &count("kept", "visits", None)),
        Ok(1.into()),
        "{lang}"
    );
    assert_eq!(
        ask(&host, &count("kept", "visits", None)),
        Ok(2.into()),
        "{lang}"
    );
    assert_eq!(
        ask(&host, &count("kept", "visits", Some(5))),
        Ok(7.into()),
        "{lang}"
    );
    assert_eq!(
        ask(&host, &count("kept", "orders", Some(-2))),
        Ok((-2).into()),
        "{lang}"
    );
    assert_eq!(
        ask(&host, &count("elsewhere", "visits", None)),
        Err("count: access-denied".into()),
        "{lang}"
    );
    let expected = r#"count: expected {"store": name, "key": text, "by": integer}"#;
    for malformed in [
        map(vec![("store", str_value("kept"))]),
        map(vec![
            ("store", str_value("kept")),
            ("key", str_value("visits")),
            ("by", str_value("5")),
        ]),
        Value::Array(vec![str_value("kept"), str_value("visits")]),
    ] {
        assert_eq!(
            ask(&host, &malformed),
            Err(expected.into()),
            "{lang}: {malformed}"
        );
    }

    host.signal("TERM");
    assert!(host.wait_exit().success(), "{lang}: {}", host.log());
    let host = serve_stores(lang, "count", dir.path());
    assert_eq!(
        ask(&host, &count("kept", "visits", None)),
        Ok(8.into()),
        "{lang}"
    );
}

#[test]
fn python_count() {
    assert_counts("python");
}

#[test]
fn js_count() {
    assert_counts("js");
}

#[test]
fn c_count() {
    assert_counts("c");
}

#[test]
fn zig_count() {
    assert_counts("zig");
}

/// The `session` operation's message: read session `id` in `store`, or
/// merge `set` into it.
fn session(store: &str, id: &str, set: Option<Value>) -> Value {
    let mut fields = vec![("store", str_value(store)), ("id", str_value(id))];
    fields.extend(set.map(|set| ("set", set)));
    map(fields)
}

/// Served as `<lang>-session`, the example keeps a session's fields as a
/// MessagePack map through its dict-like wrapper: a new session is empty,
/// `set` merges fields into what is stored (a field set again is
/// replaced, the others kept) and replies with the result, and a read
/// gets that back. Sessions are kept apart by id, and a store the entry
/// does not list is `access-denied`.
fn assert_sessions(lang: &str) {
    let dir = tempfile::tempdir().unwrap();
    let host = serve_stores(lang, "session", dir.path());
    let ask_sorted = |message: &Value| ask(&host, message).map(sorted);
    assert_eq!(
        ask_sorted(&session("kept", "s1", None)),
        Ok(map(vec![])),
        "{lang}"
    );
    let first = map(vec![("user", str_value("ann")), ("visits", 1.into())]);
    assert_eq!(
        ask_sorted(&session("kept", "s1", Some(first.clone()))),
        Ok(sorted(first)),
        "{lang}"
    );
    let cart = Value::Array(vec![str_value("tea"), Value::Binary(vec![0, 255])]);
    let more = map(vec![("visits", 2.into()), ("cart", cart.clone())]);
    let merged = sorted(map(vec![
        ("user", str_value("ann")),
        ("visits", 2.into()),
        ("cart", cart),
    ]));
    assert_eq!(
        ask_sorted(&session("kept", "s1", Some(more))),
        Ok(merged.clone()),
        "{lang}"
    );
    assert_eq!(
        ask_sorted(&session("kept", "s1", None)),
        Ok(merged),
        "{lang}"
    );
    assert_eq!(
        ask_sorted(&session("kept", "s2", None)),
        Ok(map(vec![])),
        "{lang}"
    );
    assert_eq!(
        ask(&host, &session("elsewhere", "s1", None)),
        Err("session: access-denied".into()),
        "{lang}"
    );
    assert_eq!(
        ask(
            &host,
            &session("kept", "s1", Some(Value::Array(vec![1.into()])))
        ),
        Err(r#"session: expected {"store": name, "id": text, "set": map (optional)}"#.into()),
        "{lang}"
    );
}

#[test]
fn python_session() {
    assert_sessions("python");
}

#[test]
fn js_session() {
    assert_sessions("js");
}

/// Messages of every MessagePack type, for the `identity` operation: one
/// that marshal and JSON carry; an array of numbers of every width, which
/// the JavaScript SDK takes as floats; the rest each holding what sends
/// the SDK to its MessagePack library (`keys`, which are not all strings;
/// bin, ext and a timestamp, integers past 2^53, NaN and float 32).
fn typed_messages(keys: [Value; 3]) -> Vec<Vec<u8>> {
    let record = Value::Map(vec![
        (str_value("id"), Value::from(48_213)),
        (str_value("name"), str_value("Ada é 😀")),
        (str_value("ratio"), Value::F64(-0.5)),
        (
            str_value("items"),
            Value::Array(vec![
                Value::Nil,
                Value::Boolean(true),
                Value::from(-129),
                Value::from(1u64 << 40),
                Value::Map(vec![(str_value("k"), Value::Array(vec![]))]),
            ]),
        ),
    ]);
    let exotic = [
        Value::Map(
            keys.into_iter()
                .zip([str_value("a"), Value::F64(2.5), Value::Boolean(false)])
                .collect(),
        ),
        Value::Array(vec![
            Value::Binary(vec![0, 255, 7]),
            Value::Ext(5, b"x".to_vec()),
            Value::Ext(-1, vec![0, 0, 0, 1]),
        ]),
        Value::Array(vec![
            Value::from(u64::MAX),
            Value::from(i64::MIN),
            Value::from(1u64 << 53),
        ]),
        Value::Array(vec![
            Value::F64(f64::NAN),
            Value::F32(1.5),
            Value::F64(f64::INFINITY),
        ]),
    ];
    let safe = (1i64 << 53) - 1;
    let numbers = Value::Array(vec![
        Value::from(0),
        Value::F64(-0.0),
        Value::from(-33),
        Value::from(255),
        Value::from(u32::MAX),
        Value::from(safe),
        Value::from(-safe),
        Value::F32(1.5),
        Value::F64(0.1),
        Value::F64(1e300),
    ]);
    // Integers only, every width out to i64's ends, and floats only: the
    // shapes of a batch of ids or a vector.
    let integers = Value::Array(
        [
            0,
            -1,
            -33,
            127,
            128,
            255,
            65_536,
            -32_769,
            1 << 32,
            i64::MAX,
            i64::MIN,
        ]
        .map(Value::from)
        .to_vec(),
    );
    let floats = Value::Array(vec![
        Value::F64(-0.0),
        Value::F32(f32::MIN_POSITIVE),
        Value::F64(5e-324),
        Value::F32(-3.4e38),
    ]);
    [record, numbers, integers, floats]
        .into_iter()
        .chain(exotic)
        .map(|v| encode(&v))
        .collect()
}

/// What `program`, given the message's hex, prints as the reply's hex.
fn reference_reply(program: &mut std::process::Command, message: &[u8]) -> Vec<u8> {
    let output = program.arg(hex(message)).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    unhex(String::from_utf8(output.stdout).unwrap().trim())
}

/// Handed objects and returning them, the Python example replies with
/// exactly the bytes msgpack-python's `packb(unpackb(message, raw=False,
/// strict_map_key=False))` writes: the types survive both ways, through
/// marshal or, for an ext, through msgpack itself.
#[test]
fn python_objects_keep_msgpack_pythons_types() {
    let host = serve("python", "python-identity");
    let mut wire = host.connect();
    let keys = [Value::from(1), Value::Nil, Value::Binary(vec![0, 1])];
    for message in typed_messages(keys) {
        let expected = reference_reply(
            std::process::Command::new(common::seed::python()).args([
                "-c",
                "import sys, msgpack; m = bytes.fromhex(sys.argv[1]); \
                 print(msgpack.packb(msgpack.unpackb(m, raw=False, strict_map_key=False)).hex())",
            ]),
            &message,
        );
        assert_eq!(wire.call(&message), expected, "{}", decode(&message));
    }
}

/// The Python SDK's C decoder makes exactly msgpack-python's objects: over
/// thousands of generated values of every kind and edge (tests/codec.rs's
/// corpus: integers at every width's ends, float 32, NaN, strs, bins, exts,
/// maps with keys of every type, an array as a key), the `identity` reply
/// is `packb(unpackb(message, raw=False, strict_map_key=False))`, or, where
/// msgpack-python raises, an error naming what it raises. Values it leaves
/// to msgpack are among them, so the hand-over is checked too, and so is
/// an array nested 300 deep. (The corpus's strs that are not UTF-8 are
/// left out: the host refuses them before any handler runs.)
#[test]
fn python_decoder_matches_msgpack_python_over_a_corpus() {
    let host = Host::start(&format!(
        "[[handler]]\nname = \"python-identity\"\nmodule = \"{}\"\ntimeout = \"10s\"\nreuse = 100000\n",
        example("python").display()
    ));
    let mut messages: Vec<Vec<u8>> = common::corpus::corpus()
        .into_iter()
        .filter(|m| all_utf8(&decode(m)))
        .collect();
    // Nesting the decoder recurses through, and msgpack-python packs.
    let mut deep = vec![0x91; 300];
    deep.push(0x01);
    messages.push(deep);
    let lines: Vec<String> = messages.iter().map(|m| hex(m)).collect();
    let expected = common::corpus::check(
        std::process::Command::new(common::seed::python()).args([
            "-c",
            r#"
import sys, msgpack
for line in sys.stdin:
    try:
        m = msgpack.unpackb(bytes.fromhex(line), raw=False, strict_map_key=False)
        print(msgpack.packb(m).hex())
    except Exception as e:
        print("!" + type(e).__name__)
"#,
        ]),
        &lines,
    );
    assert_eq!(expected.len(), messages.len());
    let mut wire = host.connect();
    let mut raised = 0;
    for (message, expected) in messages.iter().zip(expected) {
        let reply = wire.call(message);
        match expected.strip_prefix('!') {
            Some(exception) => {
                raised += 1;
                let error = error_text(&reply)
                    .unwrap_or_else(|| panic!("{}: replied {}", hex(message), hex(&reply)));
                assert!(
                    error.contains(exception),
                    "{}: msgpack-python raises {exception}, the example replied {error}",
                    hex(message)
                );
            }
            None => assert_eq!(hex(&reply), expected, "{}", decode(message)),
        }
    }
    // The corpus holds values msgpack-python refuses; they were met.
    assert!(raised > 0);
}

/// Objects a Python handler returns that no message decodes to (tuples, a
/// bytearray, an `IntEnum`, ints at every encoding's edge, keys of every
/// type, strs and arrays at each length form's edge: samples.py) come back
/// as exactly the bytes msgpack-python's `packb` writes for the same
/// objects, made natively from the same module; what `packb` refuses (an
/// int past either end of 64 bits, a lone surrogate, a set) is an error.
#[test]
fn python_replies_are_what_msgpack_python_packs() {
    let host = serve("python", "python-samples");
    let module = example("python");
    let names = [
        "tuple",
        "bytearray",
        "ints",
        "floats",
        "keys",
        "strs",
        "lengths",
        "subclass",
        "too-big",
        "too-small",
        "surrogate",
        "set",
    ];
    let mut packb = std::process::Command::new(common::seed::python());
    packb
        .current_dir(module.parent().unwrap())
        .args([
            "-c",
            r#"
import sys, msgpack
from samples import SAMPLES
for name in sys.argv[1:]:
    try:
        print(msgpack.packb(SAMPLES[name]()).hex())
    except Exception as e:
        print("!" + type(e).__name__)
"#,
        ])
        .args(names);
    let output = packb.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let expected = String::from_utf8(output.stdout).unwrap();
    let mut wire = host.connect();
    let mut refused = 0;
    for (name, expected) in names.iter().zip(expected.lines()) {
        let reply = wire.call(&encode(&str_value(name)));
        if expected.starts_with('!') {
            refused += 1;
            assert!(
                error_text(&reply).is_some(),
                "{name}: msgpack-python raises {expected}, the example replied {}",
                decode(&reply)
            );
        } else {
            let got = hex(&reply);
            // Some samples are hundreds of kilobytes: show where they part.
            let at = got
                .bytes()
                .zip(expected.bytes())
                .position(|(a, b)| a != b)
                .unwrap_or(got.len().min(expected.len()));
            let around =
                |hex: &str| hex[at.saturating_sub(16)..(at + 32).min(hex.len())].to_owned();
            assert!(
                got == expected,
                "{name}: the reply ({} hex digits) parts from packb's ({}) at digit {at}: {} against {}",
                got.len(),
                expected.len(),
                around(&got),
                around(expected)
            );
        }
    }
    assert_eq!(refused, 4, "msgpack-python refuses the last four samples");
}

/// The Python SDK's decoder on bytes no client sent, which the wire would
/// have refused: what another handler (`state`) stored under a session's
/// key. `session` must take the stored bytes for a map only when they are
/// exactly one MessagePack map: a map with bytes after it, a truncated map,
/// a str or array length beyond the bytes, the reserved byte, and a map
/// nested past 512 all leave it holding no map. A map holding an ext goes
/// to msgpack and is a map.
#[test]
fn python_decoder_refuses_malformed_stored_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start(&format!(
        "[server]\ndefault_handler = \"python-session\"\n\
         [[store]]\nname = \"kept\"\npath = \"{kept}\"\n\
         [[handler]]\nname = \"python-session\"\nmodule = \"{python}\"\ntimeout = \"10s\"\n\
         reuse = 1000\nstores = [\"kept\"]\n\
         [[handler]]\nname = \"state\"\nmodule = \"{state}\"\nstores = [\"kept\"]\n",
        kept = dir.path().join("kept.redb").display(),
        python = example("python").display(),
        state = component("state").display(),
    ));
    let mut wire = host.connect();
    let mut msgid = 0;
    let mut rpc = |method: &str, params: Value| {
        msgid += 1;
        match wire.rpc(msgid, method, &params) {
            (Value::Nil, result) => Ok(result),
            (error, _) => Err(error.as_str().unwrap_or_default().to_owned()),
        }
    };
    // {"a": 1}
    let map_a = [0x81, 0xa1, b'a', 0x01];
    let deep = [vec![0x81, 0xa1, b'a'], vec![0x91; 520], vec![0x01]].concat();
    let refused: [(&str, Vec<u8>); 7] = [
        ("bytes after the map", [&map_a[..], &[0xc0]].concat()),
        ("a truncated map", vec![0x82, 0xa1, b'a', 0x01]),
        (
            "a str longer than the bytes",
            vec![0x81, 0xa1, b'a', 0xd9, 0x09, b'x'],
        ),
        (
            "an array longer than the bytes",
            vec![0x81, 0xa1, b'a', 0xdd, 0xff, 0xff, 0xff, 0xff, 0x01],
        ),
        ("the reserved byte", vec![0x81, 0xa1, b'a', 0xc1]),
        (
            "a str that is not UTF-8",
            vec![0x81, 0xa1, b'a', 0xa2, 0xff, 0xfe],
        ),
        ("nesting past 512", deep),
    ];
    let set = |id: &str, bytes: &[u8]| {
        map(vec![
            ("op", str_value("set")),
            ("store", str_value("kept")),
            ("key", str_value(&format!("session:{id}"))),
            ("value", Value::Binary(bytes.to_vec())),
        ])
    };
    for (i, (what, bytes)) in refused.iter().enumerate() {
        let id = format!("bad{i}");
        assert_eq!(rpc("state", set(&id, bytes)), Ok(Value::Nil), "{what}");
        assert_eq!(
            rpc("python-session", session("kept", &id, None)),
            Err(format!("session: session:{id} holds no MessagePack map")),
            "{what}"
        );
    }
    assert_eq!(rpc("state", set("good", &map_a)), Ok(Value::Nil));
    assert_eq!(
        rpc("python-session", session("kept", "good", None)),
        Ok(map(vec![("a", 1.into())]))
    );
    // {"a": ext 5 "x"}: msgpack's ExtType, packed back as the same ext.
    let ext = [0x81, 0xa1, b'a', 0xd4, 0x05, b'x'];
    assert_eq!(rpc("state", set("ext", &ext)), Ok(Value::Nil));
    assert_eq!(
        rpc("python-session", session("kept", "ext", None)),
        Ok(map(vec![("a", Value::Ext(5, b"x".to_vec()))]))
    );
}

/// Whether every str in `value` is UTF-8.
fn all_utf8(value: &Value) -> bool {
    match value {
        Value::String(s) => s.is_str(),
        Value::Array(items) => items.iter().all(all_utf8),
        Value::Map(entries) => entries.iter().all(|(k, v)| all_utf8(k) && all_utf8(v)),
        _ => true,
    }
}

/// One Python instance serving message after message of objects of every
/// size, on both sides of the SDK's small-object limit (512 bytes): strs and
/// bytes from empty to 1,100 bytes, lists that grow past it as marshal fills
/// them, maps that resize. Each comes back exactly, so no block the
/// allocator pooled is handed out twice or freed into the wrong size class.
#[test]
fn python_objects_of_every_size_come_back_exactly_on_one_instance() {
    let host = Host::start(&format!(
        "[[handler]]\nname = \"python-identity\"\nmodule = \"{}\"\ntimeout = \"10s\"\nreuse = 1000\n",
        example("python").display()
    ));
    let mut wire = host.connect();
    for round in 0..10usize {
        let sized = |k: usize| (round * 37 + k * 13) % 1_100;
        let mut items = Vec::new();
        for k in 0..40 {
            items.push(str_value(&"é".repeat(sized(k) / 2)));
            items.push(Value::Binary(vec![k as u8; sized(k + 1)]));
            items.push(Value::Array(
                (0..sized(k + 2) / 4)
                    .map(|i| Value::from(i * 1_001))
                    .collect(),
            ));
            items.push(Value::Map(
                (0..sized(k + 3) / 20)
                    .map(|i| (str_value(&format!("key {i}")), Value::F64(i as f64 + 0.5)))
                    .collect(),
            ));
        }
        let message = encode(&Value::Array(items));
        assert_eq!(wire.call(&message), message, "round {round}");
    }
}

/// Handed values and returning them, the JavaScript example replies with
/// exactly the bytes `@msgpack/msgpack` writes for what it decodes, with
/// the options the example passes (`useBigInt64`): through JSON, as
/// floats for an array of numbers, or through `@msgpack/msgpack` itself
/// for bin, ext, big integers and NaN.
#[test]
fn js_values_keep_msgpack_javascripts_types() {
    let host = serve("js", "js-identity");
    let modules = Path::new(env!("CARGO_MANIFEST_DIR")).join("handlers/js-example/node_modules");
    let mut wire = host.connect();
    // @msgpack/msgpack takes number keys (as property names), no others.
    let keys = [Value::from(1), Value::F64(-2.5), str_value("s")];
    for message in typed_messages(keys) {
        let expected = reference_reply(
            std::process::Command::new("node")
                .env("NODE_PATH", &modules)
                .args([
                    "-e",
                    "const { decode, encode } = require('@msgpack/msgpack'); \
                     const o = { useBigInt64: true }; \
                     const m = Buffer.from(process.argv[1], 'hex'); \
                     console.log(Buffer.from(encode(decode(m, o), o)).toString('hex'));",
                ]),
            &message,
        );
        assert_eq!(wire.call(&message), expected, "{}", decode(&message));
    }
}
