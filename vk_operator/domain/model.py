"""Value types exchanged between the core and providers (re-exported by ``vk_operator.provider``)."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import sys
from collections.abc import Mapping
from typing import Any

Pod = dict[str, Any]  # a pod as the API server sends it (wire JSON); we never build typed models


@dataclasses.dataclass(frozen=True)
class Capacity:
    cpu: str = "20"
    memory: str = "100Gi"
    pods: str = "110"
    gpu: str | None = None  # nvidia.com/gpu

    def as_resources(self) -> dict[str, str]:
        resources = {"cpu": self.cpu, "memory": self.memory, "pods": self.pods}
        if self.gpu:
            resources["nvidia.com/gpu"] = self.gpu
        return resources


class ContainerPhase(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    TERMINATED = "terminated"


@dataclasses.dataclass(frozen=True)
class TerminatedState:
    """How an earlier instance of a container ended (the API's ``lastState.terminated``)."""

    exit_code: int
    reason: str | None = None
    message: str | None = None
    started_at: datetime.datetime | None = None
    finished_at: datetime.datetime | None = None
    container_id: str | None = None


@dataclasses.dataclass(frozen=True)
class ContainerStatus:
    """One container as the provider sees it.

    ``ready``: whether it passes its readiness checks (None: ready whenever it runs, for backends
    without readiness probes). ``started``: whether its startup has completed (None: once running).
    ``last_state``: how its previous instance ended, when it was restarted.
    """

    name: str
    image: str
    phase: ContainerPhase
    reason: str | None = None
    message: str | None = None
    exit_code: int | None = None
    started_at: datetime.datetime | None = None
    finished_at: datetime.datetime | None = None
    restart_count: int = 0
    container_id: str | None = None
    image_id: str | None = None
    ready: bool | None = None
    started: bool | None = None
    last_state: TerminatedState | None = None


class PodPhase(enum.Enum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


@dataclasses.dataclass(frozen=True)
class PodCondition:
    """A condition the provider adds to the pod (a readiness gate its backend decides, say).

    The four kubelet conditions (PodScheduled, Initialized, ContainersReady, Ready) are computed
    by the core from the container statuses; a provider condition of one of those types is ignored.
    """

    type: str
    status: bool
    reason: str | None = None
    message: str | None = None


@dataclasses.dataclass(frozen=True)
class ProviderPodStatus:
    """What a provider knows about one of its pods; the core computes the API status from it.

    ``init_containers`` in the order they ran; containers the provider leaves out are shown as
    waiting. ``pod_ips``: every IP of the pod (``pod_ip`` first when both are given).
    """

    phase: PodPhase
    containers: tuple[ContainerStatus, ...] = ()
    pod_ip: str | None = None
    start_time: datetime.datetime | None = None
    reason: str | None = None
    message: str | None = None
    init_containers: tuple[ContainerStatus, ...] = ()
    pod_ips: tuple[str, ...] = ()
    conditions: tuple[PodCondition, ...] = ()

    @property
    def ips(self) -> tuple[str, ...]:
        """``pod_ip`` and ``pod_ips``, deduplicated, ``pod_ip`` first."""
        first = (self.pod_ip,) if self.pod_ip else ()
        return tuple(dict.fromkeys(first + self.pod_ips))


@dataclasses.dataclass(frozen=True, slots=True)  # slots: one per pod, held for its lifetime
class PodRef:
    """A provider pod's identity: enough to match it to an API object after a restart."""

    namespace: str
    name: str
    uid: str

    @classmethod
    def of(cls, pod: Mapping[str, Any]) -> PodRef:
        """The ref of an API pod, its strings interned: a node keeps each pod's UID, name and
        namespace in several places (cache, tracking, provider), decoded from different events."""
        meta = pod["metadata"]
        return cls(sys.intern(meta["namespace"]), sys.intern(meta["name"]), sys.intern(meta["uid"]))
