#!/usr/bin/env bash
# Wire-compatibility check of proto/ against the real LittleHorse Python client.
#
# Creates a virtualenv (default target/wire-venv, override with
# HALTER_WIRE_VENV) on first use, installs the pinned littlehorse-client and a
# matching grpcio-tools (whose protoc compiles our protos), then runs
# tests/wire/check_wire.py from the repository root.
#
# Pins: littlehorse-client 1.3.0 pins grpcio==1.75.1 and protobuf==6.33.5;
# grpcio-tools X requires grpcio>=X, so it must be exactly 1.75.1 (it accepts
# protobuf>=6.31.1,<7).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

LH_CLIENT_VERSION="1.3.0"
GRPCIO_TOOLS_VERSION="1.75.1"
VENV="${HALTER_WIRE_VENV:-target/wire-venv}"
PY="$VENV/bin/python"

if [ ! -x "$PY" ]; then
  echo "wire: creating venv at $VENV" >&2
  python3 -m venv "$VENV"
fi

have_deps() {
  "$PY" - "$LH_CLIENT_VERSION" "$GRPCIO_TOOLS_VERSION" <<'PYEOF' >/dev/null 2>&1
import sys
from importlib.metadata import version
assert version("littlehorse-client") == sys.argv[1]
assert version("grpcio-tools") == sys.argv[2]
import grpc_tools.protoc  # noqa: F401
import littlehorse.model  # noqa: F401
PYEOF
}

if ! have_deps; then
  echo "wire: installing littlehorse-client==$LH_CLIENT_VERSION grpcio-tools==$GRPCIO_TOOLS_VERSION" >&2
  "$PY" -m pip install --quiet --disable-pip-version-check \
    "littlehorse-client==$LH_CLIENT_VERSION" \
    "grpcio-tools==$GRPCIO_TOOLS_VERSION"
  "$PY" -m pip check >&2
fi

exec "$PY" tests/wire/check_wire.py "$@"
