"""Rules for the Kubernetes Gateway API (gateway.networking.k8s.io).

Gateway and HTTPRoute are modelled with the CRDs' schema defaults and CEL rules
(parentRef group/kind, backendRef kind/weight, the "/" path-prefix match an
HTTPRoute gets when it names none, listener TLS rules), so the stored object is
what ``kubectl get -o yaml`` would show. The other route kinds, ReferenceGrant
and GatewayClass get light structural checks. Istio's waypoint ``Gateway``
(class ``istio-waypoint``, protocol HBONE) is an ordinary Gateway here.
"""

from __future__ import annotations

import json
import re
from typing import Any

from zeromesh.api.durations import parse_gateway_duration
from zeromesh.api.names import dns1123_label_error, dns1123_subdomain_error, hostname_error
from zeromesh.api.schema import (
    Check,
    Ctx,
    KindSchema,
    Obj,
    any_map,
    child,
    duration,
    extend,
    integer,
    list_of,
    map_of,
    string,
    string_list,
)
from zeromesh.api.selectors import LABEL_SELECTOR

GROUP = "gateway.networking.k8s.io"
PORT = integer(1, 65535)
_hostname = string(nonempty=True, rule=hostname_error)
_section_name = string(nonempty=True, rule=dns1123_subdomain_error)
_namespace = string(rule=dns1123_label_error)
_DOMAIN_PROTOCOL = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/[A-Za-z0-9]+$")
_PROTOCOLS = ("HTTP", "HTTPS", "TLS", "TCP", "UDP", "HBONE")

# ---- references ---------------------------------------------------------------------

PARENT_REF = Obj(
    {"group": string(), "kind": string(nonempty=True), "namespace": _namespace,
     "name": string(nonempty=True), "sectionName": _section_name, "port": PORT},
    required=("name",),
    defaults={"group": GROUP, "kind": "Gateway"},
)


def _backend_ref_post(ctx: Ctx, ref: dict[str, Any], path: str) -> None:
    if ref.get("group") == "" and ref.get("kind") == "Service" and "port" not in ref:
        ctx.error(child(path, "port"), "is required when referring to a Service")


BACKEND_REF = Obj(
    {"group": string(), "kind": string(nonempty=True), "name": string(nonempty=True),
     "namespace": _namespace, "port": PORT, "weight": integer(0, 1000000)},
    required=("name",),
    defaults={"group": "", "kind": "Service", "weight": 1},
    post=_backend_ref_post,
)

# ---- HTTPRoute ------------------------------------------------------------------------

_PATH_DEFAULT = {"type": "PathPrefix", "value": "/"}
_MATCH_DEFAULT = {"path": _PATH_DEFAULT}


def _path_match_post(ctx: Ctx, m: dict[str, Any], path: str) -> None:
    kind, value = m.get("type"), m.get("value")
    if not isinstance(value, str):
        return
    if kind in ("Exact", "PathPrefix") and not value.startswith("/"):
        ctx.error(child(path, "value"), f"{json.dumps(value)} must start with '/'")
    elif kind == "RegularExpression":
        _check_regex(ctx, value, child(path, "value"))


def _check_regex(ctx: Ctx, value: str, path: str) -> None:
    try:
        re.compile(value)
    except re.error as e:
        ctx.error(path, f"invalid regular expression {json.dumps(value)}: {e}")


def _value_match_post(ctx: Ctx, m: dict[str, Any], path: str) -> None:
    if m.get("type") == "RegularExpression" and isinstance(m.get("value"), str):
        _check_regex(ctx, m["value"], child(path, "value"))


_VALUE_MATCH = Obj(
    {"type": string(enum=("Exact", "RegularExpression")), "name": string(nonempty=True),
     "value": string()},
    required=("name", "value"),
    defaults={"type": "Exact"},
    post=_value_match_post,
)

HTTP_MATCH = Obj(
    {
        "path": Obj({"type": string(enum=("Exact", "PathPrefix", "RegularExpression")),
                     "value": string()},
                    defaults=_PATH_DEFAULT, post=_path_match_post),
        "headers": list_of(_VALUE_MATCH, unique="name"),
        "queryParams": list_of(_VALUE_MATCH, unique="name"),
        "method": string(enum=("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS",
                               "TRACE", "PATCH")),
    },
    defaults=_MATCH_DEFAULT,
)

_HEADER_VALUE = Obj({"name": string(nonempty=True), "value": string()},
                    required=("name", "value"))
HEADER_MODIFIER = Obj({"set": list_of(_HEADER_VALUE, unique="name"),
                       "add": list_of(_HEADER_VALUE, unique="name"),
                       "remove": string_list})


def _path_modifier_post(ctx: Ctx, m: dict[str, Any], path: str) -> None:
    kind = m.get("type")
    for k, field in (("ReplaceFullPath", "replaceFullPath"),
                     ("ReplacePrefixMatch", "replacePrefixMatch")):
        if kind == k and field not in m:
            ctx.error(child(path, field), f"is required when type is {k}")
        elif kind != k and field in m:
            ctx.error(child(path, field), f"must not be set when type is not {k}")


PATH_MODIFIER = Obj(
    {"type": string(enum=("ReplaceFullPath", "ReplacePrefixMatch")),
     "replaceFullPath": string(), "replacePrefixMatch": string()},
    required=("type",),
    post=_path_modifier_post,
)

MIRROR_BACKEND = Obj({k: v for k, v in BACKEND_REF.fields.items() if k != "weight"},
                     required=("name",), defaults={"group": "", "kind": "Service"},
                     post=_backend_ref_post)

_FILTER_FIELDS: dict[str, tuple[str, Check]] = {
    "RequestHeaderModifier": ("requestHeaderModifier", HEADER_MODIFIER),
    "ResponseHeaderModifier": ("responseHeaderModifier", HEADER_MODIFIER),
    "RequestRedirect": ("requestRedirect", Obj({
        "scheme": string(enum=("http", "https")), "hostname": _hostname,
        "path": PATH_MODIFIER, "port": PORT,
        "statusCode": integer(choices=(301, 302, 303, 307, 308))})),
    "URLRewrite": ("urlRewrite", Obj({"hostname": _hostname, "path": PATH_MODIFIER})),
    "RequestMirror": ("requestMirror", Obj({
        "backendRef": MIRROR_BACKEND, "percent": integer(0, 100),
        "fraction": Obj({"numerator": integer(0), "denominator": integer(1)},
                        required=("numerator",))},
        required=("backendRef",))),
    "ExtensionRef": ("extensionRef", Obj({"group": string(), "kind": string(nonempty=True),
                                          "name": string(nonempty=True)},
                                         required=("group", "kind", "name"))),
    "CORS": ("cors", any_map),
}


def _filter_post(ctx: Ctx, f: dict[str, Any], path: str) -> None:
    kind = f.get("type")
    for k, (field, _) in _FILTER_FIELDS.items():
        if kind == k and field not in f:
            ctx.error(child(path, field), f"is required when type is {k}")
        elif kind != k and field in f:
            ctx.error(child(path, field), f"must not be set when type is not {k}")


HTTP_FILTER = Obj(
    {"type": string(enum=tuple(_FILTER_FIELDS)),
     **{field: check for field, check in _FILTER_FIELDS.values()}},
    required=("type",),
    post=_filter_post,
)


def _timeouts_post(ctx: Ctx, t: dict[str, Any], path: str) -> None:
    try:
        request = parse_gateway_duration(t["request"])
        backend = parse_gateway_duration(t["backendRequest"])
    except (KeyError, ValueError, TypeError):
        return
    if request != 0 and backend > request:
        ctx.error(child(path, "backendRequest"), "must not be longer than the request timeout")


TIMEOUTS = Obj({"request": duration(gateway_api=True),
                "backendRequest": duration(gateway_api=True)},
               post=_timeouts_post)


def _http_rule_post(ctx: Ctx, rule: dict[str, Any], path: str) -> None:
    filters = rule.get("filters")
    if isinstance(filters, list):
        kinds = [f.get("type") for f in filters if isinstance(f, dict)]
        if "RequestRedirect" in kinds and "URLRewrite" in kinds:
            ctx.error(child(path, "filters"), "may not contain both RequestRedirect and "
                                              "URLRewrite")


HTTP_RULE = Obj(
    {
        "name": _section_name,
        "matches": list_of(HTTP_MATCH),
        "filters": list_of(HTTP_FILTER),
        "backendRefs": list_of(extend(BACKEND_REF, fields={"filters": list_of(HTTP_FILTER)})),
        "timeouts": TIMEOUTS,
        "retry": any_map,
        "sessionPersistence": any_map,
    },
    defaults={"matches": [_MATCH_DEFAULT]},
    post=_http_rule_post,
)

_ROUTE_COMMON: dict[str, Check] = {
    "parentRefs": list_of(PARENT_REF),
    "hostnames": list_of(_hostname),
}

HTTP_ROUTE_SPEC = Obj({**_ROUTE_COMMON, "rules": list_of(HTTP_RULE)},
                      defaults={"rules": [{"matches": [_MATCH_DEFAULT]}]})

GRPC_ROUTE_SPEC = Obj(
    {**_ROUTE_COMMON,
     "rules": list_of(Obj({"name": _section_name, "matches": list_of(any_map),
                           "filters": list_of(any_map),
                           "backendRefs": list_of(extend(BACKEND_REF, unknown="keep")),
                           "sessionPersistence": any_map}, unknown="keep"))},
    unknown="keep",
)


def _l4_route_spec(with_hostnames: bool) -> Obj:
    fields = dict(_ROUTE_COMMON) if with_hostnames else {"parentRefs": _ROUTE_COMMON[
        "parentRefs"]}
    rule = Obj({"name": _section_name, "backendRefs": list_of(BACKEND_REF, min_items=1)},
               required=("backendRefs",), unknown="keep")
    return Obj({**fields, "rules": list_of(rule, min_items=1)}, required=("rules",),
               unknown="keep")


# ---- Gateway and GatewayClass ---------------------------------------------------------


def _protocol_rule(s: str) -> str | None:
    if s in _PROTOCOLS or _DOMAIN_PROTOCOL.match(s):
        return None
    return (f"unsupported protocol {json.dumps(s)}; must be one of " + ", ".join(_PROTOCOLS)
            + " or a domain-prefixed name such as example.com/PROTO")


def _namespaces_post(ctx: Ctx, ns: dict[str, Any], path: str) -> None:
    if ns.get("from") == "Selector" and "selector" not in ns:
        ctx.error(child(path, "selector"), "is required when from is Selector")


ALLOWED_ROUTES = Obj(
    {
        "namespaces": Obj({"from": string(enum=("All", "Same", "Selector")),
                           "selector": LABEL_SELECTOR},
                          defaults={"from": "Same"}, post=_namespaces_post),
        "kinds": list_of(Obj({"group": string(), "kind": string(nonempty=True)},
                             required=("kind",))),
    },
    defaults={"namespaces": {"from": "Same"}},
)

LISTENER_TLS = Obj(
    {
        "mode": string(enum=("Terminate", "Passthrough")),
        "certificateRefs": list_of(Obj(
            {"group": string(), "kind": string(nonempty=True), "name": string(nonempty=True),
             "namespace": _namespace},
            required=("name",), defaults={"group": "", "kind": "Secret"})),
        "options": map_of(string()),
        "frontendValidation": any_map,
    },
    defaults={"mode": "Terminate"},
)


def _listener_post(ctx: Ctx, listener: dict[str, Any], path: str) -> None:
    proto = listener.get("protocol")
    if proto in ("HTTP", "TCP", "UDP") and "tls" in listener:
        ctx.error(child(path, "tls"), f"must not be set for protocol {proto}")
    elif proto in ("HTTPS", "TLS") and "tls" not in listener:
        ctx.error(child(path, "tls"), f"is required for protocol {proto}")
    if proto in ("TCP", "UDP") and "hostname" in listener:
        ctx.error(child(path, "hostname"), f"must not be set for protocol {proto}")


LISTENER = Obj(
    {"name": _section_name, "hostname": _hostname, "port": PORT,
     "protocol": string(nonempty=True, rule=_protocol_rule), "tls": LISTENER_TLS,
     "allowedRoutes": ALLOWED_ROUTES},
    required=("name", "port", "protocol"),
    defaults={"allowedRoutes": {"namespaces": {"from": "Same"}}},
    post=_listener_post,
)


def _gateway_post(ctx: Ctx, spec: dict[str, Any], path: str) -> None:
    listeners = spec.get("listeners")
    seen: dict[tuple[Any, Any, Any], int] = {}
    for i, lst in enumerate(listeners if isinstance(listeners, list) else []):
        if not isinstance(lst, dict):
            continue
        key = (lst.get("port"), lst.get("protocol"), lst.get("hostname"))
        if key in seen:
            ctx.error(f"{child(path, 'listeners')}[{i}]", "port, protocol and hostname must be "
                      f"unique per listener (same as {child(path, 'listeners')}[{seen[key]}])")
        else:
            seen[key] = i


GATEWAY_SPEC = Obj(
    {
        "gatewayClassName": string(nonempty=True, rule=dns1123_subdomain_error),
        "listeners": list_of(LISTENER, min_items=1, unique="name"),
        "addresses": list_of(Obj({"type": string(), "value": string(nonempty=True)},
                                 required=("value",), unknown="keep")),
        "infrastructure": any_map,
        "backendTLS": any_map,
    },
    required=("gatewayClassName", "listeners"),
    post=_gateway_post,
)

GATEWAY_CLASS_SPEC = Obj(
    {"controllerName": string(nonempty=True), "parametersRef": any_map,
     "description": string()},
    required=("controllerName",),
    unknown="keep",
)

REFERENCE_GRANT_SPEC = Obj(
    {
        "from": list_of(Obj({"group": string(), "kind": string(nonempty=True),
                             "namespace": string(nonempty=True, rule=dns1123_label_error)},
                            required=("group", "kind", "namespace")), min_items=1),
        "to": list_of(Obj({"group": string(), "kind": string(nonempty=True),
                           "name": string()},
                          required=("group", "kind")), min_items=1),
    },
    required=("from", "to"),
)

SCHEMAS: dict[tuple[str, str], KindSchema] = {
    (GROUP, "Gateway"): KindSchema({"spec": GATEWAY_SPEC}),
    (GROUP, "GatewayClass"): KindSchema({"spec": GATEWAY_CLASS_SPEC}),
    (GROUP, "HTTPRoute"): KindSchema({"spec": HTTP_ROUTE_SPEC}),
    (GROUP, "GRPCRoute"): KindSchema({"spec": GRPC_ROUTE_SPEC}),
    (GROUP, "TCPRoute"): KindSchema({"spec": _l4_route_spec(with_hostnames=False)}),
    (GROUP, "TLSRoute"): KindSchema({"spec": _l4_route_spec(with_hostnames=True)}),
    (GROUP, "ReferenceGrant"): KindSchema({"spec": REFERENCE_GRANT_SPEC}),
}
