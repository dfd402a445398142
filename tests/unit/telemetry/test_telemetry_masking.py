"""Masking: each rule by table, then the property the issue asks for: no configured secret ever
reaches an access-log line, wherever the client put it (header, query, body)."""

from __future__ import annotations

import json
import re
import string
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from zeromesh.telemetry.masking import (
    BUILTINS,
    DEFAULT_MASKER,
    Masker,
    MaskingError,
    Pattern,
    check_pattern,
    looks_like_card,
    luhn_ok,
    masker_from_spec,
)
from zeromesh.waypoint.telemetry import LogSettings, RequestRecord

CARD = "4111111111111111"                      # Visa's test number (Luhn-valid)
NOT_CARD = "4111111111111112"                  # one digit off: fails Luhn
M = Masker(headers=["authorization", "x-api-key"], query_params=["token", "card"],
           json_fields=["password", "card.number"], patterns=[Pattern("ssn", r"\b\d{3}-\d{2}-\d{4}\b")])


@pytest.mark.parametrize(("digits", "ok"), [
    ("4111111111111111", True), ("5500005555555559", True), ("378282246310005", True),
    ("4111111111111112", False), ("0", True), ("18", True), ("19", False),
])
def test_luhn(digits: str, ok: bool) -> None:
    assert luhn_ok(digits) is ok


@pytest.mark.parametrize(("digits", "card"), [
    (CARD, True), (NOT_CARD, False), ("411111111111", False),           # 12 digits: too short
    ("12" + CARD + "34", True),                                        # a card inside a longer run
])
def test_looks_like_card(digits: str, card: bool) -> None:
    assert looks_like_card(digits) is card


@pytest.mark.parametrize(("value", "expected"), [
    # card numbers: plain, spaced, dashed, URL-encoded, inside text; not when Luhn fails
    (f"card {CARD} end", "card **** end"),
    ("4111 1111 1111 1111", "****"),
    ("4111-1111-1111-1111", "****"),
    ("/pay?n=4111%201111%201111%201111&x=1", "/pay?n=****&x=1"),
    ("/pay?n=4111+1111+1111+1111", "/pay?n=****"),
    (f"/p?c={NOT_CARD}", f"/p?c={NOT_CARD}"),
    ("order 123456789012", "order 123456789012"),                     # 12 digits, not a card
    # bearer tokens, any case, any whitespace
    ("Bearer abc.def-ghi_jkl", "Bearer ****"),
    ("xbearer\tAAAA/BBB+CCC==", "xbearer\t****"),
    # query parameters by name (case-insensitive), after ? & or ; and at the start (form bodies)
    ("/x?token=s3cret&a=1", "/x?token=****&a=1"),
    ("/x?a=1&TOKEN=s3cret#frag", "/x?a=1&TOKEN=****#frag"),
    ("token=s3cret&a=1", "token=****&a=1"),
    ("/x?mytoken=keep", "/x?mytoken=keep"),
    # user patterns
    ("ssn 123-45-6789 ok", "ssn **** ok"),
    ("plain text", "plain text"),
    ("", ""),
])
def test_text_masking(value: str, expected: str) -> None:
    assert M.text(value) == expected


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("authorization", "Bearer abc", "Bearer ****"),
    ("authorization", "Basic dXNlcjpwYXNz", "Basic ****"),
    ("authorization", "opaque", "****"),
    ("x-api-key", "k-123", "****"),
    ("X-Api-Key", "k-123", "****"),
    ("user-agent", "curl/8 Bearer abc", "curl/8 Bearer ****"),        # other headers: as text
    ("x-card", CARD, "****"),
])
def test_header_masking(name: str, value: str, expected: str) -> None:
    assert M.header(name, value) == expected


def test_default_masker_hides_credentials_and_builtins() -> None:
    assert DEFAULT_MASKER.header("cookie", "session=abc") == "****"
    assert DEFAULT_MASKER.header("authorization", "Bearer x.y.z") == "Bearer ****"
    assert DEFAULT_MASKER.text(f"/?n={CARD}") == "/?n=****"
    assert Masker(builtins=()).empty and Masker(builtins=()).text(CARD) == CARD


@pytest.mark.parametrize(("body", "ctype", "expected"), [
    (b'{"user": "a", "password": "p@ss"}', "application/json", '{"user":"a","****":"****"}'
     .replace('"****":"****"', '"password":"****"')),
    (b'{"card": {"number": "4111", "name": "A"}}', "application/json",
     '{"card":{"number":"****","name":"A"}}'),
    (b'{"number": "7"}', "application/json", '{"number":"7"}'),           # dotted path: only from root
    (b'[{"PASSWORD": 1}]', "", '[{"PASSWORD":"****"}]'),                   # any depth, any case
    (b'{"n": 4111111111111111}', "application/json", '{"n":"****"}'),      # a card as a JSON number
    (b'{"note": "Bearer abc"}', "application/json", '{"note":"Bearer ****"}'),
    (b'{"password": ', "application/json", "****"),                        # unparsable JSON: fail closed
    (b"token=abc&x=1", "application/x-www-form-urlencoded", "token=****&x=1"),
])
def test_body_masking(body: bytes, ctype: str, expected: str) -> None:
    assert M.body(body, ctype, 1000) == (expected, False)


def test_body_is_masked_before_it_is_cut() -> None:
    body = b"x" * 95 + b" " + CARD.encode() + b" tail"
    text, cut = M.body(body, "text/plain", 100)
    assert cut and len(text) <= 100 and "4111" not in text      # the card straddled the cut


def test_spec_union_keeps_defaults_and_builtins_unless_listed() -> None:
    m = masker_from_spec([{"headers": ["x-a"]}, {"queryParameters": ["q"], "replacement": "[x]"}])
    assert m.header("x-a", "v") == "[x]" and m.header("authorization", "t") == "[x]"
    assert m.text("/?q=1") == "/?q=[x]" and m.text(CARD) == "[x]"
    only_bearer = masker_from_spec([{"builtins": ["BearerToken"]}])
    assert only_bearer.text(CARD) == CARD and only_bearer.text("bearer t") == "bearer ****"


@pytest.mark.parametrize(("regex", "problem"), [
    ("(", "invalid regular expression"),
    ("a*", "matches the empty string"),
    (r"\d+", None),
])
def test_pattern_checks(regex: str, problem: str | None) -> None:
    got = check_pattern(regex)
    assert (got is None) if problem is None else (got is not None and problem in got)
    if problem is not None:
        with pytest.raises(MaskingError):
            Masker(patterns=[Pattern("p", regex)])


# ---- the property: no configured secret reaches a log line -----------------------------------------
USER_PATTERNS = [Pattern("ssn", r"\b\d{3}-\d{2}-\d{4}\b"), Pattern("api-key", r"sk_live_[A-Za-z0-9]{16,}")]
POLICY_MASKER = Masker(headers=["authorization", "x-secret"], query_params=["token"],
                       json_fields=["password"], patterns=USER_PATTERNS, builtins=BUILTINS)


def _luhn_complete(prefix: str) -> str:
    """The check digit that makes ``prefix`` + digit pass Luhn."""
    for d in "0123456789":
        if luhn_ok(prefix + d):
            return prefix + d
    raise AssertionError("unreachable")


@st.composite
def card_numbers(draw: Any) -> str:
    n = draw(st.integers(13, 19))
    digits = _luhn_complete(draw(st.text("0123456789", min_size=n - 1, max_size=n - 1)))
    sep = draw(st.sampled_from(["", " ", "-"]))
    if not sep:
        return digits
    groups = [digits[i:i + 4] for i in range(0, n, 4)]
    return sep.join(groups)


tokens = st.text(string.ascii_letters + string.digits + "-._~+/", min_size=8, max_size=40)
secrets = st.one_of(
    card_numbers().map(lambda c: ("card", c)),
    tokens.map(lambda t: ("bearer", f"Bearer {t}")),
    st.text(string.digits, min_size=9, max_size=9).map(lambda d: ("ssn", f"{d[:3]}-{d[3:5]}-{d[5:]}")),
    st.text(string.ascii_letters + string.digits, min_size=16, max_size=30).map(
        lambda t: ("api-key", f"sk_live_{t}")),
)
# Surrounding text a client may put next to a secret (never in the middle of one).
filler = st.text(string.ascii_letters + " :;,./!", max_size=12)
WHERE = ["header", "query", "path", "user-agent", "json-body", "text-body", "request-id", "host"]


def _secret_part(kind: str, value: str) -> str:
    """What must never appear: the credential itself (a bearer token without its scheme word)."""
    return value.split(" ", 1)[1] if kind == "bearer" else value


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(secret=secrets, where=st.sampled_from(WHERE), before=filler, after=filler)
def test_no_configured_secret_reaches_a_log_line(secret: tuple[str, str], where: str, before: str,
                                                 after: str) -> None:
    kind, value = secret
    assume(_secret_part(kind, value) not in before + after)      # the filler is not itself the secret
    embedded = f"{before} {value} {after}"
    headers = [("host", "echo.ns"), ("user-agent", "curl/8"), ("x-plain", "hello")]
    path, body, ctype, host = "/api?x=1", b"", "", "echo.ns"
    match where:
        case "header":
            headers.append(("x-plain", embedded))
        case "query":
            path = f"/api?q={embedded.replace(' ', '+')}&token={value.replace(' ', '%20')}"
        case "path":
            path = f"/api/{embedded}"
        case "user-agent":
            headers.append(("user-agent", embedded))
        case "json-body":
            body, ctype = json.dumps({"note": embedded, "password": value}).encode(), "application/json"
        case "text-body":
            body, ctype = embedded.encode(), "text/plain"
        case "request-id":
            headers.append(("x-request-id", embedded))
        case "host":
            host = embedded
    headers.append(("x-secret", value))
    headers.append(("authorization", f"Bearer {value}"))
    if ctype:
        headers.append(("content-type", ctype))
    rec = RequestRecord("10.0.0.1:1234", None, "", "POST", path, host, headers=headers, body=body,
                        request_id=dict(headers).get("x-request-id", ""), reason=f"denied: {embedded}",
                        settings=LogSettings(POLICY_MASKER, ("x-plain", "x-secret", "authorization"),
                                             body=True, body_limit=4096))
    line = json.dumps(rec.log_fields(1.0))
    assert _secret_part(kind, value) not in line
    assert "****" in line
    # and no built-in or user pattern still matches anything in the line's values
    values = [v for v in _strings(json.loads(line))]
    for v in values:
        for p in USER_PATTERNS:
            assert not re.search(p.regex, v), (p.name, v)
        for run in re.findall(r"[0-9](?:[ -]?[0-9]){12,18}", v):
            assert not luhn_ok(re.sub(r"\D", "", run)) or len(re.sub(r"\D", "", run)) < 13, v


def _strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for k, v in node.items() if k not in ("start_time", "duration_ms") for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return [node] if isinstance(node, str) else []
