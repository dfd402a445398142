"""What the shared ingress gateway makes of the pushed state: Istio Gateway servers and the
VirtualServices bound to them, routing by Host, TLS certificates per SNI, policies that apply
to the gateway pod, rate-limit targets and the trusted client address (tables, no sockets)."""

from __future__ import annotations

import base64
import datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from zeromesh.api import load_path, load_text, validate_all
from zeromesh.gateway import GatewayConfig, client_address, hosts, trusted_hops_from_annotations
from zeromesh.policy import Request, evaluate
from zeromesh.routing import HttpRequest, Route, find_route, redirect_location

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "istio-ambient-demo"
GW_LABELS = {"istio": "ingressgateway", "app": "istio-ingressgateway"}
GW_SA = "istio-ingressgateway-service-account"
GW_POD = "istio-ingressgateway-7d9c"


# ---- state builders --------------------------------------------------------------------------

def wl(name: str, ns: str, ip: str, labels: dict[str, str], sa: str = "default",
       **extra: Any) -> dict[str, Any]:
    return {"uid": f"u-{ns}-{name}", "namespace": ns, "name": name, "ip": ip, "node": "node1",
            "service_account": sa, "labels": labels, "protocol": "HBONE", "workload_name": name,
            "canonical_name": name, "canonical_revision": "latest", "ready": True, **extra}


def svc(name: str, ns: str, vip: str, pods: list[dict[str, Any]], port: int = 80,
        target: int = 8080, ports: dict[int, int] | None = None) -> dict[str, Any]:
    mapping = ports or {port: target}
    return {"namespace": ns, "name": name, "hostname": f"{name}.{ns}.svc.cluster.local", "vip": vip,
            "ports": [{"port": p, "target_port": t} for p, t in mapping.items()],
            "endpoints": [{"workload_uid": p["uid"], "ip": p["ip"],
                           "ports": {str(k): v for k, v in mapping.items()}, "ready": True}
                          for p in pods]}


def objects(text: str) -> dict[str, dict[str, Any]]:
    """Manifests as the store keeps them (validated, defaults filled), by resource."""
    out: dict[str, dict[str, Any]] = {}
    for v in validate_all(load_text(text, "test.yaml")):
        md = v.obj["metadata"]
        out.setdefault(v.info.resource, {})[f"{md.get('namespace', '')}/{md['name']}"] = v.obj
    return out


def merge(*parts: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for part in parts:
        for resource, recs in part.items():
            out.setdefault(resource, {}).update(recs)
    return out


GATEWAY_POD = wl(GW_POD, "istio-system", "10.244.1.5", GW_LABELS, GW_SA)
ECHO1 = wl("echo-1", "ns1", "10.244.1.10", {"app": "echoserver-app-ns1", "version": "v1"})
ECHO2 = wl("echo-2", "ns1", "10.244.2.11", {"app": "echoserver-app-ns1", "version": "v2"})
OTHER = wl("other", "ns2", "10.244.2.20", {"app": "other"})


def base_state() -> dict[str, dict[str, Any]]:
    pods = [GATEWAY_POD, ECHO1, ECHO2, OTHER]
    return {"workload": {p["uid"]: p for p in pods},
            "service": {"ns1/echoserver-service-ns1": svc("echoserver-service-ns1", "ns1", "10.96.0.20",
                                                          [ECHO1, ECHO2], 80, 80),
                        "ns2/other": svc("other", "ns2", "10.96.0.21", [OTHER], 80, 8080)},
            "waypoint": {}}


def build(*extra: dict[str, dict[str, Any]], **kw: Any) -> GatewayConfig:
    return GatewayConfig.build(merge(base_state(), *extra), "1", namespace="istio-system",
                               pod_name=GW_POD, pod_labels=GW_LABELS, service_account=GW_SA, **kw)


def route(cfg: GatewayConfig, host: str, path: str = "/", port: int = 80) -> Route | None:
    dest = cfg.listener_destination(port, host)
    found = find_route(cfg.routes_for(dest), HttpRequest("GET", path, host, {"host": host}))
    return found[0] if found else None


def backend(cfg: GatewayConfig, host: str, path: str = "/", port: int = 80) -> str | None:
    r = route(cfg, host, path, port)
    return r.action.backends[0].host.split(".")[0] if r is not None and r.action.backends else None


# ---- the seed demo -------------------------------------------------------------------------------

def test_seed_demo_gateway_routes_any_host_on_port_80_to_the_echo_service() -> None:
    seed: dict[str, dict[str, Any]] = {}
    for v in validate_all(load_path(str(EXAMPLES / "istio-gateway.yaml"))):
        md = v.obj["metadata"]
        seed.setdefault(v.info.resource, {})[f"{md['namespace']}/{md['name']}"] = v.obj
    cfg = build(seed)
    assert cfg.ports() == {80: "HTTP"}
    assert [(lst.gateway.key, lst.protocol, lst.hostnames) for lst in cfg.listeners(80)] == [
        ("ns1/gateway-ns1", "HTTP", ("*",))]
    dest = cfg.listener_destination(80, "anything")
    assert dest.vhost == "*" and dest.service is None and dest.workload is None
    r = route(cfg, "anything")
    assert r is not None and r.name == "ns1/echoserver-gw-vs/http[0]"
    (b,) = r.action.backends
    assert (b.host, b.port) == ("echoserver-service-ns1.ns1.svc.cluster.local", 80)
    eps = cfg.endpoints(b.host, b.port, b.subset, dest)
    assert eps is not None and sorted(e.key for e in eps) == ["10.244.1.10:80", "10.244.2.11:80"]
    assert all(e.service is not None and e.service.name == "echoserver-service-ns1" for e in eps)
    # nothing is published on 443; any Host (port suffix, case) reaches the same route
    assert route(cfg, "anything", port=443) is None
    assert backend(cfg, "Example.COM:80") == "echoserver-service-ns1"


# ---- Istio Gateways and VirtualServices ---------------------------------------------------------

ISTIO = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: ns1, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*.example.com", "exact.example.com", "ns2/only-ns2.com", "./same-ns.com"]
  - port: {number: 8080, name: alt, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: elsewhere, namespace: ns1}
spec:
  selector: {istio: eastwestgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: wild, namespace: ns1, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  hosts: ["*.example.com"]
  gateways: [edge]
  http:
  - route: [{destination: {host: echoserver-service-ns1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: exact, namespace: ns1, creationTimestamp: "2024-01-02T00:00:00Z"}
spec:
  hosts: ["exact.example.com"]
  gateways: [ns1/edge]
  http:
  - match: [{uri: {prefix: /v2}}]
    route: [{destination: {host: echoserver-service-ns1, subset: v2}}]
  - match: [{uri: {prefix: /other}, gateways: [elsewhere]}]
    route: [{destination: {host: other.ns2.svc.cluster.local}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ns2-vs, namespace: ns2}
spec:
  hosts: ["only-ns2.com", "same-ns.com"]
  gateways: [ns1/edge]
  http:
  - route: [{destination: {host: other}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: mesh-only, namespace: ns1}
spec:
  hosts: ["mesh.example.com"]
  gateways: [mesh]
  http:
  - route: [{destination: {host: other.ns2.svc.cluster.local}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo, namespace: ns1}
spec:
  host: echoserver-service-ns1
  subsets:
  - {name: v2, labels: {version: v2}}
"""


@pytest.mark.parametrize(("host", "path", "want"), [
    ("foo.example.com", "/", "ns1/wild/http[0]"),            # wildcard server host and VS host
    ("a.b.example.com", "/", "ns1/wild/http[0]"),            # a wildcard covers several labels
    ("FOO.example.com:80", "/", "ns1/wild/http[0]"),         # case and :port ignored
    ("exact.example.com", "/v2/x", "ns1/exact/http[0]"),     # the exact host gets both VirtualServices,
    ("exact.example.com", "/", "ns1/wild/http[0]"),          # ...the older one's catch-all sorted last
    ("exact.example.com", "/other", "ns1/wild/http[0]"),     # a match for another gateway is dropped
    ("example.com", "/", None),                              # *.example.com never matches example.com
    ("only-ns2.com", "/", "ns2/ns2-vs/http[0]"),             # "ns2/host": only ns2's VirtualServices
    ("same-ns.com", "/", None),                              # "./host": the Gateway's namespace only
    ("mesh.example.com", "/", "ns1/wild/http[0]"),           # the mesh-only VS is not bound here
    ("unknown.org", "/", None),                              # no entry: 404
])
def test_istio_routing_by_host(host: str, path: str, want: str | None) -> None:
    cfg = build(objects(ISTIO))
    r = route(cfg, host, path)
    assert (r.name if r is not None else None) == want


def test_a_catch_all_route_goes_last_in_a_gateway_host() -> None:
    text = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: ns1}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: ns1}
spec:
  hosts: ["*"]
  gateways: [edge]
  http:
  - name: all
    match: [{uri: {prefix: /}}, {uri: {exact: /special}}]
    route: [{destination: {host: echoserver-service-ns1}}]
  - name: api
    match: [{uri: {prefix: /api}}]
    route: [{destination: {host: other.ns2.svc.cluster.local}}]
"""
    cfg = build(objects(text))
    names = [(r.name, r.matches[0].path.value if r.matches and r.matches[0].path else None)
             for r in cfg.routes_for(cfg.listener_destination(80, "x"))]
    assert names == [("all", "/special"), ("api", "/api"), ("all", "/")]
    assert backend(cfg, "x", "/api/v1") == "other"
    assert backend(cfg, "x", "/special") == "echoserver-service-ns1"


def test_istio_subset_endpoints_and_unserved_servers() -> None:
    cfg = build(objects(ISTIO))
    r = route(cfg, "exact.example.com", "/v2")
    assert r is not None
    (b,) = r.action.backends
    dest = cfg.listener_destination(80, "exact.example.com")
    eps = cfg.endpoints(b.host, b.port, b.subset, dest)
    assert eps is not None and [e.key for e in eps] == ["10.244.2.11:80"]
    assert cfg.ports() == {80: "HTTP"}                    # port 8080 is not published
    assert any("servers[1] (port 8080)" in p and "publishes only ports 80 and 443" in p
               for p in cfg.problems)
    assert {lst.gateway.key for lst in cfg.listeners(80)} == {"ns1/edge"}   # selector not ours


def test_a_host_header_naming_a_service_is_not_an_open_relay() -> None:
    state = base_state()
    hidden = wl("hidden", "ns2", "10.244.2.30", {"app": "hidden"})
    state["workload"][hidden["uid"]] = hidden
    state["service"]["ns2/hidden"] = svc("hidden", "ns2", "10.96.0.30", [hidden])
    cfg = GatewayConfig.build(merge(state, objects(ISTIO)), "1", namespace="istio-system",
                              pod_name=GW_POD, pod_labels=GW_LABELS, service_account=GW_SA)
    dest = cfg.listener_destination(80, "hidden.ns2.svc.cluster.local")
    assert dest.vhost is None and not cfg.serves(dest)
    assert find_route(cfg.routes_for(dest), HttpRequest("GET", "/", dest.host)) is None   # 404
    # a service no route names is never an upstream, whatever the engine asks
    assert cfg.endpoints("hidden.ns2.svc.cluster.local", 80, None, dest) is None
    assert cfg.endpoints("missing.ns1.svc.cluster.local", 80, None, dest) is None
    assert cfg.endpoints("other.ns2.svc.cluster.local", 80, None, dest) is not None   # a backend


HTTPS = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: tls, namespace: ns1}
spec:
  selector: {app: istio-ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["secure.example.com"]
    tls: {mode: SIMPLE, credentialName: secure-cert}
  - port: {number: 443, name: https-wild, protocol: HTTPS}
    hosts: ["*.wild.example.com"]
    tls: {mode: SIMPLE, credentialName: wild-cert}
  - port: {number: 443, name: https-missing, protocol: HTTPS}
    hosts: ["missing.example.com"]
    tls: {mode: SIMPLE, credentialName: not-there}
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["secure.example.com"]
    tls: {httpsRedirect: true}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: secure, namespace: ns1}
spec:
  hosts: ["secure.example.com", "*.wild.example.com"]
  gateways: [tls]
  http:
  - route: [{destination: {host: echoserver-service-ns1, port: {number: 80}}}]
"""


def self_signed(name: str) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode())


def tls_secret(ns: str, name: str, cert: str, key: str) -> dict[str, dict[str, Any]]:
    b64 = base64.b64encode
    return {"secrets": {f"{ns}/{name}": {
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"namespace": ns, "name": name},
        "data": {"tls.crt": b64(cert.encode()).decode(), "tls.key": b64(key.encode()).decode()}}}}


SECURE = self_signed("secure.example.com")
WILD = self_signed("*.wild.example.com")


def test_istio_https_certificates_by_sni() -> None:
    cfg = build(objects(HTTPS), tls_secret("istio-system", "secure-cert", *SECURE),
                tls_secret("istio-system", "wild-cert", *WILD),
                tls_secret("ns1", "not-there", *SECURE))   # credentialName: the pod's namespace only
    assert cfg.ports() == {80: "HTTP", 443: "HTTPS"}
    assert [h for h, _, _ in cfg.certificates(443)] == [("secure.example.com",), ("*.wild.example.com",)]
    assert cfg.certificate_for(443, "secure.example.com") == SECURE
    assert cfg.certificate_for(443, "SECURE.example.com") == SECURE
    assert cfg.certificate_for(443, "a.wild.example.com") == WILD
    assert cfg.certificate_for(443, "wild.example.com") is None
    assert cfg.certificate_for(443, "missing.example.com") is None      # handshake fails cleanly
    assert cfg.certificate_for(443, None) is None                       # no SNI, no catch-all
    assert cfg.certificate_for(80, "secure.example.com") is None
    assert any("Secret istio-system/not-there does not exist" in p for p in cfg.problems)
    assert backend(cfg, "x.wild.example.com", port=443) == "echoserver-service-ns1"
    # the HTTP server redirects to HTTPS before any route
    r = route(cfg, "secure.example.com:80", "/a?b=1")
    assert r is not None and r.action.redirect is not None
    req = HttpRequest("GET", "/a?b=1", "secure.example.com:80")
    assert redirect_location(r.action.redirect, None, req) == "https://secure.example.com/a?b=1"
    assert route(cfg, "other.example.com") is None            # not a host of the redirecting server


def test_https_redirect_covers_server_hosts_no_virtual_service_binds() -> None:
    text = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: redirect-only, namespace: ns1}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*.example.com"]
    tls: {httpsRedirect: true}
"""
    cfg = build(objects(text))
    r = route(cfg, "a.example.com")
    assert r is not None and r.action.redirect is not None and r.action.redirect.scheme == "https"


def test_a_catch_all_https_server_answers_without_sni() -> None:
    text = HTTPS.replace('hosts: ["secure.example.com"]\n    tls: {mode: SIMPLE',
                         'hosts: ["*"]\n    tls: {mode: SIMPLE', 1)
    cfg = build(objects(text), tls_secret("istio-system", "secure-cert", *SECURE))
    assert cfg.certificate_for(443, None) == SECURE
    assert cfg.certificate_for(443, "anything.org") == SECURE


# ---- policies --------------------------------------------------------------------------------

def policy(ns: str, name: str, spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {"authorizationpolicies.security.istio.io": {
        f"{ns}/{name}": {"metadata": {"namespace": ns, "name": name}, "spec": spec}}}


EDGE_ALLOW = policy("istio-system", "edge", {
    "selector": {"matchLabels": {"istio": "ingressgateway"}}, "action": "ALLOW",
    "rules": [{"from": [{"source": {"remoteIpBlocks": ["203.0.113.0/24"]}}]}]})
EDGE_DENY = policy("istio-system", "edge-deny", {
    "selector": {"matchLabels": {"app": "istio-ingressgateway"}}, "action": "DENY",
    "rules": [{"from": [{"source": {"notRemoteIpBlocks": ["203.0.113.0/24", "198.51.100.0/24"]}}]}]})
OTHER_NS_SELECTOR = policy("ns1", "not-for-gw", {
    "selector": {"matchLabels": {"istio": "ingressgateway"}}, "action": "DENY", "rules": [{}]})
MESH_WIDE_DENY_POST = policy("istio-system", "no-post", {
    "action": "DENY", "rules": [{"to": [{"operation": {"methods": ["POST"]}}]}]})
GATEWAY_API_TARGET = policy("infra", "gw-get-only", {
    "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "api-gw"}],
    "rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]})

API_GW = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: api-gw, namespace: infra}
spec:
  gatewayClassName: istio
  listeners:
  - {name: http, port: 80, protocol: HTTP, hostname: api.example.org}
"""


@pytest.mark.parametrize(("policies", "host", "method", "remote", "allowed"), [
    ([EDGE_ALLOW], "x.example.com", "GET", "203.0.113.7", True),
    ([EDGE_ALLOW], "x.example.com", "GET", "192.0.2.1", False),
    ([EDGE_DENY], "x.example.com", "GET", "198.51.100.3", True),
    ([EDGE_DENY], "x.example.com", "GET", "127.0.0.1", False),
    ([OTHER_NS_SELECTOR], "x.example.com", "GET", "127.0.0.1", True),    # selects in ns1, not us
    ([MESH_WIDE_DENY_POST], "x.example.com", "POST", "127.0.0.1", False),  # root namespace: mesh-wide
    ([GATEWAY_API_TARGET], "api.example.org", "POST", "127.0.0.1", False),  # through api-gw
    ([GATEWAY_API_TARGET], "x.example.com", "POST", "127.0.0.1", True),     # not through api-gw
])
def test_policies_for_the_gateway(policies: list[dict[str, Any]], host: str, method: str, remote: str,
                                  allowed: bool) -> None:
    cfg = build(objects(ISTIO), objects(API_GW), *policies)
    dest = cfg.listener_destination(80, host)
    decision = evaluate(cfg.policy_set(dest), Request(
        None, "127.0.0.1", dest.ip, 80, method=method, path="/", host=host, remote_ip=remote))
    assert decision.allowed is allowed, decision.reason


def test_request_authentication_scope_matches_the_policies() -> None:
    ra = {"requestauthentications.security.istio.io": {"istio-system/jwt": {
        "metadata": {"namespace": "istio-system", "name": "jwt"},
        "spec": {"selector": {"matchLabels": {"istio": "ingressgateway"}},
                 "jwtRules": [{"issuer": "https://issuer.example", "jwks": '{"keys": []}'}]}}}}
    cfg = build(objects(ISTIO), ra)
    assert [p.name for p in cfg.authn_set(cfg.listener_destination(80, "x.example.com")).policies] == ["jwt"]


def test_rate_limit_targets_name_the_pod_the_gateways_and_the_route() -> None:
    cfg = build(objects(ISTIO))
    dest = cfg.listener_destination(80, "foo.example.com")
    targets = cfg.rate_limit_targets(dest, "ns1/wild/http[0]")
    assert targets[0] == ("gateway.networking.k8s.io", "Gateway", "istio-ingressgateway", "istio-system")
    assert ("gateway.networking.k8s.io", "Gateway", "edge", "ns1") in targets
    assert ("networking.istio.io", "Gateway", "edge", "ns1") in targets
    assert not any(t[1] == "HTTPRoute" for t in targets)       # a VirtualService route is no HTTPRoute
    assert (cfg.name, cfg.namespace) == ("istio-ingressgateway", "istio-system")


# ---- client address ---------------------------------------------------------------------------

@pytest.mark.parametrize(("xff", "hops", "want"), [
    ("203.0.113.9", 0, "127.0.0.1"),                       # no trusted hops: XFF ignored
    (None, 1, "127.0.0.1"),
    ("203.0.113.9", 1, "203.0.113.9"),
    ("198.51.100.1, 203.0.113.9", 1, "203.0.113.9"),        # Nth from the right
    ("198.51.100.1, 203.0.113.9", 2, "198.51.100.1"),
    ("203.0.113.9", 2, "127.0.0.1"),                        # fewer entries than hops
    ("not-an-ip, 203.0.113.9", 2, "127.0.0.1"),
    ("2001:db8::1", 1, "2001:db8::1"),
])
def test_client_address(xff: str | None, hops: int, want: str) -> None:
    assert client_address("127.0.0.1", xff, hops) == want


@pytest.mark.parametrize(("annotations", "want"), [
    ({}, 0),
    ({"proxy.istio.io/config": '{"gatewayTopology": {"numTrustedProxies": 2}}'}, 2),
    ({"proxy.istio.io/config": "gatewayTopology:\n  numTrustedProxies: 1\n"}, 1),
    ({"proxy.istio.io/config": "gatewayTopology: {numTrustedProxies: -1}"}, 0),
    ({"proxy.istio.io/config": ": not yaml ["}, 0),
])
def test_trusted_hops_from_the_pod_annotation(annotations: dict[str, str], want: int) -> None:
    assert trusted_hops_from_annotations(annotations) == want


def test_trusted_hops_from_the_workload_record_or_the_argument() -> None:
    state = base_state()
    state["workload"][GATEWAY_POD["uid"]] = {**GATEWAY_POD, "annotations": {
        "proxy.istio.io/config": "gatewayTopology: {numTrustedProxies: 1}"}}
    args = {"namespace": "istio-system", "pod_name": GW_POD, "pod_labels": GW_LABELS,
            "service_account": GW_SA}
    assert GatewayConfig.build(state, "1", **args).trusted_hops == 1
    assert GatewayConfig.build(state, "1", trusted_hops=3, **args).trusted_hops == 3
    assert build().trusted_hops == 0


# ---- host names ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("written", "want"), [
    ("Example.COM", "example.com"), ("example.com:8080", "example.com"), ("[::1]:80", "::1"),
    ("::1", "::1"), ("10.0.0.1:80", "10.0.0.1"),
])
def test_normalize_host(written: str, want: str) -> None:
    assert hosts.normalize_host(written) == want


@pytest.mark.parametrize(("a", "b", "want"), [
    ("*", "foo.com", "foo.com"), ("*.example.com", "foo.example.com", "foo.example.com"),
    ("foo.example.com", "*.example.com", "foo.example.com"),
    ("*.example.com", "*.foo.example.com", "*.foo.example.com"),
    ("*.example.com", "example.com", None), ("foo.com", "bar.com", None),
    ("*.example.com", "*.example.org", None), ("*", "*", "*"),
])
def test_hostname_intersection(a: str, b: str, want: str | None) -> None:
    assert hosts.intersect(a, b) == want


def test_lookup_prefers_exact_then_longest_wildcard_then_any() -> None:
    table = {"*": 0, "*.example.com": 1, "*.a.example.com": 2, "b.a.example.com": 3}
    assert hosts.lookup(table, "b.a.example.com") == ("b.a.example.com", 3)
    assert hosts.lookup(table, "c.a.example.com") == ("*.a.example.com", 2)
    assert hosts.lookup(table, "a.example.com") == ("*.example.com", 1)
    assert hosts.lookup(table, "example.com") == ("*", 0)
