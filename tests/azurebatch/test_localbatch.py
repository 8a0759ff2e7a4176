"""The local Batch service on its own: shared-key verification, spec validation both ways, the stored
examples replayed, the task simulation, files, ranged reads, OData and throttling.

Requests go through the real SDK (``azure-batch`` 15.1: its own shared-key signer, serializers and
paging); raw requests use the SDK's ``send_request``, so they are signed by the SDK too. Simulated
time is driven with the service's clock (``clock.advance``) where a test needs to see each state:
no test depends on how fast this machine is.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from azure.batch import models
from azure.batch.aio import BatchClient
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.core.rest import HttpRequest

from providers.azurebatch.localbatch import DEFAULT_ACCOUNT, DEFAULT_KEY, LocalBatch, auth, serve
from providers.azurebatch.localbatch.server import BatchResponse
from providers.azurebatch.localbatch.spec import API_VERSION, example_names, load_example

from .conftest import POOL

SLOW = {"schedule_seconds": 1000.0, "prepare_seconds": 1000.0, "delete_seconds": 1000.0}


def task(task_id: str, **env: str) -> models.BatchTaskCreateOptions:
    return models.BatchTaskCreateOptions(
        id=task_id,
        command_line="sleep 1",
        container_settings=models.BatchTaskContainerSettings(image_name="busybox:1.36"),
        environment_settings=[models.EnvironmentSetting(name=k, value=v) for k, v in env.items()],
    )


async def make_job(client: BatchClient, job_id: str = "job1", pool: str = POOL) -> None:
    await client.create_job(
        models.BatchJobCreateOptions(id=job_id, pool_info=models.BatchPoolInfo(pool_id=pool))
    )


async def state_of(client: BatchClient, job_id: str, task_id: str) -> str:
    found = await client.get_task(job_id, task_id)
    return str(found.state.value if found.state else "")


def client_for(batch: LocalBatch, key: str = DEFAULT_KEY, **kwargs: Any) -> BatchClient:
    assert batch.base_url is not None
    return BatchClient(batch.base_url, AzureNamedKeyCredential(DEFAULT_ACCOUNT, key), **kwargs)


# -- shared key ------------------------------------------------------------------------------------
async def test_the_sdks_signature_is_accepted_and_a_wrong_key_gets_403(localbatch: LocalBatch) -> None:
    async with client_for(localbatch) as client:
        pool = await client.get_pool(POOL)
        assert pool.id == POOL
    wrong = base64.b64encode(b"another-key-another-key-another-").decode()
    async with client_for(localbatch, wrong, retry_total=0) as client:
        with pytest.raises(HttpResponseError) as caught:
            await client.get_pool(POOL)
    assert caught.value.status_code == 403
    assert caught.value.error is not None and caught.value.error.code == "AuthenticationFailed"


async def test_a_signature_for_another_request_or_a_stale_date_is_refused(localbatch: LocalBatch) -> None:
    """Signing is checked against what arrives: the path, the query, ocp- headers and the date."""
    now = dt.datetime.now(dt.UTC)
    headers = {"ocp-date": email.utils.format_datetime(now, usegmt=True)}
    signed = auth.sign(
        DEFAULT_KEY,
        auth.string_to_sign("GET", f"/pools/{POOL}", f"api-version={API_VERSION}", headers, DEFAULT_ACCOUNT),
    )
    authorization = f"SharedKey {DEFAULT_ACCOUNT}:{signed}"
    accounts = {DEFAULT_ACCOUNT: DEFAULT_KEY}
    query = f"api-version={API_VERSION}"
    assert (
        auth.verify(
            "GET", f"/pools/{POOL}", query, {**headers, "Authorization": authorization}, accounts, now
        )
        is None
    )
    for method, path, q, extra in (
        ("GET", "/pools/other", query, {}),  # another path
        ("DELETE", f"/pools/{POOL}", query, {}),  # another verb
        ("GET", f"/pools/{POOL}", query + "&$select=id", {}),  # a query parameter added
        ("GET", f"/pools/{POOL}", query, {"ocp-range": "bytes=0-"}),  # an ocp- header added
        ("GET", f"/pools/{POOL}", query, {"If-Match": "*"}),  # a signed standard header added
    ):
        failure = auth.verify(
            method, path, q, {**headers, **extra, "Authorization": authorization}, accounts, now
        )
        assert failure is not None and failure.status == 403, (method, path, q, extra)
    later = now + dt.timedelta(minutes=16)
    expired = auth.verify(
        "GET", f"/pools/{POOL}", query, {**headers, "Authorization": authorization}, accounts, later
    )
    assert expired is not None and expired.code == "RequestExpired"
    missing = auth.verify("GET", f"/pools/{POOL}", query, headers, accounts, now)
    assert missing is not None and missing.status == 401


async def test_an_unsigned_request_over_http_gets_401(localbatch: LocalBatch) -> None:
    import aiohttp

    url = f"{localbatch.base_url}/pools/{POOL}?api-version={API_VERSION}"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 401
        body = await resp.json(content_type=None)
    assert body["code"] == "MissingRequiredHeader"


# -- spec validation -------------------------------------------------------------------------------
async def test_a_request_the_spec_refuses_is_a_400_and_a_recorded_failure(localbatch: LocalBatch) -> None:
    async with client_for(localbatch) as client:
        await make_job(client)
        bad = {"id": "t1", "commandLine": 5, "notAProperty": True}
        with pytest.raises(HttpResponseError) as caught:
            await client.send_request(
                HttpRequest("POST", f"/jobs/job1/tasks?api-version={API_VERSION}", json=bad)
            )
        assert caught.value.status_code == 400
        with pytest.raises(HttpResponseError) as caught:
            await client.send_request(HttpRequest("GET", f"/pools/{POOL}?api-version={API_VERSION}&x=1"))
        assert caught.value.status_code == 400
    failures = localbatch.take_validation_failures()
    assert any("commandLine" in f and "is not of type 'string'" in f for f in failures), failures
    assert any("notAProperty" in f for f in failures), failures
    assert any("query parameter 'x' is not declared" in f for f in failures), failures


def test_responses_are_checked_against_their_operation() -> None:
    batch = LocalBatch()
    get_task = batch.spec.by_id["Tasks_GetTask"]
    assert batch.validate_response(get_task, BatchResponse(200, {"id": "t", "state": "active"})) == []
    # Every Batch enum is extensible (modelAsString): a new word is valid, a number is not.
    assert batch.validate_response(get_task, BatchResponse(200, {"id": "t", "state": "hibernating"})) == []
    problems = batch.validate_response(get_task, BatchResponse(200, {"id": "t", "state": 5}))
    assert any("state" in p for p in problems), problems
    problems = batch.validate_response(
        get_task, BatchResponse(200, {"id": "t", "executionInfo": {"retryCount": 0}})
    )
    assert any("requeueCount" in p for p in problems), problems
    assert batch.validate_response(get_task, BatchResponse(200, {"id": "t", "bogus": 1}))
    assert batch.validate_response(get_task, BatchResponse(201, None)) == [
        "status 201 is not declared by Tasks_GetTask"
    ]
    props = batch.spec.by_id["Tasks_GetTaskFileProperties"]
    assert (
        batch.validate_response(props, BatchResponse(200, None, {"ocp-batch-file-isdirectory": "false"}))
        == []
    )
    assert batch.validate_response(props, BatchResponse(200, None, {"ocp-batch-file-isdirectory": "no"}))
    assert batch.validate_response(props, BatchResponse(200, None, {"Last-Modified": "yesterday"}))


@pytest.mark.parametrize("name", example_names())
def test_the_stored_examples_validate_against_the_spec(name: str) -> None:
    """The validator is honest: Microsoft's own examples pass it (requests and JSON responses)."""
    batch = LocalBatch()
    example = load_example(name)
    op = batch.spec.by_id[example["operationId"]]
    if op.body is not None:
        assert op.body.validator.errors(example["parameters"][op.body.name]) == []
    for status, response in example["responses"].items():
        declared, validator = op.response_validator(int(status))
        assert declared
        if validator is not None and "body" in response:
            assert validator.errors(response["body"]) == []


@pytest.mark.parametrize("name", example_names())
async def test_replaying_an_example_gives_its_response(name: str) -> None:
    """Each example's request, sent by the SDK's pipeline to a service seeded with what it refers to,
    gets the example's status and body (and for files, the stored bytes and their headers)."""
    example = load_example(name)
    op_id = example["operationId"]
    params = example["parameters"]
    async with serve() as batch:
        batch.seed_example(name)
        op = batch.spec.by_id[op_id]
        path = op.template
        for key, value in params.items():
            path = path.replace("{" + key + "}", _quote(str(value)))
        headers = {k: v for k, v in params.items() if k in ("client-request-id",)}
        body = params.get(op.body.name) if op.body else None
        async with client_for(batch) as client:
            response = await client.send_request(
                HttpRequest(
                    op.method, f"{path}?api-version={params['api-version']}", json=body, headers=headers
                ),
                stream=bool(op.binary),
            )
            if op.binary:
                await response.read()
        (status, expected), *_ = example["responses"].items()
        assert response.status_code == int(status), response.text()
        if "body" in expected and op.binary:
            assert response.content == str(expected["body"]).encode()
        elif "body" in expected:
            assert json.loads(response.text()) == expected["body"]
        if "ocp-batch-file-isdirectory" in expected:
            assert response.headers["ocp-batch-file-isdirectory"] == expected["ocp-batch-file-isdirectory"]
        for header in ("Last-Modified", "ocp-creation-time"):  # as dates: an example's weekday is off
            if header in expected:
                sent = email.utils.parsedate_to_datetime(response.headers[header])
                assert sent == email.utils.parsedate_to_datetime(expected[header]), header
        assert batch.take_validation_failures() == []


def _quote(value: str) -> str:
    import urllib.parse

    return urllib.parse.quote(value, safe="")


# -- the simulation --------------------------------------------------------------------------------
@pytest.mark.parametrize("localbatch_options", [SLOW])
async def test_a_task_goes_active_preparing_running_completed_with_its_exit_code(
    localbatch: LocalBatch, batch_client: BatchClient
) -> None:
    localbatch.set_pool(POOL, dedicated=0, low_priority=0)
    await make_job(batch_client)
    await batch_client.create_task("job1", task("t1", LOCALBATCH_EXIT_CODE="3", LOCALBATCH_RUN_SECONDS="10"))
    assert await state_of(batch_client, "job1", "t1") == "active"
    localbatch.clock.advance(2000)
    assert await state_of(batch_client, "job1", "t1") == "active"  # no node in the pool
    localbatch.set_pool(POOL, low_priority=1)
    assert await state_of(batch_client, "job1", "t1") == "active"  # scheduling takes its time
    localbatch.clock.advance(1000)
    found = await batch_client.get_task("job1", "t1")
    assert found.state == "preparing" and found.node_info is not None
    assert found.node_info.pool_id == POOL and found.node_info.node_id
    localbatch.clock.advance(1000)
    found = await batch_client.get_task("job1", "t1")
    assert found.state == "running" and found.execution_info is not None and found.execution_info.start_time
    node = await batch_client.get_node(POOL, found.node_info.node_id)  # type: ignore[union-attr]
    assert node.ip_address and node.state == "running" and node.is_dedicated is False
    localbatch.clock.advance(10)
    found = await batch_client.get_task("job1", "t1")
    assert found.state == "completed"
    assert found.execution_info is not None and found.execution_info.exit_code == 3
    assert found.execution_info.result == "failure"
    assert found.execution_info.failure_info is not None
    assert found.execution_info.failure_info.code == "FailureExitCode"
    assert found.previous_state == "running"


@pytest.mark.parametrize("localbatch_options", [SLOW])
async def test_retries_count_and_a_removed_node_requeues_its_task(
    localbatch: LocalBatch, batch_client: BatchClient
) -> None:
    await make_job(batch_client)
    options = task("t1", LOCALBATCH_EXIT_CODE="1", LOCALBATCH_RUN_SECONDS="5")
    options.constraints = models.BatchTaskConstraints(max_task_retry_count=2)
    await batch_client.create_task("job1", options)
    await batch_client.create_task("job1", task("t2"))
    localbatch.clock.advance(2000)
    assert {t.id: t.state async for t in batch_client.list_tasks("job1")} == {
        "t1": "running",
        "t2": "running",
    }
    localbatch.clock.advance(12)  # two failed runs, retried; the third is running
    found = await batch_client.get_task("job1", "t1")
    assert found.state == "running" and found.execution_info and found.execution_info.retry_count == 2
    localbatch.clock.advance(5)
    found = await batch_client.get_task("job1", "t1")
    assert found.state == "completed" and found.execution_info and found.execution_info.exit_code == 1
    # t2 runs on one of the two nodes; shrink the pool to none: t2 goes back to active.
    localbatch.set_pool(POOL, dedicated=0, low_priority=0)
    found = await batch_client.get_task("job1", "t2")
    assert found.state == "active" and found.execution_info and found.execution_info.requeue_count == 1
    counts = [c async for c in batch_client.list_pool_node_counts()]
    assert [(c.pool_id, c.dedicated.total, c.low_priority.total) for c in counts] == [(POOL, 0, 0)]  # type: ignore[union-attr]


@pytest.mark.parametrize("localbatch_options", [{**SLOW, "prepare_seconds": 0.0}])
async def test_task_files_grow_and_ranged_reads_return_the_rest(
    localbatch: LocalBatch, batch_client: BatchClient
) -> None:
    await make_job(batch_client)
    await batch_client.create_task(
        "job1",
        task(
            "t1",
            LOCALBATCH_STDOUT="hello\n",
            LOCALBATCH_STDERR="oops\n",
            LOCALBATCH_TICKS="4",
            LOCALBATCH_TICK_SECONDS="1",
        ),
    )
    with pytest.raises(ResourceNotFoundError):
        await batch_client.get_task_file_properties("job1", "t1", "stdout.txt")
    localbatch.clock.advance(1000)  # scheduled and running
    sizes = []
    for _ in range(3):
        props = await batch_client.get_task_file_properties("job1", "t1", "stdout.txt")
        sizes.append(props.content_length)
        localbatch.clock.advance(1)
    assert sizes == [len("hello\n"), len("hello\ntick 1\n"), len("hello\ntick 1\ntick 2\n")]
    whole = b"".join([c async for c in await batch_client.download_task_file("job1", "t1", "stdout.txt")])
    assert whole == b"hello\ntick 1\ntick 2\ntick 3\n"
    rest = b"".join(
        [
            c
            async for c in await batch_client.download_task_file(
                "job1", "t1", "stdout.txt", ocp_range="bytes=6-"
            )
        ]
    )
    assert rest == b"tick 1\ntick 2\ntick 3\n"
    middle = b"".join(
        [
            c
            async for c in await batch_client.download_task_file(
                "job1", "t1", "stdout.txt", ocp_range="bytes=6-11"
            )
        ]
    )
    assert middle == b"tick 1"
    names = {f.name async for f in batch_client.list_task_files("job1", "t1")}
    assert names == {"stdout.txt", "stderr.txt"}
    localbatch.clock.advance(5)
    assert await state_of(batch_client, "job1", "t1") == "completed"


async def test_list_tasks_filters_selects_and_pages(localbatch: LocalBatch) -> None:
    localbatch.page_size = 2
    async with client_for(localbatch) as client:
        await make_job(client)
        for i in range(5):
            await client.create_task("job1", task(f"t{i}"))
        await client.terminate_task("job1", "t1")
        await client.terminate_task("job1", "t3")
        listed = [
            t async for t in client.list_tasks("job1", filter="state eq 'completed'", select=["id", "state"])
        ]
        assert sorted(t.id for t in listed) == ["t1", "t3"]  # type: ignore[type-var]
        assert all(set(t.as_dict()) == {"id", "state"} for t in listed)
        everything = [t.id async for t in client.list_tasks("job1")]
        assert sorted(everything) == [f"t{i}" for i in range(5)]  # type: ignore[type-var]
        mixed = [
            t.id
            async for t in client.list_tasks(
                "job1", filter="(id eq 't0' or startswith(id, 't4')) and state ne 'completed'"
            )
        ]
        assert sorted(mixed) == ["t0", "t4"]  # type: ignore[type-var]
        with pytest.raises(HttpResponseError) as caught:
            _ = [t async for t in client.list_tasks("job1", filter="commandLine eq 'x'")]
        assert caught.value.status_code == 400
        before = localbatch.calls["Tasks_ListTasks 200"]
        active = [t.id async for t in client.list_tasks("job1", filter="state ne 'completed'")]
        assert active == ["t0", "t2", "t4"]  # two pages of 2: the filter survives the nextLink
        assert localbatch.calls["Tasks_ListTasks 200"] == before + 2


async def test_ids_are_case_insensitive_and_semantic_limits_hold(batch_client: BatchClient) -> None:
    await make_job(batch_client)
    await batch_client.create_task("job1", task("Task-A"))
    with pytest.raises(HttpResponseError) as caught:
        await batch_client.create_task("job1", task("task-a"))
    assert caught.value.status_code == 409 and caught.value.error and caught.value.error.code == "TaskExists"
    long_line = task("t-long")
    long_line.command_line = "x" * 32769
    with pytest.raises(HttpResponseError) as caught:
        await batch_client.create_task("job1", long_line)
    assert caught.value.status_code == 400 and "32768" in str(caught.value)
    with pytest.raises(HttpResponseError) as caught:
        await make_job(batch_client)
    assert caught.value.status_code == 409 and caught.value.error and caught.value.error.code == "JobExists"


# -- throttling ------------------------------------------------------------------------------------
@pytest.fixture
async def throttled_batch() -> AsyncIterator[LocalBatch]:
    async with serve(requests_per_second=0.01, burst=2) as batch:
        batch.set_pool(POOL, dedicated=1)
        yield batch
        assert batch.take_validation_failures() == []


async def test_over_the_rate_requests_get_429_with_retry_after(throttled_batch: LocalBatch) -> None:
    async with client_for(throttled_batch, retry_total=0) as client:
        await client.get_pool(POOL)
        await client.get_pool(POOL)
        with pytest.raises(HttpResponseError) as caught:
            await client.get_pool(POOL)
    assert caught.value.status_code == 429
    assert caught.value.response is not None and int(caught.value.response.headers["Retry-After"]) >= 1
    assert throttled_batch.throttled == 1


async def test_an_injected_503_carries_its_retry_after(localbatch: LocalBatch) -> None:
    localbatch.inject_fault("Pools_GetPool", 503, "ServerBusy", headers={"Retry-After": "7"})
    async with client_for(localbatch, retry_total=0) as client:
        with pytest.raises(HttpResponseError) as caught:
            await client.get_pool(POOL)
        assert caught.value.status_code == 503
        assert caught.value.response is not None and caught.value.response.headers["Retry-After"] == "7"
        assert (await client.get_pool(POOL)).id == POOL  # once only
