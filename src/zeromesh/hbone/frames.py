"""HTTP/2 frame codec (RFC 9113 §4, §6), lean enough for the HBONE byte path.

Parsing checks only what the frame layout says (lengths, padding, which frame
types need a stream id); what a frame *means* for a stream is the
connection's business.  Layout errors raise :class:`ProtocolViolation`
(always connection errors: RFC 9113 §5.4.1 lets us widen a stream error).

DATA payloads are copied at most once.  When a frame's whole payload lies
inside one immutable ``bytes`` chunk passed to :meth:`FrameParser.feed` (also
when its 9-byte header came in an earlier chunk), the payload is a zero-copy
``memoryview`` slice of that chunk.  When the payload spans chunks, it is
gathered into a bytearray of exactly its length (the one copy) and handed out
as a read-only view of it.  Measured (CPython 3.11): slicing a 1 MiB payload
as ``bytes`` costs ~20 µs (a memcpy), as a ``memoryview`` ~0.06 µs; for 100-byte
payloads both cost ~40-60 ns.  So DATA is always a read-only ``memoryview``:
``transport.write`` takes it, callers that keep data call ``bytes()``.  A view
pins the chunk it came from until dropped.

Serializers return ``bytes``; :func:`data_frame_header` returns only the 9
header bytes so a sender can queue header and payload as two buffers.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from zeromesh.hbone.errors import ErrorCode, ProtocolViolation, error_code

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "DEFAULT_WINDOW",
    "FRAME_HEADER_SIZE",
    "MAX_FRAME_SIZE_LIMIT",
    "MAX_STREAM_ID",
    "MAX_WINDOW",
    "PREFACE",
    "ContinuationFrame",
    "DataFrame",
    "ErrorCode",
    "Flag",
    "Frame",
    "FrameParser",
    "FrameType",
    "GoAwayFrame",
    "HeadersFrame",
    "PingFrame",
    "PriorityFrame",
    "PushPromiseFrame",
    "RstStreamFrame",
    "SettingCode",
    "SettingsFrame",
    "UnknownFrame",
    "WindowUpdateFrame",
    "continuation_frame",
    "data_frame",
    "data_frame_header",
    "frame",
    "goaway",
    "headers_frames",
    "ping",
    "rst_stream",
    "settings_ack",
    "settings_frame",
    "window_update",
]

PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FRAME_HEADER_SIZE: Final = 9
DEFAULT_WINDOW: Final = 65_535
DEFAULT_MAX_FRAME_SIZE: Final = 16_384
MAX_FRAME_SIZE_LIMIT: Final = 2**24 - 1
MAX_WINDOW: Final = 2**31 - 1
MAX_STREAM_ID: Final = 2**31 - 1


class FrameType(IntEnum):
    """Frame types of RFC 9113 §6."""

    DATA = 0x0
    HEADERS = 0x1
    PRIORITY = 0x2
    RST_STREAM = 0x3
    SETTINGS = 0x4
    PUSH_PROMISE = 0x5
    PING = 0x6
    GOAWAY = 0x7
    WINDOW_UPDATE = 0x8
    CONTINUATION = 0x9


class Flag:
    """Frame flags; plain ints so the hot path does no enum arithmetic."""

    END_STREAM: Final = 0x1
    ACK: Final = 0x1
    END_HEADERS: Final = 0x4
    PADDED: Final = 0x8
    PRIORITY: Final = 0x20


class SettingCode(IntEnum):
    """SETTINGS parameters (RFC 9113 §6.5.2, RFC 8441)."""

    HEADER_TABLE_SIZE = 0x1
    ENABLE_PUSH = 0x2
    MAX_CONCURRENT_STREAMS = 0x3
    INITIAL_WINDOW_SIZE = 0x4
    MAX_FRAME_SIZE = 0x5
    MAX_HEADER_LIST_SIZE = 0x6
    ENABLE_CONNECT_PROTOCOL = 0x8


# --- frame values ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DataFrame:
    """DATA; ``flow_length`` is the whole payload incl. padding, which flow control counts."""

    stream_id: int
    data: memoryview
    end_stream: bool
    flow_length: int


@dataclass(frozen=True, slots=True)
class HeadersFrame:
    """HEADERS; ``depends_on`` is the priority dependency (0 when absent), kept only for §5.3.1."""

    stream_id: int
    block: bytes
    end_stream: bool
    end_headers: bool
    depends_on: int = 0


@dataclass(frozen=True, slots=True)
class PriorityFrame:
    """PRIORITY: deprecated by RFC 9113 and ignored, but its layout is still checked."""

    stream_id: int
    depends_on: int


@dataclass(frozen=True, slots=True)
class RstStreamFrame:
    """RST_STREAM: the peer abandons one stream."""

    stream_id: int
    error_code: ErrorCode | int


@dataclass(frozen=True, slots=True)
class SettingsFrame:
    """SETTINGS, as (code, value) pairs in wire order (the last occurrence wins)."""

    ack: bool
    settings: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True, slots=True)
class PushPromiseFrame:
    """PUSH_PROMISE: parsed only so it can be refused (we always disable push)."""

    stream_id: int
    promised_stream_id: int
    block: bytes
    end_headers: bool


@dataclass(frozen=True, slots=True)
class PingFrame:
    """PING with its 8 opaque bytes."""

    ack: bool
    opaque: bytes


@dataclass(frozen=True, slots=True)
class GoAwayFrame:
    """GOAWAY: the peer stops accepting streams above ``last_stream_id``."""

    last_stream_id: int
    error_code: ErrorCode | int
    debug: bytes


@dataclass(frozen=True, slots=True)
class WindowUpdateFrame:
    """WINDOW_UPDATE; stream 0 is the connection window."""

    stream_id: int
    increment: int


@dataclass(frozen=True, slots=True)
class ContinuationFrame:
    """CONTINUATION of a header block."""

    stream_id: int
    block: bytes
    end_headers: bool


@dataclass(frozen=True, slots=True)
class UnknownFrame:
    """A frame type we do not know: RFC 9113 §4.1 says ignore it (payload dropped)."""

    type: int
    flags: int
    stream_id: int


Frame = (
    DataFrame | HeadersFrame | PriorityFrame | RstStreamFrame | SettingsFrame | PushPromiseFrame
    | PingFrame | GoAwayFrame | WindowUpdateFrame | ContinuationFrame | UnknownFrame
)

# --- parsing --------------------------------------------------------------------------------------

# 9-byte header as (length << 8 | type, flags, R + stream id): one struct call, no 24-bit juggling.
_HEADER: Final = struct.Struct(">IBI")
_U32: Final = struct.Struct(">I")
_SETTING: Final = struct.Struct(">HI")
_GOAWAY: Final = struct.Struct(">II")
_STREAM_MASK: Final = 0x7FFFFFFF

_NEEDS_STREAM: Final = frozenset({FrameType.DATA, FrameType.HEADERS, FrameType.PRIORITY,
                                  FrameType.RST_STREAM, FrameType.PUSH_PROMISE, FrameType.CONTINUATION})
_NEEDS_ZERO: Final = frozenset({FrameType.SETTINGS, FrameType.PING, FrameType.GOAWAY})


def _violation(code: ErrorCode, message: str) -> ProtocolViolation:
    return ProtocolViolation(code, message)


def _unpad(payload: memoryview, flags: int, ftype: str, fixed: int = 0) -> tuple[int, int]:
    """Start and end of the content after the pad-length byte and ``fixed`` bytes (§6.1, §6.2)."""
    length = len(payload)
    if not flags & Flag.PADDED:
        if length < fixed:
            raise _violation(ErrorCode.FRAME_SIZE_ERROR, f"{ftype} frame too short")
        return 0, length
    if length < 1 + fixed:
        raise _violation(ErrorCode.FRAME_SIZE_ERROR, f"padded {ftype} frame too short")
    pad = payload[0]
    if pad > length - 1 - fixed:
        raise _violation(ErrorCode.PROTOCOL_ERROR, f"{ftype} padding ({pad}) exceeds the payload")
    return 1, length - pad


class FrameParser:
    """Bytes in, frames out; keeps only a partial header or one partial frame between feeds.

    ``max_frame_size`` is what *we* advertised: larger frames are a FRAME_SIZE_ERROR
    before their payload is even read.  After a ProtocolViolation the parser is
    unusable (the connection is going away anyway).
    """

    __slots__ = ("_body", "_current", "_filled", "_head", "_preface_left", "max_frame_size")

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE, *, expect_preface: bool = False) -> None:
        self.max_frame_size = max_frame_size
        self._preface_left = len(PREFACE) if expect_preface else 0
        self._head = bytearray()  # partial 9-byte header
        self._current: tuple[int, int, int, int] | None = None  # type, flags, stream, length
        self._body: bytearray | None = None
        self._filled = 0

    def feed(self, data: bytes | bytearray | memoryview) -> Iterator[Frame]:
        """Take ``data`` and iterate over the frames it completes; iterate to the end."""
        return self._frames(data)

    def _frames(self, data: bytes | bytearray | memoryview) -> Iterator[Frame]:
        if isinstance(data, bytes):
            view, shared = memoryview(data), True
        else:
            view = data if isinstance(data, memoryview) else memoryview(data)
            # Only immutable memory may be handed out without copying.
            shared = view.readonly and isinstance(view.obj, bytes)
        end = len(view)
        pos = 0
        if self._preface_left:
            pos = self._check_preface(view)
        while True:
            current = self._current
            if current is None:
                head = self._head
                if head:
                    take = min(FRAME_HEADER_SIZE - len(head), end - pos)
                    head += view[pos:pos + take]
                    pos += take
                    if len(head) < FRAME_HEADER_SIZE:
                        return
                    word, flags, sid = _HEADER.unpack(head)
                    head.clear()
                elif end - pos < FRAME_HEADER_SIZE:
                    if end > pos:
                        head += view[pos:end]
                    return
                else:
                    word, flags, sid = _HEADER.unpack_from(view, pos)
                    pos += FRAME_HEADER_SIZE
                length = word >> 8
                if length > self.max_frame_size:
                    raise _violation(ErrorCode.FRAME_SIZE_ERROR,
                                     f"frame of {length} bytes exceeds our maximum {self.max_frame_size}")
                ftype, sid = word & 0xFF, sid & _STREAM_MASK
            else:
                ftype, flags, sid, length = current
            body = self._body
            if body is None:
                if end - pos >= length:  # the whole payload is here: a view, no copy
                    payload = view[pos:pos + length] if shared else memoryview(bytes(view[pos:pos + length]))
                    pos += length
                    self._current = None
                    yield _build(ftype, flags, sid, payload)
                    continue
                self._current = (ftype, flags, sid, length)
                if end == pos:  # header only so far: the payload may still come in one piece
                    return
                body = self._body = bytearray(length)
                self._filled = 0
            take = min(length - self._filled, end - pos)
            body[self._filled:self._filled + take] = view[pos:pos + take]
            self._filled += take
            pos += take
            if self._filled < length:
                return
            self._current = self._body = None
            yield _build(ftype, flags, sid, memoryview(body).toreadonly())

    def _check_preface(self, view: memoryview) -> int:
        """Match the client preface (§3.4) incrementally so garbage fails on its first byte."""
        done = len(PREFACE) - self._preface_left
        take = min(self._preface_left, len(view))
        if view[:take] != PREFACE[done:done + take]:
            raise _violation(ErrorCode.PROTOCOL_ERROR, "invalid HTTP/2 client preface")
        self._preface_left -= take
        return take


def _build(ftype: int, flags: int, sid: int, payload: memoryview) -> Frame:
    """Turn one complete frame into its value, checking the layout rules of §6."""
    if ftype == 0:  # DATA, first: the hot path
        if sid == 0:
            raise _violation(ErrorCode.PROTOCOL_ERROR, "DATA frame on stream 0")
        if flags & Flag.PADDED:
            start, stop = _unpad(payload, flags, "DATA")
            return DataFrame(sid, payload[start:stop], bool(flags & Flag.END_STREAM), len(payload))
        return DataFrame(sid, payload, bool(flags & Flag.END_STREAM), len(payload))
    if ftype > FrameType.CONTINUATION:
        return UnknownFrame(ftype, flags, sid)
    kind = FrameType(ftype)
    if sid == 0 and kind in _NEEDS_STREAM:
        raise _violation(ErrorCode.PROTOCOL_ERROR, f"{kind.name} frame on stream 0")
    if sid != 0 and kind in _NEEDS_ZERO:
        raise _violation(ErrorCode.PROTOCOL_ERROR, f"{kind.name} frame on stream {sid}")
    length = len(payload)
    match kind:
        case FrameType.HEADERS:
            fixed = 5 if flags & Flag.PRIORITY else 0
            start, stop = _unpad(payload, flags, "HEADERS", fixed)
            depends_on = _U32.unpack_from(payload, start)[0] & _STREAM_MASK if fixed else 0
            return HeadersFrame(sid, bytes(payload[start + fixed:stop]), bool(flags & Flag.END_STREAM),
                                bool(flags & Flag.END_HEADERS), depends_on)
        case FrameType.CONTINUATION:
            return ContinuationFrame(sid, bytes(payload), bool(flags & Flag.END_HEADERS))
        case FrameType.PRIORITY:
            if length != 5:
                raise _violation(ErrorCode.FRAME_SIZE_ERROR, "PRIORITY frame must be 5 bytes")
            return PriorityFrame(sid, _U32.unpack_from(payload)[0] & _STREAM_MASK)
        case FrameType.RST_STREAM:
            if length != 4:
                raise _violation(ErrorCode.FRAME_SIZE_ERROR, "RST_STREAM frame must be 4 bytes")
            return RstStreamFrame(sid, error_code(_U32.unpack_from(payload)[0]))
        case FrameType.SETTINGS:
            if flags & Flag.ACK:
                if length:
                    raise _violation(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
                return SettingsFrame(True)
            if length % 6:
                raise _violation(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS length not a multiple of 6")
            return SettingsFrame(False, tuple(_SETTING.iter_unpack(payload)))
        case FrameType.PUSH_PROMISE:
            start, stop = _unpad(payload, flags, "PUSH_PROMISE", 4)
            promised = _U32.unpack_from(payload, start)[0] & _STREAM_MASK
            return PushPromiseFrame(sid, promised, bytes(payload[start + 4:stop]),
                                    bool(flags & Flag.END_HEADERS))
        case FrameType.PING:
            if length != 8:
                raise _violation(ErrorCode.FRAME_SIZE_ERROR, "PING frame must be 8 bytes")
            return PingFrame(bool(flags & Flag.ACK), bytes(payload))
        case FrameType.GOAWAY:
            if length < 8:
                raise _violation(ErrorCode.FRAME_SIZE_ERROR, "GOAWAY frame shorter than 8 bytes")
            last, code = _GOAWAY.unpack_from(payload)
            return GoAwayFrame(last & _STREAM_MASK, error_code(code), bytes(payload[8:]))
        case FrameType.WINDOW_UPDATE:
            if length != 4:
                raise _violation(ErrorCode.FRAME_SIZE_ERROR, "WINDOW_UPDATE frame must be 4 bytes")
            return WindowUpdateFrame(sid, _U32.unpack_from(payload)[0] & _STREAM_MASK)
        case FrameType.DATA:  # pragma: no cover - handled above
            raise AssertionError("unreachable")


# --- serializing ----------------------------------------------------------------------------------


def frame(ftype: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """Any frame, verbatim: the building block for the others and for malformed test input."""
    return _HEADER.pack(len(payload) << 8 | ftype, flags, stream_id) + payload


def data_frame_header(stream_id: int, length: int, end_stream: bool = False) -> bytes:
    """Only the 9 header bytes of a DATA frame: the payload travels as its own buffer."""
    return _HEADER.pack(length << 8, Flag.END_STREAM if end_stream else 0, stream_id)


def data_frame(stream_id: int, data: bytes, end_stream: bool = False, pad_length: int | None = None) -> bytes:
    """A whole DATA frame, optionally padded (padding is for tests; we never pad)."""
    flags = Flag.END_STREAM if end_stream else 0
    if pad_length is None:
        return frame(FrameType.DATA, flags, stream_id, data)
    return frame(FrameType.DATA, flags | Flag.PADDED, stream_id,
                 bytes([pad_length]) + data + b"\0" * pad_length)


def headers_frames(stream_id: int, block: bytes, end_stream: bool, max_frame: int) -> list[bytes]:
    """HEADERS then as many CONTINUATIONs as ``max_frame`` (the peer's limit) requires."""
    first = block[:max_frame]
    rest = [block[i:i + max_frame] for i in range(max_frame, len(block), max_frame)]
    flags = Flag.END_STREAM if end_stream else 0
    if not rest:
        return [frame(FrameType.HEADERS, flags | Flag.END_HEADERS, stream_id, first)]
    frames = [frame(FrameType.HEADERS, flags, stream_id, first)]
    for piece in rest[:-1]:
        frames.append(frame(FrameType.CONTINUATION, 0, stream_id, piece))
    frames.append(frame(FrameType.CONTINUATION, Flag.END_HEADERS, stream_id, rest[-1]))
    return frames


def continuation_frame(stream_id: int, block: bytes, end_headers: bool) -> bytes:
    """One CONTINUATION frame (tests build out-of-order ones with it)."""
    return frame(FrameType.CONTINUATION, Flag.END_HEADERS if end_headers else 0, stream_id, block)


def settings_frame(settings: Iterable[tuple[int, int]]) -> bytes:
    """A SETTINGS frame with the given (code, value) pairs, in order."""
    return frame(FrameType.SETTINGS, 0, 0, b"".join(_SETTING.pack(c, v) for c, v in settings))


def settings_ack() -> bytes:
    """The empty SETTINGS frame with ACK set."""
    return frame(FrameType.SETTINGS, Flag.ACK, 0)


def window_update(stream_id: int, increment: int) -> bytes:
    """WINDOW_UPDATE granting ``increment`` more bytes on a stream (or 0: the connection)."""
    return frame(FrameType.WINDOW_UPDATE, 0, stream_id, _U32.pack(increment))


def rst_stream(stream_id: int, code: int) -> bytes:
    """RST_STREAM with an error code."""
    return frame(FrameType.RST_STREAM, 0, stream_id, _U32.pack(code))


def ping(opaque: bytes, ack: bool = False) -> bytes:
    """PING (or its ACK) carrying exactly 8 opaque bytes."""
    return frame(FrameType.PING, Flag.ACK if ack else 0, 0, opaque)


def goaway(last_stream_id: int, code: int, debug: bytes = b"") -> bytes:
    """GOAWAY: the last stream we processed, why, and optional debug bytes."""
    return frame(FrameType.GOAWAY, 0, 0, _GOAWAY.pack(last_stream_id, code) + debug)
