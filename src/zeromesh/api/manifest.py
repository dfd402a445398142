"""Reading manifests: multi-document YAML (or JSON) into plain JSON-shaped dicts.

Every document keeps its origin (file, 1-based document number) so each later
message can point at it. Document numbers count *every* YAML document, empty
and comment-only ones included, so they match what an editor shows between
``---`` lines.

YAML is read with PyYAML's safe loader and its default YAML 1.1 rules, as
Kubernetes' own YAML reader does: unquoted ``yes``/``no``/``on``/``off`` are
booleans, so ``value: yes`` is a boolean and string fields reject it with a hint
to quote it. Values YAML has but JSON lacks are turned into what
``kubectl`` would send: non-string keys become strings (``80:`` -> ``"80"``),
timestamps become ISO strings, ``!!binary`` becomes base64 text. Duplicate keys
are an error, as with kubectl's strict decoding.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import os
import sys
from dataclasses import dataclass
from typing import Any

import yaml

from zeromesh.errors import ManifestError

try:
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # PyYAML built without libyaml
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]

_MERGE_TAG = "tag:yaml.org,2002:merge"
_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True, slots=True)
class Source:
    """Where a document came from: the file as the user named it and its document number."""

    file: str
    document: int

    def __str__(self) -> str:
        return f"{self.file}: document {self.document}"


@dataclass(frozen=True, slots=True)
class LoadedDoc:
    """One Kubernetes object as read, not yet validated."""

    source: Source
    body: dict[str, Any]


class _Loader(_BaseLoader):
    """PyYAML's safe loader, refusing duplicate keys (a silent last-one-wins hides typos)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                continue
            key = _key_text(self.construct_object(key_node))
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"found duplicate key {json.dumps(key)}", key_node.start_mark)
            seen.add(key)
        result: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return result


def _key_text(key: Any) -> str:
    """Map keys as sigs.k8s.io/yaml turns them into JSON object keys."""
    if isinstance(key, str):
        return key
    if isinstance(key, bool):
        return "true" if key else "false"
    if key is None:
        return "null"
    if isinstance(key, dt.date):
        return _time_text(key)
    return str(key)


def _time_text(value: dt.date) -> str:
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


class _NotJson(Exception):
    def __init__(self, path: str, what: str) -> None:
        super().__init__(f"{path or 'document'}: {what} cannot be represented in JSON")


def _jsonify(value: Any, path: str = "") -> Any:
    """Turn what the YAML loader built into JSON-compatible values (see module doc)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            key = _key_text(k)
            out[key] = _jsonify(v, f"{path}.{key}" if path else key)
        return out
    if isinstance(value, list):
        return [_jsonify(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _NotJson(path, f"the number {value}")
        return value
    if isinstance(value, dt.date):
        return _time_text(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    raise _NotJson(path, f"a YAML {type(value).__name__}")


def _yaml_problem(e: Exception, text: str) -> str:
    if isinstance(e, yaml.MarkedYAMLError):
        problem = e.problem or e.context or "malformed YAML"
        mark = e.problem_mark or e.context_mark
        if mark is not None:
            return f"{problem} at line {mark.line + 1} column {mark.column + 1}"
        return problem
    if isinstance(e, yaml.reader.ReaderError):
        pos = e.position
        line = text.count("\n", 0, pos) + 1
        column = pos - (text.rfind("\n", 0, pos) + 1) + 1
        return (f"unacceptable character #x{e.character:04x}: {e.reason} at line {line} "
                f"column {column}")
    if isinstance(e, RecursionError):
        return "the document is nested too deeply"
    return str(e) or type(e).__name__


def _expand(body: Any, source: Source) -> list[LoadedDoc]:
    if not isinstance(body, dict):
        got = "a list" if isinstance(body, list) else f"a {type(body).__name__} value"
        raise ManifestError(f"{source}: expected a Kubernetes object (a map with apiVersion, "
                            f"kind and metadata), got {got}")
    if body.get("kind") != "List":
        return [LoadedDoc(source, body)]
    items = body.get("items")
    if items is None:
        return []
    if not isinstance(items, list):
        raise ManifestError(f"{source}: items: a List's items must be a list")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ManifestError(f"{source}: items[{i}]: expected a Kubernetes object (a map)")
        out.append(LoadedDoc(source, item))
    return out


def _try_json(text: str, file: str) -> list[LoadedDoc] | None:
    """kubectl reads a stream starting with '{' as JSON; fall back to YAML if it is not."""
    if not text.lstrip().startswith("{"):
        return None
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):
        return None
    source = Source(file, 1)
    try:
        body = _jsonify(body)
    except (_NotJson, RecursionError) as e:
        raise ManifestError(f"{source}: {e}") from None
    return _expand(body, source)


def load_text(text: str, file: str) -> list[LoadedDoc]:
    """Every object in ``text`` (named ``file`` in messages), in order.

    Empty and comment-only documents are skipped but still counted; a ``kind: List``
    expands to its items, which share the List's document number.
    Raises ManifestError naming the file and document for malformed input.
    """
    as_json = _try_json(text, file)
    if as_json is not None:
        return as_json
    out: list[LoadedDoc] = []
    number = 0
    stream = yaml.load_all(text, Loader=_Loader)
    while True:
        try:
            body = next(stream)
        except StopIteration:
            break
        except Exception as e:  # PyYAML also raises ValueError (bad dates), RecursionError...
            raise ManifestError(
                f"{Source(file, number + 1)}: invalid YAML: {_yaml_problem(e, text)}") from None
        number += 1
        if body is None:
            continue
        source = Source(file, number)
        try:
            body = _jsonify(body)
        except (_NotJson, RecursionError) as e:
            raise ManifestError(f"{source}: {e}") from None
        out.extend(_expand(body, source))
    return out


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8-sig") as f:
            return f.read()
    except FileNotFoundError:
        raise ManifestError(f"{path}: no such file or directory") from None
    except UnicodeDecodeError as e:
        raise ManifestError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise ManifestError(f"{path}: cannot read: {e.strerror or e}") from None


def load_path(path: str) -> list[LoadedDoc]:
    """Objects from a file, a directory (its *.yaml, *.yml, *.json files, sorted by name,
    not recursive), or ``-`` for standard input. The only function here that does IO."""
    if path == "-":
        return load_text(sys.stdin.read(), "<stdin>")
    if os.path.isdir(path):
        try:
            names = sorted(os.listdir(path))
        except OSError as e:
            raise ManifestError(f"{path}: cannot read directory: {e.strerror or e}") from None
        out: list[LoadedDoc] = []
        for name in names:
            full = os.path.join(path, name)
            if name.endswith(_SUFFIXES) and os.path.isfile(full):
                out.extend(load_text(_read(full), full))
        return out
    return load_text(_read(path), path)
