#!/bin/sh
# Builds {{name}}.wasm (installs componentize-js with npm on first use).
set -eu
cd "$(dirname "$0")"
if [ ! -d node_modules/@bytecodealliance/componentize-js ]; then
    npm install --no-audit --no-fund --loglevel=error
fi
node build.mjs
