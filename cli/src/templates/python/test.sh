#!/usr/bin/env bash
# Tests {{name}}'s rules in CPython (test_app.py), no component built: the SDK runs on the
# bindings componentize-py generates from wit/ (into .bindings/, once).
set -euo pipefail
cd "$(dirname "$0")"
tc=${CACHELET_TOOLCHAINS:-.toolchain}
[ -x "$tc/venv/bin/componentize-py" ] || ./build.sh >/dev/null
[ -d .bindings/wit_world ] ||
  "$tc/venv/bin/componentize-py" -d wit -w cache-policy bindings .bindings >/dev/null
PYTHONPATH=.bindings:. PYTHONDONTWRITEBYTECODE=1 python3 -m unittest -v "$@"
