"""HTTP/1.1 messages at the waypoint: parsing limits, framing, hop-by-hop rules and header
operations (tables, no sockets)."""

from __future__ import annotations

import pytest

from zeromesh.routing import HeaderOps
from zeromesh.waypoint import http1
from zeromesh.waypoint.engine import apply_ops, looks_http1
from zeromesh.waypoint.http1 import MessageError, Parser


def test_pipelined_requests_in_pieces() -> None:
    p = Parser()
    data = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
    got = []
    for i in range(0, len(data), 7):
        got += p.feed(data[i:i + 7])
    assert [(m.method, m.target, m.body) for m in got] == [("GET", "/a", b""), ("POST", "/b", b"abc")]
    assert got[0].get("host") == "x"


def test_chunked_body_is_collected() -> None:
    m = Parser().feed(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    assert m[0].body == b"abcde" and m[0].chunked


@pytest.mark.parametrize(("raw", "status"), [
    (b"GET /\x01 HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nX: " + b"a" * (http1.MAX_HEADER_BYTES + 1) + b"\r\n\r\n", 431),
    (b"GET /" + b"a" * (http1.MAX_HEADER_BYTES + 1) + b" HTTP/1.1\r\n\r\n", 414),
    (b"NOT HTTP AT ALL\r\n\r\n", 400),
])
def test_malformed_requests_map_to_statuses(raw: bytes, status: int) -> None:
    with pytest.raises(MessageError) as e:
        Parser().feed(raw)
    assert e.value.status == status


def test_upgrade_keeps_the_bytes_after_the_head() -> None:
    p = Parser()
    msgs = p.feed(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x00")
    assert msgs and msgs[0].upgrade and p.upgraded == b"\x81\x00"


def test_head_response_ends_at_its_head_and_the_next_response_parses() -> None:
    p = Parser(response=True)
    p.expect_head_response(True)
    got = p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n")
    assert [m.status for m in got] == [200] and got[0].body == b""
    p.expect_head_response(False)
    got = p.feed(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert [m.status for m in got] == [204]


def test_response_framed_by_close_completes_at_eof() -> None:
    p = Parser(response=True)
    assert p.feed(b"HTTP/1.1 200 OK\r\n\r\nhello") == []
    last = p.finish()
    assert last is not None and last.body == b"hello" and not last.keep_alive
    truncated = Parser(response=True)
    truncated.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    assert truncated.finish() is None


def test_hop_by_hop_and_connection_named_headers_are_dropped() -> None:
    msg = Parser().feed(b"GET / HTTP/1.1\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\n"
                        b"Keep-Alive: 5\r\nTE: trailers\r\nX-Keep: 2\r\nContent-Length: 0\r\n\r\n")[0]
    out = http1.end_to_end(msg.headers, http1.connection_tokens(msg))
    assert out == [("x-keep", "2")]


def test_serialize_response_frames_the_body() -> None:
    data = http1.serialize_response(200, [("a", "b")], b"xyz", keep_alive=False)
    assert data == b"HTTP/1.1 200 OK\r\na: b\r\ncontent-length: 3\r\nconnection: close\r\n\r\nxyz"
    assert http1.serialize_response(204, [], b"") == b"HTTP/1.1 204 No Content\r\n\r\n"
    assert http1.serialize_response(200, [], b"xyz", head=True).endswith(b"content-length: 3\r\n\r\n")


@pytest.mark.parametrize(("ops", "before", "after"), [
    (HeaderOps(set=(("x", "1"),)), [("x", "0"), ("x", "9"), ("y", "2")], [("y", "2"), ("x", "1")]),
    (HeaderOps(add=(("x", "1"),)), [("x", "0")], [("x", "0"), ("x", "1")]),
    (HeaderOps(remove=("x",)), [("x", "0"), ("y", "2"), ("x", "1")], [("y", "2")]),
    (HeaderOps(), [("x", "0")], [("x", "0")]),
])
def test_header_operations_on_multi_valued_headers(ops: HeaderOps, before: list[tuple[str, str]],
                                                   after: list[tuple[str, str]]) -> None:
    assert apply_ops(ops, before) == after


@pytest.mark.parametrize(("first", "http"), [
    (b"GET / HTTP/1.1\r\n", True), (b"PATCH /x", True), (b"M-SEARCH * HTTP/1.1", True),
    (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", True),    # method-shaped: the h2 check comes first
    (b"\x16\x03\x01\x02\x00", False), (b"SSH-2.0-OpenSSH", False), (b"get / HTTP/1.1", False),
    (b"", False),
])
def test_protocol_detection(first: bytes, http: bool) -> None:
    assert looks_http1(first) is http


@pytest.mark.parametrize(("xff", "hops", "client"), [
    (None, 1, "10.0.0.9"),
    ("203.0.113.7", 0, "10.0.0.9"),                       # no trusted hops: XFF is ignored
    ("203.0.113.7", 1, "203.0.113.7"),
    ("192.0.2.10, 198.51.100.1", 1, "198.51.100.1"),      # Envoy's documented example
    ("192.0.2.10, 198.51.100.1", 2, "192.0.2.10"),
    ("192.0.2.10", 2, "10.0.0.9"),                        # shorter than the trusted hops
    ("not-an-ip", 1, "10.0.0.9"),
])
def test_client_address_from_x_forwarded_for(xff: str | None, hops: int, client: str) -> None:
    from zeromesh.waypoint.engine import client_address
    assert client_address("10.0.0.9", xff, hops) == client
