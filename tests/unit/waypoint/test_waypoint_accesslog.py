"""The access log is written in batches, never lost, and warnings go out at once."""

from __future__ import annotations

import asyncio
import io
import logging

from zeromesh.waypoint.telemetry import BatchedLogHandler


def _record(msg: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("zeromesh.access", level, __file__, 1, msg, None, None)


def test_lines_wait_for_the_timer_and_come_out_together() -> None:
    async def main() -> None:
        out = io.StringIO()
        h = BatchedLogHandler(out, logging.Formatter("%(message)s"), interval=0.05)
        for i in range(3):
            h.emit(_record(f'{{"n": {i}}}'))
        assert out.getvalue() == ""
        await asyncio.sleep(0.1)
        assert out.getvalue() == '{"n": 0}\n{"n": 1}\n{"n": 2}\n'
    asyncio.run(main())


def test_warnings_flush_at_once_and_without_a_loop_lines_are_written_immediately() -> None:
    out = io.StringIO()
    h = BatchedLogHandler(out, logging.Formatter("%(message)s"))
    h.emit(_record("a"))                      # no running loop: written now
    assert out.getvalue() == "a\n"

    async def main() -> None:
        h.emit(_record("b"))
        h.emit(_record("c", logging.WARNING))
        assert out.getvalue() == "a\nb\nc\n"
    asyncio.run(main())


def test_close_flushes_what_is_pending() -> None:
    async def main() -> None:
        out = io.StringIO()
        h = BatchedLogHandler(out, logging.Formatter("%(message)s"), interval=60)
        h.emit(_record("x"))
        h.close()
        assert out.getvalue() == "x\n"
    asyncio.run(main())
