//! From one message to its reply bytes: signature check, routing, handler.
//!
//! With a secret configured, every message must be a signed envelope; it is
//! verified before anything else looks at it, and only its `data` goes on.
//! A message is either bare (the seed's form: the whole message goes to the
//! default handler and the handler's output is the reply) or
//! MessagePack-RPC (its `method` names the handler, `params` is the payload
//! and the handler's output becomes the response's `result`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrpc_wire::reply::{ErrorKind, error_reply};
use arrpc_wire::rpc;
use bytes::Bytes;

use super::auth::Authenticator;
use crate::runtime::{CallError, Handler, HandlerRegistry, Request};

/// Routes messages to handlers; shared by every connection.
pub struct Dispatcher {
    registry: Arc<HandlerRegistry>,
    /// Whether RPC-shaped messages are routed by method (`[server] rpc`).
    rpc: bool,
    /// Source of request ids, unique within this process.
    next_request: AtomicU64,
    /// Set: messages must be signed envelopes; handlers get their `data`.
    auth: Option<Authenticator>,
}

/// A message as read from a connection, sorted by how it is answered.
pub enum Incoming {
    /// The seed's form: answered in request order.
    Bare(Bytes),
    /// MessagePack-RPC: answered as soon as its handler finishes.
    Rpc(RpcCall),
    /// Refused before reaching a handler (signature): answered in request
    /// order with this reply, if any.
    Refused(Option<Vec<u8>>),
}

/// A MessagePack-RPC request or notification, owning its message.
pub struct RpcCall {
    /// `None` for a notification, which gets no response.
    msgid: Option<u32>,
    method: String,
    /// The `params` value, a slice of the message as read.
    params: Bytes,
}

impl RpcCall {
    pub fn msgid(&self) -> Option<u32> {
        self.msgid
    }
}

impl Dispatcher {
    pub fn new(registry: Arc<HandlerRegistry>, rpc: bool) -> Self {
        Dispatcher {
            registry,
            rpc,
            next_request: AtomicU64::new(1),
            auth: None,
        }
    }

    pub fn set_auth(&mut self, auth: Authenticator) {
        self.auth = Some(auth);
    }

    /// Verifies the signature (when a secret is set), then tells an RPC
    /// request or notification from a bare message.
    pub fn classify(&self, message: Bytes, peer: &str) -> Incoming {
        let message = match &self.auth {
            None => message,
            Some(auth) => match auth.open(&message) {
                Ok(data) => message.slice_ref(data),
                Err(refusal) => {
                    tracing::info!(peer = %peer, reason = %refusal, "refusing message");
                    // An unsigned RPC request still gets a response its client
                    // can match; a notification gets nothing, as always.
                    return Incoming::Refused(match rpc::parse(&message) {
                        Some(rpc::Message::Request { msgid, .. }) if self.rpc => {
                            Some(rpc::response(msgid, Err(&refusal.text())))
                        }
                        Some(rpc::Message::Notification { .. }) if self.rpc => None,
                        _ => Some(refusal.reply()),
                    });
                }
            },
        };
        if !self.rpc {
            return Incoming::Bare(message);
        }
        let (msgid, method, params) = match rpc::parse(&message) {
            Some(rpc::Message::Request {
                msgid,
                method,
                params,
            }) => (Some(msgid), method, params),
            Some(rpc::Message::Notification { method, params }) => (None, method, params),
            Some(rpc::Message::Response { .. }) | None => return Incoming::Bare(message),
        };
        Incoming::Rpc(RpcCall {
            msgid,
            method: method.to_owned(),
            params: message.slice_ref(params),
        })
    }

    /// Produces the reply to one bare message: the handler's output, or an
    /// error reply in the seed's spelling.
    pub async fn dispatch(&self, message: Bytes, peer: Arc<str>) -> Vec<u8> {
        let Some(handler) = self.registry.default_handler() else {
            return error_reply(
                ErrorKind::Rpc,
                "no default handler is configured for bare messages",
            );
        };
        match self.run(&handler, &message, &peer).await {
            Ok(reply) => reply,
            Err(e) => error_reply(ErrorKind::Rpc, &e.to_string()),
        }
    }

    /// Produces the response to an RPC request (`None` for a notification):
    /// the handler's output as `result`, or its failure as the `error` text.
    pub async fn dispatch_rpc(&self, call: RpcCall, peer: Arc<str>) -> Option<Vec<u8>> {
        let outcome = match self.registry.get(&call.method) {
            Some(handler) => self
                .run(&handler, &call.params, &peer)
                .await
                .map_err(|e| e.to_string()),
            None => Err(format!("no handler is named `{}`", call.method)),
        };
        match (call.msgid, outcome) {
            (Some(msgid), Ok(result)) => Some(rpc::response(msgid, Ok(&result))),
            (Some(msgid), Err(text)) => Some(rpc::response(msgid, Err(&text))),
            (None, Err(text)) => {
                tracing::debug!(method = %call.method, peer = %peer, error = %text, "notification failed");
                None
            }
            (None, Ok(_)) => None,
        }
    }

    /// Runs one payload through `handler` under a fresh request id.
    async fn run(
        &self,
        handler: &Handler,
        payload: &[u8],
        peer: &Arc<str>,
    ) -> Result<Vec<u8>, CallError> {
        let request_id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let request = Request {
            payload,
            request_id,
            peer: peer.to_string(),
            traceparent: None,
        };
        handler.call(request).await.inspect_err(|e| {
            tracing::debug!(handler = handler.name(), request_id, peer = %peer, error = %e, "message failed");
        })
    }
}
