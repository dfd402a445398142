"""Rules for networking.istio.io and telemetry.istio.io kinds.

VirtualService, DestinationRule and Gateway are modelled field by field,
following Istio's validation (route/redirect conflicts, weights, durations,
regexes, TLS credentials). ServiceEntry, Sidecar, WorkloadEntry and Telemetry
get light structural checks and are otherwise stored as written.
"""

from __future__ import annotations

import json
from typing import Any

from zeromesh.api.istio_security import TARGETING, WORKLOAD_SELECTOR, one_target
from zeromesh.api.names import dns1123_label_error, ip_or_cidr_error
from zeromesh.api.schema import (
    Check,
    Ctx,
    KindSchema,
    Obj,
    any_list,
    any_map,
    boolean,
    child,
    duration,
    integer,
    label_map,
    list_of,
    map_of,
    percentage,
    present,
    regex,
    string,
    string_list,
)

PORT = integer(1, 65535)
_MATCH_TYPES = ("exact", "prefix", "regex")


def _string_match(*, required: bool) -> Obj:
    """Istio StringMatch: exactly one of exact/prefix/regex (headers may give none,
    which matches on presence)."""

    def post(ctx: Ctx, sm: dict[str, Any], path: str) -> None:
        used = present(sm, _MATCH_TYPES)
        if len(used) > 1:
            ctx.error(path, "must set only one of exact, prefix, regex; got "
                            + ", ".join(used))
        elif not used and required:
            ctx.error(path, "must set one of exact, prefix, regex")
        if sm.get("prefix") == "":
            ctx.error(child(path, "prefix"), "must not be empty")

    return Obj({"exact": string(), "prefix": string(), "regex": regex}, post=post)


_SM = _string_match(required=True)
_SM_OPTIONAL = _string_match(required=False)

PORT_SELECTOR = Obj({"number": PORT})

DESTINATION = Obj(
    {
        "host": string(nonempty=True, rule=lambda s: "must not be \"*\"" if s == "*" else None),
        "subset": string(rule=dns1123_label_error),
        "port": PORT_SELECTOR,
    },
    required=("host",),
)

_HEADER_OPS = Obj({"set": map_of(string()), "add": map_of(string()), "remove": string_list})
HEADERS = Obj({"request": _HEADER_OPS, "response": _HEADER_OPS})


def _weights_post(field: str) -> Any:
    """As current Istio validates it: weights are relative shares (they need not sum to
    100), but several destinations must not all weigh 0."""

    def post(ctx: Ctx, route: dict[str, Any], path: str) -> None:
        dests = route.get(field)
        if not isinstance(dests, list) or not all(isinstance(d, dict) for d in dests):
            return
        weights = [d.get("weight") for d in dests]
        if not all(w is None or isinstance(w, int) for w in weights):
            return
        total = sum(w for w in weights if w is not None)
        if len(dests) > 1 and total == 0:
            ctx.error(child(path, field), "total destination weight is 0; give each "
                                          "destination a weight (summing to 100)")

    return post


_HTTP_ROUTE_DESTINATION = Obj({"destination": DESTINATION, "weight": integer(0, 2**31 - 1),
                               "headers": HEADERS}, required=("destination",))
_ROUTE_DESTINATION = Obj({"destination": DESTINATION, "weight": integer(0, 2**31 - 1)},
                         required=("destination",))

HTTP_MATCH = Obj({
    "name": string(),
    "uri": _SM,
    "scheme": _SM,
    "method": _SM,
    "authority": _SM,
    "headers": map_of(_SM_OPTIONAL),
    "queryParams": map_of(_SM_OPTIONAL),
    "withoutHeaders": map_of(_SM_OPTIONAL),
    "ignoreUriCase": boolean,
    "port": PORT,
    "sourceLabels": label_map,
    "gateways": string_list,
    "sourceNamespace": string(rule=dns1123_label_error),
    "statPrefix": string(),
})


def _redirect_post(ctx: Ctx, r: dict[str, Any], path: str) -> None:
    if not present(r, ("uri", "authority", "scheme", "port", "derivePort")):
        ctx.error(path, "must set at least one of uri, authority, scheme, port, derivePort")


REDIRECT = Obj(
    {
        "uri": string(),
        "authority": string(),
        "port": PORT,
        "derivePort": string(enum=("FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT")),
        "scheme": string(enum=("http", "https")),
        "redirectCode": integer(300, 399),
    },
    post=_redirect_post,
)


def _rewrite_post(ctx: Ctx, r: dict[str, Any], path: str) -> None:
    if "uri" in r and "uriRegexRewrite" in r:
        ctx.error(child(path, "uriRegexRewrite"), "cannot be set together with uri")
    if not present(r, ("uri", "uriRegexRewrite", "authority")):
        ctx.error(path, "must set at least one of uri, uriRegexRewrite, authority")


REWRITE = Obj(
    {
        "uri": string(),
        "authority": string(),
        "uriRegexRewrite": Obj({"match": regex, "rewrite": string()},
                               required=("match", "rewrite")),
    },
    post=_rewrite_post,
)

_RETRY_ON = frozenset({
    "5xx", "gateway-error", "reset", "reset-before-request", "connect-failure",
    "envoy-ratelimited", "retriable-4xx", "refused-stream", "retriable-status-codes",
    "retriable-headers", "http3-post-connect-failure", "cancelled", "deadline-exceeded",
    "internal", "resource-exhausted", "unavailable",
})


def _retry_on_rule(s: str) -> str | None:
    bad = [p for p in s.split(",") if p not in _RETRY_ON and not (p.isdigit() and len(p) == 3)]
    if bad:
        return f"unsupported retryOn policy {json.dumps(bad[0])}; use: " + ", ".join(
            sorted(_RETRY_ON)) + " or an HTTP status code"
    return None


def _retries_post(ctx: Ctx, r: dict[str, Any], path: str) -> None:
    if r.get("attempts", 0) == 0 and present(r, ("perTryTimeout", "retryOn",
                                                 "retryRemoteLocalities")):
        ctx.error(child(path, "attempts"), "retry settings are given but attempts is 0 "
                                           "(retries disabled)")


RETRIES = Obj(
    {
        "attempts": integer(0),
        "perTryTimeout": duration(),
        "retryOn": string(rule=_retry_on_rule),
        "retryRemoteLocalities": boolean,
        "retryIgnorePreviousHosts": boolean,
        "backoff": duration(),
    },
    post=_retries_post,
)


def _delay_post(ctx: Ctx, d: dict[str, Any], path: str) -> None:
    if "exponentialDelay" in d:
        ctx.error(child(path, "exponentialDelay"), "is not supported (by Istio either)")
    elif "fixedDelay" not in d:
        ctx.error(child(path, "fixedDelay"), "is required")


def _abort_post(ctx: Ctx, a: dict[str, Any], path: str) -> None:
    if "http2Error" in a:
        ctx.error(child(path, "http2Error"), "is not supported (by Istio either)")
    used = present(a, ("httpStatus", "grpcStatus", "http2Error"))
    if not used:
        ctx.error(child(path, "httpStatus"), "is required (or grpcStatus)")
    elif len(used) > 1:
        ctx.error(path, "must set only one of httpStatus, grpcStatus")


def _fault_post(ctx: Ctx, f: dict[str, Any], path: str) -> None:
    if not present(f, ("delay", "abort")):
        ctx.error(path, "must set delay and/or abort")


FAULT = Obj(
    {
        "delay": Obj({"fixedDelay": duration(), "exponentialDelay": duration(),
                      "percentage": percentage(), "percent": integer(0, 100)},
                     post=_delay_post),
        "abort": Obj({"httpStatus": integer(200, 599), "grpcStatus": string(nonempty=True),
                      "http2Error": string(), "percentage": percentage()},
                     post=_abort_post),
    },
    post=_fault_post,
)

CORS_POLICY = Obj({
    "allowOrigins": list_of(_SM),
    "allowOrigin": string_list,
    "allowMethods": string_list,
    "allowHeaders": string_list,
    "exposeHeaders": string_list,
    "maxAge": duration(),
    "allowCredentials": boolean,
    "unmatchedPreflights": string(enum=("UNSPECIFIED", "FORWARD", "IGNORE")),
})

_CONFLICTS = (
    ("redirect", ("route", "fault", "rewrite", "directResponse")),
    ("directResponse", ("route", "fault", "rewrite")),
    ("delegate", ("route", "redirect")),
    ("mirror", ("mirrors",)),
)


def _http_route_post(ctx: Ctx, route: dict[str, Any], path: str) -> None:
    for field, others in _CONFLICTS:
        if field in route:
            for other in present(route, others):
                ctx.error(child(path, other), f"cannot be set together with {field}")
    if not present(route, ("route", "redirect", "directResponse", "delegate")):
        ctx.error(path, "must set one of route, redirect, directResponse, delegate")
    _weights_post("route")(ctx, route, path)


HTTP_ROUTE = Obj(
    {
        "name": string(),
        "match": list_of(HTTP_MATCH),
        "route": list_of(_HTTP_ROUTE_DESTINATION),
        "redirect": REDIRECT,
        "directResponse": Obj({"status": integer(200, 599),
                               "body": Obj({"string": string(), "bytes": string()})},
                              required=("status",)),
        "delegate": Obj({"name": string(nonempty=True), "namespace": string()},
                        required=("name",)),
        "rewrite": REWRITE,
        "timeout": duration(),
        "retries": RETRIES,
        "fault": FAULT,
        "mirror": DESTINATION,
        "mirrors": list_of(Obj({"destination": DESTINATION, "percentage": percentage()},
                               required=("destination",))),
        "mirrorPercentage": percentage(),
        "mirrorPercent": integer(0, 100),
        "corsPolicy": CORS_POLICY,
        "headers": HEADERS,
    },
    post=_http_route_post,
)

_L4_MATCH_FIELDS: dict[str, Check] = {
    "destinationSubnets": list_of(string(rule=ip_or_cidr_error)),
    "port": PORT,
    "sourceLabels": label_map,
    "gateways": string_list,
    "sourceNamespace": string(rule=dns1123_label_error),
}

TCP_ROUTE = Obj(
    {
        "match": list_of(Obj({**_L4_MATCH_FIELDS, "sourceSubnet": string()})),
        "route": list_of(_ROUTE_DESTINATION, min_items=1),
    },
    required=("route",),
    post=_weights_post("route"),
)

TLS_ROUTE = Obj(
    {
        "match": list_of(Obj({**_L4_MATCH_FIELDS,
                              "sniHosts": list_of(string(nonempty=True), min_items=1)},
                             required=("sniHosts",)), min_items=1),
        "route": list_of(_ROUTE_DESTINATION, min_items=1),
    },
    required=("match", "route"),
    post=_weights_post("route"),
)


def _virtual_service_post(ctx: Ctx, spec: dict[str, Any], path: str) -> None:
    if not present(spec, ("http", "tcp", "tls")):
        ctx.error(path, "must set at least one of http, tcp, tls")
    gateways = spec.get("gateways")
    to_mesh = not gateways or (isinstance(gateways, list) and "mesh" in gateways)
    hosts = spec.get("hosts")
    if to_mesh and isinstance(hosts, list) and "*" in hosts:
        ctx.error(f"{child(path, 'hosts')}[{hosts.index('*')}]",
                  'wildcard host "*" is only allowed when the VirtualService is bound to '
                  "gateways (spec.gateways)")


VIRTUAL_SERVICE_SPEC = Obj(
    {
        "hosts": list_of(string(nonempty=True), min_items=1, unique="."),
        "gateways": string_list,
        "http": list_of(HTTP_ROUTE),
        "tcp": list_of(TCP_ROUTE),
        "tls": list_of(TLS_ROUTE),
        "exportTo": string_list,
    },
    required=("hosts",),
    post=_virtual_service_post,
)

# ---- DestinationRule -----------------------------------------------------------------

_LB_SIMPLE = ("UNSPECIFIED", "LEAST_CONN", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN",
              "LEAST_REQUEST")


def _lb_post(ctx: Ctx, lb: dict[str, Any], path: str) -> None:
    if "simple" in lb and "consistentHash" in lb:
        ctx.error(child(path, "consistentHash"), "cannot be set together with simple")


LOAD_BALANCER = Obj(
    {"simple": string(enum=_LB_SIMPLE), "consistentHash": any_map,
     "localityLbSetting": any_map, "warmupDurationSecs": duration(), "warmup": any_map},
    post=_lb_post,
)

_count = integer(0)
CONNECTION_POOL = Obj({
    "tcp": Obj({
        "maxConnections": _count, "connectTimeout": duration(),
        "tcpKeepalive": Obj({"probes": _count, "time": duration(), "interval": duration()}),
        "maxConnectionDuration": duration(), "idleTimeout": duration(),
    }),
    "http": Obj({
        "http1MaxPendingRequests": _count, "http2MaxRequests": _count,
        "maxRequestsPerConnection": _count, "maxRetries": _count, "idleTimeout": duration(),
        "h2UpgradePolicy": string(enum=("DEFAULT", "DO_NOT_UPGRADE", "UPGRADE")),
        "useClientProtocol": boolean, "maxConcurrentStreams": _count,
    }),
})

OUTLIER_DETECTION = Obj({
    "consecutiveErrors": _count, "consecutiveGatewayErrors": _count,
    "consecutive5xxErrors": _count, "consecutiveLocalOriginFailures": _count,
    "splitExternalLocalOriginErrors": boolean, "interval": duration(),
    "baseEjectionTime": duration(), "maxEjectionPercent": integer(0, 100),
    "minHealthPercent": integer(0, 100),
})

CLIENT_TLS = Obj({
    "mode": string(enum=("DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL")),
    "clientCertificate": string(), "privateKey": string(), "caCertificates": string(),
    "credentialName": string(), "subjectAltNames": string_list, "sni": string(),
    "insecureSkipVerify": boolean, "caCrl": string(),
})

_POLICY_FIELDS: dict[str, Check] = {
    "loadBalancer": LOAD_BALANCER,
    "connectionPool": CONNECTION_POOL,
    "outlierDetection": OUTLIER_DETECTION,
    "tls": CLIENT_TLS,
}


def _port_policy_post(ctx: Ctx, p: dict[str, Any], path: str) -> None:
    if not present(p, _POLICY_FIELDS):
        ctx.error(path, "must set at least one of " + ", ".join(_POLICY_FIELDS))


TRAFFIC_POLICY = Obj({
    **_POLICY_FIELDS,
    "portLevelSettings": list_of(Obj({"port": PORT_SELECTOR, **_POLICY_FIELDS},
                                     required=("port",), post=_port_policy_post)),
    "tunnel": any_map,
    "proxyProtocol": any_map,
    "retryBudget": any_map,
})

DESTINATION_RULE_SPEC = Obj(
    {
        "host": string(nonempty=True),
        "subsets": list_of(Obj({"name": string(nonempty=True, rule=dns1123_label_error),
                                "labels": label_map, "trafficPolicy": TRAFFIC_POLICY},
                               required=("name",)), unique="name"),
        "trafficPolicy": TRAFFIC_POLICY,
        "exportTo": string_list,
        "workloadSelector": WORKLOAD_SELECTOR,
    },
    required=("host",),
)

# ---- Gateway (Istio) -----------------------------------------------------------------

_SERVER_PROTOCOLS = ("HTTP", "HTTPS", "GRPC", "HTTP2", "MONGO", "TCP", "TLS")
_SERVER_TLS_MODES = ("PASSTHROUGH", "SIMPLE", "MUTUAL", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL",
                     "OPTIONAL_MUTUAL")

SERVER_TLS = Obj({
    "httpsRedirect": boolean, "mode": string(enum=_SERVER_TLS_MODES),
    "serverCertificate": string(), "privateKey": string(), "caCertificates": string(),
    "caCrl": string(), "credentialName": string(), "credentialNames": string_list,
    "tlsCertificates": any_list, "subjectAltNames": string_list,
    "verifyCertificateSpki": string_list, "verifyCertificateHash": string_list,
    "minProtocolVersion": string(), "maxProtocolVersion": string(), "cipherSuites": string_list,
})


def _server_post(ctx: Ctx, server: dict[str, Any], path: str) -> None:
    port = server.get("port")
    proto = port.get("protocol") if isinstance(port, dict) else None
    tls = server.get("tls")
    if proto in ("HTTPS", "TLS") and not isinstance(tls, dict):
        ctx.error(child(path, "tls"), f"is required for {proto} servers")
        return
    if not isinstance(tls, dict):
        return
    mode = tls.get("mode", "PASSTHROUGH")
    if mode in ("SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL"):
        has_files = bool(tls.get("serverCertificate")) and bool(tls.get("privateKey"))
        has_name = bool(tls.get("credentialName") or tls.get("credentialNames"))
        if not has_name and not has_files:
            ctx.error(child(path, "tls"), f"{mode} TLS requires credentialName, or "
                                          "serverCertificate and privateKey")
        if mode != "SIMPLE" and not has_name and not tls.get("caCertificates"):
            ctx.error(child(path, "tls.caCertificates"), f"is required for {mode} TLS "
                                                         "without credentialName")


SERVER = Obj(
    {
        "port": Obj({"number": PORT, "protocol": string(upper=True, enum=_SERVER_PROTOCOLS),
                     "name": string(nonempty=True), "targetPort": PORT},
                    required=("number", "protocol", "name")),
        "bind": string(),
        "hosts": list_of(string(nonempty=True), min_items=1),
        "tls": SERVER_TLS,
        "defaultEndpoint": string(),
        "name": string(),
    },
    required=("port", "hosts"),
    post=_server_post,
)

ISTIO_GATEWAY_SPEC = Obj({"selector": label_map, "servers": list_of(SERVER, min_items=1)},
                         required=("servers",))

# ---- light structural validation ------------------------------------------------------

SERVICE_ENTRY_SPEC = Obj(
    {
        "hosts": list_of(string(nonempty=True), min_items=1),
        "addresses": list_of(string(rule=ip_or_cidr_error)),
        "ports": list_of(Obj({"number": PORT, "protocol": string(upper=True),
                              "name": string(), "targetPort": PORT},
                             required=("number",), unknown="keep")),
        "location": string(enum=("MESH_EXTERNAL", "MESH_INTERNAL")),
        "resolution": string(enum=("NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS")),
        "endpoints": list_of(any_map),
        "workloadSelector": WORKLOAD_SELECTOR,
        "exportTo": string_list,
        "subjectAltNames": string_list,
    },
    required=("hosts",),
    unknown="keep",
)

SIDECAR_SPEC = Obj(
    {"workloadSelector": WORKLOAD_SELECTOR, "ingress": list_of(any_map),
     "egress": list_of(any_map), "outboundTrafficPolicy": any_map,
     "inboundConnectionPool": any_map},
    unknown="keep",
)

WORKLOAD_ENTRY_SPEC = Obj(
    {"address": string(), "ports": map_of(PORT), "labels": label_map, "network": string(),
     "locality": string(), "weight": integer(0), "serviceAccount": string()},
    unknown="keep",
)

TELEMETRY_SPEC = Obj(
    {**TARGETING, "tracing": list_of(any_map), "metrics": list_of(any_map),
     "accessLogging": list_of(any_map)},
    unknown="keep",
    post=one_target,
)

_NET = "networking.istio.io"
SCHEMAS: dict[tuple[str, str], KindSchema] = {
    (_NET, "VirtualService"): KindSchema({"spec": VIRTUAL_SERVICE_SPEC}),
    (_NET, "DestinationRule"): KindSchema({"spec": DESTINATION_RULE_SPEC}),
    (_NET, "Gateway"): KindSchema({"spec": ISTIO_GATEWAY_SPEC}),
    (_NET, "ServiceEntry"): KindSchema({"spec": SERVICE_ENTRY_SPEC}),
    (_NET, "Sidecar"): KindSchema({"spec": SIDECAR_SPEC}),
    (_NET, "WorkloadEntry"): KindSchema({"spec": WORKLOAD_ENTRY_SPEC}),
    ("telemetry.istio.io", "Telemetry"): KindSchema({"spec": TELEMETRY_SPEC}),
}
