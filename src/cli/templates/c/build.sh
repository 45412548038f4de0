#!/bin/sh
# Builds {{name}}.wasm: wit-bindgen C bindings, clang for wasm32-wasi, then
# wasm-tools wraps the core module into a component with the WASI preview1
# reactor adapter (handlers/install-toolchains.sh installs all of these).
set -eu
cd "$(dirname "$0")"
adapter=${WASI_ADAPTER:-{{adapter}}}
wit-bindgen c wit --world handler --out-dir gen >/dev/null
clang --target=wasm32-wasi --sysroot=/usr -O2 -mexec-model=reactor -Igen \
    -o core.wasm handler.c gen/handler.c gen/handler_component_type.o
wasm-tools component new core.wasm --adapt wasi_snapshot_preview1="$adapter" -o {{name}}.wasm
