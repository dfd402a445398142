"""HBONE against an independent HTTP/2 implementation: Node.js's built-in http2 (nghttp2) and tls
(OpenSSL), with none of zeromesh's code and no `h2` library on the other end.

1. A Node CONNECT client, run from a pod namespace that is NOT in the mesh (so its connection to
   15008 is not captured), talks to a meshed echo pod's 15008 served by our ztunnel: mutual
   TLS 1.3, ALPN h2, no SNI, the server's SPIFFE ID checked by the client; a tunnel carries an
   HTTP/1.1 request to the app, which sees the client pod's address; refusals come back as the
   statuses DESIGN.md (and Istio's ztunnel) give: 400 other IP / not CONNECT, 503 nobody listening.
   Without a client certificate the TLS handshake fails.
2. Our HBONE client (`HboneLink`) talks to a Node CONNECT server on loopback: three concurrent
   1 MiB tunnels over one TLS connection, the client's identity as the server read it, and refused
   targets answered by a status or a reset, never a hang.

Helper scripts live in tests/e2e/interop/. Every Node process is started with Popen and stopped by
its own pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import textwrap
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from e2ekit import ROOT, Cluster

from zeromesh.identity.ca import CertificateAuthority
from zeromesh.identity.certs import generate_key, load_chain, pem
from zeromesh.identity.spiffe import SpiffeId
from zeromesh.local.state import Paths, load_config
from zeromesh.nodeagent.certs import WorkloadCert
from zeromesh.ztunnel.hbone_io import HboneLink, TunnelStream

INTEROP = Path(__file__).resolve().parent / "interop"
EXAMPLES = ROOT / "examples"
NODE = shutil.which("node") or "/usr/bin/node"
AMBIENT = "istio.io/dataplane-mode=ambient"
TD = "cluster.local"
ECHO_ID = f"spiffe://{TD}/ns/sample-server/sa/echo"
NODE_CLIENT_ID = f"spiffe://{TD}/ns/interop/sa/node-client"
SERVER_ID = f"spiffe://{TD}/ns/interop/sa/server"
CLIENT_ID = f"spiffe://{TD}/ns/interop/sa/client"
MiB = 1024 * 1024

INTEROP_NS = textwrap.dedent("""\
    apiVersion: v1
    kind: Namespace
    metadata: {name: interop}
    ---
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: client, namespace: interop}
    spec:
      selector: {matchLabels: {app: client}}
      template:
        metadata: {labels: {app: client}}
        spec:
          nodeSelector: {name: node1}
          containers: [{name: curl, image: curlimages/curl, command: [/bin/sleep, infinity]}]
    """)


@pytest.fixture(autouse=True)
def _need_node() -> None:
    if not os.access(NODE, os.X_OK):
        pytest.skip("the interop tests need Node.js (its built-in http2 and tls modules)")


# ---- Node processes ---------------------------------------------------------------------------

class NodeProcess:
    """A Node script under Popen: its stdout JSON lines collected by a thread, stopped by pid."""

    def __init__(self, argv: list[str], stderr: Path) -> None:
        self._err = open(stderr, "wb")  # noqa: SIM115 - closed in stop()
        self.stderr_path = stderr
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self._err,
                                     stdin=subprocess.DEVNULL)
        self.pid = self.proc.pid
        self.events: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            text = line.decode(errors="replace").strip()
            with self._cond:
                self.raw.append(text)
                with contextlib.suppress(ValueError):
                    self.events.append(json.loads(text))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, pred: Callable[[list[dict[str, Any]]], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = pred(self.events)
                if got:
                    return got
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"{what}: not seen in {timeout}s; output {self.raw}, "
                                         f"stderr {self.stderr()!r}")
                self._cond.wait(min(left, 0.5))

    def wait_exit(self, timeout: float) -> int:
        rc = self.proc.wait(timeout)
        self._reader.join(5)
        return rc

    def stderr(self) -> str:
        self._err.flush()
        return self.stderr_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        """terminate, wait, kill: always by this process's own pid."""
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._err.close()


@dataclass
class Creds:
    ca: Path       # trust bundle (PEM)
    cert: Path     # leaf + intermediates (PEM)
    key: Path      # PKCS#8 (PEM)
    chain_pem: list[str]
    key_obj: Any


def issue(ca: CertificateAuthority, uri: str, directory: Path, name: str,
          ips: tuple[str, ...] = ()) -> Creds:
    key = generate_key()
    signed = ca.issue(key.public_key(), uri, None, ips=[ipaddress.ip_address(i) for i in ips],
                      server=bool(ips))
    directory.mkdir(parents=True, exist_ok=True)
    roots, cert, key_file = directory / "roots.pem", directory / f"{name}.pem", directory / f"{name}.key"
    roots.write_text(ca.trust_bundle_pem())
    cert.write_text("".join(signed.chain_pem[:-1] or signed.chain_pem))
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(pem(key))
    return Creds(roots, cert, key_file, signed.chain_pem, key)


# ---- 1. independent client -> our ztunnel's 15008 ---------------------------------------------

def config_dump(c: Cluster, node: str) -> dict[str, Any]:
    cfg = load_config(Paths(c.name))
    assert cfg is not None
    port = cfg.node_ports[node]["admin"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/config_dump", timeout=5) as r:
        return json.loads(r.read())


def wait_enrolled(c: Cluster, node: str, pod: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        here = {w["name"] for w in config_dump(c, node)["workloads"] if w.get("enrolled_here")}
        if pod in here:
            return
        assert time.monotonic() < deadline, f"{pod} not enrolled on {node}: {sorted(here)}"
        time.sleep(0.1)


def wait_listening(netns: str, port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while True:
        ss = subprocess.run(["ip", "netns", "exec", netns, "ss", "-Hltn", f"sport = :{port}"],
                            capture_output=True, text=True, timeout=10, check=False)
        if f":{port}" in ss.stdout:
            return
        assert time.monotonic() < deadline, f"nothing listens on {port} in {netns}: {ss.stdout}{ss.stderr}"
        time.sleep(0.1)


@dataclass
class Mesh:
    cluster: Cluster
    echo_ip: str
    echo_pod: str
    curl_ip: str
    client_ip: str
    client_netns: str


@pytest.fixture(scope="module")
def mesh(cluster: Cluster) -> Iterator[Mesh]:
    try:
        cluster.apply(EXAMPLES / "server.yaml", EXAMPLES / "client.yaml")
        cluster.apply("-", input=INTEROP_NS)
        for ns, n in (("sample-server", 2), ("sample-client", 1), ("interop", 1)):
            cluster.wait_ready(ns, count=n)
        cluster.z("label", "namespace", "sample-server", AMBIENT)
        cluster.z("label", "namespace", "sample-client", AMBIENT)
        echo = next(p for p in cluster.pods("sample-server") if p["metadata"]["name"].startswith("echo-"))
        curl = cluster.pods("sample-client")[0]
        client = cluster.pods("interop")[0]
        wait_enrolled(cluster, "node2", echo["metadata"]["name"])
        wait_enrolled(cluster, "node1", curl["metadata"]["name"])
        wait_listening(f"zm.{cluster.name}.sample-server.{echo['metadata']['name']}", 15008)
        here = {w["name"] for w in config_dump(cluster, "node1")["workloads"] if w.get("enrolled_here")}
        assert client["metadata"]["name"] not in here, "the interop namespace must stay outside the mesh"
        yield Mesh(cluster, echo["status"]["podIP"], echo["metadata"]["name"], curl["status"]["podIP"],
                   client["status"]["podIP"], f"zm.{cluster.name}.interop.{client['metadata']['name']}")
    finally:
        cluster.z("delete", "namespace", "interop", "--ignore-not-found", check=False)


def run_node_client(m: Mesh, tmp: Path, name: str, cfg: dict[str, Any], timeout: float = 40
                    ) -> dict[str, Any]:
    """connect_client.js inside the interop pod's network namespace; its one JSON result."""
    cfg = {"timeout_ms": int((timeout - 5) * 1000), **cfg}
    proc = NodeProcess(["ip", "netns", "exec", m.client_netns, NODE, str(INTEROP / "connect_client.js"),
                        json.dumps(cfg)], tmp / f"{name}.stderr")
    try:
        rc = proc.wait_exit(timeout)
    finally:
        proc.stop()
    assert proc.events, f"no result from the Node client (rc {rc}): {proc.raw} {proc.stderr()!r}"
    result: dict[str, Any] = proc.events[-1]
    assert not result["timeout"], f"the Node client timed out: {result}"
    return result


def http_request(path: str) -> str:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def echo_json(body: str) -> dict[str, Any]:
    head, _, rest = body.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 200") or head.startswith("HTTP/1.0 200"), body
    return json.loads(rest.strip().splitlines()[-1])


def access_log(m: Mesh, node: str) -> list[dict[str, Any]]:
    text = (Paths(m.cluster.name).logs / f"nodeagent-{node}.log").read_text(errors="replace")
    return [json.loads(x.split("zeromesh.access: ", 1)[1]) for x in text.splitlines()
            if "zeromesh.access: " in x]


def test_independent_client_to_our_hbone_server(mesh: Mesh, tmp_path: Path) -> None:
    m = mesh
    ca = CertificateAuthority.load_or_create(Paths(m.cluster.name).ca, TD)
    creds = issue(ca, NODE_CLIENT_ID, tmp_path / "certs", "node-client")
    probes = [
        {"name": "tunnel", "method": "CONNECT", "authority": f"{m.echo_ip}:8080",
         "send": http_request("/interop")},
        {"name": "other-ip", "method": "CONNECT", "authority": f"{m.curl_ip}:8080"},
        {"name": "not-connect", "method": "GET", "path": "/interop"},
        {"name": "nobody-listens", "method": "CONNECT", "authority": f"{m.echo_ip}:8081"},
        {"name": "hbone-port", "method": "CONNECT", "authority": f"{m.echo_ip}:15008"},
        {"name": "tunnel-again", "method": "CONNECT", "authority": f"{m.echo_ip}:8080",
         "send": http_request("/again")},
    ]
    res = run_node_client(m, tmp_path, "mesh-client", {
        "host": m.echo_ip, "port": 15008, "ca": str(creds.ca), "cert": str(creds.cert),
        "key": str(creds.key), "probes": probes})

    # The TLS layer as Istio's ztunnel sets it up; the server proved the echo workload's identity.
    assert res["tls"] == {"protocol": "TLSv1.3", "alpn": "h2", "authorized": True,
                          "authorization_error": None, "peer_uris": [ECHO_ID], "sni": None}, res
    assert res["session_error"] is None, res
    by = {p["name"]: p for p in res["probes"]}
    assert list(by) == [p["name"] for p in probes], res

    # 200, then the app's answer through the tunnel; the app saw the client pod's own address.
    for name, path in (("tunnel", "/interop"), ("tunnel-again", "/again")):
        p = by[name]
        assert p["status"] == 200 and p["error"] is None and p["ended"], p
        body = echo_json(p["body"])
        assert body["path"] == path, body
        assert body["remote_ip"] == m.client_ip, body

    # Refusals: a complete response (HEADERS :status + END_STREAM, no body), never a reset; the
    # connection stays usable (the last tunnel ran on it after all of them).
    for name, status in (("other-ip", 400), ("not-connect", 400), ("nobody-listens", 503),
                         ("hbone-port", 400)):
        p = by[name]
        assert (p["status"], p["body"], p["ended"], p["error"]) == (status, "", True, None), (name, p)
        assert p["rst_code"] in (0, None), (name, p)     # 0: NGHTTP2_NO_ERROR, closed normally

    # The server read the Node client's SPIFFE ID from its certificate (access log on node2).
    deadline = time.monotonic() + 10
    while True:
        lines = [x for x in access_log(m, "node2") if x.get("src.identity") == NODE_CLIENT_ID]
        complete = [x for x in lines if x["msg"] == "connection complete"]
        failed = {x["dst.hbone_addr"]: x for x in lines if x["msg"] == "connection failed"}
        if len(complete) >= 2 and {f"{m.curl_ip}:8080", f"{m.echo_ip}:8081"} <= set(failed):
            break
        assert time.monotonic() < deadline, f"access log of node2 lacks the interop tunnels: {lines}"
        time.sleep(0.2)
    assert all(x["dst.hbone_addr"] == f"{m.echo_ip}:8080" and x["security"] == "mutual_tls"
               and x["src.addr"].startswith(m.client_ip + ":") for x in complete), complete
    assert "not this workload" in failed[f"{m.curl_ip}:8080"]["error"]
    assert "connection to the application failed" in failed[f"{m.echo_ip}:8081"]["error"]


def _no_tunnel(res: dict[str, Any]) -> str:
    """How the Node client's one probe failed, asserting it got no answer and no byte."""
    (p,) = res["probes"]
    assert (p["status"], p["headers"], p["body"]) == (None, None, ""), json.dumps(res)
    if p["error"] is not None or res["session_error"] is not None:
        return (p["error"] or res["session_error"])["code"]
    # A clean close of the connection: Node cancels the stream (NGHTTP2_CANCEL).
    assert p["rst_code"] == 8, json.dumps(res)
    return "CLOSED"


def test_independent_client_without_a_mesh_certificate_is_refused(mesh: Mesh, tmp_path: Path) -> None:
    """TLS 1.3: the client finishes its side of the handshake before the server checks the client
    certificate, so the refusal shows as the connection dropped before any HTTP/2 answer."""
    m = mesh
    roots = tmp_path / "roots.pem"
    roots.write_text(CertificateAuthority.load_or_create(Paths(m.cluster.name).ca, TD).trust_bundle_pem())
    probe = [{"name": "tunnel", "method": "CONNECT", "authority": f"{m.echo_ip}:8080",
              "send": http_request("/must-not-arrive"), "timeout_ms": 8000}]
    seen = len([x for x in access_log(m, "node2") if x["src.addr"].startswith(m.client_ip + ":")])
    # No client certificate at all.
    res = run_node_client(m, tmp_path, "no-cert", {
        "host": m.echo_ip, "port": 15008, "ca": str(roots), "probes": probe})
    assert res["tls"]["peer_uris"] == [ECHO_ID], res    # the client side of the handshake completed
    # The alert a conformant server sends.
    assert _no_tunnel(res) == "ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED", res
    # A certificate for a mesh identity, but from another CA.
    other = issue(CertificateAuthority.load_or_create(tmp_path / "other-ca", TD), NODE_CLIENT_ID,
                  tmp_path / "other", "rogue")
    res = run_node_client(m, tmp_path, "other-ca", {
        "host": m.echo_ip, "port": 15008, "ca": str(roots), "cert": str(other.cert),
        "key": str(other.key), "probes": probe})
    assert _no_tunnel(res) == "ERR_SSL_TLSV1_ALERT_UNKNOWN_CA", res
    # Both refusals are logged as TLS failures; neither reached the tunnel handling or the app.
    time.sleep(0.5)
    after = [x for x in access_log(m, "node2") if x["src.addr"].startswith(m.client_ip + ":")][seen:]
    assert len(after) == 2, after
    assert all(x["msg"] == "connection failed" and "TLS handshake refused" in x["error"] for x in after)


def test_our_hbone_server_sends_certificate_required(mesh: Mesh, tmp_path: Path) -> None:
    roots = tmp_path / "roots.pem"
    roots.write_text(CertificateAuthority.load_or_create(Paths(mesh.cluster.name).ca, TD).trust_bundle_pem())
    probe = [{"name": "tunnel", "method": "CONNECT", "authority": f"{mesh.echo_ip}:8080",
              "timeout_ms": 8000}]
    for i in range(3):
        res = run_node_client(mesh, tmp_path, f"alert-{i}", {
            "host": mesh.echo_ip, "port": 15008, "ca": str(roots), "probes": probe})
        assert _no_tunnel(res) == "ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED", json.dumps(res)


# ---- 2. our client -> an independent CONNECT server -------------------------------------------

async def _echo_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(256 * 1024):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def _pump(stream: TunnelStream, payload: bytes, chunk: int = 64 * 1024) -> bytes:
    """Write `payload` and half-close while reading everything back (acknowledging each read)."""
    async def send() -> None:
        for off in range(0, len(payload), chunk):
            await stream.write(payload[off:off + chunk])
        stream.write_eof()

    async def recv() -> bytes:
        buf = bytearray()
        while True:
            data, flow = await stream.read()
            if not data:
                return bytes(buf)
            buf += data
            stream.ack(flow)

    _, got = await asyncio.gather(send(), recv())
    stream.done()
    return got


@dataclass
class ClientRun:
    echo_port: int
    closed_port: int
    statuses: list[int]
    intact: list[bool]
    refused_status: int | None
    reset_error: str
    after_status: int
    tls_version: str | None
    alpn: str | None
    peer_identities: list[str]


async def _drive_our_client(server_port: int, ctx: Any) -> ClientRun:
    loop = asyncio.get_running_loop()
    echo = await asyncio.start_server(_echo_handler, "127.0.0.1", 0)
    echo_port = echo.sockets[0].getsockname()[1]
    closed = socket.socket()          # bound, never listening: connecting to it is refused
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    transport, link = await asyncio.wait_for(loop.create_connection(
        lambda: HboneLink(client=True), "127.0.0.1", server_port, ssl=ctx, server_hostname=""), 10)
    try:
        sslobj = transport.get_extra_info("ssl_object")
        streams = [await link.open(f"127.0.0.1:{echo_port}", [("x-interop-tunnel", str(i))])
                   for i in range(3)]
        answers = await asyncio.wait_for(asyncio.gather(*(s.opened for s in streams)), 10)
        payloads = [os.urandom(MiB) for _ in streams]
        got = await asyncio.wait_for(asyncio.gather(*(_pump(s, p) for s, p in zip(streams, payloads,
                                                                                  strict=True))), 60)
        # A refused target: the server answers with a status...
        refused = await link.open(f"127.0.0.1:{closed_port}", [])
        refused_status, _ = await asyncio.wait_for(refused.opened, 10)
        # ...or resets the stream without answering: either way the caller hears of it, no hang.
        reset = await link.open(f"127.0.0.1:{closed_port}", [("x-interop-refuse", "reset")])
        reset_error = ""
        try:
            status, _ = await asyncio.wait_for(reset.opened, 10)
            reset_error = f"answered {status} instead of a reset"
        except ConnectionResetError as e:
            reset_error = str(e)
        # The connection survived both refusals.
        after = await link.open(f"127.0.0.1:{echo_port}", [("x-interop-tunnel", "after")])
        after_status, _ = await asyncio.wait_for(after.opened, 10)
        assert await asyncio.wait_for(_pump(after, b"still here"), 10) == b"still here"
        return ClientRun(echo_port, closed_port, [s for s, _ in answers],
                         [g == p for g, p in zip(got, payloads, strict=True)], refused_status, reset_error,
                         after_status, sslobj.version(), sslobj.selected_alpn_protocol(),
                         list(link.peer_identities))
    finally:
        link.conn.close()
        link.flush()
        transport.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(link.lost, 5)
        closed.close()
        echo.close()
        await echo.wait_closed()


@dataclass
class NodeServer:
    proc: NodeProcess
    port: int
    ca: CertificateAuthority
    tmp: Path

    def client_context(self, trusted: CertificateAuthority | None = None) -> ssl.SSLContext:
        """Our production client context (WorkloadCert) for CLIENT_ID, issued by the server's CA."""
        client = issue(self.ca, CLIENT_ID, self.tmp / "certs", "client")
        wl = WorkloadCert(SpiffeId.parse(CLIENT_ID), client.key_obj,
                          load_chain("".join(client.chain_pem)), client.chain_pem, self.tmp / "wl")
        return wl.client_context((trusted or self.ca).trust_bundle_pem())


@pytest.fixture
def node_server(tmp_path: Path) -> Iterator[NodeServer]:
    """connect_server.js on 127.0.0.1, its certificate for SERVER_ID from a fresh CA."""
    ca = CertificateAuthority.load_or_create(tmp_path / "ca", TD)
    server = issue(ca, SERVER_ID, tmp_path / "certs", "server", ips=("127.0.0.1",))
    proc = NodeProcess([NODE, str(INTEROP / "connect_server.js"), json.dumps(
        {"key": str(server.key), "cert": str(server.cert), "ca": str(server.ca), "lifetime_ms": 240000})],
        tmp_path / "server.stderr")
    try:
        port = proc.wait_for(lambda ev: next((e["port"] for e in ev if e["event"] == "listening"), None),
                             15, "the Node server listening")
        yield NodeServer(proc, port, ca, tmp_path)
    finally:
        proc.stop()


def test_our_client_to_an_independent_connect_server(node_server: NodeServer) -> None:
    node = node_server
    run = asyncio.run(asyncio.wait_for(_drive_our_client(node.port, node.client_context()), 120))

    def tunnels_closed(ev: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        ok = {e["stream"] for e in ev if e["event"] == "request" and e.get("answer") == 200}
        closed = [e for e in ev if e["event"] == "closed" and e["stream"] in ok]
        return closed if len(closed) == 4 else None
    closed = node.proc.wait_for(tunnels_closed, 15, "four tunnels closed on the Node server")
    events = list(node.proc.events)

    # Our side: TLS 1.3, h2, the server's SPIFFE ID; three 200s; 1 MiB each, back intact.
    assert (run.tls_version, run.alpn, run.peer_identities) == ("TLSv1.3", "h2", [SERVER_ID])
    assert run.statuses == [200, 200, 200]
    assert run.intact == [True, True, True]
    assert run.refused_status == 503
    assert "reset" in run.reset_error and "CONNECT_ERROR" in run.reset_error, run.reset_error
    assert run.after_status == 200

    # The Node side: ONE TLS connection, no SNI, our client's SPIFFE ID on it and on every tunnel.
    sessions = [e for e in events if e["event"] == "session"]
    assert len(sessions) == 1, sessions
    assert sessions[0]["protocol"] == "TLSv1.3" and sessions[0]["alpn"] == "h2"
    assert sessions[0]["servername"] is False, sessions[0]          # no SNI from our client
    assert sessions[0]["peer_uris"] == [CLIENT_ID]
    requests = [e for e in events if e["event"] == "request"]
    tunnels = [e for e in requests if e["answer"] == 200]
    assert len(tunnels) == 4 and all(e["session"] == 1 and e["method"] == "CONNECT"
                                     and e["peer_uris"] == [CLIENT_ID]
                                     and e["authority"] == f"127.0.0.1:{run.echo_port}" for e in tunnels)
    assert sorted(e["headers"]["x-interop-tunnel"] for e in tunnels) == ["0", "1", "2", "after"]
    big = {e["stream"] for e in tunnels if e["headers"]["x-interop-tunnel"] != "after"}
    assert len(big) == 3
    assert all((c["up"], c["down"]) == (MiB, MiB) for c in closed if c["stream"] in big), closed
    refusals = [e for e in requests if e["answer"] != 200]
    assert [(e["authority"], e["answer"], e["reason"]) for e in refusals] == [
        (f"127.0.0.1:{run.closed_port}", 503, "ECONNREFUSED"),
        (f"127.0.0.1:{run.closed_port}", "reset", "ECONNREFUSED")]


async def _connect_refused(port: int, ctx: ssl.SSLContext) -> str:
    loop = asyncio.get_running_loop()
    try:
        transport, _ = await asyncio.wait_for(loop.create_connection(
            lambda: HboneLink(client=True), "127.0.0.1", port, ssl=ctx, server_hostname=""), 10)
    except ssl.SSLCertVerificationError as e:
        return str(e)
    transport.abort()
    return ""


def _tls_errors(node: NodeServer, count: int) -> list[str]:
    return node.proc.wait_for(
        lambda ev: [e["code"] for e in ev if e["event"] == "tls_error"][:count]
        if len([e for e in ev if e["event"] == "tls_error"]) >= count else None,
        10, f"{count} failed handshakes on the Node server")


def test_our_client_refuses_a_server_from_another_ca(node_server: NodeServer) -> None:
    other = CertificateAuthority.load_or_create(node_server.tmp / "other-ca", TD)
    ctx = node_server.client_context(trusted=other)
    error = asyncio.run(_connect_refused(node_server.port, ctx))
    assert "certificate verify failed" in error, error
    # The server never got an HTTP/2 session; what it saw is the alert, or (today) a hang-up.
    (code,) = _tls_errors(node_server, 1)
    assert code in {"ERR_SSL_TLSV1_ALERT_UNKNOWN_CA", "ECONNRESET"}, code
    assert not [e for e in node_server.proc.events if e["event"] in ("session", "request")]


def test_our_client_sends_unknown_ca(node_server: NodeServer) -> None:
    ctx = node_server.client_context(trusted=CertificateAuthority.load_or_create(
        node_server.tmp / "other-ca", TD))
    for _ in range(3):
        assert "certificate verify failed" in asyncio.run(_connect_refused(node_server.port, ctx))
    assert _tls_errors(node_server, 3) == ["ERR_SSL_TLSV1_ALERT_UNKNOWN_CA"] * 3
