"""Retry and timeout decisions (Envoy's router semantics for Istio routes)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from zeromesh.routing.compile import DEFAULT_RETRY_ON
from zeromesh.routing.model import RetryPolicy, RouteAction
from zeromesh.routing.retry import (
    DEFAULT_RETRY_POLICY,
    ISTIO_DEFAULT_RETRY_ON,
    ROUTE_TIMEOUT,
    Action,
    Done,
    Failure,
    FailureKind,
    GiveUp,
    Outcome,
    Retry,
    RetryState,
    UpstreamResponse,
    backoff_ms,
    effective_retry_policy,
    failure_reply,
    retriable_status_codes,
    route_timeout_s,
    would_retry,
)

R = UpstreamResponse
F = Failure
K = FailureKind
RESET_BODY = "upstream connect error or disconnect/reset before headers. "


def policy(retry_on: str, attempts: int = 2, per_try: float | None = None,
           backoff: float | None = None) -> RetryPolicy:
    return RetryPolicy(attempts, per_try, frozenset(retry_on.split(",")) if retry_on else frozenset(),
                       backoff)


def half() -> float:
    return 0.5


# ---- which outcomes a policy retries ------------------------------------------------------

DEFAULT = ",".join(sorted(ISTIO_DEFAULT_RETRY_ON))

WOULD_RETRY: list[tuple[str, Outcome, bool]] = [
    # Istio's default list: connect-failure, refused-stream, unavailable, cancelled, 503
    (DEFAULT, R(503), True),
    (DEFAULT, R(502), False),
    (DEFAULT, R(500), False),
    (DEFAULT, R(200), False),
    (DEFAULT, F(K.CONNECT_FAILURE), True),
    (DEFAULT, F(K.REFUSED_STREAM), True),
    (DEFAULT, F(K.RESET), False),
    (DEFAULT, F(K.DISCONNECT), False),
    (DEFAULT, F(K.PER_TRY_TIMEOUT), False),  # the default never retries a per-try timeout
    (DEFAULT, R(200, {"grpc-status": "14"}), True),  # unavailable
    (DEFAULT, R(200, {"grpc-status": "1"}), True),  # cancelled
    (DEFAULT, R(200, {"grpc-status": "13"}), False),  # internal is not in the default
    # 5xx: any 5xx and every failure but overflow
    ("5xx", R(500), True),
    ("5xx", R(599), True),
    ("5xx", R(499), False),
    ("5xx", F(K.CONNECT_FAILURE), True),
    ("5xx", F(K.RESET), True),
    ("5xx", F(K.DISCONNECT), True),
    ("5xx", F(K.REFUSED_STREAM), True),
    ("5xx", F(K.PER_TRY_TIMEOUT), True),
    ("5xx", F(K.OVERFLOW), False),
    # gateway-error: 502/503/504 and failures
    ("gateway-error", R(502), True),
    ("gateway-error", R(503), True),
    ("gateway-error", R(504), True),
    ("gateway-error", R(500), False),
    ("gateway-error", F(K.PER_TRY_TIMEOUT), True),
    ("gateway-error", F(K.CONNECT_FAILURE), True),
    # reset: failures only
    ("reset", F(K.RESET), True),
    ("reset", F(K.PER_TRY_TIMEOUT), True),
    ("reset", F(K.CONNECT_FAILURE), True),
    ("reset", R(503), False),
    # reset-before-request: only when nothing was sent
    ("reset-before-request", F(K.RESET, request_sent=False), True),
    ("reset-before-request", F(K.RESET), False),
    ("reset-before-request", F(K.CONNECT_FAILURE), True),
    ("reset-before-request", F(K.PER_TRY_TIMEOUT), False),
    # connect-failure and refused-stream are narrow
    ("connect-failure", F(K.CONNECT_FAILURE), True),
    ("connect-failure", F(K.RESET), False),
    ("connect-failure", F(K.PER_TRY_TIMEOUT), False),
    ("refused-stream", F(K.REFUSED_STREAM), True),
    ("refused-stream", F(K.RESET), False),
    ("refused-stream", F(K.CONNECT_FAILURE), False),
    # overflow is never retried
    ("5xx,reset,connect-failure,reset-before-request", F(K.OVERFLOW, request_sent=False), False),
    # retriable-4xx is 409 only
    ("retriable-4xx", R(409), True),
    ("retriable-4xx", R(404), False),
    ("retriable-4xx", R(429), False),
    # status codes need retriable-status-codes (Istio adds it when codes are given)
    ("retriable-status-codes,503,429", R(429), True),
    ("retriable-status-codes,503,429", R(503), True),
    ("retriable-status-codes,503,429", R(500), False),
    ("503", R(503), False),
    ("retriable-status-codes", R(503), False),  # a written retryOn without codes: none
    ("retriable-status-codes,200", R(200), True),
    # x-envoy-ratelimited: retried only under envoy-ratelimited
    ("5xx", R(503, {"x-envoy-ratelimited": "true"}), False),
    ("envoy-ratelimited", R(429, {"x-envoy-ratelimited": "true"}), True),
    ("envoy-ratelimited", R(429), False),
    # retriable-headers needs matchers Istio cannot give
    ("retriable-headers", R(503), False),
    # gRPC names read grpc-status of a trailers-only response
    ("deadline-exceeded", R(200, {"grpc-status": "4"}), True),
    ("resource-exhausted", R(200, {"grpc-status": "8"}), True),
    ("internal", R(200, {"grpc-status": "13"}), True),
    ("unavailable", R(200, {"grpc-status": "13"}), False),
    ("unavailable", R(200, {"grpc-status": "x"}), False),
    ("unavailable", R(200), False),
    # no names at all
    ("", R(503), False),
    ("", F(K.CONNECT_FAILURE), False),
]


@pytest.mark.parametrize(("retry_on", "outcome", "expected"), WOULD_RETRY)
def test_would_retry(retry_on: str, outcome: Outcome, expected: bool) -> None:
    assert would_retry(policy(retry_on), outcome) is expected


@pytest.mark.parametrize(("retry_on", "codes"), [
    (",".join(ISTIO_DEFAULT_RETRY_ON), {503}),  # a retries block without retryOn keeps 503
    ("retriable-status-codes,503,504", {503, 504}),
    ("5xx", set()),
    ("retriable-status-codes", set()),
    ("connect-failure,refused-stream", set()),
])
def test_retriable_status_codes(retry_on: str, codes: set[int]) -> None:
    assert retriable_status_codes(policy(retry_on)) == codes


def test_compiled_default_list_is_istios() -> None:
    assert DEFAULT_RETRY_ON == ISTIO_DEFAULT_RETRY_ON
    assert RetryPolicy(2, None, ISTIO_DEFAULT_RETRY_ON | {"503"}) == DEFAULT_RETRY_POLICY


@pytest.mark.parametrize(("retries", "expected"), [
    (None, DEFAULT_RETRY_POLICY),
    (RetryPolicy(0), None),
    (RetryPolicy(-1), None),
    (RetryPolicy(3, 0.5, frozenset({"5xx"})), RetryPolicy(3, 0.5, frozenset({"5xx"}))),
])
def test_effective_retry_policy(retries: RetryPolicy | None, expected: RetryPolicy | None) -> None:
    assert effective_retry_policy(RouteAction(retries=retries)) == expected


@pytest.mark.parametrize(("timeout", "backend", "expected"), [
    (None, None, None),
    (5.0, None, 5.0),
    (None, 2.0, 2.0),
    (5.0, 2.0, 2.0),  # Istio: backendRequest replaces the route timeout (no HTTPRoute retry)
])
def test_route_timeout(timeout: float | None, backend: float | None, expected: float | None) -> None:
    assert route_timeout_s(RouteAction(timeout_s=timeout, backend_timeout_s=backend)) == expected


# ---- backoff ------------------------------------------------------------------------------

@pytest.mark.parametrize(("base", "maximum", "rng", "expected"), [
    # intervals 25, 50, 100, 200, then the 250 cap: delays are [0, interval)
    (25, 250, 0.999999, [24, 49, 99, 199, 249, 249]),
    (25, 250, 1.0, [24, 49, 99, 199, 249, 249]),  # rng() == 1.0 stays inside the interval
    (25, 250, 0.0, [0, 0, 0, 0, 0, 0]),
    (25, 250, 0.5, [12, 25, 50, 100, 125, 125]),
    (100, 1000, 0.999999, [99, 199, 399, 799, 999, 999]),
    (1, 10, 0.999999, [0, 1, 3, 7, 9, 9]),
])
def test_backoff_sequence(base: int, maximum: int, rng: float, expected: list[int]) -> None:
    assert [backoff_ms(n, base, maximum, lambda: rng) for n in range(1, 7)] == expected


# ---- local replies ------------------------------------------------------------------------

@pytest.mark.parametrize(("failure", "retried", "expected"), [
    (F(K.CONNECT_FAILURE), False,
     GiveUp(503, RESET_BODY + "reset reason: remote connection failure", "UF")),
    (F(K.CONNECT_FAILURE), True,
     GiveUp(503, RESET_BODY + "retried and the latest reset reason: remote connection failure", "UF")),
    (F(K.DISCONNECT), False, GiveUp(503, RESET_BODY + "reset reason: connection termination", "UC")),
    (F(K.RESET), False, GiveUp(503, RESET_BODY + "reset reason: remote reset", "UR")),
    (F(K.REFUSED_STREAM), False,
     GiveUp(503, RESET_BODY + "reset reason: remote refused stream reset", "UR")),
    (F(K.PER_TRY_TIMEOUT), True, GiveUp(504, "upstream request timeout", "UT")),
    (F(K.OVERFLOW), False, GiveUp(503, RESET_BODY + "reset reason: overflow", "UO",
                                   (("x-envoy-overloaded", "true"),))),
])
def test_failure_reply(failure: Failure, retried: bool, expected: GiveUp) -> None:
    assert failure_reply(failure, retried=retried) == expected


# ---- the state machine --------------------------------------------------------------------

CF = F(K.CONNECT_FAILURE)
PTT = F(K.PER_TRY_TIMEOUT)
R503 = R(503)
R500 = R(500)
R200 = R(200)
URX_CF = GiveUp(503, RESET_BODY + "retried and the latest reset reason: remote connection failure",
                "URX,UF")

# (policy, route timeout, [(outcome, now)], expected actions); rng() is always 0.5
SCENARIOS: list[tuple[str, RetryPolicy | None, float | None, list[tuple[Outcome, float]], list[Action]]] = [
    ("success at once", DEFAULT_RETRY_POLICY, None, [(R200, 0.1)], [Done(R200)]),
    ("default: two retries of 503, then the last 503 is forwarded", DEFAULT_RETRY_POLICY, None,
     [(R503, 0.1), (R503, 0.2), (R503, 0.3)],
     [Retry(0.012, 2), Retry(0.025, 3), Done(R503, "URX")]),
    ("default: a retry that succeeds", DEFAULT_RETRY_POLICY, None,
     [(CF, 0.1), (R200, 0.2)], [Retry(0.012, 2), Done(R200)]),
    ("default: connect failures exhaust into a 503 local reply", DEFAULT_RETRY_POLICY, None,
     [(CF, 0.1), (CF, 0.2), (CF, 0.3)], [Retry(0.012, 2), Retry(0.025, 3), URX_CF]),
    ("default: 500 is not retried", DEFAULT_RETRY_POLICY, None, [(R500, 0.1)], [Done(R500)]),
    ("default: a per-try timeout is not retried", policy(DEFAULT, per_try=0.5), None,
     [(PTT, 0.5)], [GiveUp(504, "upstream request timeout", "UT")]),
    ("5xx retries a per-try timeout", policy("5xx", per_try=0.5), None,
     [(PTT, 0.5), (PTT, 1.1), (PTT, 1.7)],
     [Retry(0.012, 2), Retry(0.025, 3), GiveUp(504, "upstream request timeout", "URX,UT")]),
    ("zero attempts: nothing is retried", RetryPolicy(0, None, frozenset({"5xx"})), None,
     [(R503, 0.1)], [Done(R503)]),
    ("zero attempts: a connect failure answers at once", RetryPolicy(0), None,
     [(CF, 0.1)], [GiveUp(503, RESET_BODY + "reset reason: remote connection failure", "UF")]),
    ("no policy at all", None, None, [(CF, 0.1)],
     [GiveUp(503, RESET_BODY + "reset reason: remote connection failure", "UF")]),
    ("one retry", policy("5xx", attempts=1), None, [(R500, 0.1), (R500, 0.2)],
     [Retry(0.012, 2), Done(R500, "URX")]),
    ("overflow is answered, never retried", policy("5xx,reset"), None, [(F(K.OVERFLOW), 0.0)],
     [GiveUp(503, RESET_BODY + "reset reason: overflow", "UO", (("x-envoy-overloaded", "true"),))]),
    ("backoff from retries.backoff", policy("5xx", backoff=0.1), None,
     [(R500, 0.0), (R500, 1.0), (R500, 2.0)], [Retry(0.05, 2), Retry(0.1, 3), Done(R500, "URX")]),
    ("route timeout: a per-try timeout at the deadline is the route timeout", policy("5xx", per_try=5.0),
     1.0, [(PTT, 1.0)], [ROUTE_TIMEOUT]),
    ("route timeout: a failure reported after the deadline", policy("5xx"), 1.0,
     [(CF, 1.5)], [ROUTE_TIMEOUT]),
    ("route timeout: a backoff reaching the deadline answers 504 at once", policy("5xx"), 1.0,
     [(R500, 0.99)], [ROUTE_TIMEOUT]),
    ("route timeout: a backoff ending before the deadline is a retry", policy("5xx"), 1.0,
     [(R500, 0.98)], [Retry(0.012, 2)]),
    ("route timeout: a non-retriable response after the deadline is still forwarded", policy("5xx"),
     1.0, [(R200, 1.2)], [Done(R200)]),
]


@pytest.mark.parametrize(("name", "pol", "timeout", "events", "expected"), SCENARIOS,
                         ids=[s[0] for s in SCENARIOS])
def test_scenarios(name: str, pol: RetryPolicy | None, timeout: float | None,
                   events: list[tuple[Outcome, float]], expected: list[Action]) -> None:
    state = RetryState(pol, now=0.0, rng=half, timeout_s=timeout)
    got = [state.next_action(outcome, now, endpoint=f"ep{i}") for i, (outcome, now) in enumerate(events)]
    assert got == expected
    assert state.attempted == [f"ep{i}" for i in range(len(events))]


@pytest.mark.parametrize(("per_try", "timeout", "now", "expected"), [
    (None, None, 0.0, None),
    (0.25, None, 7.0, 0.25),
    (None, 1.0, 0.0, 1.0),
    (None, 1.0, 0.4, 0.6),
    (0.25, 1.0, 0.0, 0.25),
    (0.25, 1.0, 0.9, pytest.approx(0.1)),  # the route timeout is shorter than the per-try timeout
    (2.0, 1.0, 0.0, 1.0),
    (0.25, 1.0, 1.5, 0.0),  # past the deadline
])
def test_attempt_timeout(per_try: float | None, timeout: float | None, now: float,
                         expected: float | None) -> None:
    state = RetryState(policy("5xx", per_try=per_try), now=0.0, rng=half, timeout_s=timeout)
    assert state.attempt_timeout(now) == expected


def test_per_try_timeout_without_retries_is_ignored() -> None:
    """Envoy's per-try timeout belongs to the retry policy: attempts 0 has none."""
    state = RetryState(RetryPolicy(0, 0.25), now=0.0, rng=half, timeout_s=None)
    assert state.attempt_timeout(0.0) is None


def test_for_route_applies_istio_defaults() -> None:
    state = RetryState.for_route(RouteAction(timeout_s=3.0), now=10.0, rng=half)
    assert state.policy == DEFAULT_RETRY_POLICY and state.deadline == 13.0
    state = RetryState.for_route(RouteAction(retries=RetryPolicy(0), backend_timeout_s=1.0),
                                 now=10.0, rng=half)
    assert state.policy is None and state.deadline == 11.0
    assert state.next_action(R503, 10.1) == Done(R503)


def test_deadline_exceeded_during_backoff() -> None:
    state = RetryState(policy("5xx"), now=0.0, rng=half, timeout_s=1.0)
    assert isinstance(state.next_action(R500, 0.5), Retry)
    assert state.deadline_exceeded() == GiveUp(504, "upstream request timeout", "UT")


@dataclass
class Budget:
    """A max_retries circuit breaker with ``free`` slots."""
    free: int
    held: int = 0

    def try_start_retry(self) -> bool:
        if self.held >= self.free:
            return False
        self.held += 1
        return True

    def end_retry(self) -> None:
        self.held -= 1


def test_retry_budget_is_held_until_the_next_outcome() -> None:
    budget = Budget(free=1)
    state = RetryState(policy("5xx"), now=0.0, rng=half, budget=budget)
    assert state.next_action(R500, 0.1) == Retry(0.012, 2)
    assert budget.held == 1
    assert state.next_action(R200, 0.2) == Done(R200)
    assert budget.held == 0


def test_retry_budget_overflow_forwards_the_response_with_uo() -> None:
    budget = Budget(free=0)
    state = RetryState(policy("5xx"), now=0.0, rng=half, budget=budget)
    assert state.next_action(R500, 0.1) == Done(R500, "UO")
    state = RetryState(policy("5xx"), now=0.0, rng=half, budget=budget)
    assert state.next_action(CF, 0.1) == GiveUp(
        503, RESET_BODY + "reset reason: remote connection failure", "UO,UF")
    assert budget.held == 0


def test_budget_released_on_deadline_and_finish() -> None:
    budget = Budget(free=5)
    state = RetryState(policy("5xx"), now=0.0, rng=half, timeout_s=1.0, budget=budget)
    state.next_action(R500, 0.1)
    assert budget.held == 1
    state.deadline_exceeded()
    assert budget.held == 0
    state = RetryState(policy("5xx"), now=0.0, rng=half, budget=budget)
    state.next_action(R500, 0.1)
    state.finish()
    state.finish()  # idempotent
    assert budget.held == 0


def test_a_retry_past_the_deadline_releases_its_budget() -> None:
    budget = Budget(free=5)
    state = RetryState(policy("5xx"), now=0.0, rng=half, timeout_s=1.0, budget=budget)
    assert state.next_action(R500, 0.999) == ROUTE_TIMEOUT
    assert budget.held == 0


def test_grpc_status_parsing() -> None:
    assert R(200, {"grpc-status": "14"}).grpc_status == 14
    assert R(200, {"grpc-status": " 4 "}).grpc_status == 4
    assert R(200, {"grpc-status": "nope"}).grpc_status is None
    assert R(200).grpc_status is None
