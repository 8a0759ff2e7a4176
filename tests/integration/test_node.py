"""The virtual Node on the real control plane: registration, heartbeat, status, lifecycle."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tests.conftest import VirtualNode, eventually
from vk_operator.devcluster.cluster import Cluster
from vk_operator.kube import ApiError, Kube
from vk_operator.kube.client import MERGE_PATCH

StartNode = Callable[..., Awaitable[VirtualNode]]


def _condition(node: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in node["status"]["conditions"] if c["type"] == kind)


async def test_registration_labels_taint_capacity_and_endpoints(admin: Kube, virtual_node: StartNode) -> None:
    vn = await virtual_node(config="cpu: '3'\nmemory: 5Gi\npods: '17'\ngpu: '2'\n")
    node = await admin.get(f"/api/v1/nodes/{vn.name}")
    labels = node["metadata"]["labels"]
    assert labels["type"] == "virtual-kubelet"
    assert labels["kubernetes.io/hostname"] == vn.name
    assert labels["kubernetes.io/os"] == "linux"
    assert labels["node.kubernetes.io/exclude-from-external-load-balancers"] == "true"
    assert {"key": "virtual-kubelet.io/provider", "value": "mock", "effect": "NoSchedule"} in node["spec"][
        "taints"
    ]
    status = node["status"]
    assert status["capacity"] == {"cpu": "3", "memory": "5Gi", "pods": "17", "nvidia.com/gpu": "2"}
    assert status["allocatable"] == status["capacity"]
    port = int(vn.args[vn.args.index("--kubelet-port") + 1])
    assert status["daemonEndpoints"]["kubeletEndpoint"]["Port"] == port
    assert status["nodeInfo"]["operatingSystem"] == "linux"
    assert status["nodeInfo"]["kubeletVersion"].startswith("v1.37")
    # kopf leaves no marks on the Node either.
    assert not node["metadata"].get("finalizers")
    assert not [a for a in node["metadata"].get("annotations") or {} if "kopf" in a]
    assert {c["type"] for c in status["conditions"]} >= {
        "Ready",
        "MemoryPressure",
        "DiskPressure",
        "PIDPressure",
        "NetworkUnavailable",
    }


async def test_taint_can_be_disabled_and_os_chosen(admin: Kube, virtual_node: StartNode) -> None:
    vn = await virtual_node("--taint", "", "--os", "Windows")
    node = await admin.get(f"/api/v1/nodes/{vn.name}")
    assert not [t for t in node["spec"].get("taints") or [] if t["key"] == "virtual-kubelet.io/provider"]
    assert node["metadata"]["labels"]["kubernetes.io/os"] == "windows"


async def test_status_refresh_keeps_transition_times_and_others_conditions_and_annotations(
    admin: Kube, virtual_node: StartNode
) -> None:
    vn = await virtual_node("--node-status-interval", "1")
    path = f"/api/v1/nodes/{vn.name}"
    before = await admin.get(path)
    ready_before = _condition(before, "Ready")
    # Someone else (an admin, a node-problem-detector) adds a condition and an annotation.
    await admin.patch(
        path + "/status",
        {
            "status": {
                "conditions": [
                    {"type": "example.com/Healthy", "status": "True", "reason": "Checked", "message": "ok"}
                ]
            }
        },
    )
    await admin.patch(path, {"metadata": {"annotations": {"example.com/owner": "team-a"}}}, MERGE_PATCH)

    async def refreshed() -> dict[str, Any] | None:
        node = await admin.get(path)
        ready = _condition(node, "Ready")
        return node if ready["lastHeartbeatTime"] != ready_before["lastHeartbeatTime"] else None

    after = await eventually(refreshed, what="a status refresh", timeout=15)
    assert _condition(after, "Ready")["lastTransitionTime"] == ready_before["lastTransitionTime"]
    assert _condition(after, "example.com/Healthy")["status"] == "True"
    assert after["metadata"]["annotations"]["example.com/owner"] == "team-a"


async def test_deleted_node_is_registered_again_within_a_heartbeat(
    admin: Kube, virtual_node: StartNode
) -> None:
    vn = await virtual_node()
    path = f"/api/v1/nodes/{vn.name}"
    old_uid = (await admin.get(path))["metadata"]["uid"]
    await admin.delete(path)
    started = time.monotonic()

    async def recreated() -> dict[str, Any] | None:
        try:
            node = await admin.get(path)
        except ApiError:
            return None
        return node if node["metadata"]["uid"] != old_uid else None

    node = await eventually(recreated, what="node re-created", timeout=10)
    assert time.monotonic() - started < 10  # heartbeat every 2 s in these tests
    lease = await eventually(
        lambda: _lease_owned_by(admin, vn.name, node["metadata"]["uid"]), what="lease re-owned", timeout=10
    )
    assert lease


async def _lease_owned_by(admin: Kube, name: str, uid: str) -> bool:
    lease = await admin.get(f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}")
    return bool(lease["metadata"]["ownerReferences"][0]["uid"] == uid)


async def test_remove_node_on_exit(admin: Kube, cluster: Cluster, virtual_node: StartNode) -> None:
    # The system:node role has no `delete nodes`: this needs an RBAC identity that may delete.
    vn = await virtual_node("--remove-node-on-exit", kubeconfig=cluster.admin_kubeconfig)
    assert vn.process.stop(signal.SIGTERM) == 0, vn.process.log()

    async def gone() -> bool:
        try:
            await admin.get(f"/api/v1/nodes/{vn.name}")
        except ApiError as exc:
            return exc.not_found
        return False

    await eventually(gone, what="node removed", timeout=10)


async def test_node_stays_ready_under_the_lifecycle_controller_and_goes_unknown_when_stopped(
    admin: Kube, virtual_node: StartNode
) -> None:
    # The session's controller-manager runs with --node-monitor-grace-period=20s.
    vn = await virtual_node()
    path = f"/api/v1/nodes/{vn.name}"

    async def untainted() -> bool:
        # The lifecycle controller lifts the `not-ready` taint every new node starts with.
        node = await admin.get(path)
        return not [t for t in node["spec"].get("taints") or [] if t["key"].startswith("node.kubernetes.io/")]

    await eventually(untainted, what="not-ready taint lifted", timeout=20)
    watched_until = time.monotonic() + 25  # longer than the grace period
    while time.monotonic() < watched_until:
        node = await admin.get(path)
        assert _condition(node, "Ready")["status"] == "True", node["status"]["conditions"]
        assert not [t for t in node["spec"].get("taints") or [] if t["key"].startswith("node.kubernetes.io/")]
        await asyncio.sleep(1)
    vn.process.stop(signal.SIGKILL)

    async def unknown() -> dict[str, Any] | None:
        node = await admin.get(path)
        return node if _condition(node, "Ready")["status"] == "Unknown" else None

    await eventually(unknown, what="node Unknown", timeout=60)

    async def unreachable() -> bool:
        # The lifecycle controller taints in a later pass than the one that writes the condition.
        node = await admin.get(path)
        return "node.kubernetes.io/unreachable" in {t["key"] for t in node["spec"].get("taints") or []}

    await eventually(unreachable, what="unreachable taint", timeout=30)


def test_bad_configuration_is_one_line_exit_2_and_registers_nothing(
    cluster: Cluster, tmp_path: Any, node_name: str, kubectl: Callable[..., str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("cpu: 3\nstart_latency_seconds: -1\nunknown_field: x\n")
    cases = [
        ["--provider", "mock", "--provider-config", str(bad)],
        ["--provider", "nosuch"],
        ["--kubelet-port", "99999"],
        ["--nodename", "Not_A_DNS_Name"],
        ["--provider-config", str(tmp_path / "missing.yaml")],
    ]
    for extra in cases:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "vk_operator.cli",
                "--nodename",
                node_name,
                "--kubeconfig",
                str(cluster.admin_kubeconfig),
                *extra,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 2, (extra, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("virtual-kubelet: "), out.stderr
    message = subprocess.run(
        [sys.executable, "-m", "vk_operator.cli", "--provider-config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    ).stderr
    # Every wrong field is named.
    assert "start_latency_seconds" in message and "unknown_field" in message
    assert "NotFound" in kubectl("get", "node", node_name, check=False)


def test_settings_come_from_the_environment_too() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "vk_operator.cli"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"VK_KUBELET_PORT": "not-a-port", "PATH": "/usr/bin"},
    )
    assert out.returncode == 2 and "kubelet_port" in out.stderr
