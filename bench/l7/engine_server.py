"""The waypoint's HTTP engine as a standalone plain-HTTP reverse proxy, for the L7 benchmark.

Runs under the project's virtualenv (``.venv/bin/python``). It puts
:class:`zeromesh.waypoint.engine.HttpEngine` where nginx sits in the benchmark: plain HTTP/1.1 in
on ``127.0.0.1:--port``, plain HTTP/1.1 out to the backend on ``127.0.0.1:--backend-port``. Every
downstream connection is wrapped in a :class:`~zeromesh.waypoint.duplex.StreamDuplex` and handed
to ``engine.serve(duplex, dest, peer)``, as the real waypoint (``zeromesh.waypoint.main``) does with
its HBONE tunnel streams.

The :class:`~zeromesh.waypoint.config.WaypointConfig` is built from a synthetic push state:

* a workload ``l7-bench/backend`` at 127.0.0.1 that is not in the mesh (protocol TCP);
* a Service ``backend`` (VIP 127.0.0.2, never connected to) whose port 80 has that workload's
  ``--backend-port`` as endpoint, bound to the waypoint ``l7-bench/waypoint``;
* a VirtualService for it: requests under ``/bench`` go to the service with the request header
  ``x-bench-route: l7`` set; anything else has no route (404);
* an AuthorizationPolicy ALLOW ``methods: [GET]`` attached with ``targetRefs`` to the Service
  (``WaypointConfig.policy_set`` applies it): other methods get 403.

Downstream peers are plaintext (principal None). With ``--access-log FILE`` (the default in the
benchmark) the access log and everything else at INFO go to FILE with the waypoint daemon's
logging format, as the real waypoint writes one JSON line per request; ``--access-log none``
turns logging off. ``--uvloop`` runs the event loop on uvloop (importable from the path).
``--profile FILE`` writes cProfile stats at exit. The process stops on SIGTERM/SIGINT or after
``--lifetime`` seconds; it prints one JSON line ``{"ready": ...}`` once it listens and, at exit,
one ``{"gc": ...}`` with the garbage collector's passes and pauses per generation.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import signal
import socket
import sys
import time
from typing import Any

from zeromesh.waypoint.config import Destination, Upstream, WaypointConfig
from zeromesh.waypoint.duplex import Duplex, StreamDuplex
from zeromesh.waypoint.engine import HttpEngine, Peer
from zeromesh.waypoint.telemetry import WaypointTelemetry, batch_access_log

NAMESPACE, WAYPOINT, SERVICE = "l7-bench", "waypoint", "backend"
VIP, SERVICE_PORT = "127.0.0.2", 80
ROUTE_PREFIX, ROUTE_HEADER = "/bench", ("x-bench-route", "l7")
CONNECT_TIMEOUT = 10.0


def push_state(backend_port: int) -> dict[str, dict[str, Any]]:
    """The push state a waypoint would receive for one service with a route and a policy."""
    host = f"{SERVICE}.{NAMESPACE}.svc.cluster.local"
    ref = {"namespace": NAMESPACE, "name": WAYPOINT}
    return {
        "workload": {"bench-backend": {
            "namespace": NAMESPACE, "name": "backend-0", "ip": "127.0.0.1", "node": "node1",
            "service_account": "backend", "labels": {"app": "backend"}, "protocol": "TCP",
            "workload_name": "backend", "canonical_name": "backend", "canonical_revision": "v1"}},
        "service": {f"{NAMESPACE}/{SERVICE}": {
            "namespace": NAMESPACE, "name": SERVICE, "hostname": host, "vip": VIP,
            "ports": [{"port": SERVICE_PORT, "target_port": backend_port, "name": "http",
                       "protocol": "TCP"}],
            "endpoints": [{"workload_uid": "bench-backend", "ip": "127.0.0.1",
                           "ports": {str(SERVICE_PORT): backend_port}, "ready": True}],
            "waypoint": ref}},
        "waypoint": {f"{NAMESPACE}/{WAYPOINT}": {"namespace": NAMESPACE, "name": WAYPOINT,
                                                 "serves": "service"}},
        "virtualservices.networking.istio.io": {f"{NAMESPACE}/backend": {
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "backend", "namespace": NAMESPACE,
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"hosts": [SERVICE], "http": [{
                "name": "bench",
                "match": [{"uri": {"prefix": ROUTE_PREFIX}}],
                "headers": {"request": {"set": {ROUTE_HEADER[0]: ROUTE_HEADER[1]}}},
                "route": [{"destination": {"host": SERVICE}}]}]}}},
        "authorizationpolicies.security.istio.io": {f"{NAMESPACE}/get-only": {
            "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": "get-only", "namespace": NAMESPACE,
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"targetRefs": [{"kind": "Service", "group": "", "name": SERVICE}],
                     "action": "ALLOW",
                     "rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]}}},
    }


async def connect_upstream(up: Upstream, headers: list[tuple[str, str]]) -> Duplex:
    """As the waypoint reaches an endpoint outside the mesh (zeromesh.waypoint.main)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(up.ip, up.port), CONNECT_TIMEOUT)
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return StreamDuplex(reader, writer)


async def serve(args: argparse.Namespace) -> dict[str, Any]:
    batch_access_log()          # as the waypoint process does
    config = WaypointConfig.build(push_state(args.backend_port), "1", namespace=NAMESPACE, name=WAYPOINT)
    svc = config.snapshot.services_by_vip[VIP]
    dest = Destination(VIP, SERVICE_PORT, svc, None)
    facts = {"policies_in_force": [p.key for p in config.policy_set(dest).policies],
             "routes": [r.name for r in config.routes_for(dest)],
             "serves": config.serves(dest)}
    if not facts["routes"] or not facts["policies_in_force"]:
        raise SystemExit(f"engine_server: route or policy not in force: {facts}")
    engine = HttpEngine(lambda: config, connect_upstream, WaypointTelemetry())

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ip, port = writer.get_extra_info("peername")[:2]
        try:
            await engine.serve(StreamDuplex(reader, writer), dest, Peer(None, ip, port, None, mtls=False))
        except Exception:
            logging.getLogger("zeromesh.waypoint").exception("request handling failed")
            writer.transport.abort()

    server = await asyncio.start_server(on_conn, "127.0.0.1", args.port, backlog=1024)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.call_later(args.lifetime, stop.set)
    print(json.dumps({"ready": args.port, "loop": type(loop).__module__, **facts}), flush=True)
    await stop.wait()
    server.close()
    engine.close()
    return facts


class GcPauses:
    """Times the cyclic garbage collector's passes (gc.callbacks), per generation."""

    def __init__(self) -> None:
        self.born = self.t0 = time.perf_counter()
        self.by_gen: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self.long: list[tuple[float, int, float]] = []      # (seconds since start, generation, ms)
        gc.callbacks.append(self.on_gc)

    def on_gc(self, phase: str, info: dict[str, int]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self.t0 = now
            return
        ms = (now - self.t0) * 1000
        self.by_gen[info["generation"]].append(ms)
        if ms > 5:
            self.long.append((round(self.t0 - self.born, 1), info["generation"], round(ms, 1)))

    def summary(self) -> dict[str, Any]:
        return {**{f"gen{g}": {"passes": len(v), "total_ms": round(sum(v), 1),
                               "max_ms": round(max(v), 2) if v else 0.0}
                   for g, v in self.by_gen.items()},
                "pauses_over_5ms": self.long}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--backend-port", type=int, required=True)
    ap.add_argument("--access-log", default="none", help="FILE, or none")
    ap.add_argument("--uvloop", action="store_true")
    ap.add_argument("--profile", help="write cProfile stats here at exit")
    ap.add_argument("--lifetime", type=float, default=1800.0)
    a = ap.parse_args(argv)
    if a.access_log != "none":
        # the waypoint daemon's logging (zeromesh.cli.main._setup_logging), into a file
        logging.basicConfig(level=logging.INFO, filename=a.access_log,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    else:
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if a.uvloop:
        import uvloop  # not a project dependency: the benchmark puts it on the path when asked
        uvloop.install()
    profiler = None
    if a.profile:
        import cProfile
        profiler = cProfile.Profile()
        profiler.enable()
    pauses = GcPauses()
    try:
        asyncio.run(serve(a))
    finally:
        print(json.dumps({"gc": pauses.summary()}), flush=True)
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(a.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
