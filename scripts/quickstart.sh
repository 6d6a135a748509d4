#!/usr/bin/env bash
# The main job: builds the seed policy, then runs the quick start on the embedded default
# (mem://), or on whatever CACHE_URL names.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/build-policies.sh" seed-rust
exec cargo run --quiet --release --manifest-path "$root/Cargo.toml" -p quickstart -- "$root/build/policies/seed-rust.wasm"
