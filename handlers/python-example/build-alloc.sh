#!/bin/sh
# Compiles the Python SDK's small-object allocator (_arrpc_alloc.c) into
# deps/_arrpc_alloc.abi3.so, a position-independent wasm32 library that
# componentize-py links in, with Zig's clang (the PyPI package ziglang, run
# as `python3 -m ziglang`); again only when the source changed. build.sh
# runs it, with the toolchains' python3 first on PATH.
#   usage: sh build-alloc.sh
set -eu
cd "$(dirname "$0")"
if [ -f deps/_arrpc_alloc.abi3.so ] && [ ! _arrpc_alloc.c -nt deps/_arrpc_alloc.abi3.so ]; then
    exit 0
fi
object=$(mktemp)
trap 'rm -f "$object"' EXIT
mkdir -p deps
python3 -m ziglang cc --target=wasm32-wasi -O2 -fPIC -c _arrpc_alloc.c -o "$object"
python3 -m ziglang wasm-ld -shared --experimental-pic --no-entry \
    --unresolved-symbols=import-dynamic -o deps/_arrpc_alloc.abi3.so "$object"
