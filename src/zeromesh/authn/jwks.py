"""JSON Web Key Sets, parsed once into keys ready to verify with (pure).

The rules and the words are Envoy's (jwt_verify_lib ``Jwks::createFrom``): a key that
cannot be used is skipped and the reason kept, a set left with no usable key is an
error, and every message is Envoy's own, so a log line reads like an Istio waypoint's.
Key material is built with PyJWT's algorithm classes (backed by ``cryptography``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jwt.algorithms import ECAlgorithm, HMACAlgorithm, OKPAlgorithm, RSAAlgorithm
from jwt.exceptions import InvalidKeyError

from zeromesh.errors import ZeromeshError

# Which token ``alg`` each key type may verify (Envoy: "[alg] is not started with [RS]...").
_FAMILIES: dict[str, tuple[str, ...]] = {
    "RSA": ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"),
    "EC": ("ES256", "ES384", "ES512"),
    "oct": ("HS256", "HS384", "HS512"),
    "OKP": ("EdDSA",),
}
_EC_CURVE_ALG = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
_EC_ALG_CURVE = {v: k for k, v in _EC_CURVE_ALG.items()}

# Envoy's messages for unusable keys and sets (jwt_verify_lib status.cc).
JWKS_INVALID_JSON = "Jwks is an invalid JSON"
JWKS_NO_KEYS = "Jwks does not have [keys] field"
JWKS_BAD_KEYS = "[keys] in Jwks is not an array"
JWKS_NO_VALID_KEYS = "Jwks doesn't have any valid public key"


class JwksError(ZeromeshError, ValueError):
    """A JWKS document without a single usable key; ``str()`` is Envoy's wording."""


@dataclass(frozen=True, slots=True)
class Jwk:
    """One usable key. ``key`` is a ``cryptography`` public key, or the secret for ``oct``."""

    kty: str
    kid: str | None
    alg: str | None
    key: Any
    crv: str | None = None

    def verifies(self, alg: str) -> bool:
        """Whether this key may check a token signed with ``alg``: the key type, not the
        token, picks the algorithm family, which is what defeats algorithm confusion."""
        if alg not in _FAMILIES.get(self.kty, ()):
            return False
        return self.kty != "EC" or _EC_CURVE_ALG.get(self.crv or "") == alg


@dataclass(frozen=True, slots=True)
class JwkSet:
    """The usable keys of a JWKS, in document order; ``skipped`` says why others were left out."""

    keys: tuple[Jwk, ...]
    skipped: tuple[str, ...] = ()


def _key_error(kty: str) -> str:
    match kty:
        case "RSA":
            return "Jwks RSA [n] or [e] field is missing or has a parse error"
        case "EC":
            return "Jwks EC [x] or [y] field is missing or has a parse error."
        case "oct":
            return "Jwks Oct key is an invalid Base64"
        case _:
            return "Jwks OKP [x] field is an invalid Base64."


def _check_fields(kty: str, alg: str | None, jwk: Mapping[str, Any]) -> str | None:
    """Envoy's per-type field rules; the message, or None when the key may be built."""
    match kty:
        case "RSA":
            if alg is not None and not alg.startswith(("RS", "PS")):
                return "[alg] is not started with [RS] or [PS] for an RSA key"
            for f in ("n", "e"):
                if f not in jwk:
                    return f"[{f}] field is missing for a RSA key"
                if not isinstance(jwk[f], str):
                    return f"[{f}] field is not string for a RSA key"
        case "EC":
            if alg is not None and not alg.startswith("ES"):
                return "[alg] is not started with [ES] for an EC key"
            crv = jwk.get("crv")
            if crv is not None and not isinstance(crv, str):
                return "[crv] field is not string for an EC key"
            if (crv is not None and crv not in _EC_CURVE_ALG) or (alg is not None
                                                                  and alg not in _EC_ALG_CURVE):
                return "[crv] or [alg] field is not supported for an EC key"
            if crv is not None and alg is not None and _EC_CURVE_ALG[crv] != alg:
                return "[crv] field specified is not compatible with [alg] for an EC key"
            for f in ("x", "y"):
                if f not in jwk:
                    return f"[{f}] field is missing for an EC key"
                if not isinstance(jwk[f], str):
                    return f"[{f}] field is not string for an EC key"
        case "oct":
            if alg is not None and not alg.startswith("HS"):
                return "[alg] does not start with [HS] for an HMAC key"
            if "k" not in jwk:
                return "[k] field is missing for an HMAC key"
            if not isinstance(jwk["k"], str):
                return "[k] field is not string for an HMAC key"
        case "OKP":
            if alg is not None and alg != "EdDSA":
                return "[alg] is not [EdDSA] for an OKP key"
            crv = jwk.get("crv")
            if crv is None:
                return "[crv] field is missing for an OKP key"
            if not isinstance(crv, str):
                return "[crv] field is not string for an OKP key"
            if crv != "Ed25519":
                return "[crv] field is not supported for an OKP key"
            if "x" not in jwk:
                return "[x] field is missing for an OKP key"
            if not isinstance(jwk["x"], str):
                return "[x] field is not string for an OKP key"
        case _:
            return "[kty] is not supported in [keys]"
    return None


def _build(kty: str, jwk: dict[str, Any]) -> Any:
    """The verifying key; private keys given by mistake are reduced to their public half."""
    key: Any
    match kty:
        case "RSA":
            key = RSAAlgorithm.from_jwk(jwk)
        case "EC":
            key = ECAlgorithm.from_jwk(jwk)
        case "oct":
            return HMACAlgorithm.from_jwk(jwk)
        case _:
            key = OKPAlgorithm.from_jwk(jwk)
    public = getattr(key, "public_key", None)
    return public() if callable(public) else key


def parse_jwk(jwk: Any) -> Jwk | str:
    """One entry of ``keys``: the key, or Envoy's sentence for why it cannot be used."""
    if not isinstance(jwk, Mapping):
        return "[kty] is missing in [keys]"
    kty = jwk.get("kty")
    if kty is None:
        return "[kty] is missing in [keys]"
    if not isinstance(kty, str):
        return "[kty] is bad in [keys]"
    alg, kid = jwk.get("alg"), jwk.get("kid")
    if alg is not None and not isinstance(alg, str):
        alg = None  # Envoy ignores a non-string alg rather than refusing the key
    if kid is not None and not isinstance(kid, str):
        kid = None
    problem = _check_fields(kty, alg, jwk)
    if problem:
        return problem
    fields = dict(jwk)
    crv = jwk.get("crv") if kty in ("EC", "OKP") else None
    if kty == "EC" and crv is None:
        crv = _EC_ALG_CURVE.get(alg or "", "P-256")  # Envoy: the alg names the curve, else P-256
        fields["crv"] = crv
    try:
        key = _build(kty, fields)
    except (InvalidKeyError, ValueError, TypeError, KeyError):
        return _key_error(kty)
    return Jwk(kty, kid, alg, key, crv)


def parse_jwks(text: str | bytes) -> JwkSet:
    """Parse a JWKS document (``{"keys": [...]}``) into its usable keys.

    Raises :class:`JwksError` when the document is not JSON, has no ``keys`` list, or
    none of its keys can be used (Envoy then treats the issuer as having no keys).
    """
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise JwksError(JWKS_INVALID_JSON) from e
    if not isinstance(doc, dict) or "keys" not in doc:
        raise JwksError(JWKS_NO_KEYS)
    if not isinstance(doc["keys"], list):
        raise JwksError(JWKS_BAD_KEYS)
    keys: list[Jwk] = []
    skipped: list[str] = []
    for i, entry in enumerate(doc["keys"]):
        parsed = parse_jwk(entry)
        if isinstance(parsed, Jwk):
            keys.append(parsed)
        else:
            skipped.append(f"keys[{i}]: {parsed}")
    if not keys:
        detail = f" ({'; '.join(skipped)})" if skipped else ""
        raise JwksError(f"{JWKS_NO_VALID_KEYS}{detail}")
    return JwkSet(tuple(keys), tuple(skipped))


def discovery_url(issuer: str) -> str:
    """OpenID discovery document of ``issuer``: where keys are found when a rule names none."""
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


def jwks_uri_from_discovery(text: str | bytes) -> str | None:
    """The ``jwks_uri`` an OpenID discovery document names, or None if it names none."""
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        return None
    uri = doc.get("jwks_uri") if isinstance(doc, dict) else None
    return uri if isinstance(uri, str) and uri.startswith(("http://", "https://")) else None
