"""A provider that fails 30 % of its calls at random (transient errors): every pod still runs,
each created once, and every delete still reaches the provider."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from tests.conftest import VirtualNode
from tests.faults.support import (
    assert_created_once,
    assert_never_deleted,
    create_pods,
    delete_persistently,
    describe_calls,
    log_figures,
    rss_mb,
    wait_gone,
    wait_running,
)
from vk_operator.kube import Kube

StartNode = Callable[..., Awaitable[VirtualNode]]
PODS = 50


async def test_a_provider_failing_30_percent_of_calls_converges(
    admin: Kube, namespace: str, virtual_node: StartNode
) -> None:
    vn = await virtual_node(
        "--retry-initial",
        "0.1",
        "--retry-cap",
        "0.5",
        "--metrics-port",
        "0",
        config="failures: {fail_ratio: 0.3, seed: 7}\nrecord_calls: true\n",
    )
    pid = vn.process.proc.pid
    rss_before = rss_mb(pid)
    started = time.monotonic()
    pods = await create_pods(admin, namespace, vn.name, (f"flaky-{i:02d}" for i in range(PODS)))
    running = await wait_running(admin, namespace, pods, timeout=60)
    since_first_create = time.monotonic() - started
    assert set(pods.values()) <= vn.provider_uids()
    per_pod = assert_created_once(vn, pods.values())
    assert_never_deleted(vn, pods.values())
    assert max(per_pod.values()) > 1, "no create failed: the failure injection did not happen"
    print(
        f"\n{PODS} pods Running {since_first_create:.1f} s after the burst began "
        f"({running:.1f} s after the last create); {describe_calls(per_pod)}"
    )

    await asyncio.gather(*(delete_persistently(admin, namespace, name) for name in pods))
    deleted = await wait_gone(admin, namespace, vn, pods.values(), timeout=60)
    deletes = vn.provider_state()["calls"]["delete"]
    per_pod_deletes = [deletes.get(uid, 0) for uid in pods.values()]
    assert not vn.provider_uids(), vn.provider_uids()
    assert vn.process.proc.poll() is None, vn.process.log()
    print(
        f"graceful delete: all gone {deleted:.1f} s; delete calls per pod mean "
        f"{sum(per_pod_deletes) / PODS:.2f} max {max(per_pod_deletes)}; RSS {rss_before} MiB before, "
        f"{rss_mb(pid)} MiB after; VK log: {log_figures(vn.process.log())}"
    )
