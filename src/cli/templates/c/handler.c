/*
 * `{{name}}`: an arrpc-host handler in C.
 *
 * `payload` holds one MessagePack value, the bytes the client sent; set
 * `ret` to one MessagePack value (malloc'd memory) and return true, or set
 * `err` (e.g. with handler_string_dup) and return false: the client receives
 * `arrpc.error.RpcException: <text>`. The arguments belong to this function.
 * stdout and stderr go to the host's log. Who sent the message, the
 * handler asks the host: `arrpc_handler_client_caller(&identity)` returns
 * true when the host verified a client certificate and fills `identity`
 * (an `arrpc_handler_client_identity_t`: `spiffe_id`, an option, and
 * `dns_names`; free it with `arrpc_handler_client_identity_free`);
 * `arrpc_handler_client_peer(&address)` gives the client's address.
 * Another arrpc service, listed in the handler's `upstreams`:
 * `arrpc_handler_upstream_call(&upstream, &method, &params, &result, &error)`
 * returns true with the result's MessagePack bytes (malloc'd, yours), or
 * false with `error` (its `tag` says whether the call may have run; free it
 * with `arrpc_handler_upstream_call_error_free`).
 */

#include "handler.h"

bool exports_handler_handle(handler_context_t *ctx, handler_list_u8_t *payload,
                            handler_list_u8_t *ret, handler_string_t *err) {
    (void)err;
    /* Hand the payload's memory over as the reply. */
    *ret = *payload;
    handler_context_free(ctx);
    return true;
}
