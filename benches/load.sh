#!/usr/bin/env bash
# Load benchmark: the simulated provider direct, a bare hyper proxy, and full_gateway (all layers
# in memory), side by side in one run; then RSS with 1,000 open streams. See benches/README.md.
#
#   benches/load.sh [--rounds 3] [--secs 5] [--redis] [--litellm] [--quick]
#   benches/load.sh soak [--soak-secs 120] [--tenants 100000]
#
# Needs wrk (apt-get install -y wrk), taskset and python3. Builds release binaries first.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 benches/load.py "$@"
