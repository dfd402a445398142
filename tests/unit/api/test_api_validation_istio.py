"""Istio kinds: security policies, VirtualService, DestinationRule, Gateway and the light ones."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import Api

DELETE = "<delete>"  # see conftest.patched
AP = ("security.istio.io", "AuthorizationPolicy")
PA = ("security.istio.io", "PeerAuthentication")
RA = ("security.istio.io", "RequestAuthentication")
VS = ("networking.istio.io", "VirtualService")
DR = ("networking.istio.io", "DestinationRule")
GW = ("networking.istio.io", "Gateway")
SE = ("networking.istio.io", "ServiceEntry")
WE = ("networking.istio.io", "WorkloadEntry")
TEL = ("telemetry.istio.io", "Telemetry")
SRC = "spec.rules[0].from[0].source"
OP = "spec.rules[0].to[0].operation"
H0 = "spec.http[0]"
S0 = "spec.servers[0]"


def rule(**parts: Any) -> list[dict[str, Any]]:
    return [parts]


def src(**fields: Any) -> list[dict[str, Any]]:
    return [{"from": [{"source": fields}]}]


def op(**fields: Any) -> list[dict[str, Any]]:
    return [{"to": [{"operation": fields}]}]


ERRORS: list[tuple[tuple[str, str], dict[str, Any], str, str]] = [
    # AuthorizationPolicy
    (AP, {"spec.action": "REJECT"}, "spec.action",
     'unsupported value "REJECT"; must be one of: ALLOW, DENY, AUDIT, CUSTOM'),
    (AP, {"spec.selector": {"matchLabels": {"app": "a"}},
          "spec.targetRefs": [{"kind": "Gateway", "group": "gateway.networking.k8s.io",
                               "name": "w"}]},
     "spec.targetRefs", "cannot be set together with spec.selector"),
    (AP, {"spec.targetRef": {"kind": "Service", "name": "a"},
          "spec.targetRefs": [{"kind": "Service", "name": "b"}]},
     "spec.targetRefs", "cannot be set together with spec.targetRef"),
    (AP, {"spec.targetRefs": [{"name": "a"}]}, "spec.targetRefs[0].kind", "is required"),
    (AP, {"spec.targetRefs": [{"kind": "Service"}]}, "spec.targetRefs[0].name", "is required"),
    (AP, {"spec.targetRefs": [{"kind": "Deployment", "group": "apps", "name": "d"}]},
     "spec.targetRefs[0].kind", 'a policy cannot target "Deployment"'),
    (AP, {"spec.targetRefs": [{"kind": "Service", "name": "a", "namespace": "x"}]},
     "spec.targetRefs[0].namespace", "cross-namespace references are not supported"),
    (AP, {"spec.targetRefs": [{"kind": "Service", "name": "a", "port": 80}]},
     "spec.targetRefs[0].port", "unknown field"),
    (AP, {"spec.selector": {"matchLabels": {"app": "*"}}}, "spec.selector.matchLabels[app]",
     "wildcards are not supported"),
    (AP, {"spec.selector": {"app": "a"}}, "spec.selector.app", "unknown field"),
    (AP, {"spec.action": "CUSTOM", "spec.rules": [{}]}, "spec.provider.name",
     "is required when action is CUSTOM"),
    (AP, {"spec.action": "CUSTOM", "spec.rules": [{}], "spec.provider": {}},
     "spec.provider.name", "is required"),
    (AP, {"spec.action": "CUSTOM", "spec.provider": {"name": "ext"}}, "spec.rules",
     "is required with action CUSTOM"),
    (AP, {"spec.action": "CUSTOM", "spec.provider": {"name": "ext"},
          "spec.rules": src(principals=["a"])}, f"{SRC}.principals",
     "is not supported with action CUSTOM"),
    (AP, {"spec.provider": {"name": "ext"}}, "spec.provider",
     "may only be set when action is CUSTOM"),
    (AP, {"spec.action": "DENY"}, "spec.rules", "is required with action DENY"),
    (AP, {"spec.rules": src(principal=["a"])}, f"{SRC}.principal",
     "unknown field; expected one of: principals, notPrincipals"),
    (AP, {"spec.rules": op(method=["GET"])}, f"{OP}.method",
     "unknown field; expected one of: hosts, notHosts"),
    (AP, {"spec.rules": [{"from": [{"source": {"principals": ["a"]}, "extra": 1}]}]},
     "spec.rules[0].from[0].extra", "unknown field"),
    (AP, {"spec.rules": [{"form": []}]}, "spec.rules[0].form", "unknown field"),
    (AP, {"spec.rules": src()}, SRC, "must not be empty"),
    (AP, {"spec.rules": op()}, OP, "must not be empty"),
    (AP, {"spec.rules": [{"from": [{}]}]}, SRC, "is required"),
    (AP, {"spec.rules": [{"to": [{}]}]}, OP, "is required"),
    (AP, {"spec.rules": [{"from": []}]}, "spec.rules[0].from", "must not be empty"),
    (AP, {"spec.rules": [{"to": []}]}, "spec.rules[0].to", "must not be empty"),
    (AP, {"spec.rules": src(principals="cluster.local/ns/a/sa/b")}, f"{SRC}.principals",
     "must be a list, got string"),
    (AP, {"spec.rules": src(principals=[""])}, f"{SRC}.principals[0]", "must not be empty"),
    (AP, {"spec.rules": src(namespaces=[1])}, f"{SRC}.namespaces[0]", 'quote it in YAML: "1"'),
    (AP, {"spec.rules": src(ipBlocks=["10.0.0.0/8", "10.0.0.0/33"])}, f"{SRC}.ipBlocks[1]",
     '"10.0.0.0/33" is not a valid IP address or CIDR block'),
    (AP, {"spec.rules": src(notRemoteIpBlocks=["bogus"])}, f"{SRC}.notRemoteIpBlocks[0]",
     "not a valid IP address or CIDR"),
    (AP, {"spec.rules": src(serviceAccounts=["ns/sa"], principals=["x"])}, SRC,
     "serviceAccounts cannot be combined with principals"),
    (AP, {"spec.rules": src(serviceAccounts=["a/b/c"])}, f"{SRC}.serviceAccounts[0]",
     "expected 'serviceAccount' or 'namespace/serviceAccount'"),
    (AP, {"spec.rules": src(serviceAccounts=["ns/*"])}, f"{SRC}.serviceAccounts[0]",
     "wildcards are not allowed"),
    (AP, {"spec.rules": op(ports=["http"])}, f"{OP}.ports[0]", '"http" is not a port number'),
    (AP, {"spec.rules": op(notPorts=["70000"])}, f"{OP}.notPorts[0]", "is not a port number"),
    (AP, {"spec.rules": op(ports=[True])}, f"{OP}.ports[0]",
     "must be a port number as a string, got boolean true"),
    (AP, {"spec.rules": op(methods=[""])}, f"{OP}.methods[0]", "must not be empty"),
    (AP, {"spec.rules": rule(when=[{"key": "source.ip"}])}, "spec.rules[0].when[0].values",
     "at least one of values or notValues must be set"),
    (AP, {"spec.rules": rule(when=[{"values": ["a"]}])}, "spec.rules[0].when[0].key",
     "is required"),
    (AP, {"spec.rules": rule(when=[{"key": "request.method", "values": ["GET"]}])},
     "spec.rules[0].when[0].key", 'unknown attribute "request.method"'),
    (AP, {"spec.rules": rule(when=[{"key": "request.headers", "values": ["x"]}])},
     "spec.rules[0].when[0].key", "should have the form name[key]"),
    (AP, {"spec.rules": rule(when=[{"key": "destination.namespace", "values": ["x"]}])},
     "spec.rules[0].when[0].key", "replaced by the policy's metadata.namespace"),
    (AP, {"spec.rules": rule(when=[{"key": "source.ip", "values": ["nope"]}])},
     "spec.rules[0].when[0].values[0]", "not a valid IP address or CIDR"),
    (AP, {"spec.rules": rule(when=[{"key": "destination.port", "notValues": ["x"]}])},
     "spec.rules[0].when[0].notValues[0]", "is not a port number"),
    (AP, {"spec.rules": rule(when=[{"key": "source.ip", "values": "1.2.3.4"}])},
     "spec.rules[0].when[0].values", "must be a list"),
    (AP, {"spec.rules": {"from": []}}, "spec.rules", "must be a list, got a map"),
    (AP, {"spec.unknown": 1}, "spec.unknown", "unknown field; expected one of: selector"),
    # PeerAuthentication
    (PA, {"spec.mtls.mode": "ON"}, "spec.mtls.mode",
     "must be one of: UNSET, DISABLE, PERMISSIVE, STRICT"),
    (PA, {"spec.portLevelMtls": {"8080": {"mode": "DISABLE"}}}, "spec.portLevelMtls",
     "requires spec.selector with matchLabels"),
    (PA, {"spec.selector": {"matchLabels": {"app": "a"}},
          "spec.portLevelMtls": {"http": {"mode": "DISABLE"}}}, "spec.portLevelMtls[http]",
     '"http" is not a port number (1-65535)'),
    (PA, {"spec.selector": {"matchLabels": {"app": "a"}},
          "spec.portLevelMtls": {"0": {"mode": "DISABLE"}}}, "spec.portLevelMtls[0]",
     "is not a port number"),
    (PA, {"spec.selector": {"matchLabels": {"app": "a"}},
          "spec.portLevelMtls": {"8080": {"mode": "OFF"}}}, "spec.portLevelMtls[8080].mode",
     "must be one of"),
    (PA, {"spec.selector": {"matchLabels": {"app": "a"}}, "spec.portLevelMtls": {}},
     "spec.portLevelMtls", "must not be empty"),
    (PA, {"spec.mtls.strict": True}, "spec.mtls.strict", "unknown field"),
    # RequestAuthentication
    (RA, {"spec.jwtRules[0].issuer": DELETE, "spec.jwtRules[0].jwksUri": "https://x/jwks"},
     "spec.jwtRules[0].issuer", "is required"),
    (RA, {"spec.jwtRules[0].jwksUri": "ftp://x"}, "spec.jwtRules[0].jwksUri",
     "must be an http:// or https:// URL"),
    (RA, {"spec.jwtRules[0].fromHeaders": [{"prefix": "Bearer "}]},
     "spec.jwtRules[0].fromHeaders[0].name", "is required"),
    (RA, {"spec.jwtRules[0].timeout": "soon"}, "spec.jwtRules[0].timeout", "invalid duration"),
    (RA, {"spec.jwtRules[0].forwardOriginalToken": "true"},
     "spec.jwtRules[0].forwardOriginalToken", "remove the quotes"),
    (RA, {"spec.selector": {"matchLabels": {"app": "a"}},
          "spec.targetRef": {"kind": "Gateway", "group": "gateway.networking.k8s.io",
                             "name": "g"}},
     "spec.targetRef", "cannot be set together with spec.selector"),
    # VirtualService
    (VS, {"spec.hosts": DELETE}, "spec.hosts", "is required"),
    (VS, {"spec.hosts": []}, "spec.hosts", "must not be empty"),
    (VS, {"spec.hosts": ["a", "a"]}, "spec.hosts[1]", 'duplicate value "a"'),
    (VS, {"spec.hosts": ["*"]}, "spec.hosts[0]", 'wildcard host "*" is only allowed'),
    (VS, {"spec.http": DELETE}, "spec", "must set at least one of http, tcp, tls"),
    (VS, {f"{H0}.match": [{"uri": {"prefix": "/"}}, {"uri": {"regex": "(unclosed"}}]},
     f"{H0}.match[1].uri.regex", 'invalid regular expression "(unclosed"'),
    (VS, {f"{H0}.match": [{"uri": {"exact": "/a", "prefix": "/b"}}]}, f"{H0}.match[0].uri",
     "must set only one of exact, prefix, regex"),
    (VS, {f"{H0}.match": [{"uri": {}}]}, f"{H0}.match[0].uri",
     "must set one of exact, prefix, regex"),
    (VS, {f"{H0}.match": [{"uri": {"prefix": ""}}]}, f"{H0}.match[0].uri.prefix",
     "must not be empty"),
    (VS, {f"{H0}.match": [{"uri": {"glob": "/a*"}}]}, f"{H0}.match[0].uri.glob",
     "unknown field"),
    (VS, {f"{H0}.match": [{"headers": {"x-user": {"regex": "["}}}]},
     f"{H0}.match[0].headers[x-user].regex", "invalid regular expression"),
    (VS, {f"{H0}.match": [{"method": {"exact": "GET"}, "port": 0}]}, f"{H0}.match[0].port",
     "out of range 1-65535"),
    (VS, {f"{H0}.match": [{"sourceLabels": {"app": 1}}]}, f"{H0}.match[0].sourceLabels[app]",
     "quote it"),
    (VS, {f"{H0}.route": [{"destination": {"host": "a"}}, {"destination": {"host": "b"}}]},
     f"{H0}.route", "total destination weight is 0"),
    (VS, {f"{H0}.route[0].weight": -1}, f"{H0}.route[0].weight", "out of range"),
    (VS, {f"{H0}.route[0].destination": {}}, f"{H0}.route[0].destination.host",
     "is required"),
    (VS, {f"{H0}.route[0].destination.host": "*"}, f"{H0}.route[0].destination.host",
     'must not be "*"'),
    (VS, {f"{H0}.route[0].destination.port": {"number": 0}},
     f"{H0}.route[0].destination.port.number", "out of range"),
    (VS, {f"{H0}.route[0].destination.subset": "V1"}, f"{H0}.route[0].destination.subset",
     "not a valid DNS-1123 label"),
    (VS, {f"{H0}.route[0].destination.port": 80}, f"{H0}.route[0].destination.port",
     "must be a map, got integer 80"),
    (VS, {f"{H0}.timeout": "5"}, f"{H0}.timeout", 'invalid duration "5": missing unit'),
    (VS, {f"{H0}.timeout": 5}, f"{H0}.timeout", "must be a duration string"),
    (VS, {f"{H0}.timeout": "-1s"}, f"{H0}.timeout", "must not be negative"),
    (VS, {f"{H0}.retries": {"attempts": 3, "perTryTimeout": "2 seconds"}},
     f"{H0}.retries.perTryTimeout", "invalid duration"),
    (VS, {f"{H0}.retries": {"attempts": -1}}, f"{H0}.retries.attempts", "must not be negative"),
    (VS, {f"{H0}.retries": {"attempts": 0, "retryOn": "5xx"}}, f"{H0}.retries.attempts",
     "attempts is 0"),
    (VS, {f"{H0}.retries": {"attempts": 2, "retryOn": "5xx,sometimes"}},
     f"{H0}.retries.retryOn", 'unsupported retryOn policy "sometimes"'),
    (VS, {f"{H0}.fault": {"abort": {"httpStatus": 700, "percentage": {"value": 10}}}},
     f"{H0}.fault.abort.httpStatus", "700 is out of range 200-599"),
    (VS, {f"{H0}.fault": {"abort": {"httpStatus": 503, "percentage": {"value": 150}}}},
     f"{H0}.fault.abort.percentage.value", "150 is out of range 0-100"),
    (VS, {f"{H0}.fault": {"abort": {"percentage": {"value": 5}}}},
     f"{H0}.fault.abort.httpStatus", "is required"),
    (VS, {f"{H0}.fault": {"delay": {"percentage": {"value": 5}}}},
     f"{H0}.fault.delay.fixedDelay", "is required"),
    (VS, {f"{H0}.fault": {"delay": {"fixedDelay": "5x"}}}, f"{H0}.fault.delay.fixedDelay",
     'unknown unit "x"'),
    (VS, {f"{H0}.fault": {}}, f"{H0}.fault", "must set delay and/or abort"),
    (VS, {f"{H0}.redirect": {"uri": "/new"}}, f"{H0}.route", "cannot be set together with "
                                                             "redirect"),
    (VS, {f"{H0}.route": DELETE, f"{H0}.redirect": {"redirectCode": 200, "uri": "/"}},
     f"{H0}.redirect.redirectCode", "out of range 300-399"),
    (VS, {f"{H0}.route": DELETE, f"{H0}.redirect": {"redirectCode": 301}}, f"{H0}.redirect",
     "must set at least one of uri, authority, scheme, port, derivePort"),
    (VS, {f"{H0}.route": DELETE}, H0,
     "must set one of route, redirect, directResponse, delegate"),
    (VS, {f"{H0}.directResponse": {"status": 503}}, f"{H0}.route",
     "cannot be set together with directResponse"),
    (VS, {f"{H0}.route": DELETE, f"{H0}.directResponse": {"body": {"string": "x"}}},
     f"{H0}.directResponse.status", "is required"),
    (VS, {f"{H0}.rewrite": {}}, f"{H0}.rewrite",
     "must set at least one of uri, uriRegexRewrite, authority"),
    (VS, {f"{H0}.rewrite": {"uri": "/", "uriRegexRewrite": {"match": "^/a", "rewrite": "/"}}},
     f"{H0}.rewrite.uriRegexRewrite", "cannot be set together with uri"),
    (VS, {f"{H0}.mirror": {"host": "m"}, f"{H0}.mirrors": [{"destination": {"host": "m"}}]},
     f"{H0}.mirrors", "cannot be set together with mirror"),
    (VS, {f"{H0}.mirrorPercentage": {"value": 101}}, f"{H0}.mirrorPercentage.value",
     "out of range"),
    (VS, {f"{H0}.corsPolicy": {"maxAge": "forever"}}, f"{H0}.corsPolicy.maxAge",
     "invalid duration"),
    (VS, {f"{H0}.headers": {"request": {"set": {"x-a": 1}}}},
     f"{H0}.headers.request.set[x-a]", "quote it"),
    (VS, {f"{H0}.route[0].headers": {"response": {"remove": "x"}}},
     f"{H0}.route[0].headers.response.remove", "must be a list"),
    (VS, {f"{H0}.routes": []}, f"{H0}.routes", "unknown field"),
    (VS, {"spec.tcp": [{"route": [{"destination": {"port": {"number": 80}}}]}]},
     "spec.tcp[0].route[0].destination.host", "is required"),
    (VS, {"spec.tcp": [{}]}, "spec.tcp[0].route", "is required"),
    (VS, {"spec.tls": [{"match": [{"port": 443}], "route": [{"destination": {"host": "a"}}]}]},
     "spec.tls[0].match[0].sniHosts", "is required"),
    (VS, {"spec.tls": [{"match": [{"sniHosts": ["a"]}], "route": [{"destination": {}}]}]},
     "spec.tls[0].route[0].destination.host", "is required"),
    # DestinationRule
    (DR, {"spec.host": DELETE}, "spec.host", "is required"),
    (DR, {"spec.subsets": [{"labels": {"v": "1"}}]}, "spec.subsets[0].name", "is required"),
    (DR, {"spec.subsets": [{"name": "v1"}, {"name": "v1"}]}, "spec.subsets[1].name",
     'duplicate name "v1" (also used by spec.subsets[0])'),
    (DR, {"spec.subsets": [{"name": "V_1"}]}, "spec.subsets[0].name", "DNS-1123 label"),
    (DR, {"spec.subsets": [{"name": "v1", "labels": {"version": 1}}]},
     "spec.subsets[0].labels[version]", "quote it"),
    (DR, {"spec.trafficPolicy.loadBalancer.simple": "FASTEST"},
     "spec.trafficPolicy.loadBalancer.simple", "must be one of: UNSPECIFIED, LEAST_CONN"),
    (DR, {"spec.trafficPolicy.loadBalancer": {"simple": "RANDOM", "consistentHash": {}}},
     "spec.trafficPolicy.loadBalancer.consistentHash", "cannot be set together with simple"),
    (DR, {"spec.trafficPolicy.outlierDetection": {"interval": "10"}},
     "spec.trafficPolicy.outlierDetection.interval", "missing unit"),
    (DR, {"spec.trafficPolicy.outlierDetection": {"maxEjectionPercent": 150}},
     "spec.trafficPolicy.outlierDetection.maxEjectionPercent", "out of range 0-100"),
    (DR, {"spec.trafficPolicy.connectionPool": {"tcp": {"connectTimeout": "x"}}},
     "spec.trafficPolicy.connectionPool.tcp.connectTimeout", "invalid duration"),
    (DR, {"spec.trafficPolicy.connectionPool": {"http": {"http2MaxRequests": -1}}},
     "spec.trafficPolicy.connectionPool.http.http2MaxRequests", "must not be negative"),
    (DR, {"spec.trafficPolicy.tls.mode": "STRICT"}, "spec.trafficPolicy.tls.mode",
     "must be one of: DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL"),
    (DR, {"spec.subsets": [{"name": "v1", "trafficPolicy": {"tls": {"mode": "X"}}}]},
     "spec.subsets[0].trafficPolicy.tls.mode", "must be one of"),
    (DR, {"spec.trafficPolicy.portLevelSettings": [{"port": {"number": 80}}]},
     "spec.trafficPolicy.portLevelSettings[0]", "must set at least one of loadBalancer"),
    (DR, {"spec.trafficPolicy.portLevelSettings": [{"tls": {"mode": "DISABLE"}}]},
     "spec.trafficPolicy.portLevelSettings[0].port", "is required"),
    # Gateway (Istio)
    (GW, {"spec.servers": DELETE}, "spec.servers", "is required"),
    (GW, {"spec.servers": []}, "spec.servers", "must not be empty"),
    (GW, {f"{S0}.port.number": 70000}, f"{S0}.port.number", "out of range 1-65535"),
    (GW, {f"{S0}.port.protocol": "QUIC"}, f"{S0}.port.protocol",
     "must be one of: HTTP, HTTPS, GRPC, HTTP2, MONGO, TCP, TLS"),
    (GW, {f"{S0}.port.name": DELETE}, f"{S0}.port.name", "is required"),
    (GW, {f"{S0}.port": DELETE}, f"{S0}.port", "is required"),
    (GW, {f"{S0}.hosts": []}, f"{S0}.hosts", "must not be empty"),
    (GW, {f"{S0}.hosts": DELETE}, f"{S0}.hosts", "is required"),
    (GW, {f"{S0}.port.protocol": "HTTPS"}, f"{S0}.tls", "is required for HTTPS servers"),
    (GW, {f"{S0}.port.protocol": "HTTPS", f"{S0}.tls": {"mode": "SIMPLE"}}, f"{S0}.tls",
     "SIMPLE TLS requires credentialName, or serverCertificate and privateKey"),
    (GW, {f"{S0}.port.protocol": "HTTPS",
          f"{S0}.tls": {"mode": "SIMPLE", "serverCertificate": "/c.pem"}}, f"{S0}.tls",
     "requires credentialName"),
    (GW, {f"{S0}.tls": {"mode": "MUTUAL", "serverCertificate": "/c", "privateKey": "/k"}},
     f"{S0}.tls.caCertificates", "is required for MUTUAL TLS"),
    (GW, {f"{S0}.tls": {"mode": "STRICT"}}, f"{S0}.tls.mode",
     "must be one of: PASSTHROUGH, SIMPLE, MUTUAL, AUTO_PASSTHROUGH"),
    (GW, {"spec.selector": {"istio": 1}}, "spec.selector[istio]", "quote it"),
    # light kinds
    (SE, {"spec.hosts": DELETE}, "spec.hosts", "is required"),
    (SE, {"spec.ports": [{"number": 0}]}, "spec.ports[0].number", "out of range"),
    (SE, {"spec.resolution": "MAGIC"}, "spec.resolution", "must be one of: NONE, STATIC"),
    (SE, {"spec.addresses": ["300.0.0.1"]}, "spec.addresses[0]", "not a valid IP address"),
    (WE, {"spec.ports": {"http": 0}}, "spec.ports[http]", "out of range"),
    (WE, {"spec.labels": {"app": 1}}, "spec.labels[app]", "quote it"),
    (("networking.istio.io", "Sidecar"), {"spec.egress": {"hosts": []}}, "spec.egress",
     "must be a list"),
    (TEL, {"spec.selector": {"matchLabels": {"a": "b"}},
           "spec.targetRefs": [{"kind": "Service", "name": "s"}]},
     "spec.targetRefs", "cannot be set together with spec.selector"),
    (TEL, {"spec.metrics": {"providers": []}}, "spec.metrics", "must be a list"),
]


def _case_id(case: tuple[tuple[str, str], dict[str, Any], str, str]) -> str:
    return f"{case[0][1]}:{case[2]}"


@pytest.mark.parametrize("case", ERRORS, ids=[_case_id(c) for c in ERRORS])
def test_errors(api: Api, case: tuple[tuple[str, str], dict[str, Any], str, str]) -> None:
    kind, changes, path, fragment = case
    api.expect_error(api.minimal(*kind, **changes), path, fragment)


VALID: list[tuple[tuple[str, str], dict[str, Any]]] = [
    (AP, {"spec.action": "ALLOW", "spec.rules": src(principals=["cluster.local/ns/a/sa/b"])}),
    (AP, {"spec.action": "DENY", "spec.rules": [{}]}),
    (AP, {"spec.action": "AUDIT", "spec.rules": op(paths=["/x"], ports=["8080"])}),
    (AP, {"spec.action": "CUSTOM", "spec.provider": {"name": "ext-authz"},
          "spec.rules": op(paths=["/admin"])}),
    (AP, {"spec.targetRefs": [{"kind": "Gateway", "group": "gateway.networking.k8s.io",
                               "name": "waypoint"}],
          "spec.rules": src(serviceAccounts=["ns1/sleep", "other"])}),
    (AP, {"spec.targetRef": {"kind": "Service", "group": "", "name": "echo"}}),
    (AP, {"spec.rules": [{"from": [{"source": {"notIpBlocks": ["fd00::/8", "10.0.0.1"]}}],
                          "to": [{"operation": {"methods": ["GET"], "notPaths": ["/x"]}}],
                          "when": [{"key": "request.auth.claims[iss]", "values": ["a"]},
                                   {"key": "request.headers[x-user]", "notValues": ["b"]},
                                   {"key": "experimental.envoy.filters.a[b]",
                                    "values": ["c"]},
                                   {"key": "destination.port", "values": ["80"]},
                                   {"key": "connection.sni", "values": ["a.b"]}]}]}),
    (PA, {"spec.selector": {"matchLabels": {"app": "a"}},
          "spec.portLevelMtls": {"8080": {"mode": "DISABLE"}}}),
    (PA, {"spec.mtls": {"mode": "PERMISSIVE"}}),
    (RA, {"spec.jwtRules[0].jwksUri": "https://example.com/jwks.json",
          "spec.jwtRules[0].audiences": ["a"],
          "spec.jwtRules[0].fromHeaders": [{"name": "Authorization", "prefix": "Bearer "}],
          "spec.jwtRules[0].outputClaimToHeaders": [{"header": "x-sub", "claim": "sub"}]}),
    (VS, {f"{H0}.match": [{"uri": {"prefix": "/api"}, "headers": {"x-canary": {}},
                           "ignoreUriCase": True, "queryParams": {"v": {"exact": "1"}}},
                          {"withoutHeaders": {"x-debug": {"exact": "1"}}, "port": 8080}],
          f"{H0}.timeout": "1m30s",
          f"{H0}.retries": {"attempts": 3, "perTryTimeout": "250ms", "retryOn": "5xx,503"},
          f"{H0}.fault": {"delay": {"fixedDelay": "5s", "percentage": {"value": 0.1}},
                          "abort": {"grpcStatus": "UNAVAILABLE"}},
          f"{H0}.mirror": {"host": "shadow"}, f"{H0}.mirrorPercentage": {"value": 10.5},
          f"{H0}.corsPolicy": {"allowOrigins": [{"exact": "https://a"}], "maxAge": "24h"},
          f"{H0}.headers": {"request": {"set": {"x-a": "b"}, "remove": ["x-b"]}},
          f"{H0}.rewrite": {"uri": "/v2"}}),
    (VS, {"spec.gateways": ["istio-system/gw"], "spec.hosts": ["*"]}),
    (VS, {"spec.http": DELETE, "spec.tcp": [{"match": [{"port": 9000}],
                                             "route": [{"destination": {"host": "a"}}]}]}),
    (VS, {f"{H0}.route": DELETE, f"{H0}.redirect": {"uri": "/new", "redirectCode": 308}}),
    (VS, {f"{H0}.route": DELETE, f"{H0}.directResponse": {"status": 503,
                                                          "body": {"string": "down"}}}),
    (DR, {"spec.subsets": [{"name": "v1", "labels": {"version": "v1"}}, {"name": "v2"}],
          "spec.trafficPolicy": {"loadBalancer": {"simple": "LEAST_REQUEST"},
                                 "connectionPool": {"tcp": {"maxConnections": 1},
                                                    "http": {"http1MaxPendingRequests": 1}},
                                 "outlierDetection": {"consecutive5xxErrors": 1,
                                                      "interval": "1s",
                                                      "baseEjectionTime": "3m"},
                                 "tls": {"mode": "ISTIO_MUTUAL"}}}),
    (GW, {f"{S0}.port": {"number": 443, "name": "https", "protocol": "HTTPS"},
          f"{S0}.tls": {"mode": "SIMPLE", "credentialName": "cert"}}),
    (GW, {f"{S0}.port": {"number": 443, "name": "tls", "protocol": "TLS"},
          f"{S0}.tls": {"mode": "PASSTHROUGH"}}),
    (SE, {"spec.ports": [{"number": 443, "name": "https", "protocol": "TLS"}],
          "spec.resolution": "DNS", "spec.location": "MESH_EXTERNAL", "spec.futureField": 1}),
    (TEL, {"spec.metrics": [{"providers": [{"name": "prometheus"}]}]}),
]


@pytest.mark.parametrize("case", VALID, ids=[f"{c[0][1]}-{i}" for i, c in enumerate(VALID)])
def test_valid(api: Api, case: tuple[tuple[str, str], dict[str, Any]]) -> None:
    kind, changes = case
    api.one(api.minimal(*kind, **changes))


def test_action_is_not_defaulted(api: Api) -> None:
    assert "action" not in api.one(api.minimal(*AP, **{"spec.rules": [{}]})).obj["spec"]


def test_integer_ports_warn_and_become_strings(api: Api) -> None:
    body = api.minimal(*AP, **{"spec.rules": op(ports=[8080, "9090"], notPorts=[1])})
    v = api.one(body)
    operation = v.obj["spec"]["rules"][0]["to"][0]["operation"]
    assert operation == {"ports": ["8080", "9090"], "notPorts": ["1"]}
    assert [w.split(": ", 3)[2] for w in v.warnings] == [f"{OP}.ports[0]", f"{OP}.notPorts[0]"]
    assert all('normalised to "' in w for w in v.warnings)


@pytest.mark.parametrize(("rules", "warns"), [
    (op(methods=["POST"]), True),
    (src(requestPrincipals=["*"]), True),
    (op(methods=["POST"], ports=["80"]), False),
    (src(principals=["a"]), False),
    ([{}], False),
])
def test_deny_with_only_http_attributes_warns(api: Api, rules: list[dict[str, Any]],
                                              warns: bool) -> None:
    v = api.one(api.minimal(*AP, **{"spec.action": "DENY", "spec.rules": rules}))
    assert any("the ztunnel cannot see them and ignores the rule" in w for w in v.warnings) is warns


def test_selector_without_labels_warns(api: Api) -> None:
    api.expect_warning(api.minimal(*AP, **{"spec.selector": {}}), "spec.selector",
                       "workload selector specified without labels")


def test_portlevel_mtls_integer_keys_from_yaml(api: Api) -> None:
    text = api.text({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
                     "metadata": {"name": "pa"},
                     "spec": {"selector": {"matchLabels": {"app": "a"}}}})
    text += "  portLevelMtls:\n    8080:\n      mode: DISABLE\n"
    from zeromesh.api import load_text, validate_all

    (v,) = validate_all(load_text(text, "t.yaml"))
    assert v.obj["spec"]["portLevelMtls"] == {"8080": {"mode": "DISABLE"}}


def test_gateway_protocol_is_normalised_to_upper_case(api: Api) -> None:
    v = api.one(api.minimal(*GW, **{f"{S0}.port.protocol": "http"}))
    assert v.obj["spec"]["servers"][0]["port"]["protocol"] == "HTTP"


@pytest.mark.parametrize("weights", [(90, 20), (1, 1), (90, None), (50,)])
def test_weights_are_relative_shares_as_current_istio_accepts(weights: tuple) -> None:
    from zeromesh.api import LoadedDoc, Source, validate
    route = [{"destination": {"host": f"h{i}"}, **({"weight": w} if w is not None else {})}
             for i, w in enumerate(weights)]
    body = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "vs", "namespace": "ns"},
            "spec": {"hosts": ["h0"], "http": [{"route": route}]}}
    v = validate(LoadedDoc(Source("w.yaml", 1), body))
    assert [d.get("weight") for d in v.obj["spec"]["http"][0]["route"]] == list(weights)
