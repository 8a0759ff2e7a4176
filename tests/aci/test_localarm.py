"""The local ARM server through the real Azure SDK (and raw HTTP where the SDK would hide things)."""

from __future__ import annotations

import asyncio
import fnmatch
import json
import re
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.containerinstance.aio import ContainerInstanceManagementClient
from azure.mgmt.containerinstance.models import ContainerExecRequest, ContainerExecRequestTerminalSize

from providers.aci.localarm import (
    LocalArm,
    example_names,
    load_example,
    request_body_from_response,
    shape_differences,
)
from providers.aci.localarm.server import ArmResponse

from .conftest import LOCATION, RESOURCE_GROUP, SUBSCRIPTION, make_client

API = "api-version=2023-05-01"


def container(
    name: str = "app",
    image: str = "busybox:1.36",
    command: list[str] | None = None,
    env: dict[str, str] | None = None,
    cpu: float = 1.0,
    memory: float = 1.5,
) -> dict[str, Any]:
    props: dict[str, Any] = {"image": image, "resources": {"requests": {"cpu": cpu, "memoryInGB": memory}}}
    if command is not None:
        props["command"] = command
    if env:
        props["environmentVariables"] = [{"name": k, "value": v} for k, v in env.items()]
    return {"name": name, "properties": props}


def group(*containers: dict[str, Any], restart_policy: str = "Always", **props: Any) -> dict[str, Any]:
    return {
        "location": LOCATION,
        "tags": {"vk-node": "test-node"},
        "properties": {
            "osType": "Linux",
            "restartPolicy": restart_policy,
            "containers": list(containers) or [container()],
            **props,
        },
    }


def group_url(arm: LocalArm, name: str, rg: str = RESOURCE_GROUP, sub: str = SUBSCRIPTION) -> str:
    return (
        f"{arm.base_url}/subscriptions/{sub}/resourceGroups/{rg}/providers/"
        f"Microsoft.ContainerInstance/containerGroups/{name}"
    )


def recorder() -> tuple[list[tuple[int, dict[str, str], str]], Callable[[Any], None]]:
    seen: list[tuple[int, dict[str, str], str]] = []

    def hook(pipeline_response: Any) -> None:
        http = pipeline_response.http_response
        seen.append((http.status_code, dict(http.headers), http.text()))

    return seen, hook


async def create(client: ContainerInstanceManagementClient, name: str, body: dict[str, Any]) -> Any:
    poller = await client.container_groups.begin_create_or_update(RESOURCE_GROUP, name, body)
    return await poller.result()


async def get_raw(arm: LocalArm, name: str) -> dict[str, Any]:
    body = arm.group_body(SUBSCRIPTION, RESOURCE_GROUP, name)
    assert body is not None
    return body


# ---------------------------------------------------------------------------------------------
# The spec's stored examples, replayed through the SDK


def _deterministic(path: str) -> bool:
    varying = (
        "location",  # ARM normalises "west us" / "WestUs" to "westus"
        "properties/provisioningState",
        "properties/ipAddress/ip",
        "properties/ipAddress/fqdn",  # the example's "<label>.azure-container.io" is not ACI's form
        "*instanceView*",
    )
    return not any(fnmatch.fnmatchcase(path, p) for p in varying)


# Differences between our answers and the stored create example, each a finding about the example:
CREATE_EXAMPLE_DIFFERENCES = {
    # The example puts "zones" among the parameters, beside the body, so no client sends it.
    "missing zones",
    # The example asks for identities and subnets, but its responses show neither.
    "extra identity",
    "extra properties/subnetIds",
    # We show the simulated instance view; the example has none.
    "extra properties/instanceView",
    "extra properties/containers/0/properties/instanceView",
}
CREATE_EXAMPLE_200_ONLY = {
    # The 200 body keeps only workspaceId of the log analytics settings; logType and metadata are
    # not secrets (workspaceKey and workspaceResourceId are, and we drop them as the example does).
    "extra properties/diagnostics/logAnalytics/logType",
    "extra properties/diagnostics/logAnalytics/metadata",
}
CREATE_EXAMPLE_201_ONLY = {
    # The 201 body drops diagnostics and dnsConfig's searchDomains/options that its own request set
    # (the 200 body keeps diagnostics without the secret key, as we do).
    "extra properties/diagnostics",
    "extra properties/dnsConfig/searchDomains",
    "extra properties/dnsConfig/options",
}


async def test_examples_replay_through_the_sdk(localarm: LocalArm) -> None:
    covered: list[str] = []
    for op, name in localarm.spec.iter_examples():
        example = load_example(name)
        params, responses = example["parameters"], example["responses"]
        localarm.groups.clear()
        rg, cg = params["resourceGroupName"], params.get("containerGroupName")
        seen, hook = recorder()
        async with make_client(localarm, params["subscriptionId"]) as client:
            if op.operation_id == "ContainerGroups_CreateOrUpdate":
                body = params["containerGroup"]
                poller = await client.container_groups.begin_create_or_update(
                    rg, cg, body, raw_response_hook=hook
                )
                status, headers, text = seen[0]
                assert status == 201 and "Azure-AsyncOperation" in headers
                diffs = shape_differences(
                    responses["201"]["body"], json.loads(text), compare_values=_deterministic
                )
                assert set(diffs) == CREATE_EXAMPLE_DIFFERENCES | CREATE_EXAMPLE_201_ONLY
                result = await poller.result()
                assert result.provisioning_state == "Succeeded"
                seen.clear()
                poller = await client.container_groups.begin_create_or_update(
                    rg, cg, body, raw_response_hook=hook
                )
                status, _, text = seen[0]
                assert status == 200
                diffs = shape_differences(
                    responses["200"]["body"], json.loads(text), compare_values=_deterministic
                )
                assert set(diffs) == CREATE_EXAMPLE_DIFFERENCES | CREATE_EXAMPLE_200_ONLY
                await poller.result()
            elif op.operation_id == "ContainerGroups_Get":
                expected = responses["200"]["body"]
                localarm.seed_example(name)
                got = await client.container_groups.get(rg, cg, raw_response_hook=hook)
                assert json.loads(seen[-1][2]) == expected  # seeded groups are served as stored
                assert got.provisioning_state == expected["properties"]["provisioningState"]
                # The simulation, fed with what a client could PUT to get this group, answers the same
                # shape: the Failed example is a failed Azure Files mount, which "denied" in the
                # storage account's name simulates.
                localarm.groups.clear()
                body = request_body_from_response(expected)
                failed = expected["properties"]["provisioningState"] == "Failed"
                if failed:
                    body["properties"]["volumes"][0]["azureFile"]["storageAccountName"] = "denied-storage"
                put = await client.container_groups.begin_create_or_update(rg, cg, body)
                if failed:
                    with pytest.raises(HttpResponseError):
                        await put.result()
                else:
                    await put.result()
                localarm.clock.advance(5)
                await client.container_groups.get(rg, cg, raw_response_hook=hook)
                ours = json.loads(seen[-1][2])
                diffs = shape_differences(expected, ours, compare_values=_deterministic)
                if failed:
                    assert diffs == [
                        "value properties/volumes/0/azureFile/storageAccountName: expected 'storage1', "
                        "got 'denied-storage'"
                    ]
                    assert ours["properties"]["instanceView"] == {
                        "events": [
                            {
                                **expected["properties"]["instanceView"]["events"][0],
                                **{
                                    k: ours["properties"]["instanceView"]["events"][0][k]
                                    for k in ("firstTimestamp", "lastTimestamp")
                                },
                            }
                        ],
                        "state": "Pending",
                    }
                else:
                    assert set(diffs) == {
                        "extra properties/instanceView",
                        "extra properties/containers/0/properties/instanceView",
                    }
            elif op.operation_id == "ContainerGroups_ListByResourceGroup":
                localarm.seed_example("ContainerGroupsGet_Succeeded.json")
                pages = [
                    g
                    async for g in client.container_groups.list_by_resource_group(rg, raw_response_hook=hook)
                ]
                assert [g.name for g in pages] == ["demo1"]
                assert json.loads(seen[-1][2]) == responses["200"]["body"]
            elif op.operation_id == "ContainerGroups_Delete":
                localarm.seed_example("ContainerGroupsGet_Succeeded.json")
                poller = await client.container_groups.begin_delete(rg, cg, raw_response_hook=hook)
                status, headers, text = seen[0]
                assert status == 202 and text == ""
                assert {k.lower() for k in responses["202"]["headers"]} <= {k.lower() for k in headers}
                # SDK quirk: begin_delete deserializes the final operation-status body as a
                # ContainerGroup (its name is the operation id), since the spec's 200 is one.
                operation_id = headers["Azure-AsyncOperation"].split("?")[0].rsplit("/", 1)[1]
                assert (await poller.result()).name == operation_id
                seen.clear()
                poller = await client.container_groups.begin_delete(rg, cg, raw_response_hook=hook)
                assert seen[0][0] == 204
                assert await poller.result() is None
            elif op.operation_id in ("Containers_ListLogs", "Containers_ExecuteCommand"):
                target = params["containerName"]
                await (
                    await client.container_groups.begin_create_or_update(
                        rg,
                        cg,
                        {**group(container(target, command=["/bin/sh", "-c", "echo hello; sleep 3600"]))},
                    )
                ).result()
                if op.operation_id == "Containers_ListLogs":
                    logs = await client.containers.list_logs(
                        rg, cg, target, tail=params["tail"], raw_response_hook=hook
                    )
                    assert logs.content == "hello\n"
                else:
                    response = await client.containers.execute_command(
                        rg, cg, target, params["containerExecRequest"], raw_response_hook=hook
                    )
                    assert response.web_socket_uri.startswith("ws://")  # the example's is wss://
                assert shape_differences(responses["200"]["body"], json.loads(seen[-1][2])) == []
            else:  # pragma: no cover - a new stored example needs a replay here
                pytest.fail(f"no replay for {name} ({op.operation_id})")
        covered.append(name)
    assert sorted(covered) == example_names()


async def test_seeded_examples_for_the_provider(
    localarm: LocalArm, aci_client: ContainerInstanceManagementClient
) -> None:
    ok = localarm.seed_example(
        "ContainerGroupsGet_Succeeded.json",
        subscription_id=SUBSCRIPTION,
        resource_group=RESOURCE_GROUP,
        name="ok-group",
        tags={"NodeName": "vk-aci"},
    )
    localarm.seed_example(
        "ContainerGroupsGet_Failed.json",
        subscription_id=SUBSCRIPTION,
        resource_group=RESOURCE_GROUP,
        name="bad-group",
    )
    assert ok.endswith(
        "/resourceGroups/vk-test/providers/Microsoft.ContainerInstance/containerGroups/ok-group"
    )
    failed = await aci_client.container_groups.get(RESOURCE_GROUP, "bad-group")
    assert failed.provisioning_state == "Failed"
    assert failed.instance_view.state == "Pending"
    assert [e.name for e in failed.instance_view.events] == ["FailedMount"]
    assert failed.containers[0].instance_view.current_state.state == "Waiting"
    listed = {g.name: g async for g in aci_client.container_groups.list_by_resource_group(RESOURCE_GROUP)}
    assert set(listed) == {"ok-group", "bad-group"}
    assert listed["ok-group"].tags == {"NodeName": "vk-aci"}
    assert listed["bad-group"].instance_view is None  # lists carry no instance view


# ---------------------------------------------------------------------------------------------
# Long-running operations through the SDK's pollers


async def test_create_and_delete_through_the_pollers(
    localarm: LocalArm, aci_client: ContainerInstanceManagementClient
) -> None:
    localarm.knobs.pull_seconds = 0.15  # (polling_interval=0 polls ~800/s: stay inside the read burst)
    seen, hook = recorder()
    body = group(
        ipAddress={"type": "Public", "ports": [{"port": 80, "protocol": "TCP"}], "dnsNameLabel": "lro"}
    )
    poller = await aci_client.container_groups.begin_create_or_update(
        RESOURCE_GROUP, "lro", body, raw_response_hook=hook
    )
    status, headers, text = seen[0]
    assert status == 201
    assert json.loads(text)["properties"]["provisioningState"] == "Creating"
    assert re.fullmatch(
        rf"{localarm.base_url}/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/"
        r"Microsoft.ContainerInstance/locations/westus/operations/[0-9a-f-]+\?api-version=2023-05-01",
        headers["Azure-AsyncOperation"],
    )
    result = await poller.result()
    assert result.provisioning_state == "Succeeded"
    assert result.instance_view.state == "Running"
    assert result.ip_address.ip.startswith("20.")
    assert result.ip_address.fqdn == "lro.westus.azurecontainer.io"
    assert localarm.calls["LocalArm_GetOperationStatus 200"] >= 2  # polled while InProgress
    assert result.tags == {"vk-node": "test-node"}

    delete = await aci_client.container_groups.begin_delete(RESOURCE_GROUP, "lro")
    during = await get_raw(localarm, "lro")
    assert during["properties"]["provisioningState"] == "Deleting"
    await delete.result()
    with pytest.raises(ResourceNotFoundError) as missing:
        await aci_client.container_groups.get(RESOURCE_GROUP, "lro")
    assert missing.value.error is not None and missing.value.error.code == "ResourceNotFound"
    assert localarm.calls["ContainerGroups_Delete 202"] == 1


async def test_failed_provisioning_fails_the_poller(aci_client: ContainerInstanceManagementClient) -> None:
    poller = await aci_client.container_groups.begin_create_or_update(
        RESOURCE_GROUP, "pull", group(container(image="registry.example/pullfail:1"))
    )
    with pytest.raises(HttpResponseError) as failed:
        await poller.result()
    assert failed.value.error is not None and failed.value.error.code == "ResourceDeploymentFailure"
    got = await aci_client.container_groups.get(RESOURCE_GROUP, "pull")
    assert got.provisioning_state == "Failed"
    assert got.instance_view.state == "Pending"  # as in the spec's Failed example
    view = got.containers[0].instance_view
    assert view.current_state.state == "Waiting" and view.current_state.detail_status == "ErrImagePull"
    assert [(e.name, e.type) for e in view.events] == [("Pulling", "Normal"), ("Failed", "Warning")]


async def test_synchronous_aci_errors(
    localarm: LocalArm, aci_client: ContainerInstanceManagementClient
) -> None:
    cases = [
        (group(container(image="example.com/inaccessible/app:1")), 400, "InaccessibleImage"),
        (group(container(name="Bad_Name")), 400, "InvalidContainerName"),
        (group(container(cpu=8)), 409, "ServiceUnavailable"),
        ({k: v for k, v in group().items() if k != "location"}, 400, "LocationRequired"),
    ]
    for body, status, code in cases:
        with pytest.raises(HttpResponseError) as err:
            await aci_client.container_groups.begin_create_or_update(RESOURCE_GROUP, "semantic", body)
        assert (err.value.status_code, err.value.error.code) == (status, code)  # type: ignore[union-attr]
    with pytest.raises(HttpResponseError) as err:
        await aci_client.container_groups.begin_create_or_update(RESOURCE_GROUP, "UPPER", group())
    assert err.value.error is not None and err.value.error.code == "InvalidContainerGroupName"
    limits = container()
    limits["properties"]["resources"]["limits"] = {"cpu": 2.0}
    with pytest.raises(HttpResponseError) as err:
        await aci_client.container_groups.begin_create_or_update(RESOURCE_GROUP, "limits", group(limits))
    assert (
        err.value.error is not None
        and err.value.error.code == "ContainerLimitGreaterThanContainerGroupTotalRequest"
    )


async def test_quota_and_usage(localarm: LocalArm, aci_client: ContainerInstanceManagementClient) -> None:
    localarm.knobs.quota_cores = 2
    await create(aci_client, "q1", group())
    await create(aci_client, "q2", group())
    with pytest.raises(HttpResponseError) as err:
        await aci_client.container_groups.begin_create_or_update(RESOURCE_GROUP, "q3", group())
    assert err.value.status_code == 409
    assert err.value.error is not None and err.value.error.code == "ContainerGroupQuotaReached"
    assert "Limit: '2', Usage: '2' Requested: '1'" in err.value.error.message
    usage = {u.name.value: u async for u in aci_client.location.list_usage(LOCATION)}
    assert (usage["StandardCores"].current_value, usage["StandardCores"].limit) == (2, 2)
    assert usage["ContainerGroups"].current_value == 2
    await aci_client.container_groups.stop(RESOURCE_GROUP, "q1")  # stopped groups free their quota
    await create(aci_client, "q3", group())
    # Updating a group in place does not count it twice.
    await create(aci_client, "q3", {**group(), "tags": {"changed": "yes"}})


# ---------------------------------------------------------------------------------------------
# The simulation: lifecycle, restarts, events


async def test_lifecycle_with_exit_code_and_never(
    localarm: LocalArm, aci_client: ContainerInstanceManagementClient
) -> None:
    localarm.knobs.pull_seconds = 30  # frozen in Pending until the test moves the clock
    body = group(
        container(command=["/bin/sh", "-c", "echo starting; sleep 10; exit 3"]), restart_policy="Never"
    )
    await aci_client.container_groups.begin_create_or_update(RESOURCE_GROUP, "job", body)
    pending = await aci_client.container_groups.get(RESOURCE_GROUP, "job")
    assert (pending.provisioning_state, pending.instance_view.state) == ("Creating", "Pending")
    assert pending.containers[0].instance_view.current_state.state == "Waiting"
    assert [e.name for e in pending.containers[0].instance_view.events] == ["Pulling"]

    localarm.clock.advance(31)
    running = await aci_client.container_groups.get(RESOURCE_GROUP, "job")
    assert (running.provisioning_state, running.instance_view.state) == ("Succeeded", "Running")
    view = running.containers[0].instance_view
    assert view.current_state.state == "Running" and view.restart_count == 0
    assert [e.name for e in view.events] == ["Pulling", "Pulled", "Started"]
    pulled, started = view.events[1], view.events[2]
    assert pulled.first_timestamp <= started.first_timestamp == view.current_state.start_time

    localarm.clock.advance(10)
    done = await aci_client.container_groups.get(RESOURCE_GROUP, "job")
    state = done.containers[0].instance_view.current_state
    assert (state.state, state.exit_code, state.detail_status) == ("Terminated", 3, "Error")
    assert abs((state.finish_time - state.start_time).total_seconds() - 10) < 0.01
    assert done.instance_view.state == "Failed" and done.provisioning_state == "Succeeded"
    assert done.containers[0].instance_view.previous_state is None


async def test_restart_policies(localarm: LocalArm, aci_client: ContainerInstanceManagementClient) -> None:
    flaky = container(
        env={"LOCALARM_FAIL_TIMES": "2", "LOCALARM_EXIT_CODE": "7", "LOCALARM_RUN_SECONDS": "1"}
    )
    await aci_client.container_groups.begin_create_or_update(
        RESOURCE_GROUP, "onfailure", group(flaky, restart_policy="OnFailure")
    )
    always = container(command=["sh", "-c", "echo run $LOCALARM_RUN_INDEX; sleep 1"])
    await aci_client.container_groups.begin_create_or_update(RESOURCE_GROUP, "always", group(always))
    localarm.clock.advance(60)

    onfailure = await aci_client.container_groups.get(RESOURCE_GROUP, "onfailure")
    view = onfailure.containers[0].instance_view
    assert view.restart_count == 2
    assert (view.current_state.state, view.current_state.exit_code) == ("Terminated", 0)
    assert (view.previous_state.state, view.previous_state.exit_code) == ("Terminated", 7)
    assert onfailure.instance_view.state == "Succeeded"
    events = {e.name: e for e in view.events}
    assert events["Started"].count == 3 and events["BackOff"].count == 2

    always_now = await aci_client.container_groups.get(RESOURCE_GROUP, "always")
    view = always_now.containers[0].instance_view
    assert always_now.instance_view.state == "Running"
    assert view.restart_count >= 5  # exits 0 every second, restarted after a short back-off
    assert view.previous_state.exit_code == 0
    assert view.current_state.state in ("Running", "Waiting")
    logs = await aci_client.containers.list_logs(RESOURCE_GROUP, "always", "app")
    assert logs.content == f"run {view.restart_count}\n" or view.current_state.state == "Waiting"


async def test_init_containers_run_first(
    localarm: LocalArm, aci_client: ContainerInstanceManagementClient
) -> None:
    init = {"name": "init", "properties": {"image": "busybox", "command": ["sh", "-c", "echo init; sleep 2"]}}
    await aci_client.container_groups.begin_create_or_update(
        RESOURCE_GROUP, "withinit", group(container(), initContainers=[init])
    )
    localarm.clock.advance(1)
    early = await aci_client.container_groups.get(RESOURCE_GROUP, "withinit")
    assert early.init_containers[0].instance_view.current_state.state == "Running"
    assert early.containers[0].instance_view.current_state.detail_status == "PodInitializing"
    assert early.provisioning_state == "Creating"
    localarm.clock.advance(2)
    later = await aci_client.container_groups.get(RESOURCE_GROUP, "withinit")
    assert later.init_containers[0].instance_view.current_state.exit_code == 0
    assert later.containers[0].instance_view.current_state.state == "Running"
    logs = await aci_client.containers.list_logs(RESOURCE_GROUP, "withinit", "init")
    assert logs.content == "init\n"


async def test_stop_start_restart(localarm: LocalArm, aci_client: ContainerInstanceManagementClient) -> None:
    await create(aci_client, "svc", group())
    await aci_client.container_groups.stop(RESOURCE_GROUP, "svc")
    stopped = await aci_client.container_groups.get(RESOURCE_GROUP, "svc")
    assert stopped.instance_view.state == "Stopped"
    assert stopped.containers[0].instance_view.current_state.detail_status == "Stopped"
    assert "Killing" in [e.name for e in stopped.containers[0].instance_view.events]
    start = await aci_client.container_groups.begin_start(RESOURCE_GROUP, "svc")
    await start.result()
    started = await aci_client.container_groups.get(RESOURCE_GROUP, "svc")
    assert started.instance_view.state == "Running"
    restart = await aci_client.container_groups.begin_restart(RESOURCE_GROUP, "svc")
    await restart.result()
    localarm.clock.advance(1)
    restarted = await aci_client.container_groups.get(RESOURCE_GROUP, "svc")
    assert restarted.instance_view.state == "Running"
    assert restarted.containers[0].instance_view.restart_count == 0


async def test_update_tags_and_containers(
    localarm: LocalArm, aci_client: ContainerInstanceManagementClient
) -> None:
    await create(aci_client, "upd", group())
    localarm.clock.advance(5)
    before = await aci_client.container_groups.get(RESOURCE_GROUP, "upd")
    patched = await aci_client.container_groups.update(RESOURCE_GROUP, "upd", {"tags": {"a": "b"}})
    assert patched.tags == {"a": "b"}
    same = await create(aci_client, "upd", {**group(), "tags": {"c": "d"}})
    assert same.tags == {"c": "d"}
    assert (
        same.containers[0].instance_view.current_state.start_time
        == before.containers[0].instance_view.current_state.start_time
    )
    changed = await create(aci_client, "upd", group(container(image="busybox:1.37")))
    assert changed.containers[0].image == "busybox:1.37"
    assert (
        changed.containers[0].instance_view.current_state.start_time
        > before.containers[0].instance_view.current_state.start_time
    )


async def test_secrets_are_not_returned(
    localarm: LocalArm, aci_client: ContainerInstanceManagementClient
) -> None:
    body = group(container(command=["sh", "-c", "echo token=$TOKEN; sleep 100"]))
    body["properties"]["containers"][0]["properties"]["environmentVariables"] = [
        {"name": "PLAIN", "value": "visible"},
        {"name": "TOKEN", "secureValue": "s3cr3t"},
    ]
    body["properties"]["imageRegistryCredentials"] = [
        {"server": "r.example", "username": "u", "password": "pw"}
    ]
    body["properties"]["volumes"] = [{"name": "s", "secret": {"key": "dmFsdWU="}}]
    got = await create(aci_client, "secret", body)
    raw = json.dumps(await get_raw(localarm, "secret"))
    assert "s3cr3t" not in raw and "dmFsdWU=" not in raw and '"pw"' not in raw
    env = {e.name: e for e in got.containers[0].environment_variables}
    assert env["PLAIN"].value == "visible" and env["TOKEN"].secure_value is None
    assert got.volumes[0].secret == {}
    logs = await aci_client.containers.list_logs(RESOURCE_GROUP, "secret", "app")
    assert logs.content == "token=s3cr3t\n"  # the container itself sees the value


# ---------------------------------------------------------------------------------------------
# Lists, logs


async def test_list_paging(localarm: LocalArm, aci_client: ContainerInstanceManagementClient) -> None:
    localarm.knobs.page_size = 2
    for i in range(5):
        await aci_client.container_groups.begin_create_or_update(RESOURCE_GROUP, f"page-{i}", group())
    await aci_client.container_groups.begin_create_or_update("other-rg", "elsewhere", group())
    names = [g.name async for g in aci_client.container_groups.list_by_resource_group(RESOURCE_GROUP)]
    assert names == [f"page-{i}" for i in range(5)]
    assert localarm.calls["ContainerGroups_ListByResourceGroup 200"] == 3
    everything = [g.name async for g in aci_client.container_groups.list()]
    assert sorted(everything) == sorted([*names, "elsewhere"])
    assert localarm.calls["ContainerGroups_List 200"] == 3
    listed = [g async for g in aci_client.container_groups.list_by_resource_group(RESOURCE_GROUP)]
    assert all(g.instance_view is None and g.containers[0].instance_view is None for g in listed)
    assert all(g.provisioning_state in ("Creating", "Succeeded") for g in listed)


async def test_logs_tail_and_timestamps(
    localarm: LocalArm, aci_client: ContainerInstanceManagementClient
) -> None:
    script = "for i in 1 2 3; do echo line $i; sleep 1; done; echo done; sleep 1000"
    await create(aci_client, "logs", group(container(command=["/bin/sh", "-c", script])))
    start = time.monotonic()
    logs = await aci_client.containers.list_logs(RESOURCE_GROUP, "logs", "app")
    if time.monotonic() - start < 0.5:
        assert logs.content == "line 1\n"
    localarm.clock.advance(1.5)
    logs = await aci_client.containers.list_logs(RESOURCE_GROUP, "logs", "app")
    assert logs.content == "line 1\nline 2\n"
    tail = await aci_client.containers.list_logs(RESOURCE_GROUP, "logs", "app", tail=1)
    assert tail.content == "line 2\n"
    stamped = await aci_client.containers.list_logs(RESOURCE_GROUP, "logs", "app", timestamps=True)
    lines = stamped.content.splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == ["line 1", "line 2"]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", line.split(" ")[0]) for line in lines)
    localarm.clock.advance(10)
    logs = await aci_client.containers.list_logs(RESOURCE_GROUP, "logs", "app")
    assert logs.content == "line 1\nline 2\nline 3\ndone\n"
    with pytest.raises(ResourceNotFoundError):
        await aci_client.containers.list_logs(RESOURCE_GROUP, "logs", "nope")


# ---------------------------------------------------------------------------------------------
# Exec and attach websockets


async def _read_until(ws: aiohttp.ClientWebSocketResponse, suffix: str, timeout: float = 5.0) -> str:
    out = ""
    async with asyncio.timeout(timeout):
        while not out.endswith(suffix):
            msg = await ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise AssertionError(f"websocket ended ({msg.type}) after {out!r}")
            out += msg.data
    return out


async def test_exec_websocket(localarm: LocalArm, aci_client: ContainerInstanceManagementClient) -> None:
    await create(aci_client, "shell", group(container(env={"GREETING": "hello world"})))
    request = ContainerExecRequest(
        command="/bin/sh", terminal_size=ContainerExecRequestTerminalSize(rows=12, cols=40)
    )
    exec_info = await aci_client.containers.execute_command(RESOURCE_GROUP, "shell", "app", request)
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(exec_info.web_socket_uri) as ws:
            await ws.send_str("not the password")
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1008
        async with http.ws_connect(exec_info.web_socket_uri) as ws:
            await ws.send_str(exec_info.password)
            assert await _read_until(ws, "# ") == "# "
            await ws.send_bytes(b"echo $GREETING\r")
            assert await _read_until(ws, "# ") == "echo $GREETING\r\nhello world\r\n# "
            await ws.send_str("stty size\r")
            assert await _read_until(ws, "# ") == "stty size\r\n12 40\r\n# "
            await ws.send_str("hostname; false || echo status=$?\r")
            assert (await _read_until(ws, "# ")).endswith("shell\r\nstatus=1\r\n# ")
            await ws.send_str("sleep 100\r")
            await _read_until(ws, "sleep 100\r\n")
            await ws.send_str("\x03")  # Ctrl-C interrupts the sleep
            assert await _read_until(ws, "# ") == "^C\r\n# "
            await ws.send_str("exit 3\r")
            await _read_until(ws, "\r\n")
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1000
        with pytest.raises(aiohttp.WSServerHandshakeError):  # a password is good once
            await http.ws_connect(exec_info.web_socket_uri)

        # ACI runs one executable without arguments; anything else fails on the stream.
        one_shot = await aci_client.containers.execute_command(
            RESOURCE_GROUP, "shell", "app", ContainerExecRequest(command="echo hello")
        )
        async with http.ws_connect(one_shot.web_socket_uri) as ws:
            await ws.send_str(one_shot.password)
            text = await _read_until(ws, "\r\n")
            assert 'exec: "echo hello": executable file not found in $PATH' in text
            assert (await ws.receive()).type == aiohttp.WSMsgType.CLOSE
        env = await aci_client.containers.execute_command(
            RESOURCE_GROUP, "shell", "app", ContainerExecRequest(command="env")
        )
        async with http.ws_connect(env.web_socket_uri) as ws:
            await ws.send_str(env.password)
            text = await _read_until(ws, "GREETING=hello world\r\nHOSTNAME=shell\r\n")
            assert (await ws.receive()).type == aiohttp.WSMsgType.CLOSE


async def test_attach_websocket(localarm: LocalArm, aci_client: ContainerInstanceManagementClient) -> None:
    await create(aci_client, "talker", group(container(env={"LOCALARM_LOG_EVERY": "0.05"})))
    attach = await aci_client.containers.attach(RESOURCE_GROUP, "talker", "app")
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as denied:
            await http.ws_connect(attach.web_socket_uri, headers={"Authorization": "wrong"})
        assert denied.value.status == 401
        async with http.ws_connect(attach.web_socket_uri, headers={"Authorization": attach.password}) as ws:
            text = await _read_until(ws, "\n")
            assert re.fullmatch(r"localarm: tick \d+\n", text)
    await aci_client.container_groups.stop(RESOURCE_GROUP, "talker")
    with pytest.raises(HttpResponseError) as err:
        await aci_client.containers.attach(RESOURCE_GROUP, "talker", "app")
    assert err.value.error is not None and err.value.error.code == "ContainerNotRunning"


# ---------------------------------------------------------------------------------------------
# Throttling


async def test_throttling_headers_and_429(localarm: LocalArm) -> None:
    localarm.knobs.update(reads_per_second=0.5, reads_burst=2, writes_per_second=0.5, writes_burst=1)
    url = group_url(localarm, "nothing") + "?" + API
    async with aiohttp.ClientSession() as http:
        answers = []
        for _ in range(3):
            async with http.get(url) as resp:
                answers.append((resp.status, dict(resp.headers), await resp.json()))
        assert [a[0] for a in answers] == [404, 404, 429]
        assert [a[1]["x-ms-ratelimit-remaining-subscription-reads"] for a in answers] == ["1", "0", "0"]
        assert answers[2][1]["Retry-After"] == "2"
        assert answers[2][2]["error"]["code"] == "SubscriptionRequestsThrottled"
        async with http.put(url, json=group()) as resp:  # writes have their own bucket
            assert resp.status == 201
            assert resp.headers["x-ms-ratelimit-remaining-subscription-writes"] == "0"
            assert "x-ms-ratelimit-remaining-subscription-reads" not in resp.headers
        async with http.delete(url) as resp:
            assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
    assert localarm.throttler.throttled == {"read": 1, "write": 1}


async def test_sdk_retry_policy_rides_out_throttling(
    localarm: LocalArm, aci_client: ContainerInstanceManagementClient
) -> None:
    await create(aci_client, "busy", group())
    localarm.throttler.reset()
    localarm.calls.clear()
    localarm.knobs.update(reads_per_second=1.0, reads_burst=1)
    started = time.monotonic()
    for _ in range(2):
        got = await aci_client.container_groups.get(RESOURCE_GROUP, "busy")
        assert got.name == "busy"
    assert localarm.calls["ContainerGroups_Get 429"] >= 1
    assert localarm.calls["ContainerGroups_Get 200"] == 2
    assert time.monotonic() - started >= 0.9  # waited for Retry-After


# ---------------------------------------------------------------------------------------------
# The validator catches things, in both directions


async def test_invalid_requests_are_rejected_and_recorded(localarm: LocalArm) -> None:
    url = group_url(localarm, "invalid")
    no_containers = group()
    del no_containers["properties"]["containers"]
    wrong_type = group(container(cpu="one"))  # type: ignore[arg-type]
    undeclared = group()
    undeclared["properties"]["containers"][0]["properties"]["args"] = ["--no"]
    bad_identity = {**group(), "identity": {"type": "Bogus"}}
    async with aiohttp.ClientSession() as http:
        for body, fragment in [
            (no_containers, "'containers' is a required property"),
            (wrong_type, "'one' is not of type 'number'"),
            (undeclared, "('args' was unexpected)"),
            (bad_identity, "'Bogus' is not one of"),
        ]:
            async with http.put(f"{url}?{API}", json=body) as resp:
                assert resp.status == 400
                assert (await resp.json())["error"]["code"] == "InvalidRequestContent"
            failures = localarm.take_validation_failures()
            assert len(failures) == 1 and fragment in failures[0], failures
        async with http.put(
            f"{url}?{API}", data="{not json", headers={"Content-Type": "application/json"}
        ) as resp:
            assert resp.status == 400
        assert "not JSON" in localarm.take_validation_failures()[0]
        for query, code in [
            ("api-version=2021-10-01", "NoRegisteredProviderFound"),
            ("api-version=latest", "InvalidApiVersionParameter"),
            ("", "MissingApiVersionParameter"),
        ]:
            async with http.get(f"{url}?{query}") as resp:
                assert resp.status == 400 and (await resp.json())["error"]["code"] == code
            assert len(localarm.take_validation_failures()) == 1
        async with http.get(f"{url}/logs?{API}&tail=ten") as resp:
            assert resp.status in (400, 404)
        localarm.take_validation_failures()
        async with http.get(f"{url}?{API}&$expand=all") as resp:
            assert resp.status == 400
        assert "'$expand' is not declared" in localarm.take_validation_failures()[0]
        async with http.post(f"{url}/explode?{API}") as resp:
            assert resp.status == 404
        assert "matches no operation" in localarm.take_validation_failures()[0]
        async with http.patch(f"{url}/restart?{API}") as resp:
            assert resp.status == 405
        assert "not declared for this path" in localarm.take_validation_failures()[0]
        # Read-only properties are ignored, as ARM does, not rejected.
        body = group()
        body["properties"]["provisioningState"] = "Succeeded"
        body["properties"]["instanceView"] = {"state": "Whatever"}
        body["properties"]["restartPolicy"] = "OnTuesdays"  # x-ms-enum modelAsString: any string
        async with http.put(f"{url}?{API}", json=body) as resp:
            assert resp.status == 201
            answered = await resp.json()
        assert answered["properties"]["provisioningState"] == "Creating"
        assert answered["properties"]["instanceView"]["state"] == "Pending"
    assert localarm.validation_failures == []


async def test_broken_responses_are_caught(localarm: LocalArm, monkeypatch: pytest.MonkeyPatch) -> None:
    async with aiohttp.ClientSession() as http:
        url = group_url(localarm, "broken")
        async with http.put(f"{url}?{API}", json=group()) as resp:
            assert resp.status == 201
        real_render = localarm.render

        def bad_render(*args: Any, **kwargs: Any) -> dict[str, Any]:
            body = real_render(*args, **kwargs)
            body["properties"]["containers"][0]["properties"]["instanceView"]["restartCount"] = "many"
            body["properties"]["sparkles"] = True
            return body

        monkeypatch.setattr(localarm, "render", bad_render)
        async with http.get(f"{url}?{API}") as resp:
            assert resp.status == 500
            assert (await resp.json())["error"]["code"] == "InternalServerError"
        failures = localarm.take_validation_failures()
        assert any("restartCount: 'many' is not of type 'integer'" in f for f in failures), failures
        assert any("('sparkles' was unexpected)" in f for f in failures), failures
        assert all(f.startswith("response 200 to GET") for f in failures)
        monkeypatch.undo()

        async def undeclared_status(request: Any) -> ArmResponse:
            return ArmResponse(202, None)

        monkeypatch.setitem(localarm._handlers, "ContainerGroups_Get", undeclared_status)
        async with http.get(f"{url}?{API}") as resp:
            assert resp.status == 500
        assert localarm.take_validation_failures() == [
            f"response 202 to GET /subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/"
            f"Microsoft.ContainerInstance/containerGroups/broken?{API} (ContainerGroups_Get): "
            "status 202 is not declared by ContainerGroups_Get"
        ]


async def test_injected_faults(localarm: LocalArm, aci_client: ContainerInstanceManagementClient) -> None:
    localarm.inject_fault(
        "ContainerGroups_CreateOrUpdate", 409, "Conflict", "Another operation is in progress."
    )
    with pytest.raises(HttpResponseError) as err:
        await aci_client.container_groups.begin_create_or_update(RESOURCE_GROUP, "faulty", group())
    assert err.value.status_code == 409
    await create(aci_client, "faulty", group())  # the fault was for one call


async def test_fully_populated_sdk_models_validate(
    localarm: LocalArm, aci_client: ContainerInstanceManagementClient
) -> None:
    """Every model field the SDK can send for a group is accepted by the spec (the fixture checks)."""
    from azure.mgmt.containerinstance import models as m

    probe = m.ContainerProbe(
        http_get=m.ContainerHttpGet(
            path="/healthz", port=8080, scheme="http", http_headers=[m.HttpHeader(name="X-Probe", value="1")]
        ),
        initial_delay_seconds=1,
        period_seconds=5,
        failure_threshold=3,
        success_threshold=1,
        timeout_seconds=2,
    )
    app = m.Container(
        name="app",
        image="registry.example/app:1",
        command=["/bin/sh", "-c", "sleep 3600"],
        ports=[m.ContainerPort(port=8080, protocol="TCP")],
        environment_variables=[
            m.EnvironmentVariable(name="A", value="1"),
            m.EnvironmentVariable(name="S", secure_value="x"),
        ],
        resources=m.ResourceRequirements(
            requests=m.ResourceRequests(memory_in_gb=1.5, cpu=1.0, gpu=m.GpuResource(count=1, sku="V100")),
            limits=m.ResourceLimits(memory_in_gb=1.5, cpu=1.0),
        ),
        volume_mounts=[
            m.VolumeMount(name=n, mount_path=f"/mnt/{n}", read_only=n == "cfg")
            for n in ("cfg", "tmp", "files", "repo")
        ],
        liveness_probe=probe,
        readiness_probe=m.ContainerProbe(exec_property=m.ContainerExec(command=["cat", "/tmp/ready"])),
        security_context=m.SecurityContextDefinition(
            privileged=False,
            allow_privilege_escalation=False,
            capabilities=m.SecurityContextCapabilitiesDefinition(add=["NET_ADMIN"], drop=["ALL"]),
            run_as_group=1000,
            run_as_user=1000,
            seccomp_profile="e30=",
        ),
    )
    body = m.ContainerGroup(
        location="West US",
        tags={"NodeName": "vk"},
        zones=["1"],
        identity=m.ContainerGroupIdentity(
            type="UserAssigned",
            user_assigned_identities={"/subscriptions/s/rg/id": m.UserAssignedIdentities()},
        ),
        containers=[app],
        init_containers=[
            m.InitContainerDefinition(
                name="init",
                image="busybox",
                command=["sh", "-c", "true"],
                environment_variables=[m.EnvironmentVariable(name="B", value="2")],
                volume_mounts=[m.VolumeMount(name="tmp", mount_path="/tmp")],
                security_context=m.SecurityContextDefinition(run_as_user=0),
            )
        ],
        image_registry_credentials=[
            m.ImageRegistryCredential(server="registry.example", username="u", password="p"),
            m.ImageRegistryCredential(server="acr.example", identity="/id", identity_url="https://id"),
        ],
        restart_policy="OnFailure",
        ip_address=m.IpAddress(
            ports=[m.Port(port=8080, protocol="TCP")],
            type="Public",
            dns_name_label="full",
            auto_generated_domain_name_label_scope="TenantReuse",
        ),
        os_type="Linux",
        volumes=[
            m.Volume(name="cfg", secret={"key": "dmFsdWU="}),
            m.Volume(name="tmp", empty_dir={}),
            m.Volume(
                name="files",
                azure_file=m.AzureFileVolume(
                    share_name="s", storage_account_name="a", storage_account_key="k", read_only=True
                ),
            ),
            m.Volume(
                name="repo",
                git_repo=m.GitRepoVolume(repository="https://git.example/r", directory=".", revision="abc"),
            ),
        ],
        diagnostics=m.ContainerGroupDiagnostics(
            log_analytics=m.LogAnalytics(
                workspace_id="w", workspace_key="k", log_type="ContainerInsights", metadata={"pod-uuid": "u"}
            )
        ),
        dns_config=m.DnsConfiguration(
            name_servers=["10.0.0.10"], search_domains="default.svc.cluster.local", options="ndots:5"
        ),
        sku="Confidential",
        encryption_properties=m.EncryptionProperties(
            vault_base_url="https://kv", key_name="k", key_version="1", identity="/id"
        ),
        extensions=[
            m.DeploymentExtensionSpec(
                name="kube-proxy",
                extension_type="kube-proxy",
                version="1.0",
                settings={"a": 1},
                protected_settings={"b": 2},
            )
        ],
        confidential_compute_properties=m.ConfidentialComputeProperties(cce_policy="e30="),
        priority="Regular",
    )
    got = await create(aci_client, "full", body)
    assert got.provisioning_state == "Succeeded"
    assert got.location == "westus"
    assert got.extensions[0].protected_settings is None  # dropped like other secrets
    assert got.ip_address.fqdn == "full.westus.azurecontainer.io"
    assert got.identity.user_assigned_identities["/subscriptions/s/rg/id"].client_id
    assert [c.name async for c in aci_client.container_groups.list()] == ["full"]
    async for operation in aci_client.operations.list():
        assert operation.name.startswith("Microsoft.ContainerInstance/")
    assert [c.os_type async for c in aci_client.location.list_capabilities(LOCATION)] == ["Linux", "Windows"]
    assert [i.image async for i in aci_client.location.list_cached_images(LOCATION)]
    assert (
        await aci_client.container_groups.get_outbound_network_dependencies_endpoints(RESOURCE_GROUP, "full")
        == []
    )
    await (
        await aci_client.subnet_service_association_link.begin_delete(RESOURCE_GROUP, "vnet", "subnet")
    ).result()


async def test_delete_then_recreate_and_session_expiry(
    localarm: LocalArm, aci_client: ContainerInstanceManagementClient
) -> None:
    await create(aci_client, "again", group())
    await (await aci_client.container_groups.begin_delete(RESOURCE_GROUP, "again")).result()
    await create(aci_client, "again", group())
    first = await aci_client.container_groups.begin_delete(RESOURCE_GROUP, "again")
    await create_after_delete(localarm, aci_client, first)
    localarm.knobs.exec_session_ttl_seconds = 0
    info = await aci_client.containers.execute_command(
        RESOURCE_GROUP, "again", "app", ContainerExecRequest(command="/bin/sh")
    )
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as expired:
            await http.ws_connect(info.web_socket_uri)
        assert expired.value.status == 404


async def create_after_delete(
    localarm: LocalArm, client: ContainerInstanceManagementClient, delete: Any
) -> None:
    # A PUT while the group is still being deleted is refused; once it is gone it is a new group.
    with pytest.raises(HttpResponseError) as err:
        await client.container_groups.begin_create_or_update(RESOURCE_GROUP, "again", group())
    assert err.value.status_code == 409
    await delete.result()
    await create(client, "again", group())


async def test_admin_endpoints(localarm: LocalArm) -> None:
    base = f"{localarm.base_url}/_localarm"
    async with aiohttp.ClientSession() as http:
        async with http.patch(f"{base}/knobs", json={"reads_per_second": 3, "quota_cores": 7}) as resp:
            assert (await resp.json())["quota_cores"] == 7
        assert localarm.knobs.reads_per_second == 3
        async with http.patch(f"{base}/knobs", json={"nonsense": 1}) as resp:
            assert resp.status == 400
        async with http.post(
            f"{base}/seed", json={"example": "ContainerGroupsGet_Failed.json", "name": "seeded"}
        ) as resp:
            assert (await resp.json())["id"].endswith("/seeded")
        before = localarm.clock.now()
        async with http.post(f"{base}/clock/advance", json={"seconds": 100}) as resp:
            assert (await resp.json())["now"] >= before + 100
        async with http.post(
            f"{base}/faults", json={"operationId": "ContainerGroups_Get", "status": 503, "code": "Busy"}
        ) as resp:
            assert resp.status == 200
        url = group_url(localarm, "seeded", rg="demo", sub="subid") + "?" + API
        async with http.get(url) as resp:
            assert resp.status == 503
        async with http.get(url) as resp:
            assert resp.status == 200
        async with http.get(url.replace("?api", "?bad=1&api")) as resp:
            assert resp.status == 400
        async with http.get(f"{base}/validation-failures") as resp:
            assert len((await resp.json())["failures"]) == 1
        async with http.delete(f"{base}/validation-failures") as resp:
            assert len((await resp.json())["failures"]) == 1
        assert localarm.validation_failures == []
        async with http.get(f"{base}/stats") as resp:
            stats = await resp.json()
        assert stats["calls"]["ContainerGroups_Get 503"] == 1 and stats["groups"] == 1


async def test_command_line() -> None:
    import sys

    argv = ["-m", "providers.aci.localarm", "--port", "0", "--seed-examples", "--reads-burst", "5"]
    process = await asyncio.create_subprocess_exec(sys.executable, *argv, stdout=asyncio.subprocess.PIPE)
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        base = re.fullmatch(r"localarm listening on (http://127\.0\.0\.1:\d+)\n", line)
        assert base, line
        async with aiohttp.ClientSession() as http:
            url = (
                f"{base.group(1)}/subscriptions/subid/resourceGroups/demo/providers/"
                f"Microsoft.ContainerInstance/containerGroups?{API}"
            )
            async with http.get(url) as resp:
                assert resp.status == 200
                assert resp.headers["x-ms-ratelimit-remaining-subscription-reads"] == "4"
                assert sorted(g["name"] for g in (await resp.json())["value"]) == ["demo1", "demo1-failed"]
    finally:
        process.terminate()
        assert await asyncio.wait_for(process.wait(), 30) == 0
