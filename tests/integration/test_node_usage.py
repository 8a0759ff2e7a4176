"""`kubectl top node` needs a node CPU counter that only grows and figures that are never zero.

metrics-server skips a node whose cumulative CPU went down ("unexpected decrease in cumulative CPU
usage value") and drops any node or pod reporting zero; the kubelet's root cgroup includes the node's
own processes. Scraped here through the apiserver's node proxy, as metrics-server does.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Awaitable, Callable

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import VirtualNode, eventually

# The kubelet API tests' fixtures: a node reachable through the apiserver's node proxy.
from tests.integration.test_kubelet_api import api_node, create_running_pod, node_ip  # noqa: F401
from tests.integration.test_pods import gone, pod_path
from vk_operator.kube import Kube

StartNode = Callable[..., Awaitable[VirtualNode]]
RESOURCES = {"requests": {"cpu": "500m", "memory": "64Mi"}}


def _node_figures(kubectl: Callable[..., str], node: str) -> tuple[float, float]:
    text = kubectl("get", "--raw", f"/api/v1/nodes/{node}/proxy/metrics/resource")
    samples = {
        s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels
    }
    return samples["node_cpu_usage_seconds_total"], samples["node_memory_working_set_bytes"]


async def test_an_idle_node_reports_its_own_usage(
    api_node: StartNode,  # noqa: F811
    kubectl: Callable[..., str],
) -> None:
    vn = await api_node()
    cpu, memory = _node_figures(kubectl, vn.name)
    print(f"idle node: cpu {cpu:.3f} core-s, working set {memory / 2**20:.1f} MiB")
    assert cpu > 0 and memory > 0  # metrics-server drops a node reporting zero


async def test_node_cpu_counter_never_decreases_when_pods_leave(
    admin: Kube,
    namespace: str,
    api_node: StartNode,  # noqa: F811
    kubectl: Callable[..., str],
) -> None:
    vn = await api_node()
    for name in ("stays", "leaves"):
        await create_running_pod(
            admin,
            namespace,
            name,
            vn.name,
            containers=[{"name": "app", "image": "nginx:1.27", "resources": RESOURCES}],
        )
    # Every scrape is one of ours (no metrics-server here), so the last one that still listed
    # "leaves" is the last time the node counted it: its counter there is what stays counted.
    last: dict[str, float] = {}

    def scrape() -> _Scrape:
        seen = _Scrape.of(kubectl, vn.name)
        if "leaves" in seen.pods:
            last.update(leaves=seen.pods["leaves"], stays=seen.pods["stays"])
        return seen

    # Let "leaves" accumulate CPU time (the mock uses half the request: 0.25 core).
    first = scrape().node_cpu

    async def grown() -> float | None:
        value = scrape().node_cpu
        return value if value >= first + 1.0 else None

    before = await eventually(grown, what="node CPU time to grow by 1 core-s", timeout=30, interval=0.5)
    await admin.delete(pod_path(namespace, "leaves"), {"gracePeriodSeconds": 0})
    await eventually(lambda: gone(admin, namespace, "leaves"), what="pod gone")
    await eventually(lambda: _async("leaves" not in scrape().pods), what="the pod out of the node's metrics")
    after = scrape().node_cpu
    print(f"node CPU before the pod left {before:.3f} core-s, after {after:.3f}")
    assert after >= before, f"node_cpu_usage_seconds_total went down from {before} to {after}"

    # Not merely "not down": the node keeps the time of the pod that left and goes on counting the
    # rest. Its counter is at least the process's own CPU time + what "leaves" had used + what
    # "stays" has used now; a counter that only stood still until the remaining pods caught up is
    # below that once "stays" has run on (0.5 core-s: 2 s).
    async def ran_on() -> tuple[float, float, _Scrape] | None:
        own = _process_cpu_seconds(vn.process.proc.pid)  # before the scrape: a lower bound
        seen = scrape()
        return (own, seen.pods["stays"], seen) if seen.pods["stays"] >= last["stays"] + 0.5 else None

    own, stays, seen = await eventually(ran_on, what='"stays" to run on', timeout=30, interval=0.5)
    floor = own + last["leaves"] + stays
    print(
        f"node CPU {seen.node_cpu:.3f} core-s; at least {floor:.3f}: the process {own:.3f} + "
        f'"leaves" {last["leaves"]:.3f} + "stays" {stays:.3f}'
    )
    assert seen.node_cpu >= floor - TICK, (
        f"node_cpu_usage_seconds_total {seen.node_cpu} < {floor}: the time of the pod that left "
        "is not counted"
    )


class _Scrape:
    """One /metrics/resource of a node through the apiserver: the node's CPU time, each pod's."""

    def __init__(self, node_cpu: float, pods: dict[str, float]) -> None:
        self.node_cpu = node_cpu
        self.pods = pods

    @classmethod
    def of(cls, kubectl: Callable[..., str], node: str) -> _Scrape:
        text = kubectl("get", "--raw", f"/api/v1/nodes/{node}/proxy/metrics/resource")
        samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
        node_cpu = next(s.value for s in samples if s.name == "node_cpu_usage_seconds_total")
        pods = {s.labels["pod"]: s.value for s in samples if s.name == "pod_cpu_usage_seconds_total"}
        return cls(node_cpu, pods)


TICK = 0.05  # seconds: /proc/PID/stat counts CPU time in clock ticks (10 ms), rounded down


def _process_cpu_seconds(pid: int) -> float:
    """A process's CPU time so far (user + system, every thread): what ``time.process_time`` says
    inside it."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _async(value: bool) -> bool:
    return value
