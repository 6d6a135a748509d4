#!/usr/bin/env bash
# Every test, on a fresh machine: installs what the tests need (the wasm32-wasip2 target; the
# Python, JavaScript and C guest toolchains;
# redis-server, redis-cli, openssl and faketime from Debian's packages for the Redis tests),
# checks formatting and lints, builds the guest components from source, runs the workspace's
# tests (unit, integration against real components, doc tests) and the seed policy's own, and
# checks that the language pages' commands are the ones these tests run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

# What is downloaded or compiled is kept under the user's cache directory, by version or by
# content, so that a second run, in this checkout or a fresh clone, reuses it: the guest
# toolchains (by version), the guest components (by the hash of their sources), the compiled
# components (by hash), and cargo's target directories. CACHELET_CACHE_DIR moves them all.
cache=${CACHELET_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/cachelet}
export TOOLCHAINS_DIR=${TOOLCHAINS_DIR:-$cache/toolchains}
export GUEST_CACHE_DIR=${GUEST_CACHE_DIR:-$cache/guests}
export GUEST_TARGET_DIR=${GUEST_TARGET_DIR:-$cache/guest-target}
export CACHELET_COMPILE_CACHE=${CACHELET_COMPILE_CACHE:-$cache/compile-cache}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$cache/target}

# Each step says how long the one before it took, and the run its total.
started=$(date +%s)
last=$started
last_name=
step() {
  local now
  now=$(date +%s)
  [ -z "$last_name" ] || printf '== %s: %ds\n' "$last_name" $((now - last))
  printf '\n== %s\n' "$*"
  last=$now
  last_name=$*
}
finish() {
  local status=$? now
  now=$(date +%s)
  [ -z "$last_name" ] || printf '== %s: %ds\n' "$last_name" $((now - last))
  printf '== total: %ds (%s)\n' $((now - started)) "$([ $status -eq 0 ] && echo passed || echo failed)"
}
trap finish EXIT

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
# The demo's printed commands are run as printed.
command -v curl >/dev/null 2>&1 || missing+=(curl)
if ((${#missing[@]})); then
  sudo=()
  [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -q </dev/null
  "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
fi
redis-server --version

step "guest toolchains: componentize-py, componentize-js, clang + wit-bindgen ($TOOLCHAINS_DIR)"
scripts/guest-toolchains.sh

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
cargo test --release --workspace --no-fail-fast

step "docs: the language pages' commands are the ones the tests run; the README's tests exist"
scripts/check-docs.sh
scripts/check-readme-tests.sh
