#!/bin/sh
# Builds {{name}}.wasm: Zig (the PyPI package ziglang, run as `python3 -m
# ziglang`) compiles handler.zig for wasm32-wasi with the C bindings in gen/,
# then wasm-tools wraps the core module into a component with the WASI
# preview1 reactor adapter in gen/.
set -eu
cd "$(dirname "$0")"
{{toolchains}}
need python3
python3 -c 'import ziglang' 2>/dev/null || missing "the Python package ziglang"
need wasm-tools
adapter=${WASI_ADAPTER:-gen/wasi_snapshot_preview1.reactor.wasm}
python3 -m ziglang build-exe -target wasm32-wasi -O ReleaseSmall -mexec-model=reactor -fno-entry -lc \
    --cache-dir .zig-cache -Igen -femit-bin=core.wasm \
    handler.zig gen/handler.c gen/handler_component_type.o
wasm-tools component new core.wasm --adapt wasi_snapshot_preview1="$adapter" -o {{name}}.wasm
