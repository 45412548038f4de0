#!/bin/sh
# Builds python-example.wasm with componentize-py, bundling the pure-Python
# build of msgpack, which arrpc_handler.py falls back on for what its C
# extensions and marshal cannot carry, and those extensions (an
# allocator, a MessagePack decoder and encoder), built with Zig. The world
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
# The SDK's C extensions: its allocator, MessagePack decoder and encoder.
sh build-ext.sh
componentize-py -d wit -w handler \
    --import-interface-name wasi:http/types@0.2.12=types \
    --import-interface-name arrpc:handler/types@0.3.0=handler_types \
    componentize app -p . -p deps -o python-example.wasm
