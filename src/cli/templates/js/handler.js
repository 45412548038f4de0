// `{{name}}`: an arrpc-host handler, built with componentize-qjs (QuickJS).
//
// `handle(message, ctx)` gets the message as JavaScript values, as
// @msgpack/msgpack decodes them (objects, arrays, strings, numbers,
// booleans, null, Uint8Array for bin), and returns the reply as values. A
// thrown string replies with that error text; any other thrown value
// replies with its message, and goes to the host's log, as console output
// does. `ctx.handler` is the name this handler is served under.
//
// Who sent the message, the handler asks the host (`import client from
// "arrpc:handler/client@0.3.0"`): `client.caller()` is who called when the
// host verified a client certificate (`.spiffeId`, a string or null, and
// `.dnsNames`), null otherwise; `client.peer()` is the client's address.
// Another arrpc service, listed in the handler's `upstreams` (`import
// upstream from "arrpc:handler/upstream@0.3.0"`): `upstream.call(name,
// method, encode(params))` returns the result's MessagePack bytes (`decode`
// them), or throws an Error whose `payload`, `{ tag, val }`, says whether
// the call may have run. QuickJS has no fetch: handlers/js-example in the
// arrpc-host repository shows how to add it.
import { serve } from "./arrpc.js";

export const handle = serve((message, ctx) => message);
