"""What a waypoint makes of the pushed state: destinations, which policies apply for each
generation of binding, routes per service host, subsets and endpoints (tables, no sockets)."""

from __future__ import annotations

from typing import Any

import pytest

from zeromesh.policy import Request, evaluate
from zeromesh.waypoint.config import WaypointConfig

GW = "gateway.networking.k8s.io/gateway-name"


def wl(name: str, ip: str, ns: str = "ns2", sa: str = "echo", labels: dict[str, str] | None = None,
       protocol: str = "HBONE", waypoint: str | None = "wp", by_sa: bool = False) -> dict[str, Any]:
    d: dict[str, Any] = {"uid": f"u-{name}", "namespace": ns, "name": name, "ip": ip, "node": "node2",
                         "service_account": sa, "labels": labels or {}, "protocol": protocol,
                         "workload_name": name, "canonical_name": name, "canonical_revision": "latest",
                         "ready": True}
    if waypoint:
        d["waypoint"] = {"namespace": ns, "name": waypoint}
        d["waypoint_by_service_account"] = by_sa
    return d


def state(*, by_sa: bool = False, service_bound: bool = True, extra: dict[str, Any] | None = None
          ) -> dict[str, Any]:
    v1 = wl("echo-v1", "10.244.2.2", labels={"app": "echo", "version": "v1"}, by_sa=by_sa,
            waypoint="wp" if by_sa else None)
    v2 = wl("echo-v2", "10.244.2.3", labels={"app": "echo", "version": "v2"}, by_sa=by_sa,
            waypoint="wp" if by_sa else None)
    wpod = wl("wp-1", "10.244.1.9", sa="wp", labels={GW: "wp", "istio.io/gateway-name": "wp"},
              protocol="TCP", waypoint=None)
    other = wl("other", "10.244.1.10", labels={"app": "other"}, waypoint=None)
    svc: dict[str, Any] = {
        "namespace": "ns2", "name": "echo", "hostname": "echo.ns2.svc.cluster.local", "vip": "10.96.0.10",
        "ports": [{"port": 80, "target_port": 8080, "name": "http"}],
        "endpoints": [{"workload_uid": f"u-echo-{v}", "ip": ip, "ports": {"80": 8080}, "ready": True}
                      for v, ip in (("v1", "10.244.2.2"), ("v2", "10.244.2.3"))]}
    if service_bound and not by_sa:
        svc["waypoint"] = {"namespace": "ns2", "name": "wp"}
    other_svc = {"namespace": "ns2", "name": "other", "hostname": "other.ns2.svc.cluster.local",
                 "vip": "10.96.0.11", "ports": [{"port": 80, "target_port": 80}],
                 "endpoints": [{"workload_uid": "u-other", "ip": "10.244.1.10", "ports": {"80": 80},
                                "ready": True}]}
    return {"workload": {w["uid"]: w for w in (v1, v2, wpod, other)},
            "service": {"ns2/echo": svc, "ns2/other": other_svc},
            "waypoint": {"ns2/wp": {"namespace": "ns2", "name": "wp", "serves": "service",
                                    "for_service_account": "echo" if by_sa else "", "problems": []}},
            **(extra or {})}


def build(**kw: Any) -> WaypointConfig:
    return WaypointConfig.build(state(**kw), "7", namespace="ns2", name="wp", pod_name="wp-1")


def test_resolve_vip_pod_and_unknown() -> None:
    cfg = build()
    d = cfg.resolve("10.96.0.10:80")
    assert d is not None and d.service is not None and d.host == "echo.ns2.svc.cluster.local"
    assert cfg.resolve("10.96.0.10:81") is None                 # not a port of the service
    p = cfg.resolve("10.244.2.2:8080")
    assert p is not None and p.workload is not None and p.service is None
    assert cfg.resolve("10.9.9.9:80") is None
    assert cfg.resolve("garbage") is None


@pytest.mark.parametrize(("by_sa", "service_bound", "authority", "served"), [
    (False, True, "10.96.0.10:80", True),       # use-waypoint on the service
    (False, True, "10.96.0.11:80", False),      # another service: not an open relay
    (False, False, "10.96.0.10:80", False),     # unbound
    (True, False, "10.96.0.10:80", True),       # for-service-account: the endpoints' SA
    (True, False, "10.244.2.3:8080", True),     # …also by pod address
])
def test_serves_only_bound_destinations(by_sa: bool, service_bound: bool, authority: str,
                                        served: bool) -> None:
    cfg = build(by_sa=by_sa, service_bound=service_bound)
    dest = cfg.resolve(authority)
    assert dest is not None and cfg.serves(dest) is served


def _policy(name: str, spec: dict[str, Any], ns: str = "ns2") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns}, "spec": spec}


SELECTOR_GET = _policy("sel", {"selector": {"matchLabels": {"istio.io/gateway-name": "wp"}},
                               "rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]})
NAMESPACE_DENY_ALL = _policy("deny-all", {})
TARGET_GET = _policy("tgt", {"targetRefs": [{"kind": "Gateway", "group": "gateway.networking.k8s.io",
                                              "name": "wp"}],
                             "rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]})
SERVICE_POST = _policy("svc", {"targetRefs": [{"kind": "Service", "group": "", "name": "echo"}],
                               "rules": [{"to": [{"operation": {"methods": ["POST"]}}]}]})


@pytest.mark.parametrize(("by_sa", "policies", "get", "post"), [
    # current generation: only targetRefs policies; selector and namespace-wide ones are ignored
    (False, [SELECTOR_GET, NAMESPACE_DENY_ALL], True, True),
    (False, [TARGET_GET], True, False),
    (False, [TARGET_GET, SERVICE_POST], True, True),
    # older generation: the waypoint pod's own policies, namespace-wide ones included
    (True, [SELECTOR_GET, NAMESPACE_DENY_ALL], True, False),
    (True, [NAMESPACE_DENY_ALL], False, False),
    (True, [], True, True),
])
def test_which_policies_apply_depends_on_the_binding(by_sa: bool, policies: list[dict[str, Any]],
                                                     get: bool, post: bool) -> None:
    extra = {"authorizationpolicies.security.istio.io": {
        f"{p['metadata']['namespace']}/{p['metadata']['name']}": p for p in policies}}
    cfg = WaypointConfig.build(state(by_sa=by_sa, extra=extra), "1", namespace="ns2", name="wp",
                               pod_name="wp-1")
    dest = cfg.resolve("10.96.0.10:80")
    assert dest is not None
    ps = cfg.policy_set(dest)

    def allowed(method: str) -> bool:
        return evaluate(ps, Request("cluster.local/ns/ns1/sa/sleep", "10.244.1.3", dest.ip, 80,
                                    method=method, path="/", host="echo")).allowed
    assert (allowed("GET"), allowed("POST")) == (get, post)


def _vs(name: str, hosts: list[str], spec_http: list[dict[str, Any]], ns: str = "ns2",
        created: str = "2026-01-01T00:00:00Z", gateways: list[str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"hosts": hosts, "http": spec_http}
    if gateways is not None:
        spec["gateways"] = gateways
    return {"metadata": {"name": name, "namespace": ns, "creationTimestamp": created}, "spec": spec}


ROUTE_TO = [{"route": [{"destination": {"host": "echo"}}]}]


@pytest.mark.parametrize(("vs", "has_routes"), [
    (_vs("a", ["echo"], ROUTE_TO), True),                                   # short name, own namespace
    (_vs("a", ["echo.ns2"], ROUTE_TO), True),                               # svc.ns
    (_vs("a", ["echo.ns2.svc.cluster.local"], ROUTE_TO), True),
    (_vs("a", ["echo"], ROUTE_TO, ns="ns1"), False),                        # short name elsewhere
    (_vs("a", ["*.ns2.svc.cluster.local"], ROUTE_TO), True),                # wildcard
    (_vs("a", ["echo"], ROUTE_TO, gateways=["istio-system/ingress"]), False),  # ingress only
    (_vs("a", ["echo"], ROUTE_TO, gateways=["mesh"]), True),
])
def test_virtual_service_hosts(vs: dict[str, Any], has_routes: bool) -> None:
    extra = {"virtualservices.networking.istio.io": {"x/a": vs}}
    cfg = WaypointConfig.build(state(extra=extra), "1", namespace="ns2", name="wp")
    dest = cfg.resolve("10.96.0.10:80")
    assert dest is not None
    assert bool(cfg.routes_for(dest)) is has_routes


def test_httproute_with_a_service_parent_wins_over_a_virtual_service() -> None:
    hr = {"metadata": {"name": "hr", "namespace": "ns2"},
          "spec": {"parentRefs": [{"kind": "Service", "group": "", "name": "echo"}],
                   "rules": [{"backendRefs": [{"name": "echo", "port": 80}]}]}}
    extra = {"virtualservices.networking.istio.io": {"ns2/a": _vs("a", ["echo"], ROUTE_TO)},
             "httproutes.gateway.networking.k8s.io": {"ns2/hr": hr}}
    cfg = WaypointConfig.build(state(extra=extra), "1", namespace="ns2", name="wp")
    dest = cfg.resolve("10.96.0.10:80")
    assert dest is not None
    assert cfg.routes_for(dest)[0].name.startswith("ns2/hr/")


def test_subsets_select_endpoints_by_labels_and_unknown_subset_is_empty() -> None:
    dr = {"metadata": {"name": "dr", "namespace": "ns2"},
          "spec": {"host": "echo", "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                                               {"name": "v2", "labels": {"version": "v2"}}]}}
    cfg = WaypointConfig.build(state(extra={"destinationrules.networking.istio.io": {"ns2/dr": dr}}),
                               "1", namespace="ns2", name="wp")
    dest = cfg.resolve("10.96.0.10:80")
    assert dest is not None
    host = "echo.ns2.svc.cluster.local"
    v1 = cfg.endpoints(host, None, "v1", dest)
    assert v1 is not None and [(u.ip, u.port) for u in v1] == [("10.244.2.2", 8080)]
    all_eps = cfg.endpoints(host, 80, None, dest)
    assert all_eps is not None and len(all_eps) == 2 and all(u.meshed for u in all_eps)
    assert cfg.endpoints(host, None, "v3", dest) == []
    assert cfg.endpoints("nope.ns2.svc.cluster.local", 80, None, dest) is None
    other = cfg.endpoints("other.ns2.svc.cluster.local", None, None, dest)   # its only port
    assert other is not None and other[0].port == 80


def test_request_authentication_scoping_follows_the_binding() -> None:
    ra = {"metadata": {"name": "jwt", "namespace": "ns2"},
          "spec": {"selector": {"matchLabels": {"istio.io/gateway-name": "wp"}},
                   "jwtRules": [{"issuer": "https://issuer.example", "jwksUri": "http://keys/"}]}}
    extra = {"requestauthentications.security.istio.io": {"ns2/jwt": ra}}
    legacy = WaypointConfig.build(state(by_sa=True, extra=extra), "1", namespace="ns2", name="wp",
                                  pod_name="wp-1")
    current = WaypointConfig.build(state(extra=extra), "1", namespace="ns2", name="wp", pod_name="wp-1")
    for cfg, applies in ((legacy, True), (current, False)):
        dest = cfg.resolve("10.96.0.10:80")
        assert dest is not None
        assert bool(cfg.authn_set(dest).policies) is applies
