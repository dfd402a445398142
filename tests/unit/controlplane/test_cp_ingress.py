"""The ingress gateway: what is installed (pure objects) and the controller that keeps it installed
(driven by store events, no process): created once, recreated when deleted, never duplicated,
updated when its ports move, removed when turned off, and a user's same-named object left alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from zeromesh.controlplane import ingress
from zeromesh.controlplane import objects as o
from zeromesh.controlplane.controllers import Controllers
from zeromesh.controlplane.store import SqliteStore
from zeromesh.local import naming
from zeromesh.local.plan import ClusterPlan

Obj = dict[str, Any]
NS = "istio-system"
PORTS = {"80": 40002, "443": 40003}


# ---- the objects (pure) ---------------------------------------------------------------------------
def test_objects_have_istios_names_labels_and_ports() -> None:
    objs = ingress.objects(PORTS)
    assert list(objs) == ["serviceaccounts", "services", "deployments.apps"]
    sa, svc, dep = objs["serviceaccounts"], objs["services"], objs["deployments.apps"]
    assert (sa["metadata"]["name"], sa["metadata"]["namespace"]) == (
        "istio-ingressgateway-service-account", NS)
    assert (svc["metadata"]["name"], dep["metadata"]["name"]) == ("istio-ingressgateway",) * 2
    for obj in objs.values():
        assert ingress.owned(obj)
        assert obj["metadata"]["labels"]["istio"] == "ingressgateway"

    assert dep["spec"]["replicas"] == 1
    tmpl = dep["spec"]["template"]
    labels = tmpl["metadata"]["labels"]
    assert labels["istio"] == "ingressgateway" and labels["app"] == "istio-ingressgateway"
    assert labels["istio.io/dataplane-mode"] == "none"
    assert o.map_matches(dep["spec"]["selector"]["matchLabels"], labels)
    assert tmpl["spec"]["serviceAccountName"] == "istio-ingressgateway-service-account"
    (c,) = tmpl["spec"]["containers"]
    assert (c["name"], c["image"]) == ("istio-proxy", "zeromesh/ingressgateway")
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {
        "http2": 8080, "https": 8443, "status-port": 15021, "metrics": 15020}

    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["spec"]["ports"] == [
        {"name": "status-port", "port": 15021, "targetPort": 15021, "protocol": "TCP"},   # not published
        {"name": "http2", "port": 80, "targetPort": 8080, "protocol": "TCP", "nodePort": 40002},
        {"name": "https", "port": 443, "targetPort": 8443, "protocol": "TCP", "nodePort": 40003},
    ]
    assert o.map_matches(svc["spec"]["selector"], labels)
    assert svc["status"] == {"loadBalancer": {"ingress": [{"ip": "127.0.0.1"}]}}


def test_not_installed_means_no_objects_and_ports_are_keyed_by_service_port() -> None:
    assert ingress.objects(None) == {}
    assert ingress.PORT_KEYS == ("80", "443")
    assert ingress.TARGET_PORT == {15021: 15021, 80: 8080, 443: 8443}
    # A port without a recorded loopback port has no nodePort (never a made-up one), nor the status
    # port even if one were recorded: nothing on the host answers it.
    ports = ingress.service({"80": 1234, "15021": 999})["spec"]["ports"]
    assert [p.get("nodePort") for p in ports] == [None, 1234, None]


def test_pod_template_does_not_depend_on_ports() -> None:
    a = ingress.objects(PORTS)["deployments.apps"]["spec"]["template"]
    b = ingress.objects({"80": 1, "443": 2})["deployments.apps"]["spec"]["template"]
    assert naming.template_hash(a) == naming.template_hash(b)


def test_updated_keeps_cluster_ip_others_labels_and_status_conditions() -> None:
    want = ingress.service(PORTS)
    live: Obj = {**want, "metadata": {**want["metadata"], "uid": "u",
                                      "labels": {**want["metadata"]["labels"], "team": "edge"}},
                 "spec": {**want["spec"], "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"]},
                 "status": {"loadBalancer": {"ingress": [{"ip": "127.0.0.1"}]},
                            "conditions": [{"type": "istio.io/WaypointBound", "status": "False"}]}}
    assert ingress.updated("services", live, want) is None
    moved = ingress.service({**PORTS, "80": 45000})
    new = ingress.updated("services", live, moved)
    assert new is not None
    assert new["spec"]["clusterIP"] == "10.96.0.10" and new["metadata"]["labels"]["team"] == "edge"
    assert new["spec"]["ports"][1]["nodePort"] == 45000
    assert new["status"]["conditions"] == live["status"]["conditions"]
    gone = {**live, "status": {}}
    fixed = ingress.updated("services", gone, want)
    assert fixed is not None and fixed["status"]["loadBalancer"] == {"ingress": [{"ip": "127.0.0.1"}]}

    dep = {**ingress.deployment(), "metadata": {**ingress.deployment()["metadata"], "generation": 3}}
    dep["spec"] = {**dep["spec"], "replicas": 4}
    back = ingress.updated("deployments.apps", dep, ingress.deployment())
    assert back is not None and back["spec"]["replicas"] == 1 and back["metadata"]["generation"] == 4


@pytest.mark.parametrize(("selector", "served"), [
    (None, True),                                     # istiod: no selector applies to every gateway
    ({}, True),
    ({"istio": "ingressgateway"}, True),
    ({"app": "istio-ingressgateway", "istio": "ingressgateway"}, True),
    ({"istio": "egressgateway"}, False),
    ({"istio": "ingressgateway", "extra": "x"}, False),
])
def test_istio_gateway_selection(selector: dict[str, str] | None, served: bool) -> None:
    spec: Obj = {"servers": []}
    if selector is not None:
        spec["selector"] = selector
    assert ingress.selects_ingress({"spec": spec}) is served


def test_loopback_address_of_the_first_published_port() -> None:
    svc = ingress.service(PORTS)
    assert ingress.published_ports(svc) == {80: 40002, 443: 40003}     # not the status port
    assert ingress.loopback_address([8080, 443, 80], svc) == "127.0.0.1:40003"
    assert ingress.loopback_address([15021, 9000], svc) == ""
    assert ingress.loopback_address([80], None) == ""
    assert ingress.loopback_address([80], {**svc, "status": {}}) == ""   # no address published yet
    assert ingress.serves_class("istio") and not ingress.serves_class("istio-waypoint")


# ---- the controller -------------------------------------------------------------------------------
class Cluster:
    def __init__(self, tmp: Path, ports: dict[str, int] | None = PORTS) -> None:
        self.store = SqliteStore(str(tmp / "db"))
        self.c = Controllers(self.store, ClusterPlan("t", 2), lambda *a: None, ingress_ports=ports)
        self.store.subscribe(self.c.on_change)
        for i in (1, 2):
            node: Obj = {"metadata": {"name": f"node{i}", "labels": {"name": f"node{i}"}}, "status": {}}
            o.set_condition(node["status"], "Ready", "True")
            self.store.put("nodes", node)
        self.c.drain()

    def get(self, resource: str, name: str = ingress.NAME) -> Obj | None:
        return self.store.get(resource, NS, name)

    def sa(self) -> Obj | None:
        return self.get("serviceaccounts", ingress.SERVICE_ACCOUNT)

    def pods(self) -> list[Obj]:
        return [p for p in self.store.list("pods", NS) if not o.is_terminating(p)]

    def settled(self) -> bool:
        rev = self.store.revision()
        return self.c.drain() == 0 and self.store.revision() == rev


@pytest.fixture
def cl(tmp_path: Path) -> Cluster:
    return Cluster(tmp_path)


def test_installed_at_start_with_namespace_pod_and_load_balancer_status(cl: Cluster) -> None:
    ns = cl.store.get("namespaces", "", NS)
    assert ns is not None and ns["status"]["phase"] == "Active"
    assert "istio.io/dataplane-mode" not in ns["metadata"]["labels"]
    assert cl.sa() is not None
    svc, dep = cl.get("services"), cl.get("deployments.apps")
    assert svc and dep
    # The ClusterIP allocation after creation kept the load balancer status.
    assert svc["spec"]["clusterIP"].startswith("10.96.")
    assert svc["status"]["loadBalancer"] == {"ingress": [{"ip": "127.0.0.1"}]}
    (pod,) = cl.pods()
    assert pod["metadata"]["labels"]["istio"] == "ingressgateway"
    assert pod["metadata"]["labels"]["istio.io/dataplane-mode"] == "none"
    assert pod["spec"]["serviceAccountName"] == ingress.SERVICE_ACCOUNT
    assert cl.settled()


def test_idempotent_and_recreated_when_deleted(cl: Cluster) -> None:
    uids = {r: (cl.get(r) or {})["metadata"]["uid"] for r in ("services", "deployments.apps")}
    cl.c.set_ingress(PORTS)
    cl.c.drain()
    assert {r: (cl.get(r) or {})["metadata"]["uid"] for r in uids} == uids
    assert len(cl.pods()) == 1 and len(cl.store.list("services", NS)) == 1
    for resource in ("services", "deployments.apps"):
        cl.store.delete(resource, NS, ingress.NAME)
        cl.c.drain()
        again = cl.get(resource)
        assert again is not None and again["metadata"]["uid"] != uids[resource]
    cl.store.delete("serviceaccounts", NS, ingress.SERVICE_ACCOUNT)
    cl.c.drain()
    assert cl.sa() is not None
    assert len(cl.pods()) == 1
    assert cl.settled()


def test_edits_are_set_right_and_ports_follow_the_config(cl: Cluster) -> None:
    svc = cl.get("services")
    assert svc is not None
    svc["status"] = {}
    svc["spec"]["type"] = "ClusterIP"
    cl.store.put("services", svc)
    cl.c.drain()
    svc = cl.get("services")
    assert svc and svc["spec"]["type"] == "LoadBalancer" and svc["status"]["loadBalancer"]
    cl.c.set_ingress({**PORTS, "443": 41000})
    cl.c.drain()
    svc = cl.get("services")
    assert svc and [p.get("nodePort") for p in svc["spec"]["ports"]] == [None, 40002, 41000]
    assert len(cl.pods()) == 1                     # a port change does not restart the gateway
    assert cl.settled()


def test_turned_off_removes_only_what_it_made(tmp_path: Path) -> None:
    cl = Cluster(tmp_path)
    cl.c.set_ingress(None)
    cl.c.drain()
    assert cl.get("services") is None and cl.get("deployments.apps") is None and cl.sa() is None
    assert cl.store.get("namespaces", "", NS) is not None
    # A user's own istio-ingressgateway Service is never taken over nor removed.
    mine: Obj = {"apiVersion": "v1", "kind": "Service",
                 "metadata": {"name": ingress.NAME, "namespace": NS, "uid": "u1",
                              "creationTimestamp": o.now()},
                 "spec": {"selector": {"app": "mine"}, "ports": [{"port": 80}]}}
    cl.store.put("services", mine)
    cl.c.set_ingress(PORTS)
    cl.c.drain()
    svc = cl.get("services")
    assert svc and svc["metadata"]["uid"] == "u1" and svc["spec"]["selector"] == {"app": "mine"}
    assert cl.get("deployments.apps") is not None
    cl.c.set_ingress(None)
    cl.c.drain()
    assert cl.get("services") is not None and cl.get("deployments.apps") is None


def test_without_ingress_nothing_is_made(tmp_path: Path) -> None:
    cl = Cluster(tmp_path, ports=None)
    assert cl.store.get("namespaces", "", NS) is None
    assert cl.store.list("services") == [] and cl.store.list("deployments.apps") == []
    assert cl.settled()
