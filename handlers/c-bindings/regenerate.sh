#!/bin/sh
# Regenerates the committed C bindings of wit/ (handler.h, handler.c,
# handler_component_type.o) and WIT_SHA256, the hashes of the WIT files they
# come from, which tests/c_bindings.rs compares with wit/. Run it after
# changing wit/, then commit this folder. Needs wit-bindgen-cli at the version
# below: when it is missing, this installs it with `cargo install` (no registry
# ships a prebuilt binary; the build takes several minutes).
#   usage: sh handlers/c-bindings/regenerate.sh
set -eu
cd "$(dirname "$0")"

WIT_BINDGEN=0.63.0

if ! wit-bindgen --version 2>/dev/null | grep -q "^wit-bindgen-cli $WIT_BINDGEN\$"; then
    echo "regenerate: cargo install wit-bindgen-cli $WIT_BINDGEN"
    cargo install --quiet --locked wit-bindgen-cli --version "$WIT_BINDGEN"
fi
wit-bindgen c ../../wit --world handler --out-dir .
# One `sha256sum` line per .wit file wit-bindgen reads (those in wit/ and
# under wit/deps/, not the older world versions in other folders), by path
# in byte order.
(cd ../../wit && { find . -maxdepth 1 -name '*.wit'; find . -path './deps/*' -name '*.wit'; } |
    sed 's|^\./||' | LC_ALL=C sort | xargs sha256sum) > WIT_SHA256
echo "regenerate: done; commit handlers/c-bindings"
