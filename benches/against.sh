#!/bin/sh
# Measures this working tree's host and echo component against another
# commit's, in the same interleaved rounds: the fresh-instance and reuse
# points at 64 connections, 1 and 16 messages in flight, every other round
# in reverse order. Prints arrpc-bench's JSON lines, then a table of each
# point beside its baseline with the ratio.
#
#   usage: sh benches/against.sh [REV] [arrpc-bench flags...]
#
# REV defaults to HEAD, so an uncommitted change is measured against the
# commit it starts from; pass the previous main to measure a series of
# commits. Later flags override the defaults below (say `--rounds 5`). The
# baseline is built once per commit, in target/against/<commit>/, sharing
# this tree's target directory for the dependencies both builds have.
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)

rev=HEAD
case "${1:-}" in
    ""|-*) ;;
    *) rev=$1; shift ;;
esac
commit=$(git rev-parse --verify "$rev^{commit}")
short=$(git rev-parse --short "$commit")
out="$top/target/against/$commit"
host="$out/arrpc-host"
echo_wasm="$out/echo.wasm"

if [ ! -x "$host" ] || [ ! -f "$echo_wasm" ]; then
    echo "against.sh: building $short as the baseline" >&2
    rm -rf "$out"
    mkdir -p "$out"
    git worktree add --detach "$out/src" "$commit" >&2
    trap 'git -C "$top" worktree remove --force "$out/src" >/dev/null 2>&1 || true' EXIT
    (cd "$out/src" && CARGO_TARGET_DIR="$top/target" cargo build --release --bin arrpc-host >&2)
    cp "$top/target/release/arrpc-host" "$host.part"
    (cd "$out/src" && sh handlers/build.sh echo >&2)
    cp "$out/src/handlers/target/wasm32-wasip2/release/echo.wasm" "$echo_wasm"
    mv "$host.part" "$host"
    git worktree remove --force "$out/src"
    trap - EXIT
fi

# This tree's builds, after the baseline's: they share target/release.
cargo build --release -p arrpc-host -p arrpc-bench >&2
sh handlers/build.sh echo >/dev/null

target/release/arrpc-bench \
    --targets host,host-reuse --conns 64 --pipeline 1,16 --payload 64 \
    --rounds 3 --warmup 1s --measure 3s \
    --baseline-host-bin "$host" --baseline-echo "$echo_wasm" \
    --baseline-name "$short" "$@"
