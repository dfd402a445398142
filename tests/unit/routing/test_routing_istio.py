"""VirtualService compilation and matching, table-driven."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import yaml

from zeromesh.routing import (
    Backend,
    HttpRequest,
    compile_virtual_service,
    destination_rule_subsets,
    fault_decision,
    find_route,
    match_route,
    mirror_decision,
    pick_backend,
    redirect_location,
    rewrite_request,
)


def vs(*http: dict[str, Any], ns: str = "ns1") -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "vs", "namespace": ns},
            "spec": {"hosts": ["svc"], "http": list(http)}}


def req(path: str = "/", method: str = "GET", host: str = "svc",
        **headers: str) -> HttpRequest:
    return HttpRequest(method, path, host, {k.replace("_", "-"): v for k, v in headers.items()})


DEST = [{"destination": {"host": "svc"}}]

MATCH_TABLE: list[tuple[str, dict[str, Any], HttpRequest, bool]] = [
    ("uri exact hit", {"uri": {"exact": "/a"}}, req("/a"), True),
    ("uri exact ignores query", {"uri": {"exact": "/a"}}, req("/a?x=1"), True),
    ("uri exact miss", {"uri": {"exact": "/a"}}, req("/a/b"), False),
    ("uri prefix is plain string", {"uri": {"prefix": "/ap"}}, req("/api"), True),
    ("uri prefix miss", {"uri": {"prefix": "/b"}}, req("/api"), False),
    ("uri regex full match", {"uri": {"regex": "/u/[0-9]+"}}, req("/u/42"), True),
    ("uri regex not partial", {"uri": {"regex": "/u/[0-9]+"}}, req("/u/42/x"), False),
    ("ignoreUriCase exact", {"uri": {"exact": "/A"}, "ignoreUriCase": True}, req("/a"), True),
    ("ignoreUriCase prefix", {"uri": {"prefix": "/Ap"}, "ignoreUriCase": True}, req("/API"), True),
    ("case sensitive by default", {"uri": {"exact": "/A"}}, req("/a"), False),
    ("header exact", {"headers": {"End-User": {"exact": "jason"}}}, req(end_user="jason"), True),
    ("header exact miss", {"headers": {"end-user": {"exact": "jason"}}}, req(end_user="bob"), False),
    ("header absent", {"headers": {"end-user": {"exact": "jason"}}}, req(), False),
    ("header prefix", {"headers": {"x-v": {"prefix": "v2"}}}, req(x_v="v2.1"), True),
    ("header regex", {"headers": {"x-v": {"regex": "v[12]"}}}, req(x_v="v2"), True),
    ("header presence", {"headers": {"x-v": {}}}, req(x_v=""), True),
    ("header presence miss", {"headers": {"x-v": {}}}, req(), False),
    ("withoutHeaders absent", {"withoutHeaders": {"x-v": {}}}, req(), True),
    ("withoutHeaders present", {"withoutHeaders": {"x-v": {}}}, req(x_v="1"), False),
    ("withoutHeaders other value", {"withoutHeaders": {"x-v": {"exact": "1"}}}, req(x_v="2"), True),
    ("withoutHeaders same value", {"withoutHeaders": {"x-v": {"exact": "1"}}}, req(x_v="1"), False),
    ("query exact", {"queryParams": {"q": {"exact": "1"}}}, req("/?q=1&r=2"), True),
    ("query exact miss", {"queryParams": {"q": {"exact": "1"}}}, req("/?q=2"), False),
    ("query regex", {"queryParams": {"q": {"regex": "[a-z]+"}}}, req("/?q=abc"), True),
    ("query presence", {"queryParams": {"q": {}}}, req("/?q"), True),
    ("query absent", {"queryParams": {"q": {}}}, req("/?r=1"), False),
    ("method exact", {"method": {"exact": "POST"}}, req(method="POST"), True),
    ("method miss", {"method": {"exact": "POST"}}, req(method="GET"), False),
    ("method regex", {"method": {"regex": "GET|HEAD"}}, req(method="HEAD"), True),
    ("authority exact", {"authority": {"exact": "svc"}}, req(host="svc"), True),
    ("authority prefix", {"authority": {"prefix": "svc."}}, req(host="svc.ns1:8080"), True),
    ("authority miss", {"authority": {"exact": "other"}}, req(host="svc"), False),
    ("all conditions AND", {"uri": {"prefix": "/a"}, "method": {"exact": "GET"}},
     req("/a", method="PUT"), False),
]


@pytest.mark.parametrize(("match", "request_", "expected"),
                         [pytest.param(m, r, e, id=i) for i, m, r, e in MATCH_TABLE])
def test_match_table(match: dict[str, Any], request_: HttpRequest, expected: bool) -> None:
    routes = compile_virtual_service(vs({"match": [match], "route": DEST}))
    assert (match_route(routes, request_) is not None) is expected


def test_matches_are_or_and_routes_first_match_wins() -> None:
    routes = compile_virtual_service(vs(
        {"name": "a", "match": [{"uri": {"exact": "/x"}}, {"uri": {"exact": "/y"}}], "route": DEST},
        {"name": "b", "match": [{"uri": {"prefix": "/"}}], "route": DEST},
        {"name": "c", "route": DEST}))
    assert [match_route(routes, req(p)).name for p in ("/x", "/y", "/z")] == ["a", "a", "b"]  # type: ignore[union-attr]


def test_no_match_is_none_and_catch_all() -> None:
    routes = compile_virtual_service(vs({"match": [{"uri": {"exact": "/only"}}], "route": DEST}))
    assert match_route(routes, req("/other")) is None
    assert match_route([], req()) is None
    catch_all = compile_virtual_service(vs({"route": DEST}))
    assert match_route(catch_all, req("/anything")) is catch_all[0]
    assert catch_all[0].name == "ns1/vs/http[0]"


def test_destinations_hosts_weights_subsets() -> None:
    (r,) = compile_virtual_service(vs({"route": [
        {"destination": {"host": "reviews", "subset": "v1", "port": {"number": 9080}}, "weight": 75},
        {"destination": {"host": "reviews.other.svc.cluster.local", "subset": "v2"}, "weight": 25},
        {"destination": {"host": "r3"}}]}))
    assert r.action.backends == (
        Backend("reviews.ns1.svc.cluster.local", 9080, "v1", 75),
        Backend("reviews.other.svc.cluster.local", None, "v2", 25),
        Backend("r3.ns1.svc.cluster.local", None, None, 0))


def test_single_destination_without_weight_gets_everything() -> None:
    (r,) = compile_virtual_service(vs({"route": DEST}))
    assert r.action.backends[0].weight == 100


def test_timeout_and_retries() -> None:
    (r, r2, r3) = compile_virtual_service(vs(
        {"route": DEST, "timeout": "1.5s",
         "retries": {"attempts": 3, "perTryTimeout": "250ms", "retryOn": "5xx,connect-failure,reset"}},
        {"route": DEST, "retries": {"attempts": 2}},
        {"route": DEST, "timeout": "0s"}))
    assert r.action.timeout_s == 1.5
    assert r.action.retries is not None
    assert (r.action.retries.attempts, r.action.retries.per_try_timeout_s) == (3, 0.25)
    assert r.action.retries.retry_on == {"5xx", "connect-failure", "reset"}
    assert r2.action.retries is not None and "connect-failure" in r2.action.retries.retry_on
    assert r2.action.retries.per_try_timeout_s is None and r2.action.timeout_s is None
    assert r3.action.timeout_s is None  # 0 disables the timeout


def test_header_ops() -> None:
    (r,) = compile_virtual_service(vs({"route": DEST, "headers": {
        "request": {"set": {"X-A": "1"}, "add": {"x-b": "2"}, "remove": ["X-C"]},
        "response": {"remove": ["server"]}}}))
    ops = r.action.request_header_ops
    assert (ops.set, ops.add, ops.remove) == ((("x-a", "1"),), (("x-b", "2"),), ("x-c",))
    assert r.action.response_header_ops.remove == ("server",)


REDIRECT_TABLE = [
    ({"uri": "/new"}, "/old?a=1", "http://svc/new?a=1", 301),
    ({"authority": "other", "redirectCode": 308}, "/p", "http://other/p", 308),
    ({"scheme": "https", "port": 8443}, "/p", "https://svc:8443/p", 301),
    ({"scheme": "https"}, "/p", "https://svc/p", 301),
]


@pytest.mark.parametrize(("redirect", "path", "location", "status"), REDIRECT_TABLE)
def test_redirect(redirect: dict[str, Any], path: str, location: str, status: int) -> None:
    (r,) = compile_virtual_service(vs({"redirect": redirect}))
    assert r.action.redirect is not None and r.action.backends == ()
    found = find_route([r], req(path))
    assert found is not None
    assert r.action.redirect.status == status
    assert redirect_location(r.action.redirect, found[1], req(path)) == location


REWRITE_TABLE = [
    ({"uri": {"prefix": "/api/"}}, {"uri": "/"}, "/api/users?x=1", "/users?x=1", "svc"),
    ({"uri": {"prefix": "/api"}}, {"uri": "/v2"}, "/api/users", "/v2/users", "svc"),
    ({"uri": {"exact": "/login"}}, {"uri": "/auth/login"}, "/login", "/auth/login", "svc"),
    (None, {"uri": "/base/"}, "/x", "/base/x", "svc"),
    (None, {"authority": "new.host"}, "/x", "/x", "new.host"),
    (None, {"uriRegexRewrite": {"match": "^/svc/([^/]+)/(.*)$", "rewrite": "/\\2/\\1"}},
     "/svc/a/b/c", "/b/c/a", "svc"),
]


@pytest.mark.parametrize(("match", "rewrite", "path", "new_path", "new_host"), REWRITE_TABLE)
def test_rewrite(match: dict[str, Any] | None, rewrite: dict[str, Any], path: str,
                 new_path: str, new_host: str) -> None:
    route: dict[str, Any] = {"route": DEST, "rewrite": rewrite}
    if match:
        route["match"] = [match]
    routes = compile_virtual_service(vs(route))
    found = find_route(routes, req(path))
    assert found is not None
    out = rewrite_request(found[0].action.rewrite, found[1], req(path))
    assert (out.path, out.host) == (new_path, new_host)


class Seq:
    """An rng returning the given values in turn."""

    def __init__(self, *values: float) -> None:
        self.values = list(values)

    def __call__(self) -> float:
        return self.values.pop(0)


def test_fault_delay_and_abort_percentages() -> None:
    (r,) = compile_virtual_service(vs({"route": DEST, "fault": {
        "delay": {"fixedDelay": "2s", "percentage": {"value": 10}},
        "abort": {"httpStatus": 503, "percentage": {"value": 50.5}}}}))
    f = r.action.fault
    assert f is not None and (f.delay_s, f.delay_percent, f.abort_status, f.abort_percent) == (
        2.0, 10.0, 503, 50.5)
    assert fault_decision(f, Seq(0.05, 0.5)) == (2.0, 503)
    assert fault_decision(f, Seq(0.10, 0.51)) == (None, None)
    assert fault_decision(None, Seq()) == (None, None)


def test_fault_default_percentage_is_all() -> None:
    (r,) = compile_virtual_service(vs({"route": DEST, "fault": {"abort": {"httpStatus": 418}}}))
    assert fault_decision(r.action.fault, Seq()) == (None, 418)  # no rng draw needed at 100%


def test_mirror() -> None:
    (r, r2) = compile_virtual_service(vs(
        {"route": DEST, "mirror": {"host": "shadow", "subset": "v3"}, "mirrorPercentage": {"value": 20}},
        {"route": DEST, "mirrors": [{"destination": {"host": "a"}}, {"destination": {"host": "b"},
                                                                     "percentage": {"value": 0}}]}))
    (m,) = r.action.mirrors
    assert (m.backend.host, m.backend.subset, m.percent) == ("shadow.ns1.svc.cluster.local", "v3", 20)
    assert mirror_decision(r.action.mirrors, Seq(0.1)) == [m.backend]
    assert mirror_decision(r.action.mirrors, Seq(0.3)) == []
    assert [b.host for b in mirror_decision(r2.action.mirrors, Seq())] == ["a.ns1.svc.cluster.local"]


CANARY = Path("/work/shared/seed-demo/canary.yaml")


@pytest.mark.skipif(not CANARY.exists(), reason="seed demo not present")
def test_seed_demo_canary_splits_90_10() -> None:
    docs = list(yaml.safe_load_all(CANARY.read_text(encoding="utf-8")))
    vs_doc = next(d for d in docs if d["kind"] == "VirtualService")
    dr_doc = next(d for d in docs if d["kind"] == "DestinationRule")
    routes = compile_virtual_service(vs_doc)
    route = match_route(routes, req("/", host="echoserver-service-ns2.ns2.svc.cluster.local"))
    assert route is not None
    rng = random.Random(20240601).random
    picks = [pick_backend(route.action.backends, rng) for _ in range(500)]
    v1 = sum(1 for b in picks if b is not None and b.subset == "v1")
    v2 = sum(1 for b in picks if b is not None and b.subset == "v2")
    assert v1 + v2 == 500
    assert abs(v1 / 500 - 0.90) <= 0.05 and abs(v2 / 500 - 0.10) <= 0.05
    subsets = destination_rule_subsets(dr_doc)
    assert subsets["v2"] == {"app": "echoserver-app-ns2", "version": "v2"}
