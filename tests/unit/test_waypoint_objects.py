"""What a waypoint Gateway deploys (pure): objects, ownership, labels, a stable pod template, status."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from zeromesh.api import LoadedDoc, Source, validate_all
from zeromesh.controlplane import objects as o
from zeromesh.controlplane import waypoints as wp
from zeromesh.local import naming

Obj = dict[str, Any]
HBONE = {"name": "mesh", "port": 15008, "protocol": "HBONE"}


def gateway(name: str = "wp", ns: str = "ns1", labels: dict[str, str] | None = None,
            listeners: list[Obj] | None = None, cls: str = "istio-waypoint") -> Obj:
    md: Obj = {"name": name, "namespace": ns, "uid": "uid-1"}
    if labels:
        md["labels"] = labels
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "metadata": md,
            "spec": {"gatewayClassName": cls, "listeners": [HBONE] if listeners is None else listeners}}


def test_valid_gateway_gets_service_account_deployment_and_service() -> None:
    plan = wp.plan_for(gateway())
    assert plan.problem == ""
    assert list(plan.objects) == ["services", "deployments.apps", "serviceaccounts"]
    for resource, obj in plan.objects.items():
        md = obj["metadata"]
        assert (md["name"], md["namespace"]) == ("wp", "ns1"), resource
        assert md["ownerReferences"] == [{"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                                          "name": "wp", "uid": "uid-1", "controller": True}]
        assert md["labels"]["gateway.networking.k8s.io/gateway-name"] == "wp"
        assert md["labels"]["gateway.networking.k8s.io/gateway-class-name"] == "istio-waypoint"
        assert wp.owned_by(obj, "wp") and not wp.owned_by(obj, "other")


def test_deployment_shape() -> None:
    dep = wp.deployment(gateway())
    assert dep["apiVersion"] == "apps/v1" and dep["kind"] == "Deployment"
    assert dep["metadata"]["labels"]["gateway.istio.io/managed"] == "istio.io-mesh-controller"
    spec = dep["spec"]
    assert spec["replicas"] == 1
    assert spec["selector"] == {"matchLabels": {"gateway.networking.k8s.io/gateway-name": "wp"}}
    labels = spec["template"]["metadata"]["labels"]
    assert labels["istio.io/gateway-name"] == "wp"
    assert labels["gateway.networking.k8s.io/gateway-name"] == "wp"
    assert labels["istio.io/dataplane-mode"] == "none"
    assert labels["gateway.istio.io/managed"] == "istio.io-mesh-controller"
    assert o.selector_matches(spec["selector"], labels)
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "wp"
    (c,) = pod["containers"]
    assert (c["name"], c["image"]) == ("istio-proxy", "zeromesh/waypoint")
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {
        "mesh": 15008, "status-port": 15021, "metrics": 15020}


def test_service_shape() -> None:
    svc = wp.service(gateway())
    assert svc["metadata"]["labels"]["gateway.istio.io/managed"] == "istio.io-mesh-controller"
    spec = svc["spec"]
    assert spec["type"] == "ClusterIP"
    assert spec["selector"] == {"gateway.networking.k8s.io/gateway-name": "wp"}
    assert {p["name"]: p["port"] for p in spec["ports"]} == {"mesh": 15008, "status-port": 15021}
    assert o.map_matches(spec["selector"], wp.pod_labels("wp"))


def test_generated_objects_are_valid_manifests() -> None:
    docs = [LoadedDoc(Source("gen", i + 1), copy.deepcopy(obj))
            for i, obj in enumerate(wp.plan_for(gateway()).objects.values())]
    kinds = sorted(v.info.kind for v in validate_all(docs))
    assert kinds == ["Deployment", "Service", "ServiceAccount"]


@pytest.mark.parametrize("labels", [{"istio.io/waypoint-for": "workload"},
                                    {"istio.io/waypoint-for": "all", "team": "a"}])
def test_relabelling_keeps_the_pod_template(labels: dict[str, str]) -> None:
    before = wp.deployment(gateway())
    after = wp.deployment(gateway(labels=labels))
    assert after == before
    assert naming.template_hash(after["spec"]["template"]) == naming.template_hash(before["spec"]["template"])
    assert wp.updated("deployments.apps", before, after) is None


@pytest.mark.parametrize(("gw", "needle"), [
    (gateway(listeners=[]), "15008"),
    (gateway(listeners=[{"name": "http", "port": 80, "protocol": "HTTP"}]), "HBONE"),
    (gateway(labels={"istio.io/waypoint-for": "bogus"}), "waypoint-for"),
    (gateway(name="a.b"), "DNS-1035"),
    (gateway(cls="istio"), "gatewayClassName"),
])
def test_invalid_or_foreign_gateways_get_nothing(gw: Obj, needle: str) -> None:
    plan = wp.plan_for(gw)
    assert plan.objects == {}
    assert needle in plan.problem


def test_ownership_needs_the_waypoint_class_label() -> None:
    dep = wp.deployment(gateway())
    ingress = copy.deepcopy(dep)
    ingress["metadata"]["labels"]["gateway.networking.k8s.io/gateway-class-name"] = "istio"
    assert wp.gateway_owner(dep) == "wp" and wp.gateway_owner(ingress) == ""
    pod = {"kind": "Pod", "metadata": {"name": "wp-1", "labels": wp.pod_labels("wp")}}
    assert wp.gateway_owner(pod) == "wp"
    assert wp.gateway_owner({"kind": "Pod", "metadata": {"labels": {"app": "x"}}}) == ""


def test_updated_keeps_others_labels_and_the_cluster_ip() -> None:
    want = wp.service(gateway())
    live = copy.deepcopy(want)
    live["metadata"]["labels"]["team"] = "a"
    live["spec"]["clusterIP"] = "10.96.0.12"
    live["spec"]["clusterIPs"] = ["10.96.0.12"]
    assert wp.updated("services", live, want) is None
    live["metadata"]["ownerReferences"][0]["uid"] = "old-uid"      # a re-created Gateway adopts
    new = wp.updated("services", live, want)
    assert new is not None and new["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert new["metadata"]["labels"]["team"] == "a" and new["spec"]["clusterIP"] == "10.96.0.12"


def test_updated_bumps_the_deployment_generation_on_spec_change() -> None:
    want = wp.deployment(gateway())
    live = copy.deepcopy(want)
    live["metadata"]["generation"] = 3
    live["spec"]["replicas"] = 4
    new = wp.updated("deployments.apps", live, want)
    assert new is not None and new["spec"]["replicas"] == 1 and new["metadata"]["generation"] == 4


SVC_WITH_IP: Obj = {"spec": {"clusterIP": "10.96.0.12"}}


@pytest.mark.parametrize(("plan", "svc", "dep", "pods", "conflict", "expect"), [
    (wp.Plan({}, "no HBONE"), None, None, [], "", ("False", "Invalid", "no HBONE")),
    (wp.Plan({}), SVC_WITH_IP, None, [], "Deployment ns1/wp already exists",
     ("False", "Invalid", "already exists")),
    (wp.Plan({}), {"spec": {}}, None, [], "", ("False", "AddressNotAssigned", "ClusterIP")),
    (wp.Plan({}), SVC_WITH_IP, {"spec": {"replicas": 1}, "status": {"readyReplicas": 0}},
     [{"metadata": {"name": "wp-abc"},
       "status": {"phase": "Pending",
                  "containerStatuses": [{"state": {"waiting": {"reason": "ImageNotInTable"}}}]}}],
     "", ("False", "NoResources", "pod wp-abc: ImageNotInTable")),
    (wp.Plan({}), SVC_WITH_IP, {"spec": {"replicas": 1}, "status": {"readyReplicas": 1}}, [], "",
     ("True", "Programmed", "wp.ns1.svc.cluster.local:15008")),
])
def test_programmed_condition(plan: wp.Plan, svc: Obj | None, dep: Obj | None, pods: list[Obj],
                              conflict: str, expect: tuple[str, str, str]) -> None:
    status, reason, message = wp.programmed(gateway(), plan, svc, dep, pods, conflict)
    assert (status, reason) == expect[:2]
    assert expect[2] in message


def test_not_ready_message_says_so() -> None:
    _, _, message = wp.programmed(gateway(), wp.Plan({}), SVC_WITH_IP, None, [])
    assert message == "the waypoint pod is not ready yet (Deployment ns1/wp: 0/1 ready)"


def test_set_status_touches_only_its_own_fields() -> None:
    status: Obj = {}
    o.set_condition(status, "Accepted", "True", "Accepted")
    cond = ("False", "NoResources", "not ready")
    addrs = wp.addresses(SVC_WITH_IP)
    assert addrs == [{"type": "IPAddress", "value": "10.96.0.12"}]
    assert wp.set_status(status, addrs, cond)
    assert not wp.set_status(status, addrs, cond)            # unchanged: no write, no loop
    assert [c["type"] for c in status["conditions"]] == ["Accepted", "Programmed"]
    assert wp.set_status(status, [], ("False", "Invalid", "gone"))
    assert "addresses" not in status and o.condition({"status": status}, "Accepted") is not None
