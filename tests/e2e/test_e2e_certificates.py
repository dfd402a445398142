"""Workload certificates in a live cluster: renewed at half-life without breaking an open
connection, and dropped when the last pod of a service account leaves the node."""

from __future__ import annotations

import json
import subprocess
import textwrap
import time
import urllib.request
from typing import Any

from e2ekit import ROOT, TCP_ECHO, Cluster

from zeromesh.local.state import Paths, load_config

TCP = TCP_ECHO

# Runs inside the client pod: one connection held for the whole renewal, pinging every 0.5 s.
PINGER = textwrap.dedent("""\
    import socket, sys, time
    s = socket.create_connection(("tcp-echo.sample-server.svc.cluster.local", 9000), timeout=5)
    ok = 0
    deadline = time.monotonic() + float(sys.argv[1])
    while time.monotonic() < deadline:
        s.sendall(b"ping\\n")
        got = b""
        while len(got) < 5:
            chunk = s.recv(5 - len(got))
            if not chunk:
                print(f"closed after {ok} pings"); sys.exit(1)
            got += chunk
        assert got == b"ping\\n", got
        ok += 1
        time.sleep(0.5)
    print(ok)
    """)


def certificates(c: Cluster, node: str) -> dict[str, dict[str, Any]]:
    port = load_config(Paths(c.name)).node_ports[node]["admin"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/config_dump", timeout=5) as r:
        return {x["identity"]: x for x in json.loads(r.read())["certificates"] if "serial" in x}


ECHO = "spiffe://cluster.local/ns/sample-server/sa/echo"
TCP_ID = "spiffe://cluster.local/ns/sample-server/sa/tcp"


def test_renewal_keeps_connections_and_unused_identities_are_dropped(new_cluster: Cluster) -> None:
    c = new_cluster
    c.up(2, "--workload-cert-ttl", "30")
    c.apply(ROOT / "examples")
    c.apply("-", input=TCP)
    c.z("label", "namespace", "sample-server", "istio.io/dataplane-mode=ambient")
    c.z("label", "namespace", "sample-client", "istio.io/dataplane-mode=ambient")
    c.wait_ready("sample-server", count=3)
    c.wait_ready("sample-client", count=1)
    deadline = time.monotonic() + 20
    while not {ECHO, TCP_ID} <= set(certificates(c, "node2")):
        assert time.monotonic() < deadline, certificates(c, "node2")
        time.sleep(0.2)
    first = certificates(c, "node2")[TCP_ID]
    client = c.pods("sample-client")[0]["metadata"]["name"]
    pinger = subprocess.Popen(
        ["ip", "netns", "exec", f"zm.{c.name}.sample-client.{client}", "setpriv", "--reuid=65534",
         "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c", PINGER, "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 40
        while certificates(c, "node2")[TCP_ID]["serial"] == first["serial"]:
            assert time.monotonic() < deadline, "the certificate was not renewed at half-life"
            time.sleep(0.5)
        renewed = certificates(c, "node2")[TCP_ID]
        assert renewed["not_after"] > first["not_after"]
        out, err = pinger.communicate(timeout=60)
    finally:
        if pinger.poll() is None:
            pinger.kill()
            pinger.wait()
    assert pinger.returncode == 0, out + err
    assert int(out.strip()) >= 50, "the connection opened before the renewal stopped working"
    r = c.curl("sample-client", "deploy/curl", "http://echo.sample-server/")
    assert r.returncode == 0, "new connections after the renewal failed"
    # The last pod of sample-server/echo leaves node2: its certificate goes, the other stays.
    c.z("delete", "deployment", "echo", "-n", "sample-server")
    deadline = time.monotonic() + 20
    while ECHO in certificates(c, "node2"):
        assert time.monotonic() < deadline, "certificate kept after its last pod left"
        time.sleep(0.2)
    assert TCP_ID in certificates(c, "node2")
