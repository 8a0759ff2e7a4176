"""AzureBatchProvider against the in-process local Batch service: start-up checks, the job, idempotent
creates, throttling (429/503 with Retry-After), the status budget, capacity and logs."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest
import yaml

from providers.azurebatch import AzureBatchConfig, AzureBatchProvider, naming
from providers.azurebatch.localbatch import LocalBatch
from tests.conftest import REPO, eventually
from vk_operator.provider import (
    LogEntry,
    LogOptions,
    PermanentError,
    PodPhase,
    PreparedPod,
    ProviderError,
    RegistryCredential,
    ThrottledError,
)
from vk_operator.provider.testing import minimal_pod

from .conftest import POOL, provider_config

NODE = "vk-batch-test"


def pod(**env: str) -> PreparedPod:
    prepared = minimal_pod(NODE)
    manifest = copy.deepcopy(prepared.pod)
    manifest["spec"]["restartPolicy"] = "Never"
    manifest["spec"]["containers"][0]["env"] = [{"name": k, "value": v} for k, v in env.items()]
    return dataclasses.replace(prepared, pod=manifest)


@pytest.fixture
async def provider(localbatch: LocalBatch, batch_key: str) -> AsyncIterator[AzureBatchProvider]:
    started = AzureBatchProvider(provider_config(localbatch), NODE)
    started.follow_interval = 0.05
    await started.start()
    yield started
    await started.close()


async def start_fails(batch: LocalBatch, **config: Any) -> str:
    provider = AzureBatchProvider(provider_config(batch, **config), NODE)
    try:
        with pytest.raises(ProviderError) as caught:
            await provider.start()
    finally:
        await provider.close()
    message = str(caught.value)
    assert "\n" not in message
    return message


async def test_start_up_fails_with_one_line_for_a_missing_or_inactive_pool(
    localbatch: LocalBatch, batch_key: str
) -> None:
    assert "pool nowhere does not exist" in await start_fails(localbatch, pool_id="nowhere")
    localbatch.set_pool(POOL, state="deleting")
    assert f"pool {POOL} is deleting, not active" in await start_fails(localbatch)
    localbatch.set_pool(POOL, state="active", vm_size="standard_unheard_of")
    assert "set capacity.node_size" in await start_fails(localbatch)


async def test_start_up_creates_the_nodes_job_once_and_refuses_another_nodes(
    localbatch: LocalBatch, batch_key: str
) -> None:
    for _ in range(2):
        provider = AzureBatchProvider(provider_config(localbatch), NODE)
        await provider.start()
        await provider.close()
    assert localbatch.calls["Jobs_CreateJob 201"] == 1
    job = localbatch.jobs[naming.job_id(NODE).lower()]
    assert job.body["metadata"] == [{"name": naming.META_NODE, "value": NODE}]
    assert job.body["poolInfo"] == {"poolId": POOL}
    other = AzureBatchProvider(provider_config(localbatch, job_id=naming.job_id(NODE)), "another-node")
    with pytest.raises(ProviderError, match="belongs to node 'vk-batch-test'"):
        await other.start()
    await other.close()


async def test_a_missing_shared_key_fails_start_up(
    localbatch: LocalBatch, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VK_TEST_BATCH_KEY", raising=False)
    assert "$VK_TEST_BATCH_KEY" in await start_fails(localbatch)


async def test_create_is_idempotent_and_the_registry_password_is_never_returned(
    localbatch: LocalBatch, provider: AzureBatchProvider
) -> None:
    prepared = dataclasses.replace(
        pod(), registry_credentials=(RegistryCredential("docker.io", "me", "s3cret-password"),)
    )
    await provider.create_pod(prepared)
    await provider.create_pod(prepared)
    assert localbatch.calls["Tasks_CreateTask 201"] == 1 and localbatch.calls["Tasks_CreateTask 409"] == 1
    assert await provider.list_pods() == [prepared.ref]
    (task,) = localbatch.tasks.values()
    assert task.body["containerSettings"]["registry"]["password"] == "s3cret-password"  # what Batch got
    async for listed in provider.client.list_tasks(provider.job_id):
        assert "s3cret" not in str(listed.as_dict())  # what Batch returns


async def test_a_503_with_retry_after_holds_back_every_call_until_then(
    localbatch: LocalBatch, provider: AzureBatchProvider
) -> None:
    await provider.create_pod(pod())
    localbatch.inject_fault("Tasks_ListTasks", 503, "ServerBusy", headers={"Retry-After": "30"})
    with pytest.raises(ThrottledError) as caught:
        await provider.get_pod_statuses()
    assert caught.value.retry_after == 30
    before = sum(localbatch.calls.values())
    with pytest.raises(ThrottledError):
        await provider.list_pods()  # not sent: the account is throttled
    assert sum(localbatch.calls.values()) == before


async def test_a_429_from_the_rate_limit_is_a_throttled_error(
    localbatch: LocalBatch, provider: AzureBatchProvider
) -> None:
    localbatch.requests_per_second, localbatch.burst = 0.01, 1
    localbatch._tokens = 0.0
    with pytest.raises(ThrottledError) as caught:
        await provider.list_pods()
    assert caught.value.retry_after is not None and caught.value.retry_after >= 1
    assert localbatch.throttled == 1  # one 429, not retried by the SDK


async def test_bulk_status_stays_within_its_call_budget(localbatch: LocalBatch, batch_key: str) -> None:
    provider = AzureBatchProvider(provider_config(localbatch, status_poll={"calls_per_minute": 2}), NODE)
    await provider.start()
    try:
        prepared = pod()
        await provider.create_pod(prepared)
        for _ in range(5):
            statuses = await provider.get_pod_statuses()
            assert set(statuses) == {prepared.ref.uid}
        assert localbatch.calls["Tasks_ListTasks 200"] == 2
    finally:
        await provider.close()


async def test_status_carries_the_exit_code_and_the_node_ip(
    localbatch: LocalBatch, provider: AzureBatchProvider
) -> None:
    prepared = pod(LOCALBATCH_RUN_SECONDS="0.3", LOCALBATCH_EXIT_CODE="4")
    await provider.create_pod(prepared)

    async def running() -> Any:
        status = await provider.get_pod_status(prepared.ref)
        return status if status is not None and status.phase == PodPhase.RUNNING else None

    status = await eventually(running, what="Running", timeout=20)
    assert status.pod_ip and status.pod_ip.startswith("10.")

    async def failed() -> Any:
        status = await provider.get_pod_status(prepared.ref)
        return status if status is not None and status.phase == PodPhase.FAILED else None

    status = await eventually(failed, what="Failed", timeout=20)
    assert status.containers[0].exit_code == 4


async def test_capacity_follows_the_pool_and_modes(
    localbatch: LocalBatch, provider: AzureBatchProvider, batch_key: str
) -> None:
    capacity = await provider.capacity()
    assert (capacity.cpu, capacity.memory, capacity.pods, capacity.gpu) == ("12", str(224 * 2**30), "2", "2")
    localbatch.set_pool(POOL, dedicated=4, low_priority=0, task_slots_per_node=2)
    capacity = await provider.capacity()
    assert (capacity.cpu, capacity.pods, capacity.gpu) == ("24", "8", "4")
    assert await provider.node_conditions() == []
    localbatch.set_pool(POOL, state="deleting")
    await provider.capacity()
    (condition,) = await provider.node_conditions()
    assert condition["type"] == "BatchPoolReady" and condition["status"] == "False"
    localbatch.set_pool(POOL, state="active", low_priority=3)
    spot_free = AzureBatchProvider(
        provider_config(
            localbatch,
            capacity={"count_low_priority": False, "node_size": {"cpu": "2", "memory": "1Gi", "gpu": 0}},
        ),
        NODE,
    )
    await spot_free.start()
    try:
        capacity = await spot_free.capacity()
        assert (capacity.cpu, capacity.memory, capacity.gpu) == ("8", str(4 * 2**30), "0")
    finally:
        await spot_free.close()


async def _collect(
    provider: AzureBatchProvider, prepared: PreparedPod, options: LogOptions
) -> list[LogEntry]:
    return [e async for e in provider.container_logs(prepared.ref, "main", options)]


async def test_logs_tail_stream_and_follow_until_the_task_ends(
    localbatch: LocalBatch, provider: AzureBatchProvider
) -> None:
    prepared = pod(
        LOCALBATCH_STDOUT="a\nb\nc\n",
        LOCALBATCH_STDERR="warn\n",
        LOCALBATCH_TICKS="3",
        LOCALBATCH_TICK_SECONDS="0.2",
    )
    await provider.create_pod(prepared)
    with pytest.raises(KeyError):  # not started: no files yet
        await _collect(provider, prepared, LogOptions())
    followed = [e.text for e in await _collect(provider, prepared, LogOptions(follow=True, stream="Stdout"))]
    assert followed == ["a", "b", "c", "tick 1", "tick 2", "tick 3"]
    everything = await _collect(provider, prepared, LogOptions())
    assert [(e.stream, e.text) for e in everything] == [
        *[("Stdout", t) for t in ("a", "b", "c", "tick 1", "tick 2", "tick 3")],
        ("Stderr", "warn"),
    ]
    tail = await _collect(provider, prepared, LogOptions(tail_lines=2, stream="Stdout"))
    assert [e.text for e in tail] == ["tick 2", "tick 3"]
    assert all(e.time <= dt.datetime.now(dt.UTC) for e in everything)


def test_the_example_config_is_accepted() -> None:
    data = yaml.safe_load((REPO / "examples" / "azurebatch-provider.yaml").read_text())
    config = AzureBatchConfig.model_validate(data)
    assert config.pool_id and config.account_endpoint.startswith("https://")


@pytest.mark.parametrize(
    "change",
    [
        {"pool_id": "has space"},
        {"account_endpoint": "myaccount.westeurope.batch.azure.com"},
        {"credential": "password"},
        {"max_task_retry_count": -2},
        {"retention": "7 days"},
        {"unknown": 1},
        {"credential": "environment", "managed_identity_client_id": "00000000-0000-0000-0000-000000000000"},
    ],
)
def test_bad_config_is_refused(change: dict[str, Any]) -> None:
    base = {"account_endpoint": "https://acct.westeurope.batch.azure.com", "pool_id": "gpu"}
    with pytest.raises(ValueError):
        AzureBatchConfig.model_validate({**base, **change})


async def test_update_applies_a_new_deadline_and_refuses_a_new_image(
    localbatch: LocalBatch, provider: AzureBatchProvider
) -> None:
    prepared = pod()
    await provider.create_pod(prepared)
    manifest = copy.deepcopy(prepared.pod)
    manifest["spec"]["activeDeadlineSeconds"] = 90
    await provider.update_pod(dataclasses.replace(prepared, pod=manifest))
    (task,) = localbatch.tasks.values()
    assert task.body["constraints"]["maxWallClockTime"] == "PT90S"
    assert localbatch.calls["Tasks_ReplaceTask 200"] == 1
    manifest["spec"]["containers"][0]["image"] = "busybox:1.37"
    with pytest.raises(PermanentError, match="cannot change its image"):
        await provider.update_pod(dataclasses.replace(prepared, pod=manifest))


async def test_a_wrapped_multi_container_pod_runs_as_one_task_with_every_container(
    localbatch: LocalBatch, batch_key: str
) -> None:
    provider = AzureBatchProvider(provider_config(localbatch, multi_container="docker_wrapper"), NODE)
    await provider.start()
    try:
        prepared = pod()
        manifest = copy.deepcopy(prepared.pod)
        manifest["spec"]["containers"].append(
            {"name": "sidecar", "image": "busybox:1.36", "command": ["sleep", "1d"]}
        )
        wrapped = dataclasses.replace(prepared, pod=manifest)
        await provider.create_pod(wrapped)

        async def running() -> Any:
            status = await provider.get_pod_status(wrapped.ref)
            return status if status is not None and status.phase == PodPhase.RUNNING else None

        status = await eventually(running, what="Running", timeout=20)
        assert [c.name for c in status.containers] == ["main", "sidecar"]
        (task,) = localbatch.tasks.values()
        assert "containerSettings" not in task.body
        assert task.body["userIdentity"]["autoUser"]["elevationLevel"] == "admin"
    finally:
        await provider.close()


async def test_bulk_status_lists_only_what_can_change_between_full_lists(
    localbatch: LocalBatch, provider: AzureBatchProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    done, running = pod(LOCALBATCH_RUN_SECONDS="0.1"), pod()
    for prepared in (done, running):
        await provider.create_pod(prepared)
    listed: list[tuple[str | None, int]] = []
    original = provider._list_tasks

    async def recording(select: list[str], odata_filter: str | None = None) -> list[dict[str, Any]]:
        tasks = await original(select, odata_filter)
        listed.append((odata_filter, len(tasks)))
        return tasks

    monkeypatch.setattr(provider, "_list_tasks", recording)

    async def settled() -> Any:
        statuses = await provider.get_pod_statuses()
        phases = {uid: s.phase for uid, s in statuses.items()}
        wanted = {done.ref.uid: PodPhase.SUCCEEDED, running.ref.uid: PodPhase.RUNNING}
        return statuses if phases == wanted else None

    await eventually(settled, what="one Succeeded, one Running", timeout=20)
    # As if the last poll was two minutes after the task ended (beyond the minute's margin), and not
    # a full list's turn: the finished task is old news.
    provider._since = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=120)
    provider._polls = 1
    statuses = await provider.get_pod_statuses()
    assert statuses[done.ref.uid].phase == PodPhase.SUCCEEDED  # kept from before
    assert statuses[running.ref.uid].phase == PodPhase.RUNNING
    odata_filter, count = listed[-1]
    assert odata_filter is not None and "state ne 'completed'" in odata_filter
    assert count == 1  # only the running task was listed
    await provider.delete_pod(done.ref)
    assert set(await provider.get_pod_statuses()) == {running.ref.uid}


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str, bool]] = []

    def record(self, ref: Any, reason: str, message: str, *, warning: bool = False) -> None:
        self.events.append((ref.uid, reason, message, warning))


async def test_a_requeue_and_a_retry_are_warning_events_once(localbatch: LocalBatch, batch_key: str) -> None:
    provider = AzureBatchProvider(provider_config(localbatch, max_task_retry_count=3), NODE)
    recorder = Recorder()
    provider.emit_events(recorder)
    await provider.start()
    try:
        prepared = pod()
        manifest = copy.deepcopy(prepared.pod)
        manifest["spec"]["restartPolicy"] = "OnFailure"
        prepared = dataclasses.replace(prepared, pod=manifest)
        await provider.create_pod(prepared)

        async def running() -> Any:
            status = await provider.get_pod_status(prepared.ref)
            return status if status is not None and status.phase == PodPhase.RUNNING else None

        await eventually(running, what="Running", timeout=20)
        (task,) = localbatch.tasks.values()
        localbatch.set_pool(POOL, dedicated=0, low_priority=0)  # its node leaves: requeued
        await provider.get_pod_statuses()
        await provider.get_pod_statuses()
        localbatch.set_pool(POOL, dedicated=1)
        await eventually(running, what="Running again", timeout=20)
        localbatch.complete_task(task.job, task.id, 2)  # fails: retried (OnFailure)
        await provider.get_pod_status(prepared.ref)
        reasons = [(reason, warning) for _, reason, _, warning in recorder.events]
        assert reasons == [("BatchTaskRequeued", True), ("BatchTaskRetried", True)]
        assert "pool gpu-pool" in recorder.events[0][2]
    finally:
        await provider.close()


async def test_a_job_deleted_under_the_provider_is_made_again_on_create(
    localbatch: LocalBatch, provider: AzureBatchProvider
) -> None:
    localbatch.jobs.clear()
    prepared = pod()
    await provider.create_pod(prepared)
    assert localbatch.calls["Tasks_CreateTask 404"] == 1 and localbatch.calls["Jobs_CreateJob 201"] == 2
    assert await provider.list_pods() == [prepared.ref]


async def test_a_pool_without_containers_fails_container_pods_permanently(
    localbatch: LocalBatch, batch_key: str
) -> None:
    localbatch.set_pool(POOL, container_type=None)
    provider = AzureBatchProvider(provider_config(localbatch), NODE)
    await provider.start()
    try:
        with pytest.raises(PermanentError) as caught:
            await provider.create_pod(pod())
        assert caught.value.reason == "PoolWithoutContainers"
        assert localbatch.calls["Tasks_CreateTask 201"] == 0
    finally:
        await provider.close()
