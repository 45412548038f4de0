// An arrpc-host handler in JavaScript: echo, identity, sum, caller, relay,
// fetch, count and session, chosen by the served name.
//
// componentize-qjs turns this module (bundled with its npm dependencies by
// build.mjs) into a WebAssembly component, run by QuickJS, implementing the
// `interpreted-handler` world of wit/ (the handler world with `codec`).
// Every operation but echo takes the message as JavaScript values and
// returns values, through arrpc.js. A name ending in "echo" returns the
// payload's bytes without decoding them, one ending in "identity" the
// message as the values it decoded to; one ending in "sum" adds up numbers
// with the Rust `sum` handler's error texts; one ending in "caller"
// replies with who called, as the host verified it, asked of the host
// through the imported `client` interface; one ending in "relay" calls
// another arrpc service through the imported `upstream` interface; one
// ending in "fetch" makes an HTTP request with fetch.js. Two keep state in
// the key-value stores the handler's `stores` lists (wasi:keyvalue),
// through the Map-like Store of store.js: one ending in "count" increments
// a counter, one ending in "session" reads and merges a session's fields.
// A thrown string becomes the `err` the client receives.

import { Raw, decode, encode, reply } from "./arrpc.js";
import client from "arrpc:handler/client@0.3.0";
import upstream from "arrpc:handler/upstream@0.3.0";
import { fetch } from "./fetch.js";
import { Store, StoreError } from "./store.js";

const EXPECTED = 'an array of numbers or {"numbers": [...]}';

// Integers encoded in 64 bits decode as bigints, so sums and counters stay
// exact past 2^53.
const EXACT = { useBigInt64: true };

export function handle(ctx, payload) {
  // Echo works on the bytes: nothing to decode, nothing to encode.
  if (ctx.handler.endsWith("echo")) {
    return payload;
  }
  for (const [suffix, operation] of OPERATIONS) {
    if (ctx.handler.endsWith(suffix)) {
      return reply(operation, ctx, payload, EXACT);
    }
  }
  // console output goes to the host's log, tagged with handler and request id.
  console.error(`no operation for the name ${ctx.handler}`);
  throw `${ctx.handler}: serve this component under a name ending in echo, identity, sum, caller, relay, fetch, count or session`;
}

// The message back, as the values it decoded to: what echo does, through
// the object API (decoded, then encoded again).
function identity(message) {
  return message;
}

// Calls `method` of the upstream the message names, {"upstream": name,
// "method": name, "params": value}, and replies with its result as the
// upstream sent it. The host allows only the upstreams this handler's
// `upstreams` lists. A failed call throws an Error whose `payload` is the
// `call-error`, `{ tag, val }`, which says whether the call may have run;
// the reply is then `relay: <tag>: <text>`.
function relay(request) {
  if (kind(request) !== "a map" || typeof request.upstream !== "string" || typeof request.method !== "string") {
    throw 'relay: expected {"upstream": name, "method": name, "params": value}';
  }
  try {
    return new Raw(upstream.call(request.upstream, request.method, encode(request.params ?? null, EXACT)));
  } catch (error) {
    const { tag, val } = error.payload;
    throw val === undefined ? `relay: ${tag}` : `relay: ${tag}: ${val}`;
  }
}

// Makes the HTTP request the message describes, {"url": "http://...",
// "method"?: name, "headers"?: {name: value}, "body"?: bytes or text}, and
// replies with {"status": n, "headers": {name: value}, "body": bytes}. The
// host allows only what this handler's `allowed_outbound_hosts` lists; a
// request that gets no response replies `fetch: <why>`, the wasi:http
// error code's case when the host gave one (`fetch: HttpRequestDenied`).
function fetchOperation(request) {
  if (kind(request) !== "a map" || typeof request.url !== "string") {
    throw 'fetch: expected {"url": "http://...", "method"?: name, "headers"?: {name: value}, "body"?: bytes}';
  }
  let response;
  try {
    response = fetch(request.url, { method: request.method, headers: request.headers, body: request.body });
  } catch (error) {
    throw `fetch: ${error.cause ?? error.message}`;
  }
  return {
    status: response.status,
    headers: Object.fromEntries(response.headers),
    body: response.bytes(),
  };
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
function count(message) {
  const request = kind(message) === "a map" ? message : undefined;
  let by = request?.by === undefined ? 1 : request.by;
  // Decoded as a bigint past 32 bits. The bindings pass the 64-bit delta
  // as a number, exact up to 2^53: a larger one is refused below.
  if (typeof by === "bigint") by = Number(by);
  if (typeof request?.store !== "string" || typeof request.key !== "string" || !Number.isSafeInteger(by)) {
    throw 'count: expected {"store": name, "key": text, "by": integer}';
  }
  return withStore("count", request.store, (counts) => counts.increment(request.key, by));
}

// A session's fields, a map kept as MessagePack under `session:<id>` in the
// store the message names, {"store": name, "id": text, "set": map}. With
// `set`, merges those fields into the stored ones and replies with the
// result; without, replies with what is stored (an empty map for a new
// session). The merge is a compare-and-swap, so two messages setting
// different fields of one session at once both land.
function session(message) {
  const request = kind(message) === "a map" ? message : undefined;
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
      value = decode(stored, EXACT);
    } catch {
      // Not MessagePack: named below.
    }
    if (kind(value) !== "a map") throw `session: ${key} holds no MessagePack map`;
    return value;
  };
  return withStore("session", request.store, (sessions) => {
    if (request.set === undefined) {
      return fields(sessions.get(key));
    }
    return new Raw(sessions.update(key, (stored) => encode({ ...fields(stored), ...request.set }, EXACT)));
  });
}

// The caller's SPIFFE ID (nil when the certificate carries none) and DNS
// names; nil when the host verified no client certificate (plain TCP, or TLS
// without one). A WIT `option` is the value or `null`; record fields are
// camelCase.
function whoCalled() {
  const caller = client.caller();
  if (caller === null) {
    return null;
  }
  return { spiffe_id: caller.spiffeId, dns_names: caller.dnsNames };
}

// One step of the sum.
const add = (total, item) => total + item;

// {"sum": total, "count": n} of an array of numbers, or of {"numbers":
// [...]}. Integers add exactly, as bigints past 2^53; any fraction makes
// the sum a float. JavaScript has one number type, so a float without a
// fraction (2.0) counts as an integer, as @msgpack/msgpack decodes it.
function sum(message) {
  const items = numbers(message);
  let total;
  try {
    // `+` alone, with QuickJS's `reduce` walking the array in C (a loop
    // in the interpreter takes half as long again): what is not a number
    // shows after it, bar null and booleans, which `includes` finds in C.
    total = items.reduce(add, 0);
  } catch {
    // A bigint beside a number.
    return exactSum(items);
  }
  if (typeof total !== "number" || items.includes(null) || items.includes(true) || items.includes(false)) {
    return exactSum(items);
  }
  // Integers add exactly as floats while every running total stays within
  // 2^53, which is sure when the largest times the count does; else (a
  // running total or the sum past it) they are added again, exactly.
  if (Number.isInteger(total) && !(largest(items) * items.length <= Number.MAX_SAFE_INTEGER)) {
    return exactSum(items);
  }
  return { sum: total, count: items.length };
}

// QuickJS passes a call at most 65,535 arguments.
const MAX_ARGUMENTS = 65535;

// The largest magnitude among numbers, found in C by Math.max and Math.min,
// a slice at a time.
function largest(items) {
  let top = 0;
  for (let i = 0; i < items.length; i += MAX_ARGUMENTS) {
    const part = items.length <= MAX_ARGUMENTS ? items : items.slice(i, i + MAX_ARGUMENTS);
    // `apply` copies a plain array's items in C; a spread would iterate.
    top = Math.max(top, Math.max.apply(null, part), -Math.min.apply(null, part));
  }
  return top;
}

// The sum item by item: integers, some of them bigints or past 2^53, as
// a bigint; a float among them makes it a float. The first item that is
// not a number is named.
function exactSum(items) {
  let exact = 0n;
  let float = false;
  for (let i = 0; i < items.length; i++) {
    const item = items[i];
    if (typeof item === "bigint") {
      exact += item;
    } else if (typeof item === "number") {
      if (Number.isInteger(item)) exact += BigInt(item);
      else float = true;
    } else {
      throw `sum: expected ${EXPECTED}, got ${kind(item)} at index ${i}`;
    }
  }
  if (float) return { sum: items.reduce((total, x) => total + Number(x), 0), count: items.length };
  if (exact < -(2n ** 63n) || exact >= 2n ** 64n) throw "sum: integer overflow";
  return { sum: Number.isSafeInteger(Number(exact)) ? Number(exact) : exact, count: items.length };
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

const OPERATIONS = [
  ["identity", identity],
  ["sum", sum],
  ["caller", whoCalled],
  ["relay", relay],
  ["fetch", fetchOperation],
  ["count", count],
  ["session", session],
];
