"""The kubelet API's routes against fake providers (plain HTTP in-process; TLS and auth are tested live)."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pydantic
import pytest
from aiohttp.test_utils import TestClient, TestServer

from vk_operator import metrics
from vk_operator.domain.model import Capacity, PodRef
from vk_operator.kubelet_api.auth import Authenticator, Authorizer
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
