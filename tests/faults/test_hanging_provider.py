"""A provider whose calls hang (the answer never comes): the core's timeouts cut them, the calls
are retried, every pod runs once created and every graceful delete completes."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable

from tests.conftest import VirtualNode
from tests.faults.support import (
    MOCK,
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
PODS = 10
HANGS = {MOCK + "hang-creates": "1", MOCK + "hang-status": "2", MOCK + "hang-deletes": "1"}


async def test_hanging_provider_calls_are_cut_and_retried(
    admin: Kube, namespace: str, virtual_node: StartNode
) -> None:
    vn = await virtual_node(
        *("--provider-timeout-create", "1", "--provider-timeout-status", "1"),
        *("--provider-timeout-delete", "1", "--retry-initial", "0.2", "--retry-cap", "0.5"),
        *("--metrics-port", "0"),
        config="record_calls: true\n",
    )
    pid = vn.process.proc.pid
    rss_before = rss_mb(pid)
    pods = await create_pods(admin, namespace, vn.name, (f"hang-{i}" for i in range(PODS)), annotations=HANGS)
    running = await wait_running(admin, namespace, pods, timeout=45)
    per_pod = assert_created_once(vn, pods.values())
    assert_never_deleted(vn, pods.values())
    status_calls = collections.Counter(
        uid for _, method, uid in vn.provider_state()["call_log"] if method == "get_pod_status"
    )
    # Each pod's first create hung (it created the pod, the answer was lost) and was cut, then its
    # first two status reads hung: the core found the pod there instead of creating it again.
    log = vn.process.log()
    lines = [line for line in log.splitlines() if "create_pod timed out" in line]
    cut = [n for n in pods if any(f"{namespace}/{n}:" in line for line in lines)]
    assert sorted(cut) == sorted(pods), f"creates cut: {cut}"
    assert all(status_calls[uid] >= 3 for uid in pods.values()), status_calls
    print(
        f"\n{PODS} pods Running {running:.1f} s after creation (1 hung create + 2 hung status reads "
        f"of 1 s each); {describe_calls(per_pod)}; status calls per pod max "
        f"{max(status_calls[u] for u in pods.values())}"
    )

    await asyncio.gather(*(delete_persistently(admin, namespace, name) for name in pods))
    deleted = await wait_gone(admin, namespace, vn, pods.values(), timeout=45)
    deletes = vn.provider_state()["calls"]["delete"]
    assert all(deletes.get(uid, 0) >= 2 for uid in pods.values()), deletes  # the first one hung
    assert not vn.provider_uids(), vn.provider_uids()
    assert vn.process.proc.poll() is None, vn.process.log()
    print(
        f"graceful delete (1 hung delete each): all gone {deleted:.1f} s; RSS {rss_before} MiB before, "
        f"{rss_mb(pid)} MiB after; VK log: {log_figures(vn.process.log())}"
    )
