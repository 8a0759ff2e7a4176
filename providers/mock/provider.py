"""An in-memory provider with configurable latency, failures and container lifetimes.

Pod annotations override the config per pod, so one test can run pods with different fates:
``mock.vk-operator.io/run-seconds`` (container exits after this long), ``.../exit-code``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import random
from typing import Any, ClassVar

import pydantic

from vk_operator.domain.model import (
    Capacity,
    ContainerPhase,
    ContainerStatus,
    Pod,
    PodPhase,
    PodRef,
    ProviderError,
    ProviderPodStatus,
)
from vk_operator.typing import StatusCallback

ANNOTATION_PREFIX = "mock.vk-operator.io/"


class FailureConfig(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    fail_nth_create: list[pydantic.PositiveInt] = []  # 1-based create calls that fail
    fail_ratio: float = pydantic.Field(0.0, ge=0.0, le=1.0)  # share of calls that fail at random
    permanent: bool = False  # injected failures are permanent (pod Failed) or transient (retried)
    seed: int = 0


class MockConfig(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    cpu: str = "20"
    memory: str = "100Gi"
    pods: str = "1000"
    gpu: str | None = None
    operating_system: str = "linux"
    start_latency_seconds: float = pydantic.Field(0.0, ge=0)
    stop_latency_seconds: float = pydantic.Field(0.0, ge=0)
    run_seconds: float | None = pydantic.Field(None, gt=0)  # None: containers run until deleted
    exit_code: int = 0
    pod_ip_prefix: str = "10.244.0."
    failures: FailureConfig = FailureConfig()


@dataclasses.dataclass
class _MockPod:
    ref: PodRef
    pod: Pod
    created: datetime.datetime
    pod_ip: str
    run_seconds: float | None
    exit_code: int


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class MockProvider:
    name: ClassVar[str] = "mock"
    config_model: ClassVar[type[pydantic.BaseModel]] = MockConfig

    def __init__(self, config: MockConfig | None = None, node_name: str = "virtual-kubelet") -> None:
        self.config = config or MockConfig()
        self.node_name = node_name
        self.pods: dict[str, _MockPod] = {}  # by pod UID: the ownership key
        self.create_calls = 0
        self.delete_calls = 0
        self._random = random.Random(self.config.failures.seed)
        self._callback: StatusCallback | None = None
        self._ips = 0

    # -- capabilities ------------------------------------------------------------------------
    def notify_pods(self, callback: StatusCallback) -> None:
        self._callback = callback

    async def reconfigure(self, config: MockConfig) -> None:
        self.config = config

    # -- failure injection ---------------------------------------------------------------------
    def _maybe_fail(self, call: str, nth: int | None = None) -> None:
        failures = self.config.failures
        injected = (nth is not None and nth in failures.fail_nth_create) or (
            failures.fail_ratio > 0 and self._random.random() < failures.fail_ratio
        )
        if injected:
            kind = "permanent" if failures.permanent else "transient"
            raise ProviderError(f"mock: injected {kind} failure of {call}", permanent=failures.permanent)

    def _notify_later(self, delay: float, ref: PodRef) -> None:
        if self._callback is not None:
            callback = self._callback
            asyncio.get_running_loop().call_later(max(delay, 0.0), callback, ref)

    # -- Provider --------------------------------------------------------------------------------
    async def create_pod(self, pod: Pod) -> None:
        self.create_calls += 1
        self._maybe_fail("create", self.create_calls)
        meta = pod["metadata"]
        ref = PodRef(meta["namespace"], meta["name"], meta["uid"])
        if ref.uid in self.pods:
            raise ProviderError(
                f"mock: pod {ref.namespace}/{ref.name} ({ref.uid}) created twice", permanent=True
            )
        annotations = meta.get("annotations") or {}
        run = annotations.get(ANNOTATION_PREFIX + "run-seconds")
        code = annotations.get(ANNOTATION_PREFIX + "exit-code")
        try:
            run_seconds = float(run) if run is not None else self.config.run_seconds
            exit_code = int(code) if code is not None else self.config.exit_code
        except ValueError as exc:
            raise ProviderError(f"mock: bad annotation: {exc}", permanent=True) from exc
        self._ips += 1
        self.pods[ref.uid] = _MockPod(
            ref=ref,
            pod=pod,
            created=_now(),
            pod_ip=f"{self.config.pod_ip_prefix}{self._ips % 250 + 2}",
            run_seconds=run_seconds,
            exit_code=exit_code,
        )
        if self.config.start_latency_seconds:
            self._notify_later(self.config.start_latency_seconds, ref)
        if run_seconds is not None:
            self._notify_later(self.config.start_latency_seconds + run_seconds, ref)

    async def update_pod(self, pod: Pod) -> None:
        self._maybe_fail("update")
        uid = pod["metadata"]["uid"]
        if uid not in self.pods:
            raise ProviderError(f"mock: no pod {uid} to update")
        self.pods[uid].pod = pod

    async def delete_pod(self, pod: Pod) -> None:
        self.delete_calls += 1
        self._maybe_fail("delete")
        if self.config.stop_latency_seconds:
            await asyncio.sleep(self.config.stop_latency_seconds)
        self.pods.pop(pod["metadata"]["uid"], None)

    async def get_pod_status(self, ref: PodRef) -> ProviderPodStatus | None:
        mock = self.pods.get(ref.uid)
        if mock is None:
            return None
        return self._status(mock, _now())

    async def list_pods(self) -> list[PodRef]:
        return [m.ref for m in self.pods.values()]

    async def capacity(self) -> Capacity:
        c = self.config
        return Capacity(cpu=c.cpu, memory=c.memory, pods=c.pods, gpu=c.gpu)

    async def node_conditions(self) -> list[dict[str, str]]:
        return []  # the defaults: a healthy node

    def operating_system(self) -> str:
        return self.config.operating_system

    # -- status ------------------------------------------------------------------------------------
    def _status(self, mock: _MockPod, now: datetime.datetime) -> ProviderPodStatus:
        started = mock.created + datetime.timedelta(seconds=self.config.start_latency_seconds)
        spec = mock.pod.get("spec", {})
        containers = spec.get("containers", [])
        if now < started:
            waiting = tuple(
                ContainerStatus(
                    c["name"], c.get("image", ""), ContainerPhase.WAITING, reason="ContainerCreating"
                )
                for c in containers
            )
            return ProviderPodStatus(PodPhase.PENDING, waiting)
        restarts, finished = 0, None
        if mock.run_seconds is not None:
            elapsed = (now - started).total_seconds()
            policy = spec.get("restartPolicy", "Always")
            if elapsed >= mock.run_seconds:
                if policy == "Always" or (policy == "OnFailure" and mock.exit_code != 0):
                    restarts = int(elapsed // mock.run_seconds)
                else:
                    finished = started + datetime.timedelta(seconds=mock.run_seconds)
        statuses = []
        for c in containers:
            cid = f"mock://{mock.ref.uid}/{c['name']}"
            if finished is not None:
                statuses.append(
                    ContainerStatus(
                        c["name"],
                        c.get("image", ""),
                        ContainerPhase.TERMINATED,
                        reason="Completed" if mock.exit_code == 0 else "Error",
                        exit_code=mock.exit_code,
                        started_at=started,
                        finished_at=finished,
                        container_id=cid,
                    )
                )
            else:
                statuses.append(
                    ContainerStatus(
                        c["name"],
                        c.get("image", ""),
                        ContainerPhase.RUNNING,
                        started_at=started,
                        restart_count=restarts,
                        container_id=cid,
                    )
                )
        if finished is None:
            phase = PodPhase.RUNNING
        else:
            phase = PodPhase.SUCCEEDED if mock.exit_code == 0 else PodPhase.FAILED
        return ProviderPodStatus(phase, tuple(statuses), pod_ip=mock.pod_ip, start_time=started)

    def describe(self) -> dict[str, Any]:
        return {"pods": len(self.pods), "create_calls": self.create_calls}
