"""Events: past-tense facts that :meth:`HboneConnection.receive` reports, in wire order."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from zeromesh.hbone.errors import ErrorCode

Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class SettingsReceived:
    """The peer's SETTINGS were applied (and ACKed); ``changed`` maps code → value."""

    changed: Mapping[int, int]


@dataclass(frozen=True, slots=True)
class TunnelRequested:
    """Server: a valid CONNECT arrived; answer with ``respond(stream_id, status)``."""

    stream_id: int
    authority: str
    headers: Headers = ()


@dataclass(frozen=True, slots=True)
class BadRequest:
    """Server: a well-formed request HBONE cannot serve (not CONNECT, bad authority); answer 400."""

    stream_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class TunnelOpened:
    """Client: the server answered 2xx; DATA may flow both ways."""

    stream_id: int
    status: int = 200
    headers: Headers = ()


@dataclass(frozen=True, slots=True)
class TunnelRefused:
    """Client: the server answered non-2xx; the last event for this stream (it is closed for us)."""

    stream_id: int
    status: int
    headers: Headers = ()


@dataclass(frozen=True, slots=True)
class DataReceived:
    """Tunnel bytes; acknowledge ``flow_length`` (it includes padding) once they are passed on."""

    stream_id: int
    data: memoryview
    flow_length: int


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """The peer half-closed the stream (END_STREAM): no more DATA will come."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamReset:
    """The stream died: reset by the peer (``remote``) or by us for a stream error it caused."""

    stream_id: int
    error_code: ErrorCode | int
    remote: bool


@dataclass(frozen=True, slots=True)
class WindowUpdated:
    """Send credit grew on a stream (0 = the connection): blocked senders may retry."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class PingReceived:
    """The peer pinged us; the ACK is already queued."""

    opaque: bytes


@dataclass(frozen=True, slots=True)
class PingAcked:
    """The peer answered one of our PINGs."""

    opaque: bytes


@dataclass(frozen=True, slots=True)
class ConnectionTerminated:
    """GOAWAY sent by us for a connection error (``remote=False``) or received from the peer."""

    error_code: ErrorCode | int
    last_stream_id: int
    debug: bytes = b""
    remote: bool = True


Event = (
    SettingsReceived | TunnelRequested | BadRequest | TunnelOpened | TunnelRefused | DataReceived
    | StreamEnded | StreamReset | WindowUpdated | PingReceived | PingAcked | ConnectionTerminated
)
