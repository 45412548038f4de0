// Builds dist/handler.wasm: bundles handler.js with its npm dependencies,
// then componentizes the bundle with componentize-qjs (QuickJS). build.sh
// composes it with js-fetch into js-example.wasm.
//   usage: npm ci && node build.mjs
import { build } from "esbuild";
import { componentize } from "componentize-qjs";
import { readFile, writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";

const here = (path) => fileURLToPath(new URL(path, import.meta.url));
const bundle = here("dist/handler.js");

await build({
  entryPoints: [here("handler.js")],
  bundle: true,
  format: "esm",
  platform: "neutral",
  mainFields: ["module", "main"],
  // fast-text-encoding installs itself on `global`, which QuickJS lacks.
  define: { global: "globalThis" },
  // WIT imports (console.js's wasi:cli streams, the handler world's
  // arrpc:handler/client and upstream, store.js's wasi:keyvalue, fetch.js's
  // arrpc:fetch/http) are bound by componentize-qjs.
  external: ["wasi:*", "arrpc:*"],
  outfile: bundle,
  logLevel: "warning",
});

const { component } = await componentize({
  witPath: here("wit"),
  world: "example",
  jsSource: await readFile(bundle, "utf8"),
  jsPath: bundle,
  // The host runs components without the component-model async ABI.
  sync: true,
});
await writeFile(here("dist/handler.wasm"), component);
