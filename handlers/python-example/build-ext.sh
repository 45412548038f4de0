#!/bin/sh
# Compiles the Python SDK's C extensions, the small-object allocator
# (_arrpc_alloc.c), the MessagePack decoder (_arrpc_unpack.c) and encoder
# (_arrpc_pack.c), each into deps/<name>.abi3.so, a position-independent
# wasm32 library that componentize-py links in, with Zig's clang (the PyPI
# package ziglang, run as `python3 -m ziglang`); each only when its source
# or the declarations they share (_arrpc_python.h) changed. build.sh runs
# it, with the toolchains' python3 first on PATH.
#   usage: sh build-ext.sh
set -eu
cd "$(dirname "$0")"
mkdir -p deps
object=$(mktemp)
trap 'rm -f "$object"' EXIT
for name in _arrpc_alloc _arrpc_unpack _arrpc_pack; do
    library="deps/$name.abi3.so"
    if [ -f "$library" ] && [ ! "$name.c" -nt "$library" ] && [ ! _arrpc_python.h -nt "$library" ]; then
        continue
    fi
    python3 -m ziglang cc --target=wasm32-wasi -O2 -fPIC -c "$name.c" -o "$object"
    python3 -m ziglang wasm-ld -shared --experimental-pic --no-entry \
        --unresolved-symbols=import-dynamic -o "$library" "$object"
done
