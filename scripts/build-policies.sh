#!/usr/bin/env bash
# Builds the guest components — Rust (wasm32-wasip2), Python (componentize-py), JavaScript
# (componentize-js) and C (clang + wit-bindgen + wasm-tools) — into build/policies/NAME.wasm,
# installing each language's toolchain into build/toolchains first (scripts/guest-toolchains.sh).
# A component newer than its sources is not rebuilt; one whose sources (with the SDK, the WIT,
# this script and the toolchains' versions) were built before is copied from GUEST_CACHE_DIR,
# where every component built is kept by that hash. With names, builds only those.
#   scripts/build-policies.sh                 # all
#   scripts/build-policies.sh seed-python     # one
# Build times land in build/policies/build-times.tsv (when, name, time, size).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT_DIR:-$root/build/policies}
tc=${TOOLCHAINS_DIR:-$root/build/toolchains}
export CARGO_TARGET_DIR=${GUEST_TARGET_DIR:-$root/build/guest-target}
cached=${GUEST_CACHE_DIR:-$root/build/guest-cache}
stage=$root/build/guest-stage

declare -A rust=(
  [seed-rust]=examples/policies/seed-rust
  [proxy-default]=examples/policies/proxy-default
  [faulty]=tests/guests/faulty
  [future-world]=tests/guests/future-world
  [engine-rules]=tests/guests/engine-rules
  [http-routes]=tests/guests/http-routes
  [past-world]=tests/guests/past-world
  [broken-rust]=tests/guests/broken-rust
  [unchecked]=tests/guests/unchecked
  [unchecked-route]=tests/guests/unchecked
  [contract-rust]=tests/guests/contract-rust
  [lifecycle-a]=tests/guests/lifecycle
  [lifecycle-b]=tests/guests/lifecycle
  [lifecycle-trap]=tests/guests/lifecycle
  [greedy]=tests/guests/lifecycle
)
# Components built from one crate with a feature (the crate's name, then the feature).
declare -A rust_variant=(
  [lifecycle-a]="lifecycle"
  [lifecycle-b]="lifecycle b"
  [lifecycle-trap]="lifecycle trap"
  [greedy]="lifecycle greedy"
  [unchecked-route]="unchecked bad-route"
)
declare -A python=(
  [seed-python]=examples/policies/seed-python
  [sandbox-python]=tests/guests/sandbox-python
  [broken-python]=tests/guests/broken-python
  [contract-python]=tests/guests/contract-python
)
declare -A js=(
  [seed-js]=examples/policies/seed-js
  [sandbox-js]=tests/guests/sandbox-js
  [sandbox-js-http]=tests/guests/sandbox-js
  [broken-js]=tests/guests/broken-js
  [contract-js]=tests/guests/contract-js
)
declare -A c=(
  [seed-c]=examples/policies/seed-c
  [broken-c]=tests/guests/broken-c
  [contract-c]=tests/guests/contract-c
)

# The smallest, capability-free builds: no WASI imports at all. The sandbox guests are built
# with each language's default WASI imports instead, to show the host grants them nothing
# (sandbox-js-http: componentize-js's defaults, `http` included, which the host refuses).
stub_wasi() { [[ $1 != sandbox-* ]]; }

# Whether $out/$1.wasm is older than any of the other arguments (files or folders).
stale() {
  local target=$out/$1.wasm
  shift
  [ -f "$target" ] || return 0
  [ -n "$(find "$@" "$root/wit" "$0" -newer "$target" -not -path '*/__pycache__*' -print -quit 2>/dev/null)" ]
}

# The hash of what a component is built from: its name and language, its sources, its
# language's SDK helper, the WIT, this script and the toolchains' pinned versions.
content_hash() {
  local name=$1 lang=$2 dir=$3
  {
    printf '%s %s\n' "$name" "$lang"
    (cd "$root" && find "$dir" "guest-sdk/$lang" wit -type f -not -path '*/__pycache__*' \
      -not -path '*/node_modules/*' -not -path '*/target/*' -print0 | sort -z | xargs -0 sha256sum)
    sha256sum "$0" "$root/scripts/guest-toolchains.sh"
  } | sha256sum | cut -c1-32
}

build_rust() {
  if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
  fi
  local crate=${1//-/_} feature= flags=()
  if [ -n "${rust_variant[$1]:-}" ]; then
    read -r crate feature <<<"${rust_variant[$1]}"
    [ -n "${feature:-}" ] && flags=(--features "$feature")
  fi
  cargo build --quiet --release --target wasm32-wasip2 --manifest-path "$root/$2/Cargo.toml" \
    "${flags[@]}"
  cp "$CARGO_TARGET_DIR/wasm32-wasip2/release/$crate.wasm" "$out/$1.wasm"
}

build_python() {
  local name=$1 dir=$root/$2 flags=()
  stub_wasi "$name" && flags+=(--stub-wasi)
  # componentize-py: the app module `app`, the SDK helper on the Python path.
  "$tc/venv/bin/componentize-py" -q -d "$root/wit" -w cache-policy \
    componentize app -p "$dir" -p "$root/guest-sdk/python" "${flags[@]}" -o "$out/$name.wasm.tmp"
  mv "$out/$name.wasm.tmp" "$out/$name.wasm"
}

build_js() {
  local name=$1 dir=$root/$2 world=cache-policy disabled=(http fetch-event)
  # The source and the SDK helper side by side: componentize-js reads modules from the
  # entry's folder only. `http` needs wasi:http, which the host does not link.
  rm -rf "$stage/$name" && mkdir -p "$stage/$name"
  cp -r "$dir/." "$stage/$name/"
  cp "$root/guest-sdk/js/cachelet-policy.js" "$stage/$name/"
  stub_wasi "$name" && disabled+=(stdio random clocks)
  [[ $name == *-http ]] && disabled=() # every default feature, http included
  [ -d "$dir/wit" ] && world=$(sed -n 's/^world \([a-z-]*\).*/\1/p' "$dir/wit/"*.wit | head -1)
  local wit=$root/wit
  if [ -d "$dir/wit" ]; then # a world of its own, which includes the cachelet world
    wit=$stage/$name/wit
    mkdir -p "$wit/deps/cachelet" && cp "$root/wit/policy.wit" "$wit/deps/cachelet/"
  fi
  local flags=()
  ((${#disabled[@]})) && flags=(-d "${disabled[@]}")
  (cd "$stage/$name" && "$tc/node/node_modules/.bin/componentize-js" policy.js --wit "$wit" \
    -n "$world" "${flags[@]}" -o "$out/$name.wasm.tmp" >/dev/null)
  mv "$out/$name.wasm.tmp" "$out/$name.wasm"
}

build_c() {
  local name=$1 dir=$root/$2 gen=$stage/$1
  rm -rf "$gen" && mkdir -p "$gen"
  "$tc/cargo/bin/wit-bindgen" c "$root/wit" -w cache-policy --out-dir "$gen" 2>&1 >/dev/null |
    { grep -v '^Generating' >&2 || true; }
  # Debian's clang 14 names the target wasm32-wasi (no wasip1/wasip2 yet); a reactor: no main.
  clang --target=wasm32-wasi --sysroot=/usr -mexec-model=reactor -Os -Wall -Wextra -Werror \
    -Wno-unused-parameter -Wno-missing-field-initializers -I"$gen" -I"$root/guest-sdk/c" \
    "$root/guest-sdk/c/cachelet_policy.c" "$dir"/*.c "$gen/cache_policy.c" \
    "$gen/cache_policy_component_type.o" -Wl,--strip-all -o "$gen/$name.core.wasm"
  "$tc/venv/bin/wasm-tools" component new "$gen/$name.core.wasm" -o "$out/$name.wasm"
}

names=("$@")
[ ${#names[@]} -gt 0 ] || names=("${!rust[@]}" "${!python[@]}" "${!js[@]}" "${!c[@]}")
mkdir -p "$out"
for name in "${names[@]}"; do
  if [ -n "${rust[$name]:-}" ]; then lang=rust dir=${rust[$name]}
  elif [ -n "${python[$name]:-}" ]; then lang=python dir=${python[$name]}
  elif [ -n "${js[$name]:-}" ]; then lang=js dir=${js[$name]}
  elif [ -n "${c[$name]:-}" ]; then lang=c dir=${c[$name]}
  else
    echo "unknown guest $name (known: ${!rust[*]} ${!python[*]} ${!js[*]} ${!c[*]})" >&2
    exit 2
  fi
  # cargo knows what changed in a Rust guest; the others are rebuilt when a source is newer,
  # or copied from the cache when these very sources were built before.
  [ $lang = rust ] || stale "$name" "$root/$dir" "$root/guest-sdk/$lang" || continue
  if [ $lang != rust ]; then
    hash=$(content_hash "$name" "$lang" "$dir")
    if [ -f "$cached/$hash.wasm" ]; then
      cp "$cached/$hash.wasm" "$out/$name.wasm.tmp" && mv "$out/$name.wasm.tmp" "$out/$name.wasm"
      continue
    fi
  fi
  # Toolchains first, so that the time below is the build's alone.
  "$root/scripts/guest-toolchains.sh" "$lang"
  t0=$(date +%s%N)
  "build_$lang" "$name" "$dir"
  t1=$(date +%s%N)
  printf '%s\t%s\t%d ms\t%s bytes\n' "$(date -u +%FT%TZ)" "$name" $(((t1 - t0) / 1000000)) \
    "$(stat -c %s "$out/$name.wasm")" >>"$out/build-times.tsv"
  if [ $lang != rust ]; then
    mkdir -p "$cached" && cp "$out/$name.wasm" "$cached/$hash.wasm.tmp" &&
      mv "$cached/$hash.wasm.tmp" "$cached/$hash.wasm"
  fi
done
