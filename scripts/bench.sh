#!/usr/bin/env bash
# The benchmarks, side by side in one run: for each backend, the modelled library (svc-infra,
# installed into a venv from PyPI by its own script) first, then cachelet's, whose report prints
# the ratios.
#   scripts/bench.sh                      # everything: mem://, Redis, guest languages
#   BENCH_ONLY=mem,redis scripts/bench.sh # some parts (mem, redis, languages, lifecycle, wallclock, proxy, instructions;
#                                         # the mem part also takes its sections:
#                                         # memory,policy,hit,invalidation)
# `instructions` (not in the default run: it needs valgrind) counts the instructions of a hit
# with callgrind — cachelet beside bare moka and bare redis-rs — which, unlike wall-clock
# figures on a shared VM, repeat to the instruction: the figure to compare two commits by.
# Redis: a redis-server on a free loopback port, started here and stopped at the end.
# Results: build/bench/*.json and the report on stdout (copy it into BENCHMARKS.md).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
anchor_dir=${ANCHOR_DIR:-$root/../shared/anchors/svc-infra}
export VENV=${VENV:-$root/build/anchor-venv}
out=$root/build/bench
mkdir -p "$out"
wants() { [ -z "${BENCH_ONLY:-}" ] || [[ ,$BENCH_ONLY, == *,$1,* ]]; }
anchor() { # URL JSON SECTIONS...
  local url=$1 json=$2; shift 2
  if [ -f "$anchor_dir/run.sh" ]; then
    echo "# anchor: svc-infra on $url (sections $*)" >&2
    bash "$anchor_dir/run.sh" "$url" --sections "$@" --json "$json" >/dev/null
    echo "--anchor $json"
  else
    echo "# anchor not found at $anchor_dir: ratios against it are skipped" >&2
  fi
}

"$root/scripts/build-policies.sh" seed-rust
cargo build --quiet --release --manifest-path "$root/Cargo.toml" -p cachelet-bench --bin cachelet-bench
bench=$root/target/release/cachelet-bench
policy=$root/build/policies/seed-rust.wasm
echo "# cachelet, $(date -u +%Y-%m-%d), $(nproc) vCPU, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"

if wants mem || [[ ${BENCH_ONLY:-} =~ memory|policy|hit|invalidation ]]; then
  read -r -a anchor_args <<<"$(anchor mem:// "$out/anchor-mem.json" ac | grep -- '^--anchor' || true)"
  # One process per section: none runs on a heap another left behind (the memory section
  # frees 100,000 entries).
  for section in memory policy hit invalidation; do
    wants mem || [[ ,$BENCH_ONLY, == *,$section,* ]] || continue
    BENCH_ONLY=$section "$bench" "$policy" "${anchor_args[@]}" --json "$out/cachelet-$section.json"
  done
fi

if wants redis; then
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  dir=$(mktemp -d)
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
    --dir "$dir" --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
  trap 'kill "$(cat "$dir/redis.pid" 2>/dev/null)" 2>/dev/null; rm -rf "$dir"' EXIT
  for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  url=redis://127.0.0.1:$port/0
  read -r -a anchor_args <<<"$(anchor "$url" "$out/anchor-redis.json" abce | grep -- '^--anchor' || true)"
  rps() { redis-benchmark -p "$port" -t get "$@" -q | sed -n 's/.*GET: \([0-9.]*\) requests per second.*/\1/p' | tail -1; }
  c1=$(rps -c 1 -n 20000)
  c64=$(rps -c 64 -n 200000)
  echo "# redis-benchmark -t get: -c 1 $c1/s, -c 64 $c64/s"
  # --redis-pid: the held-invalidation part freezes the server (SIGSTOP) and resumes it.
  "$bench" "$policy" --redis "$url" --redis-pid "$(cat "$dir/redis.pid")" "${anchor_args[@]}" \
    --redis-benchmark-c1 "$c1" --redis-benchmark-c64 "$c64" --json "$out/cachelet-redis.json"
fi

if [[ ,${BENCH_ONLY:-}, == *,instructions,* ]]; then
  command -v valgrind >/dev/null || { echo "instructions: valgrind is not installed" >&2; exit 1; }
  cargo build --quiet --release --manifest-path "$root/Cargo.toml" -p cachelet-bench --bin hitcount
  export CACHELET_COMPILE_CACHE=$out/compile-cache-valgrind
  count() { valgrind --tool=callgrind --callgrind-out-file=/dev/null "$root/target/release/hitcount" "$@" 2>&1 |
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p'; }
  per_hit() { # WHAT N [URL]: instructions per hit, the setup (a run with N = 0) taken out
    local zero full
    count "$1" 0 "$policy" ${3:-} >/dev/null # compiles the policy into the cache once
    zero=$(count "$1" 0 "$policy" ${3:-}); full=$(count "$1" "$2" "$policy" ${3:-})
    echo $(((full - zero) / $2))
  }
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  idir=$(mktemp -d)
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
    --dir "$idir" --pidfile "$idir/redis.pid" --logfile "$idir/redis.log"
  for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  mem=$(per_hit cachelet 20000); moka=$(per_hit moka 20000)
  observed=$(per_hit observed 20000); macro=$(per_hit macro 20000)
  rhit=$(per_hit cachelet 5000 "redis://127.0.0.1:$port/0"); rbare=$(per_hit redis 5000 "redis://127.0.0.1:$port/0")
  kill "$(cat "$idir/redis.pid")"; rm -rf "$idir"
  echo "## Instructions per hit (callgrind, 1 task)"
  echo "| | cachelet | bare | cachelet / bare |"
  echo "|---|---|---|---|"
  echo "| mem:// (bare: moka get + deserialize) | $mem | $moka | $(python3 -c "print(f'{$mem/$moka:.3f}x')") |"
  echo "| Redis (bare: redis-rs GET + deserialize) | $rhit | $rbare | $(python3 -c "print(f'{$rhit/$rbare:.3f}x')") |"
  echo "## The same mem:// hit, observed and through the macro (instructions per hit)"
  echo "| | per hit | / Cache::read |"
  echo "|---|---|---|"
  echo "| Cache::read | $mem | 1.000x |"
  echo "| with a Prometheus recorder and a fmt subscriber at INFO | $observed | $(python3 -c "print(f'{$observed/$mem:.3f}x')") |"
  echo "| #[cachelet::read] on the installed cache | $macro | $(python3 -c "print(f'{$macro/$mem:.3f}x')") |"
fi

# The mem:// hit path by the clock: Cache::read, the same with a Prometheus recorder and a fmt
# subscriber at INFO, and through #[cachelet::read] — one process each (a recorder is
# process-wide), taken in turn for 15 rounds, the order rotated each round, so that what else
# the machine does weighs on all three alike; each round's ratios, then their median.
if wants wallclock; then
  echo "# the mem:// hit path, wall clock"
  cargo build --quiet --release --manifest-path "$root/Cargo.toml" -p cachelet-bench --bin hitcount
  export CACHELET_COMPILE_CACHE=$out/compile-cache-wallclock
  "$root/target/release/hitcount" cachelet 1000 "$policy" >/dev/null # compiles the policy once
  kinds=(cachelet observed macro)
  : >"$out/wallclock.tsv"
  for round in $(seq 0 14); do
    for i in 0 1 2; do
      what=${kinds[$(((round + i) % 3))]}
      ns=$("$root/target/release/hitcount" "$what" 2000000 "$policy" | sed -n 's/ ns\/hit//p')
      printf '%s\t%s\t%s\n' "$round" "$what" "$ns" >>"$out/wallclock.tsv"
    done
  done
  python3 - "$out/wallclock.tsv" <<'PY'
import statistics, sys
rounds = {}
for line in open(sys.argv[1]):
    r, what, ns = line.split()
    rounds.setdefault(r, {})[what] = float(ns)
med = lambda xs: statistics.median(xs)
base = med([r["cachelet"] for r in rounds.values()])
print(f"## The mem:// hit path by the clock ({len(rounds)} rounds, ns per hit, 2,000,000 hits a process)")
print("| | median ns/hit | median of the rounds' ratio to Cache::read | ratio range |")
print("|---|---|---|---|")
print(f"| Cache::read | {base:.1f} | 1.000x | |")
for what, label in [("observed", "with a Prometheus recorder and a fmt subscriber at INFO"),
                    ("macro", "#[cachelet::read] on the installed cache")]:
    ratios = [r[what] / r["cachelet"] for r in rounds.values()]
    print(f"| {label} | {med([r[what] for r in rounds.values()]):.1f} | {med(ratios):.3f}x | "
          f"{min(ratios):.3f}-{max(ratios):.3f} |")
PY
fi

# Guest languages: the seed policy rebuilt from source in Rust, Python, JavaScript and C, then
# sized, loaded (compiled, then precompiled) and called.
if wants languages; then
  echo "# guest languages"
  touch "$root/examples/policies/seed-rust/src/lib.rs"
  rm -f "$root"/build/policies/seed-{python,js,c}.wasm
  "$root/scripts/build-policies.sh" seed-rust seed-python seed-js seed-c
  cargo build --quiet --release --manifest-path "$root/Cargo.toml" -p cachelet-bench --bin languages
  "$root/target/release/languages" "$root/build/policies" --json "$out/languages.json"
fi

# The policy lifecycle: a file landing in a watched directory to its rule served (Rust cold and
# precompiled, Python precompiled), a push to two hosts serving it (Redis), read throughput
# during 20 swaps against steady state.
if wants lifecycle; then
  echo "# policy lifecycle"
  "$root/scripts/build-policies.sh" lifecycle-a lifecycle-b seed-python
  cargo build --quiet --release --manifest-path "$root/Cargo.toml" -p cachelet-bench --bin lifecycle
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  ldir=$(mktemp -d)
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
    --dir "$ldir" --pidfile "$ldir/redis.pid" --logfile "$ldir/redis.log"
  for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  "$root/target/release/lifecycle" "$root/build/policies" --redis "redis://127.0.0.1:$port/0"
  kill "$(cat "$ldir/redis.pid")"; rm -rf "$ldir"
fi

# cachelet serve beside Varnish 7.1 and nginx proxy_cache: hits, misses, purges (installs wrk,
# varnish and nginx-light from Debian's packages when missing).
if wants proxy; then
  "$root/scripts/bench-proxy.sh"
fi

# cachelet serve's resident memory under millions of hits and a flood of distinct URLs, with
# nobody scraping its metrics, and for 40 concurrent misses of 8 MiB answers.
if wants serve-memory; then
  "$root/scripts/bench-memory.sh"
fi

# cachelet serve protecting its upstream: a failing origin under waves of requests, a slow
# reader beside another reader of the same miss.
if wants serve-edge; then
  "$root/scripts/bench-edge.sh"
fi
