//! `context-0-1`: a handler built against `arrpc:handler@0.1.0`
//! (`wit/0.1.0/handler.wit`), the world before the context carried the
//! caller. The host's tests serve it to check that components built against
//! 0.1.0 keep loading and get their context. It replies to the string
//! `"context"` (or `["context"]`, as MessagePack-RPC params) with the
//! context's fields, and echoes anything else.

use serde::Serialize;

/// Bindings for the 0.1.0 world. The export glue takes one argument per
/// flattened field of `context` and `payload`, more than clippy's default.
#[allow(clippy::too_many_arguments)]
mod bindings {
    wit_bindgen::generate!({ world: "handler", path: "../../wit/0.1.0" });
}

use bindings::{Context, Guest};

/// `"context"` and `["context"]` in MessagePack.
const ASKS: [&[u8]; 2] = [b"\xa7context", b"\x91\xa7context"];

struct Context01;

impl Guest for Context01 {
    fn handle(ctx: Context, payload: Vec<u8>) -> Result<Vec<u8>, String> {
        if !ASKS.contains(&payload.as_slice()) {
            return Ok(payload);
        }
        #[derive(Serialize)]
        struct Fields<'a> {
            handler: &'a str,
            request_id: u64,
            peer: &'a str,
            timeout_ms: u32,
            traceparent: Option<&'a str>,
        }
        rmp_serde::to_vec_named(&Fields {
            handler: &ctx.handler,
            request_id: ctx.request_id,
            peer: &ctx.peer,
            timeout_ms: ctx.timeout_ms,
            traceparent: ctx.traceparent.as_deref(),
        })
        .map_err(|e| format!("context-0-1: cannot encode the reply: {e}"))
    }
}

bindings::export!(Context01 with_types_in bindings);
