"""RequestAuthentication at the waypoint: tokens in, principal/claims or Envoy's refusal out.

Keys are generated here with ``cryptography`` and tokens signed with PyJWT, so every
case is a real signature check; time is a fixed ``NOW``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from zeromesh.authn import (
    AuthnResult,
    AuthnSet,
    CompiledRequestAuthn,
    JwksError,
    JwkSet,
    JwtStatus,
    applicable_authn,
    authenticate,
    compile_request_authn,
    compile_request_authns,
    discovery_url,
    jwks_uri_from_discovery,
    needed_jwks,
    parse_jwks,
    parse_token,
)
from zeromesh.policy import Target, Workload

NOW = 1_700_000_000
ISS_A = "https://issuer-a.example"
ISS_B = "issuer-b@example.com"
GW = "gateway.networking.k8s.io"

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def _jwk(key: Any, kid: str | None, alg: str | None = None) -> dict[str, Any]:
    algorithm = RSAAlgorithm if isinstance(key, rsa.RSAPublicKey) else ECAlgorithm
    jwk: dict[str, Any] = json.loads(algorithm.to_jwk(key))
    if kid is not None:
        jwk["kid"] = kid
    if alg is not None:
        jwk["alg"] = alg
    return jwk


def jwks(*keys: dict[str, Any]) -> str:
    return json.dumps({"keys": list(keys)})


RSA_JWK = _jwk(RSA_KEY.public_key(), "rsa-1")
EC_JWK = _jwk(EC_KEY.public_key(), "ec-1")
JWKS_A = jwks(RSA_JWK)
JWKS_B = jwks(EC_JWK)


def token(claims: Mapping[str, Any] | None = None, *, key: Any = RSA_KEY, alg: str = "RS256",
          kid: str | None = "rsa-1", **extra: Any) -> str:
    payload: dict[str, Any] = {"iss": ISS_A, "sub": "alice", "exp": NOW + 3600}
    payload.update(claims or {})
    payload.update(extra)
    payload = {k: v for k, v in payload.items() if v is not None}
    headers = {"kid": kid} if kid is not None else None
    return pyjwt.encode(payload, key, algorithm=alg, headers=headers)


def ec_token(**claims: Any) -> str:
    return token({"iss": ISS_B, "sub": "bob", **claims}, key=EC_KEY, alg="ES256", kid="ec-1")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_token(header: Any, payload: Any, signature: bytes = b"sig") -> str:
    enc = [b64(json.dumps(part).encode()) if not isinstance(part, str) else part
           for part in (header, payload)]
    return f"{enc[0]}.{enc[1]}.{b64(signature)}"


def ra(name: str = "jwt", namespace: str = "ns1", rules: list[dict[str, Any]] | None = None,
       created: str = "2024-01-01T00:00:00Z", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": created},
        "spec": {"jwtRules": rules if rules is not None else [{"issuer": ISS_A, "jwks": JWKS_A}],
                 **spec},
    }


def authn_set(*objs: dict[str, Any]) -> AuthnSet:
    """Every policy in scope (scope selection has its own tests below)."""
    return AuthnSet(compile_request_authns(objs))


def bearer(tok: str) -> dict[str, str]:
    return {"authorization": f"Bearer {tok}", "host": "echo.ns1"}


def run(objs: list[dict[str, Any]] | dict[str, Any], headers: Mapping[str, str] | None = None,
        path: str = "/", **kw: Any) -> AuthnResult:
    items = objs if isinstance(objs, list) else [objs]
    return authenticate(authn_set(*items), headers or {}, path, NOW, **kw)


# ---- one rule: token validity ---------------------------------------------------------

RULE_A = {"issuer": ISS_A, "jwks": JWKS_A}
AUD_RULE = {**RULE_A, "audiences": ["api.example", "web"]}

_hs_signed = raw_token({"alg": "HS256", "typ": "JWT"}, {"iss": ISS_A, "sub": "x", "exp": NOW + 60})
_pem = RSA_KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
_h, _p, _ = _hs_signed.split(".")
HS256_CONFUSION = f"{_h}.{_p}.{b64(hmac.new(_pem, f'{_h}.{_p}'.encode(), hashlib.sha256).digest())}"
ALG_NONE = raw_token({"alg": "none"}, {"iss": ISS_A, "sub": "x"}, b"")

# (case, rule, token, expected status or None, expected principal)
VALIDITY: list[tuple[str, dict[str, Any], str, JwtStatus | None, str | None]] = [
    ("valid", RULE_A, token(), None, f"{ISS_A}/alice"),
    ("expired", RULE_A, token(exp=NOW - 61), JwtStatus.EXPIRED, None),
    ("expired within clock skew", RULE_A, token(exp=NOW - 59), None, f"{ISS_A}/alice"),
    ("nbf in the future", RULE_A, token(nbf=NOW + 61), JwtStatus.NOT_YET_VALID, None),
    ("nbf within clock skew", RULE_A, token(nbf=NOW + 59), None, f"{ISS_A}/alice"),
    ("no exp never expires", RULE_A, token(exp=None), None, f"{ISS_A}/alice"),
    ("wrong issuer", RULE_A, token(iss="https://evil.example"), JwtStatus.UNKNOWN_ISSUER, None),
    ("no issuer", RULE_A, token(iss=None), JwtStatus.UNKNOWN_ISSUER, None),
    ("audience mismatch", AUD_RULE, token(aud="other"), JwtStatus.AUDIENCE_NOT_ALLOWED, None),
    ("audience missing", AUD_RULE, token(), JwtStatus.AUDIENCE_NOT_ALLOWED, None),
    ("audience string", AUD_RULE, token(aud="web"), None, f"{ISS_A}/alice"),
    ("audience list", AUD_RULE, token(aud=["x", "api.example"]), None, f"{ISS_A}/alice"),
    ("audience scheme and slash ignored", AUD_RULE, token(aud="https://api.example/"), None,
     f"{ISS_A}/alice"),
    ("audiences not checked when unset", RULE_A, token(aud="anything"), None, f"{ISS_A}/alice"),
    ("bad signature", RULE_A, token(key=OTHER_RSA_KEY), JwtStatus.VERIFICATION_FAILED, None),
    ("unknown kid", RULE_A, token(kid="rsa-2"), JwtStatus.KID_ALG_MISMATCH, None),
    ("no kid tries every key", RULE_A, token(kid=None), None, f"{ISS_A}/alice"),
    ("RS512 with the same key", RULE_A, token(alg="RS512"), None, f"{ISS_A}/alice"),
    ("PS256 with the same key", RULE_A, token(alg="PS256"), None, f"{ISS_A}/alice"),
    ("alg none refused", RULE_A, ALG_NONE, JwtStatus.HEADER_UNSUPPORTED_ALG, None),
    ("HS256 keyed with the RSA public key", RULE_A, HS256_CONFUSION,
     JwtStatus.VERIFICATION_FAILED, None),
    ("HS256 when the RSA key names its alg", {"issuer": ISS_A, "jwks": jwks(
        _jwk(RSA_KEY.public_key(), None, "RS256"))}, HS256_CONFUSION, JwtStatus.KID_ALG_MISMATCH,
     None),
    ("ES256 token, RSA key set", RULE_A, token(key=EC_KEY, alg="ES256", kid=None),
     JwtStatus.VERIFICATION_FAILED, None),
    ("ES256 token, EC key set", {"issuer": ISS_B, "jwks": JWKS_B}, ec_token(), None,
     f"{ISS_B}/bob"),
    ("not three parts", RULE_A, "abc.def", JwtStatus.BAD_FORMAT, None),
    ("header not base64url", RULE_A, "a*b.e30.c2ln", JwtStatus.HEADER_BAD_BASE64, None),
    ("header not JSON", RULE_A, f"{b64(b'nope')}.e30.c2ln", JwtStatus.HEADER_BAD_JSON, None),
    ("header without alg", RULE_A, raw_token({"typ": "JWT"}, {}), JwtStatus.HEADER_BAD_ALG, None),
    ("kid not a string", RULE_A, raw_token({"alg": "RS256", "kid": 7}, {}),
     JwtStatus.HEADER_BAD_KID, None),
    ("payload not JSON", RULE_A, raw_token({"alg": "RS256"}, b64(b"[")),
     JwtStatus.PAYLOAD_BAD_JSON, None),
    ("exp not a number", RULE_A, raw_token({"alg": "RS256"}, {"iss": ISS_A, "exp": "soon"}),
     JwtStatus.EXP_NOT_INTEGER, None),
    ("aud not strings", RULE_A, raw_token({"alg": "RS256"}, {"iss": ISS_A, "aud": [1]}),
     JwtStatus.AUD_NOT_STRING, None),
    ("signature not base64url", RULE_A, raw_token({"alg": "RS256"}, {"iss": ISS_A})[:-3] + "!!!",
     JwtStatus.SIGNATURE_BAD_BASE64, None),
    ("no sub: valid but no principal", RULE_A, token(sub=None), None, None),
]


@pytest.mark.parametrize(("case", "rule", "tok", "status", "principal"), VALIDITY,
                         ids=[c[0] for c in VALIDITY])
def test_token_validity(case: str, rule: dict[str, Any], tok: str, status: JwtStatus | None,
                        principal: str | None) -> None:
    result = run(ra(rules=[rule]), bearer(tok))
    assert result.status is status, result.reason
    assert result.principal == principal
    if status is None:
        assert result.ok and result.error_status is None and result.error_body == ""
        assert result.claims["iss"] == rule["issuer"]
    else:
        assert not result.ok
        assert result.error_status == (403 if status is JwtStatus.AUDIENCE_NOT_ALLOWED else 401)
        assert result.error_body == status.value
        assert result.claims == {}


def test_envoy_wording() -> None:
    assert JwtStatus.EXPIRED.message == "Jwt is expired"
    assert JwtStatus.UNKNOWN_ISSUER.message == "Jwt issuer is not configured"
    assert JwtStatus.VERIFICATION_FAILED.message == "Jwt verification fails"
    assert JwtStatus.JWKS_FETCH_FAILED.message == "Jwks remote fetch is failed"
    assert JwtStatus.NOT_YET_VALID.message == "Jwt not yet valid"
    assert JwtStatus.AUDIENCE_NOT_ALLOWED.http_status == 403


def test_claims_are_the_validated_payload() -> None:
    tok = token(groups=["devs", "admins"], realm={"role": "admin"}, level=3)
    result = run(ra(), bearer(tok))
    assert result.principal == f"{ISS_A}/alice"
    assert result.claims["groups"] == ["devs", "admins"]
    assert result.claims["realm"] == {"role": "admin"}
    assert result.issuer == ISS_A and result.rule == f"ns1/jwt jwtRules[0] (issuer {ISS_A})"
    assert "principal" in result.reason


def test_refusal_carries_www_authenticate() -> None:
    result = run(ra(), {"authorization": f"Bearer {token(exp=NOW - 3600)}", "host": "echo"},
                 "/p?q=1")
    assert result.response_headers == (
        ("www-authenticate", 'Bearer realm="http://echo/p?q=1", error="invalid_token"'),)
    assert result.reason.startswith("JWT refused: Jwt is expired")


def test_no_token_passes_without_principal() -> None:
    result = run(ra(), {"host": "echo"})
    assert result.ok and result.status is None
    assert result.principal is None and result.claims == {} and result.issuer is None
    assert result.reason == "no JWT: passed without a request principal"


def test_no_policy_in_scope_is_a_no_op() -> None:
    result = authenticate(AuthnSet(()), bearer("garbage"), "/", NOW)
    assert result == AuthnResult()


def test_authorization_without_bearer_prefix_is_not_a_token() -> None:
    assert run(ra(), {"authorization": f"Basic {token()}"}).principal is None


def test_cors_preflight_is_not_authenticated() -> None:
    headers = {**bearer("garbage"), "origin": "https://app", "access-control-request-method": "GET"}
    assert run(ra(), headers, method="OPTIONS").ok
    assert not run(ra(), headers, method="GET").ok


# ---- locations and forwarding ---------------------------------------------------------

def test_custom_header_with_prefix() -> None:
    rule = {**RULE_A, "fromHeaders": [{"name": "X-Jwt-Assertion", "prefix": "Token "}]}
    ok = run(ra(rules=[rule]), {"x-jwt-assertion": f"Token {token()}"})
    assert ok.principal == f"{ISS_A}/alice"
    assert ok.headers_to_remove == ("x-jwt-assertion",)
    # The default Authorization header is not read once a location is named.
    assert run(ra(rules=[rule]), bearer(token())).principal is None
    # Without the prefix the header does not carry a token for this rule.
    assert run(ra(rules=[rule]), {"x-jwt-assertion": token()}).principal is None


def test_custom_header_without_prefix_takes_the_whole_value() -> None:
    rule = {**RULE_A, "fromHeaders": [{"name": "x-token"}]}
    assert run(ra(rules=[rule]), {"x-token": token()}).principal == f"{ISS_A}/alice"


def test_token_in_default_query_parameter_is_removed_from_the_path() -> None:
    result = run(ra(), {"host": "echo"}, f"/items?a=1&access_token={token()}&b=2")
    assert result.principal == f"{ISS_A}/alice"
    assert result.path == "/items?a=1&b=2"
    only = run(ra(), {}, f"/items?access_token={token()}")
    assert only.path == "/items"


def test_token_in_custom_query_parameter() -> None:
    rule = {**RULE_A, "fromParams": ["jwt"]}
    result = run(ra(rules=[rule]), {}, f"/?jwt={token()}")
    assert result.principal == f"{ISS_A}/alice" and result.path == "/"
    assert run(ra(rules=[rule]), {}, f"/?access_token={token()}").principal is None


def test_token_in_cookie_stays_in_place() -> None:
    rule = {**RULE_A, "fromCookies": ["session"]}
    result = run(ra(rules=[rule]), {"cookie": f"theme=dark; session={token()}"})
    assert result.principal == f"{ISS_A}/alice"
    assert result.headers_to_remove == () and result.path is None


@pytest.mark.parametrize(("forward", "removed"), [(None, ("authorization",)), (False,
                                                  ("authorization",)), (True, ())])
def test_forward_original_token(forward: bool | None, removed: tuple[str, ...]) -> None:
    rule = dict(RULE_A) if forward is None else {**RULE_A, "forwardOriginalToken": forward}
    result = run(ra(rules=[rule]), bearer(token()))
    assert result.ok and result.headers_to_remove == removed


def test_forward_original_token_keeps_the_query_parameter() -> None:
    rule = {**RULE_A, "forwardOriginalToken": True}
    assert run(ra(rules=[rule]), {}, f"/?access_token={token()}").path is None


def test_output_payload_to_header() -> None:
    rule = {**RULE_A, "outputPayloadToHeader": "X-Jwt-Payload"}
    tok = token(groups=["devs"])
    result = run(ra(rules=[rule]), bearer(tok))
    ((name, value),) = result.headers_to_add
    assert name == "x-jwt-payload"
    assert value == tok.split(".")[1]  # base64url, unpadded, exactly as sent
    assert json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))) == result.claims
    assert result.headers_to_remove == ("x-jwt-payload", "authorization")


def test_output_claim_to_headers() -> None:
    rule = {**RULE_A, "outputClaimToHeaders": [
        {"header": "x-sub", "claim": "sub"}, {"header": "x-level", "claim": "level"},
        {"header": "x-admin", "claim": "admin"}, {"header": "x-role", "claim": "realm.role"},
        {"header": "x-groups", "claim": "groups"}, {"header": "x-missing", "claim": "nope"},
        {"header": "x-ratio", "claim": "ratio"}]}
    tok = token(level=3, admin=True, realm={"role": "ops"}, groups=["a"], ratio=0.5)
    result = run(ra(rules=[rule]), bearer(tok))
    assert result.headers_to_add == (("x-sub", "alice"), ("x-level", "3"), ("x-admin", "true"),
                                     ("x-role", "ops"), ("x-ratio", "0.500000"))


def test_output_headers_are_always_stripped_from_the_client_request() -> None:
    rule = {**RULE_A, "outputPayloadToHeader": "x-jwt-payload",
            "outputClaimToHeaders": [{"header": "X-Sub", "claim": "sub"}]}
    result = run(ra(rules=[rule]), {"x-jwt-payload": "forged", "x-sub": "admin"})
    assert result.ok and result.principal is None
    assert result.headers_to_remove == ("x-jwt-payload", "x-sub")


# ---- several rules --------------------------------------------------------------------

TWO = [ra("a", rules=[{"issuer": ISS_A, "jwks": JWKS_A}]),
       ra("b", rules=[{"issuer": ISS_B, "jwks": JWKS_B}])]


@pytest.mark.parametrize(("case", "tok", "status", "principal"), [
    ("issuer A", token(), None, f"{ISS_A}/alice"),
    ("issuer B", ec_token(), None, f"{ISS_B}/bob"),
    ("issuer nobody names", token(iss="https://c.example"), JwtStatus.UNKNOWN_ISSUER, None),
    ("issuer B signed with A's key", token(iss=ISS_B), JwtStatus.KID_ALG_MISMATCH, None),
    ("issuer B expired", ec_token(exp=NOW - 100), JwtStatus.EXPIRED, None),
])
def test_token_is_routed_to_the_rule_of_its_issuer(case: str, tok: str, status: JwtStatus | None,
                                                    principal: str | None) -> None:
    result = run(TWO, bearer(tok))
    assert result.status is status and result.principal == principal


def test_rules_are_merged_across_policies_in_issuer_order() -> None:
    s = authn_set(*TWO)
    assert [r.issuer for r in s.rules] == sorted([ISS_A, ISS_B])


def test_same_issuer_twice_any_rule_may_accept() -> None:
    objs = [ra("web", rules=[{"issuer": ISS_A, "jwks": JWKS_A, "audiences": ["web"]}]),
            ra("api", rules=[{"issuer": ISS_A, "jwks": JWKS_A, "audiences": ["api"]}])]
    assert run(objs, bearer(token(aud="api"))).rule == f"ns1/api jwtRules[0] (issuer {ISS_A})"
    refused = run(objs, bearer(token(aud="other")))
    assert refused.status is JwtStatus.AUDIENCE_NOT_ALLOWED
    assert refused.rule == f"ns1/web jwtRules[0] (issuer {ISS_A})"


def test_token_must_come_from_a_location_its_issuer_reads() -> None:
    objs = [ra("a", rules=[{"issuer": ISS_A, "jwks": JWKS_A}]),
            ra("b", rules=[{"issuer": ISS_B, "jwks": JWKS_B, "fromHeaders": [{"name": "x-b"}]}])]
    assert run(objs, {"x-b": ec_token()}).principal == f"{ISS_B}/bob"
    assert run(objs, {"x-b": token()}).status is JwtStatus.UNKNOWN_ISSUER
    assert run(objs, bearer(ec_token())).status is JwtStatus.UNKNOWN_ISSUER


def test_every_token_sent_must_be_valid_and_the_first_issuer_is_the_principal() -> None:
    objs = [ra("a", rules=[{"issuer": ISS_A, "jwks": JWKS_A}]),
            ra("b", rules=[{"issuer": ISS_B, "jwks": JWKS_B, "fromHeaders": [{"name": "x-b"}]}])]
    both = run(objs, {**bearer(token()), "x-b": ec_token()})
    assert both.principal == f"{ISS_A}/alice"  # "https://..." sorts before "issuer-b@..."
    assert both.headers_to_remove == ("authorization", "x-b")
    bad = run(objs, {**bearer(token()), "x-b": ec_token(exp=NOW - 3600)})
    assert bad.status is JwtStatus.EXPIRED and bad.principal is None


# ---- keys -----------------------------------------------------------------------------

REMOTE = {"issuer": ISS_A, "jwksUri": "https://issuer-a.example/keys", "timeout": "2s"}


def test_jwks_uri_keys_come_from_the_caller() -> None:
    s = authn_set(ra(rules=[REMOTE]))
    (fetch,) = s.fetches
    assert (fetch.url, fetch.discovery, fetch.timeout) == ("https://issuer-a.example/keys", False,
                                                           2.0)
    asked: list[str] = []

    def keys_for(url: str) -> JwkSet | None:
        asked.append(url)
        return parse_jwks(JWKS_A)

    assert authenticate(s, bearer(token()), "/", NOW, keys_for).principal == f"{ISS_A}/alice"
    assert asked == ["https://issuer-a.example/keys"]
    for missing in (None, lambda url: None):
        result = authenticate(s, bearer(token()), "/", NOW, missing)
        assert result.status is JwtStatus.JWKS_FETCH_FAILED
        assert result.error_body == "Jwks remote fetch is failed"
    # No token: keys are not needed.
    assert authenticate(s, {}, "/", NOW, None).ok


def test_no_jwks_discovers_keys_from_the_issuer() -> None:
    (p,) = compile_request_authns([ra(rules=[{"issuer": ISS_A + "/"}])])
    (fetch,) = needed_jwks([p])
    assert fetch.discovery and fetch.url == "https://issuer-a.example/.well-known/openid-configuration"
    assert fetch.url == discovery_url(ISS_A) and fetch.timeout == 5.0
    assert any("discovered" in n for n in p.notes)
    doc = json.dumps({"issuer": ISS_A, "jwks_uri": "https://issuer-a.example/keys"})
    assert jwks_uri_from_discovery(doc) == "https://issuer-a.example/keys"
    assert jwks_uri_from_discovery("{}") is None and jwks_uri_from_discovery("nope") is None


def test_needed_jwks_is_one_fetch_per_url() -> None:
    objs = [ra("a", rules=[REMOTE]), ra("b", rules=[{**REMOTE, "issuer": ISS_B, "timeout": "9s"}])]
    (fetch,) = needed_jwks(compile_request_authns(objs))
    assert fetch.timeout == 9.0


@pytest.mark.parametrize(("bad", "why"), [
    ("not json", "Jwks is an invalid JSON"),
    ('{"nokeys": []}', "Jwks does not have [keys] field"),
    ('{"keys": {}}', "[keys] in Jwks is not an array"),
    ('{"keys": [{"kty": "RSA", "n": "AQAB"}]}', "Jwks doesn't have any valid public key"),
])
def test_unusable_inline_jwks_refuses_every_token_of_its_issuer(bad: str, why: str) -> None:
    p = compile_request_authn(ra(rules=[{"issuer": ISS_A, "jwks": bad}, {"issuer": ISS_B,
                                                                         "jwks": JWKS_B}]))
    assert any(why in n and "jwtRules[0]" in n for n in p.notes), p.notes
    assert p.rules[0].jwks_problem is not None
    result = authenticate(AuthnSet((p,)), bearer(token()), "/", NOW)
    assert result.status is JwtStatus.NO_VALID_KEYS and result.error_status == 401
    assert authenticate(AuthnSet((p,)), bearer(ec_token()), "/", NOW).ok


@pytest.mark.parametrize(("jwk", "why"), [
    ({"n": "AQAB"}, "[kty] is missing in [keys]"),
    ({"kty": 3}, "[kty] is bad in [keys]"),
    ({"kty": "XYZ"}, "[kty] is not supported in [keys]"),
    ({"kty": "RSA", "e": "AQAB"}, "[n] field is missing for a RSA key"),
    ({**RSA_JWK, "alg": "ES256"}, "[alg] is not started with [RS] or [PS] for an RSA key"),
    ({"kty": "RSA", "n": "!!", "e": "AQAB"}, "Jwks RSA [n] or [e] field is missing or has a parse"),
    ({**EC_JWK, "alg": "ES384"}, "[crv] field specified is not compatible with [alg] for an EC key"),
    ({**EC_JWK, "crv": "P-192"}, "[crv] or [alg] field is not supported for an EC key"),
    ({"kty": "oct", "alg": "RS256", "k": "c2VjcmV0"}, "[alg] does not start with [HS] for an HMAC"),
    ({"kty": "OKP", "crv": "X25519", "x": "AA"}, "[crv] field is not supported for an OKP key"),
])
def test_jwks_key_problems_are_skipped_with_envoys_words(jwk: dict[str, Any], why: str) -> None:
    parsed = parse_jwks(jwks(jwk, RSA_JWK))
    assert [k.kid for k in parsed.keys] == ["rsa-1"]
    assert len(parsed.skipped) == 1 and why in parsed.skipped[0]
    with pytest.raises(JwksError, match="Jwks doesn't have any valid public key"):
        parse_jwks(jwks(jwk))


def test_hmac_and_private_jwks_keys() -> None:
    secret = b"s3cret-s3cret-s3cret-s3cret-s3cret"
    oct_set = jwks({"kty": "oct", "k": b64(secret), "kid": "h1"})
    tok = pyjwt.encode({"iss": ISS_A, "sub": "svc"}, secret, algorithm="HS256",
                       headers={"kid": "h1"})
    assert run(ra(rules=[{"issuer": ISS_A, "jwks": oct_set}]), bearer(tok)).principal == \
        f"{ISS_A}/svc"
    # A private key published by mistake still verifies (its public half is kept).
    private = json.loads(RSAAlgorithm.to_jwk(RSA_KEY))
    assert parse_jwks(jwks({**private, "kid": "rsa-1"})).keys[0].kty == "RSA"
    assert run(ra(rules=[{"issuer": ISS_A, "jwks": jwks(private)}]), bearer(token())).ok


def test_parse_token_keeps_the_payload_segment() -> None:
    tok = token()
    parsed = parse_token(tok)
    assert not isinstance(parsed, JwtStatus)
    assert parsed.payload_b64 == tok.split(".")[1] and parsed.kid == "rsa-1"
    assert parsed.iss == ISS_A and parsed.exp == NOW + 3600 and parsed.nbf == 0


# ---- scope ----------------------------------------------------------------------------

WAYPOINT = Target(GW, "Gateway", "waypoint", "ns1")
SERVICE = Target("", "Service", "echo", "ns1")
CLASS = Target(GW, "GatewayClass", "istio-waypoint")
OLD_WAYPOINT = Workload("ns1", {"gateway.istio.io/managed": "istio.io-mesh-controller",
                                "app": "waypoint"})
OTHER_NS_WORKLOAD = Workload("ns2", {"app": "waypoint"})

SCOPED = [
    ra("gw", targetRefs=[{"group": GW, "kind": "Gateway", "name": "waypoint"}]),
    ra("svc", targetRef={"kind": "Service", "name": "echo"}),
    ra("class-root", "istio-system", targetRefs=[{"group": GW, "kind": "GatewayClass",
                                                 "name": "istio-waypoint"}]),
    ra("class-ns", targetRefs=[{"group": GW, "kind": "GatewayClass", "name": "istio-waypoint"}]),
    ra("other-gw", targetRefs=[{"group": GW, "kind": "Gateway", "name": "other"}]),
    ra("selector", selector={"matchLabels": {"app": "waypoint"}}),
    ra("selector-miss", selector={"matchLabels": {"app": "echo"}}),
    ra("namespace"),
    ra("mesh", "istio-system"),
    ra("root-selector", "istio-system", selector={"matchLabels": {"app": "waypoint"}}),
    ra("elsewhere", "ns2"),
    ra("empty", rules=[]),
]


@pytest.mark.parametrize(("case", "workload", "targets", "expected"), [
    ("current waypoint: its Gateway", None, [WAYPOINT], ["ns1/gw"]),
    ("current waypoint: Gateway, Service and class", None, [WAYPOINT, SERVICE, CLASS],
     ["istio-system/class-root", "ns1/gw", "ns1/svc"]),
    ("current waypoint: nothing targets it", None, [Target(GW, "Gateway", "x", "ns3")], []),
    ("old-style waypoint by labels", OLD_WAYPOINT, [],
     ["istio-system/mesh", "ns1/namespace", "istio-system/root-selector", "ns1/selector"]),
    ("old-style waypoint elsewhere", OTHER_NS_WORKLOAD, [],
     ["istio-system/mesh", "ns2/elsewhere", "istio-system/root-selector"]),
])
def test_scope_selection(case: str, workload: Workload | None, targets: list[Target],
                         expected: list[str]) -> None:
    compiled = compile_request_authns(SCOPED)
    chosen = applicable_authn(compiled, workload, targets=targets)
    assert sorted(p.key for p in chosen.policies) == sorted(expected)


def test_scope_order_is_mesh_namespace_selector_targets_then_age() -> None:
    compiled = compile_request_authns([
        ra("young", created="2024-02-01T00:00:00Z"), ra("old", created="2023-01-01T00:00:00Z"),
        ra("mesh", "istio-system"), ra("sel", selector={"matchLabels": {"app": "waypoint"}})])
    chosen = applicable_authn(compiled, OLD_WAYPOINT)
    assert [p.key for p in chosen.policies] == ["istio-system/mesh", "ns1/old", "ns1/young",
                                                "ns1/sel"]


def test_scope_selection_then_authentication() -> None:
    compiled = compile_request_authns([
        ra("gw", rules=[{"issuer": ISS_A, "jwks": JWKS_A}],
           targetRefs=[{"group": GW, "kind": "Gateway", "name": "waypoint"}]),
        ra("other", rules=[{"issuer": ISS_B, "jwks": JWKS_B}],
           targetRefs=[{"group": GW, "kind": "Gateway", "name": "other"}])])
    at_waypoint = applicable_authn(compiled, None, targets=[WAYPOINT])
    assert authenticate(at_waypoint, bearer(token()), "/", NOW).ok
    assert authenticate(at_waypoint, bearer(ec_token()), "/", NOW).status is \
        JwtStatus.UNKNOWN_ISSUER


def test_compiled_shape() -> None:
    p = compile_request_authn(ra(rules=[{
        "issuer": ISS_A, "jwks": JWKS_A, "audiences": ["https://API.example/"],
        "fromHeaders": [{"name": "X-A", "prefix": "T "}], "fromParams": ["p"],
        "fromCookies": ["c"], "outputPayloadToHeader": "X-P"}]))
    assert isinstance(p, CompiledRequestAuthn) and p.key == "ns1/jwt" and p.notes == ()
    (rule,) = p.rules
    assert rule.allowed_audiences == frozenset({"API.example"})
    assert [loc.label for loc in rule.locations] == [
        "header x-a (prefix 'T ')", "query parameter p", "cookie c"]
    assert rule.output_payload_to_header == "x-p" and rule.fetch is None
    assert "no jwtRules" in compile_request_authn(ra(rules=[])).notes[0]
