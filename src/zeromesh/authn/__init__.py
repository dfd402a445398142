"""zeromesh.authn: Istio RequestAuthentication (JWT) for waypoints, as a pure core.

Role: the waypoint asks "which tokens does this request carry, are they valid, and
who is the request principal?" before it evaluates AuthorizationPolicies. No sockets,
no asyncio, no clock: time is passed in, and keys behind a ``jwksUri`` are fetched by
the IO side, which hands them back through ``keys_for(url)``.

Vocabulary:
- *rule*: one ``jwtRules`` entry, compiled (:class:`JwtRule`): issuer, audiences,
  token *locations* (headers with a prefix, query parameters, cookies), keys.
- *compiled policy*: one RequestAuthentication with its *scope* (the same scopes as
  AuthorizationPolicy) and *notes* worth logging (:func:`compile_request_authn`).
- *authn set*: the rules in scope for one destination, merged (:func:`applicable_authn`).
- *result*: principal and claims, or Envoy's refusal (status, body), plus the header
  and path edits to make before forwarding (:func:`authenticate`).
- *status*: :class:`JwtStatus`, Envoy's words for why a token was refused.
"""

from zeromesh.authn.compile import (
    DEFAULT_LOCATIONS,
    JWKS_FETCH_TIMEOUT,
    JWKS_REFRESH_SECONDS,
    CompiledRequestAuthn,
    JwksFetch,
    JwtRule,
    Location,
    LocationKind,
    compile_jwt_rule,
    compile_request_authn,
    compile_request_authns,
    needed_jwks,
)
from zeromesh.authn.engine import AuthnResult, AuthnSet, KeysFor, applicable_authn, authenticate
from zeromesh.authn.jwks import (
    Jwk,
    JwksError,
    JwkSet,
    discovery_url,
    jwks_uri_from_discovery,
    parse_jwk,
    parse_jwks,
)
from zeromesh.authn.jwt import (
    CLOCK_SKEW_SECONDS,
    Jwt,
    JwtStatus,
    audiences_allowed,
    check_time,
    parse_token,
    sanitize_audience,
    verify_signature,
)

__all__ = [
    "CLOCK_SKEW_SECONDS",
    "DEFAULT_LOCATIONS",
    "JWKS_FETCH_TIMEOUT",
    "JWKS_REFRESH_SECONDS",
    "AuthnResult",
    "AuthnSet",
    "CompiledRequestAuthn",
    "Jwk",
    "JwkSet",
    "JwksError",
    "JwksFetch",
    "Jwt",
    "JwtRule",
    "JwtStatus",
    "KeysFor",
    "Location",
    "LocationKind",
    "applicable_authn",
    "audiences_allowed",
    "authenticate",
    "check_time",
    "compile_jwt_rule",
    "compile_request_authn",
    "compile_request_authns",
    "discovery_url",
    "jwks_uri_from_discovery",
    "needed_jwks",
    "parse_jwk",
    "parse_jwks",
    "parse_token",
    "sanitize_audience",
    "verify_signature",
]
