"""The node agent process: node credential, push stream, workload certificates, the ztunnel,
and its metrics/admin endpoints on host loopback ports recorded in the cluster config."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Mapping
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from zeromesh.local.plan import ClusterPlan
from zeromesh.local.state import ClusterConfig, Paths, load_config
from zeromesh.nodeagent.certs import CertManager
from zeromesh.push import protocol as p
from zeromesh.push.client import ConfigRejected, PushClient, client_tls
from zeromesh.ztunnel.config import Snapshot
from zeromesh.ztunnel.proxy import Ztunnel

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
        return web.Response(body=generate_latest(self.ztunnel.telemetry.metrics.registry),
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
                                                     web.get("/healthz/ready", self._ready)]),
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
