"""Frame codec: serializers and parser agree, layouts are checked, DATA is not copied needlessly."""

from __future__ import annotations

import pytest

from zeromesh.hbone import ErrorCode, ProtocolViolation
from zeromesh.hbone.frames import (
    PREFACE,
    ContinuationFrame,
    DataFrame,
    Flag,
    FrameParser,
    FrameType,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    PushPromiseFrame,
    RstStreamFrame,
    SettingsFrame,
    UnknownFrame,
    WindowUpdateFrame,
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


def parse(data: bytes, max_frame: int = 16_384) -> list[object]:
    return list(FrameParser(max_frame).feed(data))


def test_every_serializer_round_trips() -> None:
    wire = b"".join([
        data_frame_header(1, 5) + b"hello",
        data_frame(3, b"abc", end_stream=True, pad_length=4),
        *headers_frames(5, b"block", end_stream=True, max_frame=16_384),
        settings_frame([(4, 70_000), (5, 32_768)]),
        settings_ack(),
        window_update(0, 1000),
        window_update(7, 5),
        rst_stream(9, ErrorCode.CANCEL),
        rst_stream(11, 0xFF),
        ping(b"12345678"),
        ping(b"abcdefgh", ack=True),
        goaway(13, ErrorCode.ENHANCE_YOUR_CALM, b"calm"),
        frame(FrameType.PRIORITY, 0, 15, b"\x00\x00\x00\x01\x10"),
        frame(0x42, 0xFF, 17, b"whatever"),
    ])
    got = parse(wire)
    assert [type(f) for f in got] == [
        DataFrame, DataFrame, HeadersFrame, SettingsFrame, SettingsFrame, WindowUpdateFrame,
        WindowUpdateFrame, RstStreamFrame, RstStreamFrame, PingFrame, PingFrame, GoAwayFrame, PriorityFrame,
        UnknownFrame]
    assert got[0] == DataFrame(1, memoryview(b"hello"), False, 5)
    assert got[1] == DataFrame(3, memoryview(b"abc"), True, 1 + 3 + 4)
    assert got[2] == HeadersFrame(5, b"block", True, True, 0)
    assert got[3] == SettingsFrame(False, ((4, 70_000), (5, 32_768)))
    assert got[4] == SettingsFrame(True)
    assert got[5:7] == [WindowUpdateFrame(0, 1000), WindowUpdateFrame(7, 5)]
    assert got[7] == RstStreamFrame(9, ErrorCode.CANCEL)
    assert got[8] == RstStreamFrame(11, 0xFF)  # unknown codes survive as ints
    assert got[9:11] == [PingFrame(False, b"12345678"), PingFrame(True, b"abcdefgh")]
    assert got[11] == GoAwayFrame(13, ErrorCode.ENHANCE_YOUR_CALM, b"calm")
    assert got[12] == PriorityFrame(15, 1)
    assert got[13] == UnknownFrame(0x42, 0xFF, 17)


def test_headers_split_into_continuations_at_the_peer_frame_size() -> None:
    block = bytes(range(256)) * 200  # 51200 bytes
    frames = headers_frames(1, block, end_stream=False, max_frame=16_384)
    assert len(frames) == 4
    got = parse(b"".join(frames))
    assert isinstance(got[0], HeadersFrame) and not got[0].end_headers
    assert all(isinstance(f, ContinuationFrame) for f in got[1:])
    assert [f.end_headers for f in got[1:]] == [False, False, True]  # type: ignore[attr-defined]
    assert b"".join(f.block for f in got) == block  # type: ignore[attr-defined]


def test_headers_with_padding_and_priority() -> None:
    payload = bytes([3]) + b"\x80\x00\x00\x05" + b"\x10" + b"hdr" + b"\0\0\0"
    got = parse(frame(FrameType.HEADERS, Flag.PADDED | Flag.PRIORITY | Flag.END_HEADERS, 7, payload))
    assert got == [HeadersFrame(7, b"hdr", False, True, 5)]


def test_push_promise_is_parsed_to_be_refused() -> None:
    got = parse(frame(FrameType.PUSH_PROMISE, Flag.END_HEADERS, 1, b"\x00\x00\x00\x02blk"))
    assert got == [PushPromiseFrame(1, 2, b"blk", True)]


@pytest.mark.parametrize("size", [1, 2, 7, 9, 10, 100, 4096])
def test_any_chunking_yields_the_same_frames(size: int) -> None:
    wire = b"".join([settings_frame([(3, 100)]), data_frame(1, b"x" * 3000), ping(b"pingpong"),
                     data_frame(1, b"y" * 20, end_stream=True, pad_length=9), window_update(0, 7)])
    whole = parse(wire)
    parser = FrameParser()
    pieces = [f for i in range(0, len(wire), size) for f in parser.feed(wire[i:i + size])]
    assert pieces == whole


def test_whole_frames_in_an_immutable_chunk_are_not_copied() -> None:
    wire = data_frame_header(1, 8) + b"payload!"
    (got,) = parse(wire)
    assert isinstance(got, DataFrame)
    assert got.data.obj is wire  # a view into the caller's bytes
    assert got.data.readonly


def test_header_and_payload_fed_separately_are_not_copied() -> None:
    payload = b"p" * 100_000
    parser = FrameParser(1 << 20)
    assert list(parser.feed(data_frame_header(1, len(payload), end_stream=True))) == []
    (got,) = list(parser.feed(payload))
    assert isinstance(got, DataFrame) and got.end_stream
    assert got.data.obj is payload


def test_mutable_input_is_copied_because_the_caller_may_reuse_it() -> None:
    buf = bytearray(data_frame_header(1, 4) + b"abcd")
    (got,) = list(FrameParser().feed(memoryview(buf)))
    buf[9:] = b"XXXX"
    assert isinstance(got, DataFrame)
    assert bytes(got.data) == b"abcd"


def test_a_frame_spanning_chunks_is_gathered_once() -> None:
    payload = bytes(range(256)) * 64
    wire = data_frame_header(1, len(payload)) + payload
    parser = FrameParser()
    assert list(parser.feed(wire[:5])) == []
    assert list(parser.feed(wire[5:1000])) == []
    (got,) = list(parser.feed(wire[1000:]))
    assert isinstance(got, DataFrame)
    assert got.data.readonly and bytes(got.data) == payload


def test_preface_is_checked_incrementally() -> None:
    parser = FrameParser(expect_preface=True)
    assert list(parser.feed(PREFACE[:10])) == []
    assert list(parser.feed(PREFACE[10:] + settings_ack())) == [SettingsFrame(True)]
    with pytest.raises(ProtocolViolation) as info:
        list(FrameParser(expect_preface=True).feed(b"GET / HTTP/1.1\r\n"))
    assert info.value.error_code is ErrorCode.PROTOCOL_ERROR


@pytest.mark.parametrize(("wire", "code"), [
    (data_frame_header(1, 16_385) + b"x" * 16_385, ErrorCode.FRAME_SIZE_ERROR),
    (data_frame(0, b"x"), ErrorCode.PROTOCOL_ERROR),
    (frame(FrameType.DATA, Flag.PADDED, 1, b"\x05abc"), ErrorCode.PROTOCOL_ERROR),
    (frame(FrameType.DATA, Flag.PADDED, 1, b""), ErrorCode.FRAME_SIZE_ERROR),
    (frame(FrameType.HEADERS, Flag.END_HEADERS, 0, b"x"), ErrorCode.PROTOCOL_ERROR),
    (frame(FrameType.HEADERS, Flag.PRIORITY, 1, b"\x00\x00"), ErrorCode.FRAME_SIZE_ERROR),
    (frame(FrameType.HEADERS, Flag.PADDED | Flag.END_HEADERS, 1, b"\x09abc"), ErrorCode.PROTOCOL_ERROR),
    (frame(FrameType.PRIORITY, 0, 1, b"\x00\x00\x00\x00"), ErrorCode.FRAME_SIZE_ERROR),
    (frame(FrameType.RST_STREAM, 0, 1, b"\x00\x00\x00"), ErrorCode.FRAME_SIZE_ERROR),
    (frame(FrameType.RST_STREAM, 0, 0, b"\x00\x00\x00\x00"), ErrorCode.PROTOCOL_ERROR),
    (frame(FrameType.SETTINGS, 0, 1, b""), ErrorCode.PROTOCOL_ERROR),
    (frame(FrameType.SETTINGS, 0, 0, b"\x00\x04\x00"), ErrorCode.FRAME_SIZE_ERROR),
    (frame(FrameType.SETTINGS, Flag.ACK, 0, b"\x00\x04\x00\x00\x00\x01"), ErrorCode.FRAME_SIZE_ERROR),
    (frame(FrameType.PING, 0, 0, b"short"), ErrorCode.FRAME_SIZE_ERROR),
    (frame(FrameType.PING, 0, 3, b"12345678"), ErrorCode.PROTOCOL_ERROR),
    (frame(FrameType.GOAWAY, 0, 0, b"\x00\x00"), ErrorCode.FRAME_SIZE_ERROR),
    (frame(FrameType.WINDOW_UPDATE, 0, 0, b"\x00\x00\x01"), ErrorCode.FRAME_SIZE_ERROR),
    (frame(FrameType.CONTINUATION, 0, 0, b""), ErrorCode.PROTOCOL_ERROR),
    (frame(FrameType.PUSH_PROMISE, 0, 1, b"\x00"), ErrorCode.FRAME_SIZE_ERROR),
], ids=lambda v: v.name if isinstance(v, ErrorCode) else None)
def test_layout_errors_are_connection_errors(wire: bytes, code: ErrorCode) -> None:
    with pytest.raises(ProtocolViolation) as info:
        parse(wire)
    assert info.value.error_code is code
    assert not info.value.is_stream_error


def test_oversized_frame_fails_before_its_payload_arrives() -> None:
    parser = FrameParser(16_384)
    with pytest.raises(ProtocolViolation):
        list(parser.feed(data_frame_header(1, 1 << 20)))


def test_reserved_stream_bit_is_ignored() -> None:
    wire = bytearray(data_frame(1, b"x"))
    wire[5] |= 0x80
    assert parse(bytes(wire)) == [DataFrame(1, memoryview(b"x"), False, 1)]
