// Checks arrpc-codec against @msgpack/msgpack's defaults, for
// tests/codec.rs. argv[2]: the folder holding node_modules.
//
// stdin: lines `<msgpack hex> <JSON as hex of its UTF-8, or -> <floats hex,
// or ->`, what the host made of each value (`-`: not carried that way,
// which tests/codec.rs checks was right). JSON.parse of the host's text,
// and the Array arrpc.js makes of the floats, must each be deeply and
// strictly equal (Object.is for numbers) to what `decode` returns. stdout:
// `FAIL <why>` lines, then for every value whose JSON.stringify reads back
// as itself, `json <JSON.stringify hex> <encode hex>`, for the reverse.
import { createRequire } from "node:module";
import { deepStrictEqual } from "node:assert/strict";
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const require = createRequire(pathToFileURL(process.argv[2] + "/"));
const { decode, encode } = await import(pathToFileURL(require.resolve("@msgpack/msgpack")));

const hex = (bytes) => Buffer.from(bytes).toString("hex");
const faithful = (value) => {
  const text = JSON.stringify(value);
  if (text === undefined) return false;
  try {
    deepStrictEqual(JSON.parse(text), value);
    return true;
  } catch {
    return false;
  }
};

const out = [];
for (const line of readFileSync(0, "utf8").split("\n")) {
  if (!line) continue;
  const [packedHex, jsonHex, floatsHex] = line.split(" ");
  let expected;
  try {
    expected = decode(Buffer.from(packedHex, "hex"));
  } catch (e) {
    if (jsonHex !== "-" || floatsHex !== "-") out.push(`FAIL ${packedHex}: decode refuses it (${e.message}) but the host transcoded it`);
    continue;
  }
  if (floatsHex !== "-") {
    const floats = Buffer.from(floatsHex, "hex");
    // As arrpc.js does it, from a buffer of its own.
    const bytes = new Uint8Array(floats);
    const got = Array.prototype.slice.call(new Float64Array(bytes.buffer, 0, bytes.length / 8));
    try {
      deepStrictEqual(got, expected);
    } catch {
      out.push(`FAIL ${packedHex}: the floats give ${got}, decode ${expected}`);
    }
  }
  if (jsonHex === "-") {
    if (faithful(expected)) out.push(`json ${hex(Buffer.from(JSON.stringify(expected)))} ${hex(encode(expected))}`);
    continue;
  }
  const got = JSON.parse(Buffer.from(jsonHex, "hex").toString("utf8"));
  try {
    deepStrictEqual(got, expected);
  } catch {
    out.push(`FAIL ${packedHex}: JSON gives ${JSON.stringify(got)}, decode ${JSON.stringify(expected)}`);
    continue;
  }
  if (faithful(expected)) out.push(`json ${hex(Buffer.from(JSON.stringify(expected)))} ${hex(encode(expected))}`);
}
for (const value of [0.1, -0, 1e21, 2 ** 53, -(2 ** 53), 5e-324, 1.7976931348623157e308, [1, [2, [3]]], { b: 1, a: { "": null } }, "😀\u0000\"\\", [undefined, null]]) {
  const text = JSON.stringify(value);
  out.push(`json ${hex(Buffer.from(text))} ${hex(encode(JSON.parse(text)))}`);
}
console.log(out.join("\n"));
