"""HTTP/1.1 messages for the waypoint: parsing with httptools (llhttp), serialising, and the
hop-by-hop rules a proxy must apply (RFC 9110 §7.6.1).

Bodies are collected whole, up to a limit: a route may need to retry or mirror a request,
and the sizes an L7 mesh proxy sees are small. Requests over the limit get 413.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from dataclasses import dataclass, field

import httptools

MAX_HEADER_BYTES = 60 * 1024          # Envoy's default max_request_headers_kb is 60
MAX_BODY_BYTES = 16 * 1024 * 1024
Headers = list[tuple[str, str]]       # lower-case names, in order; repeated names kept

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te",
                        "trailer", "upgrade", "proxy-authenticate", "proxy-authorization"})

REASONS = {100: "Continue", 101: "Switching Protocols", 200: "OK", 201: "Created", 204: "No Content",
           301: "Moved Permanently", 302: "Found", 303: "See Other", 304: "Not Modified",
           307: "Temporary Redirect", 308: "Permanent Redirect", 400: "Bad Request",
           401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
           408: "Request Timeout", 411: "Length Required", 413: "Payload Too Large",
           429: "Too Many Requests", 431: "Request Header Fields Too Large",
           500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
           504: "Gateway Timeout", 505: "HTTP Version Not Supported"}


class MessageError(Exception):
    """The peer sent something that is not valid HTTP/1.1; ``status`` is what to answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass
class Message:
    """One request or response. ``target`` is the request-target; ``status`` a response's code."""
    headers: Headers
    body: bytes = b""
    method: str = ""
    target: str = ""
    status: int = 0
    version: str = "1.1"
    keep_alive: bool = True
    upgrade: bool = False
    chunked: bool = False
    trailers: Headers = field(default_factory=list)     # HTTP/2 (gRPC status travels here)
    protocol: str = "http"                             # "http" (HTTP/1.x) | "http2" | "grpc"

    def get(self, name: str, default: str | None = None) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name]


@dataclass
class _Collector:
    """httptools callbacks; complete messages are queued in ``ready``."""
    response: bool
    ready: collections.deque[Message] = field(default_factory=collections.deque)
    head_only: bool = False                     # a response to HEAD: no body whatever it says
    _url: bytearray = field(default_factory=bytearray)
    _headers: Headers = field(default_factory=list)
    _body: list[bytes] = field(default_factory=list)
    _size: int = 0
    _body_size: int = 0
    parser: httptools.HttpRequestParser | httptools.HttpResponseParser | None = None
    headers_done: bool = False

    def on_message_begin(self) -> None:
        self._url = bytearray()
        self._headers = []
        self._body = []
        self._size = self._body_size = 0
        self.headers_done = False

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._size += len(url)
        if self._size > MAX_HEADER_BYTES:
            raise MessageError(414 if not self.response else 502, "request-target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._size += len(name) + len(value) + 4
        if self._size > MAX_HEADER_BYTES:
            raise MessageError(431 if not self.response else 502, "headers too large")
        try:
            self._headers.append((name.decode("ascii").lower(), value.decode("latin-1")))
        except UnicodeDecodeError as e:
            raise MessageError(400, "non-ASCII header name") from e

    def on_headers_complete(self) -> None:
        self.headers_done = True
        if self.head_only:
            self.on_message_complete()

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > MAX_BODY_BYTES:
            raise MessageError(413 if not self.response else 502, "body too large")
        self._body.append(body)

    def on_message_complete(self) -> None:
        p = self.parser
        assert p is not None
        msg = Message(headers=self._headers, body=b"".join(self._body),
                      version=p.get_http_version(), keep_alive=p.should_keep_alive(),
                      upgrade=p.should_upgrade())
        if self.response:
            assert isinstance(p, httptools.HttpResponseParser)
            msg.status = p.get_status_code()
        else:
            assert isinstance(p, httptools.HttpRequestParser)
            msg.method = p.get_method().decode("ascii")
            msg.target = self._url.decode("latin-1")
        msg.chunked = any(k == "transfer-encoding" and "chunked" in v.lower() for k, v in msg.headers)
        self.ready.append(msg)


class Parser:
    """Feed bytes, take complete messages. ``upgraded`` holds the bytes after an Upgrade
    request's head (they belong to the new protocol)."""

    def __init__(self, response: bool = False) -> None:
        self.response = response
        self._c = _Collector(response)
        self._new()
        self.upgraded: bytes | None = None

    def _new(self) -> None:
        cls = httptools.HttpResponseParser if self.response else httptools.HttpRequestParser
        self._p = cls(self._c)
        self._c.parser = self._p

    def expect_head_response(self, yes: bool) -> None:
        self._c.head_only = yes

    def feed(self, data: bytes) -> list[Message]:
        try:
            self._p.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            offset = int(e.args[0]) if e.args else len(data)
            self.upgraded = bytes(data[offset:])
        except MessageError:
            raise
        except httptools.HttpParserError as e:
            if isinstance(e.__context__, MessageError):      # raised by our own callbacks
                raise e.__context__ from None
            raise MessageError(400 if not self.response else 502, f"malformed HTTP/1.1: {e}") from e
        if self._c.head_only and self._c.ready:
            self._new()      # a HEAD response ends at its head: start afresh for the next one
        out = list(self._c.ready)
        self._c.ready.clear()
        return out

    def finish(self) -> Message | None:
        """The peer closed: a response framed by the connection's end is complete now."""
        c = self._c
        if not (self.response and c.headers_done):
            return None
        if any(k in ("content-length", "transfer-encoding") for k, _ in c._headers):
            return None       # it promised a length it did not deliver: truncated
        return Message(headers=c._headers, body=b"".join(c._body), status=self._p.get_status_code(),
                       keep_alive=False)

    @property
    def mid_message(self) -> bool:
        return self._c.headers_done or bool(self._c._headers) or bool(self._c._url)


def connection_tokens(msg: Message) -> set[str]:
    out: set[str] = set()
    for v in msg.get_all("connection"):
        out.update(t.strip().lower() for t in v.split(",") if t.strip())
    return out


def end_to_end(headers: Iterable[tuple[str, str]], extra_hop: set[str] | None = None,
               keep_upgrade: bool = False) -> Headers:
    """Drop hop-by-hop headers (and any the Connection header names) and Content-Length (the
    proxy frames the body itself)."""
    drop = HOP_BY_HOP | (extra_hop or set()) | {"content-length"}
    if keep_upgrade:
        drop = drop - {"upgrade"}
    return [(k, v) for k, v in headers if k not in drop]


def serialize_request(method: str, target: str, headers: Headers, body: bytes, *,
                      upgrade: str | None = None) -> bytes:
    lines = [f"{method} {target} HTTP/1.1"]
    lines.extend(f"{k}: {v}" for k, v in headers)
    if upgrade is not None:
        lines.append("connection: upgrade")
    elif body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"content-length: {len(body)}")
    head = "\r\n".join(lines) + "\r\n\r\n"
    return head.encode("latin-1") + body


def serialize_response(status: int, headers: Headers, body: bytes, *, keep_alive: bool = True,
                       head: bool = False, upgrade: bool = False) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}"]
    lines.extend(f"{k}: {v}" for k, v in headers)
    if upgrade:
        lines.append("connection: upgrade")
    else:
        if status >= 200 and status not in (204, 304):
            lines.append(f"content-length: {len(body)}")
        if not keep_alive:
            lines.append("connection: close")
    out = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return out if head or upgrade else out + body


def local_reply(status: int, body: str, *, keep_alive: bool = True,
                headers: Headers | None = None) -> bytes:
    """An answer the proxy makes itself (denials, faults, errors): text, no internals."""
    data = body.encode()
    hs: Headers = [("content-type", "text/plain"), *(headers or [])]
    return serialize_response(status, hs, data, keep_alive=keep_alive)
