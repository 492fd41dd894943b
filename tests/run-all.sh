#!/usr/bin/env bash
# Every test Halter has, on a fresh machine: the README's test command and what .ci/run calls.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "== wire compatibility with the LittleHorse client"
bash tests/wire/run.sh

echo "== cargo nextest (unit, scenario and property tests)"
cargo nextest run --workspace --all-targets --no-fail-fast
