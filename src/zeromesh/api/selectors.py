"""Kubernetes label selectors: their shape (for validation) and their meaning (matching).

The same ``{matchLabels, matchExpressions}`` shape selects pods for Deployments,
namespaces for Gateway API listeners, and so on; one matcher keeps them agreeing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from zeromesh.api.names import label_value_error, qualified_name_error
from zeromesh.api.schema import Ctx, Obj, child, label_map, list_of, string

_SET_OPERATORS = ("In", "NotIn")
_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


def _requirement_post(ctx: Ctx, req: dict[str, Any], path: str) -> None:
    op, values = req.get("operator"), req.get("values")
    if op in _SET_OPERATORS and not values:
        ctx.error(child(path, "values"), f"must not be empty when operator is {op}")
    elif op in ("Exists", "DoesNotExist") and values:
        ctx.error(child(path, "values"), f"must be empty when operator is {op}")


REQUIREMENT = Obj(
    {
        "key": string(nonempty=True, rule=qualified_name_error),
        "operator": string(enum=_OPERATORS),
        "values": list_of(string(rule=label_value_error)),
    },
    required=("key", "operator"),
    unknown="warn",
    post=_requirement_post,
)

LABEL_SELECTOR = Obj({"matchLabels": label_map, "matchExpressions": list_of(REQUIREMENT)},
                     unknown="warn")
"""``{matchLabels, matchExpressions}`` as in Deployments and Gateway API selectors."""


def is_empty_selector(selector: Mapping[str, Any]) -> bool:
    """An empty selector selects everything, which controllers must refuse."""
    return not selector.get("matchLabels") and not selector.get("matchExpressions")


def match_label_selector(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether ``labels`` satisfy a (validated) label selector; an empty one matches all."""
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for req in selector.get("matchExpressions") or []:
        key, op, values = req.get("key"), req.get("operator"), req.get("values") or []
        has = key in labels
        if op == "In" and not (has and labels[key] in values):
            return False
        if op == "NotIn" and has and labels[key] in values:
            return False
        if op == "Exists" and not has:
            return False
        if op == "DoesNotExist" and has:
            return False
    return True
