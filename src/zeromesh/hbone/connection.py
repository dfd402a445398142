"""The HBONE connection: HTTP/2 restricted to CONNECT tunnels, sans-IO.

One class for both ends (``client=True/False``), in the manner of h2/h11:
``receive(bytes) -> events``, method calls queue frames, ``data_to_send()``
hands the queued buffers out.  No sockets, clock or threads.

Peer misbehaviour never raises out of :meth:`HboneConnection.receive`: a stream
error queues RST_STREAM and reports :class:`StreamReset` (``remote=False``); a
connection error queues GOAWAY and reports :class:`ConnectionTerminated`
(``remote=False``), after which input is ignored.  Our own misuse raises
:class:`UsageError`.

Backpressure: received bytes are lent, not given.  The caller acknowledges
them (:meth:`acknowledge`) once passed onward, and only then is credit
returned to the peer — in bulk, when half a window (``credit_ratio``) has
accumulated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from zeromesh.hbone.core import ConnectionCore
from zeromesh.hbone.errors import (
    ConnectionClosed,
    ErrorCode,
    StreamClosed,
    TooManyStreams,
    UsageError,
)
from zeromesh.hbone.frames import (
    DEFAULT_WINDOW,
    MAX_STREAM_ID,
    PREFACE,
    data_frame_header,
    goaway,
    headers_frames,
    ping,
    rst_stream,
    settings_frame,
    window_update,
)
from zeromesh.hbone.headers import (
    encode_fields,
)
from zeromesh.hbone.streams import Stream, StreamInput, StreamState

_CLOSED: Final = StreamState.CLOSED
_SMALL: Final = 16 * 1024  # buffers below this are cheaper to copy than to send as their own TLS record


def _coalesce(buffers: list[bytes | memoryview]) -> list[bytes | memoryview]:
    """Join each run of small buffers into one; pass large ones through untouched."""
    result: list[bytes | memoryview] = []
    run: list[bytes | memoryview] = []
    for buffer in buffers:
        if len(buffer) < _SMALL:
            run.append(buffer)
            continue
        if run:
            result.append(b"".join(run) if len(run) > 1 else run[0])
            run = []
        result.append(buffer)
    if run:
        result.append(b"".join(run) if len(run) > 1 else run[0])
    return result


class HboneConnection(ConnectionCore):
    """One HTTP/2 connection carrying HBONE tunnels; ``client`` picks the role.

    ``HboneConnection(client=True)`` then ``initiate()``; feed the peer's bytes to
    ``receive()``, write ``data_to_send()`` out.  Settings default to Istio's
    (:meth:`HboneSettings.for_client` / :meth:`HboneSettings.for_server`).
    """

    # --- lifecycle and IO ---------------------------------------------------------------------

    def initiate(self) -> None:
        """Queue our side of the preface: SETTINGS and the connection window raise."""
        if self._initiated:
            raise UsageError("initiate() was already called")
        self._initiated = True
        if self.client:
            self._out.append(PREFACE)
        self._out.append(settings_frame(self.settings.wire(self.client)))
        if self.settings.connection_window > DEFAULT_WINDOW:
            self._out.append(window_update(0, self.settings.connection_window - DEFAULT_WINDOW))
            self._recv_window = self.settings.connection_window

    def data_to_send(self) -> list[bytes | memoryview]:
        """Everything queued, as buffers for ``writelines``: large DATA payloads are never joined.

        Runs of small buffers (frame headers, control frames, small payloads) are
        joined, because a TLS transport turns every buffer into its own record.
        """
        out, self._out = self._out, []
        self._queued_control = 0
        return _coalesce(out) if len(out) > 1 else out

    @property
    def wants_write(self) -> bool:
        """Whether anything is queued for ``data_to_send()``."""
        return bool(self._out)

    def bytes_to_send(self) -> bytes:
        """Everything queued, joined: convenient for tests and small writes."""
        return b"".join(self.data_to_send())

    # --- client API ---------------------------------------------------------------------------

    def open_tunnel(self, authority: str, headers: Sequence[tuple[str, str]] = ()) -> int:
        """Send a CONNECT for ``authority`` (``ip:port``); returns the new stream id."""
        self._check_open()
        if not self.client:
            raise UsageError("only the client side opens tunnels")
        if self._goaway_sent or self._goaway_received:
            raise ConnectionClosed("GOAWAY was exchanged: open tunnels on another connection")
        if self._active_local >= self._peer_max_streams:
            raise TooManyStreams(f"peer allows {self._peer_max_streams} concurrent streams")
        sid = self._next_stream_id
        if sid > MAX_STREAM_ID:
            raise TooManyStreams("stream ids exhausted on this connection")
        if not authority or authority != authority.strip() or any(c in authority for c in "\0\r\n"):
            raise UsageError(f"invalid authority {authority!r}")
        fields = encode_fields([(b":method", b"CONNECT"), (b":authority", authority.encode())], headers)
        self._out.extend(headers_frames(sid, self._encoder.encode(fields), False, self._peer_max_frame))
        self._next_stream_id += 2
        stream = Stream(sid, self._peer_initial_window, self.settings.stream_window)
        self._advance(stream, StreamInput.SEND_HEADERS)
        stream.headers_sent = True
        self._streams[sid] = stream
        self._active_local += 1
        return sid

    # --- server API ---------------------------------------------------------------------------

    def respond(self, stream_id: int, status: int, headers: Sequence[tuple[str, str]] = ()) -> None:
        """Answer a request: 2xx opens the tunnel, anything else ends the stream (END_STREAM)."""
        self._check_open()
        if self.client:
            raise UsageError("only the server side responds")
        stream = self._active(stream_id)
        if stream.headers_sent:
            raise UsageError(f"stream {stream_id} was already answered")
        if not 200 <= status <= 599:
            raise UsageError(f"status {status} is not a final status (200-599)")
        tunnel = status < 300
        if tunnel and stream.bad_request:
            raise UsageError(f"stream {stream_id} is not a valid CONNECT; answer it with 400")
        nxt = stream.next_state(StreamInput.SEND_HEADERS)
        if nxt is None:
            raise StreamClosed(stream_id)
        fields = encode_fields([(b":status", b"%d" % status)], headers)
        self._out.extend(headers_frames(stream_id, self._encoder.encode(fields), not tunnel,
                                        self._peer_max_frame))
        stream.headers_sent = True
        stream.state = nxt
        if tunnel:
            stream.tunnel = True
            return
        self._silence(stream)
        self._advance(stream, StreamInput.SEND_END_STREAM)
        if stream.state is not _CLOSED:
            # The request side is still open: ask the client to stop without error (RFC 9113
            # 8.1), so a client that never half-closes does not hold a stream slot for good.
            self._out.append(rst_stream(stream_id, ErrorCode.NO_ERROR))
            self._close(stream, reset=True, by_us=True)

    # --- both sides ---------------------------------------------------------------------------

    def send_data(self, stream_id: int, data: bytes | bytearray | memoryview) -> int:
        """Queue as much of ``data`` as both windows allow; returns bytes taken (0: wait for credit).

        ``bytes`` (and read-only views of bytes) are queued without copying;
        mutable buffers are copied once, so the caller may reuse them at once.
        """
        self._check_open()
        stream = self._active(stream_id)
        if not stream.tunnel:
            raise UsageError(f"tunnel {stream_id} is not open (no 2xx exchanged)")
        if stream.next_state(StreamInput.SEND_DATA) is None:
            raise StreamClosed(stream_id, f"stream {stream_id} is closed for sending")
        view = memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        size = len(view)
        take = min(size, self._send_window, stream.send_window)
        if take <= 0:
            return 0
        if take < size:
            view = view[:take]
        if not (view.readonly and isinstance(view.obj, bytes)):
            view = memoryview(bytes(view))  # the caller may reuse a mutable buffer at once
        out = self._out
        limit = self._peer_max_frame
        if take <= limit:
            out.append(data_frame_header(stream_id, take))
            out.append(data if take == size and isinstance(data, bytes) else view)
        else:
            for start in range(0, take, limit):
                piece = view[start:start + limit]
                out.append(data_frame_header(stream_id, len(piece)))
                out.append(piece)
        self._send_window -= take
        stream.send_window -= take
        return take

    def end_stream(self, stream_id: int) -> None:
        """Half-close our direction: an empty DATA frame with END_STREAM."""
        self._check_open()
        stream = self._active(stream_id)
        if not stream.tunnel:
            raise UsageError(f"tunnel {stream_id} is not open (no 2xx exchanged)")
        if stream.next_state(StreamInput.SEND_END_STREAM) is None:
            raise StreamClosed(stream_id, f"stream {stream_id} is already closed for sending")
        self._out.append(data_frame_header(stream_id, 0, True))
        self._advance(stream, StreamInput.SEND_END_STREAM)

    def reset_stream(self, stream_id: int, code: ErrorCode = ErrorCode.CANCEL) -> None:
        """Abort a stream (RST_STREAM); a no-op when it is already closed."""
        if self._terminated:
            return
        stream = self._streams.get(stream_id)
        if stream is None or stream.state is _CLOSED:
            if self._is_idle(stream_id):
                raise UsageError(f"stream {stream_id} was never opened")
            return
        self._out.append(rst_stream(stream_id, code))
        self._close(stream, reset=True, by_us=True)

    def acknowledge(self, stream_id: int, n: int) -> None:
        """``n`` received bytes of the stream were passed on: credit may go back to the peer."""
        if n < 0:
            raise UsageError("cannot acknowledge a negative byte count")
        stream = self._streams.get(stream_id)
        if n == 0 or stream is None or stream.quiet or self._terminated:
            return  # a reset stream's credit went back when it was reset
        if n > stream.unacked:
            raise UsageError(f"acknowledging {n} bytes; stream {stream_id} has {stream.unacked} pending")
        stream.unacked -= n
        if stream.receiving:
            stream.unreturned += n
            if stream.unreturned >= self._stream_threshold:
                self._out.append(window_update(stream_id, stream.unreturned))
                stream.recv_window += stream.unreturned
                stream.unreturned = 0
        elif stream.state is _CLOSED and not stream.unacked:
            del self._streams[stream_id]
        self._credit_connection(n)

    def release(self, stream_id: int) -> int:
        """Acknowledge everything still unacknowledged on a stream whose buffered bytes the caller drops."""
        stream = self._streams.get(stream_id)
        owed = 0 if stream is None or stream.quiet else stream.unacked
        if owed:
            self.acknowledge(stream_id, owed)
        return owed

    def ping(self, opaque: bytes) -> None:
        """Queue a PING carrying 8 opaque bytes; the answer is a PingAcked event."""
        self._check_open()
        if len(opaque) != 8:
            raise UsageError("PING data must be exactly 8 bytes")
        self._out.append(ping(bytes(opaque)))

    def close(self, code: ErrorCode = ErrorCode.NO_ERROR, debug: bytes = b"") -> None:
        """Send GOAWAY: NO_ERROR drains (open streams finish), any other code ends the connection."""
        if not self._initiated:
            raise UsageError("call initiate() before close()")
        if self._terminated:
            return
        self._out.append(goaway(self._last_peer_stream, code, debug))
        self._goaway_sent = True
        if code != ErrorCode.NO_ERROR:
            self._terminated = True

    # --- introspection ------------------------------------------------------------------------

    def local_window(self, stream_id: int = 0) -> int:
        """Bytes the peer may still send us on the stream (0: the connection)."""
        if stream_id == 0:
            return self._recv_window
        stream = self._streams.get(stream_id)
        return stream.recv_window if stream is not None else 0

    def remote_window(self, stream_id: int = 0) -> int:
        """Credit the peer granted us on the stream (0: the connection); may be negative (§6.9.2)."""
        if stream_id == 0:
            return self._send_window
        stream = self._streams.get(stream_id)
        return stream.send_window if stream is not None else 0

    def sendable(self, stream_id: int) -> int:
        """How many bytes ``send_data`` would take right now."""
        return max(0, min(self._send_window, self.remote_window(stream_id)))

    def stream_state(self, stream_id: int) -> StreamState:
        """The RFC 9113 state of a stream (forgotten closed streams report CLOSED)."""
        stream = self._streams.get(stream_id)
        if stream is not None:
            return stream.state
        return StreamState.IDLE if self._is_idle(stream_id) else _CLOSED

    @property
    def open_streams(self) -> int:
        """Streams counting against the concurrency limits (open or half-closed), both directions."""
        return self._active_local + self._active_remote

    @property
    def available_streams(self) -> int:
        """How many more tunnels ``open_tunnel`` would accept now (0 after GOAWAY)."""
        if self._terminated or self._goaway_sent or self._goaway_received or not self.client:
            return 0
        ids_left = (MAX_STREAM_ID - self._next_stream_id) // 2 + 1
        return max(0, min(self._peer_max_streams - self._active_local, ids_left))

    @property
    def closed(self) -> bool:
        """True after a connection error or a GOAWAY with an error code from us."""
        return self._terminated

