#!/usr/bin/env bash
# Builds the seed policy as a WebAssembly component (wasm32-wasip2 outputs a component, the target
# is installed with rustup if missing) into $OUT_DIR (default: <repo>/build/policies/seed-rust.wasm).
# The project's guest build script does the work, so that there is one way to build a guest.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
"$repo/scripts/build-policies.sh" seed-rust
echo "${OUT_DIR:-$repo/build/policies}/seed-rust.wasm ($(wc -c < "${OUT_DIR:-$repo/build/policies}/seed-rust.wasm") bytes)"
