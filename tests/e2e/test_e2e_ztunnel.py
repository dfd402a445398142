"""The ztunnel end to end: enrollment by label without restarting apps, HBONE mTLS on the wire,
client addresses preserved, metrics, PeerAuthentication, refusals, node-agent restart."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import subprocess
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from e2ekit import OUTSIDE_CURL, ROOT, Cluster

from zeromesh.identity.certs import load_key
from zeromesh.local.state import Paths, load_config

EXAMPLES = ROOT / "examples"
AMBIENT = "istio.io/dataplane-mode=ambient"

EXTRA = OUTSIDE_CURL + textwrap.dedent("""\
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: plain, namespace: outside}
    spec:
      selector: {app: plain}
      ports: [{port: 80, targetPort: 8080}]
    ---
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: plain, namespace: outside}
    spec:
      selector: {matchLabels: {app: plain}}
      template:
        metadata: {labels: {app: plain}}
        spec:
          nodeSelector: {name: node2}
          containers: [{name: echo, image: zeromesh/http-echo, ports: [{containerPort: 8080}]}]
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: local-echo, namespace: sample-server}
    spec:
      selector: {app: local-echo}
      ports: [{port: 80, targetPort: 8080}]
    ---
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: local-echo, namespace: sample-server}
    spec:
      selector: {matchLabels: {app: local-echo}}
      template:
        metadata: {labels: {app: local-echo}}
        spec:
          nodeSelector: {name: node1}
          containers: [{name: echo, image: zeromesh/http-echo, ports: [{containerPort: 8080}]}]
    """)


def pid_of(pod: dict[str, Any]) -> int:
    return int(pod["status"]["containerStatuses"][0]["containerID"].removeprefix("process://"))


def app_pids(c: Cluster) -> dict[str, int]:
    return {p["metadata"]["name"]: pid_of(p) for ns in ("sample-server", "sample-client", "outside")
            for p in c.pods(ns)}


def config_dump(c: Cluster, node: str) -> dict[str, Any]:
    port = load_config(Paths(c.name)).node_ports[node]["admin"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/config_dump", timeout=5) as r:
        return json.loads(r.read())


def metrics(c: Cluster, node: str) -> str:
    port = load_config(Paths(c.name)).node_ports[node]["metrics"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def metric_sum(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def wait_enrolled(c: Cluster, pods: set[str], enrolled: bool = True, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        here = {w["name"] for n in ("node1", "node2") for w in config_dump(c, n)["workloads"]
                if w["enrolled_here"]}
        if (pods <= here) if enrolled else not (pods & here):
            return
        assert time.monotonic() < deadline, f"enrollment of {pods} not reached: {here}"
        time.sleep(0.1)


class Capture:
    """tcpdump on node1's link into the underlay: every packet between the nodes."""

    def __init__(self, c: Cluster, path: Path) -> None:
        self.path = path
        self.out = open(path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", f"zm.{c.name}.underlay", "tcpdump", "-i", "node1", "-nn", "-A",
             "-l", "tcp"], stdout=self.out, stderr=subprocess.DEVNULL)
        time.sleep(1.0)

    def stop(self) -> str:
        time.sleep(0.5)
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.out.close()
        return self.path.read_text(errors="replace")


@pytest.fixture(scope="module")
def mesh(cluster: Cluster) -> Iterator[Cluster]:
    cluster.apply(EXAMPLES)
    cluster.apply("-", input=EXTRA)
    for ns, n in (("sample-server", 3), ("sample-client", 1), ("outside", 2)):
        cluster.wait_ready(ns, count=n)
    yield cluster


def echo_pod(c: Cluster, name: str = "echo-", ns: str = "sample-server") -> dict[str, Any]:
    return next(p for p in c.pods(ns) if p["metadata"]["name"].startswith(name))


def test_enrollment_encrypts_without_restarting_apps(mesh: Cluster, tmp_path: Path) -> None:
    client = mesh.pods("sample-client")[0]
    cap = Capture(mesh, tmp_path / "before.txt")
    r = mesh.curl("sample-client", "deploy/curl", "http://echo.sample-server/marker-before")
    before = cap.stop()
    assert r.returncode == 0 and "marker-before" in before, "plaintext should be visible before"
    pids = app_pids(mesh)

    mesh.z("label", "namespace", "sample-server", AMBIENT)
    mesh.z("label", "namespace", "sample-client", AMBIENT)
    wait_enrolled(mesh, {echo_pod(mesh)["metadata"]["name"], client["metadata"]["name"]})

    cap = Capture(mesh, tmp_path / "after.txt")
    r = mesh.curl("sample-client", "deploy/curl", "http://echo.sample-server/marker-after")
    after = cap.stop()
    assert r.returncode == 0, r.stderr
    body = json.loads(r.stdout)
    assert body["remote_ip"] == client["status"]["podIP"]       # the app sees the client pod
    assert "marker-after" not in after, "the HTTP request crossed the network in clear"
    echo_ip = echo_pod(mesh)["status"]["podIP"]
    assert re.search(rf"{re.escape(client['status']['podIP'])}\.\d+ > {re.escape(echo_ip)}\.15008", after)
    assert not re.search(rf"> {re.escape(echo_ip)}\.8080", after)
    assert app_pids(mesh) == pids, "enrollment restarted an application"

    src = metrics(mesh, "node1")
    dst = metrics(mesh, "node2")
    assert metric_sum(src, "istio_tcp_connections_opened_total", reporter="source",
                      source_workload="curl", destination_workload="echo",
                      connection_security_policy="mutual_tls",
                      source_principal="spiffe://cluster.local/ns/sample-client/sa/curl",
                      destination_principal="spiffe://cluster.local/ns/sample-server/sa/echo") >= 1
    assert metric_sum(dst, "istio_tcp_connections_opened_total", reporter="destination",
                      destination_workload="echo", connection_security_policy="mutual_tls") >= 1
    assert metric_sum(src, "istio_tcp_sent_bytes_total", reporter="source") > 0
    assert metric_sum(dst, "istio_tcp_received_bytes_total", reporter="destination") > 0
    log = (Paths(mesh.name).logs / "nodeagent-node2.log").read_text()
    line = next(json.loads(x.split("zeromesh.access: ", 1)[1]) for x in log.splitlines()
                if "zeromesh.access" in x and "connection complete" in x)
    assert line["direction"] == "inbound" and line["security"] == "mutual_tls"
    assert line["src.identity"] == "spiffe://cluster.local/ns/sample-client/sa/curl"
    out = mesh.z("ztunnel-config", "certificates").stdout
    assert "spiffe://cluster.local/ns/sample-server/sa/echo" in out
    assert "spiffe://cluster.local/ns/sample-client/sa/curl" in out
    wl = mesh.z("ztunnel-config", "workloads", "--node", "node1").stdout
    assert "HBONE" in wl and "TCP" in wl
    # The CLI shows where each node agent's metrics are.
    port = load_config(Paths(mesh.name)).node_ports["node1"]["metrics"]
    assert f"127.0.0.1:{port}" in mesh.z("ps").stdout


def test_mesh_and_non_mesh_together(mesh: Cluster) -> None:
    outside = mesh.pods("outside")
    out_curl = next(p for p in outside if p["metadata"]["name"].startswith("curl-"))
    # Non-meshed client -> meshed server: accepted in plaintext (PERMISSIVE), client address kept.
    r = mesh.curl("outside", "deploy/curl", "http://echo.sample-server/from-outside")
    assert r.returncode == 0 and json.loads(r.stdout)["remote_ip"] == out_curl["status"]["podIP"]
    # Meshed client -> non-meshed server: plain TCP.
    r = mesh.curl("sample-client", "deploy/curl", "http://plain.outside/")
    assert r.returncode == 0 and json.loads(r.stdout)["namespace"] == "outside"
    # Meshed -> meshed on the same node (both on node1).
    r = mesh.curl("sample-client", "deploy/curl", "http://local-echo.sample-server/")
    assert r.returncode == 0
    assert json.loads(r.stdout)["remote_ip"] == mesh.pods("sample-client")[0]["status"]["podIP"]
    # ...and by pod address rather than service.
    ip = echo_pod(mesh)["status"]["podIP"]
    assert mesh.curl("sample-client", "deploy/curl", f"http://{ip}:8080/").returncode == 0
    # Pods outside the mesh are untouched: no capture rules in them.
    plain = next(p for p in outside if p["metadata"]["name"].startswith("plain-"))
    rules = subprocess.run(["ip", "netns", "exec", f"zm.{mesh.name}.outside.{plain['metadata']['name']}",
                            "nft", "list", "ruleset"], capture_output=True, text=True, check=False)
    assert "zeromesh-inpod" not in rules.stdout


def test_strict_refuses_plaintext_permissive_accepts(mesh: Cluster) -> None:
    strict = textwrap.dedent("""\
        apiVersion: security.istio.io/v1
        kind: PeerAuthentication
        metadata: {name: strict, namespace: sample-server}
        spec: {mtls: {mode: STRICT}}
        """)
    mesh.apply("-", input=strict)
    deadline = time.monotonic() + 10
    while mesh.curl("outside", "deploy/curl", "http://echo.sample-server/").returncode == 0:
        assert time.monotonic() < deadline, "STRICT did not take effect"
        time.sleep(0.2)
    # Meshed clients are unaffected.
    assert mesh.curl("sample-client", "deploy/curl", "http://echo.sample-server/").returncode == 0
    log = (Paths(mesh.name).logs / "nodeagent-node2.log").read_text()
    assert "plaintext refused: PeerAuthentication STRICT" in log
    # A port-level PERMISSIVE override on the workload reopens that port only.
    mesh.apply("-", input=textwrap.dedent("""\
        apiVersion: security.istio.io/v1
        kind: PeerAuthentication
        metadata: {name: echo-port, namespace: sample-server}
        spec:
          selector: {matchLabels: {app: echo}}
          portLevelMtls: {"8080": {mode: PERMISSIVE}}
        """))
    deadline = time.monotonic() + 10
    while mesh.curl("outside", "deploy/curl", "http://echo.sample-server/").returncode != 0:
        assert time.monotonic() < deadline, "port-level PERMISSIVE did not take effect"
        time.sleep(0.2)
    mesh.z("delete", "peerauthentication", "echo-port", "-n", "sample-server")
    mesh.z("delete", "peerauthentication", "strict", "-n", "sample-server")
    deadline = time.monotonic() + 10
    while mesh.curl("outside", "deploy/curl", "http://echo.sample-server/").returncode != 0:
        assert time.monotonic() < deadline, "PERMISSIVE (the default) did not come back"
        time.sleep(0.2)


def _self_signed(tmp: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(
                "spiffe://cluster.local/ns/sample-client/sa/curl")]), critical=False)
            .sign(key, hashes.SHA256()))
    c, k = tmp / f"{name}.pem", tmp / f"{name}.key"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    for f in (c, k):
        os.chmod(f, 0o644)          # pod processes run unprivileged
    return c, k


def test_hbone_port_refuses_clients_without_a_mesh_certificate(mesh: Cluster, tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    ip = echo_pod(mesh)["status"]["podIP"]
    before = mesh.z("logs", "-n", "sample-server", "deploy/echo").stdout.count("\n")
    # No client certificate.
    r = mesh.exec("outside", "deploy/curl", "sh", "-c",
                  f"echo 'GET /nocert HTTP/1.0' | openssl s_client -connect {ip}:15008 -alpn h2 -quiet 2>&1",
                  check=False, timeout=20)
    assert re.search(r"alert|certificate required|error", r.stdout, re.I), r.stdout
    # A certificate from another CA.
    cert, key = _self_signed(tmp_path, "rogue")
    r = mesh.exec("outside", "deploy/curl", "sh", "-c",
                  f"echo 'GET /rogue HTTP/1.0' | openssl s_client -connect {ip}:15008 -alpn h2 "
                  f"-cert {cert} -key {key} -quiet 2>&1", check=False, timeout=20)
    assert re.search(r"alert|unknown ca|bad certificate|error", r.stdout, re.I), r.stdout
    # Nothing reached the application, and the mesh client still works.
    assert mesh.curl("sample-client", "deploy/curl", "http://echo.sample-server/").returncode == 0
    del before


def test_client_refuses_a_server_with_the_wrong_identity_and_agent_restart_keeps_apps(
        mesh: Cluster, tmp_path: Path) -> None:
    """An impostor on the echo pod's 15008 with a valid mesh certificate for another identity:
    the client ztunnel must refuse before sending a byte of the application."""
    paths = Paths(mesh.name)
    pids = app_pids(mesh)
    echo = echo_pod(mesh)
    # Sign a mesh certificate for the wrong identity with the cluster's own CA (the attacker
    # here holds a legitimate certificate, just not the expected one).
    ca_key = load_key((paths.ca / "ca-key.pem").read_bytes())
    ca_cert = x509.load_pem_x509_certificate((paths.ca / "ca-cert.pem").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(
                "spiffe://cluster.local/ns/sample-server/sa/impostor")]), critical=True)
            .sign(ca_key, hashes.SHA256()))  # type: ignore[arg-type]
    (tmp_path / "imp.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "imp.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (tmp_path / "roots.pem").write_text(paths.root_cert.read_text())
    agent_pid = int((paths.pids / "nodeagent-node2.pid").read_text())
    os.kill(agent_pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{agent_pid}").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    netns = f"zm.{mesh.name}.sample-server.{echo['metadata']['name']}"
    out = tmp_path / "s_server.out"
    out_file = open(out, "wb")  # noqa: SIM115 - closed in the finally below
    server = subprocess.Popen(
        ["ip", "netns", "exec", netns, "openssl", "s_server", "-accept", "15008", "-cert",
         str(tmp_path / "imp.pem"), "-key", str(tmp_path / "imp.key"), "-alpn", "h2", "-verify", "1",
         "-CAfile", str(tmp_path / "roots.pem"), "-quiet"],
        stdout=out_file, stderr=subprocess.STDOUT)
    try:
        time.sleep(0.5)
        r = mesh.curl("sample-client", "deploy/curl", "http://echo.sample-server/must-not-leak")
        assert r.returncode != 0
        time.sleep(0.3)
        assert "must-not-leak" not in out.read_text(errors="replace")
        log = (paths.logs / "nodeagent-node1.log").read_text()
        assert "IdentityMismatch" in log and "spiffe://cluster.local/ns/sample-server/sa/impostor" in log
    finally:
        server.terminate()
        server.wait(5)
        out_file.close()
    # Restart the node agent: the applications keep their PIDs and traffic is back.
    mesh.up()
    wait_enrolled(mesh, {echo["metadata"]["name"]})
    deadline = time.monotonic() + 15
    while mesh.curl("sample-client", "deploy/curl", "http://echo.sample-server/").returncode != 0:
        assert time.monotonic() < deadline, "traffic did not come back after the node agent restart"
        time.sleep(0.2)
    assert app_pids(mesh) == pids


def test_traffic_keeps_flowing_while_the_control_plane_is_away(mesh: Cluster) -> None:
    paths = Paths(mesh.name)
    assert mesh.curl("sample-client", "deploy/curl", "http://echo.sample-server/").returncode == 0
    client = mesh.pods("sample-client")[0]["metadata"]["name"]
    os.kill(int((paths.pids / "controlplane.pid").read_text()), signal.SIGKILL)
    time.sleep(0.5)
    # New connections, over the last known configuration and certificates (exec needs the control
    # plane, so go into the client pod's namespace directly).
    for _ in range(3):
        r = subprocess.run(["ip", "netns", "exec", f"zm.{mesh.name}.sample-client.{client}",
                            "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            "curl", "-s", "-m", "5", "http://echo.sample-server/cp-away"],
                           capture_output=True, text=True, timeout=30, check=False)
        assert r.returncode == 0 and json.loads(r.stdout)["path"] == "/cp-away"
    node1 = metrics(mesh, "node1")
    assert metric_sum(node1, "istio_tcp_connections_opened_total", reporter="source",
                      connection_security_policy="mutual_tls") >= 3
    mesh.up()


def test_unlabelling_restores_plaintext(mesh: Cluster, tmp_path: Path) -> None:
    echo = echo_pod(mesh)
    mesh.z("label", "namespace", "sample-server", "istio.io/dataplane-mode-")
    mesh.z("label", "namespace", "sample-client", "istio.io/dataplane-mode-")
    wait_enrolled(mesh, {echo["metadata"]["name"]}, enrolled=False)
    cap = Capture(mesh, tmp_path / "unlabelled.txt")
    r = mesh.curl("sample-client", "deploy/curl", "http://echo.sample-server/marker-plain-again")
    seen = cap.stop()
    assert r.returncode == 0 and "marker-plain-again" in seen
    rules = subprocess.run(["ip", "netns", "exec", f"zm.{mesh.name}.sample-server.{echo['metadata']['name']}",
                            "nft", "list", "ruleset"], capture_output=True, text=True, check=False)
    assert "zeromesh-inpod" not in rules.stdout
