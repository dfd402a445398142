"""Compile validated (normalised) Istio VirtualService and Gateway API HTTPRoute
manifests into ordered :class:`Route` lists.

VirtualService routes keep their written order (first match wins). HTTPRoute rules
are split into one route per match and sorted by the Gateway API precedence, as
Istio does: Exact > PathPrefix > RegularExpression, longer path value first, then a
method match, then more header matches, then more query-param matches; ties keep
the order of the routes (oldest creationTimestamp first, then "namespace/name"),
then rule order, then match order.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from zeromesh.api.durations import parse_duration, parse_gateway_duration
from zeromesh.routing.model import (
    Backend,
    Fault,
    HeaderOps,
    Mirror,
    PathModifier,
    Redirect,
    RequestMatch,
    RetryPolicy,
    Rewrite,
    Route,
    RouteAction,
    StringMatch,
)

DEFAULT_RETRY_ON = frozenset({"connect-failure", "refused-stream", "unavailable", "cancelled",
                              "retriable-status-codes"})

# ---- helpers ---------------------------------------------------------------------------


def service_host(name: str, namespace: str, domain: str = "cluster.local") -> str:
    """Expand a short Istio host ("reviews") relative to the manifest's namespace;
    names with a dot are taken as written."""
    return name if "." in name else f"{name}.{namespace}.svc.{domain}"


def _meta(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or "default"), str(meta.get("name") or "")


def _percent(p: Any, default: float = 100.0) -> float:
    if isinstance(p, Mapping) and "value" in p:
        return float(p["value"])
    return default


# ---- Istio VirtualService --------------------------------------------------------------


def _istio_sm(sm: Mapping[str, Any], *, ignore_case: bool = False) -> StringMatch:
    if "exact" in sm:
        return StringMatch("exact", str(sm["exact"]), ignore_case)
    if "prefix" in sm:
        return StringMatch("prefix", str(sm["prefix"]), ignore_case)
    if "regex" in sm:
        return StringMatch("regex", str(sm["regex"]), pattern=re.compile(str(sm["regex"])))
    return StringMatch("present")


def _istio_sm_map(m: Mapping[str, Any] | None, *, lower: bool) -> tuple[tuple[str, StringMatch], ...]:
    return tuple(((k.lower() if lower else k), _istio_sm(v or {})) for k, v in (m or {}).items())


def _istio_match(m: Mapping[str, Any]) -> RequestMatch:
    uri = m.get("uri")
    return RequestMatch(
        path=_istio_sm(uri, ignore_case=bool(m.get("ignoreUriCase"))) if uri else None,
        method=_istio_sm(m["method"]) if m.get("method") else None,
        authority=_istio_sm(m["authority"]) if m.get("authority") else None,
        headers=_istio_sm_map(m.get("headers"), lower=True),
        without_headers=_istio_sm_map(m.get("withoutHeaders"), lower=True),
        query_params=_istio_sm_map(m.get("queryParams"), lower=False),
    )


def _istio_header_ops(ops: Mapping[str, Any] | None) -> HeaderOps:
    ops = ops or {}
    return HeaderOps(
        set=tuple((k.lower(), str(v)) for k, v in (ops.get("set") or {}).items()),
        add=tuple((k.lower(), str(v)) for k, v in (ops.get("add") or {}).items()),
        remove=tuple(str(k).lower() for k in (ops.get("remove") or ())),
    )


def _istio_dest(d: Mapping[str, Any], ns: str, domain: str, weight: int) -> Backend:
    port = (d.get("port") or {}).get("number")
    return Backend(service_host(str(d["host"]), ns, domain), int(port) if port else None,
                   d.get("subset") or None, weight)


def _istio_action(r: Mapping[str, Any], ns: str, domain: str) -> RouteAction:
    dests = list(r.get("route") or ())
    backends = tuple(
        _istio_dest(d["destination"], ns, domain,
                    int(d.get("weight", 100 if len(dests) == 1 else 0)))
        for d in dests)
    retries = None
    if (rt := r.get("retries")) is not None:
        retry_on = rt.get("retryOn")
        retries = RetryPolicy(
            attempts=int(rt.get("attempts", 0)),
            per_try_timeout_s=parse_duration(rt["perTryTimeout"]) if "perTryTimeout" in rt else None,
            retry_on=frozenset(retry_on.split(",")) if retry_on else DEFAULT_RETRY_ON)
    redirect = None
    if (rd := r.get("redirect")) is not None:
        redirect = Redirect(status=int(rd.get("redirectCode", 301)), scheme=rd.get("scheme"),
                            host=rd.get("authority"), port=rd.get("port"),
                            path=PathModifier(full=rd["uri"]) if "uri" in rd else None)
    rewrite = None
    if (rw := r.get("rewrite")) is not None:
        rx = rw.get("uriRegexRewrite")
        rewrite = Rewrite(path=PathModifier(prefix=rw["uri"]) if "uri" in rw else None,
                          regex=(re.compile(rx["match"]), str(rx["rewrite"])) if rx else None,
                          host=rw.get("authority"))
    fault = None
    if (f := r.get("fault")) is not None:
        delay, abort = f.get("delay") or {}, f.get("abort") or {}
        delay_pct = _percent(delay.get("percentage"), float(delay.get("percent", 100)))
        fault = Fault(
            delay_s=parse_duration(delay["fixedDelay"]) if "fixedDelay" in delay else None,
            delay_percent=delay_pct,
            abort_status=int(abort["httpStatus"]) if "httpStatus" in abort else None,
            abort_percent=_percent(abort.get("percentage")))
    mirrors: list[Mirror] = []
    if (m := r.get("mirror")) is not None:
        pct = _percent(r.get("mirrorPercentage"), float(r.get("mirrorPercent", 100)))
        mirrors.append(Mirror(_istio_dest(m, ns, domain, 1), pct))
    for mm in r.get("mirrors") or ():
        mirrors.append(Mirror(_istio_dest(mm["destination"], ns, domain, 1),
                              _percent(mm.get("percentage"))))
    headers = r.get("headers") or {}
    return RouteAction(
        backends=backends,
        timeout_s=(parse_duration(r["timeout"]) or None) if "timeout" in r else None,
        retries=retries,
        request_header_ops=_istio_header_ops(headers.get("request")),
        response_header_ops=_istio_header_ops(headers.get("response")),
        redirect=redirect, rewrite=rewrite, fault=fault, mirrors=tuple(mirrors))


def compile_virtual_service(vs: Mapping[str, Any], *, domain: str = "cluster.local") -> list[Route]:
    """The VirtualService's ``http`` routes in written order (first match wins).
    Per-destination ``headers``, ``corsPolicy``, ``directResponse`` and ``delegate``
    are not compiled."""
    ns, name = _meta(vs)
    routes = []
    for i, r in enumerate((vs.get("spec") or {}).get("http") or ()):
        routes.append(Route(name=str(r.get("name") or f"{ns}/{name}/http[{i}]"),
                            matches=tuple(_istio_match(m) for m in r.get("match") or ()),
                            action=_istio_action(r, ns, domain)))
    return routes


def destination_rule_subsets(dr: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """Subset name → the labels its endpoints must carry."""
    return {str(s["name"]): dict(s.get("labels") or {})
            for s in (dr.get("spec") or {}).get("subsets") or ()}


# ---- Gateway API HTTPRoute -------------------------------------------------------------

_PATH_KIND = {"Exact": "exact", "PathPrefix": "path_prefix", "RegularExpression": "regex"}
_PATH_RANK = {"exact": 3, "path_prefix": 2, "regex": 1}


def _gw_value(m: Mapping[str, Any]) -> StringMatch:
    value = str(m["value"])
    if m.get("type") == "RegularExpression":
        return StringMatch("regex", value, pattern=re.compile(value))
    return StringMatch("exact", value)


def _gw_match(m: Mapping[str, Any]) -> RequestMatch:
    p = m.get("path") or {"type": "PathPrefix", "value": "/"}
    kind = _PATH_KIND[str(p.get("type", "PathPrefix"))]
    value = str(p.get("value", "/"))
    path = (StringMatch("regex", value, pattern=re.compile(value)) if kind == "regex"
            else StringMatch(kind, value))  # type: ignore[arg-type]
    return RequestMatch(
        path=path,
        method=StringMatch("exact", str(m["method"])) if m.get("method") else None,
        headers=tuple((str(h["name"]).lower(), _gw_value(h)) for h in m.get("headers") or ()),
        query_params=tuple((str(q["name"]), _gw_value(q)) for q in m.get("queryParams") or ()),
    )


def _gw_header_ops(mod: Mapping[str, Any]) -> HeaderOps:
    return HeaderOps(
        set=tuple((str(h["name"]).lower(), str(h["value"])) for h in mod.get("set") or ()),
        add=tuple((str(h["name"]).lower(), str(h["value"])) for h in mod.get("add") or ()),
        remove=tuple(str(n).lower() for n in mod.get("remove") or ()),
    )


def _gw_path_modifier(p: Mapping[str, Any] | None) -> PathModifier | None:
    if not p:
        return None
    if p.get("type") == "ReplaceFullPath":
        return PathModifier(full=str(p["replaceFullPath"]))
    return PathModifier(prefix=str(p["replacePrefixMatch"]))


def _gw_backend(ref: Mapping[str, Any], ns: str, domain: str) -> Backend:
    name = str(ref["name"])
    if ref.get("kind", "Service") == "Service" and ref.get("group", "") in ("", "core"):
        host = f"{name}.{ref.get('namespace') or ns}.svc.{domain}"
    else:
        host = name
    port = ref.get("port")
    return Backend(host, int(port) if port else None, None, int(ref.get("weight", 1)))


def _gw_action(rule: Mapping[str, Any], ns: str, domain: str) -> RouteAction:
    req_ops, resp_ops = HeaderOps(), HeaderOps()
    redirect: Redirect | None = None
    rewrite: Rewrite | None = None
    mirrors: list[Mirror] = []
    for f in rule.get("filters") or ():
        kind = f.get("type")
        if kind == "RequestHeaderModifier":
            req_ops = _gw_header_ops(f["requestHeaderModifier"])
        elif kind == "ResponseHeaderModifier":
            resp_ops = _gw_header_ops(f["responseHeaderModifier"])
        elif kind == "RequestRedirect":
            rr = f["requestRedirect"]
            redirect = Redirect(status=int(rr.get("statusCode", 302)), scheme=rr.get("scheme"),
                                host=rr.get("hostname"), port=rr.get("port"),
                                path=_gw_path_modifier(rr.get("path")))
        elif kind == "URLRewrite":
            uw = f["urlRewrite"]
            rewrite = Rewrite(path=_gw_path_modifier(uw.get("path")), host=uw.get("hostname"))
        elif kind == "RequestMirror":
            rm = f["requestMirror"]
            pct = float(rm.get("percent", 100))
            if "fraction" in rm:
                fr = rm["fraction"]
                pct = 100.0 * int(fr["numerator"]) / int(fr.get("denominator", 100))
            mirrors.append(Mirror(_gw_backend({**rm["backendRef"], "weight": 1}, ns, domain), pct))
    timeouts = rule.get("timeouts") or {}
    request_t = parse_gateway_duration(timeouts["request"]) if "request" in timeouts else 0.0
    backend_t = (parse_gateway_duration(timeouts["backendRequest"])
                 if "backendRequest" in timeouts else 0.0)
    return RouteAction(
        backends=tuple(_gw_backend(b, ns, domain) for b in rule.get("backendRefs") or ()),
        timeout_s=request_t or None, backend_timeout_s=backend_t or None,
        request_header_ops=req_ops, response_header_ops=resp_ops,
        redirect=redirect, rewrite=rewrite, mirrors=tuple(mirrors))


def _precedence(m: RequestMatch) -> tuple[int, int, int, int, int]:
    """Sort key (ascending = higher precedence)."""
    path = m.path
    rank = _PATH_RANK.get(path.kind, 0) if path else 0
    length = len(path.value) if path else 0
    return (-rank, -length, 0 if m.method else 1, -len(m.headers), -len(m.query_params))


def compile_http_routes(http_routes: Iterable[Mapping[str, Any]], *,
                        domain: str = "cluster.local") -> list[Route]:
    """All HTTPRoutes attached to one service, merged and sorted by Gateway API
    precedence. Route names are "namespace/name/rule[i]/match[j]" (or the rule's name)."""

    def age(hr: Mapping[str, Any]) -> tuple[str, str]:
        ns, name = _meta(hr)
        # RFC 3339 UTC timestamps sort as strings; missing timestamps sort last
        return (str((hr.get("metadata") or {}).get("creationTimestamp") or "\uffff"), f"{ns}/{name}")

    flat: list[Route] = []
    for hr in sorted(http_routes, key=age):
        ns, name = _meta(hr)
        for i, rule in enumerate((hr.get("spec") or {}).get("rules") or ()):
            action = _gw_action(rule, ns, domain)
            rule_name = f"{ns}/{name}/{rule['name']}" if rule.get("name") else f"{ns}/{name}/rule[{i}]"
            matches = rule.get("matches") or [{"path": {"type": "PathPrefix", "value": "/"}}]
            for j, m in enumerate(matches):
                flat.append(Route(f"{rule_name}/match[{j}]", (_gw_match(m),), action))
    return sorted(flat, key=lambda r: _precedence(r.matches[0]))
