"""The rig itself, and a minimal virtual kubelet on it, on the real control plane."""

from __future__ import annotations

import datetime
import json
import pathlib
import socket
import subprocess
import sys
from collections.abc import Callable

import pytest

from tests.conftest import VirtualKubeletProcess, eventually, mock_vk_args
from vk_operator.devcluster import cluster as cluster_module
from vk_operator.devcluster.cluster import Cluster, ClusterError, free_port
from vk_operator.kube import Kube


def test_server_reports_kubernetes_1_37(kubectl: Callable[..., str]) -> None:
    version = json.loads(kubectl("version", "-o", "json"))
    assert version["serverVersion"]["gitVersion"].startswith("v1.37.")
    assert version["clientVersion"]["gitVersion"].startswith("v1.37.")


def test_second_up_on_a_live_dir_is_a_clear_error(cluster: Cluster) -> None:
    before = cluster.running()
    with pytest.raises(ClusterError, match="already runs"):
        cluster.up()
    assert cluster.running() == before  # nothing stopped, no second etcd


def test_a_port_taken_during_start_up_is_retried_on_new_ports(
    cluster: Cluster, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """etcd's port is taken between being picked and being bound: `up` starts again on new ports."""
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        picks = iter([taken])  # the first pick (etcd's client port) is the taken one
        monkeypatch.setattr(cluster_module, "free_port", lambda: next(picks, None) or free_port())
        second = Cluster(tmp_path / "cp")
        try:
            second.up()
            assert second.state()["ports"]["etcd"] != taken  # type: ignore[index]
            components = {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"}
            assert set(second.running()) == components
        finally:
            second.down()


def test_status_command_lists_every_component(cluster: Cluster) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "vk_operator.devcluster", "status", "--dir", str(cluster.dir)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for component in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        assert f"{component}" in out
    assert "stopped" not in out


def test_node_identity_is_restricted_by_the_node_authorizer(
    cluster: Cluster, kubectl: Callable[..., str], node_name: str
) -> None:
    kubeconfig = cluster.node_kubeconfig(node_name)
    whoami = json.loads(kubectl("auth", "whoami", "-o", "json", kubeconfig=kubeconfig))
    assert whoami["status"]["userInfo"]["username"] == f"system:node:{node_name}"
    assert "system:nodes" in whoami["status"]["userInfo"]["groups"]
    # A kubelet may list only its own pods (by field selector), never all pods.
    denied = kubectl("get", "pods", "-A", kubeconfig=kubeconfig, check=False)
    assert "forbidden" in denied.lower()
    allowed = kubectl(
        "get", "pods", "-A", f"--field-selector=spec.nodeName={node_name}", kubeconfig=kubeconfig, check=False
    )
    assert "forbidden" not in allowed.lower()


def _lease_renew_time(lease: dict[str, object]) -> datetime.datetime:
    spec = lease["spec"]
    assert isinstance(spec, dict)
    return datetime.datetime.fromisoformat(str(spec["renewTime"]).replace("Z", "+00:00"))


async def test_virtual_kubelet_registers_renews_and_runs_a_pod(
    cluster: Cluster,
    admin: Kube,
    namespace: str,
    node_name: str,
    tmp_path: pathlib.Path,
    start_vk: Callable[..., VirtualKubeletProcess],
) -> None:
    config = tmp_path / "mock.yaml"
    config.write_text("cpu: '7'\nmemory: 13Gi\npods: '33'\n")
    vk = start_vk(
        *mock_vk_args(cluster, node_name, config),
        "--kubelet-port",
        str(free_port()),
        "--lease-renew-interval",
        "1",
    )

    async def node_registered() -> dict[str, object] | None:
        assert vk.proc.poll() is None, vk.log()
        return await admin.get(f"/api/v1/nodes/{node_name}")  # type: ignore[no-any-return]

    node = await eventually(node_registered, what="node registered", timeout=30)
    status = node["status"]
    assert isinstance(status, dict)
    assert status["capacity"] == {"cpu": "7", "memory": "13Gi", "pods": "33"}
    assert {"type": "InternalIP", "address": "127.0.0.1"} in status["addresses"]

    lease_path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node_name}"
    first = _lease_renew_time(await eventually(lambda: admin.get(lease_path), what="lease"))

    async def renewed() -> bool:
        return _lease_renew_time(await admin.get(lease_path)) > first

    await eventually(renewed, what="lease renewed", timeout=15)
    lease = await admin.get(lease_path)
    assert lease["metadata"]["ownerReferences"][0]["name"] == node_name

    await admin.create(
        f"/api/v1/namespaces/{namespace}/pods",
        {
            "metadata": {"name": "hello"},
            "spec": {"nodeName": node_name, "containers": [{"name": "app", "image": "nginx"}]},
        },
    )

    async def running() -> dict[str, object] | None:
        pod = await admin.get(f"/api/v1/namespaces/{namespace}/pods/hello")
        return pod if pod.get("status", {}).get("phase") == "Running" else None

    pod = await eventually(running, what="pod Running", timeout=30)
    meta = pod["metadata"]
    assert isinstance(meta, dict)
    # kopf must not leave its marks on pods: no finalizers, no kopf annotations.
    assert not meta.get("finalizers")
    assert not [a for a in meta.get("annotations") or {} if "kopf" in a]
