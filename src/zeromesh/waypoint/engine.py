"""The waypoint's L7 engine: one downstream connection (an HBONE tunnel, or plain TCP in the
benchmark) carrying HTTP/1.1, or anything else passed through as TCP.

Per request, in Istio's order: authorization → route → redirect → fault → header rewrites →
backend and endpoint choice → upstream exchange with retries inside the route timeout →
response header rewrites → metrics, access log and spans. Decisions come from the pure cores
(:mod:`zeromesh.policy`, :mod:`zeromesh.routing`, :mod:`zeromesh.telemetry`); this module only
moves bytes. Each request gets a server span; each upstream attempt a client span whose id the
upstream request carries (``traceparent`` and B3 headers replace whatever the client sent).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from zeromesh.authn import authenticate
from zeromesh.gateway.forwarded import client_address
from zeromesh.policy import Request, evaluate
from zeromesh.routing import (
    Backend,
    HttpRequest,
    RouteAction,
    fault_decision,
    find_route,
    mirror_decision,
    pick_backend,
    redirect_location,
    rewrite_request,
)
from zeromesh.routing.model import HeaderOps, RequestMatch
from zeromesh.routing.resilience import (
    NO_HEALTHY_UPSTREAM,
    OVERFLOW_REPLY,
    Admission,
    LbKind,
    LoadBalancer,
    OutlierDetector,
    PoolAccountant,
    PoolLimits,
    RateLimitPolicy,
    TokenBucket,
    connection_reusable,
    healthy_endpoints,
)
from zeromesh.routing.retry import (
    Done,
    Failure,
    FailureKind,
    GiveUp,
    Outcome,
    Retry,
    RetryState,
    UpstreamResponse,
)
from zeromesh.routing.traffic_policy import TrafficPolicy
from zeromesh.telemetry.tracing import PROPAGATION_HEADERS, begin, extract, new_span_id, upstream_headers
from zeromesh.waypoint import http1
from zeromesh.waypoint.config import GATEWAY_GROUP, Destination, Upstream, WaypointConfig
from zeromesh.waypoint.duplex import Duplex, splice
from zeromesh.waypoint.http1 import Headers, Message, MessageError, Parser, local_reply
from zeromesh.waypoint.jwks_fetch import JwksFetcher
from zeromesh.waypoint.telemetry import RequestRecord, WaypointTelemetry
from zeromesh.ztunnel.config import WorkloadInfo
from zeromesh.ztunnel.telemetry import Connection

log = logging.getLogger("zeromesh.waypoint")

IDLE_TIMEOUT = 300.0          # a keep-alive connection with nothing in flight
REQUEST_TIMEOUT = 15.0        # a client that started a request must finish its head and body
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
METHOD_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ-_")


class ConnectFailure(Exception):
    """The upstream could not be reached (refused, no route, HBONE CONNECT not 200)."""


class UpstreamReset(Exception):
    """The upstream connection ended or reset before a full response."""


class UpstreamProtocolError(UpstreamReset):
    """The upstream answered something that is not valid HTTP (Envoy: 502, flag UPE)."""


Connector = Callable[[Upstream, list[tuple[str, str]]], Awaitable[Duplex]]


LocalAnswer = tuple[int, str, str, str, list[tuple[str, str]]]   # status, body, flags, reason, headers


@dataclass(frozen=True, slots=True)
class LocalAnswerBox:
    """An attempt's result that ends the request at once (an upstream protocol error)."""
    answer: LocalAnswer


def _give_up(g: GiveUp, reason: str) -> LocalAnswer:
    return (g.status, g.body, g.flags, reason, list(g.headers))


def _failure(outcome: Outcome | LocalAnswerBox) -> str:
    """Why an attempt got no response, for its span."""
    return str(outcome.answer[3] if isinstance(outcome, LocalAnswerBox) else outcome)


class ClusterState:
    """Per (host, subset, port): the DestinationRule's balancer, circuit breaker and outlier
    detector, with the requests in flight per endpoint (for least-request)."""

    def __init__(self, policy: TrafficPolicy, rng: Callable[[], float], now: float) -> None:
        self.policy = policy
        kind = policy.load_balancer if policy.load_balancer is not LbKind.PASSTHROUGH else LbKind.ROUND_ROBIN
        self.lb = LoadBalancer(kind, rng)
        self.pool = PoolAccountant(policy.pool)
        self.outlier = OutlierDetector(policy.outlier, [], now=now) if policy.outlier is not None else None
        self.active: dict[str, int] = {}
        self.waiting: collections.deque[asyncio.Future[None]] = collections.deque()


@dataclass(slots=True)
class Reply:
    """What goes back to the client, before the downstream protocol frames it."""
    status: int
    headers: Headers
    body: bytes
    keep: bool = True
    trailers: Headers = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Peer:
    """Who is on the other end of the downstream connection."""
    principal: str | None          # SPIFFE ID without the scheme; None for plaintext
    ip: str
    port: int
    workload: WorkloadInfo | None
    mtls: bool = True


@dataclass
class UpConn:
    """A keep-alive HTTP/1.1 connection to one endpoint."""
    duplex: Duplex
    up: Upstream
    parser: Parser = field(default_factory=lambda: Parser(response=True))
    pending: collections.deque[Message] = field(default_factory=collections.deque)
    used: int = 0

    async def response(self, head: bool) -> Message:
        self.parser.expect_head_response(head)
        while True:
            while self.pending:
                msg = self.pending.popleft()
                if 100 <= msg.status < 200 and msg.status != 101:
                    continue         # interim responses (100 Continue) are not forwarded
                return msg
            try:
                data = await self.duplex.recv()
            except (OSError, ConnectionError) as e:
                raise UpstreamReset(f"upstream reset: {e}") from e
            if not data:
                last = self.parser.finish()
                if last is not None:
                    return last
                raise UpstreamReset("upstream closed the connection before a full response")
            try:
                self.pending.extend(self.parser.feed(data))
            except MessageError as e:
                raise UpstreamProtocolError(f"upstream sent invalid HTTP: {e}") from e


class ReadDeadline:
    """A read timeout for a long-lived connection without a timer per read: one timer, moved
    lazily (it fires at the old deadline and re-arms itself if reads pushed it later)."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.deadline = 0.0
        self.handle: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[Any] | None = None
        self.expired = False

    async def read(self, down: Duplex, timeout: float) -> bytes:
        self.deadline = self.loop.time() + timeout
        if self.handle is None:
            self.handle = self.loop.call_at(self.deadline, self._check)
        self.task = asyncio.current_task()
        try:
            return await down.recv()
        except asyncio.CancelledError:
            if self.expired:
                self.expired = False
                raise TimeoutError from None
            raise
        finally:
            self.task = None

    def _check(self) -> None:
        self.handle = None
        if self.loop.time() < self.deadline:
            self.handle = self.loop.call_at(self.deadline, self._check)
        elif self.task is not None:
            self.expired = True
            self.task.cancel()

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


class UpstreamPool:
    """Idle keep-alive connections per endpoint."""

    MAX_IDLE = 64

    def __init__(self, connect: Connector) -> None:
        self.connect = connect
        self.idle: dict[str, list[UpConn]] = {}

    async def acquire(self, up: Upstream, headers: list[tuple[str, str]]) -> tuple[UpConn, bool]:
        """A connection and whether it was reused (a reused one may have been closed meanwhile)."""
        conns = self.idle.get(up.key)
        if conns:
            return conns.pop(), True
        try:
            duplex = await self.connect(up, headers)
        except ConnectFailure:
            raise
        except (OSError, ConnectionError, TimeoutError) as e:
            raise ConnectFailure(f"{up.key}: {e}") from e
        return UpConn(duplex, up), False

    def release(self, conn: UpConn, reusable: bool) -> None:
        conns = self.idle.setdefault(conn.up.key, [])
        if reusable and len(conns) < self.MAX_IDLE:
            conns.append(conn)
        else:
            conn.duplex.close()

    def close(self) -> None:
        for conns in self.idle.values():
            for c in conns:
                c.duplex.abort()
        self.idle.clear()


def looks_http1(data: bytes) -> bool:
    """An HTTP/1.x request starts with a method token and a space."""
    head = data[:16]
    sp = head.find(b" ")
    return sp > 0 and all(b in METHOD_CHARS for b in head[:sp])


def _single(headers: Headers) -> dict[str, str]:
    """Routing and policy see one value per name (repeated ones joined, as HTTP allows)."""
    out: dict[str, str] = {}
    for k, v in headers:
        out[k] = f"{out[k]},{v}" if k in out else v
    return out


def apply_ops(ops: HeaderOps, headers: Headers) -> Headers:
    """Set replaces every value of a name, add appends one, remove drops all (Envoy's
    semantics on a multi-valued header list)."""
    if not ops:
        return headers
    out = list(headers)
    for k, v in ops.set:
        out = [(n, x) for n, x in out if n != k] + [(k, v)]
    for k, v in ops.add:
        out.append((k, v))
    drop = set(ops.remove)
    return [(n, x) for n, x in out if n not in drop] if drop else out


class HttpEngine:
    def __init__(self, config: Callable[[], WaypointConfig], connect: Connector,
                 telemetry: WaypointTelemetry, rng: Callable[[], float] = random.random,
                 jwks: JwksFetcher | None = None) -> None:
        self.config = config
        self.jwks = jwks
        self.idle_timeout = IDLE_TIMEOUT
        self.request_timeout = REQUEST_TIMEOUT
        # The ingress gateway routes by Host: it swaps the connection's listener for the
        # destination that host names on it, per request.
        self.route_dest: Callable[[Any, Destination, str], Destination] | None = None
        self.self_source: Callable[[], tuple[WorkloadInfo | None, str]] | None = None
        self.upstreams = UpstreamPool(connect)
        from zeromesh.waypoint import http2  # http2 imports this module: import it here
        self.h2 = http2.H2Upstreams(connect)
        self.telemetry = telemetry
        self.rng = rng
        self._rr: dict[tuple[str, int | None, str | None], int] = {}
        self._clusters: dict[tuple[str, str | None, int | None], ClusterState] = {}
        self._buckets: dict[tuple[str, str, tuple[str, str, str, str]],
                            tuple[RateLimitPolicy, TokenBucket]] = {}
        self._background: set[asyncio.Task[None]] = set()

    # ---- a downstream connection ----------------------------------------------------------
    async def serve(self, down: Duplex, dest: Destination, peer: Peer) -> None:
        try:
            async with asyncio.timeout(self.idle_timeout):
                first = await down.recv()
        except (TimeoutError, OSError, ConnectionError):
            down.abort()
            return
        if not first:
            down.close()
            return
        from zeromesh.waypoint import http2
        if http2.is_preface(first):
            await http2.serve_http2(self, down, first, dest, peer)
        elif looks_http1(first):
            await self._serve_http1(down, first, dest, peer)
        else:
            # HTTP/2 is not parsed yet: it and every other protocol get L4 treatment.
            await self._serve_tcp(down, first, dest, peer)

    async def _serve_http1(self, down: Duplex, first: bytes, dest: Destination, peer: Peer) -> None:
        parser = Parser()
        pending: collections.deque[Message] = collections.deque()
        data = first
        deadline = ReadDeadline()
        try:
            while True:
                if data:
                    try:
                        pending.extend(parser.feed(data))
                    except MessageError as e:
                        self._bad_request(down, e, dest, peer)
                        await down.send(local_reply(e.status, f"{http1.REASONS.get(e.status, 'error')}\n",
                                                    keep_alive=False))
                        down.close()
                        return
                    data = b""
                while pending:
                    req = pending.popleft()
                    if req.upgrade and parser.upgraded is not None:
                        await self._upgrade(down, req, parser.upgraded, dest, peer)
                        return
                    keep = await self._handle(down, req, dest, peer)
                    if not keep:
                        down.close()
                        return
                timeout = self.request_timeout if parser.mid_message else self.idle_timeout
                try:
                    data = await deadline.read(down, timeout)
                except TimeoutError:
                    if parser.mid_message:
                        await down.send(local_reply(408, "request timeout\n", keep_alive=False))
                        self._record_local(dest, peer, "", "", 408, "client did not finish its request")
                    down.close()
                    return
                if not data:
                    down.close()
                    return
        except (OSError, ConnectionError) as e:
            log.debug("downstream %s ended: %s", peer.ip, e)
            down.abort()
        finally:
            deadline.stop()

    def _bad_request(self, down: Duplex, e: MessageError, dest: Destination, peer: Peer) -> None:
        self._record_local(dest, peer, "", "", e.status, str(e), flags="DPE")

    def _record_local(self, dest: Destination, peer: Peer, method: str, path: str, status: int,
                      reason: str, flags: str = "-") -> None:
        rec = RequestRecord(f"{peer.ip}:{peer.port}", peer.workload,
                            f"spiffe://{peer.principal}" if peer.principal else "", method, path,
                            f"{dest.ip}:{dest.port}", service=dest.service, status=status, flags=flags,
                            mtls_in=peer.mtls, reason=reason)
        self.telemetry.request_done(rec)

    # ---- one request ----------------------------------------------------------------------------
    async def _handle(self, down: Duplex, req: Message, dest: Destination, peer: Peer) -> bool:
        """Answer one request on an HTTP/1.1 connection; returns whether it stays open."""
        rec = self.record(req, dest, peer)
        reply = await self.respond(req, dest, peer, rec)
        keep = req.keep_alive and reply.keep
        data = http1.serialize_response(reply.status, reply.headers, reply.body, keep_alive=keep,
                                        head=req.method == "HEAD")
        rec.response_bytes = len(data)
        await down.send(data)
        self.telemetry.request_done(rec)
        return keep

    def record(self, req: Message, dest: Destination, peer: Peer, protocol: str = "http") -> RequestRecord:
        host = req.get("host") or f"{dest.ip}:{dest.port}"
        rec = RequestRecord(f"{peer.ip}:{peer.port}", peer.workload,
                            f"spiffe://{peer.principal}" if peer.principal else "", req.method, req.target,
                            host, protocol=protocol, service=dest.service, mtls_in=peer.mtls,
                            request_bytes=len(req.body) + sum(len(k) + len(v) + 4 for k, v in req.headers))
        rec.request_id = req.get("x-request-id") or f"{random.getrandbits(128):032x}"
        rec.headers, rec.body = req.headers, req.body
        if self.self_source is not None:          # an ingress gateway is the source of what it sends
            rec.reporter = "source"
            rec.source, rec.src_identity = self.self_source()
            rec.src_addr = f"{peer.ip}:{peer.port}"
        return rec

    async def respond(self, req: Message, dest: Destination, peer: Peer, rec: RequestRecord) -> Reply:
        """The L7 chain for one request, whatever protocol carried it. ``rec`` is filled in for
        telemetry (the caller reports it once the answer is sent)."""
        cfg = self.config()
        headers = req.headers
        hmap = _single(headers)
        host = hmap.get("host") or f"{dest.ip}:{dest.port}"

        if self.route_dest is not None:
            dest = self.route_dest(cfg, dest, host)
        scoped = self.telemetry.settings.for_service(dest.service)
        rec.settings = scoped.log
        incoming = not PROPAGATION_HEADERS.isdisjoint(hmap)     # the client sent a trace context
        parent = extract(hmap) if incoming else None
        rec.trace_id, rec.span_id, rec.parent_span_id, rec.sampled = begin(parent, scoped.sampling)
        if parent is not None:
            rec.tracestate, rec.b3_single = parent.tracestate, parent.b3_single
        ports = getattr(cfg, "ports", None)
        scheme = "https" if ports is not None and ports().get(dest.port) == "HTTPS" else "http"
        remote = client_address(peer.ip, hmap.get("x-forwarded-for"), getattr(cfg, "trusted_hops", 0))

        def local(status: int, body: str, flags: str, reason: str, extra: Headers | None = None) -> Reply:
            rec.status, rec.flags, rec.reason = status, flags, reason
            return Reply(status, [("content-type", "text/plain"), *(extra or [])], body.encode())

        # Authentication (RequestAuthentication JWTs), then authorization (L7) with the
        # original client's identity, as the waypoint sees it.
        path = req.target
        principal: str | None = None
        claims: Mapping[str, Any] = {}
        authn = cfg.authn_set(dest)
        if authn.policies:
            if authn.fetches and self.jwks is not None:
                await self.jwks.ensure(authn.fetches)
            result = authenticate(authn, hmap, path, time.time(),
                                  self.jwks.keys_for if self.jwks is not None else None, method=req.method)
            if not result.ok:
                return local(result.error_status or 401, result.error_body, "-", result.reason,
                             list(result.response_headers))
            principal, claims = result.principal, result.claims
            if result.headers_to_remove or result.headers_to_add:
                drop = set(result.headers_to_remove)
                headers = [(k, v) for k, v in headers if k not in drop] + list(result.headers_to_add)
                hmap = _single(headers)
            if result.path is not None:
                path = result.path
        decision = evaluate(cfg.policy_set(dest), Request(
            peer.principal, peer.ip, dest.ip, dest.port, method=req.method, path=path,
            host=host.lower(), headers=hmap, request_principal=principal, claims=claims, remote_ip=remote))
        if not decision.allowed:
            return local(403, "RBAC: access denied", "RBAC", decision.reason)

        hreq = HttpRequest(req.method, path, host, hmap)
        routes = cfg.routes_for(dest)
        match: RequestMatch | None = None
        if routes:
            found = find_route(routes, hreq)
            if found is None:
                return local(404, "route not found\n", "NR", "no route matched")
            route, match = found
            action = route.action
            rec.route = route.name
        else:
            action = RouteAction(backends=(Backend(dest.host, None),))

        limited = self._rate_limited(cfg, dest, rec.route)
        if limited is not None:
            return local(limited.status, limited.body, limited.flags, "local rate limit",
                         list(limited.headers))
        if action.redirect is not None:
            location = redirect_location(action.redirect, match, hreq, scheme=scheme)
            return local(action.redirect.status, "", "-", "redirect", [("location", location)])
        delay, abort = fault_decision(action.fault, self.rng)
        if delay:
            await asyncio.sleep(delay)
        if abort is not None:
            return local(abort, "fault filter abort", "FI", "fault injection")

        fwd = rewrite_request(action.rewrite, match, hreq)
        drop = http1.connection_tokens(req)
        if incoming:                      # the client's context: replaced by ours per attempt
            drop = drop | PROPAGATION_HEADERS
        out_headers = [(k, v) for k, v in http1.end_to_end(headers, drop) if k != "host"]
        out_headers.insert(0, ("host", fwd.host))
        out_headers = apply_ops(action.request_header_ops, out_headers)
        if "x-request-id" not in hmap:
            out_headers.append(("x-request-id", rec.request_id))
        if "x-forwarded-proto" not in hmap:
            out_headers.append(("x-forwarded-proto", scheme))

        backend = pick_backend(action.backends, self.rng)
        if backend is None:
            return local(500, "no backend\n", "NC", "route has no usable backend")
        for mirror in mirror_decision(action.mirrors, self.rng):
            self._mirror(mirror, dest, req.method, fwd.path, out_headers + upstream_headers(
                rec.trace_id, rec.span_id, rec.span_id, rec.sampled, rec.tracestate, rec.b3_single), req.body)

        def build(span_id: str) -> bytes | Message:
            """The upstream request of one attempt, whose client span is ``span_id``."""
            hs = out_headers + upstream_headers(rec.trace_id, rec.span_id, span_id, rec.sampled,
                                                rec.tracestate, rec.b3_single)
            if req.protocol == "grpc":    # gRPC needs HTTP/2 end to end (trailers carry its status)
                return Message(headers=hs, body=req.body, method=req.method, target=fwd.path,
                               protocol="grpc")
            return http1.serialize_request(req.method, fwd.path, hs, req.body)

        resp = await self._exchange(backend, dest, build, req.method == "HEAD", action, rec)
        if isinstance(resp, tuple):
            status, body, flags, reason, extra = resp
            return local(status, body, flags, reason, list(extra))
        resp_headers = http1.end_to_end(resp.headers, http1.connection_tokens(resp))
        resp_headers = apply_ops(action.response_header_ops, resp_headers)
        rec.status = resp.status
        if req.protocol == "grpc":
            rec.grpc_status = (dict(resp.trailers).get("grpc-status")
                               or _single(resp.headers).get("grpc-status") or "")
        return Reply(resp.status, resp_headers, resp.body, trailers=resp.trailers)

    def _rate_limited(self, cfg: WaypointConfig, dest: Destination, route: str) -> GiveUp | None:
        """zeromesh.io LocalRateLimit: one token bucket per (policy, target) in this waypoint."""
        if not cfg.rate_limits:
            return None
        if hasattr(cfg, "rate_limit_targets"):          # the ingress gateway knows its own
            targets = list(cfg.rate_limit_targets(dest, route))
        else:
            targets = [(GATEWAY_GROUP, "Gateway", cfg.name, cfg.namespace)]
            if dest.service is not None:
                targets.append(("", "Service", dest.service.name, dest.service.namespace))
            parts = route.split("/")
            if len(parts) >= 3:
                targets.append((GATEWAY_GROUP, "HTTPRoute", parts[1], parts[0]))
        now = time.monotonic()
        for rl in cfg.rate_limits:
            for t in targets:
                if not rl.applies_to(*t):
                    continue
                key = (rl.namespace, rl.name, t)
                have = self._buckets.get(key)
                if have is None or have[0] != rl:
                    have = (rl, rl.bucket(now))
                    self._buckets[key] = have
                if not have[1].take(now):
                    return rl.reply
        return None

    def _cluster(self, backend: Backend) -> ClusterState:
        """One cluster's balancer, circuit breaker and outlier detector, kept across config
        versions while its DestinationRule policy stays the same."""
        key = (backend.host, backend.subset, backend.port)
        policy = self.config().traffic_policy(backend.host, backend.subset, backend.port)
        got = self._clusters.get(key)
        if got is None or got.policy != policy:
            got = ClusterState(policy, self.rng, time.monotonic())
            self._clusters[key] = got
        return got

    async def _exchange(self, backend: Backend, dest: Destination, build: Callable[[str], bytes | Message],
                        head_only: bool, action: RouteAction, rec: RequestRecord) -> Message | LocalAnswer:
        """Send to one endpoint at a time, retrying as the route says (Envoy's decisions, from
        :mod:`zeromesh.routing.retry`), inside the route timeout and the cluster's limits. Each
        attempt is a client span, and its request carries that span's context."""
        cfg = self.config()
        cluster = self._cluster(backend)
        state = RetryState.for_route(action, now=time.monotonic(), rng=self.rng, budget=cluster.pool)
        admitted = cluster.pool.admit()
        if admitted is Admission.OVERFLOW:
            return _give_up(OVERFLOW_REPLY, "circuit breaker: too many requests for this destination")
        if admitted is Admission.QUEUE:
            waiter = asyncio.get_running_loop().create_future()
            cluster.waiting.append(waiter)
            try:
                await asyncio.wait_for(waiter, state.attempt_timeout(time.monotonic()))
            except TimeoutError:
                cluster.pool.cancel_pending()
                with contextlib.suppress(ValueError):
                    cluster.waiting.remove(waiter)
                return _give_up(state.deadline_exceeded(), "route timeout while queued for a connection")
        try:
            while True:
                rec.attempts += 1
                endpoints = cfg.endpoints(backend.host, backend.port, backend.subset, dest)
                if endpoints is None:
                    return (500, "no such service\n", "NC",
                            f"backend {backend.host} is not a known service", [])
                now = time.monotonic()
                by_key = {e.key: e for e in endpoints}
                keys = list(by_key)
                if cluster.outlier is not None:
                    cluster.outlier.set_endpoints(keys, now)
                    hosts = healthy_endpoints(keys, cluster.outlier.ejected(now),
                                              cluster.policy.panic_threshold_percent)
                    keys = list(hosts.endpoints)
                if not keys:
                    what = backend.host + (f" subset {backend.subset}" if backend.subset else "")
                    return _give_up(NO_HEALTHY_UPSTREAM, f"no ready endpoint for {what}")
                key = keys[0] if len(keys) == 1 else (
                    cluster.lb.pick(keys, active=cluster.active, exclude=state.attempted) or keys[0])
                up = by_key[key]
                rec.upstream = up.key
                rec.destination = up.workload
                rec.service = up.service or rec.service
                rec.dst_identity = up.workload.identity.uri if up.meshed and up.workload else ""
                cluster.active[key] = cluster.active.get(key, 0) + 1
                span_id = new_span_id()           # this attempt's CLIENT span
                started = now
                try:
                    outcome, resp = await self._attempt(up, build(span_id), head_only,
                                                        state.attempt_timeout(now))
                finally:
                    cluster.active[key] -= 1
                now = time.monotonic()
                if rec.sampled:                   # made into a span only if someone reads it
                    rec.attempted(span_id, started, now, resp.status if resp is not None else 0, up,
                                  backend.port or dest.port, backend,
                                  "" if resp is not None else _failure(outcome))
                if isinstance(outcome, LocalAnswerBox):
                    return outcome.answer
                if cluster.outlier is not None:
                    cluster.outlier.record(key, outcome, now)
                if resp is not None and resp.status < 400 and isinstance(outcome, UpstreamResponse):
                    return resp         # nothing retries a success (no retriable-headers support)
                act = state.next_action(outcome, now, endpoint=key)
                if isinstance(act, Retry):
                    await asyncio.sleep(act.delay_s)
                    continue
                if isinstance(act, Done):
                    assert resp is not None
                    if act.flags:
                        rec.flags = act.flags
                    return resp
                return _give_up(act, f"upstream {up.key}: {outcome}")
        finally:
            state.finish()
            if cluster.pool.release() and cluster.waiting:
                w = cluster.waiting.popleft()
                if not w.done():
                    w.set_result(None)

    async def _attempt(self, up: Upstream, request: bytes | Message, head_only: bool, timeout: float | None
                       ) -> tuple[Outcome | LocalAnswerBox, Message | None]:
        if isinstance(request, Message):
            return await self._attempt_h2(up, request, timeout)
        for _ in range(2):       # a reused keep-alive connection may have been closed: once more
            try:
                if timeout is None:
                    conn, reused = await self.upstreams.acquire(up, [])
                else:
                    conn, reused = await asyncio.wait_for(self.upstreams.acquire(up, []), timeout)
            except (ConnectFailure, TimeoutError) as e:
                log.debug("connect %s: %s", up.key, e)
                kind = (FailureKind.PER_TRY_TIMEOUT if isinstance(e, TimeoutError)
                        else FailureKind.CONNECT_FAILURE)
                return Failure(kind, request_sent=False), None
            try:
                await conn.duplex.send(request)
                if timeout is None:
                    resp = await conn.response(head_only)
                else:
                    async with asyncio.timeout(timeout):
                        resp = await conn.response(head_only)
            except asyncio.CancelledError:
                conn.duplex.abort()           # never leak a half-used connection
                raise
            except TimeoutError:
                conn.duplex.abort()
                return Failure(FailureKind.PER_TRY_TIMEOUT), None
            except UpstreamProtocolError as e:
                conn.duplex.abort()
                return LocalAnswerBox((502, "upstream connect error or disconnect/reset before headers. "
                                            "reset reason: protocol error", "UPE", str(e), [])), None
            except (UpstreamReset, OSError, ConnectionError):
                conn.duplex.abort()
                if reused:
                    continue
                return Failure(FailureKind.DISCONNECT), None
            conn.used += 1
            reusable = resp.keep_alive and not resp.upgrade and connection_reusable(
                conn.used, self._cluster_limits(up))
            self.upstreams.release(conn, reusable)
            return UpstreamResponse(resp.status, _single(resp.headers)), resp
        return Failure(FailureKind.DISCONNECT), None

    async def _attempt_h2(self, up: Upstream, request: Message, timeout: float | None
                          ) -> tuple[Outcome | LocalAnswerBox, Message | None]:
        from zeromesh.waypoint import http2
        try:
            resp = await self.h2.exchange(up, request, timeout)
        except ConnectFailure:
            return Failure(FailureKind.CONNECT_FAILURE, request_sent=False), None
        except TimeoutError:
            return Failure(FailureKind.PER_TRY_TIMEOUT), None
        except UpstreamProtocolError as e:
            return LocalAnswerBox((502, "upstream connect error or disconnect/reset before headers. "
                                        "reset reason: protocol error", "UPE", str(e), [])), None
        except http2.StreamRefused:
            return Failure(FailureKind.REFUSED_STREAM, request_sent=False), None
        except http2.StreamReset:
            return Failure(FailureKind.RESET), None
        except UpstreamReset:
            return Failure(FailureKind.DISCONNECT), None
        # Envoy decides retries on response headers (grpc-status there = a trailers-only answer).
        return UpstreamResponse(resp.status, _single(resp.headers)), resp

    def _cluster_limits(self, up: Upstream) -> PoolLimits:
        svc = up.service
        if svc is None:
            return PoolLimits()
        return self.config().traffic_policy(svc.hostname, None, None).pool

    def _pick(self, endpoints: list[Upstream], backend: Backend) -> Upstream:
        """Round robin (Istio's default load balancer) per backend."""
        key = (backend.host, backend.port, backend.subset)
        i = self._rr.get(key, -1) + 1
        self._rr[key] = i
        return endpoints[i % len(endpoints)]

    def _mirror(self, backend: Backend, dest: Destination, method: str, path: str, headers: Headers,
                body: bytes) -> None:
        """Fire and forget; the copy's Host gets Envoy's "-shadow" suffix; its answer is dropped."""
        shadow = [(k, f"{v}-shadow" if k == "host" else v) for k, v in headers]
        data = http1.serialize_request(method, path, shadow, body)

        async def send() -> None:
            eps = self.config().endpoints(backend.host, backend.port, backend.subset, dest) or []
            if not eps:
                return
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._attempt(self._pick(eps, backend), data, False, None), 10)

        t = asyncio.get_running_loop().create_task(send())
        self._background.add(t)
        t.add_done_callback(self._background.discard)

    # ---- WebSocket and other upgrades: forward the handshake, then splice --------------------
    async def _upgrade(self, down: Duplex, req: Message, rest: bytes, dest: Destination, peer: Peer) -> None:
        cfg = self.config()
        hmap = _single(req.headers)
        decision = evaluate(cfg.policy_set(dest), Request(
            peer.principal, peer.ip, dest.ip, dest.port, method=req.method, path=req.target,
            host=(hmap.get("host") or "").lower(), headers=hmap))
        if not decision.allowed:
            await down.send(local_reply(403, "RBAC: access denied", keep_alive=False))
            down.close()
            return
        endpoints = cfg.endpoints(dest.host, None, None, dest) or []
        if not endpoints:
            await down.send(local_reply(503, "no healthy upstream", keep_alive=False))
            down.close()
            return
        up = self._pick(endpoints, Backend(dest.host, None))
        try:
            conn, _ = await self.upstreams.acquire(up, [])
            hdrs = http1.end_to_end(req.headers, http1.connection_tokens(req), keep_upgrade=True)
            await conn.duplex.send(http1.serialize_request(req.method, req.target, hdrs, req.body,
                                                           upgrade=hmap.get("upgrade", "")))
            resp = await conn.response(False)
        except (ConnectFailure, UpstreamReset, OSError, ConnectionError) as e:
            log.info("upgrade to %s failed: %s", up.key, e)
            await down.send(local_reply(503, "upstream connect error", keep_alive=False))
            down.close()
            return
        resp_headers = http1.end_to_end(resp.headers, http1.connection_tokens(resp),
                                        keep_upgrade=resp.status == 101)
        await down.send(http1.serialize_response(resp.status, resp_headers, resp.body,
                                                 keep_alive=False, upgrade=resp.status == 101))
        if resp.status != 101:
            conn.duplex.close()
            down.close()
            return
        await splice(down, conn.duplex, rest, conn.parser.upgraded or b"")
        down.close()
        conn.duplex.close()

    # ---- not HTTP: L4 policy, then a byte relay to one endpoint ------------------------------
    async def _serve_tcp(self, down: Duplex, first: bytes, dest: Destination, peer: Peer) -> None:
        cfg = self.config()
        conn = Connection("inbound", f"{peer.ip}:{peer.port}", f"{dest.ip}:{dest.port}", peer.workload,
                          None, dest.service, src_identity=f"spiffe://{peer.principal}"
                          if peer.principal else "", mtls=peer.mtls)
        decision = evaluate(cfg.policy_set(dest, tcp=True),
                            Request(peer.principal, peer.ip, dest.ip, dest.port))
        if not decision.allowed:
            conn.error, conn.flags = f"RBAC: {decision.reason}", "DENY"
            self.telemetry.failed(conn)
            down.abort()
            return
        endpoints = cfg.endpoints(dest.host, None, None, dest) or []
        if not endpoints:
            conn.error = "no ready endpoint"
            self.telemetry.failed(conn)
            down.abort()
            return
        up = self._pick(endpoints, Backend(dest.host, None))
        conn.destination = up.workload
        conn.dst_addr = up.key
        try:
            upstream = await self.upstreams.connect(up, [])
        except (ConnectFailure, OSError, ConnectionError, TimeoutError) as e:
            conn.error = f"connect {up.key}: {e}"
            self.telemetry.failed(conn)
            down.abort()
            return
        self.telemetry.opened(conn)
        sent, received = await splice(down, upstream, first)
        conn.bytes_sent, conn.bytes_recv = sent, received
        down.close()
        upstream.close()
        self.telemetry.closed(conn)

    def close(self) -> None:
        self.upstreams.close()
        self.h2.close()
