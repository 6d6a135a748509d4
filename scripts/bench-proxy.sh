#!/usr/bin/env bash
# `cachelet serve` beside Varnish 7.1 and nginx proxy_cache, in one run on this machine:
# - hits: wrk -t2 -c64 -d15s over 64 URLs (1,024-byte JSON bodies from an nginx upstream),
#   after warming each URL twice; two rounds, the targets interleaved (the upstream directly,
#   Varnish with the default VCL and malloc, nginx proxy_cache with its lock, cachelet serve on
#   mem:// and on Redis, both with the Rust seed policy, whose GET /users/{user_id} is the route);
# - misses: every request a new URL (5 s), through each of them;
# - purges: POST /_cachelet/purge of one user's tag, then the next GET of it (a miss), on mem://
#   and Redis.
# Installs wrk, varnish and nginx-light from Debian's packages when missing.
#   scripts/bench-proxy.sh                          # 15 s per wrk run (BENCH_HTTP_SECONDS)
#   BENCH_HTTP_PARTS=misses,purges scripts/bench-proxy.sh  # some parts (hits, misses, purges)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
secs=${BENCH_HTTP_SECONDS:-15}
part() { [[ ,${BENCH_HTTP_PARTS:-hits,misses,purges}, == *,$1,* ]]; }
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v varnishd >/dev/null || missing+=(varnish)
command -v nginx >/dev/null || missing+=(nginx-light)
command -v redis-server >/dev/null || missing+=(redis-server)
if ((${#missing[@]})); then
  sudo=()
  [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -q </dev/null >/dev/null
  "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null >/dev/null
fi

"$root/scripts/build-policies.sh" seed-rust
cargo build --quiet --release --manifest-path "$root/Cargo.toml" -p cachelet-cli
cachelet=${CARGO_TARGET_DIR:-$root/target}/release/cachelet
policy=$root/build/policies/seed-rust.wasm

RUN=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$RUN/nginx-up/nginx.pid" ] && kill "$(cat "$RUN/nginx-up/nginx.pid")" 2>/dev/null
  [ -f "$RUN/nginx-cache/nginx.pid" ] && kill "$(cat "$RUN/nginx-cache/nginx.pid")" 2>/dev/null
  [ -f "$RUN/redis/redis.pid" ] && kill "$(cat "$RUN/redis/redis.pid")" 2>/dev/null
  pkill -f "varnishd -n $RUN/varnish" 2>/dev/null || true
  sleep 0.3
  rm -rf "$RUN"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done; echo "nothing on port $1" >&2; exit 1; }

UP=$(free_port); VP=$(free_port); NP=$(free_port); CP=$(free_port); CR=$(free_port); RP=$(free_port)
D=$RUN/data
mkdir -p "$D/www" "$RUN/nginx-up" "$RUN/nginx-cache" "$RUN/redis"
python3 -c 'import json; b = json.dumps({"id": 1, "name": "x" * 990}); print(b[:1024].ljust(1024), end="")' >"$D/www/user.json"
render() { sed -e "s#@RUN@#$RUN#g" -e "s#@D@#$D#g" -e "s#@UP@#$UP#g" -e "s#@CP@#$NP#g" "$1"; }
render "$root/benches/http/nginx-upstream.conf.in" >"$RUN/nginx-up.conf"
render "$root/benches/http/nginx-cache.conf.in" >"$RUN/nginx-cache.conf"
nginx -c "$RUN/nginx-up.conf"
nginx -c "$RUN/nginx-cache.conf"
varnishd -n "$RUN/varnish" -a "127.0.0.1:$VP" -b "127.0.0.1:$UP" -s malloc,256m >/dev/null
redis-server --port "$RP" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
  --dir "$RUN/redis" --pidfile "$RUN/redis/redis.pid" --logfile "$RUN/redis/redis.log"
export CACHELET_ADMIN_TOKEN=bench-token
export CACHELET_COMPILE_CACHE=$root/build/compile-cache
RUST_LOG=warn "$cachelet" serve --upstream "http://127.0.0.1:$UP" --policy "$policy" \
  --listen "127.0.0.1:$CP" 2>"$RUN/cachelet-mem.log" &
pids+=($!)
CACHE_URL=redis://127.0.0.1:$RP/0 RUST_LOG=warn "$cachelet" serve --upstream "http://127.0.0.1:$UP" \
  --policy "$policy" --listen "127.0.0.1:$CR" 2>"$RUN/cachelet-redis.log" &
pids+=($!)
for p in $UP $VP $NP $CP $CR; do wait_port "$p"; done

upstream_count() { curl -s "http://127.0.0.1:$UP/nginx_status" | sed -n 's/^ *[0-9]* [0-9]* \([0-9]*\).*/\1/p'; }
warm() { for _ in 1 2; do for i in $(seq 64); do curl -s -o /dev/null "http://127.0.0.1:$1/users/$i"; done; done; }
# wrk's summary: req/s p50 p99 (ms)
measure() { # PORT SCRIPT
  wrk -t2 -c64 -d"${secs}s" --latency -s "$2" "http://127.0.0.1:$1/" | python3 -c '
import re, sys
t = sys.stdin.read()
if "Requests/sec" not in t or "50%" not in t:
    sys.exit("wrk: " + t)
def ms(s):
    v, u = re.match(r"([\d.]+)([a-z]+)", s).groups()
    return float(v) * {"us": 0.001, "ms": 1, "s": 1000}[u]
rps = float(re.search(r"Requests/sec:\s*([\d.]+)", t).group(1))
p50 = ms(re.search(r"50%\s+(\S+)", t).group(1))
p99 = ms(re.search(r"99%\s+(\S+)", t).group(1))
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
print(f"{rps:.0f} {p50:.2f} {p99:.2f} {errors.group(1) if errors else 0}")'
}

echo "# cachelet serve beside Varnish and nginx, $(date -u +%Y-%m-%d), $(nproc) vCPU, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "# $(varnishd -V 2>&1 | head -1); $(nginx -v 2>&1); wrk -t2 -c64 -d${secs}s over 64 URLs, 1 KB bodies"
if part hits; then
targets=("upstream nginx directly:$UP" "Varnish 7.1, malloc:$VP" "nginx proxy_cache:$NP" "cachelet serve, mem://:$CP" "cachelet serve, Redis:$CR")
for t in "${targets[@]}"; do warm "${t##*:}"; done
declare -A result
for round in 1 2; do
  for t in "${targets[@]}"; do
    name=${t%:*} port=${t##*:}
    before=$(upstream_count)
    read -r rps p50 p99 errs < <(measure "$port" "$root/benches/http/users64.lua")
    after=$(upstream_count)
    # The status request itself counts one.
    result["$name,$round"]="$rps ($p50 / $p99)"
    echo "# round $round: $name: $rps req/s, p50 $p50 ms, p99 $p99 ms, non-2xx $errs, upstream requests $((after - before - 1))"
  done
done
echo
echo "## Hits: req/s (p50 / p99 ms), two rounds"
echo "| target | round 1 | round 2 |"
echo "|---|---|---|"
for t in "${targets[@]}"; do
  name=${t%:*}
  echo "| $name | ${result["$name,1"]} | ${result["$name,2"]} |"
done
fi

# Misses: every request a URL never asked before.
cat >"$RUN/unique.lua" <<'EOF'
local threads = 0
setup = function(thread) threads = threads + 1; thread:set("id", threads) end
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/users/" .. (id * 100000000 + n))
end
EOF
if part misses; then
secs_miss=$(( secs < 5 ? secs : 5 ))
echo
echo "## Misses: a new URL per request (wrk -t2 -c64 -d${secs_miss}s), req/s (p50 / p99 ms)"
echo "| target | req/s (p50 / p99) |"
echo "|---|---|"
for t in "upstream nginx directly:$UP" "Varnish 7.1, malloc:$VP" "nginx proxy_cache:$NP" "cachelet serve, mem://:$CP" "cachelet serve, Redis:$CR"; do
  name=${t%:*} port=${t##*:}
  read -r rps p50 p99 _ < <(secs=$secs_miss measure "$port" "$RUN/unique.lua")
  echo "| $name | $rps ($p50 / $p99) |"
done
fi

# Purges: the admin call's time, then the next GET of that user must be a miss.
if part purges; then
purge() { # PORT
  python3 - "$1" <<'EOF'
import http.client, json, statistics, sys, time
port = int(sys.argv[1])
c = http.client.HTTPConnection("127.0.0.1", port)
def get(i):
    c.request("GET", f"/users/{i}")
    r = c.getresponse(); r.read()
    return r.getheader("x-cache")
times, misses = [], 0
for n in range(200):
    i = 1000 + n
    get(i); assert get(i) == "HIT"
    body = json.dumps({"tags": [f"user:{i}"]})
    t0 = time.perf_counter()
    c.request("POST", "/_cachelet/purge", body, {"Authorization": "Bearer bench-token"})
    r = c.getresponse(); r.read()
    times.append((time.perf_counter() - t0) * 1000)
    assert r.status == 200, r.status
    misses += get(i) == "MISS"
times.sort()
print(f"{statistics.median(times):.2f} {times[int(len(times) * 0.99)]:.2f} {misses}")
EOF
}
echo
echo "## Purge by tag: admin call returned -> the next GET is a miss (200 purges, one connection)"
echo "| backend | p50 ms | p99 ms | next GET a miss |"
echo "|---|---|---|---|"
for t in "mem://:$CP" "Redis:$CR"; do
  read -r p50 p99 misses < <(purge "${t##*:}")
  echo "| ${t%:*} | $p50 | $p99 | $misses / 200 |"
done
fi
