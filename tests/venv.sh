# Sourced by tests/wire/run.sh and tests/compat/run.sh: the one Python venv the tests use, with
# the real LittleHorse client. Sets PY. Creates the venv (default target/wire-venv, override with
# HALTER_WIRE_VENV) and installs the pinned packages on first use only.
#
# Pins: littlehorse-client 1.3.0 pins grpcio==1.75.1 and protobuf==6.33.5; grpcio-tools X requires
# grpcio>=X, so it must be exactly 1.75.1 (it accepts protobuf>=6.31.1,<7). pytest runs tests/compat.

LH_CLIENT_VERSION="1.3.0"
GRPCIO_TOOLS_VERSION="1.75.1"
PYTEST_VERSION="8.4.2"
VENV="${HALTER_WIRE_VENV:-target/wire-venv}"
PY="$VENV/bin/python"

if [ ! -x "$PY" ]; then
  echo "venv: creating $VENV" >&2
  python3 -m venv "$VENV"
fi

if ! "$PY" - "$LH_CLIENT_VERSION" "$GRPCIO_TOOLS_VERSION" "$PYTEST_VERSION" <<'PYEOF' >/dev/null 2>&1
import sys
from importlib.metadata import version
assert version("littlehorse-client") == sys.argv[1]
assert version("grpcio-tools") == sys.argv[2]
assert version("pytest") == sys.argv[3]
import grpc_tools.protoc  # noqa: F401
import littlehorse.model  # noqa: F401
PYEOF
then
  echo "venv: installing littlehorse-client==$LH_CLIENT_VERSION grpcio-tools==$GRPCIO_TOOLS_VERSION pytest==$PYTEST_VERSION" >&2
  "$PY" -m pip install --quiet --disable-pip-version-check \
    "littlehorse-client==$LH_CLIENT_VERSION" \
    "grpcio-tools==$GRPCIO_TOOLS_VERSION" \
    "pytest==$PYTEST_VERSION"
  "$PY" -m pip check >&2
fi
