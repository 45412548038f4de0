//! Opt-in metrics of a client's calls (cargo feature `metrics`), registered
//! into the caller's `prometheus-client` registry.
//!
//! ```
//! let mut registry = prometheus_client::registry::Registry::default();
//! let mut config = arrpc_client::ClientConfig::new("127.0.0.1:8080");
//! config.metrics = Some(arrpc_client::ClientMetrics::register(&mut registry));
//! ```

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::Error;
use crate::balance::State;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct MethodLabels {
    /// The RPC method, or empty for bare messages.
    method: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ErrorLabels {
    method: String,
    error: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    /// `connect`, `reconnect`, `unsent`, `busy`, `draining` or `idempotent`.
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    /// `ok`, `not_run` (failed, provably without running) or `may_have_run`.
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabels {
    /// `connecting`, `up` or `ejected`.
    state: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabels {
    /// `ok` or `error`.
    result: &'static str,
}

type Histograms = Family<MethodLabels, Histogram, fn() -> Histogram>;

/// 50 µs to about 7.5 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(50e-6, 2.5, 14))
}

/// Latency, errors and retries of one or more clients' calls.
///
/// Method labels are the method names the calling code passes, so their
/// number is the caller's to bound.
#[derive(Debug, Clone)]
pub struct ClientMetrics {
    latency: Histograms,
    errors: Family<ErrorLabels, Counter>,
    retries: Family<ReasonLabels, Counter>,
    calls: Family<OutcomeLabels, Counter>,
    endpoints: Family<StateLabels, Gauge>,
    resolutions: Family<ResultLabels, Counter>,
    ejections: Counter,
}

impl ClientMetrics {
    /// Registers the metrics under `arrpc_client_` in `registry`.
    pub fn register(registry: &mut Registry) -> ClientMetrics {
        let registry = registry.sub_registry_with_prefix("arrpc_client");
        let metrics = ClientMetrics {
            latency: Histograms::new_with_constructor(latency_histogram),
            errors: Family::default(),
            retries: Family::default(),
            calls: Family::default(),
            endpoints: Family::default(),
            resolutions: Family::default(),
            ejections: Counter::default(),
        };
        registry.register(
            "request_seconds",
            "Time from sending a request to its reply, by method",
            metrics.latency.clone(),
        );
        registry.register(
            "errors",
            "Failed requests, by method and kind of error",
            metrics.errors.clone(),
        );
        registry.register(
            "retries",
            "Connection attempts after a failed one, and requests sent again (on a new \
             connection or another replica), by reason",
            metrics.retries.clone(),
        );
        registry.register(
            "calls",
            "Finished requests by outcome: ok, not_run (failed without running) or may_have_run",
            metrics.calls.clone(),
        );
        registry.register(
            "endpoints",
            "Replicas of a list or a DNS name, by state (connecting, up, ejected)",
            metrics.endpoints.clone(),
        );
        registry.register(
            "resolutions",
            "Resolutions of dns:// names, by result",
            metrics.resolutions.clone(),
        );
        registry.register(
            "ejections",
            "Replicas taken out of the balancer after failures in a row",
            metrics.ejections.clone(),
        );
        metrics
    }

    pub(crate) fn observe(&self, method: &str, took: Duration, error: Option<&Error>) {
        let outcome = match error {
            None => "ok",
            Some(error) if error.may_have_run() => "may_have_run",
            Some(_) => "not_run",
        };
        self.calls.get_or_create(&OutcomeLabels { outcome }).inc();
        let method = method.to_owned();
        if let Some(error) = error {
            self.errors
                .get_or_create(&ErrorLabels {
                    method: method.clone(),
                    error: kind(error),
                })
                .inc();
        }
        self.latency
            .get_or_create(&MethodLabels { method })
            .observe(took.as_secs_f64());
    }

    pub(crate) fn retry(&self, reason: &'static str) {
        self.retries.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// A replica moved between states (`None`: added or gone).
    pub(crate) fn endpoint_moved(&self, from: Option<State>, to: Option<State>) {
        if let Some(from) = from {
            self.endpoints.get_or_create(&state_labels(from)).dec();
        }
        if let Some(to) = to {
            self.endpoints.get_or_create(&state_labels(to)).inc();
        }
    }

    pub(crate) fn resolved(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.resolutions
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub(crate) fn ejected(&self) {
        self.ejections.inc();
    }
}

fn state_labels(state: State) -> StateLabels {
    StateLabels {
        state: match state {
            State::Connecting => "connecting",
            State::Up => "up",
            State::Ejected => "ejected",
        },
    }
}

fn kind(error: &Error) -> &'static str {
    match error {
        Error::Connect { .. } => "connect",
        Error::Timeout { .. } => "timeout",
        Error::Auth(_) => "auth",
        Error::Rpc(_) => "rpc",
        Error::Transport { .. } => "transport",
        Error::Tls { .. } => "tls",
        Error::Random(_) => "random",
        Error::Address { .. } => "address",
        Error::Unavailable { .. } => "unavailable",
        Error::Unsent { .. } => "unsent",
        Error::Busy { .. } => "busy",
        Error::Draining { .. } => "draining",
        Error::Encode(_) => "encode",
        Error::Decode(_) => "decode",
    }
}
