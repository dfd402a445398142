"""Stream states (RFC 9113 §5.1) as an explicit (state, input) → state table, and per-stream books.

Only the transitions HBONE can meet are listed; a missing entry is the
protocol saying no.  Whether that is the peer's fault (a stream error) or the
caller's (a usage error) depends on the input's direction and is decided by
the connection.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Final


class StreamState(Enum):
    """RFC 9113 §5.1 states (reserved states are unreachable: push is disabled)."""

    IDLE = "idle"
    OPEN = "open"
    HALF_CLOSED_LOCAL = "half-closed (local)"
    HALF_CLOSED_REMOTE = "half-closed (remote)"
    CLOSED = "closed"

    # Members are singletons: identity hashing in C keeps the per-DATA-frame table lookup cheap.
    __hash__ = object.__hash__


class StreamInput(Enum):
    """What happens to a stream: a frame we send or receive (END_STREAM is its own input)."""

    SEND_HEADERS = "send HEADERS"
    SEND_DATA = "send DATA"
    SEND_END_STREAM = "send END_STREAM"
    SEND_RST = "send RST_STREAM"
    RECV_HEADERS = "receive HEADERS"
    RECV_DATA = "receive DATA"
    RECV_END_STREAM = "receive END_STREAM"
    RECV_RST = "receive RST_STREAM"

    __hash__ = object.__hash__


_S = StreamState
_I = StreamInput

TRANSITIONS: Final[Mapping[tuple[StreamState, StreamInput], StreamState]] = {
    (_S.IDLE, _I.SEND_HEADERS): _S.OPEN,
    (_S.IDLE, _I.RECV_HEADERS): _S.OPEN,
    (_S.OPEN, _I.SEND_HEADERS): _S.OPEN,
    (_S.OPEN, _I.RECV_HEADERS): _S.OPEN,
    (_S.OPEN, _I.SEND_DATA): _S.OPEN,
    (_S.OPEN, _I.RECV_DATA): _S.OPEN,
    (_S.OPEN, _I.SEND_END_STREAM): _S.HALF_CLOSED_LOCAL,
    (_S.OPEN, _I.RECV_END_STREAM): _S.HALF_CLOSED_REMOTE,
    (_S.HALF_CLOSED_LOCAL, _I.RECV_HEADERS): _S.HALF_CLOSED_LOCAL,
    (_S.HALF_CLOSED_LOCAL, _I.RECV_DATA): _S.HALF_CLOSED_LOCAL,
    (_S.HALF_CLOSED_LOCAL, _I.RECV_END_STREAM): _S.CLOSED,
    (_S.HALF_CLOSED_REMOTE, _I.SEND_HEADERS): _S.HALF_CLOSED_REMOTE,
    (_S.HALF_CLOSED_REMOTE, _I.SEND_DATA): _S.HALF_CLOSED_REMOTE,
    (_S.HALF_CLOSED_REMOTE, _I.SEND_END_STREAM): _S.CLOSED,
    **{(state, reset): _S.CLOSED
       for state in (_S.OPEN, _S.HALF_CLOSED_LOCAL, _S.HALF_CLOSED_REMOTE)
       for reset in (_I.SEND_RST, _I.RECV_RST)},
}

ACTIVE: Final = frozenset({_S.OPEN, _S.HALF_CLOSED_LOCAL, _S.HALF_CLOSED_REMOTE})


class Stream:
    """One tunnel's state and books: windows both ways and the credit the caller owes us.

    ``unacked``: bytes delivered in DataReceived and not yet acknowledged;
    ``unreturned``: acknowledged bytes whose stream credit is not yet sent back.
    ``quiet``: the stream was refused; the caller hears nothing more about it.
    """

    __slots__ = ("bad_request", "headers_received", "headers_sent", "quiet", "recv_window", "send_window",
                 "state", "stream_id", "tunnel", "unacked", "unreturned")

    def __init__(self, stream_id: int, send_window: int, recv_window: int) -> None:
        self.stream_id = stream_id
        self.state = StreamState.IDLE
        self.send_window = send_window
        self.recv_window = recv_window
        self.unacked = 0
        self.unreturned = 0
        self.headers_sent = False
        self.headers_received = False
        self.tunnel = False
        self.quiet = False
        self.bad_request = False

    def next_state(self, event: StreamInput) -> StreamState | None:
        """Where ``event`` leads from here, or None when the protocol forbids it."""
        return TRANSITIONS.get((self.state, event))

    @property
    def receiving(self) -> bool:
        """The peer may still send DATA."""
        return self.state is StreamState.OPEN or self.state is StreamState.HALF_CLOSED_LOCAL

    def __repr__(self) -> str:
        return (f"Stream({self.stream_id}, {self.state.value}, send={self.send_window}, "
                f"recv={self.recv_window}, unacked={self.unacked})")
