"""Weighted choice, subsets, header ops and the request model."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

import pytest

from zeromesh.routing import Backend, HeaderOps, HttpRequest, apply_header_ops, pick_backend, subset_endpoints


def B(name: str, weight: int) -> Backend:
    return Backend(name, 80, None, weight)


@pytest.mark.parametrize(("weights", "expected"), [
    ((90, 10), {"a": 0.9, "b": 0.1}),
    ((9, 1), {"a": 0.9, "b": 0.1}),      # relative shares, need not sum to 100
    ((1, 1, 2), {"a": 0.25, "b": 0.25, "c": 0.5}),
    ((0, 5), {"b": 1.0}),                # zero weight never picked
    ((7,), {"a": 1.0}),
])
def test_weighted_shares(weights: tuple[int, ...], expected: dict[str, float]) -> None:
    backends = [B("abc"[i], w) for i, w in enumerate(weights)]
    rng = random.Random(7).random
    counts = Counter(b.host for b in (pick_backend(backends, rng) for _ in range(2000)) if b)
    assert set(counts) == set(expected)
    for host, share in expected.items():
        assert abs(counts[host] / 2000 - share) <= 0.04


@pytest.mark.parametrize("weights", [(), (0,), (0, 0)])
def test_nothing_to_pick_is_none(weights: tuple[int, ...]) -> None:
    assert pick_backend([B("x", w) for w in weights], random.Random(1).random) is None


@pytest.mark.parametrize(("r", "host"), [(0.0, "a"), (0.8999, "a"), (0.9, "b"), (0.99999, "b"),
                                         (1.0, "b")])
def test_pick_boundaries(r: float, host: str) -> None:
    picked = pick_backend([B("a", 90), B("z", 0), B("b", 10)], lambda: r)
    assert picked is not None and picked.host == host


@dataclass(frozen=True)
class Ep:
    ip: str
    labels: dict[str, str] = field(default_factory=dict)


def test_subset_endpoints() -> None:
    eps = [Ep("1", {"app": "e", "version": "v1"}), Ep("2", {"app": "e", "version": "v2", "x": "y"}),
           Ep("3", {"app": "f", "version": "v2"})]
    assert [e.ip for e in subset_endpoints({"app": "e", "version": "v2"}, eps)] == ["2"]
    assert [e.ip for e in subset_endpoints({}, eps)] == ["1", "2", "3"]
    assert subset_endpoints({"version": "v9"}, eps) == []


def test_apply_header_ops() -> None:
    ops = HeaderOps(set=(("x-a", "new"),), add=(("x-b", "2"), ("x-n", "n")), remove=("x-c",))
    out = apply_header_ops(ops, {"X-A": "old", "x-b": "1", "x-c": "gone", "keep": "k"})
    assert out == {"x-a": "new", "x-b": "1, 2", "x-n": "n", "keep": "k"}
    assert not HeaderOps() and ops


def test_request_query_and_path() -> None:
    r = HttpRequest("GET", "/p/q?a=1&b=&a=2&c=x%20y", "h", {})
    assert r.path_only == "/p/q" and r.query_string == "a=1&b=&a=2&c=x%20y"
    assert dict(r.query) == {"a": "1", "b": "", "c": "x y"}
    assert HttpRequest("GET", "/", "h").query == {}
