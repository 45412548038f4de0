//! OpenTelemetry traces: one span per message, continuing the caller's
//! trace, exported over OTLP/HTTP.
//!
//! Off unless `[telemetry] otlp_endpoint` or one of the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
//! variables is set (`OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`
//! turn it off again). When off, no span is created and the caller's
//! `traceparent`, when valid, passes to the handler unchanged; so it does
//! for a message that `telemetry.sample_ratio` leaves unsampled.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanKind, TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, Sampler, SamplingDecision, SdkTracerProvider, ShouldSample,
};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::TelemetryConfig;

/// Target of the per-message spans; the exporting layer listens to it.
pub const MESSAGE_TARGET: &str = "arrpc::message";

const TRACEPARENT: &str = "traceparent";

/// Whether spans are exported; set once at start.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// With `telemetry.sample_ratio`: the sampler for messages that start a
/// trace, consulted before their span is made.
static ROOT_SAMPLER: OnceLock<Sampler> = OnceLock::new();

/// Why tracing could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum OtelError {
    #[error(
        "{variable}={value:?} is not supported: only http/protobuf is built in (an OTLP collector's port 4318)"
    )]
    Protocol {
        variable: &'static str,
        value: String,
    },
    #[error(
        "{variable}={value:?}: only http:// collectors are supported (TLS to the collector is not built in)"
    )]
    Scheme {
        variable: &'static str,
        value: String,
    },
    #[error("cannot create the OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// Whether per-message spans are created and exported.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Whether the config or the environment asks for traces.
fn wanted(config: &TelemetryConfig) -> bool {
    if env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
    {
        return false;
    }
    config.otlp_endpoint.is_some()
        || env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
        || env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
}

/// Builds the tracer provider when traces are wanted; `None` otherwise.
pub fn provider(config: &TelemetryConfig) -> Result<Option<SdkTracerProvider>, OtelError> {
    if !wanted(config) {
        return Ok(None);
    }
    for variable in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Some(value) = env(variable) {
            if value != "http/protobuf" {
                return Err(OtelError::Protocol { variable, value });
            }
            break;
        }
    }
    for variable in [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ] {
        if let Some(value) = env(variable).filter(|v| !v.starts_with("http://")) {
            return Err(OtelError::Scheme { variable, value });
        }
    }
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
    if let Some(base) = &config.otlp_endpoint {
        exporter = exporter.with_endpoint(format!("{}/v1/traces", base.trim_end_matches('/')));
    }
    if !config.headers.is_empty() {
        exporter = exporter.with_headers(config.headers.clone().into_iter().collect());
    }
    let exporter = exporter.build()?;
    let mut resource = Resource::builder();
    match (&config.service_name, env("OTEL_SERVICE_NAME")) {
        (Some(name), _) => resource = resource.with_service_name(name.clone()),
        (None, Some(_)) => {}
        (None, None) => resource = resource.with_service_name("arrpc-host"),
    }
    let mut builder = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build());
    if let Some(ratio) = config.sample_ratio {
        // Messages are sampled in `message_trace`, before their span exists,
        // so an unsampled one costs next to nothing; every span that is made
        // is then kept.
        let _ = ROOT_SAMPLER.set(Sampler::TraceIdRatioBased(ratio));
        builder = builder.with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)));
    }
    Ok(Some(builder.build()))
}

/// The layer that turns message spans into OpenTelemetry spans.
pub fn layer<S>(provider: &SdkTracerProvider) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + Send + Sync + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    ENABLED.store(true, Ordering::Relaxed);
    // Source locations, thread names and busy/idle times are not worth
    // their cost on every message.
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("arrpc-host"))
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
}

/// The trace one message belongs to, as the host sees it.
pub struct MessageTrace {
    /// The host's span for the message; disabled when tracing is off.
    pub span: Span,
    /// The `traceparent` the handler receives: the host span's when
    /// tracing is on, else the caller's (when valid).
    pub traceparent: Option<String>,
    /// The trace id in lowercase hex, for log lines.
    pub trace_id: Option<String>,
}

impl MessageTrace {
    /// No trace: tracing is off and the caller sent no context.
    pub fn none() -> MessageTrace {
        MessageTrace {
            span: Span::none(),
            traceparent: None,
            trace_id: None,
        }
    }
}

/// Whether a message gets a span, when `telemetry.sample_ratio` is set: a
/// caller's context decides for its trace by its sampled flag, and a new
/// trace is sampled at the ratio. An unsampled message is treated as with
/// tracing off: no span, the caller's context (if any) passed on unchanged.
fn sampled(parent: Option<&Context>) -> bool {
    let Some(sampler) = ROOT_SAMPLER.get() else {
        return true;
    };
    match parent {
        Some(cx) => cx.span().span_context().is_sampled(),
        None => {
            let trace_id = RandomIdGenerator::default().new_trace_id();
            let result =
                sampler.should_sample(None, trace_id, "arrpc.message", &SpanKind::Server, &[], &[]);
            result.decision == SamplingDecision::RecordAndSample
        }
    }
}

/// Starts the trace of one message for `handler`, continuing the caller's
/// trace when `incoming` is a valid W3C `traceparent`.
pub fn message_trace(
    handler: &str,
    sha256: &str,
    request_id: u64,
    request_bytes: usize,
    incoming: Option<&str>,
) -> MessageTrace {
    let propagator = TraceContextPropagator::new();
    let parent = incoming.map(|traceparent| propagator.extract(&Incoming(traceparent)));
    let parent_valid = parent
        .as_ref()
        .is_some_and(|cx| cx.span().span_context().is_valid());
    if !enabled() || !sampled(parent.as_ref().filter(|_| parent_valid)) {
        if !parent_valid {
            return MessageTrace::none();
        }
        let context = parent.expect("checked valid above");
        return MessageTrace {
            span: Span::none(),
            traceparent: incoming.map(str::to_owned),
            trace_id: Some(context.span().span_context().trace_id().to_string()),
        };
    }
    let span = tracing::info_span!(
        target: MESSAGE_TARGET,
        "arrpc.message",
        otel.kind = "server",
        handler,
        module_sha256 = sha256,
        request_id,
        request_bytes,
        reply_bytes = tracing::field::Empty,
        outcome = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    if let Some(parent) = parent.filter(|_| parent_valid) {
        // Only fails when the span is disabled, which tracing being on rules out.
        let _ = span.set_parent(parent);
    }
    let context: Context = span.context();
    let mut carrier = Outgoing(None);
    propagator.inject_context(&context, &mut carrier);
    let span_context = context.span().span_context().clone();
    MessageTrace {
        traceparent: carrier.0,
        trace_id: span_context
            .is_valid()
            .then(|| span_context.trace_id().to_string()),
        span,
    }
}

/// A request a handler makes while handling a message: its client span and
/// the `traceparent` the request carries.
pub struct ClientTrace {
    /// The host's client span; disabled when tracing is off. Record
    /// `result` on it.
    pub span: Span,
    /// The message's trace with this request's span as the parent.
    pub traceparent: Option<String>,
}

/// The trace of a request `handler` makes (`kind`, to `target`) while
/// handling a message it was handed `parent` for. With tracing on, a client
/// span under the message's, exported like it; with tracing off, the
/// same trace and flags under a new span id, so the callee still joins the
/// caller's trace.
pub fn client_trace(parent: &str, handler: &str, kind: &'static str, target: &str) -> ClientTrace {
    let propagator = TraceContextPropagator::new();
    let context = propagator.extract(&Incoming(parent));
    let span_context = context.span().span_context().clone();
    if !span_context.is_valid() {
        return ClientTrace {
            span: Span::none(),
            traceparent: None,
        };
    }
    if !enabled() {
        let span_id = RandomIdGenerator::default().new_span_id();
        return ClientTrace {
            span: Span::none(),
            traceparent: Some(format!(
                "00-{}-{span_id}-{:02x}",
                span_context.trace_id(),
                span_context.trace_flags().to_u8()
            )),
        };
    }
    let span = tracing::info_span!(
        target: MESSAGE_TARGET,
        "arrpc.outbound",
        otel.kind = "client",
        handler,
        kind,
        target,
        result = tracing::field::Empty,
    );
    // Only fails when the span is disabled, which tracing being on rules out.
    let _ = span.set_parent(context);
    let mut carrier = Outgoing(None);
    propagator.inject_context(&span.context(), &mut carrier);
    ClientTrace {
        span,
        traceparent: carrier.0,
    }
}

/// The caller's `traceparent`, the one header a message carries, for the
/// propagator, which keeps the W3C rules in one place. A map would cost
/// allocations on every traced message.
struct Incoming<'a>(&'a str);

impl Extractor for Incoming<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

/// The `traceparent` the propagator writes for the handler.
struct Outgoing(Option<String>);

impl Injector for Outgoing {
    fn set(&mut self, key: &str, value: String) {
        if key == TRACEPARENT {
            self.0 = Some(value);
        }
    }
}
