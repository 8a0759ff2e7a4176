"""A mock pod's status at any moment, derived from its creation time and settings.

The timeline: the pod is created; after ``start_seconds`` its sandbox is up (pod IP, start time)
and its init containers run one after the other, ``init_seconds`` each, ending with exit code 0;
then the app containers start together and run for ``run_seconds`` (or until deleted). With
restartPolicy Always, or OnFailure and a non-zero exit code, they are restarted in place at once
(restart_count, lastState); otherwise they stay terminated and the pod Succeeds or Fails.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from vk_operator.provider import ContainerPhase, ContainerStatus, PodPhase, ProviderPodStatus, TerminatedState

if TYPE_CHECKING:
    from providers.mock.state import _MockPod

# Restarts quicker than this are not announced one by one (a status change per restart would
# flood the core); the status still counts them whenever it is read.
MIN_NOTIFIED_RUN_SECONDS = 1.0


def _at(base: datetime.datetime, seconds: float) -> datetime.datetime:
    return base + datetime.timedelta(seconds=seconds)


def run_delta(seconds: float) -> datetime.timedelta:
    """A container's run time as the timelines count it: whole microseconds, at least one (so
    restart boundaries are exact multiples, the same for status, logs and notifications)."""
    return max(datetime.timedelta(seconds=seconds), datetime.timedelta(microseconds=1))


@dataclasses.dataclass(frozen=True)
class Timeline:
    began: datetime.datetime  # the sandbox is up: the first init container (or the app) starts
    init: tuple[tuple[str, str, datetime.datetime, datetime.datetime], ...]  # name, image, start, end
    app_start: datetime.datetime
    run: datetime.timedelta | None  # see run_delta; None: the app runs until deleted
    restarts: bool  # the app containers are restarted when they exit
    exit_code: int
    vanish: datetime.datetime | None

    def app_instance(self, now: datetime.datetime) -> tuple[int, datetime.datetime, datetime.datetime | None]:
        """(restart number, start, end) of the app containers' instance at ``now`` >= app_start;
        end None while it runs with no end in sight."""
        if self.run is None:
            return 0, self.app_start, None
        number = max((now - self.app_start) // self.run, 0) if self.restarts else 0
        start = self.app_start + number * self.run
        return number, start, start + self.run


def restarts(spec: Mapping[str, Any], exit_code: int) -> bool:
    policy = spec.get("restartPolicy", "Always")
    return policy == "Always" or (policy == "OnFailure" and exit_code != 0)


def timeline(mock: _MockPod, spec: Mapping[str, Any]) -> Timeline:
    began = _at(mock.created, mock.start_seconds)
    init = []
    moment = began
    for container in spec.get("initContainers") or []:
        end = _at(moment, mock.init_seconds)
        init.append((str(container["name"]), str(container.get("image", "")), moment, end))
        moment = end
    vanish = None if mock.vanish_seconds is None else _at(mock.created, mock.vanish_seconds)
    return Timeline(
        began,
        tuple(init),
        moment,
        None if mock.run_seconds is None else run_delta(mock.run_seconds),
        restarts(spec, mock.exit_code),
        mock.exit_code,
        vanish,
    )


def image_id(image: str) -> str:
    return f"{image}@sha256:{hashlib.sha256(image.encode()).hexdigest()}"


def container_id(uid: str, name: str, number: int = 0) -> str:
    return f"mock://{uid}/{name}" if number == 0 else f"mock://{uid}/{name}/{number}"


def _exit_reason(code: int) -> str:
    return "Completed" if code == 0 else "Error"


def _init_statuses(mock: _MockPod, line: Timeline, now: datetime.datetime) -> Iterable[ContainerStatus]:
    for name, image, start, end in line.init:
        if now < start:
            yield ContainerStatus(
                name, image, ContainerPhase.WAITING, reason="PodInitializing", ready=False, started=False
            )
            continue
        common: dict[str, Any] = {
            "started_at": start,
            "container_id": container_id(mock.ref.uid, name),
            "image_id": image_id(image),
        }
        if now < end:
            yield ContainerStatus(name, image, ContainerPhase.RUNNING, ready=False, started=True, **common)
        else:
            yield ContainerStatus(
                name,
                image,
                ContainerPhase.TERMINATED,
                reason="Completed",
                exit_code=0,
                finished_at=end,
                ready=True,  # as the kubelet reports an init container that completed
                started=False,
                **common,
            )


def _app_status(
    mock: _MockPod,
    line: Timeline,
    container: Mapping[str, Any],
    unready: frozenset[str],
    now: datetime.datetime,
) -> ContainerStatus:
    name, image = str(container["name"]), str(container.get("image", ""))
    number, start, end = line.app_instance(now)
    common: dict[str, Any] = {
        "started_at": start,
        "container_id": container_id(mock.ref.uid, name, number),
        "image_id": image_id(image),
        "restart_count": number,
    }
    if number > 0:
        assert line.run is not None
        common["last_state"] = TerminatedState(
            exit_code=line.exit_code,
            reason=_exit_reason(line.exit_code),
            started_at=start - line.run,
            finished_at=start,
            container_id=container_id(mock.ref.uid, name, number - 1),
        )
    if end is not None and now >= end:  # only when not restarted
        return ContainerStatus(
            name,
            image,
            ContainerPhase.TERMINATED,
            reason=_exit_reason(line.exit_code),
            exit_code=line.exit_code,
            finished_at=end,
            ready=False,
            started=False,
            **common,
        )
    return ContainerStatus(
        name, image, ContainerPhase.RUNNING, ready=name not in unready, started=True, **common
    )


def pod_status(
    mock: _MockPod, spec: Mapping[str, Any], unready: frozenset[str], now: datetime.datetime
) -> ProviderPodStatus:
    line = timeline(mock, spec)
    containers = spec.get("containers") or []
    init = tuple(_init_statuses(mock, line, now))
    if now < line.app_start:
        reason = "PodInitializing" if line.init else "ContainerCreating"
        waiting = tuple(
            ContainerStatus(
                c["name"],
                c.get("image", ""),
                ContainerPhase.WAITING,
                reason=reason,
                ready=False,
                started=False,
            )
            for c in containers
        )
        if now < line.began:
            return ProviderPodStatus(PodPhase.PENDING, waiting, init_containers=init)
        ips = (mock.pod_ip,)
        return ProviderPodStatus(
            PodPhase.PENDING, waiting, mock.pod_ip, line.began, init_containers=init, pod_ips=ips
        )
    statuses = tuple(_app_status(mock, line, c, unready, now) for c in containers)
    if all(s.phase is ContainerPhase.TERMINATED for s in statuses) and statuses:
        phase = PodPhase.SUCCEEDED if line.exit_code == 0 else PodPhase.FAILED
    else:
        phase = PodPhase.RUNNING
    return ProviderPodStatus(
        phase, statuses, mock.pod_ip, line.began, init_containers=init, pod_ips=(mock.pod_ip,)
    )


def next_change(mock: _MockPod, spec: Mapping[str, Any], now: datetime.datetime) -> datetime.datetime | None:
    """The first moment after ``now`` at which the pod's status changes by itself, if any."""
    line = timeline(mock, spec)
    moments = [line.began, *(end for _, _, _, end in line.init), line.app_start]
    if line.run is not None:
        first_exit = line.app_start + line.run
        moments.append(first_exit)
        notified = line.run >= datetime.timedelta(seconds=MIN_NOTIFIED_RUN_SECONDS)
        if line.restarts and notified and now >= first_exit:
            moments.append(line.app_start + ((now - line.app_start) // line.run + 1) * line.run)
    if line.vanish is not None:
        moments.append(line.vanish)
    later = [m for m in moments if m > now]
    if line.vanish is not None:
        later = [m for m in later if m <= line.vanish]  # gone then: nothing changes after
    return min(later, default=None)
