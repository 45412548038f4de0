//! `context-0-2`: a handler built against `arrpc:handler@0.2.0`
//! (`wit/0.2.0/handler.wit`), the world whose context carried the caller.
//! The host's tests serve it to check that components built against 0.2.0
//! keep loading and get their whole context, caller included. It replies to
//! the string `"context"` (or `["context"]`, as MessagePack-RPC params)
//! with the context's fields, and echoes anything else.

use serde::Serialize;

/// Bindings for the 0.2.0 world. The export glue takes one argument per
/// flattened field of `context` and `payload`, more than clippy's default.
#[allow(clippy::too_many_arguments)]
mod bindings {
    wit_bindgen::generate!({ world: "handler", path: "../../wit/0.2.0" });
}

use bindings::{Context, Guest};

/// `"context"` and `["context"]` in MessagePack.
const ASKS: [&[u8]; 2] = [b"\xa7context", b"\x91\xa7context"];

struct Context02;

impl Guest for Context02 {
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
            caller: Option<Caller<'a>>,
        }
        #[derive(Serialize)]
        struct Caller<'a> {
            spiffe_id: Option<&'a str>,
            dns_names: &'a [String],
        }
        rmp_serde::to_vec_named(&Fields {
            handler: &ctx.handler,
            request_id: ctx.request_id,
            peer: &ctx.peer,
            timeout_ms: ctx.timeout_ms,
            traceparent: ctx.traceparent.as_deref(),
            // An empty `spiffe-id` means none in 0.2.0.
            caller: ctx.caller.as_ref().map(|c| Caller {
                spiffe_id: (!c.spiffe_id.is_empty()).then_some(c.spiffe_id.as_str()),
                dns_names: &c.dns_names,
            }),
        })
        .map_err(|e| format!("context-0-2: cannot encode the reply: {e}"))
    }
}

bindings::export!(Context02 with_types_in bindings);
