#!/usr/bin/env bash
# Builds {{name}}.wasm with componentize-js, installed on first use into $CACHELET_TOOLCHAINS
# (default .toolchain/node). Every engine feature is disabled: the component imports nothing
# but cachelet's world. (Enable stdio/random/clocks if the policy needs them; never `http`:
# the host does not link wasi:http.)
set -euo pipefail
cd "$(dirname "$0")"
tc=${CACHELET_TOOLCHAINS:-.toolchain}
if [ ! -x "$tc/node/node_modules/.bin/componentize-js" ]; then
  mkdir -p "$tc/node"
  npm install --prefix "$tc/node" --no-audit --no-fund --loglevel=error \
    @bytecodealliance/componentize-js@0.23.0 >/dev/null
fi
"$tc/node/node_modules/.bin/componentize-js" policy.js --wit wit -n cache-policy \
  -d stdio random clocks http fetch-event -o {{name}}.wasm >/dev/null
echo "built {{name}}.wasm"
