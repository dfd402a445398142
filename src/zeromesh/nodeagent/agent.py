"""The node agent process: node credential, push stream, workload certificates, the ztunnel,
and its metrics/admin endpoints on host loopback ports recorded in the cluster config.

The metrics port also relays GETs to port 15020 of this node's pods
(`/proxy/NS/POD/PATH`, contract in `zeromesh.telemetry.prometheus`): waypoint and
gateway metrics live inside pod network namespaces the host cannot reach.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any

import aiohttp
import httptools
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from zeromesh.errors import ZeromeshError
from zeromesh.local.plan import ClusterPlan
from zeromesh.local.state import ClusterConfig, Paths, load_config
from zeromesh.nodeagent.certs import CertManager
from zeromesh.push import protocol as p
from zeromesh.push.client import ConfigRejected, PushClient, client_tls
from zeromesh.telemetry.prometheus import (
    METRICS_BY_NAME,
    PROXY_ADMIN_PORT,
    RELAY_CONNECT_TIMEOUT,
    RELAY_MAX_BYTES,
    RELAY_TIMEOUT,
    RelayRefused,
    RelayTarget,
    parse_relay_target,
)
from zeromesh.ztunnel.config import Snapshot, WorkloadInfo
from zeromesh.ztunnel.proxy import Ztunnel
from zeromesh.ztunnel.sockets import connect_socket_in_netns

log = logging.getLogger("zeromesh.nodeagent")

REQUIRED = {"workload": ("uid", "ip", "namespace", "name", "protocol"),
            "service": ("namespace", "name", "hostname", "ports", "endpoints")}


def validate(state: Mapping[str, Mapping[str, Any]], changed: Mapping[str, Mapping[str, Any]]) -> None:
    """Refuse a configuration this node agent could not act on (the update is NACKed).
    Only the records the update changed need checking: the rest were accepted before."""
    for type_, fields in REQUIRED.items():
        for key, rec in changed.get(type_, {}).items():
            if rec is None:
                continue
            missing = [f for f in fields if f not in rec]
            if missing:
                raise ConfigRejected(f"{type_} {key}: missing {', '.join(missing)}")
            if type_ == "workload" and rec["protocol"] not in ("HBONE", "TCP"):
                raise ConfigRejected(f"workload {key}: unknown protocol {rec['protocol']!r}")


Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Opener = Callable[[str, str, int], Awaitable[Streams]]


async def open_in_netns(netns: str, ip: str, port: int) -> Streams:
    """A TCP connection made from inside `netns` (the pod's own: waypoint and gateway pods are not
    enrolled, so no ztunnel socket exists there; the proxy mark keeps an enrolled pod's capture
    rules off it)."""
    loop = asyncio.get_running_loop()
    sock = await loop.run_in_executor(None, functools.partial(connect_socket_in_netns, netns))
    try:
        await loop.sock_connect(sock, (ip, port))
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock)


class _Response:
    """httptools callbacks collecting one bounded response."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.headers: dict[str, str] = {}
        self.body = bytearray()
        self.headers_done = False
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        if len(self.body) + len(body) > self.limit:
            raise RelayRefused(502, f"the pod's response is larger than {self.limit} bytes")
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True


class ProxyRelay:
    """GET relay from the host's loopback to port 15020 of a pod on this node: what Prometheus
    and the CLI use for waypoint/gateway metrics, traces and config dumps. Only pods the pushed
    state places on this node; GET only; one request per connection, bounded in time, size and
    concurrency."""

    def __init__(self, node: str, workloads: Callable[[], Iterable[WorkloadInfo]],
                 netns: Callable[[str, str], str], opener: Opener = open_in_netns,
                 limit: int = RELAY_MAX_BYTES, timeout: float = RELAY_TIMEOUT,
                 concurrency: int = 16) -> None:
        self.node = node
        self.workloads = workloads
        self.netns = netns
        self.opener = opener
        self.limit = limit
        self.timeout = timeout
        self._slots = asyncio.Semaphore(concurrency)

    def find(self, target: RelayTarget) -> WorkloadInfo:
        wl = next((w for w in self.workloads()
                   if w.namespace == target.namespace and w.name == target.pod), None)
        if wl is None:
            raise RelayRefused(404, f"pod {target.namespace}/{target.pod} is not known to the node "
                                    f"agent of {self.node}")
        if wl.node != self.node:
            raise RelayRefused(404, f"pod {target.namespace}/{target.pod} runs on {wl.node or 'no node'}, "
                                    f"not {self.node}: ask that node's agent")
        return wl

    async def handle(self, request: web.Request) -> web.Response:
        budget = self.timeout
        with contextlib.suppress(ValueError):     # answer a little before Prometheus gives up
            scrape = float(request.headers.get("X-Prometheus-Scrape-Timeout-Seconds", budget))
            budget = min(budget, max(0.5, scrape - 0.25))
        pod = "the pod"
        try:
            target = parse_relay_target(request.raw_path)
            wl = self.find(target)
            pod = f"{wl.namespace}/{wl.name}"
            async with asyncio.timeout(budget), self._slots:
                status, ctype, body = await self.fetch(wl, target, request.headers.get("Accept", "*/*"))
        except RelayRefused as e:
            return web.Response(status=e.status, text=f"{e}\n")
        except TimeoutError:
            return web.Response(status=504, text=f"no answer from {pod} port {PROXY_ADMIN_PORT} "
                                                 f"within {budget:g}s\n")
        except (OSError, ZeromeshError) as e:
            return web.Response(status=502, text=f"cannot reach {pod} port {PROXY_ADMIN_PORT}: {e}\n")
        headers = {"Content-Type": ctype} if ctype else {}
        return web.Response(status=status, body=bytes(body), headers=headers)

    async def fetch(self, wl: WorkloadInfo, target: RelayTarget, accept: str) -> tuple[int, str, bytearray]:
        reader, writer = await asyncio.wait_for(
            self.opener(self.netns(wl.namespace, wl.name), wl.ip, PROXY_ADMIN_PORT), RELAY_CONNECT_TIMEOUT)
        try:
            accept = "".join(ch for ch in accept if 32 <= ord(ch) < 127)[:512]
            writer.write((f"GET {target.path} HTTP/1.1\r\nHost: {wl.ip}:{PROXY_ADMIN_PORT}\r\n"
                          f"Accept: {accept}\r\nUser-Agent: zeromesh-nodeagent-relay\r\n"
                          "Connection: close\r\n\r\n").encode("ascii"))
            await writer.drain()
            resp = _Response(self.limit)
            parser = httptools.HttpResponseParser(resp)
            while not resp.complete:
                chunk = await reader.read(65536)
                if not chunk:
                    # Read-until-close bodies end here; anything else was cut short.
                    if resp.headers_done and "content-length" not in resp.headers \
                            and "chunked" not in resp.headers.get("transfer-encoding", ""):
                        break
                    raise RelayRefused(502, "the pod closed the connection before a whole response")
                try:
                    parser.feed_data(chunk)
                except httptools.HttpParserCallbackError as e:
                    if isinstance(e.__context__, RelayRefused):    # ours, raised in a callback
                        raise e.__context__ from None
                    raise RelayRefused(502, f"the pod's answer is not HTTP: {e}") from e
                except httptools.HttpParserError as e:
                    raise RelayRefused(502, f"the pod's answer is not HTTP: {e}") from e
            return parser.get_status_code(), resp.headers.get("content-type", ""), resp.body
        finally:
            writer.close()


class HealthCollector:
    """The node agent's health metrics, read when scraped (no state of their own)."""

    def __init__(self, version: Callable[[], str], connected: Callable[[], bool],
                 certificates: Callable[[], Iterable[tuple[str, float]]]) -> None:
        self.version = version
        self.connected = connected
        self.certificates = certificates

    @staticmethod
    def _gauge(name: str, labels: tuple[str, ...] = ()) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, METRICS_BY_NAME[name].help, labels=list(labels))

    def collect(self) -> Iterator[Metric]:
        version = self._gauge("zeromesh_config_version")
        v = self.version()
        version.add_metric([], float(v) if v.isdigit() else 0.0)
        connected = self._gauge("zeromesh_push_connected")
        connected.add_metric([], 1.0 if self.connected() else 0.0)
        expiry = self._gauge("zeromesh_workload_certificate_expiry_timestamp_seconds", ("identity",))
        for identity, not_after in sorted(self.certificates()):
            expiry.add_metric([identity], not_after)
        yield from (version, connected, expiry)


class NodeAgent:
    def __init__(self, cluster: str, node: str) -> None:
        self.paths = Paths(cluster)
        cfg = load_config(self.paths)
        if cfg is None:
            raise SystemExit(f"no cluster state at {self.paths.config}")
        self.cfg: ClusterConfig = cfg
        self.node = node
        self.cred = self.paths.node_credential(node)
        plan = ClusterPlan(cluster, cfg.nodes)
        self.certs = CertManager(cfg.trust_domain, self._request_cert,
                                 self.paths.run / "certs" / node)
        self.ztunnel = Ztunnel(node, plan.pod_netns, cfg.trust_domain, self.certs, self._roots)
        self.client = PushClient(self._url, self._tls, p.Hello(p.NODE_AGENT, f"ztunnel-{node}", node),
                                 validate=validate, on_state=self._on_state)
        self.relay = ProxyRelay(node, lambda: self.ztunnel.snapshot.workloads_by_uid.values(),
                                plan.pod_netns)
        self.health = CollectorRegistry(auto_describe=False)
        self.health.register(HealthCollector(
            lambda: self.client.version, lambda: self.client.connected,
            lambda: [(c.identity.uri, c.leaf.not_valid_after_utc.timestamp())
                     for c in self.certs.certs.values()]))

    def _roots(self) -> str:
        return self.paths.root_cert.read_text()

    def _url(self, path: str = "/v1/stream") -> str:
        current = load_config(self.paths) or self.cfg
        return f"https://127.0.0.1:{current.xds_port}{path}"

    def _tls(self) -> Any:
        return client_tls(str(self.cred / "node-chain.pem"), str(self.cred / "node-key.pem"),
                          str(self.paths.root_cert))

    async def _request_cert(self, csr: bytes) -> list[str]:
        body: dict[str, Any] = {"csr": csr.decode()}
        if self.cfg.workload_cert_ttl:
            body["ttl_seconds"] = self.cfg.workload_cert_ttl
        async with aiohttp.ClientSession() as s, s.post(
                self._url("/v1/certificates"), json=body, ssl=self._tls(),
                timeout=aiohttp.ClientTimeout(total=10)) as r:
            answer = await r.json(content_type=None)
            if r.status != 200:
                raise RuntimeError(f"CA refused ({r.status}): {answer.get('error')}")
            return list(answer["cert_chain"])

    async def _on_state(self, state: dict[str, dict[str, Any]], version: str) -> None:
        snap = Snapshot.from_state(state, version, self.cfg.trust_domain)
        old = self.ztunnel.snapshot.policies
        for pol in snap.authz:
            if pol.notes and old.get(pol.key) != snap.policies.get(pol.key):
                log.warning("AuthorizationPolicy %s at the ztunnel: %s", pol.key, "; ".join(pol.notes))
        enrolled = self.ztunnel.local_enrolled(snap)
        self.certs.want({(w.namespace, w.service_account) for w in enrolled.values()})
        await self.ztunnel.update(snap)
        log.info("config version %s: %d workloads, %d services, %d enrolled here", version,
                 len(snap.workloads_by_uid), len(snap.services_by_vip), len(enrolled))

    # ---- metrics and admin ------------------------------------------------------------------
    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.ztunnel.telemetry.metrics.registry)
                            + generate_latest(self.health),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _ready(self, _: web.Request) -> web.Response:
        ok = self.client.version != ""
        return web.Response(status=200 if ok else 503, text="ready\n" if ok else "not synced\n")

    async def _config_dump(self, _: web.Request) -> web.Response:
        snap = self.ztunnel.snapshot
        return web.json_response({
            "node": self.node, "version": snap.version, "connected": self.client.connected,
            "workloads": [{"uid": w.uid, "namespace": w.namespace, "name": w.name, "ip": w.ip,
                           "node": w.node, "protocol": w.protocol, "identity": w.identity.uri,
                           "enrolled_here": w.uid in self.ztunnel.pods}
                          for w in sorted(snap.workloads_by_uid.values(),
                                          key=lambda w: (w.namespace, w.name))],
            "services": [{"namespace": s.namespace, "name": s.name, "hostname": s.hostname,
                          "vip": s.vip, "ports": {str(k): v for k, v in s.ports.items()},
                          "endpoints": [e.ip for e in s.endpoints if e.ready]}
                         for s in sorted(snap.services_by_vip.values(),
                                         key=lambda s: (s.namespace, s.name))],
            "certificates": self.certs.view(),
        })

    async def _serve(self) -> list[web.AppRunner]:
        ports = self.cfg.node_ports.get(self.node, {})
        runners = []
        for port, routes in ((ports.get("metrics"), [web.get("/metrics", self._metrics),
                                                     web.get("/healthz/ready", self._ready),
                                                     web.get("/proxy/{tail:.*}", self.relay.handle,
                                                             allow_head=False)]),
                             (ports.get("admin"), [web.get("/config_dump", self._config_dump),
                                                   web.get("/healthz/ready", self._ready)])):
            if not port:
                continue
            app = web.Application()
            app.add_routes(routes)
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port, reuse_address=True).start()
            runners.append(runner)
        log.info("node agent %s: metrics on 127.0.0.1:%s, admin on 127.0.0.1:%s", self.node,
                 ports.get("metrics"), ports.get("admin"))
        return runners

    async def run(self) -> None:
        runners = await self._serve()
        tasks = [asyncio.create_task(self.client.run()), asyncio.create_task(self.certs.run())]
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        for t in tasks:
            t.cancel()
        await self.ztunnel.close()
        for r in runners:
            await r.cleanup()
        log.info("node agent %s stopped", self.node)


async def run(cluster: str, node: str) -> None:
    await NodeAgent(cluster, node).run()
