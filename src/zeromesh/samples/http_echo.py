"""http-echo: answer every HTTP request with a JSON description of it.

Shipped sample for the zeromesh local cluster. It runs as ``nobody`` under the
system interpreter, possibly without the project's virtualenv, so it must stay
a single file that imports only the Python standard library.

Environment:

* ``PORTS`` -- comma-separated listen ports; else ``PORT``; else 8080.
* ``BIND`` -- listen address (default ``0.0.0.0``; IPv6 if it contains ``:``).
* ``POD_NAME``, ``POD_NAMESPACE``, ``NODE_NAME``, ``POD_IP``, ``SERVICE_ACCOUNT``
  and ``ZEROMESH_SERVICES`` (comma-separated) are echoed back so callers can
  tell which pod answered.

* ``FAIL_EVERY=N`` (with ``FAIL_STATUS``, default 500) -- the 1st, N+1st, 2N+1st…
  request answers that status instead: a flaky backend for retry demonstrations.

Every request (any method, any path) gets ``200`` with a one-line JSON body
followed by a newline. The request body is read and discarded; only its length
is reported. Exits with status 0 on SIGTERM/SIGINT.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import socketserver
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

NAME = "http-echo"
DEFAULT_PORT = 8080
READ_CHUNK = 64 * 1024
# Idle keep-alive connections are dropped after this many seconds so that a
# client that never closes cannot pin a thread forever.
IDLE_TIMEOUT = 300.0
FAIL_EVERY = int(os.environ.get("FAIL_EVERY") or 0)
FAIL_STATUS = int(os.environ.get("FAIL_STATUS") or 500)
_COUNTER = itertools.count()
_COUNT_LOCK = threading.Lock()


def parse_ports(default: int) -> list[int]:
    """Read listen ports from PORTS, then PORT, then ``default``."""
    raw = os.environ.get("PORTS", "").strip() or os.environ.get("PORT", "").strip()
    ports: list[int] = []
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        port = int(item)  # ValueError is reported by serve()
        if not 0 < port < 65536:
            raise ValueError(f"port out of range: {port}")
        if port not in ports:
            ports.append(port)
    return ports or [default]


def _pod_info() -> dict[str, Any]:
    """Pod identity from the environment, read once at startup."""
    services = [s.strip() for s in os.environ.get("ZEROMESH_SERVICES", "").split(",") if s.strip()]
    return {
        "pod": os.environ.get("POD_NAME", ""),
        "namespace": os.environ.get("POD_NAMESPACE", ""),
        "node": os.environ.get("NODE_NAME", ""),
        "pod_ip": os.environ.get("POD_IP", ""),
        "service_account": os.environ.get("SERVICE_ACCOUNT", ""),
        "service": services[0] if services else "",
        "services": services,
    }


POD_INFO = _pod_info()


class BadRequestError(Exception):
    """The request framing (length / chunking) is invalid."""


class EchoHandler(BaseHTTPRequestHandler):
    """Handles every method through ``__getattr__`` so nothing gets a 501."""

    protocol_version = "HTTP/1.1"
    server_version = "zeromesh-http-echo/1.0"
    sys_version = ""
    timeout = IDLE_TIMEOUT

    def __getattr__(self, name: str) -> Callable[[], None]:
        # BaseHTTPRequestHandler dispatches to do_<METHOD>; accept any method.
        if name.startswith("do_"):
            return self._echo
        raise AttributeError(name)

    def version_string(self) -> str:
        """Server header without the Python version (and no trailing space)."""
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default per-request stderr access log."""

    def _iter_body(self) -> Iterator[bytes]:
        """Yield the request body in chunks (Content-Length or chunked)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            yield from self._iter_chunked()
            return
        raw_length = self.headers.get("Content-Length")
        if raw_length is None:
            return
        try:
            length = int(raw_length)
        except ValueError:
            raise BadRequestError("bad Content-Length") from None
        if length < 0:
            raise BadRequestError("negative Content-Length")
        yield from self._read_exact(length)

    def _iter_chunked(self) -> Iterator[bytes]:
        while True:
            line = self.rfile.readline(READ_CHUNK + 1)
            if not line.endswith(b"\n"):
                raise BadRequestError("bad chunk header")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BadRequestError("bad chunk size") from None
            if size < 0:
                raise BadRequestError("bad chunk size")
            if size == 0:
                while True:  # optional trailers, up to the empty line
                    trailer = self.rfile.readline(READ_CHUNK + 1)
                    if trailer in (b"\r\n", b"\n", b""):
                        return
            yield from self._read_exact(size)
            self.rfile.readline(3)  # CRLF after the chunk data

    def _read_exact(self, size: int) -> Iterator[bytes]:
        remaining = size
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, READ_CHUNK))
            if not chunk:
                raise ConnectionResetError("client closed mid-body")
            remaining -= len(chunk)
            yield chunk

    def _echo(self) -> None:
        try:
            body_length = sum(len(chunk) for chunk in self._iter_body())
        except BadRequestError as exc:
            self.close_connection = True
            self.send_error(400, str(exc))
            return
        headers: dict[str, str] = {}
        for key, value in self.headers.items():  # keeps the case as received
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        peer = self.client_address
        remote_ip, remote_port = str(peer[0]), int(peer[1])
        host_part = f"[{remote_ip}]" if ":" in remote_ip else remote_ip
        remote_addr = f"{host_part}:{remote_port}"
        payload: dict[str, Any] = {
            "path": self.path,
            "host": self.headers.get("Host", ""),
            "method": self.command,
            "proto": self.request_version,
            "headers": headers,
            "body_length": body_length,
            "remote_addr": remote_addr,
            "remote_ip": remote_ip,
            "remote_port": remote_port,
            "local_port": self.connection.getsockname()[1],
            **POD_INFO,
        }
        status = 200
        if FAIL_EVERY > 0:
            with _COUNT_LOCK:
                n = next(_COUNTER)
            if n % FAIL_EVERY == 0:
                status = FAIL_STATUS
                payload["failed"] = True
        body = (json.dumps(payload) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        elif self.request_version == "HTTP/1.0":
            self.send_header("Connection", "keep-alive")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class EchoServer(ThreadingHTTPServer):
    """Threaded server: one daemon thread per connection, deep accept queue."""

    daemon_threads = True
    request_queue_size = 1024

    def server_bind(self) -> None:
        """Skip HTTPServer's getfqdn(): a DNS lookup before listening only delays start-up."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Ignore peers that vanish; print anything else once."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class EchoServer6(EchoServer):
    """IPv6 variant, used when BIND contains a colon."""

    address_family = socket.AF_INET6


def serve(name: str, handler: type[BaseHTTPRequestHandler], default_port: int) -> int:
    """Listen on every configured port until SIGTERM/SIGINT; return exit status."""
    bind = os.environ.get("BIND", "").strip() or "0.0.0.0"
    try:
        ports = parse_ports(default_port)
    except ValueError as exc:
        print(f"{name}: invalid PORTS/PORT: {exc}", file=sys.stderr, flush=True)
        return 2
    # Block the stop signals before any thread starts so every thread inherits
    # the mask and the main thread can collect them race-free with sigwait().
    # SIG_DFL first: an inherited SIG_IGN would make the kernel drop them.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    for sig in stop_signals:
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    server_cls = EchoServer6 if ":" in bind else EchoServer
    servers: list[ThreadingHTTPServer] = []
    for port in ports:
        try:
            servers.append(server_cls((bind, port), handler))
        except OSError as exc:
            print(f"{name}: cannot listen on {bind}:{port}: {exc}", file=sys.stderr, flush=True)
            for server in servers:
                server.server_close()
            return 1
    for server in servers:
        threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"{name}-{server.server_address[1]}",
            daemon=True,
        ).start()
    print(f"{name} listening on {bind}:{','.join(map(str, ports))}", flush=True)
    signal.sigwait(stop_signals)
    for server in servers:
        server.shutdown()
        server.server_close()
    sys.stdout.flush()
    return 0


def main() -> int:
    """Entry point when run as a script."""
    return serve(NAME, EchoHandler, DEFAULT_PORT)


if __name__ == "__main__":
    sys.exit(main())
