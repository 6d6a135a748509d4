#!/usr/bin/env bash
# The memory of `cachelet serve` under load, with nobody scraping its metrics: its resident set
# (VmRSS) sampled while wrk sends (1) hits of one URL for BENCH_MEM_SECONDS (120 s: millions of
# requests) and (2) a flood of distinct URLs, each a miss stored, with CACHE_MEM_MAX_BYTES at
# 16 MiB (the store's bound must hold the process's growth too). The upstream is the demo's
# (`--demo-upstream`, in the same process). Prints one line per sample and the growth from the
# first sample after warm-up to the last; then (3) 40 concurrent misses of distinct 8 MiB
# answers (an upstream in Python serving them, with Content-Length or chunked): the peak
# resident set (VmHWM) above the idle one, against the bytes stored. Copy them into
# BENCHMARKS.md.
#   scripts/bench-memory.sh                       # 120 s per part
#   BENCH_MEM_SECONDS=30 scripts/bench-memory.sh
#   BENCH_MEM_PARTS=big scripts/bench-memory.sh    # some of: hits flood big
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
parts=" ${BENCH_MEM_PARTS:-hits flood big} "
[[ $parts != *" hits "* ]] || measure hits "$run/hits.lua"
[[ $parts != *" flood "* ]] || measure flood "$run/flood.lua" CACHE_MEM_MAX_BYTES=16777216

# Part 3: 40 concurrent misses of distinct 8 MiB answers, all stored (checked: each is a hit
# afterwards); the peak RSS above the idle one, over the bytes stored.
big() { # FRAMING (length | chunked)
  local framing=$1 up port
  up=$(free_port)
  port=$(free_port)
  python3 - "$up" "$framing" >"$run/big-up.log" 2>&1 <<'PY' &
import http.server, socketserver, sys
body = b"x" * (8 << 20)
chunked = sys.argv[2] == "chunked"
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200)
        self.send_header("Cache-Control", "max-age=600")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, len(body), 1 << 16):
                part = body[i:i + (1 << 16)]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
    def log_message(self, *a):
        pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
S(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
  local upid=$!
  CACHE_MEM_MAX_BYTES=$((1 << 30)) RUST_LOG=warn "$cachelet" serve --upstream "http://127.0.0.1:$up" \
    --listen "127.0.0.1:$port" >"$run/big.out" 2>"$run/big.log" &
  pid=$!
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$up") 2>/dev/null && break; sleep 0.1; done
  curl -s -o /dev/null "http://127.0.0.1:$port/warm"
  local idle
  idle=$(rss_kb "$pid")
  seq 40 | xargs -P40 -I{} curl -s -o /dev/null "http://127.0.0.1:$port/big/{}"
  sleep 1
  local hits
  hits=$(seq 40 | xargs -P8 -I{} curl -s -o /dev/null -D - "http://127.0.0.1:$port/big/{}" \
    | grep -c '^x-cache: HIT' || true)
  local peak last
  peak=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status")
  last=$(rss_kb "$pid")
  python3 - "$framing" "$idle" "$peak" "$last" "$hits" <<'PY'
import sys
framing, idle, peak, last, hits = sys.argv[1], *map(int, sys.argv[2:])
stored = hits * 8 << 10  # KiB
print(f"big-{framing}: 40 misses of 8 MiB, {hits} stored ({stored >> 10} MiB): idle RSS {idle >> 10} MiB, "
      f"peak {peak >> 10} MiB, after {last >> 10} MiB; peak above idle / bytes stored: "
      f"{(peak - idle) / max(stored, 1):.2f}x")
PY
  kill "$pid" "$upid"
  wait "$pid" 2>/dev/null || true
  wait "$upid" 2>/dev/null || true
  pid=
}
if [[ $parts == *" big "* ]]; then
  big length
  big chunked
fi
