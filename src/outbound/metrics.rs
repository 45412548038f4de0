//! What handlers' outbound requests and connections did, for `/metrics`.
//!
//! Labels stay bounded: `handler` is a configured name, `kind` is `http` or
//! `tcp`, `target` is the allow-list entry that admitted the request (empty
//! for a refused one) and `result` one of a fixed set. URLs and addresses
//! the guest chose never become labels; they go to the log.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    handler: Arc<str>,
    kind: &'static str,
    target: Arc<str>,
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DurationLabels {
    handler: Arc<str>,
    kind: &'static str,
}

type Durations = Family<DurationLabels, Histogram, fn() -> Histogram>;

/// 1 ms to about 60 s.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1e-3, 2.0, 17))
}

/// The outbound series; clones share them. Made unregistered by `default`
/// (for `check` and benchmarks), or registered with [`register`](Self::register).
#[derive(Debug, Clone)]
pub struct OutboundMetrics {
    requests: Family<RequestLabels, Counter>,
    seconds: Durations,
}

impl Default for OutboundMetrics {
    fn default() -> Self {
        OutboundMetrics {
            requests: Family::default(),
            seconds: Durations::new_with_constructor(duration_histogram),
        }
    }
}

impl OutboundMetrics {
    /// New series, registered in `registry`.
    pub fn register(registry: &mut Registry) -> OutboundMetrics {
        let metrics = OutboundMetrics::default();
        registry.register(
            "outbound_requests",
            "Handlers' outbound HTTP requests and TCP connections, by handler, kind, the allow-list entry that admitted them, and result",
            metrics.requests.clone(),
        );
        registry.register(
            "outbound_seconds",
            "Time from a handler's outbound request to its response headers, or to its TCP connection",
            metrics.seconds.clone(),
        );
        metrics
    }

    /// Counts one request or connection; `took` when it got an answer.
    pub fn record(
        &self,
        handler: &Arc<str>,
        kind: &'static str,
        target: Option<&Arc<str>>,
        result: &'static str,
        took: Option<Duration>,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                handler: handler.clone(),
                kind,
                target: target.cloned().unwrap_or_else(|| Arc::from("")),
                result,
            })
            .inc();
        if let Some(took) = took {
            self.seconds
                .get_or_create(&DurationLabels {
                    handler: handler.clone(),
                    kind,
                })
                .observe(took.as_secs_f64());
        }
    }
}
