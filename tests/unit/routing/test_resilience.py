"""Load balancing, circuit breaking, outlier detection and the token bucket."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator

import pytest

from zeromesh.routing.resilience import (
    NO_HEALTHY_UPSTREAM,
    OVERFLOW_REPLY,
    Admission,
    HostSet,
    LbKind,
    LoadBalancer,
    OutlierDetector,
    OutlierPolicy,
    PoolAccountant,
    PoolLimits,
    RateLimitPolicy,
    TargetRef,
    TokenBucket,
    compile_rate_limit,
    connection_reusable,
    healthy_endpoints,
    outlier_status,
    pick_least_request,
    pick_random,
)
from zeromesh.routing.retry import Failure, FailureKind, GiveUp, UpstreamResponse

EPS = ["a", "b", "c", "d"]


def seq(*values: float) -> Iterator[float]:
    return iter(values)


def rng_of(*values: float):  # type: ignore[no-untyped-def]
    it = seq(*values)
    return lambda: next(it)


# ---- (a) load balancing -------------------------------------------------------------------

def test_round_robin_is_stable_and_wraps() -> None:
    lb = LoadBalancer(LbKind.ROUND_ROBIN, rng=lambda: 0.0)
    assert [lb.pick(EPS) for _ in range(6)] == ["a", "b", "c", "d", "a", "b"]


def test_round_robin_follows_a_shrinking_list() -> None:
    lb = LoadBalancer(LbKind.ROUND_ROBIN, rng=lambda: 0.0)
    assert [lb.pick(EPS) for _ in range(3)] == ["a", "b", "c"]
    assert [lb.pick(["a", "b"]) for _ in range(3)] == ["b", "a", "b"]  # position 3, 4, 5 mod 2


@pytest.mark.parametrize(("exclude", "expected"), [
    ((), ["a", "b", "c"]),
    (("a",), ["b", "b", "c"]),
    (("a", "b"), ["c", "c", "c"]),
    (("a", "b", "c", "d"), ["a", "b", "c"]),  # everything tried: take the next anyway
])
def test_round_robin_skips_tried_hosts(exclude: tuple[str, ...], expected: list[str]) -> None:
    lb = LoadBalancer(LbKind.ROUND_ROBIN, rng=lambda: 0.0)
    got = [lb.pick(EPS, exclude=exclude)]
    lb2 = LoadBalancer(LbKind.ROUND_ROBIN, rng=lambda: 0.0, start=1)
    got.append(lb2.pick(EPS, exclude=exclude))
    lb3 = LoadBalancer(LbKind.ROUND_ROBIN, rng=lambda: 0.0, start=2)
    got.append(lb3.pick(EPS, exclude=exclude))
    assert got == expected


@pytest.mark.parametrize(("r", "expected"), [(0.0, "a"), (0.2499, "a"), (0.25, "b"), (0.75, "d"),
                                             (0.99999, "d"), (1.0, "d")])
def test_random_pick(r: float, expected: str) -> None:
    assert pick_random(EPS, lambda: r) == expected
    assert LoadBalancer(LbKind.RANDOM, rng=lambda: r).pick(EPS) == expected


def test_random_avoids_excluded() -> None:
    assert pick_random(EPS, lambda: 0.0, exclude={"a", "b"}) == "c"
    assert pick_random(EPS, lambda: 0.0, exclude=set(EPS)) == "a"


def test_random_is_uniform() -> None:
    rng = random.Random(3).random
    counts = Counter(pick_random(EPS, rng) for _ in range(4000))
    assert all(abs(counts[e] / 4000 - 0.25) < 0.03 for e in EPS)


@pytest.mark.parametrize(("draws", "active", "expected"), [
    ((0.0, 0.5), {"a": 3, "c": 1}, "c"),  # samples a then c: c has fewer
    ((0.5, 0.0), {"a": 3, "c": 1}, "c"),  # c then a: keep c
    ((0.0, 0.5), {"a": 1, "c": 1}, "a"),  # a tie keeps the first sample
    ((0.0, 0.0), {"a": 9}, "a"),  # sampled twice (with replacement)
    ((0.75, 0.25), {}, "d"),  # nothing active anywhere: the first sample
])
def test_least_request_power_of_two(draws: tuple[float, float], active: dict[str, int],
                                    expected: str) -> None:
    assert pick_least_request(EPS, active, rng_of(*draws)) == expected
    assert LoadBalancer(LbKind.LEAST_REQUEST, rng=rng_of(*draws)).pick(EPS, active=active) == expected


def test_least_request_choice_count() -> None:
    active = {"a": 5, "b": 4, "c": 3, "d": 0}
    assert pick_least_request(EPS, active, rng_of(0.0, 0.3, 0.6), choices=3) == "c"
    assert pick_least_request(EPS, active, rng_of(0.0), choices=1) == "a"


def test_least_request_prefers_idle_hosts_statistically() -> None:
    active = {"a": 10, "b": 10, "c": 10, "d": 0}
    rng = random.Random(5).random
    counts = Counter(pick_least_request(EPS, active, rng) for _ in range(4000))
    # d wins whenever it is one of two samples: 1 - (3/4)^2 = 7/16
    assert abs(counts["d"] / 4000 - 7 / 16) < 0.03


@pytest.mark.parametrize("kind", [LbKind.ROUND_ROBIN, LbKind.RANDOM, LbKind.LEAST_REQUEST])
def test_empty_endpoint_list(kind: LbKind) -> None:
    assert LoadBalancer(kind, rng=lambda: 0.0).pick([]) is None


def test_passthrough_has_no_choice() -> None:
    with pytest.raises(ValueError, match="original destination"):
        LoadBalancer(LbKind.PASSTHROUGH, rng=lambda: 0.0).pick(EPS)


@pytest.mark.parametrize(("ejected", "threshold", "expected"), [
    (set(), 0, HostSet(("a", "b", "c", "d"))),
    ({"a"}, 0, HostSet(("b", "c", "d"))),
    ({"a", "b", "c", "d"}, 0, HostSet(())),  # Istio default (minHealthPercent 0): no panic, 503
    ({"a", "b", "c", "d"}, 50, HostSet(("a", "b", "c", "d"), panic=True)),
    ({"a", "b"}, 50, HostSet(("c", "d"))),  # exactly 50% healthy is not below 50
    ({"a", "b", "c"}, 50, HostSet(("a", "b", "c", "d"), panic=True)),
    ({"a"}, 100, HostSet(("a", "b", "c", "d"), panic=True)),
])
def test_healthy_endpoints_and_panic(ejected: set[str], threshold: float, expected: HostSet) -> None:
    assert healthy_endpoints(EPS, ejected, threshold) == expected


def test_no_endpoints_at_all() -> None:
    assert healthy_endpoints([], set(), 50) == HostSet(())
    assert GiveUp(503, "no healthy upstream", "UH") == NO_HEALTHY_UPSTREAM


# ---- (b) connection pool ------------------------------------------------------------------

A, Q, X = Admission.ADMIT, Admission.QUEUE, Admission.OVERFLOW


@pytest.mark.parametrize(("limits", "streams", "expected"), [
    (PoolLimits(), 1, [A, A, A, A, A]),
    # Istio's circuit-breaking task: one connection, one pending request
    (PoolLimits(max_connections=1, max_pending=1), 1, [A, Q, X, X, X]),
    (PoolLimits(max_connections=2, max_pending=2), 1, [A, A, Q, Q, X]),
    (PoolLimits(max_connections=1), 1, [A, Q, Q, Q, Q]),  # unlimited queue
    (PoolLimits(max_connections=1, max_pending=0), 1, [A, X, X, X, X]),
    (PoolLimits(max_requests=2), 1, [A, A, X, X, X]),  # http2MaxRequests never queues
    (PoolLimits(max_requests=2, max_connections=5, max_pending=5), 1, [A, A, X, X, X]),
    (PoolLimits(max_connections=1, max_pending=1), 3, [A, A, A, Q, X]),  # HTTP/2 streams
])
def test_admission(limits: PoolLimits, streams: int, expected: list[Admission]) -> None:
    pool = PoolAccountant(limits, streams_per_connection=streams)
    assert [pool.admit() for _ in expected] == expected


def test_release_starts_the_queue() -> None:
    pool = PoolAccountant(PoolLimits(max_connections=1, max_pending=2))
    assert [pool.admit() for _ in range(4)] == [A, Q, Q, X]
    assert (pool.active, pool.pending) == (1, 2)
    assert pool.release() is True
    assert (pool.active, pool.pending) == (1, 1)
    pool.cancel_pending()
    assert (pool.active, pool.pending) == (1, 0)
    assert pool.release() is False
    assert (pool.active, pool.pending) == (0, 0)
    assert pool.release() is False and pool.active == 0  # never negative
    pool.cancel_pending()
    assert pool.pending == 0


@pytest.mark.parametrize(("limits", "active", "expected"), [
    (PoolLimits(), 0, [True] * 5),
    (PoolLimits(max_retries=2), 0, [True, True, False, False, False]),
    (PoolLimits(max_retries=2, retry_budget_percent=20), 0, [True, True, True, False, False]),
    # budget: max(min concurrency 3, 20% of 20 active) = 4
    (PoolLimits(retry_budget_percent=20), 20, [True, True, True, True, False]),
    (PoolLimits(retry_budget_percent=50, min_retry_concurrency=1), 2, [True, False, False, False, False]),
])
def test_retry_circuit_breaker(limits: PoolLimits, active: int, expected: list[bool]) -> None:
    pool = PoolAccountant(limits)
    for _ in range(active):
        pool.admit()
    assert [pool.try_start_retry() for _ in expected] == expected
    pool.end_retry()
    assert pool.try_start_retry() is True  # the freed slot is usable again


def test_retry_slots_come_back() -> None:
    pool = PoolAccountant(PoolLimits(max_retries=1))
    assert pool.try_start_retry() and not pool.try_start_retry()
    pool.end_retry()
    assert pool.try_start_retry()
    pool.end_retry()
    pool.end_retry()
    assert pool.retries == 0


@pytest.mark.parametrize(("limit", "served", "expected"), [
    (None, 1000, True), (1, 0, True), (1, 1, False), (3, 2, True), (3, 3, False),
])
def test_connection_reuse(limit: int | None, served: int, expected: bool) -> None:
    assert connection_reusable(served, PoolLimits(max_requests_per_connection=limit)) is expected


def test_overflow_reply() -> None:
    assert GiveUp(
        503, "upstream connect error or disconnect/reset before headers. reset reason: overflow", "UO",
        (("x-envoy-overloaded", "true"),)) == OVERFLOW_REPLY


# ---- (c) outlier detection ----------------------------------------------------------------

TEN = [f"e{i}" for i in range(10)]


def detector(policy: OutlierPolicy, endpoints: list[str] = TEN) -> OutlierDetector:
    return OutlierDetector(policy, endpoints, now=0.0)


@pytest.mark.parametrize(("result", "status"), [
    (200, 200), (UpstreamResponse(502), 502), (Failure(FailureKind.CONNECT_FAILURE), 503),
    (Failure(FailureKind.RESET), 503), (Failure(FailureKind.DISCONNECT), 503),
    (Failure(FailureKind.REFUSED_STREAM), 503), (Failure(FailureKind.PER_TRY_TIMEOUT), 504),
    (Failure(FailureKind.OVERFLOW), None),
])
def test_outlier_status(result: int | UpstreamResponse | Failure, status: int | None) -> None:
    assert outlier_status(result) == status


def test_five_consecutive_5xx_eject() -> None:
    d = detector(OutlierPolicy())
    assert [d.record("e0", 500, 1.0) for _ in range(5)] == [False] * 4 + [True]
    assert d.ejected(1.0) == {"e0"}
    assert d.ejection_count("e0") == 1


def test_a_success_resets_the_count() -> None:
    d = detector(OutlierPolicy(consecutive_5xx=3))
    for status in (500, 503, 200, 500, 500):
        assert d.record("e0", status, 1.0) is False
    assert d.record("e0", 500, 1.0) is True


def test_4xx_resets_too() -> None:
    d = detector(OutlierPolicy(consecutive_5xx=2))
    assert [d.record("e0", s, 1.0) for s in (500, 404, 500, 500)] == [False, False, False, True]


def test_gateway_errors_only_when_configured() -> None:
    d = detector(OutlierPolicy(consecutive_5xx=0, consecutive_gateway_errors=2))
    assert [d.record("e0", s, 1.0) for s in (502, 500, 503, 504)] == [False, False, False, True]
    d = detector(OutlierPolicy(consecutive_5xx=0))  # both off: never ejected
    assert not any(d.record("e0", 503, 1.0) for _ in range(50))


def test_failures_count_as_gateway_errors() -> None:
    d = detector(OutlierPolicy(consecutive_5xx=0, consecutive_gateway_errors=3))
    results = [Failure(FailureKind.CONNECT_FAILURE), Failure(FailureKind.PER_TRY_TIMEOUT),
               Failure(FailureKind.OVERFLOW), UpstreamResponse(502)]
    assert [d.record("e0", r, 1.0) for r in results] == [False, False, False, True]


def test_unknown_endpoints_are_ignored() -> None:
    d = detector(OutlierPolicy(consecutive_5xx=1))
    assert d.record("zz", 500, 1.0) is False
    assert d.ejected(1.0) == frozenset()


@pytest.mark.parametrize(("n", "percent", "always_one", "ejectable"), [
    (10, 10, False, 1),
    (20, 10, False, 2),
    (4, 10, False, 0),  # Envoy's default 10% ejects nothing from fewer than ten endpoints
    (4, 10, True, 1),  # always_eject_one_host (Istio does not set it)
    (4, 25, False, 1),
    (4, 50, False, 2),
    (3, 100, False, 3),
    (3, 0, True, 1),
    (1, 100, False, 1),
])
def test_max_ejection_percent(n: int, percent: int, always_one: bool, ejectable: int) -> None:
    eps = [f"e{i}" for i in range(n)]
    d = detector(OutlierPolicy(consecutive_5xx=1, max_ejection_percent=percent,
                               always_eject_one_host=always_one), eps)
    for e in eps:
        d.record(e, 500, 1.0)
    assert len(d.ejected(1.0)) == ejectable


def test_uneject_on_the_sweep_after_base_time() -> None:
    # sweeps at 10, 20, 30, 40 ... (interval 10 s from creation at 0)
    d = detector(OutlierPolicy(consecutive_5xx=1, base_ejection_time_s=30))
    assert d.record("e0", 500, 5.0)
    assert d.is_ejected("e0", 34.9)  # the 30 s sweep: only 25 s elapsed
    assert d.is_ejected("e0", 39.9)
    assert not d.is_ejected("e0", 40.0)  # the 40 s sweep: 35 s elapsed


def test_ejection_time_grows_and_shrinks() -> None:
    d = detector(OutlierPolicy(consecutive_5xx=1, base_ejection_time_s=30))
    assert d.record("e0", 500, 0.0)  # multiplier 1: out for 30 s
    assert not d.is_ejected("e0", 30.0)
    assert d.record("e0", 500, 30.0)  # ejected again before any healthy sweep: multiplier 2
    assert d.is_ejected("e0", 80.0)
    assert not d.is_ejected("e0", 90.0)  # 60 s
    # healthy from 90: the sweeps at 100 and 110 bring the multiplier from 2 down to 0
    assert d.record("e0", 500, 115.0)
    assert not d.is_ejected("e0", 150.0)  # multiplier back to 1: 30 s (sweep at 150)


def test_ejection_time_is_capped() -> None:
    pol = OutlierPolicy(consecutive_5xx=1, interval_s=1, base_ejection_time_s=10,
                        max_ejection_time_s=25)
    d = detector(pol)
    t = 0.0
    spans = []
    for _ in range(4):
        assert d.record("e0", 500, t)
        start = t
        while d.is_ejected("e0", t):
            t += 1
        spans.append(t - start)
    assert spans == [10, 20, 25, 25]


def test_default_max_ejection_time() -> None:
    assert OutlierPolicy().max_ejection_s == 300.0
    assert OutlierPolicy(base_ejection_time_s=600).max_ejection_s == 600.0


def test_counters_reset_on_uneject() -> None:
    d = detector(OutlierPolicy(consecutive_5xx=3, base_ejection_time_s=10))
    for _ in range(3):
        d.record("e0", 500, 0.0)
    d.record("e0", 500, 1.0)  # counted while ejected
    d.record("e0", 500, 2.0)
    assert not d.is_ejected("e0", 10.0)
    assert [d.record("e0", 500, 11.0) for _ in range(3)] == [False, False, True]


def test_blocked_ejection_resets_the_counter() -> None:
    d = detector(OutlierPolicy(consecutive_5xx=2, max_ejection_percent=10), ["a", "b", "c"])
    assert [d.record("a", 500, 1.0) for _ in range(4)] == [False] * 4
    assert d.ejected(1.0) == frozenset()


def test_all_ejected_then_no_healthy_upstream() -> None:
    eps = ["a", "b"]
    pol = OutlierPolicy(consecutive_5xx=1, max_ejection_percent=100)
    d = detector(pol, eps)
    for e in eps:
        d.record(e, 503, 1.0)
    assert healthy_endpoints(eps, d.ejected(1.0), pol.min_health_percent) == HostSet(())
    panicky = OutlierPolicy(consecutive_5xx=1, max_ejection_percent=100, min_health_percent=50)
    assert healthy_endpoints(eps, d.ejected(1.0), panicky.min_health_percent) == HostSet(
        ("a", "b"), panic=True)


def test_membership_changes() -> None:
    d = detector(OutlierPolicy(consecutive_5xx=1, max_ejection_percent=50), ["a", "b"])
    assert d.record("a", 500, 1.0)
    d.set_endpoints(["a", "b", "c", "d"], 2.0)
    assert d.ejected(2.0) == {"a"}
    assert d.record("c", 500, 2.0)  # 2 of 4 ejected is 50%
    assert not d.record("d", 500, 2.0)
    d.set_endpoints(["b", "d"], 3.0)
    assert d.ejected(3.0) == frozenset()
    assert d.record("d", 500, 3.0) is True  # its blocked ejection had reset the counter; 1 of 2 is 50%


def test_long_idle_time_is_cheap_and_aligned() -> None:
    d = detector(OutlierPolicy(consecutive_5xx=1, interval_s=10, base_ejection_time_s=10))
    assert d.ejected(1e9) == frozenset()
    assert d.record("e0", 500, 1e9 + 5)
    assert d.is_ejected("e0", 1e9 + 14)
    assert not d.is_ejected("e0", 1e9 + 20)  # sweeps stay on the 10 s grid


# ---- (d) token bucket and LocalRateLimit --------------------------------------------------

def test_bucket_starts_full_and_refills_in_steps() -> None:
    b = TokenBucket(3, 1, 1.0, now=0.0)
    assert [b.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert b.take(0.999) is False
    assert b.take(1.0) is True
    assert b.take(1.5) is False
    assert b.tokens(3.2) == 2  # refills at 2.0 and 3.0
    assert b.tokens(100.0) == 3  # capped at maxTokens


def test_bucket_fill_is_capped_and_aligned() -> None:
    b = TokenBucket(10, 4, 0.1, now=0.0)
    for _ in range(10):
        assert b.take(0.0)
    assert b.tokens(0.05) == 0
    assert b.tokens(0.3) == 10  # three fills of 4, capped
    assert [b.take(0.3, 5), b.take(0.3, 5), b.take(0.3)] == [True, True, False]
    assert b.tokens(0.39) == 0 and b.tokens(0.4) == 4


@pytest.mark.parametrize("args", [(0, 1, 1.0), (1, 0, 1.0), (1, 1, 0.0)])
def test_bucket_refuses_nonsense(args: tuple[int, int, float]) -> None:
    with pytest.raises(ValueError):
        TokenBucket(*args, now=0.0)


LRL = {
    "apiVersion": "zeromesh.io/v1alpha1", "kind": "LocalRateLimit",
    "metadata": {"name": "limit", "namespace": "shop"},
    "spec": {
        "targetRefs": [{"kind": "Service", "group": "", "name": "reviews"},
                       {"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "waypoint"}],
        "tokenBucket": {"maxTokens": 2, "tokensPerFill": 1, "fillInterval": "500ms"},
        "responseStatus": 429,
        "responseHeaders": {"X-Limited": "yes"},
    },
}


def test_compile_rate_limit() -> None:
    policy = compile_rate_limit(LRL)
    assert policy == RateLimitPolicy(
        namespace="shop", name="limit",
        targets=(TargetRef("", "Service", "reviews"),
                 TargetRef("gateway.networking.k8s.io", "Gateway", "waypoint")),
        max_tokens=2, tokens_per_fill=1, fill_interval_s=0.5, response_status=429,
        response_headers=(("x-limited", "yes"),))
    assert policy.reply == GiveUp(429, "local_rate_limited", "RL", (("x-limited", "yes"),))
    assert policy.applies_to("", "Service", "reviews", "shop")
    assert not policy.applies_to("", "Service", "reviews", "other")
    assert not policy.applies_to("", "Service", "ratings", "shop")
    bucket = policy.bucket(now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [True, True, False]
    assert bucket.take(0.5)


def test_compile_rate_limit_defaults() -> None:
    minimal = {"metadata": {"name": "l", "namespace": "ns"},
               "spec": {"targetRefs": [{"kind": "Service", "name": "s"}],
                        "tokenBucket": {"maxTokens": 5, "fillInterval": "1m"}}}
    policy = compile_rate_limit(minimal)
    assert (policy.tokens_per_fill, policy.fill_interval_s, policy.response_status,
            policy.response_headers) == (1, 60.0, 429, ())
    assert policy.targets == (TargetRef("", "Service", "s"),)
