#!/bin/sh
# Installs the servers the tests start for real, from Debian's packages. The
# tests run it themselves (tests/common/redis.rs), once, under a lock, so
# `cargo test` needs nothing installed beforehand. Safe to run again.
#   usage: sh tests/install-services.sh PART...
#
#   redis       redis-server (Debian's 7.0), which the key-value store
#               tests start on a free port in a temporary folder
#   prometheus  prometheus and promtool (Debian's 2.42), for the alert rules
#               and a real scrape of a running host
#   chromium    headless Chromium, which draws the dashboard's key panels
#               from Prometheus's graph page
#
# Installing needs root (apt-get); without root, a missing package stops
# the script with the command to run.
set -eu

fail() {
    echo "install-services: $*" >&2
    exit 1
}

apt_install() { sh "$(dirname "$0")/../handlers/apt-install.sh" "$@" || exit 1; }

for part in "$@"; do
    case "$part" in
        redis)
            command -v redis-server >/dev/null 2>&1 || apt_install redis-server
            # Debian's package starts a server on the default port; the
            # tests start their own.
            ;;
        prometheus)
            command -v promtool >/dev/null 2>&1 || apt_install prometheus
            ;;
        chromium)
            command -v chromium >/dev/null 2>&1 || apt_install chromium
            ;;
        *) fail "unknown part $part (redis, prometheus, chromium)" ;;
    esac
done
