"""Decisions on one request: which route, which backend, whether to fault or mirror,
and how to rewrite, redirect and modify headers. Randomness comes from ``rng``
(a function returning a float in [0, 1), e.g. ``random.Random(seed).random``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol, TypeVar

from zeromesh.routing.model import (
    Backend,
    Fault,
    HeaderOps,
    HttpRequest,
    Mirror,
    PathModifier,
    Redirect,
    RequestMatch,
    Rewrite,
    Route,
)

Rng = Callable[[], float]


def find_route(routes: Iterable[Route], request: HttpRequest) -> tuple[Route, RequestMatch | None] | None:
    """The first route matching ``request`` and the match that did (``None`` for a
    route without matches), or None. Routes must already be in precedence order."""
    for route in routes:
        if not route.matches:
            return route, None
        for m in route.matches:
            if m.matches(request):
                return route, m
    return None


def match_route(routes: Iterable[Route], request: HttpRequest) -> Route | None:
    """The first matching route, or None (the waypoint answers 404)."""
    found = find_route(routes, request)
    return found[0] if found else None


def pick_backend(backends: Sequence[Backend], rng: Rng) -> Backend | None:
    """Weighted choice: weights are relative shares, zero weights are never picked;
    None when there is nothing to pick (the waypoint answers 503)."""
    total = sum(max(b.weight, 0) for b in backends)
    if total <= 0:
        return None
    x = rng() * total
    acc = 0
    for b in backends:
        if b.weight <= 0:
            continue
        acc += b.weight
        if x < acc:
            return b
    return next(b for b in reversed(backends) if b.weight > 0)  # rng() returned 1.0


class Labelled(Protocol):
    @property
    def labels(self) -> Mapping[str, str]: ...


E = TypeVar("E", bound=Labelled)


def subset_endpoints(subset_labels: Mapping[str, str], endpoints: Iterable[E]) -> list[E]:
    """Endpoints whose labels include every label of the DestinationRule subset."""
    return [e for e in endpoints
            if all(e.labels.get(k) == v for k, v in subset_labels.items())]


def _hit(percent: float, rng: Rng) -> bool:
    return percent >= 100.0 or (percent > 0.0 and rng() * 100.0 < percent)


def fault_decision(fault: Fault | None, rng: Rng) -> tuple[float | None, int | None]:
    """(delay in seconds or None, abort status or None) for one request."""
    if fault is None:
        return None, None
    delay = fault.delay_s if fault.delay_s is not None and _hit(fault.delay_percent, rng) else None
    abort = (fault.abort_status if fault.abort_status is not None and _hit(fault.abort_percent, rng)
             else None)
    return delay, abort


def mirror_decision(mirrors: Iterable[Mirror], rng: Rng) -> list[Backend]:
    """The mirror backends this request is copied to."""
    return [m.backend for m in mirrors if _hit(m.percent, rng)]


def apply_header_ops(ops: HeaderOps, headers: Mapping[str, str]) -> dict[str, str]:
    """Set, then add (appended with ", " to an existing value), then remove."""
    out = {k.lower(): v for k, v in headers.items()}
    for k, v in ops.set:
        out[k] = v
    for k, v in ops.add:
        out[k] = f"{out[k]}, {v}" if k in out else v
    for k in ops.remove:
        out.pop(k, None)
    return out


def _modify_path(mod: PathModifier, match: RequestMatch | None, path: str) -> str:
    if mod.full is not None:
        return mod.full
    assert mod.prefix is not None
    pm = match.path if match else None
    if pm is None:
        return mod.prefix + path[1:]  # no path match: Envoy's implicit prefix "/"
    if pm.kind == "prefix":
        return mod.prefix + path[len(pm.value):]
    if pm.kind == "path_prefix":
        rest = path[len(pm.value.rstrip("/")):]
        new = mod.prefix.rstrip("/") + rest
        return new if new.startswith("/") else "/" + new
    return mod.prefix  # exact or regex: the whole path was matched


def _with_query(path: str, query: str) -> str:
    return path if "?" in path or not query else f"{path}?{query}"


def rewrite_request(rewrite: Rewrite | None, match: RequestMatch | None,
                    request: HttpRequest) -> HttpRequest:
    """The request as forwarded upstream (path and/or :authority rewritten)."""
    if rewrite is None:
        return request
    path = request.path_only
    if rewrite.path is not None:
        path = _modify_path(rewrite.path, match, path)
    elif rewrite.regex is not None:
        pattern, sub = rewrite.regex
        path = pattern.sub(sub, path)  # RE2 and Python both write groups as \1
    host = rewrite.host if rewrite.host is not None else request.host
    headers = dict(request.headers)
    if rewrite.host is not None and "host" in headers:
        headers["host"] = rewrite.host
    return HttpRequest(request.method, _with_query(path, request.query_string), host, headers)


_DEFAULT_PORT = {"http": 80, "https": 443}


def redirect_location(redirect: Redirect, match: RequestMatch | None, request: HttpRequest,
                      *, scheme: str = "http") -> str:
    """The Location header for a redirect. ``scheme`` is the request's scheme."""
    new_scheme = redirect.scheme or scheme
    req_host, _, req_port = request.host.rpartition(":") if ":" in request.host else (
        request.host, "", "")
    host = redirect.host or req_host
    if redirect.port is not None:
        port: int | None = redirect.port
    elif redirect.scheme is None and req_port.isdigit():
        port = int(req_port)
    else:
        port = None
    path = request.path_only
    if redirect.path is not None:
        path = _modify_path(redirect.path, match, path)
    authority = host if port in (None, _DEFAULT_PORT.get(new_scheme)) else f"{host}:{port}"
    return f"{new_scheme}://{authority}{_with_query(path, request.query_string)}"


__all__ = [
    "Labelled", "Rng", "apply_header_ops", "fault_decision", "find_route", "match_route",
    "mirror_decision", "pick_backend", "redirect_location", "rewrite_request",
    "subset_endpoints",
]
