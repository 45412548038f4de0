// An arrpc-host handler in JavaScript: echo, sum and caller, chosen by the
// served name.
//
// componentize-qjs turns this module (bundled with its npm dependencies by
// build.mjs) into a WebAssembly component, run by QuickJS, implementing the
// `handler` world of wit/handler.wit. A name ending in "echo" returns the
// payload unchanged; one ending in "sum" adds up numbers with the same
// input, output and error texts as the Rust `sum` handler; one ending in
// "caller" replies with who called, as the host verified it. A thrown
// string becomes the `err` the client receives.

import "./text-encoding.js";
import "./console.js";
import { decode, encode } from "@msgpack/msgpack";

const EXPECTED = 'an array of numbers or {"numbers": [...]}';

export function handle(ctx, payload) {
  if (ctx.handler.endsWith("echo")) {
    return payload;
  }
  if (ctx.handler.endsWith("sum")) {
    return sum(payload);
  }
  if (ctx.handler.endsWith("caller")) {
    return whoCalled(ctx.caller);
  }
  // console output goes to the host's log, tagged with handler and request id.
  console.error(`no operation for the name ${ctx.handler}`);
  throw `${ctx.handler}: serve this component under a name ending in echo, sum or caller`;
}

// The caller's SPIFFE ID and DNS names; nil when the host verified no client
// certificate (plain TCP, or TLS without one). A WIT `option` is the value
// or `null`; record fields are camelCase; an empty spiffeId means the
// certificate carries none.
function whoCalled(caller) {
  if (caller === null) {
    return encode(null);
  }
  return encode({ spiffe_id: caller.spiffeId || null, dns_names: caller.dnsNames });
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
      // Small integers may decode as number; a float has a fraction or came as one.
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
  let result;
  if (anyFloat) {
    result = total;
  } else if (exact >= -(2n ** 63n) && exact < 2n ** 64n) {
    result = exact >= -(2n ** 31n) && exact < 2n ** 31n ? Number(exact) : exact;
  } else {
    throw "sum: integer overflow";
  }
  return encode({ sum: result, count: items.length }, { useBigInt64: true });
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
