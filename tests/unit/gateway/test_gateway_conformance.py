"""HTTPRoute (core) in the spirit of the Gateway API conformance suite, without sockets: the
suite's infrastructure (Gateways in ``gateway-conformance-infra``, backends infra-backend-v1..v3
and web-backend) as push state, requests resolved through :class:`GatewayConfig` exactly as the
engine asks (route, backend, endpoints), and the route and Gateway status conditions for every
way a route can fail to attach or resolve."""

from __future__ import annotations

import base64
import datetime
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from zeromesh.api import load_text, validate_all
from zeromesh.gateway import GatewayConfig, gateway_statuses, route_statuses
from zeromesh.routing import (
    HttpRequest,
    Route,
    apply_header_ops,
    find_route,
    pick_backend,
    redirect_location,
)
from zeromesh.routing.model import RequestMatch

INFRA = "gateway-conformance-infra"
APP = "gateway-conformance-app-backend"
WEB = "gateway-conformance-web-backend"
GW_LABELS = {"istio": "ingressgateway", "app": "istio-ingressgateway"}
GW_POD = "istio-ingressgateway-0"
SA = "istio-ingressgateway-service-account"


def wl(name: str, ns: str, ip: str) -> dict[str, Any]:
    return {"uid": f"u-{name}", "namespace": ns, "name": name, "ip": ip, "node": "node1",
            "service_account": "default", "labels": {"app": name}, "protocol": "HBONE",
            "workload_name": name, "canonical_name": name, "canonical_revision": "latest", "ready": True}


BACKENDS = {("infra-backend-v1", INFRA): "10.244.1.11", ("infra-backend-v2", INFRA): "10.244.1.12",
            ("infra-backend-v3", INFRA): "10.244.1.13", ("app-backend-v1", APP): "10.244.2.21",
            ("web-backend", WEB): "10.244.2.31"}


def infrastructure() -> dict[str, dict[str, Any]]:
    pods = [wl(name, ns, ip) for (name, ns), ip in BACKENDS.items()]
    pods.append({**wl(GW_POD, "istio-system", "10.244.1.2"), "labels": GW_LABELS, "service_account": SA})
    services = {}
    for i, ((name, ns), ip) in enumerate(BACKENDS.items()):
        services[f"{ns}/{name}"] = {
            "namespace": ns, "name": name, "hostname": f"{name}.{ns}.svc.cluster.local",
            "vip": f"10.96.1.{i + 1}", "ports": [{"port": 8080, "target_port": 3000}],
            "endpoints": [{"workload_uid": f"u-{name}", "ip": ip, "ports": {"8080": 3000}, "ready": True}]}
    namespaces = {ns: {"apiVersion": "v1", "kind": "Namespace",
                       "metadata": {"name": ns, "labels": {"gateway-conformance": label}}}
                  for ns, label in ((INFRA, "infra"), (APP, "backend"), (WEB, "web-backend"))}
    return {"workload": {p["uid"]: p for p in pods}, "service": services, "waypoint": {},
            "namespaces": namespaces}


GATEWAYS = f"""
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: same-namespace, namespace: {INFRA}, creationTimestamp: "2024-01-01T00:00:00Z"}}
spec:
  gatewayClassName: istio
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    allowedRoutes: {{namespaces: {{from: Same}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: all-namespaces, namespace: {INFRA}, creationTimestamp: "2024-01-01T00:00:01Z"}}
spec:
  gatewayClassName: istio
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    hostname: "*.all.example.com"
    allowedRoutes: {{namespaces: {{from: All}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: backend-namespaces, namespace: {INFRA}, creationTimestamp: "2024-01-01T00:00:02Z"}}
spec:
  gatewayClassName: istio
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    hostname: selected.example.com
    allowedRoutes:
      namespaces:
        from: Selector
        selector: {{matchLabels: {{gateway-conformance: backend}}}}
"""


def objects(text: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for v in validate_all(load_text(text, "conformance.yaml")):
        md = v.obj["metadata"]
        out.setdefault(v.info.resource, {})[f"{md.get('namespace', '')}/{md['name']}"] = v.obj
    return out


def state_with(*texts: str, extra: dict[str, dict[str, Any]] | None = None,
               gateways: str = GATEWAYS) -> dict[str, dict[str, Any]]:
    state = infrastructure()
    for part in (objects(gateways), *(objects(t) for t in texts), extra or {}):
        for resource, recs in part.items():
            state.setdefault(resource, {}).update(recs)
    return state


def config(state: dict[str, dict[str, Any]]) -> GatewayConfig:
    return GatewayConfig.build(state, "1", namespace="istio-system", pod_name=GW_POD, pod_labels=GW_LABELS,
                               service_account=SA)


def http_route(name: str, rules: str, *, ns: str = INFRA, parent: str = "same-namespace",
               hostnames: str = "", parent_extra: str = "", ts: str = "2024-02-01T00:00:00Z") -> str:
    hn = f"\n  hostnames: {hostnames}" if hostnames else ""
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: {ns}, creationTimestamp: "{ts}"}}
spec:
  parentRefs: [{{name: {parent}, namespace: {INFRA}{parent_extra}}}]{hn}
  rules:{rules}
"""


def resolve(cfg: GatewayConfig, host: str, path: str = "/", headers: dict[str, str] | None = None,
            port: int = 80) -> tuple[Route, RequestMatch | None] | None:
    dest = cfg.listener_destination(port, host)
    return find_route(cfg.routes_for(dest), HttpRequest("GET", path, host, {"host": host, **(headers or {})}))


def served_by(cfg: GatewayConfig, host: str, path: str = "/", headers: dict[str, str] | None = None
              ) -> str | None:
    """The backend Service a request reaches (its first backend's endpoints), or None (404)."""
    found = resolve(cfg, host, path, headers)
    if found is None:
        return None
    b = found[0].action.backends[0]
    eps = cfg.endpoints(b.host, b.port, b.subset, cfg.listener_destination(80, host))
    assert eps, f"{b.host} has no endpoints"
    assert eps[0].service is not None
    return eps[0].service.name


def statuses(state: dict[str, dict[str, Any]], route: str) -> list[dict[str, Any]]:
    return route_statuses(state)[f"{route}"]


def cond(parent: dict[str, Any], ctype: str) -> tuple[str, str]:
    (c,) = [c for c in parent["conditions"] if c["type"] == ctype]
    return c["status"], c["reason"]


# ---- HTTPRouteMatching / HTTPRouteExactPathMatching / HTTPRouteHeaderMatching ----------------

MATCHING = http_route("matching", """
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /v2}}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
  - matches: [{path: {type: Exact, value: /exact}}]
    backendRefs: [{name: infra-backend-v3, port: 8080}]
  - matches: [{headers: [{name: version, value: three}]}]
    backendRefs: [{name: infra-backend-v3, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /v1}, headers: [{name: version, value: two}]}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
""")


@pytest.mark.parametrize(("path", "headers", "want"), [
    ("/", {}, "infra-backend-v1"),
    ("/example", {}, "infra-backend-v1"),
    ("/v2", {}, "infra-backend-v2"),
    ("/v2/example", {}, "infra-backend-v2"),
    ("/v2example", {}, "infra-backend-v1"),          # PathPrefix is per path segment
    ("/exact", {}, "infra-backend-v3"),
    ("/exact/", {}, "infra-backend-v1"),             # Exact is exact
    ("/exact?q=1", {}, "infra-backend-v3"),          # the query is not part of the path
    ("/", {"version": "three"}, "infra-backend-v3"),
    ("/", {"version": "four"}, "infra-backend-v1"),
    ("/v1/x", {"version": "two"}, "infra-backend-v2"),   # path AND header
    ("/v1/x", {}, "infra-backend-v1"),
])
def test_path_and_header_matching(path: str, headers: dict[str, str], want: str) -> None:
    cfg = config(state_with(MATCHING))
    assert served_by(cfg, "any.host", path, headers) == want


# ---- HTTPRouteListenerHostnameMatching / HTTPRouteHostnameIntersection --------------------------

LISTENER_HOSTNAMES_GW = f"""
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: httproute-listener-hostname-matching, namespace: {INFRA}}}
spec:
  gatewayClassName: istio
  listeners:
  - {{name: listener-1, port: 80, protocol: HTTP, hostname: bar.com}}
  - {{name: listener-2, port: 80, protocol: HTTP, hostname: foo.bar.com}}
  - {{name: listener-3, port: 80, protocol: HTTP, hostname: "*.bar.com"}}
  - {{name: listener-4, port: 80, protocol: HTTP, hostname: "*.foo.com"}}
"""

LISTENER_HOSTNAME_ROUTES = "".join(
    "---" + http_route(name, f"""
  - backendRefs: [{{name: {backend}, port: 8080}}]""", parent="httproute-listener-hostname-matching",
                       parent_extra=extra)
    for name, backend, extra in (
        ("backend-v1", "infra-backend-v1", ", sectionName: listener-1"),
        ("backend-v2", "infra-backend-v2", ", sectionName: listener-2"),
        ("backend-v3", "infra-backend-v3", ", sectionName: listener-3"),
        ("backend-v3-foo", "infra-backend-v3", ", sectionName: listener-4")))


@pytest.mark.parametrize(("host", "want"), [
    ("bar.com", "infra-backend-v1"),
    ("foo.bar.com", "infra-backend-v2"),             # the more specific listener wins
    ("baz.bar.com", "infra-backend-v3"),
    ("boo.bar.com", "infra-backend-v3"),
    ("multiple.prefixes.bar.com", "infra-backend-v3"),
    ("multiple.prefixes.foo.com", "infra-backend-v3"),
    ("foo.com", None),                               # *.foo.com does not match foo.com
    ("no.matching.host", None),
])
def test_listener_hostname_matching(host: str, want: str | None) -> None:
    cfg = config(state_with(LISTENER_HOSTNAME_ROUTES, gateways=LISTENER_HOSTNAMES_GW))
    assert served_by(cfg, host) == want


INTERSECTION_GW = f"""
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: httproute-hostname-intersection, namespace: {INFRA}}}
spec:
  gatewayClassName: istio
  listeners:
  - {{name: listener-1, port: 80, protocol: HTTP, hostname: very.specific.com}}
  - {{name: listener-2, port: 80, protocol: HTTP, hostname: "*.wildcard.io"}}
  - {{name: listener-3, port: 80, protocol: HTTP, hostname: "*.anotherwildcard.io"}}
"""

INTERSECTION_ROUTES = "".join((
    "---" + http_route("specific-host-matches-listener-specific-host", """
  - matches: [{path: {type: PathPrefix, value: /s1}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]""", parent="httproute-hostname-intersection",
                       hostnames='[non.matching.com, "*.nonmatchingwildcard.io", very.specific.com]'),
    "---" + http_route("specific-host-matches-listener-wildcard-host", """
  - matches: [{path: {type: PathPrefix, value: /s2}}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]""", parent="httproute-hostname-intersection",
                       hostnames="[non.matching.com, wildcard.io, foo.wildcard.io, bar.wildcard.io, "
                                 "foo.bar.wildcard.io]"),
    "---" + http_route("wildcard-host-matches-listener-specific-host", """
  - matches: [{path: {type: PathPrefix, value: /s3}}]
    backendRefs: [{name: infra-backend-v3, port: 8080}]""", parent="httproute-hostname-intersection",
                       hostnames='[non.matching.com, "*.specific.com"]'),
    "---" + http_route("wildcard-host-matches-listener-wildcard-host", """
  - matches: [{path: {type: PathPrefix, value: /s4}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]""", parent="httproute-hostname-intersection",
                       hostnames='["*.anotherwildcard.io"]'),
    "---" + http_route("no-intersecting-hosts", """
  - backendRefs: [{name: infra-backend-v2, port: 8080}]""", parent="httproute-hostname-intersection",
                       hostnames='[specific.but.wrong.com, wildcard.io]'),
))


@pytest.mark.parametrize(("host", "path", "want"), [
    ("very.specific.com", "/s1", "infra-backend-v1"),
    ("non.matching.com", "/s1", None),               # the route's hostname the listener does not take
    ("foo.nonmatchingwildcard.io", "/s1", None),
    ("foo.wildcard.io", "/s2", "infra-backend-v2"),
    ("bar.wildcard.io", "/s2", "infra-backend-v2"),
    ("foo.bar.wildcard.io", "/s2", "infra-backend-v2"),
    ("wildcard.io", "/s2", None),                    # *.wildcard.io does not take wildcard.io
    ("very.specific.com", "/s3", "infra-backend-v3"),    # route *.specific.com on listener very.specific.com
    ("foo.anotherwildcard.io", "/s4", "infra-backend-v1"),
    ("specific.but.wrong.com", "/", None),
    ("very.specific.com", "/s2", None),              # each hostname has only its own routes
])
def test_hostname_intersection(host: str, path: str, want: str | None) -> None:
    state = state_with(INTERSECTION_ROUTES, gateways=INTERSECTION_GW)
    assert served_by(config(state), host, path) == want


def test_no_intersecting_hostname_is_reported() -> None:
    state = state_with(INTERSECTION_ROUTES, gateways=INTERSECTION_GW)
    (parent,) = statuses(state, f"{INFRA}/no-intersecting-hosts")
    assert cond(parent, "Accepted") == ("False", "NoMatchingListenerHostname")
    assert "specific.but.wrong.com" in next(c["message"] for c in parent["conditions"]
                                            if c["type"] == "Accepted")
    (ok,) = statuses(state, f"{INFRA}/wildcard-host-matches-listener-specific-host")
    assert cond(ok, "Accepted") == ("True", "Accepted")


def test_the_most_specific_hostname_has_no_fall_through() -> None:
    routes = "---".join((
        http_route("wild", """
  - backendRefs: [{name: infra-backend-v1, port: 8080}]""", hostnames='["*.example.com"]'),
        http_route("exact", """
  - matches: [{path: {type: PathPrefix, value: /only}}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]""", hostnames="[foo.example.com]")))
    cfg = config(state_with(routes))
    assert served_by(cfg, "bar.example.com", "/x") == "infra-backend-v1"
    assert served_by(cfg, "foo.example.com", "/only") == "infra-backend-v2"
    assert served_by(cfg, "foo.example.com", "/x") is None        # not the *.example.com route


# ---- HTTPRouteWeight, HTTPRouteRequestHeaderModifier, HTTPRouteRedirect* ----------------------

def test_weighted_backends() -> None:
    cfg = config(state_with(http_route("weighted", """
  - backendRefs:
    - {name: infra-backend-v1, port: 8080, weight: 70}
    - {name: infra-backend-v2, port: 8080, weight: 30}
    - {name: infra-backend-v3, port: 8080, weight: 0}""")))
    found = resolve(cfg, "x")
    assert found is not None
    backends = found[0].action.backends
    assert [(b.host.split(".")[0], b.weight) for b in backends] == [
        ("infra-backend-v1", 70), ("infra-backend-v2", 30), ("infra-backend-v3", 0)]
    picks = [pick_backend(backends, lambda v=v: v) for v in (0.0, 0.69, 0.7, 0.99)]
    assert [b.host.split(".")[0] if b else None for b in picks] == [
        "infra-backend-v1", "infra-backend-v1", "infra-backend-v2", "infra-backend-v2"]


def test_request_header_modifier() -> None:
    cfg = config(state_with(http_route("headers", """
  - filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-Header-Set, value: set-overwrites-values}]
        add: [{name: X-Header-Add, value: header-val-1}]
        remove: [X-Header-Remove]
    backendRefs: [{name: infra-backend-v1, port: 8080}]""")))
    found = resolve(cfg, "x")
    assert found is not None
    got = apply_header_ops(found[0].action.request_header_ops, {
        "x-header-set": "some-other-value", "x-header-add": "add-appends-values",
        "x-header-remove": "val", "other": "kept"})
    assert got == {"x-header-set": "set-overwrites-values",
                   "x-header-add": "add-appends-values, header-val-1", "other": "kept"}


@pytest.mark.parametrize(("redirect", "host", "path", "location", "status"), [
    ("{hostname: example.org}", "redir.example", "/hostname-redirect",
     "http://example.org/hostname-redirect", 302),
    ("{statusCode: 301}", "redir.example", "/status-code-301", "http://redir.example/status-code-301", 301),
    ("{scheme: https}", "redir.example", "/scheme", "https://redir.example/scheme", 302),
    ("{port: 8083}", "redir.example", "/port", "http://redir.example:8083/port", 302),
    ("{path: {type: ReplaceFullPath, replaceFullPath: /replacement}}", "redir.example", "/full?q=1",
     "http://redir.example/replacement?q=1", 302),
])
def test_request_redirect(redirect: str, host: str, path: str, location: str, status: int) -> None:
    cfg = config(state_with(http_route("redirect", f"""
  - filters: [{{type: RequestRedirect, requestRedirect: {redirect}}}]""")))
    found = resolve(cfg, host, path)
    assert found is not None and found[0].action.redirect is not None
    rd = found[0].action.redirect
    assert rd.status == status
    assert redirect_location(rd, found[1], HttpRequest("GET", path, host)) == location


# ---- missing and forbidden backends: 500 for their share, ResolvedRefs says why ---------------

@pytest.mark.parametrize(("ref", "reason"), [
    ("{name: does-not-exist, port: 8080}", "BackendNotFound"),
    (f"{{name: web-backend, namespace: {WEB}, port: 8080}}", "RefNotPermitted"),
    ("{group: example.com, kind: Unsupported, name: thing, port: 8080}", "InvalidKind"),
])
def test_unresolvable_backend_answers_500_and_is_reported(ref: str, reason: str) -> None:
    state = state_with(http_route("bad-backend", f"""
  - backendRefs:
    - {ref}
    - {{name: infra-backend-v1, port: 8080, weight: 0}}"""))
    cfg = config(state)
    found = resolve(cfg, "x")
    assert found is not None
    bad, good = found[0].action.backends
    dest = cfg.listener_destination(80, "x")
    assert cfg.endpoints(bad.host, bad.port, bad.subset, dest) is None      # the engine answers 500
    assert bad.weight == 1 and good.weight == 0                             # its share stays its own
    assert cfg.endpoints(good.host, good.port, None, dest)
    (parent,) = statuses(state, f"{INFRA}/bad-backend")
    assert cond(parent, "Accepted") == ("True", "Accepted")                 # attached all the same
    assert cond(parent, "ResolvedRefs") == ("False", reason)


def test_cross_namespace_backend_with_a_reference_grant() -> None:
    grant = f"""
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {{name: allow-infra-routes, namespace: {WEB}}}
spec:
  from: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: {INFRA}}}]
  to: [{{group: "", kind: Service, name: web-backend}}]
"""
    state = state_with(http_route("cross", f"""
  - backendRefs: [{{name: web-backend, namespace: {WEB}, port: 8080}}]"""), grant)
    assert served_by(config(state), "x") == "web-backend"
    (parent,) = statuses(state, f"{INFRA}/cross")
    assert cond(parent, "ResolvedRefs") == ("True", "ResolvedRefs")
    # a grant for another Service does not count
    other = grant.replace("name: web-backend}", "name: something-else}")
    state = state_with(http_route("cross", f"""
  - backendRefs: [{{name: web-backend, namespace: {WEB}, port: 8080}}]"""), other)
    assert cond(statuses(state, f"{INFRA}/cross")[0], "ResolvedRefs") == ("False", "RefNotPermitted")


# ---- cross-namespace routes and allowedRoutes -----------------------------------------------------

@pytest.mark.parametrize(("ns", "parent", "host", "accepted", "reason", "reached"), [
    (WEB, "same-namespace", "x", "False", "NotAllowedByListeners", None),            # Same rejects
    (INFRA, "same-namespace", "x", "True", "Accepted", "infra-backend-v1"),
    (WEB, "all-namespaces", "a.all.example.com", "True", "Accepted", "infra-backend-v1"),   # All accepts
    (APP, "backend-namespaces", "selected.example.com", "True", "Accepted", "infra-backend-v1"),
    (WEB, "backend-namespaces", "selected.example.com", "False", "NotAllowedByListeners", None),
])
def test_allowed_routes_namespaces(ns: str, parent: str, host: str, accepted: str, reason: str,
                                   reached: str | None) -> None:
    grant = f"""
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {{name: to-infra, namespace: {INFRA}}}
spec:
  from: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: {ns}}}]
  to: [{{group: "", kind: Service}}]
"""
    state = state_with(http_route("cross-ns", f"""
  - backendRefs: [{{name: infra-backend-v1, namespace: {INFRA}, port: 8080}}]""", ns=ns, parent=parent),
                       grant)
    assert served_by(config(state), host) == reached
    (p,) = statuses(state, f"{ns}/cross-ns")
    assert cond(p, "Accepted") == (accepted, reason)
    assert cond(p, "ResolvedRefs") == ("True", "ResolvedRefs")
    message = next(c["message"] for c in p["conditions"] if c["type"] == "Accepted")
    if reason == "NotAllowedByListeners":
        assert "listener http" in message


def test_selector_uses_namespace_labels_given_as_an_argument() -> None:
    state = state_with(http_route("cross-ns", """
  - backendRefs: [{name: web-backend, port: 8080}]""", ns=WEB, parent="backend-namespaces"))
    del state["namespaces"]
    got = route_statuses(state, namespaces={WEB: {"gateway-conformance": "backend"}})
    assert cond(got[f"{WEB}/cross-ns"][0], "Accepted") == ("True", "Accepted")
    cfg = GatewayConfig.build(state, "1", namespace="istio-system", pod_name=GW_POD, pod_labels=GW_LABELS,
                              service_account=SA, namespaces={WEB: {"gateway-conformance": "backend"}})
    assert served_by(cfg, "selected.example.com") == "web-backend"
    # without labels only kubernetes.io/metadata.name is known: the selector does not match
    assert cond(route_statuses(state)[f"{WEB}/cross-ns"][0], "Accepted") == (
        "False", "NotAllowedByListeners")


# ---- parentRef selection: sectionName and port ---------------------------------------------------

TWO_LISTENERS = f"""
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: two, namespace: {INFRA}}}
spec:
  gatewayClassName: istio
  listeners:
  - {{name: one, port: 80, protocol: HTTP, hostname: one.example.com}}
  - {{name: two, port: 80, protocol: HTTP, hostname: two.example.com}}
"""


@pytest.mark.parametrize(("extra", "reason", "one", "two"), [
    ("", "Accepted", "infra-backend-v1", "infra-backend-v1"),
    (", sectionName: two", "Accepted", None, "infra-backend-v1"),
    (", port: 80", "Accepted", "infra-backend-v1", "infra-backend-v1"),
    (", sectionName: one, port: 80", "Accepted", "infra-backend-v1", None),
    (", sectionName: three", "NoMatchingParent", None, None),
    (", port: 8080", "NoMatchingParent", None, None),
])
def test_parent_ref_section_name_and_port(extra: str, reason: str, one: str | None, two: str | None) -> None:
    state = state_with(http_route("pick", """
  - backendRefs: [{name: infra-backend-v1, port: 8080}]""", parent="two", parent_extra=extra),
                       gateways=TWO_LISTENERS)
    cfg = config(state)
    assert (served_by(cfg, "one.example.com"), served_by(cfg, "two.example.com")) == (one, two)
    (p,) = statuses(state, f"{INFRA}/pick")
    assert cond(p, "Accepted")[1] == reason
    assert p["parentRef"]["name"] == "two" and p["controllerName"] == "istio.io/gateway-controller"
    listeners = {lst["name"]: lst["attachedRoutes"]
                 for lst in gateway_statuses(state)[f"{INFRA}/two"]["listeners"]}
    assert listeners == {"one": int(one is not None), "two": int(two is not None)}


def test_parents_that_are_not_ours_and_missing_gateways() -> None:
    waypoint = f"""
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: waypoint, namespace: {INFRA}}}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{{name: mesh, port: 15008, protocol: HBONE}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: mixed, namespace: {INFRA}}}
spec:
  parentRefs:
  - {{name: waypoint}}
  - {{name: infra-backend-v1, kind: Service, group: ""}}
  - {{name: nowhere}}
  - {{name: same-namespace}}
  rules: [{{backendRefs: [{{name: infra-backend-v1, port: 8080}}]}}]
"""
    got = route_statuses(state_with(waypoint))[f"{INFRA}/mixed"]
    assert [(p["parentRef"]["name"], cond(p, "Accepted")) for p in got] == [
        ("nowhere", ("False", "NoMatchingParent")), ("same-namespace", ("True", "Accepted"))]
    assert "does not exist" in got[0]["conditions"][0]["message"]


# ---- Gateway and listener status -------------------------------------------------------------------

def self_signed(name: str) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=3650))
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode())


CERT = self_signed("secure.example.com")


def secret(ns: str, name: str, cert: str = CERT[0], key: str = CERT[1]) -> dict[str, dict[str, Any]]:
    b64 = base64.b64encode
    return {"secrets": {f"{ns}/{name}": {
        "type": "kubernetes.io/tls", "metadata": {"namespace": ns, "name": name},
        "data": {"tls.crt": b64(cert.encode()).decode(), "tls.key": b64(key.encode()).decode()}}}}


STATUS_GW = f"""
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: status, namespace: {INFRA}}}
spec:
  gatewayClassName: istio
  listeners:
  - {{name: http, port: 80, protocol: HTTP}}
  - name: https
    port: 443
    protocol: HTTPS
    hostname: secure.example.com
    tls: {{certificateRefs: [{{name: tls-cert}}]}}
  - name: https-other-ns
    port: 443
    protocol: HTTPS
    hostname: other.example.com
    tls: {{certificateRefs: [{{name: tls-cert, namespace: {WEB}}}]}}
  - name: https-missing
    port: 443
    protocol: HTTPS
    hostname: missing.example.com
    tls: {{certificateRefs: [{{name: not-there}}]}}
  - {{name: alt, port: 8080, protocol: HTTP}}
  - {{name: tcp, port: 80, protocol: TCP}}
  - name: kinds
    port: 80
    protocol: HTTP
    hostname: kinds.example.com
    allowedRoutes: {{kinds: [{{kind: HTTPRoute}}, {{kind: TCPRoute}}]}}
"""


def test_listener_and_gateway_conditions() -> None:
    state = state_with(http_route("attached", """
  - backendRefs: [{name: infra-backend-v1, port: 8080}]""", parent="status"),
                       extra={**secret(INFRA, "tls-cert")}, gateways=STATUS_GW)
    state["secrets"].update(secret(WEB, "tls-cert")["secrets"])
    state["gateways.gateway.networking.k8s.io"][f"{INFRA}/status"]["metadata"]["generation"] = 3
    status = gateway_statuses(state, address="127.0.0.1")[f"{INFRA}/status"]
    by_name = {lst["name"]: lst for lst in status["listeners"]}

    def listener(name: str) -> dict[str, tuple[str, str]]:
        return {c["type"]: (c["status"], c["reason"]) for c in by_name[name]["conditions"]}

    assert listener("http") == {"Accepted": ("True", "Accepted"), "ResolvedRefs": ("True", "ResolvedRefs"),
                                "Programmed": ("True", "Programmed")}
    assert by_name["http"]["supportedKinds"] == [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"}]
    assert by_name["http"]["attachedRoutes"] == 1
    assert by_name["https"]["attachedRoutes"] == 1          # no hostnames: every listener that allows it
    assert listener("https")["ResolvedRefs"] == ("True", "ResolvedRefs")
    assert listener("https-other-ns")["ResolvedRefs"] == ("False", "RefNotPermitted")
    assert listener("https-other-ns")["Programmed"] == ("False", "Invalid")
    assert listener("https-missing")["ResolvedRefs"] == ("False", "InvalidCertificateRef")
    assert listener("alt")["Accepted"] == ("False", "PortUnavailable")
    assert by_name["alt"]["attachedRoutes"] == 1            # attachment does not depend on the port
    assert listener("tcp")["Accepted"] == ("False", "UnsupportedProtocol")
    assert by_name["tcp"]["supportedKinds"] == [] and by_name["tcp"]["attachedRoutes"] == 0
    assert listener("kinds")["ResolvedRefs"] == ("False", "InvalidRouteKinds")
    assert by_name["kinds"]["supportedKinds"] == [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"}]
    gw = {c["type"]: c for c in status["conditions"]}
    assert (gw["Accepted"]["status"], gw["Accepted"]["reason"]) == ("True", "ListenersNotValid")
    assert (gw["Programmed"]["status"], gw["Programmed"]["reason"]) == ("False", "Invalid")
    assert "port 8080 is not published" in gw["Programmed"]["message"]
    assert all(c["observedGeneration"] == 3 for c in status["conditions"])
    assert status["addresses"] == [{"type": "IPAddress", "value": "127.0.0.1"}]
    # the data plane agrees: only the valid HTTPS listener has a certificate; 8080 is not served
    cfg = config(state)
    assert cfg.certificate_for(443, "secure.example.com") == CERT
    assert cfg.certificate_for(443, "other.example.com") is None
    assert cfg.certificate_for(443, "missing.example.com") is None
    assert set(cfg.ports()) == {80, 443}


def test_cross_namespace_certificate_with_a_grant_and_a_bad_secret() -> None:
    grant = f"""
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {{name: certs, namespace: {WEB}}}
spec:
  from: [{{group: gateway.networking.k8s.io, kind: Gateway, namespace: {INFRA}}}]
  to: [{{group: "", kind: Secret}}]
"""
    mismatched = secret(INFRA, "not-there", CERT[0], self_signed("x")[1])     # key of another cert
    state = state_with(grant, extra={**secret(WEB, "tls-cert")}, gateways=STATUS_GW)
    state["secrets"].update(mismatched["secrets"])
    by_name = {lst["name"]: {c["type"]: (c["status"], c["reason"], c["message"]) for c in lst["conditions"]}
               for lst in gateway_statuses(state)[f"{INFRA}/status"]["listeners"]}
    assert by_name["https-other-ns"]["ResolvedRefs"][:2] == ("True", "ResolvedRefs")
    assert by_name["https-missing"]["ResolvedRefs"][:2] == ("False", "InvalidCertificateRef")
    assert "does not match" in by_name["https-missing"]["ResolvedRefs"][2]
    assert config(state).certificate_for(443, "other.example.com") == CERT


def test_a_fully_valid_gateway_is_accepted_and_programmed() -> None:
    status = gateway_statuses(state_with())[f"{INFRA}/same-namespace"]
    assert [(c["type"], c["status"], c["reason"]) for c in status["conditions"]] == [
        ("Accepted", "True", "Accepted"), ("Programmed", "True", "Programmed")]
    assert "addresses" not in status


def test_status_reads_the_control_plane_model_records_too() -> None:
    """The control plane's model keeps services as records with attributes, not dicts."""
    state = state_with(http_route("plain", """
  - backendRefs: [{name: infra-backend-v1, port: 8080}]"""))
    state["service"] = {k: SimpleNamespace(namespace=v["namespace"], name=v["name"])
                        for k, v in state["service"].items()}
    (p,) = route_statuses(state)[f"{INFRA}/plain"]
    assert cond(p, "ResolvedRefs") == ("True", "ResolvedRefs")
