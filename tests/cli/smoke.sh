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
METRICS=127.0.0.1:$(port)
"$BIN/halter" dev --data-dir "$DIR/data" --client-addr "$CLIENT" --peer-addr "$PEER" \
  --metrics-addr "$METRICS" 2>"$DIR/node.log" &
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
  "variableDefs": [{"varDef": {"name": "who", "typeDef": {"primitiveType": "STR"}},
                    "searchable": true}],
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
check "variable search" "r1" "${CTL[@]}" -o json variable search approval who:str=ada
check "variable search type" "INVALID_ARGUMENT" "${CTL[@]}" variable search approval who:int=3
check "whoami" "anonymous" "${CTL[@]}" whoami
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
# A child WfRun of r2, waiting for its own event: addressed as r2_k1; deleting r2 deletes it.
sed 's/"name": "approval"/"name": "kid", "parentWfSpec": {"wfSpecName": "approval"}/' \
  "$DIR/spec.json" > "$DIR/kid.json"
check "child spec put" "kid" "${CTL[@]}" wf-spec put "$DIR/kid.json"
check "child needs parent" "requires a parent" "${CTL[@]}" wf-run run kid --id k0
check "child run" "RUNNING" "${CTL[@]}" wf-run run kid --id k1 --parent r2
check "child event" "claimed" "${CTL[@]}" external-event put r2_k1 signed --str kid --guid g9
check "child completed" "COMPLETED" "${CTL[@]}" wf-run get r2_k1
check "delete run" "deleted" "${CTL[@]}" wf-run delete r2
check "child deleted too" "NOT_FOUND" "${CTL[@]}" wf-run get r2_k1
cat > "$DIR/task-spec.json" <<'JSON'
{"name": "billing", "entrypointThreadName": "entrypoint", "threadSpecs": {"entrypoint": {
  "variableDefs": [{"varDef": {"name": "amount", "typeDef": {"primitiveType": "INT"}}}],
  "nodes": {
    "0-entry": {"entrypoint": {}, "outgoingEdges": [{"sinkNodeName": "1-charge"}]},
    "1-charge": {"task": {"taskDefId": {"name": "charge"}, "variables": [{"variableName": "amount"}]},
                 "outgoingEdges": [{"sinkNodeName": "2-exit"}]},
    "2-exit": {"exit": {}}}}}}
JSON
cat > "$DIR/corr-spec.json" <<'JSON'
{"name": "await-paid", "entrypointThreadName": "entrypoint", "threadSpecs": {"entrypoint": {
  "variableDefs": [{"varDef": {"name": "order", "typeDef": {"primitiveType": "STR"}}}],
  "nodes": {
    "0-entry": {"entrypoint": {}, "outgoingEdges": [{"sinkNodeName": "1-wait"}]},
    "1-wait": {"externalEvent": {"externalEventDefId": {"name": "paid"},
                                 "correlationKey": {"variableName": "order"}},
               "outgoingEdges": [{"sinkNodeName": "2-exit"}]},
    "2-exit": {"exit": {}}}}}}
JSON
check "task-def put" "charge" "${CTL[@]}" task-def put charge --input amount:INT --returns STR
check "task-def get" "INT" "${CTL[@]}" -o json task-def get charge
check "task-def immutable" "ALREADY_EXISTS" "${CTL[@]}" task-def put charge --input amount:STR
check "task-def search" "charge" "${CTL[@]}" task-def search --prefix ch
check "task-def workers none" "NOT_FOUND" "${CTL[@]}" task-def workers charge
check "task spec put" "billing" "${CTL[@]}" wf-spec put "$DIR/task-spec.json"
check "task run" "RUNNING" "${CTL[@]}" wf-run run billing --id b1 --var amount:int=7
check "task-run get" "scheduleTime" "${CTL[@]}" task-run get b1 0-1
check "task-run list" "charge" "${CTL[@]}" task-run list b1
check "task-run missing" "NOT_FOUND" "${CTL[@]}" task-run get b1 9-9
check "checkpoint missing" "NOT_FOUND" "${CTL[@]}" task-run checkpoint b1 0-1 0
check "checkpoint bad number" "INVALID_ARGUMENT" "${CTL[@]}" task-run checkpoint b1 0-1 -- -1
check "correlated def" "correlatedEventConfig" "${CTL[@]}" -o json external-event-def put paid --correlated --delete-after-first
check "correlated spec" "await-paid" "${CTL[@]}" wf-spec put "$DIR/corr-spec.json"
check "correlated run" "RUNNING" "${CTL[@]}" wf-run run await-paid --id p1 --var order:str=o-42
check "correlated put" "p1" "${CTL[@]}" -o json correlated-event put o-42 paid --int 100
check "correlated completed" "COMPLETED" "${CTL[@]}" wf-run get p1
check "correlated gone" "NOT_FOUND" "${CTL[@]}" correlated-event get o-42 paid
check "correlated put 2" "o-43" "${CTL[@]}" correlated-event put o-43 paid --int 1
check "correlated search" "o-43" "${CTL[@]}" correlated-event search paid --has-events false
check "correlated delete" "deleted" "${CTL[@]}" correlated-event delete o-43 paid
check "correlated bad key" "INVALID_ARGUMENT" "${CTL[@]}" correlated-event put a/b paid --int 1
cat > "$DIR/throw-spec.json" <<'JSON'
{"name": "quote", "entrypointThreadName": "entrypoint", "threadSpecs": {"entrypoint": {
  "nodes": {
    "0-entry": {"entrypoint": {}, "outgoingEdges": [{"sinkNodeName": "1-throw"}]},
    "1-throw": {"throwEvent": {"eventDefId": {"name": "quoted"}, "content": {"literalValue": {"int": 42}}},
                "outgoingEdges": [{"sinkNodeName": "2-exit"}]},
    "2-exit": {"exit": {}}}}}}
JSON
check "workflow-event-def put" "INT" "${CTL[@]}" -o json workflow-event-def put quoted --type INT
check "workflow-event-def changed" "ALREADY_EXISTS" "${CTL[@]}" workflow-event-def put quoted --type STR
check "workflow-event-def search" "quoted" "${CTL[@]}" workflow-event-def search --prefix quo
check "throw spec put" "quote" "${CTL[@]}" wf-spec put "$DIR/throw-spec.json"
check "throw run" "COMPLETED" "${CTL[@]}" wf-run run quote --id q1
check "workflow-event await" "42" "${CTL[@]}" -o json workflow-event await q1 --def quoted
check "workflow-event list" "quoted" "${CTL[@]}" workflow-event list q1
check "workflow-event search" "q1" "${CTL[@]}" workflow-event search quoted
check "workflow-event get" "42" "${CTL[@]}" -o json workflow-event get q1 quoted 0
check "workflow-event await none" "Timeout expired" "${CTL[@]}" --timeout 1 workflow-event await q1 --ignore quoted:0
cat > "$DIR/ut-spec.json" <<'JSON'
{"name": "expense", "entrypointThreadName": "entrypoint", "threadSpecs": {"entrypoint": {
  "nodes": {
    "0-entry": {"entrypoint": {}, "outgoingEdges": [{"sinkNodeName": "1-approve"}]},
    "1-approve": {"userTask": {"userTaskDefName": "approve", "userGroup": {"literalValue": {"str": "finance"}}},
                  "outgoingEdges": [{"sinkNodeName": "2-exit"}]},
    "2-exit": {"exit": {}}}}}}
JSON
check "user-task-def put" '"note"' "${CTL[@]}" -o json user-task-def put approve --field approved:BOOL! --field note:STR
check "user-task-def new version" '"version": 1' "${CTL[@]}" -o json user-task-def put approve --field approved:BOOL!
check "user-task-def get" "approved" "${CTL[@]}" -o json user-task-def get approve --version 0
check "user-task-def search" "approve" "${CTL[@]}" user-task-def search --prefix app
check "user-task spec put" "expense" "${CTL[@]}" wf-spec put "$DIR/ut-spec.json"
check "user-task run" "RUNNING" "${CTL[@]}" wf-run run expense --id x1
check "user-task search" "x1" "${CTL[@]}" -o json user-task search --group finance --status UNASSIGNED
check "user-task search needs a filter" "INVALID_ARGUMENT" "${CTL[@]}" user-task search
check "user-task assign" "assigned" "${CTL[@]}" user-task assign x1 0-1 --user anna
check "user-task claimed" "FAILED_PRECONDITION" "${CTL[@]}" user-task assign x1 0-1 --user bob
check "user-task comment" "looks fine" "${CTL[@]}" -o json user-task comment x1 0-1 --user anna "looks fine"
check "user-task missing field" "mandatory" "${CTL[@]}" user-task complete x1 0-1 --user anna
check "user-task complete" "completed" "${CTL[@]}" user-task complete x1 0-1 --user anna --result approved:bool=true
check "user-task done" "DONE" "${CTL[@]}" -o json user-task get x1 0-1
check "user-task run completed" "COMPLETED" "${CTL[@]}" wf-run get x1
check "user-task list" "anna" "${CTL[@]}" -o json user-task list x1
check "user-task run 2" "RUNNING" "${CTL[@]}" wf-run run expense --id x2
check "user-task cancel" "cancelled" "${CTL[@]}" user-task cancel x2 0-1
check "user-task cancelled run" "ERROR" "${CTL[@]}" wf-run get x2
check "rescue" "RUNNING" "${CTL[@]}" wf-run rescue x2
check "rescued user task" "newUserGroup" "${CTL[@]}" -o json user-task get x2 0-2
check "rescue a running run" "FAILED_PRECONDITION" "${CTL[@]}" wf-run rescue x2
check "schedule" "0 9 * * MON-FRI" "${CTL[@]}" scheduled-wf-run create approval '0 9 * * MON-FRI' --id weekday --var who:str=ops
check "schedule get" '"cronExpression": "0 9 * * MON-FRI"' "${CTL[@]}" -o json scheduled-wf-run get weekday
check "schedule search" "weekday" "${CTL[@]}" scheduled-wf-run search approval
check "schedule bad cron" "INVALID_ARGUMENT" "${CTL[@]}" scheduled-wf-run create approval '0 9 * *'
check "schedule taken" "ALREADY_EXISTS" "${CTL[@]}" scheduled-wf-run create approval '@daily' --id weekday
check "schedule delete" "deleted" "${CTL[@]}" scheduled-wf-run delete weekday
check "schedule gone" "NOT_FOUND" "${CTL[@]}" scheduled-wf-run get weekday
check "cluster status" "Leader" "${CTL[@]}" cluster status
check "backup" "appliedIndex" "${CTL[@]}" cluster backup "$DIR/backup"
check "restore" "restored" "$BIN/halter" restore --from "$DIR/backup" --data-dir "$DIR/restored" \
  --node-id 7 --client-addr "127.0.0.1:$(port)" --peer-addr "127.0.0.1:$(port)"
check "restore into used data" "restore only into a new data directory" \
  "$BIN/halter" restore --from "$DIR/backup" --data-dir "$DIR/restored"
check_rc "backup to a missing directory" 1 "${CTL[@]}" cluster backup "$DIR/missing/backup"
scrape() { python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())' "http://$METRICS/metrics"; }
check "metrics: events counted" 'halter_grpc_requests_total{method="PutExternalEvent",code="InvalidArgument"}' scrape
check "metrics: leader" 'halter_raft_is_leader 1' scrape
check "def delete" "deleted" "${CTL[@]}" external-event-def delete signed
echo "$passed passed, $failed failed"
[[ $failed == 0 ]]
