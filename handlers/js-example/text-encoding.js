// TextEncoder and TextDecoder, which QuickJS lacks and @msgpack/msgpack uses
// for strings past a few dozen bytes. Imported before it.
import "fast-text-encoding";

// fast-text-encoding has no encodeInto; @msgpack/msgpack writes long
// strings with it.
if (!TextEncoder.prototype.encodeInto) {
  TextEncoder.prototype.encodeInto = function (source, destination) {
    const bytes = this.encode(source);
    destination.set(bytes);
    return { read: source.length, written: bytes.length };
  };
}
