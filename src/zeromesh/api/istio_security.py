"""Rules for security.istio.io: AuthorizationPolicy, PeerAuthentication, RequestAuthentication.

These follow Istio's own validation (pkg/config/validation) so a policy Istio
rejects is rejected here too, with the field path instead of "found at rule 2".
Unknown fields are errors, as Istio's CRD schemas make them. ``action`` is not
defaulted: an absent action means ALLOW, and storing what the user wrote keeps
re-applies unchanged.
"""

from __future__ import annotations

import json
import re
from typing import Any

from zeromesh.api.names import ip_or_cidr_error
from zeromesh.api.schema import (
    Check,
    Ctx,
    KindSchema,
    Obj,
    boolean,
    child,
    describe,
    duration,
    label_map,
    list_of,
    map_of,
    present,
    string,
)

# ---- shared by the three kinds -------------------------------------------------

_TARGET_KINDS = {("", "Service"), ("networking.istio.io", "ServiceEntry"),
                 ("gateway.networking.k8s.io", "Gateway"),
                 ("gateway.networking.k8s.io", "GatewayClass")}


def _selector_post(ctx: Ctx, sel: dict[str, Any], path: str) -> None:
    match_labels = sel.get("matchLabels")
    if not match_labels:
        ctx.warn(path, "workload selector specified without labels (selects every workload)")
    elif isinstance(match_labels, dict):
        for k, v in match_labels.items():
            if "*" in k or (isinstance(v, str) and "*" in v):
                ctx.error(f"{child(path, 'matchLabels')}[{k}]",
                          "wildcards are not supported in selectors")


WORKLOAD_SELECTOR = Obj({"matchLabels": label_map}, post=_selector_post)


def _target_ref_post(ctx: Ctx, ref: dict[str, Any], path: str) -> None:
    if ref.get("namespace"):
        ctx.error(child(path, "namespace"), "must not be set; cross-namespace references are "
                                            "not supported")
    kind, group = ref.get("kind"), ref.get("group", "")
    if isinstance(kind, str) and kind and (group, kind) not in _TARGET_KINDS:
        allowed = ", ".join(f"{g or 'core'}/{k}" for g, k in sorted(_TARGET_KINDS))
        ctx.error(child(path, "kind"), f"a policy cannot target {json.dumps(kind)} in group "
                                       f"{json.dumps(group)}; allowed: {allowed}")


TARGET_REF = Obj(
    {"group": string(), "kind": string(nonempty=True), "name": string(nonempty=True),
     "namespace": string()},
    required=("kind", "name"),
    post=_target_ref_post,
)


def one_target(ctx: Ctx, spec: dict[str, Any], path: str) -> None:
    """Istio: only one of selector, targetRef and targetRefs may be set."""
    used = [f for f in ("selector", "targetRef", "targetRefs") if spec.get(f)]
    if len(used) > 1:
        ctx.error(child(path, used[1]), f"cannot be set together with {child(path, used[0])}; "
                                        "set only one of selector, targetRef, targetRefs")


TARGETING: dict[str, Check] = {
    "selector": WORKLOAD_SELECTOR,
    "targetRef": TARGET_REF,
    "targetRefs": list_of(TARGET_REF),
}

# ---- AuthorizationPolicy ----------------------------------------------------------

_nonempty_list = list_of(string(nonempty=True))
_ip_list = list_of(string(nonempty=True, rule=ip_or_cidr_error))


def _service_account_rule(s: str) -> str | None:
    if "*" in s:
        return "wildcards are not allowed in serviceAccounts"
    ns, sep, sa = s.partition("/")
    if s.count("/") > 1 or (sep and (not ns or not sa)):
        return "expected 'serviceAccount' or 'namespace/serviceAccount'"
    return None


_sa_list = list_of(string(nonempty=True, rule=_service_account_rule))

_SOURCE_FIELDS: dict[str, Check] = {
    "principals": _nonempty_list, "notPrincipals": _nonempty_list,
    "requestPrincipals": _nonempty_list, "notRequestPrincipals": _nonempty_list,
    "namespaces": _nonempty_list, "notNamespaces": _nonempty_list,
    "ipBlocks": _ip_list, "notIpBlocks": _ip_list,
    "remoteIpBlocks": _ip_list, "notRemoteIpBlocks": _ip_list,
    "serviceAccounts": _sa_list, "notServiceAccounts": _sa_list,
}
_L4_SOURCE = tuple(f for f in _SOURCE_FIELDS if "equest" not in f)


def _source_post(ctx: Ctx, src: dict[str, Any], path: str) -> None:
    if not any(src.get(f) for f in _SOURCE_FIELDS):
        ctx.error(path, "must not be empty; set at least one of: " + ", ".join(_SOURCE_FIELDS))
    identity = present(src, ("principals", "notPrincipals", "namespaces", "notNamespaces"))
    if identity and present(src, ("serviceAccounts", "notServiceAccounts")):
        ctx.error(path, f"serviceAccounts cannot be combined with {identity[0]}")


def _port_string(ctx: Ctx, value: Any, path: str) -> Any:
    """Istio wants port numbers as strings; integers are accepted and converted."""
    if isinstance(value, int) and not isinstance(value, bool):
        ctx.warn(path, f'port numbers are strings in AuthorizationPolicy; {value} was '
                       f'normalised to "{value}"')
        value = str(value)
    if not isinstance(value, str):
        ctx.error(path, f"must be a port number as a string, got {describe(value)}")
        return value
    if not (value.isascii() and value.isdigit() and int(value) <= 65535):
        ctx.error(path, f"{json.dumps(value)} is not a port number (0-65535)")
    return value


_port_list = list_of(_port_string)

_OPERATION_FIELDS: dict[str, Check] = {
    "hosts": _nonempty_list, "notHosts": _nonempty_list,
    "ports": _port_list, "notPorts": _port_list,
    "methods": _nonempty_list, "notMethods": _nonempty_list,
    "paths": _nonempty_list, "notPaths": _nonempty_list,
}


def _operation_post(ctx: Ctx, op: dict[str, Any], path: str) -> None:
    if not any(op.get(f) for f in _OPERATION_FIELDS):
        ctx.error(path, "must not be empty; set at least one of: " + ", ".join(_OPERATION_FIELDS))


_PLAIN_KEYS = ("source.ip", "remote.ip", "source.namespace", "source.serviceAccount",
               "source.principal", "request.auth.principal", "request.auth.audiences",
               "request.auth.presenter", "destination.ip", "destination.port",
               "connection.sni")
_MAP_KEYS = ("request.headers", "request.experimental.inline.headers", "request.auth.claims")


def _condition_key_rule(key: str) -> str | None:
    if key in _PLAIN_KEYS:
        return None
    prefixes = (*_MAP_KEYS, "experimental.envoy.filters.")
    if key.startswith(prefixes):
        open_at = key.find("[")
        if key.endswith("]") and 0 < open_at < len(key) - 2:
            return None
        return f'bad key {json.dumps(key)}: should have the form name[key]'
    if key == "destination.namespace":
        return "destination.namespace is replaced by the policy's metadata.namespace"
    if key.startswith("destination.labels"):
        return "destination.labels is replaced by the workload selector"
    return (f"unknown attribute {json.dumps(key)}; supported: " + ", ".join(_PLAIN_KEYS)
            + ", " + ", ".join(f"{k}[...]" for k in _MAP_KEYS))


def _condition_post(ctx: Ctx, cond: dict[str, Any], path: str) -> None:
    if not cond.get("values") and not cond.get("notValues"):
        ctx.error(child(path, "values"), "at least one of values or notValues must be set")
    key = cond.get("key")
    for field in ("values", "notValues"):
        values = cond.get(field)
        if not isinstance(values, list):
            continue
        for i, v in enumerate(values):
            if not isinstance(v, str):
                continue
            msg = None
            if key in ("source.ip", "remote.ip", "destination.ip"):
                msg = ip_or_cidr_error(v)
            elif key == "destination.port" and not (v.isascii() and v.isdigit()
                                                    and int(v) <= 65535):
                msg = f"{json.dumps(v)} is not a port number (0-65535)"
            elif key == "source.serviceAccount":
                msg = _service_account_rule(v)
            if msg:
                ctx.error(f"{child(path, field)}[{i}]", msg)


CONDITION = Obj(
    {"key": string(nonempty=True, rule=_condition_key_rule), "values": _nonempty_list,
     "notValues": _nonempty_list},
    required=("key",),
    post=_condition_post,
)

RULE = Obj({
    "from": list_of(Obj({"source": Obj(_SOURCE_FIELDS, post=_source_post)},
                        required=("source",)), min_items=1),
    "to": list_of(Obj({"operation": Obj(_OPERATION_FIELDS, post=_operation_post)},
                      required=("operation",)), min_items=1),
    "when": list_of(CONDITION),
})

_CUSTOM_UNSUPPORTED = ("namespaces", "notNamespaces", "serviceAccounts", "notServiceAccounts",
                       "principals", "notPrincipals", "requestPrincipals",
                       "notRequestPrincipals")


def _rule_parts(rule: Any, field: str, inner: str) -> list[tuple[int, dict[str, Any]]]:
    items = rule.get(field) if isinstance(rule, dict) else None
    out = []
    for i, item in enumerate(items if isinstance(items, list) else []):
        part = item.get(inner) if isinstance(item, dict) else None
        if isinstance(part, dict):
            out.append((i, part))
    return out


def _authz_post(ctx: Ctx, spec: dict[str, Any], path: str) -> None:
    one_target(ctx, spec, path)
    action = spec.get("action", "ALLOW")
    rules = spec.get("rules")
    if action in ("DENY", "CUSTOM") and "rules" not in spec:
        ctx.error(child(path, "rules"), f"is required with action {action} (without rules it "
                                        "never applies); add an empty rule {} to match every "
                                        "request")
    if action == "CUSTOM":
        if not isinstance(spec.get("provider"), dict):
            ctx.error(child(path, "provider.name"), "is required when action is CUSTOM")
    elif "provider" in spec:
        ctx.error(child(path, "provider"), "may only be set when action is CUSTOM")
    for r, rule in enumerate(rules if isinstance(rules, list) else []):
        where = f"{child(path, 'rules')}[{r}]"
        sources = _rule_parts(rule, "from", "source")
        operations = _rule_parts(rule, "to", "operation")
        if action == "CUSTOM":
            for i, src in sources:
                for f in present(src, _CUSTOM_UNSUPPORTED):
                    ctx.error(f"{where}.from[{i}].source.{f}", "is not supported with action "
                                                               "CUSTOM")
        if action == "DENY":
            l4_from = any(present(s, _L4_SOURCE) for _, s in sources)
            l4_to = any(present(o, ("ports", "notPorts")) for _, o in operations)
            if (sources and not operations and not l4_from) or (operations and not l4_to):
                ctx.warn(where, "this DENY rule uses only HTTP attributes: the ztunnel cannot see "
                                "them and ignores the rule, while a waypoint denies all non-HTTP "
                                "(TCP) traffic in its scope with it; specify the ports")


AUTHZ_SPEC = Obj(
    {
        **TARGETING,
        "action": string(enum=("ALLOW", "DENY", "AUDIT", "CUSTOM")),
        "provider": Obj({"name": string(nonempty=True)}, required=("name",)),
        "rules": list_of(RULE),
    },
    post=_authz_post,
)

# ---- PeerAuthentication -----------------------------------------------------------

_MTLS = Obj({"mode": string(enum=("UNSET", "DISABLE", "PERMISSIVE", "STRICT"))})


def _port_key_rule(key: str) -> str | None:
    if key.isascii() and key.isdigit() and 1 <= int(key) <= 65535:
        return None
    return f"{json.dumps(key)} is not a port number (1-65535)"


def _peer_authn_post(ctx: Ctx, spec: dict[str, Any], path: str) -> None:
    levels = spec.get("portLevelMtls")
    if not isinstance(levels, dict):
        return
    if not levels:
        ctx.error(child(path, "portLevelMtls"), "must not be empty when set")
        return
    sel = spec.get("selector")
    if not (isinstance(sel, dict) and sel.get("matchLabels")):
        ctx.error(child(path, "portLevelMtls"), "requires spec.selector with matchLabels: "
                                                "namespace- and mesh-wide policies cannot set "
                                                "port-level mTLS")


PEER_AUTHN_SPEC = Obj(
    {
        "selector": WORKLOAD_SELECTOR,
        "mtls": _MTLS,
        "portLevelMtls": map_of(_MTLS, key_rule=_port_key_rule),
    },
    post=_peer_authn_post,
)

# ---- RequestAuthentication --------------------------------------------------------


def _jwks_uri_rule(s: str) -> str | None:
    if s.startswith(("http://", "https://")):
        return None
    return f"{json.dumps(s)} must be an http:// or https:// URL"


_HEADER_NAME = re.compile(r"[a-zA-Z0-9!#$%&'*+.^_`|~-]+")


def _header_name_rule(s: str) -> str | None:
    """Istio's ValidateStrictHTTPHeaderName: an RFC 7230 token ("" is proto3's "not set")."""
    if not s or _HEADER_NAME.fullmatch(s):
        return None
    return f"{json.dumps(s)} is not a valid HTTP header name"


def _jwks_rule(s: str) -> str | None:
    """Istio parses inline keys at apply time; a set without a usable key is refused."""
    if not s:
        return None
    # Imported here: zeromesh.authn builds on zeromesh.api, not the other way round.
    from zeromesh.authn.jwks import JwksError, parse_jwks
    try:
        parse_jwks(s)
    except JwksError as e:
        return f"jwks parse error: {e}"
    return None


def _jwt_rule_post(ctx: Ctx, rule: dict[str, Any], path: str) -> None:
    if rule.get("jwks") and rule.get("jwksUri"):
        ctx.warn(child(path, "jwksUri"), "is ignored: jwks is also set and the inline keys are "
                                         "used; set only one of jwks and jwksUri")


JWT_RULE = Obj(
    {
        "issuer": string(nonempty=True),
        "audiences": _nonempty_list,
        "jwksUri": string(rule=_jwks_uri_rule),
        "jwks": string(rule=_jwks_rule),
        "fromHeaders": list_of(Obj({"name": string(nonempty=True), "prefix": string()},
                                   required=("name",))),
        "fromParams": _nonempty_list,
        "fromCookies": _nonempty_list,
        "outputPayloadToHeader": string(rule=_header_name_rule),
        "forwardOriginalToken": boolean,
        "outputClaimToHeaders": list_of(Obj({"header": string(nonempty=True,
                                                              rule=_header_name_rule),
                                             "claim": string(nonempty=True)},
                                            required=("header", "claim"))),
        "timeout": duration(),
    },
    required=("issuer",),
    post=_jwt_rule_post,
)

REQUEST_AUTHN_SPEC = Obj({**TARGETING, "jwtRules": list_of(JWT_RULE)}, post=one_target)

SCHEMAS: dict[tuple[str, str], KindSchema] = {
    ("security.istio.io", "AuthorizationPolicy"): KindSchema({"spec": AUTHZ_SPEC}),
    ("security.istio.io", "PeerAuthentication"): KindSchema({"spec": PEER_AUTHN_SPEC}),
    ("security.istio.io", "RequestAuthentication"): KindSchema({"spec": REQUEST_AUTHN_SPEC}),
}
