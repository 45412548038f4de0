#!/bin/sh
# Builds c-example.wasm: clang for wasm32-wasi compiles handler.c with the
# committed C bindings of handlers/c-bindings/http (the handler world plus
# wasi:http's outgoing-handler) and msgpuck, then wasm-tools wraps the core
# module into a component with the WASI preview1 reactor adapter.
# handlers/install-toolchains.sh installs every tool and puts msgpuck and
# the adapter in handlers/.toolchains.
#   usage: sh handlers/c-example/build.sh
set -eu
cd "$(dirname "$0")"
# The tools handlers/install-toolchains.sh installed come first.
PATH="$PWD/../.toolchains/venv/bin:$PATH"
tools=../.toolchains
bindings=../c-bindings/http
clang --target=wasm32-wasi --sysroot=/usr -O2 -mexec-model=reactor -Wall -Werror -Wl,--strip-debug \
    -I"$bindings" -I"$tools/msgpuck" \
    -o core.wasm handler.c "$bindings/handler.c" "$bindings/handler_component_type.o" "$tools/msgpuck/msgpuck.c"
wasm-tools component new core.wasm \
    --adapt wasi_snapshot_preview1="$tools/wasi_snapshot_preview1.reactor.wasm" -o c-example.wasm
