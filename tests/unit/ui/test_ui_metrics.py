"""Prometheus text into samples, and counter deltas between scrapes (what rates are made of)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest
from uikit import scrape

from zeromesh.ui.metrics import HTTP_REQUESTS, TCP_OPENED, Sample, deltas, parse


def exposition() -> str:
    reg = CollectorRegistry()
    c = Counter("istio_tcp_connections_opened", "x", ["reporter", "source_workload"], registry=reg)
    c.labels(reporter="source", source_workload="client").inc(3)
    r = Counter("istio_requests", "x", ["response_code"], registry=reg)
    r.labels(response_code="200").inc(5)
    Counter("unrelated", "x", registry=reg).inc()
    return generate_latest(reg).decode()


def test_parse_keeps_the_wanted_counters_with_their_target() -> None:
    got = parse("node1/ztunnel", exposition())
    assert sorted((s.name, s.labels, s.value) for s in got) == [
        (HTTP_REQUESTS, (("response_code", "200"),), 5.0),
        (TCP_OPENED, (("reporter", "source"), ("source_workload", "client")), 3.0),
    ]   # no `_created` gauges, no other metric
    assert {s.target for s in got} == {"node1/ztunnel"}


def test_parse_refuses_text_that_is_not_prometheus() -> None:
    with pytest.raises(ValueError):
        parse("t", "istio_requests_total{ 1\n")


def s(target: str, value: float, code: str = "200") -> Sample:
    return Sample(target, HTTP_REQUESTS, (("response_code", code),), value)


@pytest.mark.parametrize(("before", "now", "want"), [
    # no previous scrape: no deltas at all
    (None, [s("t", 5)], None),
    # growth
    ([s("t", 5)], [s("t", 9)], {("t", 4.0)}),
    # a reset (the proxy restarted): everything it counts now is new
    ([s("t", 50)], [s("t", 7)], {("t", 7.0)}),
    # a series that appeared on a target that answered before counts whole
    ([s("t", 1)], [s("t", 1), s("t", 2, "503")], {("t", 0.0), ("t", 2.0)}),
    # a target that did not answer before has no delta yet (its counters span its lifetime)
    ([s("t", 1)], [s("t", 1), s("u", 40)], {("t", 0.0)}),
    # identical labels on two targets are two series
    ([s("t", 1), s("u", 10)], [s("t", 2), s("u", 15)], {("t", 1.0), ("u", 5.0)}),
])
def test_deltas(before: list[Sample] | None, now: list[Sample], want: set[tuple[str, float]] | None) -> None:
    got = deltas(scrape(now, 10.0), scrape(before, 8.0) if before is not None else None)
    assert (None if got is None else {(k[0], v) for k, v in got.items()}) == want
