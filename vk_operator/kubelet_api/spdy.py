"""SPDY/3.1 framing and connection state, sans-I/O.

What the apiserver speaks to a kubelet for exec, attach and port-forward (``Upgrade: SPDY/3.1``,
via ``github.com/moby/spdystream``). No maintained Python SPDY library exists, so this is our own,
written against draft-mbelshe-httpbis-spdy-00 (SPDY/3) + the SPDY/3.1 changes, and against what
spdystream v0.5.1 really does:

* Frames: a control frame is ``1 | version(15) | type(16) | flags(8) | length(24) | payload``, a
  data frame ``0 | stream id(31) | flags(8) | length(24) | data``. SYN_STREAM, SYN_REPLY and
  HEADERS carry a name/value header block (``count, (len, name, len, value)*``, 32-bit lengths,
  names lower-case, several values of one name joined by NUL), compressed with zlib using the
  SPDY/3 dictionary. Each direction keeps ONE zlib stream for the whole connection, flushed with
  Z_SYNC_FLUSH after each block, so blocks must be decoded in order and exactly once.
* Flow control: SPDY/3.1 has per-stream and session windows (64 KiB initially). spdystream neither
  sends WINDOW_UPDATE nor honours one, so a sender that waited for window would stall after 64 KiB:
  :class:`Connection` tracks the peer's windows but never blocks on them, and grants its own
  windows back (WINDOW_UPDATE) as data arrives, which spdystream ignores and spec-abiding peers need.
* PING: a ping whose id has the peer's parity (odd from a client) is echoed; ours come back as
  :class:`PingAcknowledged`. The apiserver pings every 5 s.

:class:`FrameDecoder` turns bytes into frames (partial input welcome), :class:`FrameEncoder` frames
into bytes; :class:`Connection` adds stream bookkeeping and turns frames into events. Nothing here
does I/O: feed ``receive_data`` with what the socket read and write out ``data_to_send()``.
"""

from __future__ import annotations

import dataclasses
import enum
import struct
import zlib
from collections.abc import Iterable, Mapping, Sequence

VERSION = 3
MAX_LENGTH = 0xFFFFFF  # 24-bit length field
MAX_STREAM_ID = 0x7FFFFFFF
DEFAULT_WINDOW = 65536
DEFAULT_MAX_HEADER_COUNT = 1000  # spdystream's limits
DEFAULT_MAX_HEADER_FIELD = 1 << 20
DEFAULT_MAX_HEADER_BLOCK = 1 << 20  # decompressed bytes of one header block
DEFAULT_MAX_FRAME = MAX_LENGTH

FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02
FLAG_SETTINGS_CLEAR = 0x01

# The SPDY/3 header compression dictionary (spdystream spdy/dictionary.go): length-prefixed words,
# then plain text. 1423 bytes, zlib dictionary id (Adler-32) 0xe3c6a7c2.
_WORDS = (
    "options", "head", "post", "put", "delete", "trace", "accept", "accept-charset", "accept-encoding",
    "accept-language", "accept-ranges", "age", "allow", "authorization", "cache-control", "connection",
    "content-base", "content-encoding", "content-language", "content-length", "content-location",
    "content-md5", "content-range", "content-type", "date", "etag", "expect", "expires", "from", "host",
    "if-match", "if-modified-since", "if-none-match", "if-range", "if-unmodified-since", "last-modified",
    "location", "max-forwards", "pragma", "proxy-authenticate", "proxy-authorization", "range",
    "referer", "retry-after", "server", "te", "trailer", "transfer-encoding", "upgrade", "user-agent",
    "vary", "via", "warning", "www-authenticate", "method", "get", "status", "200 OK", "version",
    "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin",
)  # fmt: skip
_TEXT = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505203 "
    "Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 "
    "Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service "
    "UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, "
    "Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+x"
    "ml,text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-885"
    "9-1,utf-,*,enq=0."
)
DICTIONARY = b"".join(len(w).to_bytes(4, "big") + w.encode() for w in _WORDS) + _TEXT.encode()


class FrameType(enum.IntEnum):
    SYN_STREAM = 1
    SYN_REPLY = 2
    RST_STREAM = 3
    SETTINGS = 4
    PING = 6
    GOAWAY = 7
    HEADERS = 8
    WINDOW_UPDATE = 9


class RstStatus(enum.IntEnum):
    PROTOCOL_ERROR = 1
    INVALID_STREAM = 2
    REFUSED_STREAM = 3
    UNSUPPORTED_VERSION = 4
    CANCEL = 5
    INTERNAL_ERROR = 6
    FLOW_CONTROL_ERROR = 7
    STREAM_IN_USE = 8
    STREAM_ALREADY_CLOSED = 9
    INVALID_CREDENTIALS = 10  # SPDY/3 only
    FRAME_TOO_LARGE = 11


class GoAwayStatus(enum.IntEnum):
    OK = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2


class SettingId(enum.IntEnum):
    UPLOAD_BANDWIDTH = 1
    DOWNLOAD_BANDWIDTH = 2
    ROUND_TRIP_TIME = 3
    MAX_CONCURRENT_STREAMS = 4
    CURRENT_CWND = 5
    DOWNLOAD_RETRANS_RATE = 6
    INITIAL_WINDOW_SIZE = 7
    CLIENT_CERTIFICATE_VECTOR_SIZE = 8


class SpdyError(Exception):
    """A frame that breaks the protocol. ``stream_id`` 0: the whole connection is unusable."""

    def __init__(self, message: str, stream_id: int = 0, status: int = RstStatus.PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.stream_id = stream_id
        self.status = status


# Header blocks: lower-case names, each with one or more values (kept in order).
Headers = Mapping[str, Sequence[str]]


def headers(*pairs: tuple[str, str], **single: str) -> dict[str, list[str]]:
    """A header block from (name, value) pairs and keywords; repeated names collect values."""
    block: dict[str, list[str]] = {}
    for name, value in (*pairs, *single.items()):
        block.setdefault(name.lower(), []).append(value)
    return block


@dataclasses.dataclass(frozen=True)
class SynStream:
    stream_id: int
    headers: Headers = dataclasses.field(default_factory=dict)
    associated_to: int = 0
    priority: int = 0  # 0 (highest) .. 7
    slot: int = 0
    fin: bool = False
    unidirectional: bool = False


@dataclasses.dataclass(frozen=True)
class SynReply:
    stream_id: int
    headers: Headers = dataclasses.field(default_factory=dict)
    fin: bool = False


@dataclasses.dataclass(frozen=True)
class RstStream:
    stream_id: int
    status: int


@dataclasses.dataclass(frozen=True)
class Setting:
    id: int
    value: int
    flags: int = 0  # FLAG_SETTINGS_PERSIST_VALUE 0x1, FLAG_SETTINGS_PERSISTED 0x2


@dataclasses.dataclass(frozen=True)
class Settings:
    settings: tuple[Setting, ...] = ()
    clear: bool = False


@dataclasses.dataclass(frozen=True)
class Ping:
    id: int


@dataclasses.dataclass(frozen=True)
class GoAway:
    last_good_stream_id: int
    status: int = GoAwayStatus.OK


@dataclasses.dataclass(frozen=True)
class HeadersFrame:
    stream_id: int
    headers: Headers = dataclasses.field(default_factory=dict)
    fin: bool = False


@dataclasses.dataclass(frozen=True)
class WindowUpdate:
    stream_id: int  # 0: the session window (SPDY/3.1)
    delta: int


@dataclasses.dataclass(frozen=True)
class Data:
    stream_id: int
    data: bytes = b""
    fin: bool = False


Frame = SynStream | SynReply | RstStream | Settings | Ping | GoAway | HeadersFrame | WindowUpdate | Data

_HEAD = struct.Struct(">II")
_U32 = struct.Struct(">I")
_U32x2 = struct.Struct(">II")


# -- header blocks -------------------------------------------------------------------------------------
def encode_header_block(block: Headers) -> bytes:
    """The uncompressed name/value block; names are lower-cased, values joined by NUL."""
    parts = [_U32.pack(len(block))]
    for name, values in block.items():
        raw_name = name.lower().encode("latin-1")
        raw_value = "\x00".join(values).encode("latin-1")
        parts += [_U32.pack(len(raw_name)), raw_name, _U32.pack(len(raw_value)), raw_value]
    return b"".join(parts)


def decode_header_block(
    raw: bytes,
    stream_id: int = 0,
    *,
    max_count: int = DEFAULT_MAX_HEADER_COUNT,
    max_field: int = DEFAULT_MAX_HEADER_FIELD,
) -> dict[str, list[str]]:
    """Parse an uncompressed block; SpdyError (a stream error) when malformed."""
    view = memoryview(raw)

    def u32(at: int) -> int:
        if at + 4 > len(view):
            raise SpdyError("truncated header block", stream_id)
        value: int = _U32.unpack_from(view, at)[0]
        return value

    def field(at: int, what: str) -> tuple[str, int]:
        length = u32(at)
        if length > max_field:
            raise SpdyError(f"header {what} longer than {max_field} bytes", stream_id)
        start = at + 4
        if start + length > len(view):
            raise SpdyError("truncated header block", stream_id)
        return bytes(view[start : start + length]).decode("latin-1"), start + length

    count = u32(0)
    if count > max_count:
        raise SpdyError(f"more than {max_count} headers", stream_id)
    block: dict[str, list[str]] = {}
    at = 4
    for _ in range(count):
        name, at = field(at, "name")
        value, at = field(at, "value")
        if not name:
            raise SpdyError("empty header name", stream_id)
        if name != name.lower():
            raise SpdyError(f"header name {name!r} is not lower-case", stream_id)
        if name in block:
            raise SpdyError(f"header {name!r} appears twice", stream_id)
        block[name] = value.split("\x00")
    if at != len(view):
        raise SpdyError("trailing bytes after the header block", stream_id)
    return block


# -- encoder -----------------------------------------------------------------------------------------------
def _control(frame_type: int, flags: int, payload: bytes) -> bytes:
    if len(payload) > MAX_LENGTH:
        raise ValueError(f"control frame payload of {len(payload)} bytes exceeds {MAX_LENGTH}")
    return _HEAD.pack(0x80000000 | VERSION << 16 | frame_type, flags << 24 | len(payload)) + payload


def _check_stream_id(stream_id: int) -> None:
    if not 0 < stream_id <= MAX_STREAM_ID:
        raise ValueError(f"invalid stream id {stream_id}")


class FrameEncoder:
    """Frames to bytes. Keeps the outgoing zlib stream: encode every frame of one direction here,
    in the order they are sent."""

    def __init__(self) -> None:
        self._deflate = zlib.compressobj(9, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY, DICTIONARY)

    def _compress(self, block: Headers) -> bytes:
        return self._deflate.compress(encode_header_block(block)) + self._deflate.flush(zlib.Z_SYNC_FLUSH)

    def encode(self, frame: Frame) -> bytes:
        match frame:
            case Data(stream_id, data, fin):
                _check_stream_id(stream_id)
                if len(data) > MAX_LENGTH:
                    raise ValueError(f"data frame of {len(data)} bytes exceeds {MAX_LENGTH}")
                return _HEAD.pack(stream_id, (FLAG_FIN if fin else 0) << 24 | len(data)) + bytes(data)
            case SynStream():
                _check_stream_id(frame.stream_id)
                flags = (FLAG_FIN if frame.fin else 0) | (FLAG_UNIDIRECTIONAL if frame.unidirectional else 0)
                head = _U32x2.pack(frame.stream_id, frame.associated_to) + bytes(
                    [(frame.priority & 0x7) << 5, frame.slot & 0xFF]
                )
                return _control(FrameType.SYN_STREAM, flags, head + self._compress(frame.headers))
            case SynReply(stream_id, block, fin):
                _check_stream_id(stream_id)
                payload = _U32.pack(stream_id) + self._compress(block)
                return _control(FrameType.SYN_REPLY, FLAG_FIN if fin else 0, payload)
            case HeadersFrame(stream_id, block, fin):
                _check_stream_id(stream_id)
                payload = _U32.pack(stream_id) + self._compress(block)
                return _control(FrameType.HEADERS, FLAG_FIN if fin else 0, payload)
            case RstStream(stream_id, status):
                _check_stream_id(stream_id)
                return _control(FrameType.RST_STREAM, 0, _U32x2.pack(stream_id, status))
            case Settings(settings, clear):
                payload = _U32.pack(len(settings)) + b"".join(
                    _U32x2.pack((s.flags & 0xFF) << 24 | (s.id & 0xFFFFFF), s.value) for s in settings
                )
                return _control(FrameType.SETTINGS, FLAG_SETTINGS_CLEAR if clear else 0, payload)
            case Ping(ping_id):
                return _control(FrameType.PING, 0, _U32.pack(ping_id))
            case GoAway(last_good, status):
                return _control(FrameType.GOAWAY, 0, _U32x2.pack(last_good, status))
            case WindowUpdate(stream_id, delta):
                if not 0 < delta <= MAX_STREAM_ID:
                    raise ValueError(f"invalid window delta {delta}")
                return _control(FrameType.WINDOW_UPDATE, 0, _U32x2.pack(stream_id, delta))
        raise TypeError(f"not a SPDY frame: {frame!r}")


# -- decoder -----------------------------------------------------------------------------------------------
class FrameDecoder:
    """Bytes to frames; feed any amount (one byte at a time works). Keeps the incoming zlib stream.

    Raises SpdyError: with a stream id for a stream error (the connection goes on), with 0 for a
    connection error (nothing after it can be trusted). Unknown control frame types are skipped,
    as the spec asks.
    """

    def __init__(
        self,
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        max_header_block: int = DEFAULT_MAX_HEADER_BLOCK,
        max_header_count: int = DEFAULT_MAX_HEADER_COUNT,
        max_header_field: int = DEFAULT_MAX_HEADER_FIELD,
    ) -> None:
        self._buffer = bytearray()
        self._inflate = zlib.decompressobj(15, DICTIONARY)
        self.max_frame = max_frame
        self.max_header_block = max_header_block
        self.max_header_count = max_header_count
        self.max_header_field = max_header_field
        self._skip = 0  # bytes of an oversized/unknown frame still to discard

    def receive(self, data: bytes) -> None:
        """Buffer ``data``; take the frames out with :meth:`next_frame`."""
        self._buffer += data

    def feed(self, data: bytes) -> list[Frame]:
        """Buffer ``data`` and return every frame it completes (raises on the first bad one)."""
        self.receive(data)
        frames: list[Frame] = []
        while (frame := self.next_frame()) is not None:
            frames.append(frame)
        return frames

    def next_frame(self) -> Frame | None:
        """The next complete frame in the buffer, or None when more bytes are needed."""
        while True:
            if self._skip:
                dropped = min(self._skip, len(self._buffer))
                del self._buffer[:dropped]
                self._skip -= dropped
                if self._skip:
                    return None
            if len(self._buffer) < 8:
                return None
            first, flags_length = _HEAD.unpack_from(self._buffer)
            flags, length = flags_length >> 24, flags_length & MAX_LENGTH
            if length > self.max_frame:
                self._skip = 8 + length
                raise SpdyError(f"frame of {length} bytes exceeds the limit of {self.max_frame}")
            if len(self._buffer) < 8 + length:
                return None
            payload = bytes(self._buffer[8 : 8 + length])
            del self._buffer[: 8 + length]
            if first & 0x80000000:
                version, frame_type = (first >> 16) & 0x7FFF, first & 0xFFFF
                if version != VERSION:
                    raise SpdyError(f"unsupported SPDY version {version}")
                frame = self._control(frame_type, flags, payload)
                if frame is None:
                    continue  # unknown control frame: ignored
                return frame
            stream_id = first & MAX_STREAM_ID
            if stream_id == 0:
                raise SpdyError("data frame on stream 0")
            return Data(stream_id, payload, bool(flags & FLAG_FIN))

    def _headers(self, compressed: bytes, stream_id: int) -> dict[str, list[str]]:
        # Always run the bytes through the shared zlib stream (even when the stream turns out to be
        # in error) so that later blocks still decode.
        try:
            raw = self._inflate.decompress(compressed, self.max_header_block + 1)
        except zlib.error as exc:
            raise SpdyError(f"header block does not decompress: {exc}") from exc
        if len(raw) > self.max_header_block or self._inflate.unconsumed_tail:
            raise SpdyError(f"header block larger than {self.max_header_block} bytes")
        return decode_header_block(
            raw, stream_id, max_count=self.max_header_count, max_field=self.max_header_field
        )

    def _control(self, frame_type: int, flags: int, payload: bytes) -> Frame | None:
        def need(size: int, exact: bool = True) -> None:
            if len(payload) < size or (exact and len(payload) != size):
                raise SpdyError(f"{FrameType(frame_type).name} frame of {len(payload)} bytes is malformed")

        def stream_of(value: int) -> int:
            stream_id = value & MAX_STREAM_ID
            if stream_id == 0:
                raise SpdyError(f"{FrameType(frame_type).name} on stream 0")
            return stream_id

        match frame_type:
            case FrameType.SYN_STREAM:
                need(10, exact=False)
                raw_id, associated = _U32x2.unpack_from(payload)
                block = self._headers(payload[10:], raw_id & MAX_STREAM_ID)
                return SynStream(
                    stream_of(raw_id),
                    block,
                    associated & MAX_STREAM_ID,
                    payload[8] >> 5,
                    payload[9],
                    bool(flags & FLAG_FIN),
                    bool(flags & FLAG_UNIDIRECTIONAL),
                )
            case FrameType.SYN_REPLY | FrameType.HEADERS:
                need(4, exact=False)
                raw_id = _U32.unpack_from(payload)[0]
                block = self._headers(payload[4:], raw_id & MAX_STREAM_ID)
                kind = SynReply if frame_type == FrameType.SYN_REPLY else HeadersFrame
                return kind(stream_of(raw_id), block, bool(flags & FLAG_FIN))
            case FrameType.RST_STREAM:
                need(8)
                raw_id, status = _U32x2.unpack(payload)
                if status == 0:
                    raise SpdyError("RST_STREAM with status 0", raw_id & MAX_STREAM_ID)
                return RstStream(stream_of(raw_id), status)
            case FrameType.SETTINGS:
                need(4, exact=False)
                count = _U32.unpack_from(payload)[0]
                if len(payload) != 4 + 8 * count:
                    raise SpdyError(f"SETTINGS frame of {len(payload)} bytes announces {count} entries")
                entries = []
                for at in range(4, len(payload), 8):
                    flags_id, value = _U32x2.unpack_from(payload, at)
                    entries.append(Setting(flags_id & 0xFFFFFF, value, flags_id >> 24))
                return Settings(tuple(entries), bool(flags & FLAG_SETTINGS_CLEAR))
            case FrameType.PING:
                need(4)
                return Ping(_U32.unpack(payload)[0])
            case FrameType.GOAWAY:
                need(8)
                last_good, status = _U32x2.unpack(payload)
                return GoAway(last_good & MAX_STREAM_ID, status)
            case FrameType.WINDOW_UPDATE:
                need(8)
                raw_id, delta = _U32x2.unpack(payload)
                delta &= MAX_STREAM_ID
                if delta == 0:
                    raise SpdyError("WINDOW_UPDATE with delta 0", raw_id & MAX_STREAM_ID)
                return WindowUpdate(raw_id & MAX_STREAM_ID, delta)
        return None


# -- connection ----------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class StreamOpened:
    """The peer opened a stream (SYN_STREAM); answer with :meth:`Connection.reply` or reset it."""

    stream_id: int
    headers: Headers
    associated_to: int = 0
    priority: int = 0


@dataclasses.dataclass(frozen=True)
class StreamReplied:
    """The peer accepted a stream we opened (SYN_REPLY)."""

    stream_id: int
    headers: Headers


@dataclasses.dataclass(frozen=True)
class HeadersReceived:
    stream_id: int
    headers: Headers


@dataclasses.dataclass(frozen=True)
class DataReceived:
    stream_id: int
    data: bytes


@dataclasses.dataclass(frozen=True)
class StreamEnded:
    """The peer half-closed the stream (FIN): it sends nothing more on it."""

    stream_id: int


@dataclasses.dataclass(frozen=True)
class StreamReset:
    """RST_STREAM from the peer (``remote``) or sent by us because of its error."""

    stream_id: int
    status: int
    remote: bool = True


@dataclasses.dataclass(frozen=True)
class PingAcknowledged:
    id: int


@dataclasses.dataclass(frozen=True)
class SettingsReceived:
    settings: tuple[Setting, ...]


@dataclasses.dataclass(frozen=True)
class GoAwayReceived:
    last_good_stream_id: int
    status: int


@dataclasses.dataclass(frozen=True)
class ConnectionTerminated:
    """A connection error: we sent GOAWAY; close the transport once the output is written."""

    message: str


Event = (
    StreamOpened
    | StreamReplied
    | HeadersReceived
    | DataReceived
    | StreamEnded
    | StreamReset
    | PingAcknowledged
    | SettingsReceived
    | GoAwayReceived
    | ConnectionTerminated
)


@dataclasses.dataclass
class _Stream:
    id: int
    local_closed: bool = False  # we sent FIN (or reset)
    remote_closed: bool = False  # the peer sent FIN (or reset)
    replied: bool = False
    send_window: int = DEFAULT_WINDOW
    unacked: int = 0  # received bytes not yet granted back


class StreamClosedError(Exception):
    """Sending on a stream that is closed (for sending) or unknown."""


class Connection:
    """One SPDY/3.1 session, either side. Feed it bytes, act on the events, send its bytes."""

    def __init__(self, *, client: bool, window: int = DEFAULT_WINDOW) -> None:
        self.client = client
        self._decoder = FrameDecoder()
        self._encoder = FrameEncoder()
        self._out = bytearray()
        self._streams: dict[int, _Stream] = {}
        self._next_stream_id = 1 if client else 2
        self._last_peer_stream_id = 0
        self._next_ping_id = 1 if client else 2
        self._window = window
        self._session_unacked = 0
        self.session_send_window = DEFAULT_WINDOW
        self.initial_send_window = DEFAULT_WINDOW
        self.go_away_sent = False
        self.go_away_received = False
        self.terminated = False

    # -- output --------------------------------------------------------------------------------
    def data_to_send(self) -> bytes:
        out, self._out = bytes(self._out), bytearray()
        return out

    def _send(self, frame: Frame) -> None:
        self._out += self._encoder.encode(frame)

    # -- queries -------------------------------------------------------------------------------
    @property
    def open_streams(self) -> list[int]:
        return sorted(self._streams)

    def stream_is_open(self, stream_id: int) -> bool:
        return stream_id in self._streams

    def send_window(self, stream_id: int) -> int:
        """The peer's advertised window (advisory: sends never wait for it, see the module doc)."""
        stream = self._streams.get(stream_id)
        return min(stream.send_window if stream else 0, self.session_send_window)

    # -- actions -------------------------------------------------------------------------------
    def open_stream(
        self, block: Headers, *, fin: bool = False, associated_to: int = 0, priority: int = 0
    ) -> int:
        stream_id = self._next_stream_id
        if stream_id > MAX_STREAM_ID:
            raise StreamClosedError("stream ids exhausted")
        self._next_stream_id += 2
        stream = _Stream(stream_id, local_closed=fin, replied=True, send_window=self.initial_send_window)
        self._streams[stream_id] = stream
        self._send(SynStream(stream_id, block, associated_to, priority, fin=fin))
        return stream_id

    def reply(self, stream_id: int, block: Headers | None = None, *, fin: bool = False) -> None:
        stream = self._writable(stream_id)
        if stream.replied:
            raise StreamClosedError(f"stream {stream_id} was answered already")
        stream.replied = True
        self._send(SynReply(stream_id, block or {}, fin))
        if fin:
            self._close_local(stream)

    def send_headers(self, stream_id: int, block: Headers, *, fin: bool = False) -> None:
        stream = self._writable(stream_id)
        self._send(HeadersFrame(stream_id, block, fin))
        if fin:
            self._close_local(stream)

    def send_data(self, stream_id: int, data: bytes, *, fin: bool = False, chunk: int = 65536) -> None:
        """Queue ``data`` (split into frames of at most ``chunk`` bytes), FIN on the last one."""
        stream = self._writable(stream_id)
        if not stream.replied:
            raise StreamClosedError(f"stream {stream_id} is not answered yet")
        view = memoryview(data)
        for start in range(0, max(len(view), 1), chunk):
            piece = bytes(view[start : start + chunk])
            last = start + chunk >= len(view)
            self._send(Data(stream_id, piece, fin and last))
            stream.send_window -= len(piece)
            self.session_send_window -= len(piece)
        if fin:
            self._close_local(stream)

    def end_stream(self, stream_id: int) -> None:
        """Half-close: an empty data frame with FIN (what spdystream's Stream.Close sends)."""
        self.send_data(stream_id, b"", fin=True)

    def reset_stream(self, stream_id: int, status: int = RstStatus.CANCEL) -> None:
        self._send(RstStream(stream_id, status))
        self._streams.pop(stream_id, None)

    def ping(self) -> int:
        ping_id = self._next_ping_id
        self._next_ping_id = ping_id + 2 if ping_id < 0x7FFFFFFE else ping_id % 2 + 1
        self._send(Ping(ping_id))
        return ping_id

    def go_away(self, status: int = GoAwayStatus.OK) -> None:
        if self.go_away_sent:
            return
        self.go_away_sent = True
        self._send(GoAway(self._last_peer_stream_id, status))

    def _writable(self, stream_id: int) -> _Stream:
        stream = self._streams.get(stream_id)
        if stream is None or stream.local_closed:
            raise StreamClosedError(f"stream {stream_id} is closed")
        return stream

    def _close_local(self, stream: _Stream) -> None:
        stream.local_closed = True
        if stream.remote_closed:
            del self._streams[stream.id]

    def _close_remote(self, stream: _Stream) -> StreamEnded:
        stream.remote_closed = True
        if stream.local_closed:
            del self._streams[stream.id]
        return StreamEnded(stream.id)

    # -- input ---------------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> list[Event]:
        """Events for the frames completed by ``data``. Protocol errors are answered here (RST_STREAM
        for a stream, GOAWAY + :class:`ConnectionTerminated` for the connection)."""
        if self.terminated:
            return []
        self._decoder.receive(data)
        events: list[Event] = []
        while True:
            try:
                frame = self._decoder.next_frame()
            except SpdyError as exc:
                if exc.stream_id:
                    self.reset_stream(exc.stream_id, exc.status)
                    events.append(StreamReset(exc.stream_id, exc.status, remote=False))
                    continue
                self.go_away(GoAwayStatus.PROTOCOL_ERROR)
                self.terminated = True
                events.append(ConnectionTerminated(str(exc)))
                return events
            if frame is None:
                break
            events += self._handle(frame)
        self._grant_windows()
        return events

    def _peer_initiated(self, stream_id: int) -> bool:
        return stream_id % 2 == (0 if self.client else 1)

    def _handle(self, frame: Frame) -> list[Event]:
        match frame:
            case Data(stream_id, data, fin):
                stream = self._streams.get(stream_id)
                if stream is None or stream.remote_closed:
                    return []  # gone or reset: dropped, as spdystream does
                events: list[Event] = []
                if data:
                    stream.unacked += len(data)
                    self._session_unacked += len(data)
                    events.append(DataReceived(stream_id, data))
                if fin:
                    events.append(self._close_remote(stream))
                return events
            case SynStream():
                return self._stream_opened(frame)
            case SynReply(stream_id, block, fin):
                stream = self._streams.get(stream_id)
                if stream is None:
                    return []
                events = [StreamReplied(stream_id, block)]
                if fin:
                    events.append(self._close_remote(stream))
                return events
            case HeadersFrame(stream_id, block, fin):
                stream = self._streams.get(stream_id)
                if stream is None:
                    return []
                events = [HeadersReceived(stream_id, block)]
                if fin:
                    events.append(self._close_remote(stream))
                return events
            case RstStream(stream_id, status):
                if self._streams.pop(stream_id, None) is None:
                    return []
                return [StreamReset(stream_id, status)]
            case Settings(settings):
                for setting in settings:
                    if setting.id == SettingId.INITIAL_WINDOW_SIZE:
                        change = setting.value - self.initial_send_window
                        self.initial_send_window = setting.value
                        for stream in self._streams.values():
                            stream.send_window += change
                return [SettingsReceived(settings)]
            case Ping(ping_id):
                if ping_id % 2 == self._next_ping_id % 2:
                    return [PingAcknowledged(ping_id)]
                self._send(Ping(ping_id))  # the peer's ping: echo it
                return []
            case GoAway(last_good, status):
                self.go_away_received = True
                return [GoAwayReceived(last_good, status)]
            case WindowUpdate(stream_id, delta):
                if stream_id == 0:
                    self.session_send_window += delta
                elif stream_id in self._streams:
                    self._streams[stream_id].send_window += delta
                return []
        return []

    def _stream_opened(self, frame: SynStream) -> list[Event]:
        stream_id = frame.stream_id
        if self.go_away_sent:
            return []  # after GOAWAY new streams are ignored (spdystream does the same)
        if not self._peer_initiated(stream_id) or stream_id <= self._last_peer_stream_id:
            self.reset_stream(stream_id, RstStatus.PROTOCOL_ERROR)
            return [StreamReset(stream_id, RstStatus.PROTOCOL_ERROR, remote=False)]
        self._last_peer_stream_id = stream_id
        stream = _Stream(stream_id, send_window=self.initial_send_window)
        stream.local_closed = frame.unidirectional
        self._streams[stream_id] = stream
        events: list[Event] = [StreamOpened(stream_id, frame.headers, frame.associated_to, frame.priority)]
        if frame.fin:
            events.append(self._close_remote(stream))
        return events

    def _grant_windows(self) -> None:
        """Give received bytes back to the peer once half a window has been used."""
        threshold = self._window // 2
        for stream in self._streams.values():
            if stream.unacked >= threshold and not stream.remote_closed:
                self._send(WindowUpdate(stream.id, stream.unacked))
                stream.unacked = 0
        if self._session_unacked >= threshold:
            self._send(WindowUpdate(0, self._session_unacked))
            self._session_unacked = 0


def frames_of(data: bytes) -> list[Frame]:
    """Decode a complete byte string (tests and debugging)."""
    return FrameDecoder().feed(data)


def encode_all(frames: Iterable[Frame]) -> bytes:
    """Encode frames with one compressor, as one direction of a connection would (tests)."""
    encoder = FrameEncoder()
    return b"".join(encoder.encode(f) for f in frames)
