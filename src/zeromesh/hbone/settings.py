"""Local HTTP/2 settings for HBONE, with Istio ztunnel's values as defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from zeromesh.hbone.errors import UsageError
from zeromesh.hbone.frames import (
    DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_WINDOW,
    MAX_FRAME_SIZE_LIMIT,
    MAX_WINDOW,
    SettingCode,
)

KiB: Final = 1024
MiB: Final = 1024 * KiB


@dataclass(frozen=True, slots=True)
class HboneSettings:
    """What we grant the peer, plus our credit and flood policy.

    ``credit_ratio``: return flow-control credit only once this fraction of a
    window (stream or connection) was acknowledged, so 64 MiB relayed cost a
    few dozen WINDOW_UPDATEs instead of one per read.  ``max_control_frames``:
    the flood bound (rapid reset, SETTINGS/PING floods) before ENHANCE_YOUR_CALM.
    """

    stream_window: int = 4 * MiB
    connection_window: int = 16 * MiB
    max_frame_size: int = 1 * MiB
    max_concurrent_streams: int = 100
    max_header_list_size: int = 16 * KiB
    header_table_size: int = 4096
    credit_ratio: float = 0.5
    max_control_frames: int = 1000

    def __post_init__(self) -> None:
        if not DEFAULT_WINDOW <= self.stream_window <= MAX_WINDOW:
            raise UsageError(f"stream_window must be in [{DEFAULT_WINDOW}, {MAX_WINDOW}]")
        if not DEFAULT_WINDOW <= self.connection_window <= MAX_WINDOW:
            raise UsageError(f"connection_window must be in [{DEFAULT_WINDOW}, {MAX_WINDOW}]")
        if not DEFAULT_MAX_FRAME_SIZE <= self.max_frame_size <= MAX_FRAME_SIZE_LIMIT:
            raise UsageError(f"max_frame_size must be in [{DEFAULT_MAX_FRAME_SIZE}, {MAX_FRAME_SIZE_LIMIT}]")
        if self.max_concurrent_streams < 0 or self.max_header_list_size < 1 or self.header_table_size < 0:
            raise UsageError("stream, header list and table limits must not be negative")
        if not 0.0 < self.credit_ratio <= 1.0:
            raise UsageError("credit_ratio must be in (0, 1]")
        if self.max_control_frames < 1:
            raise UsageError("max_control_frames must be positive")

    @classmethod
    def for_client(cls) -> HboneSettings:
        """ztunnel's client side: 100 streams, 16 KiB header lists."""
        return cls()

    @classmethod
    def for_server(cls) -> HboneSettings:
        """ztunnel's server side: 200 streams, 64 KiB header lists."""
        return cls(max_concurrent_streams=200, max_header_list_size=64 * KiB)

    @property
    def stream_credit_threshold(self) -> int:
        """Acknowledged bytes a stream accumulates before we send its WINDOW_UPDATE."""
        return max(1, int(self.stream_window * self.credit_ratio))

    @property
    def connection_credit_threshold(self) -> int:
        """Acknowledged bytes the connection accumulates before its WINDOW_UPDATE."""
        return max(1, int(self.connection_window * self.credit_ratio))

    def wire(self, client: bool) -> list[tuple[int, int]]:
        """The SETTINGS pairs to advertise (a server must not send ENABLE_PUSH=1; we send none)."""
        pairs: list[tuple[int, int]] = []
        if client:
            pairs.append((SettingCode.ENABLE_PUSH, 0))
        if self.header_table_size != 4096:
            pairs.append((SettingCode.HEADER_TABLE_SIZE, self.header_table_size))
        pairs += [
            (SettingCode.MAX_CONCURRENT_STREAMS, self.max_concurrent_streams),
            (SettingCode.INITIAL_WINDOW_SIZE, self.stream_window),
            (SettingCode.MAX_FRAME_SIZE, self.max_frame_size),
            (SettingCode.MAX_HEADER_LIST_SIZE, self.max_header_list_size),
        ]
        return pairs
