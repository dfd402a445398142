"""Choose a node for a pod: honour nodeSelector, then spread replicas (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class NodeView:
    name: str
    labels: Mapping[str, str]
    ready: bool
    pods: int                  # pods already bound to the node
    same_owner_pods: int = 0   # pods of the same Deployment already there


@dataclass(frozen=True, slots=True)
class Unschedulable:
    reason: str


def schedule(node_selector: Mapping[str, str], nodes: Sequence[NodeView]) -> str | Unschedulable:
    """Pick the feasible node with the fewest sibling pods, then fewest pods, then name."""
    if not nodes:
        return Unschedulable("0/0 nodes are available: the cluster has no nodes")
    ready = [n for n in nodes if n.ready]
    feasible = [n for n in ready if all(n.labels.get(k) == v for k, v in node_selector.items())]
    if not feasible:
        not_ready = len(nodes) - len(ready)
        parts = []
        if not_ready:
            parts.append(f"{not_ready} node(s) not ready")
        mismatch = len(ready)
        if mismatch:
            wanted = ",".join(f"{k}={v}" for k, v in sorted(node_selector.items()))
            parts.append(f"{mismatch} node(s) didn't match Pod's node affinity/selector ({wanted})")
        return Unschedulable(f"0/{len(nodes)} nodes are available: " + ", ".join(parts) + ".")
    best = min(feasible, key=lambda n: (n.same_owner_pods, n.pods, _natural(n.name)))
    return best.name


def _natural(name: str) -> tuple[str, int]:
    head = name.rstrip("0123456789")
    tail = name[len(head):]
    return (head, int(tail) if tail else 0)
