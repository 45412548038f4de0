#!/bin/sh
# Regenerates the committed C bindings of wit/ (handler.h, handler.c,
# handler_component_type.o) and, in http/, those of the same world plus
# wasi:http's outgoing-handler (http/wit/http-handler.wit), each with
# WIT_SHA256, the hashes of the WIT files they come from, which
# tests/c_bindings.rs compares with the WIT. Run it after changing wit/,
# then commit this folder. Needs wit-bindgen-cli at the version below: when
# it is missing, this installs it with `cargo install` (no registry ships a
# prebuilt binary; the build takes several minutes).
#   usage: sh handlers/c-bindings/regenerate.sh
set -eu
cd "$(dirname "$0")"

WIT_BINDGEN=0.63.0

# One `sha256sum` line per .wit file wit-bindgen reads from the WIT folder
# $1 (those directly in it and under its deps/, through symbolic links, not
# the older world versions in other folders), by path in byte order.
wit_sha256() {
    (cd "$1" && { find -L . -maxdepth 1 -name '*.wit'; find -L . -path './deps/*' -name '*.wit'; } |
        sed 's|^\./||' | LC_ALL=C sort | xargs sha256sum)
}

if ! wit-bindgen --version 2>/dev/null | grep -q "^wit-bindgen-cli $WIT_BINDGEN\$"; then
    echo "regenerate: cargo install wit-bindgen-cli $WIT_BINDGEN"
    cargo install --quiet --locked wit-bindgen-cli --version "$WIT_BINDGEN"
fi
wit-bindgen c ../../wit --world handler --out-dir .
wit_sha256 ../../wit > WIT_SHA256
wit-bindgen c http/wit --world handler --out-dir http
wit_sha256 http/wit > http/WIT_SHA256
echo "regenerate: done; commit handlers/c-bindings"
