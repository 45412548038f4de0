//! From one message to its reply bytes: signature check, then handler.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrpc_wire::reply::{ErrorKind, error_reply};
use bytes::Bytes;

use super::auth::Authenticator;
use crate::runtime::{HandlerRegistry, Request};

/// Routes messages to handlers; shared by every connection.
pub struct Dispatcher {
    registry: Arc<HandlerRegistry>,
    /// Source of request ids, unique within this process.
    next_request: AtomicU64,
    /// Set: messages must be signed envelopes; handlers get their `data`.
    auth: Option<Authenticator>,
}

impl Dispatcher {
    pub fn new(registry: Arc<HandlerRegistry>) -> Self {
        Dispatcher {
            registry,
            next_request: AtomicU64::new(1),
            auth: None,
        }
    }

    pub fn set_auth(&mut self, auth: Authenticator) {
        self.auth = Some(auth);
    }

    /// Produces the reply to one message: the handler's output, or an error
    /// reply in the seed's spelling.
    pub async fn dispatch(&self, message: Bytes, peer: Arc<str>) -> Vec<u8> {
        let message = match &self.auth {
            None => message,
            Some(auth) => match auth.open(&message) {
                Ok(data) => message.slice_ref(data),
                Err(refusal) => {
                    tracing::info!(peer = %peer, reason = %refusal, "refusing message");
                    return refusal.reply();
                }
            },
        };
        let request_id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let Some(handler) = self.registry.default_handler() else {
            return error_reply(
                ErrorKind::Rpc,
                "no default handler is configured for bare messages",
            );
        };
        let request = Request {
            payload: &message,
            request_id,
            peer: peer.to_string(),
            traceparent: None,
        };
        match handler.call(request).await {
            Ok(reply) => reply,
            Err(e) => {
                tracing::debug!(handler = handler.name(), request_id, peer = %peer, error = %e, "message failed");
                error_reply(ErrorKind::Rpc, &e.to_string())
            }
        }
    }
}
