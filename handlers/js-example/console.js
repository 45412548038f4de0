// `console`, which QuickJS lacks: log, info and debug write a line to
// stdout, warn and error to stderr, and the host logs each line, tagged
// with the handler and the request. Built against wit/js-handler.wit,
// which imports the two streams.
import stdout from "wasi:cli/stdout@0.2.12";
import stderr from "wasi:cli/stderr@0.2.12";

// WASI's blocking-write-and-flush takes at most 4096 bytes a call.
const CHUNK = 4096;

// UTF-8 bytes of `text` (QuickJS has no TextEncoder); a lone surrogate
// becomes U+FFFD, as TextEncoder makes it.
function utf8(text) {
  const bytes = [];
  for (const char of text) {
    let c = char.codePointAt(0);
    if (c >= 0xd800 && c <= 0xdfff) c = 0xfffd;
    if (c < 0x80) {
      bytes.push(c);
    } else if (c < 0x800) {
      bytes.push(0xc0 | (c >> 6), 0x80 | (c & 63));
    } else if (c < 0x10000) {
      bytes.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    } else {
      bytes.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    }
  }
  return new Uint8Array(bytes);
}

function printer(open) {
  return (...args) => {
    const bytes = utf8(args.map((a) => (typeof a === "string" ? a : String(a))).join(" ") + "\n");
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
