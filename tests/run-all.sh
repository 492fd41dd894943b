#!/usr/bin/env bash
# Every test Halter has, on a fresh machine: the README's test command and what .ci/run calls.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "== wire compatibility with the LittleHorse client"
bash tests/wire/run.sh

echo "== the deterministic core depends on no async runtime, RPC, Raft or RNG crate"
if cargo tree -p halter-state-machine -e normal --prefix none | grep -E '^(madsim-)?(tokio|tonic|rand|openraft) '; then
  echo "crates/state-machine must not depend on the crates above" >&2
  exit 1
fi

echo "== cargo nextest (unit, scenario, property and real-cluster tests)"
cargo build --workspace --bins
cargo nextest run --workspace --all-targets --no-fail-fast

echo "== halterctl against a real node"
bash tests/cli/smoke.sh

echo "== the real LittleHorse Python client against a 3-node cluster"
HALTER_BIN=target/debug/halter bash tests/compat/run.sh

echo "== halter-bench smoke run (the load generator works; no figures)"
bash tests/bench/smoke.sh

echo "== deterministic simulation of the whole cluster under faults"
bash tests/simulation/run.sh
