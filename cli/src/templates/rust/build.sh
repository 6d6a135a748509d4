#!/usr/bin/env bash
# Builds {{name}}.wasm: a component for cachelet's world (wit/policy.wit).
# Needs Rust with the wasm32-wasip2 target (added here if missing).
set -euo pipefail
cd "$(dirname "$0")"
rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
cargo build --quiet --release --target wasm32-wasip2
cp "${CARGO_TARGET_DIR:-target}/wasm32-wasip2/release/{{crate}}.wasm" {{name}}.wasm
echo "built {{name}}.wasm"
