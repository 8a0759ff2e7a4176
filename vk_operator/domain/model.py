"""Value types exchanged between the core and providers."""

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
class ContainerStatus:
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


class PodPhase(enum.Enum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


@dataclasses.dataclass(frozen=True)
class ProviderPodStatus:
    """What a provider knows about one of its pods."""

    phase: PodPhase
    containers: tuple[ContainerStatus, ...] = ()
    pod_ip: str | None = None
    start_time: datetime.datetime | None = None
    reason: str | None = None
    message: str | None = None


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


class ProviderError(Exception):
    """A provider call failed. ``permanent`` errors are not retried: the pod fails."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent
