#!/usr/bin/env bash
# Halter against its peers on this machine, in one run: W1 durable writes against etcd (3 members
# and 1), W2 deliver-to-resume against Restate's awakeable workflow (3 nodes), then W3 timers,
# W4 failover and W5 scale for Halter. Repetitions of Halter, Restate and etcd are interleaved,
# each on a fresh cluster; figures are medians over repetitions. Writes docs/benchmarks.md, the
# charts in docs/bench/, and prints one `ratio ...` line per comparison point.
#
#   crates/bench/compare.sh
#
# Environment (defaults in brackets):
#   REPS [3]            repetitions of every W1/W2 point
#   W1_CONC ["1 16 64 256"], W2_CONC ["1 16 64"]
#   TOTAL [20000], DURATION [20]   per W1 point (W2: TOTAL_W2 [5000])
#   W3_PENDING [1000000], W3_PROBES [1000]
#   W4_TRIALS [5]
#   W5_STEPS [10000,100000,1000000]                 3 nodes
#   W5_SINGLE_STEPS [10000,100000,1000000,3000000,10000000]   1 node; steps that would not fit
#                       on the disk (W5_BYTES_PER_EVENT [2600] per stored event and node, the
#                       state file's growth included) are left out, and said so
#   SKIP ["" | e.g. "restate w5"]   parts to leave out
#   PEERS_DIR [../shared/bench/peers], PEERS_BASE [.peers]
#   RESULTS [target/bench-results/<time>]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

REPS=${REPS:-3}
W1_CONC=${W1_CONC:-"1 16 64 256"}
W2_CONC=${W2_CONC:-"1 16 64"}
TOTAL=${TOTAL:-20000}
DURATION=${DURATION:-20}
TOTAL_W2=${TOTAL_W2:-5000}
W3_PENDING=${W3_PENDING:-1000000}
W3_PROBES=${W3_PROBES:-1000}
W4_TRIALS=${W4_TRIALS:-5}
W5_STEPS=${W5_STEPS:-10000,100000,1000000}
W5_SINGLE_STEPS=${W5_SINGLE_STEPS:-10000,100000,1000000,3000000,10000000}
W5_BYTES_PER_EVENT=${W5_BYTES_PER_EVENT:-2600}
SKIP=${SKIP:-}
PEERS_DIR="$(cd "${PEERS_DIR:-$ROOT/../shared/bench/peers}" && pwd)"
export PEERS_BASE="${PEERS_BASE:-$ROOT/.peers}"
RESULTS="${RESULTS:-$ROOT/target/bench-results/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$RESULTS"
log() { echo "compare: $*" >&2; }
skipped() { case " $SKIP " in *" $1 "*) return 0 ;; esac; return 1; }
csv() { echo "$1" | tr ' ' ','; }

# --- set-up: protoc for etcd-client, the venv for the readiness check and the charts ----------
if ! command -v protoc >/dev/null; then
  log "installing Debian's protobuf-compiler (etcd-client's build needs protoc)"
  apt-get install -y protobuf-compiler >/dev/null
fi
source tests/venv.sh
"$PY" -c 'import matplotlib' 2>/dev/null || "$PY" -m pip install -q matplotlib==3.9.2
export HALTER_PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"
cargo build --release -p halter-node --bin halter
cargo build --release -p halter-bench --features etcd
export HALTER_BIN="$ROOT/target/release/halter"
BENCH="$ROOT/target/release/halter-bench"
export HALTER_CLUSTER_DIR="$RESULTS/halter-cluster"
export RUST_LOG=${RUST_LOG:-warn}

halter_up() { # -> endpoints on stdout; pids in $PIDS
  deploy/local-cluster.sh down --wipe >/dev/null 2>&1 || true
  EPS="$(deploy/local-cluster.sh up | paste -sd, -)"
  PIDS="$(cat "$HALTER_CLUSTER_DIR"/node*.pid | paste -sd, -)"
}
halter_down() { deploy/local-cluster.sh down --wipe >/dev/null 2>&1 || true; }

single_up() { # a one-node Halter in its own directory
  SINGLE_DIR="$RESULTS/halter-single"
  rm -rf "$SINGLE_DIR"; mkdir -p "$SINGLE_DIR"
  local port
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  local peer
  peer="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  "$HALTER_BIN" start --node-id 1 --client-addr "127.0.0.1:$port" --peer-addr "127.0.0.1:$peer" \
    --data-dir "$SINGLE_DIR/data" --initial-members "1@127.0.0.1:$peer@127.0.0.1:$port" \
    >"$SINGLE_DIR/node.log" 2>&1 &
  SINGLE_PID=$!
  SEP="127.0.0.1:$port"
  for _ in $(seq 100); do
    if "$BENCH" w1 --endpoints "$SEP" --conc 1 --total 1 --duration 1 --warmup 0 >/dev/null 2>&1; then return; fi
    sleep 0.2
  done
  log "single node did not come up"; exit 1
}
single_down() { kill "$SINGLE_PID" 2>/dev/null || true; wait "$SINGLE_PID" 2>/dev/null || true; rm -rf "$SINGLE_DIR"; }

quiet() { python3 "$PEERS_DIR/wait_quiet.py" --ignore-pids "${1:-}" --max-wait "${MAX_QUIET_WAIT:-60}" >&2 || true; }

cleanup() {
  halter_down
  "$PEERS_DIR/etcd_cluster.sh" stop >/dev/null 2>&1 || true
  if [ -n "${SINGLE_PID:-}" ]; then kill "$SINGLE_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT

# Repetition $1 of Restate's W2 (its own script, in a private network namespace; it starts and
# stops its own fresh cluster, and labels its one repetition rep1), its rows appended to
# restate-w2.jsonl under the label of Halter's repetition they follow.
restate_rep() {
  local before f rc=0
  before="$(ls "$PEERS_BASE"/results/restate-cluster-*.jsonl 2>/dev/null || true)"
  TOTAL=$TOTAL_W2 DURATION=$DURATION "$PEERS_DIR/restate/run_restate_w2.sh" cluster 1 "$W2_CONC" seq 2 >&2 || rc=$?
  for f in "$PEERS_BASE"/results/restate-cluster-*.jsonl; do
    case "$before" in
      *"$f"*) ;;
      *) sed "s/-rep1\"/-rep$1\"/" "$f" >>"$RESULTS/restate-w2.jsonl" ;;
    esac
  done
  return "$rc"
}

# --- W1 and W2, interleaved repetitions ----------------------------------------------------
for r in $(seq "$REPS"); do
  log "rep $r/$REPS: Halter 3 nodes (W1, W2)"
  halter_up
  for c in $W1_CONC; do
    quiet "$PIDS"
    "$BENCH" w1 --endpoints "$EPS" --pids "$PIDS" --conc "$c" --total "$TOTAL" --duration "$DURATION" \
      --label "halter-3n-rep$r" --out "$RESULTS/w1.jsonl" >/dev/null
  done
  for c in $W2_CONC; do
    quiet "$PIDS"
    "$BENCH" w2 --threads 1 --conns 1 --endpoints "$EPS" --pids "$PIDS" --conc "$c" --total "$TOTAL_W2" --duration "$DURATION" \
      --label "halter-3n-rep$r" --out "$RESULTS/w2.jsonl" >/dev/null
  done
  halter_down

  # Restate's repetition right after Halter's W2 points, so that the machine's drift (its speed
  # moves by a quarter within half an hour) falls on both sides of the W2 ratio alike.
  if ! skipped restate; then
    log "rep $r/$REPS: Restate 3 nodes, replication 2 (W2)"
    # A failed Restate repetition costs its own points, not the rest of the run.
    restate_rep "$r" || log "rep $r/$REPS: Restate failed; its W2 points are missing"
  fi

  log "rep $r/$REPS: Halter 1 node (W1)"
  single_up
  for c in $W1_CONC; do
    quiet "$SINGLE_PID"
    "$BENCH" w1 --endpoints "$SEP" --pids "$SINGLE_PID" --conc "$c" --total "$TOTAL" --duration "$DURATION" \
      --label "halter-1n-rep$r" --out "$RESULTS/w1.jsonl" >/dev/null
  done
  single_down

  if ! skipped etcd; then
    for m in 3 1; do
      log "rep $r/$REPS: etcd $m member(s) (W1)"
      "$PEERS_DIR/etcd_cluster.sh" start "$m" >/dev/null
      EPIDS="$("$PEERS_DIR/etcd_cluster.sh" pids | paste -sd, -)"
      LEADER="$("$PEERS_DIR/etcd_cluster.sh" leader)"
      for c in $W1_CONC; do
        quiet "$EPIDS"
        "$BENCH" w1 --target etcd --endpoints "${LEADER#http://}" --pids "$EPIDS" --conc "$c" \
          --total "$TOTAL" --duration "$DURATION" --label "etcd-${m}m-rep$r" --out "$RESULTS/w1.jsonl" >/dev/null
      done
      "$PEERS_DIR/etcd_cluster.sh" stop >/dev/null
    done
  fi
done

# --- W3: pending timers and lateness under W1 load -------------------------------------------
if ! skipped w3; then
  log "W3: $W3_PENDING pending timers, $W3_PROBES probes under W1 load"
  halter_up
  "$BENCH" w3 --endpoints "$EPS" --pids "$PIDS" --pending "$W3_PENDING" --probes "$W3_PROBES" \
    --label halter-3n --out "$RESULTS/w3.jsonl" >/dev/null
  du -sm "$HALTER_CLUSTER_DIR"/node1 | awk '{print "{\"workload\":\"w3-disk\",\"node1_mib\":"$1"}"}' >>"$RESULTS/w3.jsonl"
  halter_down
fi

# --- W4: failover --------------------------------------------------------------------------
if ! skipped w4; then
  log "W4: kill -9 the leader, $W4_TRIALS trials"
  halter_up
  "$BENCH" w4 --cluster-dir "$HALTER_CLUSTER_DIR" --script deploy/local-cluster.sh --trials "$W4_TRIALS" \
    --label halter-3n --out "$RESULTS/w4.jsonl" >/dev/null
  halter_down
fi

# --- W5: scale -----------------------------------------------------------------------------
# The steps of $1 whose stored events fit on the free disk for $2 nodes; says which it drops.
fitting_steps() {
  local free kept="" s
  free=$(( $(df -Pk "$RESULTS" | awk 'NR==2 {print $4}') * 1024 ))
  for s in ${1//,/ }; do
    if (( s * W5_BYTES_PER_EVENT * $2 < free )); then
      kept="${kept:+$kept,}$s"
    else
      log "W5: $s stored events on $2 node(s) need about $(( s * W5_BYTES_PER_EVENT * $2 >> 30 )) GiB, $(( free >> 30 )) GiB free: left out"
    fi
  done
  echo "${kept:-10000}"
}
if ! skipped w5; then
  log "W5: stored events $W5_STEPS"
  halter_up
  "$BENCH" w5 --endpoints "$EPS" --pids "$PIDS" --steps "$(fitting_steps "$W5_STEPS" 3)" \
    --label halter-3n --out "$RESULTS/w5.jsonl" >/dev/null
  halter_down
  # To 10 M stored events on one node: three nodes would need three times the disk.
  steps="$(fitting_steps "$W5_SINGLE_STEPS" 1)"
  log "W5: one node, stored events $steps"
  single_up
  "$BENCH" w5 --endpoints "$SEP" --pids "$SINGLE_PID" --steps "$steps" --label halter-1n \
    --out "$RESULTS/w5.jsonl" >/dev/null
  single_down
fi

# --- the page and the ratios ------------------------------------------------------------------
"$PY" crates/bench/report.py "$RESULTS" docs/benchmarks.md docs/bench \
  "crates/bench/compare.sh (REPS=$REPS TOTAL=$TOTAL DURATION=$DURATION TOTAL_W2=$TOTAL_W2 W3_PENDING=$W3_PENDING W5_STEPS=$W5_STEPS W5_SINGLE_STEPS=$W5_SINGLE_STEPS)"
log "results in $RESULTS; docs/benchmarks.md written"
