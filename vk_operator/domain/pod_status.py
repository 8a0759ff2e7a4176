"""Kubernetes pod status computed from what the provider reports, the way the kubelet writes it.

Conditions follow ``pkg/kubelet/status/generate.go``; container statuses follow the kubelet's
``convertToAPIContainerStatuses`` and its prober manager (only a running container has started,
only a started one is ready). Everything here is pure: the caller passes ``now``.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from vk_operator.domain import env as env_domain
from vk_operator.domain.model import (
    ContainerPhase,
    ContainerStatus,
    Pod,
    PodCondition,
    PodPhase,
    ProviderPodStatus,
    TerminatedState,
)
from vk_operator.domain.node import rfc3339

# The conditions the kubelet owns: computed here; a provider condition of one of these types is ignored.
CONDITION_TYPES = ("PodScheduled", "Initialized", "ContainersReady", "Ready")

# Pod reasons that mean a container's configuration (its environment) could not be built: the kubelet
# shows such a container waiting with ``CreateContainerConfigError`` (``makeEnvironmentVariables`` failed).
CONFIG_ERROR_REASONS = frozenset(
    {
        env_domain.MANDATORY_CONFIGMAP_NOT_FOUND,
        env_domain.MANDATORY_CONFIGMAP_KEY_NOT_FOUND,
        env_domain.FAILED_TO_READ_MANDATORY_CONFIGMAP,
        env_domain.MANDATORY_SECRET_NOT_FOUND,
        env_domain.MANDATORY_SECRET_KEY_NOT_FOUND,
        env_domain.FAILED_TO_READ_MANDATORY_SECRET,
        env_domain.POD_IP_NOT_AVAILABLE,
        env_domain.HOST_IP_NOT_AVAILABLE,
        env_domain.UNSUPPORTED_FIELD_PATH,
        env_domain.INVALID_RESOURCE_FIELD_REF,
        env_domain.UNSUPPORTED_ENV_SOURCE,
    }
)

# The kubelet's wording, so kubectl, dashboards and alerts read our pods like any other.
CREATE_CONTAINER_CONFIG_ERROR = "CreateContainerConfigError"
CONTAINER_CREATING = "ContainerCreating"
POD_INITIALIZING = "PodInitializing"
POD_COMPLETED = "PodCompleted"
POD_FAILED = "PodFailed"
CONTAINERS_NOT_READY = "ContainersNotReady"
CONTAINERS_NOT_INITIALIZED = "ContainersNotInitialized"
READINESS_GATES_NOT_READY = "ReadinessGatesNotReady"

# Exit code of the containers of a pod that failed before any of them started. Not 0: nothing must
# read the pod as having succeeded. 128 is what container runtimes report for a container whose
# process never started (containerd's StartError); a Job's podFailurePolicy can match it.
NEVER_STARTED_EXIT_CODE = 128

_STOPPED_REASON = "Completed"
_STOPPED_MESSAGE = "stopped by the provider on pod deletion"
_LOST_REASON = "ProviderLost"
_KILLED_EXIT_CODE = 137  # SIGKILL: what the kubelet reports for a container killed or not found
_LOST_CONTAINER_MESSAGE = "the provider no longer runs this container"
_LOST_POD_MESSAGE = "the pod vanished from the provider"
# spec.activeDeadlineSeconds ran out: the kubelet's reason and message (pkg/kubelet/active_deadline.go).
DEADLINE_EXCEEDED = "DeadlineExceeded"
DEADLINE_MESSAGE = "Pod was active on the node longer than the specified deadline"
_DEADLINE_CONTAINER_MESSAGE = "stopped in the provider: the pod's activeDeadlineSeconds ran out"
_TERMINAL_PHASES = {p.value: p for p in (PodPhase.SUCCEEDED, PodPhase.FAILED)}


class _Verdict(NamedTuple):
    """A condition's outcome before it is written."""

    ok: bool
    reason: str | None = None
    message: str | None = None


def _go_list(names: Sequence[str]) -> str:
    """``names`` as Go's ``%s`` prints a slice, as the kubelet's condition messages show them."""
    return "[" + " ".join(names) + "]"


def _is_sidecar(spec: Mapping[str, Any]) -> bool:
    """A restartable init container: it keeps running beside the app containers."""
    return spec.get("restartPolicy") == "Always"


def _parse_time(stamp: str | None) -> datetime.datetime | None:
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")) if stamp else None


def _terminated(ended: ContainerStatus | TerminatedState) -> dict[str, Any]:
    terminated: dict[str, Any] = {"exitCode": ended.exit_code or 0}
    if ended.reason:
        terminated["reason"] = ended.reason
    if ended.message:
        terminated["message"] = ended.message
    if ended.started_at:
        terminated["startedAt"] = rfc3339(ended.started_at)
    if ended.finished_at:
        terminated["finishedAt"] = rfc3339(ended.finished_at)
    if ended.container_id:
        terminated["containerID"] = ended.container_id
    return terminated


def _state(container: ContainerStatus) -> dict[str, Any]:
    if container.phase is ContainerPhase.RUNNING:
        started = container.started_at
        return {"running": {"startedAt": rfc3339(started)} if started else {}}
    if container.phase is ContainerPhase.TERMINATED:
        return {"terminated": _terminated(container)}
    waiting = {k: v for k, v in (("reason", container.reason), ("message", container.message)) if v}
    return {"waiting": waiting}


def _container_status(
    container: ContainerStatus, spec: Mapping[str, Any], runs_to_completion: bool
) -> dict[str, Any]:
    running = container.phase is ContainerPhase.RUNNING
    # The prober manager's rules: a container that does not run has neither started nor is ready,
    # whatever the provider says; None from the provider means "no probe", i.e. yes once running.
    started = running and container.started is not False
    if runs_to_completion:
        # A regular init container is ready once it exited successfully; its readiness is not probed.
        ready = container.phase is ContainerPhase.TERMINATED and not container.exit_code
    else:
        ready = started and container.ready is not False
    status: dict[str, Any] = {
        "name": container.name,
        "image": container.image or spec.get("image", ""),
        "imageID": container.image_id or "",
        "ready": ready,
        "started": started,
        "restartCount": container.restart_count,
        "state": _state(container),
    }
    if container.container_id:
        status["containerID"] = container.container_id
    if container.last_state:
        status["lastState"] = {"terminated": _terminated(container.last_state)}
    return status


def _container_statuses(
    specs: Sequence[Mapping[str, Any]],
    reported: Sequence[ContainerStatus],
    previous: Sequence[Mapping[str, Any]] | None,
    waiting_reason: str,
    init: bool,
) -> list[dict[str, Any]]:
    """One status per spec container, in spec order; the ones the provider omits are waiting with
    ``waiting_reason``, except that, as with the kubelet, one that had ended keeps how it ended and
    the others keep their restart count and last state."""
    by_name = {c.name: c for c in reported}
    before = {s.get("name"): s for s in previous or ()}
    statuses = []
    for spec in specs:
        name = spec["name"]
        old = before.get(name) or {}
        container = by_name.get(name)
        if container is None and (old.get("state") or {}).get("terminated"):
            statuses.append({k: v for k, v in old.items() if not (k == "lastState" and v == {})})
            continue
        runs_to_completion = init and not _is_sidecar(spec)
        if container is not None:
            statuses.append(_container_status(container, spec, runs_to_completion))
            continue
        waiting = ContainerStatus(name, spec.get("image", ""), ContainerPhase.WAITING, reason=waiting_reason)
        status = _container_status(waiting, spec, runs_to_completion)
        status["restartCount"] = old.get("restartCount") or 0
        if old.get("lastState"):
            status["lastState"] = old["lastState"]
        statuses.append(status)
    return statuses


def _init_complete(spec: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
    """Whether an init container no longer holds the app containers back (kubelet's rule)."""
    if _is_sidecar(spec):
        return bool(status.get("started"))
    terminated = (status.get("state") or {}).get("terminated") or {}
    return bool(terminated) and terminated.get("exitCode") == 0


def _has_started(status: Mapping[str, Any]) -> bool:
    state = status.get("state") or {}
    return "running" in state or "terminated" in state


def _initialized(
    has_init_containers: bool, incomplete: Sequence[str], app_started: bool, phase: PodPhase
) -> _Verdict:
    if phase is PodPhase.SUCCEEDED:
        return _Verdict(True, POD_COMPLETED)
    if app_started or phase is PodPhase.RUNNING:  # an app container ran, so initialization was over
        return _Verdict(True)
    if not has_init_containers:
        # Ours, not the kubelet's (True at once): not initialized until the provider runs the pod.
        return (
            _Verdict(True) if phase is not PodPhase.PENDING else _Verdict(False, CONTAINERS_NOT_INITIALIZED)
        )
    if incomplete:
        message = f"containers with incomplete status: {_go_list(incomplete)}"
        return _Verdict(False, CONTAINERS_NOT_INITIALIZED, message)
    return _Verdict(True)


def _containers_ready(statuses: Sequence[Mapping[str, Any]], phase: PodPhase) -> _Verdict:
    """``statuses``: the sidecars' then the app containers', the ones whose readiness counts."""
    if phase is PodPhase.SUCCEEDED:
        return _Verdict(False, POD_COMPLETED)
    if phase is PodPhase.FAILED:
        return _Verdict(False, POD_FAILED)
    unready = [s["name"] for s in statuses if not s.get("ready")]
    if unready:
        return _Verdict(False, CONTAINERS_NOT_READY, f"containers with unready status: {_go_list(unready)}")
    return _Verdict(True)


def _ready(containers_ready: _Verdict, gates: Sequence[str], condition_status: Mapping[str, str]) -> _Verdict:
    """Ready: the containers are, and every readiness gate's condition is True."""
    if not containers_ready.ok:
        return containers_ready
    problems = []
    for gate in gates:
        status = condition_status.get(gate)
        if status is None:
            problems.append(f'corresponding condition of pod readiness gate "{gate}" does not exist.')
        elif status != "True":
            problems.append(f'the status of pod readiness gate "{gate}" is not "True", but {status}')
    if problems:
        return _Verdict(False, READINESS_GATES_NOT_READY, ", ".join(problems))
    return _Verdict(True)


def _condition(
    kind: str, verdict: _Verdict, previous: Mapping[str, Mapping[str, Any]], now: str
) -> dict[str, Any]:
    """Every key written, reason and message as None when they do not apply: a strategic-merge
    patch merges conditions by type and keeps the fields it leaves out, so an omitted reason would
    survive from an earlier status (``ContainersNotInitialized`` on a running pod's Initialized)."""
    status = "True" if verdict.ok else "False"
    old = previous.get(kind)
    transition = (
        old["lastTransitionTime"]
        if old and old.get("status") == status and old.get("lastTransitionTime")
        else now
    )
    return {
        "type": kind,
        "status": status,
        "lastProbeTime": None,
        "lastTransitionTime": transition,
        "reason": verdict.reason,
        "message": verdict.message,
    }


def _provider_conditions(conditions: Sequence[PodCondition]) -> list[PodCondition]:
    """The provider's conditions but the kubelet's types, the first of each type."""
    by_type: dict[str, PodCondition] = {}
    for condition in conditions:
        if condition.type not in CONDITION_TYPES:
            by_type.setdefault(condition.type, condition)
    return list(by_type.values())


def pod_status(pod: Pod, reported: ProviderPodStatus, host_ip: str, now: datetime.datetime) -> dict[str, Any]:
    """The full ``status`` we write for ``pod`` given the provider's view of it."""
    spec = pod.get("spec") or {}
    previous_status = pod.get("status") or {}
    previous = {c.get("type"): c for c in previous_status.get("conditions") or []}
    stamp = rfc3339(now)

    init_specs = spec.get("initContainers") or []
    init_statuses = _container_statuses(
        init_specs,
        reported.init_containers,
        previous_status.get("initContainerStatuses"),
        POD_INITIALIZING,
        init=True,
    )
    incomplete = [
        s["name"] for c, s in zip(init_specs, init_statuses, strict=True) if not _init_complete(c, s)
    ]
    containers = _container_statuses(
        spec.get("containers") or [],
        reported.containers,
        previous_status.get("containerStatuses"),
        POD_INITIALIZING if incomplete else CONTAINER_CREATING,
        init=False,
    )

    initialized = _initialized(
        bool(init_specs), incomplete, any(_has_started(s) for s in containers), reported.phase
    )
    sidecars = [s for c, s in zip(init_specs, init_statuses, strict=True) if _is_sidecar(c)]
    containers_ready = _containers_ready(sidecars + containers, reported.phase)
    provider_conditions = _provider_conditions(reported.conditions)
    # Readiness gates are set by other controllers or by the provider; the provider's word wins.
    condition_status = {c.get("type"): c.get("status") for c in previous_status.get("conditions") or []}
    condition_status.update((c.type, "True" if c.status else "False") for c in provider_conditions)
    gates = [g["conditionType"] for g in spec.get("readinessGates") or [] if g.get("conditionType")]
    ready = _ready(containers_ready, gates, condition_status)

    status: dict[str, Any] = {
        "phase": reported.phase.value,
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "conditions": [
            _condition("PodScheduled", _Verdict(True), previous, stamp),
            _condition("Initialized", initialized, previous, stamp),
            _condition("ContainersReady", containers_ready, previous, stamp),
            _condition("Ready", ready, previous, stamp),
            *(
                _condition(c.type, _Verdict(c.status, c.reason, c.message), previous, stamp)
                for c in provider_conditions
            ),
        ],
        "containerStatuses": containers,
        "qosClass": previous_status.get("qosClass", "BestEffort"),
    }
    if init_specs:
        status["initContainerStatuses"] = init_statuses
    start = reported.start_time or (now if reported.phase is not PodPhase.PENDING else None)
    if previous_status.get("startTime"):
        status["startTime"] = previous_status["startTime"]
    elif start:
        status["startTime"] = rfc3339(start)
    ips = reported.ips
    if ips:
        status["podIP"] = ips[0]
        status["podIPs"] = [{"ip": ip} for ip in ips]
    if reported.reason:
        status["reason"] = reported.reason
    if reported.message:
        status["message"] = reported.message
    return status


def pending_status(
    pod: Pod, reason: str, message: str, now: datetime.datetime, phase: PodPhase = PodPhase.PENDING
) -> dict[str, Any]:
    """Status for a pod the provider does not run (yet): Pending (retrying) or Failed (given up).

    Pending: the containers wait with ``reason`` and ``message`` (``CreateContainerConfigError`` for
    a configuration problem, as the kubelet), app containers behind init containers with
    ``PodInitializing``. Failed: those containers are terminated instead, with the same reason and
    message and exit code ``NEVER_STARTED_EXIT_CODE``, and no start or finish time (they never
    started, and a finish time would change on every rewrite). The kubelet would leave them
    waiting, but a Failed pod whose containers say ``ContainerCreating`` reads as still starting.
    """
    container_reason = CREATE_CONTAINER_CONFIG_ERROR if reason in CONFIG_ERROR_REASONS else reason
    spec = pod.get("spec") or {}

    def waiting(specs: Sequence[Mapping[str, Any]]) -> tuple[ContainerStatus, ...]:
        return tuple(
            ContainerStatus(
                c["name"],
                c.get("image", ""),
                ContainerPhase.WAITING,
                reason=container_reason,
                message=message,
            )
            for c in specs
        )

    init_specs = spec.get("initContainers") or []
    reported = ProviderPodStatus(
        phase,
        containers=() if init_specs else waiting(spec.get("containers") or []),
        init_containers=waiting(init_specs),
    )
    status = pod_status(pod, reported, host_ip="", now=now)
    status.pop("hostIP")
    status.pop("hostIPs")
    status["reason"] = reason
    status["message"] = message
    if phase is PodPhase.FAILED:
        # After the conditions were computed from the waiting states: these containers never ran.
        terminated = {"exitCode": NEVER_STARTED_EXIT_CODE, "reason": container_reason}
        if message:
            terminated["message"] = message
        for field in ("initContainerStatuses", "containerStatuses"):
            for container in status.get(field) or []:
                if "waiting" in container["state"]:
                    container["state"] = {"terminated": dict(terminated)}
    return status


def _ended(
    pod: Pod,
    now: datetime.datetime,
    reason: str,
    message: str,
    exit_code: int,
    failure: tuple[str, str] | None = None,
) -> ProviderPodStatus:
    """Every container of ``pod`` that ran has ended with ``exit_code``; ones that had already ended
    are left out so that :func:`pod_status` keeps how they ended; init containers that never started
    are left out too (they stay waiting, as the kubelet leaves them). ``failure``: the pod failed,
    with this reason and message (unless it had already ended)."""
    status = pod.get("status") or {}
    spec = pod.get("spec") or {}

    def ended(
        specs: Sequence[Mapping[str, Any]], previous: Sequence[Mapping[str, Any]] | None, init: bool
    ) -> tuple[ContainerStatus, ...]:
        before = {s.get("name"): s for s in previous or ()}
        containers = []
        for container in specs:
            old = before.get(container["name"]) or {}
            state = old.get("state") or {}
            if state.get("terminated") or (init and "running" not in state):
                continue
            containers.append(
                ContainerStatus(
                    container["name"],
                    old.get("image") or container.get("image", ""),
                    ContainerPhase.TERMINATED,
                    reason=reason,
                    message=message,
                    exit_code=exit_code,
                    started_at=_parse_time((state.get("running") or {}).get("startedAt")),
                    finished_at=now,
                    restart_count=old.get("restartCount") or 0,
                    container_id=old.get("containerID"),
                    image_id=old.get("imageID") or None,
                )
            )
        return tuple(containers)

    ips = tuple(ip["ip"] for ip in status.get("podIPs") or [] if ip.get("ip"))
    containers = ended(spec.get("containers") or [], status.get("containerStatuses"), init=False)
    init_containers = ended(spec.get("initContainers") or [], status.get("initContainerStatuses"), init=True)
    terminal = _TERMINAL_PHASES.get(status.get("phase") or "")
    if terminal is not None:  # a terminal phase is final (the apiserver refuses to leave one)
        phase, pod_reason, pod_message = terminal, status.get("reason"), status.get("message")
    elif failure is not None:
        phase, (pod_reason, pod_message) = PodPhase.FAILED, failure
    else:
        # A container that had already failed fails the pod, as with the kubelet.
        failed_before = any(
            ((s.get("state") or {}).get("terminated") or {}).get("exitCode") not in (None, 0)
            for s in status.get("containerStatuses") or []
        )
        phase, pod_reason, pod_message = PodPhase.FAILED if failed_before else PodPhase.SUCCEEDED, None, None
    return ProviderPodStatus(
        phase,
        containers,
        pod_ip=status.get("podIP"),
        pod_ips=ips,
        reason=pod_reason,
        message=pod_message,
        init_containers=init_containers,
    )


def stopped_status(pod: Pod, now: datetime.datetime) -> ProviderPodStatus:
    """What to report once a graceful delete stopped ``pod`` in the provider: its containers ended."""
    return _ended(pod, now, _STOPPED_REASON, _STOPPED_MESSAGE, 0)


def lost_status(pod: Pod, now: datetime.datetime) -> ProviderPodStatus:
    """The provider no longer has a pod we created: it failed, like a pod on a node that lost it."""
    return _ended(
        pod, now, _LOST_REASON, _LOST_CONTAINER_MESSAGE, _KILLED_EXIT_CODE, (_LOST_REASON, _LOST_POD_MESSAGE)
    )


def deadline_status(pod: Pod, now: datetime.datetime) -> ProviderPodStatus:
    """``pod`` ran past its activeDeadlineSeconds and was stopped in the provider: Failed with the
    kubelet's reason, its running containers killed (137, as a kill after the grace period)."""
    return _ended(
        pod,
        now,
        DEADLINE_EXCEEDED,
        _DEADLINE_CONTAINER_MESSAGE,
        _KILLED_EXIT_CODE,
        (DEADLINE_EXCEEDED, DEADLINE_MESSAGE),
    )


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
    """Whether sending :func:`status_patch` would change ``current``.

    Ignored: timestamps we re-derive, None values (the API omits what is unset), the empty
    ``lastState`` the apiserver adds to every container status (it serializes a Go struct), and
    what the patch leaves alone: fields we do not write, and conditions of other types (set by
    other controllers, merged by type). Without those, every resync re-sent every pod's status.
    """
    current = current or {}
    patch = status_patch(current, wanted)
    for key, value in patch.items():
        if key == "conditions":
            before = {c.get("type"): c for c in current.get("conditions") or []}
            if any(_comparable(c) != _comparable(before.get(c.get("type"), {})) for c in value):
                return True
        elif _comparable(value) != _comparable(current.get(key)):
            return True
    return False


def _comparable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {
            k: _comparable(v)
            for k, v in value.items()
            if v is not None
            and k not in ("lastProbeTime", "lastTransitionTime")
            and not (k == "lastState" and v == {})
        }
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    return value
