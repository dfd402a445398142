"""The service graph: nodes from the mesh model, edges from Istio's TCP and HTTP metrics."""

from __future__ import annotations

import json
from typing import Any

import pytest
from uikit import sample, scrape, service, waypoint, workload

from zeromesh.ui.graph import Edge, build_graph, layout, traffic_edges
from zeromesh.ui.metrics import HTTP_REQUESTS, TCP_FAILED, TCP_OPENED, TCP_RECEIVED, TCP_SENT, Sample

N1, N2 = "node1/ztunnel", "node2/ztunnel"


def edge(edges: list[Edge], ident: str) -> Edge:
    found = [e for e in edges if e.id == ident]
    assert found, f"no edge {ident}; have {[e.id for e in edges]}"
    return found[0]


def tcp(value: float, **kw: Any) -> list[Sample]:
    return [sample(TCP_OPENED, value, **kw), sample(TCP_SENT, value * 100, **kw),
            sample(TCP_RECEIVED, value * 10, **kw)]


@pytest.mark.parametrize(("samples", "want"), [
    # both ztunnels report the same 3 connections: the destination's view, not 6
    (tcp(3, target=N1, reporter="source") + tcp(3, target=N2, reporter="destination"),
     {"reporter": "destination", "connections": 3.0, "bytes": 330.0, "security": "mutual_tls"}),
    # only the source saw them (the destination is not in the mesh)
    (tcp(2, reporter="source", security="unknown"),
     {"reporter": "source", "connections": 2.0, "security": "unknown"}),
    # plaintext inbound to a meshed workload
    (tcp(2, target=N2, reporter="destination", security="none"),
     {"security": "none"}),
    # some connections were mutual TLS, some were not
    (tcp(2, target=N2, reporter="destination") + tcp(1, target=N1, reporter="destination", security="none"),
     {"security": "partial", "connections": 3.0}),
    # failures are counted on the edge
    ([*tcp(1, reporter="destination"), sample(TCP_FAILED, 2, reporter="destination")],
     {"failed": 2.0}),
])
def test_tcp_edges(samples: list[Sample], want: dict[str, Any]) -> None:
    edges, window = traffic_edges(scrape(samples), None)
    e = edge(edges, "tcp:wl:a/client>wl:a/echo")
    assert {k: getattr(e, k) for k in want} == want
    assert e.connection_rate is None and window is None       # one scrape: no rates yet
    assert e.mtls == (want.get("security", e.security) == "mutual_tls")


def test_tcp_edge_keeps_the_service_the_source_dialled() -> None:
    """The destination ztunnel does not know which service was dialled; the source does."""
    samples = (tcp(1, target=N1, reporter="source")
               + tcp(1, target=N2, reporter="destination", service=("a", "unknown")))
    e = edge(traffic_edges(scrape(samples), None)[0], "tcp:wl:a/client>wl:a/echo")
    assert e.reporter == "destination" and e.services == ("a/echo",)


def http(code: str, value: float, **kw: Any) -> Sample:
    return sample(HTTP_REQUESTS, value, target="ns/waypoint-pod", reporter="waypoint", response_code=code,
                  **kw)


@pytest.mark.parametrize(("before", "now", "want"), [
    # 10 requests in 2 s, 2 of them 503 and 3 of them 403
    ([http("200", 10), http("503", 1), http("403", 0)],
     [http("200", 15), http("503", 3), http("403", 3)],
     {"requests": 21.0, "errors": 3.0, "client_errors": 3.0, "request_rate": 5.0, "error_rate": 0.2,
      "client_error_rate": 0.3}),
    # idle interval: rate 0, no error rate to judge
    ([http("200", 10)], [http("200", 10)],
     {"requests": 10.0, "request_rate": 0.0, "error_rate": None}),
    # the waypoint restarted between scrapes: its counters start again from 0
    ([http("200", 1000)], [http("200", 4)],
     {"request_rate": 2.0, "error_rate": 0.0}),
    # no previous scrape
    (None, [http("200", 4), http("0", 1)],
     {"requests": 5.0, "errors": 1.0, "request_rate": None, "error_rate": None}),
])
def test_http_rates_come_from_two_scrapes(before: list[Sample] | None, now: list[Sample],
                                          want: dict[str, Any]) -> None:
    edges, window = traffic_edges(scrape(now, at=102.0), scrape(before, at=100.0) if before else None)
    e = edge(edges, "http:wl:a/client>wl:a/echo")
    assert {k: getattr(e, k) for k in want} == want
    assert e.security == "mutual_tls" and e.reporter == "waypoint"
    assert window == (2.0 if before else None)


def test_gateway_requests_have_unknown_security_and_the_waypoint_view_wins() -> None:
    samples = [sample(HTTP_REQUESTS, 4, target="istio-system/gw", reporter="source", security="unknown",
                      src=("istio-system", "istio-ingressgateway"), response_code="200"),
               sample(HTTP_REQUESTS, 4, target="a/wp", reporter="waypoint",
                      src=("istio-system", "istio-ingressgateway"), response_code="200")]
    e = edge(traffic_edges(scrape(samples), None)[0], "http:wl:istio-system/istio-ingressgateway>wl:a/echo")
    assert (e.reporter, e.requests, e.security) == ("waypoint", 4.0, "mutual_tls")
    only_gw = edge(traffic_edges(scrape(samples[:1]), None)[0],
                   "http:wl:istio-system/istio-ingressgateway>wl:a/echo")
    assert only_gw.security == "unknown" and not only_gw.mtls


@pytest.mark.parametrize(("src", "dst", "service", "edge_id"), [
    # a client outside the mesh
    (("unknown", "unknown"), ("a", "echo"), ("a", "echo"), "http:unknown>wl:a/echo"),
    # denied at the waypoint: no destination workload, drawn to the service it was for
    (("a", "client"), ("unknown", "unknown"), ("a", "echo"), "http:wl:a/client>svc:a/echo"),
    # nothing known about the destination at all
    (("a", "client"), ("unknown", "unknown"), ("unknown", "unknown"), "http:wl:a/client>unknown"),
])
def test_unknown_peers(src: tuple[str, str], dst: tuple[str, str], service: tuple[str, str],
                       edge_id: str) -> None:
    s = sample(HTTP_REQUESTS, 1, reporter="waypoint", src=src, dst=dst, service=service, response_code="403")
    assert [e.id for e in traffic_edges(scrape([s]), None)[0]] == [edge_id]


def test_zero_counters_make_no_edge() -> None:
    assert traffic_edges(scrape(tcp(0, reporter="source")), None)[0] == []


def cluster_records() -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    client = workload("a", "client-1", workload_name="client", sa="client")
    echo1 = workload("a", "echo-1", workload_name="echo", sa="echo", node="node2")
    echo2 = workload("a", "echo-2", workload_name="echo", sa="echo", node="node2")
    plain = workload("b", "legacy-1", workload_name="legacy", enrolled=False)
    wp = workload("a", "wp-1", workload_name="wp", enrolled=False,
                  labels={"gateway.networking.k8s.io/gateway-name": "wp"})
    gw = workload("istio-system", "gw-1", workload_name="istio-ingressgateway", enrolled=False,
                  labels={"istio": "ingressgateway"})
    services = [service("a", "echo", "10.96.0.11", [echo1, echo2]), service("a", "wp", "10.96.0.12", [wp]),
                service("istio-system", "istio-ingressgateway", "10.96.0.10", [gw])]
    return [client, echo1, echo2, plain, wp, gw], services, {"a/wp": waypoint("a", "wp")}


def test_graph_nodes_group_pods_into_workloads_and_hide_proxy_services() -> None:
    workloads, services, waypoints = cluster_records()
    g = build_graph(workloads, services, waypoints, scrape(tcp(1, reporter="destination")), None)
    nodes = {n.id: (n.kind, n.enrolled, n.pods) for n in g.nodes}
    assert nodes == {
        "wl:a/client": ("workload", True, 1), "wl:a/echo": ("workload", True, 2),
        "wl:b/legacy": ("workload", False, 1), "wl:a/wp": ("waypoint", False, 1),
        "wl:istio-system/istio-ingressgateway": ("gateway", False, 1),
        "svc:a/echo": ("service", None, 0)}
    assert [e.id for e in g.edges if e.protocol == "endpoint"] == ["endpoint:svc:a/echo>wl:a/echo"]
    wire = json.loads(json.dumps(g.to_wire()))
    tcp_edge = next(e for e in wire["edges"] if e["protocol"] == "tcp")
    assert tcp_edge["mtls"] is True and tcp_edge["source"] == "wl:a/client"


def test_graph_adds_nodes_seen_only_in_metrics() -> None:
    s = sample(TCP_OPENED, 1, src=("gone", "old"), dst=("a", "echo"), reporter="destination")
    g = build_graph([], [], {}, scrape([s]), None)
    assert {(n.id, n.kind) for n in g.nodes} == {("wl:gone/old", "workload"), ("wl:a/echo", "workload")}


def places(edges: list[tuple[str, str]], extra: tuple[str, ...] = ()) -> dict[str, tuple[int, int]]:
    nodes = sorted({n for e in edges for n in e} | set(extra))
    return layout(nodes, edges)


def test_layout_puts_callers_left_of_callees() -> None:
    p = places([("client", "wp"), ("wp", "echo"), ("client", "echo"), ("svc", "echo")], extra=("lonely",))
    assert p["client"][0] == 0 and p["wp"][0] == 1 and p["echo"][0] == 2
    assert p["svc"][0] == 1              # beside the pods it selects, not far left
    assert p["lonely"][1] > max(r for n, (_, r) in p.items() if n != "lonely")   # below the rest


def test_layout_survives_cycles_and_self_loops() -> None:
    p = places([("a", "b"), ("b", "c"), ("c", "a"), ("a", "a")])
    assert sorted(c for c, _ in p.values()) == [0, 1, 2]
    assert len(set(p.values())) == 3


def test_layout_rows_keep_connected_nodes_level() -> None:
    p = places([("c1", "s1"), ("c2", "s2"), ("c3", "s3")])
    for i in "123":
        assert p[f"c{i}"][1] == p[f"s{i}"][1]
