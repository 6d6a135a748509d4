#!/usr/bin/env bash
# Builds {{name}}.wasm with componentize-py, installed on first use into $CACHELET_TOOLCHAINS
# (default .toolchain/venv). --stub-wasi: the component imports nothing but cachelet's world.
set -euo pipefail
cd "$(dirname "$0")"
tc=${CACHELET_TOOLCHAINS:-.toolchain}
if [ ! -x "$tc/venv/bin/componentize-py" ]; then
  python3 -m venv "$tc/venv"
  "$tc/venv/bin/pip" install --quiet componentize-py==0.25.1
fi
"$tc/venv/bin/componentize-py" -q -d wit -w cache-policy componentize app -p . --stub-wasi \
  -o {{name}}.wasm
echo "built {{name}}.wasm"
