// Builds {{name}}.wasm from handler.js with componentize-qjs (QuickJS).
import { componentize } from "componentize-qjs";
import { readFile, writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";

const here = (path) => fileURLToPath(new URL(path, import.meta.url));

const { component } = await componentize({
  witPath: here("wit"),
  world: "handler",
  jsSource: await readFile(here("handler.js"), "utf8"),
  jsPath: here("handler.js"),
  // npm packages' ES modules are found under node_modules here.
  moduleRoot: here("."),
  // The host runs components without the component-model async ABI.
  sync: true,
});
await writeFile(here("{{name}}.wasm"), component);
