"""Scope and evaluation: which policies apply, CUSTOM → DENY → ALLOW, and the reasons.

The demo rows replay the conference walk-through (examples/istio-ambient-demo, the
files applied unchanged, validated by zeromesh.api first) with the outcomes its
scenario describes.
"""

from __future__ import annotations

from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest

from zeromesh.api import load_path, validate_all
from zeromesh.policy import (
    Action,
    CompiledPolicy,
    Decision,
    Enforcer,
    Request,
    Target,
    Workload,
    applicable,
    compile_policy,
    evaluate,
)

DEMO = Path(__file__).resolve().parents[3] / "examples" / "istio-ambient-demo"
SLEEP = "cluster.local/ns/ns1/sa/sleep"
Z, W = Enforcer.ZTUNNEL, Enforcer.WAYPOINT
ECHO = Workload("ns2", {"app": "echo"}, "echo")
GW = "gateway.networking.k8s.io"


def policy(name: str, ns: str, spec: dict[str, Any] | None = None, created: str = "",
           annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns}
    if created:
        meta["creationTimestamp"] = created
    if annotations:
        meta["annotations"] = annotations
    return {"metadata": meta, "spec": spec or {}}


SRC, DST = ip_address("10.0.1.5"), ip_address("10.0.2.7")


def request(principal: str | None = SLEEP, method: str | None = "GET", port: int = 8080,
            path: str = "/") -> Request:
    return Request(principal, SRC, DST, port, method=method, path=path)


def compiled(objs: list[dict[str, Any]], enforcer: Enforcer = Z,
             root: str = "istio-system") -> list[CompiledPolicy]:
    return [compile_policy(o, enforcer, root_namespace=root) for o in objs]


def decide(objs: list[dict[str, Any]], req: Request | None = None, workload: Workload | None = ECHO,
           enforcer: Enforcer = Z, **kw: Any) -> Decision:
    return evaluate(applicable(compiled(objs, enforcer), workload, **kw), req or request())


ALLOW_ALL: dict[str, Any] = {"rules": [{}]}
DENY_ALL = {"action": "DENY", "rules": [{}]}
ALLOW_SLEEP = {"rules": [{"from": [{"source": {"principals": [SLEEP]}}]}]}


# ---- evaluation -----------------------------------------------------------------------

@pytest.mark.parametrize(("specs", "req", "allowed", "reason"), [
    ([], request(), True, "allowed: no ALLOW policy applies"),
    ([{}], request(), False, "denied: no ALLOW policy matched (checked ns2/p0)"),
    ([{}], request(None), False, "denied: no ALLOW policy matched (checked ns2/p0)"),
    ([ALLOW_ALL], request(), True, "allowed by ALLOW policy ns2/p0 rule 0"),
    ([ALLOW_ALL], request(None), True, "allowed by ALLOW policy ns2/p0 rule 0"),
    ([{}, ALLOW_ALL], request(), True, "allowed by ALLOW policy ns2/p1 rule 0"),
    ([DENY_ALL], request(), False, "denied by DENY policy ns2/p0 rule 0"),
    ([DENY_ALL, ALLOW_ALL], request(), False, "denied by DENY policy ns2/p0 rule 0"),
    ([ALLOW_SLEEP, DENY_ALL], request(), False, "denied by DENY policy ns2/p1 rule 0"),
    ([{"action": "DENY"}], request(), True, "allowed: no ALLOW policy applies"),
    ([{"action": "DENY", "rules": []}, ALLOW_SLEEP], request(), True,
     "allowed by ALLOW policy ns2/p1 rule 0"),
    ([ALLOW_SLEEP], request("cluster.local/ns/ns1/sa/notsleep"), False,
     "denied: no ALLOW policy matched (checked ns2/p0)"),
    ([ALLOW_SLEEP, {}], request("cluster.local/ns/ns1/sa/notsleep"), False,
     "denied: no ALLOW policy matched (checked ns2/p0, ns2/p1)"),
    ([{"action": "DENY", "rules": [{"from": [{"source": {"namespaces": ["ns1"]}}]}]}, ALLOW_ALL],
     request(), False, "denied by DENY policy ns2/p0 rule 0"),
    ([{"action": "DENY", "rules": [{"from": [{"source": {"notNamespaces": ["ns1"]}}]}]}, ALLOW_ALL],
     request(), True, "allowed by ALLOW policy ns2/p1 rule 0"),
    ([{"action": "DENY", "rules": [{"from": [{"source": {"notPrincipals": ["*"]}}]}]}],
     request(None), False, "denied by DENY policy ns2/p0 rule 0"),
    ([{"action": "DENY", "rules": [{"to": [{"operation": {"ports": ["22"]}}]},
                                   {"to": [{"operation": {"ports": ["8080"]}}]}]}],
     request(), False, "denied by DENY policy ns2/p0 rule 1"),
])
def test_evaluation(specs: list[dict[str, Any]], req: Request, allowed: bool, reason: str) -> None:
    d = decide([policy(f"p{i}", "ns2", s) for i, s in enumerate(specs)], req)
    assert (d.allowed, d.reason) == (allowed, reason)


def test_decision_names_policy_rule_and_action() -> None:
    spec = {"rules": [{"from": [{"source": {"namespaces": ["x"]}}]},
                      {"from": [{"source": {"namespaces": ["ns1"]}}]}]}
    d = decide([policy("allow-ns1", "ns2", spec)])
    assert d == Decision(True, "ns2/allow-ns1", 1, Action.ALLOW,
                         "allowed by ALLOW policy ns2/allow-ns1 rule 1")
    d = decide([policy("deny", "ns2", DENY_ALL)])
    assert (d.policy, d.rule, d.action) == ("ns2/deny", 0, Action.DENY)
    d = decide([policy("none", "ns2", {})])
    assert (d.policy, d.rule, d.action, d.audited, d.dry_run) == (None, None, None, (), ())


def test_no_match_reason_lists_at_most_five_policies() -> None:
    d = decide([policy(f"p{i}", "ns2", {}) for i in range(8)])
    assert d.reason == ("denied: no ALLOW policy matched (checked ns2/p0, ns2/p1, ns2/p2, ns2/p3, "
                        "ns2/p4 and 3 more)")


def test_mesh_wide_deny_is_reported_first_then_oldest() -> None:
    objs = [policy("b-new", "ns2", DENY_ALL, created="2024-02-01T00:00:00Z"),
            policy("a-old", "ns2", DENY_ALL, created="2024-01-01T00:00:00Z"),
            policy("mesh", "istio-system", DENY_ALL, created="2025-01-01T00:00:00Z")]
    assert decide(objs).policy == "istio-system/mesh"
    assert decide(objs[:2]).policy == "ns2/a-old"


def test_evaluate_takes_plain_compiled_policies() -> None:
    pols = compiled([policy("deny", "ns2", DENY_ALL), policy("audit", "ns2",
                                                              {"action": "AUDIT", "rules": [{}]})])
    assert evaluate(pols, request()).reason == "denied by DENY policy ns2/deny rule 0"


# ---- scope -------------------------------------------------------------------------------

@pytest.mark.parametrize(("obj", "workload", "applies"), [
    (policy("mesh", "istio-system"), ECHO, True),
    (policy("mesh", "istio-system"), Workload("other"), True),
    (policy("ns", "ns2"), ECHO, True),
    (policy("ns", "ns1"), ECHO, False),
    (policy("sel", "ns2", {"selector": {"matchLabels": {"app": "echo"}}}), ECHO, True),
    (policy("sel", "ns2", {"selector": {"matchLabels": {"app": "sleep"}}}), ECHO, False),
    (policy("sel", "ns2", {"selector": {"matchLabels": {"app": "echo", "v": "1"}}}), ECHO, False),
    (policy("sel", "ns1", {"selector": {"matchLabels": {"app": "echo"}}}), ECHO, False),
    (policy("sel", "istio-system", {"selector": {"matchLabels": {"app": "echo"}}}), ECHO, True),
    (policy("sel", "istio-system", {"selector": {"matchLabels": {"app": "x"}}}), ECHO, False),
    (policy("sel", "ns2", {"selector": {}}), ECHO, True),
])
def test_scope(obj: dict[str, Any], workload: Workload, applies: bool) -> None:
    ps = applicable(compiled([obj]), workload)
    assert (len(ps.policies) == 1) is applies
    assert decide([obj], workload=workload).allowed is not applies  # each is an allow-nothing


def test_root_namespace_is_configurable() -> None:
    obj = policy("mesh", "istio-config")
    assert compiled([obj], root="istio-config")[0].scope.kind.value == "global"
    assert len(applicable(compiled([obj], root="istio-config"), ECHO,
                          root_namespace="istio-config").policies) == 1
    assert applicable(compiled([obj]), ECHO).policies == ()


WAYPOINT_GW = Target(GW, "Gateway", "waypoint", "ns2")
ECHO_SVC = Target("", "Service", "echo", "ns2")
CLASS = Target(GW, "GatewayClass", "istio-waypoint")


@pytest.mark.parametrize(("obj", "targets", "applies"), [
    (policy("gw", "ns2", {"targetRefs": [{"group": GW, "kind": "Gateway", "name": "waypoint"}]}),
     [WAYPOINT_GW], True),
    (policy("gw", "ns2", {"targetRef": {"group": GW, "kind": "Gateway", "name": "waypoint"}}),
     [WAYPOINT_GW], True),
    (policy("gw", "ns1", {"targetRefs": [{"group": GW, "kind": "Gateway", "name": "waypoint"}]}),
     [WAYPOINT_GW], False),
    (policy("svc", "ns2", {"targetRefs": [{"kind": "Service", "name": "echo"}]}),
     [WAYPOINT_GW, ECHO_SVC], True),
    (policy("svc", "ns2", {"targetRefs": [{"kind": "Service", "group": "", "name": "other"},
                                          {"kind": "Service", "group": "", "name": "echo"}]}),
     [ECHO_SVC], True),
    (policy("svc", "ns2", {"targetRefs": [{"kind": "Service", "name": "echo"}]}),
     [WAYPOINT_GW], False),
    (policy("all", "istio-system", {"targetRefs": [{"group": GW, "kind": "GatewayClass",
                                                    "name": "istio-waypoint"}]}),
     [WAYPOINT_GW, CLASS], True),
    (policy("all", "ns2", {"targetRefs": [{"group": GW, "kind": "GatewayClass",
                                           "name": "istio-waypoint"}]}), [CLASS], False),
    (policy("ns", "ns2"), [WAYPOINT_GW, ECHO_SVC], False),
    (policy("mesh", "istio-system"), [WAYPOINT_GW, CLASS], False),
])
def test_waypoint_target_refs(obj: dict[str, Any], targets: list[Target], applies: bool) -> None:
    ps = applicable(compiled([obj], W), None, targets=targets)
    assert (len(ps.policies) == 1) is applies


def test_waypoint_with_its_own_pod_gets_selector_and_namespace_policies_too() -> None:
    objs = [policy("ns", "ns2"), policy("gw", "ns2", {"targetRefs": [
        {"group": GW, "kind": "Gateway", "name": "waypoint"}]})]
    pod = Workload("ns2", {"istio.io/gateway-name": "waypoint"})
    assert [p.name for p in applicable(compiled(objs, W), pod, targets=[WAYPOINT_GW]).policies] \
        == ["ns", "gw"]


# ---- AUDIT, dry-run and CUSTOM at a waypoint ----------------------------------------------

AUDIT_POST = {"action": "AUDIT", "rules": [{"to": [{"operation": {"methods": ["POST"]}}]}]}


def test_audit_is_reported_and_never_changes_the_outcome() -> None:
    objs = [policy("audit", "ns2", AUDIT_POST), policy("audit2", "ns2", {"action": "AUDIT",
                                                                         "rules": [{}]}),
            policy("deny", "ns2", DENY_ALL)]
    d = decide(objs, request(method="POST"), enforcer=W)
    assert (d.allowed, d.reason, d.audited) == (False, "denied by DENY policy ns2/deny rule 0",
                                                ("ns2/audit", "ns2/audit2"))
    d = decide(objs[:2], request(method="GET"), enforcer=W)
    assert (d.allowed, d.audited) == (True, ("ns2/audit2",))


def test_dry_run_policies_are_reported_not_enforced() -> None:
    dry = {"istio.io/dry-run": "true"}
    objs = [policy("dry-deny", "ns2", DENY_ALL, annotations=dry),
            policy("dry-allow", "ns2", {}, annotations=dry)]
    d = decide(objs)
    assert (d.allowed, d.reason, d.dry_run) == (True, "allowed: no ALLOW policy applies",
                                                ("ns2/dry-deny",))
    assert compiled(objs)[0].notes[0].startswith("dry-run (istio.io/dry-run): evaluated")


CUSTOM = {"action": "CUSTOM", "provider": {"name": "ext-authz"},
          "rules": [{"to": [{"operation": {"paths": ["/admin*"]}}]}]}


def test_custom_without_an_authorizer_denies_what_it_matches() -> None:
    req = request(path="/admin/x")
    d = decide([policy("ext", "ns2", CUSTOM)], req, enforcer=W)
    assert d == Decision(False, "ns2/ext", 0, Action.CUSTOM,
                         "denied by CUSTOM policy ns2/ext rule 0: no authorizer for provider "
                         "'ext-authz' (a CUSTOM policy denies what it matches when its provider "
                         "cannot be asked)")
    assert decide([policy("ext", "ns2", CUSTOM)], request(), enforcer=W).allowed


def test_custom_asks_the_provider_once_then_deny_and_allow_run() -> None:
    asked: list[tuple[str, str | None]] = []

    def authorize(provider: str, r: Request) -> bool:
        asked.append((provider, r.path))
        return r.method == "GET"

    objs = [policy("ext", "ns2", CUSTOM), policy("ext2", "ns2", CUSTOM),
            policy("allow", "ns2", ALLOW_SLEEP)]
    ps = applicable(compiled(objs, W), ECHO)
    get = request(path="/admin")
    assert evaluate(ps, get, authorize=authorize).reason == "allowed by ALLOW policy ns2/allow rule 0"
    assert asked == [("ext-authz", "/admin")]
    post = request(None, "POST", path="/admin")
    assert evaluate(ps, post, authorize=authorize).reason == (
        "denied by CUSTOM policy ns2/ext rule 0: provider 'ext-authz' denied the request")
    asked.clear()
    assert not evaluate(ps, request(None), authorize=authorize).allowed  # no ALLOW match
    assert asked == []  # the CUSTOM rules did not match: the provider is not asked


# ---- the conference demo, files unchanged ---------------------------------------------------

def demo(*files: str) -> list[dict[str, Any]]:
    return [v.obj for f in files for v in validate_all(load_path(str(DEMO / f)))]


SLEEP1 = "cluster.local/ns/ns1/sa/sleep-service-account-ns1"
NOTSLEEP1 = "cluster.local/ns/ns1/sa/notsleep-service-account-ns1"
SLEEP2 = "cluster.local/ns/ns2/sa/sleep-service-account-ns2"
INGRESS = "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"
ECHO1 = Workload("ns1", {"app": "echoserver-app-ns1"}, "echo-service-account-ns1")
ECHO2 = Workload("ns2", {"app": "echoserver-app-ns2"}, "echo-service-account-ns2")
WAYPOINT2 = Workload("ns2", {"istio.io/gateway-name": "echo-service-account-ns2-gw"},
                     "echo-service-account-ns2")


@pytest.mark.parametrize(("step", "files", "dest", "caller", "method", "allowed", "reason"), [
    ("2", [], ECHO2, SLEEP1, None, True, "allowed: no ALLOW policy applies"),
    ("3", ["deny-all-l4.yaml"], ECHO2, SLEEP1, None, False,
     "denied: no ALLOW policy matched (checked ns2/deny-all)"),
    ("4", ["deny-all-l4.yaml", "allow-comms-echo-ns2.yaml"], ECHO2, SLEEP1, None, True,
     "allowed by ALLOW policy ns2/allow-inbound-echo-ns2 rule 0"),
    ("4 other client", ["deny-all-l4.yaml", "allow-comms-echo-ns2.yaml"], ECHO2, NOTSLEEP1, None,
     False, "denied: no ALLOW policy matched (checked ns2/deny-all, ns2/allow-inbound-echo-ns2)"),
    ("4 reverse", ["deny-all-l4.yaml", "allow-comms-echo-ns2.yaml"], ECHO1, SLEEP2, None, False,
     "denied: no ALLOW policy matched (checked ns1/deny-all)"),
    ("4 plaintext", ["deny-all-l4.yaml", "allow-comms-echo-ns2.yaml"], ECHO2, None, None, False,
     "denied: no ALLOW policy matched (checked ns2/deny-all, ns2/allow-inbound-echo-ns2)"),
    ("5", ["deny-all-l4.yaml", "allow-comms-echo-ns2.yaml"], ECHO1, INGRESS, None, False,
     "denied: no ALLOW policy matched (checked ns1/deny-all)"),
    ("6", ["deny-all-l4.yaml", "allow-comms-echo-ns2.yaml", "allow-comms-echo-ns1.yaml"], ECHO1,
     INGRESS, None, True, "allowed by ALLOW policy ns1/allow-inbound-echo-ns1 rule 0"),
])
def test_demo_at_the_ztunnel(step: str, files: list[str], dest: Workload, caller: str | None,
                             method: str | None, allowed: bool, reason: str) -> None:
    d = decide(demo(*files), request(caller, method, 80), dest, Z)
    assert (d.allowed, d.reason) == (allowed, reason)


STEP7 = ["deny-all-l4.yaml", "allow-comms-echo-ns2.yaml", "allow-comms-echo-ns1.yaml",
         "allow-get-to-echo-ns2.yaml"]


@pytest.mark.parametrize(("method", "caller", "allowed", "reason"), [
    ("GET", SLEEP1, True, "allowed by ALLOW policy ns2/allow-get-to-echo-ns2 rule 0"),
    ("POST", SLEEP1, False,
     "denied: no ALLOW policy matched (checked ns2/deny-all, ns2/allow-get-to-echo-ns2)"),
    ("GET", NOTSLEEP1, False,
     "denied: no ALLOW policy matched (checked ns2/deny-all, ns2/allow-get-to-echo-ns2)"),
])
def test_demo_step_7_at_the_waypoint(method: str, caller: str, allowed: bool, reason: str) -> None:
    d = decide(demo(*STEP7), request(caller, method, 80), WAYPOINT2, W)
    assert (d.allowed, d.reason) == (allowed, reason)


def test_demo_step_7_policy_at_the_ztunnel_is_explained() -> None:
    (c,) = compiled(demo("allow-get-to-echo-ns2.yaml"))
    assert c.notes == ("rule 0 dropped: uses HTTP attributes (methods) that the ztunnel cannot "
                       "see; an ALLOW rule that cannot be checked never matches",)
    # it selects the waypoint pod only: the echo pod's own policies are unchanged
    d = decide(demo(*STEP7), request(SLEEP1, None, 80), ECHO2, Z)
    assert d.reason == "allowed by ALLOW policy ns2/allow-inbound-echo-ns2 rule 0"
