"""Kubernetes pod status computed from what the provider reports."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from vk_operator.domain.model import (
    ContainerPhase,
    ContainerStatus,
    Pod,
    PodPhase,
    ProviderPodStatus,
)
from vk_operator.domain.node import rfc3339

CONDITION_TYPES = ("PodScheduled", "Initialized", "ContainersReady", "Ready")


def _container_state(container: ContainerStatus) -> dict[str, Any]:
    if container.phase is ContainerPhase.RUNNING:
        started = container.started_at
        return {"running": {"startedAt": rfc3339(started)} if started else {}}
    if container.phase is ContainerPhase.TERMINATED:
        terminated: dict[str, Any] = {"exitCode": container.exit_code or 0}
        for key, value in (("reason", container.reason), ("message", container.message)):
            if value:
                terminated[key] = value
        if container.started_at:
            terminated["startedAt"] = rfc3339(container.started_at)
        if container.finished_at:
            terminated["finishedAt"] = rfc3339(container.finished_at)
        if container.container_id:
            terminated["containerID"] = container.container_id
        return {"terminated": terminated}
    waiting = {k: v for k, v in (("reason", container.reason), ("message", container.message)) if v}
    return {"waiting": waiting}


def container_statuses(pod: Pod, reported: Sequence[ContainerStatus]) -> list[dict[str, Any]]:
    """One status per spec container, in spec order; containers the provider omits are Waiting."""
    by_name = {c.name: c for c in reported}
    statuses = []
    for spec in pod.get("spec", {}).get("containers", []):
        name, image = spec["name"], spec.get("image", "")
        container = by_name.get(name) or ContainerStatus(
            name=name, image=image, phase=ContainerPhase.WAITING, reason="ContainerCreating"
        )
        running = container.phase is ContainerPhase.RUNNING
        status: dict[str, Any] = {
            "name": name,
            "image": container.image or image,
            "imageID": "",
            "ready": running,
            "started": running,
            "restartCount": container.restart_count,
            "state": _container_state(container),
        }
        if container.container_id:
            status["containerID"] = container.container_id
        statuses.append(status)
    return statuses


def _condition(
    kind: str,
    ok: bool,
    previous: Mapping[str, Mapping[str, Any]],
    now: str,
    reason: str | None = None,
) -> dict[str, Any]:
    status = "True" if ok else "False"
    old = previous.get(kind)
    transition = (
        old["lastTransitionTime"]
        if old and old.get("status") == status and old.get("lastTransitionTime")
        else now
    )
    condition = {"type": kind, "status": status, "lastProbeTime": None, "lastTransitionTime": transition}
    if reason and not ok:
        condition["reason"] = reason
    return condition


def pod_status(pod: Pod, reported: ProviderPodStatus, host_ip: str, now: datetime.datetime) -> dict[str, Any]:
    """The full ``status`` we write for ``pod`` given the provider's view of it."""
    previous_status = pod.get("status") or {}
    previous = {c.get("type"): c for c in previous_status.get("conditions") or []}
    stamp = rfc3339(now)
    containers = container_statuses(pod, reported.containers)
    all_ready = bool(containers) and all(c["ready"] for c in containers)
    running_or_done = reported.phase is not PodPhase.PENDING
    ready_reason = (
        None
        if all_ready
        else (
            "PodCompleted"
            if reported.phase in (PodPhase.SUCCEEDED, PodPhase.FAILED)
            else "ContainersNotReady"
        )
    )
    status: dict[str, Any] = {
        "phase": reported.phase.value,
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "conditions": [
            _condition("PodScheduled", True, previous, stamp),
            _condition("Initialized", running_or_done, previous, stamp, "ContainersNotInitialized"),
            _condition("ContainersReady", all_ready, previous, stamp, ready_reason),
            _condition("Ready", all_ready, previous, stamp, ready_reason),
        ],
        "containerStatuses": containers,
        "qosClass": previous_status.get("qosClass", "BestEffort"),
    }
    start = reported.start_time or (now if running_or_done else None)
    if previous_status.get("startTime"):
        status["startTime"] = previous_status["startTime"]
    elif start:
        status["startTime"] = rfc3339(start)
    if reported.pod_ip:
        status["podIP"] = reported.pod_ip
        status["podIPs"] = [{"ip": reported.pod_ip}]
    if reported.reason:
        status["reason"] = reported.reason
    if reported.message:
        status["message"] = reported.message
    return status


def pending_status(
    pod: Pod, reason: str, message: str, now: datetime.datetime, phase: PodPhase = PodPhase.PENDING
) -> dict[str, Any]:
    """Status for a pod the provider does not run (yet): Pending (retrying) or Failed (given up)."""
    status = pod_status(pod, ProviderPodStatus(phase=phase), host_ip="", now=now)
    status.pop("hostIP")
    status.pop("hostIPs")
    status["reason"] = reason
    status["message"] = message
    return status


# Top-level status fields we set only sometimes: a strategic-merge patch keeps what it does not
# mention, so when we stop setting one (a Pending reason after the pod runs) it must be nulled.
_CLEARABLE = ("reason", "message")


def status_patch(current: Mapping[str, Any] | None, wanted: Mapping[str, Any]) -> dict[str, Any]:
    """The ``status`` to send so that the result equals ``wanted`` in the fields we own."""
    patch = dict(wanted)
    for key in _CLEARABLE:
        if key not in wanted and (current or {}).get(key) is not None:
            patch[key] = None
    return patch


def status_changed(current: Mapping[str, Any] | None, wanted: Mapping[str, Any]) -> bool:
    """Whether writing ``wanted`` would change anything, ignoring timestamps we re-derive."""
    return bool(_comparable(current or {}) != _comparable(wanted))


def _comparable(status: Mapping[str, Any]) -> Any:
    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: strip(v)
                for k, v in value.items()
                if k not in ("lastProbeTime", "lastTransitionTime") and v is not None
            }
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(dict(status))
