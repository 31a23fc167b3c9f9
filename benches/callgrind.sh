#!/usr/bin/env bash
# Userland instructions per request under callgrind: a deterministic figure for comparing
# builds on a noisy machine (CPU time varies by ±30 % here; instruction counts by < 1 %).
#
#   benches/callgrind.sh [--no-build] [SECS]     (needs valgrind, wrk, curl)
#
# Builds the release binaries, starts the simulated provider, then runs the bare proxy and the
# gateway (every layer in memory, the load benchmark's config) under callgrind in turn. Each
# gets 2 s of warm-up at 16 connections, its counters are zeroed, then SECS (default 3) of
# load; the dump divided by the requests wrk completed is the figure. Kernel work is not
# counted: compare with CPU time per request from benches/load.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
build=1
if [[ "${1:-}" == "--no-build" ]]; then build=0; shift; fi
secs=${1:-3}
for tool in valgrind callgrind_control callgrind_annotate wrk curl; do
  command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install -y valgrind wrk curl)" >&2; exit 2; }
done
if (( build )); then
  cargo build --quiet --release -p rampart-bench --bins -p full_gateway --bin full_gateway
fi
rel=${CARGO_TARGET_DIR:-target}/release
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
body='{"model":"m0","max_tokens":16,"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Summarise the benefits of a gateway in front of LLM providers."}]}'

mock_port=$(free_port)
"$rel/bench_mock" --listen "127.0.0.1:$mock_port" --threads 1 >/dev/null 2>&1 &
pids+=($!)
# The load benchmark's gateway config (benches/load.py), with this run's simulated provider.
gateway_toml=$(python3 -c 'import sys; sys.path.insert(0, "benches"); import load; print(load.gateway_config(sys.argv[1], "gateway", [("m0", int(sys.argv[2]))]))' "$work" "$mock_port")

measure() {
  local name=$1 slug=$2; shift 2
  local port; port=$(free_port)
  RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$work/$slug.%p" "$@" --listen "127.0.0.1:$port" \
    >"$work/$slug.log" 2>&1 &
  local vp=$!
  pids+=("$vp")
  local url="http://127.0.0.1:$port/v1/chat/completions"
  for _ in $(seq 200); do
    curl -sf -o /dev/null -X POST "$url" -H 'content-type: application/json' -d "$body" && break
    sleep 0.2
  done
  RAMPART_BODY="$body" wrk -t1 -c16 -d2s -s benches/post.lua "$url" >/dev/null
  callgrind_control -z "$vp" >/dev/null 2>&1
  RAMPART_BODY="$body" wrk -t1 -c16 -d"${secs}s" -s benches/post.lua "$url" >"$work/$slug.wrk"
  callgrind_control -d "$vp" >/dev/null 2>&1
  sleep 0.5
  local n ir dump
  n=$(grep -oE 'requests=[0-9]+' "$work/$slug.wrk" | cut -d= -f2)
  dump=$(ls -t "$work/$slug".*.1 | head -1)
  ir=$(callgrind_annotate "$dump" 2>/dev/null | grep -m1 'PROGRAM TOTALS' | awk '{gsub(",","",$1); print $1}')
  kill "$vp" 2>/dev/null || true
  wait "$vp" 2>/dev/null || true
  printf '| %s | %d | %d |\n' "$name" "$n" "$(( ir / n ))"
}

echo "| target | requests measured | instructions per request |"
echo "|---|---|---|"
measure "bare proxy" bare "$rel/bare_proxy" --upstream "127.0.0.1:$mock_port"
measure "gateway (memory)" gateway "$rel/full_gateway" --config "$gateway_toml"
