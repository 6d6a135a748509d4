#!/usr/bin/env bash
# `cachelet serve` protecting its upstream, in one run (the built-in policy, mem://):
# - a failing origin: an upstream answering 500 after 0.5 s; three waves of 50 concurrent
#   requests of one URL (the second right after the first, the third after the negative TTL of
#   1 s); how many reach the upstream;
# - a slow reader: one client asks for a 32 MiB answer and reads nothing of it past the head;
#   a second client asks for the same URL meanwhile (64 MiB stored at most: a stored miss): how
#   long it takes, against the same request alone.
# The upstream is Python's (standard library), on a free port.
#   scripts/bench-edge.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --quiet --release --manifest-path "$root/Cargo.toml" -p cachelet-cli
cachelet=${CARGO_TARGET_DIR:-$root/target}/release/cachelet
run=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$run"' EXIT
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done; }

up=$(free_port)
python3 - "$up" >"$run/up.log" 2>&1 <<'PY' &
import http.server, socketserver, sys, threading, time
asked = {"fail": 0}
lock = threading.Lock()
big = b"b" * (32 << 20)
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        if self.path.startswith("/fail"):
            with lock:
                asked["fail"] += 1
            time.sleep(0.5)
            body = b"failing\n"
            self.send_response(500)
        elif self.path.startswith("/big"):
            body = big
            self.send_response(200)
            self.send_header("Cache-Control", "max-age=600")
        else:
            body = str(asked["fail"]).encode()
            self.send_response(200)
            self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    request_queue_size = 256
S(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
pids+=($!)
port=$(free_port)
RUST_LOG=warn "$cachelet" serve --upstream "http://127.0.0.1:$up" --listen "127.0.0.1:$port" --max-body $((64 << 20)) \
  >"$run/serve.out" 2>"$run/serve.log" &
pids+=($!)
wait_port "$up"
wait_port "$port"
base=http://127.0.0.1:$port

echo "# cachelet serve protecting its upstream ($(nproc) cores, $(date -u +%F))"
wave() { seq 50 | xargs -P50 -I{} curl -s -o /dev/null -w '%{http_code}\n' "$base/fail" | sort | uniq -c | tr '\n' ' '; }
w1=$(wave)
w2=$(wave)
sleep 1.2
w3=$(wave)
asked=$(curl -s "http://127.0.0.1:$up/count")
echo "failing origin: 150 requests in three waves of 50 (answers: $w1| $w2| $w3): $asked upstream requests"

alone_s=$(curl -s -o /dev/null -w '%{time_total}' "$base/big?alone")
python3 - "$port" "$base" <<'PY'
import socket, subprocess, sys, time
port, base = int(sys.argv[1]), sys.argv[2]
slow = socket.create_connection(("127.0.0.1", port))
slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
slow.sendall(b"GET /big?shared HTTP/1.1\r\nhost: x\r\n\r\n")
head = slow.recv(12)
assert head.startswith(b"HTTP/1.1 200"), head
started = time.time()
out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download}",
                      "--max-time", "60", base + "/big?shared"], capture_output=True, text=True).stdout
took = time.time() - started
print(f"slow reader: a second reader of the same 32 MiB miss, while the first reads nothing: "
      f"{out.split()[0]}, {int(out.split()[1]) >> 20} MiB in {took:.2f} s", end="")
slow.close()
PY
echo " (the same request alone: ${alone_s} s)"
