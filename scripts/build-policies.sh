#!/usr/bin/env bash
# Builds the Rust guest components (the seed policy and the test guests) for wasm32-wasip2 and
# copies them to build/policies/NAME.wasm. With names, builds only those.
#   scripts/build-policies.sh                 # all
#   scripts/build-policies.sh seed-rust       # one
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT_DIR:-$root/build/policies}
export CARGO_TARGET_DIR=${GUEST_TARGET_DIR:-$root/build/guest-target}

declare -A crates=(
  [seed-rust]=examples/policies/seed-rust
  [faulty]=tests/guests/faulty
  [future-world]=tests/guests/future-world
)

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2
fi

names=("$@")
[ ${#names[@]} -gt 0 ] || names=("${!crates[@]}")
mkdir -p "$out"
for name in "${names[@]}"; do
  dir=${crates[$name]:?unknown guest $name (known: ${!crates[*]})}
  cargo build --quiet --release --target wasm32-wasip2 --manifest-path "$root/$dir/Cargo.toml"
  cp "$CARGO_TARGET_DIR/wasm32-wasip2/release/${name//-/_}.wasm" "$out/$name.wasm"
done
