"""A container group's state as the pod's status, and its instanceView events (pure).

:func:`pod_status` reads what a GET returns (a list has no instanceView: from it only the phase
can be told, from ``provisioningState``, so keep the last GET's status for a group a list shows
unchanged). It accepts the SDK model or the wire JSON (``ContainerGroup.deserialize``).

**Phase.** ACI has two words for a group: ``provisioningState`` (the deployment) and
``instanceView.state`` (the containers). The instance view decides when it has a state:

=============================  ====================================================================
``Running``                    Running
``Succeeded``/``Failed``/      terminal, by exit codes: Failed when an (init) container ended with
``Stopped``                    a non-zero code, Succeeded when every app container ended with 0;
                               otherwise Succeeded only if ACI said Succeeded
``Pending``/``Waiting``/...    Pending
a word ACI adds later          the nearest phase: Running when a container runs, terminal when all
                               app containers ended, else Pending; the word is the pod's reason
=============================  ====================================================================

``provisioningState`` then refines it: a deployment still in progress (``Accepted``, ``Pending``,
``Creating``, ``Updating``, ``Repairing``...) keeps a pod that is not running yet Pending, with
the state as the reason; a deployment that ``Failed`` or was ``Canceled`` makes a pod that is
neither running nor ended Failed, reason ``ProvisioningFailed``/``ProvisioningCanceled``, the
latest event as the message (the spec's Failed example: a FailedMount); ``Succeeded`` without an
instance view (the spec's Succeeded example) is Running, or the nearest phase of the containers
that have one. A provisioning state ACI adds later is
the reason of a pod the instance view leaves Pending, never phase Unknown (azure-aci's).

**Containers.** ``Running`` runs, ``Terminated`` ended (exit code, ``detailStatus`` as the reason
when it is one word, else ``Completed``/``Error`` by exit code, with it as the message), anything
else waits with ACI's word, or ``detailStatus`` when it names the reason (``CrashLoopBackOff: ...``).
A waiting container that never ran and for which ACI has no reason is ``ContainerCreating``.
``previousState`` (when it ended) is the last state, ``restartCount`` the restart count. A
container without an instance view is left out (the core keeps how it ended, or shows it waiting),
except in a Failed pod: there, containers that never started are shown terminated with exit code
128 (as the core does for pods it gives up on), not waiting, which would read as still starting.
A terminated container without an exit code gets 1 unless ACI's word is a success: never 0 by
default, which would read as success.

**Events** (:func:`group_events`): the group's and every container's instanceView events, with
the container and the field path for the Kubernetes Event. ACI keeps them, so each poll returns
them again: post one Event per :attr:`AciEvent.key`, and update its count when ``count`` grows.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from azure.mgmt.containerinstance.models import (
    Container,
    ContainerGroup,
    ContainerState,
    Event,
    InitContainerDefinition,
)

from vk_operator.provider import (
    ContainerPhase,
    ContainerStatus,
    PodPhase,
    ProviderPodStatus,
    TerminatedState,
)

RUNNING_STATES = frozenset({"Running"})
TERMINAL_STATES = frozenset({"Succeeded", "Failed", "Stopped"})
PENDING_STATES = frozenset({"Pending", "Waiting", "Creating", "Accepted", "Repairing"})
# provisioningState: the deployment still in progress, or given up.
PROVISIONING = frozenset(
    {"NotSpecified", "Accepted", "Pending", "Creating", "Updating", "Repairing", "PreProvisioned"}
)
PROVISIONING_FAILED = {"Failed": "ProvisioningFailed", "Canceled": "ProvisioningCanceled"}

CONTAINER_RUNNING = frozenset({"Running"})
CONTAINER_TERMINATED = frozenset({"Terminated", "Succeeded", "Failed", "Canceled", "Stopped", "Completed"})
_SUCCESS_WORDS = frozenset({"Succeeded", "Completed"})

NEVER_STARTED_EXIT_CODE = 128  # the core's constant for containers of a pod failed before they started
UNKNOWN_EXIT_CODE = 1  # a container ACI shows ended without an exit code, and not as a success
CONTAINER_CREATING = "ContainerCreating"
_WORD = re.compile(r"^[A-Z][A-Za-z0-9]*$")
_REASON_AND_MESSAGE = re.compile(r"^([A-Z][A-Za-z0-9]*):\s*(.*)$", re.DOTALL)
MAX_REASON = 128  # the API server's limit for an Event's reason


@dataclasses.dataclass(frozen=True)
class AciEvent:
    """One instanceView event, for the provider to post as a Kubernetes Event."""

    container: str | None  # None: the group's own event
    field_path: str | None  # spec.containers{name} / spec.initContainers{name}: the Event's fieldPath
    type: str  # Normal or Warning (the only types the API server takes; anything else is Normal)
    reason: str  # ACI's event name (Pulling, Started, FailedMount...)
    message: str
    count: int
    first_time: datetime.datetime | None
    last_time: datetime.datetime | None

    @property
    def key(self) -> tuple[str | None, str, str, str, datetime.datetime | None]:
        """The same event in every poll (its count and last time grow)."""
        return (self.container, self.type, self.reason, self.message, self.first_time)


def as_group(group: ContainerGroup | Mapping[str, Any]) -> ContainerGroup:
    """The SDK model of ``group``: itself, or the wire JSON (an ARM body) deserialized."""
    if isinstance(group, ContainerGroup):
        return group
    data = dict(group)
    model = ContainerGroup.deserialize(data) if "properties" in data else ContainerGroup.from_dict(data)
    if not isinstance(model, ContainerGroup):  # pragma: no cover - the SDK's deserializers return the class
        raise TypeError("not a container group")
    return model


def _split_detail(detail: str | None) -> tuple[str | None, str | None]:
    """(reason, message) of a ``detailStatus``: a word is a reason, ``Word: text`` both."""
    text = (detail or "").strip()
    if not text:
        return None, None
    if _WORD.fullmatch(text):
        return text, None
    match = _REASON_AND_MESSAGE.match(text)
    if match:
        return match.group(1), match.group(2) or None
    return None, text


def _terminated(state: ContainerState) -> TerminatedState:
    word = state.state or ""
    exit_code = state.exit_code
    if exit_code is None:
        exit_code = 0 if word in _SUCCESS_WORDS else UNKNOWN_EXIT_CODE
    reason, message = _split_detail(state.detail_status)
    if reason is None:
        reason = "Completed" if exit_code == 0 else "Error"
    return TerminatedState(
        exit_code=exit_code,
        reason=reason,
        message=message,
        started_at=state.start_time,
        finished_at=state.finish_time,
    )


def container_id(group: ContainerGroup, name: str) -> str | None:
    if not group.id:
        return None
    return "aci://" + hashlib.sha256(f"{group.id.lower()}/{name}".encode()).hexdigest()


def container_status(
    group: ContainerGroup, container: Container | InitContainerDefinition
) -> ContainerStatus | None:
    """One container's state, restart count and last state from its instanceView; None without
    one (the core then keeps how it ended, or shows it waiting)."""
    name = container.name
    image = container.image or ""
    view = container.instance_view
    cid = container_id(group, name)
    if view is None or view.current_state is None:
        return None
    current: ContainerState = view.current_state
    restarts = view.restart_count or 0
    previous = view.previous_state
    last = _terminated(previous) if previous is not None and previous.state in CONTAINER_TERMINATED else None
    word = current.state or ""
    common: dict[str, Any] = {"restart_count": restarts, "last_state": last, "container_id": cid}
    if word in CONTAINER_RUNNING:
        return ContainerStatus(name, image, ContainerPhase.RUNNING, started_at=current.start_time, **common)
    if word in CONTAINER_TERMINATED:
        ended = _terminated(current)
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
    reason, message = _split_detail(current.detail_status)
    if reason is None:
        # ACI's word, unless it only says "Waiting" for a container that never ran.
        reason = (
            CONTAINER_CREATING if word in ("", "Waiting") and not restarts and last is None else word or None
        )
    return ContainerStatus(name, image, ContainerPhase.WAITING, reason=reason, message=message, **common)


def _events(events: Sequence[Event] | None, container: str | None, field_path: str | None) -> list[AciEvent]:
    return [
        AciEvent(
            container=container,
            field_path=field_path,
            type="Warning" if (event.type or "").lower() == "warning" else "Normal",
            reason=(event.name or "Unknown")[:MAX_REASON],
            message=event.message or "",
            count=event.count or 1,
            first_time=event.first_timestamp,
            last_time=event.last_timestamp,
        )
        for event in events or []
    ]


def group_events(group: ContainerGroup | Mapping[str, Any]) -> list[AciEvent]:
    """Every instanceView event of the group and its (init) containers."""
    model = as_group(group)
    found = _events(model.instance_view.events if model.instance_view else None, None, None)
    for kind, containers in (("initContainers", model.init_containers), ("containers", model.containers)):
        for c in containers or []:
            found += _events(
                c.instance_view.events if c.instance_view else None, c.name, f"spec.{kind}{{{c.name}}}"
            )
    return found


def _latest_cause(events: Iterable[AciEvent]) -> AciEvent | None:
    """The event that best explains a failure: the latest of the group's own and the Warnings."""
    candidates = [e for e in events if e.container is None or e.type == "Warning"]
    epoch = datetime.datetime.min.replace(tzinfo=datetime.UTC)
    return max(candidates, key=lambda e: e.last_time or e.first_time or epoch, default=None)


def _by_exit_codes(
    containers: Sequence[ContainerStatus], init: Sequence[ContainerStatus], aci_succeeded: bool
) -> PodPhase:
    ended = [c for c in (*init, *containers) if c.phase is ContainerPhase.TERMINATED]
    if any(c.exit_code for c in ended):
        return PodPhase.FAILED
    if containers and all(c.phase is ContainerPhase.TERMINATED for c in containers):
        return PodPhase.SUCCEEDED
    return PodPhase.SUCCEEDED if aci_succeeded else PodPhase.FAILED


def _nearest(containers: Sequence[ContainerStatus], init: Sequence[ContainerStatus]) -> PodPhase:
    if any(c.phase is ContainerPhase.RUNNING for c in containers):
        return PodPhase.RUNNING
    if containers and all(c.phase is ContainerPhase.TERMINATED for c in containers):
        return _by_exit_codes(containers, init, aci_succeeded=False)
    return PodPhase.PENDING


def _never_started(
    container: Container | InitContainerDefinition,
    status: ContainerStatus | None,
    reason: str | None,
    message: str | None,
) -> ContainerStatus:
    """A container of a Failed pod that never ran, shown terminated (its own reason if it has one)."""
    if status is None:
        status = ContainerStatus(container.name, container.image or "", ContainerPhase.WAITING)
    if status.phase is not ContainerPhase.WAITING:
        return status
    return dataclasses.replace(
        status,
        phase=ContainerPhase.TERMINATED,
        exit_code=NEVER_STARTED_EXIT_CODE,
        reason=status.reason if status.reason not in (None, CONTAINER_CREATING) else reason,
        message=status.message or message,
    )


def _start_time(statuses: Iterable[ContainerStatus]) -> datetime.datetime | None:
    times = [
        t for s in statuses for t in (s.started_at, s.last_state.started_at if s.last_state else None) if t
    ]
    return min(times, default=None)


def _failure_message(provisioning: str, cause: AciEvent | None) -> str:
    message = f"ACI provisioningState {provisioning}"
    if cause is None:
        return message
    return f"{message}: {cause.reason}: {cause.message}" if cause.message else f"{message}: {cause.reason}"


def pod_status(group: ContainerGroup | Mapping[str, Any]) -> ProviderPodStatus:
    """The pod's status from a container group as a GET returns it (see the module docstring)."""
    model = as_group(group)
    init_specs, app_specs = model.init_containers or [], model.containers or []
    init_found = [container_status(model, c) for c in init_specs]
    app_found = [container_status(model, c) for c in app_specs]
    init = tuple(s for s in init_found if s is not None)
    containers = tuple(s for s in app_found if s is not None)
    provisioning = model.provisioning_state or ""
    state = (model.instance_view.state if model.instance_view else None) or ""
    reason: str | None = None
    message: str | None = None

    if state in RUNNING_STATES:
        phase = PodPhase.RUNNING
    elif state in TERMINAL_STATES:
        phase = _by_exit_codes(containers, init, aci_succeeded=state == "Succeeded")
        if state == "Stopped":
            reason = state
    elif state in PENDING_STATES:
        phase = PodPhase.PENDING
        reason = state
    elif state:  # a state ACI adds later: the nearest phase, ACI's word
        phase = _nearest(containers, init)
        reason = state
    elif provisioning == "Succeeded":
        # No instance view (a list, or the spec's Succeeded example): ACI deployed and started the group.
        phase = _nearest(containers, init) if init or containers else PodPhase.RUNNING
    else:
        phase = PodPhase.PENDING

    if provisioning in PROVISIONING and phase is PodPhase.PENDING:
        reason = provisioning
    elif provisioning in PROVISIONING_FAILED and phase is PodPhase.PENDING:
        phase = PodPhase.FAILED
        reason = PROVISIONING_FAILED[provisioning]
        message = _failure_message(provisioning, _latest_cause(group_events(model)))
    elif provisioning not in ("", "Succeeded") and phase is PodPhase.PENDING and reason in (None, "Pending"):
        reason = provisioning  # Deleting, Unhealthy, NotAccessible, a word ACI adds later

    if phase is PodPhase.FAILED:
        init = tuple(
            _never_started(c, s, reason, message) for c, s in zip(init_specs, init_found, strict=True)
        )
        containers = tuple(
            _never_started(c, s, reason, message) for c, s in zip(app_specs, app_found, strict=True)
        )

    ip = model.ip_address.ip if model.ip_address else None
    return ProviderPodStatus(
        phase=phase,
        containers=containers,
        init_containers=init,
        pod_ip=ip or None,
        start_time=_start_time((*init, *containers)),
        reason=reason,
        message=message,
    )
