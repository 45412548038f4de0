// Builds {{name}}.wasm from handler.js.
import { componentize } from "@bytecodealliance/componentize-js";
import { writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";

const here = (path) => fileURLToPath(new URL(path, import.meta.url));

const { component } = await componentize({
  sourcePath: here("handler.js"),
  witPath: here("wit"),
  worldName: "handler",
  // The host links WASI p2 only: leave out the wasi:http imports.
  disableFeatures: ["http", "fetch-event"],
});
await writeFile(here("{{name}}.wasm"), component);
