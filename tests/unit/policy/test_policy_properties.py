"""Properties of the engine, over generated policies and requests.

- The engine agrees with a small reference interpreter of the raw policy JSON written
  straight from Istio's reference (no compilation, no index, no shortcuts).
- Monotonicity: a DENY policy never turns a deny into an allow; an ALLOW policy added
  where ALLOW policies already apply never turns an allow into a deny; AUDIT and
  dry-run policies never change the outcome; order never changes the outcome.
- Fail closed: with ALLOW policies only, whatever the ztunnel allows, a waypoint (which
  sees more) allows too.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from zeromesh.policy import (
    Action,
    Decision,
    Enforcer,
    Request,
    Workload,
    applicable,
    compile_policy,
    evaluate,
)

ROOT = "istio-system"
DEST = Workload("ns2", {"app": "echo", "version": "v1"})

PRINCIPALS = ["cluster.local/ns/a/sa/x", "cluster.local/ns/a/sa/y", "cluster.local/ns/b/sa/x",
              "cluster.local/ns/ns2/sa/x"]
PRINCIPAL_PATTERNS = [*PRINCIPALS, "*", "cluster.local/ns/a/*", "*/sa/x", "spiffe://" + PRINCIPALS[0],
                      "cluster.local/ns/c/sa/z"]
NAMESPACES = ["a", "b", "ns2", "*", "a*", "*2", "zz"]
ACCOUNTS = ["a/x", "b/x", "x", "a/y", "zz/q"]
IPS = ["10.0.0.1", "10.0.1.2", "fd00::1", "192.168.5.5"]
BLOCKS = ["10.0.0.0/24", "10.0.1.2", "fd00::/64", "0.0.0.0/0", "192.168.0.0/16", "10.9.9.9"]
PORTS = ["80", "8080", "22"]
METHODS = ["GET", "POST", "G*"]
PATHS = ["/a", "/a*", "*b", "/c"]

SOURCE_FIELDS = {
    "principals": PRINCIPAL_PATTERNS, "notPrincipals": PRINCIPAL_PATTERNS,
    "namespaces": NAMESPACES, "notNamespaces": NAMESPACES,
    "serviceAccounts": ACCOUNTS, "notServiceAccounts": ACCOUNTS,
    "ipBlocks": BLOCKS, "notIpBlocks": BLOCKS,
    "requestPrincipals": ["iss/sub", "*"], "notRequestPrincipals": ["*", "iss/other"],
}
OPERATION_FIELDS = {"ports": PORTS, "notPorts": PORTS, "methods": METHODS, "notMethods": METHODS,
                    "paths": PATHS, "notPaths": PATHS}
WHEN = {"source.ip": BLOCKS, "destination.ip": BLOCKS, "destination.port": PORTS,
        "source.namespace": NAMESPACES, "source.principal": PRINCIPAL_PATTERNS,
        "request.headers[x-k]": ["v", "v*", "*"]}
HTTP_FIELDS = {"requestPrincipals", "notRequestPrincipals", "methods", "notMethods", "paths",
               "notPaths"}


def _part(fields: dict[str, list[str]], l4: bool) -> st.SearchStrategy[dict[str, Any]]:
    """One to three fields, each with one or two values."""
    names = sorted(f for f in fields if not (l4 and f in HTTP_FIELDS))
    return st.lists(st.tuples(st.sampled_from(names), st.integers(0, 2**16)), min_size=1,
                    max_size=3).map(lambda picks: {
                        n: sorted({fields[n][seed % len(fields[n])],
                                   fields[n][(seed >> 8) % len(fields[n])]})
                        for n, seed in picks})


def _condition(l4: bool) -> st.SearchStrategy[dict[str, Any]]:
    keys = sorted(k for k in WHEN if not (l4 and k.startswith("request.")))
    return st.sampled_from(keys).flatmap(lambda k: st.one_of(
        st.fixed_dictionaries({"key": st.just(k),
                               "values": st.lists(st.sampled_from(WHEN[k]), min_size=1, max_size=2)}),
        st.fixed_dictionaries({"key": st.just(k),
                               "notValues": st.lists(st.sampled_from(WHEN[k]), min_size=1,
                                                     max_size=2)})))


def rules(l4: bool = False) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional={
        "from": st.lists(_part(SOURCE_FIELDS, l4).map(lambda s: {"source": s}), min_size=1,
                         max_size=2),
        "to": st.lists(_part(OPERATION_FIELDS, l4).map(lambda o: {"operation": o}), min_size=1,
                       max_size=2),
        "when": st.lists(_condition(l4), min_size=1, max_size=2),
    })


_names = iter(range(10**9))


@st.composite
def policies(draw: st.DrawFn, actions: tuple[str, ...] = ("ALLOW", "DENY"), l4: bool = False
             ) -> dict[str, Any]:
    action = draw(st.sampled_from(actions))
    spec: dict[str, Any] = {"action": action}
    if draw(st.booleans()) or action != "ALLOW":
        spec["rules"] = draw(st.lists(rules(l4), min_size=1, max_size=3))
    if draw(st.integers(0, 3)) == 0:
        spec["selector"] = {"matchLabels": draw(st.sampled_from(
            [{"app": "echo"}, {"app": "other"}, {"version": "v1", "app": "echo"}]))}
    ns = draw(st.sampled_from(["ns2", "ns2", "ns2", ROOT, "ns1"]))
    return {"metadata": {"name": f"p{next(_names)}", "namespace": ns}, "spec": spec}


@st.composite
def indexable(draw: st.DrawFn) -> dict[str, Any]:
    """Rules the engine indexes (exact principals, accounts, namespaces, ports)."""
    exact = {"principals": PRINCIPALS, "serviceAccounts": ACCOUNTS, "namespaces": ["a", "b", "ns2"],
             "ports": PORTS}
    field = draw(st.sampled_from(sorted(exact)))
    vals = draw(st.lists(st.sampled_from(exact[field]), min_size=1, max_size=2, unique=True))
    rule: dict[str, Any] = ({"to": [{"operation": {field: vals}}]} if field == "ports"
                            else {"from": [{"source": {field: vals}}]})
    if draw(st.booleans()):
        rule["when"] = [{"key": "source.principal", "values": [draw(st.sampled_from(PRINCIPALS))]}]
    spec = {"action": draw(st.sampled_from(["ALLOW", "DENY"])), "rules": [rule]}
    return {"metadata": {"name": f"i{next(_names)}", "namespace": "ns2"}, "spec": spec}


@st.composite
def requests(draw: st.DrawFn, http: bool = True) -> Request:
    principal = draw(st.sampled_from([*PRINCIPALS, None]))
    kw: dict[str, Any] = {}
    if http:
        kw = dict(method=draw(st.sampled_from(["GET", "POST", "PUT"])),
                  path=draw(st.sampled_from(["/a", "/ab", "/c", "/x/b"])),
                  headers=draw(st.sampled_from([{}, {"x-k": "v"}, {"x-k": "vv"}])),
                  request_principal=draw(st.sampled_from([None, "iss/sub", "iss/other"])))
    return Request(principal, ipaddress.ip_address(draw(st.sampled_from(IPS))),
                   ipaddress.ip_address(draw(st.sampled_from(IPS))),
                   int(draw(st.sampled_from([*PORTS, "443"]))), **kw)


# ---- a reference interpreter of the raw JSON ---------------------------------------------

def _str(pattern: str, value: str | None) -> bool:
    if value is None:
        return False
    if pattern == "*":
        return value != ""
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    return value == pattern


def _ip(block: str, value: Any) -> bool:
    return ipaddress.ip_address(str(value)) in ipaddress.ip_network(block, strict=False)


def _peer(r: Request) -> tuple[str | None, str | None]:
    p = r.source_principal
    if p is None:
        return None, None
    parts = p.split("/")
    return parts[2], f"{parts[2]}/{parts[4]}"


def _value_match(field: str, v: str, r: Request, ns: str) -> bool:
    peer_ns, account = _peer(r)
    base = field[3].lower() + field[4:] if field.startswith("not") else field
    match base:
        case "principals" | "source.principal":
            return _str(v.removeprefix("spiffe://"), r.source_principal)
        case "namespaces" | "source.namespace":
            return _str(v, peer_ns)
        case "serviceAccounts":
            return account == (v if "/" in v else f"{ns}/{v}")
        case "ipBlocks" | "source.ip":
            return _ip(v, r.source_ip)
        case "destination.ip":
            return _ip(v, r.destination_ip)
        case "ports" | "destination.port":
            return int(v) == r.destination_port
        case "requestPrincipals":
            return _str(v, r.request_principal)
        case "methods":
            return _str(v, r.method)
        case "paths":
            return _str(v, r.path)
        case "request.headers[x-k]":
            return _str(v, r.headers.get("x-k"))
    raise AssertionError(field)


def _fields_match(part: dict[str, list[str]], r: Request, ns: str) -> bool:
    for field, vals in part.items():
        hit = any(_value_match(field, v, r, ns) for v in vals)
        if hit == field.startswith("not"):
            return False
    return True


def ref_rule(rule: dict[str, Any], r: Request, ns: str) -> bool:
    if "from" in rule and not any(_fields_match(f["source"], r, ns) for f in rule["from"]):
        return False
    if "to" in rule and not any(_fields_match(t["operation"], r, ns) for t in rule["to"]):
        return False
    for cond in rule.get("when", []):
        fields = {}
        if "values" in cond:
            fields[cond["key"]] = cond["values"]
        if "notValues" in cond:
            fields["not" + cond["key"]] = cond["notValues"]
        if not all(_fields_match({k: v}, r, ns) if not k.startswith("not") else
                   not any(_value_match(cond["key"], x, r, ns) for x in v)
                   for k, v in fields.items()):
            return False
    return True


def ref_in_scope(p: dict[str, Any]) -> bool:
    ns, sel = p["metadata"]["namespace"], p["spec"].get("selector")
    if sel is None:
        return ns in (ROOT, DEST.namespace)
    return ns in (ROOT, DEST.namespace) and all(DEST.labels.get(k) == v
                                                for k, v in sel["matchLabels"].items())


def ref_allowed(pols: list[dict[str, Any]], r: Request) -> bool:
    scoped = [p for p in pols if ref_in_scope(p)]

    def matched(p: dict[str, Any]) -> bool:
        return any(ref_rule(x, r, p["metadata"]["namespace"]) for x in p["spec"].get("rules", []))

    if any(p["spec"]["action"] == "DENY" and matched(p) for p in scoped):
        return False
    allows = [p for p in scoped if p["spec"]["action"] == "ALLOW"]
    return not allows or any(matched(p) for p in allows)


def run(pols: list[dict[str, Any]], r: Request, enforcer: Enforcer = Enforcer.WAYPOINT) -> Decision:
    return evaluate(applicable([compile_policy(p, enforcer) for p in pols], DEST), r)


# ---- properties --------------------------------------------------------------------------

@settings(max_examples=150, deadline=None)
@given(st.lists(policies(), max_size=14), requests())
def test_engine_agrees_with_the_reference_interpreter(pols: list[dict[str, Any]], r: Request
                                                      ) -> None:
    d = run(pols, r)
    assert d.allowed is ref_allowed(pols, r), d.reason
    if d.policy is not None and d.rule is not None:  # the named rule really matches
        (p,) = [p for p in pols if f"{p['metadata']['namespace']}/{p['metadata']['name']}"
                == d.policy]
        assert ref_rule(p["spec"]["rules"][d.rule], r, p["metadata"]["namespace"])
        assert d.action is Action(p["spec"]["action"])


@settings(max_examples=100, deadline=None)
@given(st.lists(policies(), max_size=6), st.lists(indexable(), min_size=8, max_size=24), requests())
def test_indexed_rules_agree_with_the_reference(pols: list[dict[str, Any]],
                                                many: list[dict[str, Any]], r: Request) -> None:
    both = [*pols, *many]
    d = run(both, r)
    assert d.allowed is ref_allowed(both, r), d.reason
    assert run(many, r, Enforcer.ZTUNNEL).allowed is ref_allowed(many, r)  # L4 only


@settings(max_examples=100, deadline=None)
@given(st.lists(policies(l4=True), max_size=14), requests(http=False))
def test_ztunnel_agrees_with_the_reference_on_l4_policies(pols: list[dict[str, Any]], r: Request
                                                          ) -> None:
    assert run(pols, r, Enforcer.ZTUNNEL).allowed is ref_allowed(pols, r)


@settings(max_examples=60, deadline=None)
@given(st.lists(policies(), max_size=8), policies(("DENY",)), requests())
def test_a_deny_policy_never_allows_more(pols: list[dict[str, Any]], deny: dict[str, Any],
                                         r: Request) -> None:
    for enforcer in Enforcer:
        if run([*pols, deny], r, enforcer).allowed:
            assert run(pols, r, enforcer).allowed


@settings(max_examples=60, deadline=None)
@given(st.lists(policies(), max_size=8), policies(("ALLOW",)), requests())
def test_an_allow_policy_never_denies_more_once_allow_policies_apply(
        pols: list[dict[str, Any]], allow: dict[str, Any], r: Request) -> None:
    always_applies = {"metadata": {"name": "base", "namespace": "ns2"}, "spec": {}}
    before = [*pols, always_applies]
    for enforcer in Enforcer:
        if run(before, r, enforcer).allowed:
            assert run([*before, allow], r, enforcer).allowed


@settings(max_examples=60, deadline=None)
@given(st.lists(policies(), max_size=8), st.lists(policies(("AUDIT", "ALLOW", "DENY")),
                                                  min_size=1, max_size=3), requests())
def test_audit_and_dry_run_never_change_the_outcome(pols: list[dict[str, Any]],
                                                    extra: list[dict[str, Any]], r: Request) -> None:
    shadow = []
    for p in extra:
        p = {**p, "metadata": {**p["metadata"]}}
        if p["spec"]["action"] != "AUDIT":
            p["metadata"]["annotations"] = {"istio.io/dry-run": "true"}
        shadow.append(p)
    for enforcer in Enforcer:
        assert run([*pols, *shadow], r, enforcer).allowed is run(pols, r, enforcer).allowed


@settings(max_examples=50, deadline=None)
@given(st.lists(policies(), max_size=10), requests(), st.randoms(use_true_random=False))
def test_order_never_changes_the_outcome(pols: list[dict[str, Any]], r: Request, rnd: Any) -> None:
    shuffled = list(pols)
    rnd.shuffle(shuffled)
    for enforcer in Enforcer:
        assert run(shuffled, r, enforcer) == run(pols, r, enforcer)


@settings(max_examples=80, deadline=None)
@given(st.lists(policies(("ALLOW",)), max_size=10), requests())
def test_ztunnel_fails_closed(pols: list[dict[str, Any]], r: Request) -> None:
    """Dropping rules only removes ways to be allowed."""
    if run(pols, r, Enforcer.ZTUNNEL).allowed:
        assert run(pols, r, Enforcer.WAYPOINT).allowed
    if run(pols, r, Enforcer.WAYPOINT_TCP).allowed:
        assert run(pols, r, Enforcer.WAYPOINT).allowed


@settings(max_examples=50, deadline=None)
@given(st.lists(policies(("ALLOW", "DENY", "AUDIT")), max_size=10), requests())
def test_decisions_are_consistent(pols: list[dict[str, Any]], r: Request) -> None:
    for enforcer in Enforcer:
        d = run(pols, r, enforcer)
        assert d.reason.startswith("allowed" if d.allowed else "denied")
        if d.policy is not None:
            assert d.action is (Action.ALLOW if d.allowed else Action.DENY)
            assert f"{d.policy} rule {d.rule}" in d.reason
