"""The waypoint pod's process.

The runner starts it as root inside the pod's network namespace with the pod's bootstrap
credential on a pipe (never on disk where other pods could read it). It imports what it
needs, then drops to the pod's own uid and makes itself non-dumpable, so neither the
applications (uid 65534) nor another proxy can read its keys. Then, as Istio's waypoint:
a push stream to the control plane (bootstrap credential), its own workload certificate
from the CA (a CSR for the Gateway's service account), HBONE on 15008, readiness on 15021
and Prometheus metrics on 15020, with the recent traces at ``/debug/traces?limit=N``.
"""

from __future__ import annotations

import abc
import asyncio
import ctypes
import json
import logging
import os
import socket
import ssl
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import generate_latest

from zeromesh.hbone import HboneError, TunnelRequested
from zeromesh.identity.spiffe import SpiffeId
from zeromesh.nodeagent.certs import CertManager
from zeromesh.push import protocol as p
from zeromesh.push.client import PushClient, client_tls
from zeromesh.waypoint.config import AUTHZ, Upstream, WaypointConfig
from zeromesh.waypoint.duplex import Duplex, StreamDuplex, TunnelDuplex
from zeromesh.waypoint.engine import ConnectFailure, HttpEngine, Peer
from zeromesh.waypoint.jwks_fetch import JwksFetcher
from zeromesh.waypoint.telemetry import (
    ISTIO_TELEMETRY,
    TELEMETRY_POLICIES,
    ProxyScope,
    TelemetrySettings,
    WaypointTelemetry,
    batch_access_log,
)
from zeromesh.ztunnel.hbone_io import HboneLink, LinkPool, TunnelStream, connect_link

log = logging.getLogger("zeromesh.waypoint")

HBONE_PORT, METRICS_PORT, STATUS_PORT = 15008, 15020, 15021
CONNECT_TIMEOUT = 10.0
PR_SET_DUMPABLE = 4


def drop_privileges(uid: int) -> None:
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


def _write_private(directory: Path, name: str, text: str) -> str:
    path = directory / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return str(path)


class ProxyProcess(abc.ABC):
    """What a waypoint and the ingress gateway share: the push stream, their own workload
    certificate, the L7 engine and its upstream connections into the mesh, status and metrics."""

    kind = p.WAYPOINT

    def __init__(self, cred: dict[str, Any], directory: Path) -> None:
        self.namespace = os.environ["POD_NAMESPACE"]
        self.pod = os.environ["POD_NAME"]
        self.gateway = os.environ.get("GATEWAY_NAME") or self.pod
        self.service_account = os.environ.get("SERVICE_ACCOUNT") or "default"
        self.node = os.environ.get("NODE_NAME", "")
        self.xds = os.environ["ZEROMESH_XDS"]
        self.trust_domain = os.environ.get("TRUST_DOMAIN", "cluster.local")
        self.dir = directory
        self.roots_pem: str = cred["root_pem"]
        self.key_file = _write_private(directory, "bootstrap-key.pem", cred["key_pem"])
        self.chain_file = _write_private(directory, "bootstrap-chain.pem", "".join(cred["cert_chain"]))
        self.root_file = _write_private(directory, "root-cert.pem", self.roots_pem)
        self.certs = CertManager(self.trust_domain, self._request_cert, directory / "certs")
        self.telemetry = WaypointTelemetry(f"{self.gateway}.{self.namespace}")
        self.config: Any = self.build_config({}, "")
        self.jwks = JwksFetcher()
        self.engine = HttpEngine(lambda: self.config, self._connect_upstream, self.telemetry, jwks=self.jwks)
        self.links = LinkPool()
        self.client = PushClient(self._url, self._tls, p.Hello(self.kind, self.pod, self.node),
                                 on_state=self._on_state)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._policies: dict[str, Any] = {}
        self.ready = False

    @abc.abstractmethod
    def build_config(self, state: dict[str, dict[str, Any]], version: str) -> Any:
        """The proxy's pure view of a pushed state (WaypointConfig, GatewayConfig)."""

    @abc.abstractmethod
    async def serve(self) -> list[asyncio.AbstractServer]:
        """Open the proxy's listeners once it has config and a certificate."""

    def spawn(self, coro: Any) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    # ---- control plane ------------------------------------------------------------------------
    def _url(self, path: str = "/v1/stream") -> str:
        return f"https://{self.xds}{path}"

    def _tls(self) -> ssl.SSLContext:
        return client_tls(self.chain_file, self.key_file, self.root_file)

    async def _request_cert(self, csr: bytes) -> list[str]:
        async with aiohttp.ClientSession() as s, s.post(
                self._url("/v1/certificates"), json={"csr": csr.decode()}, ssl=self._tls(),
                timeout=aiohttp.ClientTimeout(total=10)) as r:
            answer = await r.json(content_type=None)
            if r.status != 200:
                raise RuntimeError(f"CA refused ({r.status}): {answer.get('error')}")
            return list(answer["cert_chain"])

    def _on_state(self, state: dict[str, dict[str, Any]], version: str) -> None:
        old, self._policies = self._policies, dict(state.get(AUTHZ) or {})
        self.config = self.build_config(state, version)
        self._configure_telemetry(state)
        for pol in self.config.authz:
            if pol.notes and self._policies.get(pol.key) != old.get(pol.key):
                log.info("AuthorizationPolicy %s at this proxy: %s", pol.key, "; ".join(pol.notes))
        log.info("config version %s applied", version)

    def _configure_telemetry(self, state: dict[str, dict[str, Any]]) -> None:
        """TelemetryPolicies and Istio Telemetry for this proxy; its name in traces is its
        canonical service and namespace, as Istio's (``istio-ingressgateway.istio-system``)."""
        me = next((w for w in (state.get("workload") or {}).values()
                   if w and w.get("namespace") == self.namespace and w.get("name") == self.pod), None)
        labels = dict((me or {}).get("labels") or {})
        canonical = str((me or {}).get("canonical_name") or self.gateway)
        scope = ProxyScope(self.namespace, self.gateway, labels)
        settings = TelemetrySettings((state.get(TELEMETRY_POLICIES) or {}).values(),
                                     (state.get(ISTIO_TELEMETRY) or {}).values(), scope)
        self.telemetry.configure(settings, f"{canonical}.{self.namespace}")

    # ---- upstream ----------------------------------------------------------------------------
    async def _connect_upstream(self, up: Upstream, headers: list[tuple[str, str]]) -> Duplex:
        if up.meshed and up.workload is not None:
            identity = up.workload.identity.uri
            link = await self.links.get((up.ip, identity), lambda: self._link(up.ip, identity))
            stream = await link.open(up.key, headers)
            status, _ = await asyncio.wait_for(stream.opened, CONNECT_TIMEOUT)
            if status != 200:
                stream.done()
                raise ConnectFailure(f"HBONE CONNECT to {up.key} answered {status}")
            return TunnelDuplex(stream, up.key)
        reader, writer = await asyncio.wait_for(asyncio.open_connection(up.ip, up.port), CONNECT_TIMEOUT)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return StreamDuplex(reader, writer)

    async def _link(self, ip: str, identity: str) -> HboneLink:
        cert = await self.certs.get(self.namespace, self.service_account)
        ctx = self.certs.client_context(cert, self.roots_pem)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return await connect_link(sock, ip, HBONE_PORT, ctx, {identity}, CONNECT_TIMEOUT)

    # ---- status and metrics ----------------------------------------------------------------------
    async def _ready(self, _: web.Request) -> web.Response:
        ok = self.ready and self.client.synced.is_set()
        return web.Response(status=200 if ok else 503, text="ready\n" if ok else "not ready\n")

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.telemetry.metrics.registry),
                            content_type="text/plain", charset="utf-8")

    def dump(self) -> dict[str, Any]:
        return {"version": self.config.version, "policies": [pol.key for pol in self.config.authz],
                "certificates": self.certs.view()}

    async def _config_dump(self, _: web.Request) -> web.Response:
        return web.json_response(self.dump())

    async def _traces(self, request: web.Request) -> web.Response:
        """The most recent traces this proxy took part in, newest first (``docs/tracing.md``)."""
        raw = request.query.get("limit", "")
        try:
            limit = int(raw) if raw else None
        except ValueError:
            return web.json_response({"error": f"limit must be an integer, got {raw!r}"}, status=400)
        return web.json_response(self.telemetry.recent_traces(limit))

    async def run(self) -> None:
        batch_access_log()
        runners = []
        for port, routes in ((STATUS_PORT, [web.get("/healthz/ready", self._ready)]),
                             (METRICS_PORT, [web.get("/stats/prometheus", self._metrics),
                                             web.get("/metrics", self._metrics),
                                             web.get("/config_dump", self._config_dump),
                                             web.get("/debug/traces", self._traces)])):
            app = web.Application()
            app.add_routes(routes)
            r = web.AppRunner(app, access_log=None)
            await r.setup()
            await web.TCPSite(r, "0.0.0.0", port).start()
            runners.append(r)
        self.certs.want({(self.namespace, self.service_account)})
        tasks = [asyncio.create_task(self.client.run()), asyncio.create_task(self.certs.run())]
        await self.client.synced.wait()
        await self.certs.get(self.namespace, self.service_account)
        servers = await self.serve()
        self.ready = True
        try:
            await asyncio.gather(*tasks)
        finally:
            for server in servers:
                server.close()
            self.engine.close()
            self.links.close()
            self.telemetry.close()
            for r in runners:
                await r.cleanup()


class WaypointProxy(ProxyProcess):
    """A waypoint: HBONE in on 15008 (its own identity), HTTP through the engine, HBONE out."""

    def build_config(self, state: dict[str, dict[str, Any]], version: str) -> WaypointConfig:
        return WaypointConfig.build(state, version, namespace=self.namespace, name=self.gateway,
                                    pod_name=self.pod, trust_domain=self.trust_domain)

    def dump(self) -> dict[str, Any]:
        cfg = self.config
        return {**super().dump(), "waypoint": f"{self.namespace}/{self.gateway}", "legacy": cfg.legacy,
                "routes": {h: [r.name for r in rs] for h, rs in cfg.routes.items()},
                "subsets": {f"{h}/{s}": dict(v) for (h, s), v in cfg.subsets.items()}}

    async def serve(self) -> list[asyncio.AbstractServer]:
        cert = await self.certs.get(self.namespace, self.service_account)
        ctx = self.certs.server_context(cert, self.roots_pem)
        server = await asyncio.get_running_loop().create_server(
            lambda: HboneLink(client=False, on_request=self._on_request),
            host="0.0.0.0", port=HBONE_PORT, ssl=ctx, ssl_handshake_timeout=10, backlog=1024)
        log.info("waypoint %s/%s (pod %s) serving HBONE on :%d as %s", self.namespace, self.gateway,
                 self.pod, HBONE_PORT, cert.identity.uri)
        return [server]

    def _peer_principal(self, link: HboneLink) -> str | None:
        for uri in link.peer_identities:
            try:
                sid = SpiffeId.parse(uri)
            except ValueError:
                continue
            if sid.trust_domain == self.trust_domain:
                return sid.uri.removeprefix("spiffe://")
        return None

    def _on_request(self, link: HboneLink, req: TunnelRequested, stream: TunnelStream) -> None:
        self.spawn(self._tunnel(link, req, stream))

    async def _tunnel(self, link: HboneLink, req: TunnelRequested, stream: TunnelStream) -> None:
        cfg = self.config

        def answer(status: int) -> None:
            try:
                link.conn.respond(req.stream_id, status)
                link.flush()
            except HboneError:
                pass
            if status != 200:
                stream.done()

        principal = self._peer_principal(link)
        if principal is None:
            answer(401)
            return
        dest = cfg.resolve(req.authority)
        if dest is None or not cfg.serves(dest):
            log.info("CONNECT %s from %s: not a destination this waypoint serves", req.authority, principal)
            answer(503 if dest is None else 401)
            return
        ip, port = link.peer or ("", 0)
        peer = Peer(principal, ip, port, cfg.snapshot.workloads_by_ip.get(ip))
        answer(200)
        try:
            await self.engine.serve(TunnelDuplex(stream, f"{ip}:{port}"), dest, peer)
        except Exception:
            log.exception("request handling failed for %s", req.authority)
            stream.abort()



def read_credential_and_drop(credential_fd: int, uid: int) -> tuple[dict[str, Any], Path]:
    """Read the bootstrap credential the runner piped in, then become the pod's own uid."""
    with os.fdopen(credential_fd, "rb") as f:
        cred = json.loads(f.read())
    import encodings.idna  # noqa: F401  (codecs looked up lazily must be loaded before the drop)
    directory = Path(os.environ["ZEROMESH_PROXY_DIR"])
    drop_privileges(uid)
    (directory / "certs").mkdir(mode=0o700, exist_ok=True)
    return cred, directory


def run(cluster: str, credential_fd: int, uid: int) -> int:
    cred, directory = read_credential_and_drop(credential_fd, uid)
    log.info("waypoint process for cluster %s running as uid %d", cluster, os.getuid())
    proxy = WaypointProxy(cred, directory)
    try:
        asyncio.run(proxy.run())
    except KeyboardInterrupt:
        return 0
    return 0
