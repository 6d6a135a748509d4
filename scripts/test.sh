#!/usr/bin/env bash
# Every test, on a fresh machine: installs what the tests need (the wasm32-wasip2 target),
# checks formatting and lints, builds the guest components from source, runs the workspace's
# tests (unit, integration against real components, doc tests) and the seed policy's own.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

step() { printf '\n== %s\n' "$*"; }

step "toolchain"
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2
fi
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy

step "format and lints"
cargo fmt --all -- --check
cargo clippy --release --workspace --all-targets -- -D warnings

step "guest components"
scripts/build-policies.sh
cargo test --release --manifest-path examples/policies/seed-rust/Cargo.toml

step "tests"
cargo test --release --workspace
