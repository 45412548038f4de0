//! Logs, metrics and traces.
//!
//! - Logs go to stderr, human-readable by default or one JSON object per
//!   line (`--log-format json`), filtered by level.
//! - [`metrics`]: Prometheus metrics, served by [`crate::admin`].
//! - [`otel`]: OpenTelemetry spans per message, exported over OTLP.

pub mod metrics;
pub mod otel;
mod throttle;

use std::io::IsTerminal;

use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

use crate::config::TelemetryConfig;
pub use metrics::{Handled, Metrics, Outcome};
pub use otel::OtelError;
pub use throttle::LogThrottle;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Text for people.
    #[default]
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Installs the global log subscriber.
///
/// `RUST_LOG` wins when set; otherwise `default` applies, or debug output
/// for arrpc's own crates when `debug` is set (the Python arrpc package's
/// `debug=True`).
pub fn init(default: &str, debug: bool) {
    let _ = install(default, debug, LogFormat::Human, None);
}

/// What must outlive the served run: the trace exporter, flushed at exit.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sends every span still buffered and stops the exporter.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            tracing::warn!(error = %e, "could not flush traces at exit");
        }
    }
}

/// Installs logging in `format` and, when `traces` asks for it (or the
/// `OTEL_*` environment does), span export.
pub fn install(
    default: &str,
    debug: bool,
    format: LogFormat,
    traces: Option<&TelemetryConfig>,
) -> Result<Telemetry, OtelError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.is_empty() => EnvFilter::new(spec),
        _ if debug => EnvFilter::new(format!(
            "{default},arrpc_host=debug,arrpc_client=debug,arrpc_wire=debug"
        )),
        _ => EnvFilter::new(default),
    }
    // Message spans are for the exporter; log lines name handler, request
    // and trace themselves, and formatting every span would cost each message.
    .add_directive(
        format!("{}=off", otel::MESSAGE_TARGET)
            .parse()
            .expect("a valid directive"),
    );
    let logs = match format {
        LogFormat::Human => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    let provider = match traces {
        Some(config) => otel::provider(config)?,
        None => None,
    };
    let spans = provider.as_ref().map(|provider| {
        // Message spans, guest output within them, and the host's warnings.
        // Nothing below INFO: a TRACE anywhere would make every trace-level
        // callsite in wasmtime's WASI host calls check its filters.
        let targets = Targets::new()
            .with_target(otel::MESSAGE_TARGET, LevelFilter::INFO)
            .with_target("guest", LevelFilter::INFO)
            .with_target("arrpc_host", LevelFilter::WARN);
        otel::layer(provider).with_filter(targets)
    });
    let _ = Registry::default().with(logs).with(spans).try_init();
    Ok(Telemetry { provider })
}
