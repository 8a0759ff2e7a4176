"""The I/O side of the kubelet's streaming endpoints (exec, port-forward) over SPDY/3.1.

Shared by ``exec.py`` and ``portforward.py``: protocol negotiation as k8s.io/streaming's
``httpstream.Handshake`` does it, the 101 answer, and :class:`SpdySession`, which drives a
sans-I/O :class:`vk_operator.kubelet_api.spdy.Connection` on an upgraded aiohttp connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from vk_operator.kubelet_api import spdy

log = logging.getLogger(__name__)

PROTOCOL_HEADER = "X-Stream-Protocol-Version"
ACCEPTED_PROTOCOLS_HEADER = "X-Accepted-Stream-Protocol-Versions"
CLOSE_GRACE = 5.0  # after GOAWAY, how long to wait for the client to close its side
READ_PAUSE_BYTES = 1 << 20  # stop reading the socket while this much input waits unconsumed


def text(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=message.rstrip("\n") + "\n", headers=headers)


def negotiate(values: Sequence[str], supported: Sequence[str]) -> str | None:
    """The first of the client's protocols (comma-separated, repeated headers) that we speak."""
    offered = [p.strip() for value in values for p in value.split(",") if p.strip()]
    return next((p for p in offered if p in supported), None)


def check_upgrade(request: web.Request, supported: Sequence[str]) -> str | web.Response:
    """The negotiated protocol, or the kubelet's refusal (400 no SPDY upgrade or no protocol
    header, 403 no common protocol with the accepted ones listed)."""
    connection = request.headers.get("Connection", "").lower()
    upgrade = request.headers.get("Upgrade", "").lower()
    if "upgrade" not in connection or "spdy/3.1" not in upgrade:
        return text(400, "unable to upgrade: missing upgrade headers in request (Upgrade: SPDY/3.1)")
    offered = request.headers.getall(PROTOCOL_HEADER, [])
    if not offered:
        return text(400, f"unable to upgrade: header {PROTOCOL_HEADER} does not exist in request")
    protocol = negotiate(offered, supported)
    if protocol is None:
        return text(
            403,
            f"unable to upgrade: unable to negotiate protocol: client supports {offered}, "
            f"server accepts {list(supported)}",
            headers={ACCEPTED_PROTOCOLS_HEADER: ", ".join(supported)},
        )
    return protocol


class Channel:
    """One client-opened stream: its headers and, for input, what arrived."""

    def __init__(self, stream_id: int, headers: spdy.Headers) -> None:
        self.id = stream_id
        self.headers = headers
        self.kind = self.header("streamtype")
        self.chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.ended = False  # the client half-closed or reset it
        self.buffered = 0

    def header(self, name: str) -> str:
        return next(iter(self.headers.get(name, [""])), "")

    def end(self) -> None:
        if not self.ended:
            self.ended = True
            self.chunks.put_nowait(None)


Acceptor = Callable[[Channel], str | None]  # why a new stream is refused, or None


class SpdySession:
    """The aiohttp side of a sans-I/O :class:`spdy.Connection` (server role).

    Installed as the request protocol's payload parser *before* the 101 goes out: aiohttp treats
    only ``websocket`` and ``tcp`` upgrades as upgrades, so a SYN_STREAM arriving in between would
    otherwise go to its HTTP parser (seen: the apiserver's first frames were lost and exec hung).
    A client that goes away cancels the handler (``handler_cancellation``, set by KubeletServer),
    and with it the provider's work.

    New streams are answered at once (SYN_REPLY), as k8s.io/streaming's connection does, unless
    ``accept`` names a reason to refuse them (then RST_STREAM).
    """

    def __init__(self, request: web.Request, accept: Acceptor | None = None) -> None:
        self.request = request
        self.accept = accept
        self.conn = spdy.Connection(client=False)
        self.channels: dict[int, Channel] = {}
        self.opened: asyncio.Queue[Channel] = asyncio.Queue()
        self.closed = asyncio.Event()  # the client closed the connection (or we did)
        self.peer_done = asyncio.Event()  # GOAWAY from the client, or every stream closed
        self.writer: AbstractStreamWriter | None = None  # once the 101 is prepared
        self._reading_paused = False

    async def upgrade(self, protocol: str) -> web.StreamResponse:
        """Take over the connection and send ``101 Switching Protocols``."""
        response = UpgradeResponse(
            status=101,
            headers={"Connection": "Upgrade", "Upgrade": "SPDY/3.1", PROTOCOL_HEADER: protocol},
        )
        self.request.protocol.set_parser(self)  # type: ignore[arg-type]  # a duck-typed parser
        self.request.protocol.keep_alive(False)
        self.writer = await response.prepare(self.request)
        return response

    # aiohttp payload-parser interface (called from the protocol's data_received/connection_lost)
    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        for event in self.conn.receive_data(data):
            self._dispatch(event)
        self.flush()
        if self.conn.terminated:
            log.warning("SPDY protocol error from %s; closing", self.request.remote)
            self.close()
        return False, b""

    def feed_eof(self) -> None:
        self.closed.set()
        self.peer_done.set()
        for channel in self.channels.values():
            channel.end()

    def _dispatch(self, event: spdy.Event) -> None:
        match event:
            case spdy.StreamOpened(stream_id, headers):
                opened = Channel(stream_id, headers)
                refusal = self.accept(opened) if self.accept is not None else None
                if refusal is not None:
                    log.warning("stream %d refused: %s", stream_id, refusal)
                    self.conn.reset_stream(stream_id, spdy.RstStatus.REFUSED_STREAM)
                    return
                self.channels[stream_id] = opened
                with contextlib.suppress(spdy.StreamClosedError):
                    self.conn.reply(stream_id)
                self.opened.put_nowait(opened)
            case spdy.DataReceived(stream_id, data):
                receiving = self.channels.get(stream_id)
                if receiving is not None and not receiving.ended:
                    receiving.chunks.put_nowait(data)
                    receiving.buffered += len(data)
                    if receiving.buffered > READ_PAUSE_BYTES:
                        self._pause_reading()
            case spdy.StreamEnded(stream_id) | spdy.StreamReset(stream_id):
                ending = self.channels.get(stream_id)
                if ending is not None:
                    ending.end()
                self._check_done()
            case spdy.GoAwayReceived() | spdy.ConnectionTerminated():
                self.peer_done.set()

    def _check_done(self) -> None:
        if self.conn.go_away_sent and not self.conn.open_streams:
            self.peer_done.set()

    def _pause_reading(self) -> None:
        transport = self.request.transport
        if transport is not None and not self._reading_paused:
            self._reading_paused = True
            transport.pause_reading()

    def _consumed(self, channel: Channel, size: int) -> None:
        channel.buffered -= size
        if self._reading_paused and all(c.buffered <= READ_PAUSE_BYTES // 2 for c in self.channels.values()):
            transport = self.request.transport
            self._reading_paused = False
            if transport is not None:
                transport.resume_reading()

    # output
    def flush(self) -> None:
        data = self.conn.data_to_send()
        transport = self.request.transport
        if data and transport is not None and not transport.is_closing():
            transport.write(data)

    async def drain(self) -> None:
        self.flush()
        if self.writer is not None and not self.closed.is_set():
            await self.writer.drain()

    async def send(self, channel: Channel, data: bytes) -> None:
        """Data to the client on ``channel``; dropped when the client closed or reset it."""
        if not self.conn.stream_is_open(channel.id) or self.closed.is_set():
            return
        with contextlib.suppress(spdy.StreamClosedError):
            self.conn.send_data(channel.id, data)
        await self.drain()

    def send_now(self, channel: Channel, data: bytes) -> None:
        """:meth:`send` without waiting for the socket buffer to drain (for short messages)."""
        with contextlib.suppress(spdy.StreamClosedError):
            self.conn.send_data(channel.id, data)
        self.flush()

    def end(self, channel: Channel) -> None:
        """Half-close our side of ``channel`` (FIN), if still open."""
        with contextlib.suppress(spdy.StreamClosedError):
            self.conn.end_stream(channel.id)
        self.flush()

    def reset(self, channel: Channel) -> None:
        if self.conn.stream_is_open(channel.id):
            self.conn.reset_stream(channel.id)
        channel.end()
        self.flush()

    def forget(self, channel: Channel) -> None:
        """Drop a finished channel (long sessions open many)."""
        self.channels.pop(channel.id, None)

    async def input(self, channel: Channel) -> AsyncIterator[bytes]:
        """What the client sends on ``channel``, until it half-closes or resets it."""
        while (chunk := await channel.chunks.get()) is not None:
            self._consumed(channel, len(chunk))
            yield chunk

    async def goodbye(self, grace: float = CLOSE_GRACE) -> None:
        """GOAWAY, then let the client read everything and close its side (spdystream's Close)."""
        self.conn.go_away()
        self._check_done()
        await self.drain()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self.peer_done.wait()

    def close(self) -> None:
        transport = self.request.transport
        if transport is not None:
            transport.close()
        self.feed_eof()


class UpgradeResponse(web.StreamResponse):
    """The 101 answer; what follows is SPDY, written by the session: no HTTP end of body."""

    async def write_eof(self, data: bytes = b"") -> None:
        return None
