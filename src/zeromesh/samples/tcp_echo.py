"""tcp-echo: echo every byte received on a TCP connection back to the sender.

Shipped sample for the zeromesh local cluster. It runs as ``nobody`` under the
system interpreter, possibly without the project's virtualenv, so it must stay
a single file that imports only the Python standard library.

Environment:

* ``PORTS`` -- comma-separated listen ports; else ``PORT``; else 9000.
* ``BIND`` -- listen address (default ``0.0.0.0``; IPv6 if it contains ``:``).
* ``ECHO_PREFIX`` -- optional text (UTF-8). When set, every chunk the server
  reads (up to 64 KiB, boundaries decided by the network) is sent back as
  ``prefix + chunk``. This mirrors istio's tcp-echo sample started with a
  "hello" prefix: a small line sent in one write comes back as
  ``"hello <line>"``, but a large stream gets the prefix once per read, not
  once per line.

Reads are 64 KiB and each write is followed by ``drain()`` so a slow reader
applies backpressure instead of growing the server's buffers. When the client
half-closes, the remaining echo is flushed and the connection closed.
Exits with status 0 on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys

NAME = "tcp-echo"
DEFAULT_PORT = 9000
READ_CHUNK = 64 * 1024


def parse_ports(default: int) -> list[int]:
    """Read listen ports from PORTS, then PORT, then ``default``."""
    raw = os.environ.get("PORTS", "").strip() or os.environ.get("PORT", "").strip()
    ports: list[int] = []
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        port = int(item)  # ValueError is reported by main()
        if not 0 < port < 65536:
            raise ValueError(f"port out of range: {port}")
        if port not in ports:
            ports.append(port)
    return ports or [default]


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, prefix: bytes) -> None:
    """Copy reader to writer (optionally prefixing each chunk) until EOF."""
    try:
        while True:
            data = await reader.read(READ_CHUNK)
            if not data:
                break
            writer.write(prefix + data if prefix else data)
            await writer.drain()
    except OSError:  # includes ConnectionError: the peer went away
        pass
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def serve(bind: str, ports: list[int], prefix: bytes) -> int:
    """Listen on every port until SIGTERM/SIGINT; return the exit status."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        connections[task] = writer
        try:
            await echo(reader, writer, prefix)
        finally:
            connections.pop(task, None)

    servers: list[asyncio.Server] = []
    for port in ports:
        try:
            servers.append(
                await asyncio.start_server(
                    on_connect, bind, port, reuse_address=True, backlog=1024, limit=READ_CHUNK
                )
            )
        except OSError as exc:
            print(f"{NAME}: cannot listen on {bind}:{port}: {exc}", file=sys.stderr, flush=True)
            for server in servers:
                server.close()
            return 1
    print(f"{NAME} listening on {bind}:{','.join(map(str, ports))}", flush=True)

    await stop.wait()
    for server in servers:
        server.close()
    # Abort open connections: their echo loops then end on their own.
    for writer in list(connections.values()):
        writer.transport.abort()
    pending = list(connections)
    if pending:
        _, still_running = await asyncio.wait(pending, timeout=1.0)
        for task in still_running:
            task.cancel()
        await asyncio.gather(*still_running, return_exceptions=True)
    for server in servers:
        await server.wait_closed()
    return 0


def main() -> int:
    """Entry point when run as a script."""
    bind = os.environ.get("BIND", "").strip() or "0.0.0.0"
    try:
        ports = parse_ports(DEFAULT_PORT)
    except ValueError as exc:
        print(f"{NAME}: invalid PORTS/PORT: {exc}", file=sys.stderr, flush=True)
        return 2
    prefix = os.environ.get("ECHO_PREFIX", "").encode("utf-8")
    status = asyncio.run(serve(bind, ports, prefix))
    sys.stdout.flush()
    return status


if __name__ == "__main__":
    sys.exit(main())
