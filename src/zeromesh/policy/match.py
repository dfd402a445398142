"""Value matching for AuthorizationPolicy fields: Istio's string forms, IPs/CIDRs and ports.

Everything is parsed once, when a policy is compiled, into a closure that tests one
attribute of a :class:`~zeromesh.policy.model.Request`, so that a decision is a few
set look-ups and ``startswith`` calls: no parsing, no allocation.

String forms (Istio ``Rule`` doc): ``*`` matches any non-empty value, ``abc*`` a prefix,
``*abc`` a suffix, anything else exactly. Paths also take Istio's templates: ``{*}``
is one path segment, ``{**}`` one or more (last only).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from zeromesh.policy.model import IPNetwork, Request

Test = Callable[[Request], bool]
"""A compiled check: does the request pass it (``not*`` already applied)."""
Getter = Callable[[Request], Any]


class MatchKind(Enum):
    EXACT = "exact"
    PREFIX = "prefix"
    SUFFIX = "suffix"
    PRESENCE = "presence"
    TEMPLATE = "template"


@dataclass(frozen=True, slots=True)
class StringMatch:
    """One parsed string pattern."""

    kind: MatchKind
    value: str

    @staticmethod
    def parse(pattern: str, *, templates: bool = False) -> StringMatch:
        """Istio's rule: ``*`` first wins (so ``*abc*`` is a suffix match on ``abc*``)."""
        if pattern == "*":
            return StringMatch(MatchKind.PRESENCE, "")
        if templates and ("{*}" in pattern or "{**}" in pattern):
            return StringMatch(MatchKind.TEMPLATE, pattern)
        if pattern.startswith("*"):
            return StringMatch(MatchKind.SUFFIX, pattern[1:])
        if pattern.endswith("*"):
            return StringMatch(MatchKind.PREFIX, pattern[:-1])
        return StringMatch(MatchKind.EXACT, pattern)


def _template_regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{\*\*\}|\{\*\})", template)
    out = []
    for part in parts:
        if part == "{*}":
            out.append("[^/]+")
        elif part == "{**}":
            out.append("[^/]+(?:/[^/]+)*")
        else:
            out.append(re.escape(part))
    return re.compile("".join(out))


@dataclass(frozen=True, slots=True)
class _Split:
    exact: frozenset[str]
    prefixes: tuple[str, ...]
    suffixes: tuple[str, ...]
    templates: tuple[re.Pattern[str], ...]
    presence: bool


def _split(patterns: Iterable[StringMatch]) -> _Split:
    exact: set[str] = set()
    prefixes: list[str] = []
    suffixes: list[str] = []
    regexes: list[re.Pattern[str]] = []
    presence = False
    for p in patterns:
        match p.kind:
            case MatchKind.EXACT:
                exact.add(p.value)
            case MatchKind.PREFIX:
                prefixes.append(p.value)
            case MatchKind.SUFFIX:
                suffixes.append(p.value)
            case MatchKind.PRESENCE:
                presence = True
            case MatchKind.TEMPLATE:
                regexes.append(_template_regex(p.value))
    return _Split(frozenset(exact), tuple(prefixes), tuple(suffixes), tuple(regexes), presence)


def _matcher(s: _Split) -> Callable[[str], bool]:
    if s.presence:
        return bool  # any non-empty string
    exact, pre, suf, rx = s.exact, s.prefixes, s.suffixes, s.templates
    if not (pre or suf or rx):
        return exact.__contains__

    def match(value: str) -> bool:
        if value in exact or value.startswith(pre) or value.endswith(suf):
            return True
        return any(r.fullmatch(value) for r in rx)
    return match


def string_matcher(patterns: Iterable[StringMatch]) -> Callable[[str], bool]:
    """One callable for a list of patterns (values within a field are ORed)."""
    return _matcher(_split(patterns))


def string_test(get: Getter, patterns: Iterable[StringMatch], negate: bool) -> Test:
    """A missing attribute (plaintext peer, no JWT, no header) never matches a value,
    so it fails ``values`` and satisfies ``notValues``.

    Prefix/suffix lists are matched inline, saving a Python call per check; exact-only
    and presence lists already test with a single C call.
    """
    s = _split(patterns)
    if (s.prefixes or s.suffixes) and not (s.presence or s.templates):
        exact, pre, suf = s.exact, s.prefixes, s.suffixes
        if negate:
            def not_inline(r: Request) -> bool:
                v = get(r)
                return v is None or not (v in exact or v.startswith(pre) or v.endswith(suf))
            return not_inline

        def inline(r: Request) -> bool:
            v = get(r)
            return v is not None and (v in exact or v.startswith(pre) or v.endswith(suf))
        return inline
    matcher = _matcher(s)
    if negate:
        def not_test(r: Request) -> bool:
            v = get(r)
            return v is None or not matcher(v)
        return not_test

    def test(r: Request) -> bool:
        v = get(r)
        return v is not None and matcher(v)
    return test


def _any_string(value: Any, matcher: Callable[[str], bool]) -> bool:
    if isinstance(value, str):
        return matcher(value)
    if isinstance(value, list | tuple):
        return any(isinstance(v, str) and matcher(v) for v in value)
    return False  # JWT numbers, booleans and objects never match a string pattern


def multi_string_test(get: Getter, matcher: Callable[[str], bool], negate: bool) -> Test:
    """For JWT claims: a string, or a list of strings of which one must match."""
    if negate:
        return lambda r: not _any_string(get(r), matcher)
    return lambda r: _any_string(get(r), matcher)


def parse_network(value: str) -> IPNetwork:
    """``10.0.0.1`` is ``10.0.0.1/32``; host bits in a CIDR are ignored, as Istio's
    ``netip.ParsePrefix`` → address/length conversion ends up doing."""
    return ipaddress.ip_network(value.strip(), strict=False)


def ip_test(get: Getter, networks: Sequence[IPNetwork], negate: bool) -> Test:
    """IPv4 and IPv6 blocks may be mixed; an address never matches the other family."""
    hosts = frozenset(n.network_address for n in networks if n.prefixlen == n.max_prefixlen)
    ranges = tuple(n for n in networks if n.prefixlen != n.max_prefixlen)

    def hit(r: Request) -> bool:
        ip = get(r)
        if ip in hosts:
            return True
        for n in ranges:  # noqa: SIM110 - a loop is faster than any() over a generator
            if ip in n:
                return True
        return False

    if negate:
        return lambda r: not hit(r)
    return hit


def port_test(ports: Iterable[int], negate: bool) -> Test:
    allowed = frozenset(ports)
    if negate:
        return lambda r: r.destination_port not in allowed
    return lambda r: r.destination_port in allowed


def claim_getter(path: Sequence[str]) -> Getter:
    """``request.auth.claims[a][b]`` walks nested objects of the JWT payload."""
    first, rest = path[0], tuple(path[1:])

    def get(r: Request) -> Any:
        value: Any = r.claims.get(first)
        for key in rest:
            if not isinstance(value, Mapping):
                return None
            value = value.get(key)
        return value
    return get


def header_getter(name: str) -> Getter:
    lower = name.lower()
    return lambda r: r.headers.get(lower)


def all_of(tests: Sequence[Test]) -> Test:
    """AND, unrolled for the common short cases (each saved call is ~50 ns)."""
    if not tests:
        return _always
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        a, b = tests
        return lambda r: a(r) and b(r)
    if len(tests) == 3:
        a, b, c = tests
        return lambda r: a(r) and b(r) and c(r)
    seq = tuple(tests)

    def every(r: Request) -> bool:
        for t in seq:  # noqa: SIM110 - a loop is faster than all() over a generator
            if not t(r):
                return False
        return True
    return every


def any_of(tests: Sequence[Test]) -> Test:
    """OR; no alternative at all matches nothing (an empty match in ztunnel)."""
    if not tests:
        return _never
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        a, b = tests
        return lambda r: a(r) or b(r)
    seq = tuple(tests)

    def some(r: Request) -> bool:
        for t in seq:  # noqa: SIM110 - a loop is faster than any() over a generator
            if t(r):
                return True
        return False
    return some


def _always(r: Request) -> bool:
    return True


def _never(r: Request) -> bool:
    return False


ALWAYS: Test = _always
NEVER: Test = _never
