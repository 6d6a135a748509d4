#!/usr/bin/env bash
# Every test, on a fresh machine: installs what the tests need (the wasm32-wasip2 target; the
# Python, JavaScript and C guest toolchains into build/toolchains;
# redis-server, redis-cli, openssl and faketime from Debian's packages for the Redis tests),
# checks formatting and lints, builds the guest components from source, runs the workspace's
# tests (unit, integration against real components, doc tests) and the seed policy's own, and
# checks that the language pages' commands are the ones these tests run.
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

step "redis servers and faketime (for the Redis tests)"
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# A host whose clock is skewed, for the early-refresh test.
command -v faketime >/dev/null 2>&1 || missing+=(faketime)
if ((${#missing[@]})); then
  sudo=()
  [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -q </dev/null
  "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
fi
redis-server --version

step "guest toolchains: componentize-py, componentize-js, clang + wit-bindgen (build/toolchains)"
scripts/guest-toolchains.sh
# Compiled policies are kept here, so that each test loads a Python or JavaScript component
# in milliseconds instead of compiling it again (seconds).
export CACHELET_COMPILE_CACHE=${CACHELET_COMPILE_CACHE:-$root/build/compile-cache}

step "format and lints"
cargo fmt --all -- --check
cargo clippy --release --workspace --all-targets -- -D warnings
# The library alone and with axum only, as crates that do not enable the proxy build it.
cargo clippy --release -p cachelet -- -D warnings
cargo clippy --release -p cachelet --features axum -- -D warnings

step "guest components (Rust, Python, JavaScript, C)"
scripts/build-policies.sh
cargo test --release --manifest-path examples/policies/seed-rust/Cargo.toml

step "tests"
cargo test --release --workspace

step "docs: the language pages' commands are the ones the tests run"
scripts/check-docs.sh
