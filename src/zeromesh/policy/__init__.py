"""zeromesh.policy: Istio AuthorizationPolicy, decided by one pure engine (no IO, no clock).

Role: the ztunnel (L4) and the waypoint (L4 + HTTP + JWT) both ask this package "may
this request through, and which policy says so?"; ``zeromesh x authz check`` asks
the same question from files. The engine is told what its enforcer can see, so a rule
it cannot check fails closed, exactly as Istio's ztunnel and Envoy do.

Vocabulary:
- *enforcer*: :class:`Enforcer` — the ztunnel, a waypoint (HTTP), a waypoint on TCP.
- *compiled policy*: one AuthorizationPolicy as one enforcer enforces it
  (:func:`compile_policy`), with *notes* on what was dropped or trimmed and a *status*.
- *scope*: global (root namespace), namespace, workload selector, or targetRefs.
- *rule / clause / item / check*: a rule's ``from``, ``to`` and each ``when`` are
  clauses (all must match); their sources, operations or condition are items (one
  must match); an item's fields are checks (all must pass).
- *policy set*: the enforced policies in scope for one destination (:func:`applicable`).
- *decision*: allowed or not, the deciding policy and rule, and the reason sentence.
"""

from zeromesh.policy.compile import (
    Check,
    Clause,
    CompiledPolicy,
    CompiledRule,
    CustomAuthorizer,
    Item,
    Scope,
    ScopeKind,
    compile_policy,
    status_message,
)
from zeromesh.policy.engine import ROOT_NAMESPACE, PolicySet, applicable, evaluate
from zeromesh.policy.model import Action, Decision, Enforcer, Request, Target, Workload

__all__ = [
    "ROOT_NAMESPACE",
    "Action",
    "Check",
    "Clause",
    "CompiledPolicy",
    "CompiledRule",
    "CustomAuthorizer",
    "Decision",
    "Enforcer",
    "Item",
    "PolicySet",
    "Request",
    "Scope",
    "ScopeKind",
    "Target",
    "Workload",
    "applicable",
    "compile_policy",
    "evaluate",
    "status_message",
]
