#!/bin/sh
# Builds the handler components for arrpc-host.
#   usage: sh handlers/build.sh [crate...]    (no crate: all of them)
# Each lands at handlers/target/wasm32-wasip2/release/<crate>.wasm.
set -eu
cd "$(dirname "$0")"

target=wasm32-wasip2

# The target ships with rustup; without rustup there is no simple way to get it.
if ! command -v rustup >/dev/null 2>&1; then
    echo "build.sh: rustup not found. Install rustup (https://rustup.rs), then run:" >&2
    echo "    rustup target add $target" >&2
    exit 1
fi
if ! rustup target list --installed | grep -qx "$target"; then
    rustup target add "$target"
fi

# Turn "echo sum" into "-p echo -p sum"; no names builds the whole workspace.
if [ $# -eq 0 ]; then
    set -- --workspace
else
    for crate do
        set -- "$@" -p "$crate"
        shift
    done
fi

# The output's place is fixed (the config and tests name it), whatever
# CARGO_TARGET_DIR says.
cargo build --release --target "$target" --target-dir target "$@"
ls -l "target/$target/release/"*.wasm
