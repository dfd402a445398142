"""Shared fixtures for the zeromesh.api tests: build manifests, run them, read messages."""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Mapping
from typing import Any

import pytest
import yaml

from zeromesh.api import (
    LoadedDoc,
    ManifestError,
    ManifestErrors,
    Validated,
    find_kind,
    validate,
    validate_all,
)
from zeromesh.api.examples import minimal_manifest
from zeromesh.api.manifest import load_text

DELETE = "<delete>"
"""Patch value meaning "remove this field" (test modules spell it out: they do not import
from conftest)."""

FILE = "t.yaml"
LEADING = "---\n# an empty document, so the manifest under test is document 2\n---\n"
_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _tokens(path: str) -> list[str | int]:
    return [name if name else int(index) for name, index in _TOKEN.findall(path)]


def patched(body: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``body`` with ``{"spec.ports[0].port": 70000}``-style changes applied;
    missing maps are created, and ``DELETE`` removes the field."""
    out = copy.deepcopy(dict(body))
    for path, value in changes.items():
        tokens = _tokens(path)
        node: Any = out
        for tok, nxt in itertools.pairwise(tokens):
            if isinstance(tok, str) and tok not in node:
                node[tok] = [] if isinstance(nxt, int) else {}
            node = node[tok]
        last = tokens[-1]
        if isinstance(value, str) and value == DELETE:
            del node[last]
        elif isinstance(last, int) and isinstance(node, list) and last == len(node):
            node.append(copy.deepcopy(value))
        else:
            node[last] = copy.deepcopy(value)
    return out


class Api:
    """Run manifests through load_text + validate_all exactly as apply does."""

    file = FILE

    @staticmethod
    def patched(body: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
        return patched(body, changes)

    def minimal(self, group: str, kind: str, **changes: Any) -> dict[str, Any]:
        info = find_kind(group, kind)
        assert info is not None, (group, kind)
        return patched(minimal_manifest(info, namespace="ns1"), changes)

    def text(self, *bodies: Mapping[str, Any]) -> str:
        return LEADING + "---\n".join(yaml.safe_dump(dict(b), sort_keys=False) for b in bodies)

    def ok(self, *bodies: Mapping[str, Any], ns: str = "default") -> list[Validated]:
        """Validate; every success is also checked to be idempotent."""
        out = validate_all(load_text(self.text(*bodies), FILE), ns)
        for v in out:
            again = validate(LoadedDoc(v.source, v.obj), ns)
            assert again.obj == v.obj, "normalisation must be idempotent"
        return out

    def one(self, body: Mapping[str, Any], ns: str = "default") -> Validated:
        (v,) = self.ok(body, ns=ns)
        return v

    def errors(self, *bodies: Mapping[str, Any], ns: str = "default") -> list[str]:
        with pytest.raises(ManifestError) as info:
            validate_all(load_text(self.text(*bodies), FILE), ns)
        err = info.value
        assert isinstance(err, ManifestErrors)
        return [str(e) for e in err.errors]

    def warnings(self, body: Mapping[str, Any], ns: str = "default") -> list[str]:
        return list(self.one(body, ns=ns).warnings)

    @staticmethod
    def prefix(body: Mapping[str, Any], document: int = 2, default_ns: str = "default") -> str:
        """The message prefix the validator must use for ``body``."""
        md = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
        info = find_kind(str(body["apiVersion"]).rpartition("/")[0], str(body["kind"]))
        name = md.get("name") if isinstance(md.get("name"), str) else None
        if info is not None and info.namespaced:
            ident = f"{md.get('namespace') or default_ns}/{name}" if name else ""
        else:
            ident = name or ""
        what = " ".join(p for p in (str(body["kind"]), ident) if p)
        return f"{FILE}: document {document} ({what})"

    def expect_error(self, body: Mapping[str, Any], path: str, fragment: str) -> list[str]:
        """Validating ``body`` fails with a message that starts with file, document,
        resource and exactly ``path``, and contains ``fragment``."""
        messages = self.errors(body)
        assert_message(messages, f"{self.prefix(body)}: {path}: ", fragment)
        return messages

    def expect_warning(self, body: Mapping[str, Any], path: str, fragment: str) -> None:
        """``body`` validates, with a warning at exactly ``path`` containing ``fragment``."""
        assert_message(self.warnings(body), f"{self.prefix(body)}: {path}: ", fragment)


def assert_message(messages: list[str], start: str, fragment: str) -> None:
    hits = [m for m in messages if m.startswith(start)]
    assert hits, f"no message starts with {start!r}; got:\n" + "\n".join(messages)
    assert any(fragment in m for m in hits), f"{fragment!r} not in {hits}"


@pytest.fixture
def api() -> Api:
    return Api()


