"""Copy bytes between two asyncio streams in both directions, with half-close and counting.

Backpressure comes from `drain()`: a reader waits while the other side's
write buffer is full, so a slow peer never makes the proxy buffer without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

CHUNK = 256 * 1024


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                count: Callable[[int], None]) -> None:
    try:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                break
            writer.write(data)
            count(len(data))
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.transport.abort()
        raise


async def relay(a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                b: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                on_a_to_b: Callable[[int], None], on_b_to_a: Callable[[int], None]) -> str:
    """Relay until both directions are done; returns "" or the error that ended it."""
    # A failing direction aborts its writer, which ends the other direction too.
    results = await asyncio.gather(_pump(a[0], b[1], on_a_to_b), _pump(b[0], a[1], on_b_to_a),
                                   return_exceptions=True)
    errors = [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
    try:
        return errors[0] if errors else ""
    finally:
        for w in (a[1], b[1]):
            w.close()
        for w in (a[1], b[1]):
            with contextlib.suppress(Exception):
                await w.wait_closed()
