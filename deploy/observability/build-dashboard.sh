#!/bin/sh
# Writes the Grafana dashboard that dashboard.py builds, with the pinned
# grafana-foundation-sdk from PyPI (installed once into .venv here).
#   usage: sh deploy/observability/build-dashboard.sh [OUT]   (default: dashboard.json here)
set -eu
cd "$(dirname "$0")"
SDK="1769699998!10.1.0"
out=${1:-dashboard.json}
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
if ! .venv/bin/python -c "import grafana_foundation_sdk" 2>/dev/null; then
    rm -rf .venv
    python3 -m venv .venv
    .venv/bin/python -m pip install --quiet --disable-pip-version-check "grafana-foundation-sdk==$SDK"
fi
.venv/bin/python dashboard.py > "$out.part"
mv "$out.part" "$out"
