#!/bin/sh
# Builds {{name}}.wasm (pip install componentize-py first).
set -eu
cd "$(dirname "$0")"
componentize-py -d wit -w handler componentize app -p . -o {{name}}.wasm
