"""Property tests: any input is survived, chunking never matters, credit keeps bytes intact."""

from __future__ import annotations

import itertools

from hpack import Encoder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zeromesh.hbone import (
    ConnectionTerminated,
    DataReceived,
    ErrorCode,
    Event,
    HboneConnection,
    HboneSettings,
    StreamEnded,
    TunnelRequested,
)
from zeromesh.hbone.frames import PREFACE, FrameParser, GoAwayFrame, frame, settings_frame
from zeromesh.hbone.testing import FakeLink

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def fresh(client: bool) -> HboneConnection:
    conn = HboneConnection(client=client)
    conn.initiate()
    conn.data_to_send()
    return conn


def check_survived(conn: HboneConnection, events: list[Event]) -> None:
    """Faults became events and frames: a local ConnectionTerminated comes with its GOAWAY."""
    terminated = [e for e in events if isinstance(e, ConnectionTerminated) and not e.remote]
    sent = list(FrameParser(1 << 24 - 1).feed(conn.bytes_to_send()))
    goaways = [f for f in sent if isinstance(f, GoAwayFrame)]
    if terminated:
        assert events[-1] is terminated[0] and len(terminated) == 1
        assert goaways[-1].error_code == terminated[0].error_code
        assert conn.closed
    else:
        assert not conn.closed


@FAST
@given(st.binary(max_size=600), st.booleans())
def test_arbitrary_bytes_never_raise(data: bytes, with_preface: bool) -> None:
    conn = fresh(client=False)
    events = conn.receive((PREFACE if with_preface else b"") + data)
    check_survived(conn, events)


frames = st.builds(
    frame,
    ftype=st.integers(0, 11),
    flags=st.sampled_from([0, 0x1, 0x4, 0x5, 0x8, 0x9, 0x20, 0x24, 0x2D, 0xFF]),
    stream_id=st.sampled_from([0, 1, 2, 3, 5, 2**31 - 1]),
    payload=st.one_of(st.binary(max_size=40), st.binary(min_size=4, max_size=8),
                      st.just(Encoder().encode([(b":method", b"CONNECT"), (b":authority", b"a:1")]))),
)


@FAST
@given(st.lists(frames, max_size=25), st.integers(1, 50))
def test_arbitrary_frames_never_raise(wire_frames: list[bytes], chunk: int) -> None:
    for client in (False, True):
        conn = fresh(client)
        if client:
            conn.open_tunnel("10.0.0.7:80")
            conn.data_to_send()
        wire = (b"" if client else PREFACE) + settings_frame([]) + b"".join(wire_frames)
        events = [e for i in range(0, len(wire), chunk) for e in conn.receive(wire[i:i + chunk])]
        check_survived(conn, events)


def recorded_client_stream() -> bytes:
    """A realistic client→server byte stream: preface, tunnels, data, padding, pings, resets."""
    link = FakeLink(server_settings=HboneSettings(max_frame_size=16_384), handshake=False)
    wire = bytearray()

    def flush() -> None:
        chunk = link.client.bytes_to_send()
        wire.extend(chunk)
        link.server.receive(chunk)

    flush()
    link.to_client()
    sids = [link.client.open_tunnel(f"10.0.0.{i}:80", [("traceparent", f"00-{i:032x}-{i:016x}-00")])
            for i in range(1, 4)]
    flush()
    for sid in sids:
        link.server.respond(sid, 200)
    link.to_client()
    link.client.send_data(sids[0], bytes(range(256)) * 100)
    link.client.ping(b"pingpong")
    link.client.send_data(sids[1], b"hello")
    link.client.end_stream(sids[1])
    link.client.reset_stream(sids[2])
    link.client.send_data(sids[0], b"tail")
    link.client.end_stream(sids[0])
    flush()
    return bytes(wire)


RECORDED = recorded_client_stream()


def replay(chunks: list[bytes]) -> tuple[list[Event], bytes]:
    conn = fresh(client=False)
    events = [e for chunk in chunks for e in conn.receive(chunk)]
    return events, conn.bytes_to_send()


WHOLE = replay([RECORDED])


def test_the_recorded_stream_is_what_we_think() -> None:
    events, _ = WHOLE
    assert sum(isinstance(e, TunnelRequested) for e in events) == 3
    assert sum(e.flow_length for e in events if isinstance(e, DataReceived)) == 25600 + 5 + 4
    assert sum(isinstance(e, StreamEnded) for e in events) == 2


@FAST
@given(st.lists(st.integers(0, len(RECORDED)), max_size=40))
def test_chunking_never_changes_events_or_replies(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(RECORDED)]
    chunks = [RECORDED[a:b] for a, b in itertools.pairwise(points)]
    assert replay(chunks) == WHOLE


SMALL = HboneSettings(stream_window=65_535, connection_window=100_000, max_frame_size=16_384)
ops = st.lists(st.one_of(
    st.tuples(st.just("send"), st.sampled_from(["client", "server"]), st.integers(1, 70_000)),
    st.tuples(st.just("ack"), st.sampled_from(["client", "server"]), st.integers(1, 50_000)),
    st.tuples(st.just("deliver"), st.sampled_from(["client", "server"]), st.just(0)),
), max_size=60)


@FAST
@given(ops, st.sampled_from([0.1, 0.5, 1.0]))
def test_random_sends_and_acks_keep_bytes_intact(script: list[tuple[str, str, int]], ratio: float) -> None:
    cfg = HboneSettings(stream_window=SMALL.stream_window, connection_window=SMALL.connection_window,
                        max_frame_size=SMALL.max_frame_size, credit_ratio=ratio)
    link = FakeLink(cfg, cfg)
    sid = link.client.open_tunnel("10.0.0.7:80")
    link.to_server()
    link.server.respond(sid, 200)
    link.to_client()
    conns = {"client": link.client, "server": link.server}
    peer = {"client": "server", "server": "client"}
    sent = {"client": bytearray(), "server": bytearray()}
    got = {"client": bytearray(), "server": bytearray()}  # what each side received
    owed = {"client": 0, "server": 0}  # received, not yet acknowledged
    counter = 0

    def deliver(receiver: str) -> None:
        move = link.to_server if receiver == "server" else link.to_client
        for event in move():
            if isinstance(event, DataReceived):
                got[receiver] += event.data
                owed[receiver] += event.flow_length

    def check() -> None:
        for conn in conns.values():
            assert conn.local_window(0) >= 0 and conn.local_window(sid) >= 0
            assert conn.remote_window(0) >= 0 and conn.remote_window(sid) >= 0
            assert conn.sendable(sid) >= 0

    for action, side, amount in script:
        if action == "send":
            counter += 1
            data = bytes([counter % 251]) * amount
            took = conns[side].send_data(sid, data)
            assert 0 <= took <= amount
            sent[side] += data[:took]
        elif action == "ack":
            n = min(amount, owed[side])
            conns[side].acknowledge(sid, n)
            owed[side] -= n
        else:
            deliver(peer[side])
        check()
    for _ in range(200):  # drain: deliver and acknowledge everything until the pipes are empty
        for side in conns:
            deliver(side)
            conns[side].acknowledge(sid, owed[side])
            owed[side] = 0
        if not link.client.wants_write and not link.server.wants_write:
            break
        check()
    assert got["server"] == sent["client"]
    assert got["client"] == sent["server"]
    assert not link.client.closed and not link.server.closed


def test_error_codes_are_their_wire_values() -> None:
    assert int(ErrorCode.HTTP_1_1_REQUIRED) == 0xD
    assert int(ErrorCode.ENHANCE_YOUR_CALM) == 0xB
