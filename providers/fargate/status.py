"""An ECS task (DescribeTasks) as a ProviderPodStatus: pure, table-tested.

- ``PROVISIONING``/``PENDING``/``ACTIVATING`` -> Pending, the state as the reason;
- ``RUNNING`` and the stopping states (``DEACTIVATING``, ``STOPPING``, ``DEPROVISIONING``) -> Running;
- ``STOPPED`` -> Succeeded only when every essential (app) container is reported with exit code 0;
  otherwise Failed, with the exit codes, ``stopCode`` and ``stoppedReason`` in the message (the
  archived aws-fargate provider called every stopped task Succeeded);
- a container: ``RUNNING`` -> running, ``STOPPED`` -> terminated with its exit code and reason,
  anything else -> waiting; ``healthStatus`` UNHEALTHY -> not ready;
- the pod IP is the ENI attachment's ``privateIPv4Address``.

``restarts`` (the pod's earlier tasks, oldest first) give restartCount and lastState when the
provider ran the task again (restartPolicy Always/OnFailure).
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from providers.fargate import naming
from vk_operator.provider import (
    ContainerPhase,
    ContainerStatus,
    PodPhase,
    ProviderPodStatus,
    TerminatedState,
)

PENDING_STATES = ("PROVISIONING", "PENDING", "ACTIVATING")
RUNNING_STATES = ("RUNNING", "DEACTIVATING", "STOPPING", "DEPROVISIONING")
STOPPED = "STOPPED"
NEVER_RAN_EXIT_CODE = 128


def _time(value: Any) -> datetime.datetime | None:
    if isinstance(value, datetime.datetime):
        return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)
    if isinstance(value, int | float):
        return datetime.datetime.fromtimestamp(value, datetime.UTC)
    return None


def pod_ip(task: Mapping[str, Any]) -> str | None:
    for attachment in task.get("attachments") or []:
        if attachment.get("type") != "ElasticNetworkInterface":
            continue
        for detail in attachment.get("details") or []:
            if detail.get("name") == "privateIPv4Address" and detail.get("value"):
                return str(detail["value"])
    return None


def init_containers(task: Mapping[str, Any]) -> tuple[str, ...]:
    value = naming.tag_map(task.get("tags")).get(naming.TAG_INIT, "")
    return tuple(name for name in value.split(",") if name)


def terminated_state(task: Mapping[str, Any], container: Mapping[str, Any]) -> TerminatedState:
    exit_code = container.get("exitCode")
    return TerminatedState(
        # no exit code: the container never ran (image pull, dependency...): the runtime's 128
        exit_code=int(exit_code) if isinstance(exit_code, int) else NEVER_RAN_EXIT_CODE,
        reason=_exit_reason(container),
        message=container.get("reason") or task.get("stoppedReason") or None,
        started_at=_time(task.get("startedAt")),
        finished_at=_time(task.get("stoppedAt")),
        container_id=container.get("runtimeId") or None,
    )


def _exit_reason(container: Mapping[str, Any]) -> str:
    code = container.get("exitCode")
    if code is None:
        return "StartError"
    if code == 0:
        return "Completed"
    if code == 137:
        return "OOMKilled" if "OutOfMemory" in str(container.get("reason") or "") else "Error"
    return "Error"


def container_status(
    task: Mapping[str, Any],
    container: Mapping[str, Any],
    restart_count: int,
    last_state: TerminatedState | None,
) -> ContainerStatus:
    state = str(container.get("lastStatus") or "")
    task_state = str(task.get("lastStatus") or "")
    name, image = str(container.get("name")), str(container.get("image") or "")
    common: dict[str, Any] = {
        "restart_count": restart_count,
        "last_state": last_state,
        "container_id": container.get("runtimeId") or None,
        "image_id": container.get("imageDigest") or None,
    }
    if state == STOPPED or (task_state == STOPPED and container.get("exitCode") is not None):
        ended = terminated_state(task, container)
        return ContainerStatus(
            name,
            image,
            ContainerPhase.TERMINATED,
            reason=ended.reason,
            message=ended.message,
            exit_code=ended.exit_code,
            started_at=ended.started_at,
            finished_at=ended.finished_at,
            **common,
        )
    if state == "RUNNING":
        health = container.get("healthStatus")
        return ContainerStatus(
            name,
            image,
            ContainerPhase.RUNNING,
            started_at=_time(task.get("startedAt")),
            ready=False if health == "UNHEALTHY" else None,
            **common,
        )
    if task_state == STOPPED:
        reason = "TaskStopped"
        message = "the task stopped before this container ran"
    else:
        reason = "ContainerCreating"
        message = f"container {state or 'not started'} in a {task_state or 'new'} task"
    return ContainerStatus(name, image, ContainerPhase.WAITING, reason=reason, message=message, **common)


def _stop_summary(task: Mapping[str, Any], exits: Sequence[str]) -> str:
    parts = []
    if exits:
        parts.append("exit codes: " + ", ".join(exits))
    if task.get("stopCode"):
        parts.append(f"stop code {task['stopCode']}")
    if task.get("stoppedReason"):
        parts.append(str(task["stoppedReason"]))
    return "; ".join(parts) or "the task stopped"


def pod_status(
    task: Mapping[str, Any],
    app_containers: Sequence[str] | None = None,
    restarts: Sequence[Mapping[str, Any]] = (),
    phase_override: PodPhase | None = None,
) -> ProviderPodStatus:
    """The pod status of ``task``. ``app_containers``: the pod's essential containers when known
    (else every reported container that is not an init container). ``restarts``: earlier tasks of
    the pod (oldest first); ``phase_override``: the provider's word while a restart is pending."""
    inits = init_containers(task)
    # the provider's own file-writing init container is not the pod's
    reported = [
        c for c in task.get("containers") or [] if c.get("name") not in (None, "", naming.FILES_CONTAINER)
    ]
    previous = _previous_states(restarts)
    restart_count = len(restarts)

    def status(container: Mapping[str, Any]) -> ContainerStatus:
        return container_status(task, container, restart_count, previous.get(str(container["name"])))

    init_statuses = tuple(status(c) for c in reported if c["name"] in inits)
    app_statuses = tuple(status(c) for c in reported if c["name"] not in inits)
    essential = list(app_containers) if app_containers is not None else [c.name for c in app_statuses]
    state = str(task.get("lastStatus") or "")
    common: dict[str, Any] = {
        "containers": app_statuses,
        "init_containers": init_statuses,
        "pod_ip": pod_ip(task),
        "start_time": _time(task.get("startedAt") or task.get("createdAt")),
    }
    if phase_override is not None:  # a stopped task about to run again: the kubelet's CrashLoopBackOff
        common["containers"] = tuple(_backing_off(c) for c in app_statuses)
        common["init_containers"] = tuple(_backing_off(c) for c in init_statuses)
        return ProviderPodStatus(
            phase_override, reason="RestartingTask", message=_stop_summary(task, []), **common
        )
    if state in PENDING_STATES or not state:
        return ProviderPodStatus(
            PodPhase.PENDING,
            reason=state.title() if state else "Provisioning",
            message=f"ECS task {state or 'accepted'}",
            **common,
        )
    if state in RUNNING_STATES:
        message = None if state == "RUNNING" else f"ECS task {state} (desired {task.get('desiredStatus')})"
        return ProviderPodStatus(PodPhase.RUNNING, message=message, **common)
    # decided on ECS's own exit codes (a container that never ran has none)
    raw = {str(c["name"]): c.get("exitCode") for c in reported if c["name"] not in inits}
    exits = [f"{name}={code}" for name, code in raw.items() if isinstance(code, int)]
    if essential and all(raw.get(name) == 0 for name in essential):
        return ProviderPodStatus(
            PodPhase.SUCCEEDED, reason="Completed", message=_stop_summary(task, exits), **common
        )
    missing = [name for name in essential if not isinstance(raw.get(name), int)]
    failed = any(isinstance(code, int) and code != 0 for code in raw.values())
    reason = "Error" if failed else str(task.get("stopCode") or "TaskStopped")
    message = _stop_summary(task, exits)
    if missing:
        message += f"; no exit code reported for {', '.join(missing)}"
    return ProviderPodStatus(PodPhase.FAILED, reason=reason, message=message, **common)


def _backing_off(container: ContainerStatus) -> ContainerStatus:
    if container.phase is not ContainerPhase.TERMINATED:
        return container
    ended = TerminatedState(
        exit_code=container.exit_code if container.exit_code is not None else 137,
        reason=container.reason,
        message=container.message,
        started_at=container.started_at,
        finished_at=container.finished_at,
        container_id=container.container_id,
    )
    return dataclasses.replace(
        container,
        phase=ContainerPhase.WAITING,
        reason="CrashLoopBackOff",
        message="ECS cannot restart a container: the task is run again after a back-off",
        exit_code=None,
        last_state=ended,
    )


def _previous_states(restarts: Sequence[Mapping[str, Any]]) -> dict[str, TerminatedState]:
    if not restarts:
        return {}
    last = restarts[-1]
    return {str(c["name"]): terminated_state(last, c) for c in last.get("containers") or [] if c.get("name")}


def task_failed(task: Mapping[str, Any], app_containers: Sequence[str] | None = None) -> bool:
    """Whether a stopped task counts as a failure (for restartPolicy OnFailure)."""
    return pod_status(task, app_containers).phase is PodPhase.FAILED
