"""Matching semantics, one row per rule of Istio's AuthorizationPolicy reference.

Each row is one ALLOW rule and one request, evaluated by a waypoint (which sees every
attribute): the request is allowed exactly when the rule matches it. The ztunnel
rows at the end check that the L4 fields mean the same thing there.
"""

from __future__ import annotations

from typing import Any

import pytest

from zeromesh.policy import Enforcer, Request, Workload, applicable, compile_policy, evaluate
from zeromesh.policy.match import StringMatch

SLEEP = "cluster.local/ns/ns1/sa/sleep"
DEST = Workload("ns2", {"app": "echo"})


def request(**changes: Any) -> Request:
    fields: dict[str, Any] = dict(source_principal=SLEEP, source_ip="10.0.1.5",
                                  destination_ip="10.0.2.7", destination_port=8080,
                                  method="GET", path="/info", host="echo.ns2.svc.cluster.local",
                                  headers={"x-user": "alice"})
    fields.update(changes)
    return Request(**fields)


def matches(rule: dict[str, Any], req: Request, enforcer: Enforcer = Enforcer.WAYPOINT) -> bool:
    pol = {"metadata": {"name": "p", "namespace": "ns2"}, "spec": {"rules": [rule]}}
    ps = applicable([compile_policy(pol, enforcer)], DEST)
    return evaluate(ps, req).allowed


def src(**fields: Any) -> dict[str, Any]:
    return {"from": [{"source": fields}]}


def op(**fields: Any) -> dict[str, Any]:
    return {"to": [{"operation": fields}]}


def when(key: str, values: list[str] | None = None, not_values: list[str] | None = None
         ) -> dict[str, Any]:
    cond: dict[str, Any] = {"key": key}
    if values is not None:
        cond["values"] = values
    if not_values is not None:
        cond["notValues"] = not_values
    return {"when": [cond]}


PLAIN = {"source_principal": None}
V6 = {"source_ip": "fd00:10::5", "destination_ip": "fd00:20::7"}

CASES: list[tuple[str, dict[str, Any], dict[str, Any], bool]] = [
    # ---- principals: exact, wildcards, spiffe:// prefix, plaintext ---------------
    ("principal exact", src(principals=[SLEEP]), {}, True),
    ("principal other", src(principals=["cluster.local/ns/ns1/sa/other"]), {}, False),
    ("principal with spiffe://", src(principals=["spiffe://" + SLEEP]), {}, True),
    ("request principal given with spiffe://", src(principals=[SLEEP]),
     {"source_principal": "spiffe://" + SLEEP}, True),
    ("principal presence", src(principals=["*"]), {}, True),
    ("principal presence, plaintext", src(principals=["*"]), PLAIN, False),
    ("principal prefix", src(principals=["cluster.local/ns/ns1/*"]), {}, True),
    ("principal prefix is literal", src(principals=["cluster.local/ns/ns*"]),
     {"source_principal": "cluster.local/ns/ns10/sa/x"}, True),
    ("principal prefix other ns", src(principals=["cluster.local/ns/ns2/*"]), {}, False),
    ("principal suffix", src(principals=["*/sa/sleep"]), {}, True),
    ("principal suffix other", src(principals=["*/sa/curl"]), {}, False),
    ("principal prefix includes the whole value", src(principals=[SLEEP + "*"]), {}, True),
    ("principal values are ORed", src(principals=["x", SLEEP]), {}, True),
    ("principal, plaintext", src(principals=[SLEEP]), PLAIN, False),
    ("notPrincipals excludes", src(notPrincipals=[SLEEP]), {}, False),
    ("notPrincipals other", src(notPrincipals=["cluster.local/ns/x/sa/y"]), {}, True),
    ("notPrincipals satisfied by plaintext", src(notPrincipals=[SLEEP]), PLAIN, True),
    ("notPrincipals * = require identity", src(notPrincipals=["*"]), {}, False),
    ("notPrincipals *, plaintext", src(notPrincipals=["*"]), PLAIN, True),
    # ---- namespaces ----------------------------------------------------------------
    ("namespace exact", src(namespaces=["ns1"]), {}, True),
    ("namespace other", src(namespaces=["ns2"]), {}, False),
    ("namespace prefix", src(namespaces=["ns*"]), {}, True),
    ("namespace suffix", src(namespaces=["*1"]), {}, True),
    ("namespace presence", src(namespaces=["*"]), {}, True),
    ("namespace, plaintext", src(namespaces=["*"]), PLAIN, False),
    ("notNamespaces", src(notNamespaces=["ns1"]), {}, False),
    ("notNamespaces other", src(notNamespaces=["ns3"]), {}, True),
    ("notNamespaces, plaintext", src(notNamespaces=["ns1"]), PLAIN, True),
    ("namespace from a non-workload principal", src(namespaces=["ns1"]),
     {"source_principal": "cluster.local/zeromesh/node/n1"}, False),
    # ---- serviceAccounts (ns/sa, or sa in the policy's namespace ns2) ----------------
    ("serviceAccount ns/sa", src(serviceAccounts=["ns1/sleep"]), {}, True),
    ("serviceAccount other ns", src(serviceAccounts=["ns3/sleep"]), {}, False),
    ("serviceAccount bare name is the policy's namespace", src(serviceAccounts=["sleep"]), {},
     False),
    ("serviceAccount bare name, same namespace", src(serviceAccounts=["sleep"]),
     {"source_principal": "cluster.local/ns/ns2/sa/sleep"}, True),
    ("serviceAccount any trust domain", src(serviceAccounts=["ns1/sleep"]),
     {"source_principal": "other.domain/ns/ns1/sa/sleep"}, True),
    ("serviceAccount, plaintext", src(serviceAccounts=["ns1/sleep"]), PLAIN, False),
    ("notServiceAccounts", src(notServiceAccounts=["ns1/sleep"]), {}, False),
    ("notServiceAccounts, plaintext", src(notServiceAccounts=["ns1/sleep"]), PLAIN, True),
    # ---- ipBlocks: plain IPs, CIDRs, IPv4 and IPv6 -----------------------------------
    ("ip exact", src(ipBlocks=["10.0.1.5"]), {}, True),
    ("ip other", src(ipBlocks=["10.0.1.6"]), {}, False),
    ("ip /32", src(ipBlocks=["10.0.1.5/32"]), {}, True),
    ("ip CIDR", src(ipBlocks=["10.0.1.0/24"]), {}, True),
    ("ip CIDR other", src(ipBlocks=["10.0.2.0/24"]), {}, False),
    ("ip CIDR with host bits", src(ipBlocks=["10.0.1.77/24"]), {}, True),
    ("ip /0", src(ipBlocks=["0.0.0.0/0"]), {}, True),
    ("ip list is ORed", src(ipBlocks=["192.168.0.0/16", "10.0.0.0/8"]), {}, True),
    ("ipv6 CIDR", src(ipBlocks=["fd00:10::/64"]), V6, True),
    ("ipv6 exact", src(ipBlocks=["fd00:10::5"]), V6, True),
    ("ipv6 other", src(ipBlocks=["fd00:11::/64"]), V6, False),
    ("ipv4 block, ipv6 source", src(ipBlocks=["0.0.0.0/0"]), V6, False),
    ("ipv6 block, ipv4 source", src(ipBlocks=["::/0"]), {}, False),
    ("mixed families", src(ipBlocks=["fd00::/8", "10.0.1.0/24"]), {}, True),
    ("ipv4-mapped source", src(ipBlocks=["10.0.1.5"]), {"source_ip": "::ffff:10.0.1.5"}, True),
    ("notIpBlocks", src(notIpBlocks=["10.0.0.0/8"]), {}, False),
    ("notIpBlocks other", src(notIpBlocks=["192.168.0.0/16"]), {}, True),
    ("ipBlocks and notIpBlocks", src(ipBlocks=["10.0.0.0/8"], notIpBlocks=["10.0.1.0/24"]), {},
     False),
    ("remoteIpBlocks defaults to the source ip", src(remoteIpBlocks=["10.0.1.5"]), {}, True),
    ("remoteIpBlocks uses the client address", src(remoteIpBlocks=["203.0.113.0/24"]),
     {"remote_ip": "203.0.113.9"}, True),
    ("notRemoteIpBlocks", src(notRemoteIpBlocks=["203.0.113.0/24"]),
     {"remote_ip": "203.0.113.9"}, False),
    # ---- requestPrincipals (JWT iss/sub) -------------------------------------------
    ("requestPrincipal exact", src(requestPrincipals=["issuer.example/alice"]),
     {"request_principal": "issuer.example/alice"}, True),
    ("requestPrincipal prefix", src(requestPrincipals=["issuer.example/*"]),
     {"request_principal": "issuer.example/alice"}, True),
    ("requestPrincipal presence, no JWT", src(requestPrincipals=["*"]), {}, False),
    ("notRequestPrincipals * = require a JWT", src(notRequestPrincipals=["*"]), {}, True),
    ("notRequestPrincipals *, with JWT", src(notRequestPrincipals=["*"]),
     {"request_principal": "i/s"}, False),
    # ---- AND inside a source, OR across sources ------------------------------------
    ("fields of a source are ANDed", src(principals=[SLEEP], namespaces=["ns2"]), {}, False),
    ("fields of a source are ANDed, both match", src(principals=[SLEEP], ipBlocks=["10.0.0.0/8"]),
     {}, True),
    ("sources are ORed", {"from": [{"source": {"namespaces": ["x"]}},
                                   {"source": {"principals": [SLEEP]}}]}, {}, True),
    # ---- operations --------------------------------------------------------------
    ("port", op(ports=["8080"]), {}, True),
    ("port other", op(ports=["80", "443"]), {}, False),
    ("port written as a number", op(ports=[8080]), {}, True),
    ("notPorts", op(notPorts=["8080"]), {}, False),
    ("notPorts other", op(notPorts=["22"]), {}, True),
    ("host exact", op(hosts=["echo.ns2.svc.cluster.local"]), {}, True),
    ("host is case-insensitive", op(hosts=["ECHO.ns2.svc.cluster.local"]),
     {"host": "Echo.NS2.svc.cluster.local"}, True),
    ("host suffix", op(hosts=["*.svc.cluster.local"]), {}, True),
    ("host other", op(hosts=["other.example"]), {}, False),
    ("notHosts", op(notHosts=["echo.*"]), {}, False),
    ("method", op(methods=["GET", "HEAD"]), {}, True),
    ("method other", op(methods=["POST"]), {}, False),
    ("method is case-sensitive", op(methods=["get"]), {}, False),
    ("notMethods", op(notMethods=["GET"]), {}, False),
    ("notMethods other", op(notMethods=["DELETE"]), {}, True),
    ("path exact", op(paths=["/info"]), {}, True),
    ("path ignores the query", op(paths=["/data"]), {"path": "/data?x=1"}, True),
    ("path prefix", op(paths=["/info*"]), {"path": "/info/a"}, True),
    ("path suffix", op(paths=["*.png"]), {"path": "/img/a.png"}, True),
    ("path other", op(paths=["/admin*"]), {}, False),
    ("path template {*}", op(paths=["/users/{*}/orders"]), {"path": "/users/7/orders"}, True),
    ("path template {*} is one segment", op(paths=["/users/{*}/orders"]),
     {"path": "/users/7/8/orders"}, False),
    ("path template {**}", op(paths=["/files/{**}"]), {"path": "/files/a/b"}, True),
    ("path template {**} needs a segment", op(paths=["/files/{**}"]), {"path": "/files/"}, False),
    ("notPaths", op(notPaths=["/admin*"]), {"path": "/admin/x"}, False),
    ("operation fields are ANDed", op(methods=["GET"], paths=["/admin"]), {}, False),
    ("operations are ORed", {"to": [{"operation": {"methods": ["POST"]}},
                                    {"operation": {"paths": ["/info"]}}]}, {}, True),
    ("no method seen", op(methods=["GET"]), {"method": None}, False),
    # ---- from, to and when are ANDed -----------------------------------------------
    ("from and to", {**src(principals=[SLEEP]), **op(methods=["POST"])}, {}, False),
    ("from, to and when", {**src(principals=[SLEEP]), **op(methods=["GET"]),
                           **when("request.headers[x-user]", ["alice"])}, {}, True),
    ("conditions are ANDed", {"when": [{"key": "source.namespace", "values": ["ns1"]},
                                       {"key": "destination.port", "values": ["80"]}]}, {},
     False),
    ("empty rule matches everything", {}, {}, True),
    ("empty rule matches plaintext", {}, PLAIN, True),
    # ---- when keys -------------------------------------------------------------------
    ("when source.ip", when("source.ip", ["10.0.1.0/24"]), {}, True),
    ("when source.ip notValues", when("source.ip", not_values=["10.0.1.5"]), {}, False),
    ("when source.ip values and notValues", when("source.ip", ["10.0.0.0/8"], ["10.0.1.0/24"]),
     {}, False),
    ("when source.ip ipv6", when("source.ip", ["fd00:10::/64"]), V6, True),
    ("when remote.ip", when("remote.ip", ["203.0.113.9"]), {"remote_ip": "203.0.113.9"}, True),
    ("when source.namespace", when("source.namespace", ["ns1"]), {}, True),
    ("when source.namespace wildcard", when("source.namespace", ["n*"]), {}, True),
    ("when source.namespace notValues", when("source.namespace", not_values=["ns1"]), {}, False),
    ("when source.namespace, plaintext", when("source.namespace", ["ns1"]), PLAIN, False),
    ("when source.namespace notValues, plaintext", when("source.namespace", not_values=["ns1"]),
     PLAIN, True),
    ("when source.principal", when("source.principal", [SLEEP]), {}, True),
    ("when source.principal suffix", when("source.principal", ["*/sa/other"]), {}, False),
    ("when source.serviceAccount", when("source.serviceAccount", ["ns1/sleep"]), {}, True),
    ("when destination.ip", when("destination.ip", ["10.0.2.0/24"]), {}, True),
    ("when destination.ip other", when("destination.ip", ["10.0.3.7"]), {}, False),
    ("when destination.port", when("destination.port", ["8080"]), {}, True),
    ("when destination.port notValues", when("destination.port", not_values=["8080"]), {}, False),
    ("when header", when("request.headers[x-user]", ["alice"]), {}, True),
    ("when header name is case-insensitive", when("request.headers[X-User]", ["ali*"]), {}, True),
    ("when header other", when("request.headers[x-user]", ["bob"]), {}, False),
    ("when header missing", when("request.headers[x-team]", ["*"]), {}, False),
    ("when header missing, notValues", when("request.headers[x-team]", not_values=["a"]), {},
     True),
    ("when inline header", when("request.experimental.inline.headers[x-user]", ["alice"]), {},
     True),
    ("when request.auth.principal", when("request.auth.principal", ["iss/sub"]),
     {"request_principal": "iss/sub"}, True),
    ("when request.auth.principal, no JWT", when("request.auth.principal", ["*"]), {}, False),
    ("when audiences (list)", when("request.auth.audiences", ["api"]),
     {"claims": {"aud": ["web", "api"]}}, True),
    ("when audiences (string)", when("request.auth.audiences", ["api"]),
     {"claims": {"aud": "api"}}, True),
    ("when presenter", when("request.auth.presenter", ["client-*"]),
     {"claims": {"azp": "client-7"}}, True),
    ("when claim", when("request.auth.claims[iss]", ["https://accounts.example"]),
     {"claims": {"iss": "https://accounts.example"}}, True),
    ("when claim list", when("request.auth.claims[groups]", ["admins"]),
     {"claims": {"groups": ["devs", "admins"]}}, True),
    ("when nested claim", when("request.auth.claims[realm][role]", ["admin"]),
     {"claims": {"realm": {"role": "admin"}}}, True),
    ("when nested claim missing", when("request.auth.claims[realm][role]", ["admin"]),
     {"claims": {"realm": "admin"}}, False),
    ("when claim number never matches", when("request.auth.claims[level]", ["3"]),
     {"claims": {"level": 3}}, False),
    ("when claim notValues, missing", when("request.auth.claims[iss]", not_values=["x"]), {}, True),
    ("when sni", when("connection.sni", ["*.example.com"]), {"sni": "api.example.com"}, True),
    ("when sni missing", when("connection.sni", ["*"]), {}, False),
    ("when envoy filter metadata is absent", when("experimental.envoy.filters.a.b[c]", ["x"]), {},
     False),
]


@pytest.mark.parametrize(("rule", "changes", "expected"),
                         [pytest.param(r, c, e, id=i) for i, r, c, e in CASES])
def test_rule_matching_at_a_waypoint(rule: dict[str, Any], changes: dict[str, Any],
                                     expected: bool) -> None:
    assert matches(rule, request(**changes)) is expected


L4_CASES = [(i, r, c, e) for i, r, c, e in CASES
            if not {"hosts", "notHosts", "methods", "notMethods", "paths", "notPaths",
                    "requestPrincipals", "notRequestPrincipals", "remoteIpBlocks",
                    "notRemoteIpBlocks"} & {k for f in r.get("from", []) + r.get("to", [])
                                            for k in (f.get("source") or f.get("operation"))}
            and all(w["key"] in ("source.ip", "source.namespace", "source.principal",
                                 "destination.ip", "destination.port")
                    for w in r.get("when", []))]


def test_the_l4_subset_is_large() -> None:
    assert len(L4_CASES) > 60


@pytest.mark.parametrize(("rule", "changes", "expected"),
                         [pytest.param(r, c, e, id=i) for i, r, c, e in L4_CASES])
def test_l4_fields_mean_the_same_at_the_ztunnel(rule: dict[str, Any], changes: dict[str, Any],
                                                expected: bool) -> None:
    assert matches(rule, request(**changes), Enforcer.ZTUNNEL) is expected


def test_request_derives_namespace_and_service_account() -> None:
    r = request(source_principal="spiffe://td/ns/a/sa/b")
    assert (r.source_principal, r.source_namespace, r.source_service_account) == \
        ("td/ns/a/sa/b", "a", "a/b")
    plain = request(source_principal=None)
    assert plain.source_namespace is None and plain.source_service_account is None
    assert str(request(remote_ip=None).remote_ip) == "10.0.1.5"


@pytest.mark.parametrize(("pattern", "kind", "value"), [
    ("*", "presence", ""), ("abc", "exact", "abc"), ("abc*", "prefix", "abc"),
    ("*abc", "suffix", "abc"), ("*abc*", "suffix", "abc*"), ("**", "suffix", "*"),
    ("a*c", "exact", "a*c"),
])
def test_string_forms(pattern: str, kind: str, value: str) -> None:
    parsed = StringMatch.parse(pattern)
    assert (parsed.kind.value, parsed.value) == (kind, value)
