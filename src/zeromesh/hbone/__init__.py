"""HBONE protocol core: HTTP/2 CONNECT tunnels, sans-IO.

Role: carry each meshed TCP connection as one HTTP/2 CONNECT stream inside a
mutual-TLS connection to port 15008, wire-compatible with Istio's ztunnel.
This package only turns bytes into events and calls into bytes; the asyncio
adapters that own sockets and TLS live elsewhere.  It implements the part of
HTTP/2 HBONE needs (RFC 9113 with CONNECT, §8.5), with a lean frame codec so
the DATA path copies payloads at most once; HPACK comes from ``hpack``.

Vocabulary:
- *connection*: one HTTP/2 connection (:class:`HboneConnection`), client or
  server by a role flag; many streams share it.
- *stream*: one HTTP/2 stream, identified by its id; states per RFC 9113 §5.1
  (:class:`StreamState`).
- *tunnel*: a stream whose CONNECT was answered 2xx; DATA then flows both ways
  and each side half-closes with END_STREAM.
- *credit*: HTTP/2 flow-control window.  The peer may send only as much as we
  granted; we grant more only after the caller *acknowledges* that received
  bytes were passed on (backpressure), and in bulk.

Modules: :mod:`.frames` (codec), :mod:`.headers` (RFC 9113 §8 header rules),
:mod:`.streams` (state table), :mod:`.core` + :mod:`.connection` (the
connection), :mod:`.events`, :mod:`.errors`, :mod:`.settings`, and
:mod:`.testing` (``FakeLink``: a client and a server joined in memory).
"""

from zeromesh.hbone.connection import HboneConnection
from zeromesh.hbone.errors import (
    ConnectionClosed,
    ErrorCode,
    HboneError,
    ProtocolViolation,
    StreamClosed,
    TooManyStreams,
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
from zeromesh.hbone.frames import FrameParser, FrameType, SettingCode
from zeromesh.hbone.settings import HboneSettings
from zeromesh.hbone.streams import StreamState

__all__ = [
    "BadRequest",
    "ConnectionClosed",
    "ConnectionTerminated",
    "DataReceived",
    "ErrorCode",
    "Event",
    "FrameParser",
    "FrameType",
    "HboneConnection",
    "HboneError",
    "HboneSettings",
    "PingAcked",
    "PingReceived",
    "ProtocolViolation",
    "SettingCode",
    "SettingsReceived",
    "StreamClosed",
    "StreamEnded",
    "StreamReset",
    "StreamState",
    "TooManyStreams",
    "TunnelOpened",
    "TunnelRefused",
    "TunnelRequested",
    "UsageError",
    "WindowUpdated",
]
