"""One JSON Web Token: parse it, check its time window, audiences and signature (pure).

Each check answers with a :class:`JwtStatus` whose text is Envoy's (jwt_verify_lib), so
a client refused by zeromesh's waypoint reads the same body an Istio waypoint sends:
``Jwt is expired``, ``Jwt issuer is not configured``, ``Jwt verification fails``...
Parsing is done here, not by ``jwt.decode``, so each malformation gets Envoy's status;
signatures are checked with PyJWT's algorithm classes, and only by a key whose type
belongs to the token's ``alg`` family (``alg: none`` is never accepted).
"""

from __future__ import annotations

import binascii
import json
import re
from base64 import urlsafe_b64decode
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from jwt.algorithms import Algorithm, get_default_algorithms

from zeromesh.authn.jwks import JWKS_NO_VALID_KEYS, JwkSet

CLOCK_SKEW_SECONDS = 60
"""Envoy's default ``clock_skew_seconds``; Istio does not change it."""

_ALGORITHMS: dict[str, Algorithm] = {
    name: alg for name, alg in get_default_algorithms().items()
    if name in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
                "HS256", "HS384", "HS512", "EdDSA")
}
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_U64 = 2**64


class JwtStatus(Enum):
    """Why a token was refused, worded as Envoy's jwt_authn filter words it."""

    BAD_FORMAT = "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
    HEADER_BAD_BASE64 = "Jwt header is an invalid Base64url encoded"
    HEADER_BAD_JSON = "Jwt header is an invalid JSON"
    HEADER_BAD_ALG = "Jwt header [alg] field is required and must be a string"
    HEADER_UNSUPPORTED_ALG = "Jwt header [alg] is not supported"
    HEADER_BAD_KID = "Jwt header [kid] field is not a string"
    PAYLOAD_BAD_BASE64 = "Jwt payload is an invalid Base64url encoded"
    PAYLOAD_BAD_JSON = "Jwt payload is an invalid JSON"
    ISS_NOT_STRING = "Jwt payload [iss] field is not a string"
    SUB_NOT_STRING = "Jwt payload [sub] field is not a string"
    IAT_NOT_INTEGER = "Jwt payload [iat] field is not an integer"
    IAT_OUT_OF_RANGE = "Jwt payload [iat] field is not a positive 64 bit integer"
    NBF_NOT_INTEGER = "Jwt payload [nbf] field is not an integer"
    NBF_OUT_OF_RANGE = "Jwt payload [nbf] field is not a positive 64 bit integer"
    EXP_NOT_INTEGER = "Jwt payload [exp] field is not an integer"
    EXP_OUT_OF_RANGE = "Jwt payload [exp] field is not a positive 64 bit integer"
    JTI_NOT_STRING = "Jwt payload [jti] field is not a string"
    AUD_NOT_STRING = "Jwt payload [aud] field is not a string or string list"
    SIGNATURE_BAD_BASE64 = "Jwt signature is an invalid Base64url encoded"
    UNKNOWN_ISSUER = "Jwt issuer is not configured"
    AUDIENCE_NOT_ALLOWED = "Audiences in Jwt are not allowed"
    NOT_YET_VALID = "Jwt not yet valid"
    EXPIRED = "Jwt is expired"
    VERIFICATION_FAILED = "Jwt verification fails"
    KID_ALG_MISMATCH = "Jwks doesn't have key to match kid or alg from Jwt"
    NO_VALID_KEYS = JWKS_NO_VALID_KEYS
    JWKS_FETCH_FAILED = "Jwks remote fetch is failed"

    @property
    def message(self) -> str:
        """The response body Envoy sends."""
        return self.value

    @property
    def http_status(self) -> int:
        """Envoy answers 403 for a disallowed audience and 401 for everything else."""
        return 403 if self is JwtStatus.AUDIENCE_NOT_ALLOWED else 401


@dataclass(frozen=True, slots=True)
class Jwt:
    """A token that parsed; nothing about it is trusted until :func:`verify_signature` says so.

    ``payload_b64`` is the payload segment as sent (Envoy forwards it verbatim for
    ``outputPayloadToHeader``); ``signed`` is ``header.payload``, the signed bytes.
    """

    alg: str
    kid: str | None
    header: Mapping[str, Any]
    payload: Mapping[str, Any]
    payload_b64: str
    signed: bytes
    signature: bytes
    iss: str
    sub: str | None
    audiences: tuple[str, ...]
    exp: int
    nbf: int


def _b64(segment: str) -> bytes | None:
    """Strict base64url without padding (urlsafe_b64decode alone skips stray characters)."""
    if not _B64URL.fullmatch(segment) or len(segment) % 4 == 1:
        return None
    try:
        return urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        return None


def _json_object(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _time(payload: Mapping[str, Any], name: str, not_integer: JwtStatus,
          out_of_range: JwtStatus) -> int | JwtStatus:
    """A NumericDate claim as whole seconds; 0 when absent (Envoy's "not set")."""
    value = payload.get(name)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float):
        return not_integer
    if not 0 <= value < _U64:
        return out_of_range
    return int(value)


def parse_token(token: str) -> Jwt | JwtStatus:
    """Parse a compact JWS; the status says what is malformed (checked in Envoy's order)."""
    parts = token.split(".")
    if len(parts) != 3:
        return JwtStatus.BAD_FORMAT
    header_b64, payload_b64, signature_b64 = parts
    raw_header = _b64(header_b64)
    if raw_header is None:
        return JwtStatus.HEADER_BAD_BASE64
    header = _json_object(raw_header)
    if header is None:
        return JwtStatus.HEADER_BAD_JSON
    alg = header.get("alg")
    if not isinstance(alg, str):
        return JwtStatus.HEADER_BAD_ALG
    if alg not in _ALGORITHMS:
        return JwtStatus.HEADER_UNSUPPORTED_ALG
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        return JwtStatus.HEADER_BAD_KID
    raw_payload = _b64(payload_b64)
    if raw_payload is None:
        return JwtStatus.PAYLOAD_BAD_BASE64
    payload = _json_object(raw_payload)
    if payload is None:
        return JwtStatus.PAYLOAD_BAD_JSON
    iss, sub, jti = payload.get("iss"), payload.get("sub"), payload.get("jti")
    if iss is not None and not isinstance(iss, str):
        return JwtStatus.ISS_NOT_STRING
    if sub is not None and not isinstance(sub, str):
        return JwtStatus.SUB_NOT_STRING
    times = (_time(payload, "iat", JwtStatus.IAT_NOT_INTEGER, JwtStatus.IAT_OUT_OF_RANGE),
             _time(payload, "nbf", JwtStatus.NBF_NOT_INTEGER, JwtStatus.NBF_OUT_OF_RANGE),
             _time(payload, "exp", JwtStatus.EXP_NOT_INTEGER, JwtStatus.EXP_OUT_OF_RANGE))
    for t in times:
        if isinstance(t, JwtStatus):
            return t
    _, nbf, exp = times
    if jti is not None and not isinstance(jti, str):
        return JwtStatus.JTI_NOT_STRING
    aud = payload.get("aud")
    if aud is None:
        audiences: tuple[str, ...] = ()
    elif isinstance(aud, str):
        audiences = (aud,)
    elif isinstance(aud, list) and all(isinstance(a, str) for a in aud):
        audiences = tuple(aud)
    else:
        return JwtStatus.AUD_NOT_STRING
    signature = _b64(signature_b64)
    if signature is None:
        return JwtStatus.SIGNATURE_BAD_BASE64
    assert isinstance(nbf, int) and isinstance(exp, int)
    return Jwt(alg, kid, header, payload, payload_b64, f"{header_b64}.{payload_b64}".encode(),
               signature, iss or "", sub, audiences, exp, nbf)


def check_time(token: Jwt, now: float, clock_skew: int = CLOCK_SKEW_SECONDS) -> JwtStatus | None:
    """``nbf`` and ``exp`` with Envoy's skew on both sides; a token without ``exp`` never expires."""
    t = int(now)
    if t + clock_skew < token.nbf:
        return JwtStatus.NOT_YET_VALID
    if token.exp and t > token.exp + clock_skew:
        return JwtStatus.EXPIRED
    return None


def sanitize_audience(aud: str) -> str:
    """Envoy compares audiences without an ``http(s)://`` scheme and a trailing slash."""
    out = aud
    if out.startswith("http://"):
        out = out[len("http://"):]
    elif out.startswith("https://"):
        out = out[len("https://"):]
    return out[:-1] if out.endswith("/") else out


def audiences_allowed(allowed: frozenset[str], token: Jwt) -> bool:
    """``allowed`` is sanitized; empty means the rule does not check audiences (Envoy)."""
    if not allowed:
        return True
    return any(sanitize_audience(a) in allowed for a in token.audiences)


def verify_signature(token: Jwt, jwks: JwkSet | Iterable[Any]) -> JwtStatus | None:
    """Envoy's key choice: a key whose ``kid`` (when both have one) and ``alg`` (when the key
    names one) agree with the token's is tried; no such key is KID_ALG_MISMATCH, keys
    that were tried and all failed is VERIFICATION_FAILED."""
    keys = jwks.keys if isinstance(jwks, JwkSet) else tuple(jwks)
    algorithm = _ALGORITHMS[token.alg]
    matched = False
    for k in keys:
        if token.kid and k.kid and k.kid != token.kid:
            continue
        if k.alg and k.alg != token.alg:
            continue
        matched = True
        if not k.verifies(token.alg):
            continue
        try:
            if algorithm.verify(token.signed, k.key, token.signature):
                return None
        except (ValueError, TypeError):
            continue
    return JwtStatus.VERIFICATION_FAILED if matched else JwtStatus.KID_ALG_MISMATCH
