#!/usr/bin/env bash
# Wire-compatibility check of proto/ against the real LittleHorse Python client.
#
# The venv (tests/venv.sh) has the pinned littlehorse-client and a matching
# grpcio-tools, whose protoc compiles our protos; then tests/wire/check_wire.py
# runs from the repository root.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

source tests/venv.sh

exec "$PY" tests/wire/check_wire.py "$@"
