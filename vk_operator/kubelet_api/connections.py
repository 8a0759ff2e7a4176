"""Bounded connections for the kubelet API's listener (and the plain-HTTP operational one).

aiohttp's ``TCPSite`` accepts every connection, gives a TLS handshake 60 s and a request head as
long as the keep-alive timeout (about an hour for an ``AppRunner``): 10,000 idle connections took the
process from 111 to 472 MB (455 MB after they closed), and slowloris clients were never closed.
:class:`BoundedSite` listens instead, and for each connection:

* counts it against ``max_connections``. At the cap, the oldest connection that has not yet made an
  authenticated request (still in its TLS handshake, idle, dripping a request, or answered 401) is
  closed to make room, so a flood of idle connections cannot lock the apiserver out; when every
  connection belongs to an authenticated client, the new one is closed at once;
* accepts connections itself: one refused costs no transport, and an admitted one nothing but its
  socket until the client sends its first byte; then the loop takes it (``connect_accepted_socket``).
  The TLS handshake and the first request head together get ``first_request_timeout`` seconds
  from the accept;
* gives every later request head ``header_timeout`` seconds from its first byte, and a connection
  may idle ``idle_timeout`` seconds between requests (aiohttp's keep-alive timeout);
* times nothing once a request head is in: log streams, exec, attach and port-forward sessions last
  as long as they need (each request is authenticated and authorized on its own).

Connections closed by these limits, failed handshakes and malformed requests (a header over 8 KB,
garbage) are one line each at INFO (the cap at WARNING), at most one line per kind a minute, the
next one counting those suppressed meanwhile: never aiohttp's "Error handling request" traceback at
ERROR. After a flood (the open connections fell to a quarter of a high-water mark of
:data:`RELEASE_AFTER` or more) the freed memory is given back to the system.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import logging
import math
import resource
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from prometheus_client import Counter, Gauge

from vk_operator import memory, metrics

log = logging.getLogger(__name__)

RELEASE_AFTER = 200  # connections open at once that make a flood worth giving memory back after
RELEASE_EVERY = 10.0  # seconds: at most this often (a collection walks the whole heap)
RELEASE_DELAY = 2.0  # seconds after the flood ebbed: let the rest of it close first
LOG_EVERY = 60.0  # seconds between two lines of one kind
BACKLOG = 1024  # accept queue: a burst of connects is accepted (and judged) rather than dropped
TLS_HANDSHAKE_RECORD = b"\x16"  # the first byte of every ClientHello
ACCEPT_BATCH = 128  # connections accepted per wake-up of the listening socket

CONNECTIONS = Gauge(
    "vk_kubelet_api_connections", "Open connections, by listener", ["listener"], registry=metrics.REGISTRY
)
CONNECTIONS_CLOSED = Counter(
    "vk_kubelet_api_connections_closed_total",
    "Connections closed by the server's limits, by listener and reason "
    "(evicted, refused, deadline, handshake, bad-request)",
    ["listener", "reason"],
    registry=metrics.REGISTRY,
)


@dataclasses.dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int = 1000
    first_request_timeout: float = 10.0  # accept -> TLS handshake done and the first request head in
    header_timeout: float = 10.0  # first byte of a later request -> its head in
    idle_timeout: float = 120.0  # between requests (keep-alive); client-go closes its idle ones at 90 s


class RateLimitedLog:
    """At most one line per kind every ``interval`` seconds; the next line says how many were dropped."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = LOG_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self._next: dict[str, float] = {}
        self.suppressed: dict[str, int] = {}

    def log(self, level: int, kind: str, message: str, *args: object, **kwargs: Any) -> bool:
        now = self.clock()
        if now < self._next.get(kind, -math.inf):
            self.suppressed[kind] = self.suppressed.get(kind, 0) + 1
            return False
        self._next[kind] = now + self.interval
        dropped = self.suppressed.pop(kind, 0)
        if dropped:
            message += " (%d more like this since the last such line)"
            args = (*args, dropped)
        self.logger.log(level, message, *args, **kwargs)
        return True


def one_line(exc: BaseException, width: int = 160) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= width else text[: width - 3] + "..."


class Connection:
    """One accepted connection, from the accept to its close."""

    __slots__ = (
        "closed",
        "deadline",
        "handler",
        "in_request",
        "peer",
        "sock",
        "task",
        "timer",
        "transport",
        "trusted",
        "waiting",
    )

    def __init__(self, sock: socket.socket) -> None:
        self.sock: socket.socket | None = sock  # ours until the task hands it to the loop
        self.transport: asyncio.Transport | None = None  # once ready for HTTP (TLS done)
        try:
            self.peer = str(sock.getpeername()[0])
        except (OSError, IndexError, TypeError):
            self.peer = "?"
        self.timer: asyncio.TimerHandle | None = None
        self.deadline = math.inf
        self.trusted = False  # made an authenticated request: not evicted at the cap
        self.in_request = False
        self.closed = False
        self.handler: RequestHandler | None = None
        self.task: asyncio.Task[None] | None = None  # until the handshake is done
        self.waiting = False  # for its first byte, the socket in our reader

    def kill(self) -> None:
        """Close at once: no TLS close_notify to wait for, no response to finish."""
        if self.transport is not None:
            self.transport.abort()
        elif self.task is not None:
            self.task.cancel()  # in its handshake: the loop aborts the transport
        if self.sock is not None:  # not handed to the loop yet: nobody else owns the socket
            if self.waiting:
                asyncio.get_running_loop().remove_reader(self.sock.fileno())
                self.waiting = False
            self.sock.close()
            self.sock = None


class Connections:
    """The open connections of one listener: counted, capped, given deadlines."""

    def __init__(
        self,
        limits: ConnectionLimits | None = None,
        *,
        listener: str = "kubelet-api",
        release_memory: Callable[[], None] = memory.release,
    ) -> None:
        self.limits = limits or ConnectionLimits()
        self.listener = listener
        self._open: dict[Connection, None] = {}
        self._untrusted: dict[Connection, None] = {}  # insertion order: oldest first
        self.accepted = 0
        self.closed: dict[str, int] = {}
        self.peak = 0
        self.log = RateLimitedLog(log)
        self._release_memory = release_memory
        self._released_at = -math.inf
        self._release_handle: asyncio.TimerHandle | None = None
        self._gauge = CONNECTIONS.labels(listener)

    def __len__(self) -> int:
        return len(self._open)

    # -- accept, close -------------------------------------------------------------------------------
    def admit(self, sock: socket.socket) -> Connection | None:
        """A new connection within the cap (evicting the oldest untrusted one if need be), or None."""
        if len(self._open) >= self.limits.max_connections:
            if not self._untrusted:
                self._count("refused")
                self.log.log(
                    logging.WARNING,
                    "refused",
                    "%s: %d connections open, all of authenticated clients (the cap): refused a new one",
                    self.listener,
                    len(self._open),
                )
                return None
            self.close(next(iter(self._untrusted)), "evicted")
            self.log.log(
                logging.WARNING,
                "evicted",
                "%s: %d connections open (the cap): closed the oldest one without an authenticated "
                "request to accept a new one",
                self.listener,
                len(self._open) + 1,
            )
        conn = Connection(sock)
        self._open[conn] = None
        self._untrusted[conn] = None
        self.accepted += 1
        self.peak = max(self.peak, len(self._open))
        self._gauge.set(len(self._open))
        self.arm(conn, self.limits.first_request_timeout)
        return conn

    def close(self, conn: Connection, reason: str | None) -> None:
        """Close at once (no TLS close_notify to wait for) and free the slot; count why, if ours."""
        if conn.closed:
            return
        if reason is not None:
            self._count(reason)
        self.release(conn)
        conn.kill()

    def release(self, conn: Connection) -> None:
        """The connection is gone (idempotent)."""
        if conn.closed:
            return
        conn.closed = True
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        self._open.pop(conn, None)
        self._untrusted.pop(conn, None)
        self._gauge.set(len(self._open))
        if self.peak >= RELEASE_AFTER and len(self._open) <= self.peak // 4:
            self.peak = len(self._open)
            if self._release_handle is None:
                loop = asyncio.get_running_loop()
                self._release_handle = loop.call_later(RELEASE_DELAY, self._release)

    def _release(self) -> None:
        self._release_handle = None
        now = time.monotonic()
        wait = self._released_at + RELEASE_EVERY - now
        if wait > 0:  # released a moment ago: once more when allowed (floods come in waves)
            self._release_handle = asyncio.get_running_loop().call_later(wait, self._release)
            return
        self._released_at = now
        self._release_memory()
        log.debug("%s: released free memory after a flood of connections", self.listener)

    def abort_all(self) -> None:
        """At shutdown: close every connection aiohttp does not know about yet (in its handshake)."""
        for conn in list(self._open):
            if conn.handler is None:
                self.release(conn)
                conn.kill()
        if self._release_handle is not None:
            self._release_handle.cancel()
            self._release_handle = None

    def _count(self, reason: str) -> None:
        self.closed[reason] = self.closed.get(reason, 0) + 1
        CONNECTIONS_CLOSED.labels(self.listener, reason).inc()

    # -- deadlines -----------------------------------------------------------------------------------
    def arm(self, conn: Connection, seconds: float) -> None:
        """A request head must be in within ``seconds`` (unless a deadline runs already)."""
        if conn.timer is None and not conn.closed:
            loop = asyncio.get_running_loop()
            conn.deadline = loop.time() + seconds
            conn.timer = loop.call_at(conn.deadline, self._expire, conn, seconds)

    def _expire(self, conn: Connection, seconds: float) -> None:
        conn.timer = None
        if conn.closed:
            return
        self.log.log(
            logging.INFO,
            "deadline",
            "%s: closed a connection from %s: no complete request head within %.0f s",
            self.listener,
            conn.peer,
            seconds,
        )
        self.close(conn, "deadline")

    def request_started(self, conn: Connection) -> None:
        conn.in_request = True
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None

    def request_finished(self, conn: Connection) -> None:
        conn.in_request = False

    def trust(self, conn: Connection) -> None:
        conn.trusted = True
        self._untrusted.pop(conn, None)

    # -- the per-request view (middleware and the auth check) ------------------------------------------
    @staticmethod
    def of(request: web.BaseRequest) -> Connection | None:
        """The connection a request came on; None for one not served by a :class:`BoundedSite`."""
        return getattr(request.protocol, "vk_connection", None)

    def trust_request(self, request: web.BaseRequest) -> None:
        conn = self.of(request)
        if conn is not None:
            self.trust(conn)

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        conn = self.of(request)
        if conn is None:
            return await handler(request)
        self.request_started(conn)
        try:
            return await handler(request)
        finally:
            self.request_finished(conn)

    # -- what goes wrong -----------------------------------------------------------------------------
    def handshake_failed(self, conn: Connection, exc: BaseException) -> None:
        self.log.log(
            logging.INFO,
            "handshake",
            "%s: TLS handshake with %s failed: %s",
            self.listener,
            conn.peer,
            one_line(exc),
        )
        self._count("handshake")
        self.release(conn)  # the loop closed the transport

    def not_tls(self, conn: Connection, first: bytes) -> None:
        self.log.log(
            logging.INFO,
            "handshake",
            "%s: closed a connection from %s: not TLS (first byte %r)",
            self.listener,
            conn.peer,
            first,
        )
        self.close(conn, "handshake")

    def bad_request(self, peer: str | None, exc: HttpProcessingError) -> None:
        self._count("bad-request")
        self.log.log(
            logging.INFO,
            f"bad-request:{type(exc).__name__}",
            "%s: bad request from %s: %s",
            self.listener,
            peer,
            one_line(exc),
        )


def raise_descriptor_limit(needed: int) -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit when it is below ``needed`` (Go programs such as
    the kubelet always raise it at start-up; Python keeps 1024 on many systems); returns the soft
    limit, which the caller compares with what it needs."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft < needed and soft != resource.RLIM_INFINITY and target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.debug("cannot raise the open files limit to %d: %s", target, exc)
    return soft


# -- aiohttp: the request handler, the accept side and the site ----------------------------------------
class _Handler(RequestHandler):
    """aiohttp's request handler, telling its :class:`Connections` what the connection does."""

    def __init__(
        self, manager: Any, *, connection: Connection, connections: Connections, **kwargs: Any
    ) -> None:
        super().__init__(manager, **kwargs)
        self.vk_connection = connection
        self._connections = connections
        self._quiet = False

    def data_received(self, data: bytes) -> None:
        conn = self.vk_connection
        if data and not conn.in_request and conn.timer is None:
            self._connections.arm(conn, self._connections.limits.header_timeout)
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        self._connections.release(self.vk_connection)

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        # A request the parser refused (oversized, malformed): one rate-limited line, no traceback.
        self._connections.bad_request(request.remote, exc)
        self._quiet = True
        try:
            return super().handle_error(request, status, exc, message)
        finally:
            self._quiet = False

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        if self._quiet:
            return
        exc = kwargs.get("exc_info")
        kind = f"error:{type(exc).__name__}" if isinstance(exc, BaseException) else "error"
        # A bug of ours (a handler raised): the traceback is worth having, a flood of it is not.
        self._connections.log.log(logging.ERROR, kind, *args, **kwargs)


class _Gate(asyncio.Protocol):
    """The application protocol until the connection is ready for HTTP (after the TLS handshake):
    then it hands over to a new aiohttp handler, so a connection still in its handshake costs no
    HTTP parser."""

    def __init__(self, site: BoundedSite, conn: Connection) -> None:
        self.site = site
        self.conn = conn

    def connection_made(self, base: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, base)  # uvloop's transports are no subclasses of asyncio's
        conn = self.conn
        if conn.closed:
            transport.abort()
            return
        conn.transport = transport
        handler = self.site.make_handler(conn)
        conn.handler = handler
        transport.set_protocol(handler)  # what arrives from now on goes to aiohttp
        handler.connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:  # before the handover only
        self.site.connections.release(self.conn)


class _Listener(asyncio.AbstractServer):
    """Listening sockets whose connections we accept ourselves: one refused at the cap is closed
    before it costs a transport, and one admitted waits in the kernel, unread, until its task starts
    the TLS handshake."""

    def __init__(self, sockets: list[socket.socket], accepted: Callable[[socket.socket], None]) -> None:
        self._sockets = sockets
        self._accepted = accepted
        self._loop = asyncio.get_running_loop()
        self._serving = False
        self._retry: asyncio.TimerHandle | None = None
        self._log = RateLimitedLog(log)

    @classmethod
    def bind(cls, host: str, port: int, backlog: int, accepted: Callable[[socket.socket], None]) -> _Listener:
        sockets: list[socket.socket] = []
        try:
            for family, kind, proto, _, address in socket.getaddrinfo(
                host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            ):
                sock = socket.socket(family, kind, proto)
                sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # as create_server
                sock.bind((address[0], port, *address[2:]))
                sock.listen(backlog)
                sock.setblocking(False)
                port = sock.getsockname()[1]  # port 0: the same free port on every address
        except BaseException:
            for sock in sockets:
                sock.close()
            raise
        listener = cls(sockets, accepted)
        listener._start()
        return listener

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(self._sockets)

    def _start(self) -> None:
        self._retry = None
        self._serving = True
        for sock in self._sockets:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    def _pause(self, seconds: float) -> None:
        for sock in self._sockets:
            self._loop.remove_reader(sock.fileno())
        self._serving = False
        self._retry = self._loop.call_later(seconds, self._start)

    def _accept(self, listening: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _address = listening.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors: stop accepting for a moment rather than spin.
                    self._log.log(
                        logging.WARNING, "accept", "cannot accept connections: %s (pausing 1 s)", exc
                    )
                    self._pause(1.0)
                    return
                continue  # ECONNABORTED and the like: that one connection is gone
            sock.setblocking(False)
            self._accepted(sock)

    def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._serving:
            for sock in self._sockets:
                self._loop.remove_reader(sock.fileno())
        self._serving = False
        for sock in self._sockets:
            sock.close()
        self._sockets = []

    async def wait_closed(self) -> None:
        return None

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._serving


class BoundedSite(web.BaseSite):
    """A TCP site (TLS when given a context) whose connections are bounded by a :class:`Connections`."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        connections: Connections,
        ssl_context: ssl.SSLContext | None = None,
        handler_kwargs: dict[str, Any] | None = None,
        backlog: int = BACKLOG,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        self._host = host
        self._port = port
        self.connections = connections
        self.ssl_context = ssl_context
        self._handler_kwargs = dict(handler_kwargs or {})

    @property
    def name(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        self._server = _Listener.bind(self._host, self._port, self._backlog, self._accepted)

    async def stop(self) -> None:
        await super().stop()
        self.connections.abort_all()

    def _accepted(self, sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = self.connections.admit(sock)
        if conn is None:
            sock.close()
            return
        # Nothing is set up for a connection until its client sends something: an idle one costs
        # a socket, not a TLS session (30-50 KB with OpenSSL 3) nor an HTTP parser.
        conn.waiting = True
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable, conn)

    def _readable(self, conn: Connection) -> None:
        sock = conn.sock
        if sock is None or not conn.waiting:
            return
        try:
            first = sock.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return  # a spurious wake-up: keep waiting
        except OSError:
            first = b""
        if not first:  # gone without a word
            self.connections.close(conn, None)
            return
        if self.ssl_context is not None and first != TLS_HANDSHAKE_RECORD:
            self.connections.not_tls(conn, first)  # plain HTTP or garbage: no TLS session for it
            return
        loop = asyncio.get_running_loop()
        loop.remove_reader(sock.fileno())
        conn.waiting = False
        conn.task = loop.create_task(self._serve(conn, sock))

    async def _serve(self, conn: Connection, sock: socket.socket) -> None:
        conn.sock = None  # the loop's transport owns the socket from here on
        loop = asyncio.get_running_loop()
        tls: dict[str, Any] = {}
        if self.ssl_context is not None:
            tls = {
                "ssl": self.ssl_context,
                # our deadline closes it first; this is the loop's own backstop
                "ssl_handshake_timeout": self.connections.limits.first_request_timeout + 1.0,
                # a close waits this long at most for the client's close_notify
                "ssl_shutdown_timeout": self.connections.limits.header_timeout,
            }
        try:
            await loop.connect_accepted_socket(lambda: _Gate(self, conn), sock, **tls)
        except asyncio.CancelledError:
            pass  # closed by a deadline, the cap or shutdown: the loop closed the transport
        except Exception as exc:
            if not conn.closed:  # else closed by a deadline or the cap: counted there
                self.connections.handshake_failed(conn, exc)
        finally:
            conn.task = None

    def make_handler(self, conn: Connection) -> RequestHandler:
        server = self._runner.server
        assert server is not None
        return _Handler(
            server,
            loop=asyncio.get_running_loop(),
            connection=conn,
            connections=self.connections,
            **self._handler_kwargs,
        )
