"""Compile one RequestAuthentication into rules a waypoint can apply per request (pure).

Shapes are not re-validated (``zeromesh.api`` did that). Each ``jwtRules`` entry becomes
a :class:`JwtRule` the way istiod turns it into an Envoy ``JwtProvider``: token
locations default to ``Authorization: Bearer`` and the ``access_token`` query parameter;
an inline ``jwks`` is parsed here, once; a ``jwksUri`` (or, with neither, the issuer's
OpenID discovery document) is fetched by the IO side, which this module only names
(:class:`JwksFetch`). Anything log-worthy goes into the compiled object's ``notes``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from zeromesh.api.durations import parse_duration
from zeromesh.authn.jwks import JwksError, JwkSet, discovery_url, parse_jwks
from zeromesh.authn.jwt import sanitize_audience
from zeromesh.policy import ROOT_NAMESPACE, Scope
from zeromesh.policy.compile import scope_of

JWKS_FETCH_TIMEOUT = 5.0
"""Istio's default ``timeout`` for fetching a JWKS (seconds)."""

JWKS_REFRESH_SECONDS = 20 * 60.0
"""How long fetched keys may be reused before fetching again (istiod's default refresh)."""


class LocationKind(Enum):
    HEADER = "header"
    PARAM = "param"
    COOKIE = "cookie"


@dataclass(frozen=True, slots=True)
class Location:
    """Where a token may be: a header (lower-case name, value ``prefix``), a query
    parameter or a cookie. Equal locations of several rules are read once."""

    kind: LocationKind
    name: str
    prefix: str = ""

    @property
    def label(self) -> str:
        match self.kind:
            case LocationKind.HEADER:
                return f"header {self.name}" + (f" (prefix {self.prefix!r})" if self.prefix else "")
            case LocationKind.PARAM:
                return f"query parameter {self.name}"
            case LocationKind.COOKIE:
                return f"cookie {self.name}"


DEFAULT_LOCATIONS = (Location(LocationKind.HEADER, "authorization", "Bearer "),
                     Location(LocationKind.PARAM, "access_token"))
"""Envoy's default when a rule names no location."""


@dataclass(frozen=True, slots=True)
class JwksFetch:
    """Keys the IO side must fetch and hand back through ``keys_for(url)``.

    ``discovery`` means ``url`` is an OpenID discovery document: fetch it, read its
    ``jwks_uri`` (:func:`~zeromesh.authn.jwks.jwks_uri_from_discovery`), fetch that, and
    answer ``keys_for(url)`` with the parsed set.
    """

    url: str
    discovery: bool = False
    timeout: float = JWKS_FETCH_TIMEOUT


@dataclass(frozen=True, slots=True)
class JwtRule:
    """One ``jwtRules`` entry of one RequestAuthentication, ready to verify tokens.

    Keys come from ``keys`` (inline ``jwks`` parsed at compile time), or from ``fetch``
    (asked of the caller per request). ``jwks_problem`` is set when the inline ``jwks``
    is unusable: every token of this issuer is then refused, as Envoy refuses them.
    ``allowed_audiences`` holds the sanitized ``audiences`` (empty: not checked).
    """

    policy: str  # namespace/name of the RequestAuthentication
    index: int  # position in spec.jwtRules
    issuer: str
    allowed_audiences: frozenset[str]
    locations: tuple[Location, ...]
    keys: JwkSet | None
    fetch: JwksFetch | None
    jwks_problem: str | None = None
    forward_original_token: bool = False
    output_payload_to_header: str | None = None
    output_claim_to_headers: tuple[tuple[str, str], ...] = ()  # (header lower-case, claim)

    @property
    def label(self) -> str:
        """How logs and results name the rule: ``ns/name jwtRules[0] (issuer X)``."""
        return f"{self.policy} jwtRules[{self.index}] (issuer {self.issuer})"


@dataclass(frozen=True, slots=True)
class CompiledRequestAuthn:
    """One RequestAuthentication: where it applies and its rules, with notes worth logging."""

    name: str
    namespace: str
    scope: Scope
    rules: tuple[JwtRule, ...]
    created: str = ""
    notes: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str) and v] if isinstance(value, list) else []


def _locations(rule: Mapping[str, Any]) -> tuple[Location, ...]:
    out: list[Location] = []
    for h in rule.get("fromHeaders") or ():
        if isinstance(h, Mapping) and isinstance(h.get("name"), str) and h["name"]:
            out.append(Location(LocationKind.HEADER, h["name"].lower(), str(h.get("prefix") or "")))
    out += [Location(LocationKind.PARAM, p) for p in _strings(rule.get("fromParams"))]
    out += [Location(LocationKind.COOKIE, c) for c in _strings(rule.get("fromCookies"))]
    if not out:
        return DEFAULT_LOCATIONS
    return tuple(dict.fromkeys(out))


def _timeout(rule: Mapping[str, Any]) -> float:
    raw = rule.get("timeout")
    if not isinstance(raw, str):
        return JWKS_FETCH_TIMEOUT
    try:
        seconds = parse_duration(raw)
    except ValueError:
        return JWKS_FETCH_TIMEOUT
    return seconds if seconds > 0 else JWKS_FETCH_TIMEOUT


def compile_jwt_rule(policy: str, index: int, rule: Mapping[str, Any]) -> tuple[JwtRule, list[str]]:
    """One ``jwtRules`` entry, and the notes it deserves."""
    notes: list[str] = []
    where = f"jwtRules[{index}]"
    issuer = str(rule.get("issuer") or "")
    keys: JwkSet | None = None
    fetch: JwksFetch | None = None
    problem: str | None = None
    jwks, jwks_uri = rule.get("jwks"), rule.get("jwksUri")
    if isinstance(jwks, str) and jwks:
        try:
            keys = parse_jwks(jwks)
        except JwksError as e:
            problem = str(e)
            notes.append(f"{where}: jwks is unusable ({problem}); every token from issuer "
                         f"{issuer!r} is refused with 401")
        else:
            notes += [f"{where}: jwks {s} (key skipped)" for s in keys.skipped]
        if isinstance(jwks_uri, str) and jwks_uri:
            notes.append(f"{where}: both jwks and jwksUri are set; the inline jwks is used")
    elif isinstance(jwks_uri, str) and jwks_uri:
        fetch = JwksFetch(jwks_uri, False, _timeout(rule))
    elif issuer:
        fetch = JwksFetch(discovery_url(issuer), True, _timeout(rule))
        notes.append(f"{where}: no jwks or jwksUri; keys are discovered from {fetch.url}")
    else:
        problem = "no jwks, jwksUri or issuer to discover keys from"
        notes.append(f"{where}: {problem}; every token it could accept is refused")
    claims: list[tuple[str, str]] = []
    for entry in rule.get("outputClaimToHeaders") or ():
        if isinstance(entry, Mapping) and entry.get("header") and entry.get("claim"):
            claims.append((str(entry["header"]).lower(), str(entry["claim"])))
    payload_header = rule.get("outputPayloadToHeader")
    return JwtRule(
        policy=policy,
        index=index,
        issuer=issuer,
        allowed_audiences=frozenset(sanitize_audience(a) for a in _strings(rule.get("audiences"))),
        locations=_locations(rule),
        keys=keys,
        fetch=fetch,
        jwks_problem=problem,
        forward_original_token=rule.get("forwardOriginalToken") is True,
        output_payload_to_header=payload_header.lower() if isinstance(payload_header, str)
        and payload_header else None,
        output_claim_to_headers=tuple(claims),
    ), notes


def compile_request_authn(obj: Mapping[str, Any], *,
                          root_namespace: str = ROOT_NAMESPACE) -> CompiledRequestAuthn:
    """Compile one validated RequestAuthentication (Kubernetes JSON shape).

    ``root_namespace`` only decides mesh-wide scope (Istio's meshConfig.rootNamespace).
    """
    meta = obj.get("metadata") or {}
    name, namespace = str(meta.get("name", "")), str(meta.get("namespace", "default"))
    spec = obj.get("spec") or {}
    key = f"{namespace}/{name}"
    rules: list[JwtRule] = []
    notes: list[str] = []
    raw_rules = spec.get("jwtRules")
    for i, raw in enumerate(raw_rules if isinstance(raw_rules, list) else []):
        rule, rule_notes = compile_jwt_rule(key, i, raw if isinstance(raw, Mapping) else {})
        rules.append(rule)
        notes += rule_notes
    if not rules:
        notes.append("no jwtRules: this RequestAuthentication validates nothing")
    return CompiledRequestAuthn(name, namespace, scope_of(spec, namespace, root_namespace),
                                tuple(rules), str(meta.get("creationTimestamp", "")), tuple(notes))


def compile_request_authns(objs: Iterable[Mapping[str, Any]], *,
                           root_namespace: str = ROOT_NAMESPACE) -> tuple[CompiledRequestAuthn, ...]:
    """Compile every RequestAuthentication of a configuration (once per config version)."""
    return tuple(compile_request_authn(o, root_namespace=root_namespace) for o in objs)


def needed_jwks(compiled: Iterable[CompiledRequestAuthn]) -> tuple[JwksFetch, ...]:
    """The key sets the IO side must fetch for these policies, one per URL (longest timeout)."""
    by_url: dict[str, JwksFetch] = {}
    for p in compiled:
        for r in p.rules:
            f = r.fetch
            if f is None:
                continue
            seen = by_url.get(f.url)
            if seen is None or f.timeout > seen.timeout:
                by_url[f.url] = JwksFetch(f.url, f.discovery, max(f.timeout, seen.timeout if seen
                                                                  else 0.0))
    return tuple(by_url.values())
