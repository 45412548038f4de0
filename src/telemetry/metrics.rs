//! Prometheus metrics of the message port, served on the admin listener.
//!
//! Label values are bounded: a handler label only ever holds a configured
//! handler's name (or is empty for messages that reached no handler), an
//! outcome one of [`Outcome`]'s values. Peer addresses and RPC method names
//! sent by clients never become labels.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::keyvalue::StoreMetrics;
use crate::outbound::OutboundMetrics;
use crate::runtime::{CallError, HandlerSet};

/// How one message ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The handler's output went back as the reply.
    Ok,
    /// The handler returned an error text.
    HandlerError,
    /// The handler's output was not exactly one MessagePack value.
    InvalidOutput,
    Trap,
    Timeout,
    MemoryLimit,
    FuelLimit,
    /// Every instance of the handler was in use.
    Busy,
    /// A granted directory could not be opened.
    GrantError,
    /// No handler is configured under the RPC method, or for bare messages.
    UnknownHandler,
    /// Not a message the host can read: framing, size, envelope.
    Malformed,
    /// The signature was missing or wrong.
    AuthFailure,
    /// The handler's allow list does not admit the caller.
    AccessDenied,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::HandlerError => "handler_error",
            Outcome::InvalidOutput => "invalid_output",
            Outcome::Trap => "trap",
            Outcome::Timeout => "timeout",
            Outcome::MemoryLimit => "memory_limit",
            Outcome::FuelLimit => "fuel_limit",
            Outcome::Busy => "busy",
            Outcome::GrantError => "grant_error",
            Outcome::UnknownHandler => "unknown_handler",
            Outcome::Malformed => "malformed",
            Outcome::AuthFailure => "auth_failure",
            Outcome::AccessDenied => "access_denied",
        }
    }
}

impl From<&CallError> for Outcome {
    fn from(e: &CallError) -> Self {
        match e {
            CallError::Busy { .. } => Outcome::Busy,
            CallError::Timeout { .. } => Outcome::Timeout,
            CallError::MemoryLimit { .. } => Outcome::MemoryLimit,
            CallError::FuelExhausted { .. } => Outcome::FuelLimit,
            CallError::Grant { .. } => Outcome::GrantError,
            CallError::Trap { .. } => Outcome::Trap,
            CallError::Failed(_) => Outcome::HandlerError,
            CallError::InvalidOutput { .. } => Outcome::InvalidOutput,
        }
    }
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct MessageLabels {
    handler: Arc<str>,
    outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HandlerLabels {
    handler: Arc<str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// A certificate the message port serves (`cert`) or trusts for client
/// certificates (`client_ca`); bounded by the configured files.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CertificateLabels {
    role: &'static str,
    subject: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AccessLabels {
    handler: Arc<str>,
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct InfoLabels {
    handler: Arc<str>,
    sha256: Arc<str>,
}

type Histograms = Family<HandlerLabels, Histogram, fn() -> Histogram>;

/// 50 µs to about 7.5 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(50e-6, 2.5, 14))
}

fn result(ok: bool) -> ResultLabels {
    ResultLabels {
        result: if ok { "ok" } else { "failed" },
    }
}

/// Every metric the host exports, in one registry.
pub struct Metrics {
    registry: Registry,
    messages: Family<MessageLabels, Counter>,
    queue_seconds: Histograms,
    handler_seconds: Histograms,
    request_bytes: Family<HandlerLabels, Counter>,
    reply_bytes: Family<HandlerLabels, Counter>,
    in_flight: Gauge,
    connections_open: Gauge,
    connections: Counter,
    tls_handshakes: Family<ResultLabels, Counter>,
    tls_handshake_failures: Family<ReasonLabels, Counter>,
    tls_reloads: Family<ResultLabels, Counter>,
    access: Family<AccessLabels, Counter>,
    certificate_expiry: Family<CertificateLabels, Gauge>,
    /// The expiry series now set, so a rotation can retire the old.
    certificates_now: Mutex<Vec<CertificateLabels>>,
    swaps: Family<ResultLabels, Counter>,
    handler_info: Family<InfoLabels, Gauge>,
    /// Each served handler's `max_instances`, for alerts on a full pool.
    max_instances: Family<HandlerLabels, Gauge>,
    /// The info series now set, by handler, so a swap can retire the old.
    info_now: Mutex<HashMap<Arc<str>, InfoLabels>>,
    handlers_loaded: Gauge,
    accepting: Gauge,
    /// Each handler's series, looked up once per message instead of once
    /// per metric. Keyed by configured names only, so a fast hash serves.
    series: RwLock<HashMap<Arc<str>, Arc<HandlerSeries>, foldhash::fast::RandomState>>,
    outbound: OutboundMetrics,
    stores: StoreMetrics,
}

/// The series one handler's messages update, resolved from their families.
struct HandlerSeries {
    ok: Counter,
    queue_seconds: Histogram,
    handler_seconds: Histogram,
    request_bytes: Counter,
    reply_bytes: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("arrpc");
        let messages = Family::default();
        registry.register(
            "messages",
            "Messages by handler and outcome",
            messages.clone(),
        );
        let queue_seconds = Histograms::new_with_constructor(latency_histogram);
        registry.register(
            "message_queue_seconds",
            "Time from a message being read to its handler starting",
            queue_seconds.clone(),
        );
        let handler_seconds = Histograms::new_with_constructor(latency_histogram);
        registry.register(
            "handler_seconds",
            "Time a handler took for one message, instantiation included",
            handler_seconds.clone(),
        );
        let request_bytes = Family::default();
        registry.register(
            "request_bytes",
            "Bytes of messages received, by handler",
            request_bytes.clone(),
        );
        let reply_bytes = Family::default();
        registry.register(
            "reply_bytes",
            "Bytes of replies sent, by handler",
            reply_bytes.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "messages_in_flight",
            "Messages being handled now",
            in_flight.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "connections_open",
            "Client connections open now",
            connections_open.clone(),
        );
        let connections = Counter::default();
        registry.register(
            "connections",
            "Client connections accepted",
            connections.clone(),
        );
        let tls_handshakes = Family::default();
        registry.register(
            "tls_handshakes",
            "TLS handshakes on the message port, by result",
            tls_handshakes.clone(),
        );
        let tls_handshake_failures = Family::default();
        registry.register(
            "tls_handshake_failures",
            "Failed TLS handshakes on the message port, by reason",
            tls_handshake_failures.clone(),
        );
        let tls_reloads = Family::default();
        registry.register(
            "tls_reloads",
            "Changed TLS certificate, key and client CA files loaded (ok) or refused",
            tls_reloads.clone(),
        );
        let access = Family::default();
        registry.register(
            "access_decisions",
            "Messages to handlers with an allow list, by handler and whether the caller was allowed",
            access.clone(),
        );
        let certificate_expiry = Family::default();
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "When each certificate the message port serves or trusts expires, in Unix time",
            certificate_expiry.clone(),
        );
        let swaps = Family::default();
        registry.register(
            "handler_swaps",
            "Hot swaps of handlers and config reloads, by result",
            swaps.clone(),
        );
        let handler_info = Family::default();
        registry.register(
            "handler_info",
            "The module each handler serves, by SHA-256",
            handler_info.clone(),
        );
        let max_instances = Family::default();
        registry.register(
            "handler_max_instances",
            "Instances each served handler may run at once (its max_instances)",
            max_instances.clone(),
        );
        let handlers_loaded = Gauge::default();
        registry.register(
            "handlers_loaded",
            "Handlers loaded and served",
            handlers_loaded.clone(),
        );
        let accepting = Gauge::default();
        registry.register(
            "listener_accepting",
            "1 while the message port accepts connections",
            accepting.clone(),
        );
        let outbound = OutboundMetrics::register(&mut registry);
        let stores = StoreMetrics::register(&mut registry);
        Metrics {
            registry,
            messages,
            queue_seconds,
            handler_seconds,
            request_bytes,
            reply_bytes,
            in_flight,
            connections_open,
            connections,
            tls_handshakes,
            tls_handshake_failures,
            tls_reloads,
            access,
            certificate_expiry,
            certificates_now: Mutex::default(),
            swaps,
            handler_info,
            max_instances,
            info_now: Mutex::default(),
            handlers_loaded,
            accepting,
            series: RwLock::default(),
            outbound,
            stores,
        }
    }

    /// The series handlers' outbound requests update, for the runtime.
    pub fn outbound(&self) -> &OutboundMetrics {
        &self.outbound
    }

    /// The series store operations update, for the stores.
    pub fn stores(&self) -> &StoreMetrics {
        &self.stores
    }

    /// The registry in the text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing into a String cannot fail");
        out
    }

    /// Makes the series of messages that reached `handler`, on its first.
    fn add_series(&self, handler: &Arc<str>) -> Arc<HandlerSeries> {
        let labels = HandlerLabels {
            handler: handler.clone(),
        };
        let series = Arc::new(HandlerSeries {
            ok: self.messages.get_or_create_owned(&MessageLabels {
                handler: handler.clone(),
                outcome: Outcome::Ok,
            }),
            queue_seconds: self.queue_seconds.get_or_create_owned(&labels),
            handler_seconds: self.handler_seconds.get_or_create_owned(&labels),
            request_bytes: self.request_bytes.get_or_create_owned(&labels),
            reply_bytes: self.reply_bytes.get_or_create_owned(&labels),
        });
        write(&self.series)
            .entry(handler.clone())
            .or_insert(series)
            .clone()
    }

    /// Counts one message that reached `handler` (a configured name, or
    /// empty when it reached none) and ended with `outcome`.
    pub fn message(&self, handler: &Arc<str>, outcome: Outcome) {
        self.messages
            .get_or_create(&MessageLabels {
                handler: handler.clone(),
                outcome,
            })
            .inc();
    }

    /// Counts a message refused before any handler saw it.
    pub fn refused(&self, outcome: Outcome) {
        self.message(&Arc::from(""), outcome);
    }

    /// Counts a message whose signature did not verify. To be called by the
    /// envelope check wherever it refuses a message.
    pub fn auth_failure(&self) {
        self.refused(Outcome::AuthFailure);
    }

    /// Records one handled message: how it ended, how long it waited and
    /// ran, and the sizes of the message and its reply.
    pub fn handled(&self, handler: &Arc<str>, done: &Handled) {
        if done.outcome != Outcome::Ok {
            self.message(handler, done.outcome);
        }
        let record = |series: &HandlerSeries| {
            if done.outcome == Outcome::Ok {
                series.ok.inc();
            }
            series.queue_seconds.observe(done.queued.as_secs_f64());
            series.handler_seconds.observe(done.ran.as_secs_f64());
            series.request_bytes.inc_by(done.request_bytes as u64);
            series.reply_bytes.inc_by(done.reply_bytes as u64);
        };
        // Recorded under the read lock: no reference count to touch.
        if let Some(series) = read(&self.series).get(handler) {
            return record(series);
        }
        record(&self.add_series(handler));
    }

    /// Counts a message as in flight until the guard is dropped.
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// Counts a connection as open until the guard is dropped.
    pub fn connection_opened(&self) -> InFlight {
        self.connections.inc();
        self.connections_open.inc();
        InFlight(self.connections_open.clone())
    }

    /// Counts one TLS handshake on the message port. To be called by the
    /// accept loop once a handshake has succeeded or failed.
    pub fn tls_handshake(&self, ok: bool) {
        self.tls_handshakes.get_or_create(&result(ok)).inc();
    }

    /// Counts one failed handshake by its reason.
    pub fn tls_handshake_failure(&self, reason: &'static str) {
        self.tls_handshake_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Counts one access decision for a message to `handler`.
    pub fn access(&self, handler: &Arc<str>, allowed: bool) {
        self.access
            .get_or_create(&AccessLabels {
                handler: handler.clone(),
                result: if allowed { "allowed" } else { "refused" },
            })
            .inc();
    }

    /// Counts one reload of changed TLS files that was applied (`ok`) or
    /// refused.
    pub fn tls_reload(&self, ok: bool) {
        self.tls_reloads.get_or_create(&result(ok)).inc();
    }

    /// Makes the certificate expiry series match `certificates`, the ones
    /// served and trusted now, as (role, subject, expiry in Unix seconds).
    pub fn certificates_served<'a>(
        &self,
        certificates: impl IntoIterator<Item = (&'static str, &'a str, i64)>,
    ) {
        let mut now = self
            .certificates_now
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for old in now.drain(..) {
            self.certificate_expiry.remove(&old);
        }
        for (role, subject, not_after) in certificates {
            let labels = CertificateLabels {
                role,
                subject: subject.to_owned(),
            };
            self.certificate_expiry
                .get_or_create(&labels)
                .set(not_after);
            now.push(labels);
        }
    }

    /// Counts one hot swap or config reload that was applied (`ok`) or
    /// refused.
    pub fn swap(&self, ok: bool) {
        self.swaps.get_or_create(&result(ok)).inc();
    }

    /// Makes the handler info series match `set`, the set now served.
    pub fn handlers_served(&self, set: &HandlerSet) {
        let mut now = self.info_now.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = HashMap::new();
        for handler in set.iter() {
            let labels = InfoLabels {
                handler: handler.shared_name().clone(),
                sha256: handler.sha256().into(),
            };
            self.handler_info.get_or_create(&labels).set(1);
            let named = HandlerLabels {
                handler: labels.handler.clone(),
            };
            self.max_instances
                .get_or_create(&named)
                .set(i64::from(handler.config().max_instances));
            next.insert(labels.handler.clone(), labels);
        }
        for (name, old) in now.iter() {
            if next.get(name) != Some(old) {
                self.handler_info.remove(old);
            }
            if !next.contains_key(name) {
                self.max_instances.remove(&HandlerLabels {
                    handler: name.clone(),
                });
            }
        }
        self.handlers_loaded.set(next.len() as i64);
        *now = next;
    }

    /// Whether the message port accepts connections now.
    pub fn set_accepting(&self, accepting: bool) {
        self.accepting.set(accepting.into());
    }

    /// Handlers are loaded and the message port accepts connections.
    pub fn is_ready(&self) -> bool {
        self.handlers_loaded.get() > 0 && self.accepting.get() == 1
    }
}

/// What is recorded of one message that reached its handler.
pub struct Handled {
    pub outcome: Outcome,
    /// From being read to its handler starting.
    pub queued: Duration,
    /// In its handler, instantiation included.
    pub ran: Duration,
    pub request_bytes: usize,
    pub reply_bytes: usize,
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

/// Keeps a gauge raised while held.
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_gauges_show_in_the_text_format() {
        let metrics = Metrics::new();
        let echo: Arc<str> = "echo".into();
        metrics.message(&echo, Outcome::Ok);
        metrics.message(&echo, Outcome::Ok);
        metrics.refused(Outcome::Malformed);
        metrics.tls_handshake(false);
        let guard = metrics.in_flight();
        let text = metrics.encode();
        assert!(
            text.contains("arrpc_messages_total{handler=\"echo\",outcome=\"ok\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("arrpc_messages_total{handler=\"\",outcome=\"malformed\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("arrpc_tls_handshakes_total{result=\"failed\"} 1"),
            "{text}"
        );
        assert!(text.contains("arrpc_messages_in_flight 1"), "{text}");
        drop(guard);
        assert!(metrics.encode().contains("arrpc_messages_in_flight 0"));
    }

    #[test]
    fn ready_needs_handlers_and_an_accepting_listener() {
        let metrics = Metrics::new();
        assert!(!metrics.is_ready());
        metrics.handlers_loaded.set(1);
        assert!(!metrics.is_ready());
        metrics.set_accepting(true);
        assert!(metrics.is_ready());
        metrics.set_accepting(false);
        assert!(!metrics.is_ready());
    }
}
