"""`kubectl top node` needs a node CPU counter that only grows and figures that are never zero.

metrics-server skips a node whose cumulative CPU went down ("unexpected decrease in cumulative CPU
usage value") and drops any node or pod reporting zero; the kubelet's root cgroup includes the node's
own processes. Scraped here through the apiserver's node proxy, as metrics-server does.
"""

from __future__ import annotations

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
    # Let "leaves" accumulate CPU time (the mock uses half the request: 0.25 core).
    first, _ = _node_figures(kubectl, vn.name)

    async def grown() -> float | None:
        value, _ = _node_figures(kubectl, vn.name)
        return value if value >= first + 1.0 else None

    before = await eventually(grown, what="node CPU time to grow by 1 core-s", timeout=30, interval=0.5)
    await admin.delete(pod_path(namespace, "leaves"), {"gracePeriodSeconds": 0})
    await eventually(lambda: gone(admin, namespace, "leaves"), what="pod gone")
    await eventually(
        lambda: _async(
            "leaves" not in kubectl("get", "--raw", f"/api/v1/nodes/{vn.name}/proxy/metrics/resource")
        ),
        what="the pod out of the node's metrics",
    )
    after, _ = _node_figures(kubectl, vn.name)
    print(f"node CPU before the pod left {before:.3f} core-s, after {after:.3f}")
    assert after >= before, f"node_cpu_usage_seconds_total went down from {before} to {after}"


async def _async(value: bool) -> bool:
    return value
