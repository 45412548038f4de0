//! From one message to its reply bytes: signature check, routing, handler.
//!
//! With a secret configured, every message must be a signed envelope; it is
//! verified before anything else looks at it, and only its `data` goes on.
//! A message is either bare (Python arrpc's form: the whole message goes to the
//! default handler and the handler's output is the reply) or
//! MessagePack-RPC (its `method` names the handler, `params` is the payload
//! and the handler's output becomes the response's `result`). Either may
//! come in a trace envelope ([`arrpc_wire::trace`]) carrying the caller's
//! W3C `traceparent`. Every message is counted in the metrics and, when
//! tracing is on, gets its own span.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use arrpc_wire::{envelope, rpc, trace};
use bytes::Bytes;
use tracing::{Instrument, Span};

use super::access::Peer;
use super::auth::Authenticator;
use super::failure::{self, Failure, Form};
use crate::config::Allowed;
use crate::runtime::{CallError, Handler, HandlerRegistry, Request};
use crate::telemetry::{Handled, LogThrottle, Metrics, Outcome, otel};

/// Refused signatures and callers are logged within a budget: a peer can
/// send them as fast as it likes.
static REFUSALS: LogThrottle = LogThrottle::new();

/// The allow list of a handler open to every caller.
const ANYONE: &[Allowed] = &[Allowed::Anyone];

/// Routes messages to handlers; shared by every connection.
pub struct Dispatcher {
    registry: Arc<HandlerRegistry>,
    /// Whether RPC-shaped messages are routed by method (`[server] rpc`).
    rpc: bool,
    /// Source of request ids, unique within this process.
    next_request: AtomicU64,
    /// Set: messages must be signed envelopes; handlers get their `data`.
    auth: Option<Authenticator>,
    metrics: Arc<Metrics>,
}

/// A message as read from a connection, sorted by how it is answered.
pub enum Incoming {
    /// The Python arrpc package's form: answered in request order.
    Bare(BareMessage),
    /// MessagePack-RPC: answered as soon as its handler finishes.
    Rpc(RpcCall),
    /// Refused before reaching a handler (signature, a bad envelope):
    /// answered in request order with this reply, if any.
    Refused(Option<Vec<u8>>),
}

/// What is known of a message before its handler runs.
struct Received {
    /// When it was read, to tell queueing from handling.
    at: Instant,
    /// Its size as read, envelopes included.
    bytes: usize,
    /// The caller's W3C `traceparent`, from a trace envelope.
    traceparent: Option<String>,
}

/// A message in the Python arrpc package's bare form.
pub struct BareMessage {
    message: Bytes,
    received: Received,
}

/// A MessagePack-RPC request or notification, owning its message.
pub struct RpcCall {
    /// `None` for a notification, which gets no response.
    msgid: Option<u32>,
    method: String,
    /// The `params` value, a slice of the message as read.
    params: Bytes,
    received: Received,
}

impl RpcCall {
    pub fn msgid(&self) -> Option<u32> {
        self.msgid
    }
}

impl Dispatcher {
    /// Routes to the handlers of `registry`, by method too when `rpc`;
    /// with `auth`, only signed envelopes are let through.
    pub fn new(
        registry: Arc<HandlerRegistry>,
        rpc: bool,
        auth: Option<Authenticator>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Dispatcher {
            registry,
            rpc,
            next_request: AtomicU64::new(1),
            auth,
            metrics,
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The refusal of a message read after shutdown began, which is not
    /// run: [`Failure::Draining`], so a client can send it to another
    /// replica. The message is not verified: the refusal tells only that
    /// the host is going away.
    pub fn refuse_draining(&self, message: &[u8]) -> Option<Vec<u8>> {
        failure::reply(&Failure::Draining, self.unverified_form(message))
    }

    /// Whether `message` is an RPC request (one that expects a response),
    /// read as [`Dispatcher::refuse_draining`] reads it.
    pub fn is_rpc_call(&self, message: &[u8]) -> bool {
        matches!(self.unverified_form(message), Form::Request(_))
    }

    /// How `message` would be answered, read without verifying its
    /// signature, through a trace envelope.
    fn unverified_form(&self, message: &[u8]) -> Form {
        let inner = envelope::unverified_data(message).unwrap_or(message);
        let inner = match trace::unwrap(inner) {
            trace::Unwrapped::Traced(traced) => traced.data,
            _ => inner,
        };
        self.form_of(inner)
    }

    /// How a message whose payload is `inner` is answered: as an RPC
    /// request or notification when `[server] rpc` is on, else bare.
    fn form_of(&self, inner: &[u8]) -> Form {
        match rpc::parse(inner) {
            Some(rpc::Message::Request { msgid, .. }) if self.rpc => Form::Request(msgid),
            Some(rpc::Message::Notification { .. }) if self.rpc => Form::Notification,
            _ => Form::Bare,
        }
    }

    /// Verifies the signature (when a secret is set), opens a trace
    /// envelope if the message is one, and tells an RPC request or
    /// notification from a bare message. `at` is when it was read; messages
    /// read together share one.
    pub fn classify(&self, message: Bytes, peer: &str, at: Instant) -> Incoming {
        let mut received = Received {
            at,
            bytes: message.len(),
            traceparent: None,
        };
        let message = match &self.auth {
            None => message,
            Some(auth) => match auth.open(&message) {
                Ok(data) => message.slice_ref(data),
                Err(refusal) => {
                    self.metrics.auth_failure();
                    if let Some(suppressed) = REFUSALS.admit() {
                        tracing::info!(peer = %peer, reason = %refusal, suppressed, "refusing message");
                    }
                    // An unsigned RPC request still gets a response its client
                    // can match; a notification gets nothing, as always.
                    let inner = envelope::unverified_data(&message).unwrap_or(&message);
                    return Incoming::Refused(failure::reply(
                        &Failure::Unsigned(refusal),
                        self.form_of(inner),
                    ));
                }
            },
        };
        let message = match trace::unwrap(&message) {
            trace::Unwrapped::Plain => message,
            trace::Unwrapped::Traced(traced) => {
                received.traceparent = Some(traced.traceparent.to_owned());
                message.slice_ref(traced.data)
            }
            trace::Unwrapped::BadData => {
                self.metrics.refused(Outcome::Malformed);
                return Incoming::Refused(Some(failure::bare_reply(&Failure::BadTrace)));
            }
        };
        if !self.rpc {
            return Incoming::Bare(BareMessage { message, received });
        }
        // One whole value: the connection framed it, or the signature's
        // and the trace envelope's checks found `data` to be one.
        let (msgid, method, params) = match rpc::parse_whole(&message) {
            Some(rpc::Message::Request {
                msgid,
                method,
                params,
            }) => (Some(msgid), method, params),
            Some(rpc::Message::Notification { method, params }) => (None, method, params),
            Some(rpc::Message::Response { .. }) | None => {
                return Incoming::Bare(BareMessage { message, received });
            }
        };
        Incoming::Rpc(RpcCall {
            msgid,
            method: method.to_owned(),
            params: message.slice_ref(params),
            received,
        })
    }

    /// Produces the reply to one bare message: the handler's output, or an
    /// error reply in the Python arrpc package's spelling.
    pub async fn dispatch(&self, bare: BareMessage, peer: Arc<Peer>) -> Vec<u8> {
        let found = self.registry.default_handler();
        let handler = match self.route(found, || Failure::NoDefaultHandler, &peer) {
            Ok(handler) => handler,
            Err(failure) => return failure::bare_reply(&failure),
        };
        let (outcome, ran) = self
            .run(&handler, &bare.message, &peer, &bare.received)
            .await;
        let reply = match outcome {
            Ok(reply) => reply,
            Err(e) => failure::bare_reply(&Failure::Call(e)),
        };
        self.replied(&handler, ran, &bare.received, reply.len());
        reply
    }

    /// Produces the response to an RPC request (`None` for a notification):
    /// the handler's output as `result`, or its failure as the `error` text.
    pub async fn dispatch_rpc(&self, call: RpcCall, peer: Arc<Peer>) -> Option<Vec<u8>> {
        let found = self.registry.get(&call.method);
        let missing = || Failure::NoSuchMethod(call.method.clone());
        let handler = match self.route(found, missing, &peer) {
            Ok(handler) => handler,
            Err(failure) => return rpc_failure(&failure, &call, &peer),
        };
        let (outcome, ran) = self
            .run(&handler, &call.params, &peer, &call.received)
            .await;
        let response = match outcome {
            Ok(result) => call.msgid.map(|msgid| rpc::response(msgid, Ok(&result))),
            Err(e) => rpc_failure(&Failure::Call(e), &call, &peer),
        };
        let reply_bytes = response.as_ref().map_or(0, Vec::len);
        self.replied(&handler, ran, &call.received, reply_bytes);
        response
    }

    /// The handler a message goes to, if it was `found` and admits `peer`;
    /// else why not (`missing` when there is no handler).
    fn route(
        &self,
        found: Option<Arc<Handler>>,
        missing: impl FnOnce() -> Failure,
        peer: &Peer,
    ) -> Result<Arc<Handler>, Failure> {
        let Some(handler) = found else {
            // The method is the client's text, so it is no metric label.
            self.metrics.refused(Outcome::UnknownHandler);
            return Err(missing());
        };
        self.admit(&handler, peer).map_err(Failure::Denied)?;
        Ok(handler)
    }

    /// Whether `peer` may call `handler`; the refusal's reason if not. Only
    /// handlers that restrict their callers count a decision.
    fn admit(&self, handler: &Handler, peer: &Peer) -> Result<(), String> {
        let allow = handler.config().allow.as_deref().unwrap_or(ANYONE);
        if allow == ANYONE {
            return Ok(());
        }
        let allowed = peer.is_allowed(allow);
        self.metrics.access(handler.shared_name(), allowed);
        if allowed {
            return Ok(());
        }
        self.metrics
            .message(handler.shared_name(), Outcome::AccessDenied);
        let refusal = peer.refusal(handler.name());
        if let Some(suppressed) = REFUSALS.admit() {
            tracing::info!(peer = %peer.addr, handler = handler.name(), reason = %refusal, suppressed, "refusing message");
        }
        Err(refusal)
    }

    /// Runs one payload through `handler` under a fresh request id, in the
    /// message's span.
    async fn run(
        &self,
        handler: &Handler,
        payload: &[u8],
        peer: &Arc<Peer>,
        received: &Received,
    ) -> (Result<Vec<u8>, CallError>, Ran) {
        let _in_flight = self.metrics.in_flight();
        let started = Instant::now();
        let request_id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let trace = otel::message_trace(
            handler.name(),
            handler.sha256(),
            request_id,
            received.bytes,
            received.traceparent.as_deref(),
        );
        let request = Request {
            payload,
            request_id,
            peer,
            traceparent: trace.traceparent.as_deref(),
            started,
        };
        // Boxed in a statement of its own: the call's future is large, and
        // a temporary that lived until the `.await` would keep room for it
        // in this future, which is copied whole into its box per message.
        let call = Box::pin(handler.call(request));
        let result = call
            .instrument(trace.span.clone())
            .await
            .inspect_err(|e| {
                tracing::debug!(handler = handler.name(), request_id, trace_id = trace.trace_id.as_deref(), peer = %peer.addr, error = %e, "message failed");
            });
        let outcome = match &result {
            Ok(_) => Outcome::Ok,
            Err(e) => Outcome::from(e),
        };
        trace.span.record("outcome", outcome.as_str());
        if outcome != Outcome::Ok {
            trace.span.record("otel.status_code", "ERROR");
        }
        let ran = Ran {
            outcome,
            started,
            took: started.elapsed(),
            span: trace.span,
        };
        (result, ran)
    }

    /// Records one message that reached its handler, now that its reply's
    /// size is known.
    fn replied(&self, handler: &Handler, ran: Ran, received: &Received, reply_bytes: usize) {
        ran.span.record("reply_bytes", reply_bytes);
        self.metrics.handled(
            handler.shared_name(),
            &Handled {
                outcome: ran.outcome,
                queued: ran.started.duration_since(received.at),
                ran: ran.took,
                request_bytes: received.bytes,
                reply_bytes,
            },
        );
    }
}

/// How a message's handler run went.
struct Ran {
    outcome: Outcome,
    started: Instant,
    took: std::time::Duration,
    span: Span,
}

/// The response to a failed RPC call; a failed notification is only logged.
fn rpc_failure(failure: &Failure, call: &RpcCall, peer: &Peer) -> Option<Vec<u8>> {
    let form = Form::rpc(call.msgid);
    if let Form::Notification = form {
        if let Failure::Denied(_) = failure {
            tracing::debug!(method = %call.method, peer = %peer.addr, error = %failure, "notification refused");
        } else {
            tracing::debug!(method = %call.method, peer = %peer.addr, error = %failure, "notification failed");
        }
    }
    failure::reply(failure, form)
}
