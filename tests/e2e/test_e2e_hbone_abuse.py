"""A live 15008 under abuse: garbage and truncated HTTP/2, and a flood of streams, from a client
holding a valid mesh certificate. Each is refused and logged; other connections are undisturbed.

The abusive client writes raw HTTP/2 bytes (hpack for header blocks) over Python's ssl, not our
HBONE code."""

from __future__ import annotations

import datetime as dt
import ssl
import subprocess
import textwrap
import time
from collections.abc import Iterator

import hpack
import pytest
from e2ekit import ROOT, Cluster

from zeromesh.identity.ca import CertificateAuthority
from zeromesh.identity.certs import generate_key, pem
from zeromesh.local.state import Paths

ABUSER = textwrap.dedent("""\
    apiVersion: v1
    kind: Namespace
    metadata: {name: abuse}
    ---
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: client, namespace: abuse}
    spec:
      selector: {matchLabels: {app: client}}
      template:
        metadata: {labels: {app: client}}
        spec:
          nodeSelector: {name: node1}
          containers: [{name: c, image: curlimages/curl, command: [/bin/sleep, infinity]}]
    """)


@pytest.fixture(scope="module")
def target(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    c = cluster
    c.apply(ROOT / "examples")
    c.apply("-", input=ABUSER)
    c.z("label", "namespace", "sample-server", "istio.io/dataplane-mode=ambient")
    c.z("label", "namespace", "sample-client", "istio.io/dataplane-mode=ambient")
    for ns, n in (("sample-server", 2), ("sample-client", 1), ("abuse", 1)):
        c.wait_ready(ns, count=n)
    echo = next(p for p in c.pods("sample-server") if p["metadata"]["name"].startswith("echo-"))
    abuser = c.pods("abuse")[0]["metadata"]["name"]
    d = tmp_path_factory.mktemp("abuse")
    ca = CertificateAuthority.load_or_create(Paths(c.name).ca)
    key = generate_key()
    signed = ca.issue(key.public_key(), "spiffe://cluster.local/ns/abuse/sa/default", dt.timedelta(hours=1))
    (d / "chain.pem").write_text("".join(signed.chain_pem))
    (d / "key.pem").write_text(pem(key))
    (d / "roots.pem").write_text(ca.trust_bundle_pem())
    ip = echo["status"]["podIP"]
    deadline = time.monotonic() + 20
    while ":15008" not in subprocess.run(
            ["ip", "netns", "exec", f"zm.{c.name}.sample-server.{echo['metadata']['name']}", "ss", "-ltn"],
            capture_output=True, text=True, check=False).stdout:
        assert time.monotonic() < deadline, "echo pod never enrolled"
        time.sleep(0.2)
    yield {"ip": ip, "netns": f"zm.{c.name}.abuse.{abuser}", "dir": str(d)}


def tls_socket(t: dict[str, str]) -> ssl.SSLSocket:
    """A mutual-TLS connection to the echo pod's 15008, made from inside the abuser pod."""
    from zeromesh.netns.enter import socket_in_netns
    ctx = ssl.create_default_context(cafile=f"{t['dir']}/roots.pem")
    ctx.check_hostname = False
    ctx.load_cert_chain(f"{t['dir']}/chain.pem", f"{t['dir']}/key.pem")
    ctx.set_alpn_protocols(["h2"])
    raw = socket_in_netns(t["netns"])
    raw.settimeout(10)
    raw.connect((t["ip"], 15008))
    s = ctx.wrap_socket(raw, server_hostname=None)
    assert s.selected_alpn_protocol() == "h2"
    return s


def read_until_closed(s: ssl.SSLSocket, limit: float = 10) -> bytes:
    data = b""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            chunk = s.recv(65536)
        except (ssl.SSLError, OSError, TimeoutError):
            break
        if not chunk:
            break
        data += chunk
    return data


def agent_log(c: Cluster) -> str:
    return (Paths(c.name).logs / "nodeagent-node2.log").read_text(errors="replace")


def mesh_still_works(c: Cluster) -> None:
    assert c.curl("sample-client", "deploy/curl", "http://echo.sample-server/").returncode == 0


GOAWAY = 0x7


def goaway_code(data: bytes) -> int | None:
    """The error code of the first GOAWAY frame in a server's byte stream."""
    pos = 0
    while pos + 9 <= len(data):
        length = int.from_bytes(data[pos:pos + 3], "big")
        ftype = data[pos + 3]
        if ftype == GOAWAY and pos + 9 + 8 <= len(data):
            return int.from_bytes(data[pos + 13:pos + 17], "big")
        pos += 9 + length
    return None


PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


@pytest.mark.parametrize("payload,name", [
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "http1-instead-of-preface"),
    (PREFACE + EMPTY_SETTINGS + b"\x00\x00\x04\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00",
     "zero-window-increment"),
    (PREFACE + EMPTY_SETTINGS + b"\xff\xff\xff\x00\x00\x00\x00\x00\x01" + b"x" * 64, "oversized-frame"),
    (PREFACE + b"\x00\x00\x04\x08\x00\x00\x00\x00\x00\x00\x00\x10\x00", "no-settings-first"),
])
def test_garbage_is_refused_and_logged(cluster: Cluster, target: dict[str, str], payload: bytes,
                                       name: str) -> None:
    s = tls_socket(target)
    try:
        s.sendall(payload)
        answer = read_until_closed(s)
    finally:
        s.close()
    assert goaway_code(answer) in (0x1, 0x6), f"{name}: expected a GOAWAY, got {answer[:80]!r}"
    assert "HBONE connection from" in agent_log(cluster)
    mesh_still_works(cluster)


def test_truncated_frame_then_hangup_disturbs_nothing(cluster: Cluster, target: dict[str, str]) -> None:
    s = tls_socket(target)
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x40\x01\x04\x00\x00\x00\x01\x82")  # half a HEADERS
    s.close()
    mesh_still_works(cluster)


def frames(data: bytes) -> Iterator[tuple[int, int, int, bytes]]:
    """(type, flags, stream id, payload) of each complete frame in a byte stream."""
    pos = 0
    while pos + 9 <= len(data):
        length = int.from_bytes(data[pos:pos + 3], "big")
        if pos + 9 + length > len(data):
            return
        yield (data[pos + 3], data[pos + 4], int.from_bytes(data[pos + 5:pos + 9], "big") & 0x7FFFFFFF,
               data[pos + 9:pos + 9 + length])
        pos += 9 + length


def test_stream_flood_is_refused_beyond_the_limit(cluster: Cluster, target: dict[str, str]) -> None:
    """260 CONNECTs at once on one connection: the server's limit is 200 concurrent streams."""
    enc = hpack.Encoder()
    out = bytearray(PREFACE + EMPTY_SETTINGS)
    for i in range(260):
        block = enc.encode([(":method", "CONNECT"), (":authority", f"{target['ip']}:8080")])
        out += len(block).to_bytes(3, "big") + b"\x01\x04" + (1 + 2 * i).to_bytes(4, "big") + block
    s = tls_socket(target)
    s.sendall(bytes(out))
    data = b""
    refused = opened = 0
    deadline = time.monotonic() + 10
    while refused + opened < 260 and time.monotonic() < deadline:
        try:
            chunk = s.recv(65536)
        except (TimeoutError, OSError):
            break
        if not chunk:
            break
        data += chunk
        opened = sum(1 for t, _, sid, _ in frames(data) if t == 0x1 and sid)
        refused = sum(1 for t, _, sid, p in frames(data) if t == 0x3 and p == b"\x00\x00\x00\x07")
    s.close()
    assert (opened, refused) == (200, 60)
    assert "REFUSED_STREAM" in agent_log(cluster)
    mesh_still_works(cluster)
