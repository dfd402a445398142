"""asyncio adapter for the sans-IO HBONE core: one TLS connection ↔ one HboneConnection.

`HboneLink` is the asyncio Protocol of a TLS connection (client or server);
`TunnelStream` is one CONNECT tunnel on it, read and written with
backpressure: bytes received are acknowledged (credit returned to the peer)
only after the caller has passed them on, and a writer waits for credit.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import ssl
from asyncio import sslproto
from collections.abc import Awaitable, Callable, Hashable, Sequence

from cryptography import x509

from zeromesh.hbone import (
    BadRequest,
    ConnectionTerminated,
    DataReceived,
    ErrorCode,
    HboneConnection,
    StreamEnded,
    StreamReset,
    TunnelOpened,
    TunnelRefused,
    TunnelRequested,
    WindowUpdated,
)
from zeromesh.hbone.errors import HboneError

log = logging.getLogger("zeromesh.hbone")


def _install_handshake_hook() -> None:
    """Make a failed TLS handshake visible on both ends.

    CPython 3.11's asyncio SSL transport drops the fatal alert when a handshake
    fails (gh-98078, fixed in later releases), so a refused peer only sees the
    connection vanish; and the failure is logged only in asyncio debug mode. We
    flush the pending alert before the transport closes, and tell the protocol
    (an `HboneLink`) so the refusal is logged and counted.
    """
    orig = sslproto.SSLProtocol._on_handshake_complete
    if getattr(orig, "_zeromesh_hook", False):
        return

    def on_handshake_complete(self: sslproto.SSLProtocol, handshake_exc: BaseException | None) -> None:
        if handshake_exc is not None:
            with contextlib.suppress(Exception):
                self._process_outgoing()       # the alert the peer is owed (RFC 8446 6.2)
            app = getattr(self, "_app_protocol", None)
            callback = getattr(app, "handshake_failed", None)
            if callback is not None:
                peer = None
                with contextlib.suppress(Exception):
                    peer = self._transport.get_extra_info("peername")
                with contextlib.suppress(Exception):
                    callback(handshake_exc, peer)
        orig(self, handshake_exc)

    on_handshake_complete._zeromesh_hook = True  # type: ignore[attr-defined]
    sslproto.SSLProtocol._on_handshake_complete = on_handshake_complete  # type: ignore[method-assign]


_install_handshake_hook()

OnRequest = Callable[["HboneLink", TunnelRequested, "TunnelStream"], None]
OnHandshakeFailure = Callable[[BaseException, "tuple[str, int] | None"], None]


def peer_uris(transport: asyncio.BaseTransport) -> list[str]:
    """URI SANs of the TLS peer's certificate (already verified against the mesh roots)."""
    sslobj = transport.get_extra_info("ssl_object")
    der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
    if not der:
        return []
    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(san.get_values_for_type(x509.UniformResourceIdentifier))


class TunnelStream:
    """One HBONE tunnel: an async byte stream in each direction."""

    def __init__(self, link: HboneLink, stream_id: int) -> None:
        self.link = link
        self.id = stream_id
        self.opened: asyncio.Future[tuple[int, tuple[tuple[str, str], ...]]] = \
            asyncio.get_running_loop().create_future()
        self._chunks: collections.deque[tuple[memoryview, int]] = collections.deque()
        self._eof = False
        self._error: str | None = None
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self.pipe: _AppPipe | None = None

    # ---- fed by the link ------------------------------------------------------------------
    def feed(self, data: memoryview, flow: int) -> None:
        """Straight to the app when a pipe is attached; else kept (no copy) until read."""
        if self.pipe is not None:
            self.pipe.deliver(data, flow)
            return
        self._chunks.append((data, flow))
        self._readable.set()

    def feed_eof(self) -> None:
        self._eof = True
        self._readable.set()
        if self.pipe is not None:
            self.pipe.peer_eof()

    def fail(self, reason: str) -> None:
        self._error = reason
        self._readable.set()
        self._writable.set()
        if not self.opened.done():
            self.opened.set_exception(ConnectionResetError(reason))
        if self.pipe is not None:
            self.pipe.peer_failed(reason)

    def wake(self) -> None:
        self._writable.set()
        if self.pipe is not None:
            self.pipe._push()

    def attach(self, pipe: _AppPipe) -> None:
        """From now on the tunnel talks to the app's transport directly."""
        self.pipe = pipe
        while self._chunks:
            data, flow = self._chunks.popleft()
            pipe.deliver(data, flow)
        if self._error is not None:
            pipe.peer_failed(self._error)
        elif self._eof:
            pipe.peer_eof()

    # ---- used by the relay ------------------------------------------------------------------
    async def read(self) -> tuple[memoryview, int]:
        """Next chunk and its flow-control length; an empty view once the peer half-closed."""
        while not self._chunks:
            if self._error is not None:
                raise ConnectionResetError(self._error)
            if self._eof:
                return memoryview(b""), 0
            self._readable.clear()
            await self._readable.wait()
        return self._chunks.popleft()

    def ack(self, flow: int) -> None:
        """The bytes were written onward: now the peer may send more."""
        if self._error is None and flow:
            self.link.conn.acknowledge(self.id, flow)
            self.link.flush()

    async def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            if self._error is not None:
                raise ConnectionResetError(self._error)
            n = self.link.conn.send_data(self.id, view)
            self.link.flush()
            view = view[n:]
            if view:
                self._writable.clear()
                await self._writable.wait()
            await self.link.writable()

    def write_eof(self) -> None:
        if self._error is None:
            try:
                self.link.conn.end_stream(self.id)
            except HboneError:
                return
            self.link.flush()

    def abort(self, code: ErrorCode = ErrorCode.CANCEL) -> None:
        if self._error is None:
            self._error = "aborted locally"
            with contextlib.suppress(HboneError):
                self.link.conn.reset_stream(self.id, code)
            self.link.flush()
        self.done()

    def done(self) -> None:
        """Forget the stream; credit for bytes nobody will read goes back to the connection."""
        self._chunks.clear()
        with contextlib.suppress(HboneError):
            self.link.conn.release(self.id)
            self.link.flush()
        self.link.streams.pop(self.id, None)
        self.link.touch()


class HboneLink(asyncio.Protocol):
    """One TLS connection carrying HBONE tunnels; drives a sans-IO HboneConnection."""

    def __init__(self, client: bool, on_request: OnRequest | None = None,
                 on_handshake_failure: OnHandshakeFailure | None = None) -> None:
        self.client = client
        self.on_handshake_failure = on_handshake_failure
        self.conn = HboneConnection(client=client)
        self.on_request = on_request
        self.streams: dict[int, TunnelStream] = {}
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] | None = None
        self.peer_identities: list[str] = []
        self.lost = asyncio.get_running_loop().create_future()
        self._writable = asyncio.Event()
        self._writable.set()
        self.idle_since = asyncio.get_running_loop().time()

    def handshake_failed(self, exc: BaseException, peer: tuple[str, int] | None) -> None:
        """Called by the handshake hook: the TLS layer refused the peer."""
        if self.on_handshake_failure is not None:
            self.on_handshake_failure(exc, peer)

    # ---- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peer = transport.get_extra_info("peername")
        self.peer_identities = peer_uris(transport)
        self.conn.initiate()
        self.flush()

    def data_received(self, data: bytes) -> None:
        for ev in self.conn.receive(data):
            self._dispatch(ev)
        self.flush()

    def eof_received(self) -> bool:
        return False

    @property
    def write_paused(self) -> bool:
        return not self._writable.is_set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()
        for s in list(self.streams.values()):
            if s.pipe is not None:
                s.pipe._push()

    def connection_lost(self, exc: Exception | None) -> None:
        for s in list(self.streams.values()):
            s.fail(f"HBONE connection lost: {exc or 'closed'}")
        self.streams.clear()
        self._writable.set()
        if not self.lost.done():
            self.lost.set_result(None)

    # ---- plumbing -------------------------------------------------------------------------------
    def _peer_text(self) -> str:
        ident = ",".join(self.peer_identities) or "no identity"
        return f"{self.peer[0]}:{self.peer[1]} ({ident})" if self.peer else f"? ({ident})"

    def flush(self) -> None:
        bufs = self.conn.data_to_send()
        if bufs and self.transport is not None and not self.transport.is_closing():
            self.transport.writelines(bufs)

    async def writable(self) -> None:
        if not self._writable.is_set():
            await self._writable.wait()

    def touch(self) -> None:
        self.idle_since = asyncio.get_running_loop().time()

    @property
    def usable(self) -> bool:
        return (not self.lost.done() and not self.conn.closed and self.transport is not None
                and not self.transport.is_closing())

    def _dispatch(self, ev: object) -> None:
        match ev:
            case TunnelRequested(sid, authority, headers):
                stream = TunnelStream(self, sid)
                self.streams[sid] = stream
                if self.on_request is None:
                    with contextlib.suppress(HboneError):   # the peer may have reset it already
                        self.conn.respond(sid, 400)
                else:
                    self.on_request(self, TunnelRequested(sid, authority, headers), stream)
            case BadRequest(sid, reason):
                log.info("HBONE bad request on stream %d: %s", sid, reason)
                with contextlib.suppress(HboneError):
                    self.conn.respond(sid, 400)
            case TunnelOpened(sid, status, headers):
                s = self.streams.get(sid)
                if s is not None and not s.opened.done():
                    s.opened.set_result((status, headers))
            case TunnelRefused(sid, status, headers):
                s = self.streams.pop(sid, None)
                if s is not None and not s.opened.done():
                    s.opened.set_result((status, headers))
            case DataReceived(sid, data, flow):
                s = self.streams.get(sid)
                if s is not None:
                    s.feed(data, flow)
                else:       # a stream we gave up on: drop the bytes, keep the connection's credit
                    with contextlib.suppress(HboneError):
                        self.conn.acknowledge(sid, flow)
            case StreamEnded(sid):
                s = self.streams.get(sid)
                if s is not None:
                    s.feed_eof()
            case StreamReset(sid, code, remote):
                s = self.streams.pop(sid, None)
                if not remote:
                    log.warning("HBONE stream %d from %s refused: %r", sid, self._peer_text(), code)
                if s is not None:
                    s.fail(f"stream reset ({'peer' if remote else 'local'}): {code!r}")
            case WindowUpdated(sid):
                if sid == 0:
                    for s in self.streams.values():
                        s.wake()
                elif (s := self.streams.get(sid)) is not None:
                    s.wake()
            case ConnectionTerminated(code, _last, debug, remote):
                reason = f"HBONE connection terminated ({'peer' if remote else 'local'}): {code!r} {debug!r}"
                if not remote:
                    log.warning("HBONE connection from %s closed: %r %s", self._peer_text(), code,
                                debug.decode(errors="replace"))
                for s in list(self.streams.values()):
                    s.fail(reason)
                self.streams.clear()
                self.flush()
                if self.transport is not None:
                    self.transport.close()

    async def open(self, authority: str, headers: Sequence[tuple[str, str]]) -> TunnelStream:
        """Client: CONNECT authority; returns once the server answered (status in `opened`)."""
        sid = self.conn.open_tunnel(authority, headers)
        stream = TunnelStream(self, sid)
        self.streams[sid] = stream
        self.touch()
        self.flush()
        return stream


class _AppPipe(asyncio.Protocol):
    """The application's TCP connection wired straight to a tunnel.

    Bytes move inside the transport callbacks, with no stream reader and no task
    hop per chunk; backpressure both ways: app reading pauses while the tunnel has
    no credit (or the TLS connection's buffer is full), and credit is returned to
    the peer only once the app's transport has taken the bytes without backing up.
    """

    def __init__(self, transport: asyncio.Transport, tunnel: TunnelStream,
                 on_up: Callable[[int], None], on_down: Callable[[int], None]) -> None:
        self.transport = transport
        self.tunnel = tunnel
        self.on_up = on_up
        self.on_down = on_down
        self.pending: memoryview | None = None     # app bytes waiting for tunnel credit
        self.app_eof = False
        self.up_done = False
        self.down_done = False
        self.app_paused = False                    # the app's write buffer is full
        self.owed = 0                              # credit held back while app_paused
        self.done: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    # ---- app -> tunnel ----------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        self.on_up(len(data))
        if self.pending is not None:
            self.pending = memoryview(bytes(self.pending) + data)
        else:
            self.pending = memoryview(data)
        self._push()

    def _push(self) -> None:
        t = self.tunnel
        if t._error is not None:
            return
        view = self.pending
        if view is not None:
            try:
                n = t.link.conn.send_data(t.id, view)
            except HboneError as e:
                self._finish(f"tunnel: {e}", abort=True)
                return
            t.link.flush()
            view = view[n:] if n < len(view) else None
            self.pending = view
        if self.pending is not None or t.link.write_paused:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()
            if self.app_eof and not self.up_done:
                t.write_eof()
                self.up_done = True
                self._maybe_finish()

    def eof_received(self) -> bool:
        self.app_eof = True
        self._push()
        return True

    def pause_writing(self) -> None:
        self.app_paused = True

    def resume_writing(self) -> None:
        self.app_paused = False
        if self.owed:
            self.tunnel.ack(self.owed)
            self.owed = 0

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.tunnel.abort()
            self._finish(f"application side: {exc}" if exc else "", abort=False)

    # ---- tunnel -> app (called by the TunnelStream) --------------------------------------------
    def deliver(self, data: memoryview, flow: int) -> None:
        self.transport.write(data)
        self.on_down(len(data))
        if self.app_paused:
            self.owed += flow
        else:
            self.tunnel.ack(flow)

    def peer_eof(self) -> None:
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.down_done = True
        self._maybe_finish()

    def peer_failed(self, reason: str) -> None:
        self._finish(reason, abort=True)

    def _maybe_finish(self) -> None:
        if self.up_done and self.down_done:
            self._finish("", abort=False)

    def _finish(self, error: str, abort: bool) -> None:
        if self.done.done():
            return
        if abort:
            self.transport.abort()
        else:
            self.transport.close()
        self.done.set_result(error)


async def relay_tunnel(app: tuple[asyncio.StreamReader, asyncio.StreamWriter], tunnel: TunnelStream,
                       on_up: Callable[[int], None], on_down: Callable[[int], None]) -> str:
    """App ↔ tunnel, both directions, half-close aware; returns "" or the error that ended it.

    The app connection arrives as asyncio streams (accepted or connected); its
    transport is handed to an `_AppPipe`, taking along whatever the stream reader
    had already buffered (a client often sends its request before the tunnel is up).
    """
    reader, writer = app
    transport = writer.transport
    assert isinstance(transport, asyncio.Transport)
    pipe = _AppPipe(transport, tunnel, on_up, on_down)
    buffered = bytes(reader._buffer)     # what the stream reader took in before the hand-over
    reader._buffer.clear()
    already_eof = reader._eof
    transport.set_protocol(pipe)
    tunnel.attach(pipe)
    if buffered:
        pipe.data_received(buffered)
    if already_eof:
        pipe.eof_received()
    elif pipe.pending is None:
        transport.resume_reading()
    try:
        return await pipe.done
    finally:
        tunnel.done()


class IdentityMismatch(Exception):
    """The HBONE server proved an identity the control plane did not name for the destination."""


async def connect_link(sock: socket.socket, ip: str, port: int, ctx: ssl.SSLContext,
                       expected: set[str], timeout: float) -> HboneLink:
    """TLS to an HBONE server over ``sock``; before any byte of the application is sent the
    server must prove one of the ``expected`` SPIFFE IDs."""
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(loop.sock_connect(sock, (ip, port)), timeout)
        transport, link = await asyncio.wait_for(loop.create_connection(
            lambda: HboneLink(client=True), sock=sock, ssl=ctx, server_hostname=""), timeout)
    except BaseException:
        sock.close()
        raise
    if not expected.intersection(link.peer_identities):
        transport.abort()
        raise IdentityMismatch(f"{ip}:{port} presented {link.peer_identities or 'no identity'}, "
                               f"expected one of {sorted(expected)}")
    return link


class LinkPool:
    """HBONE connections shared by key; a new connection when the peer's stream limit is hit;
    idle connections close after a few minutes (as Istio's pool)."""

    IDLE_TIMEOUT = 300.0

    def __init__(self) -> None:
        self.links: dict[Hashable, list[HboneLink]] = {}
        self._locks: dict[Hashable, asyncio.Lock] = {}
        self._reaper: asyncio.Task[None] | None = None

    async def get(self, key: Hashable, connect: Callable[[], Awaitable[HboneLink]]) -> HboneLink:
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:      # a thousand callers for a new key open one connection, not a thousand
            links = [lk for lk in self.links.get(key, []) if lk.usable]
            self.links[key] = links
            for lk in links:
                if lk.conn.available_streams > 0:
                    return lk
            link = await connect()
            links.append(link)
            if self._reaper is None or self._reaper.done():
                self._reaper = asyncio.get_running_loop().create_task(self._reap())
            return link

    async def _reap(self) -> None:
        while self.links:
            await asyncio.sleep(30)
            now = asyncio.get_running_loop().time()
            for key, links in list(self.links.items()):
                keep = []
                for lk in links:
                    if lk.usable and (lk.streams or now - lk.idle_since < self.IDLE_TIMEOUT):
                        keep.append(lk)
                    elif lk.transport is not None:
                        lk.conn.close()
                        lk.flush()
                        lk.transport.close()
                if keep:
                    self.links[key] = keep
                else:
                    del self.links[key]
                    self._locks.pop(key, None)

    def close(self) -> None:
        for links in self.links.values():
            for lk in links:
                if lk.transport is not None:
                    lk.transport.close()
        self.links.clear()
        if self._reaper is not None:
            self._reaper.cancel()
