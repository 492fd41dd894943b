#!/usr/bin/env python3
"""Measures how late EXTERNAL_EVENT timeouts fire on an idle Halter cluster.

Starts N WfRuns of a spec that waits for an event that never comes, with timeouts spread over a
few seconds, waits until every run has timed out, and reports the lateness of each TIMEOUT:
NodeRun end_time minus (arrival_time + timeout). Both times are stamped by the leader, so this
is the timer service's scheduling delay; commit latency comes on top for the client.

Usage: timer_lateness.py HOST:PORT [N]   (uses the real littlehorse-client package)
Prints one JSON line: {"n":..., "p50_ms":..., "p90_ms":..., "p99_ms":..., "max_ms":...}.
"""

import json
import random
import sys
import time

import grpc
from littlehorse.model import (
    EntrypointNode, Edge, ExitNode, ExternalEventDefId, ExternalEventNode, LHStatus, Node,
    NodeRunId, PutExternalEventDefRequest, PutWfSpecRequest, RunWfRequest, ThreadSpec,
    VariableAssignment, VariableValue, WfRunId,
)
from littlehorse.model.service_pb2_grpc import LittleHorseStub


def main() -> None:
    addr = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 300
    stub = LittleHorseStub(grpc.insecure_channel(addr))
    stub.PutExternalEventDef(PutExternalEventDefRequest(name="never"))
    specs = {}
    for secs in (1, 2, 3):
        name = f"lateness-{secs}s"
        nodes = {
            "0-entry": Node(entrypoint=EntrypointNode(), outgoing_edges=[Edge(sink_node_name="1-wait")]),
            "1-wait": Node(
                external_event=ExternalEventNode(
                    external_event_def_id=ExternalEventDefId(name="never"),
                    timeout_seconds=VariableAssignment(literal_value=VariableValue(int=secs)),
                ),
                outgoing_edges=[Edge(sink_node_name="2-exit")],
            ),
            "2-exit": Node(exit=ExitNode()),
        }
        stub.PutWfSpec(PutWfSpecRequest(name=name, entrypoint_thread_name="entrypoint",
                                        thread_specs={"entrypoint": ThreadSpec(nodes=nodes)}))
        specs[name] = secs
    runs = []
    tag = f"{int(time.time())}"
    for i in range(n):
        name = random.choice(list(specs))
        rid = f"late-{tag}-{i}"
        stub.RunWf(RunWfRequest(wf_spec_name=name, id=rid))
        runs.append((rid, specs[name]))
        time.sleep(random.uniform(0, 0.005))
    lateness = []
    deadline = time.time() + 60
    pending = list(runs)
    while pending and time.time() < deadline:
        time.sleep(0.5)
        still = []
        for rid, secs in pending:
            if stub.GetWfRun(WfRunId(id=rid)).status != LHStatus.ERROR:
                still.append((rid, secs))
                continue
            nr = stub.GetNodeRun(NodeRunId(wf_run_id=WfRunId(id=rid), thread_run_number=0, position=1))
            due = nr.arrival_time.ToMilliseconds() + secs * 1000
            lateness.append(nr.end_time.ToMilliseconds() - due)
        pending = still
    if pending:
        sys.exit(f"{len(pending)} runs never timed out")
    lateness.sort()
    pick = lambda q: lateness[min(len(lateness) - 1, int(q * len(lateness)))]
    print(json.dumps({"n": len(lateness), "p50_ms": pick(0.5), "p90_ms": pick(0.9),
                      "p99_ms": pick(0.99), "max_ms": lateness[-1], "min_ms": lateness[0]}))


if __name__ == "__main__":
    main()
