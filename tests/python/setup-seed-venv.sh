#!/bin/sh
# Creates a virtualenv at $1 holding the Python arrpc package, arrpc 0.5.0
# from PyPI ("seed" in this script's name and in `seed-venv` means that
# package). Used by tests/common/seed.rs (under a file lock) and by .ci/run.
set -eu
venv=$1
[ -f "$venv/.ready" ] && exit 0
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check arrpc==0.5.0
touch "$venv/.ready"
