"""Provider configuration from a ConfigMap (start-up and live reload) and `kopf run` for development."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from tests.conftest import REPO, VirtualNode, eventually, pod_manifest, wait_event, wait_phase
from vk_operator.devcluster.cluster import Cluster, free_port
from vk_operator.kube import Kube
from vk_operator.kube.client import MERGE_PATCH

StartNode = Callable[..., Awaitable[VirtualNode]]


async def _configmap(admin: Kube, namespace: str, text: str) -> None:
    await admin.create(
        f"/api/v1/namespaces/{namespace}/configmaps",
        {"metadata": {"name": "vk-provider"}, "data": {"config.yaml": text}},
    )


def test_invalid_configmap_at_start_is_exit_2_naming_every_field(
    cluster: Cluster, namespace: str, node_name: str, kubectl: Callable[..., str]
) -> None:
    kubectl(
        "create",
        "configmap",
        "vk-provider",
        "-n",
        namespace,
        "--from-literal=config.yaml=cpu: 4\nstart_latency_seconds: -1\nfailures: {fail_ratio: 7}\n",
    )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "vk_operator.cli",
            "--nodename",
            node_name,
            "--kubeconfig",
            str(cluster.admin_kubeconfig),
            "--provider-config",
            f"configmap:{namespace}/vk-provider",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2, out.stderr
    assert "start_latency_seconds" in out.stderr and "failures.fail_ratio" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert "NotFound" in kubectl("get", "node", node_name, check=False)
    missing = subprocess.run(
        [
            sys.executable,
            "-m",
            "vk_operator.cli",
            "--kubeconfig",
            str(cluster.admin_kubeconfig),
            "--provider-config",
            f"configmap:{namespace}/nope",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2 and "NotFound" in missing.stderr


async def test_configmap_change_is_applied_live_and_a_bad_one_refused(
    admin: Kube, cluster: Cluster, namespace: str, virtual_node: StartNode
) -> None:
    await _configmap(admin, namespace, "cpu: '4'\n")
    vn = await virtual_node(
        "--provider-config", f"configmap:{namespace}/vk-provider", kubeconfig=cluster.admin_kubeconfig
    )
    node_path = f"/api/v1/nodes/{vn.name}"

    async def capacity_is(cpu: str) -> bool:
        return bool((await admin.get(node_path))["status"]["capacity"]["cpu"] == cpu)

    await eventually(lambda: capacity_is("4"), what="cpu 4")
    cm_path = f"/api/v1/namespaces/{namespace}/configmaps/vk-provider"
    await admin.patch(cm_path, {"data": {"config.yaml": "cpu: '8'\n"}}, MERGE_PATCH)
    await eventually(lambda: capacity_is("8"), what="cpu 8 without restart", timeout=15)
    await wait_event(admin, namespace, "vk-provider", "ProviderConfigApplied")

    await admin.patch(
        cm_path, {"data": {"config.yaml": "cpu: '16'\nstart_latency_seconds: -3\n"}}, MERGE_PATCH
    )
    refused = await wait_event(admin, namespace, "vk-provider", "ProviderConfigInvalid")
    assert refused["type"] == "Warning" and "start_latency_seconds" in refused["message"]
    assert "refused the new provider config" in vn.process.log()
    # The old config keeps serving: capacity unchanged, pods still run, the process lives.
    assert await capacity_is("8")
    await admin.create(f"/api/v1/namespaces/{namespace}/pods", pod_manifest("still-served", vn.name))
    await wait_phase(admin, namespace, "still-served", "Running")
    assert vn.process.proc.poll() is None


async def test_kopf_run_serves_the_node_for_local_development(
    admin: Kube, cluster: Cluster, namespace: str, node_name: str, tmp_path: pathlib.Path
) -> None:
    env = {
        **os.environ,
        "VK_NODENAME": node_name,
        "VK_KUBECONFIG": str(cluster.node_kubeconfig(node_name)),
        "VK_KUBELET_PORT": str(free_port()),
        "KUBECONFIG": str(cluster.node_kubeconfig(node_name)),
    }
    kopf = pathlib.Path(sys.executable).parent / "kopf"
    log = (tmp_path / "kopf.log").open("wb")
    process = subprocess.Popen(  # noqa: ASYNC220  (starting a process does not block)
        [str(kopf), "run", "-A", "--standalone", "vk_operator/handlers.py"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:

        async def ready() -> Any:
            assert process.poll() is None, (tmp_path / "kopf.log").read_text()
            node = await admin.get(f"/api/v1/nodes/{node_name}")
            return any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"])

        await eventually(ready, what="node Ready under kopf run", timeout=60)
        await admin.create(f"/api/v1/namespaces/{namespace}/pods", pod_manifest("dev", node_name))
        pod = await wait_phase(admin, namespace, "dev", "Running")
        assert not pod["metadata"].get("finalizers")
    finally:
        process.terminate()
        process.wait(30)
        log.close()
