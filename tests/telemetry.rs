//! Telemetry of a running host: `/metrics` scraped and parsed with a
//! Prometheus text-format parser, `/healthz` and `/readyz`, spans exported
//! to an OTLP receiver run by the test and linked to the client's span,
//! trace context handed to the handler and its log lines, JSON logs, and a
//! graceful drain on SIGTERM under load.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use arrpc_host::config::{
    AuthConfig, Config, DirGrant, HandlerConfig, SecretSource, TelemetryConfig,
};
use arrpc_wire::{rpc, trace};
use common::admin::*;
use common::*;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use rmpv::Value;

const MESSAGES: &str = "arrpc_messages_total";

fn messages(scrape: &Scrape, handler: &str, outcome: &str) -> f64 {
    scrape.value(MESSAGES, &[("handler", handler), ("outcome", outcome)])
}

fn rpc_call(wire: &mut Wire, method: &str, command: &str) -> Value {
    let request = rpc::request(1, method, &encode(&str_value(command)));
    decode(&wire.call(&request))
}

#[test]
fn metrics_count_every_outcome_and_health_endpoints_answer() {
    let (host, admin) = start_config_with_admin(&serving(vec![
        handler_config("echo", "echo"),
        HandlerConfig {
            timeout: Duration::from_millis(300),
            ..handler_config("misbehave", "misbehave")
        },
    ]));
    assert_eq!(get(admin, "/healthz"), (200, "ok\n".into()));
    assert_eq!(get(admin, "/readyz").0, 200);
    assert_eq!(get(admin, "/nothing").0, 404);

    let before = scrape(admin);
    // No message counted yet (the family shows with its first series).
    assert!(
        before.try_value(MESSAGES, &[]).is_none_or(|n| n == 0.0),
        "{before}"
    );
    assert_eq!(before.value("arrpc_handlers_loaded", &[]), 2.0, "{before}");
    assert_eq!(before.value("arrpc_listener_accepting", &[]), 1.0);
    let sha = sha256_of(&component("echo"));
    assert_eq!(
        before.value(
            "arrpc_handler_info",
            &[("handler", "echo"), ("sha256", &sha)]
        ),
        1.0
    );

    let mut wire = host.connect();
    let hello = encode(&str_value("hello"));
    for _ in 0..3 {
        assert_eq!(wire.call(&hello), hello);
    }
    for command in ["trap", "loop", "error"] {
        let reply = rpc_call(&mut wire, "misbehave", command);
        assert!(reply[2].is_str(), "{command}: {reply:?}");
    }
    let unknown = rpc_call(&mut wire, "nobody", "x");
    assert!(unknown[2].as_str().unwrap().contains("no handler is named"));
    // A trace envelope whose data is two values, then a byte that is never
    // MessagePack (which closes the connection).
    let bad_trace = trace::wrap("00-x-y-01", &[0x01, 0x02]);
    assert!(error_text(&wire.call(&bad_trace)).is_some());
    let mut broken = host.connect();
    broken.write(&[0xc1]);
    assert!(error_text(&broken.read().unwrap()).is_some());

    let after = scrape(admin);
    assert_eq!(messages(&after, "echo", "ok"), 3.0);
    assert_eq!(messages(&after, "misbehave", "trap"), 1.0);
    assert_eq!(messages(&after, "misbehave", "timeout"), 1.0);
    assert_eq!(messages(&after, "misbehave", "handler_error"), 1.0);
    assert_eq!(messages(&after, "", "unknown_handler"), 1.0);
    assert_eq!(messages(&after, "", "malformed"), 2.0);
    assert_eq!(
        after.value("arrpc_request_bytes_total", &[("handler", "echo")]),
        3.0 * hello.len() as f64
    );
    assert_eq!(
        after.value("arrpc_reply_bytes_total", &[("handler", "echo")]),
        3.0 * hello.len() as f64
    );
    assert_eq!(
        after.value("arrpc_handler_seconds_count", &[("handler", "misbehave")]),
        3.0
    );
    assert_eq!(
        after.value("arrpc_message_queue_seconds_count", &[("handler", "echo")]),
        3.0
    );
    assert_eq!(after.value("arrpc_connections_total", &[]), 2.0);
    assert_eq!(after.value("arrpc_messages_in_flight", &[]), 0.0);
    // Peer addresses never become labels.
    assert!(!after.to_string().contains("127.0.0.1"), "{after}");
}

/// The outcomes of a handler held to its limits or refused, each provoked
/// for real and counted under its own label, and hot swaps counted by
/// whether they applied.
#[test]
fn metrics_count_limits_refusals_and_swaps_by_label() {
    let gate = Gate::new();
    let vanishing = tempfile::tempdir().unwrap();
    let host = InProcessHost::start(serving(vec![
        handler_config("misbehave", "misbehave"),
        HandlerConfig {
            max_instances: 1,
            dirs: vec![gate.grant()],
            ..handler_config("single", "misbehave")
        },
        HandlerConfig {
            max_memory_mib: 16,
            ..handler_config("hungry", "misbehave")
        },
        HandlerConfig {
            fuel: Some(5_000_000),
            ..handler_config("metered", "misbehave")
        },
        HandlerConfig {
            dirs: vec![DirGrant {
                host: vanishing.path().to_owned(),
                guest: "/data".into(),
                writable: false,
            }],
            ..handler_config("granted", "misbehave")
        },
    ]));
    let count = |handler: &str, outcome: &str| {
        host.metric(MESSAGES, &[("handler", handler), ("outcome", outcome)])
    };
    let error = |method: &str, command: &str| {
        let reply = rpc_call(&mut host.connect(), method, command);
        reply[2]
            .as_str()
            .unwrap_or_else(|| panic!("{command}: {reply:?}"))
            .to_owned()
    };

    let mut held = host.connect();
    held.write(&rpc::request(
        1,
        "single",
        &encode(&str_value(&Gate::wait("held"))),
    ));
    host.wait_for_in_flight(1);
    assert!(error("single", "x").contains("is busy: all 1 instances are in use"));
    gate.open("held");
    assert!(response(&held.read().unwrap()).1.is_nil());
    host.wait_for_metric(MESSAGES, &[("handler", "single"), ("outcome", "busy")], 1.0);
    assert_eq!(count("single", "ok"), 1.0);

    assert!(error("hungry", "alloc").contains("exceeded its memory limit of 16 MiB"));
    host.wait_for_metric(
        MESSAGES,
        &[("handler", "hungry"), ("outcome", "memory_limit")],
        1.0,
    );
    assert!(error("metered", "loop").contains("exhausted its fuel limit of 5000000"));
    host.wait_for_metric(
        MESSAGES,
        &[("handler", "metered"), ("outcome", "fuel_limit")],
        1.0,
    );
    assert!(error("misbehave", "invalid-output").contains("not one whole MessagePack value"));
    host.wait_for_metric(
        MESSAGES,
        &[("handler", "misbehave"), ("outcome", "invalid_output")],
        1.0,
    );

    // A config that does not load is a failed swap; one that does (the
    // same handlers, so every one is kept), an applied one. Each is written
    // whole and renamed into place, so no reload reads it half written.
    let path = &host.config.path;
    let text = std::fs::read_to_string(path).unwrap();
    let replace = |contents: String| {
        let written = path.with_extension("new");
        std::fs::write(&written, contents).unwrap();
        std::fs::rename(written, path).unwrap();
    };
    replace(format!("[[[ not TOML\n{text}"));
    host.wait_for_metric("arrpc_handler_swaps_total", &[("result", "failed")], 1.0);
    replace(format!("# edited\n{text}"));
    host.wait_for_metric("arrpc_handler_swaps_total", &[("result", "ok")], 1.0);
    assert_eq!(
        host.metric("arrpc_handler_swaps_total", &[("result", "failed")]),
        1.0
    );

    // A granted folder gone since start cannot be opened for the guest.
    std::fs::remove_dir(vanishing.path()).unwrap();
    let refused = error("granted", "x");
    let names = format!(
        "cannot open its granted directory {}",
        vanishing.path().display()
    );
    assert!(refused.contains(&names), "{refused}");
    host.wait_for_metric(
        MESSAGES,
        &[("handler", "granted"), ("outcome", "grant_error")],
        1.0,
    );

    // Each was counted once, under its own outcome only.
    for (handler, outcomes) in [
        ("single", 2.0),
        ("hungry", 1.0),
        ("metered", 1.0),
        ("misbehave", 1.0),
        ("granted", 1.0),
    ] {
        assert_eq!(
            host.metric(MESSAGES, &[("handler", handler)]),
            outcomes,
            "{handler}"
        );
    }
}

/// `/readyz` answers 503 while a handler is still being built and
/// compiled, with `/healthz` already 200, and 200 once it is served. The
/// handler's `build` command waits for a file the test writes (or for the
/// host to be gone), so the host is caught loading however fast the
/// machine is.
#[test]
fn readyz_is_503_until_handlers_are_loaded() {
    let config = write_config("");
    let gate = config.dir.path().join("gate");
    let build = format!(
        "while [ ! -e {} ] && kill -0 $PPID; do sleep 0.05; done; cp {} h.wasm",
        gate.display(),
        component("echo").display()
    );
    std::fs::write(
        &config.path,
        format!(
            "[server]\ndefault_handler = \"h\"\n[[handler]]\nname = \"h\"\nmodule = \"h.wasm\"\nbuild = {build:?}\n"
        ),
    )
    .unwrap();
    let starting = Host::spawn_on(
        config,
        "127.0.0.1:0",
        &["--admin-listen", "127.0.0.1:0"],
        &[],
    );
    let admin = admin_of(&starting);
    starting.wait_for_log("module missing; building");
    assert_eq!(get(admin, "/healthz"), (200, "ok\n".into()));
    assert_eq!(
        get(admin, "/readyz"),
        (
            503,
            "not ready: handlers loading or listener draining\n".into()
        )
    );
    assert_eq!(scrape(admin).value("arrpc_handlers_loaded", &[]), 0.0);

    std::fs::write(&gate, "").unwrap();
    let host = starting.listening();
    assert_eq!(get(admin, "/readyz"), (200, "ready\n".into()));
    assert_eq!(host.connect().call(&[0x07]), [0x07]);
}

/// An OTLP/HTTP trace receiver on an ephemeral port, keeping every span
/// with its resource's `service.name`.
struct Receiver {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<(String, Span)>>>,
}

impl Receiver {
    fn start() -> Receiver {
        use http_body_util::{BodyExt, Full};
        use hyper::service::service_fn;
        use hyper_util::rt::TokioIo;

        let spans = Arc::new(Mutex::new(Vec::new()));
        let sink = spans.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                loop {
                    let (stream, _) = listener.accept().await.unwrap();
                    let sink = sink.clone();
                    let service =
                        service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                            let sink = sink.clone();
                            async move {
                                assert_eq!(request.uri().path(), "/v1/traces");
                                let body = request.into_body().collect().await?.to_bytes();
                                let export = ExportTraceServiceRequest::decode(body)
                                    .expect("an OTLP protobuf export");
                                for resource in export.resource_spans {
                                    let service = resource
                                        .resource
                                        .iter()
                                        .flat_map(|r| &r.attributes)
                                        .find(|kv| kv.key == "service.name")
                                        .and_then(|kv| text(kv.value.as_ref()?.value.as_ref()?))
                                        .unwrap_or_default();
                                    for scope in resource.scope_spans {
                                        let mut sink = sink.lock().unwrap();
                                        sink.extend(
                                            scope.spans.into_iter().map(|s| (service.clone(), s)),
                                        );
                                    }
                                }
                                let reply = ExportTraceServiceResponse::default().encode_to_vec();
                                Ok::<_, hyper::Error>(
                                    hyper::Response::builder()
                                        .header("content-type", "application/x-protobuf")
                                        .body(Full::new(bytes::Bytes::from(reply)))
                                        .unwrap(),
                                )
                            }
                        });
                    tokio::spawn(async move {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        });
        Receiver {
            addr: rx.recv().unwrap(),
            spans,
        }
    }

    /// Waits until a span named `name` in `trace_id` has arrived.
    /// Waits until `count` spans named `name` of the trace have arrived.
    fn wait_for_count(&self, name: &str, trace_id: &[u8], count: usize) -> Vec<Span> {
        let found = || -> Vec<Span> {
            let spans = self.spans.lock().unwrap();
            spans
                .iter()
                .filter(|(_, s)| s.name == name && s.trace_id == trace_id)
                .map(|(_, s)| s.clone())
                .collect()
        };
        wait_until(
            format!("{count} spans {name:?} arriving"),
            Duration::from_secs(20),
            || found().len() >= count,
        );
        found()
    }

    fn wait_for(&self, name: &str, trace_id: &[u8]) -> (String, Span) {
        let find = || {
            let spans = self.spans.lock().unwrap();
            spans
                .iter()
                .find(|(_, s)| s.name == name && s.trace_id == trace_id)
                .cloned()
        };
        wait_until(
            format!("a span {name:?} arriving"),
            Duration::from_secs(20),
            || find().is_some(),
        );
        find().unwrap()
    }
}

fn text(value: &AnyValue) -> Option<String> {
    match value {
        AnyValue::StringValue(s) => Some(s.clone()),
        AnyValue::IntValue(i) => Some(i.to_string()),
        AnyValue::BoolValue(b) => Some(b.to_string()),
        _ => None,
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| text(kv.value.as_ref()?.value.as_ref()?))
}

/// A host serving `misbehave` that exports its spans to `receiver`,
/// recording `sample_ratio` of new traces (all when `None`).
fn traced_host(receiver: &Receiver, sample_ratio: Option<f64>) -> Host {
    Host::start_config(&Config {
        telemetry: TelemetryConfig {
            otlp_endpoint: Some(format!("http://{}", receiver.addr)),
            sample_ratio,
            ..TelemetryConfig::default()
        },
        ..serving(vec![handler_config("misbehave", "misbehave")])
    })
}

/// OTLP over gRPC is not built in: asked for it, the host refuses to start
/// and says what it supports, instead of exporting nowhere.
#[test]
fn otlp_over_grpc_is_refused_at_start() {
    for variable in [
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    ] {
        let stderr = start_refused(
            &handler("echo", "echo", ""),
            &[],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
                (variable, "grpc"),
            ],
        );
        assert!(
            stderr.contains(&format!(
                "{variable}=\"grpc\" is not supported: only http/protobuf is built in"
            )),
            "{variable}: {stderr}"
        );
        assert!(!stderr.contains("listening"), "{variable}: {stderr}");
    }
}

/// `OTEL_SDK_DISABLED=true` turns export off even with an endpoint
/// configured: the receiver gets nothing, not even the flush at exit,
/// while the same host without it exports its message's span.
#[test]
fn otel_sdk_disabled_exports_nothing() {
    for (disabled, exported) in [(true, false), (false, true)] {
        let receiver = Receiver::start();
        let config = Config {
            telemetry: TelemetryConfig {
                otlp_endpoint: Some(format!("http://{}", receiver.addr)),
                ..TelemetryConfig::default()
            },
            ..serving(vec![handler_config("echo", "echo")])
        };
        let env: &[(&str, &str)] = if disabled {
            &[("OTEL_SDK_DISABLED", "true")]
        } else {
            &[]
        };
        let mut host = Host::start_with_env(write_config_value(&config), &[], env);
        assert_eq!(host.connect().call(&[0x01]), [0x01]);
        // Spans still batched are flushed at exit.
        host.signal("TERM");
        let exit = host.wait_exit();
        assert!(exit.success(), "{exit}");
        let spans = receiver.spans.lock().unwrap().len();
        assert_eq!(spans > 0, exported, "disabled: {disabled}, spans: {spans}");
    }
}

/// `misbehave` alone, each message allowed `timeout`, with the shutdown
/// drain allowed `grace` and `gate`'s folder granted when given.
fn draining(grace: Duration, timeout: Duration, gate: Option<&Gate>) -> Config {
    let mut config = misbehave_config(|handler| HandlerConfig {
        timeout,
        dirs: gate.map(Gate::grant).into_iter().collect(),
        ..handler
    });
    config.server.shutdown_grace = grace;
    config
}

/// An RPC client of `host`, with the runtime to drive it.
fn rpc_client(host: &Host) -> (tokio::runtime::Runtime, arrpc_client::RpcClient) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client =
        arrpc_client::RpcClient::new(arrpc_client::ClientConfig::new(host.addr.to_string()));
    (runtime, client)
}

fn map_get<'a>(map: &'a Value, key: &str) -> &'a Value {
    map.as_map()
        .and_then(|entries| entries.iter().find(|(k, _)| k.as_str() == Some(key)))
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no {key} in {map:?}"))
}

#[test]
fn spans_continue_the_client_trace_and_reach_the_handler() {
    let receiver = Receiver::start();
    let mut host = traced_host(&receiver, None);

    // The client's own span, exported by this process to the same receiver.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("http://{}/v1/traces", receiver.addr))
        .build()
        .unwrap();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_simple_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("telemetry-test")
                .build(),
        )
        .build();
    let span = provider.tracer("test").start("client call");
    let client_cx = opentelemetry::Context::current_with_span(span);
    let mut carrier = HashMap::new();
    opentelemetry_sdk::propagation::TraceContextPropagator::new()
        .inject_context(&client_cx, &mut carrier);
    let traceparent = carrier["traceparent"].clone();
    let client_context = client_cx.span().span_context().clone();
    let trace_id = client_context.trace_id().to_bytes().to_vec();
    let trace_hex = client_context.trace_id().to_string();

    let (runtime, client) = rpc_client(&host);
    let params = encode(&Value::Array(vec![str_value("context")]));
    let reply = runtime
        .block_on(client.call_raw_traced("misbehave", &params, &traceparent))
        .unwrap();
    let printed = runtime
        .block_on(client.call_raw_traced(
            "misbehave",
            &encode(&Value::Array(vec![str_value("print:1")])),
            &traceparent,
        ))
        .unwrap();
    assert_eq!(decode(&printed), Value::from(1));
    // The Python arrpc package's bare form still works untraced next to traced
    // messages.
    let mut wire = host.connect();
    assert_eq!(
        decode(&wire.call(&encode(&str_value("plain")))),
        str_value("plain")
    );
    client_cx.span().end();
    provider.shutdown().unwrap();

    // The handler got the host span's context, in the client's trace.
    let context = decode(&reply);
    let handed = map_get(&context, "traceparent")
        .as_str()
        .unwrap()
        .to_owned();
    let parts: Vec<&str> = handed.split('-').collect();
    assert_eq!(parts.len(), 4, "{handed}");
    assert_eq!(parts[1], trace_hex);
    assert_ne!(parts[2], client_context.span_id().to_string());

    // Guest output lines carry the handler and the trace id.
    let log = host.wait_for_log("stdout line 1");
    let line = log.lines().find(|l| l.contains("stdout line 1")).unwrap();
    assert!(line.contains("handler=misbehave"), "{line}");
    assert!(line.contains(&format!("trace_id={trace_hex}")), "{line}");

    // SIGTERM flushes the host's spans before it exits.
    host.signal("TERM");
    assert!(host.child().wait().unwrap().success());

    let (service, client_span) = receiver.wait_for("client call", &trace_id);
    assert_eq!(service, "telemetry-test");
    let (service, host_span) = receiver.wait_for("arrpc.message", &trace_id);
    assert_eq!(service, "arrpc-host");
    assert_eq!(host_span.parent_span_id, client_span.span_id);
    assert_eq!(hex::encode(&host_span.span_id), parts[2]);
    assert_eq!(
        attribute(&host_span, "handler").as_deref(),
        Some("misbehave")
    );
    assert_eq!(attribute(&host_span, "outcome").as_deref(), Some("ok"));
    assert_eq!(
        attribute(&host_span, "module_sha256"),
        Some(sha256_of(&component("misbehave")))
    );
    assert_eq!(
        attribute(&host_span, "request_bytes"),
        Some(
            trace::wrap(&traceparent, &rpc::request(0, "misbehave", &params))
                .len()
                .to_string()
        )
    );
    assert!(attribute(&host_span, "reply_bytes").is_some());
}

/// With `telemetry.sample_ratio`, a message whose caller sampled its trace
/// gets a span; one that starts a trace is sampled at the ratio (here 0),
/// and one whose caller did not sample gets none. Unsampled messages are
/// handled as with tracing off: the handler gets the caller's context, if
/// any, unchanged.
#[test]
fn with_a_sample_ratio_only_sampled_messages_get_a_span() {
    let receiver = Receiver::start();
    let mut host = traced_host(&receiver, Some(0.0));
    let (runtime, client) = rpc_client(&host);
    let params = encode(&Value::Array(vec![str_value("context")]));
    let handed = |traceparent: Option<&str>| -> Value {
        let reply = match traceparent {
            Some(tp) => runtime.block_on(client.call_raw_traced("misbehave", &params, tp)),
            None => runtime.block_on(client.call_raw("misbehave", &params)),
        };
        map_get(&decode(&reply.unwrap()), "traceparent").clone()
    };
    let sampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let unsampled = "00-5bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";

    for _ in 0..20 {
        assert_eq!(handed(None), Value::Nil);
    }
    assert_eq!(handed(Some(unsampled)), str_value(unsampled));
    let child = handed(Some(sampled));
    let child = child.as_str().unwrap();
    assert!(
        child.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-")
            && child.ends_with("-01")
            && !child.contains("00f067aa0ba902b7"),
        "{child}"
    );

    // SIGTERM flushes the host's spans before it exits.
    host.signal("TERM");
    assert!(host.child().wait().unwrap().success());
    let (_, span) = receiver.wait_for(
        "arrpc.message",
        &hex::decode("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
    );
    assert_eq!(hex::encode(&span.parent_span_id), "00f067aa0ba902b7");
    let spans = receiver.spans.lock().unwrap();
    let messages: Vec<_> = spans
        .iter()
        .filter(|(_, s)| s.name == "arrpc.message")
        .map(|(_, s)| hex::encode(&s.trace_id))
        .collect();
    assert_eq!(messages.len(), 1, "{messages:?}");
}

#[test]
fn sigterm_under_load_answers_every_accepted_message_then_exits_0() {
    let gate = Gate::new();
    let (mut host, admin) = start_config_with_admin(&draining(
        Duration::from_secs(20),
        Duration::from_secs(10),
        Some(&gate),
    ));
    let clients = 8;
    let (sent_tx, sent_rx) = std::sync::mpsc::channel();
    let workers: Vec<_> = (0..clients)
        .map(|i| {
            let addr = host.addr;
            let sent = sent_tx.clone();
            thread::spawn(move || {
                let mut wire = Wire::connect(addr);
                let mut answered = 0;
                // Fast messages first, then one that is in flight when the
                // signal arrives and ends when the gate opens.
                for round in 0..20 {
                    let text = format!("client {i} round {round}");
                    assert_eq!(
                        decode(&wire.call(&encode(&str_value(&text)))),
                        str_value(&text)
                    );
                    answered += 1;
                }
                wire.write(&encode(&str_value(&Gate::wait("slow"))));
                sent.send(()).unwrap();
                let reply = wire.read().expect("the in-flight message is answered");
                assert_eq!(decode(&reply), str_value("/gate/slow"));
                answered += 1;
                // Draining: a message read after the signal is not run. In
                // the first moments of the drain it is refused as not run,
                // so a balancing client sends it elsewhere; later the
                // connection ends instead of reading more.
                wire.write(&encode(&str_value("after the signal")));
                let after = wire.read().map(|reply| decode(&reply));
                (answered, after)
            })
        })
        .collect();
    for _ in 0..clients {
        sent_rx.recv_timeout(Duration::from_secs(60)).unwrap();
    }
    // Every gated message has reached its guest.
    host.wait_for_log_count("misbehave: waiting for /gate/slow", clients);
    host.signal("TERM");
    host.wait_for_log("stop signal: draining");
    // Not ready once draining has begun; still alive.
    wait_until(
        "/readyz not ready while draining",
        Duration::from_secs(10),
        || get(admin, "/readyz").0 == 503,
    );
    assert_eq!(get(admin, "/healthz").0, 200);
    assert!(
        std::net::TcpStream::connect(host.addr).is_err(),
        "the message port still accepts"
    );
    gate.open("slow");
    for worker in workers {
        let (answered, after) = worker.join().unwrap();
        assert_eq!(answered, 21);
        let refused = str_value(&format!(
            "arrpc.error.RpcException: {}",
            arrpc_wire::reply::DRAINING
        ));
        assert!(
            after.is_none() || after == Some(refused),
            "a message sent after the signal got {after:?}"
        );
    }
    let exit = host.wait_exit();
    assert!(exit.success(), "{exit}");
    let log = host.log();
    assert!(
        !log.contains("grace period over"),
        "the drain waited for the whole grace period:\n{log}"
    );
}

#[test]
fn a_second_signal_exits_at_once() {
    let mut host = Host::start_config(&draining(
        Duration::from_secs(60),
        Duration::from_secs(60),
        None,
    ));
    let mut wire = host.connect();
    wire.write(&encode(&str_value("sleep:30000")));
    host.wait_for_log("misbehave: sleeping 30000 ms");
    host.signal("TERM");
    host.wait_for_log("stop signal: draining");
    host.signal("INT");
    let exit = host.child().wait().unwrap();
    // Had the second signal waited for the drain, the held message would
    // have been answered and the exit status 0.
    assert_eq!(exit.code(), Some(130));
}

#[test]
fn json_logs_are_one_object_per_line() {
    let config = write_config_value(&serving(vec![handler_config("echo", "echo")]));
    let mut child = host_command()
        .arg("--config")
        .arg(&config.path)
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Lines come through a channel, so that a host which never logs
    // `listening` fails the test instead of hanging it.
    let (tx, lines) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let listening = loop {
        let Ok(line) = lines.recv_timeout(Duration::from_secs(120)) else {
            let _ = child.kill();
            panic!("the host logged no `listening` line");
        };
        let record: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(record["level"].is_string(), "{line}");
        if record["message"] == "listening" {
            break record;
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(listening["default_handler"], "echo");
    assert!(
        listening["addr"]
            .as_str()
            .unwrap()
            .parse::<SocketAddr>()
            .is_ok()
    );
}

#[test]
fn client_metrics_count_latency_errors_and_retries() {
    let host = Host::start_config(&serving(vec![handler_config("misbehave", "misbehave")]));
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = arrpc_client::ClientMetrics::register(&mut registry);
    let mut config = arrpc_client::ClientConfig::new(host.addr.to_string());
    config.metrics = Some(metrics.clone());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = arrpc_client::RpcClient::new(config);
    let ok = encode(&Value::Array(vec![str_value("hi")]));
    let error = encode(&Value::Array(vec![str_value("error")]));
    runtime.block_on(async {
        client.call_raw("misbehave", &ok).await.unwrap();
        client.call_raw("misbehave", &ok).await.unwrap();
        assert!(client.call_raw("misbehave", &error).await.is_err());
    });
    // Nothing listens on a port just freed: two attempts, one retry.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut refused = arrpc_client::ClientConfig::new(closed.local_addr().unwrap().to_string());
    drop(closed);
    refused.connect_attempts = 2;
    refused.backoff = Duration::from_millis(10);
    refused.metrics = Some(metrics);
    let mut bare = arrpc_client::Client::new(refused);
    assert!(runtime.block_on(bare.send_raw(&[0x01])).is_err());

    let scrape = scrape_registry(&registry);
    assert_eq!(
        scrape.value(
            "arrpc_client_request_seconds_count",
            &[("method", "misbehave")]
        ),
        3.0,
        "{scrape}"
    );
    assert_eq!(
        scrape.value(
            "arrpc_client_errors_total",
            &[("method", "misbehave"), ("error", "rpc")]
        ),
        1.0
    );
    assert_eq!(
        scrape.value(
            "arrpc_client_errors_total",
            &[("method", ""), ("error", "connect")]
        ),
        1.0
    );
    assert_eq!(scrape.value("arrpc_client_retries_total", &[]), 1.0);
}

#[test]
fn auth_failures_are_counted_and_never_reach_a_handler() {
    let (host, admin) = start_config_with_admin(&Config {
        auth: AuthConfig {
            secrets: vec![SecretSource::Value("metrics-secret".into())],
            ..AuthConfig::default()
        },
        ..serving(vec![handler_config("echo", "echo")])
    });
    let mut wire = host.connect();
    let refused = error_text(&wire.call(&[0x01])).expect("an auth error");
    assert!(
        refused.starts_with("arrpc.error.AuthException: "),
        "{refused}"
    );
    let signed = arrpc_wire::envelope::sign(b"metrics-secret", &[0x02]);
    assert_eq!(wire.call(&signed), [0x02]);
    let scrape = scrape(admin);
    assert_eq!(messages(&scrape, "", "auth_failure"), 1.0);
    assert_eq!(messages(&scrape, "echo", "ok"), 1.0);
    assert_eq!(messages(&scrape, "echo", "auth_failure"), 0.0);
}

#[test]
fn a_drain_past_shutdown_grace_closes_what_is_left_and_exits_0() {
    let gate = Gate::new();
    let mut host = Host::start_config(&draining(
        Duration::from_secs(1),
        Duration::from_secs(60),
        Some(&gate),
    ));
    let mut wire = host.connect();
    wire.write(&encode(&str_value(&Gate::wait("never"))));
    host.wait_for_log("misbehave: waiting for /gate/never");
    host.signal("TERM");
    host.wait_for_log("grace period over; closing remaining connections");
    assert_eq!(wire.read(), None, "the held message was answered");
    let exit = host.child().wait().unwrap();
    assert!(exit.success(), "{exit}");
}

/// A host served in a runtime that lives on after it, as a program that
/// embeds `Serving` has, stops its admin endpoint (and the reload and
/// SPIFFE tasks beside it) once serving has stopped.
#[test]
fn the_admin_endpoint_stops_when_serving_does() {
    use arrpc_host::host::{Origin, Serving};
    let mut config = serving(vec![handler_config("echo", "echo")]);
    config.admin.listen = Some("127.0.0.1:0".parse().unwrap());
    let (file, config) = in_process_config(config);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let admin = runtime.block_on(async {
        let origin = Origin {
            path: &file.path,
            as_read: config.clone(),
            watch: false,
        };
        let serving = Serving::start(config, origin).await.unwrap();
        let admin = serving.admin_addr().unwrap();
        tokio::net::TcpStream::connect(admin)
            .await
            .expect("the admin endpoint accepts while serving");
        serving.run(async {}).await;
        admin
    });
    // The runtime lives on, as an embedding program's does.
    wait_until(
        "the admin endpoint refusing connections once serving stopped",
        Duration::from_secs(10),
        || std::net::TcpStream::connect(admin).is_err(),
    );
    drop(runtime);
}

/// With `[server] perf_map`, the host writes `/tmp/perf-<pid>.map` as its
/// handlers load, one line per compiled function (address, size, name), so
/// `perf report` can place samples in guest code; by default it writes none.
#[test]
fn perf_map_names_compiled_guest_functions_for_perf() {
    let mut config = serving(vec![handler_config("echo", "echo")]);
    let plain = Host::start_config(&config);
    config.server.perf_map = true;
    let profiled = Host::start_config(&config);
    // The maps are the hosts' files outside any temporary folder: removed
    // however the test ends.
    struct Removed(std::path::PathBuf);
    impl Drop for Removed {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let map_of = |host: &Host| Removed(format!("/tmp/perf-{}.map", host.pid()).into());
    let (plain_map, profiled_map) = (map_of(&plain), map_of(&profiled));
    assert!(!plain_map.0.exists(), "written without perf_map");
    let map = std::fs::read_to_string(&profiled_map.0).expect("the perf map");
    let functions: Vec<&str> = map
        .lines()
        .filter(|line| line.contains("::function["))
        .collect();
    assert!(!functions.is_empty(), "no guest function in:\n{map}");
    for line in functions {
        let fields: Vec<&str> = line.splitn(3, ' ').collect();
        assert!(
            fields.len() == 3
                && u64::from_str_radix(fields[0].trim_start_matches("0x"), 16).is_ok()
                && u64::from_str_radix(fields[1], 16).is_ok(),
            "not `ADDR SIZE NAME`: {line}"
        );
    }
}

/// A handler's outbound HTTP request and upstream call each get a client
/// span under the message's span, and carry that span as the callee's
/// parent: the HTTP server sees it in `traceparent`, the upstream host's
/// own span is its child.
#[test]
fn outbound_requests_get_client_spans_the_callee_continues() {
    let receiver = Receiver::start();
    let web = common::web::HttpServer::start();
    let telemetry = TelemetryConfig {
        otlp_endpoint: Some(format!("http://{}", receiver.addr)),
        ..TelemetryConfig::default()
    };
    let mut upstream = Host::start_config(&Config {
        telemetry: telemetry.clone(),
        ..serving(vec![handler_config("echo", "echo")])
    });
    let allowed = arrpc_host::config::OutboundHost::try_from(format!("http://{}", web.addr));
    let mut host = Host::start_config(&Config {
        telemetry,
        upstreams: vec![arrpc_host::config::UpstreamConfig::remote(
            "next",
            upstream.addr.to_string(),
        )],
        ..serving(vec![HandlerConfig {
            allowed_outbound_hosts: vec![allowed.unwrap()],
            upstreams: vec!["next".into()],
            ..handler_config("net", "net")
        }])
    });
    let trace_hex = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace_hex}-00f067aa0ba902b7-01");
    let request = |pairs: Vec<(&str, Value)>| {
        let map = Value::Map(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect());
        trace::wrap(&traceparent, &encode(&map))
    };
    let mut wire = host.connect();
    let fetched = wire.call(&request(vec![
        ("op", "get".into()),
        ("url", web.url("http", "/hello").into()),
    ]));
    assert_eq!(error_text(&fetched), None);
    let called = wire.call(&request(vec![
        ("op", "call".into()),
        ("upstream", "next".into()),
        ("method", "echo".into()),
        ("params", Value::Array(vec![1.into()])),
    ]));
    assert_eq!(decode(&called), Value::Array(vec![1.into()]));
    host.signal("TERM");
    assert!(host.child().wait().unwrap().success());
    upstream.signal("TERM");
    assert!(upstream.child().wait().unwrap().success());

    let trace_id = hex::decode(trace_hex).unwrap();
    let spans = receiver.wait_for_count("arrpc.outbound", &trace_id, 2);
    let messages = receiver.wait_for_count("arrpc.message", &trace_id, 3);
    let kind = |span: &Span| {
        span.attributes
            .iter()
            .find(|a| a.key == "kind")
            .and_then(|a| a.value.as_ref()?.value.as_ref())
            .and_then(text)
    };
    let http = spans
        .iter()
        .find(|s| kind(s).as_deref() == Some("http"))
        .unwrap();
    let arrpc = spans
        .iter()
        .find(|s| kind(s).as_deref() == Some("arrpc"))
        .unwrap();
    // Both are children of a message span of the calling host.
    for client in [http, arrpc] {
        assert!(
            messages.iter().any(|m| m.span_id == client.parent_span_id),
            "{client:?}"
        );
    }
    // The HTTP server was handed the client span as the parent.
    let head = web.requests().pop().unwrap();
    assert!(
        head.contains(&format!(
            "traceparent: 00-{trace_hex}-{}-01",
            hex::encode(&http.span_id)
        )),
        "{head}"
    );
    // The upstream's span for the call is the client span's child.
    assert!(
        messages.iter().any(|m| m.parent_span_id == arrpc.span_id),
        "{messages:?}"
    );
}
