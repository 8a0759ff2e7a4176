"""A Batch task's REST JSON as the pod's status (pure), as a table."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from providers.azurebatch import naming
from providers.azurebatch.status import parse_time, pod_ref, pod_status
from vk_operator.provider import ContainerPhase, PodPhase

POOL = "gpu"
START = "2026-12-01T10:00:00.1234567Z"
END = "2026-12-01T10:05:00Z"
ENV = [
    {"name": naming.ENV_NAMESPACE, "value": "ns"},
    {"name": naming.ENV_NAME, "value": "web"},
    {"name": naming.ENV_UID, "value": "u1"},
    {"name": naming.ENV_CONTAINER, "value": "main"},
    {"name": naming.ENV_IMAGE, "value": "busybox:1.36"},
]


def task(state: str, **execution: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "t",
        "state": state,
        "environmentSettings": ENV,
        "executionInfo": {"retryCount": 0, "requeueCount": 0, **execution},
    }
    if state != "active":
        body["nodeInfo"] = {"nodeId": "tvm-1", "poolId": POOL}
    return body


@pytest.mark.parametrize(
    ("body", "phase", "container_phase", "reason", "exit_code"),
    [
        (task("active"), PodPhase.PENDING, ContainerPhase.WAITING, "WaitingForNode", None),
        (task("preparing"), PodPhase.PENDING, ContainerPhase.WAITING, "ContainerCreating", None),
        (task("running", startTime=START), PodPhase.RUNNING, ContainerPhase.RUNNING, None, None),
        (
            task("completed", startTime=START, endTime=END, exitCode=0, result="success"),
            PodPhase.SUCCEEDED,
            ContainerPhase.TERMINATED,
            "Completed",
            0,
        ),
        (
            task(
                "completed",
                exitCode=3,
                result="failure",
                failureInfo={"category": "usererror", "code": "FailureExitCode", "message": "exit code 3"},
            ),
            PodPhase.FAILED,
            ContainerPhase.TERMINATED,
            "Error",
            3,
        ),
        (
            task(
                "completed",
                result="failure",
                failureInfo={
                    "category": "usererror",
                    "code": "TaskEnded",
                    "message": "Task Was Ended by User Request",
                },
            ),
            PodPhase.FAILED,
            ContainerPhase.TERMINATED,
            "TaskEnded",
            137,
        ),
        (
            task(
                "completed",
                result="failure",
                failureInfo={"category": "usererror", "code": "MaxWallClockTimeExceeded"},
            ),
            PodPhase.FAILED,
            ContainerPhase.TERMINATED,
            "DeadlineExceeded",
            137,
        ),
        (task("completed", exitCode=2), PodPhase.FAILED, ContainerPhase.TERMINATED, "Error", 2),  # no result
        (task("hibernating"), PodPhase.PENDING, ContainerPhase.WAITING, "hibernating", None),  # a new word
    ],
)
def test_task_states_as_pod_phases(
    body: dict[str, Any],
    phase: PodPhase,
    container_phase: ContainerPhase,
    reason: str | None,
    exit_code: int | None,
) -> None:
    status = pod_status(body, POOL, node_ip="10.0.0.4" if body["state"] != "active" else None)
    assert status.phase == phase
    (container,) = status.containers
    assert (container.name, container.image, container.phase) == ("main", "busybox:1.36", container_phase)
    assert container.reason == reason
    assert container.exit_code == exit_code


def test_pending_says_which_pool_and_a_requeue() -> None:
    status = pod_status(task("active", requeueCount=1), POOL)
    assert status.reason == "WaitingForNode"
    assert status.message is not None and "pool gpu" in status.message and "requeued 1" in status.message


def test_running_carries_times_restarts_and_the_node_ip() -> None:
    status = pod_status(task("running", startTime=START, retryCount=2), POOL, node_ip="10.0.0.4")
    assert status.pod_ip == "10.0.0.4" and status.pod_ips == ("10.0.0.4",)
    assert status.start_time == dt.datetime(2026, 12, 1, 10, 0, 0, 123456, tzinfo=dt.UTC)
    (container,) = status.containers
    assert container.restart_count == 2 and container.started_at == status.start_time


def test_failure_message_and_end_time_reach_the_container() -> None:
    body = task(
        "completed",
        startTime=START,
        endTime=END,
        exitCode=1,
        result="failure",
        failureInfo={"category": "usererror", "code": "FailureExitCode", "message": "bad"},
    )
    (container,) = pod_status(body, POOL).containers
    assert container.message == "bad"
    assert container.finished_at == dt.datetime(2026, 12, 1, 10, 5, tzinfo=dt.UTC)


def test_a_wrapped_task_reports_every_container() -> None:
    body = task("running", startTime=START)
    body["environmentSettings"] = [*ENV[:3], {"name": naming.ENV_CONTAINER, "value": "app,sidecar"}]
    assert [c.name for c in pod_status(body, POOL).containers] == ["app", "sidecar"]


@pytest.mark.parametrize(
    ("env", "found"),
    [(ENV, ("ns", "web", "u1")), (ENV[:2], None), ([], None)],
)
def test_the_pod_of_a_task_comes_from_its_environment(
    env: list[dict[str, str]], found: tuple[str, ...] | None
) -> None:
    ref = pod_ref({"id": "t", "environmentSettings": env})
    assert (None if ref is None else (ref.namespace, ref.name, ref.uid)) == found


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-01T10:00:00Z", dt.datetime(2026, 12, 1, 10, tzinfo=dt.UTC)),
        ("2026-12-01T10:00:00.1234567Z", dt.datetime(2026, 12, 1, 10, 0, 0, 123456, tzinfo=dt.UTC)),
        ("2026-12-01T10:00:00.5+01:00", dt.datetime(2026, 12, 1, 9, 0, 0, 500000, tzinfo=dt.UTC)),
        ("not a time", None),
        (None, None),
    ],
)
def test_service_times_parse(text: str | None, expected: dt.datetime | None) -> None:
    assert parse_time(text) == expected
