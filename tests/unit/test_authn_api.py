"""RequestAuthentication jwtRules checks made at apply time (zeromesh.api), as Istio makes them."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from zeromesh.api import ManifestErrors, validate_all
from zeromesh.api.manifest import load_text

FILE = "ra.yaml"
KEY = json.loads(RSAAlgorithm.to_jwk(rsa.generate_private_key(65537, 2048).public_key()))
GOOD_JWKS = json.dumps({"keys": [KEY]})
PREFIX = f"{FILE}: document 1 (RequestAuthentication ns1/jwt): "


def manifest(**rule: Any) -> str:
    body = {"apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
            "metadata": {"name": "jwt", "namespace": "ns1"},
            "spec": {"jwtRules": [{"issuer": "https://issuer.example", **rule}]}}
    return yaml.safe_dump(body, sort_keys=False)


def errors(**rule: Any) -> list[str]:
    with pytest.raises(ManifestErrors) as info:
        validate_all(load_text(manifest(**rule), FILE), "default")
    return [str(e) for e in info.value.errors]


def warnings(**rule: Any) -> list[str]:
    (v,) = validate_all(load_text(manifest(**rule), FILE), "default")
    return list(v.warnings)


@pytest.mark.parametrize(("rule", "path", "fragment"), [
    ({"jwks": "{not json"}, "spec.jwtRules[0].jwks", "jwks parse error: Jwks is an invalid JSON"),
    ({"jwks": '{"key": []}'}, "spec.jwtRules[0].jwks", "Jwks does not have [keys] field"),
    ({"jwks": '{"keys": [{"kty": "RSA"}]}'}, "spec.jwtRules[0].jwks",
     "Jwks doesn't have any valid public key (keys[0]: [n] field is missing for a RSA key)"),
    ({"outputClaimToHeaders": [{"header": "x bad", "claim": "sub"}]},
     "spec.jwtRules[0].outputClaimToHeaders[0].header", '"x bad" is not a valid HTTP header name'),
    ({"outputPayloadToHeader": "x:payload"}, "spec.jwtRules[0].outputPayloadToHeader",
     '"x:payload" is not a valid HTTP header name'),
])
def test_jwt_rule_errors_name_the_field(rule: dict[str, Any], path: str, fragment: str) -> None:
    messages = errors(**rule)
    hits = [m for m in messages if m.startswith(f"{PREFIX}{path}: ")]
    assert hits and any(fragment in m for m in hits), messages


@pytest.mark.parametrize("rule", [
    {"jwks": GOOD_JWKS},
    {"jwksUri": "https://issuer.example/keys"},
    {"outputPayloadToHeader": "x-jwt-payload",
     "outputClaimToHeaders": [{"header": "X-Jwt-Sub", "claim": "sub"}]},
    {"outputPayloadToHeader": ""},
    {},
])
def test_valid_jwt_rules(rule: dict[str, Any]) -> None:
    assert warnings(**rule) == []


def test_jwks_and_jwks_uri_together_warn() -> None:
    (w,) = warnings(jwks=GOOD_JWKS, jwksUri="https://issuer.example/keys")
    assert w.startswith(f"{PREFIX}spec.jwtRules[0].jwksUri: is ignored: jwks is also set")
