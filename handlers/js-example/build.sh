#!/bin/sh
# Builds js-example.wasm: installs the locked npm dependencies when missing,
# runs build.mjs (esbuild bundle, then componentize-qjs) and composes the
# result with the js-fetch component (handlers/js-fetch, Rust), which gives
# fetch.js its HTTP requests, using wasm-tools.
#   usage: sh handlers/js-example/build.sh
set -eu
cd "$(dirname "$0")"
# The tools handlers/install-toolchains.sh installed come first.
PATH="$PWD/../.toolchains/venv/bin:$PATH"
if [ ! -d node_modules/componentize-qjs ]; then
    npm ci --no-audit --no-fund --loglevel=error
fi
node build.mjs
sh ../build.sh js-fetch >/dev/null
# compose names a definition after its file, which must be kebab-case.
cp ../target/wasm32-wasip2/release/js_fetch.wasm dist/js-fetch.wasm
wasm-tools compose dist/handler.wasm -d dist/js-fetch.wasm -o js-example.wasm
