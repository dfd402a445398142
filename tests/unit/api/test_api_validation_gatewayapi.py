"""Gateway API kinds: Gateway (incl. Istio waypoints), HTTPRoute and the light ones."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import Api

DELETE = "<delete>"  # see conftest.patched
G = "gateway.networking.k8s.io"
GTW = (G, "Gateway")
HR = (G, "HTTPRoute")
L0 = "spec.listeners[0]"
R0 = "spec.rules[0]"
M0 = f"{R0}.matches[0]"
F0 = f"{R0}.filters[0]"
B0 = f"{R0}.backendRefs[0]"


def flt(kind: str, **sub: Any) -> dict[str, Any]:
    return {"type": kind, **sub}


ERRORS: list[tuple[tuple[str, str], dict[str, Any], str, str]] = [
    # Gateway
    (GTW, {"spec.gatewayClassName": DELETE}, "spec.gatewayClassName", "is required"),
    (GTW, {"spec.listeners": []}, "spec.listeners", "must not be empty"),
    (GTW, {"spec.listeners": DELETE}, "spec.listeners", "is required"),
    (GTW, {"spec.listeners[1]": {"name": "http", "port": 81, "protocol": "HTTP"}},
     "spec.listeners[1].name", 'duplicate name "http" (also used by spec.listeners[0])'),
    (GTW, {"spec.listeners[1]": {"name": "other", "port": 80, "protocol": "HTTP"}},
     "spec.listeners[1]", "port, protocol and hostname must be unique"),
    (GTW, {f"{L0}.port": 0}, f"{L0}.port", "0 is out of range 1-65535"),
    (GTW, {f"{L0}.port": DELETE}, f"{L0}.port", "is required"),
    (GTW, {f"{L0}.name": "HTTP_1"}, f"{L0}.name", "DNS-1123 subdomain"),
    (GTW, {f"{L0}.protocol": "QUIC"}, f"{L0}.protocol",
     'unsupported protocol "QUIC"; must be one of HTTP, HTTPS, TLS, TCP, UDP, HBONE'),
    (GTW, {f"{L0}.protocol": "http"}, f"{L0}.protocol", "unsupported protocol"),
    (GTW, {f"{L0}.protocol": "HTTPS"}, f"{L0}.tls", "is required for protocol HTTPS"),
    (GTW, {f"{L0}.protocol": "TLS"}, f"{L0}.tls", "is required for protocol TLS"),
    (GTW, {f"{L0}.tls": {"mode": "Terminate"}}, f"{L0}.tls",
     "must not be set for protocol HTTP"),
    (GTW, {f"{L0}.protocol": "TCP", f"{L0}.hostname": "a.example.com"}, f"{L0}.hostname",
     "must not be set for protocol TCP"),
    (GTW, {f"{L0}.hostname": "A.Example.com"}, f"{L0}.hostname", "not a valid hostname"),
    (GTW, {f"{L0}.protocol": "HTTPS", f"{L0}.tls": {"mode": "Terminal"}}, f"{L0}.tls.mode",
     "must be one of: Terminate, Passthrough"),
    (GTW, {f"{L0}.protocol": "HTTPS", f"{L0}.tls": {"certificateRefs": [{"kind": "Secret"}]}},
     f"{L0}.tls.certificateRefs[0].name", "is required"),
    (GTW, {f"{L0}.allowedRoutes": {"namespaces": {"from": "Everywhere"}}},
     f"{L0}.allowedRoutes.namespaces.from", "must be one of: All, Same, Selector"),
    (GTW, {f"{L0}.allowedRoutes": {"namespaces": {"from": "Selector"}}},
     f"{L0}.allowedRoutes.namespaces.selector", "is required when from is Selector"),
    (GTW, {f"{L0}.allowedRoutes": {"namespaces": {"from": "Selector", "selector": {
        "matchExpressions": [{"key": "a", "operator": "In"}]}}}},
     f"{L0}.allowedRoutes.namespaces.selector.matchExpressions[0].values",
     "must not be empty when operator is In"),
    (GTW, {f"{L0}.allowedRoutes": {"kinds": [{"group": G}]}},
     f"{L0}.allowedRoutes.kinds[0].kind", "is required"),
    (GTW, {"spec.addresses": [{"type": "IPAddress"}]}, "spec.addresses[0].value",
     "is required"),
    (GTW, {"spec.gatewayclassname": "istio"}, "spec.gatewayclassname", "unknown field"),
    # HTTPRoute
    (HR, {"spec.parentRefs[0].name": DELETE}, "spec.parentRefs[0].name", "is required"),
    (HR, {"spec.parentRefs[0].port": 70000}, "spec.parentRefs[0].port", "out of range"),
    (HR, {"spec.parentRefs[0].sectionName": "Bad Name"}, "spec.parentRefs[0].sectionName",
     "DNS-1123 subdomain"),
    (HR, {"spec.hostnames": ["*.example.com", "bad_host"]}, "spec.hostnames[1]",
     "not a valid hostname"),
    (HR, {"spec.rules": [{"matches": [{"path": {"type": "Glob", "value": "/x"}}]}]},
     f"{M0}.path.type", "must be one of: Exact, PathPrefix, RegularExpression"),
    (HR, {"spec.rules": [{"matches": [{"path": {"value": "api"}}]}]}, f"{M0}.path.value",
     "\"api\" must start with '/'"),
    (HR, {"spec.rules": [{"matches": [{"path": {"type": "RegularExpression",
                                                "value": "/(a"}}]}]},
     f"{M0}.path.value", "invalid regular expression"),
    (HR, {"spec.rules": [{"matches": [{"headers": [{"value": "x"}]}]}]},
     f"{M0}.headers[0].name", "is required"),
    (HR, {"spec.rules": [{"matches": [{"headers": [{"name": "x"}]}]}]},
     f"{M0}.headers[0].value", "is required"),
    (HR, {"spec.rules": [{"matches": [{"headers": [{"name": "x", "value": "a",
                                                    "type": "Prefix"}]}]}]},
     f"{M0}.headers[0].type", "must be one of: Exact, RegularExpression"),
    (HR, {"spec.rules": [{"matches": [{"headers": [{"name": "x", "value": "[",
                                                    "type": "RegularExpression"}]}]}]},
     f"{M0}.headers[0].value", "invalid regular expression"),
    (HR, {"spec.rules": [{"matches": [{"queryParams": [{"name": "q", "value": "1"},
                                                       {"name": "q", "value": "2"}]}]}]},
     f"{M0}.queryParams[1].name", 'duplicate name "q"'),
    (HR, {"spec.rules": [{"matches": [{"method": "FETCH"}]}]}, f"{M0}.method",
     "must be one of: GET, HEAD"),
    (HR, {"spec.rules": [{"filters": [flt("Rewrite")]}]}, f"{F0}.type",
     "must be one of: RequestHeaderModifier"),
    (HR, {"spec.rules": [{"filters": [{"requestHeaderModifier": {}}]}]}, f"{F0}.type",
     "is required"),
    (HR, {"spec.rules": [{"filters": [flt("RequestHeaderModifier")]}]},
     f"{F0}.requestHeaderModifier", "is required when type is RequestHeaderModifier"),
    (HR, {"spec.rules": [{"filters": [flt("RequestRedirect", urlRewrite={})]}]},
     f"{F0}.urlRewrite", "must not be set when type is not URLRewrite"),
    (HR, {"spec.rules": [{"filters": [flt("RequestRedirect",
                                          requestRedirect={"statusCode": 304})]}]},
     f"{F0}.requestRedirect.statusCode", "304 is not one of: 301, 302, 303, 307, 308"),
    (HR, {"spec.rules": [{"filters": [flt("URLRewrite", urlRewrite={
        "path": {"type": "ReplacePrefixMatch"}})]}]},
     f"{F0}.urlRewrite.path.replacePrefixMatch", "is required when type is ReplacePrefixMatch"),
    (HR, {"spec.rules": [{"filters": [flt("RequestMirror", requestMirror={})]}]},
     f"{F0}.requestMirror.backendRef", "is required"),
    (HR, {"spec.rules": [{"filters": [flt("RequestMirror", requestMirror={
        "backendRef": {"name": "m"}})]}]},
     f"{F0}.requestMirror.backendRef.port", "is required when referring to a Service"),
    (HR, {"spec.rules": [{"filters": [flt("ExtensionRef", extensionRef={"name": "x"})]}]},
     f"{F0}.extensionRef.kind", "is required"),
    (HR, {"spec.rules": [{"filters": [flt("RequestHeaderModifier", requestHeaderModifier={
        "set": [{"name": "x", "value": 1}]})]}]},
     f"{F0}.requestHeaderModifier.set[0].value", "quote it"),
    (HR, {"spec.rules": [{"filters": [
        flt("RequestRedirect", requestRedirect={"scheme": "https"}),
        flt("URLRewrite", urlRewrite={"hostname": "a.example.com"})]}]},
     f"{R0}.filters", "may not contain both RequestRedirect and URLRewrite"),
    (HR, {"spec.rules": [{"backendRefs": [{"port": 80}]}]}, f"{B0}.name", "is required"),
    (HR, {"spec.rules": [{"backendRefs": [{"name": "svc"}]}]}, f"{B0}.port",
     "is required when referring to a Service"),
    (HR, {"spec.rules": [{"backendRefs": [{"name": "svc", "port": 80, "weight": -1}]}]},
     f"{B0}.weight", "-1 is out of range 0-1000000"),
    (HR, {"spec.rules": [{"backendRefs": [{"name": "svc", "port": 80, "filters": [
        flt("ResponseHeaderModifier")]}]}]},
     f"{B0}.filters[0].responseHeaderModifier", "is required"),
    (HR, {"spec.rules": [{"timeouts": {"request": "1.5s"}}]}, f"{R0}.timeouts.request",
     "expected a Gateway API duration"),
    (HR, {"spec.rules": [{"timeouts": {"request": "10s", "backendRequest": "20s"}}]},
     f"{R0}.timeouts.backendRequest", "must not be longer than the request timeout"),
    (HR, {"spec.rules": [{"timeouts": {"idle": "10s"}}]}, f"{R0}.timeouts.idle",
     "unknown field"),
    (HR, {"spec.rules": {"matches": []}}, "spec.rules", "must be a list, got a map"),
    # the light ones
    ((G, "GatewayClass"), {"spec.controllerName": DELETE}, "spec.controllerName",
     "is required"),
    ((G, "GRPCRoute"), {"spec.rules[0].backendRefs[0].name": DELETE},
     "spec.rules[0].backendRefs[0].name", "is required"),
    ((G, "TCPRoute"), {"spec.rules": DELETE}, "spec.rules", "is required"),
    ((G, "TCPRoute"), {"spec.rules": [{"backendRefs": []}]}, "spec.rules[0].backendRefs",
     "must not be empty"),
    ((G, "TLSRoute"), {"spec.rules[0].backendRefs[0].port": DELETE},
     "spec.rules[0].backendRefs[0].port", "is required when referring to a Service"),
    ((G, "TLSRoute"), {"spec.hostnames": ["Bad"]}, "spec.hostnames[0]", "not a valid hostname"),
    ((G, "ReferenceGrant"), {"spec.from": DELETE}, "spec.from", "is required"),
    ((G, "ReferenceGrant"), {"spec.from[0].namespace": DELETE}, "spec.from[0].namespace",
     "is required"),
    ((G, "ReferenceGrant"), {"spec.to": []}, "spec.to", "must not be empty"),
]


def _case_id(case: tuple[tuple[str, str], dict[str, Any], str, str]) -> str:
    return f"{case[0][1]}:{case[2]}"


@pytest.mark.parametrize("case", ERRORS, ids=[_case_id(c) for c in ERRORS])
def test_errors(api: Api, case: tuple[tuple[str, str], dict[str, Any], str, str]) -> None:
    kind, changes, path, fragment = case
    api.expect_error(api.minimal(*kind, **changes), path, fragment)


VALID: list[tuple[tuple[str, str], dict[str, Any]]] = [
    (GTW, {"spec.gatewayClassName": "istio-waypoint",
           "spec.listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}],
           "metadata.annotations": {"istio.io/for-service-account": "echo"}}),
    (GTW, {f"{L0}.protocol": "example.com/CUSTOM"}),
    (GTW, {"spec.listeners[1]": {"name": "https", "port": 443, "protocol": "HTTPS",
                                 "hostname": "*.example.com",
                                 "tls": {"certificateRefs": [{"name": "cert"}]}},
           "spec.listeners[2]": {"name": "tls", "port": 8443, "protocol": "TLS",
                                 "tls": {"mode": "Passthrough"}},
           "spec.addresses": [{"type": "IPAddress", "value": "10.0.0.9"}]}),
    (HR, {"spec.hostnames": ["echo.example.com"],
          "spec.rules": [{"matches": [{"path": {"type": "Exact", "value": "/get"},
                                       "headers": [{"name": "x-v", "value": "2"}],
                                       "method": "GET"}],
                          "filters": [flt("RequestHeaderModifier", requestHeaderModifier={
                              "add": [{"name": "x-a", "value": "b"}], "remove": ["x-c"]})],
                          "backendRefs": [{"name": "v1", "port": 80, "weight": 90},
                                          {"name": "v2", "port": 80, "weight": 10}],
                          "timeouts": {"request": "10s", "backendRequest": "2s"}}]}),
    (HR, {"spec.rules": [{"filters": [flt("RequestRedirect", requestRedirect={
        "scheme": "https", "statusCode": 301, "path": {
            "type": "ReplaceFullPath", "replaceFullPath": "/new"}})]}]}),
    (HR, {"spec.rules": [{"timeouts": {"request": "0s", "backendRequest": "1h"}}]}),
    (HR, {"spec.parentRefs": [{"kind": "Service", "group": "", "name": "echo",
                               "port": 80}]}),
    (HR, {"spec.rules": [{"backendRefs": [{"name": "ext", "kind": "ServiceImport",
                                           "group": "multicluster.x-k8s.io"}]}]}),
    ((G, "GRPCRoute"), {"spec.rules[0].matches": [{"method": {"service": "a.B"}}]}),
]


@pytest.mark.parametrize("case", VALID, ids=[f"{c[0][1]}-{i}" for i, c in enumerate(VALID)])
def test_valid(api: Api, case: tuple[tuple[str, str], dict[str, Any]]) -> None:
    kind, changes = case
    api.one(api.minimal(*kind, **changes))


def test_httproute_defaults(api: Api) -> None:
    spec = api.one(api.minimal(*HR)).obj["spec"]
    assert spec == {
        "parentRefs": [{"name": "demo", "group": G, "kind": "Gateway"}],
        "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}]}],
    }


def test_httproute_rule_and_match_defaults(api: Api) -> None:
    body = api.minimal(*HR, **{"spec.rules": [
        {"backendRefs": [{"name": "svc", "port": 80}]},
        {"matches": [{"headers": [{"name": "x", "value": "y"}]}, {"path": {"value": "/a"}},
                     {"path": {"type": "Exact"}}]},
    ]})
    rules = api.one(body).obj["spec"]["rules"]
    assert rules[0]["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
    assert rules[0]["backendRefs"] == [{"name": "svc", "port": 80, "group": "",
                                        "kind": "Service", "weight": 1}]
    assert rules[1]["matches"] == [
        {"headers": [{"name": "x", "value": "y", "type": "Exact"}],
         "path": {"type": "PathPrefix", "value": "/"}},
        {"path": {"value": "/a", "type": "PathPrefix"}},
        {"path": {"type": "Exact", "value": "/"}},
    ]


def test_gateway_defaults(api: Api) -> None:
    body = api.minimal(*GTW, **{"spec.listeners[1]": {
        "name": "https", "port": 443, "protocol": "HTTPS",
        "tls": {"certificateRefs": [{"name": "cert"}]}}})
    listeners = api.one(body).obj["spec"]["listeners"]
    assert listeners[0]["allowedRoutes"] == {"namespaces": {"from": "Same"}}
    assert listeners[1]["tls"] == {"certificateRefs": [{"name": "cert", "group": "",
                                                        "kind": "Secret"}],
                                   "mode": "Terminate"}


def test_waypoint_gateway_is_stored_as_written(api: Api) -> None:
    body = {"apiVersion": f"{G}/v1beta1", "kind": "Gateway",
            "metadata": {"name": "echo-service-account-ns2-gw", "namespace": "ns2",
                         "annotations": {"istio.io/for-service-account": "echo-sa"}},
            "spec": {"gatewayClassName": "istio-waypoint",
                     "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]}}
    v = api.one(body)
    assert v.warnings == ()
    assert v.key == ("gateways.gateway.networking.k8s.io", "ns2", "echo-service-account-ns2-gw")
    assert v.obj["metadata"]["annotations"] == {"istio.io/for-service-account": "echo-sa"}
    assert v.obj["spec"]["listeners"][0]["protocol"] == "HBONE"
