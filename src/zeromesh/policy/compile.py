"""Compile one AuthorizationPolicy for one enforcer: what it can check, and what it cannot.

Shapes are not re-validated (``zeromesh.api`` did that); every field is handled. The
structure follows the ztunnel's (istiod ``ambient/authorization.go``, ztunnel
``rbac.rs``): a rule is a list of *clauses* that must all match — its ``to``, its
``from``, and one per ``when`` condition — and a clause is a list of *items* (one per
operation, source or condition) of which one must match. Within an item every field
must pass; within a field one value must match; a ``notX`` field must not match.

What the enforcer cannot see is handled as Istio does, and written down in ``notes``:

- ALLOW: a rule that uses any unseeable attribute is dropped whole (fail closed).
- DENY, AUDIT, CUSTOM: the unseeable fields are removed. At the ztunnel an item left
  empty matches nothing (ztunnel skips empty matches), so a clause left without items
  makes the rule a no-op. On TCP a waypoint is Envoy's TCP RBAC filter, which treats a
  removed attribute as matching, so an item left empty matches everything.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from operator import attrgetter
from typing import Any

from zeromesh.policy.match import (
    NEVER,
    Getter,
    MatchKind,
    StringMatch,
    Test,
    all_of,
    any_of,
    claim_getter,
    header_getter,
    ip_test,
    multi_string_test,
    parse_network,
    port_test,
    string_matcher,
    string_test,
)
from zeromesh.policy.model import Action, Enforcer, Request, Target

DRY_RUN_ANNOTATION = "istio.io/dry-run"
_SPIFFE = "spiffe://"


class ScopeKind(Enum):
    """Where a policy applies (the ztunnel's Scope, plus waypoint targetRefs)."""

    GLOBAL = "global"  # root namespace, no selector: every workload in the mesh
    NAMESPACE = "namespace"  # no selector: every workload in the policy's namespace
    WORKLOAD_SELECTOR = "workload-selector"  # matchLabels, in its namespace (any, from the root)
    TARGET_REFS = "target-refs"  # Gateway / Service / ServiceEntry / GatewayClass: waypoints only


@dataclass(frozen=True, slots=True)
class Scope:
    kind: ScopeKind
    labels: tuple[tuple[str, str], ...] = ()
    targets: tuple[Target, ...] = ()


@dataclass(frozen=True, slots=True)
class Check:
    """One field of one item: ``principals``, ``notPorts``, a ``when`` key's values..."""

    name: str  # as the policy spells it: "principals", "when request.headers[x-user]"
    attribute: str  # Istio attribute it reads: "source.principal"
    values: tuple[str, ...]
    negated: bool
    test: Test = field(compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Item:
    """One source, operation or condition; ``label`` locates it: ``from[0]``, ``when[2]``."""

    label: str
    checks: tuple[Check, ...]


@dataclass(frozen=True, slots=True)
class Clause:
    name: str  # "from", "to" or "when[i]"
    items: tuple[Item, ...]


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A rule that can still match; ``index`` is its position in ``spec.rules``."""

    index: int
    clauses: tuple[Clause, ...]
    test: Test = field(compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    """One policy as one enforcer enforces it.

    ``enforced`` is False when this enforcer ignores the policy altogether (targetRefs or
    AUDIT/CUSTOM at the ztunnel); ``rules`` holds only the rules that can still match;
    ``notes`` says what was dropped or trimmed and why; ``status`` is the Istio-like
    one-liner for the policy's status ("" when there is nothing to say).
    """

    name: str
    namespace: str
    enforcer: Enforcer
    action: Action
    scope: Scope
    rules: tuple[CompiledRule, ...]
    enforced: bool = True
    provider: str | None = None
    dry_run: bool = False
    created: str = ""
    notes: tuple[str, ...] = ()
    status: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


# ---- attributes ------------------------------------------------------------------

class _Kind(Enum):
    STRING = "string"
    PRINCIPAL = "principal"  # string, spiffe:// accepted and ignored
    LOWER = "lower"  # case-insensitive string (hosts)
    PATH = "path"  # string with {*} templates
    MULTI = "multi"  # string or list of strings (JWT claims)
    ACCOUNT = "account"  # ns/sa or sa (the policy's namespace)
    IP = "ip"
    PORT = "port"


def _lower_host(r: Request) -> str | None:
    return r.host.lower() if r.host is not None else None


def _url_path(r: Request) -> str | None:
    """``request.url_path``: the path without its query string."""
    p = r.path
    return p.partition("?")[0] if p is not None else None


def _absent(r: Request) -> None:
    return None


# attribute -> (getter, value kind)
_ATTRIBUTES: dict[str, tuple[Getter, _Kind]] = {
    "source.principal": (attrgetter("source_principal"), _Kind.PRINCIPAL),
    "source.namespace": (attrgetter("source_namespace"), _Kind.STRING),
    "source.serviceAccount": (attrgetter("source_service_account"), _Kind.ACCOUNT),
    "source.ip": (attrgetter("source_ip"), _Kind.IP),
    "remote.ip": (attrgetter("remote_ip"), _Kind.IP),
    "destination.ip": (attrgetter("destination_ip"), _Kind.IP),
    "destination.port": (attrgetter("destination_port"), _Kind.PORT),
    "connection.sni": (attrgetter("sni"), _Kind.STRING),
    "request.auth.principal": (attrgetter("request_principal"), _Kind.STRING),
    "request.auth.audiences": (claim_getter(("aud",)), _Kind.MULTI),
    "request.auth.presenter": (claim_getter(("azp",)), _Kind.MULTI),
    "request.host": (_lower_host, _Kind.LOWER),
    "request.method": (attrgetter("method"), _Kind.STRING),
    "request.url_path": (_url_path, _Kind.PATH),
}

# from[].source and to[].operation fields, in the order checks are made (cheap first).
_SOURCE_FIELDS = (
    ("principals", "source.principal"), ("notPrincipals", "source.principal"),
    ("namespaces", "source.namespace"), ("notNamespaces", "source.namespace"),
    ("serviceAccounts", "source.serviceAccount"), ("notServiceAccounts", "source.serviceAccount"),
    ("ipBlocks", "source.ip"), ("notIpBlocks", "source.ip"),
    ("remoteIpBlocks", "remote.ip"), ("notRemoteIpBlocks", "remote.ip"),
    ("requestPrincipals", "request.auth.principal"),
    ("notRequestPrincipals", "request.auth.principal"),
)
_OPERATION_FIELDS = (
    ("ports", "destination.port"), ("notPorts", "destination.port"),
    ("hosts", "request.host"), ("notHosts", "request.host"),
    ("methods", "request.method"), ("notMethods", "request.method"),
    ("paths", "request.url_path"), ("notPaths", "request.url_path"),
)

# What each enforcer can see, by field name and by `when` key (istiod: handleRule,
# l4WhenAttributes; Envoy's TCP RBAC filter adds the remote address and SNI).
_L4_FIELDS = frozenset({"principals", "notPrincipals", "namespaces", "notNamespaces",
                        "serviceAccounts", "notServiceAccounts", "ipBlocks", "notIpBlocks",
                        "ports", "notPorts"})
_L4_WHEN = frozenset({"source.ip", "source.namespace", "source.principal", "destination.ip",
                      "destination.port"})
_TCP_FIELDS = _L4_FIELDS | {"remoteIpBlocks", "notRemoteIpBlocks"}
_TCP_WHEN = _L4_WHEN | {"remote.ip", "connection.sni", "source.serviceAccount"}
_EXPERIMENTAL = "experimental.envoy.filters."


def _sees(enforcer: Enforcer, name: str, is_when: bool) -> bool:
    match enforcer:
        case Enforcer.ZTUNNEL:
            return name in (_L4_WHEN if is_when else _L4_FIELDS)
        case Enforcer.WAYPOINT_TCP:
            return name in (_TCP_WHEN if is_when else _TCP_FIELDS)
        case Enforcer.WAYPOINT:
            return True


def _when_attribute(key: str) -> tuple[str, Getter, _Kind]:
    """Map a `when` key to (attribute, getter, kind); unknown keys read as absent."""
    if key in _ATTRIBUTES:
        getter, kind = _ATTRIBUTES[key]
        return key, getter, kind
    for prefix in ("request.headers[", "request.experimental.inline.headers["):
        if key.startswith(prefix) and key.endswith("]"):
            return "request.headers", header_getter(key[len(prefix):-1]), _Kind.STRING
    if key.startswith("request.auth.claims[") and key.endswith("]"):
        path = key[len("request.auth.claims["):-1].split("][")
        return "request.auth.claims", claim_getter(path), _Kind.MULTI
    return key, _absent, _Kind.STRING


def _strings(values: Any) -> tuple[str, ...]:
    """Values as written; ports may have been written as integers."""
    if not isinstance(values, list):
        return ()
    return tuple(str(v) for v in values if isinstance(v, str | int) and not isinstance(v, bool))


def _make_test(getter: Getter, kind: _Kind, values: Sequence[str], negate: bool,
               namespace: str) -> Test:
    match kind:
        case _Kind.IP:
            nets = []
            for v in values:
                try:
                    nets.append(parse_network(v))
                except ValueError:
                    continue  # validation refuses these; istiod skips them too
            return ip_test(getter, nets, negate)
        case _Kind.PORT:
            ports = [int(v) for v in values if v.isascii() and v.isdigit() and int(v) <= 65535]
            return port_test(ports, negate)
        case _Kind.ACCOUNT:
            # istiod: "ns/sa", or "sa" in the policy's namespace; exact, no wildcards.
            accounts = [StringMatch(MatchKind.EXACT, v if "/" in v else f"{namespace}/{v}")
                        for v in values]
            return string_test(getter, accounts, negate)
        case _Kind.PRINCIPAL:
            return string_test(getter, [StringMatch.parse(v.removeprefix(_SPIFFE)) for v in values],
                               negate)
        case _Kind.LOWER:
            return string_test(getter, [StringMatch.parse(v.lower()) for v in values], negate)
        case _Kind.PATH:
            return string_test(getter, [StringMatch.parse(v, templates=True) for v in values],
                               negate)
        case _Kind.MULTI:
            return multi_string_test(getter, string_matcher(map(StringMatch.parse, values)), negate)
        case _Kind.STRING:
            return string_test(getter, [StringMatch.parse(v) for v in values], negate)


@dataclass(slots=True)
class _RuleBuild:
    """Scratch state while compiling one rule."""

    unseen: list[str] = field(default_factory=list)  # field names / when keys removed
    emptied: list[str] = field(default_factory=list)  # items left without checks
    narrowed: list[str] = field(default_factory=list)  # items that kept some checks


def _item(label: str, specs: Sequence[tuple[str, str, tuple[str, ...], bool, bool]],
          enforcer: Enforcer, namespace: str, b: _RuleBuild) -> Item:
    """specs: (field, attribute, values, negated, is_when); fields without values are unset."""
    checks: list[Check] = []
    removed = False
    for fld, attribute, values, negated, is_when in specs:
        if not values:
            continue
        name = fld.removeprefix("when ") if is_when else fld
        if not _sees(enforcer, name, is_when):
            removed = True
            if name not in b.unseen:
                b.unseen.append(name)
            continue
        if is_when:
            attribute, getter, kind = _when_attribute(name)
        else:
            getter, kind = _ATTRIBUTES[attribute]
        test = _make_test(getter, kind, values, negated, namespace)
        checks.append(Check(fld, attribute, values, negated, test))
    if removed:
        (b.narrowed if checks else b.emptied).append(label)
    return Item(label, tuple(checks))


def _compile_rule(index: int, rule: Mapping[str, Any], action: Action, enforcer: Enforcer,
                  namespace: str) -> tuple[CompiledRule | None, str | None, list[str]]:
    """Returns (rule or None if it can never match, note or None, unseen names)."""
    b = _RuleBuild()
    clauses: list[Clause] = []
    for clause_name, key, inner, fields in (("from", "from", "source", _SOURCE_FIELDS),
                                            ("to", "to", "operation", _OPERATION_FIELDS)):
        entries = rule.get(key)
        if not isinstance(entries, list) or not entries:
            continue
        items = []
        for j, entry in enumerate(entries):
            part = entry.get(inner) if isinstance(entry, Mapping) else None
            part = part if isinstance(part, Mapping) else {}
            specs = [(f, attr, _strings(part.get(f)), f.startswith("not"), False)
                     for f, attr in fields]
            items.append(_item(f"{clause_name}[{j}]", specs, enforcer, namespace, b))
        clauses.append(Clause(clause_name, tuple(items)))
    conditions = rule.get("when")
    for k, cond in enumerate(conditions if isinstance(conditions, list) else []):
        if not isinstance(cond, Mapping):
            continue
        key = str(cond.get("key", ""))
        specs = [(f"when {key}", key, _strings(cond.get("values")), False, True),
                 (f"when {key}", key, _strings(cond.get("notValues")), True, True)]
        clauses.append(Clause(f"when[{k}]", (_item(f"when[{k}]", specs, enforcer, namespace, b),)))

    fields_text = ", ".join(b.unseen)
    if b.unseen and action is Action.ALLOW:
        return None, (f"rule {index} dropped: uses HTTP attributes ({fields_text}) that "
                      f"{enforcer.title} cannot see; an ALLOW rule that cannot be checked never "
                      "matches"), b.unseen
    note: str | None = None
    if b.unseen:
        if enforcer is Enforcer.WAYPOINT_TCP:
            # Envoy's TCP filter: a removed attribute matches, so an emptied item matches all.
            clauses = [c for c in clauses if not any(i.label in b.emptied for i in c.items)]
            note = (f"rule {index}: HTTP fields {fields_text} removed on TCP traffic and treated "
                    f"as matching, so this {action.value} rule matches more than written")
        else:
            clauses = [Clause(c.name, tuple(i for i in c.items if i.checks)) for c in clauses]
            dead = [c.name for c in clauses if not c.items]
            parts = [f"{label} left empty and matches nothing" for label in b.emptied]
            parts += [f"{label} keeps only its L4 fields" for label in b.narrowed]
            ending = (f"so this {action.value} rule is a no-op" if dead else
                      f"the rest of this {action.value} rule is enforced")
            note = (f"rule {index}: HTTP fields {fields_text} removed at L4; "
                    f"{'; '.join(parts)}, {ending}")
    for c in clauses:
        if not c.items:
            return None, note, b.unseen
    test = all_of([any_of([all_of([ch.test for ch in i.checks]) if i.checks else NEVER
                           for i in c.items]) for c in clauses])
    return CompiledRule(index, tuple(clauses), test), note, b.unseen


def targets_of(spec: Mapping[str, Any], namespace: str) -> tuple[Target, ...]:
    refs = spec.get("targetRefs")
    refs = list(refs) if isinstance(refs, list) else []
    if isinstance(spec.get("targetRef"), Mapping):
        refs.append(spec["targetRef"])
    out = []
    for ref in refs:
        if not isinstance(ref, Mapping):
            continue
        group, kind = str(ref.get("group", "") or ""), str(ref.get("kind", ""))
        ns = "" if kind == "GatewayClass" else namespace
        out.append(Target(group, kind, str(ref.get("name", "")), ns))
    return tuple(out)


def scope_of(spec: Mapping[str, Any], namespace: str, root_namespace: str) -> Scope:
    """Where a policy-like resource applies (also RequestAuthentication and TelemetryPolicy)."""
    targets = targets_of(spec, namespace)
    if targets:
        return Scope(ScopeKind.TARGET_REFS, targets=targets)
    selector = spec.get("selector")
    if isinstance(selector, Mapping):
        labels = selector.get("matchLabels") or {}
        return Scope(ScopeKind.WORKLOAD_SELECTOR, labels=tuple(sorted(
            (str(k), str(v)) for k, v in labels.items())))
    if namespace == root_namespace:
        return Scope(ScopeKind.GLOBAL)
    return Scope(ScopeKind.NAMESPACE)


def compile_policy(obj: Mapping[str, Any], enforcer: Enforcer, *,
                   root_namespace: str = "istio-system") -> CompiledPolicy:
    """Compile one validated AuthorizationPolicy (Kubernetes JSON shape) for ``enforcer``.

    ``root_namespace`` only decides GLOBAL scope (Istio's meshConfig.rootNamespace).
    """
    meta = obj.get("metadata") or {}
    name, namespace = str(meta.get("name", "")), str(meta.get("namespace", "default"))
    annotations = meta.get("annotations") or {}
    dry_run = str(annotations.get(DRY_RUN_ANNOTATION, "")).lower() == "true"
    spec = obj.get("spec") or {}
    action = Action(spec.get("action") or "ALLOW")
    provider_spec = spec.get("provider")
    provider = str(provider_spec.get("name")) if isinstance(provider_spec, Mapping) else None
    scope = scope_of(spec, namespace, root_namespace)

    def make(rules: tuple[CompiledRule, ...], notes: tuple[str, ...], status: str = "",
             enforced: bool = True) -> CompiledPolicy:
        return CompiledPolicy(name, namespace, enforcer, action, scope, rules, enforced, provider,
                              dry_run, str(meta.get("creationTimestamp", "")), notes, status)

    if enforcer is Enforcer.ZTUNNEL:
        if scope.kind is ScopeKind.TARGET_REFS:
            return make((), ("not enforced by the ztunnel: targetRefs policies are enforced by "
                             "waypoints",), enforced=False)
        if action in (Action.AUDIT, Action.CUSTOM):
            return make((), (f"not enforced: the ztunnel does not enforce the {action.value} "
                             "action",), f"ztunnel does not support the {action.value} action",
                        enforced=False)

    notes: list[str] = []
    if dry_run:
        notes.append(f"dry-run ({DRY_RUN_ANNOTATION}): evaluated and reported in decisions, "
                     "never enforced")
    raw_rules = spec.get("rules")
    raw_rules = raw_rules if isinstance(raw_rules, list) else []
    if not raw_rules:
        match action:
            case Action.ALLOW:
                notes.append("no rules: this ALLOW policy matches nothing, so it denies every "
                             "request in its scope that no other ALLOW policy allows")
            case _:
                notes.append(f"no rules: a {action.value} policy without rules never matches")
    rules: list[CompiledRule] = []
    unseen: list[str] = []
    for i, raw in enumerate(raw_rules):
        rule, note, missing = _compile_rule(i, raw if isinstance(raw, Mapping) else {}, action,
                                            enforcer, namespace)
        if rule is not None:
            rules.append(rule)
        if note:
            notes.append(note)
        unseen += [m for m in missing if m not in unseen]
    if enforcer is Enforcer.WAYPOINT and any(u.startswith(_EXPERIMENTAL) for u in _when_keys(spec)):
        notes.append("experimental.envoy.filters.* attributes are never set by zeromesh's "
                     "waypoint and read as absent")
    status = _status(enforcer, action, unseen, bool(rules)) if unseen else ""
    if provider and action is Action.CUSTOM:
        notes.append(f"CUSTOM: requests matching a rule are sent to provider {provider!r}")
    return make(tuple(rules), tuple(notes), status)


def _when_keys(spec: Mapping[str, Any]) -> list[str]:
    keys = []
    for rule in spec.get("rules") or []:
        for cond in (rule.get("when") or []) if isinstance(rule, Mapping) else []:
            if isinstance(cond, Mapping):
                keys.append(str(cond.get("key", "")))
    return keys


def _status(enforcer: Enforcer, action: Action, unseen: Sequence[str], effective: bool) -> str:
    who = "ztunnel" if enforcer is Enforcer.ZTUNNEL else "a waypoint on TCP traffic"
    head = (f"{who} does not support HTTP attributes (found: {', '.join(sorted(unseen))}); "
            "HTTP rules need a waypoint proxy.")
    if action is Action.ALLOW:
        return (f"{head} The rules of this ALLOW policy that use them are left out, which is "
                "more restrictive than written.")
    if enforcer is Enforcer.WAYPOINT_TCP:
        return f"{head} They are treated as matching, so this {action.value} policy matches more."
    if not effective:
        return (f"{head} Without them this {action.value} policy has no rule the ztunnel can "
                "enforce and has no effect; attach it to a waypoint with targetRefs.")
    return f"{head} This {action.value} policy is enforced without its HTTP parts."


def status_message(*policies: CompiledPolicy) -> str:
    """The status a control plane shows on a policy: its compiled forms' messages, joined."""
    seen: list[str] = []
    for p in policies:
        if p.status and p.status not in seen:
            seen.append(p.status)
    return " ".join(seen)


CustomAuthorizer = Callable[[str, Request], bool]
"""A CUSTOM provider: given the provider name and the request, allow (True) or deny."""
