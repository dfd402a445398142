"""The control plane process: store + controllers + an HTTP/JSON API on a root-only unix socket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from zeromesh.controlplane import objects as o
from zeromesh.controlplane.controllers import Controllers
from zeromesh.controlplane.mesh import MeshService
from zeromesh.controlplane.operations import Operations, Refused, docs_from_wire
from zeromesh.controlplane.store import SqliteStore
from zeromesh.controlplane.watch import WatchHub
from zeromesh.errors import ManifestError, ManifestErrors, NotFound
from zeromesh.local.state import ClusterConfig, Paths, load_config
from zeromesh.telemetry.prometheus import METRICS_BY_NAME

log = logging.getLogger("zeromesh.controlplane")

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "istio-system")
NODE_GRACE = 20.0
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ControlPlane:
    def __init__(self, cfg: ClusterConfig, paths: Paths) -> None:
        self.cfg = cfg
        self.paths = paths
        self.store = SqliteStore(str(paths.db))
        self.hub = WatchHub(self.store.revision())
        self.ops: Operations
        self.controllers = Controllers(self.store, cfg.plan, self._emit,
                                       ingress_ports=cfg.ingress_ports if cfg.ingress else None)
        self.ops = Operations(self.store, self.controllers)
        self.store.subscribe(self.hub.record)
        self.store.subscribe(self.controllers.on_change)
        self.mesh = MeshService(cfg, paths, self.store, self._emit)
        self.store.subscribe(self.mesh.on_change)
        self.heartbeats: dict[str, float] = {}
        self.started = time.monotonic()
        self.metrics = self.mesh.push.metrics.registry
        self.metrics.register(HealthCollector(self))

    def _emit(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self.ops.emit_event(obj, type_, reason, message)

    def bootstrap(self) -> None:
        """System namespaces and this cluster's nodes exist from the first start on."""
        with self.store.batch():
            for ns in SYSTEM_NAMESPACES:
                if self.store.get("namespaces", "", ns) is None:
                    self.store.put("namespaces", {
                        "apiVersion": "v1", "kind": "Namespace",
                        "metadata": {"name": ns, "uid": o.new_uid(), "creationTimestamp": o.now(),
                                     "labels": {"kubernetes.io/metadata.name": ns}},
                        "spec": {}, "status": {"phase": "Active"}})
            plan = self.cfg.plan
            for node in plan.node_names():
                obj = self.store.get("nodes", "", node)
                if obj is None:
                    obj = {"apiVersion": "v1", "kind": "Node",
                           "metadata": {"name": node, "uid": o.new_uid(),
                                        "creationTimestamp": o.now(),
                                        "labels": {"name": node, "kubernetes.io/hostname": node,
                                                   "kubernetes.io/os": "linux"}},
                           "spec": {"podCIDR": str(plan.node_pod_cidr(node)),
                                    "podCIDRs": [str(plan.node_pod_cidr(node))]},
                           "status": {}}
                status = obj.setdefault("status", {})
                status["addresses"] = [
                    {"type": "InternalIP", "address": str(plan.node_underlay_ip(node))},
                    {"type": "Hostname", "address": node}]
                status["nodeInfo"] = {"kubeletVersion": "zeromesh", "operatingSystem": "linux"}
                o.set_condition(status, "Ready", "Unknown", "NodeStatusUnknown",
                                "waiting for the node's runner")
                self.store.put("nodes", obj)
        self.drain()

    def drain(self) -> None:
        self.controllers.drain()

    # ---- node liveness ----------------------------------------------------
    def heartbeat(self, node: str) -> None:
        self.heartbeats[node] = time.monotonic()
        self._set_node_ready(node, "True", "RunnerReady", "the node's runner is posting status")

    def _set_node_ready(self, node: str, value: str, reason: str, message: str) -> None:
        obj = self.store.get("nodes", "", node)
        if obj is None:
            return
        if o.set_condition(obj.setdefault("status", {}), "Ready", value, reason, message):
            self.store.put("nodes", obj)

    async def tick(self) -> None:
        while True:
            await asyncio.sleep(2)
            now = time.monotonic()
            if now - self.started < NODE_GRACE:
                continue
            for node in self.cfg.plan.node_names():
                if now - self.heartbeats.get(node, 0) > NODE_GRACE:
                    self._set_node_ready(node, "Unknown", "NodeStatusUnknown",
                                         "the node's runner stopped posting status")
            self.drain()


class HealthCollector:
    """Control-plane health read at scrape time: the configuration version (store revision) and
    the CA roots' expiry, under zeromesh's and istiod's names (push and CSR metrics live with
    the push server)."""

    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp

    def collect(self) -> Iterator[Metric]:
        name = "zeromesh_config_version"
        yield GaugeMetricFamily(name, METRICS_BY_NAME[name].help, value=self.cp.store.revision())
        roots = self.cp.mesh.ca.roots
        if roots:
            expiry = min(r.not_valid_after_utc for r in roots).timestamp()
            for name in ("zeromesh_ca_root_expiry_timestamp_seconds",
                         "citadel_server_root_cert_expiry_timestamp"):
                yield GaugeMetricFamily(name, METRICS_BY_NAME[name].help, value=expiry)


async def serve_metrics(cp: ControlPlane) -> web.AppRunner | None:
    """`/metrics` on the recorded host-loopback port (none for a cluster.json from before it)."""
    if not cp.cfg.cp_metrics_port:
        log.warning("no control-plane metrics port in %s; `zeromesh up` records one", cp.paths.config)
        return None

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(cp.metrics), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", cp.cfg.cp_metrics_port))
    except OSError as e:
        sock.close()
        await runner.cleanup()
        log.error("control-plane metrics: cannot listen on 127.0.0.1:%d: %s", cp.cfg.cp_metrics_port, e)
        return None
    await web.SockSite(runner, sock).start()
    log.info("control-plane metrics on 127.0.0.1:%d/metrics", cp.cfg.cp_metrics_port)
    return runner


def json_error(status: int, message: str, errors: list[str] | None = None) -> web.Response:
    return web.json_response({"error": message, "errors": errors or [message]}, status=status)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    cp: ControlPlane = request.app["cp"]
    try:
        resp = await handler(request)
    except ManifestErrors as e:
        return json_error(422, "invalid manifest", [str(x) for x in e.errors])
    except ManifestError as e:
        return json_error(422, str(e))
    except NotFound as e:
        return json_error(404, str(e))
    except Refused as e:
        return json_error(e.status, str(e))
    except web.HTTPException:
        raise
    except Exception as e:  # a bug: report it, keep serving
        log.exception("request %s %s failed", request.method, request.path)
        return json_error(500, f"internal error: {e}")
    finally:
        if request.method != "GET":
            cp.drain()
    return resp


def q(request: web.Request, name: str, default: str = "") -> str:
    return request.query.get(name, default)


def make_app(cp: ControlPlane) -> web.Application:
    app = web.Application(middlewares=[errors_middleware], client_max_size=64 * 1024 * 1024)
    app["cp"] = cp
    routes = web.RouteTableDef()

    @routes.get("/v1/info")
    async def info(_: web.Request) -> web.Response:
        return web.json_response({"cluster": cp.cfg.name, "nodes": cp.cfg.plan.node_names(),
                                  "revision": cp.store.revision(), "pid": os.getpid()})

    @routes.get("/v1/proxies")
    async def proxies(_: web.Request) -> web.Response:
        return web.json_response({"version": cp.mesh.push.pushed_version or cp.mesh.version(),
                                  "proxies": cp.mesh.push.proxies()})

    @routes.get("/v1/ca")
    async def ca(_: web.Request) -> web.Response:
        return web.json_response(cp.mesh.ca_view())

    @routes.post("/v1/bootstrap-credential")
    async def bootstrap_credential(request: web.Request) -> web.Response:
        b = await request.json()
        try:
            return web.json_response(cp.mesh.bootstrap_credential(b["namespace"], b["pod"]))
        except LookupError as e:
            raise NotFound(str(e)) from e

    @routes.get("/v1/mesh/{type}")
    async def mesh_records(request: web.Request) -> web.Response:
        return web.json_response(cp.mesh.records(request.match_info["type"]))

    @routes.get("/v1/config")
    async def config(_: web.Request) -> web.Response:
        return web.json_response({"name": cp.cfg.name, "nodes": cp.cfg.nodes,
                                  "image_table": cp.cfg.image_table, "python": cp.cfg.python,
                                  "ingress": cp.cfg.ingress, "ingress_ports": cp.cfg.ingress_ports})

    @routes.put("/v1/ingress")
    async def ingress(request: web.Request) -> web.Response:
        """`up` and `install --ingress` say whether the ingress gateway runs, with which loopback
        ports (already recorded in cluster.json); the objects follow before this returns."""
        b = await request.json()
        ports = b.get("ports")
        if ports is not None and not (isinstance(ports, dict)
                                      and all(isinstance(v, int) for v in ports.values())):
            raise Refused("ports: a map of Service port to loopback port", 400)
        cp.cfg.ingress = ports is not None
        cp.cfg.ingress_ports = {str(k): v for k, v in (ports or {}).items()}
        cp.controllers.set_ingress(cp.cfg.ingress_ports if cp.cfg.ingress else None)
        return web.json_response({"installed": cp.cfg.ingress, "ports": cp.cfg.ingress_ports})

    @routes.post("/v1/apply")
    async def apply(request: web.Request) -> web.Response:
        body = await request.json()
        res = cp.ops.apply(docs_from_wire(body["documents"]), body.get("namespace") or "default")
        return web.json_response({"results": res.results, "warnings": res.warnings,
                                  "revision": cp.store.revision()})

    @routes.post("/v1/delete-documents")
    async def delete_docs(request: web.Request) -> web.Response:
        body = await request.json()
        res = cp.ops.delete_documents(docs_from_wire(body["documents"]),
                                      body.get("namespace") or "default")
        return web.json_response({"results": res})

    @routes.get("/v1/objects/{resource}")
    async def list_objects(request: web.Request) -> web.Response:
        resource = request.match_info["resource"]
        ns = request.query.get("namespace")
        name = q(request, "name")
        if name:
            obj = cp.store.get(resource, ns or "", name)
            if obj is None:
                raise NotFound(f'{resource} "{name}" not found')
            return web.json_response({"items": [obj], "revision": cp.store.revision()})
        return web.json_response({"items": cp.store.list(resource, ns or None),
                                  "revision": cp.store.revision()})

    @routes.delete("/v1/objects/{resource}")
    async def delete_object(request: web.Request) -> web.Response:
        obj = cp.ops.delete(request.match_info["resource"], q(request, "namespace"), q(request, "name"))
        return web.json_response({"object": obj})

    @routes.post("/v1/label")
    async def label(request: web.Request) -> web.Response:
        b = await request.json()
        obj, changed = cp.ops.label(b["resource"], b.get("namespace", ""), b["name"],
                                    b.get("set", {}), b.get("remove", []),
                                    bool(b.get("overwrite")))
        return web.json_response({"object": obj, "changed": changed})

    @routes.put("/v1/status/{resource}")
    async def put_status(request: web.Request) -> web.Response:
        status = await request.json()
        changed = cp.ops.put_status(request.match_info["resource"], q(request, "namespace"),
                                    q(request, "name"), status, q(request, "uid") or None)
        return web.json_response({"changed": changed})

    @routes.post("/v1/finalize-pod")
    async def finalize(request: web.Request) -> web.Response:
        b = await request.json()
        cp.ops.finalize_pod(b["namespace"], b["name"], b["uid"])
        return web.json_response({})

    @routes.post("/v1/events")
    async def events(request: web.Request) -> web.Response:
        b = await request.json()
        cp.ops.emit_event(b["involved"], b["type"], b["reason"], b["message"])
        return web.json_response({})

    @routes.post("/v1/heartbeat/{node}")
    async def heartbeat(request: web.Request) -> web.Response:
        cp.heartbeat(request.match_info["node"])
        return web.json_response({})

    @routes.get("/v1/snapshot")
    async def snapshot(request: web.Request) -> web.Response:
        resources = [r for r in q(request, "resources").split(",") if r]
        return web.json_response({"revision": cp.store.revision(),
                                  "items": {r: cp.store.list(r) for r in resources}})

    @routes.get("/v1/watch")
    async def watch(request: web.Request) -> web.Response:
        since = int(q(request, "since", "0"))
        resources = frozenset(r for r in q(request, "resources").split(",") if r) or None
        timeout = min(float(q(request, "timeout", "30")), 60.0)
        deadline = time.monotonic() + timeout
        while True:
            events = cp.hub.since(since, resources)
            if events is None:
                return web.json_response({"reset": True, "revision": cp.store.revision()})
            if events or time.monotonic() >= deadline:
                latest = events[-1].revision if events else max(since, cp.hub.latest)
                return web.json_response({"revision": latest, "events": [
                    {"type": e.type, "resource": e.resource, "object": e.object}
                    for e in events]})
            await cp.hub.wait(max(since, cp.hub.latest), deadline - time.monotonic())

    app.add_routes(routes)
    return app


async def serve(cluster: str) -> None:
    paths = Paths(cluster)
    cfg = load_config(paths)
    if cfg is None:
        raise SystemExit(f"no cluster state at {paths.config}; run `zeromesh up --cluster {cluster}`")
    cp = ControlPlane(cfg, paths)
    cp.bootstrap()
    await cp.mesh.start()
    app = make_app(cp)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    paths.run.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(FileNotFoundError):
        paths.socket.unlink()
    old_umask = os.umask(0o077)
    try:
        site = web.UnixSite(runner, str(paths.socket))
        await site.start()
    finally:
        os.umask(old_umask)
    os.chmod(paths.socket, 0o600)
    log.info("control plane for cluster %s listening on %s (revision %d)",
             cluster, paths.socket, cp.store.revision())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ticker = asyncio.create_task(cp.tick())
    metrics = await serve_metrics(cp)
    await stop.wait()
    ticker.cancel()
    if metrics is not None:
        await metrics.cleanup()
    await cp.mesh.stop()
    await runner.cleanup()
    cp.store.close()
    with contextlib.suppress(FileNotFoundError):
        paths.socket.unlink()
    log.info("control plane stopped")
