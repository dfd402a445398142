"""zeromesh.io LocalRateLimit: validation, normalisation, registry and the documented example."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from zeromesh.api import find_kind, kind_for, resolve_cli_name
from zeromesh.controlplane.model import CONFIG_RESOURCES
from zeromesh.routing.resilience import TargetRef, compile_rate_limit

if TYPE_CHECKING:
    from conftest import Api

DELETE = "<delete>"  # see conftest.patched
LRL = ("zeromesh.io", "LocalRateLimit")
GW = "gateway.networking.k8s.io"
DOC = Path(__file__).resolve().parents[3] / "docs" / "local-rate-limit.md"


def test_registered() -> None:
    info = find_kind(*LRL)
    assert info is not None
    assert (info.resource, info.namespaced, info.api_versions) == (
        "localratelimits.zeromesh.io", True, ("zeromesh.io/v1alpha1",))
    assert kind_for("zeromesh.io/v1alpha1", "LocalRateLimit") is info
    assert kind_for("zeromesh.io/v1", "LocalRateLimit") is None
    for name in ("lrl", "localratelimit", "LocalRateLimits", "localratelimits.zeromesh.io",
                 "lrl.v1alpha1.zeromesh.io"):
        assert resolve_cli_name(name) == [info]
    assert "localratelimits.zeromesh.io" in CONFIG_RESOURCES


def test_minimal_gets_defaults(api: Api) -> None:
    body = api.minimal(*LRL, **{"spec.tokenBucket.tokensPerFill": DELETE})
    v = api.one(body)
    assert v.obj["spec"] == {
        "targetRefs": [{"kind": "Service", "group": "", "name": "demo"}],
        "tokenBucket": {"maxTokens": 10, "fillInterval": "1s", "tokensPerFill": 1},
        "responseStatus": 429,
    }
    assert v.warnings == ()


def test_full_spec(api: Api) -> None:
    body = api.minimal(*LRL, **{
        "spec.targetRefs": [{"kind": "HTTPRoute", "group": GW, "name": "reviews-v2"},
                            {"kind": "Gateway", "group": GW, "name": "waypoint"},
                            {"kind": "Service", "name": "reviews"}],
        "spec.tokenBucket": {"maxTokens": 5, "tokensPerFill": 5, "fillInterval": "50ms"},
        "spec.responseStatus": 503,
        "spec.responseHeaders": {"X-Limited": "yes", "retry-after": "1"},
    })
    v = api.one(body)
    assert v.obj["spec"]["responseHeaders"] == {"X-Limited": "yes", "retry-after": "1"}
    policy = compile_rate_limit(v.obj)
    assert policy.targets == (TargetRef(GW, "HTTPRoute", "reviews-v2"), TargetRef(GW, "Gateway", "waypoint"),
                              TargetRef("", "Service", "reviews"))
    assert (policy.max_tokens, policy.tokens_per_fill, policy.fill_interval_s, policy.response_status) == (
        5, 5, 0.05, 503)
    assert policy.response_headers == (("x-limited", "yes"), ("retry-after", "1"))


ERRORS: list[tuple[dict[str, Any], str, str]] = [
    ({"spec.tokenBucket.maxTokens": 0}, "spec.tokenBucket.maxTokens",
     "must be a positive integer, got integer 0"),
    ({"spec.tokenBucket.maxTokens": -3}, "spec.tokenBucket.maxTokens", "must be a positive integer"),
    ({"spec.tokenBucket.maxTokens": "10"}, "spec.tokenBucket.maxTokens",
     'must be a positive integer, got string "10"'),
    ({"spec.tokenBucket.maxTokens": True}, "spec.tokenBucket.maxTokens",
     "must be a positive integer, got boolean true"),
    ({"spec.tokenBucket.maxTokens": 1.5}, "spec.tokenBucket.maxTokens", "must be a positive integer"),
    ({"spec.tokenBucket.maxTokens": DELETE}, "spec.tokenBucket.maxTokens", "is required"),
    ({"spec.tokenBucket.tokensPerFill": 0}, "spec.tokenBucket.tokensPerFill",
     "must be a positive integer"),
    ({"spec.tokenBucket.fillInterval": DELETE}, "spec.tokenBucket.fillInterval", "is required"),
    ({"spec.tokenBucket.fillInterval": "10ms"}, "spec.tokenBucket.fillInterval",
     "the fill interval must be at least 50ms"),
    ({"spec.tokenBucket.fillInterval": "0"}, "spec.tokenBucket.fillInterval", "at least 50ms"),
    ({"spec.tokenBucket.fillInterval": "soon"}, "spec.tokenBucket.fillInterval", 'invalid duration "soon"'),
    ({"spec.tokenBucket.fillInterval": "-1s"}, "spec.tokenBucket.fillInterval", "must not be negative"),
    ({"spec.tokenBucket.fillInterval": 1}, "spec.tokenBucket.fillInterval", "must be a duration string"),
    ({"spec.tokenBucket.burst": 3}, "spec.tokenBucket.burst", "unknown field"),
    ({"spec.tokenBucket": DELETE}, "spec.tokenBucket", "is required"),
    ({"spec.targetRefs": DELETE}, "spec.targetRefs", "is required"),
    ({"spec.targetRefs": []}, "spec.targetRefs", "must not be empty"),
    ({"spec.targetRefs[0].kind": "Deployment", "spec.targetRefs[0].group": "apps"},
     "spec.targetRefs[0].kind", 'a LocalRateLimit cannot target "Deployment" in group "apps"; allowed: '
     "core/Service, gateway.networking.k8s.io/Gateway, gateway.networking.k8s.io/HTTPRoute"),
    ({"spec.targetRefs[0].kind": "Gateway", "spec.targetRefs[0].group": ""},
     "spec.targetRefs[0].kind", 'cannot target "Gateway" in group ""'),
    ({"spec.targetRefs[0].kind": "ServiceEntry", "spec.targetRefs[0].group": "networking.istio.io"},
     "spec.targetRefs[0].kind", "cannot target"),
    ({"spec.targetRefs[0].namespace": "other"}, "spec.targetRefs[0].namespace",
     "cross-namespace references are not supported"),
    ({"spec.targetRefs[0].name": DELETE}, "spec.targetRefs[0].name", "is required"),
    ({"spec.targetRefs[0].name": "Not_A_Name"}, "spec.targetRefs[0].name",
     "is not a valid DNS-1123 subdomain"),
    ({"spec.targetRefs[0].kind": DELETE}, "spec.targetRefs[0].kind", "is required"),
    ({"spec.targetRefs[0].sectionName": "http"}, "spec.targetRefs[0].sectionName", "unknown field"),
    ({"spec.targetRefs[1]": {"kind": "Service", "group": "", "name": "demo"}}, "spec.targetRefs[1]",
     "duplicate target (also spec.targetRefs[0])"),
    ({"spec.responseStatus": 200}, "spec.responseStatus", "200 is out of range 400-599"),
    ({"spec.responseStatus": "429"}, "spec.responseStatus", "must be an integer"),
    ({"spec.responseHeaders": {"content-length": "1"}}, "spec.responseHeaders[content-length]",
     "is managed by the proxy"),
    ({"spec.responseHeaders": {"Connection": "close"}}, "spec.responseHeaders[Connection]",
     "is managed by the proxy"),
    ({"spec.responseHeaders": {"bad name": "x"}}, "spec.responseHeaders[bad name]",
     "is not a valid HTTP header name"),
    ({"spec.responseHeaders": {"x-a": "1\r\nx-b: 2"}}, "spec.responseHeaders[x-a]",
     "must not contain CR, LF or NUL"),
    ({"spec.responseHeaders": {"x-a": 1}}, "spec.responseHeaders[x-a]", "must be a string"),
    ({"spec.routes": [{"name": "r"}]}, "spec.routes", "unknown field; expected one of: targetRefs, "
                                                       "tokenBucket, responseStatus, responseHeaders"),
]


@pytest.mark.parametrize(("changes", "path", "fragment"), ERRORS,
                         ids=[e[1] + ":" + e[2][:30] for e in ERRORS])
def test_errors_name_the_field(api: Api, changes: dict[str, Any], path: str, fragment: str) -> None:
    api.expect_error(api.minimal(*LRL, **changes), path, fragment)


def test_spec_is_required(api: Api) -> None:
    api.expect_error(api.minimal(*LRL, spec=DELETE), "spec.targetRefs", "is required")


def test_tokens_per_fill_above_max_warns(api: Api) -> None:
    body = api.minimal(*LRL, **{"spec.tokenBucket.maxTokens": 2, "spec.tokenBucket.tokensPerFill": 5})
    api.expect_warning(body, "spec.tokenBucket.tokensPerFill",
                       "is larger than maxTokens; the bucket never holds more than 2 tokens")


def test_wrong_version(api: Api) -> None:
    body = api.minimal(*LRL, apiVersion="zeromesh.io/v1")
    api.expect_error(body, "apiVersion", 'LocalRateLimit is not served as "zeromesh.io/v1"; use one of: '
                                         "zeromesh.io/v1alpha1")


def _doc_examples() -> list[dict[str, Any]]:
    text = DOC.read_text(encoding="utf-8")
    return [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", text, re.S)]


def test_documented_example_validates(api: Api) -> None:
    (example,) = _doc_examples()
    v = api.one(example)
    policy = compile_rate_limit(v.obj)
    assert (policy.namespace, policy.name, policy.targets) == (
        "bookinfo", "reviews-limit", (TargetRef("", "Service", "reviews"),))
    assert (policy.max_tokens, policy.tokens_per_fill, policy.fill_interval_s) == (100, 10, 1.0)
    assert policy.reply.status == 429 and policy.reply.body == "local_rate_limited"
