"""The Azure Batch provider end to end: the real control plane, `virtual-kubelet --provider azurebatch`
as a process, and the spec-checked local Batch service (``providers.azurebatch.localbatch``) as a
process behind it, verifying every request's shared-key signature.

Every test fails at teardown if one request the provider's SDK sent, or one response it got, did not
validate against the Batch 2025-06-01 spec (see ``node_fixtures``). What a task does comes from its
environment (the service's ``LOCALBATCH_*`` variables: exit code, run time, output).
"""

from __future__ import annotations

import asyncio
import shlex
import signal
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from azure.batch import models

from providers.azurebatch import naming
from tests.azurebatch import node_fixtures
from tests.azurebatch.node_fixtures import POOL, BatchNode
from tests.conftest import eventually, pod_manifest, wait_node_ready, wait_phase
from vk_operator.devcluster.cluster import Cluster
from vk_operator.kube import ApiError, Kube

batch_node = node_fixtures.batch_node
start_localbatch = node_fixtures.start_localbatch

StartBatch = Callable[..., Awaitable[BatchNode]]
TOLERATE = [{"key": "virtual-kubelet.io/provider", "operator": "Exists", "effect": "NoSchedule"}]


def container(name: str = "app", **env: str) -> dict[str, Any]:
    return {
        "name": name,
        "image": "busybox:1.36",
        "command": ["sh", "-c", "echo started"],
        "env": [{"name": k, "value": v} for k, v in env.items()],
    }


def pods_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/pods"


async def create_pod(admin: Kube, namespace: str, name: str, node: str, **spec: Any) -> dict[str, Any]:
    return await admin.create(pods_path(namespace), pod_manifest(name, node, **spec))  # type: ignore[no-any-return]


async def gone(admin: Kube, namespace: str, name: str) -> bool:
    try:
        await admin.get(f"{pods_path(namespace)}/{name}")
    except ApiError as exc:
        if exc.not_found:
            return True
        raise
    return False


async def test_a_gpu_job_tolerating_the_taint_runs_to_succeeded_and_a_failing_pod_fails_with_its_code(
    admin: Kube, namespace: str, batch_node: StartBatch
) -> None:
    vn = await batch_node()
    node = await admin.get(f"/api/v1/nodes/{vn.name}")
    assert "virtual-kubelet.io/provider" in {t["key"] for t in node["spec"].get("taints", [])}
    await admin.create(
        f"/apis/batch/v1/namespaces/{namespace}/jobs",
        {
            "metadata": {"name": "train"},
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "nodeSelector": {"kubernetes.io/hostname": vn.name},
                        "tolerations": TOLERATE,
                        "automountServiceAccountToken": False,
                        "containers": [
                            {
                                **container(LOCALBATCH_RUN_SECONDS="1", LOCALBATCH_EXIT_CODE="0"),
                                "resources": {"limits": {"nvidia.com/gpu": "1"}},
                            }
                        ],
                    }
                },
            },
        },
    )

    async def succeeded() -> dict[str, Any] | None:
        job = await admin.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/train")
        return job if job.get("status", {}).get("succeeded") == 1 else None

    await eventually(succeeded, what="the Job succeeded", timeout=60)
    (pod,) = (await admin.get(pods_path(namespace), labelSelector="job-name=train"))["items"]
    assert pod["spec"]["nodeName"] == vn.name  # placed by the real scheduler, GPU and taint included
    assert pod["status"]["phase"] == "Succeeded"
    (status,) = pod["status"]["containerStatuses"]
    assert status["state"]["terminated"]["exitCode"] == 0
    tasks = await vn.batch.tasks(vn.job_id)
    task = tasks[pod["metadata"]["uid"]]
    assert task["state"] == "completed" and task["executionInfo"]["exitCode"] == 0
    run_options = shlex.split(task["containerSettings"]["containerRunOptions"])
    assert run_options[run_options.index("--gpus") + 1] == "1"
    assert task["displayName"] == f"{namespace}/{pod['metadata']['name']}"

    await create_pod(
        admin,
        namespace,
        "fails",
        vn.name,
        restartPolicy="Never",
        containers=[container(LOCALBATCH_RUN_SECONDS="0.5", LOCALBATCH_EXIT_CODE="3")],
    )
    failed = await wait_phase(admin, namespace, "fails", "Failed", timeout=40)
    (status,) = failed["status"]["containerStatuses"]
    assert status["state"]["terminated"]["exitCode"] == 3, status
    assert status["state"]["terminated"]["reason"] == "Error"


async def test_kubectl_logs_follow_streams_the_growing_stdout_and_ends(
    admin: Kube, namespace: str, batch_node: StartBatch, cluster: Cluster, kubectl_binary: str
) -> None:
    vn = await batch_node("--status-poll-slow", "3")
    # A task printing a line every 0.3 s until the test ends it (the service's admin endpoint).
    pod = await create_pod(
        admin,
        namespace,
        "counter",
        vn.name,
        restartPolicy="Never",
        containers=[
            container(LOCALBATCH_STDOUT="start\n", LOCALBATCH_TICKS="100000", LOCALBATCH_TICK_SECONDS="0.3")
        ],
    )
    await wait_phase(admin, namespace, "counter", "Running", timeout=40)
    follow = await asyncio.create_subprocess_exec(
        kubectl_binary,
        f"--kubeconfig={cluster.admin_kubeconfig}",
        "logs",
        "-f",
        "counter",
        "-n",
        namespace,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert follow.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(60):
            # The history first, then lines the task writes while it is followed: wait for the tick
            # five beyond the first one read, which did not exist when the follow began.
            while not lines or not lines[-1].startswith("tick "):
                lines.append((await follow.stdout.readline()).decode().rstrip("\n"))
            first = int(lines[-1].split()[1])
            while lines[-1] != f"tick {first + 5}":
                line = await follow.stdout.readline()
                assert line, f"the follow ended early: {lines}"
                lines.append(line.decode().rstrip("\n"))
            task_id = naming.task_id(namespace, "counter", pod["metadata"]["uid"])
            await vn.batch.admin("POST", f"jobs/{vn.job_id}/tasks/{task_id}/complete", {"exitCode": 0})
            while line := await follow.stdout.readline():  # the rest, then the end of the stream
                lines.append(line.decode().rstrip("\n"))
            await follow.wait()
    finally:
        if follow.returncode is None:
            follow.kill()
            await follow.wait()
    stderr = (await follow.stderr.read()).decode() if follow.stderr else ""
    assert follow.returncode == 0, stderr
    assert lines[0] == "start"
    assert lines[1:] == [f"tick {i}" for i in range(1, len(lines))], lines  # in order, none lost or doubled
    await wait_phase(admin, namespace, "counter", "Succeeded", timeout=40)
    last = lines[-1]
    # A finite read with a tail: the last two lines.
    tail = await asyncio.create_subprocess_exec(
        kubectl_binary,
        f"--kubeconfig={cluster.admin_kubeconfig}",
        "logs",
        "--tail=2",
        "counter",
        "-n",
        namespace,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await tail.communicate()
    before_last = f"tick {int(last.split()[1]) - 1}"
    assert out.decode().splitlines() == [before_last, last]


async def test_delete_terminates_and_removes_the_task(
    admin: Kube, namespace: str, batch_node: StartBatch
) -> None:
    vn = await batch_node()
    pod = await create_pod(
        admin, namespace, "server", vn.name, containers=[container()]
    )  # runs until stopped
    await wait_phase(admin, namespace, "server", "Running", timeout=40)
    uid = pod["metadata"]["uid"]
    assert (await vn.batch.tasks(vn.job_id))[uid]["state"] == "running"
    await admin.delete(f"{pods_path(namespace)}/server")
    await eventually(lambda: gone(admin, namespace, "server"), what="the pod deleted", timeout=40)
    assert uid not in await vn.batch.tasks(vn.job_id)
    assert await vn.batch.calls("Tasks_TerminateTask", 204) == 1
    assert await vn.batch.calls("Tasks_DeleteTask", 200) == 1
    # Two containers need the docker wrapper (off by default): the pod fails with a clear reason.
    await create_pod(admin, namespace, "pair", vn.name, containers=[container("a"), container("b")])
    failed = await wait_phase(admin, namespace, "pair", "Failed", timeout=40)
    assert failed["status"].get("reason") == "MultiContainerPodUnsupported", failed["status"]
    assert "docker_wrapper" in failed["status"].get("message", "")
    assert await vn.batch.calls("Tasks_CreateTask") == 1  # the first pod's only


async def test_restart_adopts_the_tasks_and_removes_orphans(
    admin: Kube, namespace: str, batch_node: StartBatch
) -> None:
    vn = await batch_node("--retry-initial", "0.2", "--retry-cap", "1")
    kept = await create_pod(admin, namespace, "kept", vn.name, containers=[container()])
    running = await wait_phase(admin, namespace, "kept", "Running", timeout=40)
    assert await vn.batch.calls("Tasks_CreateTask", 201) == 1
    vn.process.stop(signal.SIGKILL)
    # While it is down: a task of this node's job whose pod does not exist (an orphan), and a task
    # that names no pod at all (someone else's: never touched).
    ghost_uid = str(uuid.uuid4())
    orphan_id = naming.task_id(namespace, "ghost", ghost_uid)
    env = {naming.ENV_NAMESPACE: namespace, naming.ENV_NAME: "ghost", naming.ENV_UID: ghost_uid}
    for task_id, variables in ((orphan_id, env), ("not-a-pod", {})):
        await vn.batch.client.create_task(
            vn.job_id,
            models.BatchTaskCreateOptions(
                id=task_id,
                command_line="sleep 1",
                environment_settings=[
                    models.EnvironmentSetting(name=k, value=v) for k, v in variables.items()
                ],
            ),
        )
    restarted = vn.restart()
    await wait_node_ready(admin, vn.name, restarted)

    async def orphan_removed() -> bool:
        return ghost_uid not in await vn.batch.tasks(vn.job_id)

    await eventually(orphan_removed, what="the orphan task removed", timeout=40)
    tasks = await vn.batch.tasks(vn.job_id)
    assert kept["metadata"]["uid"] in tasks and "?not-a-pod" in tasks
    assert await vn.batch.calls("Tasks_CreateTask", 201) == 3  # the pod's once, never again (+ the two above)
    assert await vn.batch.calls("Tasks_CreateTask", 409) == 0
    now = await admin.get(f"{pods_path(namespace)}/kept")
    assert now["status"]["phase"] == "Running"
    assert now["status"]["startTime"] == running["status"]["startTime"]


async def test_the_node_capacity_follows_the_pools_node_count(
    admin: Kube, namespace: str, batch_node: StartBatch
) -> None:
    vn = await batch_node("--node-status-interval", "1")

    async def capacity(gpus: str, cpu: str, pods: str) -> bool:
        node = await admin.get(f"/api/v1/nodes/{vn.name}")
        found = node["status"]["capacity"]
        return bool(
            found.get("nvidia.com/gpu") == gpus and found.get("cpu") == cpu and found.get("pods") == pods
        )

    # 1 dedicated + 1 low-priority standard_nc6s_v3 (6 vCPUs, 1 GPU, 1 task slot each).
    await eventually(lambda: capacity("2", "12", "2"), what="capacity of 2 nodes", timeout=30)
    await vn.batch.set_pool(dedicated=3, lowPriority=2)
    await eventually(lambda: capacity("5", "30", "5"), what="capacity of 5 nodes", timeout=30)
    await vn.batch.set_pool(dedicated=0, lowPriority=0)
    await eventually(lambda: capacity("0", "0", "0"), what="no capacity", timeout=30)
    assert POOL
