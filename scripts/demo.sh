#!/usr/bin/env bash
# The main job: `cachelet serve` on the embedded default (mem://, or whatever CACHE_URL names)
# in front of a small demo service the same binary starts, with the seed policy. It prints the
# curl commands that show a miss, a hit, a write's invalidation and recache, and a purge.
# Extra arguments go to `cachelet serve` (e.g. --listen 127.0.0.1:9090).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# The binary embeds its built-in policies, built for this target.
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2
fi
exec cargo run --quiet --release --manifest-path "$root/Cargo.toml" -p cachelet-cli -- \
  serve --demo-upstream "$@"
