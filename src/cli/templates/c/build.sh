#!/bin/sh
# Builds {{name}}.wasm: clang for wasm32-wasi compiles handler.c with the C
# bindings in gen/ (generated from wit/handler.wit by wit-bindgen), then
# wasm-tools wraps the core module into a component with the WASI preview1
# reactor adapter (handlers/install-toolchains.sh installs all of these).
set -eu
cd "$(dirname "$0")"
adapter=${WASI_ADAPTER:-{{adapter}}}
clang --target=wasm32-wasi --sysroot=/usr -O2 -mexec-model=reactor -Igen \
    -o core.wasm handler.c gen/handler.c gen/handler_component_type.o
wasm-tools component new core.wasm --adapt wasi_snapshot_preview1="$adapter" -o {{name}}.wasm
