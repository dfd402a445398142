"""HBONE errors: one root, split by cause, each carrying its wire meaning.

:class:`ProtocolViolation` means the *peer* broke HTTP/2; it knows the h2
error code and whether it is a stream or a connection error.  The connection
never lets it escape :meth:`HboneConnection.receive`; it turns it into
RST_STREAM or GOAWAY plus an event.  :class:`UsageError` and its children mean
*we* (the caller) asked for something the protocol forbids right now.
"""

from __future__ import annotations

from enum import IntEnum

from zeromesh.errors import ZeromeshError


class ErrorCode(IntEnum):
    """HTTP/2 error codes (RFC 9113 §7), as sent in RST_STREAM and GOAWAY."""

    NO_ERROR = 0x0
    PROTOCOL_ERROR = 0x1
    INTERNAL_ERROR = 0x2
    FLOW_CONTROL_ERROR = 0x3
    SETTINGS_TIMEOUT = 0x4
    STREAM_CLOSED = 0x5
    FRAME_SIZE_ERROR = 0x6
    REFUSED_STREAM = 0x7
    CANCEL = 0x8
    COMPRESSION_ERROR = 0x9
    CONNECT_ERROR = 0xA
    ENHANCE_YOUR_CALM = 0xB
    INADEQUATE_SECURITY = 0xC
    HTTP_1_1_REQUIRED = 0xD


_CODES = {int(c): c for c in ErrorCode}


def error_code(value: int) -> ErrorCode | int:
    """The named code for ``value``, or the bare int: unknown codes are legal on the wire (§7)."""
    return _CODES.get(value, value)


class HboneError(ZeromeshError):
    """Root of every error the HBONE protocol core raises."""


class ProtocolViolation(HboneError):
    """The peer broke an HTTP/2 rule; ``stream_id`` 0 means a connection error (GOAWAY)."""

    def __init__(self, code: ErrorCode, message: str, stream_id: int = 0) -> None:
        super().__init__(message)
        self.error_code = code
        self.stream_id = stream_id

    @property
    def is_stream_error(self) -> bool:
        """True when only one stream dies (RST_STREAM), not the whole connection."""
        return self.stream_id != 0


class UsageError(HboneError):
    """The caller misused the API (wrong state, bad argument); nothing was queued."""


class StreamClosed(UsageError):
    """The stream is closed or reset (often a race with a peer's RST_STREAM); drop it."""

    def __init__(self, stream_id: int, message: str = "") -> None:
        super().__init__(message or f"stream {stream_id} is closed")
        self.stream_id = stream_id


class ConnectionClosed(UsageError):
    """The connection sent or received GOAWAY, or failed: open a new one."""


class TooManyStreams(UsageError):
    """The peer's SETTINGS_MAX_CONCURRENT_STREAMS (or the stream-id space) is used up: pool another."""
