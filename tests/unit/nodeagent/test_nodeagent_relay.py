"""The node agent's proxy relay (`GET /proxy/NS/POD/PATH` → the pod's port 15020) against a
local HTTP server standing in for the pod, and its health metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from prometheus_client import CollectorRegistry, generate_latest

from zeromesh.nodeagent.agent import HealthCollector, ProxyRelay, Streams
from zeromesh.ztunnel.config import Snapshot

STATE = {"workload": {
    "u1": {"namespace": "ns1", "name": "waypoint-1", "ip": "10.244.2.7", "node": "node2", "protocol": "TCP"},
    "u2": {"namespace": "ns1", "name": "echo-1", "ip": "10.244.1.4", "node": "node1", "protocol": "HBONE"},
}}
WORKLOADS = Snapshot.from_state(STATE, "7").workloads_by_uid


@asynccontextmanager
async def pod_server(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                     ) -> AsyncIterator[tuple[int, list[tuple[str, str, int]]]]:
    """A loopback HTTP server as the pod's :15020; yields its port and the opener's calls."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield port, []
    finally:
        await runner.cleanup()


def relay_to(port: int, calls: list[tuple[str, str, int]], **kw: Any) -> ProxyRelay:
    async def opener(netns: str, ip: str, p: int) -> Streams:
        calls.append((netns, ip, p))
        return await asyncio.open_connection("127.0.0.1", port)
    return ProxyRelay("node2", WORKLOADS.values, lambda ns, pod: f"zm.c.{ns}.{pod}", opener, **kw)


async def call(relay: ProxyRelay, path: str, headers: dict[str, str] | None = None) -> web.Response:
    return await relay.handle(make_mocked_request("GET", path, headers=headers or {}))


def test_relays_a_get_to_port_15020_of_the_pod_in_its_netns() -> None:
    seen: list[web.Request] = []

    async def pod(request: web.Request) -> web.Response:
        seen.append(request)
        return web.Response(text="istio_requests_total 3\n", content_type="text/plain")

    async def go() -> None:
        async with pod_server(pod) as (port, calls):
            relay = relay_to(port, calls)
            r = await call(relay, "/proxy/ns1/waypoint-1/stats/prometheus?a=1%202",
                           {"Accept": "text/plain;version=0.0.4"})
            assert r.status == 200 and r.body == b"istio_requests_total 3\n"
            assert r.headers["Content-Type"].startswith("text/plain")
            assert calls == [("zm.c.ns1.waypoint-1", "10.244.2.7", 15020)]
            assert seen[0].method == "GET" and seen[0].raw_path == "/stats/prometheus?a=1%202"
            assert seen[0].headers["Accept"] == "text/plain;version=0.0.4"
    asyncio.run(go())


def test_status_and_chunked_bodies_pass_through() -> None:
    async def pod(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=503)
        resp.enable_chunked_encoding()
        resp.content_type = "application/json"
        await resp.prepare(request)
        for part in (b'{"a":', b' 1}'):
            await resp.write(part)
        await resp.write_eof()
        return resp

    async def go() -> None:
        async with pod_server(pod) as (port, calls):
            r = await call(relay_to(port, calls), "/proxy/ns1/waypoint-1/config_dump")
            assert r.status == 503 and r.body == b'{"a": 1}'
    asyncio.run(go())


def test_pods_of_other_nodes_unknown_pods_and_dotdot_are_refused_without_connecting() -> None:
    async def pod(request: web.Request) -> web.Response:
        raise AssertionError("must not be reached")

    async def go() -> None:
        async with pod_server(pod) as (port, calls):
            relay = relay_to(port, calls)
            r = await call(relay, "/proxy/ns1/echo-1/stats/prometheus")
            assert r.status == 404 and "runs on node1, not node2" in r.text
            r = await call(relay, "/proxy/ns1/nope/stats/prometheus")
            assert r.status == 404 and "not known to the node agent of node2" in r.text
            r = await call(relay, "/proxy/ns1/waypoint-1/x/%2e%2e/y")
            assert r.status == 400
            assert calls == []
    asyncio.run(go())


def test_unreachable_slow_and_oversized_pods() -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1.5)
        return web.Response(text="late")

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 5000)

    async def refused(netns: str, ip: str, port: int) -> Streams:
        raise ConnectionRefusedError(111, "Connection refused")

    async def go() -> None:
        relay = ProxyRelay("node2", WORKLOADS.values, lambda ns, pod: "x", refused)
        r = await call(relay, "/proxy/ns1/waypoint-1/stats/prometheus")
        assert r.status == 502 and "Connection refused" in r.text
        async with pod_server(slow) as (port, calls):
            r = await call(relay_to(port, calls, timeout=0.3), "/proxy/ns1/waypoint-1/stats/prometheus")
            assert r.status == 504
            # Prometheus' own scrape timeout shortens the wait.
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            r = await call(relay_to(port, calls), "/proxy/ns1/waypoint-1/stats/prometheus",
                           {"X-Prometheus-Scrape-Timeout-Seconds": "1"})
            assert r.status == 504 and loop.time() - t0 < 2
        async with pod_server(big) as (port, calls):
            r = await call(relay_to(port, calls, limit=1000), "/proxy/ns1/waypoint-1/stats/prometheus")
            assert r.status == 502 and "larger than 1000 bytes" in r.text
    asyncio.run(go())


def test_a_pod_that_is_not_http_is_a_bad_gateway() -> None:
    async def go() -> None:
        async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(100)
            writer.write(b"SSH-2.0-nope\r\n\r\n")
            writer.close()
        server = await asyncio.start_server(garbage, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            r = await call(relay_to(port, []), "/proxy/ns1/waypoint-1/stats/prometheus")
            assert r.status == 502
        finally:
            server.close()
    asyncio.run(go())


def test_health_metrics() -> None:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(HealthCollector(lambda: "42", lambda: False,
                                 lambda: [("spiffe://cluster.local/ns/a/sa/b", 1.7e9)]))
    text = generate_latest(reg).decode()
    assert "zeromesh_config_version 42.0" in text
    assert "zeromesh_push_connected 0.0" in text
    assert ('zeromesh_workload_certificate_expiry_timestamp_seconds{identity="spiffe://cluster.local/ns/a/sa/b"}'
            " 1.7e+09") in text
    reg = CollectorRegistry(auto_describe=False)
    reg.register(HealthCollector(lambda: "", lambda: True, list))
    text = generate_latest(reg).decode()
    assert "zeromesh_config_version 0.0" in text and "zeromesh_push_connected 1.0" in text
