"""The kubelet API against fake providers: its routes (plain HTTP in-process; TLS and auth are tested
live), and its connection limits (real sockets and TLS, in-process)."""

from __future__ import annotations

import asyncio
import datetime
import logging
import pathlib
import re
import socket
import ssl
import tempfile
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pydantic
import pytest
from aiohttp.test_utils import TestClient, TestServer

from vk_operator import metrics
from vk_operator.domain.model import Capacity, PodRef
from vk_operator.kubelet_api import connections
from vk_operator.kubelet_api.auth import Authenticator, Authorizer
from vk_operator.kubelet_api.connections import ConnectionLimits, Connections, RateLimitedLog
from vk_operator.kubelet_api.ops import OpsServer
from vk_operator.kubelet_api.server import KubeletServer
from vk_operator.kubelet_api.tls import ServingCertificate
from vk_operator.provider import LogEntry, LogOptions, LogsUnavailable

T0 = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
POD = {
    "metadata": {"name": "web", "namespace": "ns", "uid": "uid-1"},
    "spec": {"containers": [{"name": "app"}], "initContainers": [{"name": "init"}]},
    "status": {"phase": "Running"},
}


class AllowAll:
    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return {"status": {"allowed": True}}


class BareProvider:
    """A provider with no optional capability at all."""

    name: ClassVar[str] = "bare"
    config_model: ClassVar[type[pydantic.BaseModel]] = pydantic.BaseModel

    async def capacity(self) -> Capacity:
        return Capacity()


class LogsOnly(BareProvider):
    name: ClassVar[str] = "logs"

    def __init__(self, *, live: int = 0, fail: Exception | None = None, forever: bool = False) -> None:
        self.live, self.fail, self.forever = live, fail, forever
        self.closed = asyncio.Event()
        self.seen: list[LogOptions] = []

    async def container_logs(
        self, ref: PodRef, container: str, options: LogOptions
    ) -> AsyncIterator[LogEntry]:
        self.seen.append(options)
        if self.fail is not None:
            raise self.fail
        try:
            for i in range(3):
                yield LogEntry(T0 + datetime.timedelta(seconds=i), f"{ref.name} {container} old {i}")
            if options.follow:
                n = 0
                while self.forever or n < self.live:
                    await asyncio.sleep(0.05)
                    yield LogEntry(datetime.datetime.now(datetime.UTC), f"new {n}")
                    n += 1
        finally:
            self.closed.set()


def _server(provider: Any) -> KubeletServer:
    kube: Any = AllowAll()
    return KubeletServer(
        node_name="vk-unit",
        provider=provider,
        pods=lambda: {("ns", "web"): POD},
        serving=ServingCertificate(node_name="vk-unit", node_ip="127.0.0.1"),
        authenticator=Authenticator(kube, anonymous=True),
        authorizer=Authorizer(kube),
    )


@pytest.fixture
async def client_for() -> AsyncIterator[Any]:
    clients: list[TestClient[Any, Any]] = []
    servers: list[KubeletServer] = []

    async def make(provider: Any) -> TestClient[Any, Any]:
        servers.append(_server(provider))
        client: TestClient[Any, Any] = TestClient(TestServer(servers[-1].app))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()
    for server in servers:
        server.serving.close()


async def test_a_provider_without_capabilities_gets_501_with_a_reason(client_for: Any) -> None:
    client = await client_for(BareProvider())
    for path, words in (
        ("/containerLogs/ns/web/app", "provider bare does not support container logs"),
        ("/stats/summary", "provider bare does not report resource usage"),
        ("/metrics/resource", "provider bare does not report resource usage"),
    ):
        resp = await client.get(path)
        assert resp.status == 501 and words in await resp.text(), path
    assert (await client.get("/healthz")).status == 200
    assert (await (await client.get("/pods")).json())["items"] == [POD]


async def test_logs_history_with_tail_timestamps_and_limit(client_for: Any) -> None:
    provider = LogsOnly()
    client = await client_for(provider)
    resp = await client.get("/containerLogs/ns/web/init?tailLines=2&timestamps=true")
    assert resp.status == 200
    assert await resp.text() == (
        "2024-01-01T00:00:01.000000000Z web init old 1\n2024-01-01T00:00:02.000000000Z web init old 2\n"
    )
    assert provider.seen[-1] == LogOptions(tail_lines=2, timestamps=True)
    resp = await client.get("/containerLogs/ns/web/app?limitBytes=12")
    assert await resp.text() == "web app old "


async def test_follow_streams_until_the_provider_ends(client_for: Any) -> None:
    client = await client_for(LogsOnly(live=3))
    resp = await client.get("/containerLogs/ns/web/app?follow=true&tailLines=1")
    assert resp.status == 200
    lines = (await resp.text()).splitlines()
    assert lines == [
        "web app old 0",
        "web app old 1",
        "web app old 2",
        "new 0",
        "new 1",
        "new 2",
    ]  # tail: provider's


async def test_follow_stops_reading_the_provider_when_the_client_goes_away(client_for: Any) -> None:
    provider = LogsOnly(forever=True)
    client = await client_for(provider)
    resp = await client.get("/containerLogs/ns/web/app?follow=1")
    assert (await resp.content.readline()) == b"web app old 0\n"
    resp.close()  # the client disconnects
    async with asyncio.timeout(5):
        await provider.closed.wait()


@pytest.mark.parametrize(
    ("error", "status", "words"),
    [
        (
            LogsUnavailable('container "app" in pod "web" is waiting to start: ContainerCreating'),
            400,
            "waiting",
        ),
        (KeyError("gone"), 400, "not created in the provider yet"),
        (RuntimeError("backend down"), 500, "backend down"),
    ],
)
async def test_provider_errors_become_statuses(
    client_for: Any, error: Exception, status: int, words: str
) -> None:
    client = await client_for(LogsOnly(fail=error))
    resp = await client.get("/containerLogs/ns/web/app")
    assert resp.status == status and words in await resp.text()


async def test_unknown_pod_container_and_paths(client_for: Any) -> None:
    client = await client_for(LogsOnly())
    assert (await client.get("/containerLogs/ns/nope/app")).status == 404
    assert (await client.get("/containerLogs/other/web/app")).status == 404
    resp = await client.get("/containerLogs/ns/web/sidecar")
    assert resp.status == 404 and 'container "sidecar" not found in pod "web"' in await resp.text()
    assert (await client.get("/containerLogs/ns/web")).status == 400
    assert (await client.get("/containerLogs/ns/web/app?tailLines=x")).status == 400
    assert (await client.get("/run/ns/web/app")).status == 404  # not served
    assert (await client.get("/portForward/ns/web")).status == 501  # LogsOnly cannot forward ports
    assert (await client.get("/exec/ns/web/app")).status == 400  # no command: test_kubelet_exec.py
    assert (await client.post("/pods")).status == 405


async def test_readyz_lists_each_check_and_fails_with_any() -> None:
    async def ok() -> str | None:
        return None

    async def stale() -> str | None:
        return "last renewal 52.0 s ago"

    async def broken() -> str | None:
        raise ConnectionError("no route")

    server = OpsServer(
        address="127.0.0.1", port=0, checks={"registered": ok, "lease-fresh": stale, "provider": broken}
    )
    async with TestClient(TestServer(server.app)) as client:
        resp = await client.get("/readyz")
        assert resp.status == 503
        assert (await resp.text()).splitlines() == [
            "[+]registered ok",
            "[-]lease-fresh failed: last renewal 52.0 s ago",
            "[-]provider failed: ConnectionError: no route",
            "readyz check failed",
        ]
        assert (await client.get("/healthz")).status == 200


async def test_metrics_state_and_event_counters() -> None:
    pods = [{"status": {"phase": "Running"}}, {"status": {"phase": "Running"}}, {"status": {}}]
    state = metrics.StateCollector(
        phase_counts=lambda: metrics.pods_by_phase(pods),
        queue_depth=lambda: 4,
        heartbeat_age=lambda: 1.5,
        api_requests=lambda: 9,
    )

    # The counters are process-wide and other tests make provider calls too: compare deltas.
    def sample(name: str, **labels: str) -> float:
        return metrics.REGISTRY.get_sample_value(name, labels) or 0.0

    calls = ("vk_provider_call_duration_seconds_count", {"method": "create_pod"})
    errors = ("vk_provider_call_errors_total", {"method": "create_pod"})
    writes = ("vk_api_writes_total", {"code": "200", "resource": "pods/status", "verb": "patch"})
    before = {name: sample(name, **labels) for name, labels in (calls, errors, writes)}
    metrics.register_state(state)
    try:
        with metrics.provider_call("create_pod"):
            pass
        with pytest.raises(ValueError), metrics.provider_call("create_pod"):
            raise ValueError("boom")
        metrics.api_write("patch", "pods/status", 200)
        server = OpsServer(address="127.0.0.1", port=0, checks={})
        async with TestClient(TestServer(server.app)) as client:
            text = await (await client.get("/metrics")).text()
    finally:
        metrics.unregister_state()
    assert 'vk_pods{phase="Running"} 2.0' in text and 'vk_pods{phase="Unknown"} 1.0' in text
    assert 'vk_pods{phase="Failed"} 0.0' in text
    assert "vk_pod_queue_depth 4.0" in text and "vk_node_heartbeat_age_seconds 1.5" in text
    assert "vk_api_requests_total 9.0" in text
    for (name, labels), delta in ((calls, 2), (errors, 1), (writes, 1)):
        assert sample(name, **labels) == before[name] + delta, name
        rendered = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        assert f"{name}{{{rendered}}} {before[name] + delta}" in text


# -- connection limits: real sockets, TLS, the site the kubelet API listens with -------------------------
class TokenKube:
    """TokenReview: the token "good" is alice; SubjectAccessReview: everything allowed."""

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if path.endswith("/tokenreviews"):
            if body["spec"]["token"] == "good":
                return {"status": {"authenticated": True, "user": {"username": "alice"}}}
            return {"status": {"authenticated": False, "error": "bad token"}}
        return {"status": {"allowed": True}}


def _client_tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@pytest.fixture
async def tls_server() -> AsyncIterator[Any]:
    started: list[KubeletServer] = []

    async def start(limits: ConnectionLimits, provider: Any = None) -> tuple[KubeletServer, int]:
        kube: Any = TokenKube()
        chosen: Any = provider or LogsOnly(forever=True)
        server = KubeletServer(
            node_name="vk-unit",
            provider=chosen,
            pods=lambda: {("ns", "web"): POD},
            serving=ServingCertificate(node_name="vk-unit", node_ip="127.0.0.1"),
            authenticator=Authenticator(kube),
            authorizer=Authorizer(kube),
            address="127.0.0.1",
            port=0,
            limits=limits,
        )
        server.serving.self_signed()
        started.append(server)
        return server, await server.start()

    yield start
    for server in started:
        await server.stop()
        server.serving.close()


GOOD = "Authorization: Bearer good\r\n"


async def _eventually(probe: Any, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            if probe():
                return
            await asyncio.sleep(0.02)


async def _closed(reader: asyncio.StreamReader, timeout: float = 20.0) -> bool:
    """True once the server closed the connection (EOF or reset) within ``timeout``."""
    try:
        async with asyncio.timeout(timeout):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except (OSError, ssl.SSLError):
        pass
    return True


async def _tcp(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def _tls(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, ssl=_client_tls())


async def _request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str = "/healthz", auth: str = GOOD
) -> tuple[bytes, bytes]:
    """One request on a keep-alive connection: the response head and body."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode())
    async with asyncio.timeout(20):
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
        return head, await reader.readexactly(length)


async def test_at_the_cap_the_oldest_unauthenticated_connection_makes_room(tls_server: Any) -> None:
    server, port = await tls_server(ConnectionLimits(max_connections=3, first_request_timeout=60))
    trusted = await _tls(port)
    assert (await _request(*trusted))[0].startswith(b"HTTP/1.1 200")
    oldest, older = await _tcp(port), await _tcp(port)
    await _eventually(lambda: len(server.connections) == 3)
    newest = await _tcp(port)
    assert await _closed(oldest[0])  # made room, at once
    await _eventually(lambda: len(server.connections) == 3)
    assert server.connections.closed == {"evicted": 1}
    assert (await _request(*trusted))[0].startswith(b"HTTP/1.1 200")  # the authenticated one stays
    # Stopping closes what waits for its first byte, too.
    await server.stop()
    assert await _closed(older[0]) and await _closed(newest[0])
    for _, writer in (trusted, oldest, older, newest):
        writer.close()


async def test_beyond_a_cap_of_authenticated_connections_a_new_one_is_closed_at_once(
    tls_server: Any,
) -> None:
    server, port = await tls_server(ConnectionLimits(max_connections=1, first_request_timeout=60))
    trusted = await _tls(port)
    assert (await _request(*trusted))[0].startswith(b"HTTP/1.1 200")
    refused = await _tcp(port)
    assert await _closed(refused[0])
    assert server.connections.closed == {"refused": 1}
    assert (await _request(*trusted))[0].startswith(b"HTTP/1.1 200")
    for _, writer in (trusted, refused):
        writer.close()


async def test_deadlines_close_silent_slow_and_idle_connections_but_never_a_stream(
    tls_server: Any,
) -> None:
    limits = ConnectionLimits(first_request_timeout=0.5, header_timeout=0.5, idle_timeout=4.0)
    server, port = await tls_server(limits)
    silent = await _tcp(port)  # connects, says nothing
    handshaken = await _tls(port)  # TLS done, no request
    dripping = await _tls(port)
    dripping[1].write(b"GET /pods HTTP/1.1\r\nHost: x\r\n")  # a head that never ends
    keepalive, slow_second = await _tls(port), await _tls(port)
    for conn in (keepalive, slow_second):
        assert (await _request(*conn))[0].startswith(b"HTTP/1.1 200")
    slow_second[1].write(b"GET /pods HTTP/1.1\r\n")  # the next head of a keep-alive connection
    stream = await _tls(port)
    stream[1].write(f"GET /containerLogs/ns/web/app?follow=true HTTP/1.1\r\nHost: x\r\n{GOOD}\r\n".encode())

    for conn in (silent, handshaken, dripping, slow_second):
        assert await _closed(conn[0])
    assert server.connections.closed == {"deadline": 4}
    assert not keepalive[0].at_eof()  # idle between requests: its own, longer timeout
    # The log stream outlives every deadline several times over.
    async with asyncio.timeout(20):
        head = await stream[0].readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        started = asyncio.get_running_loop().time()
        while asyncio.get_running_loop().time() - started < 3 * limits.header_timeout:
            assert await stream[0].readline()
    assert await _closed(keepalive[0], timeout=limits.idle_timeout + 20)
    assert not stream[0].at_eof()
    for _, writer in (silent, handshaken, dripping, keepalive, slow_second, stream):
        writer.close()


async def test_unauthenticated_requests_get_401_and_lose_their_connection(tls_server: Any) -> None:
    server, port = await tls_server(ConnectionLimits())
    for auth in ("", "Authorization: Bearer bad\r\n"):
        reader, writer = await _tls(port)
        head, body = await _request(reader, writer, "/pods", auth=auth)
        assert head.startswith(b"HTTP/1.1 401") and b"Connection: close" in head, head
        assert body == b"Unauthorized\n"
        assert await _closed(reader)
        writer.close()
    await _eventually(lambda: len(server.connections) == 0)


async def test_bad_requests_are_one_rate_limited_line_and_never_a_traceback(
    tls_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server, port = await tls_server(ConnectionLimits())
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    caplog.set_level(logging.INFO, logger="vk_operator")
    requests = [
        b"GET /pods HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9216 + b"\r\n\r\n",
        b"\x01\x02 not a request line\r\n\r\n",
    ]
    for request in requests:
        for _ in range(3):
            reader, writer = await _tls(port)
            writer.write(request)
            answer = await reader.read(4096)
            assert re.match(rb"HTTP/1\.[01] 400 ", answer) or answer == b"", answer
            writer.close()
    for _ in range(3):  # plain HTTP to the TLS port: closed, no TLS session
        reader, writer = await _tcp(port)
        writer.write(b"GET /pods HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await _closed(reader)
        writer.close()
    await _eventually(lambda: len(server.connections) == 0)

    # The server's and aiohttp's records only: the garbage collector may log ("Task was destroyed
    # but it is pending") a task another test left behind at any moment of this one.
    records = [
        r
        for r in caplog.records
        if r.levelno >= logging.INFO and r.name.startswith(("vk_operator", "aiohttp"))
    ]
    assert not [r for r in records if r.levelno >= logging.ERROR or r.exc_info], records
    lines = [r.getMessage() for r in records if r.name == "vk_operator.kubelet_api.connections"]
    assert len(lines) == 3, lines
    assert "bad request from 127.0.0.1: 400, message: Got more than 8190 bytes" in lines[0]
    assert "bad request from 127.0.0.1: 400" in lines[1]
    assert "not TLS (first byte b'G')" in lines[2]
    assert all("\n" not in line and len(line) < 300 for line in lines)
    assert server.connections.closed == {"bad-request": 6, "handshake": 3}
    assert server.connections.log.suppressed == {
        "bad-request:LineTooLong": 2,
        "bad-request:BadHttpMethod": 2,
        "handshake": 2,
    }


def test_the_rate_limited_log_says_how_many_lines_it_dropped(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    limited = RateLimitedLog(logging.getLogger("test.ratelimit"), interval=60, clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="test.ratelimit")
    assert limited.log(logging.INFO, "a", "first %s", "a")
    assert limited.log(logging.INFO, "b", "first %s", "b")  # kinds are limited apart
    now[0] = 30
    assert not limited.log(logging.INFO, "a", "again")
    assert not limited.log(logging.INFO, "a", "again")
    now[0] = 60
    assert limited.log(logging.INFO, "a", "third %d", 3)
    assert [r.getMessage() for r in caplog.records] == [
        "first a",
        "first b",
        "third 3 (2 more like this since the last such line)",
    ]


async def test_memory_is_given_back_once_a_flood_ebbs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connections, "RELEASE_AFTER", 4)
    monkeypatch.setattr(connections, "RELEASE_DELAY", 0.01)
    released = asyncio.Event()
    conns = Connections(ConnectionLimits(first_request_timeout=60), release_memory=released.set)
    pairs = [socket.socketpair() for _ in range(4)]
    admitted = [conns.admit(ours) for ours, _ in pairs]
    assert len(conns) == conns.peak == 4
    for conn in admitted[:2]:
        assert conn is not None
        conns.close(conn, None)
    assert not released.is_set()
    conns.close(admitted[2], None)  # type: ignore[arg-type]  # a quarter of the high-water mark left
    async with asyncio.timeout(5):
        await released.wait()
    conns.abort_all()
    for ours, theirs in pairs:
        assert ours.fileno() == -1  # closed by us
        theirs.close()


async def test_the_metrics_port_bounds_its_connections_too() -> None:
    server = OpsServer(
        address="127.0.0.1", port=0, checks={}, limits=ConnectionLimits(first_request_timeout=0.3)
    )
    port = await server.start()
    try:
        reader, writer = await _tcp(port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        silent = await _tcp(port)
        assert await _closed(silent[0])
        assert server.connections.closed == {"deadline": 1}
        for w in (writer, silent[1]):
            w.close()
    finally:
        await server.stop()


def test_the_serving_key_is_on_disk_only_while_ssl_loads_it(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every process used to leave a directory with its private key in /tmp (1,281 after a day of
    test runs): ssl reads the pair from files, which now go as soon as it has."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    tempfile.tempdir = None  # re-read TMPDIR
    try:
        serving = ServingCertificate(node_name="vk-unit", node_ip="127.0.0.1")
        serving.self_signed()
        assert serving.cert_pem
        assert list(tmp_path.iterdir()) == []
    finally:
        tempfile.tempdir = None
