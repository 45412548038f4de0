#!/bin/sh
# Builds python-example.wasm with componentize-py, bundling the pure-Python
# build of msgpack (a C extension cannot run inside the component).
#   usage: sh handlers/python-example/build.sh
set -eu
cd "$(dirname "$0")"
# The tools handlers/install-toolchains.sh installed come first.
PATH="$PWD/../.toolchains/venv/bin:$PATH"
if [ ! -f deps/msgpack/__init__.py ]; then
    MSGPACK_PUREPYTHON=1 python3 -m pip install --quiet --disable-pip-version-check \
        --no-binary msgpack --no-deps --target deps "msgpack==1.1.2"
fi
componentize-py -d ../../wit -w handler componentize app -p . -p deps -o python-example.wasm
