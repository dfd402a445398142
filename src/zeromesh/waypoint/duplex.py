"""One byte-stream interface over the two transports a waypoint talks through: HBONE tunnel
streams (mesh traffic in and out) and plain TCP (the bench's nginx position, and endpoints
outside the mesh). The HTTP engine only ever sees a :class:`Duplex`."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

from zeromesh.ztunnel.hbone_io import TunnelStream

READ_SIZE = 256 * 1024


class Duplex(Protocol):
    async def recv(self) -> bytes:
        """Next bytes; b"" once the peer half-closed."""
        ...

    async def send(self, data: bytes) -> None: ...

    def send_eof(self) -> None: ...

    def abort(self) -> None:
        """Reset: the peer sees an error, not a clean end."""
        ...

    def close(self) -> None:
        """A clean end in both directions."""
        ...

    @property
    def peer(self) -> str: ...


class StreamDuplex:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else ""

    async def recv(self) -> bytes:
        return await self.reader.read(READ_SIZE)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        if self.writer.transport.get_write_buffer_size() > 64 * 1024:
            await self.writer.drain()

    def send_eof(self) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            if self.writer.can_write_eof():
                self.writer.write_eof()

    def abort(self) -> None:
        self.writer.transport.abort()

    def close(self) -> None:
        self.writer.close()


class TunnelDuplex:
    """Credit goes back to the HBONE peer as soon as the engine took the bytes (it buffers
    whole messages, bounded by the parser's limits)."""

    def __init__(self, stream: TunnelStream, peer: str = "") -> None:
        self.stream = stream
        self.peer = peer
        self._done = False

    async def recv(self) -> bytes:
        data, flow = await self.stream.read()
        if flow:
            self.stream.ack(flow)
        return bytes(data)

    async def send(self, data: bytes) -> None:
        await self.stream.write(data)

    def send_eof(self) -> None:
        self.stream.write_eof()

    def abort(self) -> None:
        if not self._done:
            self._done = True
            self.stream.abort()

    def close(self) -> None:
        if not self._done:
            self._done = True
            self.stream.write_eof()
            self.stream.done()


async def splice(a: Duplex, b: Duplex, first_a: bytes = b"", first_b: bytes = b"") -> tuple[int, int]:
    """Relay both ways until both sides ended (TCP passthrough, WebSocket after an upgrade).
    Returns bytes (a→b, b→a)."""
    counts = [0, 0]

    async def pump(src: Duplex, dst: Duplex, first: bytes, i: int) -> None:
        try:
            if first:
                counts[i] += len(first)
                await dst.send(first)
            while data := await src.recv():
                counts[i] += len(data)
                await dst.send(data)
            dst.send_eof()
        except (OSError, ConnectionError):
            a.abort()
            b.abort()

    await asyncio.gather(pump(a, b, first_a, 0), pump(b, a, first_b, 1))
    return counts[0], counts[1]
