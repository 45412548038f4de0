//! `forward`: sends each message on to the `[[upstream]]` named `next`, as
//! a MessagePack-RPC call of its handler `echo`, and returns the result.
//!
//! The smallest handler that calls another service: `arrpc-bench outbound`
//! measures what a hop through a handler costs against calling the
//! upstream directly.

use arrpc_handler::{Context, upstream};

fn forward(_ctx: &Context, payload: Vec<u8>) -> Result<Vec<u8>, String> {
    upstream::call_raw("next", "echo", &payload).map_err(|e| format!("{e:?}"))
}

arrpc_handler::raw_handler!(forward);
