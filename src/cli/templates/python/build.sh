#!/bin/sh
# Builds {{name}}.wasm from app.py with componentize-py, bundling msgpack's
# pure-Python build (deps/, installed on first use), which arrpc_handler.py
# falls back on for what its C extensions and marshal cannot carry, and
# those extensions (an allocator, a MessagePack decoder and encoder),
# built with Zig (the PyPI package ziglang).
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
# The SDK's C extensions: its allocator, MessagePack decoder and encoder.
sh build-ext.sh
componentize-py -d wit -w interpreted-handler componentize app -p . -p deps -o {{name}}.wasm
