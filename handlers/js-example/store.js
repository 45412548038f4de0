// A Map-like view of one wasi:keyvalue store, over componentize-qjs's
// bindings:
//
//   const counts = new Store("counts");   // the store's name in arrpc.toml
//   try {
//     counts.set("greeting", bytes);       // values are Uint8Arrays
//     counts.get("greeting");              // the bytes; undefined when missing
//     counts.has("greeting");              // true
//     counts.delete("greeting");           // a missing key is no error
//     [...counts.keys()];                  // every key, page after page
//     counts.increment("visits", 5);       // atomic; the new value, a number
//     counts.update("doc", change);        // read, change, write, atomically
//   } finally {
//     counts.close();                      // gives the handle back to the host
//   }
//
// The host lets a handler open only the stores its `stores` lists. Every
// failure of the store throws a StoreError, whose message is the WIT
// error's case: `no-such-store`, `access-denied` or `other: <why>`.

import store from "wasi:keyvalue/store@0.2.0-draft2";
import atomics from "wasi:keyvalue/atomics@0.2.0-draft2";

// A store operation failed. `error` is the WIT `error`, `{ tag, val }`.
export class StoreError extends Error {
  constructor(error) {
    super(error.tag === "other" ? `other: ${error.val}` : error.tag);
    this.name = "StoreError";
    this.error = error;
  }
}

// Runs one call of the bindings. A WIT `result`'s error comes as a thrown
// Error whose `payload` is the error value; that becomes a StoreError.
function call(operation) {
  try {
    return operation();
  } catch (error) {
    if (error?.payload?.tag === undefined) throw error;
    throw new StoreError(error.payload);
  }
}

export class Store {
  #bucket;

  constructor(name) {
    this.name = name;
    this.#bucket = call(() => store.open(name));
  }

  // The value under `key`, a Uint8Array, or undefined when there is none.
  get(key) {
    return call(() => this.#bucket.get(key)) ?? undefined;
  }

  set(key, value) {
    call(() => this.#bucket.set(key, value));
    return this;
  }

  // Unlike Map's, returns nothing: the store's delete does not say whether
  // the key was there, and asking first would be a second call another
  // writer can race.
  delete(key) {
    call(() => this.#bucket.delete(key));
  }

  has(key) {
    return call(() => this.#bucket.exists(key));
  }

  // Every key, in no promised order, fetching one page at a time.
  *keys() {
    let cursor = null;
    do {
      const page = call(() => this.#bucket.listKeys(cursor));
      yield* page.keys;
      cursor = page.cursor;
    } while (cursor !== null);
  }

  [Symbol.iterator]() {
    return this.keys();
  }

  // Adds `by` to the integer under `key` (a missing key counts as 0) in one
  // step however many handlers do the same, and returns the sum. The value
  // is stored as its decimal text: `get` returns the bytes of "3". The
  // bindings carry the 64-bit integers as numbers, exact up to 2^53.
  increment(key, by = 1) {
    return call(() => atomics.increment(this.#bucket, key, by));
  }

  // Replaces the value under `key` with `change(value)` (undefined when
  // missing) and returns what was written. Compare-and-swap: when another
  // writer changed the key in between, `change` runs again on its value,
  // so no write is lost.
  update(key, change) {
    let cas = call(() => atomics.Cas.new(this.#bucket, key));
    for (;;) {
      const value = change(call(() => cas.current()) ?? undefined);
      try {
        // swap takes the handle, whether it succeeds or not.
        atomics.swap(cas, value);
        return value;
      } catch (error) {
        if (error?.payload?.tag !== "cas-failed") {
          throw error?.payload?.tag === "store-error" ? new StoreError(error.payload.val) : error;
        }
        cas = error.payload.val;
      }
    }
  }

  // Gives the store's handle back to the host.
  close() {
    this.#bucket[Symbol.dispose]();
  }
}
