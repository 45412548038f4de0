"""Prints the YAML documents in the file argv[1] as one JSON array, for
tests/deploy.rs (which reads JSON and TOML but not YAML)."""

import json
import sys

import yaml

with open(sys.argv[1], encoding="utf-8") as f:
    json.dump([doc for doc in yaml.safe_load_all(f) if doc is not None], sys.stdout)
