// An arrpc-host handler in JavaScript: echo, sum, caller, relay, fetch,
// count and session, chosen by the served name.
//
// componentize-qjs turns this module (bundled with its npm dependencies by
// build.mjs) into a WebAssembly component, run by QuickJS, implementing the
// `handler` world of wit/handler.wit. A name ending in "echo" returns the
// payload unchanged; one ending in "sum" adds up numbers with the same
// input, output and error texts as the Rust `sum` handler; one ending in
// "caller" replies with who called, as the host verified it, asked of the
// host through the imported `client` interface; one ending in "relay"
// calls another arrpc service through the imported `upstream` interface;
// one ending in "fetch" makes an HTTP request with fetch.js. Two keep state
// in the key-value stores the handler's `stores` lists (wasi:keyvalue),
// through the Map-like Store of store.js: one ending in "count" increments
// a counter, one ending in "session" reads and merges a session's fields.
// A thrown string becomes the `err` the client receives.

import "./text-encoding.js";
import "./console.js";
import client from "arrpc:handler/client@0.3.0";
import upstream from "arrpc:handler/upstream@0.3.0";
import { decode, encode } from "@msgpack/msgpack";
import { fetch } from "./fetch.js";
import { Store, StoreError } from "./store.js";

const EXPECTED = 'an array of numbers or {"numbers": [...]}';

export function handle(ctx, payload) {
  if (ctx.handler.endsWith("echo")) {
    return payload;
  }
  if (ctx.handler.endsWith("sum")) {
    return sum(payload);
  }
  if (ctx.handler.endsWith("caller")) {
    return whoCalled(client.caller());
  }
  if (ctx.handler.endsWith("relay")) {
    return relay(payload);
  }
  if (ctx.handler.endsWith("fetch")) {
    return fetchOperation(payload);
  }
  if (ctx.handler.endsWith("count")) {
    return count(payload);
  }
  if (ctx.handler.endsWith("session")) {
    return session(payload);
  }
  // console output goes to the host's log, tagged with handler and request id.
  console.error(`no operation for the name ${ctx.handler}`);
  throw `${ctx.handler}: serve this component under a name ending in echo, sum, caller, relay, fetch, count or session`;
}

// Calls `method` of the upstream the message names, {"upstream": name,
// "method": name, "params": value}, and replies with its result as the
// upstream sent it. The host allows only the upstreams this handler's
// `upstreams` lists. A failed call throws an Error whose `payload` is the
// `call-error`, `{ tag, val }`, which says whether the call may have run;
// the reply is then `relay: <tag>: <text>`.
function relay(payload) {
  const request = decode(payload, { useBigInt64: true });
  if (kind(request) !== "a map" || typeof request.upstream !== "string" || typeof request.method !== "string") {
    throw 'relay: expected {"upstream": name, "method": name, "params": value}';
  }
  try {
    return upstream.call(request.upstream, request.method, encode(request.params ?? null, { useBigInt64: true }));
  } catch (error) {
    const { tag, val } = error.payload;
    throw val === undefined ? `relay: ${tag}` : `relay: ${tag}: ${val}`;
  }
}

// Makes the HTTP request the message describes, {"url": "http://...",
// "method"?: name, "headers"?: {name: value}, "body"?: bytes or text}, and
// replies with {"status": n, "headers": {name: value}, "body": bytes}. The
// host allows only what this handler's `allowed_outbound_hosts` lists; a
// request that gets no response replies `fetch: <why>`.
function fetchOperation(payload) {
  const request = decode(payload);
  if (kind(request) !== "a map" || typeof request.url !== "string") {
    throw 'fetch: expected {"url": "http://...", "method"?: name, "headers"?: {name: value}, "body"?: bytes}';
  }
  let response;
  try {
    response = fetch(request.url, { method: request.method, headers: request.headers, body: request.body });
  } catch (error) {
    throw `fetch: ${error.message}`;
  }
  return encode({
    status: response.status,
    headers: Object.fromEntries(response.headers),
    body: response.bytes(),
  });
}

// Runs `work` with the store named `name` open, closing it after; a store
// failure becomes the reply `<operation>: <case>`.
function withStore(operation, name, work) {
  let opened;
  try {
    opened = new Store(name);
    return work(opened);
  } catch (error) {
    if (error instanceof StoreError) throw `${operation}: ${error.message}`;
    throw error;
  } finally {
    opened?.close();
  }
}

// Adds `by` (default 1) to the counter under `key` in the store the message
// names, {"store": name, "key": text, "by": integer}, and replies with the
// new value. The increment is atomic in the store, so handlers on any
// number of instances or hosts sharing it lose no count. A store failure
// replies `count: <case>`: no-such-store, access-denied (the handler's
// `stores` does not list it) or `other: <why>`.
function count(payload) {
  const request = decodeMap(payload);
  let by = request?.by === undefined ? 1 : request.by;
  // Decoded as a bigint past 32 bits. The bindings pass the 64-bit delta
  // as a number, exact up to 2^53: a larger one is refused below.
  if (typeof by === "bigint") by = Number(by);
  if (typeof request?.store !== "string" || typeof request.key !== "string" || !Number.isSafeInteger(by)) {
    throw 'count: expected {"store": name, "key": text, "by": integer}';
  }
  return withStore("count", request.store, (counts) => encode(counts.increment(request.key, by)));
}

// A session's fields, a map kept as MessagePack under `session:<id>` in the
// store the message names, {"store": name, "id": text, "set": map}. With
// `set`, merges those fields into the stored ones and replies with the
// result; without, replies with what is stored (an empty map for a new
// session). The merge is a compare-and-swap, so two messages setting
// different fields of one session at once both land.
function session(payload) {
  const request = decodeMap(payload);
  if (
    typeof request?.store !== "string" ||
    typeof request.id !== "string" ||
    (request.set !== undefined && kind(request.set) !== "a map")
  ) {
    throw 'session: expected {"store": name, "id": text, "set": map (optional)}';
  }
  const key = `session:${request.id}`;
  const fields = (stored) => {
    if (stored === undefined) return {};
    let value;
    try {
      value = decode(stored, { useBigInt64: true });
    } catch {
      // Not MessagePack: named below.
    }
    if (kind(value) !== "a map") throw `session: ${key} holds no MessagePack map`;
    return value;
  };
  return withStore("session", request.store, (sessions) => {
    if (request.set === undefined) {
      return encode(fields(sessions.get(key)), { useBigInt64: true });
    }
    return sessions.update(key, (stored) => encode({ ...fields(stored), ...request.set }, { useBigInt64: true }));
  });
}

// The message, if it is a map; else undefined.
function decodeMap(payload) {
  try {
    const value = decode(payload, { useBigInt64: true });
    return kind(value) === "a map" ? value : undefined;
  } catch {
    return undefined;
  }
}

// The caller's SPIFFE ID (nil when the certificate carries none) and DNS
// names; nil when the host verified no client certificate (plain TCP, or TLS
// without one). A WIT `option` is the value or `null`; record fields are
// camelCase.
function whoCalled(caller) {
  if (caller === null) {
    return encode(null);
  }
  return encode({ spiffe_id: caller.spiffeId, dns_names: caller.dnsNames });
}

function sum(payload) {
  let value;
  try {
    // Integers come back as bigint, so sums stay exact past 2^53.
    value = decode(payload, { useBigInt64: true });
  } catch (e) {
    throw `sum: invalid MessagePack: ${e.message}`;
  }
  const items = numbers(value);
  let exact = 0n;
  let total = 0;
  let anyFloat = false;
  items.forEach((item, index) => {
    if (typeof item === "bigint") {
      exact += item;
      total += Number(item);
    } else if (typeof item === "number") {
      // Small integers decode as number too; a float without a fraction
      // (2.0) is found on the wire below.
      if (Number.isInteger(item)) {
        exact += BigInt(item);
      } else {
        anyFloat = true;
      }
      total += item;
    } else {
      throw `sum: expected ${EXPECTED}, got ${kind(item)} at index ${index}`;
    }
  });
  anyFloat ||= holdsFloat(payload);
  let result;
  if (anyFloat) {
    result = total;
  } else if (exact >= -(2n ** 63n) && exact < 2n ** 64n) {
    result = exact >= -(2n ** 31n) && exact < 2n ** 31n ? Number(exact) : exact;
  } else {
    throw "sum: integer overflow";
  }
  if (anyFloat && Number.isInteger(result)) {
    return floatReply(result, items.length);
  }
  return encode({ sum: result, count: items.length }, { useBigInt64: true });
}

// {"sum": sum, "count": count} with a float sum that has no fraction:
// @msgpack/msgpack would write 4.0 as the integer 4.
function floatReply(sum, count) {
  const parts = [
    Uint8Array.of(0x82),
    encode("sum"),
    encode(sum, { forceIntegerToFloat: true }),
    encode("count"),
    encode(count),
  ];
  const bytes = new Uint8Array(parts.reduce((length, part) => length + part.length, 0));
  let at = 0;
  for (const part of parts) {
    bytes.set(part, at);
    at += part.length;
  }
  return bytes;
}

// Whether the numbers' array, in a payload `numbers` accepted, holds a
// value sent as a float: @msgpack/msgpack decodes 2.0 as the number 2,
// and the sum must still be a float, as the Rust sum's is.
function holdsFloat(payload) {
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  let at = 0;
  // Bytes of a map or array header and of a string, by its first byte.
  const map = { 0xde: 3, 0xdf: 5 };
  const array = { 0xdc: 3, 0xdd: 5 };
  const str = { 0xd9: 2, 0xda: 3, 0xdb: 5 };
  let head = payload[at];
  if ((head & 0xf0) === 0x80 || head in map) {
    // {"numbers": [...]}: past the map's header and its one key.
    at += head in map ? map[head] : 1;
    head = payload[at];
    if ((head & 0xe0) === 0xa0) {
      at += 1 + (head & 0x1f);
    } else {
      const len = head === 0xd9 ? payload[at + 1] : head === 0xda ? view.getUint16(at + 1) : view.getUint32(at + 1);
      at += str[head] + len;
    }
    head = payload[at];
  }
  let count;
  if ((head & 0xf0) === 0x90) {
    count = head & 0x0f;
  } else {
    count = head === 0xdc ? view.getUint16(at + 1) : view.getUint32(at + 1);
  }
  at += head in array ? array[head] : 1;
  // Bytes of each integer encoding, by its first byte.
  const int = { 0xcc: 2, 0xd0: 2, 0xcd: 3, 0xd1: 3, 0xce: 5, 0xd2: 5, 0xcf: 9, 0xd3: 9 };
  for (let i = 0; i < count; i++) {
    head = payload[at];
    if (head === 0xca || head === 0xcb) {
      return true;
    }
    at += head < 0x80 || head >= 0xe0 ? 1 : int[head];
  }
  return false;
}

// Finds the list of numbers in either accepted shape.
function numbers(value) {
  if (Array.isArray(value)) {
    return value;
  }
  if (kind(value) === "a map") {
    for (const key of Object.keys(value)) {
      if (key !== "numbers") {
        throw `sum: expected ${EXPECTED}, got a map with the key "${key}"`;
      }
    }
    if (!("numbers" in value)) {
      throw `sum: expected ${EXPECTED}, got a map without "numbers"`;
    }
    if (!Array.isArray(value.numbers)) {
      throw `sum: expected ${EXPECTED}, got "numbers" holding ${kind(value.numbers)}`;
    }
    return value.numbers;
  }
  throw `sum: expected ${EXPECTED}, got ${kind(value)}`;
}

// Names a value's MessagePack type for error messages, with its article.
function kind(value) {
  if (value === null || value === undefined) return "nil";
  if (typeof value === "boolean") return "a boolean";
  if (typeof value === "bigint") return "an integer";
  if (typeof value === "number") return Number.isInteger(value) ? "an integer" : "a float";
  if (typeof value === "string") return "a string";
  if (value instanceof Uint8Array) return "binary data";
  if (Array.isArray(value)) return "an array";
  if (typeof value === "object") return "a map";
  return "an extension value";
}
