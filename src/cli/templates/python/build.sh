#!/bin/sh
# Builds {{name}}.wasm from app.py with componentize-py, bundling msgpack's
# pure-Python build (deps/, installed on first use), which arrpc_handler.py
# falls back on for what marshal cannot carry, and the SDK's allocator
# extension, built with Zig (the PyPI package ziglang).
set -eu
cd "$(dirname "$0")"
{{toolchains}}
need componentize-py
need python3
python3 -c 'import ziglang' 2>/dev/null || missing "the Python package ziglang"
if [ ! -f deps/msgpack/__init__.py ]; then
    MSGPACK_PUREPYTHON=1 python3 -m pip install --quiet --disable-pip-version-check \
        --no-binary msgpack --no-deps --target deps "msgpack==1.1.2"
fi
# The SDK's small-object allocator (_arrpc_alloc.c), a position-independent
# wasm32 library componentize-py links in; rebuilt when its source changes.
if [ ! -f deps/_arrpc_alloc.abi3.so ] || [ _arrpc_alloc.c -nt deps/_arrpc_alloc.abi3.so ]; then
    object=$(mktemp)
    mkdir -p deps
    python3 -m ziglang cc --target=wasm32-wasi -O2 -fPIC -c _arrpc_alloc.c -o "$object"
    python3 -m ziglang wasm-ld -shared --experimental-pic --no-entry \
        --unresolved-symbols=import-dynamic -o deps/_arrpc_alloc.abi3.so "$object"
    rm -f "$object"
fi
componentize-py -d wit -w interpreted-handler componentize app -p . -p deps -o {{name}}.wasm
