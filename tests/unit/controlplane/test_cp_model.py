"""The mesh model: enrollment, waypoint binding, services and endpoints, incremental updates."""

from __future__ import annotations

from typing import Any

import pytest

from zeromesh.controlplane.model import (
    GATEWAYS,
    MeshModel,
    Waypoint,
    WaypointRef,
    to_wire,
    waypoint_of,
)


def ns(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}}


def pod(name: str, namespace: str = "ns1", ip: str = "10.244.1.2", sa: str = "default",
        labels: dict[str, str] | None = None, node: str = "node1", ready: bool = True,
        owner: str = "") -> dict[str, Any]:
    md: dict[str, Any] = {"name": name, "namespace": namespace, "uid": f"uid-{namespace}-{name}",
                          "labels": labels or {}}
    if owner:
        md["ownerReferences"] = [{"kind": "Deployment", "name": owner, "controller": True}]
    return {"metadata": md, "spec": {"serviceAccountName": sa, "nodeName": node},
            "status": {"podIP": ip, "phase": "Running",
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def svc(name: str, namespace: str = "ns1", selector: dict[str, str] | None = None,
        vip: str = "10.96.0.10", labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
            "spec": {"clusterIP": vip, "selector": selector or {"app": name},
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}}


def endpoints(name: str, namespace: str, *pods: tuple[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace},
            "subsets": [{"addresses": [{"ip": ip, "targetRef": {"kind": "Pod", "name": p,
                                                                 "namespace": namespace}}
                                       for p, ip in pods],
                         "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}]}


def waypoint(name: str, namespace: str = "ns1", serves: str | None = None,
             for_sa: str | None = None, listener: bool = True) -> dict[str, Any]:
    md: dict[str, Any] = {"name": name, "namespace": namespace, "labels": {}, "annotations": {}}
    if serves:
        md["labels"]["istio.io/waypoint-for"] = serves
    if for_sa:
        md["annotations"]["istio.io/for-service-account"] = for_sa
    listeners = [{"name": "mesh", "port": 15008, "protocol": "HBONE"}] if listener else \
        [{"name": "http", "port": 80, "protocol": "HTTP"}]
    return {"metadata": md, "spec": {"gatewayClassName": "istio-waypoint", "listeners": listeners}}


def model(*objs: tuple[str, dict[str, Any]]) -> MeshModel:
    m = MeshModel()
    m.load(objs)
    return m


def wl(m: MeshModel, name: str, namespace: str = "ns1"):  # type: ignore[no-untyped-def]
    return m.workloads[f"uid-{namespace}-{name}"]


# ---- enrollment ------------------------------------------------------------------
@pytest.mark.parametrize("ns_label,pod_label,expected", [
    (None, None, "TCP"),
    ("ambient", None, "HBONE"),
    ("ambient", "none", "TCP"),
    (None, "ambient", "HBONE"),
    ("none", "ambient", "HBONE"),
    ("sidecar", None, "TCP"),
])
def test_enrollment(ns_label: str | None, pod_label: str | None, expected: str) -> None:
    nsl = {"istio.io/dataplane-mode": ns_label} if ns_label else {}
    pl = {"istio.io/dataplane-mode": pod_label} if pod_label else {}
    m = model(("namespaces", ns("ns1", **nsl)), ("pods", pod("a", labels=pl)))
    assert wl(m, "a").protocol == expected


def test_namespace_label_change_reenrolls_its_pods_only() -> None:
    m = model(("namespaces", ns("ns1")), ("namespaces", ns("ns2")),
              ("pods", pod("a")), ("pods", pod("b", namespace="ns2", ip="10.244.1.3")))
    changes = m.update("namespaces", ns("ns1", **{"istio.io/dataplane-mode": "ambient"}))
    assert set(changes.records["workload"]) == {"uid-ns1-a"}
    assert wl(m, "a").protocol == "HBONE" and wl(m, "b", "ns2").protocol == "TCP"


def test_workload_fields() -> None:
    m = model(("namespaces", ns("ns1")),
              ("services", svc("echo")),
              ("pods", pod("echo-abc-x", sa="echo", owner="echo",
                           labels={"app": "echo", "version": "v2"})))
    w = wl(m, "echo-abc-x")
    assert (w.workload_name, w.canonical_name, w.canonical_revision) == ("echo", "echo", "v2")
    assert w.service_account == "echo" and w.node == "node1" and w.ip == "10.244.1.2"
    assert w.services == ("ns1/echo",) and w.ready


def test_pods_without_address_or_finished_are_not_workloads() -> None:
    p = pod("a")
    p["status"].pop("podIP")
    done = pod("b", ip="10.244.1.3")
    done["status"]["phase"] = "Succeeded"
    m = model(("namespaces", ns("ns1")), ("pods", p), ("pods", done))
    assert m.workloads == {}


# ---- incremental -------------------------------------------------------------------
def test_one_pod_change_recomputes_one_workload() -> None:
    objs: list[tuple[str, dict[str, Any]]] = [("namespaces", ns("ns1"))]
    objs += [("pods", pod(f"p{i}", ip=f"10.244.1.{i + 2}")) for i in range(50)]
    m = model(*objs)
    changed = pod("p7", ip="10.244.1.9", ready=False)
    changes = m.update("pods", changed)
    assert list(changes.records) == ["workload"]
    assert list(changes.records["workload"]) == ["uid-ns1-p7"]
    assert m.update("pods", changed).records == {}          # no change, nothing emitted
    gone = m.update("pods", changed, deleted=True)
    assert gone.records["workload"] == {"uid-ns1-p7": None}


def test_service_membership_follows_selector_changes() -> None:
    m = model(("namespaces", ns("ns1")), ("pods", pod("a", labels={"app": "x"})),
              ("pods", pod("b", ip="10.244.1.3", labels={"app": "y"})),
              ("services", svc("s", selector={"app": "x"})))
    assert wl(m, "a").services == ("ns1/s",) and wl(m, "b").services == ()
    changes = m.update("services", svc("s", selector={"app": "y"}))
    assert set(changes.records["workload"]) == {"uid-ns1-a", "uid-ns1-b"}
    assert wl(m, "a").services == () and wl(m, "b").services == ("ns1/s",)


# ---- services and endpoints ---------------------------------------------------------------
def test_service_record_and_endpoints() -> None:
    m = model(("namespaces", ns("ns1")), ("pods", pod("echo-1", labels={"app": "echo"})),
              ("services", svc("echo")), ("endpoints", endpoints("echo", "ns1", ("echo-1", "10.244.1.2"))))
    s = m.services["ns1/echo"]
    assert s.hostname == "echo.ns1.svc.cluster.local" and s.vip == "10.96.0.10"
    assert s.ports[0].port == 80 and s.ports[0].target_port == 8080
    assert len(s.endpoints) == 1
    ep = s.endpoints[0]
    assert (ep.workload_uid, ep.ip, dict(ep.ports), ep.ready) == \
        ("uid-ns1-echo-1", "10.244.1.2", {80: 8080}, True)
    wire = to_wire(s)
    assert wire["endpoints"][0]["ports"] == {"80": 8080}
    removed = m.update("services", svc("echo"), deleted=True)
    assert removed.records["service"] == {"ns1/echo": None}


def test_headless_service_has_no_vip() -> None:
    m = model(("namespaces", ns("ns1")), ("services", svc("h", vip="None")))
    assert m.services["ns1/h"].vip == ""


# ---- waypoints ----------------------------------------------------------------------
def bound(m: MeshModel) -> tuple[WaypointRef | None, WaypointRef | None]:
    return m.services["ns1/echo"].waypoint, wl(m, "echo-1").waypoint


W = WaypointRef("ns1", "wp")


@pytest.mark.parametrize("serves,ns_label,svc_label,pod_label,expect_svc,expect_pod", [
    # namespace binding: the waypoint serves what it is for
    ("service", "wp", None, None, W, None),
    ("workload", "wp", None, None, None, W),
    ("all", "wp", None, None, W, W),
    # object labels override the namespace's, "none" opts out
    ("all", "wp", "none", None, None, W),
    ("all", "wp", None, "none", W, None),
    ("all", None, "wp", None, W, None),
    ("all", None, None, "wp", None, W),
    # an object bound to an incompatible waypoint is not bound
    ("service", None, None, "wp", None, None),
    ("workload", None, "wp", None, None, None),
    # a missing waypoint binds nothing
    ("all", "other", None, None, None, None),
    # none serves nothing
    ("none", "wp", "wp", "wp", None, None),
])
def test_waypoint_binding(serves: str, ns_label: str | None, svc_label: str | None,
                          pod_label: str | None, expect_svc: WaypointRef | None,
                          expect_pod: WaypointRef | None) -> None:
    lab = "istio.io/use-waypoint"
    nsl = {"istio.io/dataplane-mode": "ambient", **({lab: ns_label} if ns_label else {})}
    m = model(("namespaces", ns("ns1", **nsl)),
              (GATEWAYS, waypoint("wp", serves=serves)),
              ("services", svc("echo", labels={lab: svc_label} if svc_label else {})),
              ("pods", pod("echo-1", labels={"app": "echo", **({lab: pod_label} if pod_label else {})})))
    assert bound(m) == (expect_svc, expect_pod)


def test_problems_are_reported_for_the_object_that_asked() -> None:
    lab = "istio.io/use-waypoint"
    m = model(("namespaces", ns("ns1", **{"istio.io/dataplane-mode": "ambient"})),
              (GATEWAYS, waypoint("svc-only", serves="service")),
              ("services", svc("echo", labels={lab: "missing"})),
              ("pods", pod("echo-1", labels={"app": "echo", lab: "svc-only"})))
    probs = {(p.resource, p.name): p for p in m.problems.values()}
    assert probs[("services", "echo")].reason == "WaypointNotFound"
    assert "ns1/missing" in probs[("services", "echo")].message
    assert probs[("pods", "echo-1")].reason == "WaypointIncompatible"
    # Fixing the label clears the problem and binds.
    ch = m.update("services", svc("echo", labels={lab: "svc-only"}))
    assert ch.records["problem"] == {"services/ns1/echo": None}
    assert m.services["ns1/echo"].waypoint == WaypointRef("ns1", "svc-only")


def test_creating_the_waypoint_later_binds_what_waited_for_it() -> None:
    lab = "istio.io/use-waypoint"
    m = model(("namespaces", ns("ns1", **{"istio.io/dataplane-mode": "ambient", lab: "wp"})),
              ("services", svc("echo")), ("pods", pod("echo-1", labels={"app": "echo"})))
    assert bound(m) == (None, None)
    ch = m.update(GATEWAYS, waypoint("wp", serves="all"))
    assert ch.records["waypoint"]["ns1/wp"] == Waypoint("ns1", "wp", "all")
    assert bound(m) == (W, W)
    m.update(GATEWAYS, waypoint("wp", serves="all"), deleted=True)
    assert bound(m) == (None, None)


def test_cross_namespace_waypoint() -> None:
    lab = "istio.io/use-waypoint"
    m = model(("namespaces", ns("ns1", **{"istio.io/dataplane-mode": "ambient"})),
              ("namespaces", ns("infra")),
              (GATEWAYS, waypoint("shared", namespace="infra", serves="service")),
              ("services", svc("echo", labels={lab: "shared", "istio.io/use-waypoint-namespace": "infra"})))
    assert m.services["ns1/echo"].waypoint == WaypointRef("infra", "shared")


def test_older_annotation_binds_the_service_account_by_itself() -> None:
    """The seed demo's generation: no use-waypoint label anywhere."""
    m = model(("namespaces", ns("ns2", **{"istio.io/dataplane-mode": "ambient"})),
              (GATEWAYS, waypoint("echo-gw", namespace="ns2", for_sa="echo-sa")),
              ("pods", pod("echo-v1", namespace="ns2", sa="echo-sa")),
              ("pods", pod("sleep", namespace="ns2", ip="10.244.1.9", sa="sleep-sa")))
    w = wl(m, "echo-v1", "ns2")
    assert w.waypoint == WaypointRef("ns2", "echo-gw") and w.waypoint_by_service_account
    assert wl(m, "sleep", "ns2").waypoint is None


def test_waypoint_pods_are_never_bound() -> None:
    m = model(("namespaces", ns("ns1", **{"istio.io/dataplane-mode": "ambient",
                                          "istio.io/use-waypoint": "wp"})),
              (GATEWAYS, waypoint("wp", serves="all")),
              ("pods", pod("wp-xyz", labels={"gateway.networking.k8s.io/gateway-name": "wp"})))
    assert wl(m, "wp-xyz").waypoint is None


@pytest.mark.parametrize("gw,problem", [
    (waypoint("w", listener=False), "listener on port 15008 with protocol HBONE"),
    (waypoint("w", serves="everything"), "istio.io/waypoint-for='everything'"),
])
def test_invalid_waypoints(gw: dict[str, Any], problem: str) -> None:
    wp = waypoint_of(gw)
    assert not wp.ok and problem in "; ".join(wp.problems)
    m = model(("namespaces", ns("ns1")), (GATEWAYS, gw))
    assert m.problems[(GATEWAYS, "ns1", "w")].reason == "InvalidListeners"


def test_config_passes_through_and_non_waypoint_gateways_are_not_waypoints() -> None:
    ap = {"metadata": {"name": "deny", "namespace": "ns1"}, "spec": {}}
    gw = {"metadata": {"name": "ingress", "namespace": "ns1"}, "spec": {"gatewayClassName": "istio"}}
    m = model(("namespaces", ns("ns1")), ("authorizationpolicies.security.istio.io", ap), (GATEWAYS, gw))
    assert m.config["authorizationpolicies.security.istio.io"]["ns1/deny"] == ap
    assert m.waypoints == {}
    snap = m.snapshot()
    assert snap["authorizationpolicies.security.istio.io"] == {"ns1/deny": ap}


def test_vip_traffic_uses_the_services_waypoint_pod_traffic_the_workloads() -> None:
    lab = "istio.io/use-waypoint"
    m = model(("namespaces", ns("ns1", **{"istio.io/dataplane-mode": "ambient"})),
              (GATEWAYS, waypoint("svc-wp", serves="service")),
              (GATEWAYS, waypoint("pod-wp", serves="workload")),
              ("services", svc("echo", labels={lab: "svc-wp"})),
              ("pods", pod("echo-1", labels={"app": "echo", lab: "pod-wp"})))
    assert m.waypoint_for_address("10.96.0.10") == WaypointRef("ns1", "svc-wp")
    assert m.waypoint_for_address("10.244.1.2") == WaypointRef("ns1", "pod-wp")
    assert m.waypoint_for_address("10.244.9.9") is None
    assert m.service_accounts_on_node("node1") == {("ns1", "default")}


def test_a_waypoints_own_service_is_never_bound_to_a_waypoint() -> None:
    from zeromesh.controlplane.model import MeshModel
    m = MeshModel()
    ns = {"metadata": {"name": "ns1", "labels": {"istio.io/dataplane-mode": "ambient",
                                                  "istio.io/use-waypoint": "wp"}}}
    gw = {"metadata": {"name": "wp", "namespace": "ns1"},
          "spec": {"gatewayClassName": "istio-waypoint",
                   "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]}}
    own = {"metadata": {"name": "wp", "namespace": "ns1",
                        "labels": {"gateway.istio.io/managed": "istio.io-mesh-controller"}},
           "spec": {"clusterIP": "10.96.0.20", "ports": [{"port": 15008}]}}
    app = {"metadata": {"name": "app", "namespace": "ns1"},
           "spec": {"clusterIP": "10.96.0.21", "ports": [{"port": 80}]}}
    m.load([("namespaces", ns), ("gateways.gateway.networking.k8s.io", gw), ("services", own),
            ("services", app)])
    assert m.services["ns1/wp"].waypoint is None
    assert m.services["ns1/app"].waypoint is not None
