"""Which policies are in force for each workload: the ztunnel's own snapshot, and the targets
each waypoint in front of the workload passes to the policy engine."""

from __future__ import annotations

from typing import Any

import pytest
from uikit import authz, mesh, peer_auth, service, waypoint, workload

from zeromesh.ui.policies import (
    authorization_rows,
    in_force,
    mtls_mode,
    peer_authentication_rows,
    pod_key,
    waypoint_policies,
)
from zeromesh.ztunnel.config import Snapshot

ECHO = workload("a", "echo-1", sa="echo", labels={"app": "echo"}, workload_name="echo", ip="10.244.2.5")
CLIENT = workload("a", "client-1", sa="client", labels={"app": "client"}, workload_name="client",
                  ip="10.244.1.5")
OTHER_NS = workload("b", "echo-1", sa="echo", labels={"app": "echo"}, workload_name="echo", ip="10.244.2.6")
PLAIN = workload("a", "legacy-1", labels={"app": "echo"}, enrolled=False, ip="10.244.2.7")
WP_POD = workload("a", "wp-1", sa="wp", labels={"gateway.networking.k8s.io/gateway-name": "wp",
                                                "istio.io/gateway-name": "wp"},
                  workload_name="wp", enrolled=False, ip="10.244.1.9")


def snap(workloads: list[dict[str, Any]], **kw: Any) -> Snapshot:
    return Snapshot.from_state(mesh(workloads, **kw), "1")


def forces(s: Snapshot, wl: dict[str, Any]) -> list[tuple[str, str, str]]:
    info = s.workloads_by_uid[wl["uid"]]
    return [(e.policy, e.enforced_by, e.via) for e in in_force(s, waypoint_policies(s), info)]


ALL = [ECHO, CLIENT, OTHER_NS, PLAIN]


@pytest.mark.parametrize(("policy", "want"), [
    # a selector picks workloads of its own namespace carrying the labels
    (authz("a", "p", selector={"app": "echo"}),
     {"a/echo-1": [("a/p", "ztunnel", "")], "a/client-1": [], "b/echo-1": [], "a/legacy-1": []}),
    # no selector: every workload of the namespace
    (authz("a", "p"),
     {"a/echo-1": [("a/p", "ztunnel", "")], "a/client-1": [("a/p", "ztunnel", "")], "b/echo-1": [],
      "a/legacy-1": []}),
    # the root namespace without selector: the whole mesh (still only enrolled workloads)
    (authz("istio-system", "p", action="DENY", rules=[{"from": [{"source": {"namespaces": ["x"]}}]}]),
     {"a/echo-1": [("istio-system/p", "ztunnel", "")], "a/client-1": [("istio-system/p", "ztunnel", "")],
      "b/echo-1": [("istio-system/p", "ztunnel", "")], "a/legacy-1": []}),
    # the root namespace with a selector: matching workloads anywhere
    (authz("istio-system", "p", selector={"app": "echo"}),
     {"a/echo-1": [("istio-system/p", "ztunnel", "")], "a/client-1": [],
      "b/echo-1": [("istio-system/p", "ztunnel", "")], "a/legacy-1": []}),
    # AUDIT is not enforced by the ztunnel
    (authz("a", "p", action="AUDIT"),
     {"a/echo-1": [], "a/client-1": [], "b/echo-1": [], "a/legacy-1": []}),
])
def test_ztunnel_policies(policy: dict[str, Any], want: dict[str, list[tuple[str, str, str]]]) -> None:
    s = snap(ALL, policies=[policy])
    assert {pod_key(s.workloads_by_uid[w["uid"]]): forces(s, w) for w in ALL} == want


def test_a_service_targeted_policy_is_enforced_by_the_services_waypoint() -> None:
    echo = dict(ECHO)
    svc = service("a", "echo", "10.96.0.11", [echo], waypoint="a/wp")
    other = service("a", "other", "10.96.0.12", [CLIENT], waypoint="a/wp")
    s = snap([echo, CLIENT, WP_POD], services=[svc, other], waypoints=[waypoint("a", "wp")],
             policies=[authz("a", "get-only", target_refs=[{"kind": "Service", "group": "", "name": "echo"}],
                             rules=[{"to": [{"operation": {"methods": ["GET"]}}]}]),
                       authz("a", "all-wp", target_refs=[{"kind": "Gateway",
                                                          "group": "gateway.networking.k8s.io",
                                                          "name": "wp"}])])
    assert forces(s, echo) == [("a/all-wp", "waypoint a/wp", ""),
                               ("a/get-only", "waypoint a/wp", "service a/echo")]
    assert forces(s, CLIENT) == [("a/all-wp", "waypoint a/wp", "")]


def test_a_workload_bound_waypoint_counts_without_any_service() -> None:
    echo = workload("a", "echo-1", sa="echo", labels={"app": "echo"}, waypoint="a/wp", ip="10.244.2.5")
    s = snap([echo, WP_POD], waypoints=[waypoint("a", "wp", serves="workload")],
             policies=[authz("a", "gw", target_refs=[{"kind": "Gateway", "group": "gateway.networking.k8s.io",
                                                      "name": "wp"}]),
                       authz("a", "zt", selector={"app": "echo"})])
    assert forces(s, echo) == [("a/zt", "ztunnel", ""), ("a/gw", "waypoint a/wp", "")]


def test_older_for_service_account_waypoints_apply_selector_policies_on_their_own_pod() -> None:
    echo = workload("a", "echo-1", sa="echo", labels={"app": "echo"}, waypoint="a/wp", by_sa=True,
                    ip="10.244.2.5")
    s = snap([echo, WP_POD], waypoints=[waypoint("a", "wp", serves="service", for_sa="echo")],
             policies=[authz("a", "get-only", selector={"istio.io/gateway-name": "wp"})])
    assert forces(s, echo) == [("a/get-only", "waypoint a/wp", "")]


def test_authorization_rows_list_where_each_policy_applies() -> None:
    s = snap(ALL, policies=[authz("a", "p", selector={"app": "echo"}),
                            authz("a", "nobody", selector={"app": "nothing"}),
                            authz("a", "refs", target_refs=[{"kind": "Service", "group": "", "name": "x"}])])
    wps = waypoint_policies(s)
    by_pod = {pod_key(w): in_force(s, wps, w) for w in s.workloads_by_uid.values()}
    rows = {r["name"]: r for r in authorization_rows(s, by_pod, s.workloads_by_uid.values())}
    assert rows["p"]["applies_to"] == [{"pod": "a/echo-1", "workload": "echo", "enforced_by": "ztunnel",
                                        "via": ""}]
    assert rows["p"]["scope"] == "selector app=echo" and rows["p"]["action"] == "ALLOW"
    assert rows["nobody"]["applies_to"] == []
    assert rows["refs"]["scope"] == "targetRefs Service/x"
    assert any("waypoints" in n for n in rows["refs"]["notes"])


def test_peer_authentication_rows_and_modes() -> None:
    s = snap(ALL, peer_auths=[peer_auth("istio-system", "mesh", "STRICT"),
                              peer_auth("a", "ns", "PERMISSIVE"),
                              peer_auth("a", "echo", "UNSET", selector={"app": "echo"},
                                        ports={"8080": "DISABLE"})])
    rows = {r["name"]: r for r in peer_authentication_rows(s, s.workloads_by_uid.values())}
    assert rows["mesh"]["scope"] == "mesh-wide"
    assert rows["mesh"]["applies_to"] == ["a/client-1", "a/echo-1", "b/echo-1"]   # enrolled ones
    assert rows["ns"]["applies_to"] == ["a/client-1", "a/echo-1"]
    assert rows["echo"]["applies_to"] == ["a/echo-1"] and rows["echo"]["port_modes"] == {"8080": "DISABLE"}
    modes = {pod_key(w): mtls_mode(s, w) for w in s.workloads_by_uid.values()}
    assert modes["b/echo-1"] == "STRICT" and modes["a/echo-1"] == "PERMISSIVE"   # UNSET inherits
