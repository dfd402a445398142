"""Rules for zeromesh's own kinds (group ``zeromesh.io``), for what Istio ambient has no
API for. Unknown fields are errors, as a CRD's structural schema makes them.

LocalRateLimit: a per-proxy token bucket in front of a Service, a waypoint Gateway or
an HTTPRoute (``docs/local-rate-limit.md``). Defaults are filled in (``tokensPerFill: 1``,
``responseStatus: 429``) so the stored object shows what applies; ``fillInterval``
must be at least 50 ms, Envoy's minimum for the same bucket.

TelemetryPolicy: what the access log shows and masks, and how requests are traced, at
waypoints and the ingress gateway (``docs/access-log.md``, ``docs/tracing.md``). Istio's
Telemetry API has no masking and names collectors only through MeshConfig, which proxies here
do not receive; this kind carries both. Masking patterns are checked here (invalid, or
matching the empty string, or matching the replacement itself: an error naming the field).
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from zeromesh.api.durations import parse_duration
from zeromesh.api.istio_security import WORKLOAD_SELECTOR, one_target
from zeromesh.api.names import dns1123_subdomain_error
from zeromesh.api.schema import (
    Ctx,
    KindSchema,
    Obj,
    boolean,
    child,
    describe,
    duration,
    integer,
    list_of,
    map_of,
    number,
    string,
)

ZEROMESH = "zeromesh.io"
GATEWAY_API = "gateway.networking.k8s.io"

_TARGET_KINDS = {("", "Service"), (GATEWAY_API, "Gateway"), (GATEWAY_API, "HTTPRoute"),
                 ("networking.istio.io", "Gateway")}     # an Istio Gateway on the ingress gateway
_MIN_FILL_INTERVAL_S = 0.05
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_PROXY_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive",
                            "upgrade", "te", "trailer", "proxy-connection"})


def positive_int(ctx: Ctx, value: Any, path: str) -> Any:
    """An integer above 0 (booleans and quoted numbers refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        ctx.error(path, f"must be a positive integer, got {describe(value)}")
        return copy.deepcopy(value)
    return value


_duration = duration()


def fill_interval(ctx: Ctx, value: Any, path: str) -> Any:
    """A Go duration of at least 50 ms."""
    before = len(ctx.errors)
    out = _duration(ctx, value, path)
    if len(ctx.errors) == before and parse_duration(value) < _MIN_FILL_INTERVAL_S:
        ctx.error(path, f'duration "{value}" is too short; the fill interval must be at least 50ms')
    return out


def _header_name_rule(name: str) -> str | None:
    if not _HEADER_NAME.match(name):
        return f"{json.dumps(name)} is not a valid HTTP header name"
    if name.lower() in _PROXY_HEADERS:
        return f"{json.dumps(name)} is managed by the proxy and cannot be set"
    return None


def _header_value_rule(value: str) -> str | None:
    if any(c in value for c in "\r\n\0"):
        return "header values must not contain CR, LF or NUL"
    return None


def _target_ref_post(ctx: Ctx, ref: dict[str, Any], path: str) -> None:
    if ref.get("namespace"):
        ctx.error(child(path, "namespace"), "must not be set; cross-namespace references are "
                                            "not supported")
    kind, group = ref.get("kind"), ref.get("group", "")
    if isinstance(kind, str) and kind and (group, kind) not in _TARGET_KINDS:
        allowed = ", ".join(f"{g or 'core'}/{k}" for g, k in sorted(_TARGET_KINDS))
        ctx.error(child(path, "kind"), f"a LocalRateLimit cannot target {json.dumps(kind)} in group "
                                       f"{json.dumps(group)}; allowed: {allowed}")


TARGET_REF = Obj(
    {"group": string(), "kind": string(nonempty=True),
     "name": string(nonempty=True, rule=dns1123_subdomain_error), "namespace": string()},
    required=("kind", "name"),
    post=_target_ref_post,
)

TOKEN_BUCKET = Obj(
    {"maxTokens": positive_int, "tokensPerFill": positive_int, "fillInterval": fill_interval},
    required=("maxTokens", "fillInterval"),
    defaults={"tokensPerFill": 1},
)


def _spec_post(ctx: Ctx, spec: dict[str, Any], path: str) -> None:
    refs = spec.get("targetRefs")
    if isinstance(refs, list):
        seen: dict[tuple[Any, Any, Any], int] = {}
        for i, r in enumerate(refs):
            if not isinstance(r, dict):
                continue
            key = (r.get("group", ""), r.get("kind"), r.get("name"))
            if key in seen:
                ctx.error(f"{child(path, 'targetRefs')}[{i}]",
                          f"duplicate target (also {child(path, 'targetRefs')}[{seen[key]}])")
            else:
                seen[key] = i
    tb = spec.get("tokenBucket")
    if isinstance(tb, dict):
        most, fill = tb.get("maxTokens"), tb.get("tokensPerFill")
        if isinstance(most, int) and isinstance(fill, int) and 0 < most < fill:
            ctx.warn(child(path, "tokenBucket.tokensPerFill"),
                     f"is larger than maxTokens; the bucket never holds more than {most} tokens")


LOCAL_RATE_LIMIT_SPEC = Obj(
    {
        "targetRefs": list_of(TARGET_REF, min_items=1),
        "tokenBucket": TOKEN_BUCKET,
        "responseStatus": integer(400, 599),
        "responseHeaders": map_of(string(rule=_header_value_rule), key_rule=_header_name_rule),
    },
    required=("targetRefs", "tokenBucket"),
    defaults={"responseStatus": 429},
    post=_spec_post,
)

# ---- TelemetryPolicy ------------------------------------------------------------------------------
MASK_BUILTINS = ("CardNumber", "BearerToken")      # zeromesh.telemetry.masking.BUILTINS
_TELEMETRY_TARGET_KINDS = {("", "Service"), (GATEWAY_API, "Gateway")}
_JSON_FIELD = re.compile(r"^[^.\s]+(\.[^.\s]+)*$")


def _telemetry_target_post(ctx: Ctx, ref: dict[str, Any], path: str) -> None:
    if ref.get("namespace"):
        ctx.error(child(path, "namespace"), "must not be set; cross-namespace references are "
                                            "not supported")
    kind, group = ref.get("kind"), ref.get("group", "")
    if isinstance(kind, str) and kind and (group, kind) not in _TELEMETRY_TARGET_KINDS:
        allowed = ", ".join(f"{g or 'core'}/{k}" for g, k in sorted(_TELEMETRY_TARGET_KINDS))
        ctx.error(child(path, "kind"), f"a TelemetryPolicy cannot target {json.dumps(kind)} in group "
                                       f"{json.dumps(group)}; allowed: {allowed}")


TELEMETRY_TARGET_REF = Obj(
    {"group": string(), "kind": string(nonempty=True),
     "name": string(nonempty=True, rule=dns1123_subdomain_error), "namespace": string()},
    required=("kind", "name"),
    post=_telemetry_target_post,
)


def _mask_regex(ctx: Ctx, value: Any, path: str) -> Any:
    """A Python regular expression that cannot match the empty string (it would mask nothing,
    everywhere)."""
    if not isinstance(value, str):
        ctx.error(path, f"must be a string, got {describe(value)}")
        return copy.deepcopy(value)
    try:
        compiled = re.compile(value)
    except re.error as e:
        ctx.error(path, f"invalid regular expression {json.dumps(value)}: {e}")
        return value
    if compiled.search("") is not None:
        ctx.error(path, f"regular expression {json.dumps(value)} matches the empty string")
    return value


def _header_name(name: str) -> str | None:
    return None if _HEADER_NAME.match(name) else f"{json.dumps(name)} is not a valid HTTP header name"


def _json_field(name: str) -> str | None:
    return None if _JSON_FIELD.match(name) else (f"{json.dumps(name)} is not a field name or a dotted "
                                                 "path such as card.number")


def _replacement(value: str) -> str | None:
    if any(c in value for c in "\r\n\0"):
        return "must not contain CR, LF or NUL"
    if any(c.isdigit() for c in value):
        return "must not contain digits (it could complete a card number)"
    return None


def _masking_post(ctx: Ctx, spec: dict[str, Any], path: str) -> None:
    replacement = spec.get("replacement", "****")
    patterns = spec.get("patterns")
    if not isinstance(replacement, str) or not isinstance(patterns, list):
        return
    for i, p in enumerate(patterns):
        rx = p.get("regex") if isinstance(p, dict) else None
        if not isinstance(rx, str):
            continue
        try:
            hit = re.search(rx, replacement)
        except re.error:
            continue                              # reported by the regex check
        if hit is not None:
            ctx.error(child(f"{child(path, 'patterns')}[{i}]", "regex"),
                      f"matches the replacement {json.dumps(replacement)}; choose another replacement")


MASK_PATTERN = Obj({"name": string(nonempty=True), "regex": _mask_regex}, required=("regex",))

MASKING = Obj(
    {
        "headers": list_of(string(nonempty=True, rule=_header_name), unique="."),
        "queryParameters": list_of(string(nonempty=True), unique="."),
        "jsonFields": list_of(string(nonempty=True, rule=_json_field), unique="."),
        "patterns": list_of(MASK_PATTERN, unique="name"),
        "builtins": list_of(string(enum=MASK_BUILTINS), unique="."),
        "replacement": string(nonempty=True, rule=_replacement),
    },
    post=_masking_post,
)

ACCESS_LOGGING = Obj(
    {
        "requestHeaders": list_of(string(nonempty=True, rule=_header_name), unique="."),
        "body": Obj({"enabled": boolean, "maxBytes": integer(1, 65536)}),
        "masking": MASKING,
    },
)


def _endpoint(url: str) -> str | None:
    from urllib.parse import urlsplit
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError as e:
        return f"{json.dumps(url)} is not a URL: {e}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{json.dumps(url)} must be an http:// or https:// URL with a host (OTLP/HTTP)"
    return None


OTLP = Obj(
    {
        "endpoint": string(nonempty=True, rule=_endpoint),
        "headers": map_of(string(rule=_header_value_rule), key_rule=_header_name),
        "timeout": duration(),
    },
    required=("endpoint",),
)

TRACING = Obj(
    {
        "randomSamplingPercentage": number(0, 100),
        "otlp": OTLP,
        "maxTraces": integer(0, 10000),
    },
)

TELEMETRY_POLICY_SPEC = Obj(
    {
        "selector": WORKLOAD_SELECTOR,
        "targetRefs": list_of(TELEMETRY_TARGET_REF),
        "accessLogging": ACCESS_LOGGING,
        "tracing": TRACING,
    },
    post=one_target,
)

SCHEMAS: dict[tuple[str, str], KindSchema] = {
    (ZEROMESH, "LocalRateLimit"): KindSchema({"spec": LOCAL_RATE_LIMIT_SPEC}),
    (ZEROMESH, "TelemetryPolicy"): KindSchema({"spec": TELEMETRY_POLICY_SPEC}),
}
