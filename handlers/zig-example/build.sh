#!/bin/sh
# Builds zig-example.wasm: Zig (PyPI ziglang, run as `python3 -m ziglang`)
# compiles handler.zig for wasm32-wasi together with the committed C
# bindings of handlers/c-bindings/http (the handler world plus wasi:http's
# outgoing-handler), then wasm-tools wraps the core module into a component
# with the WASI preview1 reactor adapter.
# handlers/install-toolchains.sh installs every tool and puts the adapter in
# handlers/.toolchains.
#   usage: sh handlers/zig-example/build.sh
set -eu
cd "$(dirname "$0")"
# The tools handlers/install-toolchains.sh installed come first.
PATH="$PWD/../.toolchains/venv/bin:$PATH"
tools=../.toolchains
bindings=../c-bindings/http
python3 -m ziglang build-exe -target wasm32-wasi -O ReleaseSmall -mexec-model=reactor -fno-entry -lc \
    --cache-dir .zig-cache -I"$bindings" -femit-bin=core.wasm \
    handler.zig "$bindings/handler.c" "$bindings/handler_component_type.o"
wasm-tools component new core.wasm \
    --adapt wasi_snapshot_preview1="$tools/wasi_snapshot_preview1.reactor.wasm" -o zig-example.wasm
