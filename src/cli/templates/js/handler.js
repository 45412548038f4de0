// `{{name}}`: an arrpc-host handler, built with componentize-qjs (QuickJS).
//
// `payload` is a Uint8Array holding one MessagePack value, the bytes the
// client sent; return one MessagePack value. A thrown string reaches the
// client as `arrpc.error.RpcException: <text>`; console output goes to the
// host's log (console.js). Who sent the message, the handler asks the host
// (`import client from "arrpc:handler/client@0.3.0"`): `client.caller()` is
// who called when the host verified a client certificate (`.spiffeId`, a
// string or null, and `.dnsNames`), null otherwise; `client.peer()` is the
// client's address. Another arrpc service, listed in the handler's
// `upstreams` (`import upstream from "arrpc:handler/upstream@0.3.0"`):
// `upstream.call(name, method, params)` sends MessagePack params (a
// Uint8Array) and returns the result's bytes, or throws an Error whose
// `payload`, `{ tag, val }`, says whether the call may have run. npm
// packages' ES modules can be imported; QuickJS has no TextEncoder or
// TextDecoder, which @msgpack/msgpack needs, nor fetch (handlers/js-example
// shows how to add them).
import "./console.js";

export function handle(ctx, payload) {
  return payload;
}
