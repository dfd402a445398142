"""The waypoint's HTTP engine over real loopback sockets, against misbehaving clients and
upstreams: every bad input gets its status, is logged, and the engine keeps serving."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from zeromesh.waypoint.config import Upstream, WaypointConfig
from zeromesh.waypoint.duplex import Duplex, StreamDuplex
from zeromesh.waypoint.engine import HttpEngine, Peer
from zeromesh.waypoint.telemetry import WaypointTelemetry

HOSTS = {"ok": "127.0.0.2", "reset": "127.0.0.3", "hang": "127.0.0.4", "dead": "127.0.0.5",
         "bad": "127.0.0.6", "err": "127.0.0.7", "slow": "127.0.0.8"}
VIPS = {"ok": "10.96.0.10", "reset": "10.96.0.11", "hang": "10.96.0.12", "dead": "10.96.0.13",
        "bad": "10.96.0.14", "err": "10.96.0.15", "slow": "10.96.0.16", "pair": "10.96.0.17"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def state(ports: dict[str, int], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    wls, svcs = {}, {}
    for name, port in ports.items():
        uid = f"u-{name}"
        # Each backend is its own "pod" (all at 127.0.0.1, told apart by port).
        wls[uid] = {"uid": uid, "namespace": "ns", "name": name, "ip": HOSTS[name], "node": "n1",
                    "service_account": name, "labels": {"app": name}, "protocol": "TCP",
                    "workload_name": name, "canonical_name": name, "canonical_revision": "v1"}
        svcs[f"ns/{name}"] = {
            "namespace": "ns", "name": name, "hostname": f"{name}.ns.svc.cluster.local", "vip": VIPS[name],
            "ports": [{"port": 80, "target_port": port, "name": "http"}],
            "endpoints": [{"workload_uid": uid, "ip": HOSTS[name], "ports": {"80": port},
                           "ready": True}]}
    # "pair": one healthy and one failing endpoint behind one service.
    svcs["ns/pair"] = {
        "namespace": "ns", "name": "pair", "hostname": "pair.ns.svc.cluster.local", "vip": VIPS["pair"],
        "ports": [{"port": 80, "target_port": 80, "name": "http"}],
        "endpoints": [{"workload_uid": f"u-{n}", "ip": HOSTS[n], "ports": {"80": ports[n]}, "ready": True}
                      for n in ("ok", "err")]}
    return {"workload": wls, "service": svcs, **(extra or {})}


RECEIVED: dict[str, list[bytes]] = {}


async def backend(kind: str) -> tuple[asyncio.AbstractServer, int]:
    RECEIVED[kind] = []

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await r.readuntil(b"\r\n\r\n")
                RECEIVED[kind].append(head)
                if b"upgrade: websocket" in head.lower():
                    w.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                            b"Connection: Upgrade\r\n\r\n")
                    while data := await r.read(65536):      # echo frames back, raw
                        w.write(data)
                        await w.drain()
                    return
                if kind == "reset":
                    w.transport.abort()
                    return
                if kind == "hang":
                    await asyncio.sleep(30)
                    return
                if kind == "slow":
                    await asyncio.sleep(1.0)
                if kind == "err":
                    w.write(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 3\r\n\r\nerr")
                    await w.drain()
                    continue
                if kind == "bad":
                    w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello")
                    await w.drain()
                    continue
                body = json.dumps({"head": head.decode()}).encode()
                w.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                        + str(len(body)).encode() + b"\r\n\r\n" + body)
                await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            w.close()
    srv = await asyncio.start_server(handle, HOSTS[kind], 0)
    return srv, srv.sockets[0].getsockname()[1]


VS_TIMEOUT = {"virtualservices.networking.istio.io": {"ns/hang": {
    "metadata": {"name": "hang", "namespace": "ns"},
    "spec": {"hosts": ["hang"],
             "http": [{"route": [{"destination": {"host": "hang"}}], "timeout": "0.5s"}]}}}}


@contextlib.asynccontextmanager
async def running_engine(extra: dict[str, Any] | None = None) -> AsyncIterator[tuple[int, HttpEngine]]:
    servers = {k: await backend(k) for k in ("ok", "reset", "hang", "bad", "err", "slow")}
    ports = {k: port for k, (_, port) in servers.items()}
    ports["dead"] = free_port()
    cfg = WaypointConfig.build(state(ports, {**VS_TIMEOUT, **(extra or {})}), "1", namespace="ns", name="wp")

    async def connect(up: Upstream, _headers: list[tuple[str, str]]) -> Duplex:
        r, w = await asyncio.open_connection(up.ip, up.port)
        return StreamDuplex(r, w)

    eng = HttpEngine(lambda: cfg, connect, WaypointTelemetry())
    eng.request_timeout = 0.5

    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        # The first line names the service (it stands in for the HBONE authority).
        line = await r.readline()
        dest = cfg.resolve(f"{VIPS[line.decode().strip() or 'ok']}:80")
        peer = Peer("cluster.local/ns/ns/sa/client", "127.0.0.1", 1, None)
        await eng.serve(StreamDuplex(r, w), dest, peer)  # type: ignore[arg-type]

    front = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield front.sockets[0].getsockname()[1], eng
    finally:
        front.close()
        eng.close()
        for srv, _ in servers.values():
            srv.close()


async def exchange(port: int, data: bytes, *, wait: float = 3.0) -> bytes:
    return await exchange_to(port, "ok", data, wait=wait)


async def exchange_to(port: int, service: str, data: bytes, *, wait: float = 3.0) -> bytes:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        w.write(service.encode() + b"\n" + data)
        await w.drain()
        out = b""
        with contextlib.suppress(TimeoutError, ConnectionError):
            while chunk := await asyncio.wait_for(r.read(65536), wait):
                out += chunk
                if b"\r\n\r\n" in out and b"connection: close" in out.lower():
                    break
        return out
    finally:
        w.close()


def status_of(resp: bytes) -> int:
    return int(resp.split(b" ", 2)[1]) if resp.startswith(b"HTTP/1.1 ") else 0


def test_a_plain_get_and_keep_alive() -> None:
    async def main() -> None:
        async with running_engine() as (port, _):
            req = b"GET /a HTTP/1.1\r\nHost: ok\r\n\r\n"
            resp = await exchange(port, req * 2, wait=1.0)
            assert resp.count(b"HTTP/1.1 200 OK") == 2
    asyncio.run(main())


@pytest.mark.parametrize(("raw", "status"), [
    (b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n", 400),                                   # bad request line
    (b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400),       # conflicting length
    (b"GET / HTTP/1.1\r\nX: " + b"a" * 70000 + b"\r\n\r\n", 431),                      # oversize headers
    (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc", 408),              # slow client
])
def test_malformed_requests_get_their_status(raw: bytes, status: int) -> None:
    async def main() -> None:
        async with running_engine() as (port, _):
            assert status_of(await exchange(port, raw)) == status
            # … and the engine still serves others.
            ok = b"GET / HTTP/1.1\r\nHost: ok\r\nConnection: close\r\n\r\n"
            assert status_of(await exchange(port, ok)) == 200
    asyncio.run(main())


def test_upstream_failures_map_to_502_503_504(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="zeromesh.access")
    asyncio.run(_upstream_failures())
    flags = {f for r in caplog.records if r.name == "zeromesh.access"
             for f in json.loads(r.getMessage())["flags"].split(",")}
    assert {"UC", "UF", "UT", "UPE", "URX"} <= flags


async def _upstream_failures() -> None:
    async with running_engine() as (_, eng):
        cfg = eng.config()

        async def via(name: str) -> int:
            dest = cfg.resolve(f"{VIPS[name]}:80")
            assert dest is not None
            return await one_request(eng, dest, name)

        assert await via("reset") == 503            # reset before headers (Envoy: 503 UC)
        assert await via("dead") == 503             # connection refused (503 UF)
        assert await via("hang") == 504             # route timeout (504 UT)
        assert await via("bad") == 502              # invalid upstream HTTP (502 UPE)
        assert await via("ok") == 200


async def one_request(eng: HttpEngine, dest: Any, name: str) -> int:
    """Serve one request for `name` through a socketpair: the engine sees real sockets."""
    a, b = socket.socketpair()
    ra, wa = await asyncio.open_connection(sock=a)
    rb, wb = await asyncio.open_connection(sock=b)
    task = asyncio.create_task(eng.serve(StreamDuplex(ra, wa), dest,
                                         Peer("cluster.local/ns/ns/sa/client", "127.0.0.1", 1, None)))
    wb.write(f"GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
    await wb.drain()
    resp = await asyncio.wait_for(rb.read(65536), 10)
    wb.close()
    await asyncio.wait_for(task, 10)
    return status_of(resp)


# ---- resilience: DestinationRule trafficPolicy and the zeromesh.io LocalRateLimit -------------
def _dr(host: str, policy: dict[str, Any]) -> dict[str, Any]:
    return {"destinationrules.networking.istio.io": {f"ns/{host}": {
        "metadata": {"name": host, "namespace": "ns"}, "spec": {"host": host, "trafficPolicy": policy}}}}


async def _statuses(eng: HttpEngine, name: str, n: int) -> list[int]:
    dest = eng.config().resolve(f"{VIPS[name]}:80")
    return [await one_request(eng, dest, name) for _ in range(n)]


def test_round_robin_spreads_and_outlier_detection_ejects_the_failing_endpoint() -> None:
    async def main() -> None:
        rr = _dr("pair", {"loadBalancer": {"simple": "ROUND_ROBIN"}})
        async with running_engine(rr) as (_, eng):
            got = await _statuses(eng, "pair", 6)
            assert sorted(got) == [200, 200, 200, 500, 500, 500], got      # alternates, no retry on 500
        od = _dr("pair", {"loadBalancer": {"simple": "ROUND_ROBIN"},
                          "outlierDetection": {"consecutive5xxErrors": 1, "interval": "1s",
                                               "baseEjectionTime": "30s", "maxEjectionPercent": 100}})
        async with running_engine(od) as (_, eng):
            got = await _statuses(eng, "pair", 8)
            assert got.count(500) == 1 and got.count(200) == 7, got        # ejected after its first 500
    asyncio.run(main())


def test_connection_pool_limits_overflow_with_503_and_x_envoy_overloaded() -> None:
    async def main() -> None:
        dr = _dr("slow", {"connectionPool": {"tcp": {"maxConnections": 1},
                                             "http": {"http1MaxPendingRequests": 1}}})
        async with running_engine(dr) as (port, _):
            req = b"GET / HTTP/1.1\r\nHost: slow\r\nConnection: close\r\n\r\n"

            async def one() -> bytes:
                return await exchange_to(port, "slow", req)
            answers = await asyncio.gather(*(one() for _ in range(4)))
            codes = sorted(status_of(a) for a in answers)
            assert codes == [200, 200, 503, 503], codes                     # 1 active + 1 queued
            assert all(b"x-envoy-overloaded: true" in a.lower() for a in answers if status_of(a) == 503)
    asyncio.run(main())


def test_local_rate_limit_answers_429_when_the_bucket_is_empty() -> None:
    async def main() -> None:
        rl = {"localratelimits.zeromesh.io": {"ns/rl": {
            "metadata": {"name": "rl", "namespace": "ns"},
            "spec": {"targetRefs": [{"kind": "Service", "group": "", "name": "ok"}],
                     "tokenBucket": {"maxTokens": 2, "tokensPerFill": 1, "fillInterval": "60s"}}}}}
        async with running_engine(rl) as (_, eng):
            assert await _statuses(eng, "ok", 4) == [200, 200, 429, 429]
            assert await _statuses(eng, "err", 1) == [500]                  # other services unaffected
    asyncio.run(main())


# ---- routing features over real sockets ---------------------------------------------------------
ROUTED = {"virtualservices.networking.istio.io": {"ns/ok": {
    "metadata": {"name": "ok", "namespace": "ns"},
    "spec": {"hosts": ["ok"], "http": [
        {"match": [{"uri": {"prefix": "/old"}}], "redirect": {"uri": "/new", "redirectCode": 301}},
        {"match": [{"uri": {"prefix": "/v1"}}], "rewrite": {"uri": "/api"},
         "route": [{"destination": {"host": "ok"}}], "mirror": {"host": "err"},
         "headers": {"request": {"set": {"x-route": "v1"}}, "response": {"add": {"x-served": "waypoint"}}}},
        {"match": [{"headers": {"x-slow": {"exact": "yes"}}}],
         "fault": {"delay": {"fixedDelay": "0.3s", "percentage": {"value": 100}}},
         "route": [{"destination": {"host": "ok"}}]},
        {"match": [{"queryParams": {"deny": {"exact": "1"}}, "method": {"exact": "GET"}}],
         "fault": {"abort": {"httpStatus": 451, "percentage": {"value": 100}}},
         "route": [{"destination": {"host": "ok"}}]},
        {"route": [{"destination": {"host": "ok"}}]}]}}}}


def test_redirect_rewrite_headers_mirror_delay_and_abort() -> None:
    async def main() -> None:
        async with running_engine(ROUTED) as (port, _):
            async def get(path: str, *headers: str) -> bytes:
                extra = "".join(f"{h}\r\n" for h in headers)
                return await exchange(port, f"GET {path} HTTP/1.1\r\nHost: ok\r\n{extra}"
                                            "Connection: close\r\n\r\n".encode())
            r = await get("/old/x")
            assert status_of(r) == 301 and b"location: http://ok/new" in r.lower()
            r = await get("/v1/items?q=1")
            assert status_of(r) == 200 and b"x-served: waypoint" in r.lower()
            seen = RECEIVED["ok"][-1].decode().lower()
            assert seen.startswith("get /api/items?q=1 http/1.1") and "x-route: v1" in seen
            for _ in range(50):                       # the mirror is fire-and-forget
                if RECEIVED["err"]:
                    break
                await asyncio.sleep(0.02)
            assert RECEIVED["err"] and b"host: ok-shadow" in RECEIVED["err"][-1].lower()
            t0 = asyncio.get_running_loop().time()
            assert status_of(await get("/", "x-slow: yes")) == 200
            assert asyncio.get_running_loop().time() - t0 >= 0.3
            assert status_of(await get("/?deny=1")) == 451
            assert status_of(await get("/?deny=0")) == 200
    asyncio.run(main())


def test_websocket_upgrade_is_spliced_through() -> None:
    async def main() -> None:
        async with running_engine() as (port, _):
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"ok\nGET /ws HTTP/1.1\r\nHost: ok\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
            await w.drain()
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 101") and b"upgrade: websocket" in head.lower()
            w.write(b"\x81\x05hello")
            await w.drain()
            assert await asyncio.wait_for(r.readexactly(7), 5) == b"\x81\x05hello"
            w.close()
    asyncio.run(main())
