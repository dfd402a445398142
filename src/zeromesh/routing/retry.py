"""Retries and timeouts of one request, decided as Envoy's router does for Istio.

The waypoint's IO code drives a :class:`RetryState`: it sends an attempt, arms
:meth:`RetryState.attempt_timeout`, and reports what came back (an
:class:`UpstreamResponse` with the response headers, or a :class:`Failure`) to
:meth:`RetryState.next_action`, which answers :class:`Retry` (wait, then try again,
preferably on an endpoint not in :attr:`RetryState.attempted`), :class:`Done`
(forward that upstream response) or :class:`GiveUp` (send this local reply).
Decisions are taken on response headers: once a response has been forwarded,
nothing is retried, and a timeout can only reset the downstream stream.

Semantics (Envoy ``retry_state_impl.cc``/``router.cc``, Istio ``route/retry``):

* No ``retries`` on the route means Istio's default policy, :data:`DEFAULT_RETRY_POLICY`:
  2 retries on connect-failure, refused-stream, gRPC unavailable/cancelled, and
  status 503 (``retriable-status-codes`` with codes [503]). ``attempts: 0`` disables
  retries. ``attempts`` counts retries, so a request is tried at most attempts+1 times.
* A VirtualService ``retryOn`` replaces the list; its numbers are the retriable codes.
  A ``retries`` block without ``retryOn`` keeps the default list *and* code 503 (Istio
  keeps the default ``RetriableStatusCodes``); since the compiled policy cannot tell
  that list from the same list written out, a written-out default also retries 503.
* Responses: ``5xx`` retries any 5xx, ``gateway-error`` 502/503/504, ``retriable-4xx``
  409, ``retriable-status-codes`` the listed codes, the gRPC names the ``grpc-status``
  of a trailers-only response. A response carrying ``x-envoy-ratelimited`` is retried
  only under ``envoy-ratelimited``. ``retriable-headers`` needs header matchers
  Istio cannot express, so it never matches.
* Failures (Envoy's stream resets): an overflow is never retried; a connect failure
  is retried under ``connect-failure``; any failure under ``reset``, ``5xx`` or
  ``gateway-error``; a failure before the request was sent under
  ``reset-before-request``; an HTTP/2 REFUSED_STREAM under ``refused-stream``.
  A per-try timeout is a local reset: it is retried only under ``5xx``,
  ``gateway-error`` or ``reset`` -- Istio's default policy does not retry it.
* Backoff: Envoy's fully jittered exponential backoff; retry N waits
  ``floor(rng() * min(2**(N-1) * base, max))`` ms, base 25 ms (or ``retries.backoff``),
  max 10 x base.
* The route timeout (``timeout``; an HTTPRoute's ``backendRequest`` replaces it, as
  Istio's conversion does when the rule has no ``retry``) bounds every attempt and
  every backoff; the per-try timeout bounds one attempt. A retry whose backoff would
  end at or after the deadline is answered at once with the 504 Envoy would send
  when the deadline fires.
* Local replies: timeouts answer 504 ``upstream request timeout``; resets and connect
  failures 503 ``upstream connect error or disconnect/reset before headers. reset
  reason: ...`` (``retried and the latest reset reason`` after a retry); a pool
  overflow 503 with ``x-envoy-overloaded: true``. An exhausted retriable *response*
  is forwarded as it is (:class:`Done` with flag URX). Flags are Envoy's
  access-log response flags.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from zeromesh.routing.model import RetryPolicy, RouteAction
from zeromesh.routing.select import Rng

ISTIO_DEFAULT_RETRY_ON = frozenset({"connect-failure", "refused-stream", "unavailable", "cancelled",
                                    "retriable-status-codes"})
"""Istio's default ``retryOn`` (what ``compile.DEFAULT_RETRY_ON`` also holds)."""

DEFAULT_RETRY_POLICY = RetryPolicy(attempts=2, retry_on=ISTIO_DEFAULT_RETRY_ON | {"503"})
"""Istio's policy for a route that says nothing about retries."""

DEFAULT_BACKOFF_S = 0.025
"""Envoy's base retry interval; the maximum defaults to ten times the base."""

RETRY_ON_NAMES = frozenset({
    "5xx", "gateway-error", "reset", "reset-before-request", "connect-failure",
    "envoy-ratelimited", "retriable-4xx", "refused-stream", "retriable-status-codes",
    "retriable-headers", "http3-post-connect-failure", "cancelled", "deadline-exceeded",
    "internal", "resource-exhausted", "unavailable",
})
"""Every ``retryOn`` name Istio accepts (besides status codes)."""

GRPC_RETRY_ON = {"cancelled": 1, "deadline-exceeded": 4, "resource-exhausted": 8, "internal": 13,
                 "unavailable": 14}
"""gRPC retry names and the ``grpc-status`` each one retries."""

UPSTREAM_TIMEOUT_BODY = "upstream request timeout"
_RESET_BODY = "upstream connect error or disconnect/reset before headers. "


class FailureKind(Enum):
    """Why an attempt produced no response headers. Values are Envoy's reset reasons."""

    CONNECT_FAILURE = "remote connection failure"  # refused, unreachable, connect timeout
    DISCONNECT = "connection termination"  # the upstream closed the connection
    RESET = "remote reset"  # the upstream reset the stream
    REFUSED_STREAM = "remote refused stream reset"  # HTTP/2 REFUSED_STREAM
    PER_TRY_TIMEOUT = "local reset"  # the attempt timer fired (see attempt_timeout)
    OVERFLOW = "overflow"  # the connection pool refused the request (circuit breaker)


_FAILURE_FLAG = {
    FailureKind.CONNECT_FAILURE: "UF", FailureKind.DISCONNECT: "UC", FailureKind.RESET: "UR",
    FailureKind.REFUSED_STREAM: "UR", FailureKind.PER_TRY_TIMEOUT: "UT", FailureKind.OVERFLOW: "UO",
}


@dataclass(frozen=True, slots=True)
class Failure:
    """An attempt that ended without response headers. ``request_sent`` says whether
    any of the request reached the upstream (only ``reset-before-request`` cares;
    a connect failure never sent anything)."""

    kind: FailureKind
    request_sent: bool = True


@dataclass(frozen=True, slots=True)
class UpstreamResponse:
    """Response headers of an attempt; names lower-case. ``grpc-status`` among them
    means a trailers-only gRPC response."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def grpc_status(self) -> int | None:
        value = self.headers.get("grpc-status")
        return int(value) if value is not None and value.strip().isdigit() else None


Outcome = UpstreamResponse | Failure


@dataclass(frozen=True, slots=True)
class Retry:
    """Wait ``delay_s``, then send attempt number ``attempt`` (2 = the first retry)."""

    delay_s: float
    attempt: int


@dataclass(frozen=True, slots=True)
class Done:
    """Forward this upstream response. ``flags`` is "URX" when it was retriable but no
    retry was left, "UO" when the retry circuit breaker refused one."""

    response: UpstreamResponse
    flags: str = ""


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Answer the client locally with this reply."""

    status: int
    body: str
    flags: str
    headers: tuple[tuple[str, str], ...] = ()


Action = Retry | Done | GiveUp

ROUTE_TIMEOUT = GiveUp(504, UPSTREAM_TIMEOUT_BODY, "UT")
"""The route timeout fired before response headers arrived."""


class RetryBudget(Protocol):
    """Envoy's ``max_retries`` circuit breaker (``PoolAccountant`` implements it)."""

    def try_start_retry(self) -> bool:
        """Count one more retry in flight, or refuse (overflow)."""
        ...

    def end_retry(self) -> None:
        """That retry's attempt is over."""
        ...


def retriable_status_codes(policy: RetryPolicy) -> frozenset[int]:
    """Numeric ``retry_on`` entries; Istio's default list alone also means 503."""
    codes = frozenset(int(p) for p in policy.retry_on if p.strip().isdigit())
    if not codes and {p.strip() for p in policy.retry_on} == ISTIO_DEFAULT_RETRY_ON:
        return frozenset({503})
    return codes


def effective_retry_policy(action: RouteAction) -> RetryPolicy | None:
    """The policy Envoy runs for a route: Istio's default when the route has none,
    None (no retries) when ``attempts`` is 0 or less."""
    policy = action.retries if action.retries is not None else DEFAULT_RETRY_POLICY
    return policy if policy.attempts > 0 else None


def route_timeout_s(action: RouteAction) -> float | None:
    """The deadline of the whole request: an HTTPRoute ``backendRequest`` replaces
    ``request`` (Istio's conversion of a rule without ``retry``); None = no timeout."""
    if action.backend_timeout_s:
        return action.backend_timeout_s
    return action.timeout_s or None


def would_retry(policy: RetryPolicy, outcome: Outcome) -> bool:
    """Whether ``policy`` retries this outcome (retries left or not)."""
    on = {p.strip() for p in policy.retry_on}
    if isinstance(outcome, Failure):
        kind = outcome.kind
        if kind is FailureKind.OVERFLOW:
            return False
        if kind is FailureKind.CONNECT_FAILURE and "connect-failure" in on:
            return True
        sent = outcome.request_sent and kind is not FailureKind.CONNECT_FAILURE
        if "reset-before-request" in on and not sent:
            return True
        if on & {"reset", "5xx", "gateway-error"}:
            return True
        return kind is FailureKind.REFUSED_STREAM and "refused-stream" in on
    status = outcome.status
    if "x-envoy-ratelimited" in outcome.headers:
        return "envoy-ratelimited" in on
    if "5xx" in on and 500 <= status <= 599:
        return True
    if "gateway-error" in on and status in (502, 503, 504):
        return True
    if "retriable-4xx" in on and status == 409:
        return True
    if "retriable-status-codes" in on and status in retriable_status_codes(policy):
        return True
    grpc = outcome.grpc_status
    return grpc is not None and any(GRPC_RETRY_ON[n] == grpc for n in on & GRPC_RETRY_ON.keys())


def backoff_ms(retry_number: int, base_ms: int, max_ms: int, rng: Rng) -> int:
    """Envoy's JitteredExponentialBackOffStrategy: uniform in [0, min(2**(n-1)*base, max))."""
    interval = base_ms
    for _ in range(retry_number - 1):
        interval = interval * 2 if interval < max_ms // 2 else max_ms
    return min(int(rng() * interval), interval - 1) if interval > 0 else 0


def failure_reply(failure: Failure, *, retried: bool) -> GiveUp:
    """The local reply Envoy sends when ``failure`` ends the request."""
    flag = _FAILURE_FLAG[failure.kind]
    if failure.kind is FailureKind.PER_TRY_TIMEOUT:
        return GiveUp(504, UPSTREAM_TIMEOUT_BODY, flag)
    reason = ("retried and the latest " if retried else "") + f"reset reason: {failure.kind.value}"
    headers = (("x-envoy-overloaded", "true"),) if failure.kind is FailureKind.OVERFLOW else ()
    return GiveUp(503, _RESET_BODY + reason, flag, headers)


def _with_flag(action: Done | GiveUp, flag: str) -> Done | GiveUp:
    flags = f"{flag},{action.flags}" if action.flags else flag
    if isinstance(action, Done):
        return Done(action.response, flags)
    return GiveUp(action.status, action.body, flags, action.headers)


class RetryState:
    """The retry/timeout machine of one request; every call takes the time as ``now``
    (seconds, any monotonic origin), randomness comes from ``rng``."""

    def __init__(self, policy: RetryPolicy | None, *, now: float, rng: Rng,
                 timeout_s: float | None = None, budget: RetryBudget | None = None) -> None:
        self.policy = policy if policy is not None and policy.attempts > 0 else None
        self.deadline = now + timeout_s if timeout_s else None
        self.rng = rng
        self.budget = budget
        self.retries_left = self.policy.attempts if self.policy else 0
        self.tries = 1
        self.attempted: list[str] = []
        self._holding_retry = False
        base = self.policy.backoff_s if self.policy and self.policy.backoff_s else DEFAULT_BACKOFF_S
        self._base_ms = max(1, round(base * 1000))
        self._max_ms = self._base_ms * 10

    @classmethod
    def for_route(cls, action: RouteAction, *, now: float, rng: Rng,
                  budget: RetryBudget | None = None) -> RetryState:
        """The state for a request routed by ``action`` (Istio defaults applied)."""
        return cls(effective_retry_policy(action), now=now, rng=rng,
                   timeout_s=route_timeout_s(action), budget=budget)

    def attempt_timeout(self, now: float) -> float | None:
        """How long the attempt starting now may wait for response headers: the
        per-try timeout, cut to what is left of the route timeout; None = unbounded.
        When it fires, report ``Failure(FailureKind.PER_TRY_TIMEOUT)``."""
        per_try = self.policy.per_try_timeout_s if self.policy else None
        left = max(0.0, self.deadline - now) if self.deadline is not None else None
        bounds = [t for t in (per_try, left) if t is not None]
        return min(bounds) if bounds else None

    def deadline_exceeded(self) -> GiveUp:
        """The route timer fired while waiting (e.g. during a backoff)."""
        self.finish()
        return ROUTE_TIMEOUT

    def finish(self) -> None:
        """Release the retry circuit-breaker slot; call when the request is over or
        abandoned (``next_action`` does it for each outcome it is given)."""
        if self._holding_retry and self.budget is not None:
            self.budget.end_retry()
        self._holding_retry = False

    def next_action(self, outcome: Outcome, now: float, *, endpoint: str | None = None) -> Action:
        """Decide after an attempt (sent to ``endpoint``, remembered in ``attempted``)."""
        self.finish()
        if endpoint is not None:
            self.attempted.append(endpoint)
        if self.deadline is not None and now >= self.deadline and not isinstance(outcome, UpstreamResponse):
            return ROUTE_TIMEOUT
        final = (Done(outcome) if isinstance(outcome, UpstreamResponse)
                 else failure_reply(outcome, retried=self.tries > 1))
        if self.policy is None or not would_retry(self.policy, outcome):
            return final
        if self.retries_left <= 0:
            return _with_flag(final, "URX")
        self.retries_left -= 1
        if self.budget is not None:
            if not self.budget.try_start_retry():
                return _with_flag(final, "UO")
            self._holding_retry = True
        delay = backoff_ms(self.tries, self._base_ms, self._max_ms, self.rng) / 1000
        if self.deadline is not None and now + delay >= self.deadline:
            self.finish()
            return ROUTE_TIMEOUT
        self.tries += 1
        return Retry(delay, self.tries)


__all__ = [
    "DEFAULT_BACKOFF_S", "DEFAULT_RETRY_POLICY", "GRPC_RETRY_ON", "ISTIO_DEFAULT_RETRY_ON",
    "RETRY_ON_NAMES", "ROUTE_TIMEOUT", "UPSTREAM_TIMEOUT_BODY", "Action", "Done", "Failure",
    "FailureKind", "GiveUp", "Outcome", "Retry", "RetryBudget", "RetryState", "UpstreamResponse",
    "backoff_ms", "effective_retry_policy", "failure_reply", "retriable_status_codes",
    "route_timeout_s", "would_retry",
]
