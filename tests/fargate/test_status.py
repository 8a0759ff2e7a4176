"""The pure ECS task -> pod status mapping, as a table."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from providers.fargate import naming, status
from vk_operator.provider import ContainerPhase, PodPhase

STARTED = datetime.datetime(2026, 12, 1, 10, 0, tzinfo=datetime.UTC)
ENI = {
    "type": "ElasticNetworkInterface",
    "details": [
        {"name": "subnetId", "value": "subnet-1"},
        {"name": "privateIPv4Address", "value": "10.0.1.7"},
    ],
}


def task(last: str, *containers: dict[str, Any], desired: str = "RUNNING", **fields: Any) -> dict[str, Any]:
    return {
        "taskArn": "arn:aws:ecs:eu-west-1:1:task/c/abc",
        "lastStatus": last,
        "desiredStatus": desired,
        "containers": list(containers) or [{"name": "app", "image": "x", "lastStatus": last}],
        "attachments": [ENI],
        "startedAt": STARTED,
        **fields,
    }


def c(name: str, last: str, exit_code: int | None = None, **fields: Any) -> dict[str, Any]:
    container = {"name": name, "image": "x", "lastStatus": last, **fields}
    if exit_code is not None:
        container["exitCode"] = exit_code
    return container


@pytest.mark.parametrize(
    ("ecs_task", "phase", "reason", "in_message"),
    [
        (task("PROVISIONING"), PodPhase.PENDING, "Provisioning", "PROVISIONING"),
        (task("PENDING"), PodPhase.PENDING, "Pending", "PENDING"),
        (task("ACTIVATING"), PodPhase.PENDING, "Activating", "ACTIVATING"),
        (task("RUNNING"), PodPhase.RUNNING, None, None),
        (task("STOPPING", desired="STOPPED"), PodPhase.RUNNING, None, "STOPPING"),
        (
            task("STOPPED", c("app", "STOPPED", 0), desired="STOPPED"),
            PodPhase.SUCCEEDED,
            "Completed",
            "app=0",
        ),
        (
            task(
                "STOPPED",
                c("app", "STOPPED", 3),
                desired="STOPPED",
                stopCode="EssentialContainerExited",
                stoppedReason="Essential container in task exited",
            ),
            PodPhase.FAILED,
            "Error",
            "exit codes: app=3; stop code EssentialContainerExited; Essential container in task exited",
        ),
        (
            # stopped before the container ran (image pull failed): Failed, never Succeeded
            task(
                "STOPPED",
                c("app", "STOPPED"),
                desired="STOPPED",
                stopCode="TaskFailedToStart",
                stoppedReason="CannotPullContainerError: pull access denied",
            ),
            PodPhase.FAILED,
            "TaskFailedToStart",
            "CannotPullContainerError",
        ),
        (
            # the archived provider's bug: a stopped task is not Succeeded without exit codes
            task("STOPPED", c("app", "PENDING"), desired="STOPPED", stoppedReason="Task stopped by user"),
            PodPhase.FAILED,
            "TaskStopped",
            "no exit code reported for app",
        ),
    ],
)
def test_task_states_map_to_pod_phases(
    ecs_task: dict[str, Any], phase: PodPhase, reason: str | None, in_message: str | None
) -> None:
    result = status.pod_status(ecs_task, ["app"])
    assert result.phase is phase
    assert result.reason == reason
    if in_message is None:
        assert result.message is None
    else:
        assert in_message in (result.message or "")
    assert result.pod_ip == "10.0.1.7"


def test_succeeded_needs_every_essential_container_at_zero() -> None:
    stopped = task("STOPPED", c("app", "STOPPED", 0), c("side", "STOPPED", 1), desired="STOPPED")
    assert status.pod_status(stopped, ["app", "side"]).phase is PodPhase.FAILED
    assert status.pod_status(stopped, ["app", "side"]).message is not None
    # an essential container not reported at all: not proven to have succeeded
    only_app = task("STOPPED", c("app", "STOPPED", 0), desired="STOPPED")
    assert status.pod_status(only_app, ["app", "side"]).phase is PodPhase.FAILED
    assert status.pod_status(only_app, ["app"]).phase is PodPhase.SUCCEEDED


def test_init_containers_are_told_apart_by_the_tag_and_do_not_decide_success() -> None:
    stopped = task(
        "STOPPED",
        c("migrate", "STOPPED", 0),
        c("app", "STOPPED", 0),
        desired="STOPPED",
        tags=[{"key": naming.TAG_INIT, "value": "migrate"}],
    )
    result = status.pod_status(stopped)
    assert [x.name for x in result.init_containers] == ["migrate"]
    assert [x.name for x in result.containers] == ["app"]
    assert result.phase is PodPhase.SUCCEEDED


@pytest.mark.parametrize(
    ("container", "phase", "reason", "exit_code", "ready"),
    [
        (c("app", "PENDING"), ContainerPhase.WAITING, "ContainerCreating", None, None),
        (c("app", "RUNNING", healthStatus="HEALTHY"), ContainerPhase.RUNNING, None, None, None),
        (c("app", "RUNNING", healthStatus="UNHEALTHY"), ContainerPhase.RUNNING, None, None, False),
        (c("app", "STOPPED", 0), ContainerPhase.TERMINATED, "Completed", 0, None),
        (c("app", "STOPPED", 2), ContainerPhase.TERMINATED, "Error", 2, None),
        (
            c("app", "STOPPED", 137, reason="OutOfMemoryError: Container killed due to memory usage"),
            ContainerPhase.TERMINATED,
            "OOMKilled",
            137,
            None,
        ),
    ],
)
def test_container_states(
    container: dict[str, Any],
    phase: ContainerPhase,
    reason: str | None,
    exit_code: int | None,
    ready: bool | None,
) -> None:
    result = status.container_status(task("RUNNING", container), container, 0, None)
    assert (result.phase, result.reason, result.exit_code, result.ready) == (phase, reason, exit_code, ready)


def test_a_restarted_pod_counts_its_earlier_tasks_and_keeps_the_last_exit() -> None:
    first = task("STOPPED", c("app", "STOPPED", 3), desired="STOPPED", stoppedReason="exited")
    second = task("STOPPED", c("app", "STOPPED", 4), desired="STOPPED", stoppedReason="exited again")
    current = task("RUNNING", c("app", "RUNNING"))
    result = status.pod_status(current, ["app"], [first, second])
    assert result.phase is PodPhase.RUNNING
    app = result.containers[0]
    assert app.restart_count == 2
    assert app.last_state is not None and app.last_state.exit_code == 4
    assert app.last_state.message == "exited again"


def test_a_task_waiting_to_run_again_is_crash_loop_back_off() -> None:
    stopped = task("STOPPED", c("app", "STOPPED", 1), desired="STOPPED")
    result = status.pod_status(stopped, ["app"], [], phase_override=PodPhase.RUNNING)
    assert result.phase is PodPhase.RUNNING and result.reason == "RestartingTask"
    app = result.containers[0]
    assert app.phase is ContainerPhase.WAITING and app.reason == "CrashLoopBackOff"
    assert app.last_state is not None and app.last_state.exit_code == 1


def test_no_eni_no_ip() -> None:
    assert status.pod_status({"lastStatus": "PROVISIONING", "containers": []}).pod_ip is None


def test_the_providers_file_writing_container_is_not_reported() -> None:
    stopped = task("RUNNING", c("vk-files", "STOPPED", 0), c("app", "RUNNING"))
    result = status.pod_status(stopped, ["app"])
    assert [x.name for x in result.containers] == ["app"] and result.init_containers == ()
