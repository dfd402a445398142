"""Installing the ingress gateway on a real cluster: `up` runs it in istio-system with Istio's names
and labels and publishes it on host-loopback ports (printed by `up`, shown by `get svc` and
`get gateway`); `up --no-ingress` leaves it out and `install --ingress` adds it, for good.
Whether the gateway pod becomes Ready is the gateway's business, not judged here."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

from e2ekit import Cluster, unique_name

from zeromesh.local.state import Paths, load_config

NS = "istio-system"


def wait_for(what: str, check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def gateway_pods(c: Cluster) -> list[dict[str, Any]]:
    return [p for p in c.pods(NS) if p["metadata"]["labels"].get("istio") == "ingressgateway"]


def installed(c: Cluster) -> dict[str, int]:
    """Check everything the ingress gateway consists of; returns its loopback ports."""
    cfg = load_config(Paths(c.name))
    assert cfg is not None and cfg.ingress
    ports = cfg.ingress_ports
    assert set(ports) == {"80", "443"} and len(set(ports.values())) == 2
    sa = c.get("serviceaccounts", NS, "istio-ingressgateway-service-account")
    assert sa["metadata"]["labels"]["istio"] == "ingressgateway"
    dep = c.get("deployments", NS, "istio-ingressgateway")
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "zeromesh/ingressgateway"
    svc = c.get("services", NS, "istio-ingressgateway")
    assert svc["spec"]["type"] == "LoadBalancer"
    assert {p["port"]: (p["targetPort"], p.get("nodePort")) for p in svc["spec"]["ports"]} == {
        15021: (15021, None), 80: (8080, ports["80"]), 443: (8443, ports["443"])}
    assert svc["status"]["loadBalancer"]["ingress"] == [{"ip": "127.0.0.1"}]
    wait_for("the gateway pod", lambda: len(gateway_pods(c)) == 1)
    (pod,) = gateway_pods(c)
    labels = pod["metadata"]["labels"]
    assert labels["app"] == "istio-ingressgateway" and labels["istio.io/dataplane-mode"] == "none"
    assert pod["spec"]["serviceAccountName"] == "istio-ingressgateway-service-account"

    out = c.z("get", "svc", "-n", NS).stdout
    header, row = out.splitlines()[:2]
    assert header.split()[:5] == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)"]
    cells = row.split()
    assert cells[:2] == ["istio-ingressgateway", "LoadBalancer"] and cells[3] == "127.0.0.1"
    assert cells[4] == f"15021/TCP,80:{ports['80']}/TCP,443:{ports['443']}/TCP"
    return ports


def test_up_installs_and_publishes_the_ingress_gateway(new_cluster: Cluster) -> None:
    out = new_cluster.z("up", "--nodes", "1").stdout
    ports = installed(new_cluster)
    assert (f"ingress gateway: http://127.0.0.1:{ports['80']} (80), "
            f"https://127.0.0.1:{ports['443']} (443)") in out

    ns = unique_name("gw")
    manifest = f"""\
apiVersion: v1
kind: Namespace
metadata: {{name: {ns}}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: web, namespace: {ns}}}
spec:
  selector: {{istio: ingressgateway}}
  servers: [{{port: {{number: 80, name: http, protocol: HTTP}}, hosts: ["*"]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: api, namespace: {ns}}}
spec:
  gatewayClassName: istio
  listeners: [{{name: https, port: 443, protocol: HTTPS, hostname: api.example.com,
               tls: {{certificateRefs: [{{name: api-cert}}]}}}}]
"""
    new_cluster.apply("-", input=manifest)
    try:
        for kind in ("gateway", "gateways", "gw"):
            lines = new_cluster.z("get", kind, "-A").stdout.splitlines()
            assert lines[0].split() == ["NAMESPACE", "NAME", "CLASS", "ADDRESS", "PROGRAMMED", "AGE"]
            rows = {tuple(line.split()[:4]) for line in lines[1:] if line.startswith(ns)}
            assert rows == {(ns, "web", "networking.istio.io", f"127.0.0.1:{ports['80']}"),
                            (ns, "api", "istio", f"127.0.0.1:{ports['443']}")}, lines
        specific = new_cluster.z("get", "gateways.networking.istio.io", "-n", ns).stdout.splitlines()
        assert specific[0].split() == ["NAME", "AGE"]
        both = json.loads(new_cluster.z("get", "gateway", "web", "-n", ns, "-o", "json").stdout)
        assert both["kind"] == "Gateway" and both["apiVersion"].startswith("networking.istio.io/")

        # Deleted objects come back; a restart keeps the ports.
        new_cluster.z("delete", "svc", "istio-ingressgateway", "-n", NS)
        wait_for("the Service to return",
                 lambda: new_cluster.z("get", "svc", "istio-ingressgateway", "-n", NS,
                                       check=False).returncode == 0)
        assert new_cluster.down("--keep-state").returncode == 0
        new_cluster.z("up")
        assert installed(new_cluster) == ports
    finally:
        new_cluster.z("delete", "namespace", ns, check=False)


def test_no_ingress_then_install(new_cluster: Cluster) -> None:
    out = new_cluster.z("up", "--nodes", "1", "--no-ingress").stdout
    assert "ingress gateway" not in out
    cfg = load_config(Paths(new_cluster.name))
    assert cfg is not None and not cfg.ingress and cfg.ingress_ports == {}
    for kind in ("serviceaccounts", "deployments", "services"):
        assert [i["metadata"]["name"] for i in new_cluster.get(kind, NS)["items"]
                if i["metadata"]["name"] != "default"] == []
    assert gateway_pods(new_cluster) == []

    out = new_cluster.z("install", "--ingress").stdout
    assert "ingress gateway installed" in out
    ports = installed(new_cluster)
    assert re.search(rf"http://127\.0\.0\.1:{ports['80']} \(80\)", out)
    again = new_cluster.z("install", "--ingress").stdout
    assert "already installed" in again and installed(new_cluster) == ports
    assert len(new_cluster.get("deployments", NS)["items"]) == 1

    # Recorded: a restart keeps it (same ports), `up --no-ingress` takes it away.
    assert new_cluster.down("--keep-state").returncode == 0
    new_cluster.z("up")
    assert installed(new_cluster) == ports
    new_cluster.z("up", "--no-ingress")
    wait_for("the gateway objects to go",
             lambda: new_cluster.get("deployments", NS)["items"] == []
             and new_cluster.get("services", NS)["items"] == [])
    assert load_config(Paths(new_cluster.name)).ingress is False  # type: ignore[union-attr]
    r = new_cluster.z("install", check=False)
    assert r.returncode == 2 and "--ingress" in r.stderr
