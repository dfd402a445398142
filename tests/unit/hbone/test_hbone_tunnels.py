"""A client and a server over a fake link: tunnels open, carry data both ways, close, refuse and reset."""

from __future__ import annotations

import random
from typing import TypeVar

import pytest
from hpack import Decoder

from zeromesh.hbone import (
    BadRequest,
    ConnectionClosed,
    ConnectionTerminated,
    DataReceived,
    ErrorCode,
    Event,
    HboneConnection,
    HboneSettings,
    PingAcked,
    PingReceived,
    SettingsReceived,
    StreamClosed,
    StreamEnded,
    StreamReset,
    StreamState,
    TooManyStreams,
    TunnelOpened,
    TunnelRefused,
    TunnelRequested,
    UsageError,
    WindowUpdated,
)
from zeromesh.hbone.frames import FrameParser, HeadersFrame, SettingCode, WindowUpdateFrame, settings_frame
from zeromesh.hbone.testing import FakeLink

MiB = 1 << 20
E = TypeVar("E")
FORWARDED = ("forwarded", 'for="10.0.0.5:43210"')
BAGGAGE = ("baggage", "k8s.cluster.name=Kubernetes,k8s.namespace.name=ns1,service.name=sleep")
TRACEPARENT = ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00")


def only(events: list[Event], kind: type[E]) -> list[E]:
    return [e for e in events if isinstance(e, kind)]


def tunnel(link: FakeLink, authority: str = "10.0.0.7:8080") -> int:
    sid = link.client.open_tunnel(authority)
    assert only(link.to_server(), TunnelRequested)
    link.server.respond(sid, 200)
    assert link.to_client() == [TunnelOpened(sid, 200, ())]
    return sid


def relay(link: FakeLink, sid: int, up: bytes, down: bytes, chunk: int) -> tuple[bytes, bytes]:
    """Send ``up`` client→server and ``down`` server→client at once, each receiver acknowledging."""
    got_up, got_down = bytearray(), bytearray()
    sent = {"client": 0, "server": 0}
    ended = {"client": False, "server": False}
    closed = {"client": False, "server": False}
    sides = (("client", link.client, up), ("server", link.server, down))
    for _ in range(100_000):
        for name, conn, payload in sides:
            view = memoryview(payload)
            while sent[name] < len(payload):
                took = conn.send_data(sid, view[sent[name]:sent[name] + chunk])
                if not took:
                    break
                sent[name] += took
            if sent[name] == len(payload) and not ended[name]:
                conn.end_stream(sid)
                ended[name] = True
        for receiver, conn, buf, events in (("server", link.server, got_up, link.to_server()),
                                            ("client", link.client, got_down, link.to_client())):
            for event in events:
                if isinstance(event, DataReceived):
                    buf += event.data
                    conn.acknowledge(sid, event.flow_length)
                elif isinstance(event, StreamEnded):
                    closed[receiver] = True
        if all(closed.values()):
            return bytes(got_up), bytes(got_down)
    raise AssertionError("relay did not finish")


def test_handshake_exchanges_istio_settings() -> None:
    link = FakeLink(handshake=False)
    server_events = link.to_server()
    client_events = link.to_client()
    assert server_events[0] == SettingsReceived({
        SettingCode.ENABLE_PUSH: 0, SettingCode.MAX_CONCURRENT_STREAMS: 100,
        SettingCode.INITIAL_WINDOW_SIZE: 4 * MiB, SettingCode.MAX_FRAME_SIZE: MiB,
        SettingCode.MAX_HEADER_LIST_SIZE: 16 * 1024})
    assert server_events[1:] == [WindowUpdated(0)]
    assert client_events[0] == SettingsReceived({
        SettingCode.MAX_CONCURRENT_STREAMS: 200, SettingCode.INITIAL_WINDOW_SIZE: 4 * MiB,
        SettingCode.MAX_FRAME_SIZE: MiB, SettingCode.MAX_HEADER_LIST_SIZE: 64 * 1024})
    link.pump()
    for conn in (link.client, link.server):
        assert conn.local_window(0) == 16 * MiB
        assert conn.remote_window(0) == 16 * MiB
    assert link.client.available_streams == 200


def test_connect_request_has_istio_shape() -> None:
    link = FakeLink()
    sid = link.client.open_tunnel("10.0.0.7:8080", [BAGGAGE, FORWARDED, TRACEPARENT])
    wire = link.client.bytes_to_send()
    (headers,) = list(FrameParser().feed(wire))
    assert isinstance(headers, HeadersFrame) and not headers.end_stream
    fields = [(bytes(n), bytes(v)) for n, v in Decoder().decode(headers.block, raw=True)]
    assert fields[:2] == [(b":method", b"CONNECT"), (b":authority", b"10.0.0.7:8080")]
    assert not {b":scheme", b":path"} & {name for name, _ in fields}
    events = link.server.receive(wire)
    assert events == [TunnelRequested(sid, "10.0.0.7:8080", (BAGGAGE, FORWARDED, TRACEPARENT))]
    link.server.respond(sid, 200, [("baggage", "k8s.namespace.name=ns2")])
    assert link.to_client() == [TunnelOpened(sid, 200, (("baggage", "k8s.namespace.name=ns2"),))]
    assert link.client.stream_state(sid) is StreamState.OPEN


@pytest.mark.parametrize("join", [False, True], ids=["per-buffer", "joined"])
def test_50_mib_both_ways_with_acknowledgements(join: bool) -> None:
    link = FakeLink(join=join)
    sid = tunnel(link)
    rng = random.Random(7)
    up, down = rng.randbytes(50 * MiB), rng.randbytes(50 * MiB)
    got_up, got_down = relay(link, sid, up, down, chunk=256 * 1024)
    assert got_up == up
    assert got_down == down
    link.pump()
    assert link.client.stream_state(sid) is StreamState.CLOSED
    assert link.server.stream_state(sid) is StreamState.CLOSED
    assert link.client.open_streams == link.server.open_streams == 0


def test_half_close_each_way() -> None:
    link = FakeLink()
    sid = tunnel(link)
    link.client.send_data(sid, b"request")
    link.client.end_stream(sid)
    events = link.to_server()
    assert [type(e) for e in events] == [DataReceived, StreamEnded]
    assert link.server.stream_state(sid) is StreamState.HALF_CLOSED_REMOTE
    assert link.client.stream_state(sid) is StreamState.HALF_CLOSED_LOCAL
    with pytest.raises(StreamClosed):
        link.client.send_data(sid, b"more")
    link.server.send_data(sid, b"response")
    link.server.end_stream(sid)
    events = link.to_client()
    assert bytes(events[0].data) == b"response"  # type: ignore[union-attr]
    assert events[1:] == [StreamEnded(sid)]
    assert link.client.stream_state(sid) is StreamState.CLOSED
    assert link.server.stream_state(sid) is StreamState.CLOSED


def test_many_concurrent_streams_keep_their_bytes_apart() -> None:
    link = FakeLink()
    sids = [link.client.open_tunnel(f"10.0.1.{i}:80") for i in range(150)]
    requested = only(link.to_server(), TunnelRequested)
    assert [e.stream_id for e in requested] == sids
    assert [e.authority for e in requested] == [f"10.0.1.{i}:80" for i in range(150)]
    for sid in sids:
        link.server.respond(sid, 200)
    assert len(only(link.to_client(), TunnelOpened)) == 150
    for round_ in range(3):
        for sid in sids:
            link.client.send_data(sid, b"%d:%d;" % (sid, round_))
            link.server.send_data(sid, b"%d<%d;" % (sid, round_))
    up: dict[int, bytes] = {}
    for event in only(link.to_server(), DataReceived):
        up[event.stream_id] = up.get(event.stream_id, b"") + bytes(event.data)
    down: dict[int, bytes] = {}
    for event in only(link.to_client(), DataReceived):
        down[event.stream_id] = down.get(event.stream_id, b"") + bytes(event.data)
    assert up == {sid: b"%d:0;%d:1;%d:2;" % (sid, sid, sid) for sid in sids}
    assert down == {sid: b"%d<0;%d<1;%d<2;" % (sid, sid, sid) for sid in sids}
    assert link.client.open_streams == link.server.open_streams == 150
    for sid in sids:
        link.client.end_stream(sid)
        link.server.end_stream(sid)
    link.pump()
    assert link.client.open_streams == link.server.open_streams == 0


def test_peer_stream_limit_makes_the_pool_open_another_connection() -> None:
    link = FakeLink(server_settings=HboneSettings(max_concurrent_streams=2))
    first = link.client.open_tunnel("10.0.0.1:1")
    link.client.open_tunnel("10.0.0.1:2")
    assert link.client.available_streams == 0
    with pytest.raises(TooManyStreams):
        link.client.open_tunnel("10.0.0.1:3")
    link.client.reset_stream(first)
    assert link.client.available_streams == 1
    link.client.open_tunnel("10.0.0.1:3")


@pytest.mark.parametrize("status", [401, 503, 400])
def test_refusal_ends_the_stream_on_both_sides(status: int) -> None:
    link = FakeLink()
    sid = link.client.open_tunnel("10.0.0.7:8080")
    link.to_server()
    link.server.respond(sid, status, [("x-reason", "policy")])
    client_events, server_events = link.pump()
    assert client_events == [TunnelRefused(sid, status, (("x-reason", "policy"),))]
    assert server_events == []  # the client's closing END_STREAM is not news to the server
    assert link.client.stream_state(sid) is StreamState.CLOSED
    assert link.server.stream_state(sid) is StreamState.CLOSED
    assert link.client.open_streams == link.server.open_streams == 0
    with pytest.raises(StreamClosed):
        link.client.send_data(sid, b"x")


def test_bad_request_is_reported_and_answered_400_by_the_caller() -> None:
    link = FakeLink()
    sid = link.client.open_tunnel("no-port-here")
    (event,) = link.to_server()
    assert isinstance(event, BadRequest) and event.stream_id == sid
    with pytest.raises(UsageError):
        link.server.respond(sid, 200)
    link.server.respond(sid, 400)
    assert link.to_client() == [TunnelRefused(sid, 400, ())]


def test_reset_by_the_client_and_data_in_flight() -> None:
    link = FakeLink()
    sid = tunnel(link)
    link.server.send_data(sid, b"in flight")  # crosses the client's RST_STREAM
    link.client.send_data(sid, b"last words")
    link.client.reset_stream(sid)
    events = link.to_server()
    assert [type(e) for e in events] == [DataReceived, StreamReset]
    assert events[1] == StreamReset(sid, ErrorCode.CANCEL, remote=True)
    assert link.to_client() == []  # DATA on a stream we reset is dropped quietly
    link.server.acknowledge(sid, 10)  # acknowledging a reset stream is harmless
    assert link.client.local_window(0) == 16 * MiB - len(b"in flight")  # credit owed, not yet due


def test_reset_by_the_server() -> None:
    link = FakeLink()
    sid = tunnel(link)
    link.server.reset_stream(sid, ErrorCode.CONNECT_ERROR)
    assert link.to_client() == [StreamReset(sid, ErrorCode.CONNECT_ERROR, remote=True)]
    assert link.client.stream_state(sid) is StreamState.CLOSED
    link.client.reset_stream(sid)  # a no-op now
    assert not link.client.wants_write


def test_goaway_drains_and_refuses_what_the_server_never_saw() -> None:
    link = FakeLink()
    sid = tunnel(link)
    link.server.close()
    late = link.client.open_tunnel("10.0.0.7:9090")  # crosses the GOAWAY
    client_events, server_events = link.pump()
    assert client_events == [ConnectionTerminated(ErrorCode.NO_ERROR, sid, b"", remote=True),
                             StreamReset(late, ErrorCode.REFUSED_STREAM, remote=True)]
    assert server_events == []  # the late stream is ignored, per RFC 9113 §6.8
    with pytest.raises(ConnectionClosed):
        link.client.open_tunnel("10.0.0.7:8080")
    assert link.client.available_streams == 0
    link.client.send_data(sid, b"still flows")  # streams up to last_stream_id finish normally
    assert bytes(link.to_server()[0].data) == b"still flows"  # type: ignore[union-attr]


def test_goaway_with_an_error_ends_our_side() -> None:
    link = FakeLink()
    link.client.close(ErrorCode.INTERNAL_ERROR, b"bye")
    assert link.to_server() == [ConnectionTerminated(ErrorCode.INTERNAL_ERROR, 0, b"bye", remote=True)]
    assert link.client.closed
    with pytest.raises(ConnectionClosed):
        link.client.ping(b"12345678")
    assert link.client.receive(b"anything") == []


def test_ping_round_trip() -> None:
    link = FakeLink()
    link.client.ping(b"\x00\x01\x02\x03\x04\x05\x06\x07")
    assert link.to_server() == [PingReceived(b"\x00\x01\x02\x03\x04\x05\x06\x07")]
    assert link.to_client() == [PingAcked(b"\x00\x01\x02\x03\x04\x05\x06\x07")]
    with pytest.raises(UsageError):
        link.client.ping(b"short")


def test_initial_window_change_shifts_open_streams() -> None:
    link = FakeLink()
    sid = tunnel(link)
    assert link.client.send_data(sid, b"x" * 1000) == 1000
    assert link.client.remote_window(sid) == 4 * MiB - 1000
    events = link.client.receive(settings_frame([(SettingCode.INITIAL_WINDOW_SIZE, 8 * MiB)]))
    assert events == [SettingsReceived({SettingCode.INITIAL_WINDOW_SIZE: 8 * MiB}), WindowUpdated(sid)]
    assert link.client.remote_window(sid) == 8 * MiB - 1000
    link.client.receive(settings_frame([(SettingCode.INITIAL_WINDOW_SIZE, 500)]))
    assert link.client.remote_window(sid) == 500 - 1000  # may go negative (§6.9.2)
    assert link.client.send_data(sid, b"y") == 0
    later = link.client.open_tunnel("10.0.0.7:1")
    assert link.client.remote_window(later) == 500


def test_flow_control_blocks_and_window_update_wakes_the_sender() -> None:
    link = FakeLink()
    sid = tunnel(link)
    payload = b"z" * (5 * MiB)
    sent = link.client.send_data(sid, payload)
    assert sent == 4 * MiB  # the stream window
    assert link.client.send_data(sid, payload[sent:]) == 0
    assert link.client.sendable(sid) == 0
    received = sum(e.flow_length for e in only(link.to_server(), DataReceived))
    assert received == 4 * MiB
    assert link.to_client() == []  # nothing acknowledged: no credit (backpressure)
    link.server.acknowledge(sid, MiB)
    assert link.to_client() == []  # below the bulk threshold
    link.server.acknowledge(sid, MiB)
    assert link.to_client() == [WindowUpdated(sid)]
    assert link.client.send_data(sid, payload[sent:]) == MiB


def test_connection_window_blocks_across_streams() -> None:
    link = FakeLink()
    sids = [tunnel(link, f"10.0.0.{i}:80") for i in range(5)]
    chunk = b"c" * (4 * MiB)
    assert [link.client.send_data(sid, chunk) for sid in sids] == [4 * MiB] * 4 + [0]
    assert link.client.remote_window(0) == 0
    events = link.to_server()
    for sid in sids[:2]:
        link.server.acknowledge(sid, 4 * MiB)
    assert len(only(events, DataReceived)) == 16
    assert WindowUpdated(0) in link.to_client()
    assert link.client.send_data(sids[4], chunk) == 4 * MiB


def test_credit_is_returned_in_bulk() -> None:
    link = FakeLink()
    sid = tunnel(link)
    total, piece = 64 * MiB, 64 * 1024
    data = b"b" * piece
    updates = 0
    delivered = 0
    while delivered < total:
        while link.client.send_data(sid, data):
            pass
        for event in only(link.to_server(), DataReceived):
            for start in range(0, event.flow_length, piece):
                n = min(piece, event.flow_length - start)
                link.server.acknowledge(sid, n)
                delivered += n
        wire = link.server.bytes_to_send()
        updates += sum(isinstance(f, WindowUpdateFrame) for f in FrameParser(MiB).feed(wire))
        link.client.receive(wire)
    assert 20 <= updates <= 48, updates  # 64 MiB / 2 MiB + 64 MiB / 8 MiB = 40, not 1024+


def test_usage_errors_queue_nothing() -> None:
    link = FakeLink()
    sid = link.client.open_tunnel("10.0.0.7:80")
    link.to_server()
    with pytest.raises(UsageError):
        link.client.send_data(sid, b"before the 200")
    with pytest.raises(UsageError):
        link.client.open_tunnel("10.0.0.7:80", [("Upper", "x")])
    with pytest.raises(UsageError):
        link.client.open_tunnel("10.0.0.7:80", [("connection", "close")])
    with pytest.raises(UsageError):
        link.client.open_tunnel("10.0.0.7:80", [("x-ok", "bad\r\nvalue")])
    with pytest.raises(UsageError):
        link.server.open_tunnel("10.0.0.7:80")
    with pytest.raises(UsageError):
        link.client.respond(sid, 200)
    with pytest.raises(UsageError):
        link.server.respond(sid, 101)
    with pytest.raises(UsageError):
        link.client.reset_stream(99)
    assert not link.client.wants_write
    assert not link.server.wants_write
    link.server.respond(sid, 200)
    link.to_client()
    link.client.send_data(sid, b"abc")
    link.to_server()
    with pytest.raises(UsageError):
        link.server.acknowledge(sid, 4)
    with pytest.raises(UsageError):
        HboneConnection(client=True).receive(b"")
    with pytest.raises(UsageError):
        HboneSettings(credit_ratio=0)


def test_mutable_buffers_are_copied_on_send() -> None:
    link = FakeLink()
    sid = tunnel(link)
    buf = bytearray(b"original")
    link.client.send_data(sid, buf)
    buf[:] = b"mutated!"
    assert bytes(link.to_server()[0].data) == b"original"  # type: ignore[union-attr]


def test_large_sends_split_at_the_peer_frame_size() -> None:
    link = FakeLink(server_settings=HboneSettings(max_frame_size=16_384))
    sid = tunnel(link)
    assert link.client.send_data(sid, b"q" * 40_000) == 40_000
    events = only(link.to_server(), DataReceived)
    assert [e.flow_length for e in events] == [16_384, 16_384, 40_000 - 32_768]


def test_release_returns_credit_for_dropped_bytes() -> None:
    link = FakeLink()
    sids = [tunnel(link, f"10.0.0.{i}:80") for i in (1, 2)]
    for sid in sids:
        link.client.send_data(sid, b"d" * (4 * MiB))
        link.client.end_stream(sid)
    link.to_server()
    for sid in sids:
        link.server.end_stream(sid)
        assert link.server.stream_state(sid) is StreamState.CLOSED  # kept only for its books
    assert link.server.local_window(0) == 8 * MiB
    assert [link.server.release(sid) for sid in sids] == [4 * MiB, 4 * MiB]  # the caller dropped them
    assert link.server.local_window(0) == 16 * MiB  # 8 MiB owed: one bulk WINDOW_UPDATE
    assert link.server.release(sids[0]) == 0
    link.server.acknowledge(sids[0], 1)  # a forgotten stream: ignored
    assert WindowUpdated(0) in link.to_client()


def test_small_buffers_are_coalesced_large_payloads_passed_through() -> None:
    link = FakeLink()
    sid = tunnel(link)
    big = b"L" * MiB
    link.client.send_data(sid, b"tiny")
    link.client.ping(b"12345678")
    link.client.send_data(sid, big)
    link.client.send_data(sid, b"tail")
    link.client.end_stream(sid)
    buffers = link.client.data_to_send()
    assert len(buffers) == 3  # [small frames + big's header], big's payload, [tail + END_STREAM]
    assert buffers[1] is big  # never copied on the way out
    events = [e for b in buffers for e in link.server.receive(b)]
    assert b"".join(bytes(e.data) for e in only(events, DataReceived)) == b"tiny" + big + b"tail"


@pytest.mark.parametrize("status", [401, 503])
def test_refusal_frees_the_servers_stream_slot_at_once(status: int) -> None:
    """A client that never half-closes must not keep a refused stream open on the server."""
    link = FakeLink()
    sid = link.client.open_tunnel("10.0.0.7:8080")
    link.to_server()
    link.server.respond(sid, status)
    assert link.server.stream_state(sid) is StreamState.CLOSED
    assert link.server.open_streams == 0
    client_events, _ = link.pump()
    assert client_events == [TunnelRefused(sid, status, ())]     # the NO_ERROR reset is no news
    assert link.client.stream_state(sid) is StreamState.CLOSED
