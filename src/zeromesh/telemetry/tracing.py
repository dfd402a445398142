"""Tracing at the proxies, as plain values (pure: no IO, no OpenTelemetry objects).

A waypoint or the ingress gateway makes one SERVER span per request and one CLIENT span per
upstream attempt. The trace context comes from the request (W3C ``traceparent``/``tracestate``
first, then B3's single ``b3`` header, then ``x-b3-*``) and goes upstream in both formats, so
applications that propagate either keep the trace whole. Spans are small slotted records: the
OpenTelemetry SDK costs ~35 µs per request for the same two spans, so it is only used to
export (``zeromesh.waypoint.telemetry``), and only when a collector is configured.

Sampling follows the parent's decision when the request carries one, else a ratio of the trace
id (as OpenTelemetry's ``TraceIdRatioBased``: the low 64 bits against percent x 2^64).
Unsampled requests still get a span id, so the context keeps flowing with flag ``00``.

:class:`TraceRing` keeps the most recent sampled requests for ``/debug/traces``;
:func:`trace_json` is its JSON shape (``docs/tracing.md``).
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

SERVER, CLIENT = "SERVER", "CLIENT"
UNSET, OK, ERROR = "UNSET", "OK", "ERROR"
DEFAULT_SAMPLING = 100.0
DEFAULT_KEPT_TRACES = 200            # requests whose spans are kept (grouped by trace when read)

# Every header that carries trace context: replaced on the upstream request, never forwarded as-is.
PROPAGATION_HEADERS = frozenset({"traceparent", "tracestate", "b3", "x-b3-traceid", "x-b3-spanid",
                                 "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags"})

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_HEX = re.compile(r"[0-9a-f]+")
_MONO_TO_UNIX_NS = time.time_ns() - time.monotonic_ns()
T = TypeVar("T")
_rand = random.Random()


def unix_ns(monotonic_s: float) -> int:
    """A ``time.monotonic()`` reading as Unix nanoseconds (one offset taken at import: no clock
    call per span)."""
    return int(monotonic_s * 1e9) + _MONO_TO_UNIX_NS


def new_span_id() -> str:
    return f"{_rand.getrandbits(64) or 1:016x}"


def new_trace_id() -> str:
    return f"{_rand.getrandbits(128) or 1:032x}"


@dataclass(frozen=True, slots=True)
class Parent:
    """The context a request arrived with."""
    trace_id: str                 # 32 hex digits
    span_id: str                  # 16 hex digits: the caller's span
    sampled: bool | None          # None: the caller left the decision to us
    tracestate: str = ""
    b3_single: bool = False       # the caller used the single ``b3`` header: answer in kind


def _hex_id(value: str, size: int) -> str | None:
    v = value.strip().lower()
    if not v or len(v) > size or not _HEX.fullmatch(v) or not v.strip("0"):
        return None
    return v.rjust(size, "0")              # B3 allows 64-bit trace ids: left-pad them


def _b3_sampled(flag: str) -> bool | None:
    f = flag.strip().lower()
    if f in ("1", "d", "true"):
        return True
    if f in ("0", "false"):
        return False
    return None


def extract(headers: Mapping[str, str]) -> Parent | None:
    """The incoming trace context; None when there is none (or it is malformed: a new trace)."""
    tp = headers.get("traceparent")
    if tp is not None:
        m = _TRACEPARENT.fullmatch(tp.strip().lower())
        if m is not None and m.group(1) != "ff" and m.group(2).strip("0") and m.group(3).strip("0") \
                and (m.group(1) != "00" or m.group(5) is None):
            return Parent(m.group(2), m.group(3), bool(int(m.group(4), 16) & 1),
                          headers.get("tracestate", ""))
    single = headers.get("b3")
    if single is not None:
        parts = single.split("-")
        if len(parts) >= 2:
            tid, sid = _hex_id(parts[0], 32), _hex_id(parts[1], 16)
            if tid is not None and sid is not None:
                return Parent(tid, sid, _b3_sampled(parts[2]) if len(parts) > 2 else None, b3_single=True)
    tid_h = headers.get("x-b3-traceid")
    if tid_h is not None:
        tid, sid = _hex_id(tid_h, 32), _hex_id(headers.get("x-b3-spanid", ""), 16)
        if tid is not None and sid is not None:
            sampled = _b3_sampled(headers.get("x-b3-sampled", ""))
            if headers.get("x-b3-flags", "").strip() == "1":
                sampled = True
            return Parent(tid, sid, sampled)
    return None


def sample(trace_id: str, percent: float) -> bool:
    """Whether a new trace is recorded at ``percent`` (0-100), decided by its id."""
    if percent >= 100:
        return True
    if percent <= 0:
        return False
    return int(trace_id[16:], 16) < int(percent / 100 * (1 << 64))


Lazy = Callable[[], tuple[str, dict[str, Any]]]


@dataclass(slots=True)
class Span:
    """One finished (or running) span. A request's spans are kept far more often than they are
    read, so the name and attributes may come from ``lazy`` (name, attributes), called once when
    the span is first read (``resolve``)."""
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: str
    start: float                       # time.monotonic() seconds
    end: float = 0.0
    attributes: dict[str, Any] = field(default_factory=dict)
    status: str = UNSET
    lazy: Lazy | None = None

    def resolve(self) -> Span:
        if self.lazy is not None:
            lazy, self.lazy = self.lazy, None
            self.name, self.attributes = lazy()
        return self

    def json(self, service: str) -> dict[str, Any]:
        self.resolve()
        return {"span_id": self.span_id, "parent_span_id": self.parent_span_id, "name": self.name,
                "service": service, "kind": self.kind, "start_unix_nano": unix_ns(self.start),
                "duration_ms": round(max(self.end - self.start, 0.0) * 1000, 3),
                "attributes": self.attributes, "status": self.status}


def begin(parent: Parent | None, percent: float) -> tuple[str, str, str, bool]:
    """A request's place in its trace: (trace id, this proxy's SERVER span id, the caller's span
    id or "", sampled). Plain values: the engine keeps them on its request record."""
    if parent is None:                 # a new trace: its id and our span's from one draw
        ids = f"{_rand.getrandbits(192):048x}"
        tid = ids[:32]
        return tid, ids[32:], "", percent >= 100 or sample(tid, percent)
    sampled = parent.sampled if parent.sampled is not None else sample(parent.trace_id, percent)
    return parent.trace_id, new_span_id(), parent.span_id, sampled


def upstream_headers(trace_id: str, server_span_id: str, span_id: str, sampled: bool,
                     tracestate: str = "", b3_single: bool = False) -> list[tuple[str, str]]:
    """What an upstream request carries when ``span_id`` (its CLIENT span) is its parent: W3C
    and B3 multi headers, ``tracestate`` as received, the single ``b3`` header if the client used it."""
    flag = "1" if sampled else "0"
    out = [("traceparent", f"00-{trace_id}-{span_id}-0{flag}")]
    if tracestate:
        out.append(("tracestate", tracestate))
    out += [("x-b3-traceid", trace_id), ("x-b3-spanid", span_id), ("x-b3-parentspanid", server_span_id),
            ("x-b3-sampled", flag)]
    if b3_single:
        out.append(("b3", f"{trace_id}-{span_id}-{flag}-{server_span_id}"))
    return out


class TraceRing(Generic[T]):
    """The most recent sampled requests of this proxy, in a ring of slots made once.

    A slot is overwritten in place (``claim`` hands out the oldest), so keeping a request
    allocates nothing: objects kept per request and freed much later make CPython's collector
    run hundreds of times a second under load, with full passes of ~20 ms. Spans are made from
    the slots only when someone reads them (``recent``)."""

    def __init__(self, limit: int, make: Callable[[], T]) -> None:
        self.make = make
        self.slots: list[T] = [make() for _ in range(max(0, limit))]
        self.next = 0
        self.used = 0

    @property
    def limit(self) -> int:
        return len(self.slots)

    def claim(self) -> T | None:
        """The slot to fill with the request that just finished (None when nothing is kept)."""
        if not self.slots:
            return None
        slot = self.slots[self.next]
        self.next = (self.next + 1) % len(self.slots)
        if self.used < len(self.slots):
            self.used += 1
        return slot

    def resize(self, limit: int) -> None:
        limit = max(0, limit)
        if limit == len(self.slots):
            return
        kept = self.newest_first()[:limit]
        kept.reverse()
        self.slots = kept + [self.make() for _ in range(limit - len(kept))]
        self.used = len(kept)
        self.next = len(kept) % limit if limit else 0

    def newest_first(self) -> list[T]:
        n = len(self.slots)
        return [self.slots[(self.next - 1 - i) % n] for i in range(self.used)]

    def recent(self, trace_id: Callable[[T], str], limit: int | None = None) -> list[tuple[str, list[T]]]:
        """Traces, newest first (a trace seen again moves to the front), at most ``limit``, each
        with the slots of its requests."""
        out: dict[str, list[T]] = {}
        for slot in self.newest_first():
            tid = trace_id(slot)
            got = out.get(tid)
            if got is None:
                if limit is not None and len(out) >= limit:
                    continue
                got = out[tid] = []
            got.append(slot)
        return list(out.items())


def trace_json(trace_id: str, spans: Iterable[Span], service: str) -> dict[str, Any]:
    """A trace as ``/debug/traces`` serves it (spans in start order)."""
    return {"trace_id": trace_id,
            "spans": [s.json(service) for s in sorted(spans, key=lambda s: s.start)]}
