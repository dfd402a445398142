"""Interop with an HTTP/2 implementation that is not ours (python-hyper h2), when it is installed.

h2 is not a zeromesh dependency; these tests skip without it.
"""

from __future__ import annotations

from typing import Any

import pytest

from zeromesh.hbone import (
    DataReceived,
    Event,
    HboneConnection,
    StreamEnded,
    TunnelOpened,
    TunnelRequested,
)

h2_config = pytest.importorskip("h2.config")
h2_connection = pytest.importorskip("h2.connection")
h2_events = pytest.importorskip("h2.events")

MiB = 1 << 20


def ours_receive(conn: HboneConnection, peer: Any) -> list[Event]:
    data = peer.data_to_send()
    return conn.receive(data) if data else []


def theirs_receive(peer: Any, conn: HboneConnection) -> list[Any]:
    data = conn.bytes_to_send()
    return list(peer.receive_data(data)) if data else []


def test_our_client_against_h2_server() -> None:
    client = HboneConnection(client=True)
    server = h2_connection.H2Connection(h2_config.H2Configuration(client_side=False, header_encoding="utf-8"))
    client.initiate()
    server.initiate_connection()
    for _ in range(3):
        theirs_receive(server, client)
        ours_receive(client, server)
    sid = client.open_tunnel("10.0.0.7:8080", [("baggage", "k8s.namespace.name=ns1")])
    (request,) = [e for e in theirs_receive(server, client) if isinstance(e, h2_events.RequestReceived)]
    assert dict(request.headers) == {":method": "CONNECT", ":authority": "10.0.0.7:8080",
                                     "baggage": "k8s.namespace.name=ns1"}
    server.send_headers(sid, [(":status", "200")])
    assert ours_receive(client, server) == [TunnelOpened(sid, 200, ())]
    payload = b"u" * (3 * MiB)
    sent = 0
    got = bytearray()
    while sent < len(payload):  # h2 starts with a 64 KiB connection window: wait for its credit
        sent += client.send_data(sid, payload[sent:])
        for event in theirs_receive(server, client):
            if isinstance(event, h2_events.DataReceived):
                got += event.data
                server.acknowledge_received_data(event.flow_controlled_length, sid)
        ours_receive(client, server)
    assert got == payload
    client.end_stream(sid)
    assert any(isinstance(e, h2_events.StreamEnded) for e in theirs_receive(server, client))
    server.send_data(sid, b"bye", end_stream=True)
    events = ours_receive(client, server)
    assert [type(e) for e in events] == [DataReceived, StreamEnded]


def test_h2_client_against_our_server() -> None:
    client = h2_connection.H2Connection(h2_config.H2Configuration(client_side=True, header_encoding="utf-8"))
    server = HboneConnection(client=False)
    client.initiate_connection()
    server.initiate()
    for _ in range(3):
        ours_receive(server, client)
        theirs_receive(client, server)
    sid = client.get_next_available_stream_id()
    client.send_headers(sid, [(":method", "CONNECT"), (":authority", "[fd00::1]:443"),
                              ("traceparent", "00-" + "1" * 32 + "-" + "2" * 16 + "-00")])
    (requested,) = ours_receive(server, client)
    assert isinstance(requested, TunnelRequested) and requested.authority == "[fd00::1]:443"
    server.respond(sid, 200)
    (response,) = [e for e in theirs_receive(client, server) if isinstance(e, h2_events.ResponseReceived)]
    assert dict(response.headers)[":status"] == "200"
    payload = b"d" * (6 * MiB)  # more than our 4 MiB stream window: needs our bulk credit
    sent = 0
    got = bytearray()
    while sent < len(payload) or len(got) < len(payload):
        window = min(client.local_flow_control_window(sid), client.max_outbound_frame_size,
                     len(payload) - sent)
        if window > 0:
            client.send_data(sid, payload[sent:sent + window])
            sent += window
        for event in ours_receive(server, client):
            if isinstance(event, DataReceived):
                got += event.data
                server.acknowledge(sid, event.flow_length)
        theirs_receive(client, server)
    assert got == payload
    server.send_data(sid, b"pong")
    server.end_stream(sid)
    events = theirs_receive(client, server)
    assert b"".join(e.data for e in events if isinstance(e, h2_events.DataReceived)) == b"pong"
    assert any(isinstance(e, h2_events.StreamEnded) for e in events)
