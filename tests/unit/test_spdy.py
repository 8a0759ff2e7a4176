"""The SPDY/3.1 framing layer, table-tested against bytes written by Go.

``GO`` vectors were written by github.com/moby/spdystream v0.5.1's ``spdy.Framer.WriteFrame`` (the
framer kube-apiserver uses), one Framer per vector, e.g.::

    f, _ := spdy.NewFramer(&buf, nil)
    f.WriteFrame(&spdy.SynStreamFrame{StreamId: 1, Headers: http.Header{"streamType": {"error"}}})

``APISERVER_EXEC`` is what kube-apiserver v1.37.2 sent to our kubelet API for
``printf 'hello spdy\\n' | kubectl exec -i ex -c app -- cat`` (recorded on the wire after TLS).
Go's deflate and zlib's differ, so compressed blocks are compared decoded; frames without a
header block must match byte for byte. (Go's framer decodes our blocks too: checked by hand with
the same library while writing this.)
"""

from __future__ import annotations

import zlib

import pytest

from vk_operator.kubelet_api import spdy
from vk_operator.kubelet_api.spdy import (
    Connection,
    Data,
    DataReceived,
    FrameDecoder,
    FrameEncoder,
    GoAway,
    GoAwayReceived,
    HeadersFrame,
    Ping,
    PingAcknowledged,
    RstStatus,
    RstStream,
    Setting,
    Settings,
    SpdyError,
    StreamClosedError,
    StreamEnded,
    StreamOpened,
    StreamReplied,
    StreamReset,
    SynReply,
    SynStream,
    WindowUpdate,
)

GO = {
    "syn_stream_error": (
        "80030001000000290000000100000000000078f9e3c6a7c26260606004a7b392a2d4c45c6851c29a0a0a6800000000ffff"
    ),
    "syn_stream_three": (
        "80030001000000290000000100000000000078f9e3c6a7c26260606004a7b392a2d4c45c6851c29a0a0a6800000000ff"
        "ff800300010000001700000003000000000000c22e555c92929907000000ffff80030001000000190000000500000000"
        "e000c22ac5565c92925f5a02000000ffff"
    ),
    "syn_stream_fin_unidirectional": (
        "800300010300002b0000000700000001000078f9e3c6a7c26260606004a7b392a2d4c45c6851c2565c92925a54040000"
        "00ffff"
    ),
    "syn_reply_empty": "80030002000000140000000178f9e3c6a7c26260606000000000ffff",
    "syn_reply_fin": "80030002010000140000000378f9e3c6a7c26260606000000000ffff",
    "headers_multi": "800300080000001c0000000578f9e3c6a7c262606060046150c26636643002000000ffff",
    "rst_stream_cancel": "80030003000000080000000500000005",
    "settings": "80030004000000140000000200000007000100000100000400000064",
    "ping": "800300060000000400000001",
    "goaway": "80030007000000080000000700000000",
    "window_update": "80030009000000080000000300000400",
    "data": "000000050000000668656c6c6f0a",
    "data_fin_empty": "0000000501000000",
}

EXPECTED: dict[str, list[spdy.Frame]] = {
    "syn_stream_error": [SynStream(1, {"streamtype": ["error"]})],
    "syn_stream_three": [
        SynStream(1, {"streamtype": ["error"]}),
        SynStream(3, {"streamtype": ["stdin"]}),
        SynStream(5, {"streamtype": ["stdout"]}, priority=7),
    ],
    "syn_stream_fin_unidirectional": [
        SynStream(7, {"streamtype": ["stderr"]}, associated_to=1, fin=True, unidirectional=True)
    ],
    "syn_reply_empty": [SynReply(1, {})],
    "syn_reply_fin": [SynReply(3, {}, fin=True)],
    "headers_multi": [HeadersFrame(5, {"a": ["1", "2"]})],
    "rst_stream_cancel": [RstStream(5, RstStatus.CANCEL)],
    "settings": [Settings((Setting(7, 65536), Setting(4, 100, flags=1)))],
    "ping": [Ping(1)],
    "goaway": [GoAway(7)],
    "window_update": [WindowUpdate(3, 1024)],
    "data": [Data(5, b"hello\n")],
    "data_fin_empty": [Data(5, b"", fin=True)],
}

APISERVER_EXEC = bytes.fromhex(
    "80030001000000290000000100000000000078f9e3c6a7c26260606004a7b392a2d4c45c6851c29a0a0a6800000000ff"
    "ff800300010000001700000003000000000000c22e555c92929907000000ffff80030001000000190000000500000000"
    "0000c22ac5565c92925f5a02000000ffff800300010000001500000007000000000000c229975a5404000000ffff0000"
    "00030000000b68656c6c6f20737064790a0000000301000000"
)
APISERVER_EXEC_FRAMES = [
    SynStream(1, {"streamtype": ["error"]}),
    SynStream(3, {"streamtype": ["stdin"]}),
    SynStream(5, {"streamtype": ["stdout"]}),
    SynStream(7, {"streamtype": ["stderr"]}),
    Data(3, b"hello spdy\n"),
    Data(3, b"", fin=True),
]


def test_dictionary_is_the_spdy3_one() -> None:
    assert len(spdy.DICTIONARY) == 1423
    assert zlib.adler32(spdy.DICTIONARY) == 0xE3C6A7C2  # the dictionary id in every Go block: 78f9 e3c6a7c2
    assert spdy.DICTIONARY.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head")
    assert spdy.DICTIONARY.endswith(b"charset=iso-8859-1,utf-,*,enq=0.")


@pytest.mark.parametrize("name", sorted(GO))
def test_go_vectors_decode(name: str) -> None:
    assert FrameDecoder().feed(bytes.fromhex(GO[name])) == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(GO))
def test_go_vectors_decode_fed_byte_by_byte(name: str) -> None:
    decoder = FrameDecoder()
    frames = []
    for byte in bytes.fromhex(GO[name]):
        frames += decoder.feed(bytes([byte]))
    assert frames == EXPECTED[name]


@pytest.mark.parametrize(
    "name",
    ["rst_stream_cancel", "settings", "ping", "goaway", "window_update", "data", "data_fin_empty"],
)
def test_frames_without_header_blocks_encode_to_gos_bytes(name: str) -> None:
    assert spdy.encode_all(EXPECTED[name]).hex() == GO[name]


@pytest.mark.parametrize("name", sorted(GO))
def test_round_trip_through_our_encoder(name: str) -> None:
    assert spdy.frames_of(spdy.encode_all(EXPECTED[name])) == EXPECTED[name]


def test_header_blocks_have_go_layout_before_compression() -> None:
    # count, then (length, name, length, value): values of one name joined by NUL, names lower-cased.
    block = spdy.encode_header_block({"StreamType": ["error"], "a": ["1", "2"]})
    assert block == (
        b"\x00\x00\x00\x02"
        b"\x00\x00\x00\x0astreamtype\x00\x00\x00\x05error"
        b"\x00\x00\x00\x01a\x00\x00\x00\x031\x002"
    )
    assert spdy.decode_header_block(block.replace(b"StreamType", b"streamtype")) == {
        "streamtype": ["error"],
        "a": ["1", "2"],
    }
    # Go's writer: the same block, compressed with the dictionary and a sync flush.
    inflate = zlib.decompressobj(zdict=spdy.DICTIONARY)
    go_block = bytes.fromhex(GO["syn_stream_error"])[18:]
    assert inflate.decompress(go_block) == b"\x00\x00\x00\x01\x00\x00\x00\x0astreamtype\x00\x00\x00\x05error"


def test_apiserver_exec_session_decodes_whole_and_byte_by_byte() -> None:
    assert spdy.frames_of(APISERVER_EXEC) == APISERVER_EXEC_FRAMES
    decoder = FrameDecoder()
    frames = [f for byte in APISERVER_EXEC for f in decoder.feed(bytes([byte]))]
    assert frames == APISERVER_EXEC_FRAMES


@pytest.mark.parametrize("split", [1, 7, 8, 9, 49, 50, 100, 162, 168])
def test_apiserver_exec_session_split_anywhere(split: int) -> None:
    decoder = FrameDecoder()
    frames = decoder.feed(APISERVER_EXEC[:split]) + decoder.feed(APISERVER_EXEC[split:])
    assert frames == APISERVER_EXEC_FRAMES


def test_one_zlib_stream_per_direction() -> None:
    """Blocks depend on the ones before them: a fresh decoder cannot read the second block alone."""
    three = bytes.fromhex(GO["syn_stream_three"])
    second = three[49:80]  # the second SYN_STREAM: 8 + 0x17 bytes
    with pytest.raises(SpdyError) as caught:
        FrameDecoder().feed(second)
    assert caught.value.stream_id == 0  # the shared state is lost: a connection error
    # Ours: the second of two identical blocks is much shorter (it refers to the first).
    encoder = FrameEncoder()
    first = encoder.encode(SynStream(1, {"streamtype": ["stdout"]}))
    again = encoder.encode(SynStream(3, {"streamtype": ["stdout"]}))
    assert len(again) < len(first)
    assert spdy.frames_of(first + again) == [
        SynStream(1, {"streamtype": ["stdout"]}),
        SynStream(3, {"streamtype": ["stdout"]}),
    ]


@pytest.mark.parametrize(
    "frame",
    [
        SynStream(0x7FFFFFFF, {"x": ["y" * 70000]}, associated_to=9, priority=3, slot=2),
        SynReply(9, {"a": ["", "b", ""], "c": ["\xe9"]}),
        HeadersFrame(11, {}, fin=True),
        Data(0x7FFFFFFF, b"\x00" * 70000, fin=True),
        Settings((Setting(1, 0xFFFFFFFF, 3),), clear=True),
        Ping(0xFFFFFFFF),
        GoAway(0, spdy.GoAwayStatus.INTERNAL_ERROR),
        WindowUpdate(0, 0x7FFFFFFF),
        RstStream(1, RstStatus.FRAME_TOO_LARGE),
    ],
)
def test_round_trip_edge_values(frame: spdy.Frame) -> None:
    assert spdy.frames_of(spdy.encode_all([frame])) == [frame]


BAD = [
    ("version 2", "800200060000000400000001", 0),
    ("data on stream 0", "000000000000000161", 0),
    ("rst length 4", "800300030000000400000001", 0),
    ("rst status 0", "80030003000000080000000100000000", 1),
    ("rst stream 0", "80030003000000080000000000000005", 0),
    ("ping length 8", "80030006000000080000000100000002", 0),
    ("goaway length 4", "800300070000000400000001", 0),
    ("window update delta 0", "80030009000000080000000300000000", 3),
    ("settings count too big", "800300040000000c000000020000000700010000", 0),
    ("syn_stream too short", "800300010000000400000001", 0),
    ("garbage header block", "800300020000000800000001deadbeef", 0),
]


@pytest.mark.parametrize(("what", "hexed", "stream_id"), BAD, ids=[b[0] for b in BAD])
def test_malformed_frames_raise(what: str, hexed: str, stream_id: int) -> None:
    with pytest.raises(SpdyError) as caught:
        FrameDecoder().feed(bytes.fromhex(hexed))
    assert caught.value.stream_id == stream_id, what


def _block_frame(raw_block: bytes, stream_id: int = 1) -> bytes:
    """A SYN_REPLY carrying ``raw_block`` compressed properly."""
    deflate = zlib.compressobj(zdict=spdy.DICTIONARY)
    compressed = deflate.compress(raw_block) + deflate.flush(zlib.Z_SYNC_FLUSH)
    payload = stream_id.to_bytes(4, "big") + compressed
    return bytes.fromhex("80030002") + len(payload).to_bytes(4, "big") + payload


@pytest.mark.parametrize(
    ("what", "block", "message"),
    [
        ("upper case name", b"\0\0\0\1\0\0\0\1A\0\0\0\1x", "not lower-case"),
        ("duplicate name", b"\0\0\0\2\0\0\0\1a\0\0\0\1x\0\0\0\1a\0\0\0\1y", "twice"),
        ("truncated", b"\0\0\0\1\0\0\0\5ab", "truncated"),
        ("trailing", b"\0\0\0\0junk", "trailing"),
        ("empty name", b"\0\0\0\1\0\0\0\0\0\0\0\1x", "empty header name"),
        ("count over limit", b"\0\0\x03\xe9", "more than 1000"),
    ],
)
def test_bad_header_blocks_are_stream_errors(what: str, block: bytes, message: str) -> None:
    with pytest.raises(SpdyError, match=message) as caught:
        FrameDecoder().feed(_block_frame(block, stream_id=5))
    assert caught.value.stream_id == 5, what


def test_decoder_goes_on_after_a_stream_error_in_a_header_block() -> None:
    """The block still passes through the shared zlib stream, so the next one decodes."""
    encoder = FrameEncoder()
    good = encoder.encode(SynReply(3, {"ok": ["1"]}))
    deflate = encoder._deflate  # the bad block goes into the same zlib stream, between two good ones
    bad_block = b"\0\0\0\1\0\0\0\1A\0\0\0\1x"
    compressed = deflate.compress(bad_block) + deflate.flush(zlib.Z_SYNC_FLUSH)
    payload = (1).to_bytes(4, "big") + compressed
    bad = bytes.fromhex("80030002") + len(payload).to_bytes(4, "big") + payload
    decoder = FrameDecoder()
    decoder.receive(good + bad + encoder.encode(SynReply(3, {"ok": ["2"]})))
    assert decoder.next_frame() == SynReply(3, {"ok": ["1"]})
    with pytest.raises(SpdyError) as caught:
        decoder.next_frame()
    assert caught.value.stream_id == 1
    assert decoder.next_frame() == SynReply(3, {"ok": ["2"]})


def test_unknown_control_frames_are_skipped_and_oversized_frames_refused() -> None:
    unknown = bytes.fromhex("8003000a00000003010203")  # type 10 (CREDENTIAL in SPDY/3)
    assert FrameDecoder().feed(unknown + bytes.fromhex(GO["ping"])) == [Ping(1)]
    decoder = FrameDecoder(max_frame=4)
    with pytest.raises(SpdyError, match="exceeds"):
        decoder.feed(bytes.fromhex(GO["data"]))
    # The oversized frame is skipped: what follows still decodes.
    assert decoder.feed(bytes.fromhex(GO["ping"])) == [Ping(1)]


def test_header_block_size_limit() -> None:
    big = spdy.encode_all([SynReply(1, {"a": ["x" * 5000]})])
    with pytest.raises(SpdyError, match="larger than"):
        FrameDecoder(max_header_block=1000).feed(big)


def test_encoder_rejects_invalid_frames() -> None:
    encoder = FrameEncoder()
    for frame in (Data(0, b""), RstStream(0, 5), SynReply(0x80000000, {}), WindowUpdate(1, 0)):
        with pytest.raises(ValueError):
            encoder.encode(frame)
    with pytest.raises(ValueError):
        encoder.encode(Data(1, b"\0" * (spdy.MAX_LENGTH + 1)))


# -- Connection ------------------------------------------------------------------------------------------
def _client_server() -> tuple[Connection, Connection]:
    return Connection(client=True), Connection(client=False)


def _pump(source: Connection, sink: Connection) -> list[spdy.Event]:
    return sink.receive_data(source.data_to_send())


def test_server_answers_the_apiserver_exec_session() -> None:
    server = Connection(client=False)
    events = server.receive_data(APISERVER_EXEC)
    assert events == [
        StreamOpened(1, {"streamtype": ["error"]}),
        StreamOpened(3, {"streamtype": ["stdin"]}),
        StreamOpened(5, {"streamtype": ["stdout"]}),
        StreamOpened(7, {"streamtype": ["stderr"]}),
        DataReceived(3, b"hello spdy\n"),
        StreamEnded(3),
    ]
    for stream_id in (1, 3, 5, 7):
        server.reply(stream_id)
    server.send_data(5, b"hello spdy\n", fin=True)
    server.end_stream(7)
    server.send_data(1, b'{"metadata":{},"status":"Success"}', fin=True)
    server.end_stream(3)
    server.go_away()
    assert server.open_streams == [1, 5, 7]  # the client has not closed its halves of these
    assert spdy.frames_of(server.data_to_send()) == [
        SynReply(1, {}),
        SynReply(3, {}),
        SynReply(5, {}),
        SynReply(7, {}),
        Data(5, b"hello spdy\n", fin=True),
        Data(7, b"", fin=True),
        Data(1, b'{"metadata":{},"status":"Success"}', fin=True),
        Data(3, b"", fin=True),
        GoAway(7),
    ]


def test_client_and_server_talk() -> None:
    client, server = _client_server()
    sid = client.open_stream(spdy.headers(streamType="stdout"))
    assert sid == 1
    assert _pump(client, server) == [StreamOpened(1, {"streamtype": ["stdout"]})]
    server.reply(1, {"x": ["y"]})
    server.send_data(1, b"abc")
    assert _pump(server, client) == [StreamReplied(1, {"x": ["y"]}), DataReceived(1, b"abc")]
    client.end_stream(1)
    assert _pump(client, server) == [StreamEnded(1)]
    assert server.stream_is_open(1)
    server.end_stream(1)
    assert not server.stream_is_open(1)  # closed both ways: forgotten
    assert _pump(server, client) == [StreamEnded(1)]
    assert client.open_streams == []
    with pytest.raises(StreamClosedError):
        server.send_data(1, b"late")


def test_pings_are_echoed_and_acknowledged() -> None:
    client, server = _client_server()
    ping_id = client.ping()
    assert ping_id == 1 and _pump(client, server) == []  # echoed, not an event
    assert _pump(server, client) == [PingAcknowledged(1)]
    assert server.ping() == 2
    _pump(server, client)
    assert _pump(client, server) == [PingAcknowledged(2)]


def test_peer_stream_ids_must_have_its_parity_and_grow() -> None:
    server = Connection(client=False)
    encoder = FrameEncoder()
    events = server.receive_data(encoder.encode(SynStream(2, {})))  # even: a server's id
    assert events == [StreamReset(2, RstStatus.PROTOCOL_ERROR, remote=False)]
    assert spdy.frames_of(server.data_to_send()) == [RstStream(2, RstStatus.PROTOCOL_ERROR)]
    server.receive_data(encoder.encode(SynStream(5, {})))
    events = server.receive_data(encoder.encode(SynStream(3, {})))
    assert events == [StreamReset(3, RstStatus.PROTOCOL_ERROR, remote=False)]


def test_resets_goaway_and_streams_after_goaway() -> None:
    client, server = _client_server()
    client.open_stream({})
    client.open_stream({})
    _pump(client, server)
    client.reset_stream(3)
    assert _pump(client, server) == [StreamReset(3, RstStatus.CANCEL)]
    assert server.open_streams == [1]
    server.go_away()
    assert _pump(server, client) == [GoAwayReceived(3, spdy.GoAwayStatus.OK)]
    client.open_stream({})
    assert _pump(client, server) == []  # ignored after our GOAWAY, as spdystream does


def test_data_for_unknown_or_closed_streams_is_dropped() -> None:
    client, server = _client_server()
    client.open_stream({}, fin=True)
    assert _pump(client, server) == [StreamOpened(1, {}), StreamEnded(1)]
    encoder = FrameEncoder()
    assert server.receive_data(encoder.encode(Data(1, b"after fin"))) == []
    assert server.receive_data(encoder.encode(Data(9, b"never opened"))) == []


def test_connection_errors_send_goaway_and_stop() -> None:
    server = Connection(client=False)
    events = server.receive_data(bytes.fromhex("800200060000000400000001"))
    assert isinstance(events[-1], spdy.ConnectionTerminated)
    assert spdy.frames_of(server.data_to_send()) == [GoAway(0, spdy.GoAwayStatus.PROTOCOL_ERROR)]
    assert server.receive_data(bytes.fromhex(GO["ping"])) == []


def test_receive_windows_are_granted_back_send_windows_are_advisory() -> None:
    client, server = _client_server()
    client.open_stream({})
    _pump(client, server)
    server.reply(1)
    client.receive_data(server.data_to_send())
    client.send_data(1, b"x" * 40000)  # more than half the 64 KiB window
    events = _pump(client, server)
    assert events == [DataReceived(1, b"x" * 40000)]
    assert spdy.frames_of(server.data_to_send()) == [WindowUpdate(1, 40000), WindowUpdate(0, 40000)]
    # spdystream never grants windows: sending goes on past them (tracked, not enforced).
    server.send_data(1, b"y" * 100000)
    assert server.send_window(1) < 0
    assert [len(f.data) for f in spdy.frames_of(server.data_to_send()) if isinstance(f, Data)] == [
        65536,
        34464,
    ]


def test_settings_initial_window_applies_to_streams() -> None:
    client, server = _client_server()
    client.open_stream({})
    _pump(client, server)
    encoder = FrameEncoder()
    events = server.receive_data(
        encoder.encode(Settings((Setting(spdy.SettingId.INITIAL_WINDOW_SIZE, 1000),)))
    )
    assert events == [spdy.SettingsReceived((Setting(7, 1000),))]
    assert server.send_window(1) == 1000
    server.receive_data(encoder.encode(WindowUpdate(1, 24)))
    assert server.send_window(1) == 1024


def test_reply_rules() -> None:
    client, server = _client_server()
    client.open_stream({})
    _pump(client, server)
    with pytest.raises(StreamClosedError):
        server.send_data(1, b"before the reply")
    server.reply(1, fin=True)
    with pytest.raises(StreamClosedError):
        server.reply(1)
    assert _pump(server, client) == [StreamReplied(1, {}), StreamEnded(1)]
