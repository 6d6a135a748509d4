#!/usr/bin/env bash
# The memory of `cachelet serve` under load, with nobody scraping its metrics: its resident set
# (VmRSS) sampled while wrk sends (1) hits of one URL for BENCH_MEM_SECONDS (120 s: millions of
# requests) and (2) a flood of distinct URLs, each a miss stored, with CACHE_MEM_MAX_BYTES at
# 16 MiB (the store's bound must hold the process's growth too). The upstream is the demo's
# (`--demo-upstream`, in the same process). Prints one line per sample and the growth from the
# first sample after warm-up to the last; copy them into BENCHMARKS.md.
#   scripts/bench-memory.sh                       # 120 s per part
#   BENCH_MEM_SECONDS=30 scripts/bench-memory.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
secs=${BENCH_MEM_SECONDS:-120}
command -v wrk >/dev/null || {
  sudo=()
  [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  "${sudo[@]}" apt-get update -q </dev/null >/dev/null
  "${sudo[@]}" apt-get install -y -q --no-install-recommends wrk </dev/null >/dev/null
}
cargo build --quiet --release --manifest-path "$root/Cargo.toml" -p cachelet-cli
cachelet=${CARGO_TARGET_DIR:-$root/target}/release/cachelet
run=$(mktemp -d)
pid=
trap '[ -z "$pid" ] || kill "$pid" 2>/dev/null; rm -rf "$run"' EXIT
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

# One part: serve, warm up for 5 s, then sample the RSS every tenth of the run while wrk runs.
measure() { # NAME WRK_LUA [ENV...]
  local name=$1 lua=$2; shift 2
  local port
  port=$(free_port)
  env "$@" RUST_LOG=warn "$cachelet" serve --demo-upstream --listen "127.0.0.1:$port" \
    >"$run/$name.out" 2>"$run/$name.log" &
  pid=$!
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  wrk -t2 -c32 -d5s -s "$lua" "http://127.0.0.1:$port" >/dev/null
  local first
  first=$(rss_kb "$pid")
  printf '%s: after 5 s of warm-up: RSS %d KiB\n' "$name" "$first"
  wrk -t2 -c32 -d"${secs}s" -s "$lua" "http://127.0.0.1:$port" >"$run/$name.wrk" &
  local w=$! step=$((secs / 10)) last=$first
  for i in $(seq 10); do
    sleep "$step"
    last=$(rss_kb "$pid")
    printf '%s: %3d s: RSS %d KiB\n' "$name" $((i * step)) "$last"
  done
  wait "$w"
  local reqs
  reqs=$(awk '/requests in/ {print $1}' "$run/$name.wrk")
  printf '%s: %s requests in %d s; RSS %d -> %d KiB (%+d KiB)\n\n' "$name" "$reqs" "$secs" \
    "$first" "$last" $((last - first))
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  pid=
}

cat >"$run/hits.lua" <<'LUA'
request = function() return wrk.format("GET", "/users/1") end
LUA
cat >"$run/flood.lua" <<'LUA'
local n = 0
local id = math.random(1, 1000000000)
request = function()
  n = n + 1
  return wrk.format("GET", "/users/" .. id .. "-" .. n)
end
LUA
echo "# cachelet serve's memory, nobody scraping the metrics ($(nproc) cores, $(date -u +%F))"
measure hits "$run/hits.lua"
measure flood "$run/flood.lua" CACHE_MEM_MAX_BYTES=16777216
