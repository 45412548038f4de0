// Objects in, objects out: an arrpc-host handler written as
// `handle(message, ctx)`, taking and returning JavaScript values.
//
//   import { serve } from "./arrpc.js";
//   export const handle = serve((message, ctx) => ({ count: message.length }));
//
// The host turns each message from MessagePack into JSON natively
// (`arrpc:handler/codec`), and QuickJS's `JSON.parse` makes the values in
// C; an array of numbers comes as 64-bit floats instead
// (`arrpc:handler/numbers`), which become an Array without text to parse.
// A reply of plain values goes back as JSON. The values are
// `@msgpack/msgpack`'s, as its `decode` and `encode` give and take them by
// default (docs/handlers.md has the table). What JSON cannot carry goes
// through `@msgpack/msgpack` itself instead, with the same result, slower:
// a message holding bin, an ext, a map key that is not a string, an
// integer beyond 2^53 - 1, NaN or an infinity, and a reply holding a
// Uint8Array, a bigint, a Map, a Date, NaN, undefined in an object, or any
// object that is not a plain one.
//
// `serve(handle, options)` passes `options` to `@msgpack/msgpack`'s decode
// and encode, for the messages that go through it: `{ useBigInt64: true }`
// makes integers encoded in 64 bits bigints, and through JSON, integers up
// to 2^53 - 1 are numbers all the same. A thrown string replies with that
// error text; any other thrown value replies with its message, and goes to
// the host's log. Return `new Raw(bytes)` to reply with MessagePack bytes
// as they are.

// TextEncoder and TextDecoder for @msgpack/msgpack, then console for the
// log: QuickJS has neither.
import "./text-encoding.js";
import "./console.js";
import codec from "arrpc:handler/codec@0.3.0";
import numbersCodec from "arrpc:handler/numbers@0.3.0";
import { decode as unpack, encode as pack } from "@msgpack/msgpack";

// Deeper than this a reply is left to @msgpack/msgpack, which refuses it:
// the host reads no deeper either.
const MAX_DEPTH = 512;

// A reply already encoded: exactly one MessagePack value, sent as it is.
export class Raw {
  constructor(bytes) {
    this.bytes = bytes;
  }
}

// A codec call's error comes as a thrown Error whose `payload` is the text.
function codecCall(operation, value) {
  try {
    return operation(value);
  } catch (error) {
    throw new Error(`invalid MessagePack: ${error?.payload ?? error}`);
  }
}

// One MessagePack value as JavaScript values, as @msgpack/msgpack's
// `decode(payload, options)` returns them.
export function decode(payload, options) {
  if (startsArray(payload)) {
    const floats = numbersCodec.msgpackToNumbers(payload);
    if (floats != null) return numbers(floats);
  }
  const json = codecCall(codec.msgpackToJson, payload);
  return json == null ? unpack(payload, options) : JSON.parse(json);
}

// Whether the payload starts with an array's header: fixarray, array 16
// or array 32. Only then can it be an array of numbers.
function startsArray(payload) {
  const marker = payload[0];
  return (marker & 0xf0) === 0x90 || marker === 0xdc || marker === 0xdd;
}

// QuickJS passes a call at most 65,535 arguments.
const MAX_ARGUMENTS = 65535;

// The arguments of a call, as an Array: QuickJS makes a rest parameter's
// Array from the argument list in one step, in C.
const gather = (...items) => items;

// An Array of the numbers in `floats` (little-endian 64-bit floats). Up to
// 65,535, `apply` reads them from a Float64Array and `gather` makes the
// Array, both in C: far less work than JSON.parse reading the same numbers
// as text, and less than `slice`, which (for more than that) copies them
// one property at a time.
function numbers(floats) {
  // The bindings' Uint8Array owns its buffer from offset 0; were it ever
  // not 8-byte aligned, a copy is.
  const bytes = floats.byteOffset % 8 === 0 ? floats : floats.slice();
  const items = new Float64Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 8);
  return items.length <= MAX_ARGUMENTS ? gather.apply(null, items) : Array.prototype.slice.call(items);
}

// `value` as MessagePack, as @msgpack/msgpack's `encode(value, options)`
// writes it.
export function encode(value, options) {
  if (value instanceof Raw) return value.bytes;
  if (plain(value, 0)) return codecCall(codec.jsonToMsgpack, JSON.stringify(value));
  return pack(value, options);
}

// Whether JSON.stringify writes `value` as @msgpack/msgpack's encode would:
// finite numbers, strings, booleans, null, arrays and plain objects of
// those (undefined only in arrays, where both write nil).
function plain(value, depth) {
  switch (typeof value) {
    case "number":
      return Number.isFinite(value);
    case "string":
    case "boolean":
      return true;
    case "object": {
      if (value === null) return true;
      if (depth === MAX_DEPTH) return false;
      if (Array.isArray(value)) {
        for (let i = 0, n = value.length; i < n; i++) {
          const item = value[i];
          // Scalars are checked here: a call per item would cost more
          // than the rest of the walk.
          switch (typeof item) {
            case "number":
              // NaN or an infinity, which JSON would write as null.
              if (item - item !== 0) return false;
              break;
            case "string":
            case "boolean":
            case "undefined":
              break;
            default:
              if (item !== null && !plain(item, depth + 1)) return false;
          }
        }
        return true;
      }
      const proto = Object.getPrototypeOf(value);
      if ((proto !== Object.prototype && proto !== null) || typeof value.toJSON === "function") return false;
      for (const key in value) {
        const item = value[key];
        if (item === undefined || !plain(item, depth + 1)) return false;
      }
      return true;
    }
    default:
      return false;
  }
}

// Runs `handle` on the decoded message and encodes what it returns.
export function reply(handle, ctx, payload, options) {
  try {
    return encode(handle(decode(payload, options), ctx), options);
  } catch (error) {
    if (typeof error === "string") throw error;
    console.error(error?.stack ?? String(error));
    throw error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  }
}

// The `handle` export the handler world wants, calling `handle(message,
// ctx)` for each message.
export function serve(handle, options) {
  return (ctx, payload) => reply(handle, ctx, payload, options);
}
