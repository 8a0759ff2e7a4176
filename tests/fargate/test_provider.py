"""FargateProvider against moto's server: sharing, secrets, status, restarts, throttling, logs.

Where moto cannot produce a state (a container exiting 3, a PENDING task, a throttled call), the
test drives moto through the launcher's ``/_driver/`` routes (tests/fargate/motoserver.py) and says
so; everything else is moto's own ECS, Secrets Manager and CloudWatch Logs.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from providers.fargate import FargateConfig, FargateProvider, naming
from tests.conftest import eventually
from tests.fargate.moto_fixtures import CLIENT_CONFIG, MotoProcess, session
from vk_operator.provider import (
    ContainerPhase,
    ExecError,
    ExecIO,
    InvalidPodError,
    LogEntry,
    LogOptions,
    PodPhase,
    PreparedPod,
    ProviderError,
    RegistryCredential,
    ResolvedVolume,
    ThrottledError,
)
from vk_operator.provider.testing import minimal_pod

Start = Callable[..., Awaitable[FargateProvider]]


@pytest.fixture
async def start(fargate_config: dict[str, Any]) -> AsyncIterator[Start]:
    started: list[FargateProvider] = []
    suffix = uuid.uuid4().hex[:6]

    async def make(node: str = "node-a", **overrides: Any) -> FargateProvider:
        # task definitions are account-wide: node names unique to the test keep tests apart
        provider = FargateProvider(FargateConfig(**{**fargate_config, **overrides}), f"{node}-{suffix}")
        await provider.start()
        provider.follow_interval = 0.1
        started.append(provider)
        return provider

    yield make
    for provider in started:
        await provider.close()


def replica(node: str, image: str = "busybox:1.36", restart: str = "Always") -> PreparedPod:
    prepared = minimal_pod(node, image=image)
    prepared.pod["spec"]["restartPolicy"] = restart
    return prepared


async def ecs_client(config: dict[str, Any]) -> Any:
    return session().client("ecs", endpoint_url=config["endpoint_url"], config=CLIENT_CONFIG)


async def active_definitions(config: dict[str, Any], node: str) -> list[dict[str, Any]]:
    async with await ecs_client(config) as ecs:
        # familyPrefix is a whole family name (on AWS and moto): list all, keep this node's
        arns = (await ecs.list_task_definitions(status="ACTIVE"))["taskDefinitionArns"]
        definitions = [
            (await ecs.describe_task_definition(taskDefinition=arn))["taskDefinition"] for arn in arns
        ]
        return [d for d in definitions if d["family"].startswith(f"vk-{node}-")]


async def test_replicas_share_one_task_definition_deregistered_when_unused(
    start: Start, fargate_config: dict[str, Any]
) -> None:
    provider = await start()
    pods = [replica("node-a") for _ in range(12)]
    await asyncio.gather(*(provider.create_pod(p) for p in pods))  # concurrent, as the core's workers
    assert provider.calls["RunTask"] == 12
    assert provider.calls["RegisterTaskDefinition"] == 1
    definitions = await active_definitions(fargate_config, provider.node_name)
    assert len(definitions) == 1
    statuses = await provider.get_pod_statuses()
    assert {uid: s.phase for uid, s in statuses.items()} == {p.ref.uid: PodPhase.RUNNING for p in pods}
    other = replica("node-a", image="busybox:1.37")
    await provider.create_pod(other)
    assert len(await active_definitions(fargate_config, provider.node_name)) == 2
    for prepared in pods[:-1]:
        await provider.delete_pod(prepared.ref)
    assert len(await active_definitions(fargate_config, provider.node_name)) == 2  # one replica still uses it
    await provider.delete_pod(pods[-1].ref)
    remaining = await active_definitions(fargate_config, provider.node_name)
    assert [d["containerDefinitions"][0]["image"] for d in remaining] == ["busybox:1.37"]
    await provider.delete_pod(other.ref)
    assert await active_definitions(fargate_config, provider.node_name) == []


async def test_a_secret_env_value_is_in_secrets_manager_only_and_removed_with_the_pod(
    start: Start, fargate_config: dict[str, Any]
) -> None:
    provider = await start()
    value = f"hunter2-{uuid.uuid4().hex}"
    prepared = replica("node-a")
    container = prepared.pod["spec"]["containers"][0]
    container["env"] = [{"name": "PLAIN", "value": "hello"}, {"name": "PASSWORD", "value": value}]
    prepared = PreparedPod(prepared.pod, {}, frozenset({("main", "PASSWORD")}))
    await provider.create_pod(prepared)
    definitions = await active_definitions(fargate_config, provider.node_name)
    assert len(definitions) == 1
    assert value not in json.dumps(definitions, default=str)
    secrets_ref = definitions[0]["containerDefinitions"][0]["secrets"]
    assert [s["name"] for s in secrets_ref] == ["PASSWORD"]
    name = naming.secret_name("vk-operator", provider.node_name, prepared.ref.uid)
    async with session().client(
        "secretsmanager", endpoint_url=fargate_config["endpoint_url"], config=CLIENT_CONFIG
    ) as secrets:
        stored = await secrets.get_secret_value(SecretId=name)
        assert json.loads(stored["SecretString"]) == {"main.1": value}
        assert secrets_ref[0]["valueFrom"] == f"{stored['ARN']}:main.1::"
        async with await ecs_client(fargate_config) as ecs:
            task_arns = (await ecs.list_tasks(cluster=fargate_config["cluster"], startedBy=prepared.ref.uid))[
                "taskArns"
            ]
            described = await ecs.describe_tasks(cluster=fargate_config["cluster"], tasks=task_arns)
        assert value not in json.dumps(described, default=str)
        await provider.delete_pod(prepared.ref)
        listed = await secrets.list_secrets(Filters=[{"Key": "name", "Values": [name]}])
        assert listed["SecretList"] == []


async def test_an_exit_code_fails_a_never_pod_and_restarts_an_always_pod(
    start: Start, moto: MotoProcess
) -> None:
    provider = await start()
    provider.restart_backoff = 0.2
    never, always = replica("node-a", restart="Never"), replica("node-a", restart="Always")
    for prepared in (never, always):
        await provider.create_pod(prepared)
    for prepared in (never, always):
        task = provider.pods[prepared.ref.uid].latest()
        assert task is not None
        # driven: moto's containers never exit; the driver makes the container exit 3 as ECS reports it
        await moto.drive("ecs/exit", {"task": task["taskArn"], "exitCode": 3})

    async def never_failed() -> bool:
        status = await provider.get_pod_status(never.ref)
        assert status is not None
        return status.phase is PodPhase.FAILED

    await eventually(never_failed, what="the Never pod Failed", timeout=20)
    status = await provider.get_pod_status(never.ref)
    assert status is not None and status.reason == "Error"
    assert "main=3" in (status.message or "") and status.containers[0].exit_code == 3

    async def always_restarted() -> bool:
        statuses = await provider.get_pod_statuses()
        status = statuses[always.ref.uid]
        assert status.phase is PodPhase.RUNNING  # never Failed or Succeeded while restarting
        main = status.containers[0]
        return main.restart_count == 1 and main.phase is ContainerPhase.RUNNING

    await eventually(always_restarted, what="the Always pod's task run again", timeout=20)
    status = (await provider.get_pod_statuses())[always.ref.uid]
    assert status.containers[0].last_state is not None and status.containers[0].last_state.exit_code == 3
    # kubectl logs --previous reads the earlier task's stream
    first_task = provider.pods[always.ref.uid].ordered()[0]
    stream = f"vk/main/{naming.task_id(first_task['taskArn'])}"
    async with session().client(
        "logs", endpoint_url=provider.config.endpoint_url, config=CLIENT_CONFIG
    ) as logs:
        await logs.create_log_stream(logGroupName="/virtual-kubelet/fargate", logStreamName=stream)
        await logs.put_log_events(
            logGroupName="/virtual-kubelet/fargate",
            logStreamName=stream,
            logEvents=[{"timestamp": int(time.time() * 1000), "message": "before the crash"}],
        )
    previous = [e.text async for e in provider.container_logs(always.ref, "main", LogOptions(previous=True))]
    assert previous == ["before the crash"]
    # a restarted virtual kubelet knows the restart count and that the pod is one pod
    again = await start()
    assert sorted(r.uid for r in await again.list_pods()) == sorted([never.ref.uid, always.ref.uid])
    restarted = (await again.get_pod_statuses())[always.ref.uid]
    assert restarted.containers[0].restart_count == 1
    assert provider.calls["RunTask"] == 3


async def test_a_pending_task_is_pending_with_the_state(start: Start, moto: MotoProcess) -> None:
    provider = await start()
    prepared = replica("node-a")
    await provider.create_pod(prepared)
    task = provider.pods[prepared.ref.uid].latest()
    assert task is not None
    # driven: moto's task model starts at RUNNING (PROVISIONING/PENDING are commented out in it)
    await moto.drive("ecs/state", {"task": task["taskArn"], "lastStatus": "PENDING"})
    status = await provider.get_pod_status(prepared.ref)
    assert status is not None and status.phase is PodPhase.PENDING and status.reason == "Pending"


async def test_other_nodes_tasks_are_neither_listed_nor_stopped(
    start: Start, fargate_config: dict[str, Any]
) -> None:
    mine, theirs = await start("node-a"), await start("node-b")
    a, b = replica("node-a"), replica("node-b")
    await mine.create_pod(a)
    await theirs.create_pod(b)
    assert [r.uid for r in await mine.list_pods()] == [a.ref.uid]
    assert b.ref.uid not in await mine.get_pod_statuses()
    await mine.delete_pod(b.ref)  # the core deleting an "orphan" it was wrongly told about: nothing
    status = await theirs.get_pod_status(b.ref)
    assert status is not None and status.phase is PodPhase.RUNNING
    assert await mine.get_pod_status(b.ref) is None


async def test_steady_bulk_status_costs_list_pages_only(start: Start) -> None:
    provider = await start()
    pods = [replica("node-a") for _ in range(101)]
    await asyncio.gather(*(provider.create_pod(p) for p in pods))
    first = await provider.get_pod_statuses()
    assert len(first) == 101
    before = dict(provider.calls)
    second = await provider.get_pod_statuses()
    assert {u: s.phase for u, s in second.items()} == {u: s.phase for u, s in first.items()}
    spent = {k: provider.calls[k] - before.get(k, 0) for k in provider.calls}
    # one ListTasks of RUNNING (two pages on AWS; moto ignores maxResults and answers in one page),
    # one of STOPPED; nothing to describe: every task was read RUNNING and none moved
    assert spent.get("ListTasks") == 2
    assert spent.get("DescribeTasks", 0) == 0


async def test_throttling_is_a_throttled_error_and_loses_nothing(start: Start, moto: MotoProcess) -> None:
    provider = await start()
    prepared = replica("node-a")
    # driven: moto never throttles; the driver answers AWS's ThrottlingException for the next RunTask
    await moto.drive("throttle", {"operation": "RunTask", "count": 1})
    with pytest.raises(ThrottledError) as caught:
        await provider.create_pod(prepared)
    assert caught.value.retry_after is not None and caught.value.retry_after > 0
    await provider.create_pod(prepared)  # the core's retry
    assert [r.uid for r in await provider.list_pods()] == [prepared.ref.uid]
    await moto.drive("throttle", {"operation": "ListTasks", "count": 1})
    with pytest.raises(ThrottledError):
        await provider.get_pod_statuses()
    assert set(await provider.get_pod_statuses()) == {prepared.ref.uid}


async def test_the_run_task_rate_spaces_a_burst(start: Start) -> None:
    provider = await start(run_task_rate={"per_second": 20, "burst": 2})
    began = time.monotonic()
    await asyncio.gather(*(provider.create_pod(replica("node-a")) for _ in range(6)))
    assert provider.run_rate.waited > 0  # 4 of 6 waited for a token: at least 0.2 s in all
    assert time.monotonic() - began >= 0.15


async def test_logs_from_cloudwatch_with_tail_since_and_follow(
    start: Start, fargate_config: dict[str, Any], moto: MotoProcess
) -> None:
    provider = await start()
    prepared = replica("node-a")
    await provider.create_pod(prepared)
    task = provider.pods[prepared.ref.uid].latest()
    assert task is not None
    stream = f"vk/main/{naming.task_id(task['taskArn'])}"
    now = int(time.time() * 1000)
    async with session().client(
        "logs", endpoint_url=fargate_config["endpoint_url"], config=CLIENT_CONFIG
    ) as logs:
        # what Fargate's awslogs driver writes for the task (nothing runs in moto's containers)
        await logs.create_log_stream(logGroupName="/virtual-kubelet/fargate", logStreamName=stream)
        await logs.put_log_events(
            logGroupName="/virtual-kubelet/fargate",
            logStreamName=stream,
            logEvents=[{"timestamp": now - 60_000 + i, "message": f"old {i}"} for i in range(3)]
            + [{"timestamp": now + i, "message": f"new {i}"} for i in range(2)],
        )

        async def read(options: LogOptions) -> list[str]:
            return [e.text async for e in provider.container_logs(prepared.ref, "main", options)]

        assert await read(LogOptions()) == ["old 0", "old 1", "old 2", "new 0", "new 1"]
        assert await read(LogOptions(tail_lines=2)) == ["new 0", "new 1"]
        assert await read(LogOptions(since_seconds=30)) == ["new 0", "new 1"]
        with pytest.raises(KeyError):
            [e async for e in provider.container_logs(prepared.ref, "nope", LogOptions())]

        seen: list[LogEntry] = []

        async def follow() -> None:
            async for entry in provider.container_logs(prepared.ref, "main", LogOptions(follow=True)):
                seen.append(entry)

        following = asyncio.create_task(follow())
        await logs.put_log_events(
            logGroupName="/virtual-kubelet/fargate",
            logStreamName=stream,
            logEvents=[{"timestamp": int(time.time() * 1000), "message": "streamed"}],
        )

        async def streamed() -> bool:
            return any(e.text == "streamed" for e in seen)

        await eventually(streamed, what="the followed line", timeout=20)
        assert not following.done()
        # driven: the container exits (moto's never do); follow ends once the task has stopped
        await moto.drive("ecs/exit", {"task": task["taskArn"], "exitCode": 0})
        await asyncio.wait_for(following, timeout=20)
        # "streamed" came with the history or with a poll, depending on when it was written: once
        assert [e.text for e in seen] == ["old 0", "old 1", "old 2", "new 0", "new 1", "streamed"]
        assert seen[-1].time.tzinfo is datetime.UTC


async def test_exec_attach_and_port_forward_say_ecs_exec_is_not_available(start: Start) -> None:
    provider = await start()
    prepared = replica("node-a")
    await provider.create_pod(prepared)
    io = ExecIO(stdin=None, stdout=None, stderr=None, tty=False, resize=None)
    with pytest.raises(ExecError, match="SSM session protocol"):
        await provider.exec_in_container(prepared.ref, "main", ["ls"], io)
    with pytest.raises(ExecError, match="SSM session protocol"):
        await provider.attach_container(prepared.ref, "main", io)


async def test_start_fails_in_one_line_without_the_cluster(fargate_config: dict[str, Any]) -> None:
    config = FargateConfig(**{**fargate_config, "cluster": "no-such-cluster"})
    provider = FargateProvider(config, "node-a")
    with pytest.raises(ProviderError) as caught:
        await provider.start()
    assert "no-such-cluster" in caught.value.message and "\n" not in caught.value.message


async def test_an_image_change_is_refused_permanently(start: Start) -> None:
    provider = await start()
    prepared = replica("node-a")
    await provider.create_pod(prepared)
    changed = copy.deepcopy(prepared.pod)
    changed["spec"]["containers"][0]["image"] = "busybox:1.37"
    with pytest.raises(ProviderError) as caught:
        await provider.update_pod(PreparedPod(changed, {}, frozenset()))
    assert caught.value.permanent and caught.value.reason == "FargateImmutableTask"
    await provider.update_pod(prepared)  # nothing changed: accepted


async def test_the_status_budget_holds_and_the_last_statuses_stand(start: Start) -> None:
    provider = await start(status_poll={"calls_per_minute": 3, "refresh_seconds": 300})
    pods = [replica("node-a") for _ in range(2)]
    for prepared in pods:
        await provider.create_pod(prepared)
    first = await provider.get_pod_statuses()  # 2 ListTasks + 1 DescribeTasks: the budget is spent
    lists = provider.calls["ListTasks"]
    second = await provider.get_pod_statuses()
    assert provider.calls["ListTasks"] == lists  # no call: over budget
    assert provider.calls["status_from_cache"] == 1
    assert {u: s.phase for u, s in second.items()} == {u: s.phase for u, s in first.items()}
    assert set(second) == {p.ref.uid for p in pods}


async def test_secret_volume_files_reach_the_task_through_the_pods_secret_only(
    start: Start, fargate_config: dict[str, Any]
) -> None:
    provider = await start(file_volumes={"init_image": "busybox:1.36"})
    value = f"token-{uuid.uuid4().hex}"
    prepared = replica("node-a")
    spec = prepared.pod["spec"]
    spec["volumes"] = [
        {"name": "creds", "secret": {"secretName": "s"}},
        {"name": "cfg", "configMap": {"name": "c"}},
    ]
    spec["containers"][0]["volumeMounts"] = [{"name": "creds", "mountPath": "/creds"}]
    volumes = {
        "creds": ResolvedVolume("creds", "secret", {"token": value.encode()}, True),
        "cfg": ResolvedVolume("cfg", "configMap", {"a.conf": b"x=1"}, False),
    }
    prepared = PreparedPod(prepared.pod, volumes, frozenset())
    await provider.create_pod(prepared)
    (definition,) = await active_definitions(fargate_config, provider.node_name)
    assert [c["name"] for c in definition["containerDefinitions"]] == ["vk-files", "main"]
    encoded = base64.b64encode(value.encode()).decode()
    assert value not in json.dumps(definition) and encoded not in json.dumps(definition)
    name = naming.secret_name("vk-operator", provider.node_name, prepared.ref.uid)
    async with session().client(
        "secretsmanager", endpoint_url=fargate_config["endpoint_url"], config=CLIENT_CONFIG
    ) as secrets:
        stored = json.loads((await secrets.get_secret_value(SecretId=name))["SecretString"])
    assert base64.b64decode(stored["file.0"]).decode() == value
    await provider.delete_pod(prepared.ref)


async def test_a_file_volume_without_the_mechanism_fails_before_anything_is_made(start: Start) -> None:
    provider = await start()
    prepared = replica("node-a")
    prepared.pod["spec"]["volumes"] = [{"name": "cfg", "configMap": {"name": "c"}}]
    prepared.pod["spec"]["containers"][0]["env"] = [{"name": "P", "value": "v"}]
    volumes = {"cfg": ResolvedVolume("cfg", "configMap", {"a": b"1"}, False)}
    with pytest.raises(InvalidPodError) as caught:
        await provider.create_pod(PreparedPod(prepared.pod, volumes, frozenset({("main", "P")})))
    assert caught.value.field == "spec.volumes[0]" and "file_volumes" in caught.value.message
    assert provider.calls["CreateSecret"] == 0 and provider.calls["RunTask"] == 0


async def test_a_registry_login_is_a_pod_secret_referenced_and_removed_with_the_pod(
    start: Start, fargate_config: dict[str, Any]
) -> None:
    provider = await start()
    password = f"pw-{uuid.uuid4().hex}"
    prepared = replica("node-a", image="registry.example.com/team/app:1")
    login = RegistryCredential("registry.example.com", "robot", password, secret="pull")
    prepared = PreparedPod(prepared.pod, {}, frozenset(), (login,))
    await provider.create_pod(prepared)
    (definition,) = await active_definitions(fargate_config, provider.node_name)
    assert password not in json.dumps(definition)
    reference = definition["containerDefinitions"][0]["repositoryCredentials"]["credentialsParameter"]
    async with session().client(
        "secretsmanager", endpoint_url=fargate_config["endpoint_url"], config=CLIENT_CONFIG
    ) as secrets:
        stored = await secrets.get_secret_value(SecretId=reference)
        assert json.loads(stored["SecretString"]) == {"username": "robot", "password": password}
        await provider.delete_pod(prepared.ref)
        prefix = naming.secret_name("vk-operator", provider.node_name, prepared.ref.uid)
        listed = await secrets.list_secrets(Filters=[{"Key": "name", "Values": [prefix]}])
        assert listed["SecretList"] == []
        with pytest.raises(ClientError, match="ResourceNotFound"):
            await secrets.describe_secret(SecretId=reference)  # gone, not only out of the listing


async def test_a_restarted_instance_deregisters_the_definitions_of_the_pods_it_deletes(
    start: Start, fargate_config: dict[str, Any]
) -> None:
    first = await start()
    pods = [replica("node-a") for _ in range(3)]
    for prepared in pods:
        await first.create_pod(prepared)
    again = await start()  # the same node after a restart: only ECS knows the pods
    assert again.node_name == first.node_name
    listed = await again.list_pods()
    assert sorted(r.uid for r in listed) == sorted(p.ref.uid for p in pods)
    for ref in listed:
        await again.delete_pod(ref)
    assert await active_definitions(fargate_config, again.node_name) == []


async def test_a_restarted_instance_deregisters_leftover_definitions_of_its_own_only(
    start: Start, fargate_config: dict[str, Any]
) -> None:
    """A definition whose pods ECS no longer lists (the instance stopped before deregistering it, or
    ECS forgot the stopped tasks) is swept by the next instance; ones in use, and ones of another
    node, whatever their name, stay."""
    first = await start()
    node = first.node_name
    used = replica("node-a")
    await first.create_pod(used)
    async with await ecs_client(fargate_config) as ecs:

        async def register(family: str, tag_node: str) -> str:
            registered = await ecs.register_task_definition(
                family=family,
                tags=[{"key": naming.TAG_NODE, "value": tag_node}],
                requiresCompatibilities=["FARGATE"],
                networkMode="awsvpc",
                cpu="256",
                memory="512",
                containerDefinitions=[{"name": "app", "image": "busybox:1.36"}],
            )
            return str(registered["taskDefinition"]["taskDefinitionArn"])

        leftover = await register(naming.family(node, "a" * 32), node)
        # The same family shape, but tagged for a node whose name maps to the same prefix.
        twin = await register(naming.family(node, "b" * 32), node.replace("-", "."))
        # Another node's family that begins with this node's prefix.
        longer = await register(naming.family(f"{node}-b", "c" * 32), f"{node}-b")

    again = await start()  # the same node after a restart
    assert again.node_name == node
    assert [r.uid for r in await again.list_pods()] == [used.ref.uid]

    async def swept() -> bool:
        async with await ecs_client(fargate_config) as ecs:
            described = (await ecs.describe_task_definition(taskDefinition=leftover))["taskDefinition"]
        return bool(described["status"] == "INACTIVE")

    await eventually(swept, what="the leftover definition deregistered")
    assert again._sweep is not None
    await again._sweep  # done: nothing else is deregistered later
    async with await ecs_client(fargate_config) as ecs:
        for arn in (twin, longer):
            described = (await ecs.describe_task_definition(taskDefinition=arn))["taskDefinition"]
            assert described["status"] == "ACTIVE"
    in_use = [d["family"] for d in await active_definitions(fargate_config, node)]
    assert first.family_of[used.ref.uid] in in_use
    assert again.calls["DeregisterTaskDefinition"] == 1
    await again.delete_pod(used.ref)  # and the one in use still goes with its last pod
    assert first.family_of[used.ref.uid] not in [
        d["family"] for d in await active_definitions(fargate_config, node)
    ]
