// `fetch`, which QuickJS lacks, over the host's wasi:http, for the hosts a
// handler's `allowed_outbound_hosts` lists: `fetch(url, { method, headers,
// body })` takes the web's arguments and gives a Response with `status`,
// `ok`, `url`, `headers.get(name)`, `text()`, `json()`, `arrayBuffer()` and
// `bytes()`.
//
// Unlike the web's, it is synchronous: fetch returns the Response and its
// methods their values, not promises. `handle` is a synchronous export (the
// host runs components without the component-model async ABI) and nothing
// settles a promise while it runs, so code written for the web's fetch
// drops its `await`s. A request that gets no response throws a TypeError,
// as the web's fetch rejects with one, saying why in wasi:http's words
// (`HttpRequestDenied`, `ConnectionRefused`, ...).
//
// The request goes through `arrpc:fetch/http` (handlers/js-fetch), which
// build.sh composes into the component: componentize-qjs cannot build one
// that imports wasi:http itself.
import http from "arrpc:fetch/http@0.1.0";
import { decode, encode } from "./utf8.js";

// A header list whose names are case-insensitive, as the web's Headers.
export class Headers {
  #values = new Map();

  // `init`: another Headers, [name, value] pairs, or an object.
  constructor(init) {
    if (init === undefined || init === null) return;
    const pairs = init instanceof Headers || Array.isArray(init) ? init : Object.entries(init);
    for (const [name, value] of pairs) this.append(name, value);
  }

  append(name, value) {
    const key = String(name).toLowerCase();
    this.#values.set(key, [...(this.#values.get(key) ?? []), String(value)]);
  }

  // A header's values joined with ", ", or null.
  get(name) {
    return this.#values.get(String(name).toLowerCase())?.join(", ") ?? null;
  }

  has(name) {
    return this.#values.has(String(name).toLowerCase());
  }

  // [name, value] pairs by name, as the web's Headers iterates.
  *entries() {
    for (const name of [...this.#values.keys()].sort()) yield [name, this.get(name)];
  }

  forEach(callback) {
    for (const [name, value] of this.entries()) callback(value, name, this);
  }

  [Symbol.iterator]() {
    return this.entries();
  }
}

// A received response, its body read whole.
export class Response {
  #body;

  constructor(body, { status, headers, url }) {
    this.#body = body;
    this.status = status;
    this.ok = status >= 200 && status <= 299;
    this.headers = headers;
    this.url = url;
  }

  bytes() {
    return this.#body.slice();
  }

  arrayBuffer() {
    return this.bytes().buffer;
  }

  text() {
    return decode(this.#body);
  }

  json() {
    return JSON.parse(this.text());
  }
}

export function fetch(resource, init = {}) {
  const url = String(resource);
  const method = String(init.method ?? "GET").toUpperCase();
  const body = init.body === undefined || init.body === null ? new Uint8Array() : bytesOf(init.body);
  if (body.length > 0 && (method === "GET" || method === "HEAD")) {
    throw new TypeError(`fetch: a ${method} request cannot have a body`);
  }
  const headers = [...new Headers(init.headers)].map(([name, value]) => [name, encode(value)]);
  let response;
  try {
    response = http.send({ method, url, headers, body });
  } catch (error) {
    // An import's error is thrown as an Error holding it as `payload`,
    // kept as the cause: the wasi:http error code's case.
    throw new TypeError(`fetch ${url}: ${error.payload}`, { cause: error.payload });
  }
  return new Response(response.body, {
    status: response.status,
    headers: new Headers(response.headers.map(([name, value]) => [name, decode(value)])),
    url,
  });
}

// The bytes of a request body: a string (sent as UTF-8), a typed array or
// an ArrayBuffer.
function bytesOf(body) {
  if (typeof body === "string") return encode(body);
  if (body instanceof ArrayBuffer) return new Uint8Array(body);
  if (ArrayBuffer.isView(body)) return new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
  throw new TypeError("fetch: a body is a string, a typed array or an ArrayBuffer");
}
