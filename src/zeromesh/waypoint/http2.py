"""HTTP/2 in the waypoint: the downstream server side and a multiplexing upstream client.

Downstream, a tunnel's bytes start with the HTTP/2 preface (h2c with prior knowledge: HBONE is
already mTLS, so there is no ALPN and no ``Upgrade: h2c``). Each request stream becomes an
:class:`~zeromesh.waypoint.http1.Message` (``protocol`` ``"http2"`` or ``"grpc"``) and goes through
the same L7 chain as HTTP/1.1 (``HttpEngine.respond``), one task per stream, answered in whatever
order they finish.

Upstream, gRPC needs HTTP/2 end to end (its status travels in trailers), so :class:`H2Upstreams`
keeps one h2 connection per endpoint and multiplexes requests on it as streams.

Both sides wrap a sans-IO ``h2.connection.H2Connection`` in a :class:`_Link`, the only code doing
IO: bytes read → ``receive_data`` → events; whatever h2 queued leaves through one lock, so frames
keep h2's order whichever task produced them. Bodies are buffered whole, with http1's limits (a
route may retry or mirror a request), and received data is acknowledged at once so large uploads
and downloads keep flowing; sending waits for the peer's flow-control windows.

Wiring in ``HttpEngine`` (engine.py imports this module inside functions, since this module
imports engine.py): ``serve`` calls ``serve_http2`` when ``is_preface(first)`` (before
``looks_http1``); the engine keeps ``self.h2 = H2Upstreams(connect)`` and sends requests whose
``protocol == "grpc"`` through ``self.h2.exchange(up, msg, per_try_timeout)``, mapping
:class:`StreamRefused`/:class:`StreamReset`/``UpstreamProtocolError``/``UpstreamReset`` to the
retry machine's failure kinds, and passes ``resp.trailers`` on in its ``Reply``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.connection import ConnectionState
from h2.errors import ErrorCodes
from h2.frame_buffer import FrameBuffer
from hyperframe.frame import DataFrame, Frame

from zeromesh.waypoint import http1
from zeromesh.waypoint.engine import H2_PREFACE, ConnectFailure, Reply, UpstreamProtocolError, UpstreamReset
from zeromesh.waypoint.http1 import Headers, Message

if TYPE_CHECKING:
    from zeromesh.waypoint.config import Destination, Upstream
    from zeromesh.waypoint.duplex import Duplex
    from zeromesh.waypoint.engine import Connector, HttpEngine, Peer

log = logging.getLogger("zeromesh.waypoint")

PREFACE = H2_PREFACE
MAX_CONCURRENT_STREAMS = 100
MAX_HEADER_LIST_SIZE = http1.MAX_HEADER_BYTES
DEFAULT_WINDOW = 65535
STREAM_WINDOW = 256 * 1024            # what one stream may send us before we acknowledge
CONNECTION_WINDOW = 1024 * 1024       # ... and the whole connection
IDLE_TIMEOUT = 300.0                  # a connection with no stream open is closed with GOAWAY

# Connection-specific fields (RFC 9113 §8.2.2) and what we frame ourselves: never forwarded.
DROP = http1.HOP_BY_HOP | {"content-length", "host"}

# Envoy's mapping of an HTTP status to a gRPC status (gRPC's doc/http-grpc-status-mapping.md).
GRPC_FROM_HTTP = {400: 13, 401: 16, 403: 7, 404: 12, 429: 14, 502: 14, 503: 14, 504: 14}
GRPC_UNKNOWN = 2

RawHeaders = list[tuple[bytes, bytes]]


def is_preface(first: bytes) -> bool:
    """Whether a connection's first bytes open HTTP/2 (prior knowledge). Check before
    ``looks_http1``: "PRI * HTTP/2.0" also parses as an HTTP/1 request line. A preface split
    across reads is fine: h2 checks the rest as it arrives."""
    n = min(len(first), len(PREFACE))
    return n >= 3 and first[:n] == PREFACE[:n]


# ---- h2 setup ----------------------------------------------------------------------------------
class _QuietDataFrame(DataFrame):
    """A DATA frame whose repr does not hex-dump its payload (see :class:`_FrameBuffer`)."""

    def __repr__(self) -> str:
        return f"DataFrame(stream_id={self.stream_id}, {len(self.data)} bytes)"


class _FrameBuffer(FrameBuffer):
    """h2 4.4 passes ``repr(frame)`` to its trace logger for every received frame; the argument is
    built before the call, so a null logger does not avoid it, and a DATA frame's repr
    hex-encodes its whole payload (measured: receiving bulk DATA runs ~2.3x faster without it)."""

    def __next__(self) -> Frame:
        f = super().__next__()
        if type(f) is DataFrame:
            f.__class__ = _QuietDataFrame
        return f


def new_connection(client: bool) -> h2.connection.H2Connection:
    """An h2 connection with our settings (and the cheap DATA repr when h2's internals allow)."""
    config = h2.config.H2Configuration(client_side=client, header_encoding=None,
                                       validate_inbound_headers=True, logger=None)
    conn = h2.connection.H2Connection(config=config)
    conn.local_settings = h2.settings.Settings(client=client, initial_values={
        h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
        h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST_SIZE,
        h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
        h2.settings.SettingCodes.ENABLE_PUSH: 0,
    })
    table = getattr(conn, "_frame_dispatch_table", None)
    if isinstance(table, dict) and DataFrame in table and isinstance(conn.incoming_buffer, FrameBuffer):
        table[_QuietDataFrame] = table[DataFrame]
        conn.incoming_buffer = _FrameBuffer(server=not client)
    return conn


# ---- messages ↔ header blocks (pure) -----------------------------------------------------------
class BadRequest(Exception):
    """A request stream that HTTP/2 allows but this proxy does not serve; ``status`` is the answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def _decode(fields: RawHeaders) -> tuple[dict[str, str], Headers]:
    pseudo: dict[str, str] = {}
    headers: Headers = []
    for name, value in fields:
        k, v = name.decode("latin-1").lower(), value.decode("latin-1")
        if k.startswith(":"):
            pseudo[k] = v
        else:
            headers.append((k, v))
    return pseudo, headers


def is_grpc(headers: Headers) -> bool:
    return any(k == "content-type" and v.lower().startswith("application/grpc") for k, v in headers)


def request_message(fields: RawHeaders, body: bytes = b"", trailers: RawHeaders | None = None) -> Message:
    """A request stream as the L7 chain sees HTTP/1.1: ``host`` first (from ``:authority``, which
    wins over a Host field, RFC 9113 §8.3.1), cookie crumbs joined (§8.2.3)."""
    pseudo, headers = _decode(fields)
    method = pseudo.get(":method", "")
    if method == "CONNECT":
        raise BadRequest(501, "CONNECT over HTTP/2 is not proxied")
    host = pseudo.get(":authority") or next((v for k, v in headers if k == "host"), "")
    out: Headers = [("host", host)] if host else []
    out.extend((k, v) for k, v in headers if k not in ("host", "cookie"))
    cookies = [v for k, v in headers if k == "cookie"]
    if cookies:
        out.append(("cookie", "; ".join(cookies)))
    return Message(headers=out, body=body, method=method, target=pseudo.get(":path", ""), version="2",
                   trailers=_decode(list(trailers))[1] if trailers else [],
                   protocol="grpc" if is_grpc(out) else "http2")


def request_fields(msg: Message, scheme: str = "http") -> RawHeaders:
    """The header block for ``msg`` sent upstream; gRPC gets ``te: trailers`` (its servers may
    insist on it; the L7 chain dropped ``te`` as hop-by-hop)."""
    authority = msg.get("host") or ""
    out: RawHeaders = [(b":method", msg.method.encode("ascii")), (b":scheme", scheme.encode("ascii")),
                       (b":authority", authority.encode("latin-1")),
                       (b":path", (msg.target or "/").encode("latin-1"))]
    te = any(k == "te" and "trailers" in v.lower() for k, v in msg.headers)
    out.extend((k.encode("ascii"), v.encode("latin-1")) for k, v in msg.headers
               if k not in DROP and not k.startswith(":"))
    if te or msg.protocol == "grpc" or is_grpc(msg.headers):
        out.append((b"te", b"trailers"))
    elif msg.body or msg.method in ("POST", "PUT", "PATCH"):
        out.append((b"content-length", str(len(msg.body)).encode("ascii")))
    return out


def response_fields(status: int, headers: Headers, content_length: int | None) -> RawHeaders:
    out: RawHeaders = [(b":status", str(status).encode("ascii"))]
    out.extend((k.lower().encode("ascii"), v.encode("latin-1")) for k, v in headers
               if k.lower() not in DROP and not k.startswith(":"))
    if content_length is not None:
        out.append((b"content-length", str(content_length).encode("ascii")))
    return out


def trailer_fields(trailers: Headers) -> RawHeaders:
    return [(k.lower().encode("ascii"), v.encode("latin-1")) for k, v in trailers
            if k.lower() not in DROP and not k.startswith(":")]


def response_message(fields: RawHeaders, body: bytes, trailers: RawHeaders) -> Message:
    pseudo, headers = _decode(fields)
    try:
        status = int(pseudo.get(":status", ""))
    except ValueError:
        status = 0
    return Message(headers=headers, body=body, status=status, version="2",
                   trailers=_decode(trailers)[1], protocol="grpc" if is_grpc(headers) else "http2")


def _grpc_message(text: str) -> str:
    """grpc-message is percent-encoded outside printable ASCII (and '%' itself)."""
    return "".join(chr(b) if 0x20 <= b <= 0x7E and b != 0x25 else f"%{b:02X}" for b in text.encode())


def grpc_reply(reply: Reply) -> Reply:
    """A gRPC client reads the outcome from grpc-status. An answer without one (the proxy's own:
    a denial, no healthy upstream, a timeout; or a plain-HTTP backend's error) becomes a
    trailers-only response, as Envoy sends, with the status mapped from the HTTP code."""
    if reply.status == 200 or any(k == "grpc-status" for k, _ in (*reply.headers, *reply.trailers)):
        return reply
    code = GRPC_FROM_HTTP.get(reply.status, GRPC_UNKNOWN)
    text = reply.body.decode("utf-8", "replace").strip() or http1.REASONS.get(reply.status, "error")
    return Reply(200, [("content-type", "application/grpc"), ("grpc-status", str(code)),
                               ("grpc-message", _grpc_message(text))], b"")


# ---- the IO shared by both ends ------------------------------------------------------------------
class _StreamGone(Exception):
    """The stream (or the whole connection) ended while we were still sending on it."""


class _Link:
    def __init__(self, duplex: Duplex, client: bool) -> None:
        self.duplex = duplex
        self.conn = new_connection(client)
        self.closed = False
        self.eof = False                 # the peer sent its last byte: no more credit will come
        self._wlock = asyncio.Lock()
        self._credit: dict[int, asyncio.Event] = {}

    def start(self) -> None:
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(CONNECTION_WINDOW - DEFAULT_WINDOW)

    async def flush(self) -> None:
        async with self._wlock:
            data = self.conn.data_to_send()
            if data:
                await self.duplex.send(data)

    def feed(self, data: bytes) -> list[h2.events.Event] | None:
        """Events for ``data``; None after a protocol violation (h2 queued the GOAWAY)."""
        try:
            return self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            log.info("HTTP/2 peer %s broke the protocol, closing with GOAWAY: %s", self.duplex.peer, e)
            if self.conn.state_machine.state != ConnectionState.CLOSED:     # a bad preface: h2 sent none
                self.conn.close_connection(error_code=getattr(e, "error_code", ErrorCodes.PROTOCOL_ERROR))
            return None

    def wake(self, stream_id: int) -> None:
        """Senders waiting for credit look again (stream 0: all of them)."""
        if stream_id == 0:
            for waiting in self._credit.values():
                waiting.set()
        elif (one := self._credit.get(stream_id)) is not None:
            one.set()

    async def send_body(self, sid: int, body: bytes, end_stream: bool,
                        gone: Callable[[], bool] = lambda: False) -> None:
        """Send as the peer's windows allow (both the stream's and the connection's)."""
        ev = self._credit.setdefault(sid, asyncio.Event())
        off, total = 0, len(body)
        try:
            while off < total:
                if self.closed or gone():
                    raise _StreamGone()
                try:
                    window = self.conn.local_flow_control_window(sid)
                except h2.exceptions.ProtocolError as e:
                    raise _StreamGone() from e
                if window <= 0:
                    if self.eof:
                        raise _StreamGone()
                    ev.clear()
                    await ev.wait()
                    continue
                stop = min(total, off + window)
                try:
                    while off < stop:
                        n = min(self.conn.max_outbound_frame_size, stop - off)
                        last = end_stream and off + n == total
                        self.conn.send_data(sid, body[off:off + n], end_stream=last)
                        off += n
                except h2.exceptions.ProtocolError as e:
                    raise _StreamGone() from e
                await self.flush()
        finally:
            self._credit.pop(sid, None)
        if not total and end_stream:
            try:
                self.conn.end_stream(sid)
            except h2.exceptions.ProtocolError as e:
                raise _StreamGone() from e
            await self.flush()


# ---- downstream: serve one HTTP/2 connection ----------------------------------------------------
@dataclass
class _Incoming:
    """A request stream whose body is still arriving."""
    fields: RawHeaders
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    trailers: RawHeaders = field(default_factory=list)


class _Server(_Link):
    def __init__(self, engine: HttpEngine, down: Duplex, dest: Destination, peer: Peer) -> None:
        super().__init__(down, client=False)
        self.engine, self.dest, self.peer = engine, dest, peer
        self.incoming: dict[int, _Incoming] = {}
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.ending = False
        self.broken = False

    async def run(self, first: bytes) -> None:
        self.start()
        data = first
        try:
            while True:
                if data:
                    events = self.feed(data)
                    if events is None:
                        await self.flush()
                        break
                    for ev in events:
                        self.on_event(ev)
                await self.flush()
                if self.ending:
                    break
                try:
                    data = await asyncio.wait_for(self.duplex.recv(), IDLE_TIMEOUT)
                except TimeoutError:
                    if self.tasks or self.incoming:
                        data = b""
                        continue
                    self.conn.close_connection()
                    await self.flush()
                    break
                if not data:             # the client half-closed: answer what fits its windows
                    self.eof = True
                    self.wake(0)
                    if self.tasks:
                        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
                    break
        except (OSError, ConnectionError) as e:
            log.debug("HTTP/2 downstream %s ended: %s", self.peer.ip, e)
            self.broken = True
        finally:
            self.closed = True
            self.wake(0)
            for t in list(self.tasks.values()):
                t.cancel()
            if self.tasks:
                await asyncio.gather(*self.tasks.values(), return_exceptions=True)
            if self.broken:
                self.duplex.abort()
            else:
                self.duplex.close()

    def on_event(self, ev: h2.events.Event) -> None:
        inc: _Incoming | None
        match ev:
            case h2.events.RequestReceived():
                inc = _Incoming(list(ev.headers or []))
                if (b":method", b"CONNECT") in inc.fields:      # a tunnel never ends its request
                    self._spawn(ev.stream_id, self._refuse(ev.stream_id, inc, 501, "CONNECT is not proxied"))
                else:
                    self.incoming[ev.stream_id] = inc
            case h2.events.DataReceived():
                self.conn.acknowledge_received_data(ev.flow_controlled_length or 0, ev.stream_id)
                inc = self.incoming.get(ev.stream_id)
                if inc is not None and ev.data:
                    inc.size += len(ev.data)
                    if inc.size > http1.MAX_BODY_BYTES:
                        del self.incoming[ev.stream_id]
                        self._spawn(ev.stream_id,
                                    self._refuse(ev.stream_id, inc, 413, "request body too large"))
                    else:
                        inc.chunks.append(ev.data)
            case h2.events.TrailersReceived():
                inc = self.incoming.get(ev.stream_id)
                if inc is not None:
                    inc.trailers = list(ev.headers or [])
            case h2.events.StreamEnded():
                inc = self.incoming.pop(ev.stream_id, None)
                if inc is not None:
                    self._request(ev.stream_id, inc)
            case h2.events.StreamReset():
                self.incoming.pop(ev.stream_id, None)
                task = self.tasks.pop(ev.stream_id, None)
                if task is not None:
                    task.cancel()
                self.wake(ev.stream_id)
            case h2.events.WindowUpdated():
                self.wake(ev.stream_id)
            case h2.events.RemoteSettingsChanged():
                self.wake(0)
            case h2.events.ConnectionTerminated():
                # h2 allows nothing more on the connection after a GOAWAY (python-hyper/h2#1181).
                if ev.error_code != ErrorCodes.NO_ERROR:
                    log.info("HTTP/2 client %s sent GOAWAY %s", self.duplex.peer, ev.error_code)
                self.ending = True
            case _:
                pass                     # PING (h2 answers it), SETTINGS ACK, PRIORITY, unknown frames

    def _spawn(self, sid: int, work: Coroutine[None, None, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.tasks[sid] = task

        def done(t: asyncio.Task[None]) -> None:
            if self.tasks.get(sid) is t:
                del self.tasks[sid]
        task.add_done_callback(done)

    def _request(self, sid: int, inc: _Incoming) -> None:
        try:
            msg = request_message(inc.fields, b"".join(inc.chunks), inc.trailers)
        except BadRequest as e:
            self._spawn(sid, self._refuse(sid, inc, e.status, str(e)))
            return
        self._spawn(sid, self._answer(sid, msg))

    async def _answer(self, sid: int, msg: Message) -> None:
        """One request through the L7 chain; a client RST_STREAM cancels this task."""
        grpc = msg.protocol == "grpc"
        # Istio labels HTTP/1.1 and HTTP/2 alike request_protocol="http"; gRPC is "grpc".
        rec = self.engine.record(msg, self.dest, self.peer, protocol="grpc" if grpc else "http")
        try:
            reply = await self.engine.respond(msg, self.dest, self.peer, rec)
            if grpc:
                reply = grpc_reply(reply)
            rec.response_bytes = await self._send_reply(sid, reply, msg.method == "HEAD", grpc)
        except asyncio.CancelledError:
            rec.flags, rec.reason = "DR", rec.reason or "downstream reset the stream"
            self.engine.telemetry.request_done(rec)
            raise
        except _StreamGone:
            rec.flags, rec.reason = "DR", rec.reason or "downstream reset the stream"
        except (OSError, ConnectionError) as e:
            self.broken = True
            self.duplex.abort()
            rec.flags, rec.reason = "DC", f"downstream connection failed: {e}"
        except Exception:
            log.exception("HTTP/2 stream %d from %s failed", sid, self.peer.ip)
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.conn.reset_stream(sid, ErrorCodes.INTERNAL_ERROR)
            with contextlib.suppress(OSError, ConnectionError):
                await self.flush()
            rec.status, rec.flags, rec.reason = rec.status or 500, "DPE", "internal error"
        self.engine.telemetry.request_done(rec)

    async def _send_reply(self, sid: int, reply: Reply, head: bool, grpc: bool) -> int:
        """HEADERS, DATA as the windows allow, then the trailers (if any) ending the stream."""
        body = b"" if head or reply.status in (204, 304) else reply.body
        length = None if grpc or head or reply.status in (204, 304) else len(body)
        fields = response_fields(reply.status, reply.headers, length)
        trailers = trailer_fields(reply.trailers)
        try:
            self.conn.send_headers(sid, fields, end_stream=not body and not trailers)
        except h2.exceptions.ProtocolError as e:
            raise _StreamGone() from e
        await self.flush()
        if body:
            await self.send_body(sid, body, end_stream=not trailers)
        if trailers:
            try:
                self.conn.send_headers(sid, trailers, end_stream=True)
            except h2.exceptions.ProtocolError as e:
                raise _StreamGone() from e
            await self.flush()
        return len(body) + sum(len(k) + len(v) + 4 for k, v in (*fields, *trailers))

    async def _refuse(self, sid: int, inc: _Incoming, status: int, reason: str) -> None:
        """Answer a request the chain never sees (too large, CONNECT), then drop its stream."""
        pseudo, headers = _decode(inc.fields)
        msg = Message(headers=headers, method=pseudo.get(":method", ""), target=pseudo.get(":path", ""))
        rec = self.engine.record(msg, self.dest, self.peer)
        rec.status, rec.flags, rec.reason = status, "DPE", reason
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.conn.send_headers(sid, response_fields(status, [], 0), end_stream=True)
            # The client may still be sending: stop it (RFC 9113 §8.1); raises if it had finished.
            self.conn.reset_stream(sid, ErrorCodes.NO_ERROR)
        with contextlib.suppress(OSError, ConnectionError):
            await self.flush()
        self.engine.telemetry.request_done(rec)


async def serve_http2(engine: HttpEngine, down: Duplex, first: bytes, dest: Destination, peer: Peer) -> None:
    """Serve one downstream HTTP/2 connection (``first``: the bytes already read, starting with the
    preface). Returns once the connection ended; ``down`` is closed (or aborted) by then."""
    await _Server(engine, down, dest, peer).run(first)


# ---- upstream: multiplexed client connections ----------------------------------------------------
class StreamReset(UpstreamReset):
    """The upstream reset our stream (RST_STREAM) before a full response (Envoy: "remote reset")."""


class StreamRefused(UpstreamReset):
    """The upstream never processed the stream (REFUSED_STREAM, or above a GOAWAY's last stream):
    safe to resend (Envoy: "remote refused stream reset", retry_on ``refused-stream``)."""


@dataclass
class _Exchange:
    """One request stream waiting for its response."""
    future: asyncio.Future[Message]
    fields: RawHeaders = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    trailers: RawHeaders = field(default_factory=list)


class _Client(_Link):
    def __init__(self, duplex: Duplex, key: str, on_closed: Callable[[_Client], None]) -> None:
        super().__init__(duplex, client=True)
        self.key = key
        self.on_closed = on_closed
        self.pending: dict[int, _Exchange] = {}
        self.goaway = False
        self.reader: asyncio.Task[None] | None = None
        self._room = asyncio.Event()
        self._flushes: set[asyncio.Task[None]] = set()

    @property
    def usable(self) -> bool:
        return not self.closed and not self.goaway

    async def open(self) -> None:
        self.start()
        await self.flush()
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        reason, broken, error = "upstream closed the connection", False, UpstreamReset
        try:
            while True:
                try:
                    data = await asyncio.wait_for(self.duplex.recv(), IDLE_TIMEOUT)
                except TimeoutError:
                    if self.pending:
                        continue
                    self.goaway = True
                    self.conn.close_connection()
                    await self.flush()
                    reason = "idle"
                    break
                if not data:
                    break
                events = self.feed(data)
                if events is None:
                    reason, broken, error = "upstream broke HTTP/2", True, UpstreamProtocolError
                    await self.flush()
                    break
                for ev in events:
                    self.on_event(ev)
                await self.flush()
                if self.goaway and not self.pending:
                    reason = "upstream sent GOAWAY"
                    break
        except (OSError, ConnectionError) as e:
            reason, broken = f"upstream connection failed: {e}", True
        finally:
            self.shut(reason, broken, error)

    def shut(self, reason: str, broken: bool = False, error: type[UpstreamReset] = UpstreamReset) -> None:
        """Fail whatever is still waiting and drop the connection."""
        if self.closed:
            return
        self.closed = True
        for ex in self.pending.values():
            _fail(ex, error(reason))
        self.pending.clear()
        self.wake(0)
        self._room.set()
        if broken:
            self.duplex.abort()
        else:
            self.duplex.close()
        self.on_closed(self)
        if self.reader is not None and self.reader is not asyncio.current_task():
            self.reader.cancel()

    def on_event(self, ev: h2.events.Event) -> None:
        match ev:
            case h2.events.ResponseReceived():
                if (ex := self.pending.get(ev.stream_id)) is not None:
                    ex.fields = list(ev.headers or [])
            case h2.events.DataReceived():
                self.conn.acknowledge_received_data(ev.flow_controlled_length or 0, ev.stream_id)
                ex = self.pending.get(ev.stream_id)
                if ex is not None and ev.data:
                    ex.size += len(ev.data)
                    if ex.size > http1.MAX_BODY_BYTES:
                        self._drop(ev.stream_id, UpstreamReset("upstream response body too large"))
                        with contextlib.suppress(h2.exceptions.ProtocolError):
                            self.conn.reset_stream(ev.stream_id, ErrorCodes.CANCEL)
                    else:
                        ex.chunks.append(ev.data)
            case h2.events.TrailersReceived():
                if (ex := self.pending.get(ev.stream_id)) is not None:
                    ex.trailers = list(ev.headers or [])
            case h2.events.StreamEnded():
                ex = self.pending.pop(ev.stream_id, None)
                if ex is not None and not ex.future.done():
                    ex.future.set_result(response_message(ex.fields, b"".join(ex.chunks), ex.trailers))
                self.wake(ev.stream_id)
                self._room.set()
            case h2.events.StreamReset():
                refused = ev.error_code == ErrorCodes.REFUSED_STREAM
                self._drop(ev.stream_id, StreamRefused("upstream refused the stream") if refused
                           else StreamReset(f"upstream reset the stream ({ev.error_code!s})"))
            case h2.events.WindowUpdated():
                self.wake(ev.stream_id)
            case h2.events.RemoteSettingsChanged():
                self.wake(0)
                self._room.set()
            case h2.events.ConnectionTerminated():
                # h2 allows nothing more after a GOAWAY (python-hyper/h2#1181): streams above the
                # last one the server took were never processed (resendable), the rest are lost.
                self.goaway = True
                last = ev.last_stream_id if ev.last_stream_id is not None else 0
                for sid in list(self.pending):
                    self._drop(sid, StreamRefused("upstream sent GOAWAY") if sid > last else
                               UpstreamReset(f"upstream sent GOAWAY ({ev.error_code!s})"))
            case _:
                pass

    def _drop(self, sid: int, error: Exception) -> None:
        ex = self.pending.pop(sid, None)
        if ex is not None:
            _fail(ex, error)
        self.wake(sid)
        self._room.set()

    async def request(self, msg: Message) -> Message:
        """Send ``msg`` as a new stream and wait for its whole response."""
        limit = self.conn.remote_settings
        while self.usable and self.conn.open_outbound_streams >= limit.max_concurrent_streams:
            self._room.clear()
            await self._room.wait()
        if not self.usable:
            raise StreamRefused("connection is closing")
        sid = self.conn.get_next_available_stream_id()
        ex = _Exchange(asyncio.get_running_loop().create_future())
        self.pending[sid] = ex
        try:
            self.conn.send_headers(sid, request_fields(msg), end_stream=not msg.body)
            await self.flush()
            if msg.body:
                await self.send_body(sid, msg.body, end_stream=True, gone=ex.future.done)
            return await ex.future
        except _StreamGone:
            if ex.future.done():
                return ex.future.result()         # answered early (or failed: raises that)
            raise UpstreamReset("upstream stream ended while sending the request") from None
        except h2.exceptions.ProtocolError as e:
            raise UpstreamReset(f"HTTP/2 error: {e}") from e
        except (OSError, ConnectionError) as e:
            self.shut(f"upstream connection failed: {e}", broken=True)
            raise UpstreamReset(f"upstream connection failed: {e}") from e
        finally:
            if self.pending.pop(sid, None) is not None and not self.closed:
                # We gave up (timeout, cancellation): tell the server, without waiting.
                with contextlib.suppress(h2.exceptions.ProtocolError):
                    self.conn.reset_stream(sid, ErrorCodes.CANCEL)
                self._kick()
            self._room.set()

    def _kick(self) -> None:
        async def flush() -> None:
            with contextlib.suppress(OSError, ConnectionError):
                await self.flush()
        t = asyncio.get_running_loop().create_task(flush())
        self._flushes.add(t)
        t.add_done_callback(self._flushes.discard)


def _fail(ex: _Exchange, error: Exception) -> None:
    if not ex.future.done():
        ex.future.set_exception(error)
        ex.future.exception()        # retrieved here: a sender that gave up need not look


class H2Upstreams:
    """One multiplexed HTTP/2 (h2c) connection per upstream endpoint, opened through the engine's
    connector (HBONE for meshed endpoints, plain TCP otherwise).

    ``exchange(up, msg, timeout)`` sends ``msg`` (``method``, ``target``, ``headers`` with ``host``
    as the L7 chain forwards them, ``body``) and returns the response as a ``Message`` with
    ``status``, ``headers``, ``body`` and ``trailers``. Raises ``engine.ConnectFailure`` when the
    endpoint cannot be reached, ``engine.UpstreamReset`` when the stream or connection ends before
    a full response, ``TimeoutError`` after ``timeout`` seconds (the stream is then reset). A stream
    the server never processed (REFUSED_STREAM, above a GOAWAY's last stream) is resent once on a
    fresh connection.
    """

    def __init__(self, connect: Connector) -> None:
        self.connect = connect
        self.links: dict[str, _Client] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def exchange(self, up: Upstream, msg: Message, timeout: float | None = None) -> Message:
        async with asyncio.timeout(timeout):
            for attempt in range(2):
                link = await self._link(up)
                try:
                    return await link.request(msg)
                except StreamRefused:
                    if attempt:
                        raise
        raise AssertionError("unreachable")

    async def _link(self, up: Upstream) -> _Client:
        link = self.links.get(up.key)
        if link is not None and link.usable:
            return link
        lock = self._locks.setdefault(up.key, asyncio.Lock())
        async with lock:
            link = self.links.get(up.key)
            if link is not None and link.usable:
                return link
            try:
                duplex = await self.connect(up, [])
            except ConnectFailure:
                raise
            except (OSError, ConnectionError, TimeoutError) as e:
                raise ConnectFailure(f"{up.key}: {e}") from e
            link = _Client(duplex, up.key, self._forget)
            self.links[up.key] = link
            try:
                await link.open()
            except (OSError, ConnectionError) as e:
                link.shut(str(e), broken=True)
                raise ConnectFailure(f"{up.key}: {e}") from e
            return link

    def _forget(self, link: _Client) -> None:
        if self.links.get(link.key) is link:
            del self.links[link.key]

    def close(self) -> None:
        for link in list(self.links.values()):
            link.shut("waypoint closing", broken=True)
        self.links.clear()
