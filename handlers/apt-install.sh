#!/bin/sh
# Installs the Debian packages named that are not installed yet: the one
# way install-toolchains.sh and tests/install-services.sh get system
# packages. Without apt-get, or without root, it installs nothing and
# stops naming the packages and the command to run. Safe to run again.
#   usage: sh handlers/apt-install.sh PACKAGE...
set -eu

fail() {
    echo "apt-install: $*" >&2
    exit 1
}

missing=""
for package do
    dpkg -s "$package" >/dev/null 2>&1 || missing="$missing $package"
done
[ -z "$missing" ] && exit 0
command -v apt-get >/dev/null 2>&1 ||
    fail "missing:$missing (Debian package names); install their equivalents, then run this again"
[ "$(id -u)" = 0 ] || fail "missing Debian packages:$missing. Not root, so not installing them: run
    sudo apt-get install$missing
then run this again"
echo "apt-install: apt-get install$missing"
apt-get update -qq
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
