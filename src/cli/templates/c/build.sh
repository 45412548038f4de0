#!/bin/sh
# Builds {{name}}.wasm: clang for wasm32-wasi compiles handler.c with the C
# bindings in gen/ (generated from wit/handler.wit by wit-bindgen), then
# wasm-tools wraps the core module into a component with the WASI preview1
# reactor adapter in gen/. Needs clang with wasi-libc (Debian: clang lld
# wasi-libc libclang-rt-14-dev-wasm32) and wasm-tools.
set -eu
cd "$(dirname "$0")"
{{toolchains}}
need clang
need wasm-tools
[ -f /usr/include/wasm32-wasi/stdio.h ] || missing "wasi-libc (/usr/include/wasm32-wasi)"
adapter=${WASI_ADAPTER:-gen/wasi_snapshot_preview1.reactor.wasm}
clang --target=wasm32-wasi --sysroot=/usr -O2 -mexec-model=reactor -Wl,--strip-debug -Igen \
    -o core.wasm handler.c gen/handler.c gen/handler_component_type.o
wasm-tools component new core.wasm --adapt wasi_snapshot_preview1="$adapter" -o {{name}}.wasm
