"""The waypoint controller driven by store events (no process, no socket): a waypoint Gateway gets its
Deployment, Service and ServiceAccount, keeps its pod across relabels, loses them on deletion, and its
status settles without the reconcile retriggering itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from zeromesh.controlplane import objects as o
from zeromesh.controlplane.controllers import Controllers
from zeromesh.controlplane.store import SqliteStore
from zeromesh.local.plan import ClusterPlan

GW = "gateways.gateway.networking.k8s.io"
NS = "ns1"
Obj = dict[str, Any]


class Cluster:
    def __init__(self, tmp: Path) -> None:
        self.store = SqliteStore(str(tmp / "db"))
        self.c = Controllers(self.store, ClusterPlan("t", 2), lambda *a: None)
        self.store.subscribe(self.c.on_change)
        for i in (1, 2):
            node: Obj = {"metadata": {"name": f"node{i}", "labels": {"name": f"node{i}"}}, "status": {}}
            o.set_condition(node["status"], "Ready", "True")
            self.store.put("nodes", node)
        self.put("namespaces", {"metadata": {"name": NS}})

    def put(self, resource: str, obj: Obj) -> None:
        obj["metadata"].setdefault("uid", o.new_uid())
        obj["metadata"].setdefault("creationTimestamp", o.now())
        self.store.put(resource, obj)
        self.c.drain()

    def get(self, resource: str, name: str = "wp") -> Obj | None:
        return self.store.get(resource, NS, name)

    def delete(self, resource: str, name: str = "wp") -> None:
        self.store.delete(resource, NS, name)
        self.c.drain()

    def pods(self) -> list[Obj]:
        return [p for p in self.store.list("pods", NS) if not o.is_terminating(p)]

    def programmed(self) -> Obj:
        gw = self.get(GW)
        assert gw is not None
        cond = o.condition(gw, "Programmed")
        assert cond is not None
        return cond

    def settled(self) -> bool:
        rev = self.store.revision()
        return self.c.drain() == 0 and self.store.revision() == rev


def gateway(name: str = "wp", labels: dict[str, str] | None = None, hbone: bool = True,
            cls: str = "istio-waypoint") -> Obj:
    listeners = [{"name": "mesh", "port": 15008, "protocol": "HBONE"}] if hbone else \
        [{"name": "http", "port": 80, "protocol": "HTTP"}]
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": name, "namespace": NS, "labels": labels or {}},
            "spec": {"gatewayClassName": cls, "listeners": listeners}}


@pytest.fixture
def cl(tmp_path: Path) -> Cluster:
    return Cluster(tmp_path)


def test_waypoint_gateway_is_deployed_and_reports_not_programmed(cl: Cluster) -> None:
    cl.put(GW, gateway())
    gw, sa, dep, svc = cl.get(GW), cl.get("serviceaccounts"), cl.get("deployments.apps"), cl.get("services")
    assert gw and sa and dep and svc
    for obj in (sa, dep, svc):
        (ref,) = obj["metadata"]["ownerReferences"]
        assert ref["uid"] == gw["metadata"]["uid"] and ref["kind"] == "Gateway" and ref["controller"]
    (pod,) = cl.pods()
    labels = pod["metadata"]["labels"]
    assert labels["istio.io/gateway-name"] == labels["gateway.networking.k8s.io/gateway-name"] == "wp"
    assert labels["istio.io/dataplane-mode"] == "none"
    assert pod["spec"]["serviceAccountName"] == "wp" and pod["spec"]["nodeName"]
    assert gw["status"]["addresses"] == [{"type": "IPAddress", "value": svc["spec"]["clusterIP"]}]
    cond = cl.programmed()
    assert (cond["status"], cond["reason"]) == ("False", "NoResources")
    assert "not ready" in cond["message"]
    assert cl.settled()


def test_ready_pod_programs_the_gateway_and_status_writes_settle(cl: Cluster) -> None:
    cl.put(GW, gateway())
    (pod,) = cl.pods()
    o.set_condition(pod["status"], "Ready", "True")
    pod["status"]["phase"] = "Running"
    cl.put("pods", pod)
    cond = cl.programmed()
    assert (cond["status"], cond["reason"]) == ("True", "Programmed")
    assert "wp.ns1.svc.cluster.local:15008" in cond["message"]
    assert cl.settled()


def test_relabel_keeps_the_pod_and_others_conditions(cl: Cluster) -> None:
    cl.put(GW, gateway())
    (before,) = cl.pods()
    gw = cl.get(GW)
    assert gw is not None
    o.set_condition(gw["status"], "Accepted", "True", "Accepted")     # as the mesh writes it
    gw["metadata"]["labels"] = {"istio.io/waypoint-for": "all"}
    cl.put(GW, gw)
    (after,) = cl.pods()
    assert after["metadata"]["name"] == before["metadata"]["name"]
    gw = cl.get(GW)
    assert gw is not None
    assert {c["type"] for c in gw["status"]["conditions"]} == {"Accepted", "Programmed"}
    assert cl.settled()


def test_deleting_the_gateway_removes_what_it_made(cl: Cluster) -> None:
    cl.put(GW, gateway())
    (pod,) = cl.pods()
    cl.delete(GW)
    assert cl.get("deployments.apps") is None and cl.get("services") is None
    assert cl.get("serviceaccounts") is None and cl.get("endpoints") is None
    left = cl.store.get("pods", NS, pod["metadata"]["name"])
    assert left is None or o.is_terminating(left)      # its node's runner finalizes it
    assert cl.get("serviceaccounts", "default") is not None
    assert cl.settled()


def test_a_users_service_account_is_used_and_kept(cl: Cluster) -> None:
    cl.put("serviceaccounts", {"apiVersion": "v1", "kind": "ServiceAccount",
                               "metadata": {"name": "wp", "namespace": NS, "labels": {"mine": "yes"}}})
    cl.put(GW, gateway())
    sa = cl.get("serviceaccounts")
    assert sa is not None and "ownerReferences" not in sa["metadata"]
    assert cl.get("deployments.apps") is not None and cl.programmed()["reason"] == "NoResources"
    cl.delete(GW)
    assert cl.get("serviceaccounts") is not None and cl.get("deployments.apps") is None


def test_a_foreign_deployment_is_left_alone_and_reported(cl: Cluster) -> None:
    foreign = {"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "wp", "namespace": NS},
               "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "x"}},
                        "template": {"metadata": {"labels": {"app": "x"}},
                                     "spec": {"containers": [{"name": "c", "image": "x"}]}}}}
    cl.put("deployments.apps", foreign)
    cl.put(GW, gateway())
    dep = cl.get("deployments.apps")
    assert dep is not None and dep["spec"]["selector"] == {"matchLabels": {"app": "x"}}
    cond = cl.programmed()
    assert (cond["status"], cond["reason"]) == ("False", "Invalid")
    assert "Deployment ns1/wp already exists" in cond["message"]
    cl.delete("deployments.apps")                              # out of the way: ours comes
    dep = cl.get("deployments.apps")
    assert dep is not None and dep["spec"]["selector"]["matchLabels"] == {
        "gateway.networking.k8s.io/gateway-name": "wp"}
    assert cl.programmed()["reason"] == "NoResources"


def test_invalid_waypoint_gets_nothing_and_loses_what_it_had(cl: Cluster) -> None:
    cl.put(GW, gateway(hbone=False))
    assert cl.get("deployments.apps") is None and cl.get("services") is None
    cond = cl.programmed()
    assert (cond["status"], cond["reason"]) == ("False", "Invalid") and "15008" in cond["message"]
    gw = cl.get(GW)
    assert gw is not None
    gw["spec"]["listeners"] = gateway()["spec"]["listeners"]
    cl.put(GW, gw)
    assert cl.get("deployments.apps") is not None and len(cl.pods()) == 1
    gw = cl.get(GW)
    assert gw is not None
    gw["spec"]["listeners"] = gateway(hbone=False)["spec"]["listeners"]
    cl.put(GW, gw)
    assert cl.get("deployments.apps") is None and cl.get("services") is None
    assert cl.get("serviceaccounts") is None and cl.pods() == []
    gw = cl.get(GW)
    assert gw is not None and "addresses" not in gw["status"]
    assert cl.programmed()["reason"] == "Invalid"
    assert cl.settled()


def test_other_gateway_classes_are_not_ours(cl: Cluster) -> None:
    ingress_dep = {"apiVersion": "apps/v1", "kind": "Deployment",
                   "metadata": {"name": "gw", "namespace": NS,
                                "labels": {"gateway.networking.k8s.io/gateway-name": "gw"},
                                "ownerReferences": [{"apiVersion": "gateway.networking.k8s.io/v1",
                                                     "kind": "Gateway", "name": "gw", "uid": "u",
                                                     "controller": True}]},
                   "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "gw"}},
                            "template": {"metadata": {"labels": {"app": "gw"}},
                                         "spec": {"containers": [{"name": "c", "image": "x"}]}}}}
    cl.put("deployments.apps", ingress_dep)
    cl.put(GW, gateway("gw", cls="istio"))
    assert cl.get("deployments.apps", "gw") is not None        # the ingress controller's, untouched
    assert cl.get("services", "gw") is None
    gw = cl.get(GW, "gw")
    assert gw is not None and "status" not in gw


def test_class_change_removes_the_waypoint(cl: Cluster) -> None:
    cl.put(GW, gateway())
    gw = cl.get(GW)
    assert gw is not None
    gw["spec"]["gatewayClassName"] = "istio"
    cl.put(GW, gw)
    assert cl.get("deployments.apps") is None and cl.get("services") is None


def test_deleted_objects_come_back(cl: Cluster) -> None:
    cl.put(GW, gateway())
    cl.delete("services")
    cl.delete("deployments.apps")
    assert cl.get("services") is not None and cl.get("deployments.apps") is not None
    assert len(cl.pods()) == 1


def test_namespace_deletion_cleans_up(cl: Cluster) -> None:
    cl.put(GW, gateway())
    nsobj = cl.store.get("namespaces", "", NS)
    assert nsobj is not None
    nsobj["metadata"]["deletionTimestamp"] = o.now()
    cl.put("namespaces", nsobj)
    for resource in (GW, "deployments.apps", "services"):
        assert cl.get(resource) is None, resource
    assert cl.pods() == []


def test_waypoints_stored_before_a_restart_are_deployed(tmp_path: Path) -> None:
    cl = Cluster(tmp_path)
    cl.store.put(GW, {**gateway(), "metadata": {**gateway()["metadata"], "uid": "u1"}})   # no drain
    assert cl.get("deployments.apps") is None
    again = Controllers(cl.store, ClusterPlan("t", 2), lambda *a: None)
    again.drain()
    assert cl.get("deployments.apps") is not None and cl.get("services") is not None
