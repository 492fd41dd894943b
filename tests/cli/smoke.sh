#!/usr/bin/env bash
# halterctl against a real `halter dev` node on loopback: every command group once, output
# formats, error codes and exit codes. Ends with "N passed, M failed".
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
BIN=${HALTER_BIN_DIR:-target/debug}
DIR=$(mktemp -d)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
CLIENT=127.0.0.1:$(port)
PEER=127.0.0.1:$(port)
"$BIN/halter" dev --data-dir "$DIR/data" --client-addr "$CLIENT" --peer-addr "$PEER" 2>"$DIR/node.log" &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$DIR"' EXIT
CTL=("$BIN/halterctl" --addr "$CLIENT" --peer-addr "$PEER")
for _ in $(seq 1 100); do
  "${CTL[@]}" cluster status 2>/dev/null | grep -q "Leader" && break
  sleep 0.1
done

passed=0; failed=0
check() { # name, expected substring, command...
  local name=$1 want=$2; shift 2
  local out; out=$("$@" 2>&1); local rc=$?
  if [[ "$out" == *"$want"* ]]; then passed=$((passed+1)); else
    failed=$((failed+1)); echo "FAIL $name: wanted '$want', rc=$rc, got: $out"; fi
}
check_rc() { # name, expected exit code, command...
  local name=$1 want=$2; shift 2
  "$@" >/dev/null 2>&1; local rc=$?
  if [[ $rc == "$want" ]]; then passed=$((passed+1)); else failed=$((failed+1)); echo "FAIL $name: exit $rc, wanted $want"; fi
}

cat > "$DIR/spec.json" <<'JSON'
{"name": "approval", "entrypointThreadName": "entrypoint", "threadSpecs": {"entrypoint": {
  "variableDefs": [{"varDef": {"name": "who", "typeDef": {"primitiveType": "STR"}}}],
  "nodes": {
    "0-entry": {"entrypoint": {}, "outgoingEdges": [{"sinkNodeName": "1-wait"}]},
    "1-wait": {"externalEvent": {"externalEventDefId": {"name": "signed"},
                                 "timeoutSeconds": {"literalValue": {"int": "60"}}},
               "outgoingEdges": [{"sinkNodeName": "2-exit", "variableMutations": [
                 {"lhsName": "who", "operation": "ASSIGN", "nodeOutput": {}}]}]},
    "2-exit": {"exit": {}}}}}}
JSON

check "def put" "typeInformation" "${CTL[@]}" external-event-def put signed --type STR
check "def get json" '"name": "signed"' "${CTL[@]}" -o json external-event-def get signed
check "def search" "signed" "${CTL[@]}" external-event-def search --prefix sig
check "spec put" "approval" "${CTL[@]}" wf-spec put "$DIR/spec.json"
check "spec get" "entrypoint" "${CTL[@]}" wf-spec get approval
check "run" "RUNNING" "${CTL[@]}" wf-run run approval --id r1
check "event put" "claimed" "${CTL[@]}" external-event put r1 signed --str ada --guid g1
check "run completed" "COMPLETED" "${CTL[@]}" wf-run get r1
check "variables" "ada" "${CTL[@]}" variable list r1
check "node runs" "1-wait" "${CTL[@]}" node-run list r1
check "event list" "ada" "${CTL[@]}" external-event list r1
check "event search" "r1" "${CTL[@]}" external-event search signed --claimed true
check "wrong type" "INVALID_ARGUMENT" "${CTL[@]}" external-event put r1 signed --int 3
check "missing run" "NOT_FOUND" "${CTL[@]}" wf-run get nope
check_rc "error exit code" 1 "${CTL[@]}" wf-run get nope
check "run 2" "RUNNING" "${CTL[@]}" wf-run run approval --id r2 --var who:str=nobody
check "stop" "stopped" "${CTL[@]}" wf-run stop r2
check "halted" "HALTED" "${CTL[@]}" wf-run get r2
check "resume" "resumed" "${CTL[@]}" wf-run resume r2
check "search runs" "r2" "${CTL[@]}" wf-run search approval --status RUNNING
check "delete run" "deleted" "${CTL[@]}" wf-run delete r2
check "cluster status" "Leader" "${CTL[@]}" cluster status
check "def delete" "deleted" "${CTL[@]}" external-event-def delete signed
echo "$passed passed, $failed failed"
[[ $failed == 0 ]]
