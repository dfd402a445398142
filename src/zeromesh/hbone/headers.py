"""Header rules of RFC 9113 §8.2 to §8.5 for the only request HBONE serves: CONNECT.

Two kinds of wrong request, told apart on purpose:

- *malformed* (breaks HTTP/2 itself: uppercase or connection-specific names,
  pseudo-headers out of place, CONNECT with ``:path``, no ``:authority``) →
  :class:`ProtocolViolation` PROTOCOL_ERROR for the stream (§8.1.1);
- *well-formed but not ours* (a GET, an authority that is not ``host:port``) →
  a reason string; the server answers it with a 400 of its choosing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from zeromesh.hbone.errors import ErrorCode, ProtocolViolation, UsageError

Headers = tuple[tuple[str, str], ...]
RawFields = Iterable[tuple[bytes, bytes]]

# §8.2.1: names must avoid controls, SP, uppercase, DEL, non-ASCII and ':'; values NUL/CR/LF and
# leading/trailing whitespace.
_BAD_NAME: Final = re.compile(rb"[\x00-\x20A-Z\x7f-\xff:]")
_BAD_VALUE: Final = re.compile(rb"[\x00\r\n]|\A[ \t]|[ \t]\Z")
CONNECTION_SPECIFIC: Final = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"})
_REQUEST_PSEUDO: Final = frozenset({b":method", b":scheme", b":authority", b":path"})
_RESPONSE_PSEUDO: Final = frozenset({b":status"})
_NO_PSEUDO: Final[frozenset[bytes]] = frozenset()
_AUTHORITY_JUNK: Final = re.compile(r"[\s/?#@\\\"<>{}|^`]")


@dataclass(frozen=True, slots=True)
class Request:
    """A well-formed request's method, authority and regular headers."""

    method: str
    authority: str | None
    headers: Headers


@dataclass(frozen=True, slots=True)
class Response:
    """A well-formed response's status and regular headers."""

    status: int
    headers: Headers


def _malformed(stream_id: int, reason: str) -> ProtocolViolation:
    return ProtocolViolation(ErrorCode.PROTOCOL_ERROR, f"malformed header block: {reason}", stream_id)


def _split(fields: RawFields, allowed: frozenset[bytes],
           stream_id: int) -> tuple[dict[bytes, bytes], Headers]:
    """Pseudo-headers (checked against ``allowed``) and validated regular headers, as str pairs."""
    pseudo: dict[bytes, bytes] = {}
    regular: list[tuple[str, str]] = []
    for name, value in fields:
        if _BAD_VALUE.search(value):
            raise _malformed(stream_id, f"invalid value for {name!r}")
        if name[:1] == b":":
            if regular:
                raise _malformed(stream_id, f"pseudo-header {name!r} after regular headers")
            if name not in allowed:
                raise _malformed(stream_id, f"unexpected pseudo-header {name!r}")
            if name in pseudo:
                raise _malformed(stream_id, f"duplicate pseudo-header {name!r}")
            pseudo[name] = value
            continue
        if not name or _BAD_NAME.search(name):
            raise _malformed(stream_id, f"invalid header name {name!r}")
        if name in CONNECTION_SPECIFIC or (name == b"te" and value != b"trailers"):
            raise _malformed(stream_id, f"connection-specific header {name!r}")
        regular.append((name.decode("ascii"), value.decode("utf-8", "surrogateescape")))
    return pseudo, tuple(regular)


def parse_request(fields: RawFields, stream_id: int) -> Request:
    """Check a request header block (§8.3.1, CONNECT rules of §8.5)."""
    pseudo, regular = _split(fields, _REQUEST_PSEUDO, stream_id)
    method = pseudo.get(b":method")
    if not method:
        raise _malformed(stream_id, "missing :method")
    authority = pseudo.get(b":authority")
    if method == b"CONNECT":
        if b":scheme" in pseudo or b":path" in pseudo:
            raise _malformed(stream_id, "CONNECT must not carry :scheme or :path")
        if not authority:
            raise _malformed(stream_id, "CONNECT without :authority")
    elif not pseudo.get(b":scheme") or not pseudo.get(b":path"):
        raise _malformed(stream_id, "request without :scheme or :path")
    return Request(method.decode("utf-8", "surrogateescape"),
                   None if authority is None else authority.decode("utf-8", "surrogateescape"), regular)


def parse_response(fields: RawFields, stream_id: int) -> Response:
    """Check a response header block: exactly one three-digit :status (§8.3.2)."""
    pseudo, regular = _split(fields, _RESPONSE_PSEUDO, stream_id)
    status = pseudo.get(b":status", b"")
    if len(status) != 3 or not status.isdigit():
        raise _malformed(stream_id, f"bad or missing :status {status!r}")
    return Response(int(status), regular)


def parse_trailers(fields: RawFields, stream_id: int) -> Headers:
    """Check a trailer block: regular headers only (§8.1)."""
    return _split(fields, _NO_PSEUDO, stream_id)[1]


def authority_problem(authority: str) -> str | None:
    """Why ``authority`` is not a ``host:port`` HBONE can dial, or None when it is."""
    host, sep, port = authority.rpartition(":")
    if not sep or not host:
        return f"authority {authority!r} is not host:port"
    if not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        return f"authority {authority!r} has a bad port"
    if _AUTHORITY_JUNK.search(host):
        return f"authority {authority!r} has characters a host cannot have"
    if host.startswith("["):
        if not host.endswith("]") or len(host) < 3:
            return f"authority {authority!r} has an unterminated IPv6 literal"
    elif ":" in host:
        return f"authority {authority!r}: an IPv6 address must be in brackets"
    return None


def encode_fields(pseudo: Sequence[tuple[bytes, bytes]],
                  headers: Sequence[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """Pseudo-headers then the caller's headers as bytes, refusing what peers would reject."""
    fields = list(pseudo)
    for name, value in headers:
        raw_name = name.encode("utf-8", "surrogateescape")
        raw_value = value.encode("utf-8", "surrogateescape")
        if not raw_name or _BAD_NAME.search(raw_name):
            raise UsageError(f"invalid header name {name!r} (lowercase, no ':' or spaces)")
        if raw_name in CONNECTION_SPECIFIC or raw_name == b"te":
            raise UsageError(f"connection-specific header {name!r} is not allowed in HTTP/2")
        if _BAD_VALUE.search(raw_value):
            raise UsageError(f"invalid value for header {name!r}")
        fields.append((raw_name, raw_value))
    return fields
