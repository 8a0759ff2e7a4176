"""An etcd restart under a running node: pods created, gracefully deleted and force-deleted while
etcd is down (the API calls retried until the API server can serve them again) all converge."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable

from tests.conftest import VirtualNode, eventually, pod_manifest
from tests.faults.support import (
    assert_created_once,
    assert_never_deleted,
    create_persistently,
    create_pods,
    delete_persistently,
    describe_calls,
    log_figures,
    phases,
    rss_mb,
    wait_gone,
    wait_running,
)
from vk_operator.devcluster.cluster import Cluster
from vk_operator.kube import Kube

StartNode = Callable[..., Awaitable[VirtualNode]]


def _etcd_healthy(cluster: Cluster) -> bool:
    ports = cluster.state()["ports"]
    assert isinstance(ports, dict)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['etcd']}/health", timeout=1) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


async def test_pods_created_and_deleted_during_an_etcd_restart_converge(
    admin: Kube, namespace: str, virtual_node: StartNode, cluster: Cluster
) -> None:
    vn = await virtual_node("--metrics-port", "0")
    pid = vn.process.proc.pid
    before = await create_pods(admin, namespace, vn.name, (f"before-{i}" for i in range(6)))
    await wait_running(admin, namespace, before, timeout=30)
    rss_before = rss_mb(pid)

    stopped = time.monotonic()
    restart = asyncio.create_task(asyncio.to_thread(cluster.restart_etcd, 2.0))
    await eventually(
        lambda: asyncio.to_thread(lambda: not _etcd_healthy(cluster)), timeout=15, what="etcd down"
    )
    # While etcd is down: each call waits in the API server or fails, and is retried until it is done.
    graceful, forced = ["before-0", "before-1"], ["before-2"]
    during_names = [f"during-{i}" for i in range(4)]
    outage_calls = asyncio.gather(
        *(create_persistently(admin, namespace, pod_manifest(n, vn.name)) for n in during_names),
        *(delete_persistently(admin, namespace, n) for n in graceful),
        *(delete_persistently(admin, namespace, n, {"gracePeriodSeconds": 0}) for n in forced),
    )
    await restart
    healthy = time.monotonic()
    results = await outage_calls
    calls_done = time.monotonic()
    during = {pod["metadata"]["name"]: pod["metadata"]["uid"] for pod in results[: len(during_names)]}
    print(
        f"\netcd down {healthy - stopped:.1f} s (SIGTERM to healthy); the API calls made meanwhile "
        f"completed {calls_done - healthy:.1f} s after etcd was back"
    )

    survivors = {n: uid for n, uid in before.items() if n not in graceful + forced}
    deleted = {before[n] for n in graceful + forced}
    expected = {**survivors, **during}

    async def converged() -> bool:
        seen = await phases(admin, namespace)
        return (
            set(seen) == set(expected)
            and all(seen[n] == (uid, "Running") for n, uid in expected.items())
            and not deleted & vn.provider_uids()
        )

    try:
        await eventually(converged, timeout=60, interval=0.25, what="convergence after the etcd restart")
    except AssertionError:
        raise AssertionError(
            f"not converged 60 s after etcd was back: API {await phases(admin, namespace)}, "
            f"deleted pods still in the provider {deleted & vn.provider_uids()}\n{vn.process.log()[-5000:]}"
        ) from None
    converge = time.monotonic() - healthy
    assert set(expected.values()) <= vn.provider_uids()
    per_pod = assert_created_once(vn, [*before.values(), *during.values()])
    assert_never_deleted(vn, expected.values())

    async def node_ready() -> bool:
        node = await admin.get(f"/api/v1/nodes/{vn.name}")
        return any(
            c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions", [])
        )

    await eventually(node_ready, timeout=30, what="node Ready after the etcd restart")
    print(
        f"converged {converge:.1f} s after etcd was back ({time.monotonic() - stopped:.1f} s after it "
        f"was stopped); {describe_calls(per_pod)}; RSS {rss_before} MiB before, {rss_mb(pid)} MiB after"
    )

    await asyncio.gather(*(delete_persistently(admin, namespace, n) for n in expected))
    gone = await wait_gone(admin, namespace, vn, [*before.values(), *during.values()], timeout=60)
    assert not vn.provider_uids(), vn.provider_uids()
    assert vn.process.proc.poll() is None, vn.process.log()
    print(f"the rest deleted: all gone {gone:.1f} s; VK log: {log_figures(vn.process.log())}")
