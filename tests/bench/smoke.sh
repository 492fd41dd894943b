#!/usr/bin/env bash
# A short run of halter-bench (W1, W2, W3) against a 3-node cluster of the debug build: proves
# the load generator works end to end. Not a measurement: the figures it prints mean nothing
# on a debug build; crates/bench/compare.sh is where benchmarks are run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
source tests/venv.sh

export HALTER_BIN="${HALTER_BIN:-$ROOT/target/debug/halter}"
export HALTER_PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"
export HALTER_CLUSTER_DIR="$(mktemp -d)/cluster"
BENCH="${HALTER_BENCH:-$ROOT/target/debug/halter-bench}"
trap 'deploy/local-cluster.sh down --wipe >/dev/null 2>&1 || true; rm -rf "$(dirname "$HALTER_CLUSTER_DIR")"' EXIT

EPS="$(deploy/local-cluster.sh up | paste -sd, -)"
PIDS="$(cat "$HALTER_CLUSTER_DIR"/node*.pid | paste -sd, -)"
# --threads 1: the single-threaded generator compare.sh uses for W2.
"$BENCH" smoke --threads 1 --endpoints "$EPS" --pids "$PIDS" --conns 1
