// Validates the custom resources among the JSON array in argv[3] against
// their published schemas, as the npm packages @kubernetes-models/cert-manager
// and @kubernetes-models/prometheus-operator (installed in the node_modules
// folder argv[2]) carry them: cert-manager's Issuers and Certificates, the
// Prometheus Operator's PodMonitors and PrometheusRules. Built-in kinds are
// skipped. Prints one line per object; exits 1 if any is invalid or of a
// kind no package knows.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [modules, manifests] = process.argv.slice(2);
const load = (path) => import(pathToFileURL(join(modules, path)));
const groups = {
  "cert-manager.io/v1": await load("@kubernetes-models/cert-manager/cert-manager.io/v1/index.js"),
  "monitoring.coreos.com/v1": await load(
    "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/index.js",
  ),
};
const custom = (apiVersion) =>
  ["cert-manager.io/", "monitoring.coreos.com/"].some((g) => String(apiVersion).startsWith(g));
let failed = false;
for (const object of JSON.parse(readFileSync(manifests, "utf8"))) {
  if (!custom(object.apiVersion)) continue;
  const name = `${object.kind} ${object.metadata?.name}`;
  const Model = groups[object.apiVersion]?.[object.kind];
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
