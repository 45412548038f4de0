#!/bin/sh
# Builds the component into target/wasm32-wasip2/release/ with cargo,
# adding the wasm32-wasip2 target with rustup first.
set -eu
cd "$(dirname "$0")"
{{toolchains}}
need cargo
need rustup
rustup target add wasm32-wasip2
cargo build --release --target wasm32-wasip2 --target-dir target
