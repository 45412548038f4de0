#!/bin/sh
# Builds what the container image holds into the folder $1, laid out as the
# image's root: /opt/arrpc/bin/arrpc-host, the shipped handlers in
# /opt/arrpc/handlers, /opt/arrpc/arrpc.toml and a compile cache filled for
# them in /opt/arrpc/cache.
#   usage: sh deploy/image/build.sh ROOT
# The Dockerfile runs it with ROOT=/rootfs; tests/deploy.rs runs it too, so
# what the image holds is built and checked where no container engine runs.
set -eu
root=${1:?usage: sh deploy/image/build.sh ROOT}
cd "$(dirname "$0")/../.."

sh handlers/build.sh echo sum state
cargo build --release --locked --bin arrpc-host

opt=$root/opt/arrpc
rm -rf "$opt"
mkdir -p "$opt/bin" "$opt/handlers"
# Where cargo put it: tests and developers may set CARGO_TARGET_DIR.
cp "${CARGO_TARGET_DIR:-target}/release/arrpc-host" "$opt/bin/"
for handler in echo sum state; do
    cp "handlers/target/wasm32-wasip2/release/$handler.wasm" "$opt/handlers/"
done
cp deploy/image/arrpc.toml "$opt/"

# Compiles every handler into $opt/cache, with the binary the image runs.
"$opt/bin/arrpc-host" check --config "$opt/arrpc.toml"

# Read-only for everyone: the image's filesystem is read-only on Kubernetes
# anyway, and a pod may run under another user id than the image's.
chmod -R a+rX,go-w "$opt"
