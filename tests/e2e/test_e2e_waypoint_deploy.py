"""Deploying waypoints on a real cluster: `zeromesh waypoint apply` makes the control plane run a
waypoint Deployment (ServiceAccount, Service, a pod the ztunnel leaves alone), relabelling keeps the
pod, and `zeromesh waypoint delete` removes all of it. The waypoint proxy itself is not judged here."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from e2ekit import Cluster, unique_name

from zeromesh.cli.client import Client

GTW = "gateways.gateway.networking.k8s.io"


def wait_for(what: str, check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def condition(obj: dict[str, Any], ctype: str) -> dict[str, Any]:
    return next((c for c in obj.get("status", {}).get("conditions") or [] if c["type"] == ctype), {})


def ready(pod: dict[str, Any]) -> bool:
    return condition(pod, "Ready").get("status") == "True"


def test_waypoint_apply_list_relabel_delete(cluster: Cluster) -> None:
    ns = unique_name("wp")
    api = Client(cluster.name)
    cluster.apply("-", input=f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n")
    try:
        out = cluster.z("waypoint", "apply", "-n", ns, "--name", "wp").stdout
        assert f"waypoint {ns}/wp applied" in out
        # Read at once, before the pod can have started: Programmed is False and says why.
        gw = api.get(GTW, ns, "wp")["items"][0]
        pods = [p for p in api.get("pods", ns)["items"] if not p["metadata"].get("deletionTimestamp")]
        programmed = condition(gw, "Programmed")
        if not any(ready(p) for p in pods):
            assert programmed["status"] == "False", gw.get("status")
            assert programmed["reason"] == "NoResources" and "not ready" in programmed["message"]

        dep = cluster.get("deployments", ns, "wp")
        svc = cluster.get("services", ns, "wp")
        sa = cluster.get("serviceaccounts", ns, "wp")
        for obj in (dep, svc, sa):
            (ref,) = obj["metadata"]["ownerReferences"]
            assert (ref["kind"], ref["name"], ref["uid"]) == ("Gateway", "wp", gw["metadata"]["uid"])
        assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == {"mesh": 15008, "status-port": 15021}
        assert gw["status"]["addresses"] == [{"type": "IPAddress", "value": svc["spec"]["clusterIP"]}]
        assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "zeromesh/waypoint"

        wait_for("the waypoint pod", lambda: len(cluster.pods(ns)) == 1)
        (pod,) = cluster.pods(ns)
        labels = pod["metadata"]["labels"]
        assert labels["gateway.networking.k8s.io/gateway-name"] == "wp"
        assert labels["istio.io/gateway-name"] == "wp"
        assert labels["istio.io/dataplane-mode"] == "none"
        assert pod["spec"]["serviceAccountName"] == "wp"

        out = cluster.z("waypoint", "list", "-n", ns).stdout
        header, row = out.splitlines()
        assert header.split()[:4] == ["NAME", "TRAFFIC", "TYPE", "PROGRAMMED"]
        assert row.split()[:2] == ["wp", "service"]
        assert cluster.z("waypoint", "list", "-A").stdout.count(f"{ns} ") == 1
        assert "Programmed" in cluster.z("waypoint", "status", "-n", ns).stdout

        # Serving another kind of traffic is a label change: the same pod keeps running.
        cluster.z("waypoint", "apply", "-n", ns, "--name", "wp", "--for", "all")
        assert cluster.get("gtw", ns, "wp")["metadata"]["labels"]["istio.io/waypoint-for"] == "all"
        assert [p["metadata"]["name"] for p in cluster.pods(ns)] == [pod["metadata"]["name"]]
        assert cluster.z("waypoint", "list", "-n", ns).stdout.splitlines()[1].split()[:2] == ["wp", "all"]

        out = cluster.z("waypoint", "delete", "wp", "-n", ns).stdout
        assert f"waypoint {ns}/wp deleted" in out
        for kind in ("deployments", "services", "serviceaccounts", "gtw"):
            proc = cluster.z("get", kind, "wp", "-n", ns, check=False)
            assert proc.returncode == 1 and "not found" in proc.stderr, kind
        wait_for("the waypoint pod to go", lambda: not cluster.get("pods", ns)["items"])
        missing = cluster.z("waypoint", "delete", "wp", "-n", ns, check=False)
        assert missing.returncode == 1 and f"waypoint {ns}/wp not found" in missing.stderr
    finally:
        cluster.z("delete", "namespace", ns, check=False)


def test_invalid_waypoint_is_not_deployed(cluster: Cluster) -> None:
    ns = unique_name("wp")
    cluster.apply("-", input=f"""\
apiVersion: v1
kind: Namespace
metadata: {{name: {ns}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: nohbone, namespace: {ns}}}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{{name: http, port: 80, protocol: HTTP}}]
""")
    try:
        gw = cluster.get("gtw", ns, "nohbone")
        programmed = condition(gw, "Programmed")
        assert (programmed["status"], programmed["reason"]) == ("False", "Invalid")
        assert "15008" in programmed["message"]
        assert cluster.get("deployments", ns)["items"] == [] and cluster.get("services", ns)["items"] == []
    finally:
        cluster.z("delete", "namespace", ns, check=False)
