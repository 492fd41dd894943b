#!/usr/bin/env bash
# Compatibility tests: the real LittleHorse Python client against a 3-node Halter cluster
# started by deploy/local-cluster.sh (tests/compat/test_cluster.py).
#
# Uses the venv of tests/wire/run.sh (default target/wire-venv, override with HALTER_WIRE_VENV),
# which normally exists already in the same CI pass; if it is missing it is created with the
# same pins, and pytest is added to it when absent. The server binary is $HALTER_BIN (default
# target/debug/halter, which the test command builds beforehand). Extra arguments go to pytest.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

LH_CLIENT_VERSION="1.3.0"
GRPCIO_TOOLS_VERSION="1.75.1"
VENV="${HALTER_WIRE_VENV:-target/wire-venv}"
PY="$VENV/bin/python"

if [ ! -x "$PY" ]; then
  echo "compat: creating venv at $VENV" >&2
  python3 -m venv "$VENV"
fi

if ! "$PY" - "$LH_CLIENT_VERSION" <<'PYEOF' >/dev/null 2>&1
import sys
from importlib.metadata import version
assert version("littlehorse-client") == sys.argv[1]
import grpc  # noqa: F401
import littlehorse.model  # noqa: F401
PYEOF
then
  echo "compat: installing littlehorse-client==$LH_CLIENT_VERSION grpcio-tools==$GRPCIO_TOOLS_VERSION" >&2
  "$PY" -m pip install --quiet --disable-pip-version-check \
    "littlehorse-client==$LH_CLIENT_VERSION" \
    "grpcio-tools==$GRPCIO_TOOLS_VERSION"
fi

if ! "$PY" -c 'import pytest' >/dev/null 2>&1; then
  echo "compat: installing pytest into $VENV" >&2
  "$PY" -m pip install --quiet --disable-pip-version-check pytest
fi

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
