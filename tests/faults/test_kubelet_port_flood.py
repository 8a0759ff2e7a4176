"""The kubelet port under attack, on the real control plane (issue 11, defects 10-12).

* a flood of idle TCP connections, one of TLS connections that then say nothing, and slowloris
  clients (a ClientHello, a request line, a keep-alive connection's next request, dripped): connections
  beyond the cap are closed at once, the rest by the first-request / header deadlines, memory stays
  bounded and is returned, the node's Lease keeps being renewed and ``kubectl logs`` keeps working;
* bad requests (a 9 KB header, a garbage request line, a malformed header) without credentials:
  4xx or closed, at most one log line per kind, never an ERROR traceback;
* numeric log parameters beyond int64: 400 naming the parameter;
* an authenticated keep-alive connection that idles is closed after the idle timeout, while a log
  stream (inside its request) outlives it.

Everything runs on the defaults (no flag of the limits is passed), so these tests say what a node
started without tuning does; only the idle timeout is shortened (its default, 120 s, is too long to
wait for). The figures are printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
import math
import os
import re
import resource
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.conftest import VirtualNode
from tests.integration.test_kubelet_api import LINE, create_running_pod, kubelet_get, kubelet_port
from vk_operator.devcluster.cluster import Cluster
from vk_operator.kube import Kube

StartNode = Callable[..., Awaitable[VirtualNode]]

FLOOD = int(os.environ.get("VK_TEST_FLOOD", "2000"))  # idle TCP connections opened at once
CAP = 1000  # the default --kubelet-api-max-connections
DEADLINE = 10.0  # the default --kubelet-api-first-request-timeout and --kubelet-api-header-timeout
SLACK = 20.0  # two busy cores, a flood being handled: generous
AT_ONCE = DEADLINE / 2  # "closed at once": well before any deadline could have closed it
DRIP = 1.0  # seconds between the bytes a slowloris client sends
SLOWLORIS = 20  # clients of each kind
TLS_FLOOD = 1200  # connections that finish a TLS handshake, then idle: beyond the cap too
# RSS. During: the cap bounds the connections alive at once; the costly ones (a finished TLS
# handshake, then silence) take ~30 KB each, 1,000 of them ~30 MB; idle TCP connections cost only
# their socket. 80 MB leaves room for heap growth on a busy machine; the uncapped server took
# ~50 KB for every connection ever opened (+100 MB for the 2,000 idle ones alone). After: the server
# gives the memory back once a flood ebbs (measured: +12 MB after, of +35 at the peak), so within
# 25 MB of the baseline; the uncapped one kept all of it (+98 MB).
RSS_PEAK_SLACK_KB = 80 * 1024
RSS_SLACK_KB = 25 * 1024
STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")


def _raise_nofile(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"needs {needed} file descriptors, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def _process_nofile(pid: int) -> int:
    for line in open(f"/proc/{pid}/limits").read().splitlines():  # noqa: SIM115
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no 'Max open files' in /proc/PID/limits")


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def _tls(cluster: Cluster | None = None, client: str | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if cluster is not None and client is not None:
        ctx.load_cert_chain(cluster.pki_dir / f"{client}.crt", cluster.pki_dir / f"{client}.key")
    return ctx


class Probe(asyncio.Protocol):
    """An idle TCP connection: sends nothing, records when the server closed it."""

    def __init__(self) -> None:
        self.opened = 0.0
        self.closed: float | None = None
        self.transport: asyncio.Transport | None = None
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.opened = time.monotonic()
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = time.monotonic()
        self.done.set_result(None)

    @property
    def lifetime(self) -> float:
        return (self.closed if self.closed is not None else time.monotonic()) - self.opened


async def _open_idle(port: int, count: int) -> list[Probe]:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(64)

    async def one() -> Probe | None:
        async with gate:
            probe = Probe()
            try:
                await asyncio.wait_for(loop.create_connection(lambda: probe, "127.0.0.1", port), 30)
            except (OSError, TimeoutError):
                return None  # refused (or a full backlog): counted as not accepted
            return probe

    opened = await asyncio.gather(*(one() for _ in range(count)))
    return [p for p in opened if p is not None]


async def _open_tls_idle(port: int, count: int) -> list[asyncio.Task[float]]:
    """TLS connections that finish the handshake and then send nothing; each task ends with the
    seconds from the handshake to the server's close (connections refused at once are left out)."""
    gate = asyncio.Semaphore(32)
    ctx = _tls()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> float:
        start = time.monotonic()
        try:
            await _closed_by_server(reader)
            return time.monotonic() - start
        finally:
            writer.close()

    async def one() -> asyncio.Task[float] | None:
        async with gate:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port, ssl=ctx), 30
                )
            except (OSError, TimeoutError, ssl.SSLError):
                return None
            return asyncio.create_task(hold(reader, writer))

    opened = await asyncio.gather(*(one() for _ in range(count)))
    return [t for t in opened if t is not None]


async def _closed_by_server(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(OSError, ssl.SSLError):
        while await reader.read(65536):
            pass


async def _drip(writer: asyncio.StreamWriter, data: bytes, closed: asyncio.Task[None], limit: float) -> None:
    """Send ``data`` one byte per DRIP seconds until the server closes (or ``limit`` passes)."""
    deadline = time.monotonic() + limit
    for byte in data:
        if closed.done() or time.monotonic() > deadline:
            return
        with contextlib.suppress(OSError, RuntimeError):
            writer.write(bytes([byte]))
            await writer.drain()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(closed), DRIP)


async def slow_handshake(port: int, limit: float) -> float:
    """A TLS ClientHello sent one byte at a time; the seconds until the server closed (inf: never)."""
    obj = ssl.create_default_context().wrap_bio(ssl.MemoryBIO(), outgoing := ssl.MemoryBIO())
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    hello = outgoing.read()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = time.monotonic()
    closed = asyncio.ensure_future(_closed_by_server(reader))
    try:
        await _drip(writer, hello, closed, limit)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(closed), max(0.0, start + limit - time.monotonic()))
        return time.monotonic() - start if closed.done() else math.inf
    finally:
        closed.cancel()
        writer.close()


async def slow_request(
    port: int, limit: float, *, ctx: ssl.SSLContext | None = None, first: bytes = b""
) -> float:
    """TLS done, a request line sent one byte at a time (after one complete ``first`` request, whose
    response is read: the header timeout of a keep-alive connection); seconds until closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx or _tls())
    if first:
        writer.write(first)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
        assert head.startswith(b"HTTP/1.1 200"), head
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
        await asyncio.wait_for(reader.readexactly(length), 20)
    start = time.monotonic()
    closed = asyncio.ensure_future(_closed_by_server(reader))
    try:
        await _drip(writer, b"GET /pods HTTP/1.1\r\nHost: slowloris\r\nX-Slow: " + b"z" * 200, closed, limit)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(closed), max(0.0, start + limit - time.monotonic()))
        return time.monotonic() - start if closed.done() else math.inf
    finally:
        closed.cancel()
        writer.close()


async def _lease_renewals(admin: Kube, node: str, stop: asyncio.Event) -> list[datetime.datetime]:
    seen: list[datetime.datetime] = []
    while not stop.is_set():
        lease = await admin.get(f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node}")
        renewed = datetime.datetime.fromisoformat(lease["spec"]["renewTime"].replace("Z", "+00:00"))
        if not seen or renewed != seen[-1]:
            seen.append(renewed)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
    seen.append(datetime.datetime.now(datetime.UTC))  # the gap up to now counts too
    return seen


def _spread(seconds: list[float]) -> str:
    if not seconds:
        return "(none closed)"
    return f"median {seconds[len(seconds) // 2]:.1f} s, max {seconds[-1]:.1f} s"


async def _rss_peak(pid: int, stop: asyncio.Event) -> int:
    peak = 0
    while not stop.is_set():
        peak = max(peak, rss_kb(pid))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.2)
    return peak


async def test_a_connection_flood_and_slowloris_are_bounded_and_the_node_keeps_working(
    admin: Kube,
    namespace: str,
    virtual_node: StartNode,
    cluster: Cluster,
    kubectl: Callable[..., str],
) -> None:
    _raise_nofile(FLOOD + 1000)
    vn = await virtual_node()
    pid, port = vn.process.proc.pid, kubelet_port(vn)
    # The virtual kubelet holds at most the cap (it raises its soft limit to the hard one if need be).
    assert _process_nofile(pid) >= CAP + 256, f"open files limit: {_process_nofile(pid)}"
    await create_running_pod(admin, namespace, "web", vn.name)
    logs = f"/containerLogs/{namespace}/web/app?tailLines=1"

    async def authenticated_logs() -> tuple[int, str]:
        return await kubelet_get(vn, logs, cluster=cluster, client="apiserver-kubelet-client")

    assert (await authenticated_logs())[0] == 200  # warm: every code path of a request in the baseline
    before = rss_kb(pid)

    stop = asyncio.Event()
    lease = asyncio.create_task(_lease_renewals(admin, vn.name, stop))
    peak = asyncio.create_task(_rss_peak(pid, stop))

    # 1. The flood: beyond the cap closed at once, the rest by the first-request deadline.
    started = time.monotonic()
    probes = await _open_idle(port, FLOOD)
    opened_in = time.monotonic() - started
    # While the idle connections are held: kubectl logs (through the apiserver) and a direct
    # authenticated request must still be served.
    during_kubectl = await asyncio.to_thread(
        kubectl, "logs", "-n", namespace, "web", "--tail=1", check=False, timeout=60
    )
    during_direct = await authenticated_logs()
    held = sum(p.closed is None for p in probes)
    await asyncio.wait([p.done for p in probes], timeout=DEADLINE + SLACK)
    lifetimes = sorted(p.lifetime for p in probes)
    still_open = sum(p.closed is None for p in probes)
    at_once = sum(p.closed is not None and p.lifetime < AT_ONCE for p in probes)
    for p in probes:
        if p.transport is not None:
            p.transport.abort()

    # 1b. The expensive kind: connections that finish their TLS handshake, then say nothing.
    sessions = await _open_tls_idle(port, TLS_FLOOD)
    tls_held = sum(not s.done() for s in sessions)
    await asyncio.wait(sessions, timeout=DEADLINE + SLACK)
    tls_open = sum(not s.done() for s in sessions)
    tls_lifetimes = sorted(s.result() for s in sessions if s.done())
    for session in sessions:
        session.cancel()

    # 2. Slowloris, below the cap: a ClientHello, a request line, a keep-alive connection's next
    # request head, each dripped a byte a second, are closed by the deadlines.
    limit = DEADLINE + SLACK
    healthz = b"GET /healthz HTTP/1.1\r\nHost: keepalive\r\n\r\n"
    client = _tls(cluster, "apiserver-kubelet-client")
    slow = [slow_handshake(port, limit) for _ in range(SLOWLORIS)]
    slow += [slow_request(port, limit) for _ in range(SLOWLORIS)]
    slow += [slow_request(port, limit, ctx=client, first=healthz) for _ in range(3)]
    slow_times = await asyncio.gather(*slow)
    stop.set()
    renewals, rss_peak = await lease, await peak

    # Memory is given back once the flood is over (polled: the server trims after the closes).
    after = rss_kb(pid)
    settle_until = time.monotonic() + 45
    while after > before + RSS_SLACK_KB and time.monotonic() < settle_until:
        await asyncio.sleep(0.5)
        after = rss_kb(pid)
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(renewals)]
    kinds = {"handshake": slow_times[:SLOWLORIS], "request line": slow_times[SLOWLORIS:-3]}
    kinds["keep-alive header"] = slow_times[-3:]
    figures = (
        f"TLS flood: {len(sessions)}/{TLS_FLOOD} handshaken, {tls_held} held, {tls_open} never closed; "
        f"lifetime {_spread(tls_lifetimes)}\n"
        f"flood: {len(probes)}/{FLOOD} idle connections accepted by TCP in {opened_in:.1f} s; "
        f"{held} still open after kubectl logs; {at_once} closed at once (< {AT_ONCE:.0f} s); "
        f"{still_open} never closed by the server within {DEADLINE + SLACK:.0f} s; lifetime "
        f"{_spread(lifetimes)}\n"
        "slowloris seconds to close: "
        + "; ".join(f"{kind} x{len(t)} {min(t):.1f}-{max(t):.1f}" for kind, t in kinds.items())
        + f"\nRSS before {before / 1024:.0f} MB, peak during {rss_peak / 1024:.0f} MB, "
        f"after {after / 1024:.0f} MB\n"
        f"lease renewals during the test: {len(renewals) - 1}, longest gap {max(gaps):.1f} s\n"
        f"kubectl logs during the flood: {during_kubectl.strip()!r}; direct GET: {during_direct[0]}"
    )
    print("\n" + figures)
    server_lines = [line for line in vn.process.log().splitlines() if "kubelet_api.connections" in line]
    print("\n".join(server_lines[-10:]))

    assert LINE.match(during_kubectl.strip()), figures
    assert during_direct[0] == 200 and LINE.match(during_direct[1].strip()), figures
    assert at_once >= len(probes) - CAP, figures
    assert still_open == 0 and lifetimes[-1] <= DEADLINE + SLACK, figures
    assert tls_held <= CAP and tls_open == 0 and max(tls_lifetimes) <= DEADLINE + SLACK, figures
    # Closed by the deadline, within the slack; not at once (below the cap nothing is evicted; the
    # clock of a client starts once its coroutine runs, a little after the server's accept).
    assert all(AT_ONCE <= t <= DEADLINE + SLACK for t in slow_times), figures
    assert rss_peak <= before + RSS_PEAK_SLACK_KB and after <= before + RSS_SLACK_KB, figures
    assert max(gaps) < 15, figures  # renewed every 2 s; the Lease lasts 40 s
    assert vn.process.proc.poll() is None, figures


async def _raw_exchange(port: int, request: bytes) -> bytes:
    """Send one raw request over TLS without credentials; what the server answered (b'' if closed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=_tls())
    try:
        writer.write(request)
        await writer.drain()
        with contextlib.suppress(OSError, ssl.SSLError, asyncio.IncompleteReadError):
            return await asyncio.wait_for(reader.read(4096), 20)
        return b""
    finally:
        writer.close()


BAD_REQUESTS = {
    "a 9 KB header": b"GET /pods HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9216 + b"\r\n\r\n",
    "a garbage request line": b"\x01\x02 not a request line at all\r\n\r\n",
    "a header without a colon": b"GET /pods HTTP/1.1\r\nHost: x\r\nthis is no header\r\n\r\n",
}


async def test_bad_requests_are_one_log_line_per_kind_at_most_and_never_a_traceback(
    virtual_node: StartNode,
) -> None:
    vn = await virtual_node()
    port = kubelet_port(vn)
    offset = len(vn.process.log())
    for name, request in BAD_REQUESTS.items():
        for _ in range(5):
            answer = await _raw_exchange(port, request)
            status = answer.split(b"\r\n", 1)[0]
            assert answer == b"" or re.match(rb"HTTP/1\.[01] 4\d\d ", status), (name, answer[:200])
    # An ordinary unauthenticated request for comparison: 401, and no log line at INFO.
    assert (await kubelet_get(vn, "/pods"))[0] == 401

    gained = vn.process.log()[offset:].splitlines()
    print("\nlog lines gained by 15 bad requests:\n" + "\n".join(gained))
    about_requests = [
        line
        for line in gained
        if not STAMP.match(line) or "aiohttp" in line or "kubelet_api" in line or "asyncio" in line
    ]
    assert not any("Traceback" in line for line in gained), gained
    assert not any(" ERROR " in line for line in gained), gained
    assert len(about_requests) <= len(BAD_REQUESTS), about_requests


INT64_MAX = 2**63 - 1


async def test_numeric_log_parameters_beyond_int64_are_400_naming_the_parameter(
    admin: Kube, namespace: str, virtual_node: StartNode, cluster: Cluster
) -> None:
    vn = await virtual_node()
    await create_running_pod(admin, namespace, "web", vn.name)

    async def get(query: str) -> tuple[int, str]:
        path = f"/containerLogs/{namespace}/web/app?{query}"
        return await kubelet_get(vn, path, cluster=cluster, client="apiserver-kubelet-client")

    for name in ("tailLines", "limitBytes", "sinceSeconds"):
        for value in (INT64_MAX + 1, 10**30):
            status, body = await get(f"{name}={value}")
            assert (status, name in body) == (400, True), (name, value, status, body)
    # The largest int64 is what the kubelet accepts: all the lines, all the bytes, since forever.
    results: dict[str, Any] = {}
    for name in ("tailLines", "limitBytes", "sinceSeconds"):
        status, body = await get(f"{name}={INT64_MAX}")
        results[name] = (status, bool(body.strip()) and all(LINE.match(x) for x in body.splitlines()))
    assert results == {name: (200, True) for name in results}, results


IDLE = 4.0  # --kubelet-api-idle-timeout here: the default (120 s) is too long to wait for in a test


async def test_an_idle_keep_alive_connection_is_closed_and_a_log_stream_outlives_it(
    admin: Kube, namespace: str, virtual_node: StartNode, cluster: Cluster
) -> None:
    vn = await virtual_node("--kubelet-api-idle-timeout", str(IDLE))
    await create_running_pod(admin, namespace, "web", vn.name)
    port = kubelet_port(vn)
    client = _tls(cluster, "apiserver-kubelet-client")

    # A log stream: it idles between lines far longer than nothing, but it is inside a request.
    stream_reader, stream_writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
    stream_writer.write(
        f"GET /containerLogs/{namespace}/web/app?follow=true HTTP/1.1\r\nHost: stream\r\n\r\n".encode()
    )
    head = await asyncio.wait_for(stream_reader.readuntil(b"\r\n\r\n"), 20)
    assert head.startswith(b"HTTP/1.1 200"), head
    fresh_after = [math.inf]  # set once the idle connection is closed
    fresh = asyncio.Event()  # data of the stream arrived after that

    async def read_stream() -> None:
        while await stream_reader.read(65536):
            if time.monotonic() > fresh_after[0]:
                fresh.set()

    streaming = asyncio.create_task(read_stream())

    # An authenticated keep-alive connection: one request answered, then nothing.
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: keepalive\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
        assert head.startswith(b"HTTP/1.1 200") and b"close" not in head.lower(), head
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
        await asyncio.wait_for(reader.readexactly(length), 20)
        answered = time.monotonic()
        closing = asyncio.ensure_future(_closed_by_server(reader))
        await asyncio.wait([closing], timeout=IDLE + SLACK)
        idle_for = time.monotonic() - answered if closing.done() else math.inf
        closing.cancel()
        closed_at = time.monotonic()

        # The stream is still served after the idle connection was closed.
        fresh_after[0] = closed_at + 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(fresh.wait(), 20)
        stream_alive = fresh.is_set() and not streaming.done()
        print(
            f"\nidle keep-alive connection closed after {idle_for:.1f} s (--kubelet-api-idle-timeout "
            f"{IDLE:.0f}); the log stream {'still' if stream_alive else 'no longer'} served"
        )
        assert IDLE / 2 <= idle_for <= IDLE + SLACK, (
            f"closed after {idle_for} s, the idle timeout is {IDLE} s"
        )
        assert stream_alive, "the log stream ended with the idle connection"
    finally:
        streaming.cancel()
        writer.close()
        stream_writer.close()
