"""zeromesh.io TelemetryPolicy: registry, a full spec, and errors that name the field (a bad
masking regex is refused at apply, not discovered by a proxy)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from zeromesh.api import find_kind, resolve_cli_name
from zeromesh.api.zeromesh_kinds import MASK_BUILTINS
from zeromesh.controlplane.model import CONFIG_RESOURCES
from zeromesh.telemetry.masking import BUILTINS

if TYPE_CHECKING:
    from conftest import Api

TP = ("zeromesh.io", "TelemetryPolicy")
GW = "gateway.networking.k8s.io"
DOCS = Path(__file__).resolve().parents[3] / "docs"


def test_registered_and_pushed() -> None:
    info = find_kind(*TP)
    assert info is not None and info.resource == "telemetrypolicies.zeromesh.io"
    assert resolve_cli_name("telemetrypolicy") == [info]
    assert "telemetrypolicies.zeromesh.io" in CONFIG_RESOURCES
    assert MASK_BUILTINS == BUILTINS


def test_full_spec(api: Api) -> None:
    spec = {
        "targetRefs": [{"kind": "Gateway", "group": GW, "name": "waypoint"},
                       {"kind": "Service", "name": "echo"}],
        "accessLogging": {
            "requestHeaders": ["user-agent", "x-request-id", "authorization"],
            "body": {"enabled": True, "maxBytes": 2048},
            "masking": {"headers": ["x-api-key"], "queryParameters": ["token"],
                        "jsonFields": ["password", "card.number"],
                        "patterns": [{"name": "ssn", "regex": r"\b\d{3}-\d{2}-\d{4}\b"}],
                        "builtins": ["CardNumber", "BearerToken"], "replacement": "[masked]"}},
        "tracing": {"randomSamplingPercentage": 12.5, "maxTraces": 50,
                    "otlp": {"endpoint": "http://otel-collector.observability:4318/v1/traces",
                             "headers": {"x-tenant": "a"}, "timeout": "5s"}},
    }
    v = api.one(api.minimal(*TP, spec=spec))
    assert v.obj["spec"] == spec and v.warnings == ()


ERRORS: list[tuple[dict[str, Any], str, str]] = [
    ({"spec.accessLogging.masking.patterns": [{"name": "p", "regex": "(unclosed"}]},
     "spec.accessLogging.masking.patterns[0].regex", 'invalid regular expression "(unclosed"'),
    ({"spec.accessLogging.masking.patterns": [{"regex": "x*"}]},
     "spec.accessLogging.masking.patterns[0].regex", "matches the empty string"),
    ({"spec.accessLogging.masking.patterns": [{"name": "stars", "regex": r"\*+"}]},
     "spec.accessLogging.masking.patterns[0].regex", 'matches the replacement "****"'),
    ({"spec.accessLogging.masking.patterns": [{"name": "p"}]},
     "spec.accessLogging.masking.patterns[0].regex", "is required"),
    ({"spec.accessLogging.masking.builtins": ["Passport"]}, "spec.accessLogging.masking.builtins[0]",
     'unsupported value "Passport"'),
    ({"spec.accessLogging.masking.headers": ["bad header"]}, "spec.accessLogging.masking.headers[0]",
     "is not a valid HTTP header name"),
    ({"spec.accessLogging.masking.jsonFields": ["a..b"]}, "spec.accessLogging.masking.jsonFields[0]",
     "is not a field name or a dotted path"),
    ({"spec.accessLogging.masking.replacement": "X1"}, "spec.accessLogging.masking.replacement",
     "must not contain digits"),
    ({"spec.accessLogging.masking.secret": True}, "spec.accessLogging.masking.secret", "unknown field"),
    ({"spec.accessLogging.body.maxBytes": 0}, "spec.accessLogging.body.maxBytes", "out of range"),
    ({"spec.tracing.randomSamplingPercentage": 101}, "spec.tracing.randomSamplingPercentage",
     "out of range 0-100"),
    ({"spec.tracing.otlp": {"endpoint": "collector:4318"}}, "spec.tracing.otlp.endpoint",
     "must be an http:// or https:// URL"),
    ({"spec.tracing.otlp": {"endpoint": "http://c:4318", "timeout": "soon"}}, "spec.tracing.otlp.timeout",
     "invalid duration"),
    ({"spec.tracing.otlp": {}}, "spec.tracing.otlp.endpoint", "is required"),
    ({"spec.targetRefs": [{"kind": "Pod", "name": "x"}]}, "spec.targetRefs[0].kind",
     'a TelemetryPolicy cannot target "Pod"'),
    ({"spec.targetRefs": [{"kind": "Service", "name": "x"}], "spec.selector": {"matchLabels": {"a": "b"}}},
     "spec.targetRefs", "cannot be set together with spec.selector"),
]


@pytest.mark.parametrize(("changes", "path", "fragment"), ERRORS,
                         ids=[e[1] + ":" + e[2][:24] for e in ERRORS])
def test_errors_name_the_field(api: Api, changes: dict[str, Any], path: str, fragment: str) -> None:
    api.expect_error(api.minimal(*TP, **changes), path, fragment)


def test_documented_examples_validate(api: Api) -> None:
    for doc in ("access-log.md", "tracing.md"):
        text = (DOCS / doc).read_text()
        blocks = [b.split("```", 1)[0] for b in text.split("```yaml\n")[1:]]
        docs = [d for b in blocks for d in yaml.safe_load_all(b)]
        bodies = [d for d in docs if d and d.get("kind") == "TelemetryPolicy"]
        assert bodies, doc
        for body in bodies:
            api.one(body)
