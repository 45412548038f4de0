#!/bin/sh
# Builds c-example.wasm: wit-bindgen C bindings, clang for wasm32-wasi with
# msgpuck compiled in, then wasm-tools wraps the core module into a component
# with the WASI preview1 reactor adapter. handlers/install-toolchains.sh
# installs every tool and puts msgpuck and the adapter in handlers/.toolchains.
#   usage: sh handlers/c-example/build.sh
set -eu
cd "$(dirname "$0")"
tools=../.toolchains
wit-bindgen c ../../wit --world handler --out-dir gen >/dev/null
clang --target=wasm32-wasi --sysroot=/usr -O2 -mexec-model=reactor -Wall -Werror \
    -Igen -I"$tools/msgpuck" \
    -o core.wasm handler.c gen/handler.c gen/handler_component_type.o "$tools/msgpuck/msgpuck.c"
wasm-tools component new core.wasm \
    --adapt wasi_snapshot_preview1="$tools/wasi_snapshot_preview1.reactor.wasm" -o c-example.wasm
