//! Handlers that call other arrpc services: the `net` guest calls
//! `[[upstream]]`s that are real `arrpc-host`s (over mutual TLS with
//! SPIFFE-ID allow lists, with replicas, one of them killed mid-call) and
//! handlers of its own host, in process, and each failure reaches it typed
//! by whether the call may have run.

mod common;

use std::time::{Duration, Instant};

use arrpc_host::config::{
    Allowed, ClientCertificates, Config, HandlerConfig, TlsConfig, UpstreamConfig, UpstreamTls,
};
use common::certs::{Ca, local_names};
use common::*;
use rmpv::Value;

fn message(pairs: &[(&str, Value)]) -> Value {
    Value::Map(
        pairs
            .iter()
            .map(|(k, v)| (Value::from(*k), v.clone()))
            .collect(),
    )
}

/// `net`'s message to call `method` on `upstream` with `params`.
fn call(upstream: &str, method: &str, params: Value) -> Value {
    message(&[
        ("op", "call".into()),
        ("upstream", upstream.into()),
        ("method", method.into()),
        ("params", params),
    ])
}

/// `net` allowed to call `upstreams`, with `configured` in `[[upstream]]`.
fn caller(upstreams: &[&str], configured: Vec<UpstreamConfig>) -> Config {
    Config {
        upstreams: configured,
        ..serving(vec![HandlerConfig {
            upstreams: upstreams.iter().map(|u| u.to_string()).collect(),
            ..handler_config("net", "net")
        }])
    }
}

/// What `net` answered, or the error text it replied with.
fn ask(host: &impl Serves, request: &Value) -> Result<Value, String> {
    let reply = host.connect().call(&encode(request));
    match error_text(&reply) {
        Some(error) => Err(error),
        None => Ok(decode(&reply)),
    }
}

const FRONT: &str = "spiffe://cluster.local/ns/shop/sa/front";

/// The upstream serves mutual TLS; `echo` admits the calling host's SPIFFE
/// ID and `sum` admits only billing's. The caller presents its SVID from
/// files, and the upstream's allow lists apply to it.
#[test]
fn an_upstream_over_mutual_tls_admits_the_hosts_spiffe_id_where_its_allow_list_does() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "mesh");
    let server = ca.server(dir.path(), "upstream", local_names());
    let svid = ca.workload(dir.path(), "front", Some(FRONT), &[]);
    let handler = |name: &str, component: &str, allowed: &str| HandlerConfig {
        allow: Some(vec![Allowed::SpiffeId(allowed.into())]),
        ..handler_config(name, component)
    };
    let upstream = InProcessHost::start(Config {
        tls: Some(TlsConfig {
            client_ca: Some(ca.cert.clone()),
            client_certificates: ClientCertificates::Required,
            ..TlsConfig::new(server.cert.clone(), server.key.clone())
        }),
        ..serving(vec![
            handler("echo", "echo", FRONT),
            handler("sum", "sum", "spiffe://cluster.local/ns/billing/sa/api"),
        ])
    });
    let host = InProcessHost::start(caller(
        &["mesh"],
        vec![UpstreamConfig {
            tls: Some(UpstreamTls {
                ca_file: Some(ca.cert.clone()),
                cert: Some(svid.cert.clone()),
                key: Some(svid.key.clone()),
                server_name: Some("localhost".into()),
                spiffe: None,
            }),
            ..UpstreamConfig::remote("mesh", upstream.addr.to_string())
        }],
    ));
    let params = Value::Array(vec!["hi".into()]);
    assert_eq!(
        ask(&host, &call("mesh", "echo", params.clone())),
        Ok(params.clone())
    );
    let error = ask(&host, &call("mesh", "sum", Value::Array(vec![1.into()]))).unwrap_err();
    assert!(
        error.contains("NotRun(") && error.contains(&format!("{FRONT} may not call `sum`")),
        "{error}"
    );
    let calls = |result| {
        host.metric(
            "arrpc_outbound_requests_total",
            &[
                ("handler", "net"),
                ("kind", "arrpc"),
                ("target", "mesh"),
                ("result", result),
            ],
        )
    };
    assert_eq!((calls("ok"), calls("not_run")), (1.0, 1.0));
}

/// A handler may call only the upstreams its `upstreams` lists; others,
/// and names nobody configured, are refused without a call.
#[test]
fn an_upstream_the_handler_does_not_list_is_denied() {
    let target = misbehave_host(|h| h);
    let host = InProcessHost::start(Config {
        upstreams: vec![UpstreamConfig::remote("other", target.addr.to_string())],
        ..caller(&[], vec![])
    });
    for (name, why) in [
        (
            "other",
            "may not call upstream `other`: its upstreams do not list it",
        ),
        ("nowhere", "no upstream is named `nowhere`"),
    ] {
        let error = ask(
            &host,
            &call(name, "misbehave", Value::Array(vec!["hi".into()])),
        )
        .unwrap_err();
        assert!(error.contains("Denied(") && error.contains(why), "{error}");
    }
    // Nothing reached the upstream.
    assert_eq!(target.metric("arrpc_connections_total", &[]), 0.0);
}

/// Over two replicas with one not listening, calls that did not run move
/// to the live one; with none left, the call is not run; a replica killed
/// while the call runs on it leaves the call "may have run".
#[test]
fn replicas_that_fail_give_not_run_or_may_have_run_as_the_client_table_says() {
    let live = misbehave_host(|h| h);
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let host = InProcessHost::start(caller(
        &["pair", "gone"],
        vec![
            UpstreamConfig::remote("pair", format!("{},{dead_addr}", live.addr)),
            UpstreamConfig::remote("gone", dead_addr.to_string()),
        ],
    ));
    // `misbehave` echoes what is no command of its own.
    let params = Value::Array(vec!["hi".into()]);
    for _ in 0..6 {
        assert_eq!(
            ask(&host, &call("pair", "misbehave", params.clone())),
            Ok(params.clone())
        );
    }
    let error = ask(
        &host,
        &call("gone", "misbehave", Value::Array(vec!["hi".into()])),
    )
    .unwrap_err();
    assert!(error.contains("NotRun("), "{error}");

    let mut doomed = Host::start_config(&misbehave_config(|h| h));
    let host = InProcessHost::start(caller(
        &["doomed"],
        vec![UpstreamConfig::remote("doomed", doomed.addr.to_string())],
    ));
    let sleeping = std::thread::spawn({
        let addr = host.addr;
        move || {
            let mut wire = Wire::connect(addr);
            let reply = wire.call(&encode(&call(
                "doomed",
                "misbehave",
                Value::Array(vec!["sleep:10000".into()]),
            )));
            error_text(&reply)
        }
    });
    doomed.wait_for_log("sleeping");
    doomed.child().kill().unwrap();
    let error = sleeping.join().unwrap().unwrap();
    assert!(error.contains("MayHaveRun("), "{error}");
}

#[test]
fn an_upstream_slower_than_its_timeout_is_timed_out() {
    let slow = misbehave_host(|h| h);
    let host = InProcessHost::start(caller(
        &["slow"],
        vec![UpstreamConfig {
            timeout: Duration::from_millis(300),
            ..UpstreamConfig::remote("slow", slow.addr.to_string())
        }],
    ));
    let started = Instant::now();
    let error = ask(
        &host,
        &call("slow", "misbehave", Value::Array(vec!["sleep:5000".into()])),
    )
    .unwrap_err();
    assert!(error.ends_with("net: call: CallError::TimedOut"), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

/// A bare message goes to the upstream's default handler, as the Python
/// arrpc package's client sends it.
#[test]
fn a_bare_message_reaches_the_upstreams_default_handler() {
    let target = misbehave_host(|h| h);
    let host = InProcessHost::start(caller(
        &["bare"],
        vec![UpstreamConfig::remote("bare", target.addr.to_string())],
    ));
    for _ in 0..3 {
        let send = message(&[
            ("op", "send".into()),
            ("upstream", "bare".into()),
            ("message", "hello".into()),
        ]);
        assert_eq!(ask(&host, &send), Ok("hello".into()));
    }
}

/// The upstream's handler is handed the caller's trace, continued.
#[test]
fn the_trace_continues_into_the_upstream() {
    let target = misbehave_host(|h| h);
    let host = InProcessHost::start(caller(
        &["traced"],
        vec![UpstreamConfig::remote("traced", target.addr.to_string())],
    ));
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace}-00f067aa0ba902b7-01");
    let request = encode(&call(
        "traced",
        "misbehave",
        Value::Array(vec!["context".into()]),
    ));
    let reply = host
        .connect()
        .call(&arrpc_wire::trace::wrap(&traceparent, &request));
    let context = decode(&reply);
    let handed = context
        .as_map()
        .unwrap()
        .iter()
        .find(|(k, _)| k.as_str() == Some("traceparent"))
        .map(|(_, v)| v.as_str().unwrap().to_owned())
        .unwrap_or_else(|| panic!("no traceparent in {context}"));
    assert!(handed.starts_with(&format!("00-{trace}-")), "{handed}");
}

/// An upstream that is a handler of the same host is called in process;
/// one calling itself is stopped at the depth limit, and the error comes
/// back up the chain.
#[test]
fn in_process_calls_work_and_a_loop_stops_at_the_depth_limit() {
    let config = Config {
        upstreams: vec![
            UpstreamConfig::local("inner", "echo"),
            UpstreamConfig::local("self", "net"),
        ],
        ..serving(vec![
            HandlerConfig {
                upstreams: vec!["inner".into(), "self".into()],
                ..handler_config("net", "net")
            },
            handler_config("echo", "echo"),
        ])
    };
    let host = InProcessHost::start(config);
    assert_eq!(
        ask(&host, &call("inner", "", Value::Array(vec![7.into()]))),
        Ok(Value::Array(vec![7.into()]))
    );
    // Each level asks the next to do the same again.
    let mut request = call("self", "", Value::Nil);
    for _ in 0..20 {
        request = call("self", "", request);
    }
    let error = ask(&host, &request).unwrap_err();
    assert!(
        error.contains(&format!(
            "in-process calls nest at most {} deep",
            arrpc_host::runtime::MAX_CALL_DEPTH
        )),
        "{error}"
    );
}

/// SIGTERM while a handler waits on an upstream: the call finishes, its
/// reply is written, and the host exits cleanly.
#[test]
fn sigterm_with_upstream_calls_in_flight_drains_them() {
    let target = misbehave_host(|h| h);
    let mut host = Host::start_config(&caller(
        &["slow"],
        vec![UpstreamConfig::remote("slow", target.addr.to_string())],
    ));
    let addr = host.addr;
    let in_flight = std::thread::spawn(move || {
        let mut wire = Wire::connect(addr);
        decode(&wire.call(&encode(&call(
            "slow",
            "misbehave",
            Value::Array(vec!["sleep:1000".into()]),
        ))))
    });
    target.wait_for_in_flight(1);
    host.signal("TERM");
    assert_eq!(in_flight.join().unwrap(), Value::from(1000));
    let status = host.child().wait().unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn a_handler_listing_an_unknown_upstream_is_refused_at_start() {
    let config = format!("{}upstreams = [\"prices\"]\n", handler("net", "net", ""));
    let error = start_refused(&config, &[], &[]);
    assert!(
        error.contains("handler #1 (`net`): upstreams: no [[upstream]] is named `prices`"),
        "{error}"
    );
}
