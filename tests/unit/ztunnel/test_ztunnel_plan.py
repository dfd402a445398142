"""Outbound planning, inbound admission and PeerAuthentication layering, as tables."""

from __future__ import annotations

from typing import Any

import pytest

from zeromesh.ztunnel.config import Snapshot
from zeromesh.ztunnel.plan import (
    Admit,
    Passthrough,
    Refuse,
    Reject,
    Tunnel,
    accepts_plaintext,
    admit_inbound,
    parse_authority,
    peer_auth_mode,
    plan_outbound,
)


def wl(name: str, ip: str, ns: str = "ns1", sa: str = "default", protocol: str = "HBONE",
       labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"uid": f"u-{name}", "namespace": ns, "name": name, "ip": ip, "node": "node1",
            "service_account": sa, "labels": labels or {}, "protocol": protocol,
            "workload_name": name, "canonical_name": name, "canonical_revision": "latest"}


def svc(name: str, vip: str, eps: list[tuple[str, str, bool]], ns: str = "ns1") -> dict[str, Any]:
    return {"namespace": ns, "name": name, "hostname": f"{name}.{ns}.svc.cluster.local", "vip": vip,
            "ports": [{"port": 80, "target_port": 8080, "name": "http", "protocol": "TCP"}],
            "endpoints": [{"workload_uid": uid, "ip": ip, "ports": {"80": 8080}, "ready": ready}
                          for uid, ip, ready in eps]}


def pa(name: str, ns: str, mode: str | None, selector: dict[str, str] | None = None,
       ports: dict[int, str] | None = None, created: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if mode:
        spec["mtls"] = {"mode": mode}
    if selector is not None:
        spec["selector"] = {"matchLabels": selector}
    if ports:
        spec["portLevelMtls"] = {str(p): {"mode": m} for p, m in ports.items()}
    return {"metadata": {"name": name, "namespace": ns, "creationTimestamp": created}, "spec": spec}


def snap(*, workloads: list[dict[str, Any]] = (), services: list[dict[str, Any]] = (),  # type: ignore[assignment]
         pas: list[dict[str, Any]] = ()) -> Snapshot:  # type: ignore[assignment]
    state = {"workload": {w["uid"]: w for w in workloads},
             "service": {f"{s['namespace']}/{s['name']}": s for s in services},
             "peerauthentications.security.istio.io": {
                 f"{p['metadata']['namespace']}/{p['metadata']['name']}": p for p in pas}}
    return Snapshot.from_state(state, "1")


first = lambda xs: xs[0]  # noqa: E731


def test_vip_to_meshed_endpoint_tunnels_to_its_pod_with_pod_authority() -> None:
    s = snap(workloads=[wl("echo", "10.244.2.5", sa="echo")],
             services=[svc("echo", "10.96.0.10", [("u-echo", "10.244.2.5", True)])])
    plan = plan_outbound(s, "10.96.0.10", 80, first)
    assert isinstance(plan, Tunnel)
    assert (plan.ip, plan.port, plan.authority) == ("10.244.2.5", 15008, "10.244.2.5:8080")
    assert [i.uri for i in plan.identities] == ["spiffe://cluster.local/ns/ns1/sa/echo"]
    assert plan.service is not None and plan.service.name == "echo"


def test_vip_to_plain_endpoint_passes_through_to_the_endpoint() -> None:
    s = snap(workloads=[wl("echo", "10.244.2.5", protocol="TCP")],
             services=[svc("echo", "10.96.0.10", [("u-echo", "10.244.2.5", True)])])
    assert plan_outbound(s, "10.96.0.10", 80, first) == Passthrough(
        "10.244.2.5", 8080, s.services_by_vip["10.96.0.10"], s.workloads_by_uid["u-echo"])


def test_only_ready_endpoints_are_picked() -> None:
    s = snap(workloads=[wl("a", "10.244.1.2"), wl("b", "10.244.1.3")],
             services=[svc("s", "10.96.0.10", [("u-a", "10.244.1.2", False), ("u-b", "10.244.1.3", True)])])
    seen = []
    plan = plan_outbound(s, "10.96.0.10", 80, lambda xs: (seen.append(len(xs)), xs[0])[1])
    assert isinstance(plan, Tunnel) and plan.destination.name == "b" and seen == [1]


@pytest.mark.parametrize("eps,port,reason", [
    ([], 80, "no healthy endpoint"),
    ([("u-a", "10.244.1.2", False)], 80, "no healthy endpoint"),
    ([("u-a", "10.244.1.2", True)], 81, "has no port 81"),
])
def test_refusals(eps: list[tuple[str, str, bool]], port: int, reason: str) -> None:
    s = snap(workloads=[wl("a", "10.244.1.2")], services=[svc("s", "10.96.0.10", eps)])
    plan = plan_outbound(s, "10.96.0.10", port, first)
    assert isinstance(plan, Refuse) and reason in plan.reason


@pytest.mark.parametrize("ip,port,expected", [
    ("10.244.2.5", 8080, Tunnel),        # a meshed pod address
    ("10.244.2.6", 8080, Passthrough),   # a pod outside the mesh
    ("10.244.9.9", 80, Passthrough),     # unknown address
])
def test_pod_addresses(ip: str, port: int, expected: type) -> None:
    s = snap(workloads=[wl("m", "10.244.2.5"), wl("p", "10.244.2.6", protocol="TCP")])
    plan = plan_outbound(s, ip, port, first)
    assert isinstance(plan, expected)
    if isinstance(plan, Tunnel):
        assert plan.authority == f"{ip}:{port}"
    if isinstance(plan, Passthrough):
        assert (plan.ip, plan.port) == (ip, port)


@pytest.mark.parametrize("authority,expected", [
    ("10.244.2.5:8080", ("10.244.2.5", 8080)), ("[::1]:80", ("::1", 80)), ("10.0.0.1:0", None),
    ("10.0.0.1:65536", None), ("echo:80", None), ("10.0.0.1", None), ("", None), ("10.0.0.1:x", None),
])
def test_parse_authority(authority: str, expected: tuple[str, int] | None) -> None:
    assert parse_authority(authority) == expected


@pytest.mark.parametrize("authority,result", [
    ("10.244.2.5:8080", Admit("10.244.2.5", 8080)),
    ("10.244.2.6:8080", Reject(400, "")),
    ("echo.ns1:80", Reject(400, "")),
    ("10.244.2.5:15008", Reject(400, "")),
])
def test_admit_inbound(authority: str, result: Admit | Reject) -> None:
    s = snap(workloads=[wl("echo", "10.244.2.5")])
    got = admit_inbound(s.workloads_by_ip["10.244.2.5"], authority)
    assert type(got) is type(result)
    if isinstance(result, Admit):
        assert got == result
    else:
        assert isinstance(got, Reject) and got.status == result.status and got.reason


def test_admit_inbound_unknown_local_workload_is_503() -> None:
    got = admit_inbound(None, "10.244.2.5:80")
    assert isinstance(got, Reject) and got.status == 503


W = {"app": "echo"}


@pytest.mark.parametrize("policies,port,mode", [
    ([], 80, "PERMISSIVE"),
    ([pa("m", "istio-system", "STRICT")], 80, "STRICT"),
    ([pa("m", "istio-system", "STRICT"), pa("n", "ns1", "PERMISSIVE")], 80, "PERMISSIVE"),
    ([pa("n", "ns1", "STRICT")], 80, "STRICT"),
    ([pa("n", "other", "STRICT")], 80, "PERMISSIVE"),
    ([pa("n", "ns1", "STRICT"), pa("w", "ns1", "PERMISSIVE", W)], 80, "PERMISSIVE"),
    ([pa("n", "ns1", "STRICT"), pa("w", "ns1", "UNSET", W)], 80, "STRICT"),
    ([pa("n", "ns1", "STRICT"), pa("w", "ns1", None, W, {8080: "PERMISSIVE"})], 8080, "PERMISSIVE"),
    ([pa("n", "ns1", "STRICT"), pa("w", "ns1", None, W, {8080: "PERMISSIVE"})], 80, "STRICT"),
    ([pa("w", "ns1", "PERMISSIVE", W, {8080: "STRICT"})], 8080, "STRICT"),
    ([pa("w", "ns1", "STRICT", {"app": "other"})], 80, "PERMISSIVE"),
    # two workload policies: the oldest wins
    ([pa("w2", "ns1", "PERMISSIVE", W, created="2026-02-01T00:00:00Z"),
      pa("w1", "ns1", "STRICT", W, created="2026-01-01T00:00:00Z")], 80, "STRICT"),
    ([pa("m", "istio-system", "DISABLE")], 80, "DISABLE"),
    # a selector policy in the root namespace is not mesh-wide
    ([pa("r", "istio-system", "STRICT", {"app": "echo"})], 80, "PERMISSIVE"),
])
def test_peer_authentication_layers(policies: list[dict[str, Any]], port: int, mode: str) -> None:
    s = snap(workloads=[wl("echo", "10.244.2.5", labels=W)], pas=policies)
    w = s.workloads_by_ip["10.244.2.5"]
    assert peer_auth_mode(s, w, port) == mode
    assert accepts_plaintext(s, w, port) == (mode != "STRICT")


# ---- waypoints --------------------------------------------------------------------------------
GW = "gateway.networking.k8s.io/gateway-name"


def wp_snap(*, service_bound: bool = False, pod_bound: bool = False, by_sa: bool = False,
            wp_ready: bool = True, wp_problems: list[str] | None = None) -> Snapshot:
    echo = wl("echo", "10.244.2.5", ns="ns2", sa="echo")
    if pod_bound or by_sa:
        echo["waypoint"] = {"namespace": "ns2", "name": "wp"}
        echo["waypoint_by_service_account"] = by_sa
    wpod = wl("wp-abc", "10.244.1.9", ns="ns2", sa="wp", protocol="TCP", labels={GW: "wp"})
    wpod["ready"] = wp_ready
    other = wl("other-gw", "10.244.1.10", ns="ns3", sa="x", protocol="TCP", labels={GW: "wp"})
    s = svc("echo", "10.96.0.10", [("u-echo", "10.244.2.5", True)], ns="ns2")
    if service_bound:
        s["waypoint"] = {"namespace": "ns2", "name": "wp"}
    state: dict[str, Any] = {
        "workload": {w["uid"]: w for w in (echo, wpod, other)},
        "service": {"ns2/echo": s},
        "waypoint": {"ns2/wp": {"namespace": "ns2", "name": "wp", "serves": "service",
                                "for_service_account": "echo" if by_sa else "",
                                "problems": wp_problems or []}}}
    return Snapshot.from_state(state, "1")


def test_service_bound_to_a_waypoint_tunnels_to_the_waypoint_with_the_dialled_vip() -> None:
    s = wp_snap(service_bound=True)
    plan = plan_outbound(s, "10.96.0.10", 80, first)
    assert isinstance(plan, Tunnel) and plan.waypoint is not None
    assert (plan.ip, plan.port, plan.authority) == ("10.244.1.9", 15008, "10.96.0.10:80")
    assert [i.uri for i in plan.identities] == ["spiffe://cluster.local/ns/ns2/sa/wp"]


def test_waypoint_pods_are_found_by_label_in_the_waypoint_namespace_only() -> None:
    s = wp_snap(service_bound=True)
    assert [p.name for p in s.waypoints["ns2/wp"].pods] == ["wp-abc"]


def test_pod_bound_waypoint_is_used_for_pod_ip_dials_not_for_the_vip() -> None:
    s = wp_snap(pod_bound=True)
    direct = plan_outbound(s, "10.244.2.5", 8080, first)
    assert isinstance(direct, Tunnel) and direct.authority == "10.244.2.5:8080"
    assert direct.ip == "10.244.1.9"
    via_vip = plan_outbound(s, "10.96.0.10", 80, first)
    assert isinstance(via_vip, Tunnel) and via_vip.waypoint is None and via_vip.ip == "10.244.2.5"


def test_for_service_account_waypoint_also_takes_vip_traffic_with_vip_authority() -> None:
    s = wp_snap(by_sa=True)
    plan = plan_outbound(s, "10.96.0.10", 80, first)
    assert isinstance(plan, Tunnel) and plan.ip == "10.244.1.9"
    assert plan.authority == "10.96.0.10:80"


def test_waypoint_without_ready_pod_refuses() -> None:
    plan = plan_outbound(wp_snap(service_bound=True, wp_ready=False), "10.96.0.10", 80, first)
    assert isinstance(plan, Refuse) and "no ready pod" in plan.reason


def test_invalid_waypoint_refuses() -> None:
    plan = plan_outbound(wp_snap(service_bound=True, wp_problems=["no HBONE listener"]),
                         "10.96.0.10", 80, first)
    assert isinstance(plan, Refuse) and "ns2/wp" in plan.reason


def test_waypoint_passes_only_for_annotation_bound_workloads_and_the_waypoint_identity() -> None:
    from zeromesh.ztunnel.plan import waypoint_passes
    wp_id = "spiffe://cluster.local/ns/ns2/sa/wp"
    legacy = wp_snap(by_sa=True)
    assert waypoint_passes(legacy, legacy.workloads_by_uid["u-echo"], wp_id)
    assert not waypoint_passes(legacy, legacy.workloads_by_uid["u-echo"],
                               "spiffe://cluster.local/ns/ns1/sa/sleep")
    current = wp_snap(pod_bound=True)
    assert not waypoint_passes(current, current.workloads_by_uid["u-echo"], wp_id)
