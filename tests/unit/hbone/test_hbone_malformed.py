"""Malformed input built on purpose: each fault ends in the right RST_STREAM or GOAWAY, never an exception."""

from __future__ import annotations

import pytest
from hpack import Encoder

from zeromesh.hbone import (
    BadRequest,
    ConnectionClosed,
    ConnectionTerminated,
    DataReceived,
    ErrorCode,
    Event,
    HboneConnection,
    HboneSettings,
    StreamReset,
    TunnelRequested,
)
from zeromesh.hbone.frames import (
    PREFACE,
    Flag,
    FrameParser,
    FrameType,
    GoAwayFrame,
    RstStreamFrame,
    SettingCode,
    continuation_frame,
    data_frame,
    data_frame_header,
    frame,
    goaway,
    headers_frames,
    ping,
    rst_stream,
    settings_ack,
    settings_frame,
    window_update,
)
from zeromesh.hbone.testing import FakeLink

MiB = 1 << 20
CONNECT = [(b":method", b"CONNECT"), (b":authority", b"10.0.0.7:8080")]
START = PREFACE + settings_frame([])


def server() -> HboneConnection:
    conn = HboneConnection(client=False)
    conn.initiate()
    conn.data_to_send()
    return conn


def headers(encoder: Encoder, sid: int, fields: list[tuple[bytes, bytes]], end_stream: bool = False) -> bytes:
    return b"".join(headers_frames(sid, encoder.encode(fields), end_stream, 16_384))


def sent_frames(conn: HboneConnection) -> list[object]:
    return list(FrameParser(1 << 24 - 1).feed(conn.bytes_to_send()))


def assert_connection_error(conn: HboneConnection, events: list[Event], code: ErrorCode) -> None:
    assert isinstance(events[-1], ConnectionTerminated), events
    assert events[-1].error_code is code and not events[-1].remote, events[-1]
    goaways = [f for f in sent_frames(conn) if isinstance(f, GoAwayFrame)]
    assert [g.error_code for g in goaways] == [code]
    assert conn.closed
    assert conn.receive(ping(b"12345678")) == []  # input is ignored from now on
    with pytest.raises(ConnectionClosed):
        conn.ping(b"12345678")


def assert_stream_error(conn: HboneConnection, events: list[Event], sid: int, code: ErrorCode) -> None:
    assert events[-1] == StreamReset(sid, code, remote=False), events
    assert RstStreamFrame(sid, code) in sent_frames(conn)
    assert not conn.closed


CONNECTION_ERRORS = {
    "bad preface": (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", ErrorCode.PROTOCOL_ERROR),
    "first frame not SETTINGS": (PREFACE + ping(b"12345678"), ErrorCode.PROTOCOL_ERROR),
    "frame larger than max": (START + data_frame_header(1, MiB + 1), ErrorCode.FRAME_SIZE_ERROR),
    "DATA on stream 0": (START + data_frame(0, b"x"), ErrorCode.PROTOCOL_ERROR),
    "DATA on idle stream": (START + data_frame(1, b"x"), ErrorCode.PROTOCOL_ERROR),
    "invalid padding": (START + frame(FrameType.DATA, Flag.PADDED, 1, b"\x09abc"), ErrorCode.PROTOCOL_ERROR),
    "CONTINUATION without HEADERS": (START + continuation_frame(1, b"", True), ErrorCode.PROTOCOL_ERROR),
    "SETTINGS ENABLE_PUSH=2": (PREFACE + settings_frame([(SettingCode.ENABLE_PUSH, 2)]),
                               ErrorCode.PROTOCOL_ERROR),
    "SETTINGS window too big": (PREFACE + settings_frame([(SettingCode.INITIAL_WINDOW_SIZE, 2**31)]),
                                ErrorCode.FLOW_CONTROL_ERROR),
    "SETTINGS frame size too small": (PREFACE + settings_frame([(SettingCode.MAX_FRAME_SIZE, 100)]),
                                      ErrorCode.PROTOCOL_ERROR),
    "SETTINGS frame size too big": (PREFACE + settings_frame([(SettingCode.MAX_FRAME_SIZE, 2**24)]),
                                    ErrorCode.PROTOCOL_ERROR),
    "SETTINGS bad length": (PREFACE + frame(FrameType.SETTINGS, 0, 0, b"\x00\x01"),
                            ErrorCode.FRAME_SIZE_ERROR),
    "connection window overflow": (START + window_update(0, 2**31 - 1), ErrorCode.FLOW_CONTROL_ERROR),
    "zero connection window update": (START + window_update(0, 0), ErrorCode.PROTOCOL_ERROR),
    "RST_STREAM on idle stream": (START + rst_stream(1, ErrorCode.CANCEL), ErrorCode.PROTOCOL_ERROR),
    "WINDOW_UPDATE on idle stream": (START + window_update(1, 5), ErrorCode.PROTOCOL_ERROR),
    "PUSH_PROMISE from a client": (START + frame(FrameType.PUSH_PROMISE, Flag.END_HEADERS, 1, b"\0\0\0\2"),
                                   ErrorCode.PROTOCOL_ERROR),
    "PRIORITY on itself": (START + frame(FrameType.PRIORITY, 0, 1, b"\0\0\0\1\x10"),
                           ErrorCode.PROTOCOL_ERROR),
    "HPACK garbage": (START + frame(FrameType.HEADERS, Flag.END_HEADERS, 1, b"\xff\xff\xff\xff\x0f"),
                      ErrorCode.COMPRESSION_ERROR),
}


@pytest.mark.parametrize("name", CONNECTION_ERRORS)
def test_connection_errors(name: str) -> None:
    wire, code = CONNECTION_ERRORS[name]
    conn = server()
    assert_connection_error(conn, conn.receive(wire), code)


@pytest.mark.parametrize("chunk", [1, 5, 64])
def test_connection_errors_survive_any_chunking(chunk: int) -> None:
    conn = server()
    wire = START + data_frame(0, b"x")
    events = [e for i in range(0, len(wire), chunk) for e in conn.receive(wire[i:i + chunk])]
    assert_connection_error(conn, events, ErrorCode.PROTOCOL_ERROR)


def test_headers_on_an_even_stream_from_a_client() -> None:
    conn = server()
    events = conn.receive(START + headers(Encoder(), 2, CONNECT))
    assert_connection_error(conn, events, ErrorCode.PROTOCOL_ERROR)


def test_stream_ids_must_increase() -> None:
    conn = server()
    enc = Encoder()
    events = conn.receive(START + headers(enc, 5, CONNECT) + headers(enc, 3, CONNECT))
    assert isinstance(events[1], TunnelRequested)
    assert_connection_error(conn, events, ErrorCode.PROTOCOL_ERROR)


def test_continuation_must_follow_headers_without_interleaving() -> None:
    block = Encoder().encode(CONNECT)
    start = frame(FrameType.HEADERS, 0, 1, block[:3])
    for intruder in (ping(b"12345678"), data_frame(1, b"x"), continuation_frame(3, block[3:], True)):
        conn = server()
        assert_connection_error(conn, conn.receive(START + start + intruder), ErrorCode.PROTOCOL_ERROR)
    conn = server()
    events = conn.receive(START + start + continuation_frame(1, block[3:], True))
    assert events[-1] == TunnelRequested(1, "10.0.0.7:8080", ())


def test_data_beyond_the_stream_window() -> None:
    conn = server()
    events = conn.receive(START + headers(Encoder(), 1, CONNECT))
    assert isinstance(events[-1], TunnelRequested)
    for _ in range(4):
        assert conn.receive(data_frame(1, b"\0" * MiB))
    assert_connection_error(conn, conn.receive(data_frame(1, b"!")), ErrorCode.FLOW_CONTROL_ERROR)


def test_data_beyond_the_connection_window() -> None:
    conn = server()
    enc = Encoder()
    conn.receive(START)
    events: list[Event] = []
    for sid in (1, 3, 5, 7, 9):  # 16 MiB connection window, 4 MiB per stream
        events += conn.receive(headers(enc, sid, CONNECT))
        for _ in range(4):
            events += conn.receive(data_frame(sid, b"\0" * MiB))
            if isinstance(events[-1], ConnectionTerminated):
                break
    assert sum(isinstance(e, DataReceived) for e in events) == 16
    assert_connection_error(conn, events, ErrorCode.FLOW_CONTROL_ERROR)


def test_stream_window_overflow_is_a_stream_error() -> None:
    link = FakeLink()
    sid = link.client.open_tunnel("10.0.0.7:80")
    link.pump()
    events = link.client.receive(window_update(sid, 2**31 - 1))
    assert_stream_error(link.client, events, sid, ErrorCode.FLOW_CONTROL_ERROR)


MALFORMED_REQUESTS = {
    "CONNECT with :path": [*CONNECT, (b":path", b"/")],
    "CONNECT with :scheme": [*CONNECT, (b":scheme", b"https")],
    "missing :authority": [(b":method", b"CONNECT")],
    "missing :method": [(b":authority", b"10.0.0.7:8080")],
    "uppercase header name": [*CONNECT, (b"Baggage", b"x")],
    "pseudo-header after regular": [(b":method", b"CONNECT"), (b"baggage", b"x"), (b":authority", b"a:1")],
    "duplicate pseudo-header": [*CONNECT, (b":method", b"CONNECT")],
    "response pseudo-header": [*CONNECT, (b":status", b"200")],
    "extended CONNECT": [*CONNECT, (b":protocol", b"websocket")],
    "connection header": [*CONNECT, (b"connection", b"keep-alive")],
    "te other than trailers": [*CONNECT, (b"te", b"gzip")],
    "newline in value": [*CONNECT, (b"x-a", b"b\nc")],
    "GET without :path": [(b":method", b"GET"), (b":scheme", b"https")],
}


@pytest.mark.parametrize("name", MALFORMED_REQUESTS)
def test_malformed_requests_reset_only_their_stream(name: str) -> None:
    conn = server()
    enc = Encoder()
    events = conn.receive(START + headers(enc, 1, MALFORMED_REQUESTS[name]))
    assert_stream_error(conn, events, 1, ErrorCode.PROTOCOL_ERROR)
    assert conn.receive(data_frame(1, b"late")) == []  # in flight when we reset: ignored
    assert conn.receive(headers(enc, 3, CONNECT)) == [TunnelRequested(3, "10.0.0.7:8080", ())]


def test_well_formed_non_connect_is_a_bad_request_for_the_caller() -> None:
    conn = server()
    get = [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/"), (b":authority", b"x")]
    events = conn.receive(START + headers(Encoder(), 1, get, end_stream=True))
    assert isinstance(events[1], BadRequest) and "GET" in events[1].reason
    conn.respond(1, 400)
    assert not conn.closed


@pytest.mark.parametrize("authority", [b"10.0.0.7", b"10.0.0.7:0", b"10.0.0.7:99999", b"::1:80",
                                       b"[::1:80", b"user@10.0.0.7:80", b"a b:80"])
def test_bad_authorities_are_bad_requests(authority: bytes) -> None:
    conn = server()
    request = [(b":method", b"CONNECT"), (b":authority", authority)]
    events = conn.receive(START + headers(Encoder(), 1, request))
    assert isinstance(events[-1], BadRequest), events


def test_ipv6_authority_is_accepted() -> None:
    conn = server()
    request = [(b":method", b"CONNECT"), (b":authority", b"[fd00::7]:80")]
    events = conn.receive(START + headers(Encoder(), 1, request))
    assert events[-1] == TunnelRequested(1, "[fd00::7]:80", ())


def test_data_on_a_closed_stream() -> None:
    link = FakeLink()
    sid = link.client.open_tunnel("10.0.0.7:80")
    link.to_server()
    link.server.respond(sid, 200)
    link.to_client()
    link.client.end_stream(sid)
    link.to_server()
    events = link.server.receive(data_frame(sid, b"after END_STREAM"))
    assert_stream_error(link.server, events, sid, ErrorCode.STREAM_CLOSED)


def test_too_many_streams_from_the_peer_are_refused() -> None:
    link = FakeLink(server_settings=HboneSettings(max_concurrent_streams=3), handshake=False)
    sids = [link.client.open_tunnel(f"10.0.0.7:{port}") for port in range(1, 5)]  # no limit known yet
    events = link.to_server()
    assert [e.stream_id for e in events if isinstance(e, TunnelRequested)] == sids[:3]
    assert events[-1] == StreamReset(sids[3], ErrorCode.REFUSED_STREAM, remote=False)
    client_events, _ = link.pump()
    assert StreamReset(sids[3], ErrorCode.REFUSED_STREAM, remote=True) in client_events


def test_zero_window_update_on_a_stream_is_a_stream_error() -> None:
    conn = server()
    conn.receive(START + headers(Encoder(), 1, CONNECT))
    assert_stream_error(conn, conn.receive(window_update(1, 0)), 1, ErrorCode.PROTOCOL_ERROR)


def test_header_list_too_large() -> None:
    conn = server()
    block = Encoder().encode([*CONNECT, (b"x-big", b"v" * (70 * 1024))], huffman=False)
    events = conn.receive(START + b"".join(headers_frames(1, block, False, 16_384)))
    assert_connection_error(conn, events, ErrorCode.ENHANCE_YOUR_CALM)


def test_rapid_reset_flood() -> None:
    conn = server()
    enc = Encoder()
    conn.receive(START)
    events: list[Event] = []
    for i in range(1200):
        sid = 2 * i + 1
        events += conn.receive(headers(enc, sid, CONNECT) + rst_stream(sid, ErrorCode.CANCEL))
        conn.data_to_send()  # a peer that reads our replies: only the reset count trips
        if conn.closed:
            break
    assert 990 <= sum(isinstance(e, StreamReset) for e in events) <= 1000  # the bound, give or take SETTINGS
    terminated = events[-1]
    assert isinstance(terminated, ConnectionTerminated)
    assert terminated.error_code is ErrorCode.ENHANCE_YOUR_CALM and not terminated.remote


def test_resets_interleaved_with_data_are_not_a_flood() -> None:
    conn = server()
    enc = Encoder()
    conn.receive(START)
    for i in range(1500):
        sid = 2 * i + 1
        conn.receive(headers(enc, sid, CONNECT) + data_frame(sid, b"x") + rst_stream(sid, ErrorCode.CANCEL))
        conn.data_to_send()
    assert not conn.closed


@pytest.mark.parametrize("flood", [ping(b"12345678"), settings_frame([]), frame(0x20, 0, 0, b"")],
                         ids=["PING", "SETTINGS", "unknown"])
def test_control_frame_floods(flood: bytes) -> None:
    conn = server()
    events = conn.receive(START + flood * 1500)
    assert_connection_error(conn, events, ErrorCode.ENHANCE_YOUR_CALM)


def test_keepalive_pings_read_by_the_peer_never_trip_the_flood_guard() -> None:
    conn = server()
    conn.receive(START)
    for _ in range(3000):
        assert conn.receive(ping(b"keepaliv"))
        conn.data_to_send()
    assert not conn.closed


def test_client_side_faults() -> None:
    link = FakeLink()
    sid = link.client.open_tunnel("10.0.0.7:80")
    link.to_server()
    events = link.client.receive(data_frame(sid, b"before the response"))
    assert_stream_error(link.client, events, sid, ErrorCode.PROTOCOL_ERROR)

    sid = link.client.open_tunnel("10.0.0.7:81")
    block = Encoder().encode([(b"x-no-status", b"1")])
    events = link.client.receive(frame(FrameType.HEADERS, Flag.END_HEADERS, sid, block))
    assert_stream_error(link.client, events, sid, ErrorCode.PROTOCOL_ERROR)

    events = link.client.receive(frame(FrameType.PUSH_PROMISE, Flag.END_HEADERS, 1, b"\0\0\0\2"))
    assert_connection_error(link.client, events, ErrorCode.PROTOCOL_ERROR)


def test_server_may_not_enable_push() -> None:
    conn = HboneConnection(client=True)
    conn.initiate()
    conn.data_to_send()
    events = conn.receive(settings_frame([(SettingCode.ENABLE_PUSH, 1)]))
    assert_connection_error(conn, events, ErrorCode.PROTOCOL_ERROR)


def test_server_may_not_open_streams() -> None:
    conn = HboneConnection(client=True)
    conn.initiate()
    conn.data_to_send()
    events = conn.receive(settings_frame([]) + headers(Encoder(), 2, [(b":status", b"200")]))
    assert_connection_error(conn, events, ErrorCode.PROTOCOL_ERROR)


def test_informational_responses_are_skipped() -> None:
    link = FakeLink()
    sid = link.client.open_tunnel("10.0.0.7:80")
    link.to_server()
    enc = link.server._encoder  # keep the HPACK context in sync with the server's
    assert link.client.receive(headers(enc, sid, [(b":status", b"100")])) == []
    link.server.respond(sid, 200)
    assert [type(e).__name__ for e in link.to_client()] == ["TunnelOpened"]


def test_goaway_received_and_acks_are_quiet() -> None:
    conn = server()
    events = conn.receive(START + settings_ack() + goaway(0, ErrorCode.NO_ERROR, b"drain"))
    assert events[-1] == ConnectionTerminated(ErrorCode.NO_ERROR, 0, b"drain", remote=True)
    assert not conn.closed
