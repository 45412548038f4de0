// Builds {{name}}.wasm: bundles handler.js with its npm packages (esbuild),
// then componentizes the bundle with componentize-qjs (QuickJS).
import { build } from "esbuild";
import { componentize } from "componentize-qjs";
import { readFile, writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";

const here = (path) => fileURLToPath(new URL(path, import.meta.url));
const bundle = here("node_modules/.bundle/handler.js");

await build({
  entryPoints: [here("handler.js")],
  bundle: true,
  format: "esm",
  platform: "neutral",
  mainFields: ["module", "main"],
  // fast-text-encoding installs itself on `global`, which QuickJS lacks.
  define: { global: "globalThis" },
  // WIT imports are bound by componentize-qjs.
  external: ["wasi:*", "arrpc:*"],
  outfile: bundle,
  logLevel: "warning",
});

const { component } = await componentize({
  witPath: here("wit"),
  world: "handler",
  jsSource: await readFile(bundle, "utf8"),
  jsPath: bundle,
  // The host runs components without the component-model async ABI.
  sync: true,
});
await writeFile(here("{{name}}.wasm"), component);
