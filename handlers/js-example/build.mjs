// Builds js-example.wasm: bundles handler.js with its npm dependencies
// (componentize-js resolves relative imports only), then componentizes it.
//   usage: npm install && node build.mjs
import { build } from "esbuild";
import { componentize } from "@bytecodealliance/componentize-js";
import { writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";

const here = (path) => fileURLToPath(new URL(path, import.meta.url));

await build({
  entryPoints: [here("handler.js")],
  bundle: true,
  format: "esm",
  platform: "neutral",
  mainFields: ["module", "main"],
  outfile: here("dist/handler.js"),
  logLevel: "warning",
});

const { component } = await componentize({
  sourcePath: here("dist/handler.js"),
  witPath: here("../../wit"),
  worldName: "handler",
  // The host links WASI p2 only: leave out the wasi:http imports.
  disableFeatures: ["http", "fetch-event"],
});
await writeFile(here("js-example.wasm"), component);
