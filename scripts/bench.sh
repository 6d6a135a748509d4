#!/usr/bin/env bash
# The benchmarks, side by side in one run: the modelled library (svc-infra, installed into a
# venv from PyPI by its own script) first, then cachelet's, whose report prints the ratios.
#   scripts/bench.sh            # mem://
# Results: build/bench/*.json and the report on stdout (copy it into BENCHMARKS.md).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
anchor_dir=${ANCHOR_DIR:-$root/../shared/anchors/svc-infra}
mkdir -p "$root/build/bench"
"$root/scripts/build-policies.sh" seed-rust
cargo build --quiet --release --manifest-path "$root/Cargo.toml" -p cachelet-bench
anchor_args=()
if [ -x "$anchor_dir/run.sh" ] || [ -f "$anchor_dir/run.sh" ]; then
  echo "# anchor: svc-infra on mem:// (sections a and c)"
  VENV=${VENV:-$root/build/anchor-venv} bash "$anchor_dir/run.sh" mem:// --sections ac \
    --json "$root/build/bench/anchor-mem.json" >/dev/null
  anchor_args=(--anchor "$root/build/bench/anchor-mem.json")
else
  echo "# anchor not found at $anchor_dir: ratios against it are skipped"
fi
echo "# cachelet, $(date -u +%Y-%m-%d), $(nproc) vCPU, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
"$root/target/release/cachelet-bench" "$root/build/policies/seed-rust.wasm" \
  "${anchor_args[@]}" --json "$root/build/bench/cachelet-mem.json"

# Guest languages: the seed policy rebuilt from source in Rust, Python, JavaScript and C, then
# sized, loaded (compiled, then precompiled) and called (BENCH_ONLY=languages for this alone).
if [ -z "${BENCH_ONLY:-}" ] || [[ ,$BENCH_ONLY, == *,languages,* ]]; then
  echo "# guest languages"
  touch "$root/examples/policies/seed-rust/src/lib.rs"
  rm -f "$root"/build/policies/seed-{python,js,c}.wasm
  "$root/scripts/build-policies.sh" seed-rust seed-python seed-js seed-c
  cargo build --quiet --release --manifest-path "$root/Cargo.toml" -p cachelet-bench --bin languages
  "$root/target/release/languages" "$root/build/policies" --json "$root/build/bench/languages.json"
fi
