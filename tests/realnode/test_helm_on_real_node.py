"""`helm install` as a user runs it: the chart's Deployment on a real kubelet node, its container
the image `make image` builds, the virtual kubelet in it registering its own virtual node.

One release per module, in the order a user lives it: install (the VK pod Running and Ready, its
node Ready, a Deployment on the virtual node, logs and exec through the VK container), upgrade (the
provider ConfigMap applied live), the VK container killed (restarted by the kubelet, no pod lost or
created twice), uninstall (the virtual node removed, nothing left).

The mock keeps its "cloud" in a state file on an emptyDir: an emptyDir lives as long as the pod, not
the container, so a restarted container finds the pods it created, as a real provider's process
finds its cloud's. With the in-memory default a restarted mock would know no pod, and the core would
create every pod on the virtual node a second time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import pathlib
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, eventually
from tests.realnode.conftest import Helm
from vk_operator.devcluster import image
from vk_operator.devcluster.cluster import Cluster
from vk_operator.devcluster.node import TAINT_KEY, RealNode
from vk_operator.kube import ApiError, Kube

CHART = REPO / "charts/virtual-kubelet"
STATE_DIR = "/var/lib/vk-mock"
REPLICAS = 2


@dataclasses.dataclass
class Release:
    name: str
    namespace: str
    virtual_node: str
    values: pathlib.Path
    kubectl: str
    kubeconfig: pathlib.Path

    @property
    def selector(self) -> str:
        return f"app.kubernetes.io/instance={self.name}"

    def run_kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(
            [self.kubectl, f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=90,
        )
        if check and out.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {out.stderr}")
        return out


@pytest.fixture(scope="module")
def release(
    cluster: Cluster, real_node: RealNode, vk_image: str, helm: Helm, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Release]:
    suffix = uuid.uuid4().hex[:6]
    virtual_node = f"vk-helm-{suffix}"
    values: dict[str, Any] = {
        # The chart's default image reference is the one `make image` builds: only the pull policy
        # changes (no registry here; the image is imported into the node's containerd).
        "image": {"pullPolicy": "Never"},
        "nodeName": virtual_node,
        "removeNodeOnExit": True,
        "rollOnConfigChange": False,  # the upgrade below relies on the live reload
        "providerConfig": {"cpu": "8", "state_file": f"{STATE_DIR}/state.json"},
        "volumes": [{"name": "mock-state", "emptyDir": {}}],
        "volumeMounts": [{"name": "mock-state", "mountPath": STATE_DIR}],
        "tolerations": [{"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}],
        "nodeSelector": {"kubernetes.io/hostname": real_node.name},
    }
    values_file = tmp_path_factory.mktemp("release") / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    kubectl = str(cluster.state()["binaries"]["kubectl"])  # type: ignore[index]
    rel = Release(
        f"vk-{suffix}", f"rn-{suffix}", virtual_node, values_file, kubectl, cluster.admin_kubeconfig
    )
    rel.run_kubectl("create", "namespace", rel.namespace)
    helm("install", rel.name, CHART, "-n", rel.namespace, "-f", values_file)
    try:
        yield rel
    finally:
        helm("uninstall", rel.name, "-n", rel.namespace, "--wait", "--timeout=120s", check=False)
        rel.run_kubectl("delete", "namespace", rel.namespace, "--wait=false", check=False)


async def vk_pod(admin: Kube, rel: Release) -> dict[str, Any] | None:
    pods = await admin.get(f"/api/v1/namespaces/{rel.namespace}/pods", labelSelector=rel.selector)
    live = [p for p in pods["items"] if not p["metadata"].get("deletionTimestamp")]
    return live[0] if len(live) == 1 else None


def is_ready(obj: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in obj["status"].get("conditions", []))


async def ready_vk_pod(admin: Kube, rel: Release) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        pod = await vk_pod(admin, rel)
        return pod if pod and pod["status"].get("phase") == "Running" and is_ready(pod) else None

    # Generous: the first start imports nothing but unpacks the image and byte-compiled nothing.
    return await eventually(
        probe, timeout=120, interval=1, what="the virtual kubelet's pod Running and Ready"
    )


async def virtual_node_ready(admin: Kube, rel: Release) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        node = await admin.get(f"/api/v1/nodes/{rel.virtual_node}")
        return node if is_ready(node) else None

    return await eventually(probe, timeout=90, interval=1, what=f"virtual node {rel.virtual_node} Ready")


def workload(rel: Release, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "nodeSelector": {"type": "virtual-kubelet", "kubernetes.io/hostname": rel.virtual_node},
                    "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists"}],
                    "containers": [{"name": "web", "image": "nginx:1.27"}],
                },
            },
        },
    }


async def web_pods(admin: Kube, rel: Release, count: int) -> list[dict[str, Any]]:
    async def probe() -> list[dict[str, Any]] | None:
        pods = await admin.get(f"/api/v1/namespaces/{rel.namespace}/pods", labelSelector="app=web")
        items = [p for p in pods["items"] if not p["metadata"].get("deletionTimestamp")]
        running = [p for p in items if p["status"].get("phase") == "Running" and is_ready(p)]
        return items if len(items) == count and len(running) == count else None

    return await eventually(
        probe, timeout=90, interval=1, what=f"{count} web pods Running on the virtual node"
    )


def mock_state(real_node: RealNode, pod: dict[str, Any]) -> dict[str, Any]:
    """The mock's state file, read from the VK pod's emptyDir on the node."""
    path = (
        real_node.dir
        / "kubelet/pods"
        / pod["metadata"]["uid"]
        / "volumes/kubernetes.io~empty-dir/mock-state/state.json"
    )
    return json.loads(path.read_text())  # type: ignore[no-any-return]


# -- install --------------------------------------------------------------------------------------


async def test_install_runs_the_virtual_kubelet_in_a_pod_of_the_real_node(
    release: Release, admin: Kube, real_node: RealNode
) -> None:
    pod = await ready_vk_pod(admin, release)
    assert pod["spec"]["nodeName"] == real_node.name
    container = pod["status"]["containerStatuses"][0]
    assert container["image"] == image.IMAGE
    assert container["restartCount"] == 0
    node = await virtual_node_ready(admin, release)
    # The VK advertises its pod's IP (a bridge address of the real node) as the node's address.
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addresses["InternalIP"] == pod["status"]["podIP"]
    assert node["status"]["capacity"]["cpu"] == "8"

    await admin.create(
        f"/apis/apps/v1/namespaces/{release.namespace}/deployments", workload(release, REPLICAS)
    )
    pods = await web_pods(admin, release, REPLICAS)
    assert {p["spec"]["nodeName"] for p in pods} == {release.virtual_node}

    # logs and exec on a pod of the virtual node: apiserver -> the VK container's kubelet API.
    web = pods[0]["metadata"]["name"]

    async def log_line() -> str | None:
        logs = await asyncio.to_thread(release.run_kubectl, "logs", "-n", release.namespace, web, "--tail=1")
        return logs.stdout.strip() or None  # the mock writes its first line a second after the start

    line = await eventually(log_line, timeout=60, interval=1, what=f"a log line of {web}")
    assert line.startswith(f"{web} web line "), line
    executed = await asyncio.to_thread(
        release.run_kubectl, "exec", "-n", release.namespace, web, "--", "hostname"
    )
    assert executed.stdout.strip() == web

    # logs and exec on the VK pod itself: apiserver -> the real kubelet -> containerd.
    name = pod["metadata"]["name"]
    vk_logs = await asyncio.to_thread(release.run_kubectl, "logs", "-n", release.namespace, name)
    assert release.virtual_node in vk_logs.stdout
    assert "Traceback" not in vk_logs.stdout, vk_logs.stdout
    # Non-root with no passwd entry for its UID (the image has none on purpose).
    ids = await asyncio.to_thread(
        release.run_kubectl, "exec", "-n", release.namespace, name, "--", "sh", "-c",
        "id -u; id -g; id -un >/dev/null 2>&1 || echo no-passwd-entry",
    )  # fmt: skip
    assert ids.stdout.split() == ["65532", "65532", "no-passwd-entry"]


# -- upgrade --------------------------------------------------------------------------------------


async def test_upgrade_applies_the_provider_config_live(release: Release, admin: Kube, helm: Helm) -> None:
    before = await ready_vk_pod(admin, release)
    helm(
        "upgrade", release.name, CHART, "-n", release.namespace, "-f", release.values,
        "--set-string", "providerConfig.cpu=12",
    )  # fmt: skip

    async def capacity() -> str | None:
        node = await admin.get(f"/api/v1/nodes/{release.virtual_node}")
        cpu: str = node["status"]["capacity"]["cpu"]
        return cpu if cpu == "12" else None

    await eventually(capacity, timeout=90, interval=1, what="the node's cpu capacity from the new ConfigMap")
    after = await ready_vk_pod(admin, release)
    # Live: the same pod, its container never restarted (rollOnConfigChange is off).
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert after["status"]["containerStatuses"][0]["restartCount"] == 0


# -- the VK container killed ----------------------------------------------------------------------


async def test_killed_container_is_restarted_and_no_pod_is_lost_or_created_twice(
    release: Release, admin: Kube, real_node: RealNode
) -> None:
    pod = await ready_vk_pod(admin, release)
    before = {p["metadata"]["uid"] for p in await web_pods(admin, release, REPLICAS)}
    assert set(mock_state(real_node, pod)["pods"]) == before
    container_id = pod["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1]
    await asyncio.to_thread(real_node.ctr, "tasks", "kill", "--signal", "SIGKILL", container_id)

    async def restarted() -> dict[str, Any] | None:
        now = await vk_pod(admin, release)
        statuses = (now or {}).get("status", {}).get("containerStatuses") or [{}]
        return now if statuses[0].get("restartCount", 0) >= 1 and is_ready(now or {"status": {}}) else None

    after = await eventually(restarted, timeout=120, interval=1, what="the VK container restarted and Ready")
    assert after["metadata"]["uid"] == pod["metadata"]["uid"]  # the same pod: its emptyDir kept
    last = after["status"]["containerStatuses"][0]["lastState"]["terminated"]
    assert last["exitCode"] == 137, last  # SIGKILL, not a clean exit

    # The restarted process serves a new pod too, and only then are the counts read: by then it has
    # listed and reconciled every pod bound to its node.
    await admin.patch(
        f"/apis/apps/v1/namespaces/{release.namespace}/deployments/web", {"spec": {"replicas": REPLICAS + 1}}
    )
    pods = await web_pods(admin, release, REPLICAS + 1)
    uids = {p["metadata"]["uid"] for p in pods}
    assert before < uids  # none lost, none replaced
    state = mock_state(real_node, after)
    assert set(state["pods"]) == uids
    assert state["calls"]["created"] == dict.fromkeys(uids, 1), state["calls"]
    assert not state["calls"]["delete"], state["calls"]


# -- uninstall ------------------------------------------------------------------------------------


async def test_uninstall_removes_the_virtual_node_and_leaves_nothing(
    release: Release, admin: Kube, helm: Helm, real_node: RealNode
) -> None:
    pod = await ready_vk_pod(admin, release)
    pod_filter = f"labels.io.kubernetes.pod.uid=={pod['metadata']['uid']}"
    assert real_node.ctr("containers", "ls", "-q", pod_filter).split()  # the check below sees them
    await admin.delete(f"/apis/apps/v1/namespaces/{release.namespace}/deployments/web")

    async def no_web_pods() -> bool:
        pods = await admin.get(f"/api/v1/namespaces/{release.namespace}/pods", labelSelector="app=web")
        return not pods["items"]

    await eventually(no_web_pods, timeout=90, interval=1, what="the web pods deleted through the provider")
    helm("uninstall", release.name, "-n", release.namespace, "--wait", "--timeout=120s")

    async def node_gone() -> bool:
        try:
            await admin.get(f"/api/v1/nodes/{release.virtual_node}")
        except ApiError as exc:
            return exc.not_found
        return False

    await eventually(node_gone, timeout=90, interval=1, what="the virtual node deleted on exit")

    async def nothing_left() -> bool:
        pods = await admin.get(f"/api/v1/namespaces/{release.namespace}/pods")
        return not pods["items"]

    await eventually(nothing_left, timeout=90, interval=1, what="no pod left in the release namespace")
    leftovers = await asyncio.to_thread(
        release.run_kubectl,
        "get",
        "all,configmaps,secrets,serviceaccounts,roles,rolebindings,leases",
        "-n",
        release.namespace,
        "-l",
        release.selector,
        "-o",
        "name",
    )
    assert leftovers.stdout.strip() == ""
    cluster_wide = await asyncio.to_thread(
        release.run_kubectl, "get", "clusterroles,clusterrolebindings", "-l", release.selector, "-o", "name"
    )
    assert cluster_wide.stdout.strip() == ""
    assert helm("list", "-a", "-q", "-n", release.namespace).stdout.strip() == ""
    with pytest.raises(ApiError) as lease:
        await admin.get(
            f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{release.virtual_node}"
        )
    assert lease.value.not_found

    # No process of the VK pod runs on the real node any more, its sandbox included (the exited
    # containers' records go with the kubelet's container GC, once a minute).
    async def nothing_running() -> bool:
        ours = await asyncio.to_thread(real_node.ctr, "containers", "ls", "-q", pod_filter)
        tasks = await asyncio.to_thread(real_node.ctr, "tasks", "ls")
        running = {line.split()[0] for line in tasks.splitlines()[1:] if "RUNNING" in line}
        return not set(ours.split()) & running

    await eventually(nothing_running, timeout=60, interval=1, what="no container of the VK pod running")
