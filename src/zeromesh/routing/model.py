"""Immutable values of the routing core: the request as routing sees it, matches,
backends and the action a matched route takes."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl

MatchKind = Literal["exact", "prefix", "path_prefix", "regex", "present"]


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """``path`` includes the query string; ``headers`` have lower-case names;
    ``query`` is derived from ``path`` (first value of a repeated parameter wins)."""

    method: str
    path: str
    host: str
    headers: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, str] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        _, _, qs = self.path.partition("?")
        query: dict[str, str] = {}
        if not qs:
            object.__setattr__(self, "query", query)
            return
        for k, v in parse_qsl(qs, keep_blank_values=True):
            query.setdefault(k, v)
        object.__setattr__(self, "query", query)

    @property
    def path_only(self) -> str:
        """The path without the query string (what path matches look at, as in Envoy)."""
        return self.path.partition("?")[0]

    @property
    def query_string(self) -> str:
        """The raw query string after '?', or ''."""
        return self.path.partition("?")[2]


@dataclass(frozen=True, slots=True)
class StringMatch:
    """One string matcher. ``path_prefix`` is Gateway API PathPrefix (whole segments);
    ``prefix`` is Istio's plain string prefix; ``present`` only needs the value to exist."""

    kind: MatchKind
    value: str = ""
    ignore_case: bool = False
    pattern: re.Pattern[str] | None = field(default=None, compare=False)

    def matches(self, s: str | None) -> bool:
        if s is None:
            return False
        if self.kind == "present":
            return True
        if self.kind == "regex":
            assert self.pattern is not None
            return self.pattern.fullmatch(s) is not None
        value = self.value
        if self.ignore_case:
            s, value = s.lower(), value.lower()
        if self.kind == "exact":
            return s == value
        if self.kind == "prefix":
            return s.startswith(value)
        # path_prefix: "/foo" (or "/foo/") matches "/foo", "/foo/", "/foo/bar", not "/foobar"
        base = value.rstrip("/")
        if not base:
            return True
        return s == base or s.startswith(base + "/")


def exact(value: str, *, ignore_case: bool = False) -> StringMatch:
    return StringMatch("exact", value, ignore_case)


def regex(value: str) -> StringMatch:
    return StringMatch("regex", value, pattern=re.compile(value))


@dataclass(frozen=True, slots=True)
class RequestMatch:
    """All present conditions must hold (AND)."""

    path: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    headers: tuple[tuple[str, StringMatch], ...] = ()
    without_headers: tuple[tuple[str, StringMatch], ...] = ()
    query_params: tuple[tuple[str, StringMatch], ...] = ()

    def matches(self, req: HttpRequest) -> bool:
        if self.path is not None and not self.path.matches(req.path_only):
            return False
        if self.method is not None and not self.method.matches(req.method):
            return False
        if self.authority is not None and not self.authority.matches(req.host):
            return False
        if not all(m.matches(req.headers.get(n)) for n, m in self.headers):
            return False
        if any(m.matches(req.headers.get(n)) for n, m in self.without_headers):
            return False
        return all(m.matches(req.query.get(n)) for n, m in self.query_params)


@dataclass(frozen=True, slots=True)
class Backend:
    """A weighted destination. ``host`` is a fully qualified service host name;
    ``weight`` is a relative share (0 = never picked)."""

    host: str
    port: int | None = None
    subset: str | None = None
    weight: int = 1


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``attempts`` counts retries after the first try (Istio's meaning); numeric
    ``retry_on`` entries are retriable status codes; ``backoff_s`` is Istio's
    ``retries.backoff`` (Envoy's base interval; None = 25 ms)."""

    attempts: int
    per_try_timeout_s: float | None = None
    retry_on: frozenset[str] = frozenset()
    backoff_s: float | None = None


@dataclass(frozen=True, slots=True)
class HeaderOps:
    """Header names lower-case; applied as set, then add, then remove."""

    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.set or self.add or self.remove)


@dataclass(frozen=True, slots=True)
class PathModifier:
    """Exactly one of ``full`` (replace the whole path) or ``prefix`` (replace the part
    the route's path match matched)."""

    full: str | None = None
    prefix: str | None = None


@dataclass(frozen=True, slots=True)
class Redirect:
    status: int
    scheme: str | None = None
    host: str | None = None
    port: int | None = None
    path: PathModifier | None = None


@dataclass(frozen=True, slots=True)
class Rewrite:
    path: PathModifier | None = None
    regex: tuple[re.Pattern[str], str] | None = None
    host: str | None = None


@dataclass(frozen=True, slots=True)
class Fault:
    """Percentages are 0-100 (fractions allowed)."""

    delay_s: float | None = None
    delay_percent: float = 100.0
    abort_status: int | None = None
    abort_percent: float = 100.0


@dataclass(frozen=True, slots=True)
class Mirror:
    backend: Backend
    percent: float = 100.0


@dataclass(frozen=True, slots=True)
class RouteAction:
    backends: tuple[Backend, ...] = ()
    timeout_s: float | None = None
    retries: RetryPolicy | None = None
    request_header_ops: HeaderOps = HeaderOps()
    response_header_ops: HeaderOps = HeaderOps()
    redirect: Redirect | None = None
    rewrite: Rewrite | None = None
    fault: Fault | None = None
    mirrors: tuple[Mirror, ...] = ()
    backend_timeout_s: float | None = None


@dataclass(frozen=True, slots=True)
class Route:
    """``matches`` are alternatives (OR); no matches means every request matches."""

    name: str
    matches: tuple[RequestMatch, ...]
    action: RouteAction
