"""kill -9 of the virtual kubelet in the middle of a burst: the next process (same flags, same
provider state) adopts what the first one created, creates the rest, and creates nothing twice."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable

from tests.conftest import VirtualKubeletProcess, VirtualNode, eventually
from tests.faults.support import (
    assert_created_once,
    assert_never_deleted,
    create_pods,
    delete_persistently,
    describe_calls,
    log_figures,
    phases,
    rss_mb,
    wait_gone,
    wait_running,
)
from vk_operator.kube import Kube

StartNode = Callable[..., Awaitable[VirtualNode]]
PODS = 100
KILL_AT = 30  # Running pods


async def test_kill_9_mid_burst_loses_nothing_and_creates_nothing_twice(
    admin: Kube,
    namespace: str,
    virtual_node: StartNode,
    start_vk: Callable[..., VirtualKubeletProcess],
) -> None:
    vn = await virtual_node("--metrics-port", "0")
    first = vn.process
    rss_start = rss_mb(first.proc.pid)
    names = [f"burst-{i:03d}" for i in range(PODS)]

    async def running_count() -> int:
        return sum(phase == "Running" for _, phase in (await phases(admin, namespace)).values())

    async def enough_running() -> int:
        count = await running_count()
        return count if count >= KILL_AT else 0

    burst = asyncio.create_task(create_pods(admin, namespace, vn.name, names))
    try:
        running_at_kill = await eventually(
            enough_running, timeout=45, interval=0.05, what=f"{KILL_AT} pods Running"
        )
        rss_at_kill = rss_mb(first.proc.pid)
        first.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(first.proc.wait, 10)
        killed_at = time.monotonic()
        in_provider_at_kill = len(vn.provider_uids())
        pods = await burst
    finally:
        burst.cancel()
    assert running_at_kill < PODS, "every pod ran before the kill: nothing was interrupted"
    print(
        f"\nkill -9 with {running_at_kill}/{PODS} Running, {in_provider_at_kill} in the provider, "
        f"RSS {rss_start} MiB at start, {rss_at_kill} MiB at the kill"
    )

    second = start_vk(*vn.args)  # same node name, kubelet port, provider config and state file
    vn.process = second
    converge = await wait_running(admin, namespace, pods, timeout=60, what="pods after the restart")
    since_kill = time.monotonic() - killed_at
    assert set(pods.values()) <= vn.provider_uids()
    per_pod = assert_created_once(vn, pods.values())
    assert_never_deleted(vn, pods.values())
    rss_converged = rss_mb(second.proc.pid)
    print(
        f"all {PODS} Running {converge:.1f} s after the new VK started ({since_kill:.1f} s after the "
        f"kill); {describe_calls(per_pod)}; new VK RSS {rss_converged} MiB"
    )

    await asyncio.gather(*(delete_persistently(admin, namespace, name) for name in pods))
    deleted = await wait_gone(admin, namespace, vn, pods.values(), timeout=60)
    assert not vn.provider_uids(), vn.provider_uids()
    assert second.proc.poll() is None, second.log()
    print(
        f"graceful delete of {PODS}: all gone {deleted:.1f} s; new VK RSS {rss_mb(second.proc.pid)} MiB; "
        f"new VK log: {log_figures(second.log())}"
    )
