"""Small helpers over Kubernetes-shaped dicts, shared by the controllers and the API."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any

Obj = dict[str, Any]


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_uid() -> str:
    return str(uuid.uuid4())


def meta(obj: Obj) -> Obj:
    return obj.setdefault("metadata", {})


def labels(obj: Obj) -> dict[str, str]:
    return obj.get("metadata", {}).get("labels") or {}


def selector_matches(selector: Mapping[str, Any] | None, lbls: Mapping[str, str]) -> bool:
    """matchLabels and matchExpressions, as a LabelSelector means them. Empty matches all."""
    if not selector:
        return True
    for k, v in (selector.get("matchLabels") or {}).items():
        if lbls.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        present = key in lbls
        if (op == "In" and (not present or lbls[key] not in values)) \
                or (op == "NotIn" and present and lbls[key] in values) \
                or (op == "Exists" and not present) \
                or (op == "DoesNotExist" and present):
            return False
    return True


def map_matches(selector: Mapping[str, str] | None, lbls: Mapping[str, str]) -> bool:
    """A Service selector: a plain map; None or empty selects nothing (no endpoints managed)."""
    if not selector:
        return False
    return all(lbls.get(k) == v for k, v in selector.items())


def condition(obj: Obj, ctype: str) -> Obj | None:
    for c in obj.get("status", {}).get("conditions") or []:
        if c.get("type") == ctype:
            return c
    return None


def set_condition(status: Obj, ctype: str, value: str, reason: str = "",
                  message: str = "") -> bool:
    """Update a condition in place; True when something changed (transition time only then)."""
    conds = status.setdefault("conditions", [])
    for c in conds:
        if c.get("type") == ctype:
            if (c.get("status"), c.get("reason", ""), c.get("message", "")) == (value, reason, message):
                return False
            c.update(status=value, lastTransitionTime=now())
            _set_or_drop(c, "reason", reason)
            _set_or_drop(c, "message", message)
            return True
    c = {"type": ctype, "status": value, "lastTransitionTime": now()}
    _set_or_drop(c, "reason", reason)
    _set_or_drop(c, "message", message)
    conds.append(c)
    return True


def _set_or_drop(d: Obj, k: str, v: str) -> None:
    if v:
        d[k] = v
    else:
        d.pop(k, None)


def is_ready(pod: Obj) -> bool:
    c = condition(pod, "Ready")
    return bool(c and c.get("status") == "True")


def is_terminating(obj: Obj) -> bool:
    return bool(obj.get("metadata", {}).get("deletionTimestamp"))
