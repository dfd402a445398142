"""Endpoint choice, circuit breaking, outlier detection and local rate limiting for the
waypoint, decided as Envoy does for an Istio DestinationRule (pure: every function
takes the time as ``now`` and randomness as ``rng() -> [0, 1)``).

Vocabulary: an *endpoint* is a string key chosen by the caller ("10.244.1.5:8080");
*active* requests have an upstream connection, *pending* ones wait for one; an
*ejected* endpoint is out of the load-balancing set until its ejection time is over.

Decisions that differ from a naive reading of Istio's docs, each from Envoy's code:

* ``maxEjectionPercent`` (default 10) is checked *including* the endpoint about to be
  ejected: 100 * (ejected + 1) / endpoints must not exceed it. With fewer than ten
  endpoints the default ejects nothing; Istio does not set Envoy's
  ``always_eject_one_host`` (available here as an option, off by default).
* Ejections are immediate, un-ejections happen only on the interval sweep (every
  ``interval``, counted from the detector's creation): an endpoint returns at the
  first sweep at least min(base x multiplier, max ejection time) after its ejection.
  The multiplier grows by one per ejection and shrinks by one per sweep the endpoint
  spends healthy (at least one interval after its return). Counters reset on return.
* Panic: Istio sets Envoy's panic threshold to ``minHealthPercent`` whenever
  ``outlierDetection`` is set, and that defaults to 0 -- panic is off, so with every
  endpoint ejected there is no endpoint and the answer is 503 ``no healthy upstream``.
  With ``minHealthPercent`` above 0 (or no outlier detection: Envoy's 50) and fewer
  healthy endpoints than that share, every endpoint is used again.
* Connection pool numbers 0 mean "unset" (Istio cannot tell them apart): unlimited.
  ``http2MaxRequests`` limits active requests and ``http1MaxPendingRequests`` the
  queue whatever the upstream protocol, as Envoy's circuit breakers do today.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from zeromesh.api.durations import parse_duration
from zeromesh.routing.retry import Failure, FailureKind, GiveUp, UpstreamResponse, failure_reply
from zeromesh.routing.select import Rng

# ---- local replies ------------------------------------------------------------------------

NO_HEALTHY_UPSTREAM = GiveUp(503, "no healthy upstream", "UH")
"""No endpoint to send to (none at all, or all ejected and panic mode off)."""

OVERFLOW_REPLY = failure_reply(Failure(FailureKind.OVERFLOW), retried=False)
"""A circuit breaker refused the request: 503 with ``x-envoy-overloaded: true``."""

RATE_LIMITED_BODY = "local_rate_limited"

# ---- (a) load balancing -------------------------------------------------------------------


class LbKind(Enum):
    """DestinationRule ``loadBalancer.simple``; LEAST_CONN is Istio's old name for
    LEAST_REQUEST, which is also the default."""

    ROUND_ROBIN = "ROUND_ROBIN"
    LEAST_REQUEST = "LEAST_REQUEST"
    RANDOM = "RANDOM"
    PASSTHROUGH = "PASSTHROUGH"


def _index(rng: Rng, n: int) -> int:
    return min(int(rng() * n), n - 1)


def _candidates(endpoints: Sequence[str], exclude: Collection[str]) -> Sequence[str]:
    """Endpoints not tried yet, or all of them when every one was (Envoy's
    previous-hosts predicate re-picks, and takes a tried host when it must)."""
    fresh = [e for e in endpoints if e not in exclude]
    return fresh or endpoints


def pick_random(endpoints: Sequence[str], rng: Rng, *, exclude: Collection[str] = ()) -> str | None:
    """Uniform choice; None when there is no endpoint."""
    cands = _candidates(endpoints, exclude)
    return cands[_index(rng, len(cands))] if cands else None


def pick_least_request(endpoints: Sequence[str], active: Mapping[str, int], rng: Rng, *,
                       choices: int = 2, exclude: Collection[str] = ()) -> str | None:
    """Envoy's power of ``choices``: sample that many endpoints (with replacement), keep
    the first with the fewest active requests."""
    cands = _candidates(endpoints, exclude)
    if not cands:
        return None
    best = cands[_index(rng, len(cands))]
    for _ in range(choices - 1):
        sampled = cands[_index(rng, len(cands))]
        if active.get(sampled, 0) < active.get(best, 0):
            best = sampled
    return best


class LoadBalancer:
    """One cluster's balancer; only round robin keeps state (its position)."""

    def __init__(self, kind: LbKind, rng: Rng, *, choices: int = 2, start: int = 0) -> None:
        self.kind = kind
        self.rng = rng
        self.choices = choices
        self.position = start

    def pick(self, endpoints: Sequence[str], *, active: Mapping[str, int] | None = None,
             exclude: Collection[str] = ()) -> str | None:
        """An endpoint of ``endpoints`` (kept in the caller's stable order), avoiding
        ``exclude`` (the hosts a retry already tried) when possible; None if empty.
        PASSTHROUGH has no choice to make: connect to the original destination."""
        if self.kind is LbKind.PASSTHROUGH:
            raise ValueError("PASSTHROUGH does not pick an endpoint: use the original destination")
        if not endpoints:
            return None
        if self.kind is LbKind.RANDOM:
            return pick_random(endpoints, self.rng, exclude=exclude)
        if self.kind is LbKind.LEAST_REQUEST:
            return pick_least_request(endpoints, active or {}, self.rng, choices=self.choices,
                                      exclude=exclude)
        if all(e in exclude for e in endpoints):
            exclude = ()
        picked = endpoints[self.position % len(endpoints)]
        self.position += 1
        for _ in range(len(endpoints) - 1):
            if picked not in exclude:
                break
            picked = endpoints[self.position % len(endpoints)]
            self.position += 1
        return picked


@dataclass(frozen=True, slots=True)
class HostSet:
    """The endpoints to balance over; ``panic`` when unhealthy ones are included."""

    endpoints: tuple[str, ...]
    panic: bool = False


def healthy_endpoints(endpoints: Sequence[str], ejected: Collection[str],
                      panic_threshold_percent: float) -> HostSet:
    """Envoy's panic rule: below ``panic_threshold_percent`` healthy, use every
    endpoint; otherwise only the healthy ones (possibly none: 503 no healthy upstream)."""
    healthy = tuple(e for e in endpoints if e not in ejected)
    healthy_percent = 100.0 * len(healthy) / len(endpoints) if endpoints else 0.0
    if endpoints and healthy_percent < panic_threshold_percent:
        return HostSet(tuple(endpoints), panic=True)
    return HostSet(healthy)


# ---- (b) connection pool limits -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PoolLimits:
    """DestinationRule ``connectionPool`` (and ``retryBudget``); None = unlimited.
    ``connect_timeout_s`` defaults to the mesh's 10 s."""

    max_connections: int | None = None
    max_pending: int | None = None
    max_requests: int | None = None
    max_requests_per_connection: int | None = None
    max_retries: int | None = None
    connect_timeout_s: float = 10.0
    idle_timeout_s: float | None = None
    retry_budget_percent: float | None = None
    min_retry_concurrency: int = 3


class Admission(Enum):
    ADMIT = "admit"  # use an idle connection or open one
    QUEUE = "queue"  # wait until a request finishes (call release)
    OVERFLOW = "overflow"  # answer OVERFLOW_REPLY


def connection_reusable(served: int, limits: PoolLimits) -> bool:
    """Whether a connection that carried ``served`` requests may carry another
    (``maxRequestsPerConnection``; 1 disables keep-alive)."""
    limit = limits.max_requests_per_connection
    return limit is None or served < limit


class PoolAccountant:
    """One cluster's circuit-breaker counters. With ``streams_per_connection`` 1
    (HTTP/1.1) each active request holds a connection; more lets one connection
    carry several (HTTP/2)."""

    def __init__(self, limits: PoolLimits, *, streams_per_connection: int = 1) -> None:
        self.limits = limits
        self.streams_per_connection = streams_per_connection
        self.active = 0
        self.pending = 0
        self.retries = 0

    def admit(self) -> Admission:
        """A new request: admitted (counted active), queued (counted pending) or refused."""
        lim = self.limits
        if lim.max_requests is not None and self.active >= lim.max_requests:
            return Admission.OVERFLOW
        capacity = (None if lim.max_connections is None
                    else lim.max_connections * self.streams_per_connection)
        if capacity is None or self.active < capacity:
            self.active += 1
            return Admission.ADMIT
        if lim.max_pending is None or self.pending < lim.max_pending:
            self.pending += 1
            return Admission.QUEUE
        return Admission.OVERFLOW

    def release(self) -> bool:
        """An active request is over. True when a queued request now becomes active
        (the caller starts the head of its queue)."""
        self.active = max(0, self.active - 1)
        if self.pending > 0:
            self.pending -= 1
            self.active += 1
            return True
        return False

    def cancel_pending(self) -> None:
        """A queued request gave up (timeout, client gone) before it got a connection."""
        self.pending = max(0, self.pending - 1)

    def retry_limit(self) -> int | None:
        """How many retries may be in flight: the retry budget when set, else maxRetries."""
        lim = self.limits
        if lim.retry_budget_percent is not None:
            share = math.floor(lim.retry_budget_percent * (self.active + self.pending) / 100)
            return max(lim.min_retry_concurrency, share)
        return lim.max_retries

    def try_start_retry(self) -> bool:
        """Count one more retry in flight, or refuse it (the retry overflows)."""
        limit = self.retry_limit()
        if limit is not None and self.retries >= limit:
            return False
        self.retries += 1
        return True

    def end_retry(self) -> None:
        self.retries = max(0, self.retries - 1)


# ---- (c) outlier detection ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutlierPolicy:
    """DestinationRule ``outlierDetection`` with Istio's and Envoy's defaults; a count
    of 0 disables that detector (gateway errors are off unless configured).
    ``max_ejection_time_s`` None means Envoy's max(300 s, base)."""

    consecutive_5xx: int = 5
    consecutive_gateway_errors: int = 0
    interval_s: float = 10.0
    base_ejection_time_s: float = 30.0
    max_ejection_percent: int = 10
    max_ejection_time_s: float | None = None
    min_health_percent: float = 0.0
    always_eject_one_host: bool = False

    @property
    def max_ejection_s(self) -> float:
        if self.max_ejection_time_s is not None:
            return self.max_ejection_time_s
        return max(300.0, self.base_ejection_time_s)


@dataclass(slots=True)
class _Monitor:
    consecutive_5xx: int = 0
    consecutive_gateway: int = 0
    ejected_at: float | None = None
    unejected_at: float | None = None
    ejections: int = 0
    multiplier: int = 0


Result = int | UpstreamResponse | Failure


def outlier_status(result: Result) -> int | None:
    """The HTTP status the detector counts (Envoy without split local-origin errors):
    connect failures and resets as 503, timeouts as 504; overflows do not count."""
    if isinstance(result, int):
        return result
    if isinstance(result, UpstreamResponse):
        return result.status
    if result.kind is FailureKind.OVERFLOW:
        return None
    return 504 if result.kind is FailureKind.PER_TRY_TIMEOUT else 503


class OutlierDetector:
    """Consecutive-error ejection over one cluster's endpoints (Envoy's DetectorImpl)."""

    def __init__(self, policy: OutlierPolicy, endpoints: Iterable[str], *, now: float) -> None:
        self.policy = policy
        self.monitors: dict[str, _Monitor] = {e: _Monitor() for e in endpoints}
        self.next_sweep = now + policy.interval_s

    # -- time ------------------------------------------------------------------------------
    def advance(self, now: float) -> None:
        """Run every interval sweep due at or before ``now``."""
        interval = self.policy.interval_s
        while self.next_sweep <= now:
            if not any(m.ejected_at is not None or m.multiplier for m in self.monitors.values()):
                skipped = math.floor((now - self.next_sweep) / interval) + 1
                self.next_sweep += skipped * interval
                return
            self._sweep(self.next_sweep)
            self.next_sweep += interval

    def _sweep(self, t: float) -> None:
        pol = self.policy
        for m in self.monitors.values():
            if m.ejected_at is None:
                continue
            span = min(pol.base_ejection_time_s * m.multiplier, pol.max_ejection_s)
            if span <= t - m.ejected_at + 1e-9:
                m.ejected_at = None
                m.unejected_at = t
                m.consecutive_5xx = m.consecutive_gateway = 0
        for m in self.monitors.values():
            if (m.ejected_at is None and m.unejected_at is not None and m.multiplier
                    and t - m.unejected_at >= pol.interval_s - 1e-9):
                m.multiplier -= 1

    # -- membership and results ------------------------------------------------------------
    def set_endpoints(self, endpoints: Iterable[str], now: float) -> None:
        """The cluster's endpoints changed: new ones start clean, gone ones are forgotten."""
        self.advance(now)
        wanted = list(endpoints)
        self.monitors = {e: self.monitors.get(e) or _Monitor() for e in wanted}

    def record(self, endpoint: str, result: Result, now: float) -> bool:
        """Count one attempt's result; True when it ejected ``endpoint``. Unknown
        endpoints are ignored."""
        self.advance(now)
        m = self.monitors.get(endpoint)
        status = outlier_status(result)
        if m is None or status is None:
            return False
        pol = self.policy
        if not 500 <= status <= 599:
            m.consecutive_5xx = m.consecutive_gateway = 0
            return False
        ejected = False
        if status in (502, 503, 504):
            m.consecutive_gateway += 1
            if m.consecutive_gateway == pol.consecutive_gateway_errors and m.ejected_at is None:
                ejected = self._eject(m, now)
                m.consecutive_gateway = 0
        else:
            m.consecutive_gateway = 0
        m.consecutive_5xx += 1
        if m.consecutive_5xx == pol.consecutive_5xx and m.ejected_at is None:
            ejected = self._eject(m, now) or ejected
            m.consecutive_5xx = 0
        return ejected

    def _eject(self, m: _Monitor, now: float) -> bool:
        pol = self.policy
        active = sum(1 for x in self.monitors.values() if x.ejected_at is not None)
        allowed = 100.0 * (active + 1) / len(self.monitors) <= min(100, pol.max_ejection_percent)
        if pol.always_eject_one_host and active == 0:
            allowed = True
        if not allowed:
            return False
        m.ejected_at = now
        m.ejections += 1
        if m.multiplier * pol.base_ejection_time_s < pol.max_ejection_s + pol.base_ejection_time_s:
            m.multiplier += 1
        return True

    # -- queries ---------------------------------------------------------------------------
    def ejected(self, now: float) -> frozenset[str]:
        self.advance(now)
        return frozenset(e for e, m in self.monitors.items() if m.ejected_at is not None)

    def is_ejected(self, endpoint: str, now: float) -> bool:
        return endpoint in self.ejected(now)

    def ejection_count(self, endpoint: str) -> int:
        m = self.monitors.get(endpoint)
        return m.ejections if m else 0


# ---- (d) local rate limit -----------------------------------------------------------------


class TokenBucket:
    """Envoy's local rate limit bucket: starts full; every ``fill_interval_s`` (counted
    from creation) it gains ``tokens_per_fill`` tokens, up to ``max_tokens``."""

    def __init__(self, max_tokens: int, tokens_per_fill: int, fill_interval_s: float, *,
                 now: float) -> None:
        if max_tokens <= 0 or tokens_per_fill <= 0 or fill_interval_s <= 0:
            raise ValueError("token bucket sizes and interval must be positive")
        self.max_tokens = max_tokens
        self.tokens_per_fill = tokens_per_fill
        self.fill_interval_s = fill_interval_s
        self._tokens = max_tokens
        self._last_fill = now

    def _refill(self, now: float) -> None:
        fills = math.floor((now - self._last_fill) / self.fill_interval_s + 1e-9)
        if fills > 0:
            self._tokens = min(self.max_tokens, self._tokens + fills * self.tokens_per_fill)
            self._last_fill += fills * self.fill_interval_s

    def tokens(self, now: float) -> int:
        self._refill(now)
        return self._tokens

    def take(self, now: float, n: int = 1) -> bool:
        """Consume ``n`` tokens if there are that many (the request passes)."""
        self._refill(now)
        if self._tokens < n:
            return False
        self._tokens -= n
        return True


@dataclass(frozen=True, slots=True)
class TargetRef:
    """What a policy attaches to, in the policy's namespace (group "" = core)."""

    group: str
    kind: str
    name: str


@dataclass(frozen=True, slots=True)
class RateLimitPolicy:
    """A compiled zeromesh.io LocalRateLimit. Each waypoint keeps one bucket per
    (policy, target) it serves: limits are per proxy instance, as Envoy's are."""

    namespace: str
    name: str
    targets: tuple[TargetRef, ...]
    max_tokens: int
    tokens_per_fill: int
    fill_interval_s: float
    response_status: int = 429
    response_headers: tuple[tuple[str, str], ...] = field(default=())

    def bucket(self, now: float) -> TokenBucket:
        return TokenBucket(self.max_tokens, self.tokens_per_fill, self.fill_interval_s, now=now)

    @property
    def reply(self) -> GiveUp:
        """What a limited request gets (flag RL, as Envoy logs it)."""
        return GiveUp(self.response_status, RATE_LIMITED_BODY, "RL", self.response_headers)

    def applies_to(self, group: str, kind: str, name: str, namespace: str) -> bool:
        return namespace == self.namespace and TargetRef(group, kind, name) in self.targets


def compile_rate_limit(obj: Mapping[str, Any]) -> RateLimitPolicy:
    """A validated LocalRateLimit (see ``zeromesh.api.zeromesh_kinds``) as a policy."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    tb = spec.get("tokenBucket") or {}
    targets = tuple(TargetRef(str(t.get("group", "")), str(t["kind"]), str(t["name"]))
                    for t in spec.get("targetRefs") or ())
    return RateLimitPolicy(
        namespace=str(meta.get("namespace") or "default"), name=str(meta.get("name") or ""),
        targets=targets, max_tokens=int(tb["maxTokens"]),
        tokens_per_fill=int(tb.get("tokensPerFill", 1)),
        fill_interval_s=parse_duration(str(tb["fillInterval"])),
        response_status=int(spec.get("responseStatus", 429)),
        response_headers=tuple((str(k).lower(), str(v))
                               for k, v in (spec.get("responseHeaders") or {}).items()))
