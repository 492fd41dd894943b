#!/usr/bin/env bash
# A local three-node Halter cluster on 127.0.0.1, for trying things out and for tests.
#
#   deploy/local-cluster.sh up            start (or keep) the cluster; print each node's client
#                                         address (host:port), one per line, and nothing else
#   deploy/local-cluster.sh status        per node: pid, alive or not, client address
#                                         (exit 0 when all three are alive, 3 otherwise)
#   deploy/local-cluster.sh down [--wipe] stop the nodes this script started; --wipe also deletes
#                                         their data, logs and the recorded addresses
#
# Environment:
#   HALTER_BIN          server binary to run; if unset, target/release/halter, (re)built with
#                       cargo when missing or older than any file under crates/ or proto/
#   HALTER_CLUSTER_DIR  state directory (default .halter-cluster, relative to the current
#                       directory): node{1,2,3}/ data, node{N}.log, node{N}.pid, cluster.env
#   HALTER_BASE_PORT    fixed ports: client addresses BASE..BASE+2, peer addresses
#                       BASE+10..BASE+12 (default: free ports below the ephemeral range)
#   HALTER_PY           python with grpcio, for the readiness check
#                       (default target/wire-venv/bin/python, created by tests/wire/run.sh)
#   HALTER_UP_TIMEOUT   seconds `up` waits for a leader to serve on every node (default 30)
#   HALTER_STOP_TIMEOUT seconds `down` waits after SIGTERM before SIGKILL (default 10)
#   RUST_LOG            passed to the nodes (default info,openraft=warn)
#
# The addresses are chosen once and recorded in cluster.env: Raft keeps peer addresses in its
# membership, so a cluster restarted on kept data must come back on the same ports.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NODES=(1 2 3)

log() { echo "local-cluster: $*" >&2; }
die() { log "$*"; exit 1; }

abspath() {
  case "$1" in
    /*) printf '%s\n' "$1" ;;
    *) printf '%s\n' "$PWD/$1" ;;
  esac
}

DIR="$(abspath "${HALTER_CLUSTER_DIR:-.halter-cluster}")"
STATE="$DIR/cluster.env"

usage() {
  echo "usage: $0 up | status | down [--wipe]" >&2
  exit 2
}

pid_file() { echo "$DIR/node$1.pid"; }

# Whether process $1 exists and is not a zombie.
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  if [ -r "/proc/$1/stat" ]; then
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    stat="${stat##*) }"
    [ "${stat%% *}" != Z ] || return 1
  fi
}

# The recorded pid of node $1 if that process is alive and is the halter we started on this
# node's data directory (guards against a recycled pid); empty otherwise.
live_pid() {
  local f pid
  f="$(pid_file "$1")"
  [ -f "$f" ] || return 0
  pid="$(cat "$f" 2>/dev/null || true)"
  case "$pid" in '' | *[!0-9]*) return 0 ;; esac
  alive "$pid" || return 0
  if [ -r "/proc/$pid/cmdline" ]; then
    tr '\0' '\n' <"/proc/$pid/cmdline" | grep -qxF -- "$DIR/node$1" || return 0
  fi
  echo "$pid"
}

load_state() {
  [ -f "$STATE" ] || return 1
  # shellcheck disable=SC1090
  . "$STATE"
}

client_addr() { local v="CLIENT_$1"; echo "${!v}"; }
peer_addr() { local v="PEER_$1"; echo "${!v}"; }

pick_python() {
  local py="${HALTER_PY:-$ROOT/target/wire-venv/bin/python}"
  case "$py" in /*) ;; *) py="$ROOT/$py" ;; esac
  if [ -x "$py" ] && "$py" -c 'import grpc' 2>/dev/null; then
    echo "$py"
  elif python3 -c 'import grpc' 2>/dev/null; then
    command -v python3
  else
    die "no python with grpcio for the readiness check: set HALTER_PY or run tests/wire/run.sh"
  fi
}

choose_ports() {
  local ports
  if [ -n "${HALTER_BASE_PORT:-}" ]; then
    case "$HALTER_BASE_PORT" in '' | *[!0-9]*) die "HALTER_BASE_PORT must be a number" ;; esac
    local b="$HALTER_BASE_PORT"
    ports="$b $((b + 1)) $((b + 2)) $((b + 10)) $((b + 11)) $((b + 12))"
  else
    # Six distinct free ports below Linux's ephemeral range (32768-60999): a port from bind(0)
    # could be taken by an outgoing connection (one node dialling another) before its node binds
    # it. All sockets stay bound until every port is chosen.
    ports="$(python3 - <<'PYEOF'
import os, random, socket
rng = random.Random(os.getpid())
socks = []
while len(socks) < 6:
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", rng.randrange(10000, 32768)))
    except OSError:
        s.close()
        continue
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
PYEOF
)"
  fi
  set -- $ports
  mkdir -p "$DIR"
  {
    echo "CLIENT_1=127.0.0.1:$1"
    echo "CLIENT_2=127.0.0.1:$2"
    echo "CLIENT_3=127.0.0.1:$3"
    echo "PEER_1=127.0.0.1:$4"
    echo "PEER_2=127.0.0.1:$5"
    echo "PEER_3=127.0.0.1:$6"
  } >"$STATE.tmp"
  mv "$STATE.tmp" "$STATE"
}

resolve_bin() {
  if [ -n "${HALTER_BIN:-}" ]; then
    local bin
    bin="$(abspath "$HALTER_BIN")"
    [ -x "$bin" ] || die "HALTER_BIN=$HALTER_BIN is not an executable file"
    echo "$bin"
    return
  fi
  local bin="$ROOT/target/release/halter"
  if [ ! -x "$bin" ] || [ -n "$(cd "$ROOT" && find crates proto -type f -newer "$bin" -print -quit)" ]; then
    log "building $bin"
    (cd "$ROOT" && cargo build --release -p halter-node --bin halter) >&2
  fi
  echo "$bin"
}

port_in_use() {
  python3 - "$1" <<'PYEOF'
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind((host, int(port)))
except OSError:
    sys.exit(0)
sys.exit(1)
PYEOF
}

check_ports_free() {
  local id="$1" addr
  for addr in "$(client_addr "$id")" "$(peer_addr "$id")"; do
    if port_in_use "$addr"; then
      die "node $id: $addr is already in use (pick other ports with HALTER_BASE_PORT, or wipe $DIR)"
    fi
  done
}

start_node() {
  local id="$1" bin="$2" members="$3"
  mkdir -p "$DIR/node$id"
  log "starting node $id: client $(client_addr "$id"), peer $(peer_addr "$id"), log $DIR/node$id.log"
  # setsid: the node outlives this script and the terminal's signals. The inner shell records
  # its own pid, which `exec` hands to halter.
  NO_COLOR=1 RUST_LOG="${RUST_LOG:-info,openraft=warn}" setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ \
    "$(pid_file "$id")" "$bin" start \
    --node-id "$id" \
    --client-addr "$(client_addr "$id")" \
    --peer-addr "$(peer_addr "$id")" \
    --data-dir "$DIR/node$id" \
    --initial-members "$members" \
    </dev/null >>"$DIR/node$id.log" 2>&1 &
}

# Waits until every node answers a linearizable read: GetExternalEventDef of a name nobody
# registers passes the read barrier (confirmed by a leader), so NOT_FOUND means "serving".
wait_serving() {
  local py timeout="${HALTER_UP_TIMEOUT:-30}"
  py="$(pick_python)" || return 1
  "$py" - "$timeout" "$(client_addr 1)" "$(client_addr 2)" "$(client_addr 3)" <<'PYEOF'
import sys, time
import grpc

timeout = float(sys.argv[1])
addrs = sys.argv[2:]
name = b"halter-local-cluster-readiness-probe"
req = b"\x0a" + bytes([len(name)]) + name  # littlehorse.ExternalEventDefId{name}
deadline = time.monotonic() + timeout
pending = list(addrs)
last = {}
channels = {a: grpc.insecure_channel(a) for a in addrs}
while pending:
    for a in list(pending):
        call = channels[a].unary_unary("/littlehorse.LittleHorse/GetExternalEventDef")
        try:
            call(req, timeout=2)
            pending.remove(a)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                pending.remove(a)
            else:
                last[a] = f"{e.code().name}: {e.details()}"
    if not pending:
        break
    if time.monotonic() > deadline:
        for a in pending:
            print(f"local-cluster: {a} not serving: {last.get(a, 'no answer')}", file=sys.stderr)
        sys.exit(1)
    time.sleep(0.2)
PYEOF
}

cmd_up() {
  [ $# -eq 0 ] || usage
  local bin="" id members
  for id in "${NODES[@]}"; do
    if [ -z "$(live_pid "$id")" ]; then
      bin="$(resolve_bin)"
      break
    fi
  done
  mkdir -p "$DIR"
  load_state || { choose_ports; load_state; }
  members=""
  for id in "${NODES[@]}"; do
    members="${members:+$members,}$id@$(peer_addr "$id")@$(client_addr "$id")"
  done
  # Every port first, so that a conflict starts nothing.
  for id in "${NODES[@]}"; do
    [ -n "$(live_pid "$id")" ] || check_ports_free "$id"
  done
  for id in "${NODES[@]}"; do
    if [ -z "$(live_pid "$id")" ]; then
      rm -f "$(pid_file "$id")"
      start_node "$id" "$bin" "$members"
    else
      log "node $id already running (pid $(live_pid "$id"))"
    fi
  done
  if ! wait_serving; then
    log "the cluster did not become ready within ${HALTER_UP_TIMEOUT:-30}s; last log lines:"
    for id in "${NODES[@]}"; do
      [ -f "$DIR/node$id.log" ] && tail -n 5 "$DIR/node$id.log" | sed "s/^/  node$id: /" >&2
    done
    exit 1
  fi
  for id in "${NODES[@]}"; do
    [ -n "$(live_pid "$id")" ] || die "node $id exited; see $DIR/node$id.log"
  done
  for id in "${NODES[@]}"; do
    client_addr "$id"
  done
}

cmd_status() {
  [ $# -eq 0 ] || usage
  local id pid all=0
  if ! load_state; then
    log "no cluster recorded in $DIR"
    exit 3
  fi
  for id in "${NODES[@]}"; do
    pid="$(live_pid "$id")"
    if [ -n "$pid" ]; then
      echo "node$id pid=$pid alive client=$(client_addr "$id")"
    else
      if [ -f "$(pid_file "$id")" ]; then
        echo "node$id pid=$(cat "$(pid_file "$id")") dead client=$(client_addr "$id")"
      else
        echo "node$id pid=- stopped client=$(client_addr "$id")"
      fi
      all=3
    fi
  done
  exit "$all"
}

cmd_down() {
  local wipe=0 id pid waited timeout="${HALTER_STOP_TIMEOUT:-10}"
  while [ $# -gt 0 ]; do
    case "$1" in
      --wipe) wipe=1 ;;
      *) usage ;;
    esac
    shift
  done
  declare -A pids=()
  for id in "${NODES[@]}"; do
    pid="$(live_pid "$id")"
    if [ -n "$pid" ]; then
      log "stopping node $id (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
      pids[$id]="$pid"
    fi
  done
  waited=0
  while :; do
    local any=0
    for id in "${!pids[@]}"; do
      if alive "${pids[$id]}"; then any=1; fi
    done
    [ $any -eq 1 ] || break
    if [ "$waited" -ge $((timeout * 10)) ]; then
      for id in "${!pids[@]}"; do
        if alive "${pids[$id]}"; then
          log "node $id (pid ${pids[$id]}) still running after ${timeout}s: SIGKILL"
          kill -KILL "${pids[$id]}" 2>/dev/null || true
        fi
      done
      break
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  for id in "${NODES[@]}"; do
    rm -f "$(pid_file "$id")"
  done
  if [ $wipe -eq 1 ] && [ -d "$DIR" ]; then
    log "wiping $DIR"
    for id in "${NODES[@]}"; do
      rm -rf "${DIR:?}/node$id"
      rm -f "$DIR/node$id.log"
    done
    rm -f "$STATE" "$STATE.tmp"
    rmdir "$DIR" 2>/dev/null || true
  fi
}

[ $# -ge 1 ] || usage
sub="$1"
shift
case "$sub" in
  up) cmd_up "$@" ;;
  down) cmd_down "$@" ;;
  status) cmd_status "$@" ;;
  *) usage ;;
esac
