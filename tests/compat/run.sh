#!/usr/bin/env bash
# Compatibility tests: the real LittleHorse Python client against a 3-node Halter cluster
# started by deploy/local-cluster.sh (tests/compat/test_cluster.py).
#
# Uses the venv of tests/venv.sh (shared with tests/wire). The server binary is $HALTER_BIN
# (default target/debug/halter, which the test command builds beforehand). Extra arguments go
# to pytest.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

source tests/venv.sh

HALTER_BIN="${HALTER_BIN:-target/debug/halter}"
case "$HALTER_BIN" in /*) ;; *) HALTER_BIN="$ROOT/$HALTER_BIN" ;; esac
if [ ! -x "$HALTER_BIN" ]; then
  echo "compat: no server binary at $HALTER_BIN (build it: cargo build -p halter-node --bin halter)" >&2
  exit 1
fi
export HALTER_BIN
# The readiness check of local-cluster.sh uses the same interpreter.
HALTER_PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"
export HALTER_PY

# -p no:cacheprovider: no .pytest_cache in the work tree.
exec "$PY" -m pytest -q -p no:cacheprovider tests/compat "$@"
