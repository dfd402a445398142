"""Cluster lifecycle: up/down leave the host as it was, clusters coexist, state survives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from e2ekit import ROOT, SEED, Cluster, host_network_view, leftovers, unique_name

EXAMPLES = ROOT / "examples"
TABLE = ROOT / "tests" / "e2e" / "image-table.yaml"


def test_up_and_down_leave_the_host_unchanged(new_cluster: Cluster) -> None:
    before = host_network_view()
    new_cluster.up(2)
    # Node-level namespaces only (pods, such as the ingress gateway's, have zm.C.NS.POD names).
    netns = [n for n in os.listdir("/run/netns")
             if n.startswith(f"zm.{new_cluster.name}.") and n.count(".") == 2]
    assert sorted(netns) == sorted(f"zm.{new_cluster.name}.{n}"
                                   for n in ("underlay", "node1", "node2"))
    during = host_network_view()
    assert during == before, "up changed the host's routes, rules, links or ruleset"
    new_cluster.apply(EXAMPLES)
    new_cluster.wait_ready("sample-server", count=2)
    new_cluster.wait_ready("sample-client", count=1)
    r = new_cluster.curl("sample-client", "deploy/curl", "http://echo.sample-server")
    assert r.returncode == 0
    assert host_network_view() == before
    out = new_cluster.down()
    assert out.returncode == 0, out.stderr
    assert leftovers(new_cluster.name) == []
    assert host_network_view() == before


def test_seed_demo_resources_apply_unchanged_and_run(new_cluster: Cluster) -> None:
    new_cluster.up(2, "--image-table", str(TABLE))
    out = new_cluster.apply(SEED / "resources-ns1.yaml", SEED / "resources-ns2.yaml")
    assert "deployment.apps/echoserver-depl-ns2-v1 created" in out
    new_cluster.wait_ready("ns1", count=3)
    new_cluster.wait_ready("ns2", count=4)
    ns1 = new_cluster.get("namespaces", None, "ns1")
    assert ns1["metadata"]["labels"]["istio.io/dataplane-mode"] == "ambient"
    where = {p["metadata"]["name"].rsplit("-", 2)[0]: p["spec"]["nodeName"]
             for ns in ("ns1", "ns2") for p in new_cluster.pods(ns)}
    assert where["echoserver-depl-ns1"] == "node1" and where["echoserver-depl-ns2-v1"] == "node2"
    r = new_cluster.curl("ns1", "deploy/sleep-depl-ns1",
                         "http://echoserver-service-ns2.ns2.svc.cluster.local")
    assert r.returncode == 0
    assert "echoserver-depl-ns2-v" in json.loads(r.stdout)["pod"]


def test_two_clusters_run_side_by_side(new_cluster: Cluster) -> None:
    other = Cluster(unique_name())
    try:
        new_cluster.up(2)
        other.up(1)
        for c in (new_cluster, other):
            text = (EXAMPLES / "server.yaml").read_text().replace("name: node2", "name: node1")
            c.apply("-", input=text)
            c.apply(EXAMPLES / "client.yaml")
        for c in (new_cluster, other):
            c.wait_ready("sample-server", count=2)
            c.wait_ready("sample-client", count=1)
        # Same names and addresses, fully separate clusters.
        a = json.loads(new_cluster.curl("sample-client", "deploy/curl",
                                        "http://echo.sample-server").stdout)
        b = json.loads(other.curl("sample-client", "deploy/curl",
                                  "http://echo.sample-server").stdout)
        assert a["pod"] != b["pod"]
        assert a["pod"] == new_cluster.pods("sample-server")[0]["metadata"]["name"] or \
            a["pod"] in {p["metadata"]["name"] for p in new_cluster.pods("sample-server")}
        assert other.down().returncode == 0
        assert leftovers(other.name) == []
        r = new_cluster.curl("sample-client", "deploy/curl", "http://echo.sample-server")
        assert r.returncode == 0 and json.loads(r.stdout)["pod"] == a["pod"]
    finally:
        other.down()


def test_state_survives_down_keep_state_and_a_crash(new_cluster: Cluster) -> None:
    new_cluster.up(2)
    new_cluster.apply(EXAMPLES)
    new_cluster.wait_ready("sample-server", count=2)
    svc_ip = new_cluster.get("services", "sample-server", "echo")["spec"]["clusterIP"]
    assert new_cluster.down("--keep-state").returncode == 0
    assert not [x for x in leftovers(new_cluster.name) if not x.startswith("/var/lib")]
    r = new_cluster.z("get", "pods", "-A", check=False)
    assert r.returncode == 1 and "is not running" in r.stderr and "zeromesh up" in r.stderr
    new_cluster.up()
    new_cluster.wait_ready("sample-server", count=2)
    new_cluster.wait_ready("sample-client", count=1)
    assert new_cluster.get("services", "sample-server", "echo")["spec"]["clusterIP"] == svc_ip
    assert new_cluster.curl("sample-client", "deploy/curl",
                            "http://echo.sample-server").returncode == 0
    # Crash the control plane: the pods keep running; `up` brings it back with the state.
    client = new_cluster.pods("sample-client")[0]["metadata"]["name"]
    pid = int(Path(f"/run/zeromesh/{new_cluster.name}/pids/controlplane.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    r = subprocess.run(["ip", "netns", "exec", f"zm.{new_cluster.name}.sample-client.{client}",
                        "curl", "-s", "-m", "5", "http://echo.sample-server"],
                       capture_output=True, text=True, timeout=30, check=False)
    assert r.returncode == 0 and json.loads(r.stdout)["namespace"] == "sample-server"
    new_cluster.up()
    assert new_cluster.get("deployments.apps", "sample-server", "echo")["metadata"]["name"] == "echo"
    new_cluster.wait_ready("sample-server", count=2)
    assert new_cluster.curl("sample-client", "deploy/curl",
                            "http://echo.sample-server").returncode == 0


def test_commands_against_a_stopped_cluster_say_how_to_start_it() -> None:
    c = Cluster(unique_name())
    r = c.z("get", "pods", check=False)
    assert r.returncode == 1
    assert f"cluster '{c.name}' is not running" in r.stderr
    assert f"zeromesh up --cluster {c.name}" in r.stderr
    try:
        r = c.z("up", "--nodes", "0", check=False)
        assert r.returncode == 1 and "--nodes" in r.stderr
    finally:
        c.down()
    assert leftovers(c.name) == []


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def test_plug_in_ca_signs_workload_certificates(new_cluster: Cluster, tmp_path: Path) -> None:
    """Istio's plug-in CA layout, made with openssl as Istio's docs do: root -> intermediate."""
    d = tmp_path
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "root-key.pem", cwd=d)
    _openssl("req", "-x509", "-new", "-key", "root-key.pem", "-subj", "/O=Example/CN=Example Root CA",
             "-days", "30", "-out", "root-cert.pem",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca-key.pem", cwd=d)
    _openssl("req", "-new", "-key", "ca-key.pem", "-subj", "/O=Example/CN=Example Intermediate CA",
             "-out", "ca.csr", cwd=d)
    (d / "ext.cnf").write_text("basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n")
    _openssl("x509", "-req", "-in", "ca.csr", "-CA", "root-cert.pem", "-CAkey", "root-key.pem",
             "-CAcreateserial", "-days", "20", "-out", "ca-cert.pem", "-extfile", "ext.cnf", cwd=d)
    (d / "cert-chain.pem").write_text((d / "ca-cert.pem").read_text() + (d / "root-cert.pem").read_text())
    plugin = d / "plugin"
    plugin.mkdir()
    for f in ("ca-cert.pem", "ca-key.pem", "root-cert.pem", "cert-chain.pem"):
        (plugin / f).write_bytes((d / f).read_bytes())

    new_cluster.up(2, "--ca-dir", str(plugin))
    out = new_cluster.z("x", "ca").stdout
    assert "Example Root CA" in out and "[plug-in CA]" in out
    new_cluster.apply(EXAMPLES / "client.yaml")
    new_cluster.wait_ready("sample-client", count=1)

    import http.client
    import ssl

    from zeromesh.identity.certs import generate_key, make_csr
    from zeromesh.local.state import Paths, load_config
    paths = Paths(new_cluster.name)
    ctx = ssl.create_default_context(cafile=str(paths.root_cert))
    cred = paths.node_credential("node1")
    ctx.load_cert_chain(str(cred / "node-chain.pem"), str(cred / "node-key.pem"))
    conn = http.client.HTTPSConnection("127.0.0.1", load_config(paths).xds_port, context=ctx, timeout=10)
    conn.request("POST", "/v1/certificates", body=json.dumps(
        {"csr": make_csr(generate_key(), "spiffe://cluster.local/ns/sample-client/sa/curl").decode()}))
    resp = conn.getresponse()
    body = json.loads(resp.read())
    conn.close()
    assert resp.status == 200, body
    chain = body["cert_chain"]
    assert chain[-1].strip() == (d / "root-cert.pem").read_text().strip()
    assert chain[1].strip() == (d / "ca-cert.pem").read_text().strip()
    (d / "leaf.pem").write_text(chain[0])
    r = subprocess.run(["openssl", "verify", "-CAfile", str(d / "root-cert.pem"), "-untrusted",
                        str(d / "ca-cert.pem"), str(d / "leaf.pem")], capture_output=True, text=True,
                       check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    # A broken plug-in directory is refused before anything is made.
    other = Cluster(unique_name())
    try:
        (d / "bad").mkdir()
        (d / "bad" / "ca-cert.pem").write_text("x")
        r2 = other.z("up", "--ca-dir", str(d / "bad"), check=False)
        assert r2.returncode == 1 and "missing ca-key.pem" in r2.stderr
    finally:
        other.down()
    assert leftovers(other.name) == []
