#!/bin/sh
# Builds {{name}}.wasm from app.py with componentize-py.
set -eu
cd "$(dirname "$0")"
{{toolchains}}
need componentize-py
componentize-py -d wit -w handler componentize app -p . -o {{name}}.wasm
