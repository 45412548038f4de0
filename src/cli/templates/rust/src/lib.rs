//! `{{name}}`: an arrpc-host handler.
//!
//! Build: cargo build --release --target wasm32-wasip2
//! (`rustup target add wasm32-wasip2` once). stdout and stderr go to the
//! host's log, tagged with the handler name and request id.

use arrpc_handler::Context;
use rmpv::Value;

/// Replies with the message it got. Replace `Value` with your own
/// `serde::Deserialize` input and `serde::Serialize` output types; an `Err`
/// reaches the client as `arrpc.error.RpcException: <text>`. `ctx.caller()`
/// asks the host who called: its SPIFFE ID and DNS names when the host
/// verified a client certificate, `None` otherwise (`ctx.spiffe_id()` for
/// the ID alone); `ctx.peer()` is the client's address.
fn handle(_ctx: &Context, message: Value) -> Result<Value, String> {
    Ok(message)
}

arrpc_handler::handler!(handle);
