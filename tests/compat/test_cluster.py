"""The real LittleHorse Python client (littlehorse-client) against a 3-node Halter cluster.

The cluster is started once for this module by `deploy/local-cluster.sh up` (state in a temp
dir, binary from $HALTER_BIN) and stopped with `down --wipe`. Specs are built with the client's
own Workflow builder and registered with its helpers; everything else goes through the
LittleHorseStub that LHConfig hands out. Run with tests/compat/run.sh.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import threading
import time
import uuid
from typing import Callable, Iterator, TypeVar

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, empty_pb2, message_factory

from littlehorse import create_external_event_def, create_task_def, create_workflow_spec
from littlehorse.config import LHConfig
from littlehorse.model import *  # noqa: F403
from littlehorse.model import (
    ExternalEvent,
    ExternalEventDefId,
    ExternalEventId,
    GetLatestWfSpecRequest,
    LHStatus,
    ListExternalEventsRequest,
    ListNodeRunsRequest,
    ListVariablesRequest,
    PutExternalEventRequest,
    RunWfRequest,
    VariableId,
    VariableMutationType,
    VariableValue,
    WfRun,
    WfRunId,
)
from littlehorse.exceptions import LHTaskException
from littlehorse.worker import LHTaskWorker, WorkerContext
from littlehorse.workflow import SpawnedThreads, Workflow, WorkflowThread

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "deploy", "local-cluster.sh")

EVENT = "doc-signed"
SIGNING_WF = "doc-signing"
TIMEOUT_EVENT = "countersigned"
TIMEOUT_WF = "countersign-or-fail"

# Generous bound for anything that should happen "at once" on a local cluster; polling stops
# as soon as the condition holds.
SETTLE_S = 10.0
RPC_TIMEOUT_S = 10.0

T = TypeVar("T")


def poll(what: str, fn: Callable[[], T], ok: Callable[[T], bool], timeout: float = SETTLE_S) -> T:
    """Calls fn every 50 ms until ok(result); fails with the last result after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        last = fn()
        if ok(last):
            return last
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not reached within {timeout}s; last value:\n{last}")
        time.sleep(0.05)


def rpc_error(fn: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        fn()
    return info.value


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# --- halter.Cluster/Status, without compiling proto/halter (its imports of our littlehorse/*.proto
# would clash with the client's own descriptors): a private pool holding the few fields we read,
# wire-compatible with proto/halter/cluster.proto.


def _cluster_messages():
    f = descriptor_pb2.FileDescriptorProto(
        name="halter_compat/cluster_status.proto", package="halter", syntax="proto3"
    )
    FDP = descriptor_pb2.FieldDescriptorProto

    def msg(name: str, fields: list[tuple[str, int, int, int, str]]) -> None:
        m = f.message_type.add(name=name)
        for fname, number, ftype, label, type_name in fields:
            fd = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                fd.type_name = type_name

    opt, rep = FDP.LABEL_OPTIONAL, FDP.LABEL_REPEATED
    msg("Empty", [])
    msg(
        "NodeInfo",
        [
            ("id", 1, FDP.TYPE_UINT64, opt, ""),
            ("peer_addr", 2, FDP.TYPE_STRING, opt, ""),
            ("client_addr", 3, FDP.TYPE_STRING, opt, ""),
        ],
    )
    msg(
        "ClusterStatus",
        [
            ("node_id", 1, FDP.TYPE_UINT64, opt, ""),
            # `optional` in the real proto; node ids start at 1, so 0 reads as "no leader".
            ("leader_id", 2, FDP.TYPE_UINT64, opt, ""),
            ("term", 3, FDP.TYPE_UINT64, opt, ""),
            ("state", 4, FDP.TYPE_STRING, opt, ""),
            ("voters", 7, FDP.TYPE_MESSAGE, rep, ".halter.NodeInfo"),
        ],
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return (
        message_factory.GetMessageClass(pool.FindMessageTypeByName("halter.Empty")),
        message_factory.GetMessageClass(pool.FindMessageTypeByName("halter.ClusterStatus")),
    )


HalterEmpty, ClusterStatus = _cluster_messages()


class Cluster:
    def __init__(self, dir: str, client_addrs: list[str], peer_addrs: list[str]):
        self.dir = dir
        self.client_addrs = client_addrs  # index i is node id i + 1
        self.peer_addrs = peer_addrs
        self._channels = [grpc.insecure_channel(a) for a in peer_addrs]
        self._status = [
            ch.unary_unary(
                "/halter.Cluster/Status",
                request_serializer=HalterEmpty.SerializeToString,
                response_deserializer=ClusterStatus.FromString,
            )
            for ch in self._channels
        ]

    def status(self, node_id: int):
        """halter.Cluster/Status of node `node_id`, on its peer address."""
        return self._status[node_id - 1](HalterEmpty(), timeout=2)

    def leader_id(self) -> int:
        """The leader every node agrees on (polls until they do)."""

        def leaders():
            try:
                return [self.status(i).leader_id for i in (1, 2, 3)]
            except grpc.RpcError as e:
                return [f"{e.code().name}: {e.details()}"]

        got = poll(
            "one leader all nodes agree on",
            leaders,
            lambda ls: len(ls) == 3 and ls[0] in (1, 2, 3) and len(set(ls)) == 1,
        )
        return got[0]

    def close(self) -> None:
        for ch in self._channels:
            ch.close()


def read_cluster_env(dir: str) -> dict[str, str]:
    out = {}
    with open(os.path.join(dir, "cluster.env")) as fh:
        for line in fh:
            line = line.strip()
            if line and not line.startswith("#"):
                k, v = line.split("=", 1)
                out[k] = v
    return out


def node_logs(dir: str) -> str:
    parts = []
    for i in (1, 2, 3):
        p = os.path.join(dir, f"node{i}.log")
        if os.path.exists(p):
            with open(p, errors="replace") as fh:
                tail = fh.readlines()[-20:]
            parts.append(f"--- node{i}.log (last lines)\n" + "".join(tail))
    return "\n".join(parts)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    dir = str(tmp_path_factory.mktemp("halter-cluster"))
    env = dict(os.environ, HALTER_CLUSTER_DIR=dir)
    up = subprocess.run(
        ["bash", SCRIPT, "up"], env=env, capture_output=True, text=True, timeout=120
    )
    try:
        assert up.returncode == 0, (
            f"local-cluster.sh up failed ({up.returncode}):\n{up.stderr}\n{node_logs(dir)}"
        )
        addrs = up.stdout.split()
        assert len(addrs) == 3, f"expected 3 addresses on stdout, got {up.stdout!r}"
        for a in addrs:
            host, port = a.rsplit(":", 1)
            assert host == "127.0.0.1" and port.isdigit(), a
        state = read_cluster_env(dir)
        assert addrs == [state[f"CLIENT_{i}"] for i in (1, 2, 3)]
        c = Cluster(dir, addrs, [state[f"PEER_{i}"] for i in (1, 2, 3)])
        yield c
        c.close()
    finally:
        down = subprocess.run(
            ["bash", SCRIPT, "down", "--wipe"], env=env, capture_output=True, text=True,
            timeout=60,
        )
        assert down.returncode == 0, down.stderr
        assert not os.path.exists(os.path.join(dir, "cluster.env"))


@pytest.fixture(scope="module")
def config(cluster: Cluster) -> Iterator[LHConfig]:
    """LHConfig pointing at node 1 the way users configure it: LHC_API_HOST / LHC_API_PORT."""
    host, port = cluster.client_addrs[0].rsplit(":", 1)
    saved = {k: os.environ.get(k) for k in ("LHC_API_HOST", "LHC_API_PORT")}
    os.environ["LHC_API_HOST"] = host
    os.environ["LHC_API_PORT"] = port
    try:
        cfg = LHConfig()
        assert cfg.bootstrap_server == cluster.client_addrs[0]
        yield cfg
        # Disconnect like a client that is done: the nodes' graceful stop waits for open
        # client connections to close.
        for ch in cfg._opened_channels.values():
            ch.close()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def stubs(cluster: Cluster, config: LHConfig):
    """One LittleHorseStub per node, index i is node id i + 1; stubs[0] is config.stub()."""
    return [config.stub()] + [config.stub(server=a) for a in cluster.client_addrs[1:]]


def signing_workflow() -> Workflow:
    def thread(wf: WorkflowThread) -> None:
        signer = wf.declare_str("signer")
        pages = wf.declare_int("pages", 0)
        ev = wf.wait_for_event(EVENT, timeout=60)
        wf.mutate(signer, VariableMutationType.ASSIGN, ev.with_json_path("$.signer"))
        wf.mutate(pages, VariableMutationType.ASSIGN, ev.with_json_path("$.pages"))
        wf.mutate(pages, VariableMutationType.ADD, 1)

    return Workflow(SIGNING_WF, thread)


def timeout_workflow() -> Workflow:
    def thread(wf: WorkflowThread) -> None:
        wf.declare_str("note", "waiting")
        wf.wait_for_event(TIMEOUT_EVENT, timeout=1)

    return Workflow(TIMEOUT_WF, thread)


@pytest.fixture(scope="module")
def specs(config: LHConfig, stubs) -> dict[str, object]:
    create_external_event_def(EVENT, config, timeout=RPC_TIMEOUT_S)
    create_external_event_def(TIMEOUT_EVENT, config, timeout=RPC_TIMEOUT_S)
    create_workflow_spec(signing_workflow(), config, timeout=RPC_TIMEOUT_S)
    create_workflow_spec(timeout_workflow(), config, timeout=RPC_TIMEOUT_S)
    out = {}
    for name in (SIGNING_WF, TIMEOUT_WF):
        # Registered once, visible on every node with the same id.
        got = [s.GetLatestWfSpec(GetLatestWfSpecRequest(name=name), timeout=RPC_TIMEOUT_S)
               for s in stubs]
        assert all(g.id == got[0].id for g in got), got
        assert got[0].id.name == name and got[0].id.major_version == 0
        out[name] = got[0]
    return out


def json_content(obj: object) -> VariableValue:
    return VariableValue(json_obj=json.dumps(obj))


def put_event(stub, wf_run_id: str, content: VariableValue, guid: str | None = None,
              event: str = EVENT) -> ExternalEvent:
    req = PutExternalEventRequest(
        wf_run_id=WfRunId(id=wf_run_id),
        external_event_def_id=ExternalEventDefId(name=event),
        content=content,
    )
    if guid is not None:
        req.guid = guid
    return stub.PutExternalEvent(req, timeout=RPC_TIMEOUT_S)


def get_run(stub, wf_run_id: str) -> WfRun:
    return stub.GetWfRun(WfRunId(id=wf_run_id), timeout=RPC_TIMEOUT_S)


def wait_status(stub, wf_run_id: str, status: int) -> WfRun:
    return poll(
        f"WfRun {wf_run_id} {LHStatus.Name(status)}",
        lambda: get_run(stub, wf_run_id),
        lambda r: r.status == status,
    )


def variables(stub, wf_run_id: str) -> dict[str, VariableValue]:
    got = stub.ListVariables(ListVariablesRequest(wf_run_id=WfRunId(id=wf_run_id)),
                             timeout=RPC_TIMEOUT_S)
    return {v.id.name: v.value for v in got.results}


def get_var(stub, wf_run_id: str, name: str) -> VariableValue:
    v = stub.GetVariable(
        VariableId(wf_run_id=WfRunId(id=wf_run_id), thread_run_number=0, name=name),
        timeout=RPC_TIMEOUT_S,
    )
    assert v.id.name == name and v.id.wf_run_id.id == wf_run_id
    return v.value


def pick_follower(cluster: Cluster) -> tuple[int, int]:
    """(leader id, a follower id); the follower is not node 1 when possible."""
    leader = cluster.leader_id()
    followers = [i for i in (2, 3, 1) if i != leader]
    return leader, followers[0]


# --- tests


def test_cluster_has_one_leader_and_three_voters(cluster: Cluster):
    leader = cluster.leader_id()
    statuses = [cluster.status(i) for i in (1, 2, 3)]
    assert [s.node_id for s in statuses] == [1, 2, 3]
    assert len({s.term for s in statuses}) == 1, statuses
    for s in statuses:
        assert sorted(v.id for v in s.voters) == [1, 2, 3]
        assert sorted(v.client_addr for v in s.voters) == sorted(cluster.client_addrs)
    assert [s.state for s in statuses].count("Leader") == 1, [s.state for s in statuses]
    assert statuses[leader - 1].state == "Leader"


def test_event_through_follower_completes_run_everywhere(cluster, stubs, specs):
    spec = specs[SIGNING_WF]
    run = stubs[0].RunWf(RunWfRequest(wf_spec_name=SIGNING_WF), timeout=RPC_TIMEOUT_S)
    wf_run_id = run.id.id
    assert wf_run_id, run
    assert run.wf_spec_id == spec.id
    assert run.status in (LHStatus.STARTING, LHStatus.RUNNING), run
    running = wait_status(stubs[0], wf_run_id, LHStatus.RUNNING)
    assert running.thread_runs[0].current_node_position == 1, running

    leader, follower = pick_follower(cluster)
    content = json_content({"signer": "alice@example.com", "pages": 41})
    ev = put_event(stubs[follower - 1], wf_run_id, content)
    # It really went through a follower: that node still reports another node as leader.
    st = cluster.status(follower)
    assert st.leader_id not in (0, follower), (follower, st)
    assert ev.id.wf_run_id.id == wf_run_id
    assert ev.id.external_event_def_id.name == EVENT
    assert len(ev.id.guid) > 0
    assert ev.content == content

    done = wait_status(stubs[0], wf_run_id, LHStatus.COMPLETED)
    assert done.thread_runs[0].status == LHStatus.COMPLETED
    assert done.HasField("end_time")

    # Linearizable reads: every node answers with the completed run and its variables.
    for i, stub in enumerate(stubs, start=1):
        r = get_run(stub, wf_run_id)
        assert r.status == LHStatus.COMPLETED, f"node {i}: {r}"
        assert r == done, f"node {i} disagrees:\n{r}\nvs\n{done}"
        assert get_var(stub, wf_run_id, "signer") == VariableValue(str="alice@example.com"), i
        assert get_var(stub, wf_run_id, "pages") == VariableValue(int=42), i
        assert variables(stub, wf_run_id) == {
            "signer": VariableValue(str="alice@example.com"),
            "pages": VariableValue(int=42),
        }, i
        stored = stub.GetExternalEvent(ev.id, timeout=RPC_TIMEOUT_S)
        assert stored.claimed, f"node {i}: {stored}"
        assert stored.content == content
        assert stored.thread_run_number == 0 and stored.node_run_position == 1, stored

    nodes = stubs[0].ListNodeRuns(ListNodeRunsRequest(wf_run_id=WfRunId(id=wf_run_id)),
                                  timeout=RPC_TIMEOUT_S).results
    assert [n.WhichOneof("node_type") for n in nodes] == ["entrypoint", "external_event", "exit"]
    assert all(n.status == LHStatus.COMPLETED for n in nodes), nodes
    wait = nodes[1].external_event
    assert wait.external_event_def_id.name == EVENT
    assert wait.external_event_id == ev.id
    assert not wait.timed_out


def test_event_timeout_fails_the_run(cluster, stubs, specs):
    started = time.monotonic()
    run = stubs[0].RunWf(RunWfRequest(wf_spec_name=TIMEOUT_WF), timeout=RPC_TIMEOUT_S)
    wf_run_id = run.id.id
    failed = wait_status(stubs[0], wf_run_id, LHStatus.ERROR)
    elapsed = time.monotonic() - started
    assert elapsed >= 0.9, f"timed out after {elapsed:.2f}s, before the 1 s timeout"
    assert failed.thread_runs[0].status == LHStatus.ERROR

    for i, stub in enumerate(stubs, start=1):
        nodes = stub.ListNodeRuns(ListNodeRunsRequest(wf_run_id=WfRunId(id=wf_run_id)),
                                  timeout=RPC_TIMEOUT_S).results
        assert [n.WhichOneof("node_type") for n in nodes] == ["entrypoint", "external_event"], i
        wait = nodes[1]
        assert wait.status == LHStatus.ERROR, f"node {i}: {wait}"
        assert [f.failure_name for f in wait.failures] == ["TIMEOUT"], f"node {i}: {wait}"
        assert wait.external_event.timed_out
        assert not wait.external_event.HasField("external_event_id")
        assert get_run(stub, wf_run_id).status == LHStatus.ERROR, i
        assert get_var(stub, wf_run_id, "note") == VariableValue(str="waiting"), i

    # An event arriving after the timeout is stored but not claimed; the run stays in ERROR.
    late = put_event(stubs[1], wf_run_id, VariableValue(str="too late"), event=TIMEOUT_EVENT)
    assert not late.claimed
    assert get_run(stubs[2], wf_run_id).status == LHStatus.ERROR
    assert not stubs[2].GetExternalEvent(late.id, timeout=RPC_TIMEOUT_S).claimed


def test_event_posted_before_the_run_is_claimed(cluster, stubs, specs):
    wf_run_id = new_id("early")
    content = json_content({"signer": "bob", "pages": 7})
    _, follower = pick_follower(cluster)
    ev = put_event(stubs[follower - 1], wf_run_id, content, guid="early-guid")
    assert ev.id == ExternalEventId(
        wf_run_id=WfRunId(id=wf_run_id),
        external_event_def_id=ExternalEventDefId(name=EVENT),
        guid="early-guid",
    )
    assert not ev.claimed
    with pytest.raises(grpc.RpcError) as nf:
        get_run(stubs[0], wf_run_id)
    assert nf.value.code() == grpc.StatusCode.NOT_FOUND

    run = stubs[0].RunWf(RunWfRequest(wf_spec_name=SIGNING_WF, id=wf_run_id),
                         timeout=RPC_TIMEOUT_S)
    assert run.id.id == wf_run_id
    done = wait_status(stubs[2], wf_run_id, LHStatus.COMPLETED)
    assert done.id.id == wf_run_id
    for i, stub in enumerate(stubs, start=1):
        assert get_var(stub, wf_run_id, "signer") == VariableValue(str="bob"), i
        assert get_var(stub, wf_run_id, "pages") == VariableValue(int=8), i
        stored = stub.GetExternalEvent(ev.id, timeout=RPC_TIMEOUT_S)
        assert stored.claimed, f"node {i}: {stored}"
        assert stored.created_at == ev.created_at
    wait = stubs[0].ListNodeRuns(ListNodeRunsRequest(wf_run_id=WfRunId(id=wf_run_id)),
                                 timeout=RPC_TIMEOUT_S).results[1]
    assert wait.external_event.external_event_id == ev.id


def test_put_external_event_is_retry_safe(cluster, stubs, specs):
    run = stubs[0].RunWf(RunWfRequest(wf_spec_name=SIGNING_WF), timeout=RPC_TIMEOUT_S)
    wf_run_id = run.id.id
    wait_status(stubs[0], wf_run_id, LHStatus.RUNNING)
    guid = new_id("retry")
    content = json_content({"signer": "carol", "pages": 1})
    leader, follower = pick_follower(cluster)

    first = put_event(stubs[follower - 1], wf_run_id, content, guid=guid)
    # The client's retry lands on another node (here the leader): same answer, no second event.
    second = put_event(stubs[leader - 1], wf_run_id, content, guid=guid)
    assert first.id.guid == guid
    assert second.id == first.id
    assert second.content == first.content == content
    assert second.created_at == first.created_at

    done = wait_status(stubs[0], wf_run_id, LHStatus.COMPLETED)
    assert get_var(stubs[2], wf_run_id, "pages") == VariableValue(int=2)
    third = put_event(stubs[2], wf_run_id, content, guid=guid)
    assert third.id == first.id and third.created_at == first.created_at and third.claimed
    events = stubs[1].ListExternalEvents(
        ListExternalEventsRequest(wf_run_id=WfRunId(id=wf_run_id)), timeout=RPC_TIMEOUT_S
    ).results
    assert [e.id for e in events] == [first.id]
    assert done.status == LHStatus.COMPLETED

    # Same guid, different content: a conflict, not a silent overwrite.
    other = json_content({"signer": "mallory", "pages": 1})
    for stub in (stubs[follower - 1], stubs[leader - 1]):
        err = rpc_error(lambda: put_event(stub, wf_run_id, other, guid=guid))
        assert err.code() == grpc.StatusCode.ALREADY_EXISTS, err
    assert stubs[0].GetExternalEvent(first.id, timeout=RPC_TIMEOUT_S).content == content
    assert get_var(stubs[0], wf_run_id, "signer") == VariableValue(str="carol")


def test_bad_input_is_rejected_with_the_right_codes(cluster, config, stubs, specs):
    err = rpc_error(lambda: create_external_event_def("doc signed", config,
                                                      timeout=RPC_TIMEOUT_S))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
    # Through a follower too (the rejection travels back from the leader with its code).
    _, follower = pick_follower(cluster)
    err = rpc_error(lambda: stubs[follower - 1].PutExternalEventDef(
        PutExternalEventDefRequest(name="doc signed"), timeout=RPC_TIMEOUT_S))  # noqa: F405
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err

    missing = new_id("missing")
    for i, stub in enumerate(stubs, start=1):
        err = rpc_error(lambda: get_run(stub, missing))
        assert err.code() == grpc.StatusCode.NOT_FOUND, f"node {i}: {err}"

    def with_task(wf: WorkflowThread) -> None:
        wf.declare_str("input", "x")
        wf.execute("some-task")

    err = rpc_error(lambda: create_workflow_spec(Workflow("uses-a-task", with_task), config,
                                                 timeout=RPC_TIMEOUT_S))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
    assert "TASK" in err.details(), err.details()
    err = rpc_error(lambda: stubs[0].GetLatestWfSpec(GetLatestWfSpecRequest(name="uses-a-task"),
                                                    timeout=RPC_TIMEOUT_S))
    assert err.code() == grpc.StatusCode.NOT_FOUND, err


# Failure handlers, interrupts and child threads, built with the client's own Workflow builder.

APPROVAL_EVENT = "approved"
CANCEL_EVENT = "cancel-requested"
BRANCH_EVENTS = ("by-mail", "by-phone")


def approval_with_handlers(name: str, timeout: int) -> Workflow:
    """Waits for approval; a TIMEOUT handler records it. A cancel interrupt reads INPUT."""

    def thread(wf: WorkflowThread) -> None:
        outcome = wf.declare_str("outcome", "pending")
        reason = wf.declare_str("reason", "none")

        def on_cancel(h: WorkflowThread) -> None:
            given = h.add_variable("INPUT", VariableType.STR)  # noqa: F405
            h.mutate(reason, VariableMutationType.ASSIGN, given)

        wf.add_interrupt_handler(CANCEL_EVENT, on_cancel)
        ev = wf.wait_for_event(APPROVAL_EVENT, timeout=timeout)

        def on_timeout(h: WorkflowThread) -> None:
            h.mutate(outcome, VariableMutationType.ASSIGN, "timed out")

        wf.handle_error(ev, on_timeout, LHErrorType.TIMEOUT)  # noqa: F405
        wf.mutate(outcome, VariableMutationType.ASSIGN, "approved")

    return Workflow(name, thread)


def first_of_two() -> Workflow:
    """Two children wait for their own event with their own timeout; the first one wins."""

    def thread(wf: WorkflowThread) -> None:
        def waiter(event: str, timeout: int):
            def child(c: WorkflowThread) -> None:
                c.wait_for_event(event, timeout=timeout)

            return child

        mail = wf.spawn_thread(waiter(BRANCH_EVENTS[0], 30), "mail")
        phone = wf.spawn_thread(waiter(BRANCH_EVENTS[1], 60), "phone")
        wf.wait_for_threads(SpawnedThreads.from_list(mail, phone),
                            strategy=WaitForThreadsStrategy.WAIT_FOR_FIRST)  # noqa: F405

    return Workflow("first-of-two", thread)


@pytest.fixture(scope="module")
def thread_specs(config: LHConfig, stubs) -> None:
    for name in (APPROVAL_EVENT, CANCEL_EVENT) + BRANCH_EVENTS:
        create_external_event_def(name, config, timeout=RPC_TIMEOUT_S)
    create_workflow_spec(approval_with_handlers("approval-impatient", 1), config,
                         timeout=RPC_TIMEOUT_S)
    create_workflow_spec(approval_with_handlers("approval-patient", 60), config,
                         timeout=RPC_TIMEOUT_S)
    create_workflow_spec(first_of_two(), config, timeout=RPC_TIMEOUT_S)


def test_a_timeout_caught_by_handle_error_lets_the_run_complete(cluster, stubs, thread_specs):
    run = stubs[1].RunWf(RunWfRequest(wf_spec_name="approval-impatient"),
                         timeout=RPC_TIMEOUT_S)
    wf_run_id = run.id.id
    done = wait_status(stubs[2], wf_run_id, LHStatus.COMPLETED)
    handler = [t for t in done.thread_runs if t.number == 1]
    assert handler and handler[0].type == ThreadType.FAILURE_HANDLER, done  # noqa: F405
    assert handler[0].status == LHStatus.COMPLETED
    # The handler's mutation of its parent's variable ran; the edge's mutation did not.
    assert get_var(stubs[0], wf_run_id, "outcome") == VariableValue(str="timed out")
    nodes = stubs[0].ListNodeRuns(ListNodeRunsRequest(wf_run_id=WfRunId(id=wf_run_id)),
                                  timeout=RPC_TIMEOUT_S).results
    wait = [n for n in nodes if n.WhichOneof("node_type") == "external_event"
            and n.id.thread_run_number == 0][0]
    assert wait.status == LHStatus.ERROR
    assert [f.failure_name for f in wait.failures] == ["TIMEOUT"]
    assert wait.failures[0].was_properly_handled
    assert wait.failures[0].failure_handler_threadrun_id == 1


def test_an_interrupt_handler_reads_input_and_the_run_resumes(cluster, stubs, thread_specs):
    run = stubs[0].RunWf(RunWfRequest(wf_spec_name="approval-patient"),
                         timeout=RPC_TIMEOUT_S)
    wf_run_id = run.id.id
    cancel = put_event(stubs[2], wf_run_id, VariableValue(str="customer asked"),
                       event=CANCEL_EVENT)
    assert cancel.claimed
    got = poll("interrupt handler done",
               lambda: get_run(stubs[1], wf_run_id),
               lambda r: any(t.type == ThreadType.INTERRUPT  # noqa: F405
                             and t.status == LHStatus.COMPLETED for t in r.thread_runs))
    interrupt = [t for t in got.thread_runs if t.type == ThreadType.INTERRUPT][0]  # noqa: F405
    assert interrupt.interrupt_trigger_id == cancel.id
    assert interrupt.parent_thread_id == 0
    assert get_var(stubs[1], wf_run_id, "reason") == VariableValue(str="customer asked")
    # The interrupted wait resumed and claims the approval.
    approval = put_event(stubs[1], wf_run_id, VariableValue(str="ok"), event=APPROVAL_EVENT)
    assert approval.claimed and approval.thread_run_number == 0, approval
    wait_status(stubs[0], wf_run_id, LHStatus.COMPLETED)
    assert get_var(stubs[0], wf_run_id, "outcome") == VariableValue(str="approved")


def test_wait_for_first_of_two_events_each_with_its_own_timeout(cluster, stubs, thread_specs):
    run = stubs[2].RunWf(RunWfRequest(wf_spec_name="first-of-two"), timeout=RPC_TIMEOUT_S)
    wf_run_id = run.id.id
    ev = put_event(stubs[0], wf_run_id, VariableValue(str="called"), event=BRANCH_EVENTS[1])
    assert ev.claimed and ev.thread_run_number == 2, ev
    done = wait_status(stubs[1], wf_run_id, LHStatus.COMPLETED)
    by_number = {t.number: t for t in done.thread_runs}
    assert by_number[1].type == ThreadType.CHILD  # noqa: F405
    assert by_number[1].status == LHStatus.HALTED, "the slower branch is stopped"
    assert by_number[2].status == LHStatus.COMPLETED
    # The START_THREAD outputs went into the builder's thread-number variables.
    numbers = sorted(v.int for k, v in variables(stubs[0], wf_run_id).items()
                     if k.endswith("START_THREAD"))
    assert numbers == [1, 2]
    # A late event for the stopped branch is kept, not claimed.
    late = put_event(stubs[0], wf_run_id, VariableValue(str="late"), event=BRANCH_EVENTS[0])
    assert not late.claimed


# Task workers: the client's own LHTaskWorker polls and reports against the cluster.

TASK_NAME = "charge-card"
PAYMENT_WF = "payment"


async def charge_card(amount: int) -> str:
    if amount < 0:
        raise LHTaskException("card-declined", "negative amount", VariableValue(int=amount))
    return f"charged {amount}"


def payment_workflow() -> Workflow:
    def thread(wf: WorkflowThread) -> None:
        amount = wf.declare_int("amount")
        receipt = wf.declare_str("receipt", "none")
        out = wf.execute(TASK_NAME, amount, retries=1)
        wf.mutate(receipt, VariableMutationType.ASSIGN, out)

    return Workflow(PAYMENT_WF, thread)


@contextlib.contextmanager
def running_worker(task: Callable, task_name: str) -> Iterator[LHTaskWorker]:
    """A real LHTaskWorker for `task_name`, on its own event loop and thread, stopped on exit.
    It has its own config (same address), so its asyncio channels are closed on its own loop."""
    worker_config = LHConfig()
    worker = LHTaskWorker(task, task_name, worker_config)
    loop = asyncio.new_event_loop()
    threading.Thread(target=lambda: loop.run_until_complete(worker.start()), daemon=True).start()
    try:
        yield worker
    finally:
        async def close_channels() -> None:
            for ch in list(worker_config._opened_channels.values()):
                closed = ch.close()  # asyncio channels return a coroutine, the others None
                if closed is not None:
                    await closed

        asyncio.run_coroutine_threadsafe(close_channels(), loop).result(timeout=RPC_TIMEOUT_S)
        loop.call_soon_threadsafe(worker.stop)


@pytest.fixture(scope="module")
def task_worker(config: LHConfig):
    create_task_def(charge_card, TASK_NAME, config, timeout=RPC_TIMEOUT_S)
    create_workflow_spec(payment_workflow(), config, timeout=RPC_TIMEOUT_S)
    with running_worker(charge_card, TASK_NAME) as worker:
        yield worker


def test_lh_task_worker_executes_task_nodes_on_the_cluster(cluster, stubs, task_worker):
    # The worker learns every node's address from RegisterTaskWorker.
    hosts = stubs[0].RegisterTaskWorker(
        RegisterTaskWorkerRequest(task_worker_id="probe",  # noqa: F405
                                  task_def_id=TaskDefId(name=TASK_NAME)),  # noqa: F405
        timeout=RPC_TIMEOUT_S).your_hosts
    assert sorted(f"{h.host}:{h.port}" for h in hosts) == sorted(cluster.client_addrs)

    ok = stubs[1].RunWf(RunWfRequest(wf_spec_name=PAYMENT_WF,
                                     variables={"amount": VariableValue(int=30)}),
                        timeout=RPC_TIMEOUT_S)
    done = wait_status(stubs[2], ok.id.id, LHStatus.COMPLETED)
    assert get_var(stubs[0], ok.id.id, "receipt") == VariableValue(str="charged 30"), done
    # Its heartbeat (RegisterTaskWorker, before it polled) and the probe's are in the TaskDef's
    # TaskWorkerGroup, with the hosts each was told to poll.
    group = stubs[2].GetTaskWorkerGroup(TaskDefId(name=TASK_NAME),  # noqa: F405
                                        timeout=RPC_TIMEOUT_S)
    me = group.task_workers[task_worker._config.task_worker_id]
    assert sorted(f"{h.host}:{h.port}" for h in me.hosts) == sorted(cluster.client_addrs), group
    assert "probe" in group.task_workers, group
    assert me.latest_heartbeat.seconds > 0, group
    runs = stubs[2].ListTaskRuns(ListTaskRunsRequest(wf_run_id=ok.id),  # noqa: F405
                                 timeout=RPC_TIMEOUT_S).results
    assert len(runs) == 1
    assert runs[0].status == TaskStatus.TASK_SUCCESS  # noqa: F405
    assert runs[0].attempts[0].task_worker_id, runs[0]
    assert runs[0].attempts[0].output == VariableValue(str="charged 30")
    same = stubs[0].GetTaskRun(runs[0].id, timeout=RPC_TIMEOUT_S)
    assert same == runs[0]

    declined = stubs[0].RunWf(RunWfRequest(wf_spec_name=PAYMENT_WF,
                                           variables={"amount": VariableValue(int=-5)}),
                              timeout=RPC_TIMEOUT_S)
    failed = wait_status(stubs[1], declined.id.id, LHStatus.EXCEPTION)
    nodes = stubs[1].ListNodeRuns(ListNodeRunsRequest(wf_run_id=declined.id),
                                  timeout=RPC_TIMEOUT_S).results
    task_node = [n for n in nodes if n.WhichOneof("node_type") == "task"][0]
    assert task_node.failures[0].failure_name == "card-declined", failed
    assert task_node.failures[0].content == VariableValue(int=-5)
    run = stubs[1].GetTaskRun(task_node.task.task_run_id, timeout=RPC_TIMEOUT_S)
    assert run.status == TaskStatus.TASK_EXCEPTION  # noqa: F405
    assert len(run.attempts) == 1, "an exception is not retried"

    # A report for a TaskRun that does not exist is refused, clearly.
    err = rpc_error(lambda: stubs[0].ReportTask(ReportTaskRun(  # noqa: F405
        task_run_id=TaskRunId(wf_run_id=WfRunId(id="no-such-run"), task_guid="0-1"),  # noqa: F405
        status=TaskStatus.TASK_SUCCESS, attempt_number=0), timeout=RPC_TIMEOUT_S))  # noqa: F405
    assert err.code() == grpc.StatusCode.NOT_FOUND, err


# Correlated events: one event by key reaches every WfRun waiting for that key; the payload
# goes into variables and decides a branch.

PAYMENT_EVENT = "payment-received"
AWAIT_WF = "await-payment"


def await_payment() -> Workflow:
    def thread(wf: WorkflowThread) -> None:
        order = wf.declare_str("order-id")
        paid = wf.declare_int("paid", 0)
        tier = wf.declare_str("tier", "unknown")
        ev = wf.wait_for_event(PAYMENT_EVENT, timeout=60, correlation_id=order,
                               correlated_event_config=CorrelatedEventConfig())  # noqa: F405
        wf.mutate(paid, VariableMutationType.ASSIGN, ev.with_json_path("$.amount"))
        wf.do_if(wf.condition(paid, Comparator.GREATER_THAN, 100),  # noqa: F405
                 lambda t: t.mutate(tier, VariableMutationType.ASSIGN, "large"),
                 lambda t: t.mutate(tier, VariableMutationType.ASSIGN, "small"))

    return Workflow(AWAIT_WF, thread)


def test_a_correlated_event_reaches_every_run_waiting_for_its_key(cluster, config, stubs):
    create_workflow_spec(await_payment(), config, timeout=RPC_TIMEOUT_S)
    order = new_id("order")
    runs = [stubs[i].RunWf(RunWfRequest(wf_spec_name=AWAIT_WF,
                                        variables={"order-id": VariableValue(str=order)}),
                           timeout=RPC_TIMEOUT_S).id.id for i in range(2)]
    other = stubs[2].RunWf(RunWfRequest(wf_spec_name=AWAIT_WF,
                                        variables={"order-id": VariableValue(str="other")}),
                           timeout=RPC_TIMEOUT_S).id.id
    put = stubs[1].PutCorrelatedEvent(PutCorrelatedEventRequest(  # noqa: F405
        key=order, external_event_def_id=ExternalEventDefId(name=PAYMENT_EVENT),
        content=json_content({"amount": 250})), timeout=RPC_TIMEOUT_S)
    assert len(put.external_events) == 2, put
    for wf_run_id in runs:
        wait_status(stubs[0], wf_run_id, LHStatus.COMPLETED)
        assert get_var(stubs[2], wf_run_id, "paid") == VariableValue(int=250)
        assert get_var(stubs[2], wf_run_id, "tier") == VariableValue(str="large")
        events = stubs[0].ListExternalEvents(
            ListExternalEventsRequest(wf_run_id=WfRunId(id=wf_run_id)),
            timeout=RPC_TIMEOUT_S).results
        assert len(events) == 1 and events[0].claimed, events
    assert get_run(stubs[0], other).status == LHStatus.RUNNING
    got = stubs[2].GetCorrelatedEvent(put.id, timeout=RPC_TIMEOUT_S)
    assert len(got.external_events) == 2
    found = stubs[0].SearchCorrelatedEvent(SearchCorrelatedEventRequest(  # noqa: F405
        external_event_def_id=ExternalEventDefId(name=PAYMENT_EVENT), has_external_events=True),
        timeout=RPC_TIMEOUT_S).results
    assert put.id in list(found)
    # A small payment for the other key takes the other branch.
    stubs[0].PutCorrelatedEvent(PutCorrelatedEventRequest(  # noqa: F405
        key="other", external_event_def_id=ExternalEventDefId(name=PAYMENT_EVENT),
        content=json_content({"amount": 7})), timeout=RPC_TIMEOUT_S)
    wait_status(stubs[1], other, LHStatus.COMPLETED)
    assert get_var(stubs[1], other, "tier") == VariableValue(str="small")
    # The same key again with other content is a conflict.
    err = rpc_error(lambda: stubs[0].PutCorrelatedEvent(PutCorrelatedEventRequest(  # noqa: F405
        key=order, external_event_def_id=ExternalEventDefId(name=PAYMENT_EVENT),
        content=json_content({"amount": 1})), timeout=RPC_TIMEOUT_S))
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS, err


# SearchVariable and Whoami, as the client's users call them.

ORDER_EVENT = "order-shipped"
ORDER_WF = "ship-order"


def test_search_variable_finds_runs_by_a_searchable_variable(cluster, config, stubs):
    def thread(wf: WorkflowThread) -> None:
        order = wf.declare_str("order_id").searchable().required()
        wf.declare_str("note", "plain")
        shipped = wf.wait_for_event(ORDER_EVENT, timeout=60)
        wf.mutate(order, VariableMutationType.ASSIGN, shipped.with_json_path("$.new_id"))

    create_external_event_def(ORDER_EVENT, config, timeout=RPC_TIMEOUT_S)
    create_workflow_spec(Workflow(ORDER_WF, thread), config, timeout=RPC_TIMEOUT_S)
    key = new_id("order")
    runs = [stubs[0].RunWf(RunWfRequest(
        wf_spec_name=ORDER_WF, variables={"order_id": VariableValue(str=key)}),
        timeout=RPC_TIMEOUT_S).id.id for _ in range(2)]

    def search(stub, value: str) -> list[str]:
        found = stub.SearchVariable(SearchVariableRequest(  # noqa: F405
            wf_spec_name=ORDER_WF, var_name="order_id", value=VariableValue(str=value)),
            timeout=RPC_TIMEOUT_S)
        assert all(v.name == "order_id" and v.thread_run_number == 0 for v in found.results)
        return [v.wf_run_id.id for v in found.results]

    # Acknowledged runs are found from every node (oldest first, but two runs may share a
    # millisecond, and then their ids order them).
    for i, stub in enumerate(stubs, start=1):
        assert sorted(search(stub, key)) == sorted(runs), f"node {i}"
    # The event re-keys the first run: it moves from the old value to the new one.
    new_key = new_id("reshipped")
    put_event(stubs[1], runs[0], json_content({"new_id": new_key}), event=ORDER_EVENT)
    wait_status(stubs[0], runs[0], LHStatus.COMPLETED)
    assert search(stubs[2], key) == runs[1:]
    assert search(stubs[2], new_key) == runs[:1]
    # A variable that is not searchable is refused, as LittleHorse refuses it.
    err = rpc_error(lambda: stubs[0].SearchVariable(SearchVariableRequest(  # noqa: F405
        wf_spec_name=ORDER_WF, var_name="note", value=VariableValue(str="plain")),
        timeout=RPC_TIMEOUT_S))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
    assert "not searchable" in err.details(), err.details()


def test_whoami_is_the_anonymous_admin(stubs):
    me = stubs[1].Whoami(empty_pb2.Empty(), timeout=RPC_TIMEOUT_S)
    assert me.id.id == "anonymous"
    assert [(list(a.resources), list(a.allowed_actions)) for a in me.global_acls.acls] == [
        ([ACLResource.ACL_ALL_RESOURCES], [ACLAction.ALL_ACTIONS])]  # noqa: F405


def test_await_workflow_event_returns_what_the_run_throws(cluster, config, stubs):
    """The LittleHorse request/response pattern: RunWf, then AwaitWorkflowEvent for what a
    THROW_EVENT node throws once the run has its external event. The call is held on a
    follower while the event is put through another node."""
    event_def, thrown_def = new_id("quote-asked"), new_id("quote-ready")
    wf_name = new_id("quote")
    create_external_event_def(event_def, config, timeout=RPC_TIMEOUT_S)
    stubs[0].PutWorkflowEventDef(
        PutWorkflowEventDefRequest(
            name=thrown_def,
            content_type=ReturnType(return_type=TypeDefinition(primitive_type=VariableType.STR)),
        ),
        timeout=RPC_TIMEOUT_S,
    )

    def thread(wf: WorkflowThread) -> None:
        price = wf.declare_str("price")
        wf.throw_event(thrown_def, "started")
        ev = wf.wait_for_event(event_def, timeout=60)
        wf.mutate(price, VariableMutationType.ASSIGN, ev)
        wf.throw_event(thrown_def, price)

    create_workflow_spec(Workflow(wf_name, thread), config, timeout=RPC_TIMEOUT_S)
    wf_run_id = WfRunId(id=new_id("q"))
    stubs[0].RunWf(RunWfRequest(wf_spec_name=wf_name, id=wf_run_id.id), timeout=RPC_TIMEOUT_S)

    req = AwaitWorkflowEventRequest(wf_run_id=wf_run_id,
                                    event_def_ids=[WorkflowEventDefId(name=thrown_def)])
    first = stubs[1].AwaitWorkflowEvent(req, timeout=RPC_TIMEOUT_S)
    assert first.content == VariableValue(str="started"), first
    assert first.id.number == 0 and first.id.workflow_event_def_id.name == thrown_def
    assert first.node_run_id.position == 1, first

    # Ignoring the first, the call waits for the second, which the event brings.
    _, follower = pick_follower(cluster)
    ignoring = AwaitWorkflowEventRequest(wf_run_id=wf_run_id,
                                         event_def_ids=[WorkflowEventDefId(name=thrown_def)],
                                         workflow_events_to_ignore=[first.id])
    # In a thread: the client's channel interceptors make `.future()` block until the answer.
    held: dict[str, object] = {}
    waiter = threading.Thread(target=lambda: held.update(
        event=stubs[follower - 1].AwaitWorkflowEvent(ignoring, timeout=RPC_TIMEOUT_S)))
    waiter.start()
    time.sleep(0.3)
    assert waiter.is_alive() and not held, "nothing more was thrown yet"
    put_event(stubs[0], wf_run_id.id, VariableValue(str="12.50"), event=event_def)
    waiter.join(RPC_TIMEOUT_S)
    second = held["event"]
    assert second.content == VariableValue(str="12.50"), second
    assert second.id.number == 1
    wait_status(stubs[0], wf_run_id.id, LHStatus.COMPLETED)

    listed = stubs[2].ListWorkflowEvents(ListWorkflowEventsRequest(wf_run_id=wf_run_id),
                                         timeout=RPC_TIMEOUT_S).results
    assert list(listed) == [first, second]
    assert stubs[2].GetWorkflowEvent(second.id, timeout=RPC_TIMEOUT_S) == second
    found = stubs[1].SearchWorkflowEvent(
        SearchWorkflowEventRequest(workflow_event_def_id=WorkflowEventDefId(name=thrown_def)),
        timeout=RPC_TIMEOUT_S)
    assert list(found.results) == [first.id, second.id], found
    kinds = [n.WhichOneof("node_type") for n in stubs[0].ListNodeRuns(
        ListNodeRunsRequest(wf_run_id=wf_run_id), timeout=RPC_TIMEOUT_S).results]
    assert kinds == ["entrypoint", "throw_event", "external_event", "throw_event", "exit"], kinds

    # Nothing left to return: the client's deadline ends the call.
    again = AwaitWorkflowEventRequest(wf_run_id=wf_run_id,
                                      workflow_events_to_ignore=[first.id, second.id])
    err = rpc_error(lambda: stubs[0].AwaitWorkflowEvent(again, timeout=0.5))
    assert err.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED), err


def test_wait_for_condition_waits_until_a_child_thread_makes_it_true(cluster, config, stubs):
    """The SDK's wait_for_condition (an expression condition) in the parent, a spawned thread
    adding to the parent's variable per event: the parent passes once the count is reached."""
    vote, wf_name = new_id("vote"), new_id("quorum")
    create_external_event_def(vote, config, timeout=RPC_TIMEOUT_S)

    def thread(wf: WorkflowThread) -> None:
        votes = wf.declare_int("votes", 0)

        def voter(t: WorkflowThread) -> None:
            t.wait_for_event(vote, timeout=60)
            t.mutate(votes, VariableMutationType.ADD, 1)
            t.wait_for_event(vote, timeout=60)
            t.mutate(votes, VariableMutationType.ADD, 1)

        wf.spawn_thread(voter, "voter", {})
        wf.wait_for_condition(wf.condition(votes, Comparator.GREATER_THAN_EQ, 2))

    create_workflow_spec(Workflow(wf_name, thread), config, timeout=RPC_TIMEOUT_S)
    wf_run_id = new_id("v")
    stubs[0].RunWf(RunWfRequest(wf_spec_name=wf_name, id=wf_run_id), timeout=RPC_TIMEOUT_S)

    def condition_node():
        nodes = stubs[0].ListNodeRuns(ListNodeRunsRequest(wf_run_id=WfRunId(id=wf_run_id)),
                                      timeout=RPC_TIMEOUT_S).results
        return [n for n in nodes if n.WhichOneof("node_type") == "wait_for_condition"]

    waiting = poll("the condition node", condition_node, lambda ns: len(ns) == 1)
    assert waiting[0].status == LHStatus.RUNNING, waiting
    put_event(stubs[1], wf_run_id, VariableValue(int=1), event=vote)
    assert get_var(stubs[0], wf_run_id, "votes") == VariableValue(int=1)
    assert condition_node()[0].status == LHStatus.RUNNING
    assert get_run(stubs[0], wf_run_id).status == LHStatus.RUNNING
    put_event(stubs[2], wf_run_id, VariableValue(int=2), event=vote)
    wait_status(stubs[0], wf_run_id, LHStatus.COMPLETED)
    assert condition_node()[0].status == LHStatus.COMPLETED


def test_a_user_task_is_found_assigned_and_completed_by_people(cluster, config, stubs):
    """The SDK's assign_user_task to a group, with a cancel trigger the test never reaches:
    the task is found by SearchUserTaskRun on one node, assigned through another and
    completed through a third; its results become the workflow's variable."""
    ut_name, wf_name = new_id("approve"), new_id("expense")
    stubs[0].PutUserTaskDef(
        PutUserTaskDefRequest(
            name=ut_name,
            fields=[
                UserTaskField(name="approved", type=VariableType.BOOL, display_name="Approved",
                              required=True),
                UserTaskField(name="note", type=VariableType.STR, display_name="Note"),
            ],
        ),
        timeout=RPC_TIMEOUT_S,
    )

    def thread(wf: WorkflowThread) -> None:
        decision = wf.declare_json_obj("decision")
        task = wf.assign_user_task(ut_name, user_group="finance")
        wf.cancel_user_task_run_after(task, 3600)
        wf.mutate(decision, VariableMutationType.ASSIGN, task)

    create_workflow_spec(Workflow(wf_name, thread), config, timeout=RPC_TIMEOUT_S)
    wf_run_id = new_id("x")
    stubs[0].RunWf(RunWfRequest(wf_spec_name=wf_name, id=wf_run_id), timeout=RPC_TIMEOUT_S)

    found = stubs[1].SearchUserTaskRun(
        SearchUserTaskRunRequest(user_group="finance", user_task_def_name=ut_name),
        timeout=RPC_TIMEOUT_S,
    ).results
    assert [i.wf_run_id.id for i in found] == [wf_run_id], found
    task_id = found[0]
    run = stubs[2].GetUserTaskRun(task_id, timeout=RPC_TIMEOUT_S)
    assert run.status == UserTaskRunStatus.UNASSIGNED and run.user_group == "finance", run

    stubs[2].AssignUserTaskRun(
        AssignUserTaskRunRequest(user_task_run_id=task_id, user_id="anna", user_group="finance"),
        timeout=RPC_TIMEOUT_S,
    )
    err = rpc_error(lambda: stubs[0].AssignUserTaskRun(
        AssignUserTaskRunRequest(user_task_run_id=task_id, user_id="bob"), timeout=RPC_TIMEOUT_S))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err
    err = rpc_error(lambda: stubs[0].CompleteUserTaskRun(
        CompleteUserTaskRunRequest(user_task_run_id=task_id, user_id="anna",
                                   results={"note": VariableValue(str="no decision")}),
        timeout=RPC_TIMEOUT_S))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err

    stubs[1].CompleteUserTaskRun(
        CompleteUserTaskRunRequest(user_task_run_id=task_id, user_id="anna",
                                   results={"approved": VariableValue(bool=True),
                                            "note": VariableValue(str="ok")}),
        timeout=RPC_TIMEOUT_S,
    )
    wait_status(stubs[0], wf_run_id, LHStatus.COMPLETED)
    decision = json.loads(get_var(stubs[2], wf_run_id, "decision").json_obj)
    assert decision == {"approved": True, "note": "ok"}, decision
    done = stubs[0].GetUserTaskRun(task_id, timeout=RPC_TIMEOUT_S)
    assert done.status == UserTaskRunStatus.DONE and done.user_id == "anna", done
    # The cancel trigger went with the completed task: nothing fires in an hour.
    kinds = [e.WhichOneof("event") for e in done.events]
    assert kinds == ["assigned", "assigned", "completed"], kinds


def test_spawn_thread_for_each_starts_one_child_per_item_and_waits_for_all(cluster, config,
                                                                          stubs):
    """The SDK's spawn_thread_for_each over a JSON_ARR and wait_for_threads of the result: one
    child per signer, each with its signer as INPUT, each waiting for its own event; the run
    completes after the last signature and every signer is recorded once."""
    signed, wf_name = new_id("signed"), new_id("contract")
    create_external_event_def(signed, config, timeout=RPC_TIMEOUT_S)

    def thread(wf: WorkflowThread) -> None:
        signers = wf.declare_json_arr("signers").required()
        signed_by = wf.declare_json_arr("signed_by", [])

        def sign(t: WorkflowThread) -> None:
            who = t.declare_str("INPUT")
            t.wait_for_event(signed, timeout=60)
            t.mutate(signed_by, VariableMutationType.EXTEND, who)

        children = wf.spawn_thread_for_each(signers, sign, "sign")
        wf.wait_for_threads(children)

    create_workflow_spec(Workflow(wf_name, thread), config, timeout=RPC_TIMEOUT_S)
    wf_run_id = new_id("c")
    names = ["ada", "bea", "cyd"]
    stubs[0].RunWf(
        RunWfRequest(wf_spec_name=wf_name, id=wf_run_id,
                     variables={"signers": VariableValue(json_arr=json.dumps(names))}),
        timeout=RPC_TIMEOUT_S,
    )
    run = get_run(stubs[1], wf_run_id)
    children = [t for t in run.thread_runs if t.type == ThreadType.CHILD]
    assert [t.number for t in children] == [1, 2, 3], run
    inputs = [
        stubs[2].GetVariable(VariableId(wf_run_id=WfRunId(id=wf_run_id), thread_run_number=n,
                                        name="INPUT"), timeout=RPC_TIMEOUT_S).value.str
        for n in (1, 2, 3)
    ]
    assert inputs == names, inputs
    nodes = stubs[0].ListNodeRuns(ListNodeRunsRequest(wf_run_id=WfRunId(id=wf_run_id)),
                                  timeout=RPC_TIMEOUT_S).results
    many = [n for n in nodes if n.WhichOneof("node_type") == "start_multiple_threads"]
    assert len(many) == 1 and list(many[0].start_multiple_threads.child_thread_ids) == [1, 2, 3]

    for i, stub in enumerate(stubs):
        put_event(stub, wf_run_id, VariableValue(str=f"signature {i}"), event=signed)
        if i < 2:
            assert get_run(stubs[0], wf_run_id).status == LHStatus.RUNNING
    wait_status(stubs[0], wf_run_id, LHStatus.COMPLETED)
    got = json.loads(get_var(stubs[1], wf_run_id, "signed_by").json_arr)
    assert sorted(got) == names, got


def test_rescue_thread_run_gives_a_timed_out_run_another_wait(cluster, config, stubs):
    """A run whose event came too late fails; RescueThreadRun through a follower waits for it
    again, the event completes it, and a completed run is not rescued."""
    late, wf_name = new_id("late"), new_id("rescued")
    create_external_event_def(late, config, timeout=RPC_TIMEOUT_S)

    def thread(wf: WorkflowThread) -> None:
        got = wf.declare_str("got")
        ev = wf.wait_for_event(late, timeout=1)
        wf.mutate(got, VariableMutationType.ASSIGN, ev)

    create_workflow_spec(Workflow(wf_name, thread), config, timeout=RPC_TIMEOUT_S)
    wf_run_id = new_id("r")
    stubs[0].RunWf(RunWfRequest(wf_spec_name=wf_name, id=wf_run_id), timeout=RPC_TIMEOUT_S)
    failed = wait_status(stubs[0], wf_run_id, LHStatus.ERROR)
    assert failed.thread_runs[0].status == LHStatus.ERROR, failed

    _, follower = pick_follower(cluster)
    rescued = stubs[follower - 1].RescueThreadRun(
        RescueThreadRunRequest(wf_run_id=WfRunId(id=wf_run_id), thread_run_number=0),
        timeout=RPC_TIMEOUT_S,
    )
    assert rescued.status == LHStatus.RUNNING, rescued
    nodes = stubs[1].ListNodeRuns(ListNodeRunsRequest(wf_run_id=WfRunId(id=wf_run_id)),
                                  timeout=RPC_TIMEOUT_S).results
    waits = [n for n in nodes if n.WhichOneof("node_type") == "external_event"]
    assert [n.status for n in waits] == [LHStatus.ERROR, LHStatus.RUNNING], waits
    put_event(stubs[2], wf_run_id, VariableValue(str="in time"), event=late)
    wait_status(stubs[0], wf_run_id, LHStatus.COMPLETED)
    assert get_var(stubs[1], wf_run_id, "got") == VariableValue(str="in time")

    err = rpc_error(lambda: stubs[0].RescueThreadRun(
        RescueThreadRunRequest(wf_run_id=WfRunId(id=wf_run_id), thread_run_number=0),
        timeout=RPC_TIMEOUT_S))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err


def test_schedule_wf_starts_a_run_at_the_next_minute(cluster, config, stubs):
    """ScheduleWf through a follower with `* * * * *`: at the next whole minute (UTC) the
    leader starts the WfRun `{id}-{due ms}` with the stored variables; Get and Search find the
    schedule on every node; after DeleteScheduledWfRun it is gone and its run stays."""
    wf_name, sched = new_id("nightly"), new_id("every-minute")

    def thread(wf: WorkflowThread) -> None:
        wf.declare_str("who")

    create_workflow_spec(Workflow(wf_name, thread), config, timeout=RPC_TIMEOUT_S)
    _, follower = pick_follower(cluster)
    made = stubs[follower - 1].ScheduleWf(
        ScheduleWfRequest(id=sched, wf_spec_name=wf_name, cron_expression="* * * * *",
                          variables={"who": VariableValue(str="ops")}),
        timeout=RPC_TIMEOUT_S,
    )
    assert made.id.id == sched and made.wf_spec_id.name == wf_name, made
    for stub in stubs:
        got = stub.GetScheduledWfRun(ScheduledWfRunId(id=sched), timeout=RPC_TIMEOUT_S)
        assert got.cron_expression == "* * * * *" and got.variables["who"].str == "ops", got
        found = stub.SearchScheduledWfRun(SearchScheduledWfRunRequest(wf_spec_name=wf_name),
                                          timeout=RPC_TIMEOUT_S)
        assert [i.id for i in found.results] == [sched], found

    # The first time is the first whole minute after the entry's time, which created_at is.
    due_ms = (made.created_at.ToMilliseconds() // 60_000 + 1) * 60_000
    run_id = f"{sched}-{due_ms}"
    # The next minute is at most 60 s away; the run completes as it starts.
    def run_if_started() -> WfRun | None:
        try:
            return get_run(stubs[2], run_id)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise

    run = poll(f"scheduled run {run_id}", run_if_started,
               lambda r: r is not None and r.status == LHStatus.COMPLETED, timeout=60 + SETTLE_S)
    assert run.wf_spec_id.name == wf_name, run
    assert run.start_time.ToMilliseconds() >= due_ms, run
    assert get_var(stubs[0], run_id, "who") == VariableValue(str="ops")
    runs = stubs[1].SearchWfRun(SearchWfRunRequest(wf_spec_name=wf_name), timeout=RPC_TIMEOUT_S)
    assert [r.id for r in runs.results] == [run_id], runs

    stubs[0].DeleteScheduledWfRun(DeleteScheduledWfRunRequest(id=ScheduledWfRunId(id=sched)),
                                  timeout=RPC_TIMEOUT_S)
    err = rpc_error(lambda: stubs[1].GetScheduledWfRun(ScheduledWfRunId(id=sched),
                                                       timeout=RPC_TIMEOUT_S))
    assert err.code() == grpc.StatusCode.NOT_FOUND, err
    assert get_run(stubs[1], run_id).status == LHStatus.COMPLETED

    bad = rpc_error(lambda: stubs[0].ScheduleWf(
        ScheduleWfRequest(wf_spec_name=wf_name, cron_expression="every minute"),
        timeout=RPC_TIMEOUT_S))
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT and "cron" in bad.details(), bad


REMINDED: list[str] = []


async def send_reminder(who: str) -> str:
    REMINDED.append(who)
    return f"reminded {who}"


def test_schedule_reminder_task_runs_on_a_worker_and_leaves_the_user_task(cluster, config,
                                                                          stubs):
    """The SDK's schedule_reminder_task: one second after the user task arrives, a TaskRun of
    the reminder TaskDef (source user_task_trigger) reaches a real LHTaskWorker; the user task
    stays assigned, records the TaskRun, and completing it still completes the WfRun."""
    ut_name, wf_name, task_name = new_id("sign"), new_id("reminded"), new_id("remind")
    stubs[0].PutUserTaskDef(
        PutUserTaskDefRequest(name=ut_name, fields=[
            UserTaskField(name="ok", type=VariableType.BOOL, display_name="OK", required=True)]),
        timeout=RPC_TIMEOUT_S,
    )
    create_task_def(send_reminder, task_name, config, timeout=RPC_TIMEOUT_S)

    def thread(wf: WorkflowThread) -> None:
        task = wf.assign_user_task(ut_name, user_id="anna")
        wf.schedule_reminder_task(task, 1, task_name, "anna")

    create_workflow_spec(Workflow(wf_name, thread), config, timeout=RPC_TIMEOUT_S)
    with running_worker(send_reminder, task_name):
        wf_run_id = new_id("r")
        stubs[1].RunWf(RunWfRequest(wf_spec_name=wf_name, id=wf_run_id), timeout=RPC_TIMEOUT_S)

        def reminders() -> list:
            runs = stubs[2].ListTaskRuns(ListTaskRunsRequest(wf_run_id=WfRunId(id=wf_run_id)),
                                         timeout=RPC_TIMEOUT_S).results
            return [r for r in runs if r.source.WhichOneof("task_run_source") == "user_task_trigger"]

        done = poll("the reminder TaskRun succeeded", reminders,
                    lambda rs: len(rs) == 1 and rs[0].status == TaskStatus.TASK_SUCCESS)
        assert done[0].attempts[0].output == VariableValue(str="reminded anna"), done
        assert done[0].source.user_task_trigger.user_id == "anna", done
        assert "anna" in REMINDED

        # The USER_TASK node is the thread's second (position 1); its guid is "0-1".
        assert done[0].source.user_task_trigger.node_run_id.position == 1, done
        task_id = UserTaskRunId(wf_run_id=WfRunId(id=wf_run_id), user_task_guid="0-1")
        ut = stubs[0].GetUserTaskRun(task_id, timeout=RPC_TIMEOUT_S)
        assert ut.status == UserTaskRunStatus.ASSIGNED and ut.user_id == "anna", ut
        executed = [e.task_executed.task_run for e in ut.events
                    if e.WhichOneof("event") == "task_executed"]
        assert executed == [done[0].id], ut.events
        assert get_run(stubs[0], wf_run_id).status == LHStatus.RUNNING

        stubs[0].CompleteUserTaskRun(
            CompleteUserTaskRunRequest(user_task_run_id=task_id, user_id="anna",
                                       results={"ok": VariableValue(bool=True)}),
            timeout=RPC_TIMEOUT_S)
        wait_status(stubs[1], wf_run_id, LHStatus.COMPLETED)


# Checkpoints: the client's execute_and_checkpoint saves a step's result; when the attempt fails
# after it, the retry reads the step back instead of doing it again.

LABELS_PRINTED: list[str] = []


def print_label(order: str, step) -> str:
    step.log(f"printing {order}")
    LABELS_PRINTED.append(order)
    return f"label-{order}"


async def ship_order(order: str, ctx: WorkerContext) -> str:
    label = await ctx.execute_and_checkpoint(lambda step: print_label(order, step))
    if ctx.attempt_number == 0:
        raise RuntimeError("the courier's API fell over after the label was printed")
    return f"{label} shipped on attempt {ctx.attempt_number}"


def test_a_checkpointed_step_is_not_redone_when_the_task_is_retried(cluster, config, stubs):
    task_name, wf_name = new_id("ship"), new_id("shipping")
    create_task_def(ship_order, task_name, config, timeout=RPC_TIMEOUT_S)

    def thread(wf: WorkflowThread) -> None:
        order = wf.declare_str("order")
        receipt = wf.declare_str("receipt", "none")
        wf.mutate(receipt, VariableMutationType.ASSIGN, wf.execute(task_name, order, retries=1))

    create_workflow_spec(Workflow(wf_name, thread), config, timeout=RPC_TIMEOUT_S)
    with running_worker(ship_order, task_name):
        order = new_id("o")
        ok = stubs[1].RunWf(RunWfRequest(wf_spec_name=wf_name,
                                         variables={"order": VariableValue(str=order)}),
                            timeout=RPC_TIMEOUT_S)
        done = wait_status(stubs[2], ok.id.id, LHStatus.COMPLETED)
        assert get_var(stubs[0], ok.id.id, "receipt") == VariableValue(
            str=f"label-{order} shipped on attempt 1"), done
        assert LABELS_PRINTED.count(order) == 1, LABELS_PRINTED

        runs = stubs[0].ListTaskRuns(ListTaskRunsRequest(wf_run_id=ok.id),  # noqa: F405
                                     timeout=RPC_TIMEOUT_S).results
        assert len(runs) == 1 and runs[0].total_checkpoints == 1, runs
        assert [a.status for a in runs[0].attempts] == [
            TaskStatus.TASK_FAILED, TaskStatus.TASK_SUCCESS]  # noqa: F405
        saved = stubs[1].GetCheckpoint(CheckpointId(task_run=runs[0].id,  # noqa: F405
                                                    checkpoint_number=0),
                                       timeout=RPC_TIMEOUT_S)
        assert saved.value == VariableValue(str=f"label-{order}"), saved
        assert f"printing {order}" in saved.logs, saved

        # The attempt is over: a zombie's checkpoint is answered STOP_TASK and not saved.
        late = stubs[2].PutCheckpoint(PutCheckpointRequest(  # noqa: F405
            task_run_id=runs[0].id, task_attempt=1, value=VariableValue(str="late")),
            timeout=RPC_TIMEOUT_S)
        assert late.flow_control_continue_type == \
            PutCheckpointResponse.FlowControlContinue.STOP_TASK, late  # noqa: F405
        assert not late.HasField("created_checkpoint")
        missing = rpc_error(lambda: stubs[0].GetCheckpoint(CheckpointId(  # noqa: F405
            task_run=runs[0].id, checkpoint_number=1), timeout=RPC_TIMEOUT_S))
        assert missing.code() == grpc.StatusCode.NOT_FOUND, missing
        unknown = rpc_error(lambda: stubs[0].PutCheckpoint(PutCheckpointRequest(  # noqa: F405
            task_run_id=TaskRunId(wf_run_id=WfRunId(id="no-such-run"),  # noqa: F405
                                  task_guid="0-1"),
            task_attempt=0, value=VariableValue(int=1)), timeout=RPC_TIMEOUT_S))
        assert unknown.code() == grpc.StatusCode.INVALID_ARGUMENT, unknown


def test_a_parent_runs_a_child_wf_that_writes_an_inherited_variable(cluster, config, stubs):
    """The SDK's run_wf / wait_for_child_wf, with parent_wf and an inherited variable: the
    parent starts a child that waits for an event; the event reaches the child by its nested
    WfRunId through a follower; the child's write to `total` is the parent's, its output the
    parent's wait node's, and GetWfRun answers the child under its nested id."""
    parent_name, child_name, paid = new_id("order"), new_id("payment"), new_id("paid")
    create_external_event_def(paid, config, timeout=RPC_TIMEOUT_S)

    def parent_v0(wf: WorkflowThread) -> None:
        wf.declare_int("total", 0).as_public()
        wf.declare_int("got")

    # A child's inherited variable needs its parent WfSpec first; the parent's RUN_CHILD_WF
    # node needs the child's, so the parent's second version starts it (as with LittleHorse).
    create_workflow_spec(Workflow(parent_name, parent_v0), config, timeout=RPC_TIMEOUT_S)

    def child(wf: WorkflowThread) -> None:
        total = wf.add_variable("total", VariableType.INT).as_inherited()
        amount = wf.declare_int("amount")
        wf.wait_for_event(paid, timeout=60)
        wf.mutate(total, VariableMutationType.ADD, amount)
        wf.complete(amount)

    create_workflow_spec(Workflow(child_name, child, parent_wf=parent_name), config,
                         timeout=RPC_TIMEOUT_S)

    def parent_v1(wf: WorkflowThread) -> None:
        wf.declare_int("total", 0).as_public()
        got = wf.declare_int("got")
        spawned = wf.run_wf(child_name, {"amount": 5})
        wf.mutate(got, VariableMutationType.ASSIGN, wf.wait_for_child_wf(spawned))

    create_workflow_spec(Workflow(parent_name, parent_v1), config, timeout=RPC_TIMEOUT_S)
    parent_id = new_id("o")
    stubs[0].RunWf(RunWfRequest(wf_spec_name=parent_name, id=parent_id), timeout=RPC_TIMEOUT_S)

    started = stubs[1].GetNodeRun(
        NodeRunId(wf_run_id=WfRunId(id=parent_id), thread_run_number=0, position=1),
        timeout=RPC_TIMEOUT_S)
    assert started.WhichOneof("node_type") == "run_child_wf", started
    child_id = started.run_child_wf.child_wf_run_id
    assert child_id.parent_wf_run_id == WfRunId(id=parent_id), child_id
    child_run = stubs[2].GetWfRun(child_id, timeout=RPC_TIMEOUT_S)
    assert child_run.id == child_id and child_run.wf_spec_id.name == child_name, child_run
    assert child_run.status == LHStatus.RUNNING
    assert get_run(stubs[0], parent_id).status == LHStatus.RUNNING

    _, follower = pick_follower(cluster)
    stubs[follower - 1].PutExternalEvent(
        PutExternalEventRequest(wf_run_id=child_id,
                                external_event_def_id=ExternalEventDefId(name=paid),
                                content=VariableValue(str="ok")),
        timeout=RPC_TIMEOUT_S)
    wait_status(stubs[0], parent_id, LHStatus.COMPLETED)
    assert stubs[1].GetWfRun(child_id, timeout=RPC_TIMEOUT_S).status == LHStatus.COMPLETED
    assert get_var(stubs[2], parent_id, "total") == VariableValue(int=5)
    assert get_var(stubs[2], parent_id, "got") == VariableValue(int=5)
