"""HTTPRoute compilation, Gateway API precedence and filters."""

from __future__ import annotations

from typing import Any

import pytest

from zeromesh.routing import (
    Backend,
    HttpRequest,
    compile_http_routes,
    find_route,
    match_route,
    redirect_location,
    rewrite_request,
)


def hr(name: str, *rules: dict[str, Any], ts: str = "2024-01-01T00:00:00Z",
       ns: str = "ns1") -> dict[str, Any]:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": ts},
            "spec": {"parentRefs": [{"kind": "Service", "group": "", "name": "svc"}],
                     "rules": list(rules)}}


def rule(*matches: dict[str, Any], **extra: Any) -> dict[str, Any]:
    r: dict[str, Any] = {"backendRefs": [{"name": "svc", "port": 80, "weight": 1}], **extra}
    if matches:
        r["matches"] = list(matches)
    return r


def req(path: str = "/", method: str = "GET", **headers: str) -> HttpRequest:
    return HttpRequest(method, path, "svc", {k.replace("_", "-"): v for k, v in headers.items()})


def P(kind: str, value: str) -> dict[str, Any]:
    return {"path": {"type": kind, "value": value}}


MATCH_TABLE: list[tuple[str, dict[str, Any], HttpRequest, bool]] = [
    ("exact", P("Exact", "/a"), req("/a"), True),
    ("exact ignores query", P("Exact", "/a"), req("/a?q=1"), True),
    ("exact miss", P("Exact", "/a"), req("/a/"), False),
    ("prefix same", P("PathPrefix", "/foo"), req("/foo"), True),
    ("prefix slash", P("PathPrefix", "/foo"), req("/foo/"), True),
    ("prefix deeper", P("PathPrefix", "/foo"), req("/foo/bar"), True),
    ("prefix is per segment", P("PathPrefix", "/foo"), req("/foobar"), False),
    ("prefix trailing slash ignored", P("PathPrefix", "/foo/"), req("/foo"), True),
    ("prefix root", P("PathPrefix", "/"), req("/anything"), True),
    ("regex", P("RegularExpression", "/u/[0-9]+"), req("/u/7"), True),
    ("regex full", P("RegularExpression", "/u/[0-9]+"), req("/u/7/x"), False),
    ("header exact, name case-insensitive", {"headers": [{"name": "X-Env", "value": "canary"}]},
     req(x_env="canary"), True),
    ("header value case-sensitive", {"headers": [{"name": "x-env", "value": "canary"}]},
     req(x_env="Canary"), False),
    ("header regex", {"headers": [{"type": "RegularExpression", "name": "x-env", "value": "c.*"}]},
     req(x_env="canary"), True),
    ("header absent", {"headers": [{"name": "x-env", "value": "canary"}]}, req(), False),
    ("query exact", {"queryParams": [{"name": "v", "value": "2"}]}, req("/?v=2"), True),
    ("query miss", {"queryParams": [{"name": "v", "value": "2"}]}, req("/?v=3"), False),
    ("query regex", {"queryParams": [{"type": "RegularExpression", "name": "v", "value": "[23]"}]},
     req("/?v=3"), True),
    ("method", {"method": "POST"}, req(method="POST"), True),
    ("method miss", {"method": "POST"}, req(), False),
    ("default match is prefix /", {}, req("/x/y"), True),
]


@pytest.mark.parametrize(("match", "request_", "expected"),
                         [pytest.param(m, r, e, id=i) for i, m, r, e in MATCH_TABLE])
def test_match_table(match: dict[str, Any], request_: HttpRequest, expected: bool) -> None:
    routes = compile_http_routes([hr("r", rule(match))])
    assert (match_route(routes, request_) is not None) is expected


def test_rule_without_matches_matches_everything() -> None:
    routes = compile_http_routes([hr("r", {"backendRefs": [{"name": "svc", "port": 80}]})])
    assert match_route(routes, req("/z")) is routes[0]
    assert routes[0].name == "ns1/r/rule[0]/match[0]"


def _winner(routes: list[dict[str, Any]], request: HttpRequest) -> str:
    found = match_route(compile_http_routes(routes), request)
    assert found is not None
    return found.name


PRECEDENCE = [
    ("exact beats prefix",
     [hr("a", rule(P("PathPrefix", "/a"))), hr("b", rule(P("Exact", "/a")))], req("/a"), "ns1/b"),
    ("longest prefix wins",
     [hr("a", rule(P("PathPrefix", "/a"))), hr("b", rule(P("PathPrefix", "/a/b")))], req("/a/b/c"),
     "ns1/b"),
    ("prefix beats regex",
     [hr("a", rule(P("RegularExpression", "/a.*"))), hr("b", rule(P("PathPrefix", "/a")))],
     req("/a"), "ns1/b"),
    ("method beats none",
     [hr("a", rule(P("PathPrefix", "/"))), hr("b", rule({**P("PathPrefix", "/"), "method": "GET"}))],
     req("/"), "ns1/b"),
    ("more headers win",
     [hr("a", rule({"headers": [{"name": "x", "value": "1"}]})),
      hr("b", rule({"headers": [{"name": "x", "value": "1"}, {"name": "y", "value": "2"}]}))],
     req("/", x="1", y="2"), "ns1/b"),
    ("more query params win",
     [hr("a", rule({"queryParams": [{"name": "p", "value": "1"}]})),
      hr("b", rule({"queryParams": [{"name": "p", "value": "1"}, {"name": "q", "value": "2"}]}))],
     req("/?p=1&q=2"), "ns1/b"),
    ("oldest wins a tie",
     [hr("a", rule({}), ts="2024-02-01T00:00:00Z"), hr("b", rule({}), ts="2024-01-01T00:00:00Z")],
     req("/"), "ns1/b"),
    ("then namespace/name",
     [hr("b", rule({})), hr("a", rule({}))], req("/"), "ns1/a"),
    ("then rule order",
     [hr("a", rule({}, name="first"), rule({}, name="second"))], req("/"), "ns1/a/first"),
    ("path precedence before method",
     [hr("a", rule({**P("PathPrefix", "/"), "method": "GET"})), hr("b", rule(P("PathPrefix", "/x")))],
     req("/x"), "ns1/b"),
]


@pytest.mark.parametrize(("routes", "request_", "prefix"),
                         [pytest.param(r, q, w, id=i) for i, r, q, w in PRECEDENCE])
def test_precedence(routes: list[dict[str, Any]], request_: HttpRequest, prefix: str) -> None:
    assert _winner(routes, request_).startswith(prefix + "/")


def test_backend_refs_and_timeouts() -> None:
    (r,) = compile_http_routes([hr("r", {
        "backendRefs": [{"name": "v1", "port": 8080, "weight": 90},
                        {"name": "v2", "namespace": "other", "port": 8080, "weight": 10},
                        {"group": "networking.istio.io", "kind": "Hostname", "name": "x.example.com"}],
        "timeouts": {"request": "10s", "backendRequest": "2s"}})])
    assert r.action.backends == (Backend("v1.ns1.svc.cluster.local", 8080, None, 90),
                                 Backend("v2.other.svc.cluster.local", 8080, None, 10),
                                 Backend("x.example.com", None, None, 1))
    assert (r.action.timeout_s, r.action.backend_timeout_s) == (10.0, 2.0)
    (z,) = compile_http_routes([hr("z", rule(timeouts={"request": "0s"}))])
    assert z.action.timeout_s is None


def test_header_modifier_filters() -> None:
    mod = {"set": [{"name": "X-A", "value": "1"}], "add": [{"name": "x-b", "value": "2"}],
           "remove": ["X-C"]}
    (r,) = compile_http_routes([hr("r", rule(filters=[
        {"type": "RequestHeaderModifier", "requestHeaderModifier": mod},
        {"type": "ResponseHeaderModifier", "responseHeaderModifier": {"remove": ["server"]}}]))])
    ops = r.action.request_header_ops
    assert (ops.set, ops.add, ops.remove) == ((("x-a", "1"),), (("x-b", "2"),), ("x-c",))
    assert r.action.response_header_ops.remove == ("server",)


REDIRECTS = [
    ({"scheme": "https"}, P("PathPrefix", "/"), "/p?q=1", "https://svc/p?q=1", 302),
    ({"hostname": "new", "statusCode": 301}, P("PathPrefix", "/"), "/p", "http://new/p", 301),
    ({"port": 8080}, P("PathPrefix", "/"), "/p", "http://svc:8080/p", 302),
    ({"path": {"type": "ReplaceFullPath", "replaceFullPath": "/full"}}, P("PathPrefix", "/a"),
     "/a/b", "http://svc/full", 302),
    ({"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/new"}}, P("PathPrefix", "/old"),
     "/old/x", "http://svc/new/x", 302),
]


@pytest.mark.parametrize(("redirect", "match", "path", "location", "status"), REDIRECTS)
def test_request_redirect(redirect: dict[str, Any], match: dict[str, Any], path: str,
                          location: str, status: int) -> None:
    routes = compile_http_routes([hr("r", {"matches": [match], "filters": [
        {"type": "RequestRedirect", "requestRedirect": redirect}]})])
    found = find_route(routes, req(path))
    assert found is not None and found[0].action.redirect is not None
    assert found[0].action.redirect.status == status
    assert redirect_location(found[0].action.redirect, found[1], req(path)) == location


REWRITES = [
    ("/foo", "/bar", "/foo/x?q=1", "/bar/x?q=1"),
    ("/foo", "/", "/foo/x", "/x"),
    ("/foo", "/", "/foo", "/"),
    ("/foo/", "/bar/", "/foo/x", "/bar/x"),
    ("/foo", "/bar", "/foo", "/bar"),
]


@pytest.mark.parametrize(("prefix", "replace", "path", "expected"), REWRITES)
def test_url_rewrite_prefix(prefix: str, replace: str, path: str, expected: str) -> None:
    routes = compile_http_routes([hr("r", rule(P("PathPrefix", prefix), filters=[
        {"type": "URLRewrite", "urlRewrite": {
            "hostname": "h2", "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": replace}}}]))])
    found = find_route(routes, req(path))
    assert found is not None
    out = rewrite_request(found[0].action.rewrite, found[1], req(path))
    assert (out.path, out.host) == (expected, "h2")


def test_url_rewrite_full_path() -> None:
    routes = compile_http_routes([hr("r", rule(P("Exact", "/a"), filters=[
        {"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplaceFullPath",
                                                       "replaceFullPath": "/b"}}}]))])
    found = find_route(routes, req("/a"))
    assert found is not None
    assert rewrite_request(found[0].action.rewrite, found[1], req("/a")).path == "/b"


def test_request_mirror() -> None:
    (r,) = compile_http_routes([hr("r", rule(filters=[
        {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "shadow", "port": 80},
                                                    "percent": 30}},
        {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "s2", "port": 80},
                                                    "fraction": {"numerator": 1, "denominator": 4}}}]))])
    assert [(m.backend.host, m.percent) for m in r.action.mirrors] == [
        ("shadow.ns1.svc.cluster.local", 30.0), ("s2.ns1.svc.cluster.local", 25.0)]
