"""What each enforcer can check, and what happens to the rest (istiod ambient conversion).

ALLOW rules that need an unseeable attribute are dropped whole (fail closed); DENY
rules lose the unseeable fields, and at the ztunnel an item left empty matches nothing,
so the rule may become a no-op; a waypoint on TCP treats removed fields as matching.
The notes and status strings are part of the interface (status, logs, authz check).
"""

from __future__ import annotations

from ipaddress import ip_address
from typing import Any

import pytest

from zeromesh.policy import (
    Action,
    CompiledPolicy,
    Enforcer,
    Request,
    ScopeKind,
    Workload,
    applicable,
    compile_policy,
    evaluate,
    status_message,
)

SLEEP = "cluster.local/ns/ns1/sa/sleep"
DEST = Workload("ns2", {"app": "echo"})
Z, W, T = Enforcer.ZTUNNEL, Enforcer.WAYPOINT, Enforcer.WAYPOINT_TCP


def policy(spec: dict[str, Any], name: str = "p", ns: str = "ns2",
           annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns}
    if annotations:
        meta["annotations"] = annotations
    return {"metadata": meta, "spec": spec}


def request(method: str | None = "GET", port: int = 8080, principal: str | None = SLEEP,
            **http: Any) -> Request:
    return Request(principal, ip_address("10.0.1.5"), ip_address("10.0.2.7"), port, method=method,
                   path="/info", **http)


def decide(specs: list[dict[str, Any]], req: Request, enforcer: Enforcer) -> tuple[bool, str]:
    ps = applicable([compile_policy(policy(s, f"p{i}"), enforcer) for i, s in enumerate(specs)],
                    DEST)
    d = evaluate(ps, req)
    return d.allowed, d.reason


GET_ONLY = {"rules": [{"from": [{"source": {"principals": [SLEEP]}}],
                       "to": [{"operation": {"methods": ["GET"]}}]}]}
DENY_POST = {"action": "DENY", "rules": [{"to": [{"operation": {"methods": ["POST"]}}]}]}
DENY_POST_8080 = {"action": "DENY",
                  "rules": [{"to": [{"operation": {"methods": ["POST"], "ports": ["8080"]}}]}]}


# ---- ALLOW: a rule that needs HTTP is dropped whole ----------------------------------

def test_allow_rule_with_methods_is_dropped_at_the_ztunnel() -> None:
    c = compile_policy(policy(GET_ONLY), Z)
    assert c.rules == ()
    assert c.notes == ("rule 0 dropped: uses HTTP attributes (methods) that the ztunnel cannot "
                       "see; an ALLOW rule that cannot be checked never matches",)
    assert c.status == ("ztunnel does not support HTTP attributes (found: methods); HTTP rules "
                        "need a waypoint proxy. The rules of this ALLOW policy that use them are "
                        "left out, which is more restrictive than written.")
    # the policy still applies, and now allows nothing: fail closed
    assert decide([GET_ONLY], request(), Z) == (False, "denied: no ALLOW policy matched "
                                                       "(checked ns2/p0)")
    assert decide([GET_ONLY], request(), W) == (True, "allowed by ALLOW policy ns2/p0 rule 0")
    assert decide([GET_ONLY], request("POST"), W)[0] is False


HTTP_ONLY: list[tuple[str, dict[str, Any]]] = [
    ("hosts", {"to": [{"operation": {"hosts": ["a"]}}]}),
    ("notHosts", {"to": [{"operation": {"notHosts": ["a"]}}]}),
    ("methods", {"to": [{"operation": {"methods": ["GET"]}}]}),
    ("notMethods", {"to": [{"operation": {"notMethods": ["X"]}}]}),
    ("paths", {"to": [{"operation": {"paths": ["/"]}}]}),
    ("notPaths", {"to": [{"operation": {"notPaths": ["/x"]}}]}),
    ("requestPrincipals", {"from": [{"source": {"requestPrincipals": ["*"]}}]}),
    ("notRequestPrincipals", {"from": [{"source": {"notRequestPrincipals": ["*"]}}]}),
    ("remoteIpBlocks", {"from": [{"source": {"remoteIpBlocks": ["10.0.0.0/8"]}}]}),
    ("notRemoteIpBlocks", {"from": [{"source": {"notRemoteIpBlocks": ["1.2.3.4"]}}]}),
    ("request.headers[x]", {"when": [{"key": "request.headers[x]", "values": ["a"]}]}),
    ("request.auth.claims[iss]", {"when": [{"key": "request.auth.claims[iss]", "values": ["a"]}]}),
    ("request.auth.principal", {"when": [{"key": "request.auth.principal", "values": ["a"]}]}),
    ("remote.ip", {"when": [{"key": "remote.ip", "values": ["10.0.0.0/8"]}]}),
    ("connection.sni", {"when": [{"key": "connection.sni", "values": ["a"]}]}),
    ("source.serviceAccount", {"when": [{"key": "source.serviceAccount", "values": ["ns1/x"]}]}),
]


@pytest.mark.parametrize(("found", "source_or_op"), HTTP_ONLY, ids=[n for n, _ in HTTP_ONLY])
def test_every_http_attribute_drops_an_allow_rule_at_the_ztunnel(found: str,
                                                                  source_or_op: dict[str, Any]
                                                                  ) -> None:
    rule = {"from": [{"source": {"principals": [SLEEP]}}], **source_or_op}
    if "from" in source_or_op:  # merge into the same source: still dropped whole
        rule = {"from": [{"source": {"principals": [SLEEP],
                                     **source_or_op["from"][0]["source"]}}]}
    c = compile_policy(policy({"rules": [rule]}), Z)
    assert c.rules == ()
    assert c.notes == (f"rule 0 dropped: uses HTTP attributes ({found}) that the ztunnel cannot "
                       "see; an ALLOW rule that cannot be checked never matches",)
    assert f"(found: {found})" in c.status


@pytest.mark.parametrize("key", ["source.ip", "source.namespace", "source.principal",
                                 "destination.ip", "destination.port"])
def test_l4_when_keys_are_kept(key: str) -> None:
    value = {"source.ip": "10.0.1.5", "source.namespace": "ns1", "source.principal": SLEEP,
             "destination.ip": "10.0.2.7", "destination.port": "8080"}[key]
    spec = {"rules": [{"when": [{"key": key, "values": [value]}]}]}
    c = compile_policy(policy(spec), Z)
    assert len(c.rules) == 1 and c.notes == () and c.status == ""
    assert decide([spec], request(method=None), Z)[0] is True


def test_other_rules_of_the_policy_keep_their_index() -> None:
    spec = {"rules": [{"to": [{"operation": {"paths": ["/admin"]}}]},
                      {"from": [{"source": {"namespaces": ["ns1"]}}]}]}
    c = compile_policy(policy(spec), Z)
    assert [r.index for r in c.rules] == [1]
    assert decide([spec], request(), Z) == (True, "allowed by ALLOW policy ns2/p0 rule 1")


def test_a_dropped_rule_does_not_hide_another_allow_policy() -> None:
    other = {"rules": [{"from": [{"source": {"principals": [SLEEP]}}]}]}
    assert decide([GET_ONLY, other], request(), Z) == (True, "allowed by ALLOW policy ns2/p1 "
                                                             "rule 0")


# ---- DENY: HTTP fields removed, empty items match nothing at the ztunnel -----------------

def test_deny_with_only_methods_is_a_no_op_at_the_ztunnel() -> None:
    c = compile_policy(policy(DENY_POST), Z)
    assert c.rules == ()
    assert c.notes == ("rule 0: HTTP fields methods removed at L4; to[0] left empty and matches "
                       "nothing, so this DENY rule is a no-op",)
    assert c.status == ("ztunnel does not support HTTP attributes (found: methods); HTTP rules "
                        "need a waypoint proxy. Without them this DENY policy has no rule the "
                        "ztunnel can enforce and has no effect; attach it to a waypoint with "
                        "targetRefs.")
    assert decide([DENY_POST], request("POST"), Z) == (True, "allowed: no ALLOW policy applies")
    assert decide([DENY_POST], request("POST"), W) == (False, "denied by DENY policy ns2/p0 "
                                                              "rule 0")
    assert decide([DENY_POST], request("GET"), W)[0] is True


def test_deny_with_methods_and_ports_denies_the_whole_port_at_the_ztunnel() -> None:
    c = compile_policy(policy(DENY_POST_8080), Z)
    assert c.notes == ("rule 0: HTTP fields methods removed at L4; to[0] keeps only its L4 "
                       "fields, the rest of this DENY rule is enforced",)
    assert c.status.endswith("This DENY policy is enforced without its HTTP parts.")
    assert decide([DENY_POST_8080], request("GET"), Z)[0] is False  # more restrictive
    assert decide([DENY_POST_8080], request("GET", port=9090), Z)[0] is True
    assert decide([DENY_POST_8080], request("GET"), W)[0] is True
    assert decide([DENY_POST_8080], request("POST"), W)[0] is False


def test_deny_with_an_emptied_operation_among_others_narrows() -> None:
    spec = {"action": "DENY", "rules": [{"to": [{"operation": {"methods": ["POST"]}},
                                                {"operation": {"ports": ["22"]}}]}]}
    c = compile_policy(policy(spec), Z)
    assert c.notes == ("rule 0: HTTP fields methods removed at L4; to[0] left empty and matches "
                       "nothing, the rest of this DENY rule is enforced",)
    assert decide([spec], request("POST"), Z)[0] is True
    assert decide([spec], request(None, port=22), Z)[0] is False


@pytest.mark.parametrize(("rule", "label"), [
    ({"from": [{"source": {"namespaces": ["ns1"]}}],
      "when": [{"key": "request.headers[x-token]", "values": ["bad"]}]}, "when[0]"),
    ({"from": [{"source": {"requestPrincipals": ["*"]}}]}, "from[0]"),
    ({"from": [{"source": {"notRequestPrincipals": ["*"]}}]}, "from[0]"),
    ({"from": [{"source": {"namespaces": ["ns1"]}}], "to": [{"operation": {"paths": ["/a"]}}]},
     "to[0]"),
])
def test_deny_rules_left_with_an_empty_clause_are_no_ops(rule: dict[str, Any], label: str) -> None:
    spec = {"action": "DENY", "rules": [rule]}
    c = compile_policy(policy(spec), Z)
    assert c.rules == ()
    assert f"{label} left empty and matches nothing, so this DENY rule is a no-op" in c.notes[0]
    assert decide([spec], request(), Z)[0] is True


def test_deny_source_keeps_its_l4_fields() -> None:
    spec = {"action": "DENY", "rules": [{"from": [{"source": {"namespaces": ["ns1"],
                                                              "remoteIpBlocks": ["1.2.3.4"]}}]}]}
    c = compile_policy(policy(spec), Z)
    assert c.notes == ("rule 0: HTTP fields remoteIpBlocks removed at L4; from[0] keeps only its "
                       "L4 fields, the rest of this DENY rule is enforced",)
    assert decide([spec], request(), Z)[0] is False  # every ns1 caller, whatever its address
    assert decide([spec], request(principal="cluster.local/ns/ns3/sa/x"), Z)[0] is True


def test_require_jwt_deny_works_at_the_waypoint() -> None:
    spec = {"action": "DENY", "rules": [{"from": [{"source": {"notRequestPrincipals": ["*"]}}]}]}
    assert decide([spec], request(), W) == (False, "denied by DENY policy ns2/p0 rule 0")
    assert decide([spec], request(request_principal="iss/sub"), W)[0] is True


# ---- a waypoint on TCP traffic: Envoy's TCP filter --------------------------------------

def test_waypoint_tcp_drops_http_allow_rules_and_widens_deny_rules() -> None:
    assert compile_policy(policy(GET_ONLY), T).rules == ()
    c = compile_policy(policy(DENY_POST), T)
    assert c.notes == ("rule 0: HTTP fields methods removed on TCP traffic and treated as "
                       "matching, so this DENY rule matches more than written",)
    assert decide([DENY_POST], request(None), T) == (False, "denied by DENY policy ns2/p0 rule 0")
    remote = {"rules": [{"from": [{"source": {"remoteIpBlocks": ["10.0.1.0/24"]}}]}]}
    assert decide([remote], request(None), T)[0] is True  # the remote address is seen on TCP
    assert decide([remote], request(None), Z)[0] is False


# ---- policies the ztunnel does not enforce at all ------------------------------------

@pytest.mark.parametrize("action", ["AUDIT", "CUSTOM"])
def test_audit_and_custom_are_not_enforced_by_the_ztunnel(action: str) -> None:
    spec: dict[str, Any] = {"action": action, "rules": [{}]}
    if action == "CUSTOM":
        spec["provider"] = {"name": "ext-authz"}
    c = compile_policy(policy(spec), Z)
    assert (c.enforced, c.action, c.rules) == (False, Action(action), ())
    assert c.notes == (f"not enforced: the ztunnel does not enforce the {action} action",)
    assert c.status == status_message(c) == f"ztunnel does not support the {action} action"
    assert applicable([c], DEST).policies == ()
    assert decide([spec], request(), Z) == (True, "allowed: no ALLOW policy applies")
    assert compile_policy(policy(spec), W).enforced


@pytest.mark.parametrize("spec", [
    {"targetRefs": [{"kind": "Service", "group": "", "name": "echo"}]},
    {"targetRef": {"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "wp"}},
])
def test_target_refs_are_ignored_by_the_ztunnel(spec: dict[str, Any]) -> None:
    c = compile_policy(policy(spec), Z)
    assert c.scope.kind is ScopeKind.TARGET_REFS and not c.enforced
    assert c.notes == ("not enforced by the ztunnel: targetRefs policies are enforced by "
                       "waypoints",)
    assert c.status == ""  # istiod says nothing either: they are simply not sent
    assert decide([spec], request(), Z)[0] is True  # an allow-nothing, but not for the ztunnel


def test_status_message_joins_distinct_messages() -> None:
    a = compile_policy(policy(GET_ONLY), Z)
    b = compile_policy(policy({"action": "AUDIT", "rules": [{}]}), Z)
    clean = compile_policy(policy({"rules": [{}]}), Z)
    assert status_message(clean) == ""
    assert status_message(a, a, b, clean) == f"{a.status} {b.status}"
    assert compile_policy(policy(GET_ONLY), W).status == ""


def test_rules_and_notes_for_empty_policies() -> None:
    nothing = compile_policy(policy({}), Z)
    assert nothing.action is Action.ALLOW and nothing.rules == ()
    assert nothing.notes == ("no rules: this ALLOW policy matches nothing, so it denies every "
                             "request in its scope that no other ALLOW policy allows",)
    deny = compile_policy(policy({"action": "DENY"}), Z)
    assert deny.notes == ("no rules: a DENY policy without rules never matches",)


def test_compiled_policy_describes_its_checks() -> None:
    spec = {"rules": [{"from": [{"source": {"principals": [SLEEP], "notIpBlocks": ["1.2.3.4"]}}],
                       "when": [{"key": "destination.port", "notValues": ["22"]}]}]}
    c: CompiledPolicy = compile_policy(policy(spec), Z)
    (rule,) = c.rules
    assert [cl.name for cl in rule.clauses] == ["from", "when[0]"]
    checks = [(ch.name, ch.attribute, ch.values, ch.negated)
              for cl in rule.clauses for it in cl.items for ch in it.checks]
    assert checks == [("principals", "source.principal", (SLEEP,), False),
                      ("notIpBlocks", "source.ip", ("1.2.3.4",), True),
                      ("when destination.port", "destination.port", ("22",), True)]
    assert c.key == "ns2/p"
