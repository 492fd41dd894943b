"""The real LittleHorse Python client against a Halter node serving TLS.

A one-node cluster is started with the certificates generated here (a CA, the node's
certificate for 127.0.0.1, a client certificate) and `--tls-client-ca`, so the client port
requires mutual TLS. The client is configured the way LittleHorse's users do it:
LHC_API_PROTOCOL=TLS, LHC_CA_CERT, LHC_CLIENT_CERT and LHC_CLIENT_KEY.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import subprocess
import time
from typing import Iterator

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from littlehorse import create_external_event_def, create_workflow_spec
from littlehorse.config import LHConfig
from littlehorse.model import (
    ExternalEventDefId,
    LHStatus,
    PutExternalEventRequest,
    RunWfRequest,
    VariableValue,
    WfRunId,
)
from littlehorse.workflow import Workflow, WorkflowThread

RPC_TIMEOUT_S = 10.0
LH_KEYS = ("LHC_API_HOST", "LHC_API_PORT", "LHC_API_PROTOCOL", "LHC_CA_CERT",
           "LHC_CLIENT_CERT", "LHC_CLIENT_KEY")


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert(subject: str, key, issuer_name: str, issuer_key, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
         .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
         .public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        b = b.add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _write(path: str, data: bytes) -> str:
    with open(path, "wb") as fh:
        fh.write(data)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TlsNode:
    def __init__(self, dir: str):
        ca_key, node_key, client_key = _key(), _key(), _key()
        ca = _cert("halter-test-ca", ca_key, "halter-test-ca", ca_key, ca=True)
        pem = serialization.Encoding.PEM
        self.ca = _write(os.path.join(dir, "ca.pem"), ca.public_bytes(pem))
        self.node_cert = _write(os.path.join(dir, "node.pem"),
                                _cert("node", node_key, "halter-test-ca", ca_key, False)
                                .public_bytes(pem))
        self.node_key = _write(os.path.join(dir, "node.key"), _pem_key(node_key))
        self.client_cert = _write(os.path.join(dir, "client.pem"),
                                  _cert("client", client_key, "halter-test-ca", ca_key, False)
                                  .public_bytes(pem))
        self.client_key = _write(os.path.join(dir, "client.key"), _pem_key(client_key))
        self.port = _free_port()
        self.peer = peer = f"127.0.0.1:{_free_port()}"
        self.addr = f"127.0.0.1:{self.port}"
        self.log = os.path.join(dir, "node.log")
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [os.environ["HALTER_BIN"], "start", "--node-id", "1",
                 "--client-addr", self.addr, "--peer-addr", peer,
                 "--data-dir", os.path.join(dir, "data"),
                 "--initial-members", f"1@{peer}@{self.addr}",
                 "--tls-cert", self.node_cert, "--tls-key", self.node_key,
                 "--tls-ca", self.ca, "--tls-client-ca", self.ca],
                stdout=subprocess.DEVNULL, stderr=log)

    def logs(self) -> str:
        with open(self.log, errors="replace") as fh:
            return "".join(fh.readlines()[-20:])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> Iterator[TlsNode]:
    n = TlsNode(str(tmp_path_factory.mktemp("halter-tls")))
    try:
        # Serving: a verified client gets an answer (NOT_FOUND), so a refusal below is the
        # node's decision and not a node still starting.
        with pytest.MonkeyPatch.context() as mp:
            stub = lh_config(n, mp).stub()
            deadline = time.monotonic() + 30
            while True:
                try:
                    stub.GetExternalEventDef(ExternalEventDefId(name="none"), timeout=2)
                except grpc.RpcError as e:
                    if e.code() == grpc.StatusCode.NOT_FOUND:
                        break
                    if time.monotonic() > deadline:
                        raise AssertionError(f"no TLS service: {e}\n{n.logs()}")
                    time.sleep(0.2)
        yield n
    finally:
        n.stop()


def lh_config(node: TlsNode, monkeypatch, protocol: str = "TLS", ca: bool = True,
              client_cert: bool = True) -> LHConfig:
    for k in LH_KEYS:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("LHC_API_HOST", "127.0.0.1")
    monkeypatch.setenv("LHC_API_PORT", str(node.port))
    monkeypatch.setenv("LHC_API_PROTOCOL", protocol)
    if ca:
        monkeypatch.setenv("LHC_CA_CERT", node.ca)
    if client_cert:
        monkeypatch.setenv("LHC_CLIENT_CERT", node.client_cert)
        monkeypatch.setenv("LHC_CLIENT_KEY", node.client_key)
    return LHConfig()


def test_a_workflow_runs_over_mutual_tls(node: TlsNode, monkeypatch):
    config = lh_config(node, monkeypatch)
    assert config.is_secure()
    create_external_event_def("tls-signed", config, timeout=RPC_TIMEOUT_S)

    def thread(wf: WorkflowThread) -> None:
        wf.wait_for_event("tls-signed", timeout=60)

    create_workflow_spec(Workflow("tls-signing", thread), config, timeout=RPC_TIMEOUT_S)
    stub = config.stub()
    run = stub.RunWf(RunWfRequest(wf_spec_name="tls-signing", id="over-tls"),
                     timeout=RPC_TIMEOUT_S)
    assert run.status == LHStatus.RUNNING
    stub.PutExternalEvent(PutExternalEventRequest(
        wf_run_id=WfRunId(id="over-tls"),
        external_event_def_id=ExternalEventDefId(name="tls-signed"),
        content=VariableValue(str="yes")), timeout=RPC_TIMEOUT_S)
    assert stub.GetWfRun(WfRunId(id="over-tls"), timeout=RPC_TIMEOUT_S).status == \
        LHStatus.COMPLETED


@pytest.mark.parametrize("how", ["plaintext", "tls without a client certificate"])
def test_a_client_the_node_cannot_verify_is_refused(node: TlsNode, monkeypatch, how: str):
    if how == "plaintext":
        config = lh_config(node, monkeypatch, protocol="PLAINTEXT", ca=False, client_cert=False)
    else:
        config = lh_config(node, monkeypatch, client_cert=False)
    with pytest.raises(grpc.RpcError) as e:
        config.stub().GetExternalEventDef(ExternalEventDefId(name="tls-signed"), timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value


def test_halterctl_speaks_tls_to_both_ports(node: TlsNode):
    """halterctl with --ca-cert and --client-cert/--client-key reaches the client port and the peer port
    (which always requires a client certificate), and without a certificate is refused."""
    ctl = os.path.join(os.path.dirname(os.environ["HALTER_BIN"]), "halterctl")
    base = [ctl, "--addr", node.addr, "--peer-addr", node.peer, "--ca-cert", node.ca]
    me = ["--client-cert", node.client_cert, "--client-key", node.client_key]

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), capture_output=True, text=True, timeout=30)

    status = run(*base, *me, "cluster", "status")
    assert status.returncode == 0 and "Leader" in status.stdout, status.stderr
    put = run(*base, *me, "external-event-def", "put", "from-halterctl")
    assert put.returncode == 0, put.stderr
    refused = run(*base, "cluster", "status")
    assert refused.returncode != 0 and "Leader" not in refused.stdout
