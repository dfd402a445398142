"""A bare Python reverse proxy for orientation in the L7 benchmark (not part of zeromesh).

Runs under the project's virtualenv (it needs httptools). It is the least a Python proxy in the
engine's position does per request, with the same route and policy as the engine and nginx:
asyncio streams, httptools parsing both ways, one upstream keep-alive connection per downstream
connection, method GET only (else 403), path prefix ``/bench`` only (else 404), the request header
``x-bench-route: l7`` set, hop-by-hop headers dropped, no access log or metrics. It shows what the
event loop and the parser alone cost on this machine, so the engine's own overhead can be told
apart. ``--uvloop`` runs it on uvloop. Stops on SIGTERM/SIGINT or after ``--lifetime`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import sys
from typing import Any

import httptools

HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"upgrade", b"te",
       b"trailer", b"proxy-connection"}
DENIED = (b"HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: 19\r\n\r\n"
          b"RBAC: access denied")
NO_ROUTE = (b"HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\ncontent-length: 16\r\n\r\n"
            b"route not found\n")
ROUTE_HEADER = (b"x-bench-route", b"l7")


class Collect:
    """httptools callbacks: completed messages as (url, headers, body)."""

    def __init__(self) -> None:
        self.parser: Any = None
        self.done: list[tuple[bytes, bytes, list[tuple[bytes, bytes]], bytes]] = []
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []

    def on_message_begin(self) -> None:
        self.url, self.headers, self.body = b"", [], []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method() if isinstance(self.parser, httptools.HttpRequestParser) else b""
        self.done.append((method, self.url, self.headers, b"".join(self.body)))


def head(first: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    lines = [first] + [k + b": " + v for k, v in headers if k not in HOP]
    lines.append(b"content-length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, backend: int) -> None:
    req = Collect()
    rp = req.parser = httptools.HttpRequestParser(req)
    upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter, Any, Collect] | None = None
    try:
        while data := await reader.read(65536):
            rp.feed_data(data)
            while req.done:
                method, url, headers, body = req.done.pop(0)
                if method != b"GET":
                    writer.write(DENIED)
                    continue
                if not url.startswith(b"/bench"):
                    writer.write(NO_ROUTE)
                    continue
                if upstream is None:
                    ur, uw = await asyncio.open_connection("127.0.0.1", backend)
                    uw.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    resp = Collect()
                    resp.parser = httptools.HttpResponseParser(resp)
                    upstream = (ur, uw, resp.parser, resp)
                ur, uw, pp, resp = upstream
                out = [(k, v) for k, v in headers if k != ROUTE_HEADER[0]]
                out.append(ROUTE_HEADER)
                uw.write(head(b"GET " + url + b" HTTP/1.1", out, body))
                while not resp.done:
                    chunk = await ur.read(65536)
                    if not chunk:
                        raise ConnectionError("backend closed")
                    pp.feed_data(chunk)
                _, _, rheaders, rbody = resp.done.pop(0)
                status = pp.get_status_code()
                writer.write(head(b"HTTP/1.1 %d OK" % status, rheaders, rbody))
    except (OSError, ConnectionError, httptools.HttpParserError):
        pass
    finally:
        writer.close()
        if upstream is not None:
            upstream[1].close()


async def serve(a: argparse.Namespace) -> None:
    server = await asyncio.start_server(lambda r, w: proxy(r, w, a.backend_port), "127.0.0.1", a.port,
                                        backlog=1024)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.call_later(a.lifetime, stop.set)
    print(json.dumps({"ready": a.port, "loop": type(loop).__module__}), flush=True)
    await stop.wait()
    server.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--backend-port", type=int, required=True)
    ap.add_argument("--uvloop", action="store_true")
    ap.add_argument("--lifetime", type=float, default=1800.0)
    a = ap.parse_args(argv)
    if a.uvloop:
        import uvloop  # not a project dependency: the benchmark puts it on the path when asked
        uvloop.install()
    asyncio.run(serve(a))
    return 0


if __name__ == "__main__":
    sys.exit(main())
