"""Trace context: extraction from W3C and B3 headers, what goes upstream, sampling, the store."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zeromesh.telemetry import tracing as tr

TID = "4bf92f3577b34da6a3ce929d0e0e4736"
SID = "00f067aa0ba902b7"


@pytest.mark.parametrize(("headers", "expected"), [
    ({"traceparent": f"00-{TID}-{SID}-01"}, tr.Parent(TID, SID, True)),
    ({"traceparent": f"00-{TID}-{SID}-00", "tracestate": "a=1"}, tr.Parent(TID, SID, False, "a=1")),
    ({"traceparent": f"00-{TID.upper()}-{SID}-01"}, tr.Parent(TID, SID, True)),
    ({"traceparent": f"01-{TID}-{SID}-01-future"}, tr.Parent(TID, SID, True)),      # later versions
    ({"traceparent": f"00-{TID}-{SID}-01-extra"}, None),                              # 00 has 4 fields
    ({"traceparent": f"ff-{TID}-{SID}-01"}, None),
    ({"traceparent": f"00-{'0' * 32}-{SID}-01"}, None),
    ({"traceparent": f"00-{TID}-{'0' * 16}-01"}, None),
    ({"traceparent": "garbage"}, None),
    ({"b3": f"{TID}-{SID}-1"}, tr.Parent(TID, SID, True, b3_single=True)),
    ({"b3": f"{TID}-{SID}"}, tr.Parent(TID, SID, None, b3_single=True)),
    ({"b3": f"a3ce929d0e0e4736-{SID}-0-05e3ac9a4f6e3b90"},
     tr.Parent("0000000000000000a3ce929d0e0e4736", SID, False, b3_single=True)),
    ({"x-b3-traceid": TID, "x-b3-spanid": SID, "x-b3-sampled": "1"}, tr.Parent(TID, SID, True)),
    ({"x-b3-traceid": "a3ce929d0e0e4736", "x-b3-spanid": SID}, tr.Parent("0" * 16 + "a3ce929d0e0e4736", SID,
                                                                          None)),
    ({"x-b3-traceid": TID, "x-b3-spanid": SID, "x-b3-sampled": "0", "x-b3-flags": "1"},
     tr.Parent(TID, SID, True)),                                                      # debug wins
    ({"x-b3-traceid": TID}, None),
    # W3C wins over B3 when both came
    ({"traceparent": f"00-{TID}-{SID}-01", "x-b3-traceid": "1" * 32, "x-b3-spanid": "2" * 16},
     tr.Parent(TID, SID, True)),
    ({}, None),
])
def test_extract(headers: dict[str, str], expected: tr.Parent | None) -> None:
    assert tr.extract(headers) == expected


def test_a_request_continues_its_callers_trace_and_sends_both_formats_upstream() -> None:
    parent = tr.extract({"traceparent": f"00-{TID}-{SID}-01", "tracestate": "k=v"})
    assert parent is not None
    trace_id, server, caller, sampled = tr.begin(parent, 0)
    assert (trace_id, caller, sampled) == (TID, SID, True)          # the parent decided
    span_id = tr.new_span_id()
    h = dict(tr.upstream_headers(trace_id, server, span_id, sampled, parent.tracestate, parent.b3_single))
    assert h["traceparent"] == f"00-{TID}-{span_id}-01"
    assert h["tracestate"] == "k=v"
    assert (h["x-b3-traceid"], h["x-b3-spanid"], h["x-b3-parentspanid"], h["x-b3-sampled"]) == (
        TID, span_id, server, "1")
    assert "b3" not in h


def test_b3_single_is_answered_in_kind_and_unsampled_context_still_flows() -> None:
    parent = tr.extract({"b3": f"{TID}-{SID}-0"})
    assert parent is not None
    trace_id, server, _, sampled = tr.begin(parent, 100)
    assert not sampled
    span_id = tr.new_span_id()
    h = dict(tr.upstream_headers(trace_id, server, span_id, sampled, b3_single=parent.b3_single))
    assert h["b3"] == f"{TID}-{span_id}-0-{server}"
    assert h["traceparent"].endswith("-00")


def test_a_new_trace_has_fresh_ids() -> None:
    trace_id, span_id, caller, sampled = tr.begin(None, 100)
    assert len(trace_id) == 32 and len(span_id) == 16 and caller == "" and sampled
    assert tr.begin(None, 100)[0] != trace_id


@given(st.integers(0, (1 << 128) - 1))
def test_sampling_by_trace_id(n: int) -> None:
    tid = f"{n:032x}"
    assert tr.sample(tid, 100) and not tr.sample(tid, 0)
    assert tr.sample(tid, 50) == (int(tid[16:], 16) < 1 << 63)


def test_new_traces_are_sampled_at_the_configured_rate() -> None:
    kept = sum(tr.begin(None, 25)[3] for _ in range(4000))
    assert 800 < kept < 1200


class _Slot:
    def __init__(self) -> None:
        self.trace_id = ""
        self.n = 0


def test_ring_keeps_the_most_recent_requests_grouped_by_trace_newest_first() -> None:
    made: list[_Slot] = []

    def make() -> _Slot:
        made.append(_Slot())
        return made[-1]

    ring = tr.TraceRing(3, make)
    for n, tid in enumerate(["a", "b", "c", "b"], 1):        # b seen again; a is overwritten
        slot = ring.claim()
        assert slot is not None
        slot.trace_id, slot.n = tid, n
    assert len(made) == 3                                       # slots are made once, then reused
    got = ring.recent(lambda s: s.trace_id)
    assert [(tid, [s.n for s in slots]) for tid, slots in got] == [("b", [4, 2]), ("c", [3])]
    assert [tid for tid, _ in ring.recent(lambda s: s.trace_id, 1)] == ["b"]
    ring.resize(1)
    assert [(tid, [s.n for s in slots]) for tid, slots in ring.recent(lambda s: s.trace_id)] == [("b", [4])]
    ring.resize(3)
    slot = ring.claim()
    assert slot is not None
    slot.trace_id, slot.n = "d", 5
    assert [tid for tid, _ in ring.recent(lambda s: s.trace_id)] == ["d", "b"]
    assert tr.TraceRing(0, make).claim() is None


def test_span_json_shape_and_lazy_attributes() -> None:
    span = tr.Span(TID, SID, "", "", tr.SERVER, 10.0, 10.5, lazy=lambda: ("late", {"k": 1}))
    doc = tr.trace_json(TID, [span], "echo-wp.ns")
    (first,) = doc["spans"]
    assert set(first) == {"span_id", "parent_span_id", "name", "service", "kind", "start_unix_nano",
                          "duration_ms", "attributes", "status"}
    assert (first["name"], first["attributes"], first["duration_ms"]) == ("late", {"k": 1}, 500.0)
    assert first["service"] == "echo-wp.ns" and first["status"] == "UNSET"


@pytest.mark.parametrize("module", ["zeromesh.telemetry.masking", "zeromesh.telemetry.tracing"])
def test_masking_and_tracing_are_pure(module: str) -> None:
    """No IO in the deciders (STYLE.md); the OpenTelemetry SDK is only used by the exporter."""
    import ast
    import importlib
    from pathlib import Path

    mod = importlib.import_module(module)
    assert mod.__file__ is not None
    tree = ast.parse(Path(mod.__file__).read_text(encoding="utf-8"))
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not {n for n in names if n.split(".")[0] in ("asyncio", "socket", "subprocess", "opentelemetry")}
    assert not {n for n in names if n.startswith("zeromesh.") and not n.startswith("zeromesh.telemetry")}
