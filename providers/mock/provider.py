"""An in-memory provider with configurable latency, failures and container lifetimes.

Pod annotations (prefix ``mock.vk-operator.io/``) override the config per pod, so one test can run
pods with different fates: ``run-seconds`` (containers exit after this long), ``exit-code``,
``start-seconds`` / ``stop-seconds`` (latencies), ``fail-creates`` (the first N creates fail,
transiently), ``fail-permanent`` ("true": every create fails permanently) and ``vanish-seconds``
(the pod disappears from the provider, as when a cloud reclaims it).

With ``state_file`` set, the pods and a count of calls per pod are kept in a JSON file: the "cloud"
then outlives the virtual kubelet process, as a real provider's does, and tests can read it. The
file is rewritten on every change (each pod's JSON is encoded once and reused), or at most once
per ``state_save_interval_seconds`` when that is set (thousands of pods), and on close. One pod
per line, so it is loaded a pod at a time: decoding 10,000 pods at once took 80 MB that the heap
kept after they were packed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import pathlib
import random
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import pydantic

from providers.mock.exec import MockExec
from providers.mock.observability import MockObservability
from providers.mock.portforward import MockPortForward
from vk_operator.domain import packed
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
from vk_operator.domain.prepared import PreparedPod
from vk_operator.typing import StatusCallback

ANNOTATION_PREFIX = "mock.vk-operator.io/"
T = TypeVar("T")


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
    state_file: str | None = None
    # 0: write the state file on every change; > 0: coalesce writes over this many seconds (the file
    # holds every pod, so with thousands of pods a write per change makes creation quadratic).
    state_save_interval_seconds: float = pydantic.Field(0.0, ge=0)
    log_interval_seconds: float = pydantic.Field(1.0, gt=0)  # one mock log line per interval


def _compact(pod: Pod) -> bytes:
    """The pod as the mock keeps it: packed, without status and managedFields.

    ~0.3 KB a pod instead of ~6-20 KB of dicts, which also keeps 10,000 pods' worth of containers
    out of the garbage collector's way.
    """
    meta = pod.get("metadata") or {}
    kept = {k: v for k, v in pod.items() if k != "status"}
    if "managedFields" in meta:
        kept["metadata"] = {k: v for k, v in meta.items() if k != "managedFields"}
    return packed.pack(kept)


@dataclasses.dataclass(slots=True)
class _MockPod:
    ref: PodRef
    packed_pod: bytes  # see _compact; read and written through ``pod``
    created: datetime.datetime
    pod_ip: str
    run_seconds: float | None
    exit_code: int
    start_seconds: float
    stop_seconds: float
    vanish_seconds: float | None = None
    # Volume contents as the provider would mount them (text), and names of secret env vars.
    volumes: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    secret_env: list[list[str]] = dataclasses.field(default_factory=list)

    @property
    def pod(self) -> Pod:
        """A fresh copy of the pod (spec and metadata) as created or last updated."""
        decoded: Pod = packed.unpack(self.packed_pod)
        return decoded

    @pod.setter
    def pod(self, pod: Pod) -> None:
        self.packed_pod = _compact(pod)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["pod"] = packed.unpack(data.pop("packed_pod"))
        data["created"] = self.created.isoformat()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> _MockPod:
        fields = {k: v for k, v in data.items() if k != "pod"}
        return cls(
            **{
                **fields,
                "ref": PodRef(**data["ref"]),
                "packed_pod": _compact(data["pod"]),
                "created": datetime.datetime.fromisoformat(data["created"]),
            }
        )


_STATE_HEADER = '{"pods": {\n'


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class MockProvider(MockObservability, MockExec, MockPortForward):  # see those modules
    name: ClassVar[str] = "mock"
    config_model: ClassVar[type[pydantic.BaseModel]] = MockConfig

    def __init__(self, config: MockConfig | None = None, node_name: str = "virtual-kubelet") -> None:
        self.config = config or MockConfig()
        self.node_name = node_name
        self.pods: dict[str, _MockPod] = {}  # by pod UID: the ownership key
        self.calls: dict[str, dict[str, int]] = {"create": {}, "delete": {}}  # per pod UID
        self.create_calls = 0
        self._random = random.Random(self.config.failures.seed)
        self._callback: StatusCallback | None = None
        self._ips = 0
        self._reserved_ips: dict[str, str] = {}  # pod UID -> IP handed out before create
        self._encoded: dict[str, str] = {}  # pod UID -> its JSON in the state file
        self._save_handle: asyncio.TimerHandle | None = None
        self._load()

    # -- persistence (optional) ------------------------------------------------------------------
    def _load(self) -> None:
        if not self.config.state_file or not pathlib.Path(self.config.state_file).exists():
            return
        with pathlib.Path(self.config.state_file).open() as lines:
            first = lines.readline()
            if first != _STATE_HEADER:  # not our pod-per-line layout (written by hand): all at once
                data = json.loads(first + lines.read())
                self.pods = {uid: _MockPod.from_json(p) for uid, p in data["pods"].items()}
            else:
                for line in lines:
                    if line.startswith("}, "):  # the pods are over: calls and IPs follow
                        data = json.loads("{" + line[3:])
                        break
                    uid, _, entry = line.rstrip(",\n").partition(": ")
                    self.pods[json.loads(uid)] = _MockPod.from_json(json.loads(entry))
                else:
                    raise ValueError(f"{self.config.state_file}: truncated (no calls after the pods)")
        self.calls = data["calls"]
        self._ips = data["ips"]

    def _save(self, changed: str | None = None) -> None:
        """Persist the state; ``changed`` names the pod UID whose entry changed (re-encoded)."""
        if not self.config.state_file:
            return
        if changed is not None:
            self._encoded.pop(changed, None)
        interval = self.config.state_save_interval_seconds
        if interval <= 0:
            self._write_state()
        elif self._save_handle is None:
            self._save_handle = asyncio.get_running_loop().call_later(interval, self._write_state)

    def _write_state(self) -> None:
        self._save_handle = None
        assert self.config.state_file
        if len(self._encoded) > len(self.pods):
            self._encoded = {u: e for u, e in self._encoded.items() if u in self.pods}
        entries = []
        for uid, mock in self.pods.items():
            encoded = self._encoded.get(uid)
            if encoded is None:
                encoded = self._encoded[uid] = json.dumps(mock.to_json())
            entries.append(f"{json.dumps(uid)}: {encoded}")
        pods = ",\n".join(entries) + "\n" if entries else ""
        rest = json.dumps({"calls": self.calls, "ips": self._ips})[1:]  # without its opening brace
        text = f"{_STATE_HEADER}{pods}}}, {rest}\n"
        path = pathlib.Path(self.config.state_file)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)

    async def close(self) -> None:
        """Write what a coalesced save still holds."""
        if self._save_handle is not None:
            self._save_handle.cancel()
            self._write_state()

    def _count(self, call: str, uid: str) -> int:
        per_pod = self.calls[call]
        per_pod[uid] = per_pod.get(uid, 0) + 1
        return per_pod[uid]

    # -- capabilities ----------------------------------------------------------------------------
    def notify_pods(self, callback: StatusCallback) -> None:
        self._callback = callback
        for mock in self.pods.values():  # pods loaded from the state file
            self._schedule_notifications(mock)

    async def reconfigure(self, config: MockConfig) -> None:
        self.config = config

    async def allocate_pod_ip(self, ref: PodRef) -> str:
        if ref.uid in self.pods:
            return self.pods[ref.uid].pod_ip
        if ref.uid not in self._reserved_ips:
            self._ips += 1
            self._reserved_ips[ref.uid] = f"{self.config.pod_ip_prefix}{self._ips % 250 + 2}"
        return self._reserved_ips[ref.uid]

    # -- failure injection -----------------------------------------------------------------------
    def _maybe_fail(self, call: str, nth: int | None = None) -> None:
        failures = self.config.failures
        injected = (nth is not None and nth in failures.fail_nth_create) or (
            failures.fail_ratio > 0 and self._random.random() < failures.fail_ratio
        )
        if injected:
            kind = "permanent" if failures.permanent else "transient"
            raise ProviderError(f"mock: injected {kind} failure of {call}", permanent=failures.permanent)

    def _notify_at(self, moment: datetime.datetime, ref: PodRef) -> None:
        """Call back once the status clock (wall time) has reached ``moment``.

        Loop timers may fire a little early by that clock (uvloop's run on a cached millisecond
        time): the status would not have changed yet and nothing would call back again, so an
        early timer is set again for the rest.
        """
        if self._callback is None:
            return
        left = (moment - _now()).total_seconds()
        if left > 0:
            asyncio.get_running_loop().call_later(left, self._notify_at, moment, ref)
        else:
            self._callback(ref)

    def _schedule_notifications(self, mock: _MockPod) -> None:
        """Tell the core when this pod's status changes by itself (started, exited, vanished)."""
        moments = [mock.start_seconds]
        if mock.run_seconds is not None:
            moments.append(mock.start_seconds + mock.run_seconds)
        if mock.vanish_seconds is not None:
            moments.append(mock.vanish_seconds)
        now = _now()
        for at in moments:
            moment = mock.created + datetime.timedelta(seconds=at)
            if moment > now:
                self._notify_at(moment, mock.ref)

    # -- Provider --------------------------------------------------------------------------------
    async def create_pod(self, prepared: PreparedPod) -> None:
        self.create_calls += 1
        pod = prepared.pod
        meta = pod["metadata"]
        ref = PodRef.of(pod)
        attempt = self._count("create", ref.uid)
        self._save()
        annotations = meta.get("annotations") or {}

        def annotation(name: str, parse: Callable[[str], T], default: T) -> T:
            raw = annotations.get(ANNOTATION_PREFIX + name)
            try:
                return parse(raw) if raw is not None else default
            except ValueError as exc:
                raise ProviderError(f"mock: annotation {name}: {exc}", permanent=True) from exc

        if annotation("fail-permanent", lambda v: v == "true", False):
            raise ProviderError("mock: this pod can never be created (fail-permanent)", permanent=True)
        if attempt <= annotation("fail-creates", int, 0):
            raise ProviderError(f"mock: injected transient failure of create attempt {attempt}")
        self._maybe_fail("create", self.create_calls)
        if ref.uid in self.pods:
            raise ProviderError(
                f"mock: pod {ref.namespace}/{ref.name} ({ref.uid}) created twice", permanent=True
            )
        mock = _MockPod(
            ref=ref,
            packed_pod=_compact(pod),
            created=_now(),
            pod_ip=await self.allocate_pod_ip(ref),
            run_seconds=annotation("run-seconds", float, self.config.run_seconds),
            exit_code=annotation("exit-code", int, self.config.exit_code),
            start_seconds=annotation("start-seconds", float, self.config.start_latency_seconds),
            stop_seconds=annotation("stop-seconds", float, self.config.stop_latency_seconds),
            vanish_seconds=annotation("vanish-seconds", float, None),
            volumes={
                name: {path: data.decode(errors="replace") for path, data in volume.files.items()}
                for name, volume in prepared.volumes.items()
            },
            secret_env=[list(pair) for pair in sorted(prepared.secret_env)],
        )
        self._reserved_ips.pop(ref.uid, None)
        self.pods[ref.uid] = mock
        self._save(ref.uid)
        self._schedule_notifications(mock)

    async def update_pod(self, prepared: PreparedPod) -> None:
        self._maybe_fail("update")
        pod = prepared.pod
        uid = pod["metadata"]["uid"]
        if uid not in self.pods:
            raise ProviderError(f"mock: no pod {uid} to update")
        old = self.pods[uid].pod.get("spec", {})
        if old.get("activeDeadlineSeconds") != pod.get("spec", {}).get("activeDeadlineSeconds"):
            # Like many serverless backends: the run time limit is fixed at creation.
            raise ProviderError("mock: activeDeadlineSeconds cannot change after creation", permanent=True)
        self.pods[uid].pod = pod
        self._save(uid)

    async def delete_pod(self, pod: Pod) -> None:
        uid = pod["metadata"]["uid"]
        self._count("delete", uid)
        self._maybe_fail("delete")
        mock = self.pods.get(uid)
        if mock is not None and mock.stop_seconds:
            await asyncio.sleep(mock.stop_seconds)
        self.pods.pop(uid, None)
        self._save(uid)

    async def get_pod_status(self, ref: PodRef) -> ProviderPodStatus | None:
        mock = self.pods.get(ref.uid)
        if mock is None:
            return None
        if mock.vanish_seconds is not None and (_now() - mock.created).total_seconds() >= mock.vanish_seconds:
            del self.pods[ref.uid]
            self._save(ref.uid)
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

    # -- status ----------------------------------------------------------------------------------
    def _status(self, mock: _MockPod, now: datetime.datetime) -> ProviderPodStatus:
        started = mock.created + datetime.timedelta(seconds=mock.start_seconds)
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
                    restarts = int(elapsed // mock.run_seconds)  # restarted in place, as a kubelet would
                else:
                    finished = started + datetime.timedelta(seconds=mock.run_seconds)
        statuses = []
        for c in containers:
            common = {"started_at": started, "container_id": f"mock://{mock.ref.uid}/{c['name']}"}
            if finished is not None:
                reason = "Completed" if mock.exit_code == 0 else "Error"
                statuses.append(
                    ContainerStatus(
                        c["name"],
                        c.get("image", ""),
                        ContainerPhase.TERMINATED,
                        reason=reason,
                        exit_code=mock.exit_code,
                        finished_at=finished,
                        **common,  # type: ignore[arg-type]
                    )
                )
            else:
                statuses.append(
                    ContainerStatus(
                        c["name"],
                        c.get("image", ""),
                        ContainerPhase.RUNNING,
                        restart_count=restarts,
                        **common,  # type: ignore[arg-type]
                    )
                )
        if finished is None:
            phase = PodPhase.RUNNING
        else:
            phase = PodPhase.SUCCEEDED if mock.exit_code == 0 else PodPhase.FAILED
        return ProviderPodStatus(phase, tuple(statuses), pod_ip=mock.pod_ip, start_time=started)
