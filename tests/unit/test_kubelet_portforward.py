"""``/portForward`` on an in-process kubelet API, driven by a Python SPDY client doing what kubectl's
port-forward does (per connection: an error stream and a data stream with port and requestID), and
the mock provider's port-forward."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, ClassVar

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from providers.mock import MockConfig, MockProvider
from tests.spdy_client import SpdySession
from tests.unit.test_kubelet_server import POD, AllowAll, BareProvider
from vk_operator.kubelet_api.auth import Authenticator, Authorizer
from vk_operator.kubelet_api.portforward import PortForwardRoutes
from vk_operator.kubelet_api.server import KubeletServer
from vk_operator.kubelet_api.tls import ServingCertificate
from vk_operator.provider import PodRef, PortConnection, PortForwardError, PortForwardProvider, PreparedPod

PF = ("portforward.k8s.io",)


class Forwarder(BareProvider):
    """Port 7 echoes, port 8 answers once in upper case, other ports refuse."""

    name: ClassVar[str] = "forwarder"

    def __init__(self) -> None:
        self.cancelled = asyncio.Event()
        self.started = asyncio.Event()
        self.calls: list[tuple[str, int]] = []

    async def port_forward(self, ref: PodRef, port: int, connection: PortConnection) -> None:
        self.calls.append((ref.name, port))
        self.started.set()
        try:
            if port == 7:
                async for chunk in connection.incoming:
                    await connection.send(chunk)
            elif port == 8:
                await connection.send((await anext(connection.incoming)).upper())
            elif port == 9:
                await asyncio.sleep(3600)
            else:
                raise PortForwardError("connection refused")
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


@pytest.fixture
async def server_for() -> AsyncIterator[Callable[..., Awaitable[int]]]:
    clients: list[TestClient[Any, Any]] = []

    async def make(provider: Any, **routes: Any) -> int:
        kube: Any = AllowAll()
        server = KubeletServer(
            node_name="vk-unit",
            provider=provider,
            pods=lambda: {("ns", "web"): POD},
            serving=ServingCertificate(node_name="vk-unit", node_ip="127.0.0.1"),
            authenticator=Authenticator(kube, anonymous=True),
            authorizer=Authorizer(kube),
        )
        app = server.app
        if routes:
            app = web.Application()
            PortForwardRoutes(node_name="vk-unit", provider=provider, pods=server.pods, **routes).register(
                app
            )
        client: TestClient[Any, Any] = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        assert client.server.port is not None
        return client.server.port

    yield make
    for client in clients:
        await client.close()


def pair(session: SpdySession, port: int, request: int) -> tuple[int, int]:
    """What kubectl opens per forwarded connection: error stream (closed at once), data stream."""
    error = session.open(streamType="error", port=str(port), requestID=str(request))
    session.send(error, b"", fin=True)
    data = session.open(streamType="data", port=str(port), requestID=str(request))
    return error, data


async def test_refusals_before_upgrading(server_for: Callable[..., Awaitable[int]]) -> None:
    port = await server_for(Forwarder())
    status, body, _ = await SpdySession.connect(port, "/portForward/ns/nope", PF)
    assert status == 404 and b'pod "nope" does not exist' in body
    status, body, _ = await SpdySession.connect(port, "/portForward/ns/web/wrong-uid", PF)
    assert status == 404
    status, body, _ = await SpdySession.connect(port, "/portForward/ns/web", ("v4.channel.k8s.io",))
    assert status == 403 and b"unable to negotiate protocol" in body
    bare = await server_for(BareProvider())
    status, body, _ = await SpdySession.connect(bare, "/portForward/ns/web", PF)
    assert status == 501 and b"provider bare does not support port forwarding" in body


async def test_connections_forward_concurrently_and_close_cleanly(
    server_for: Callable[..., Awaitable[int]],
) -> None:
    provider = Forwarder()
    port = await server_for(provider)
    status, _, session = await SpdySession.connect(port, "/portForward/ns/web/uid-1", PF)
    assert status == 101 and session is not None
    try:
        e1, d1 = pair(session, 7, 0)
        e2, d2 = pair(session, 8, 1)
        session.send(d1, b"ping")
        session.send(d2, b"shout")
        await session.until(lambda: session.out.get(d1) == b"ping" and d2 in session.ended)
        assert session.out[d2] == b"SHOUT" and e2 in session.ended and e2 not in session.out
        session.send(d1, b" pong", fin=True)  # the local connection closed: half-close
        await session.until(lambda: {d1, e1} <= session.ended)
        assert session.out[d1] == b"ping pong" and e1 not in session.out
        assert sorted(provider.calls) == [("web", 7), ("web", 8)]
    finally:
        await session.close()


async def test_failures_go_on_the_error_stream_and_reset_the_pair(
    server_for: Callable[..., Awaitable[int]],
) -> None:
    port = await server_for(Forwarder())
    _, _, session = await SpdySession.connect(port, "/portForward/ns/web", PF)
    assert session is not None
    try:
        error, data = pair(session, 81, 5)
        await session.until(lambda: {error, data} <= session.reset)
        assert session.out[error] == b"error forwarding port 81 to pod web, uid uid-1: connection refused"
        # The session goes on: another pair works.
        _, data = pair(session, 7, 6)
        session.send(data, b"still here", fin=True)
        await session.until(lambda: data in session.ended)
        assert session.out[data] == b"still here"
    finally:
        await session.close()


async def test_bad_streams_are_refused_and_lone_streams_time_out(
    server_for: Callable[..., Awaitable[int]],
) -> None:
    port = await server_for(Forwarder(), stream_creation_timeout=0.3)
    _, _, session = await SpdySession.connect(port, "/portForward/ns/web", PF)
    assert session is not None
    try:
        no_port = session.open(streamType="data", requestID="1")
        bad_port = session.open(streamType="data", port="http", requestID="2")
        bad_type = session.open(streamType="stdout", port="80", requestID="3")
        lonely = session.open(streamType="error", port="80", requestID="4")
        await session.until(lambda: {no_port, bad_port, bad_type, lonely} <= session.reset)
        assert session.replied == {lonely}
        assert session.out[lonely] == b"timed out waiting for streams of request 4"
    finally:
        await session.close()


async def test_closing_the_session_cancels_forwarding(server_for: Callable[..., Awaitable[int]]) -> None:
    provider = Forwarder()
    port = await server_for(provider)
    _, _, session = await SpdySession.connect(port, "/portForward/ns/web", PF)
    assert session is not None
    pair(session, 9, 0)
    async with asyncio.timeout(5):
        await provider.started.wait()  # the replies come at once, the forwarding a moment later
    await session.close()
    async with asyncio.timeout(5):
        await provider.cancelled.wait()


# -- the mock ------------------------------------------------------------------------------------------------
def _prepared(ports: Sequence[int]) -> PreparedPod:
    pod: dict[str, Any] = {
        "metadata": {"namespace": "ns", "name": "web", "uid": "u1"},
        "spec": {
            "containers": [
                {"name": "app", "image": "img", "ports": [{"containerPort": p} for p in ports]},
                {"name": "udp", "image": "img", "ports": [{"containerPort": 53, "protocol": "UDP"}]},
            ]
        },
    }
    return PreparedPod(pod, {}, frozenset())


async def forward(provider: MockProvider, port: int, *chunks: bytes) -> bytes:
    received = b""

    async def incoming() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    async def send(data: bytes) -> None:
        nonlocal received
        received += data

    await provider.port_forward(PodRef("ns", "web", "u1"), port, PortConnection(incoming(), send))
    return received


async def test_mock_ports_answer_http_or_echo_and_others_refuse() -> None:
    provider = MockProvider(MockConfig())
    assert isinstance(provider, PortForwardProvider)
    await provider.create_pod(_prepared([80, 9000]))
    answer = await forward(provider, 80, b"GET /x?y=1 HTTP/1.1\r\nHost: a\r\n", b"\r\n", b"never read")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Connection: close" in head
    assert body == b"mock pod web container app port 80: GET /x?y=1\n"
    assert (await forward(provider, 80, b"HEAD / HTTP/1.0\r\n\r\n")).endswith(b"\r\n\r\n")
    assert (await forward(provider, 80, b"GET nonsense\n")).startswith(b"HTTP/1.1 400 Bad Request")
    assert await forward(provider, 9000, b"ping", b"GET / HTTP/1.1\r\n\r\n") == b"pingGET / HTTP/1.1\r\n\r\n"
    for refused in (81, 53):  # undeclared; UDP only
        with pytest.raises(PortForwardError, match=f"localhost:{refused}.*connection refused"):
            await forward(provider, refused, b"x")
    with pytest.raises(KeyError):
        await provider.port_forward(PodRef("ns", "x", "u2"), 80, PortConnection(_empty(), _discard))


async def test_mock_refuses_when_the_pod_is_not_running() -> None:
    provider = MockProvider(MockConfig(start_latency_seconds=60))
    await provider.create_pod(_prepared([80]))
    with pytest.raises(PortForwardError, match="not running"):
        await forward(provider, 80, b"x")


async def _empty() -> AsyncIterator[bytes]:
    return
    yield  # pragma: no cover


async def _discard(data: bytes) -> None:
    return None
