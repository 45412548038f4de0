#!/bin/sh
# Builds js-example.wasm: installs the locked npm dependencies when missing,
# then runs build.mjs (esbuild bundle, then componentize-qjs).
#   usage: sh handlers/js-example/build.sh
set -eu
cd "$(dirname "$0")"
if [ ! -d node_modules/componentize-qjs ]; then
    npm ci --no-audit --no-fund --loglevel=error
fi
node build.mjs
