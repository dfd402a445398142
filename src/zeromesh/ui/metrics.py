"""Prometheus text into samples, and counter deltas between two scrapes (pure).

Samples keep the target they came from: two ztunnels can report series with identical
labels (two client pods of one workload on different nodes), and a delta must only ever
compare a series with itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

# The series the dashboard reads (counters appear with their `_total` sample name).
TCP_OPENED = "istio_tcp_connections_opened_total"
TCP_CLOSED = "istio_tcp_connections_closed_total"
TCP_FAILED = "istio_tcp_connections_failed_total"
TCP_SENT = "istio_tcp_sent_bytes_total"
TCP_RECEIVED = "istio_tcp_received_bytes_total"
HTTP_REQUESTS = "istio_requests_total"
WANTED = frozenset({TCP_OPENED, TCP_CLOSED, TCP_FAILED, TCP_SENT, TCP_RECEIVED, HTTP_REQUESTS})

Labels = tuple[tuple[str, str], ...]
SeriesKey = tuple[str, str, Labels]          # (target, sample name, sorted labels)


@dataclass(frozen=True, slots=True)
class Sample:
    target: str
    name: str
    labels: Labels
    value: float

    @property
    def key(self) -> SeriesKey:
        return (self.target, self.name, self.labels)

    def label(self, name: str, default: str = "") -> str:
        for k, v in self.labels:
            if k == name:
                return v
        return default


def parse(target: str, text: str, wanted: frozenset[str] = WANTED) -> tuple[Sample, ...]:
    """The wanted samples of one exposition; ValueError when the text is not Prometheus'."""
    out = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in wanted:
                out.append(Sample(target, s.name, tuple(sorted(s.labels.items())), float(s.value)))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Scrape:
    """One collection round: the samples, which targets answered, and when (monotonic seconds)."""

    samples: tuple[Sample, ...]
    targets: frozenset[str]
    at: float


def deltas(now: Scrape, before: Scrape | None) -> dict[SeriesKey, float] | None:
    """How much each counter grew since the previous scrape (None without one).

    A series that went down was reset (its proxy restarted): its whole current value is
    new, as Prometheus' ``rate()`` counts it; so is a series that appeared on a target
    that answered both times. A target that did not answer last time has no delta yet
    (its counters hold everything since it started, not one interval's worth).
    """
    if before is None:
        return None
    prev: Mapping[SeriesKey, float] = {s.key: s.value for s in before.samples}
    out = {}
    for s in now.samples:
        if s.target not in before.targets:
            continue
        old = prev.get(s.key, 0.0)
        out[s.key] = s.value - old if s.value >= old else s.value
    return out
