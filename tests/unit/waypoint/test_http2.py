"""HTTP/2 in the waypoint, without sockets: ``serve_http2`` against an h2 client, ``H2Upstreams``
against an h2 server, joined by an in-memory duplex; plus the pure header conversions."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import pytest
from h2.errors import ErrorCodes

from zeromesh.waypoint import http1, http2
from zeromesh.waypoint.config import Destination, Upstream
from zeromesh.waypoint.engine import ConnectFailure, Peer, Reply, UpstreamProtocolError, UpstreamReset
from zeromesh.waypoint.http1 import Message
from zeromesh.waypoint.telemetry import RequestRecord

DEST = Destination("10.96.0.10", 80, None, None)
PEER = Peer(None, "10.244.1.7", 40000, None)
UP = Upstream("10.244.2.9", 8080, None, None)


def run(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """No asyncio plugin here: each test runs in its own loop, bounded in time."""
    @functools.wraps(test)
    def sync(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(test(*args, **kwargs), 30))
    return sync


# ---- an in-memory duplex pair ------------------------------------------------------------------
class QueueDuplex:
    """One end of an in-memory byte pipe; b"" tells the other end we closed."""

    def __init__(self, inbox: asyncio.Queue[bytes], outbox: asyncio.Queue[bytes], peer: str) -> None:
        self.inbox, self.outbox, self.peer = inbox, outbox, peer
        self.closed = self.aborted = False

    async def recv(self) -> bytes:
        if self.closed:
            return b""
        return await self.inbox.get()

    async def send(self, data: bytes) -> None:
        if self.closed:
            raise ConnectionResetError("closed")
        self.outbox.put_nowait(bytes(data))

    def send_eof(self) -> None:
        self.outbox.put_nowait(b"")

    def abort(self) -> None:
        self.aborted = True
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.outbox.put_nowait(b"")


def duplex_pair() -> tuple[QueueDuplex, QueueDuplex]:
    a: asyncio.Queue[bytes] = asyncio.Queue()
    b: asyncio.Queue[bytes] = asyncio.Queue()
    return QueueDuplex(a, b, "client:1"), QueueDuplex(b, a, "server:2")


# ---- a plain h2 endpoint the test drives ---------------------------------------------------------
class Endpoint:
    """An h2 connection on a duplex: collects events, sends within the peer's windows."""

    def __init__(self, duplex: QueueDuplex, client: bool, auto_ack: bool = True) -> None:
        self.duplex = duplex
        self.conn = h2.connection.H2Connection(config=h2.config.H2Configuration(
            client_side=client, header_encoding=None))
        self.auto_ack = auto_ack
        self.events: list[h2.events.Event] = []
        self.changed = asyncio.Event()
        self.ended = False
        self.error: Exception | None = None
        self.on_event: Callable[[h2.events.Event], None] | None = None
        self.reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.conn.initiate_connection()
        await self.flush()
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            await self.duplex.send(data)

    async def _read(self) -> None:
        try:
            while data := await self.duplex.recv():
                try:
                    events = self.conn.receive_data(data)
                except h2.exceptions.ProtocolError as e:
                    self.error = e
                    break
                for ev in events:
                    if self.auto_ack and isinstance(ev, h2.events.DataReceived):
                        self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    self.events.append(ev)
                    if self.on_event is not None:
                        self.on_event(ev)
                with_closed_ok = self.conn.data_to_send()
                if with_closed_ok and not self.duplex.closed:
                    await self.duplex.send(with_closed_ok)
                self.changed.set()
        finally:
            self.ended = True
            self.changed.set()

    async def until(self, pred: Callable[[], Any], timeout: float = 5.0) -> Any:
        async with asyncio.timeout(timeout):
            while True:
                got = pred()
                if got:
                    return got
                if self.ended:
                    raise AssertionError(f"connection ended first; events: {self.events}")
                self.changed.clear()
                await self.changed.wait()

    def of(self, sid: int, kind: type | tuple[type, ...] = h2.events.Event) -> list[Any]:
        return [e for e in self.events if getattr(e, "stream_id", None) == sid and isinstance(e, kind)]

    def done(self, sid: int) -> bool:
        return bool(self.of(sid, (h2.events.StreamEnded, h2.events.StreamReset)))

    async def send_body(self, sid: int, data: bytes, end_stream: bool = True) -> None:
        off = 0
        while off < len(data):
            window = self.conn.local_flow_control_window(sid)
            if window == 0:
                self.changed.clear()
                await asyncio.wait_for(self.changed.wait(), 5)
                continue
            n = min(window, self.conn.max_outbound_frame_size, len(data) - off)
            self.conn.send_data(sid, data[off:off + n], end_stream=end_stream and off + n == len(data))
            off += n
            await self.flush()

    async def request(self, method: str, path: str, headers: list[tuple[str, str]] = (),  # type: ignore[assignment]
                      body: bytes = b"", authority: str = "echo.ns1.svc.cluster.local") -> int:
        sid = self.conn.get_next_available_stream_id()
        fields = [(":method", method), (":scheme", "http"), (":authority", authority), (":path", path),
                  *headers]
        self.conn.send_headers(sid, [(k.encode(), v.encode()) for k, v in fields], end_stream=not body)
        await self.flush()
        if body:
            await self.send_body(sid, body)
        return sid

    def response(self, sid: int) -> tuple[int, dict[str, str], bytes, dict[str, str]]:
        head = self.of(sid, h2.events.ResponseReceived)[0].headers
        trailers = self.of(sid, h2.events.TrailersReceived)
        hs = {k.decode(): v.decode() for k, v in head}
        return (int(hs.pop(":status")), hs, b"".join(e.data for e in self.of(sid, h2.events.DataReceived)),
                {k.decode(): v.decode() for k, v in trailers[0].headers} if trailers else {})


# ---- a stand-in for HttpEngine -------------------------------------------------------------------
class FakeTelemetry:
    def __init__(self) -> None:
        self.done: list[RequestRecord] = []

    def request_done(self, rec: RequestRecord) -> None:
        self.done.append(rec)


class FakeEngine:
    """record/respond/telemetry as HttpEngine offers them; ``respond`` runs the test's handler."""

    def __init__(self, handler: Callable[[Message], Awaitable[Reply]]) -> None:
        self.handler = handler
        self.telemetry = FakeTelemetry()
        self.seen: list[Message] = []
        self.protocols: list[str] = []

    def record(self, msg: Message, dest: Destination, peer: Peer, protocol: str = "http") -> RequestRecord:
        self.protocols.append(protocol)
        return RequestRecord(f"{peer.ip}:{peer.port}", None, "", msg.method, msg.target,
                             msg.get("host") or "", protocol=protocol)

    async def respond(self, msg: Message, dest: Destination, peer: Peer, rec: RequestRecord) -> Reply:
        self.seen.append(msg)
        reply = await self.handler(msg)
        rec.status = reply.status
        return reply


async def echo(msg: Message) -> Reply:
    return Reply(200, [("content-type", "text/plain"), ("connection", "keep-alive"), ("x-path", msg.target)],
                 f"{msg.method} {msg.target} {len(msg.body)}\n".encode())


class Served:
    """serve_http2 running on one end of a pipe, an h2 client on the other."""

    def __init__(self, engine: FakeEngine, auto_ack: bool = True) -> None:
        self.engine = engine
        self.client_end, self.server_end = duplex_pair()
        self.client = Endpoint(self.client_end, client=True, auto_ack=auto_ack)
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Served:
        await self.client.start()
        first = await self.server_end.recv()          # what the engine read before dispatching
        assert first.startswith(http2.PREFACE)
        self.task = asyncio.get_running_loop().create_task(
            http2.serve_http2(self.engine, self.server_end, first, DEST, PEER))  # type: ignore[arg-type]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.client_end.close()
        await asyncio.wait_for(self.task, 5)
        if self.client.reader is not None:
            self.client.reader.cancel()


# ---- serve_http2 -------------------------------------------------------------------------------
@run
async def test_get_and_post_reach_the_chain_as_messages() -> None:
    engine = FakeEngine(echo)
    async with Served(engine) as s:
        c = s.client
        get = await c.request("GET", "/a?x=1", [("accept", "*/*"), ("cookie", "a=1"), ("cookie", "b=2")])
        post = await c.request("POST", "/b", [("content-type", "application/json")], body=b'{"k": 1}')
        await c.until(lambda: c.done(get) and c.done(post))
        status, headers, body, trailers = c.response(get)
        assert (status, body, trailers) == (200, b"GET /a?x=1 0\n", {})
        assert headers["content-length"] == str(len(body)) and headers["x-path"] == "/a?x=1"
        assert "connection" not in headers
        assert c.response(post)[2] == b"POST /b 8\n"
        settings = c.conn.remote_settings             # what the waypoint advertised
        assert (settings.max_concurrent_streams, settings.max_header_list_size) == (100, 61440)
    get_msg, post_msg = sorted(engine.seen, key=lambda m: m.method)
    assert (get_msg.method, get_msg.target, get_msg.body, get_msg.protocol) == ("GET", "/a?x=1", b"", "http2")
    assert get_msg.headers[0] == ("host", "echo.ns1.svc.cluster.local")
    assert ("accept", "*/*") in get_msg.headers and ("cookie", "a=1; b=2") in get_msg.headers
    assert not any(k.startswith(":") for k, _ in get_msg.headers)
    assert (post_msg.method, post_msg.body, post_msg.get("content-type")) == ("POST", b'{"k": 1}',
                                                                              "application/json")
    assert engine.protocols == ["http", "http"]     # Istio's request_protocol for HTTP/2
    assert sorted(r.status for r in engine.telemetry.done) == [200, 200]
    assert all(r.response_bytes > 0 for r in engine.telemetry.done)
    assert s.server_end.closed and not s.server_end.aborted


@run
async def test_concurrent_streams_are_answered_in_the_order_they_finish() -> None:
    fast_done = asyncio.Event()

    async def handler(msg: Message) -> Reply:
        if msg.target == "/slow":
            await fast_done.wait()
        else:
            fast_done.set()
        return await echo(msg)

    async with Served(FakeEngine(handler)) as s:
        c = s.client
        slow = await c.request("GET", "/slow")
        fast = await c.request("GET", "/fast")
        await c.until(lambda: c.done(slow) and c.done(fast))
        ends = [e.stream_id for e in c.events if isinstance(e, h2.events.StreamEnded)]
        assert ends == [fast, slow]
        assert c.response(slow)[2] == b"GET /slow 0\n"


@run
async def test_large_bodies_respect_flow_control_both_ways() -> None:
    upload = bytes(range(256)) * 1000                   # 256,000 bytes > 65,535
    download = b"z" * 300_000

    async def handler(msg: Message) -> Reply:
        assert msg.body == upload
        return Reply(200, [], download)

    async with Served(FakeEngine(handler), auto_ack=False) as s:
        c = s.client
        sid = await c.request("PUT", "/big", body=upload)      # completes only if the server acks
        received = lambda: sum(len(e.data) for e in c.of(sid, h2.events.DataReceived))  # noqa: E731
        await c.until(lambda: received() >= 65535)
        await asyncio.sleep(0.05)
        assert received() == 65535 and not c.done(sid)         # our default window, then it waits
        for _ in range(20):
            for e in c.of(sid, h2.events.DataReceived):
                if not getattr(e, "acked", False):
                    c.conn.acknowledge_received_data(e.flow_controlled_length, sid)
                    e.acked = True
            await c.flush()
            if c.done(sid):
                break
            await c.until(lambda: c.done(sid) or any(not getattr(e, "acked", False)
                                                       for e in c.of(sid, h2.events.DataReceived)))
        assert c.response(sid)[2] == download


@run
async def test_trailers_follow_the_body_and_grpc_is_recognised() -> None:
    async def handler(msg: Message) -> Reply:
        return Reply(200, [("content-type", "application/grpc")], b"\x00\x00\x00\x00\x02hi",
                     trailers=[("grpc-status", "0"), ("grpc-message", "ok")])

    engine = FakeEngine(handler)
    async with Served(engine) as s:
        c = s.client
        sid = await c.request("POST", "/pkg.Svc/Call",
                              [("content-type", "application/grpc"), ("te", "trailers")],
                              body=b"\x00\x00\x00\x00\x01x")
        await c.until(lambda: c.done(sid))
        kinds = [type(e).__name__ for e in c.of(sid) if not isinstance(e, h2.events.StreamEnded)]
        assert kinds[0] == "ResponseReceived" and kinds[-1] == "TrailersReceived"
        assert set(kinds[1:-1]) == {"DataReceived"}
        status, headers, body, trailers = c.response(sid)
        assert (status, body, trailers) == (200, b"\x00\x00\x00\x00\x02hi", {"grpc-status": "0",
                                                                              "grpc-message": "ok"})
        assert "content-length" not in headers
    assert engine.seen[0].protocol == "grpc" and engine.protocols == ["grpc"]


@run
async def test_a_local_answer_to_grpc_becomes_trailers_only_with_a_grpc_status() -> None:
    async def handler(msg: Message) -> Reply:
        return Reply(403, [("content-type", "text/plain")], b"RBAC: access denied")

    async with Served(FakeEngine(handler)) as s:
        c = s.client
        sid = await c.request("POST", "/pkg.Svc/Call", [("content-type", "application/grpc+proto")],
                              body=b"\x00\x00\x00\x00\x00")
        await c.until(lambda: c.done(sid))
        status, headers, body, _ = c.response(sid)
        assert (status, body) == (200, b"")
        assert headers["grpc-status"] == "7" and headers["grpc-message"] == "RBAC: access denied"
        assert not c.of(sid, h2.events.TrailersReceived)      # a single HEADERS frame ends the stream


@run
async def test_client_reset_cancels_only_that_stream() -> None:
    started = asyncio.Event()
    cancelled: list[str] = []

    async def handler(msg: Message) -> Reply:
        if msg.target == "/hang":
            started.set()
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cancelled.append(msg.target)
                raise
        return await echo(msg)

    engine = FakeEngine(handler)
    async with Served(engine) as s:
        c = s.client
        hang = await c.request("GET", "/hang")
        await asyncio.wait_for(started.wait(), 5)
        c.conn.reset_stream(hang, ErrorCodes.CANCEL)
        await c.flush()
        other = await c.request("GET", "/other")
        await c.until(lambda: c.done(other))
        assert c.response(other)[0] == 200
        assert cancelled == ["/hang"]
        assert not c.of(hang, h2.events.ResponseReceived)
    flags = {r.path: r.flags for r in engine.telemetry.done}
    assert flags == {"/hang": "DR", "/other": "-"}


@run
async def test_garbage_after_the_preface_is_a_goaway_protocol_error_and_other_connections_live() -> None:
    engine = FakeEngine(echo)
    async with Served(engine) as bad, Served(engine) as good:
        await bad.client.until(lambda: bad.client.of(0, h2.events.RemoteSettingsChanged) or bad.client.events)
        # A DATA frame on stream 0 is a connection error (RFC 9113 §6.1).
        await bad.client_end.send(b"\x00\x00\x04\x00\x00\x00\x00\x00\x00junk")
        await bad.client.until(lambda: [e for e in bad.client.events
                                        if isinstance(e, h2.events.ConnectionTerminated)])
        gone = next(e for e in bad.client.events if isinstance(e, h2.events.ConnectionTerminated))
        assert gone.error_code == ErrorCodes.PROTOCOL_ERROR
        await asyncio.wait_for(bad.task, 5)                     # the server ended that connection
        sid = await good.client.request("GET", "/still-fine")
        await good.client.until(lambda: good.client.done(sid))
        assert good.client.response(sid)[0] == 200


@run
async def test_a_bad_preface_is_refused_with_goaway() -> None:
    client_end, server_end = duplex_pair()
    task = asyncio.get_running_loop().create_task(http2.serve_http2(
        FakeEngine(echo), server_end, b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n", DEST, PEER))  # type: ignore[arg-type]
    await asyncio.wait_for(task, 5)
    data = b""
    while chunk := await client_end.recv():
        data += chunk
    probe = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    probe.initiate_connection()
    gone = [e for e in probe.receive_data(data) if isinstance(e, h2.events.ConnectionTerminated)]
    assert gone and gone[0].error_code == ErrorCodes.PROTOCOL_ERROR
    assert server_end.closed


@run
async def test_ping_is_answered_and_client_goaway_ends_the_connection() -> None:
    async with Served(FakeEngine(echo)) as s:
        c = s.client
        c.conn.ping(b"12345678")
        await c.flush()
        acks = await c.until(lambda: [e for e in c.events if isinstance(e, h2.events.PingAckReceived)])
        assert acks[0].ping_data == b"12345678"
        c.conn.close_connection()
        await c.flush()
        assert s.task is not None
        await asyncio.wait_for(asyncio.shield(s.task), 5)
        assert s.server_end.closed


@run
async def test_oversized_bodies_get_413_and_connect_gets_501(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http1, "MAX_BODY_BYTES", 1000)
    engine = FakeEngine(echo)
    async with Served(engine) as s:
        c = s.client
        big = await c.request("POST", "/upload", body=b"x" * 5000)
        await c.until(lambda: c.of(big, h2.events.ResponseReceived))
        assert c.response(big)[0] == 413
        sid = c.conn.get_next_available_stream_id()
        c.conn.send_headers(sid, [(b":method", b"CONNECT"), (b":authority", b"example.com:443")])
        await c.flush()
        await c.until(lambda: c.of(sid, h2.events.ResponseReceived))
        assert c.response(sid)[0] == 501
        ok = await c.request("GET", "/after")
        await c.until(lambda: c.done(ok))
        assert c.response(ok)[0] == 200
    assert [m.target for m in engine.seen] == ["/after"]
    assert sorted(r.status for r in engine.telemetry.done) == [200, 413, 501]


@run
async def test_an_idle_connection_is_closed_with_goaway(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http2, "IDLE_TIMEOUT", 0.05)
    async with Served(FakeEngine(echo)) as s:
        c = s.client
        ev = await c.until(lambda: [e for e in c.events if isinstance(e, h2.events.ConnectionTerminated)])
        assert ev[0].error_code == ErrorCodes.NO_ERROR


# ---- H2Upstreams ---------------------------------------------------------------------------------
ServerHandler = Callable[["TestServer", "Endpoint", int, dict[str, str], bytes], Awaitable[None]]


class TestServer:
    """An h2 server on the far end of each connection H2Upstreams opens."""

    __test__ = False

    def __init__(self, handler: ServerHandler) -> None:
        self.handler = handler
        self.ends: list[Endpoint] = []
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.connects = 0
        self.fail: Exception | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def connect(self, up: Upstream, headers: list[tuple[str, str]]) -> QueueDuplex:
        self.connects += 1
        if self.fail is not None:
            raise self.fail
        ours, theirs = duplex_pair()
        ep = Endpoint(theirs, client=False)
        bodies: dict[int, list[bytes]] = {}
        heads: dict[int, dict[str, str]] = {}

        def on_event(ev: h2.events.Event) -> None:
            if isinstance(ev, h2.events.RequestReceived):
                heads[ev.stream_id] = {k.decode(): v.decode() for k, v in ev.headers}
                bodies[ev.stream_id] = []
            elif isinstance(ev, h2.events.DataReceived):
                bodies[ev.stream_id].append(ev.data)
            elif isinstance(ev, h2.events.StreamEnded):
                body = b"".join(bodies.pop(ev.stream_id))
                self.requests.append((heads[ev.stream_id], body))
                t = asyncio.get_running_loop().create_task(
                    self.handler(self, ep, ev.stream_id, heads[ev.stream_id], body))
                self.tasks.add(t)
                t.add_done_callback(self.tasks.discard)

        ep.on_event = on_event
        await ep.start()
        self.ends.append(ep)
        return ours

    @staticmethod
    async def answer(ep: Endpoint, sid: int, status: int, headers: list[tuple[str, str]], body: bytes,
                     trailers: list[tuple[str, str]] = ()) -> None:  # type: ignore[assignment]
        fields = [(b":status", str(status).encode()), *((k.encode(), v.encode()) for k, v in headers)]
        ep.conn.send_headers(sid, fields, end_stream=not body and not trailers)
        await ep.flush()
        if body:
            await ep.send_body(sid, body, end_stream=not trailers)
        if trailers:
            ep.conn.send_headers(sid, [(k.encode(), v.encode()) for k, v in trailers], end_stream=True)
            await ep.flush()


def grpc_request(body: bytes = b"\x00\x00\x00\x00\x03abc") -> Message:
    return Message(headers=[("host", "echo.ns1.svc.cluster.local:8080"), ("content-type", "application/grpc"),
                            ("x-request-id", "r1")], body=body, method="POST", target="/pkg.Echo/Say",
                   protocol="grpc")


@run
async def test_upstream_grpc_exchange_returns_status_headers_body_and_trailers() -> None:
    async def handler(srv: TestServer, ep: Endpoint, sid: int, headers: dict[str, str], body: bytes) -> None:
        await srv.answer(ep, sid, 200, [("content-type", "application/grpc")], body,
                         [("grpc-status", "0"), ("grpc-message", "fine")])

    srv = TestServer(handler)
    ups = http2.H2Upstreams(srv.connect)  # type: ignore[arg-type]
    try:
        resp = await ups.exchange(UP, grpc_request(), 5)
        assert (resp.status, resp.body) == (200, b"\x00\x00\x00\x00\x03abc")
        assert resp.get("content-type") == "application/grpc" and resp.protocol == "grpc"
        assert resp.trailers == [("grpc-status", "0"), ("grpc-message", "fine")]
        seen, _ = srv.requests[0]
        assert seen[":method"] == "POST" and seen[":path"] == "/pkg.Echo/Say" and seen[":scheme"] == "http"
        assert seen[":authority"] == "echo.ns1.svc.cluster.local:8080" and "host" not in seen
        assert seen["te"] == "trailers" and seen["x-request-id"] == "r1"
    finally:
        ups.close()


@run
async def test_upstream_requests_share_one_connection_and_are_multiplexed() -> None:
    gate = asyncio.Event()

    async def handler(srv: TestServer, ep: Endpoint, sid: int, headers: dict[str, str], body: bytes) -> None:
        if headers[":path"] == "/first":
            await gate.wait()
        else:
            gate.set()
        await srv.answer(ep, sid, 200, [], headers[":path"].encode())

    srv = TestServer(handler)
    ups = http2.H2Upstreams(srv.connect)  # type: ignore[arg-type]
    try:
        order: list[bytes] = []

        async def call(path: str) -> None:
            m = Message(headers=[("host", "h")], method="GET", target=path, protocol="http2")
            order.append((await ups.exchange(UP, m, 5)).body)

        await asyncio.gather(call("/first"), call("/second"))
        assert order == [b"/second", b"/first"] and srv.connects == 1
        await call("/third")
        assert srv.connects == 1
    finally:
        ups.close()


@run
async def test_upstream_large_bodies_flow_both_ways() -> None:
    async def handler(srv: TestServer, ep: Endpoint, sid: int, headers: dict[str, str], body: bytes) -> None:
        await srv.answer(ep, sid, 200, [], body[::-1] * 2, [("grpc-status", "0")])

    srv = TestServer(handler)
    ups = http2.H2Upstreams(srv.connect)  # type: ignore[arg-type]
    try:
        payload = bytes(range(256)) * 800                       # 204,800 bytes
        resp = await ups.exchange(UP, grpc_request(payload), 10)
        assert resp.body == payload[::-1] * 2 and srv.requests[0][1] == payload
    finally:
        ups.close()


@run
async def test_upstream_reset_goaway_and_loss_raise_upstream_reset() -> None:
    async def handler(srv: TestServer, ep: Endpoint, sid: int, headers: dict[str, str], body: bytes) -> None:
        match headers[":path"]:
            case "/reset":
                ep.conn.reset_stream(sid, ErrorCodes.INTERNAL_ERROR)
                await ep.flush()
            case "/goaway":
                ep.conn.close_connection(ErrorCodes.INTERNAL_ERROR, last_stream_id=sid)
                await ep.flush()
            case "/drop":
                ep.duplex.close()
            case "/garbage":
                await ep.duplex.send(b"\x00\x00\x04\x00\x00\x00\x00\x00\x00junk")   # DATA on stream 0
            case "/refuse":
                ep.conn.reset_stream(sid, ErrorCodes.REFUSED_STREAM)
                await ep.flush()
            case _:
                await srv.answer(ep, sid, 204, [], b"")

    srv = TestServer(handler)
    ups = http2.H2Upstreams(srv.connect)  # type: ignore[arg-type]
    try:
        cases: list[tuple[str, type[Exception]]] = [
            ("/reset", http2.StreamReset), ("/goaway", UpstreamReset), ("/drop", UpstreamReset),
            ("/garbage", UpstreamProtocolError), ("/refuse", http2.StreamRefused)]
        for path, error in cases:
            with pytest.raises(error) as got:
                await ups.exchange(UP, Message(headers=[("host", "h")], method="GET", target=path), 5)
            if error is UpstreamReset:
                assert type(got.value) is UpstreamReset
            ok = await ups.exchange(UP, Message(headers=[("host", "h")], method="GET", target="/ok"), 5)
            assert ok.status == 204
        # GOAWAY, the lost connection and the broken one each forced a new connection; a refused
        # stream was resent once on the same (still usable) connection.
        assert srv.connects == 4
        assert [h[":path"] for h, _ in srv.requests].count("/refuse") == 2
    finally:
        ups.close()


@run
async def test_a_stream_the_server_never_processed_is_resent_on_a_fresh_connection() -> None:
    async def handler(srv: TestServer, ep: Endpoint, sid: int, headers: dict[str, str], body: bytes) -> None:
        if srv.connects == 1:
            ep.conn.close_connection(ErrorCodes.NO_ERROR, last_stream_id=0)     # "I took nothing"
            await ep.flush()
        else:
            await srv.answer(ep, sid, 200, [], b"second try")

    srv = TestServer(handler)
    ups = http2.H2Upstreams(srv.connect)  # type: ignore[arg-type]
    try:
        resp = await ups.exchange(UP, Message(headers=[("host", "h")], method="GET", target="/"), 5)
        assert resp.body == b"second try" and srv.connects == 2
    finally:
        ups.close()


@run
async def test_upstream_connect_failure_and_timeout() -> None:
    async def handler(srv: TestServer, ep: Endpoint, sid: int, headers: dict[str, str], body: bytes) -> None:
        await asyncio.sleep(60)

    srv = TestServer(handler)
    ups = http2.H2Upstreams(srv.connect)  # type: ignore[arg-type]
    try:
        srv.fail = ConnectionRefusedError("refused")
        with pytest.raises(ConnectFailure):
            await ups.exchange(UP, grpc_request(), 5)
        srv.fail = ConnectFailure("HBONE CONNECT answered 401")
        with pytest.raises(ConnectFailure, match="401"):
            await ups.exchange(UP, grpc_request(), 5)
        srv.fail = None
        with pytest.raises(TimeoutError):
            await ups.exchange(UP, grpc_request(), 0.1)
        ep = srv.ends[0]
        resets = await ep.until(lambda: [e for e in ep.events if isinstance(e, h2.events.StreamReset)])
        assert resets[0].error_code == ErrorCodes.CANCEL
    finally:
        ups.close()
        for t in srv.tasks:
            t.cancel()


# ---- pure parts ------------------------------------------------------------------------------------
def test_request_message_uses_authority_over_host_and_joins_cookies() -> None:
    msg = http2.request_message([(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/x"),
                                 (b":authority", b"a.example"), (b"host", b"b.example"),
                                 (b"cookie", b"a=1"), (b"cookie", b"b=2"), (b"x-y", b"z")])
    assert msg.headers == [("host", "a.example"), ("x-y", "z"), ("cookie", "a=1; b=2")]
    assert (msg.method, msg.target, msg.version, msg.protocol) == ("GET", "/x", "2", "http2")
    with pytest.raises(http2.BadRequest):
        http2.request_message([(b":method", b"CONNECT"), (b":authority", b"a:443")])


def test_header_blocks_drop_connection_specific_fields() -> None:
    hop = [("connection", "close"), ("keep-alive", "5"), ("transfer-encoding", "chunked"), ("upgrade", "x")]
    out = http2.response_fields(200, [*hop, ("content-length", "9"), ("x-a", "1")], 3)
    assert out == [(b":status", b"200"), (b"x-a", b"1"), (b"content-length", b"3")]
    req = http2.request_fields(Message(headers=[("host", "h:80"), ("te", "trailers"), ("connection", "te")],
                                       method="GET", target="/"))
    assert req == [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"h:80"), (b":path", b"/"),
                   (b"te", b"trailers")]


@pytest.mark.parametrize("status,code", [(403, "7"), (503, "14"), (504, "14"), (404, "12"), (500, "2")])
def test_grpc_reply_maps_http_status(status: int, code: str) -> None:
    reply = http2.grpc_reply(Reply(status, [], b"no good: 100%\n"))
    assert reply.status == 200 and reply.body == b""
    assert dict(reply.headers) == {"content-type": "application/grpc", "grpc-status": code,
                                   "grpc-message": "no good: 100%25"}
    assert http2.grpc_reply(r := Reply(200, [], b"x")) is r


def test_received_data_frames_are_not_hex_dumped() -> None:
    server = http2.new_connection(client=False)
    client = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    sid = client.get_next_available_stream_id()
    client.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":authority", "a"), (":path", "/")])
    client.send_data(sid, b"x" * 1000, end_stream=True)
    events = server.receive_data(client.data_to_send())
    data = [e for e in events if isinstance(e, h2.events.DataReceived)]
    assert data and data[0].data == b"x" * 1000
    assert isinstance(server.incoming_buffer, http2._FrameBuffer)
    assert repr(http2._QuietDataFrame(1, b"x" * 1000)) == "DataFrame(stream_id=1, 1000 bytes)"


@pytest.mark.parametrize("first,expected", [
    (http2.PREFACE + b"\x00\x00\x00\x04", True), (http2.PREFACE[:10], True), (b"PRI", True),
    (b"PR", False), (b"POST / HTTP/1.1\r\n", False), (b"GET / HTTP/1.1\r\n", False), (b"\x16\x03\x01", False),
])
def test_is_preface(first: bytes, expected: bool) -> None:
    assert http2.is_preface(first) is expected


@run
async def test_a_client_that_leaves_mid_response_does_not_hold_the_connection() -> None:
    async def handler(msg: Message) -> Reply:
        return Reply(200, [], b"y" * 200_000)             # more than the client's window

    engine = FakeEngine(handler)
    s = Served(engine, auto_ack=False)
    await s.__aenter__()
    c = s.client
    sid = await c.request("GET", "/big")
    await c.until(lambda: sum(len(e.data) for e in c.of(sid, h2.events.DataReceived)) >= 65535)
    s.client_end.close()                                  # EOF: no WINDOW_UPDATE will ever come
    assert s.task is not None
    await asyncio.wait_for(s.task, 5)
    assert [r.flags for r in engine.telemetry.done] == ["DR"]
    if c.reader is not None:
        c.reader.cancel()
