"""Composable field checkers that validate *and* normalise JSON-shaped manifest data.

Why hand-rolled and not pydantic: users need Kubernetes-style field paths
(``spec.ports[0].port``), warnings next to errors, a different unknown-field
policy per object (Istio rejects, Kubernetes core warns), and defaults that show
up in the stored object. A checker is a function ``(ctx, value, path) -> value``
that records problems in ``ctx`` and returns a normalised deep copy, so a whole
document is checked in one pass and every problem is reported, not just the first.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from zeromesh.api.durations import parse_duration, parse_gateway_duration
from zeromesh.api.names import dns1123_subdomain_error, label_value_error, qualified_name_error


class Ctx:
    """Collects the errors and warnings of one document, each already prefixed with
    ``file: document N (Kind ns/name)`` so callers can print them as they are."""

    __slots__ = ("errors", "prefix", "warnings")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def _fmt(self, path: str, msg: str) -> str:
        return f"{self.prefix}: {path}: {msg}" if path else f"{self.prefix}: {msg}"

    def error(self, path: str, msg: str) -> None:
        self.errors.append(self._fmt(path, msg))

    def warn(self, path: str, msg: str) -> None:
        self.warnings.append(self._fmt(path, msg))


Check = Callable[[Ctx, Any, str], Any]
"""A field checker: records problems for the value at ``path`` and returns it normalised."""

StrRule = Callable[[str], str | None]
"""A rule on a string value: an error message, or None when it is fine."""

Post = Callable[[Ctx, dict[str, Any], str], None]
"""A cross-field rule run on a normalised object (may add defaults or errors)."""

Unknown = Literal["error", "warn", "keep"]

UNKNOWN_FIELD_WARNING = "field is not known to zeromesh and is ignored"


def child(path: str, name: str) -> str:
    """``spec`` + ``ports`` -> ``spec.ports`` (top level: just ``ports``)."""
    return f"{path}.{name}" if path else name


def describe(value: Any) -> str:
    """How a wrong value is named in messages: its JSON type and, for scalars, its value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {json.dumps(value)}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value!r}"
    if isinstance(value, str):
        return f"string {json.dumps(value)}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a map"
    return type(value).__name__


def _quote_hint(value: Any) -> str:
    if isinstance(value, bool):
        return ("; quote it in YAML (unquoted true/false/yes/no/on/off are read as "
                "booleans)")
    if isinstance(value, int | float):
        return f'; quote it in YAML: "{value}"'
    return ""


def _unquote_hint(value: Any) -> str:
    return "; remove the quotes" if isinstance(value, str) else ""


def is_empty(value: Any) -> bool:
    """Empty values ask for nothing, so fields we cannot honour need no warning then."""
    return value is None or (isinstance(value, dict | list | str) and len(value) == 0)


def any_value(ctx: Ctx, value: Any, path: str) -> Any:
    """Anything goes; kept as given (deep-copied so the input is never shared)."""
    return copy.deepcopy(value)


def any_map(ctx: Ctx, value: Any, path: str) -> Any:
    """A map whose contents we keep but do not interpret."""
    if not isinstance(value, dict):
        ctx.error(path, f"must be a map, got {describe(value)}")
    return copy.deepcopy(value)


def any_list(ctx: Ctx, value: Any, path: str) -> Any:
    """A list whose contents we keep but do not interpret."""
    if not isinstance(value, list):
        ctx.error(path, f"must be a list, got {describe(value)}")
    return copy.deepcopy(value)


def string(*, enum: Collection[str] | None = None, upper: bool = False,
           nonempty: bool = False, rule: StrRule | None = None) -> Check:
    """A string, optionally one of ``enum`` (after upper-casing when ``upper``)."""

    def run(ctx: Ctx, value: Any, path: str) -> Any:
        if not isinstance(value, str):
            ctx.error(path, f"must be a string, got {describe(value)}{_quote_hint(value)}")
            return copy.deepcopy(value)
        s = value.upper() if upper else value
        if nonempty and not s:
            ctx.error(path, "must not be empty")
        elif enum is not None and s not in enum:
            ctx.error(path, f"unsupported value {json.dumps(value)}; must be one of: "
                            + ", ".join(enum))
        elif rule is not None:
            msg = rule(s)
            if msg:
                ctx.error(path, msg)
        return s

    return run


def _range_msg(v: float, lo: float | None, hi: float | None) -> str | None:
    if lo is not None and hi is not None and not lo <= v <= hi:
        return f"{v} is out of range {lo}-{hi}"
    if lo is not None and v < lo:
        return f"{v} must not be negative" if lo == 0 else f"{v} must be at least {lo}"
    if hi is not None and v > hi:
        return f"{v} must be at most {hi}"
    return None


def integer(lo: int | None = None, hi: int | None = None,
            choices: Collection[int] | None = None) -> Check:
    """An integer (booleans and quoted numbers are refused), optionally within lo..hi."""

    def run(ctx: Ctx, value: Any, path: str) -> Any:
        if isinstance(value, bool) or not isinstance(value, int):
            ctx.error(path, f"must be an integer, got {describe(value)}{_unquote_hint(value)}")
            return copy.deepcopy(value)
        msg = _range_msg(value, lo, hi)
        if msg is None and choices is not None and value not in choices:
            msg = f"{value} is not one of: " + ", ".join(str(c) for c in choices)
        if msg:
            ctx.error(path, msg)
        return value

    return run


def number(lo: float | None = None, hi: float | None = None) -> Check:
    """An integer or a decimal number within lo..hi (percentages)."""

    def run(ctx: Ctx, value: Any, path: str) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            ctx.error(path, f"must be a number, got {describe(value)}{_unquote_hint(value)}")
            return copy.deepcopy(value)
        msg = _range_msg(value, lo, hi)
        if msg:
            ctx.error(path, msg)
        return value

    return run


def boolean(ctx: Ctx, value: Any, path: str) -> Any:
    """true or false; the quoted strings "true"/"false" are refused like Kubernetes does."""
    if not isinstance(value, bool):
        ctx.error(path, f"must be a boolean, got {describe(value)}{_unquote_hint(value)}")
    return copy.deepcopy(value)


def duration(*, gateway_api: bool = False) -> Check:
    """A duration string: Go syntax (Istio) or GEP-2257 syntax (Gateway API); never negative."""
    parse = parse_gateway_duration if gateway_api else parse_duration
    example = '"10s"' if gateway_api else '"1s" or "1m30s"'

    def run(ctx: Ctx, value: Any, path: str) -> Any:
        if not isinstance(value, str):
            ctx.error(path, f"must be a duration string such as {example}, got "
                            f"{describe(value)}")
            return copy.deepcopy(value)
        try:
            seconds = parse(value)
        except ValueError as e:
            ctx.error(path, str(e))
            return value
        if seconds < 0:
            ctx.error(path, f'duration "{value}" must not be negative')
        return value

    return run


def regex(ctx: Ctx, value: Any, path: str) -> Any:
    """A regular expression; checked with Python's re (Envoy uses RE2, a close subset)."""
    if not isinstance(value, str):
        ctx.error(path, f"must be a string, got {describe(value)}")
        return copy.deepcopy(value)
    try:
        re.compile(value)
    except re.error as e:
        ctx.error(path, f"invalid regular expression {json.dumps(value)}: {e}")
    return value


def int_or_string(int_check: Check, str_check: Check) -> Check:
    """Kubernetes IntOrString: a number, or a string with its own rules (port names)."""

    def run(ctx: Ctx, value: Any, path: str) -> Any:
        if isinstance(value, str):
            return str_check(ctx, value, path)
        if isinstance(value, int) and not isinstance(value, bool):
            return int_check(ctx, value, path)
        ctx.error(path, f"must be an integer or a string, got {describe(value)}")
        return copy.deepcopy(value)

    return run


def list_of(item: Check, *, min_items: int = 0, unique: str | None = None) -> Check:
    """A list of items; ``unique`` names an item field (or ``"."`` for the item itself)
    that must not repeat, reported at the later occurrence."""

    def run(ctx: Ctx, value: Any, path: str) -> Any:
        if not isinstance(value, list):
            ctx.error(path, f"must be a list, got {describe(value)}")
            return copy.deepcopy(value)
        out = [item(ctx, v, f"{path}[{i}]") for i, v in enumerate(value)]
        if len(out) < min_items:
            ctx.error(path, "must not be empty" if min_items == 1
                      else f"must have at least {min_items} items")
        if unique:
            seen: dict[Any, int] = {}
            for i, v in enumerate(out):
                k = v if unique == "." else (v.get(unique) if isinstance(v, dict) else None)
                if not isinstance(k, str | int):
                    continue
                if k in seen:
                    where = f"{path}[{i}]" if unique == "." else child(f"{path}[{i}]", unique)
                    label = "value" if unique == "." else unique
                    ctx.error(where, f"duplicate {label} {json.dumps(k)} (also used by "
                                     f"{path}[{seen[k]}])")
                else:
                    seen[k] = i
        return out

    return run


def map_of(value_check: Check, *, key_rule: StrRule | None = None) -> Check:
    """A map from string keys (each checked by ``key_rule``) to checked values."""

    def run(ctx: Ctx, value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            ctx.error(path, f"must be a map, got {describe(value)}")
            return copy.deepcopy(value)
        out: dict[str, Any] = {}
        for k, v in value.items():
            p = f"{path}[{k}]"
            if not isinstance(k, str):
                ctx.error(p, "keys must be strings")
                continue
            if key_rule is not None:
                msg = key_rule(k)
                if msg:
                    ctx.error(p, msg)
            out[k] = value_check(ctx, v, p)
        return out

    return run


@dataclass(frozen=True, slots=True)
class Obj:
    """A map with known fields.

    ``unknown`` says what happens to other fields: "error" (Istio and Gateway API
    CRDs reject them), "warn" (Kubernetes core: warn and drop, as the API server
    does with field validation set to Warn) or "keep" (light validation). Null
    values mean "not set" and are dropped. ``warn`` maps fields we accept but
    cannot honour to the warning given when they are set to a non-empty value.
    """

    fields: Mapping[str, Check]
    required: tuple[str, ...] = ()
    unknown: Unknown = "error"
    defaults: Mapping[str, Any] = field(default_factory=dict)
    warn: Mapping[str, str] = field(default_factory=dict)
    drop: frozenset[str] = frozenset()
    post: Post | None = None

    def __call__(self, ctx: Ctx, value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            ctx.error(path, f"must be a map, got {describe(value)}")
            return copy.deepcopy(value)
        out: dict[str, Any] = {}
        for k, v in value.items():
            p = child(path, str(k))
            check = self.fields.get(k)
            if check is not None:
                if v is None:
                    continue
                out[k] = check(ctx, v, p)
                if k in self.warn and not is_empty(v):
                    ctx.warn(p, self.warn[k])
            elif k in self.drop:
                continue
            elif self.unknown == "keep":
                out[k] = copy.deepcopy(v)
            elif self.unknown == "warn":
                ctx.warn(p, UNKNOWN_FIELD_WARNING)
            else:
                ctx.error(p, "unknown field; expected one of: " + ", ".join(self.fields))
        for r in self.required:
            if r not in out:
                ctx.error(child(path, r), "is required")
        for k, d in self.defaults.items():
            if k not in out:
                out[k] = copy.deepcopy(d)
        if self.post is not None:
            self.post(ctx, out, path)
        return out


def extend(base: Obj, **changes: Any) -> Obj:
    """A variant of ``base``; ``fields`` given here are added to the base fields."""
    fields = dict(base.fields)
    fields.update(changes.pop("fields", {}))
    return Obj(fields=fields, required=changes.pop("required", base.required),
               unknown=changes.pop("unknown", base.unknown),
               defaults=changes.pop("defaults", base.defaults),
               warn=changes.pop("warn", base.warn), drop=changes.pop("drop", base.drop),
               post=changes.pop("post", base.post))


def present(obj: Mapping[str, Any], names: Iterable[str]) -> list[str]:
    """Which of ``names`` are set in ``obj`` (used for one-of rules)."""
    return [n for n in names if n in obj]


# ---- shared checkers ---------------------------------------------------------

string_list = list_of(string())
"""A list of strings: hosts, principals, methods, ..."""

label_map = map_of(string(rule=label_value_error), key_rule=qualified_name_error)
"""Label maps (metadata.labels, selectors): Kubernetes keys and values."""

annotation_map = map_of(string(), key_rule=qualified_name_error)
"""Annotation maps: Kubernetes keys, any string values."""

object_name = string(nonempty=True, rule=dns1123_subdomain_error)
"""A reference to another object by name."""


def percentage() -> Check:
    """Istio's Percent message: ``{value: 0-100}``."""
    return Obj({"value": number(0, 100)})


@dataclass(frozen=True, slots=True)
class KindSchema:
    """How one kind's top-level fields (besides apiVersion, kind, metadata) are checked.

    When ``spec`` is among the fields, a missing spec is checked as ``{}`` so its
    required fields are reported and its defaults filled.
    """

    fields: Mapping[str, Check]
    name_rule: StrRule = dns1123_subdomain_error
    post: Post | None = None
