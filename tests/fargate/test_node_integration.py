"""The Fargate provider end to end: the real control plane, ``virtual-kubelet --provider fargate`` as a
process, and moto's server (tests/fargate/motoserver.py) as a process behind it.

What the tests read from AWS they read through moto's own API (ECS, Secrets Manager, CloudWatch
Logs); what moto cannot produce (a container exiting) is driven through the launcher's driver and
said so where it is done.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from tests.conftest import (
    VirtualKubeletProcess,
    eventually,
    pod_manifest,
    pod_phase,
    wait_event,
    wait_node_ready,
    wait_phase,
)
from tests.fargate.moto_fixtures import CLIENT_CONFIG, MotoProcess, session
from vk_operator.devcluster.cluster import Cluster, free_port
from vk_operator.kube import ApiError, Kube

LOG_GROUP = "/virtual-kubelet/fargate"
TOLERATION = {"key": "virtual-kubelet.io/provider", "operator": "Exists", "effect": "NoSchedule"}


class FargateNode:
    def __init__(
        self,
        name: str,
        config: dict[str, Any],
        moto: MotoProcess,
        args: list[str],
        start_vk: Callable[..., VirtualKubeletProcess],
    ) -> None:
        self.name = name
        self.config = config
        self.moto = moto
        self.args = args
        self._start_vk = start_vk
        self.processes = [start_vk(*args)]

    @property
    def process(self) -> VirtualKubeletProcess:
        return self.processes[-1]

    def restart(self) -> VirtualKubeletProcess:
        self.processes.append(self._start_vk(*self.args))
        return self.process

    def logs(self) -> str:
        return "\n".join(p.log() for p in self.processes)

    def client(self, service: str) -> Any:
        return session().client(service, endpoint_url=self.config["endpoint_url"], config=CLIENT_CONFIG)

    async def tasks(self, uid: str | None = None, desired: str = "RUNNING") -> list[dict[str, Any]]:
        """This node's tasks (by tag), of pod ``uid`` when given."""
        async with self.client("ecs") as ecs:
            filters = {"startedBy": uid} if uid else {}
            arns = (await ecs.list_tasks(cluster=self.config["cluster"], desiredStatus=desired, **filters))[
                "taskArns"
            ]
            if not arns:
                return []
            found = (await ecs.describe_tasks(cluster=self.config["cluster"], tasks=arns, include=["TAGS"]))[
                "tasks"
            ]
        return [t for t in found if {"key": "vk-operator.node", "value": self.name} in t.get("tags", [])]

    async def task_definitions(self) -> list[dict[str, Any]]:
        async with self.client("ecs") as ecs:
            arns = (await ecs.list_task_definitions(status="ACTIVE"))["taskDefinitionArns"]
            found = [(await ecs.describe_task_definition(taskDefinition=a))["taskDefinition"] for a in arns]
        return [d for d in found if d["family"].startswith(f"vk-{self.name}-")]


StartNode = Callable[..., Awaitable[FargateNode]]


@pytest.fixture
async def fargate_node(
    cluster: Cluster,
    node_name: str,
    tmp_path: pathlib.Path,
    start_vk: Callable[..., VirtualKubeletProcess],
    moto: MotoProcess,
    fargate_config: dict[str, Any],
) -> AsyncIterator[StartNode]:
    nodes: list[FargateNode] = []

    async def start(*extra: str) -> FargateNode:
        config = {**fargate_config, "status_poll": {"calls_per_minute": 600, "refresh_seconds": 5}}
        config_file = tmp_path / f"{node_name}-fargate.json"
        config_file.write_text(json.dumps(config, indent=1))
        args = [
            "--provider",
            "fargate",
            "--provider-config",
            str(config_file),
            "--nodename",
            node_name,
            "--kubeconfig",
            str(cluster.node_kubeconfig(node_name)),
            "--kubelet-port",
            str(free_port()),
            "--node-ip",
            "127.0.0.1",
            "--metrics-port",
            "0",
            "--lease-renew-interval",
            "2",
            "--status-poll-fast",
            "0.5",
            *extra,
        ]
        node = FargateNode(node_name, config, moto, args, start_vk)
        nodes.append(node)
        kube = await Kube.connect(str(cluster.admin_kubeconfig))
        try:
            await wait_node_ready(kube, node_name, node.process)
        finally:
            await kube.close()
        return node

    yield start
    for node in nodes:
        for process in node.processes:
            process.stop()


def pods_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/pods"


async def create_pod(admin: Kube, namespace: str, name: str, node: str, **spec: Any) -> dict[str, Any]:
    spec.setdefault("containers", [{"name": "app", "image": "busybox:1.36", "command": ["sleep", "3600"]}])
    return await admin.create(pods_path(namespace), pod_manifest(name, node, **spec))  # type: ignore[no-any-return]


async def running(admin: Kube, namespace: str, name: str, node: str, **spec: Any) -> dict[str, Any]:
    await create_pod(admin, namespace, name, node, **spec)
    return await wait_phase(admin, namespace, name, "Running", timeout=40)


async def gone(admin: Kube, namespace: str, name: str) -> bool:
    try:
        await admin.get(f"{pods_path(namespace)}/{name}")
    except ApiError as exc:
        if exc.not_found:
            return True
        raise
    return False


async def test_a_deployment_runs_on_one_shared_task_definition(
    admin: Kube, namespace: str, fargate_node: StartNode
) -> None:
    vn = await fargate_node()
    labels = {"app": "web"}
    await admin.create(
        f"/apis/apps/v1/namespaces/{namespace}/deployments",
        {
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 4,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "nodeSelector": {"kubernetes.io/hostname": vn.name},
                        "tolerations": [TOLERATION],
                        "containers": [
                            {"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}
                        ],
                    },
                },
            },
        },
    )

    async def all_running() -> list[dict[str, Any]] | None:
        pods = (await admin.get(pods_path(namespace), labelSelector="app=web"))["items"]
        up = [p for p in pods if p.get("status", {}).get("phase") == "Running"]
        return up if len(up) == 4 else None

    pods = await eventually(all_running, what="4 replicas Running", timeout=60)
    assert {p["spec"]["nodeName"] for p in pods} == {vn.name}  # placed by the real scheduler

    async def ready() -> bool:
        deployment = await admin.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/web")
        return bool(deployment["status"].get("readyReplicas") == 4)

    await eventually(ready, what="4 ready replicas", timeout=45)
    definitions = await vn.task_definitions()
    assert len(definitions) == 1, [d["family"] for d in definitions]  # one registration for 4 replicas
    assert definitions[0]["containerDefinitions"][0]["portMappings"] == [
        {"containerPort": 80, "protocol": "tcp"}
    ]
    tasks = {t["startedBy"]: t for t in await vn.tasks()}
    assert set(tasks) == {p["metadata"]["uid"] for p in pods}
    for pod in pods:
        task = tasks[pod["metadata"]["uid"]]
        tags = {t["key"]: t["value"] for t in task["tags"]}
        assert (
            tags["vk-operator.namespace"] == namespace and tags["vk-operator.name"] == pod["metadata"]["name"]
        )
        assert task["taskDefinitionArn"] == definitions[0]["taskDefinitionArn"]
        eni = {d["name"]: d["value"] for d in task["attachments"][0]["details"]}
        assert pod["status"]["podIP"] == eni["privateIPv4Address"]


async def test_exit_codes_map_and_delete_stops_the_task(
    admin: Kube, namespace: str, fargate_node: StartNode
) -> None:
    vn = await fargate_node()
    probed = {
        "name": "app",
        "image": "busybox:1.36",
        "command": ["sleep", "3600"],
        "livenessProbe": {"tcpSocket": {"port": 80}},
    }
    fails = await running(admin, namespace, "fails", vn.name, restartPolicy="Never", containers=[probed])
    event = await wait_event(admin, namespace, "fails", "ProbeNotSupported", timeout=30)
    assert event["type"] == "Warning" and "tcpSocket" in event["message"]
    completes = await running(admin, namespace, "completes", vn.name, restartPolicy="Never")
    for pod, code in ((fails, 3), (completes, 0)):
        (task,) = await vn.tasks(pod["metadata"]["uid"])
        # driven: moto's containers never exit; the driver ends the container as ECS reports it
        await vn.moto.drive("ecs/exit", {"task": task["taskArn"], "exitCode": code})
    failed = await wait_phase(admin, namespace, "fails", "Failed", timeout=40)
    terminated = failed["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 3 and terminated["reason"] == "Error"
    done = await wait_phase(admin, namespace, "completes", "Succeeded", timeout=40)
    assert done["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0

    graceful = await running(admin, namespace, "graceful", vn.name)
    forced = await running(admin, namespace, "forced", vn.name)
    await admin.delete(f"{pods_path(namespace)}/graceful")
    await admin.delete(f"{pods_path(namespace)}/forced", {"gracePeriodSeconds": 0})
    for pod in (graceful, forced):
        uid = pod["metadata"]["uid"]

        async def stopped(uid: str = uid) -> bool:
            return not await vn.tasks(uid)

        await eventually(stopped, what=f"{pod['metadata']['name']}'s task stopped", timeout=40)
        (task,) = await vn.tasks(uid, desired="STOPPED")
        assert task["lastStatus"] == "STOPPED" and "deleted" in task["stoppedReason"]

    async def graceful_gone() -> bool:
        return await gone(admin, namespace, "graceful")

    await eventually(graceful_gone, what="graceful pod removed", timeout=40)


async def test_restart_after_kill_9_adopts_every_task_and_stops_orphans(
    admin: Kube, namespace: str, fargate_node: StartNode
) -> None:
    vn = await fargate_node("--retry-initial", "0.2", "--retry-cap", "1")
    kept = [await running(admin, namespace, f"kept-{i}", vn.name) for i in range(3)]
    orphan = await running(admin, namespace, "orphan", vn.name)
    runs_before = (await vn.moto.calls()).get("ecs.RunTask", 0)
    vn.process.stop(signal.SIGKILL)
    await admin.delete(f"{pods_path(namespace)}/orphan", {"gracePeriodSeconds": 0})
    await create_pod(admin, namespace, "while-down", vn.name)

    restarted = vn.restart()
    await wait_node_ready(admin, vn.name, restarted)

    async def orphan_stopped() -> bool:
        return not await vn.tasks(orphan["metadata"]["uid"])

    await eventually(orphan_stopped, what="the orphan's task stopped", timeout=40)
    await wait_phase(admin, namespace, "while-down", "Running", timeout=40)
    assert (await vn.moto.calls()).get("ecs.RunTask", 0) == runs_before + 1  # only the new pod's task
    for pod in kept:
        uid = pod["metadata"]["uid"]
        assert len(await vn.tasks(uid)) == 1  # none runs twice
        assert await pod_phase(admin, namespace, pod["metadata"]["name"]) == "Running"
    assert restarted.proc.poll() is None


async def test_a_secret_env_value_is_in_no_task_definition_and_no_log(
    admin: Kube, namespace: str, fargate_node: StartNode, kubectl: Callable[..., str]
) -> None:
    vn = await fargate_node()
    value = f"s3cr3t-{uuid.uuid4().hex}"
    await admin.create(
        f"/api/v1/namespaces/{namespace}/secrets",
        {"metadata": {"name": "creds"}, "stringData": {"password": value}},
    )
    env = [
        {"name": "PLAIN", "value": "visible"},
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
    ]
    pod = await running(
        admin,
        namespace,
        "with-secret",
        vn.name,
        containers=[{"name": "app", "image": "busybox:1.36", "command": ["sleep", "3600"], "env": env}],
    )
    definitions = await vn.task_definitions()
    assert definitions and value not in json.dumps(definitions, default=str)
    (task,) = await vn.tasks(pod["metadata"]["uid"])
    assert value not in json.dumps(task, default=str)
    async with vn.client("secretsmanager") as secrets:
        name = f"vk-operator/{vn.name}/{pod['metadata']['uid']}"
        assert value in (await secrets.get_secret_value(SecretId=name))["SecretString"]
        await admin.delete(f"{pods_path(namespace)}/with-secret")

        async def secret_removed() -> bool:
            return not (await secrets.list_secrets(Filters=[{"Key": "name", "Values": [name]}]))["SecretList"]

        await eventually(secret_removed, what="the pod's secret removed", timeout=40)
    events = json.dumps((await admin.get(f"/api/v1/namespaces/{namespace}/events"))["items"])
    assert value not in events
    assert value not in vn.logs()


async def test_kubectl_logs_follow_streams_cloudwatch_until_the_task_stops(
    admin: Kube, namespace: str, fargate_node: StartNode, cluster: Cluster, kubectl_binary: str
) -> None:
    vn = await fargate_node()
    pod = await running(admin, namespace, "logger", vn.name, restartPolicy="Never")
    (task,) = await vn.tasks(pod["metadata"]["uid"])
    stream = f"vk/app/{task['taskArn'].rsplit('/', 1)[-1]}"
    lines: list[str] = []

    def put(logs: Any, message: str) -> Awaitable[Any]:
        return logs.put_log_events(  # type: ignore[no-any-return]
            logGroupName=LOG_GROUP,
            logStreamName=stream,
            logEvents=[{"timestamp": int(time.time() * 1000), "message": message}],
        )

    async def printed(text: str) -> bool:
        return text in lines

    async with vn.client("logs") as logs:
        # what Fargate's awslogs driver writes for the task (nothing runs in moto's containers)
        await logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
        await put(logs, "first line")
        follow = await asyncio.create_subprocess_exec(
            kubectl_binary,
            f"--kubeconfig={cluster.admin_kubeconfig}",
            "-n",
            namespace,
            "logs",
            "-f",
            "logger",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert follow.stdout is not None

        async def read_lines() -> None:
            assert follow.stdout is not None
            while line := await follow.stdout.readline():
                lines.append(line.decode().rstrip("\n"))

        reader = asyncio.create_task(read_lines())
        try:
            await eventually(lambda: printed("first line"), what="the history printed", timeout=30)
            await put(logs, "second line")  # written while kubectl follows: streamed
            await eventually(lambda: printed("second line"), what="the new line streamed", timeout=30)
            assert follow.returncode is None  # still following a running task
            # driven: the container exits (moto's never do): kubectl logs -f ends after it
            await vn.moto.drive("ecs/exit", {"task": task["taskArn"], "exitCode": 0})
            async with asyncio.timeout(60):
                await reader
                code = await follow.wait()
        finally:
            if follow.returncode is None:
                follow.kill()
                await follow.wait()
    stderr = (await follow.stderr.read()).decode() if follow.stderr else ""
    assert code == 0, stderr
    assert lines == ["first line", "second line"]


async def test_throttling_slows_creates_but_loses_none(
    admin: Kube, namespace: str, fargate_node: StartNode
) -> None:
    vn = await fargate_node("--retry-initial", "0.2", "--retry-cap", "1")
    # driven: moto never throttles; the next 4 RunTasks answer AWS's ThrottlingException
    await vn.moto.drive("throttle", {"operation": "RunTask", "count": 4})
    names = [f"burst-{i}" for i in range(5)]
    for name in names:
        await create_pod(admin, namespace, name, vn.name)
    for name in names:
        await wait_phase(admin, namespace, name, "Running", timeout=60)
    left = await vn.moto.drive("throttle", {"operation": "RunTask", "count": 0})
    assert left["RunTask"] == 0  # every throttled answer was given, and taken as a retry
    for name in names:
        pod = await admin.get(f"{pods_path(namespace)}/{name}")
        assert len(await vn.tasks(pod["metadata"]["uid"])) == 1  # one task each: nothing lost or doubled
    assert "ThrottlingException" in vn.logs()
