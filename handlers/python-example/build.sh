#!/bin/sh
# Builds python-example.wasm with componentize-py, bundling the pure-Python
# build of msgpack, which arrpc_handler.py falls back on for what marshal
# cannot carry, and the SDK's allocator extension, built with Zig. The world
# is wit/python-handler.wit: the handler world plus wasi:http's
# outgoing-handler. Both have an interface named `types`; componentize-py's
# poll_loop imports wasi:http's by that name, so the handler world's is bound
# as `handler_types`.
#   usage: sh handlers/python-example/build.sh
set -eu
cd "$(dirname "$0")"
# The tools handlers/install-toolchains.sh installed come first.
PATH="$PWD/../.toolchains/venv/bin:$PATH"
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
componentize-py -d wit -w handler \
    --import-interface-name wasi:http/types@0.2.12=types \
    --import-interface-name arrpc:handler/types@0.3.0=handler_types \
    componentize app -p . -p deps -o python-example.wasm
