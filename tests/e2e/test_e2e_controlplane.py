"""Control plane: node agents' mTLS push streams, ACKs, the CA's node authorization, status."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from e2ekit import ROOT, Cluster

from zeromesh.cli.client import Client
from zeromesh.identity.certs import generate_key, make_csr, pem, uri_sans
from zeromesh.local.state import Paths, load_config

EXAMPLES = ROOT / "examples"


def proxies(c: Cluster) -> list[dict[str, Any]]:
    return Client(c.name).call("GET", "/v1/proxies")["proxies"]


def wait_acked(c: Cluster, revision: int, timeout: float = 10) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        px = proxies(c)
        agents = [p for p in px if p["kind"] == "nodeagent"]
        if len(agents) == 2 and all(p["in_sync"] and int(p["acked_version"] or 0) >= revision
                                    for p in agents):
            return agents
        assert time.monotonic() < deadline, f"not acknowledged by every proxy: {px}"
        time.sleep(0.05)


def node_tls(c: Cluster, node: str) -> ssl.SSLContext:
    paths = Paths(c.name)
    cred = paths.node_credential(node)
    ctx = ssl.create_default_context(cafile=str(paths.root_cert))
    ctx.load_cert_chain(str(cred / "node-chain.pem"), str(cred / "node-key.pem"))
    return ctx


def request_cert(c: Cluster, ctx: ssl.SSLContext, spiffe: str) -> tuple[int, dict[str, Any]]:
    port = load_config(Paths(c.name)).xds_port
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    try:
        key = generate_key()
        conn.request("POST", "/v1/certificates", body=json.dumps({"csr": make_csr(key, spiffe).decode()}),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


@pytest.fixture(scope="module")
def meshed(cluster: Cluster) -> Cluster:
    cluster.apply(EXAMPLES)
    cluster.wait_ready("sample-server", count=2)
    cluster.wait_ready("sample-client", count=1)
    return cluster


def test_node_agent_streams_are_up_and_acknowledge_changes(meshed: Cluster) -> None:
    out = meshed.z("ps").stdout
    agents = [line for line in out.splitlines() if "ztunnel-node" in line]
    assert len(agents) == 2 and all("SYNCED" in line for line in agents), out
    assert "spiffe://cluster.local/zeromesh/node/node1" in out
    policy = textwrap.dedent("""\
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: allow-curl, namespace: sample-server}
        spec:
          selector: {matchLabels: {app: echo}}
          action: ALLOW
          rules: [{from: [{source: {principals: [cluster.local/ns/sample-client/sa/curl]}}]}]
        """)
    res = Client(meshed.name).call("POST", "/v1/apply", {"documents": [
        {"file": "<test>", "document": 1, "body": __import__("yaml").safe_load(policy)}],
        "namespace": "default"})
    t0 = time.monotonic()
    agents = wait_acked(meshed, res["revision"])
    assert time.monotonic() - t0 < 2
    assert {a["node"] for a in agents} == {"node1", "node2"}
    # The node agents really hold it: the control plane sent it and they ACKed that version.
    log = (Paths(meshed.name).logs / "nodeagent-node1.log").read_text()
    assert f"config version {agents[0]['acked_version']}" in log or "config version" in log


def test_node_agent_gets_certificates_only_for_its_own_pods(meshed: Cluster, tmp_path: Path) -> None:
    ctx = node_tls(meshed, "node1")
    # curl (sample-client/curl) runs on node1; echo (sample-server/echo) on node2.
    status, body = request_cert(meshed, ctx, "spiffe://cluster.local/ns/sample-server/sa/echo")
    assert status == 403, body
    assert "node1" in body["error"] and "sample-server/echo" in body["error"]
    status, body = request_cert(meshed, ctx, "spiffe://cluster.local/ns/sample-client/sa/curl")
    assert status == 200, body
    chain = body["cert_chain"]
    leaf = x509.load_pem_x509_certificate(chain[0].encode())
    assert uri_sans(leaf) == ["spiffe://cluster.local/ns/sample-client/sa/curl"]
    ttl = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert 23.9 * 3600 < ttl.total_seconds() <= 24 * 3600 + 60
    (tmp_path / "leaf.pem").write_text(chain[0])
    (tmp_path / "root.pem").write_text(chain[-1])
    r = subprocess.run(["openssl", "verify", "-CAfile", str(tmp_path / "root.pem"),
                        str(tmp_path / "leaf.pem")], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    # Another trust domain is refused too, and every decision is visible in `x ca`.
    status, body = request_cert(meshed, ctx, "spiffe://evil.example/ns/sample-client/sa/curl")
    assert status == 403 and "trust domain" in body["error"]
    out = meshed.z("x", "ca").stdout
    assert "refused" in out and "spiffe://cluster.local/ns/sample-server/sa/echo" in out
    assert "signed" in out and "spiffe://cluster.local/zeromesh/node/node1" in out
    cp_log = (Paths(meshed.name).logs / "controlplane.log").read_text()
    assert "certificate refused for spiffe://cluster.local/zeromesh/node/node1" in cp_log


def _handshake(port: int, ctx: ssl.SSLContext) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(b"GET /v1/stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                return tls.recv(4096).decode(errors="replace") or "closed"
        except (ssl.SSLError, ConnectionError) as e:
            return f"tls-error: {e}"


def _refused(result: str) -> bool:
    """The TLS layer refused: an alert, or a close before any HTTP answer."""
    return result == "closed" or result.startswith("tls-error")


def test_streams_need_a_valid_node_credential(meshed: Cluster, tmp_path: Path) -> None:
    import datetime as dt
    paths = Paths(meshed.name)
    port = load_config(paths).xds_port
    # No client certificate: the server aborts the TLS 1.3 handshake (certificate required).
    bare = ssl.create_default_context(cafile=str(paths.root_cert))
    assert _refused(_handshake(port, bare))
    # A certificate from another CA claiming node1's identity.
    other_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rogue")])
    now = dt.datetime.now(dt.UTC)
    rogue = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
             .public_key(other_key.public_key()).serial_number(1)
             .not_valid_before(now).not_valid_after(now + dt.timedelta(hours=1))
             .add_extension(x509.SubjectAlternativeName(
                 [x509.UniformResourceIdentifier("spiffe://cluster.local/zeromesh/node/node1")]),
                 critical=False)
             .sign(other_key, hashes.SHA256()))
    (tmp_path / "rogue.pem").write_bytes(rogue.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "rogue.key").write_text(pem(other_key))
    ctx = ssl.create_default_context(cafile=str(paths.root_cert))
    ctx.load_cert_chain(str(tmp_path / "rogue.pem"), str(tmp_path / "rogue.key"))
    assert _refused(_handshake(port, ctx))
    # A workload certificate from our own CA is not a proxy credential.
    key = generate_key()
    port_conn = http.client.HTTPSConnection("127.0.0.1", port, context=node_tls(meshed, "node1"))
    port_conn.request("POST", "/v1/certificates", body=json.dumps(
        {"csr": make_csr(key, "spiffe://cluster.local/ns/sample-client/sa/curl").decode()}))
    chain = json.loads(port_conn.getresponse().read())["cert_chain"]
    port_conn.close()
    (tmp_path / "wl.pem").write_text("".join(chain))
    (tmp_path / "wl.key").write_text(pem(key))
    wl = ssl.create_default_context(cafile=str(paths.root_cert))
    wl.load_cert_chain(str(tmp_path / "wl.pem"), str(tmp_path / "wl.key"))
    result = _handshake(port, wl)
    assert result.startswith("HTTP/1.1 403") and "is a workload identity" in result


def test_node_credential_cannot_speak_for_another_node(meshed: Cluster) -> None:
    import asyncio

    import aiohttp
    port = load_config(Paths(meshed.name)).xds_port

    async def attempt() -> str:
        async with aiohttp.ClientSession() as s, s.ws_connect(
                f"https://127.0.0.1:{port}/v1/stream", ssl=node_tls(meshed, "node1")) as ws:
            await ws.send_str(json.dumps({"type": "hello", "kind": "nodeagent",
                                          "name": "ztunnel-node2", "node": "node2"}))
            msg = await ws.receive(timeout=5)
            assert msg.type == aiohttp.WSMsgType.CLOSE
            return f"{ws.close_code} {msg.extra or ''}"
    result = asyncio.run(attempt())
    assert result.startswith("1008 ") and "may not speak for node agent 'node2'" in result


def test_unusable_waypoint_resources_get_status_conditions(meshed: Cluster) -> None:
    manifest = textwrap.dedent("""\
        apiVersion: gateway.networking.k8s.io/v1
        kind: Gateway
        metadata: {name: broken-wp, namespace: sample-server}
        spec:
          gatewayClassName: istio-waypoint
          listeners: [{name: http, port: 80, protocol: HTTP}]
        """)
    meshed.apply("-", input=manifest)
    meshed.z("label", "service", "echo", "-n", "sample-server", "istio.io/use-waypoint=missing-wp")
    deadline = time.monotonic() + 10
    while True:
        gw = meshed.get("gateways.gateway.networking.k8s.io", "sample-server", "broken-wp")
        svc = meshed.get("services", "sample-server", "echo")
        gconds = {c["type"]: c for c in gw.get("status", {}).get("conditions", [])}
        sconds = {c["type"]: c for c in svc.get("status", {}).get("conditions", [])}
        if "Accepted" in gconds and "istio.io/WaypointBound" in sconds:
            break
        assert time.monotonic() < deadline, (gw.get("status"), svc.get("status"))
        time.sleep(0.1)
    assert gconds["Accepted"]["status"] == "False"
    assert "15008" in gconds["Accepted"]["message"]
    assert sconds["istio.io/WaypointBound"]["reason"] == "WaypointNotFound"
    assert "sample-server/missing-wp" in sconds["istio.io/WaypointBound"]["message"]
    y = meshed.z("get", "svc", "echo", "-n", "sample-server", "-o", "yaml").stdout
    assert "WaypointNotFound" in y
    # Traffic is not disturbed, and fixing the label clears the condition.
    assert meshed.curl("sample-client", "deploy/curl", "http://echo.sample-server").returncode == 0
    meshed.z("label", "service", "echo", "-n", "sample-server", "istio.io/use-waypoint-")
    deadline = time.monotonic() + 10
    while any(c["type"] == "istio.io/WaypointBound" for c in
              meshed.get("services", "sample-server", "echo").get("status", {}).get("conditions", [])):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    meshed.z("delete", "gateways.gateway.networking.k8s.io", "broken-wp", "-n", "sample-server")


def test_proxies_keep_their_config_while_the_control_plane_is_away(meshed: Cluster) -> None:
    paths = Paths(meshed.name)
    before = {p["node"]: p["acked_version"] for p in proxies(meshed)}
    agent_pids = {n: int((paths.pids / f"nodeagent-{n}.pid").read_text()) for n in ("node1", "node2")}
    cp_pid = int((paths.pids / "controlplane.pid").read_text())
    os.kill(cp_pid, signal.SIGKILL)
    time.sleep(1.0)
    for pid in agent_pids.values():
        assert Path(f"/proc/{pid}").exists(), "node agent died with the control plane"
    meshed.up()
    agents = wait_acked(meshed, 0)
    assert {a["node"]: a for a in agents}.keys() == before.keys()
    for pid in agent_pids.values():
        assert Path(f"/proc/{pid}").exists()
    log = (paths.logs / "nodeagent-node1.log").read_text()
    assert "retrying" in log and log.count("push stream to") >= 2
    assert meshed.curl("sample-client", "deploy/curl", "http://echo.sample-server").returncode == 0


def test_pod_bootstrap_credential_obtains_only_its_own_identity(meshed: Cluster, tmp_path: Path) -> None:
    pod = next(p["metadata"]["name"] for p in meshed.pods("sample-server")
               if p["metadata"]["name"].startswith("echo-"))
    cred = Client(meshed.name).call("POST", "/v1/bootstrap-credential",
                                    {"namespace": "sample-server", "pod": pod})
    assert cred["identity"] == f"spiffe://cluster.local/zeromesh/pod/sample-server/{pod}/sa/echo"
    (tmp_path / "chain.pem").write_text("".join(cred["cert_chain"]))
    (tmp_path / "key.pem").write_text(cred["key_pem"])
    ctx = ssl.create_default_context(cafile=str(Paths(meshed.name).root_cert))
    ctx.load_cert_chain(str(tmp_path / "chain.pem"), str(tmp_path / "key.pem"))
    status, body = request_cert(meshed, ctx, "spiffe://cluster.local/ns/sample-server/sa/echo")
    assert status == 200, body
    status, body = request_cert(meshed, ctx, "spiffe://cluster.local/ns/sample-client/sa/curl")
    assert status == 403 and "may only obtain its own identity" in body["error"]
