#!/usr/bin/env bash
# Load benchmark: full_gateway vs calling the simulated provider directly, in the same run.
#
#   benches/load.sh [rounds=3] [seconds=5]
#
# The simulated provider (zero latency) runs as its own process over loopback; the gateway
# forwards to it as an OpenAI-compatible HTTP provider. wrk drives both with the same request.
# Pinning: gateway on CPU 0, provider and wrk on CPU 1 (2-core machine). Reports medians of the
# rounds: latency with one connection (sequential requests: the added latency), throughput with
# 32 connections, and the gateway's own CPU time per request (from /proc).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
secs=${2:-5}
command -v wrk >/dev/null || { echo "wrk not found: apt-get install -y wrk" >&2; exit 1; }

cargo build --quiet --release -p rampart-mock --example mock_server
cargo build --quiet --release -p full_gateway --bin full_gateway

work=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mport=$(free_port); gport=$(free_port)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

taskset -c 1 target/release/examples/mock_server --listen "127.0.0.1:$mport" --threads 1 >"$work/mock.log" 2>&1 &
pids+=($!)
# The full stack in memory: tenant limits, cache, router, fallback, per-target limits, breaker.
# Limits are set high enough never to refuse; the request has no temperature, so the cache
# computes its decision and bypasses.
cat >"$work/gateway.toml" <<TOML
[rate_limits.tenant]
limits = { requests_per_minute = 100000000, tokens_per_minute = 100000000000, concurrency = 100000 }

[cache]
ttl = "10m"

[[providers]]
name = "sim-http"
kind = "openai"
base_url = "http://127.0.0.1:$mport/v1"

[[models]]
name = "gpt-4.1"
provider = "sim-http"
price = { input = 2.00, cached_input = 0.50, output = 8.00 }
context_window = 128000
tier = "complex"
limits = { requests_per_minute = 100000000, tokens_per_minute = 100000000000 }
TOML
RUST_LOG=warn taskset -c 0 target/release/full_gateway --config "$work/gateway.toml" --listen "127.0.0.1:$gport" >"$work/gw.log" 2>&1 &
gpid=$!
pids+=($gpid)
for _ in $(seq 1 100); do
  if curl -sf "http://127.0.0.1:$gport/health" >/dev/null && curl -sf -o /dev/null -X POST "http://127.0.0.1:$mport/v1/chat/completions" -d '{"model":"gpt-4.1","messages":[{"role":"user","content":"x"}]}'; then break; fi
  sleep 0.1
done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
run() { # name url connections -> RESULT line (+ cpu µs/request for the gateway)
  local name=$1 url=$2 conns=$3
  local before after
  before=$(cpu_ticks "$gpid")
  local out
  out=$(taskset -c 1 wrk -t1 -c"$conns" -d"${secs}s" -s benches/post.lua "$url/v1/chat/completions" | grep '^RESULT')
  after=$(cpu_ticks "$gpid")
  echo "$name c=$conns ticks=$((after - before)) $out"
}

# Warm-up.
taskset -c 1 wrk -t1 -c8 -d2s -s benches/post.lua "http://127.0.0.1:$gport/v1/chat/completions" >/dev/null
{
  for r in $(seq 1 "$rounds"); do
    run direct "http://127.0.0.1:$mport" 1
    run gateway "http://127.0.0.1:$gport" 1
    run direct "http://127.0.0.1:$mport" 32
    run gateway "http://127.0.0.1:$gport" 32
  done
} | tee "$work/results.txt"

python3 - "$work/results.txt" "$(getconf CLK_TCK)" <<'PY'
import re, statistics, sys
rows = {}
tck = int(sys.argv[2])
for line in open(sys.argv[1]):
    name, c = line.split()[0], int(re.search(r"c=(\d+)", line).group(1))
    f = dict((k, float(v)) for k, v in re.findall(r"(\w+)=([\d.]+)", line))
    f["cpu_us"] = f["ticks"] * 1e6 / tck / max(f["requests"], 1) if name == "gateway" else 0.0
    rows.setdefault((name, c), []).append(f)
med = lambda k, rs: statistics.median(r[k] for r in rs)
print("\nMedians of %d rounds (latency in µs):" % len(rows[("direct", 1)]))
print("%-8s %4s %10s %8s %8s %8s %12s %8s" % ("target", "conn", "req/s", "p50", "p90", "p99", "gw CPU/req", "errors"))
for (name, c), rs in sorted(rows.items(), key=lambda x: (x[0][1], x[0][0])):
    print("%-8s %4d %10.0f %8.0f %8.0f %8.0f %12s %8.0f" % (
        name, c, med("rps", rs), med("p50", rs), med("p90", rs), med("p99", rs),
        ("%.1f µs" % med("cpu_us", rs)) if name == "gateway" else "-", med("errors", rs)))
for c in (1, 32):
    d, g = rows[("direct", c)], rows[("gateway", c)]
    print("c=%-3d added latency p50 %+.0f µs, p99 %+.0f µs; throughput ratio gateway/direct %.2f" % (
        c, med("p50", g) - med("p50", d), med("p99", g) - med("p99", d), med("rps", g) / med("rps", d)))
PY
