//! `echo`: returns the payload unchanged.
//!
//! The smallest possible handler. It measures the host's per-call overhead
//! (framing, verification, instantiation) with no guest work on top, and it is
//! a template for new handlers.

/// Bindings for the `handler` world. The export glue takes one argument per
/// flattened field of `context` and `payload`, more than clippy's default.
#[allow(clippy::too_many_arguments)]
mod bindings {
    wit_bindgen::generate!({ world: "handler", path: "../../wit" });
}

use bindings::{Context, Guest};

struct Echo;

impl Guest for Echo {
    fn handle(_ctx: Context, payload: Vec<u8>) -> Result<Vec<u8>, String> {
        Ok(payload)
    }
}

bindings::export!(Echo with_types_in bindings);
