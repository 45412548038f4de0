#!/bin/sh
# Builds {{name}}.wasm (installs componentize-qjs, esbuild and the npm
# packages arrpc.js uses with npm on first use).
set -eu
cd "$(dirname "$0")"
{{toolchains}}
need node
need npm
if [ ! -d node_modules/componentize-qjs ]; then
    npm install --no-audit --no-fund --loglevel=error
fi
node build.mjs
