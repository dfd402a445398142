"""Which RequestAuthentications apply at a waypoint, and what they make of one request (pure).

The outcome is Istio's (istiod ``convertToEnvoyJwtConfig`` over Envoy's jwt_authn):

- no token anywhere a rule looks: the request passes, without a request principal;
- every token found must be valid for a rule that names its ``iss`` and reads the
  place it was found; otherwise the request is refused (401, or 403 for a disallowed
  audience) with Envoy's sentence as the body, and no principal;
- the principal is ``<iss>/<sub>`` of the valid token whose issuer sorts first (Istio's
  authn filter picks by issuer order), its payload is the claims policies match on.

Istio also lets a request through when one rule alone is satisfied by the tokens in
its own locations even though another location holds a bad token; zeromesh refuses
that request instead: a token that was sent is never silently ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import unquote

from zeromesh.authn.compile import (
    CompiledRequestAuthn,
    JwksFetch,
    JwtRule,
    Location,
    LocationKind,
    needed_jwks,
)
from zeromesh.authn.jwks import JwkSet
from zeromesh.authn.jwt import (
    Jwt,
    JwtStatus,
    audiences_allowed,
    check_time,
    parse_token,
    verify_signature,
)
from zeromesh.policy import ROOT_NAMESPACE, ScopeKind, Target, Workload

KeysFor = Callable[[str], JwkSet | None]
"""The IO side's key cache: the keys fetched for a :class:`JwksFetch` URL, or None when not
fetched yet or the fetch failed (the token is then refused: "Jwks remote fetch is failed")."""

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_MAX_REALM_PATH = 256  # Envoy's MaximumUriLength for the WWW-Authenticate realm
_JWT_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
_RANK = {ScopeKind.GLOBAL: 0, ScopeKind.NAMESPACE: 1, ScopeKind.WORKLOAD_SELECTOR: 2,
         ScopeKind.TARGET_REFS: 3}


@dataclass(frozen=True, slots=True)
class _Spot:
    """A location and the rules that read it, ordered by issuer."""

    location: Location
    rules: tuple[JwtRule, ...]


def _order(p: CompiledRequestAuthn) -> tuple[int, str, str, str]:
    return (_RANK[p.scope.kind], p.created, p.namespace, p.name)


@dataclass(frozen=True, slots=True)
class AuthnSet:
    """The RequestAuthentications in scope for one destination, merged into one rule list.

    Build it with :func:`applicable_authn` once per destination and configuration,
    then call :func:`authenticate` per request. Rules are ordered by issuer, as istiod
    orders its providers; ``fetches`` are the key sets ``keys_for`` will be asked for.
    """

    policies: tuple[CompiledRequestAuthn, ...]
    rules: tuple[JwtRule, ...] = field(init=False)
    fetches: tuple[JwksFetch, ...] = field(init=False)
    _spots: tuple[_Spot, ...] = field(init=False, repr=False)
    _sanitize: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        rules = sorted((r for p in self.policies for r in p.rules), key=lambda r: r.issuer)
        by_location: dict[Location, list[JwtRule]] = {}
        for r in rules:
            for loc in r.locations:
                by_location.setdefault(loc, []).append(r)
        kinds = list(LocationKind)
        # Envoy reads headers first, then query parameters, then cookies.
        spots = sorted((_Spot(loc, tuple(rs)) for loc, rs in by_location.items()),
                       key=lambda s: (kinds.index(s.location.kind), s.location.name,
                                      s.location.prefix))
        sanitize: dict[str, None] = {}
        for r in rules:
            if r.output_payload_to_header:
                sanitize[r.output_payload_to_header] = None
            for header, _ in r.output_claim_to_headers:
                sanitize[header] = None
        setter = object.__setattr__
        setter(self, "rules", tuple(rules))
        setter(self, "fetches", needed_jwks(self.policies))
        setter(self, "_spots", tuple(spots))
        setter(self, "_sanitize", tuple(sanitize))


def _labels_match(labels: Iterable[tuple[str, str]], workload: Workload) -> bool:
    have = workload.labels
    return all(have.get(k) == v for k, v in labels)


def _applies(p: CompiledRequestAuthn, workload: Workload | None, targets: frozenset[Target],
             root_namespace: str) -> bool:
    match p.scope.kind:
        case ScopeKind.TARGET_REFS:
            return any(t in targets and (t.kind != "GatewayClass" or p.namespace == root_namespace)
                       for t in p.scope.targets)
        case _ if workload is None:
            return False
        case ScopeKind.GLOBAL:
            return True
        case ScopeKind.NAMESPACE:
            return p.namespace == workload.namespace
        case ScopeKind.WORKLOAD_SELECTOR:
            return (p.namespace in (workload.namespace, root_namespace)
                    and _labels_match(p.scope.labels, workload))
    return False


def applicable_authn(compiled: Iterable[CompiledRequestAuthn], workload: Workload | None, *,
                     root_namespace: str = ROOT_NAMESPACE,
                     targets: Iterable[Target] = ()) -> AuthnSet:
    """The RequestAuthentications that apply, chosen exactly as AuthorizationPolicies are.

    A current-generation waypoint passes what it serves for this request as ``targets``
    (its Gateway, the Service or ServiceEntry, ``GatewayClass istio-waypoint``) and
    ``workload=None``: only targetRefs policies apply (GatewayClass ones only from the
    root namespace). An annotation-bound (older) waypoint passes its own pod as
    ``workload``: mesh-wide (root namespace, no selector), its namespace's, and selector
    policies of its namespace or the root namespace whose labels it carries also apply.
    """
    wanted = frozenset(targets)
    chosen = [p for p in compiled if p.rules and _applies(p, workload, wanted, root_namespace)]
    return AuthnSet(tuple(sorted(chosen, key=_order)))


@dataclass(frozen=True, slots=True)
class AuthnResult:
    """What authentication made of one request.

    On success ``status`` is None; ``principal`` is ``<iss>/<sub>`` (None without a
    token or without ``sub``) and ``claims`` the validated payload, for
    ``Request(request_principal=..., claims=...)``. To forward the request, first
    remove ``headers_to_remove`` (always includes the output headers, so a client
    cannot forge them), then append ``headers_to_add``, and use ``path`` as the new
    ``:path`` when it is not None (a query-parameter token was removed).

    On failure answer ``error_status`` with body ``error_body`` and ``response_headers``
    (``www-authenticate``), as Envoy does. ``rule`` names the rule that decided.
    """

    status: JwtStatus | None = None
    principal: str | None = None
    claims: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    issuer: str | None = None
    rule: str | None = None
    headers_to_remove: tuple[str, ...] = ()
    headers_to_add: tuple[tuple[str, str], ...] = ()
    path: str | None = None
    response_headers: tuple[tuple[str, str], ...] = ()

    @property
    def ok(self) -> bool:
        return self.status is None

    @property
    def error_status(self) -> int | None:
        return None if self.status is None else self.status.http_status

    @property
    def error_body(self) -> str:
        return "" if self.status is None else self.status.message

    @property
    def reason(self) -> str:
        """One sentence for logs."""
        if self.status is not None:
            where = f" ({self.rule})" if self.rule else ""
            return f"JWT refused: {self.status.message}{where}"
        if self.issuer is None:
            return "no JWT: passed without a request principal"
        return f"JWT accepted by {self.rule}: principal {self.principal}"


@dataclass(frozen=True, slots=True)
class _Found:
    token: str
    spot: _Spot


def _token_after_prefix(value: str, start: int) -> str:
    """Envoy's extractJWT: skip to the first base64url (or dot) character after the prefix."""
    for i in range(start, len(value)):
        if value[i] in _JWT_CHARS:
            return value[i:]
    return value


def _query(path: str) -> dict[str, str]:
    """Query parameters, percent-decoded, first value wins (Envoy's getFirstValue)."""
    out: dict[str, str] = {}
    _, _, qs = path.partition("?")
    for part in qs.partition("#")[0].split("&"):
        if not part:
            continue
        k, _, v = part.partition("=")
        out.setdefault(unquote(k), unquote(v))
    return out


def _cookies(header: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in header.split(";"):
        k, sep, v = part.strip().partition("=")
        if not sep or not k:
            continue
        v = v.strip()
        if len(v) >= 2 and v[0] == v[-1] == '"':
            v = v[1:-1]
        out.setdefault(k.strip(), v)
    return out


def _extract(spots: Iterable[_Spot], headers: Mapping[str, str], path: str) -> list[_Found]:
    found: list[_Found] = []
    query: dict[str, str] | None = None
    cookies: dict[str, str] | None = None
    for spot in spots:
        loc = spot.location
        match loc.kind:
            case LocationKind.HEADER:
                value = headers.get(loc.name)
                if value is None:
                    continue
                if loc.prefix:
                    at = value.find(loc.prefix)
                    if at < 0:
                        continue
                    value = _token_after_prefix(value, at + len(loc.prefix))
                found.append(_Found(value, spot))
            case LocationKind.PARAM:
                if query is None:
                    query = _query(path)
                if loc.name in query:
                    found.append(_Found(query[loc.name], spot))
            case LocationKind.COOKIE:
                if cookies is None:
                    cookies = _cookies(headers.get("cookie", ""))
                if loc.name in cookies:
                    found.append(_Found(cookies[loc.name], spot))
    return found


def _check(rule: JwtRule, token: Jwt, now: float, keys_for: KeysFor | None) -> JwtStatus | None:
    """Envoy's order once the issuer is known: time, audiences, then keys and signature."""
    status = check_time(token, now)
    if status is not None:
        return status
    if not audiences_allowed(rule.allowed_audiences, token):
        return JwtStatus.AUDIENCE_NOT_ALLOWED
    keys = rule.keys
    if keys is None:
        if rule.fetch is None:
            return JwtStatus.NO_VALID_KEYS
        keys = keys_for(rule.fetch.url) if keys_for is not None else None
        if keys is None:
            return JwtStatus.JWKS_FETCH_FAILED
    return verify_signature(token, keys)


def _verify(found: _Found, now: float,
            keys_for: KeysFor | None) -> tuple[Jwt | None, JwtRule | None, JwtStatus | None]:
    """(token, rule that accepted or refused it, status); status None means accepted.

    Rules with the token's issuer that read its location are tried in order; the first
    that accepts wins, else the first one's refusal is reported (Envoy's findByIssuer).
    A rule without issuer accepts any issuer, as an Envoy provider without one does.
    """
    parsed = parse_token(found.token)
    if isinstance(parsed, JwtStatus):
        return None, None, parsed
    candidates = [r for r in found.spot.rules if r.issuer == parsed.iss]
    candidates += [r for r in found.spot.rules if not r.issuer]
    if not candidates:
        return parsed, None, JwtStatus.UNKNOWN_ISSUER
    first: JwtStatus | None = None
    for rule in candidates:
        status = _check(rule, parsed, now, keys_for)
        if status is None:
            return parsed, rule, None
        first = first or status
    return parsed, candidates[0], first


def _claim(payload: Mapping[str, Any], name: str) -> str | None:
    """``outputClaimToHeaders``: a dotted path to a string, number or boolean (Envoy)."""
    value: Any = payload
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if value >= 0 else f"{float(value):f}"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and value >= 0 else f"{value:f}"
    if isinstance(value, str):
        return value or None
    return None


def _without_param(path: str, name: str) -> str:
    """``path`` with every ``name=`` query parameter removed, the rest kept as written."""
    base, sep, qs = path.partition("?")
    if not sep:
        return path
    qs, hash_sep, fragment = qs.partition("#")
    kept = [p for p in qs.split("&") if p and unquote(p.partition("=")[0]) != name]
    out = base + ("?" + "&".join(kept) if kept else "")
    return out + (hash_sep + fragment if hash_sep else "")


def _realm(headers: Mapping[str, str], path: str) -> str:
    scheme = headers.get("x-forwarded-proto") or "http"
    host = headers.get(":authority") or headers.get("host") or ""
    return f"{scheme}://{host}{path[:_MAX_REALM_PATH]}"


def _is_cors_preflight(method: str | None, headers: Mapping[str, str]) -> bool:
    return (method == "OPTIONS" and bool(headers.get("origin"))
            and bool(headers.get("access-control-request-method")))


def authenticate(authn: AuthnSet, headers: Mapping[str, str], path: str, now: float,
                 keys_for: KeysFor | None = None, *, method: str | None = None) -> AuthnResult:
    """Authenticate one HTTP request against the RequestAuthentications in scope.

    ``headers`` have lower-case names; ``path`` is the ``:path`` with its query string;
    ``now`` is Unix time in seconds; ``keys_for`` answers for keys fetched by the IO
    side (see :attr:`AuthnSet.fetches`). A CORS preflight (``method`` OPTIONS with
    ``origin`` and ``access-control-request-method``) is not authenticated, as Istio
    configures Envoy.
    """
    if not authn.rules:
        return AuthnResult()
    sanitize = authn._sanitize
    if _is_cors_preflight(method, headers):
        return AuthnResult(headers_to_remove=sanitize)
    found = _extract(authn._spots, headers, path)
    if not found:
        return AuthnResult(headers_to_remove=sanitize)
    accepted: list[tuple[Jwt, JwtRule, _Found]] = []
    for f in found:
        token, rule, status = _verify(f, now, keys_for)
        if status is not None:
            challenge = f'Bearer realm="{_realm(headers, path)}", error="invalid_token"'
            return AuthnResult(status=status, issuer=token.iss if token else None,
                               rule=rule.label if rule else None,
                               response_headers=(("www-authenticate", challenge),))
        assert token is not None and rule is not None
        accepted.append((token, rule, f))

    remove = list(sanitize)
    add: list[tuple[str, str]] = []
    new_path = path
    for token, rule, f in accepted:
        if rule.output_payload_to_header:
            add.append((rule.output_payload_to_header, token.payload_b64))
        for header, claim in rule.output_claim_to_headers:
            value = _claim(token.payload, claim)
            if value is not None:
                add.append((header, value))
        if not rule.forward_original_token:
            loc = f.spot.location
            if loc.kind is LocationKind.HEADER and loc.name not in remove:
                remove.append(loc.name)
            elif loc.kind is LocationKind.PARAM:
                new_path = _without_param(new_path, loc.name)
            # Envoy leaves cookies in place.
    chosen, rule, _ = min(accepted, key=lambda a: a[0].iss)
    principal = f"{chosen.iss}/{chosen.sub}" if chosen.sub is not None and chosen.iss else None
    return AuthnResult(principal=principal, claims=MappingProxyType(dict(chosen.payload)),
                       issuer=chosen.iss, rule=rule.label, headers_to_remove=tuple(remove),
                       headers_to_add=tuple(add), path=new_path if new_path != path else None)
