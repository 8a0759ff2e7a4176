"""Shutdown, start-up permission checks and log hygiene on the real control plane (issue 11: 13-15).

* SIGTERM in a burst: no new provider create after the signal, exit 0 within a bound, no traceback;
  a hung provider call is abandoned within the bound.
* ``--remove-node-on-exit`` without ``delete nodes``: one WARNING at start-up (SelfSubjectAccessReview).
* An apiserver outage: at most a few WARNING lines (none at ERROR, no traceback), INFO on recovery.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tests.conftest import VirtualNode, chart_rules, eventually, pod_manifest, wait_phase
from vk_operator.devcluster.cluster import Cluster
from vk_operator.kube import ApiError, Kube

StartNode = Callable[..., Awaitable[VirtualNode]]
BURST = 200
EXIT_BOUND = 2.0  # seconds the issue asks for
EXIT_SLACK = 3.0  # a busy 2-core machine (the test, the control plane and the VK share it)
_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+)\s")
# A failure to reach the API server, as aiohttp and the OS word it.
_UNREACHABLE = re.compile(
    r"Cannot connect to host|Connect call failed|Server ?Disconnected|Connection (refused|reset)"
)


def _create_calls(vn: VirtualNode) -> list[tuple[float, str]]:
    """(monotonic time, uid) of every provider create, from the mock's call log."""
    log = vn.provider_state().get("call_log", [])
    return [(float(at), uid) for at, method, uid in log if method == "create_pod"]


def _levels(lines: list[str]) -> list[str]:
    return [m["level"] if (m := _LINE.match(line)) else "CONTINUATION" for line in lines]


async def _delete_node(admin: Kube, name: str) -> None:
    with contextlib.suppress(ApiError):
        await admin.delete(f"/api/v1/nodes/{name}")


# -- 13 -------------------------------------------------------------------------------------------
async def test_sigterm_mid_burst_stops_new_work_at_once_and_exits_0_quickly(
    admin: Kube, cluster: Cluster, namespace: str, virtual_node: StartNode
) -> None:
    vn = await virtual_node(config="start_latency_seconds: 0.5\nrecord_calls: true\n")
    burst = await Kube.connect(str(cluster.admin_kubeconfig))  # no client-side rate limit

    async def create(i: int) -> None:
        with contextlib.suppress(ApiError, OSError):  # the burst may outlive the test's interest
            await burst.create(f"/api/v1/namespaces/{namespace}/pods", pod_manifest(f"p-{i}", vn.name))

    try:
        creating = [asyncio.create_task(create(i)) for i in range(BURST)]

        async def busy() -> bool:
            return len(_create_calls(vn)) >= 20  # the VK is creating in the provider, mid-burst

        await eventually(busy, what="provider creates under way", timeout=60, interval=0.05)
        sending = time.monotonic()
        vn.process.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()  # kill(2) has returned: the signal is the VK's now
        try:
            code = await asyncio.to_thread(vn.process.proc.wait, 30)
        except subprocess.TimeoutExpired:
            code = None
        took = time.monotonic() - sending
        await asyncio.gather(*creating)
    finally:
        await burst.close()
        await _delete_node(admin, vn.name)  # its pods are then garbage-collected
    log = vn.process.log()
    calls = _create_calls(vn)
    after = [uid for at, uid in calls if at > signalled]
    late = [f"+{(at - signalled) * 1000:.1f} ms" for at, _ in calls if at > signalled]
    print(
        f"SIGTERM mid-burst: exit {code} after {took:.2f} s; provider creates: "
        f"{len(calls) - len(after)} before the signal, {len(after)} after"
    )
    assert code == 0, log[-4000:]
    assert took < EXIT_BOUND + EXIT_SLACK, f"exit took {took:.2f} s"
    assert "Traceback" not in log and "RuntimeError" not in log, log[-6000:]
    assert not after, f"{len(after)} provider creates after SIGTERM: {late[:20]}"
    assert len(calls) < BURST  # the signal came mid-burst: most pods were never created


async def test_sigterm_abandons_a_hung_provider_call_within_the_bound(
    admin: Kube, namespace: str, virtual_node: StartNode
) -> None:
    vn = await virtual_node(config="record_calls: true\n")
    hung = pod_manifest("hung", vn.name, annotations={"mock.vk-operator.io/hang-creates": "1"})
    await admin.create(f"/api/v1/namespaces/{namespace}/pods", hung)

    async def creating() -> bool:
        return bool(_create_calls(vn))  # the create is under way and never answers

    await eventually(creating, what="the hung create under way")
    sending = time.monotonic()
    vn.process.proc.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(vn.process.proc.wait, 30)
    took = time.monotonic() - sending
    log = vn.process.log()
    print(f"SIGTERM with a hung provider create: exit {code} after {took:.2f} s")
    assert code == 0, log[-4000:]
    assert took < EXIT_BOUND + EXIT_SLACK, f"exit took {took:.2f} s"
    assert "abandoned" in log and "Traceback" not in log, log[-4000:]
    await _delete_node(admin, vn.name)


# -- 14 -------------------------------------------------------------------------------------------
def _remove_node_warnings(log: str) -> list[str]:
    return [
        line
        for line in log.splitlines()
        if " WARNING " in line and "--remove-node-on-exit" in line and "delete" in line
    ]


async def test_remove_node_on_exit_without_permission_is_a_start_up_warning(
    admin: Kube, virtual_node: StartNode
) -> None:
    vn = await virtual_node("--remove-node-on-exit")  # the node identity: system:node may not delete
    try:

        async def warned() -> list[str]:
            return _remove_node_warnings(vn.process.log())

        lines = await eventually(warned, what="the start-up warning", timeout=10)
        print("start-up warning:", lines[0])
        assert len(lines) == 1, lines
        assert "nodes" in lines[0] and vn.name in lines[0], lines[0]
        assert vn.process.proc.poll() is None  # a warning, not a failed start-up
        assert vn.process.stop(signal.SIGTERM) == 0, vn.process.log()
        # The Node is left behind (as the warning said); the exit says it once more, briefly.
        await admin.get(f"/api/v1/nodes/{vn.name}")
        assert "Traceback" not in vn.process.log()
    finally:
        await _delete_node(admin, vn.name)


async def test_remove_node_on_exit_with_the_chart_rbac_warns_nothing_and_removes_the_node(
    admin: Kube,
    virtual_node: StartNode,
    rbac_kubeconfig: Callable[..., Awaitable[Any]],
    node_name: str,
) -> None:
    rules = [*chart_rules(), {"apiGroups": [""], "resources": ["nodes"], "verbs": ["delete"]}]
    kubeconfig = await rbac_kubeconfig(f"vk-{node_name}", rules)
    vn = await virtual_node("--remove-node-on-exit", kubeconfig=kubeconfig)
    try:
        await asyncio.sleep(3)  # the check runs at start-up: it would have said so by now
        assert not _remove_node_warnings(vn.process.log()), vn.process.log()
        assert vn.process.stop(signal.SIGTERM) == 0, vn.process.log()

        async def gone() -> bool:
            try:
                await admin.get(f"/api/v1/nodes/{vn.name}")
            except ApiError as exc:
                return exc.not_found
            return False

        await eventually(gone, what="node removed", timeout=10)
        assert "cannot remove node" not in vn.process.log()
    finally:
        await _delete_node(admin, vn.name)


# -- 15 -------------------------------------------------------------------------------------------
async def test_apiserver_outage_is_a_few_warnings_and_an_info_on_recovery(
    admin: Kube, namespace: str, virtual_node: StartNode, cluster: Cluster
) -> None:
    vn = await virtual_node()
    await admin.create(f"/api/v1/namespaces/{namespace}/pods", pod_manifest("before", vn.name))
    await wait_phase(admin, namespace, "before", "Running")
    offset = len(vn.process.log().splitlines())
    await asyncio.to_thread(cluster.restart_apiserver, 20.0)
    # The watch serves again: a pod created now runs (kopf's watch and our heartbeat are back).
    await admin.create(f"/api/v1/namespaces/{namespace}/pods", pod_manifest("after", vn.name))
    await wait_phase(admin, namespace, "after", "Running", timeout=90)

    async def recovered() -> bool:
        return "renewed again" in vn.process.log()

    await eventually(recovered, what="the recovery line", timeout=30)
    await asyncio.sleep(5)  # anything kopf still has to say about the outage
    lines = vn.process.log().splitlines()[offset:]
    levels = _levels(lines)
    loud = [line for line, level in zip(lines, levels, strict=True) if level not in ("INFO", "DEBUG")]
    print(f"apiserver outage of 20 s: {len(loud)} lines at WARNING or above (or tracebacks):")
    for line in loud:
        print("   ", line[:200])
    print("recovery:", [line[:200] for line, level in zip(lines, levels, strict=True) if level == "INFO"])
    assert "ERROR" not in levels and "CRITICAL" not in levels, "\n".join(loud)
    assert "CONTINUATION" not in levels, "\n".join(loud)  # no tracebacks, no multi-line reprs
    assert len(loud) <= 3, "\n".join(loud)
    # One outage, one line saying the API server cannot be reached: whichever part notices first says
    # it; the others (the resync, kopf's watch, the status loop...) keep quiet until it answers again.
    unreachable = [line for line in loud if _UNREACHABLE.search(line)]
    assert len(unreachable) <= 1, "\n".join(unreachable)
    assert any(level == "INFO" for level in levels), lines
