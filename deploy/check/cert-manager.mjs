// Validates the cert-manager objects among the JSON array in argv[3]
// against cert-manager's published schemas, as carried by the npm package
// @kubernetes-models/cert-manager installed in the node_modules folder
// argv[2]. Prints one line per object; exits 1 if any is invalid or of a
// kind the package does not know.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [modules, manifests] = process.argv.slice(2);
const models = await import(
  pathToFileURL(join(modules, "@kubernetes-models/cert-manager/cert-manager.io/v1/index.js"))
);
let failed = false;
for (const object of JSON.parse(readFileSync(manifests, "utf8"))) {
  if (!String(object.apiVersion).startsWith("cert-manager.io/")) continue;
  const name = `${object.kind} ${object.metadata?.name}`;
  const Model = object.apiVersion === "cert-manager.io/v1" ? models[object.kind] : undefined;
  if (typeof Model !== "function") {
    console.log(`unknown: ${name} (${object.apiVersion})`);
    failed = true;
    continue;
  }
  try {
    new Model(object).validate();
    console.log(`valid: ${name}`);
  } catch (e) {
    console.log(`invalid: ${name}: ${e.message}`);
    failed = true;
  }
}
process.exit(failed ? 1 : 0);
