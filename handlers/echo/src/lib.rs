//! `echo`: returns the payload unchanged.
//!
//! The smallest possible handler. It measures the host's per-call overhead
//! (framing, verification, instantiation) with no guest work on top, and it is
//! a template for new handlers. It takes the raw bytes so the reply is the
//! payload byte for byte, not a re-encoding of it.

use arrpc_handler::Context;

fn echo(_ctx: &Context, payload: Vec<u8>) -> Result<Vec<u8>, String> {
    Ok(payload)
}

arrpc_handler::raw_handler!(echo);
