"""`zeromesh x describe` over a pushed-state table (no sockets)."""

from __future__ import annotations

from typing import Any

import pytest

from zeromesh.cli.describe import describe_pod, describe_service
from zeromesh.errors import ZeromeshError

GW = "gateway.networking.k8s.io/gateway-name"


def _wl(name: str, ip: str, *, protocol: str = "HBONE", sa: str = "echo",
        labels: dict[str, str] | None = None, waypoint: str = "", by_sa: bool = False) -> dict[str, Any]:
    d: dict[str, Any] = {"uid": f"u-{name}", "namespace": "ns", "name": name, "ip": ip, "node": "node2",
                         "service_account": sa, "labels": labels or {}, "protocol": protocol,
                         "workload_name": name, "canonical_name": name, "canonical_revision": "v1",
                         "ready": True}
    if waypoint:
        d["waypoint"] = {"namespace": "ns", "name": waypoint}
        d["waypoint_by_service_account"] = by_sa
    return d


def state(*, by_sa: bool, meshed: bool = True) -> dict[str, Any]:
    echo = _wl("echo", "10.244.2.2", protocol="HBONE" if meshed else "TCP", waypoint="wp" if by_sa else "",
               by_sa=by_sa)
    wp = _wl("wp-1", "10.244.1.9", protocol="TCP", sa="wp", labels={GW: "wp", "istio.io/gateway-name": "wp"})
    svc = {"namespace": "ns", "name": "echo", "hostname": "echo.ns.svc.cluster.local", "vip": "10.96.0.10",
           "ports": [{"port": 80, "target_port": 8080}],
           "endpoints": [{"workload_uid": "u-echo", "ip": "10.244.2.2", "ports": {"80": 8080},
                          "ready": True}]}
    if not by_sa:
        svc["waypoint"] = {"namespace": "ns", "name": "wp"}
    pol = {"metadata": {"name": "get-only", "namespace": "ns"},
           "spec": {"selector": {"matchLabels": {"istio.io/gateway-name": "wp"}},
                    "rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]}}
    tgt = {"metadata": {"name": "tgt", "namespace": "ns"},
           "spec": {"targetRefs": [{"kind": "Service", "group": "", "name": "echo"}], "rules": [{}]}}
    return {"workload": {w["uid"]: w for w in (echo, wp)}, "service": {"ns/echo": svc},
            "waypoint": {"ns/wp": {"namespace": "ns", "name": "wp", "serves": "service",
                                   "for_service_account": "echo" if by_sa else "", "problems": []}},
            "authorizationpolicies.security.istio.io": {"ns/get-only": pol, "ns/tgt": tgt}}


def test_older_generation_pod() -> None:
    text = "\n".join(describe_pod(state(by_sa=True), "ns", "echo"))
    assert "spiffe://cluster.local/ns/ns/sa/echo" in text
    assert "Waypoint: ns/wp (bound by istio.io/for-service-account" in text
    assert "traffic arriving from its waypoint passes" in text
    assert "policy ns/get-only" in text       # the waypoint pod's own (selector) policies apply


def test_current_generation_service() -> None:
    text = "\n".join(describe_service(state(by_sa=False), "ns", "echo"))
    assert "Waypoint: ns/wp (istio.io/use-waypoint)" in text
    assert "policy ns/tgt" in text and "ns/get-only" not in text      # targetRefs only


def test_unenrolled_pod_and_unknown_names() -> None:
    text = "\n".join(describe_pod(state(by_sa=False, meshed=False), "ns", "echo"))
    assert "not enrolled" in text and "Identity" not in text
    with pytest.raises(ZeromeshError, match="pod ns/nope not found"):
        describe_pod(state(by_sa=False), "ns", "nope")
    with pytest.raises(ZeromeshError, match="service ns/nope not found"):
        describe_service(state(by_sa=False), "ns", "nope")
