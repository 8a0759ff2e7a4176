"""A Batch task as the pod's status (pure), from the task's REST JSON (``BatchTask.as_dict()``).

=============  =================================================================================
``active``     Pending, reason ``WaitingForNode``: "waiting for a node of pool P" (the container
               waits with the same reason); after a requeue (its node left the pool) it says so
``preparing``  Pending, reason ``Preparing``: the node pulls the image (container waits,
               ``ContainerCreating``)
``running``    Running; the container started at ``executionInfo.startTime``
``completed``  Succeeded when ``result`` is success (exit code 0, no failureInfo), else Failed:
               the exit code, or 137 when the task was ended without one (terminated, its
               maxWallClockTime exceeded: reason ``DeadlineExceeded``, as the kubelet's); the
               failureInfo's code and message as the container's reason and message
=============  =================================================================================

``executionInfo.retryCount`` is the restart count, the pod IP is the IP of the node the task runs
on (looked up by the caller: ``node_ip``). A task state Batch adds later is Pending with the state
as the reason, never Unknown.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from providers.azurebatch import naming
from vk_operator.provider import (
    ContainerPhase,
    ContainerStatus,
    PodPhase,
    PodRef,
    ProviderPodStatus,
)

ENDED_EXIT_CODE = 137  # a task ended without an exit code: killed, as the kubelet reports it
DEADLINE_CODES = frozenset({"MaxWallClockTimeExceeded", "TaskMaxWallClockTimeExceeded"})


def parse_time(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if not isinstance(value, str) or not value:
        return None
    text = value.replace("Z", "+00:00")
    main, dot, rest = text.partition(".")
    if dot:  # the service writes 7 fractional digits; Python reads at most 6
        count = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{main}.{rest[:count][:6].ljust(6, '0')}{rest[count:]}"
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def env_of(task: Mapping[str, Any]) -> dict[str, str]:
    return {
        str(e.get("name")): str(e.get("value", ""))
        for e in task.get("environmentSettings") or []
        if isinstance(e, Mapping)
    }


def pod_ref(task: Mapping[str, Any]) -> PodRef | None:
    """The pod a task runs, from its environment (None: not a task of ours)."""
    env = env_of(task)
    namespace, name, uid = env.get(naming.ENV_NAMESPACE), env.get(naming.ENV_NAME), env.get(naming.ENV_UID)
    if not (namespace and name and uid):
        return None
    return PodRef(namespace, name, uid)


def word(value: Any) -> str:
    """An enum as its wire word (the SDK's enums are str subclasses; their str() is the class name)."""
    return str(getattr(value, "value", value) or "")


def pod_status(task: Mapping[str, Any], pool_id: str, node_ip: str | None = None) -> ProviderPodStatus:
    state = word(task.get("state"))
    env = env_of(task)
    names = [n for n in env.get(naming.ENV_CONTAINER, "main").split(",") if n] or ["main"]
    image = env.get(naming.ENV_IMAGE) or str((task.get("containerSettings") or {}).get("imageName", ""))
    execution: Mapping[str, Any] = task.get("executionInfo") or {}
    retries = int(execution.get("retryCount") or 0)
    requeues = int(execution.get("requeueCount") or 0)
    started = parse_time(execution.get("startTime"))
    node = (task.get("nodeInfo") or {}).get("nodeId")
    runtime_id = (execution.get("containerInfo") or {}).get("containerId")
    container_id = f"docker://{runtime_id}" if runtime_id else None

    def containers(phase: ContainerPhase, **fields: Any) -> tuple[ContainerStatus, ...]:
        return tuple(
            ContainerStatus(
                name=name,
                image=image,
                phase=phase,
                restart_count=retries,
                container_id=container_id,
                **fields,
            )
            for name in names
        )

    if state == "active":
        message = f"waiting for a node of pool {pool_id}"
        if requeues:
            message += f" (requeued {requeues} time(s): its node left the pool)"
        return ProviderPodStatus(
            phase=PodPhase.PENDING,
            containers=containers(ContainerPhase.WAITING, reason="WaitingForNode", message=message),
            reason="WaitingForNode",
            message=message,
        )
    if state == "preparing":
        message = f"preparing on node {node} of pool {pool_id}"
        return ProviderPodStatus(
            phase=PodPhase.PENDING,
            containers=containers(ContainerPhase.WAITING, reason="ContainerCreating", message=message),
            reason="Preparing",
            message=message,
            pod_ip=node_ip,
        )
    if state == "running":
        return ProviderPodStatus(
            phase=PodPhase.RUNNING,
            containers=containers(ContainerPhase.RUNNING, started_at=started),
            pod_ip=node_ip,
            pod_ips=(node_ip,) if node_ip else (),
            start_time=started,
        )
    if state == "completed":
        failure: Mapping[str, Any] = execution.get("failureInfo") or {}
        exit_code = execution.get("exitCode")
        result = word(execution.get("result"))
        failed = bool(failure) or result == "failure" or (exit_code not in (None, 0))
        code = int(exit_code) if exit_code is not None else (ENDED_EXIT_CODE if failed else 0)
        failure_code = str(failure.get("code") or "")
        if failure_code in DEADLINE_CODES:
            reason = "DeadlineExceeded"
        elif failed:
            reason = "Error" if exit_code not in (None, 0) else (failure_code or "Error")
        else:
            reason = "Completed"
        failure_message: str | None = str(failure.get("message")) if failure.get("message") else None
        finished = parse_time(execution.get("endTime"))
        return ProviderPodStatus(
            phase=PodPhase.FAILED if failed else PodPhase.SUCCEEDED,
            containers=containers(
                ContainerPhase.TERMINATED,
                reason=reason,
                message=failure_message,
                exit_code=code,
                started_at=started,
                finished_at=finished,
            ),
            pod_ip=node_ip,
            start_time=started,
            reason=reason if reason == "DeadlineExceeded" else None,
            message=failure_message if failed else None,
        )
    return ProviderPodStatus(
        phase=PodPhase.PENDING,
        containers=containers(ContainerPhase.WAITING, reason=state or "Unknown"),
        reason=state or "Unknown",
        message=f"Batch task state {state!r}",
    )
