"""The control plane's mTLS endpoint for proxies: the configuration stream and certificate signing.

Callers are identified by the URI SAN of their client certificate, issued by
our CA: a node agent by its node credential, a waypoint by its pod's bootstrap
credential. Nothing here trusts what a caller says about itself; the hello
message must agree with the certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import ssl
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web
from cryptography import x509
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

from zeromesh.controlplane.model import MeshModel, to_wire
from zeromesh.errors import CsrRefused, IdentityError
from zeromesh.identity.ca import CertificateAuthority
from zeromesh.identity.certs import uri_sans
from zeromesh.identity.spiffe import NodeId, PodId, SpiffeId, parse_any
from zeromesh.push import protocol as p
from zeromesh.telemetry.prometheus import METRICS_BY_NAME

log = logging.getLogger("zeromesh.push")

FLUSH_DELAY = 0.005        # coalesce a burst of store changes into one update
PUSH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
ISTIO_CONVERGENCE_BUCKETS = (0.1, 0.5, 1, 3, 5, 10, 20, 30)    # istiod's pilot_proxy_convergence_time
SENT_AT_LIMIT = 1024       # unanswered pushes remembered per proxy for their latency


def _help(name: str) -> str:
    return METRICS_BY_NAME[name].help


class PushMetrics:
    """Health of the push stream and the CSR endpoint (names in `telemetry.prometheus.METRICS`):
    zeromesh's own, and istiod's names where the control plane has a direct counterpart, so
    Istio's control-plane dashboard finds them too. istiod exports its counters without
    `_total`; those few are kept here and exposed untyped under exactly that name."""

    def __init__(self, conns: Callable[[], Mapping[str, Connection]]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.conns = conns
        self.duration = Histogram("zeromesh_push_duration_seconds", _help("zeromesh_push_duration_seconds"),
                                  ["kind"], buckets=PUSH_BUCKETS, registry=self.registry)
        self.convergence = Histogram("pilot_proxy_convergence_time", _help("pilot_proxy_convergence_time"),
                                     buckets=ISTIO_CONVERGENCE_BUCKETS, registry=self.registry)
        self.pushes = Counter("zeromesh_pushes", _help("zeromesh_pushes_total"), ["kind", "result"],
                              registry=self.registry)
        self.issued = Counter("zeromesh_certificates_issued", _help("zeromesh_certificates_issued_total"),
                              registry=self.registry)
        self.nacks = 0
        self.csrs = 0
        self.issued_count = 0
        self.registry.register(self)

    def answered(self, kind: str, seconds: float, ack: bool) -> None:
        self.duration.labels(kind).observe(seconds)
        self.convergence.observe(seconds)
        self.pushes.labels(kind, "ack" if ack else "nack").inc()
        if not ack:
            self.nacks += 1

    def send_failed(self, kind: str) -> None:
        self.pushes.labels(kind, "error").inc()

    def csr(self, signed: bool) -> None:
        self.csrs += 1
        if signed:
            self.issued_count += 1
            self.issued.inc()

    def collect(self) -> Iterator[Metric]:
        """The values read at scrape time (a collector registered with its own registry)."""
        by_kind = dict.fromkeys(p.PROXY_KINDS, 0)
        for c in self.conns().values():
            by_kind[c.status.kind] = by_kind.get(c.status.kind, 0) + 1
        connected = GaugeMetricFamily("zeromesh_connected_proxies", _help("zeromesh_connected_proxies"),
                                      labels=["kind"])
        for kind, n in sorted(by_kind.items()):
            connected.add_metric([kind], n)
        yield connected
        yield GaugeMetricFamily("pilot_xds", _help("pilot_xds"), value=sum(by_kind.values()))
        for name, value in (("pilot_total_xds_rejects", self.nacks), ("citadel_server_csr_count", self.csrs),
                            ("citadel_server_success_cert_issuance_count", self.issued_count)):
            m = Metric(name, _help(name), "unknown")
            m.add_sample(name, {}, value)
            yield m


class Caller:
    """Who is on the other end of a TLS connection, from its certificate."""

    def __init__(self, identity: NodeId | PodId) -> None:
        self.identity = identity

    @property
    def uri(self) -> str:
        return self.identity.uri


def peer_identity(request: web.Request) -> Caller:
    sslobj = request.transport.get_extra_info("ssl_object") if request.transport else None
    der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
    if not der:
        raise web.HTTPUnauthorized(text="a client certificate is required")
    uris = uri_sans(x509.load_der_x509_certificate(der))
    if len(uris) != 1:
        raise web.HTTPUnauthorized(text="client certificate must carry exactly one URI SAN")
    try:
        ident = parse_any(uris[0])
    except ValueError as e:
        raise web.HTTPUnauthorized(text=f"client identity not understood: {e}") from e
    if isinstance(ident, SpiffeId):
        raise web.HTTPForbidden(text=f"{ident.uri} is a workload identity; proxies authenticate "
                                     "with their node or pod bootstrap credential")
    return Caller(ident)


class Connection:
    def __init__(self, ws: web.WebSocketResponse, status: p.ProxyStatus) -> None:
        self.ws = ws
        self.status = status
        self.lock = asyncio.Lock()
        self.sent_at: dict[int, float] = {}      # nonce -> when the change it carries happened


class PushServer:
    def __init__(self, model: MeshModel, ca: CertificateAuthority, version: Callable[[], str],
                 pods_on_node: Callable[[str], set[tuple[str, str]]],
                 pod_lookup: Callable[[str, str], dict[str, Any] | None]) -> None:
        self.model = model
        self.ca = ca
        self.version = version
        self.pods_on_node = pods_on_node
        self.pod_lookup = pod_lookup
        self.conns: dict[str, Connection] = {}
        self._pending: list[Mapping[str, Mapping[str, Any]]] = []
        self._flush_task: asyncio.Task[None] | None = None
        self._nonce = 0
        self.last_push_seconds = 0.0
        self.pushed_version = ""
        self._full_cache: dict[str, tuple[str, str]] = {}
        self._pending_since: float | None = None
        self.metrics = PushMetrics(lambda: self.conns)

    # ---- fan-out -----------------------------------------------------------------
    def changed(self, records: Mapping[str, Mapping[str, Any]]) -> None:
        """Queue model changes; they are sent together a few milliseconds later."""
        if not self._pending:
            self._pending_since = asyncio.get_running_loop().time()
        self._pending.append({t: {k: to_wire(v) for k, v in recs.items()}
                              for t, recs in records.items()})
        if self._flush_task is None or self._flush_task.done():
            self._flush_task = asyncio.get_running_loop().create_task(self._flush())

    def nudge(self) -> None:
        """Send the current version even with no relevant change (keeps versions moving)."""
        self.changed({})

    async def _flush(self) -> None:
        """Send what is pending; changes that arrive while sending get another round."""
        while True:
            await asyncio.sleep(FLUSH_DELAY)
            batches, self._pending = self._pending, []
            since, self._pending_since = self._pending_since, None
            merged = p.merge_changes(batches)
            version = self.version()
            self.pushed_version = version
            t0 = asyncio.get_running_loop().time()
            await asyncio.gather(*(self._send(c, p.filter_for(c.status.kind, merged), version, False, since)
                                   for c in list(self.conns.values())), return_exceptions=True)
            self.last_push_seconds = asyncio.get_running_loop().time() - t0
            if not self._pending:
                return

    def _next_nonce(self) -> int:
        self._nonce += 1
        return self._nonce

    async def _send(self, conn: Connection, resources: Mapping[str, Any] | str, version: str,
                    full: bool, since: float | None = None) -> None:
        """`resources` may be pre-encoded JSON (the shared full state) to avoid re-encoding it;
        `since`: when the change it carries happened (the push latency runs from there to the ACK)."""
        async with conn.lock:
            nonce = self._next_nonce()
            conn.status.sent(nonce, version)
            conn.sent_at[nonce] = asyncio.get_running_loop().time() if since is None else since
            if len(conn.sent_at) > SENT_AT_LIMIT:
                del conn.sent_at[next(iter(conn.sent_at))]
            if isinstance(resources, str):
                text = (f'{{"type":"update","nonce":{nonce},"version":{json.dumps(version)},'
                        f'"full":{"true" if full else "false"},"resources":{resources}}}')
            else:
                text = p.encode(p.Update(nonce, version, full, resources))
            try:
                await conn.ws.send_str(text)
            except (ConnectionError, RuntimeError) as e:
                log.info("push to %s failed: %s", conn.status.id, e)
                conn.sent_at.pop(nonce, None)
                self.metrics.send_failed(conn.status.kind)

    def full_state(self, kind: str) -> str:
        """The full state for one kind of proxy, encoded once per version and shared."""
        version = self.version()
        cached = self._full_cache.get(kind)
        if cached is not None and cached[0] == version:
            return cached[1]
        snap = self.model.snapshot()
        text = json.dumps({t: {k: to_wire(v) for k, v in recs.items()}
                           for t, recs in snap.items() if p.relevant(kind, t)},
                          separators=(",", ":"))
        self._full_cache[kind] = (version, text)
        return text

    # ---- the stream ------------------------------------------------------------------
    async def stream(self, request: web.Request) -> web.StreamResponse:
        caller = peer_identity(request)
        ws = web.WebSocketResponse(heartbeat=20, max_msg_size=256 * 1024 * 1024)
        await ws.prepare(request)
        conn: Connection | None = None
        try:
            first = await ws.receive(timeout=10)
            if first.type != WSMsgType.TEXT:
                await ws.close(message=b"expected hello")
                return ws
            hello_at = asyncio.get_running_loop().time()
            hello = p.decode(first.data)
            if not isinstance(hello, p.Hello):
                raise p.ProtocolError("the first message must be hello")
            self._check_hello(caller, hello)
            pid = f"{hello.kind}~{hello.node or '-'}~{hello.name}"
            old = self.conns.get(pid)
            if old is not None:
                await old.ws.close(message=b"replaced by a newer stream")
            conn = Connection(ws, p.ProxyStatus(
                id=pid, kind=hello.kind, name=hello.name, node=hello.node, identity=caller.uri,
                connected_at=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")))
            self.conns[pid] = conn
            log.info("proxy %s connected as %s", pid, caller.uri)
            await self._send(conn, self.full_state(hello.kind), self.version(), True, hello_at)
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                answer = p.decode(msg.data)
                if not isinstance(answer, p.Ack | p.Nack):
                    raise p.ProtocolError("expected ack or nack")
                conn.status.answered(answer)
                since = conn.sent_at.pop(answer.nonce, None)
                if since is not None:
                    self.metrics.answered(conn.status.kind, asyncio.get_running_loop().time() - since,
                                          isinstance(answer, p.Ack))
                if isinstance(answer, p.Nack):
                    log.warning("proxy %s rejected version %s: %s", pid, answer.version,
                                answer.error)
        except (p.ProtocolError, PermissionError) as e:
            log.warning("closing stream from %s: %s", caller.uri, e)
            code = WSCloseCode.POLICY_VIOLATION if isinstance(e, PermissionError) \
                else WSCloseCode.PROTOCOL_ERROR
            with contextlib.suppress(Exception):
                await ws.close(code=code, message=str(e).encode()[:120])
        except TimeoutError:
            with contextlib.suppress(Exception):
                await ws.close(message=b"no hello within 10s")
        finally:
            if conn is not None and self.conns.get(conn.status.id) is conn:
                del self.conns[conn.status.id]
                log.info("proxy %s disconnected", conn.status.id)
        return ws

    def _check_hello(self, caller: Caller, hello: p.Hello) -> None:
        ident = caller.identity
        if hello.kind == p.NODE_AGENT and not (isinstance(ident, NodeId) and ident.node == hello.node):
            raise PermissionError(f"{caller.uri} may not speak for node agent {hello.node!r}")
        pod_ok = isinstance(ident, PodId) and ident.pod == hello.name
        if hello.kind in (p.WAYPOINT, p.GATEWAY) and not pod_ok:
            raise PermissionError(f"{caller.uri} may not speak for {hello.kind} pod {hello.name!r}")

    def proxies(self) -> list[dict[str, Any]]:
        return [c.status.view() for c in sorted(self.conns.values(), key=lambda c: c.status.id)]

    # ---- certificate signing -------------------------------------------------------------
    def allowed_for(self, caller: Caller) -> Callable[[str], str | None]:
        """Istio's node authorizer: a node agent may only get identities of pods on its node."""
        ident = caller.identity

        def check(uri: str) -> str | None:
            want = SpiffeId.parse(uri)
            if isinstance(ident, NodeId):
                if (want.namespace, want.service_account) in self.pods_on_node(ident.node):
                    return None
                return (f"node agent of {ident.node} may not obtain {want.principal}: no pod of "
                        f"service account {want.namespace}/{want.service_account} runs on "
                        f"{ident.node}")
            pod = self.pod_lookup(ident.namespace, ident.pod)
            if pod is None or pod["metadata"].get("deletionTimestamp"):
                return f"pod {ident.namespace}/{ident.pod} no longer exists"
            sa = pod.get("spec", {}).get("serviceAccountName") or "default"
            if sa != ident.service_account:
                return f"pod {ident.namespace}/{ident.pod} now runs as {sa}, not {ident.service_account}"
            if (want.namespace, want.service_account) != (ident.namespace, ident.service_account):
                return (f"pod {ident.namespace}/{ident.pod} may only obtain its own identity "
                        f"({ident.namespace}/sa/{ident.service_account}), not {want.principal}")
            return None
        return check

    async def sign(self, request: web.Request) -> web.Response:
        caller = peer_identity(request)
        try:
            body = await request.json()
            csr = str(body["csr"]).encode()
            ttl = body.get("ttl_seconds")
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": "expected JSON {csr, ttl_seconds?}"}, status=400)
        try:
            signed = self.ca.sign_csr(csr, caller=caller.uri, allowed=self.allowed_for(caller),
                                      ttl=dt.timedelta(seconds=float(ttl)) if ttl else None)
        except CsrRefused as e:
            self.metrics.csr(signed=False)
            log.warning("certificate refused for %s: %s", caller.uri, e)
            return web.json_response({"error": str(e)}, status=403)
        except IdentityError as e:
            self.metrics.csr(signed=False)
            return web.json_response({"error": str(e)}, status=400)
        self.metrics.csr(signed=True)
        return web.json_response({"cert_chain": signed.chain_pem, "identity": signed.identity,
                                  "serial": signed.serial,
                                  "not_after": signed.not_after.isoformat()})

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_get("/v1/stream", self.stream)
        app.router.add_post("/v1/certificates", self.sign)
        return app


def server_tls(cert_file: str, key_file: str, root_file: str) -> ssl.SSLContext:
    """Mutual TLS 1.3: the proxy must present a certificate from our CA."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(cert_file, key_file)
    ctx.load_verify_locations(root_file)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx
