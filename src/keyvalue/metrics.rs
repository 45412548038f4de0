//! What guests did with their stores, for `/metrics`.
//!
//! Labels stay bounded: `store` is a configured name, `operation` one of
//! the `wasi:keyvalue` calls and `result` one of a fixed set. Keys never
//! become labels.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OperationLabels {
    store: Arc<str>,
    operation: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DurationLabels {
    store: Arc<str>,
    operation: &'static str,
}

type Durations = Family<DurationLabels, Histogram, fn() -> Histogram>;

/// 50 µs to about 3 s: an embedded read is microseconds, a group commit
/// an fsync, a Redis call a round trip.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(50e-6, 2.0, 17))
}

/// The store series; clones share them. Made unregistered by `default`
/// (for `check` and benchmarks), or registered with [`register`](Self::register).
#[derive(Debug, Clone)]
pub struct StoreMetrics {
    operations: Family<OperationLabels, Counter>,
    seconds: Durations,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        StoreMetrics {
            operations: Family::default(),
            seconds: Durations::new_with_constructor(duration_histogram),
        }
    }
}

impl StoreMetrics {
    /// New series, registered in `registry`.
    pub fn register(registry: &mut Registry) -> StoreMetrics {
        let metrics = StoreMetrics::default();
        registry.register(
            "store_operations",
            "Handlers' key-value store operations, by store, operation and result",
            metrics.operations.clone(),
        );
        registry.register(
            "store_seconds",
            "Time a key-value store operation took, by store and operation",
            metrics.seconds.clone(),
        );
        metrics
    }

    /// Counts one operation on `store` and how long it took.
    pub fn record(
        &self,
        store: &Arc<str>,
        operation: &'static str,
        result: &'static str,
        took: Duration,
    ) {
        self.operations
            .get_or_create(&OperationLabels {
                store: store.clone(),
                operation,
                result,
            })
            .inc();
        self.seconds
            .get_or_create(&DurationLabels {
                store: store.clone(),
                operation,
            })
            .observe(took.as_secs_f64());
    }
}
