"""L4 AuthorizationPolicy in the ztunnel: the classic lockdown, plaintext clients, and open
connections closed when a new policy denies them."""

from __future__ import annotations

import json
import subprocess
import textwrap
import time
import urllib.request
from collections.abc import Iterator

import pytest
from e2ekit import OUTSIDE_CURL, ROOT, TCP_ECHO, Cluster

from zeromesh.local.state import Paths, load_config

EXTRA = textwrap.dedent("""\
    apiVersion: v1
    kind: ServiceAccount
    metadata: {name: other, namespace: sample-client}
    ---
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: other, namespace: sample-client}
    spec:
      selector: {matchLabels: {app: other}}
      template:
        metadata: {labels: {app: other}}
        spec:
          serviceAccountName: other
          nodeSelector: {name: node1}
          containers: [{name: c, image: curlimages/curl, command: [/bin/sleep, infinity]}]
    """) + "---\n" + OUTSIDE_CURL + "---\n" + TCP_ECHO

DENY_ALL = textwrap.dedent("""\
    apiVersion: security.istio.io/v1
    kind: AuthorizationPolicy
    metadata: {name: deny-all, namespace: sample-server}
    ---
    apiVersion: security.istio.io/v1
    kind: AuthorizationPolicy
    metadata: {name: deny-all, namespace: sample-client}
    """)
ALLOW_CURL = textwrap.dedent("""\
    apiVersion: security.istio.io/v1
    kind: AuthorizationPolicy
    metadata: {name: allow-curl, namespace: sample-server}
    spec:
      selector: {matchLabels: {app: echo}}
      action: ALLOW
      rules:
        - from:
            - source: {principals: [cluster.local/ns/sample-client/sa/curl]}
    """)

PINGER = textwrap.dedent("""\
    import socket, sys, time
    s = socket.create_connection(("tcp-echo.sample-server.svc.cluster.local", 9000), timeout=5)
    ok = 0
    deadline = time.monotonic() + float(sys.argv[1])
    while time.monotonic() < deadline:
        try:
            s.sendall(b"ping\\n")
            got = s.recv(16)
        except OSError as e:
            print(f"closed after {ok} pings: {e}"); sys.exit(3)
        if not got:
            print(f"closed after {ok} pings"); sys.exit(3)
        ok += 1
        time.sleep(0.2)
    print(f"still open after {ok} pings")
    """)


def node2_log(c: Cluster) -> str:
    return (Paths(c.name).logs / "nodeagent-node2.log").read_text(errors="replace")


def failed_denies(c: Cluster) -> float:
    port = load_config(Paths(c.name)).node_ports["node2"]["metrics"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("istio_tcp_connections_failed_total{") and 'response_flags="DENY"' in line)


def eventually(check, timeout: float = 10, what: str = "") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what or "condition not reached"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def mesh(cluster: Cluster) -> Iterator[Cluster]:
    cluster.apply(ROOT / "examples")
    cluster.apply("-", input=EXTRA)
    cluster.z("label", "namespace", "sample-server", "istio.io/dataplane-mode=ambient")
    cluster.z("label", "namespace", "sample-client", "istio.io/dataplane-mode=ambient")
    for ns, n in (("sample-server", 3), ("sample-client", 2), ("outside", 1)):
        cluster.wait_ready(ns, count=n)
    eventually(lambda: cluster.curl("sample-client", "deploy/curl", "http://echo.sample-server/")
               .returncode == 0, 20, "mesh not ready")
    yield cluster


def ok(c: Cluster, ns: str, target: str, url: str = "http://echo.sample-server/") -> bool:
    return c.curl(ns, target, url).returncode == 0


def test_classic_lockdown(mesh: Cluster) -> None:
    denies = failed_denies(mesh)
    mesh.apply("-", input=DENY_ALL)
    eventually(lambda: not ok(mesh, "sample-client", "deploy/curl"), 5, "deny-all did not take effect")
    assert not ok(mesh, "sample-client", "deploy/other")
    mesh.apply("-", input=ALLOW_CURL)
    eventually(lambda: ok(mesh, "sample-client", "deploy/curl"), 5, "the allow did not take effect")
    assert not ok(mesh, "sample-client", "deploy/other")       # same namespace, other identity
    log = node2_log(mesh)
    assert "no ALLOW policy matched" in log and "sample-server/allow-curl" in log
    assert "spiffe://cluster.local/ns/sample-client/sa/other" in log
    assert failed_denies(mesh) > denies
    # The explainer, from the live configuration, names the deciding policy for both clients.
    echo = next(p for p in mesh.pods("sample-server") if p["metadata"]["name"].startswith("echo-"))
    pod = f"sample-server/{echo['metadata']['name']}"
    r = mesh.z("x", "authz", "check", "--pod", pod, "--port", "8080", "--source-principal",
               "cluster.local/ns/sample-client/sa/curl", check=False)
    assert r.returncode == 0 and "allowed by ALLOW policy sample-server/allow-curl rule 0" in r.stdout
    r = mesh.z("x", "authz", "check", "--pod", pod, "--port", "8080", "--source-principal",
               "cluster.local/ns/sample-client/sa/other", check=False)
    assert r.returncode == 1 and "no ALLOW policy matched" in r.stdout
    assert "sample-server/deny-all" in r.stdout


def test_plaintext_client_refused_by_allow_by_principal(mesh: Cluster) -> None:
    assert not ok(mesh, "outside", "deploy/curl")               # no identity matches no principal
    assert "RBAC: denied: no ALLOW policy matched" in node2_log(mesh)


def test_open_connection_closed_when_a_new_policy_denies_it(mesh: Cluster) -> None:
    mesh.z("delete", "authorizationpolicy", "deny-all", "-n", "sample-server")
    client = mesh.pods("sample-client")
    curl = next(p for p in client if p["metadata"]["name"].startswith("curl-"))["metadata"]["name"]
    pinger = subprocess.Popen(
        ["ip", "netns", "exec", f"zm.{mesh.name}.sample-client.{curl}", "setpriv", "--reuid=65534",
         "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c", PINGER, "20"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2)
        assert pinger.poll() is None, pinger.communicate()
        mesh.apply("-", input=textwrap.dedent("""\
            apiVersion: security.istio.io/v1
            kind: AuthorizationPolicy
            metadata: {name: deny-client-ns, namespace: sample-server}
            spec:
              selector: {matchLabels: {app: tcp-echo}}
              action: DENY
              rules: [{from: [{source: {namespaces: [sample-client]}}]}]
            """))
        t0 = time.monotonic()
        out, err = pinger.communicate(timeout=15)
        assert time.monotonic() - t0 < 3, "the open connection was not closed promptly"
    finally:
        if pinger.poll() is None:
            pinger.kill()
            pinger.wait()
    assert pinger.returncode == 3 and out.startswith("closed after"), out + err
    log = node2_log(mesh)
    assert "connection closed due to policy change" in log
    assert "denied by DENY policy sample-server/deny-client-ns rule 0" in log
    line = next(json.loads(x.split("zeromesh.access: ", 1)[1]) for x in log.splitlines()
                if "connection closed due to policy change" in x)
    assert line["dst.workload"].startswith("tcp-echo")
    for name in ("deny-client-ns", "allow-curl"):
        mesh.z("delete", "authorizationpolicy", name, "-n", "sample-server")
    mesh.z("delete", "authorizationpolicy", "deny-all", "-n", "sample-client")


def test_policy_status_says_what_the_ztunnel_cannot_enforce(mesh: Cluster) -> None:
    mesh.apply("-", input=textwrap.dedent("""\
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: get-only, namespace: sample-server}
        spec:
          selector: {matchLabels: {app: echo}}
          rules:
            - from: [{source: {principals: [cluster.local/ns/sample-client/sa/curl]}}]
              to: [{operation: {methods: [GET]}}]
        ---
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: plain-allow, namespace: sample-server}
        spec:
          selector: {matchLabels: {app: nothing-here}}
          rules: [{from: [{source: {namespaces: [sample-client]}}]}]
        """))

    def cond(name: str) -> dict[str, str] | None:
        ap = mesh.get("authorizationpolicies.security.istio.io", "sample-server", name)
        return next((c for c in ap.get("status", {}).get("conditions", [])
                     if c["type"] == "ZtunnelAccepted"), None)
    eventually(lambda: cond("get-only") is not None and cond("plain-allow") is not None, 10,
               "no status written")
    got = cond("get-only")
    assert got is not None and got["status"] == "False" and "methods" in got["message"]
    assert cond("plain-allow") == {**cond("plain-allow"), "status": "True"}    # type: ignore[dict-item]
    y = mesh.z("get", "authorizationpolicy", "get-only", "-n", "sample-server", "-o", "yaml").stdout
    assert "ztunnel does not support HTTP attributes" in y
    # The L7 rule is left out at L4: that ALLOW policy now matches nothing, so curl is refused.
    eventually(lambda: not ok(mesh, "sample-client", "deploy/curl"), 5, "the L7-only ALLOW did not close")
    eventually(lambda: "AuthorizationPolicy sample-server/get-only at the ztunnel" in node2_log(mesh), 5,
               "the node agent did not log what it left out")
    for name in ("get-only", "plain-allow"):
        mesh.z("delete", "authorizationpolicy", name, "-n", "sample-server")
    eventually(lambda: ok(mesh, "sample-client", "deploy/curl"), 5, "access did not come back")
