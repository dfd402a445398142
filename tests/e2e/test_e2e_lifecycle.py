"""Cluster lifecycle: up/down leave the host as it was, clusters coexist, state survives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from conftest import ROOT, SEED, Cluster, host_network_view, leftovers, unique_name

EXAMPLES = ROOT / "examples"
TABLE = ROOT / "tests" / "e2e" / "image-table.yaml"


def test_up_and_down_leave_the_host_unchanged(new_cluster: Cluster) -> None:
    before = host_network_view()
    new_cluster.up(2)
    netns = [n for n in os.listdir("/run/netns") if n.startswith(f"zm.{new_cluster.name}.")]
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
