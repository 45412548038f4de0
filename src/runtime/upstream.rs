//! `arrpc:handler/upstream`: a guest's calls to the services its handler's
//! `upstreams` lists. Remote ones go through `outbound`'s clients; a
//! handler of this host is called in process, as a message of its own
//! whose sender is the calling handler, nested at most
//! [`MAX_CALL_DEPTH`] deep so handlers calling each other in a loop stop.

use std::sync::{Arc, OnceLock, Weak};
use std::time::Instant;

use super::HostState;
use super::error::CallError;
use super::handler::Request;
use super::peer::Peer;
use super::registry::HandlerRegistry;
use super::world::v0_3::arrpc::handler::upstream::{CallError as WitError, Host};
use crate::outbound::{Route, Upstream, UpstreamError};
use crate::telemetry::otel;
use tracing::Instrument;

/// In-process calls nested deeper than this are refused.
pub const MAX_CALL_DEPTH: u8 = 8;

/// The handlers this host serves, for in-process calls; set once serving
/// starts, held weakly so the registry's owner decides its life.
pub(super) type LocalHandlers = Arc<OnceLock<Weak<HandlerRegistry>>>;

/// What an upstream call carries: MessagePack-RPC, or a bare message.
enum Form<'a> {
    Call { method: &'a str, params: &'a [u8] },
    Send { message: &'a [u8] },
}

impl Host for HostState {
    async fn call(
        &mut self,
        upstream: String,
        method: String,
        params: Vec<u8>,
    ) -> Result<Vec<u8>, WitError> {
        let form = Form::Call {
            method: &method,
            params: &params,
        };
        self.call_upstream(&upstream, form).await.map_err(wit)
    }

    async fn send(&mut self, upstream: String, message: Vec<u8>) -> Result<Vec<u8>, WitError> {
        let form = Form::Send { message: &message };
        self.call_upstream(&upstream, form).await.map_err(wit)
    }
}

impl HostState {
    async fn call_upstream(
        &mut self,
        name: &str,
        form: Form<'_>,
    ) -> Result<Vec<u8>, UpstreamError> {
        let outbound = self.recipe().outbound.clone();
        let upstream = outbound.upstream(name)?.clone();
        let started = Instant::now();
        let left = self
            .deadline()
            .saturating_duration_since(started)
            .min(upstream.timeout);
        let trace = self
            .traceparent()
            .map(|parent| otel::client_trace(&parent, &self.recipe().name, "arrpc", name));
        let traceparent = trace.as_ref().and_then(|t| t.traceparent.clone());
        let span = trace.map_or_else(tracing::Span::none, |t| t.span);
        let caller = Caller {
            handler: self.recipe().name.clone(),
            depth: self.sender().depth,
            request_id: self.request_id(),
            local: self.recipe().local.clone(),
        };
        let call = async {
            match &upstream.route {
                Route::Remote(remote) => match form {
                    Form::Call { method, params } => {
                        remote
                            .call(method, params, traceparent.as_deref(), left)
                            .await
                    }
                    Form::Send { message } => {
                        remote.send(message, traceparent.as_deref(), left).await
                    }
                },
                Route::Local(handler) => {
                    let payload = match form {
                        Form::Call { params, .. } => params,
                        Form::Send { message } => message,
                    };
                    call_local(caller, &upstream, handler, payload, traceparent.as_deref()).await
                }
            }
        };
        let result = call.instrument(span.clone()).await;
        span.record(
            "result",
            result.as_ref().err().map_or("ok", UpstreamError::label),
        );
        outbound.record_upstream(&upstream, result.as_ref().map(|_| ()), started.elapsed());
        result
    }
}

/// The handler making an in-process call.
struct Caller {
    handler: Arc<str>,
    /// How deep its own message is.
    depth: u8,
    request_id: u64,
    local: LocalHandlers,
}

/// Runs `payload` through this host's handler `name`, as a message from
/// the calling handler one level deeper.
async fn call_local(
    caller: Caller,
    upstream: &Upstream,
    name: &str,
    payload: &[u8],
    traceparent: Option<&str>,
) -> Result<Vec<u8>, UpstreamError> {
    let depth = caller.depth;
    if depth >= MAX_CALL_DEPTH {
        return Err(UpstreamError::Denied(format!(
            "in-process calls nest at most {MAX_CALL_DEPTH} deep; upstream `{}` would be call {}",
            upstream.name,
            depth + 1
        )));
    }
    let handler = caller
        .local
        .get()
        .and_then(Weak::upgrade)
        .and_then(|registry| registry.get(name))
        .ok_or_else(|| UpstreamError::NotRun(format!("handler `{name}` is not being served")))?;
    let peer = Arc::new(Peer {
        addr: format!("local:{}", caller.handler).into(),
        identity: None,
        depth: depth + 1,
    });
    let request = Request {
        payload,
        request_id: caller.request_id,
        peer: &peer,
        traceparent,
        started: Instant::now(),
    };
    // Boxed: the callee's call may itself call in process.
    Box::pin(handler.call(request)).await.map_err(|e| match e {
        CallError::Busy { .. } => UpstreamError::NotRun(e.to_string()),
        CallError::Timeout { .. } => UpstreamError::TimedOut,
        CallError::Failed(text) => UpstreamError::Remote(text),
        other => UpstreamError::Remote(other.to_string()),
    })
}

fn wit(error: UpstreamError) -> WitError {
    match error {
        UpstreamError::Denied(why) => WitError::Denied(why),
        UpstreamError::NotRun(why) => WitError::NotRun(why),
        UpstreamError::MayHaveRun(why) => WitError::MayHaveRun(why),
        UpstreamError::Remote(text) => WitError::Remote(text),
        UpstreamError::TimedOut => WitError::TimedOut,
    }
}
