"""One collection round: ask the control plane and every proxy, all at once, with short timeouts.

Where to ask comes from the cluster's recorded state (``cluster.json``: each node agent's
loopback ports) and the mesh model (which pods are waypoints or the gateway: their
stats and traces are reached through their node agent's relay,
``/proxy/NS/POD/stats/prometheus`` and ``/proxy/NS/POD/debug/traces``). Nothing here
decides anything: a missing endpoint (404, connection refused) is recorded as absent and
the round goes on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

import aiohttp

from zeromesh.local.state import ClusterConfig, Paths, load_config
from zeromesh.ui.metrics import Sample, Scrape, parse
from zeromesh.ui.pages import GATEWAY_NAME_LABEL, TRACES_SHOWN
from zeromesh.ui.state import MESH_TYPES, Inputs, Source

log = logging.getLogger("zeromesh.ui")

GATEWAYS = "gateways.gateway.networking.k8s.io"


class _Absent(Exception):
    """Nothing answers there (yet): not an error worth shouting about."""


def proxy_pods(workloads: Mapping[str, Mapping[str, Any]], waypoints: Mapping[str, Any]
               ) -> list[tuple[str, str, str]]:
    """(namespace, pod, node) of the waypoint and ingress gateway pods: the HTTP reporters."""
    out = []
    for w in workloads.values():
        labels = w.get("labels") or {}
        is_waypoint = f"{w['namespace']}/{labels.get(GATEWAY_NAME_LABEL, '')}" in waypoints
        if (is_waypoint or labels.get("istio") == "ingressgateway") and w.get("node"):
            out.append((w["namespace"], w["name"], w["node"]))
    return sorted(out)


class Collector:
    def __init__(self, cluster: str, timeout: float = 2.0) -> None:
        self.cluster = cluster
        self.paths = Paths(cluster)
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._http: aiohttp.ClientSession | None = None
        self._cp: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Collector:
        self._http = aiohttp.ClientSession(timeout=self.timeout)
        self._cp = aiohttp.ClientSession(timeout=self.timeout,
                                         connector=aiohttp.UnixConnector(path=str(self.paths.socket)))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for s in (self._http, self._cp):
            if s is not None:
                await s.close()

    async def _get(self, session: aiohttp.ClientSession | None, url: str) -> bytes:
        assert session is not None, "use Collector as an async context manager"
        try:
            async with session.get(url) as r:
                if r.status == 404:
                    raise _Absent("404 not found")
                body = await r.read()
                if r.status >= 400:
                    raise RuntimeError(f"HTTP {r.status}: {body[:200].decode(errors='replace')}")
                return body
        except (aiohttp.ClientConnectorError, FileNotFoundError, ConnectionRefusedError) as e:
            raise _Absent(f"not listening ({e.__class__.__name__})") from e

    async def _fetch(self, name: str, session: aiohttp.ClientSession | None, url: str,
                     sources: list[Source]) -> bytes | None:
        try:
            body = await self._get(session, url)
        except _Absent as e:
            sources.append(Source(name, url, "absent", str(e)))
            return None
        except (aiohttp.ClientError, TimeoutError, OSError, RuntimeError) as e:
            sources.append(Source(name, url, "error", str(e) or e.__class__.__name__))
            return None
        sources.append(Source(name, url, "ok"))
        return body

    async def _json(self, name: str, session: aiohttp.ClientSession | None, url: str,
                    sources: list[Source]) -> Any:
        body = await self._fetch(name, session, url, sources)
        if body is None:
            return None
        try:
            return json.loads(body)
        except ValueError as e:
            sources[-1] = Source(name, url, "error", f"not JSON: {e}")
            return None

    async def collect(self) -> Inputs:
        cfg = load_config(self.paths) or ClusterConfig(self.cluster, 0)
        sources: list[Source] = []
        cp = "http://controlplane"
        mesh_answers = await asyncio.gather(
            *(self._json(f"control plane mesh/{t}", self._cp, f"{cp}/v1/mesh/{t}", sources)
              for t in MESH_TYPES),
            self._json("control plane gateways", self._cp, f"{cp}/v1/objects/{GATEWAYS}", sources),
            self._json("control plane proxies", self._cp, f"{cp}/v1/proxies", sources))
        mesh = {t: a or {} for t, a in zip(MESH_TYPES, mesh_answers, strict=False)}
        gateways, proxies = mesh_answers[len(MESH_TYPES)] or {}, mesh_answers[len(MESH_TYPES) + 1] or {}

        jobs: list[tuple[str, str, str, str]] = []       # (kind, target, name, url)
        for node in cfg.plan.node_names() if cfg.nodes else []:
            ports = cfg.node_ports.get(node, {})
            if ports.get("metrics"):
                jobs.append(("metrics", f"{node}/ztunnel", f"{node} ztunnel metrics",
                             f"http://127.0.0.1:{ports['metrics']}/metrics"))
            if ports.get("admin"):
                jobs.append(("dump", f"{node} ztunnel", f"{node} ztunnel config_dump",
                             f"http://127.0.0.1:{ports['admin']}/config_dump"))
        for ns, pod, node in proxy_pods(mesh["workload"], mesh["waypoint"]):
            port = cfg.node_ports.get(node, {}).get("metrics")
            if not port:
                continue
            base = f"http://127.0.0.1:{port}/proxy/{ns}/{pod}"
            jobs.append(("metrics", f"{ns}/{pod}", f"{ns}/{pod} stats", f"{base}/stats/prometheus"))
            jobs.append(("traces", f"{ns}/{pod}", f"{ns}/{pod} traces",
                         f"{base}/debug/traces?limit={TRACES_SHOWN}"))
            jobs.append(("dump", f"{ns}/{pod}", f"{ns}/{pod} config_dump", f"{base}/config_dump"))
        bodies = await asyncio.gather(*(self._fetch(name, self._http, url, sources)
                                        for _, _, name, url in jobs))
        at = time.monotonic()
        samples: list[Sample] = []
        ok: set[str] = set()
        dumps: list[Any] = []
        traces: dict[str, Any] = {}
        for (kind, target, name, url), body in zip(jobs, bodies, strict=True):
            if body is None:
                continue
            try:
                if kind == "metrics":
                    samples += parse(target, body.decode())
                    ok.add(target)
                elif kind == "dump":
                    dump = json.loads(body)
                    if isinstance(dump, dict):
                        dumps.append({**dump, "holder": target})
                else:
                    got = json.loads(body)
                    traces[target] = got if isinstance(got, list) else []
            except (ValueError, UnicodeDecodeError) as e:
                sources[:] = [s for s in sources if s.url != url]
                sources.append(Source(name, url, "error", f"unreadable answer: {e}"))
        return Inputs(cluster=self.cluster, trust_domain=cfg.trust_domain, mesh=mesh,
                      scrape=Scrape(tuple(samples), frozenset(ok), at),
                      gateways=gateways.get("items") or [], proxies=proxies.get("proxies") or [],
                      dumps=dumps, traces=traces, sources=sorted(sources, key=lambda s: s.name))
