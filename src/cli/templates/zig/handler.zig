//! `{{name}}`: an arrpc-host handler in Zig.
//!
//! `payload` holds one MessagePack value, the bytes the client sent; set
//! `ret` to one MessagePack value (malloc'd memory) and return true, or set
//! `err` (e.g. with handler_string_dup_n) and return false: the client
//! receives `arrpc.error.RpcException: <text>`. The arguments belong to this
//! function. stdout and stderr go to the host's log. Who sent the message,
//! the handler asks the host: `c.arrpc_handler_client_caller(&identity)`
//! returns true when the host verified a client certificate and fills
//! `identity` (a `c.arrpc_handler_client_identity_t`: `spiffe_id`, an
//! option, and `dns_names`; free it with
//! `c.arrpc_handler_client_identity_free`);
//! `c.arrpc_handler_client_peer(&address)` gives the client's address.
//! Another arrpc service, listed in the handler's `upstreams`:
//! `c.arrpc_handler_upstream_call(&upstream, &method, &params, &result,
//! &error)` returns true with the result's MessagePack bytes (malloc'd,
//! yours), or false with `error` (its `tag` says whether the call may have
//! run; free it with `c.arrpc_handler_upstream_call_error_free`).
//! The bindings in gen/ are the C ones for wit/handler.wit.

const c = @cImport(@cInclude("handler.h"));

export fn exports_handler_handle(
    ctx: *c.handler_context_t,
    payload: *c.handler_list_u8_t,
    ret: *c.handler_list_u8_t,
    err: *c.handler_string_t,
) bool {
    _ = err;
    // Hand the payload's memory over as the reply.
    ret.* = payload.*;
    c.handler_context_free(ctx);
    return true;
}
