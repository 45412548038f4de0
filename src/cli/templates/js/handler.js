// `{{name}}`: an arrpc-host handler, built with componentize-js.
//
// `payload` is a Uint8Array holding one MessagePack value, the bytes the
// client sent; return one MessagePack value. A thrown string reaches the
// client as `arrpc.error.RpcException: <text>`; console output goes to the
// host's log. `ctx.caller` is who called when the host verified a client
// certificate (`ctx.caller.spiffeId`, a string, empty for none, and
// `ctx.caller.dnsNames`), undefined otherwise. To use npm packages (e.g.
// @msgpack/msgpack), bundle them first: componentize-js only follows
// relative imports.
export function handle(ctx, payload) {
  return payload;
}
