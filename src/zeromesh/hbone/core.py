"""The receiving half of an HBONE connection: state, frame handlers, stream and credit books.

Split from :mod:`zeromesh.hbone.connection` only to keep files short;
:class:`~zeromesh.hbone.connection.HboneConnection` is the one public class.
Peer faults surface here as :class:`ProtocolViolation` and are turned into
RST_STREAM (stream errors) or GOAWAY (connection errors) plus events; nothing
the peer sends makes :meth:`ConnectionCore.receive` raise.
"""

from __future__ import annotations

from typing import Final, assert_never

from hpack import Decoder, Encoder, HPACKError, OversizedHeaderListError

from zeromesh.hbone.errors import (
    ConnectionClosed,
    ErrorCode,
    ProtocolViolation,
    StreamClosed,
    UsageError,
)
from zeromesh.hbone.events import (
    BadRequest,
    ConnectionTerminated,
    DataReceived,
    Event,
    PingAcked,
    PingReceived,
    SettingsReceived,
    StreamEnded,
    StreamReset,
    TunnelOpened,
    TunnelRefused,
    TunnelRequested,
    WindowUpdated,
)
from zeromesh.hbone.frames import (
    DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_WINDOW,
    MAX_FRAME_SIZE_LIMIT,
    MAX_WINDOW,
    ContinuationFrame,
    DataFrame,
    Frame,
    FrameParser,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    PushPromiseFrame,
    RstStreamFrame,
    SettingCode,
    SettingsFrame,
    UnknownFrame,
    WindowUpdateFrame,
    data_frame_header,
    goaway,
    ping,
    rst_stream,
    settings_ack,
    window_update,
)
from zeromesh.hbone.headers import (
    authority_problem,
    parse_request,
    parse_response,
    parse_trailers,
)
from zeromesh.hbone.settings import HboneSettings
from zeromesh.hbone.streams import Stream, StreamInput, StreamState

_CLOSED: Final = StreamState.CLOSED
_RECENT_CLOSED: Final = 1024  # closed stream ids remembered, to tell "closed" from "forgotten"
_MAX_CONTINUATIONS: Final = 256
_MAX_DEBUG: Final = 256


def _violation(code: ErrorCode, message: str, stream_id: int = 0) -> ProtocolViolation:
    return ProtocolViolation(code, message, stream_id)


class _PendingBlock:
    """A header block whose CONTINUATIONs are still arriving (nothing may interleave, §6.10)."""

    __slots__ = ("depends_on", "end_stream", "frames", "parts", "size", "stream_id")

    def __init__(self, frame: HeadersFrame) -> None:
        self.stream_id = frame.stream_id
        self.end_stream = frame.end_stream
        self.depends_on = frame.depends_on
        self.parts = [frame.block]
        self.size = len(frame.block)
        self.frames = 1


class ConnectionCore:
    """State and receive path shared by both roles; see HboneConnection for the API."""

    def __init__(self, *, client: bool, settings: HboneSettings | None = None) -> None:
        self.client = client
        self.settings = settings or (HboneSettings.for_client() if client else HboneSettings.for_server())
        s = self.settings
        self._parser = FrameParser(s.max_frame_size, expect_preface=not client)
        self._encoder = Encoder()
        self._decoder = Decoder(max_header_list_size=s.max_header_list_size)
        self._decoder.max_allowed_table_size = s.header_table_size
        self._out: list[bytes | memoryview] = []
        self._streams: dict[int, Stream] = {}
        self._recent_closed: dict[int, bool] = {}  # stream id -> True when we reset it (ignore its frames)
        self._active_local = 0
        self._active_remote = 0
        self._next_stream_id = 1 if client else 2
        self._last_peer_stream = 0
        self._peer_max_frame = DEFAULT_MAX_FRAME_SIZE
        self._peer_initial_window = DEFAULT_WINDOW
        self._peer_max_streams = 2**31  # unlimited until the peer's SETTINGS say otherwise
        self._send_window = DEFAULT_WINDOW  # connection credit the peer gave us
        self._recv_window = DEFAULT_WINDOW  # connection credit we gave the peer
        self._conn_unreturned = 0
        self._stream_threshold = s.stream_credit_threshold
        self._conn_threshold = s.connection_credit_threshold
        self._block_limit = 2 * s.max_header_list_size
        self._pending: _PendingBlock | None = None
        self._initiated = False
        self._seen_settings = False
        self._ready = False  # settings seen and no header block pending: DATA may take the fast path
        self._terminated = False
        self._goaway_sent = False
        self._goaway_received = False
        self._unproductive = 0  # control frames since the last DATA/stream progress
        self._queued_control = 0  # automatic replies queued since the last data_to_send()

    def receive(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Feed bytes from the peer; returns what happened, in order. Never raises for peer faults."""
        if not self._initiated:
            raise UsageError("call initiate() before receive()")
        events: list[Event] = []
        if self._terminated:
            return events
        try:
            for frame in self._parser.feed(data):
                try:
                    if self._ready and isinstance(frame, DataFrame):
                        self._on_data(frame, events)
                    else:
                        self._dispatch(frame, events)
                except ProtocolViolation as err:
                    if not err.stream_id:
                        raise
                    self._stream_error(err, events)
        except ProtocolViolation as err:
            self._connection_error(err, events)
        return events

    # --- receiving ----------------------------------------------------------------------------

    def _dispatch(self, frame: Frame, events: list[Event]) -> None:
        if self._pending is not None and frame.__class__ is not ContinuationFrame:
            raise _violation(ErrorCode.PROTOCOL_ERROR, "header block interrupted before CONTINUATION")
        if not self._seen_settings and not (isinstance(frame, SettingsFrame) and not frame.ack):
            raise _violation(ErrorCode.PROTOCOL_ERROR, "the peer's first frame must be SETTINGS")
        match frame:
            case DataFrame():
                self._on_data(frame, events)
            case HeadersFrame():
                if frame.end_headers:
                    self._on_block(frame.stream_id, frame.block, frame.end_stream, frame.depends_on, events)
                else:
                    self._pending = _PendingBlock(frame)
                    self._ready = False
            case ContinuationFrame():
                self._on_continuation(frame, events)
            case SettingsFrame():
                self._on_settings(frame, events)
            case WindowUpdateFrame():
                self._on_window_update(frame, events)
            case RstStreamFrame():
                self._on_rst_stream(frame, events)
            case PingFrame():
                if frame.ack:
                    events.append(PingAcked(frame.opaque))
                else:
                    self._queue_reply(ping(frame.opaque, ack=True))
                    events.append(PingReceived(frame.opaque))
            case GoAwayFrame():
                self._on_goaway(frame, events)
            case PriorityFrame():
                self._count_unproductive()
                if frame.depends_on == frame.stream_id:
                    raise _violation(ErrorCode.PROTOCOL_ERROR, f"stream {frame.stream_id} depends on itself")
            case PushPromiseFrame():
                raise _violation(ErrorCode.PROTOCOL_ERROR, "PUSH_PROMISE received, push is disabled")
            case UnknownFrame():
                self._count_unproductive()
            case _:
                assert_never(frame)

    def _on_data(self, frame: DataFrame, events: list[Event]) -> None:
        sid = frame.stream_id
        n = frame.flow_length
        if n > self._recv_window:
            raise _violation(ErrorCode.FLOW_CONTROL_ERROR, f"DATA of {n} bytes beyond the connection window")
        self._recv_window -= n
        stream = self._streams.get(sid)
        nxt = None if stream is None else stream.next_state(StreamInput.RECV_DATA)
        if stream is None or nxt is None:
            self._credit_connection(n)  # nobody will acknowledge these bytes
            self._not_receiving(sid, stream, "DATA")
            return
        if n > stream.recv_window:
            raise _violation(ErrorCode.FLOW_CONTROL_ERROR, f"DATA beyond the window of stream {sid}")
        stream.recv_window -= n
        if stream.quiet:
            self._credit_connection(n)
        elif not stream.headers_received:
            self._credit_connection(n)
            raise _violation(ErrorCode.PROTOCOL_ERROR, "DATA before the response HEADERS", sid)
        elif n:
            stream.unacked += n
            events.append(DataReceived(sid, frame.data, n))
        stream.state = nxt
        if frame.data:
            self._unproductive = 0
        elif not frame.end_stream:
            self._count_unproductive()  # empty DATA frames are a flood vector too
        if frame.end_stream:
            self._end_remote(stream, events)

    def _not_receiving(self, sid: int, stream: Stream | None, what: str) -> None:
        """A frame for a stream that cannot take it: ignore, stream error or connection error."""
        if stream is None and self._is_idle(sid):
            raise _violation(ErrorCode.PROTOCOL_ERROR, f"{what} on idle stream {sid}")
        if self._recent_closed.get(sid):
            return  # we reset it; frames the peer sent before seeing our RST_STREAM are expected
        raise _violation(ErrorCode.STREAM_CLOSED, f"{what} on closed stream {sid}", sid)

    def _on_continuation(self, frame: ContinuationFrame, events: list[Event]) -> None:
        block = self._pending
        if block is None or block.stream_id != frame.stream_id:
            raise _violation(ErrorCode.PROTOCOL_ERROR, "CONTINUATION without a HEADERS frame before it")
        block.parts.append(frame.block)
        block.size += len(frame.block)
        block.frames += 1
        if block.size > self._block_limit or block.frames > _MAX_CONTINUATIONS:
            raise _violation(ErrorCode.ENHANCE_YOUR_CALM, "header block too large or too fragmented")
        if frame.end_headers:
            self._pending = None
            self._ready = True
            self._on_block(block.stream_id, b"".join(block.parts), block.end_stream, block.depends_on, events)

    def _decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        """HPACK-decode a complete block; failures break the shared table: connection errors."""
        try:
            return [(bytes(name), bytes(value)) for name, value in self._decoder.decode(block, raw=True)]
        except OversizedHeaderListError as err:
            raise _violation(ErrorCode.ENHANCE_YOUR_CALM, f"header list too large: {err}") from err
        except (HPACKError, ValueError, IndexError, TypeError) as err:
            raise _violation(ErrorCode.COMPRESSION_ERROR, f"HPACK decoding failed: {err}") from err

    def _on_block(self, sid: int, block: bytes, end_stream: bool, depends_on: int,
                  events: list[Event]) -> None:
        fields = self._decode(block)  # always first: the HPACK table must follow the peer's
        stream = self._streams.get(sid)
        if stream is not None and stream.state is not _CLOSED:
            self._on_stream_headers(stream, fields, end_stream, events)
        elif self._is_idle(sid):
            if self.client or not sid & 1:
                raise _violation(ErrorCode.PROTOCOL_ERROR, f"peer may not open stream {sid}")
            self._on_request(sid, fields, end_stream, depends_on, events)
        elif sid in self._recent_closed or stream is not None:
            self._not_receiving(sid, stream, "HEADERS")
        else:
            raise _violation(ErrorCode.PROTOCOL_ERROR, f"HEADERS on stream {sid}: stream ids must increase")

    def _on_request(self, sid: int, fields: list[tuple[bytes, bytes]], end_stream: bool, depends_on: int,
                    events: list[Event]) -> None:
        self._last_peer_stream = sid
        if self._goaway_sent:
            self._remember_closed(sid, ignore=True)  # beyond our GOAWAY: ignored (§6.8)
            return
        if depends_on == sid:
            raise _violation(ErrorCode.PROTOCOL_ERROR, f"stream {sid} depends on itself", sid)
        if self._active_remote >= self.settings.max_concurrent_streams:
            self._count_unproductive()  # refused streams cost us a decode and a reply each
            limit = self.settings.max_concurrent_streams
            raise _violation(ErrorCode.REFUSED_STREAM, f"more than {limit} concurrent streams", sid)
        request = parse_request(fields, sid)
        stream = Stream(sid, self._peer_initial_window, self.settings.stream_window)
        self._advance(stream, StreamInput.RECV_HEADERS)
        stream.headers_received = True
        self._streams[sid] = stream
        self._active_remote += 1
        if request.method != "CONNECT":
            problem: str | None = f"method {request.method} is not CONNECT"
        else:
            assert request.authority is not None
            problem = authority_problem(request.authority)
        if problem is not None:
            stream.bad_request = True
            events.append(BadRequest(sid, problem))
        else:
            assert request.authority is not None
            events.append(TunnelRequested(sid, request.authority, request.headers))
        if end_stream:
            self._end_remote(stream, events)

    def _on_stream_headers(self, stream: Stream, fields: list[tuple[bytes, bytes]], end_stream: bool,
                           events: list[Event]) -> None:
        sid = stream.stream_id
        nxt = stream.next_state(StreamInput.RECV_HEADERS)
        if nxt is None:
            self._not_receiving(sid, stream, "HEADERS")
            return
        if stream.headers_received:  # trailers: only as the last frame, and no pseudo-headers
            if not end_stream:
                raise _violation(ErrorCode.PROTOCOL_ERROR, "second HEADERS without END_STREAM", sid)
            parse_trailers(fields, sid)
            stream.state = nxt
            self._end_remote(stream, events)
            return
        response = parse_response(fields, sid)
        if response.status < 200:
            if response.status == 101 or end_stream:
                raise _violation(ErrorCode.PROTOCOL_ERROR, f"bad 1xx response {response.status}", sid)
            return  # 1xx: informational, the final answer follows
        stream.headers_received = True
        stream.state = nxt
        if response.status < 300:
            stream.tunnel = True
            self._unproductive = 0
            events.append(TunnelOpened(sid, response.status, response.headers))
            if end_stream:
                self._end_remote(stream, events)
            return
        events.append(TunnelRefused(sid, response.status, response.headers))
        self._silence(stream)
        if end_stream:  # complete refusal: end our side cleanly
            self._end_remote(stream, events)
            self._out.append(data_frame_header(sid, 0, True))
            self._advance(stream, StreamInput.SEND_END_STREAM)
        else:  # a refusal with a body we do not want
            self._out.append(rst_stream(sid, ErrorCode.CANCEL))
            self._close(stream, reset=True, by_us=True)

    def _on_settings(self, frame: SettingsFrame, events: list[Event]) -> None:
        if frame.ack:
            return
        self._count_unproductive()
        changed = dict(frame.settings)
        for code, value in changed.items():
            if code == SettingCode.ENABLE_PUSH and (value > 1 or (self.client and value == 1)):
                raise _violation(ErrorCode.PROTOCOL_ERROR, f"invalid SETTINGS_ENABLE_PUSH {value}")
            if code == SettingCode.ENABLE_CONNECT_PROTOCOL and value > 1:
                raise _violation(ErrorCode.PROTOCOL_ERROR, f"invalid ENABLE_CONNECT_PROTOCOL {value}")
            if code == SettingCode.INITIAL_WINDOW_SIZE and value > MAX_WINDOW:
                raise _violation(ErrorCode.FLOW_CONTROL_ERROR, f"INITIAL_WINDOW_SIZE {value} too large")
            if code == SettingCode.MAX_FRAME_SIZE and not (
                    DEFAULT_MAX_FRAME_SIZE <= value <= MAX_FRAME_SIZE_LIMIT):
                raise _violation(ErrorCode.PROTOCOL_ERROR, f"invalid SETTINGS_MAX_FRAME_SIZE {value}")
        grown: list[Stream] = []
        if SettingCode.INITIAL_WINDOW_SIZE in changed:  # §6.9.2: shift every stream's send window
            delta = changed[SettingCode.INITIAL_WINDOW_SIZE] - self._peer_initial_window
            for stream in self._streams.values():
                stream.send_window += delta
                if stream.send_window > MAX_WINDOW:
                    raise _violation(ErrorCode.FLOW_CONTROL_ERROR, f"window of {stream.stream_id} overflows")
                if delta > 0 and stream.tunnel and stream.next_state(StreamInput.SEND_DATA) is not None:
                    grown.append(stream)
            self._peer_initial_window = changed[SettingCode.INITIAL_WINDOW_SIZE]
        if SettingCode.MAX_FRAME_SIZE in changed:
            self._peer_max_frame = changed[SettingCode.MAX_FRAME_SIZE]
        if SettingCode.MAX_CONCURRENT_STREAMS in changed:
            self._peer_max_streams = changed[SettingCode.MAX_CONCURRENT_STREAMS]
        if SettingCode.HEADER_TABLE_SIZE in changed:
            self._encoder.header_table_size = min(changed[SettingCode.HEADER_TABLE_SIZE], 4096)
        self._queue_reply(settings_ack())
        self._seen_settings = True
        self._ready = self._pending is None
        events.append(SettingsReceived(changed))
        events.extend(WindowUpdated(stream.stream_id) for stream in grown)

    def _on_window_update(self, frame: WindowUpdateFrame, events: list[Event]) -> None:
        sid, increment = frame.stream_id, frame.increment
        if sid == 0:
            if increment == 0:
                raise _violation(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE of 0 on the connection")
            self._send_window += increment
            if self._send_window > MAX_WINDOW:
                raise _violation(ErrorCode.FLOW_CONTROL_ERROR, "connection window overflows 2^31-1")
            events.append(WindowUpdated(0))
            return
        stream = self._streams.get(sid)
        if stream is None or stream.state is _CLOSED:
            if self._is_idle(sid):
                raise _violation(ErrorCode.PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {sid}")
            return  # closed: allowed, ignored (§6.9)
        if increment == 0:
            raise _violation(ErrorCode.PROTOCOL_ERROR, f"WINDOW_UPDATE of 0 on stream {sid}", sid)
        stream.send_window += increment
        if stream.send_window > MAX_WINDOW:
            raise _violation(ErrorCode.FLOW_CONTROL_ERROR, f"window of stream {sid} overflows 2^31-1", sid)
        if stream.tunnel and not stream.quiet and stream.next_state(StreamInput.SEND_DATA) is not None:
            events.append(WindowUpdated(sid))

    def _on_rst_stream(self, frame: RstStreamFrame, events: list[Event]) -> None:
        self._count_unproductive()
        stream = self._streams.get(frame.stream_id)
        if stream is None or stream.state is _CLOSED:
            if self._is_idle(frame.stream_id):
                raise _violation(ErrorCode.PROTOCOL_ERROR, f"RST_STREAM on idle stream {frame.stream_id}")
            return
        quiet = stream.quiet
        self._close(stream, reset=True, by_us=False)
        if not quiet:
            events.append(StreamReset(frame.stream_id, frame.error_code, remote=True))

    def _on_goaway(self, frame: GoAwayFrame, events: list[Event]) -> None:
        self._goaway_received = True
        events.append(ConnectionTerminated(frame.error_code, frame.last_stream_id, frame.debug, remote=True))
        for sid, stream in list(self._streams.items()):
            if sid > frame.last_stream_id and self._is_local(sid) and stream.state is not _CLOSED:
                quiet = stream.quiet  # never processed by the peer: safe to retry elsewhere
                self._close(stream, reset=True, by_us=False)
                if not quiet:
                    events.append(StreamReset(sid, ErrorCode.REFUSED_STREAM, remote=True))

    # --- errors and bookkeeping ---------------------------------------------------------------

    def _stream_error(self, err: ProtocolViolation, events: list[Event]) -> None:
        sid = err.stream_id
        stream = self._streams.get(sid)
        quiet = stream is not None and stream.quiet
        self._queue_reply(rst_stream(sid, err.error_code))
        if stream is not None and stream.state is not _CLOSED:
            self._close(stream, reset=True, by_us=True)
        else:
            self._remember_closed(sid, ignore=True)
        if not quiet:
            events.append(StreamReset(sid, err.error_code, remote=False))

    def _connection_error(self, err: ProtocolViolation, events: list[Event]) -> None:
        self._terminated = True
        self._ready = False
        debug = str(err).encode("utf-8", "replace")[:_MAX_DEBUG]
        self._out.append(goaway(self._last_peer_stream, err.error_code, debug))
        events.append(ConnectionTerminated(err.error_code, self._last_peer_stream, debug, remote=False))

    def _end_remote(self, stream: Stream, events: list[Event]) -> None:
        """The peer's END_STREAM (not progress for the flood guard: HEADERS can carry it)."""
        self._advance(stream, StreamInput.RECV_END_STREAM)
        if not stream.quiet:
            events.append(StreamEnded(stream.stream_id))

    def _advance(self, stream: Stream, event: StreamInput) -> None:
        nxt = stream.next_state(event)
        assert nxt is not None, (stream, event)
        if nxt is _CLOSED:
            self._close(stream, reset=False, by_us=False)
        else:
            stream.state = nxt

    def _close(self, stream: Stream, *, reset: bool, by_us: bool) -> None:
        """Close a stream; a reset one gives its unacknowledged bytes back to the connection at once."""
        if stream.state is not _CLOSED and stream.state is not StreamState.IDLE:
            if self._is_local(stream.stream_id):
                self._active_local -= 1
            else:
                self._active_remote -= 1
        stream.state = _CLOSED
        self._remember_closed(stream.stream_id, ignore=by_us)
        if reset and stream.unacked:
            self._credit_connection(stream.unacked)
            stream.unacked = 0
        if not stream.unacked:
            del self._streams[stream.stream_id]

    def _silence(self, stream: Stream) -> None:
        """A refused stream: its unread bytes are returned and the caller hears no more of it."""
        stream.quiet = True
        self._credit_connection(stream.unacked)
        stream.unacked = 0

    def _remember_closed(self, sid: int, *, ignore: bool) -> None:
        closed = self._recent_closed
        closed[sid] = ignore
        if len(closed) > _RECENT_CLOSED:
            del closed[next(iter(closed))]

    def _credit_connection(self, n: int) -> None:
        if n <= 0 or self._terminated:
            return
        self._conn_unreturned += n
        if self._conn_unreturned >= self._conn_threshold:
            self._out.append(window_update(0, self._conn_unreturned))
            self._recv_window += self._conn_unreturned
            self._conn_unreturned = 0

    def _count_unproductive(self) -> None:
        """Rapid-reset / control-flood guard: too many frames that move no data."""
        self._unproductive += 1
        if self._unproductive > self.settings.max_control_frames:
            raise _violation(ErrorCode.ENHANCE_YOUR_CALM, "too many control frames without data progress")

    def _queue_reply(self, frame: bytes) -> None:
        """Queue an automatic reply; a peer making us pile up replies it does not read is flooding."""
        self._out.append(frame)
        self._queued_control += 1
        if self._queued_control > self.settings.max_control_frames:
            raise _violation(ErrorCode.ENHANCE_YOUR_CALM, "too many control replies queued")

    def _is_local(self, sid: int) -> bool:
        return (sid & 1) == (1 if self.client else 0)

    def _is_idle(self, sid: int) -> bool:
        if self._is_local(sid):
            return sid >= self._next_stream_id
        return sid > self._last_peer_stream

    def _active(self, stream_id: int) -> Stream:
        """The stream for an API call, or the usage error that explains why not."""
        stream = self._streams.get(stream_id)
        if stream is not None and stream.state is not _CLOSED and not stream.quiet:
            return stream
        if self._is_idle(stream_id):
            raise UsageError(f"stream {stream_id} was never opened")
        raise StreamClosed(stream_id)

    def _check_open(self) -> None:
        if not self._initiated:
            raise UsageError("call initiate() first")
        if self._terminated:
            raise ConnectionClosed("the connection is closed")

