// `console`, which QuickJS lacks: log, info and debug write a line to
// stdout, warn and error to stderr, and the host logs each line, tagged
// with the handler and the request. Built against wit/js-handler.wit,
// which imports the two streams.
import stdout from "wasi:cli/stdout@0.2.12";
import stderr from "wasi:cli/stderr@0.2.12";
import { encode } from "./utf8.js";

// WASI's blocking-write-and-flush takes at most 4096 bytes a call.
const CHUNK = 4096;

function printer(open) {
  return (...args) => {
    const bytes = encode(args.map((a) => (typeof a === "string" ? a : String(a))).join(" ") + "\n");
    // A stream is opened per line: one opened while the component was
    // built would not exist when it runs.
    const stream = open();
    try {
      for (let at = 0; at < bytes.length; at += CHUNK) {
        stream.blockingWriteAndFlush(bytes.subarray(at, at + CHUNK));
      }
    } finally {
      stream[Symbol.dispose]();
    }
  };
}

if (globalThis.console === undefined) {
  const out = printer(() => stdout.getStdout());
  const err = printer(() => stderr.getStderr());
  globalThis.console = { log: out, info: out, debug: out, warn: err, error: err };
}
