"""Which policies apply to a destination, and what they decide for one request (pure).

Evaluation is Istio's (AuthorizationPolicy reference): CUSTOM, then DENY, then ALLOW.

1. A CUSTOM policy whose rules match asks its provider; a "no" denies. Without an
   authorizer the request is denied, as Istio denies when a provider cannot be used.
2. Any matching DENY rule denies.
3. If no ALLOW policy applies, the request is allowed.
4. If some ALLOW rule matches, the request is allowed; otherwise it is denied.

A policy without rules never matches: an ALLOW one is Istio's "allow-nothing" (its
presence alone makes step 4 deny), a DENY one (refused by validation) does nothing.
AUDIT and ``istio.io/dry-run`` policies never change the outcome; the decision lists
those whose rules matched. :func:`applicable` does the per-destination work once and
returns a :class:`PolicySet` whose rules are flat lists of compiled tests with the
decision each one yields already built, so :func:`evaluate` allocates nothing on the
common path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from itertools import chain
from operator import attrgetter
from typing import Any

from zeromesh.policy.compile import CompiledPolicy, CompiledRule, CustomAuthorizer, ScopeKind
from zeromesh.policy.match import Test
from zeromesh.policy.model import Action, Decision, Request, Target, Workload

ROOT_NAMESPACE = "istio-system"
_LISTED = 5  # ALLOW policies named in a "no ALLOW policy matched" reason

_RANK = {ScopeKind.GLOBAL: 0, ScopeKind.NAMESPACE: 1, ScopeKind.WORKLOAD_SELECTOR: 2,
         ScopeKind.TARGET_REFS: 3}


def _order(p: CompiledPolicy) -> tuple[int, str, str, str]:
    """Mesh-wide first (Envoy runs root-namespace DENY policies first), then oldest."""
    return (_RANK[p.scope.kind], p.created, p.namespace, p.name)


def _allow_reason(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_LISTED])
    more = f" and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
    return f"denied: no ALLOW policy matched (checked {shown}{more})"


# ---- rule index --------------------------------------------------------------------
# A rule one of whose clauses only matches requests carrying one of a few exact values
# (principals: [a, b], or namespaces: [x]...) cannot match any other request; indexing
# it by those values lets a decision skip it with one dict look-up, so the cost stays
# flat with 1,000 policies in scope. Rules are still tried in policy order.

_INDEXED = ("source.principal", "source.serviceAccount", "source.namespace", "destination.port")
_READ: dict[str, Callable[[Request], Any]] = {
    "source.principal": attrgetter("source_principal"),
    "source.serviceAccount": attrgetter("source_service_account"),
    "source.namespace": attrgetter("source_namespace"),
    "destination.port": attrgetter("destination_port"),
}
_SMALL = 8  # below this many rules a flat scan is as fast as the look-ups

Entry = tuple[int, Test, Decision]


def _exact_keys(rule: CompiledRule, namespace: str) -> tuple[str, frozenset[Any]] | None:
    """The best (attribute, values) some clause of ``rule`` requires, if any."""
    best: tuple[str, frozenset[Any]] | None = None
    for clause in rule.clauses:
        attribute: str | None = None
        keys: set[Any] = set()
        for item in clause.items:
            found = None
            for ch in item.checks:
                if ch.negated or ch.attribute not in _INDEXED or any("*" in v for v in ch.values):
                    continue
                if attribute not in (None, ch.attribute):
                    continue
                found = ch
                break
            if found is None:
                attribute = None
                break
            attribute = found.attribute
            match attribute:
                case "source.principal":
                    keys.update(v.removeprefix("spiffe://") for v in found.values)
                case "source.serviceAccount":
                    keys.update(v if "/" in v else f"{namespace}/{v}" for v in found.values)
                case "destination.port":
                    keys.update(int(v) for v in found.values if v.isdigit())
                case _:
                    keys.update(found.values)
        if attribute is not None and (best is None or
                                      _INDEXED.index(attribute) < _INDEXED.index(best[0])):
            best = (attribute, frozenset(keys))
    return best


@dataclass(frozen=True, slots=True)
class _Table:
    """Rules of one action, in order, split into indexed and always-tried ones."""

    rest: tuple[Entry, ...]
    index: tuple[tuple[Callable[[Request], Any], dict[Any, tuple[Entry, ...]]], ...]

    @staticmethod
    def build(entries: Sequence[tuple[CompiledPolicy, CompiledRule, Decision]]) -> _Table:
        numbered = [(i, r.test, d) for i, (_, r, d) in enumerate(entries)]
        if len(entries) < _SMALL:
            return _Table(tuple(numbered), ())
        rest: list[Entry] = []
        by: dict[str, dict[Any, list[Entry]]] = {}
        for entry, (p, r, _) in zip(numbered, entries, strict=True):
            found = _exact_keys(r, p.namespace)
            if found is None:
                rest.append(entry)
                continue
            table = by.setdefault(found[0], {})
            for k in found[1]:
                table.setdefault(k, []).append(entry)
        index = tuple((_READ[a], {k: tuple(v) for k, v in t.items()}) for a, t in by.items())
        return _Table(tuple(rest), index)

    def candidates(self, request: Request) -> Iterable[Entry]:
        """The rules that may match, in policy order."""
        if not self.index:
            return self.rest
        found: list[tuple[Entry, ...]] = []
        for read, table in self.index:
            hit = table.get(read(request))
            if hit:
                found.append(hit)
        if not found:
            return self.rest
        if len(found) == 1 and not self.rest:
            return found[0]
        return sorted(chain(self.rest, *found), key=_position)


def _position(e: Entry) -> int:
    return e[0]


@dataclass(frozen=True, slots=True)
class PolicySet:
    """The enforced policies in scope for one destination, in evaluation order.

    Build it with :func:`applicable` (or directly from compiled policies) once per
    destination and configuration, then call :func:`evaluate` per request.
    """

    policies: tuple[CompiledPolicy, ...]
    _custom: tuple[tuple[Test, CompiledPolicy, int], ...] = field(init=False, repr=False)
    _deny: _Table = field(init=False, repr=False)
    _allow: _Table = field(init=False, repr=False)
    _has_allow: bool = field(init=False, repr=False)
    _reports: tuple[tuple[Test, str, bool], ...] = field(init=False, repr=False)
    _fallback: Decision = field(init=False, repr=False)

    def __post_init__(self) -> None:
        custom: list[tuple[Test, CompiledPolicy, int]] = []
        deny: list[tuple[CompiledPolicy, CompiledRule, Decision]] = []
        allow: list[tuple[CompiledPolicy, CompiledRule, Decision]] = []
        reports: list[tuple[Test, str, bool]] = []
        allow_names: list[str] = []
        for p in self.policies:
            if not p.enforced:
                continue
            key = p.key
            if p.dry_run:
                reports += [(r.test, key, True) for r in p.rules]
                continue
            match p.action:
                case Action.CUSTOM:
                    custom += [(r.test, p, r.index) for r in p.rules]
                case Action.DENY:
                    deny += [(p, r, Decision(False, key, r.index, Action.DENY,
                                               f"denied by DENY policy {key} rule {r.index}"))
                             for r in p.rules]
                case Action.ALLOW:
                    allow_names.append(key)
                    allow += [(p, r, Decision(True, key, r.index, Action.ALLOW,
                                                f"allowed by ALLOW policy {key} rule {r.index}"))
                              for r in p.rules]
                case Action.AUDIT:
                    reports += [(r.test, key, False) for r in p.rules]
        if allow_names:
            fallback = Decision(False, None, None, None, _allow_reason(allow_names))
        else:
            fallback = Decision(True, None, None, None, "allowed: no ALLOW policy applies")
        setter = object.__setattr__
        setter(self, "_custom", tuple(custom))
        setter(self, "_deny", _Table.build(deny))
        setter(self, "_allow", _Table.build(allow))
        setter(self, "_has_allow", bool(allow_names))
        setter(self, "_reports", tuple(reports))
        setter(self, "_fallback", fallback)


def _labels_match(labels: Iterable[tuple[str, str]], workload: Workload) -> bool:
    have = workload.labels
    return all(have.get(k) == v for k, v in labels)


def _applies(p: CompiledPolicy, workload: Workload | None, targets: frozenset[Target],
             root_namespace: str) -> bool:
    match p.scope.kind:
        case ScopeKind.TARGET_REFS:
            return any(t in targets and (t.kind != "GatewayClass" or p.namespace == root_namespace)
                       for t in p.scope.targets)
        case _ if workload is None:
            return False
        case ScopeKind.GLOBAL:
            return True
        case ScopeKind.NAMESPACE:
            return p.namespace == workload.namespace
        case ScopeKind.WORKLOAD_SELECTOR:
            return (p.namespace in (workload.namespace, root_namespace)
                    and _labels_match(p.scope.labels, workload))
    return False


def applicable(policies: Iterable[CompiledPolicy], workload: Workload | None, *,
               root_namespace: str = ROOT_NAMESPACE, targets: Iterable[Target] = ()) -> PolicySet:
    """The policies that apply to ``workload`` and/or the waypoint ``targets``.

    For the ztunnel, ``workload`` is the destination: mesh-wide (root namespace, no
    selector), its namespace's, and the selector policies of its namespace or the root
    namespace whose ``matchLabels`` it carries. A waypoint passes what it serves for
    this request as ``targets`` (its Gateway, the Service or ServiceEntry, and
    ``GatewayClass istio-waypoint``) and, only for the older selector style, its own pod
    as ``workload`` (``None`` otherwise). Policies the enforcer does not enforce are
    left out (their notes say why).
    """
    wanted = frozenset(targets)
    chosen = [p for p in policies if p.enforced and _applies(p, workload, wanted, root_namespace)]
    return PolicySet(tuple(sorted(chosen, key=_order)))


def _reported(ps: PolicySet, decision: Decision, request: Request) -> Decision:
    audited: list[str] = []
    dry: list[str] = []
    for test, key, is_dry in ps._reports:
        bucket = dry if is_dry else audited
        if key not in bucket and test(request):
            bucket.append(key)
    if not audited and not dry:
        return decision
    return replace(decision, audited=tuple(audited), dry_run=tuple(dry))


def _custom(ps: PolicySet, request: Request, authorize: CustomAuthorizer | None) -> Decision | None:
    answers: dict[str, bool] = {}
    for test, p, index in ps._custom:
        if not test(request):
            continue
        provider = p.provider or ""
        where = f"denied by CUSTOM policy {p.key} rule {index}"
        if authorize is None:
            return Decision(False, p.key, index, Action.CUSTOM,
                            f"{where}: no authorizer for provider {provider!r} (a CUSTOM policy "
                            "denies what it matches when its provider cannot be asked)")
        if provider not in answers:
            answers[provider] = authorize(provider, request)
        if not answers[provider]:
            return Decision(False, p.key, index, Action.CUSTOM,
                            f"{where}: provider {provider!r} denied the request")
    return None


def evaluate(policies: PolicySet | Iterable[CompiledPolicy], request: Request, *,
             authorize: CustomAuthorizer | None = None) -> Decision:
    """Decide one request. ``authorize`` answers for CUSTOM providers (waypoints only).

    A plain iterable of compiled policies is taken as already in scope (it is ordered
    and indexed on every call: build a :class:`PolicySet` once instead on hot paths).
    """
    ps = policies if isinstance(policies, PolicySet) else PolicySet(tuple(sorted(
        (p for p in policies if p.enforced), key=_order)))
    if ps._custom:
        denied = _custom(ps, request, authorize)
        if denied is not None:
            return _reported(ps, denied, request) if ps._reports else denied
    decision = ps._fallback
    for _, test, d in ps._deny.candidates(request):
        if test(request):
            decision = d
            break
    else:
        if ps._has_allow:
            for _, test, d in ps._allow.candidates(request):
                if test(request):
                    decision = d
                    break
    return _reported(ps, decision, request) if ps._reports else decision
