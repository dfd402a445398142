"""httpbin: a small httpbin.org-like HTTP/1.1 server.

Shipped sample for the zeromesh local cluster, standing in for the
``docker.io/kong/httpbin`` / ``mccutchen/go-httpbin`` images used by the Istio
samples. It runs as ``nobody`` under the system interpreter, possibly without
the project's virtualenv, so it must stay a single file that imports only the
Python standard library.

Environment:

* ``PORTS`` -- comma-separated listen ports; else ``PORT``; else 8080.
* ``BIND`` -- listen address (default ``0.0.0.0``; IPv6 if it contains ``:``).
* ``POD_NAME`` -- added as ``"pod"`` to every JSON body so callers can see
  which pod answered.

Endpoints (JSON bodies unless noted):

* ``/`` -- index of endpoints.
* ``/status/N`` -- status N, empty body. ``N`` may be ``"500,503"`` (random
  pick) or weighted ``"200:0.9,500:0.1"``, like httpbin. Codes must be
  200..599 (a 1xx can't be a final response); anything else gives 400.
* ``/delay/S`` -- sleep S seconds (float, capped at 10), then like ``/get``.
* ``/headers``, ``/ip`` (``origin`` = TCP peer IP), ``/user-agent``.
* ``/get`` (GET/HEAD), ``/post``, ``/put``, ``/delete``, ``/patch`` -- other
  methods get 405, like httpbin.
* ``/anything`` and ``/anything/...`` -- any method; echoes method, args,
  headers, data (text), form and json (if the body parses).
* Anything else -- 404 JSON.

Endpoints other than /get, /post, /put, /delete and /patch accept every
method, so mesh authorization policies (not the app) decide what is denied.
Exits with status 0 on SIGTERM/SIGINT.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

NAME = "httpbin"
DEFAULT_PORT = 8080
READ_CHUNK = 64 * 1024
MAX_BODY = 16 * 1024 * 1024
MAX_DELAY = 10.0
IDLE_TIMEOUT = 300.0
POD_NAME = os.environ.get("POD_NAME", "")

# Method-specific endpoints, as in httpbin; everything else accepts any method.
METHOD_ENDPOINTS = {
    "/get": {"GET", "HEAD", "OPTIONS"},
    "/post": {"POST", "OPTIONS"},
    "/put": {"PUT", "OPTIONS"},
    "/delete": {"DELETE", "OPTIONS"},
    "/patch": {"PATCH", "OPTIONS"},
}
INDEX = {
    "service": NAME,
    "endpoints": [
        "/status/{codes}",
        "/delay/{seconds}",
        "/headers",
        "/ip",
        "/user-agent",
        "/get",
        "/post",
        "/put",
        "/delete",
        "/patch",
        "/anything",
    ],
}


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


def pick_status(spec: str) -> int | None:
    """Choose a code from ``"418"``, ``"500,503"`` or ``"200:0.9,500:0.1"``.

    Returns None when the spec is invalid, so the caller answers 400.
    """
    codes: list[int] = []
    weights: list[float] = []
    for item in spec.split(","):
        code_text, _, weight_text = item.strip().partition(":")
        try:
            code = int(code_text)
            weight = float(weight_text) if weight_text else 1.0
        except ValueError:
            return None
        if not 200 <= code <= 599 or not math.isfinite(weight) or weight < 0:
            return None
        codes.append(code)
        weights.append(weight)
    if not codes or sum(weights) <= 0:
        return None
    return random.choices(codes, weights=weights)[0]


class BadRequestError(Exception):
    """The request framing (length / chunking) is invalid."""


class HttpbinHandler(BaseHTTPRequestHandler):
    """Routes every method through ``_dispatch`` via ``__getattr__``."""

    protocol_version = "HTTP/1.1"
    server_version = "zeromesh-httpbin/1.0"
    sys_version = ""
    timeout = IDLE_TIMEOUT

    def __getattr__(self, name: str) -> Callable[[], None]:
        # BaseHTTPRequestHandler dispatches to do_<METHOD>; accept any method.
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    def version_string(self) -> str:
        """Server header without the Python version (and no trailing space)."""
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default per-request stderr access log."""

    # -- request body -----------------------------------------------------

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

    def _read_body(self) -> bytes:
        """Read the whole body; always consumed so keep-alive stays in sync."""
        parts: list[bytes] = []
        total = 0
        for chunk in self._iter_body():
            total += len(chunk)
            if total > MAX_BODY:
                raise BadRequestError(f"body larger than {MAX_BODY} bytes")
            parts.append(chunk)
        return b"".join(parts)

    # -- responses --------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str | None) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        if status not in (204, 304):
            self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        elif self.request_version == "HTTP/1.0":
            self.send_header("Connection", "keep-alive")
        self.end_headers()
        if body and self.command != "HEAD" and status not in (204, 304):
            self.wfile.write(body)

    def _send_json(self, status: int, obj: dict[str, Any]) -> None:
        obj = {**obj, "pod": POD_NAME}
        body = (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()
        self._send(status, body, "application/json")

    def _error(self, status: int, message: str) -> None:
        self._send_json(status, {"error": message, "status": status, "path": self.path})

    # -- request views ----------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        for key, value in self.headers.items():  # keeps the case as received
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        return headers

    def _args(self, query: str) -> dict[str, str | list[str]]:
        parsed = parse_qs(query, keep_blank_values=True)
        return {k: v[0] if len(v) == 1 else v for k, v in parsed.items()}

    def _origin(self) -> str:
        return str(self.client_address[0])

    def _url(self) -> str:
        if not self.path.startswith("/"):  # absolute-form request target
            return self.path
        return f"http://{self.headers.get('Host', '')}{self.path}"

    def _get_view(self, query: str) -> dict[str, Any]:
        return {
            "args": self._args(query),
            "headers": self._headers(),
            "origin": self._origin(),
            "url": self._url(),
        }

    def _anything_view(self, query: str, body: bytes) -> dict[str, Any]:
        data = body.decode("utf-8", errors="replace")
        content_type = self.headers.get("Content-Type", "")
        form: dict[str, str | list[str]] = {}
        if content_type.startswith("application/x-www-form-urlencoded"):
            form = self._args(data)
        try:
            parsed_json: Any = json.loads(data) if data else None
        except ValueError:
            parsed_json = None
        return {
            **self._get_view(query),
            "method": self.command,
            "data": data,
            "files": {},
            "form": form,
            "json": parsed_json,
        }

    # -- routing ----------------------------------------------------------

    def _dispatch(self) -> None:
        try:
            body = self._read_body()
        except BadRequestError as exc:
            self.close_connection = True
            self._error(400, str(exc))
            return
        target = urlsplit(self.path)
        path, query = target.path or "/", target.query

        allowed = METHOD_ENDPOINTS.get(path)
        if allowed is not None:
            if self.command not in allowed:
                self._error(405, f"method {self.command} not allowed on {path}")
            elif path == "/get":
                self._send_json(200, self._get_view(query))
            else:
                self._send_json(200, self._anything_view(query, body))
        elif path == "/":
            self._send_json(200, INDEX)
        elif path.startswith("/status/"):
            status = pick_status(path[len("/status/") :])
            if status is None:
                self._error(400, "invalid status code")
            else:
                self._send(status, b"", None)
        elif path.startswith("/delay/"):
            try:
                delay = float(path[len("/delay/") :])
            except ValueError:
                delay = math.nan
            if not math.isfinite(delay) or delay < 0:
                self._error(400, "invalid delay")
                return
            time.sleep(min(delay, MAX_DELAY))
            self._send_json(200, self._anything_view(query, body))
        elif path == "/headers":
            self._send_json(200, {"headers": self._headers()})
        elif path == "/ip":
            self._send_json(200, {"origin": self._origin()})
        elif path == "/user-agent":
            self._send_json(200, {"user-agent": self.headers.get("User-Agent", "")})
        elif path == "/anything" or path.startswith("/anything/"):
            self._send_json(200, self._anything_view(query, body))
        else:
            self._error(404, "not found")


class HttpbinServer(ThreadingHTTPServer):
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


class HttpbinServer6(HttpbinServer):
    """IPv6 variant, used when BIND contains a colon."""

    address_family = socket.AF_INET6


def main() -> int:
    """Listen on every configured port until SIGTERM/SIGINT; return exit status."""
    bind = os.environ.get("BIND", "").strip() or "0.0.0.0"
    try:
        ports = parse_ports(DEFAULT_PORT)
    except ValueError as exc:
        print(f"{NAME}: invalid PORTS/PORT: {exc}", file=sys.stderr, flush=True)
        return 2
    # Block the stop signals before any thread starts so every thread inherits
    # the mask and the main thread can collect them race-free with sigwait().
    # SIG_DFL first: an inherited SIG_IGN would make the kernel drop them.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    for sig in stop_signals:
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    server_cls = HttpbinServer6 if ":" in bind else HttpbinServer
    servers: list[ThreadingHTTPServer] = []
    for port in ports:
        try:
            servers.append(server_cls((bind, port), HttpbinHandler))
        except OSError as exc:
            print(f"{NAME}: cannot listen on {bind}:{port}: {exc}", file=sys.stderr, flush=True)
            for server in servers:
                server.server_close()
            return 1
    for server in servers:
        threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"{NAME}-{server.server_address[1]}",
            daemon=True,
        ).start()
    print(f"{NAME} listening on {bind}:{','.join(map(str, ports))}", flush=True)
    signal.sigwait(stop_signals)
    for server in servers:
        server.shutdown()
        server.server_close()
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
