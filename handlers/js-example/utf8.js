// UTF-8 encoding and decoding, which QuickJS lacks (no TextEncoder or
// TextDecoder), for console.js and fetch.js: both are copied into a
// skeleton of `arrpc-host new --lang js`, which bundles no npm package.

// The UTF-8 bytes of `text`; a lone surrogate becomes U+FFFD, as
// TextEncoder makes it.
export function encode(text) {
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

// The text of UTF-8 `bytes`; each byte that is not part of a valid
// sequence becomes U+FFFD.
export function decode(bytes) {
  const points = [];
  for (let at = 0; at < bytes.length; ) {
    const b = bytes[at];
    const [size, min] = b < 0x80 ? [1, 0] : b >= 0xf0 && b < 0xf5 ? [4, 0x10000] : b >= 0xe0 ? [3, 0x800] : b >= 0xc2 ? [2, 0x80] : [0, 0];
    let c = size === 1 ? b : b & (0xff >> (size + 1));
    let valid = size > 0 && at + size <= bytes.length;
    for (let i = 1; valid && i < size; i++) {
      valid = (bytes[at + i] & 0xc0) === 0x80;
      c = (c << 6) | (bytes[at + i] & 63);
    }
    if (valid && c >= min && c <= 0x10ffff && !(c >= 0xd800 && c <= 0xdfff)) {
      points.push(c);
      at += size;
    } else {
      points.push(0xfffd);
      at += 1;
    }
  }
  // In slices: a call takes a bounded number of arguments.
  let text = "";
  for (let at = 0; at < points.length; at += 4096) {
    text += String.fromCodePoint(...points.slice(at, at + 4096));
  }
  return text;
}
