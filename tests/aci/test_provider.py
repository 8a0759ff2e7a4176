"""AciProvider against the local ARM server, through the real SDK pipeline (fast: simulated seconds).

The ``localarm`` fixture fails a test whose requests or responses did not validate against the spec.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import datetime
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest
from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.transport import HttpRequest
from azure.mgmt.containerinstance.aio import ContainerInstanceManagementClient

from providers.aci import AciConfig, AciProvider, naming
from providers.aci.errors import mapped
from providers.aci.localarm import LocalArm
from providers.aci.throttle import ArmRateGate, ArmRetryPolicy, CallBudget, TokenBucket, retry_after_seconds
from vk_operator.provider import (
    AttachProvider,
    BulkStatusProvider,
    Closeable,
    ConfigurableProvider,
    ContainerPhase,
    EventEmitter,
    ExecIO,
    ExecProvider,
    InvalidPodError,
    LogEntry,
    LogOptions,
    LogsProvider,
    LogsUnavailable,
    PermanentError,
    Pinger,
    PodPhase,
    PodRef,
    PreparedPod,
    ProviderPodStatus,
    RegistryCredential,
    ResolvedVolume,
    Startable,
    TerminalSize,
    ThrottledError,
    TransientError,
    VolumeTypesProvider,
)
from vk_operator.provider.testing import minimal_pod

from .conftest import LOCATION, RESOURCE_GROUP, SUBSCRIPTION

T = TypeVar("T")
NODE = "vk-aci-a"
OTHER_NODE = "vk-aci-b"
LOOP = ["sh", "-c", "while true; do echo tick; sleep 1; done"]

Factory = Callable[..., Awaitable[AciProvider]]


def config(arm: LocalArm, **overrides: Any) -> AciConfig:
    return AciConfig.model_validate(
        {
            "subscription_id": SUBSCRIPTION,
            "resource_group": RESOURCE_GROUP,
            "region": LOCATION,
            "base_url": arm.base_url,
            "poll_interval_seconds": 0.05,
            "status_poll": {"calls_per_minute": 6000},
            **overrides,
        }
    )


@pytest.fixture
async def make(localarm: LocalArm) -> AsyncIterator[Factory]:
    """Started providers on the local server, closed after the test."""
    made: list[AciProvider] = []

    async def factory(node: str = NODE, *, start: bool = True, **overrides: Any) -> AciProvider:
        provider = AciProvider(config(localarm, **overrides), node)
        provider.follow_interval = 0.1
        provider.follow_status_interval = 0.2
        if start:
            await provider.start()
        made.append(provider)
        return provider

    yield factory
    for provider in made:
        await provider.close()


def pod(
    node: str = NODE,
    *,
    name: str | None = None,
    namespace: str = "default",
    command: list[str] | None = None,
    restart: str = "Always",
    image: str = "busybox:1.36",
    env: dict[str, str] | None = None,
    secret_env: frozenset[tuple[str, str]] = frozenset(),
    **container: Any,
) -> PreparedPod:
    prepared = minimal_pod(node, namespace=namespace, name=name, image=image, command=command or LOOP)
    body = copy.deepcopy(prepared.pod)
    body["spec"]["restartPolicy"] = restart
    main = body["spec"]["containers"][0]
    main["env"] = [{"name": k, "value": v} for k, v in (env or {}).items()]
    main.update(container)
    return dataclasses.replace(prepared, pod=body, secret_env=secret_env)


async def eventually(
    probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], what: str, timeout: float = 10.0
) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await probe()
        if done(last):
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout}s; last: {last!r}")


def phase_is(phase: PodPhase) -> Callable[[ProviderPodStatus | None], bool]:
    return lambda status: status is not None and status.phase is phase


async def running(provider: AciProvider, ref: PodRef) -> ProviderPodStatus:
    status = await eventually(
        lambda: provider.get_pod_status(ref), phase_is(PodPhase.RUNNING), f"{ref.name} Running"
    )
    assert status is not None
    return status


def stored(arm: LocalArm, ref: PodRef) -> dict[str, Any]:
    """The group's body as the server stored it (secrets kept, unlike what a GET shows)."""
    group = arm.groups[
        (SUBSCRIPTION.lower(), RESOURCE_GROUP.lower(), naming.container_group_name(ref.namespace, ref.name))
    ]
    return group.body


def calls(arm: LocalArm, operation: str) -> int:
    return sum(n for key, n in arm.calls.items() if key.startswith(operation + " "))


# --- the factory and its capabilities ---------------------------------------------------------------


async def test_entry_point_and_capabilities(make: Factory) -> None:
    from importlib.metadata import entry_points

    (entry,) = [e for e in entry_points(group="vk_operator.providers") if e.name == "aci"]
    assert entry.load() is AciProvider
    assert AciProvider.config_model is AciConfig and AciProvider.name == "aci"
    provider = await make(start=False)  # the constructor makes no call
    for capability in (
        Startable,
        Closeable,
        BulkStatusProvider,
        LogsProvider,
        ExecProvider,
        AttachProvider,
        Pinger,
        VolumeTypesProvider,
        ConfigurableProvider,
        EventEmitter,
    ):
        assert isinstance(provider, capability), capability.__name__
    assert {"azureFile", "csi:file.csi.azure.com", "gitRepo"} <= AciProvider.volume_types


async def test_start_fails_with_one_line_when_the_resource_group_is_missing(
    localarm: LocalArm, make: Factory
) -> None:
    localarm.knobs.update(resource_groups={(SUBSCRIPTION, "somewhere-else")})
    with pytest.raises(PermanentError) as failed:
        await make()
    message = str(failed.value)
    assert "\n" not in message
    assert RESOURCE_GROUP in message and "ResourceGroupNotFound" in message


async def test_start_fails_with_one_line_when_arm_is_unreachable() -> None:
    provider = AciProvider(
        AciConfig(
            subscription_id=SUBSCRIPTION,
            resource_group=RESOURCE_GROUP,
            region=LOCATION,
            base_url="http://127.0.0.1:9",
        ),
        NODE,
    )
    with pytest.raises(PermanentError) as failed:
        await provider.start()
    assert "\n" not in str(failed.value) and "cannot reach ARM" in str(failed.value)
    await provider.close()


@pytest.mark.parametrize(
    ("credential", "problem"),
    [
        ("environment", "the Azure credential cannot get a token"),
        ("workload_identity", "credential 'workload_identity'"),
    ],
)
async def test_start_names_a_credential_that_cannot_work(
    credential: str, problem: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    provider = AciProvider(
        AciConfig(
            subscription_id=SUBSCRIPTION,
            resource_group=RESOURCE_GROUP,
            region=LOCATION,
            base_url="https://127.0.0.1:9",  # https: the real credential; it fails before any request
            credential=credential,  # type: ignore[arg-type]
        ),
        NODE,
    )
    with pytest.raises(PermanentError) as failed:
        await provider.start()
    assert problem in str(failed.value) and "\n" not in str(failed.value)
    await provider.close()


async def test_reconfigure_keeps_the_connection(localarm: LocalArm, make: Factory) -> None:
    provider = await make()
    await provider.reconfigure(config(localarm, status_poll={"calls_per_minute": 7, "refresh_seconds": 9}))
    assert provider.budget.per_minute == 7 and provider.tracker.refresh_seconds == 9
    with pytest.raises(PermanentError, match="resource_group"):
        await provider.reconfigure(config(localarm, resource_group="elsewhere"))


# --- create, status, delete -------------------------------------------------------------------------


async def test_create_reaches_running_through_get_and_bulk(localarm: LocalArm, make: Factory) -> None:
    provider = await make()
    prepared = pod()
    await provider.create_pod(prepared)
    assert calls(localarm, "ContainerGroups_CreateOrUpdate") == 1
    assert calls(localarm, "LocalArm_GetOperationStatus") == 0  # the LRO is not awaited
    status = await running(provider, prepared.ref)
    (main,) = status.containers
    assert main.name == "main" and main.phase is ContainerPhase.RUNNING and main.started_at is not None
    assert status.start_time is not None

    statuses = await eventually(
        provider.get_pod_statuses,
        lambda got: prepared.ref.uid in got and got[prepared.ref.uid].phase is PodPhase.RUNNING,
        "bulk Running",
    )
    assert set(statuses) == {prepared.ref.uid}
    assert statuses[prepared.ref.uid].containers[0].phase is ContainerPhase.RUNNING
    assert await provider.list_pods() == [prepared.ref]


async def test_create_sends_tags_and_region(localarm: LocalArm, make: Factory) -> None:
    provider = await make(tags={"team": "platform"})
    prepared = pod(namespace="shop", name="web-0")
    await provider.create_pod(prepared)
    body = stored(localarm, prepared.ref)
    assert body["location"] == LOCATION
    assert body["tags"] == {
        "team": "platform",
        naming.TAG_NODE: NODE,
        naming.TAG_NAMESPACE: "shop",
        naming.TAG_POD: "web-0",
        naming.TAG_UID: prepared.ref.uid,
    }


async def test_exit_codes_and_restarts(make: Factory) -> None:
    provider = await make()
    failing = pod(command=["sh", "-c", "echo bye; exit 3"], restart="Never")
    flaky = pod(command=["sh", "-c", "[ $LOCALARM_RUN_INDEX -lt 2 ] && exit 1; sleep infinity"])
    done = pod(command=["sh", "-c", "echo ok"], restart="OnFailure")
    for each in (failing, flaky, done):
        await provider.create_pod(each)

    ended = await eventually(
        lambda: provider.get_pod_status(failing.ref), phase_is(PodPhase.FAILED), "Failed"
    )
    assert ended is not None
    (main,) = ended.containers
    assert main.phase is ContainerPhase.TERMINATED and main.exit_code == 3 and main.reason == "Error"

    finished = await eventually(
        lambda: provider.get_pod_status(done.ref), phase_is(PodPhase.SUCCEEDED), "Succeeded"
    )
    assert finished is not None and finished.containers[0].exit_code == 0

    def restarted_twice(got: dict[str, ProviderPodStatus]) -> bool:
        status = got.get(flaky.ref.uid)
        return (
            status is not None
            and status.phase is PodPhase.RUNNING
            and status.containers[0].restart_count == 2
            and status.containers[0].phase is ContainerPhase.RUNNING
        )

    statuses = await eventually(
        lambda: provider.get_pod_statuses(), restarted_twice, "two restarts, through the bulk status"
    )
    last = statuses[flaky.ref.uid].containers[0].last_state
    assert last is not None and last.exit_code == 1
    assert statuses[failing.ref.uid].phase is PodPhase.FAILED
    assert statuses[failing.ref.uid].containers[0].exit_code == 3


async def test_create_is_idempotent(localarm: LocalArm, make: Factory) -> None:
    provider = await make()
    prepared = pod()
    await provider.create_pod(prepared)
    await provider.create_pod(prepared)
    restarted = await make()  # a restarted virtual kubelet retrying the create
    await restarted.create_pod(prepared)
    assert calls(localarm, "ContainerGroups_CreateOrUpdate") == 1
    assert await restarted.list_pods() == [prepared.ref]


async def test_a_group_of_another_pod_with_the_name_is_a_conflict(localarm: LocalArm, make: Factory) -> None:
    provider = await make()
    first = pod(name="same-name")
    await provider.create_pod(first)
    await running(provider, first.ref)
    second = pod(name="same-name")  # the pod recreated: same name, new UID
    assert second.ref.uid != first.ref.uid
    with pytest.raises(TransientError) as conflict:
        await provider.create_pod(second)
    assert conflict.value.reason == "ContainerGroupNameConflict" and first.ref.uid in str(conflict.value)
    assert await provider.get_pod_status(second.ref) is None  # not the second pod's status
    await provider.delete_pod(second.ref)  # deleting the second pod leaves the first's group alone
    assert stored(localarm, first.ref)["tags"][naming.TAG_UID] == first.ref.uid
    assert calls(localarm, "ContainerGroups_Delete") == 0
    with pytest.raises(PermanentError):
        await provider.update_pod(second)

    await provider.delete_pod(first.ref)
    await provider.create_pod(second)  # the name is free again
    await running(provider, second.ref)


async def test_create_waits_for_an_earlier_group_being_deleted(localarm: LocalArm, make: Factory) -> None:
    localarm.knobs.update(delete_seconds=0.5)
    provider = await make()
    first = pod(name="again")
    await provider.create_pod(first)
    await running(provider, first.ref)
    deleting = asyncio.ensure_future(provider.delete_pod(first.ref))
    await eventually(
        lambda: asyncio.sleep(0, calls(localarm, "ContainerGroups_Delete")), lambda n: n == 1, "DELETE sent"
    )
    second = pod(name="again")
    await provider.create_pod(second)
    await deleting
    await running(provider, second.ref)


async def test_delete_waits_until_the_group_is_gone(localarm: LocalArm, make: Factory) -> None:
    localarm.knobs.update(delete_seconds=0.3)
    provider = await make()
    prepared = pod()
    await provider.create_pod(prepared)
    await running(provider, prepared.ref)
    started = time.monotonic()
    await provider.delete_pod(prepared.ref)
    assert time.monotonic() - started >= 0.25  # it waited for Deleting to end
    assert (
        localarm.group_body(
            SUBSCRIPTION, RESOURCE_GROUP, naming.container_group_name("default", prepared.ref.name)
        )
        is None
    )
    assert await provider.get_pod_status(prepared.ref) is None
    assert await provider.list_pods() == []
    assert prepared.ref.uid not in await provider.get_pod_statuses()
    await provider.delete_pod(prepared.ref)  # again: nothing to do
    unknown = PodRef("default", "never-made", str(uuid.uuid4()))
    await provider.delete_pod(unknown)
    assert calls(localarm, "ContainerGroups_Delete") == 1


async def test_delete_is_bounded_by_the_caller(localarm: LocalArm, make: Factory) -> None:
    localarm.knobs.update(delete_seconds=60)
    provider = await make()
    prepared = pod()
    await provider.create_pod(prepared)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):  # the core's delete timeout cancels the wait
            await provider.delete_pod(prepared.ref)
    assert await provider.get_pod_status(prepared.ref) is not None  # still there, being deleted
    assert await provider.list_pods() == [prepared.ref]  # so the core deletes it again later


async def test_update_redeploys_only_for_a_new_image(localarm: LocalArm, make: Factory) -> None:
    provider = await make()
    prepared = pod()
    await provider.create_pod(prepared)
    await running(provider, prepared.ref)
    same = copy.deepcopy(prepared.pod)
    same["spec"]["activeDeadlineSeconds"] = 30
    await provider.update_pod(dataclasses.replace(prepared, pod=same))
    assert calls(localarm, "ContainerGroups_CreateOrUpdate") == 1
    newer = copy.deepcopy(prepared.pod)
    newer["spec"]["containers"][0]["image"] = "busybox:1.37"
    await provider.update_pod(dataclasses.replace(prepared, pod=newer))
    assert localarm.calls["ContainerGroups_CreateOrUpdate 200"] == 1
    status = await running(provider, prepared.ref)
    assert status.containers[0].image == "busybox:1.37"


# --- ownership ----------------------------------------------------------------------------------------


async def test_lists_only_this_nodes_tagged_groups(
    localarm: LocalArm, make: Factory, aci_client: ContainerInstanceManagementClient
) -> None:
    mine, theirs = await make(NODE), await make(OTHER_NODE)
    own = pod(NODE)
    foreign = pod(OTHER_NODE)
    await mine.create_pod(own)
    await theirs.create_pod(foreign)
    body = {
        "location": LOCATION,
        "properties": {
            "osType": "Linux",
            "containers": [
                {
                    "name": "x",
                    "properties": {"image": "nginx", "resources": {"requests": {"cpu": 1, "memoryInGB": 1}}},
                }
            ],
        },
    }
    await (
        await aci_client.container_groups.begin_create_or_update(RESOURCE_GROUP, "hand-made", body)
    ).result()
    partial = {**body, "tags": {naming.TAG_NODE: NODE, naming.TAG_UID: "only-a-uid"}}  # no namespace/pod
    await (
        await aci_client.container_groups.begin_create_or_update(RESOURCE_GROUP, "half-tagged", partial)
    ).result()

    fresh = await make(NODE)  # tags, not memory
    assert await fresh.list_pods() == [own.ref]
    assert await theirs.list_pods() == [foreign.ref]
    assert set(await fresh.get_pod_statuses()) == {own.ref.uid}
    assert set(await theirs.get_pod_statuses()) == {foreign.ref.uid}
    assert await fresh.get_pod_status(foreign.ref) is None  # another node's group is not this node's pod
    await fresh.delete_pod(foreign.ref)
    assert calls(localarm, "ContainerGroups_Delete") == 0
    for name in ("hand-made", "half-tagged"):
        assert localarm.group_body(SUBSCRIPTION, RESOURCE_GROUP, name) is not None


async def test_a_restarted_instance_adopts_its_groups(localarm: LocalArm, make: Factory) -> None:
    first = await make()
    pods = [pod() for _ in range(3)]
    for each in pods:
        await first.create_pod(each)
    for each in pods:
        await running(first, each.ref)
    await first.close()
    adopted = await make(status_poll={"calls_per_minute": 2})  # too few reads to GET them all at once
    statuses = await adopted.get_pod_statuses()
    assert set(statuses) == {p.ref.uid for p in pods}
    for each in pods:  # read with a GET, or shown running from the list until then: never lost
        status = statuses[each.ref.uid]
        assert status.phase is PodPhase.RUNNING
        assert [c.phase for c in status.containers] == [ContainerPhase.RUNNING]


# --- errors -------------------------------------------------------------------------------------------


async def test_429_is_throttled_with_retry_after(localarm: LocalArm, make: Factory) -> None:
    provider = await make()
    localarm.inject_fault(
        "ContainerGroups_Get",
        429,
        "SubscriptionRequestsThrottled",
        "Too many reads.",
        headers={"Retry-After": "2"},
    )
    with pytest.raises(ThrottledError) as throttled:
        await provider.get_pod_status(pod().ref)
    assert throttled.value.retry_after == 2.0
    assert throttled.value.reason == "SubscriptionRequestsThrottled"
    assert localarm.calls["ContainerGroups_Get 429"] == 1  # the SDK does not retry it: the core pauses
    assert provider.gate.paused_until["reads"] > time.monotonic() + 1.5  # our own reads wait too
    assert provider.gate.throttled["reads"] == 1


async def test_the_servers_429_is_raised_with_its_retry_after(localarm: LocalArm, make: Factory) -> None:
    provider = await make()
    provider.gate.low_watermark = 0  # no spacing: run into ARM's limit
    localarm.knobs.update(reads_per_second=0.5, reads_burst=3)
    localarm.throttler.reset()
    ref = pod().ref
    with pytest.raises(ThrottledError) as throttled:
        for _ in range(10):
            await provider.get_pod_status(ref)
    assert throttled.value.retry_after is not None and throttled.value.retry_after >= 1
    assert localarm.calls["ContainerGroups_Get 429"] == 1
    assert provider.gate.remaining["reads"] == 0


async def test_low_remaining_reads_space_calls_before_arm_refuses(localarm: LocalArm, make: Factory) -> None:
    provider = await make()
    provider.gate.low_watermark, provider.gate.max_spacing = 5, 0.25
    localarm.knobs.update(reads_per_second=20.0, reads_burst=10)
    localarm.throttler.reset()
    ref = pod().ref
    for _ in range(30):  # three times the burst, without one 429
        await provider.get_pod_status(ref)
    assert localarm.calls["ContainerGroups_Get 429"] == 0
    assert provider.gate.waited > 0.3
    assert provider.gate.remaining["reads"] is not None and provider.gate.remaining["reads"] < 10


async def test_quota_and_capacity_409_are_transient_with_acis_message(
    localarm: LocalArm, make: Factory
) -> None:
    provider = await make()
    localarm.knobs.update(quota_container_groups=0)
    with pytest.raises(TransientError) as quota:
        await provider.create_pod(pod())
    assert not quota.value.permanent and quota.value.reason == "ContainerGroupQuotaReached"
    assert "container group quota 'ContainerGroups' exceeded" in str(quota.value)
    localarm.knobs.update(quota_container_groups=5000, capacity_available=False)
    with pytest.raises(TransientError) as capacity:
        await provider.create_pod(pod())
    assert capacity.value.reason == "ServiceUnavailable" and "not available in the location" in str(
        capacity.value
    )


async def test_inaccessible_image_is_permanent(make: Factory) -> None:
    provider = await make()
    with pytest.raises(PermanentError) as refused:
        await provider.create_pod(pod(image="registry.example/inaccessible:1"))
    assert refused.value.reason == "InaccessibleImage" and "\n" not in str(refused.value)


async def test_5xx_is_transient(localarm: LocalArm, make: Factory) -> None:
    provider = await make()
    localarm.inject_fault("ContainerGroups_CreateOrUpdate", 500, "InternalServerError", times=3)
    with pytest.raises(TransientError) as failed:
        await provider.create_pod(pod())
    assert failed.value.reason == "InternalServerError"
    assert localarm.calls["ContainerGroups_CreateOrUpdate 500"] == 3  # the SDK tried twice more, briefly


async def test_what_aci_cannot_express_is_refused_before_any_call(localarm: LocalArm, make: Factory) -> None:
    provider = await make()
    args_only = pod()
    del args_only.pod["spec"]["containers"][0]["command"]
    args_only.pod["spec"]["containers"][0]["args"] = ["-c", "true"]
    with pytest.raises(InvalidPodError) as invalid:
        await provider.create_pod(args_only)
    assert invalid.value.field == "spec.containers[0].args"
    files = pod()
    files.pod["spec"]["volumes"] = [{"name": "share", "azureFile": {"shareName": "s"}}]
    volume = ResolvedVolume("share", "azureFile", {}, False, source={"shareName": "s"})
    with pytest.raises(InvalidPodError) as no_secret:
        await provider.create_pod(dataclasses.replace(files, volumes={"share": volume}))
    assert no_secret.value.field == "spec.volumes[0].azureFile.secretName"
    assert calls(localarm, "ContainerGroups_CreateOrUpdate") == 0


def test_error_mapping_table() -> None:
    from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError

    assert mapped(ServiceRequestError("connection refused"), "x").reason == "ArmUnreachable"
    credential = mapped(ClientAuthenticationError("no token"), "x")
    assert isinstance(credential, TransientError) and credential.reason == "AzureCredentialUnavailable"


# --- secure values ------------------------------------------------------------------------------------


async def test_secret_env_is_sent_as_secure_value_and_never_logged(
    localarm: LocalArm, make: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="azure.core.pipeline.policies.http_logging_policy")
    secret = "s3cret-" + uuid.uuid4().hex
    provider = await make()
    prepared = pod(
        env={"PASSWORD": secret, "MODE": "plain"},
        secret_env=frozenset({("main", "PASSWORD")}),
        command=["sh", "-c", "echo started; sleep infinity"],
        livenessProbe={"tcpSocket": {"port": 80}},  # a warning, logged
    )
    await provider.create_pod(prepared)
    await running(provider, prepared.ref)
    await provider.get_pod_statuses()
    env = stored(localarm, prepared.ref)["properties"]["containers"][0]["properties"]["environmentVariables"]
    assert {"name": "PASSWORD", "secureValue": secret} in env
    assert {"name": "MODE", "value": "plain"} in env
    shown = localarm.group_body(
        SUBSCRIPTION, RESOURCE_GROUP, naming.container_group_name("default", prepared.ref.name)
    )
    assert shown is not None and secret not in str(shown)  # ARM never returns it
    entries = [e async for e in provider.container_logs(prepared.ref, "main", LogOptions())]
    assert entries
    await provider.delete_pod(prepared.ref)
    assert any(r.name.startswith("azure") for r in caplog.records), "the test must see the SDK's logs"
    assert secret not in caplog.text
    assert all(secret not in str(r.args) for r in caplog.records)


async def test_registry_logins_and_the_azure_files_key_reach_aci_and_no_log(
    localarm: LocalArm, make: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="azure.core.pipeline.policies.http_logging_policy")
    password, key = "pw-" + uuid.uuid4().hex, "key-" + uuid.uuid4().hex + "=="
    provider = await make()
    prepared = pod(volumeMounts=[{"name": "share", "mountPath": "/data"}])
    prepared.pod["spec"]["imagePullSecrets"] = [{"name": "acr"}]
    prepared.pod["spec"]["volumes"] = [
        {"name": "share", "azureFile": {"shareName": "data", "secretName": "st"}}
    ]
    share = ResolvedVolume(
        "share",
        "azureFile",
        {},
        True,
        source=prepared.pod["spec"]["volumes"][0]["azureFile"],
        secret={"azurestorageaccountname": b"acct", "azurestorageaccountkey": key.encode()},
    )
    prepared = dataclasses.replace(
        prepared,
        volumes={"share": share},
        registry_credentials=(RegistryCredential("myacr.azurecr.io", "puller", password, secret="acr"),),
    )
    await provider.create_pod(prepared)
    await running(provider, prepared.ref)
    props = stored(localarm, prepared.ref)["properties"]
    assert props["imageRegistryCredentials"] == [
        {"server": "myacr.azurecr.io", "username": "puller", "password": password}
    ]
    assert props["volumes"] == [
        {
            "name": "share",
            "azureFile": {"shareName": "data", "storageAccountName": "acct", "storageAccountKey": key},
        }
    ]
    shown = localarm.group_body(
        SUBSCRIPTION, RESOURCE_GROUP, naming.container_group_name("default", prepared.ref.name)
    )
    assert (
        shown is not None and password not in str(shown) and key not in str(shown)
    )  # ARM never returns them
    assert shown["properties"]["volumes"][0]["azureFile"]["shareName"] == "data"
    await provider.get_pod_statuses()
    await provider.delete_pod(prepared.ref)
    assert any(r.name.startswith("azure") for r in caplog.records), "the test must see the SDK's logs"
    for secret in (password, key):
        assert secret not in caplog.text
        assert all(secret not in str(r.args) for r in caplog.records)


class Recorder:
    """The core's PodEventRecorder, recording."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str, bool]] = []  # (uid, reason, message, warning)

    def record(self, ref: PodRef, reason: str, message: str, *, warning: bool = False) -> None:
        self.events.append((ref.uid, reason, message, warning))

    def of(self, uid: str) -> list[tuple[str, str, bool]]:
        return [(reason, message, warning) for who, reason, message, warning in self.events if who == uid]


async def test_mapping_warnings_are_warning_events_once(
    make: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="providers.aci")
    provider = await make(start=False)
    recorder = Recorder()
    provider.emit_events(recorder)
    await provider.start()
    prepared = pod(livenessProbe={"tcpSocket": {"port": 8080}}, readinessProbe={"grpc": {"port": 9090}})
    await provider.create_pod(prepared)
    await provider.create_pod(prepared)  # a retried create: told once
    told = recorder.of(prepared.ref.uid)
    warnings = [
        (reason, message) for reason, message, warning in told if reason == "UnsupportedProbe" and warning
    ]
    assert warnings == [
        (
            "UnsupportedProbe",
            "spec.containers[0].livenessProbe: ACI has exec and httpGet probes only: the tcpSocket "
            "livenessProbe of container 'main' is not run",
        ),
        (
            "UnsupportedProbe",
            "spec.containers[0].readinessProbe: ACI has exec and httpGet probes only: the grpc "
            "readinessProbe of container 'main' is not run",
        ),
    ]
    assert not [r for r in caplog.records if "tcpSocket" in r.getMessage()]  # the core logs Events
    status = await running(provider, prepared.ref)
    assert status.conditions == ()  # no condition of ours: the Warning Events tell it


async def test_mapping_warnings_are_logged_without_a_recorder(
    make: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="providers.aci")
    provider = await make()
    prepared = pod(livenessProbe={"tcpSocket": {"port": 8080}})
    await provider.create_pod(prepared)
    await provider.create_pod(prepared)
    logged = [r for r in caplog.records if "tcpSocket" in r.getMessage()]
    assert len(logged) == 1 and logged[0].levelno == logging.WARNING


async def test_instance_view_events_are_told_once_and_repeats_counted(
    localarm: LocalArm, make: Factory
) -> None:
    provider = await make(start=False, dns={"nameservers": ["10.0.0.10"]})  # no DNS warning
    recorder = Recorder()
    provider.emit_events(recorder)
    await provider.start()
    steady = pod()
    crashing = pod(command=["sh", "-c", "echo boom; exit 2"])  # restartPolicy Always: restarts
    for each in (steady, crashing):
        await provider.create_pod(each)
    await running(provider, steady.ref)

    def restarted(got: dict[str, ProviderPodStatus]) -> bool:
        status = got.get(crashing.ref.uid)
        return status is not None and bool(status.containers) and status.containers[0].restart_count >= 2

    await eventually(provider.get_pod_statuses, restarted, "the crashing pod restarted twice")
    for _ in range(3):  # ACI returns every event in every GET: nothing new is told
        await provider.get_pod_status(steady.ref)
    told = recorder.of(steady.ref.uid)
    assert [(reason, warning) for reason, _, warning in told] == [
        ("Pulling", False),
        ("Pulled", False),
        ("Started", False),
    ]
    assert told[2][1] == "container main: Started container"
    # The crashing container's Started and BackOff are recorded as often as ACI counted them (the
    # core's correlator makes the repeats one Event with that count), never more.
    group = localarm.group_body(
        SUBSCRIPTION, RESOURCE_GROUP, naming.container_group_name("default", crashing.ref.name)
    )
    assert group is not None
    await provider.get_pod_status(crashing.ref)
    group = localarm.group_body(
        SUBSCRIPTION, RESOURCE_GROUP, naming.container_group_name("default", crashing.ref.name)
    )
    assert group is not None
    counts = {
        e["name"]: e["count"]
        for e in group["properties"]["containers"][0]["properties"]["instanceView"]["events"]
    }
    recorded = [reason for reason, _, _ in recorder.of(crashing.ref.uid)]
    assert recorded.count("Started") <= counts["Started"] and recorded.count("Started") >= 3
    assert recorded.count("BackOff") >= 2
    assert ("BackOff", "container main: Back-off restarting failed container", True) in recorder.of(
        crashing.ref.uid
    )

    # A new instance (a restart) does not tell again what happened before it started.
    await provider.close()
    again = await make(start=False)
    second = Recorder()
    again.emit_events(second)
    await again.start()
    await again.get_pod_status(steady.ref)
    assert second.of(steady.ref.uid) == []


# --- logs ---------------------------------------------------------------------------------------------


async def test_logs_tail_since_and_timestamps(make: Factory) -> None:
    provider = await make()
    prepared = pod(
        command=["sh", "-c", "for i in 1 2 3 4 5; do echo line $i; sleep 0.02; done; sleep infinity"]
    )
    await provider.create_pod(prepared)
    await running(provider, prepared.ref)

    async def read(options: LogOptions) -> list[LogEntry]:
        return [e async for e in provider.container_logs(prepared.ref, "main", options)]

    everything = await eventually(lambda: read(LogOptions()), lambda got: len(got) == 5, "five lines")
    assert [e.text for e in everything] == [f"line {i}" for i in range(1, 6)]
    assert all(e.time.tzinfo is not None for e in everything)
    assert abs((everything[0].time - datetime.datetime.now(datetime.UTC)).total_seconds()) < 60
    assert [e.text for e in await read(LogOptions(tail_lines=2))] == ["line 4", "line 5"]
    assert await read(LogOptions(tail_lines=0)) == []
    later = everything[2].time
    assert next(e.text for e in await read(LogOptions(since_time=later))) == "line 3"
    with pytest.raises(LogsUnavailable):
        await read(LogOptions(previous=True))
    with pytest.raises(KeyError):  # no such container
        [e async for e in provider.container_logs(prepared.ref, "nope", LogOptions())]
    with pytest.raises(KeyError):  # no such pod
        [e async for e in provider.container_logs(PodRef("default", "ghost", "u"), "main", LogOptions())]


async def test_logs_follow_streams_new_lines_and_ends_with_the_container(make: Factory) -> None:
    provider = await make()
    script = "echo first; sleep 0.3; for i in 1 2 3; do echo more $i; sleep 0.2; done; echo last; exit 4"
    prepared = pod(command=["sh", "-c", script], restart="Never")
    await provider.create_pod(prepared)
    await running(provider, prepared.ref)
    seen: list[str] = []
    async with asyncio.timeout(10):
        async for entry in provider.container_logs(prepared.ref, "main", LogOptions(follow=True)):
            seen.append(entry.text)
    assert seen == ["first", "more 1", "more 2", "more 3", "last"]  # each once, and it ended


async def test_logs_follow_ends_when_the_container_restarts(make: Factory) -> None:
    provider = await make()
    prepared = pod(command=["sh", "-c", "echo run $LOCALARM_RUN_INDEX; sleep 0.5; exit 1"])
    await provider.create_pod(prepared)
    await running(provider, prepared.ref)
    seen: list[str] = []
    async with asyncio.timeout(10):
        async for entry in provider.container_logs(prepared.ref, "main", LogOptions(follow=True)):
            seen.append(entry.text)
    assert seen and seen[0].startswith("run ") and len(set(seen)) == 1


# --- exec and attach ----------------------------------------------------------------------------------


class Terminal:
    """The client's side of an exec: typed input, collected output."""

    def __init__(self, typed: list[str], *, tty: bool = True, size: TerminalSize | None = None) -> None:
        self.typed = typed
        self.out = bytearray()
        self.err = bytearray()
        self.size = size
        self.prompted = asyncio.Event()

    async def stdin(self) -> AsyncIterator[bytes]:
        for text in self.typed:
            await asyncio.wait_for(self.prompted.wait(), 5)
            self.prompted.clear()
            yield text.encode()

    async def resize(self) -> AsyncIterator[TerminalSize]:
        if self.size is not None:
            yield self.size
        await asyncio.sleep(3600)

    async def write_out(self, data: bytes) -> None:
        self.out += data
        if self.out.endswith(b"# "):
            self.prompted.set()

    async def write_err(self, data: bytes) -> None:
        self.err += data

    def io(self, tty: bool = True) -> ExecIO:
        return ExecIO(
            stdin=self.stdin(), stdout=self.write_out, stderr=self.write_err, tty=tty, resize=self.resize()
        )


async def test_exec_a_shell_through_acis_websocket(localarm: LocalArm, make: Factory) -> None:
    provider = await make()
    prepared = pod(env={"GREETING": "hello"})
    await provider.create_pod(prepared)
    await running(provider, prepared.ref)
    terminal = Terminal(
        ["echo $GREETING\r", "stty size\r", "exit\r"], size=TerminalSize(width=100, height=30)
    )
    async with asyncio.timeout(10):
        code = await provider.exec_in_container(prepared.ref, "main", ["/bin/sh"], terminal.io())
    assert code is None  # ACI reports no exit code
    text = terminal.out.decode()
    assert "echo $GREETING\r\nhello\r\n" in text
    assert "30 100\r\n" in text  # the client's first terminal size
    env = Terminal([])
    async with asyncio.timeout(10):
        await provider.exec_in_container(prepared.ref, "main", ["env"], env.io(tty=False))
    assert "GREETING=hello" in env.out.decode()


async def test_exec_refuses_argv_with_arguments(localarm: LocalArm, make: Factory) -> None:
    provider = await make()
    prepared = pod()
    await provider.create_pod(prepared)
    await running(provider, prepared.ref)
    for argv in (["ls", "-l", "/"], ["echo hello"]):
        terminal = Terminal([])
        code = await provider.exec_in_container(prepared.ref, "main", argv, terminal.io(tty=False))
        assert code == 1
        assert b"ACI cannot run" in terminal.err and b"Nothing was run" in terminal.err
        assert terminal.out == b""
    assert calls(localarm, "Containers_ExecuteCommand") == 0  # never something else


async def test_exec_errors(make: Factory) -> None:
    from vk_operator.provider import ExecError

    provider = await make()
    prepared = pod(command=["sh", "-c", "exit 0"], restart="Never")
    await provider.create_pod(prepared)
    await eventually(lambda: provider.get_pod_status(prepared.ref), phase_is(PodPhase.SUCCEEDED), "ended")
    with pytest.raises(ExecError, match="ContainerNotRunning"):
        await provider.exec_in_container(prepared.ref, "main", ["/bin/sh"], Terminal([]).io())
    with pytest.raises(KeyError):
        await provider.exec_in_container(
            PodRef("default", "ghost", "u"), "main", ["/bin/sh"], Terminal([]).io()
        )


async def test_attach_streams_the_containers_output(make: Factory) -> None:
    provider = await make()
    prepared = pod(command=["sh", "-c", "sleep 0.2; while true; do echo tick; sleep 0.05; done"])
    await provider.create_pod(prepared)
    await running(provider, prepared.ref)
    got = asyncio.Event()
    out = bytearray()
    err = bytearray()

    async def write(data: bytes) -> None:
        out.extend(data)
        if b"tick\n" in out:
            got.set()

    async def write_err(data: bytes) -> None:
        err.extend(data)

    async def no_input() -> AsyncIterator[bytes]:
        await asyncio.sleep(3600)
        yield b""

    io = ExecIO(stdin=no_input(), stdout=write, stderr=write_err)
    task = asyncio.ensure_future(provider.attach_container(prepared.ref, "main", io))
    await asyncio.wait_for(got.wait(), 5)
    task.cancel()  # the client goes away; the container keeps running
    with pytest.raises(asyncio.CancelledError):
        await task
    assert b"output only" in err
    assert (await provider.get_pod_status(prepared.ref)) is not None


# --- the status read budget ---------------------------------------------------------------------------


async def test_steady_state_bulk_status_makes_no_get_per_group(localarm: LocalArm, make: Factory) -> None:
    localarm.knobs.update(throttling=False)
    provider = await make(status_poll={"calls_per_minute": 6000, "refresh_seconds": 3600})
    pods = [pod() for _ in range(50)]
    for each in pods:
        await provider.create_pod(each)
    uids = {p.ref.uid for p in pods}

    def all_running(got: dict[str, ProviderPodStatus]) -> bool:
        return set(got) == uids and all(
            s.phase is PodPhase.RUNNING and s.containers and s.containers[0].phase is ContainerPhase.RUNNING
            for s in got.values()
        )

    await eventually(provider.get_pod_statuses, all_running, "50 groups Running", timeout=20)
    localarm.calls.clear()
    for _ in range(10):
        statuses = await provider.get_pod_statuses()
        assert all_running(dict(statuses))
    assert localarm.calls["ContainerGroups_ListByResourceGroup 200"] == 10  # one page of 100 per poll
    assert calls(localarm, "ContainerGroups_Get") == 0

    provider.tracker.refresh_seconds = 0.0  # now every group is due for its slow refresh ...
    provider.get_pace = TokenBucket(0, lambda: 10.0)  # ... with room for 10 GETs
    await provider.get_pod_statuses()
    assert calls(localarm, "ContainerGroups_Get") == 10


async def test_a_running_job_is_read_at_every_poll_and_its_end_is_seen(
    localarm: LocalArm, make: Factory
) -> None:
    provider = await make(status_poll={"calls_per_minute": 6000, "refresh_seconds": 3600})
    job = pod(command=["sh", "-c", "sleep 0.6; echo done"], restart="Never")
    server = pod()
    for each in (job, server):
        await provider.create_pod(each)

    def both_running(got: dict[str, ProviderPodStatus]) -> bool:
        return all(
            uid in got
            and got[uid].phase is PodPhase.RUNNING
            and got[uid].containers[0].started_at is not None
            for uid in (job.ref.uid, server.ref.uid)
        )

    await eventually(provider.get_pod_statuses, both_running, "both Running")
    localarm.calls.clear()
    await provider.get_pod_statuses()
    assert calls(localarm, "ContainerGroups_Get") == 1  # the job's group; the server's answers from the cache
    ended = await eventually(
        provider.get_pod_statuses,
        lambda got: got[job.ref.uid].phase is PodPhase.SUCCEEDED,
        "the job's end, without waiting for the slow refresh",
    )
    assert ended[job.ref.uid].containers[0].exit_code == 0


async def test_the_budget_caps_status_reads_whatever_the_pod_count(localarm: LocalArm, make: Factory) -> None:
    localarm.knobs.update(throttling=False)
    provider = await make(status_poll={"calls_per_minute": 12})  # 6 list and 6 GET calls a minute, 3 at once
    pods = [pod() for _ in range(30)]
    for each in pods:
        await provider.create_pod(each)
    localarm.calls.clear()

    def reads() -> int:
        return calls(localarm, "ContainerGroups_ListByResourceGroup") + calls(localarm, "ContainerGroups_Get")

    first = await provider.get_pod_statuses()
    assert set(first) == {p.ref.uid for p in pods}  # every pod is reported, read or not
    assert reads() == 4  # a list and the GETs' share at once (3)
    for expected in (5, 6, 6):  # lists until their share at once (3) is spent; then the cache
        polled = await provider.get_pod_statuses()
        assert reads() == expected and set(polled) == set(first)
    assert provider.calls["status_from_cache"] == 1
    assert provider.budget.spent_last_minute() == 6


async def test_the_list_borrows_the_gets_share_unless_a_get_is_urgent(
    localarm: LocalArm, make: Factory
) -> None:
    localarm.knobs.update(throttling=False)
    provider = await make()
    server = pod()
    await provider.create_pod(server)
    await running(provider, server.ref)
    await provider.get_pod_statuses()
    provider.list_pace = TokenBucket(0, lambda: 0.0)  # the lists' share is spent ...
    provider.get_pace = TokenBucket(0, lambda: 5.0)  # ... the GETs' is not
    localarm.calls.clear()
    await provider.get_pod_statuses()  # nothing urgent to GET: the list borrows a GET's call
    assert calls(localarm, "ContainerGroups_ListByResourceGroup") == 1
    assert calls(localarm, "ContainerGroups_Get") == 0 and provider.get_pace.available() == 4
    job = pod(command=["sh", "-c", "sleep 3600"], restart="Never")
    await provider.create_pod(job)  # a running Job: its GET is urgent, the list waits for its share
    localarm.calls.clear()
    await provider.get_pod_statuses()
    assert calls(localarm, "ContainerGroups_ListByResourceGroup") == 0
    assert calls(localarm, "ContainerGroups_Get") >= 1


async def test_list_pods_answers_from_a_fresh_list_and_counts_its_own(
    localarm: LocalArm, make: Factory
) -> None:
    localarm.knobs.update(throttling=False)
    provider = await make(status_poll={"calls_per_minute": 60})
    pods = [pod() for _ in range(3)]
    for each in pods:
        await provider.create_pod(each)
    assert {r.uid for r in await provider.list_pods()} == {p.ref.uid for p in pods}  # the first: a list
    spent = provider.budget.spent_last_minute()
    assert spent == 1 and calls(localarm, "ContainerGroups_ListByResourceGroup") == 2  # start() + this
    await provider.get_pod_statuses()
    listed = calls(localarm, "ContainerGroups_ListByResourceGroup")
    extra = pod()
    await provider.create_pod(extra)
    refs = await provider.list_pods()  # the poll's list is fresh: no call, and what was created since
    assert {r.uid for r in refs} == {p.ref.uid for p in [*pods, extra]}
    assert calls(localarm, "ContainerGroups_ListByResourceGroup") == listed
    await provider.delete_pod(pods[0].ref)
    assert pods[0].ref.uid not in {r.uid for r in await provider.list_pods()}
    provider._listed_at = time.monotonic() - 60  # stale: a list again, in the budget
    before = provider.budget.spent_last_minute()
    assert len(await provider.list_pods()) == 3
    assert calls(localarm, "ContainerGroups_ListByResourceGroup") == listed + 1
    assert provider.budget.spent_last_minute() == before + 1


def test_token_bucket_spreads_calls_over_the_minute() -> None:
    now = [0.0]
    bucket = TokenBucket(30, lambda: 15.0, clock=lambda: now[0])  # 30 a minute, 15 at once
    assert bucket.available() == 15
    bucket.spend(15)
    assert bucket.available() == 0
    now[0] = 10.0
    assert bucket.available() == 5  # 0.5 a second
    bucket.spend(8)  # a read that had to be made: paid back first
    now[0] = 16.0
    assert bucket.available() == 0
    now[0] = 100.0
    assert bucket.available() == 15  # never more than the capacity


async def test_ping_and_capacity(localarm: LocalArm, make: Factory) -> None:
    provider = await make(cpu="100", pods="50", gpu="2")
    localarm.calls.clear()
    await provider.ping()  # ARM answered the pre-flight a moment ago: no call
    assert sum(localarm.calls.values()) == 0
    provider.gate.last_response_at = None
    await provider.ping()
    assert calls(localarm, "ContainerGroups_ListByResourceGroup") == 1
    localarm.knobs.update(quota_container_groups=20, quota_cores=1000)
    capacity = await provider.capacity()
    assert (capacity.cpu, capacity.pods, capacity.gpu, capacity.memory) == ("100", "20", "2", "4Ti")
    await provider.capacity()
    assert calls(localarm, "Location_ListUsage") == 1  # cached
    assert await provider.node_conditions() == []


# --- the pieces, without a server ----------------------------------------------------------------------


async def test_gate_spaces_calls_when_few_remain_and_pauses_after_a_429() -> None:
    now = [100.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    gate = ArmRateGate(clock=lambda: now[0], sleep=sleep, low_watermark=50, max_spacing=1.0)
    gate.observe("reads", 200, {"x-ms-ratelimit-remaining-subscription-reads": "200"})
    for _ in range(3):
        await gate.wait_turn("reads")
    assert slept == []  # plenty left: no spacing
    gate.observe("reads", 200, {"x-ms-ratelimit-remaining-subscription-reads": "25"})
    assert gate.spacing("reads") == pytest.approx(0.5)
    for _ in range(3):
        await gate.wait_turn("reads")
    assert slept == pytest.approx([0.5, 1.0])  # three calls at once: 0, 0.5 and 1.0 s from now
    await gate.wait_turn("writes")  # writes are a bucket of their own
    assert len(slept) == 2
    gate.observe("writes", 429, {"Retry-After": "7", "x-ms-ratelimit-remaining-subscription-writes": "0"})
    await gate.wait_turn("writes")
    assert slept[-1] == pytest.approx(7.0)


def test_retry_after_and_the_retry_policy() -> None:
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    assert retry_after_seconds({}) is None
    assert retry_after_seconds({"Retry-After": "soon"}) is None
    when = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=30)
    assert 25 < (retry_after_seconds({"Retry-After": when.strftime("%a, %d %b %Y %H:%M:%S GMT")}) or 0) <= 30

    class Response:
        def __init__(self, status: int, headers: dict[str, str]) -> None:
            self.status_code = status
            self.headers = headers

    policy = ArmRetryPolicy()
    settings = policy.configure_retries({})
    request = PipelineRequest(HttpRequest("GET", "http://x"), None)  # type: ignore[arg-type]

    def retried(status: int, headers: dict[str, str] | None = None) -> bool:
        return policy.is_retry(
            settings, PipelineResponse(request.http_request, Response(status, headers or {}), None)
        )  # type: ignore[arg-type]

    assert not retried(429, {"Retry-After": "1"})
    assert not retried(409, {"Retry-After": "1"})
    assert not retried(400)
    assert retried(503)
    assert not retried(503, {"Retry-After": "60"})  # the core waits, not the SDK


def test_budget_is_a_sliding_minute() -> None:
    now = [0.0]
    budget = CallBudget(3, clock=lambda: now[0])
    budget.spend(2)
    assert budget.available() == 1
    now[0] = 30.0
    budget.spend()
    assert budget.available() == 0
    now[0] = 60.5
    assert budget.available() == 2
    now[0] = 91.0
    assert budget.available() == 3 and budget.total == 3


def test_log_lines_are_parsed_and_new_lines_told_apart() -> None:
    from providers.aci.logs import NewLines, parse_logs

    now = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
    stamp = "2024-05-01T10:00:00.123456789Z"
    content = f"{stamp} hello\n{stamp} hello\nno stamp\r\n2024-05-01T10:00:01+02:00 bye\n"
    entries = parse_logs(content, now)
    assert [e.text for e in entries] == ["hello", "hello", "no stamp", "bye"]
    assert entries[0].time == datetime.datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=datetime.UTC)
    assert entries[2].time == entries[1].time  # a line without a stamp keeps the order
    assert entries[3].time.utcoffset() == datetime.timedelta(hours=2)
    assert parse_logs("plain\n", now) == [LogEntry(now, "plain")]

    seen = NewLines()
    first = parse_logs(f"{stamp} a\n{stamp} a\n", now)
    assert seen.take(first) == first
    assert seen.take(first) == []  # nothing new
    third = parse_logs(f"{stamp} a\n{stamp} a\n{stamp} a\n{stamp} b\n", now)
    assert [e.text for e in seen.take(third)] == ["a", "b"]  # the third "a" of that instant is new
    later = parse_logs("2024-05-01T10:00:05Z c\n", now)
    assert not seen.overlaps(later)  # all newer than what was seen: lines may be missing (or a new run)
