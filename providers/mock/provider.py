"""An in-memory provider with configurable latency, failures and container lifetimes.

Pod annotations (prefix ``mock.vk-operator.io/``, see annotations.py) override the config per
pod, so one test can run pods with different fates (run time, exit code, latencies, init
containers, readiness) and inject failures (transient, permanent, unexpected exceptions,
throttling, calls that never return). Timelines are in status.py.

How the core learns of status changes is the config's ``status_mode``: ``"notify"`` (the default:
the mock calls back when a pod's status changes by itself, PodNotifier), ``"poll"`` (nothing: the
core polls get_pod_status per pod) or ``"bulk"`` (get_pod_statuses, BulkStatusProvider).
Capabilities are class attributes for ``isinstance``, so each mode is a class, and
``MockProvider(config, node_name)`` (the entry point) returns the one the config names.

Every call is counted (``call_counts``, by method) and, with ``record_calls``, logged with its
``time.monotonic()`` (``call_log``, the last 10,000), and creates and deletes per pod (``calls``).
With ``state_file`` set, pods and counters are kept in a JSON file (state.py): the "cloud" then
outlives the virtual kubelet process, as a real provider's does, and tests can read it. The file is
rewritten on every change (each pod's JSON is encoded once and reused), or at most once per
``state_save_interval_seconds`` when that is set (thousands of pods), and on close.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import pathlib
import random
from collections.abc import Mapping
from typing import Any, ClassVar, NoReturn

import pydantic

from providers.mock import clock, state
from providers.mock.annotations import ANNOTATION_PREFIX, pod_settings, unready_containers
from providers.mock.config import FailureConfig, MockConfig
from providers.mock.exec import MockExec
from providers.mock.notify import MockNotifier
from providers.mock.observability import MockObservability
from providers.mock.portforward import MockPortForward
from providers.mock.state import _MockPod
from providers.mock.status import pod_status
from vk_operator.provider import (
    Capacity,
    InvalidPodError,
    NodeCondition,
    NotFoundError,
    PermanentError,
    PodRef,
    PreparedPod,
    ProviderPodStatus,
    StatusCallback,
    ThrottledError,
    TransientError,
)

__all__ = ["ANNOTATION_PREFIX", "FailureConfig", "MockConfig", "MockProvider", "_MockPod"]

CALL_LOG_LIMIT = 10_000
CALLS = (  # call_counts starts with these at 0; any other method is added when first called
    "create_pod",
    "update_pod",
    "delete_pod",
    "get_pod_status",
    "get_pod_statuses",
    "list_pods",
    "capacity",
    "node_conditions",
    "allocate_pod_ip",
)
CORE_VOLUME_KINDS = frozenset({"emptyDir", "configMap", "secret", "projected", "downwardAPI"})


class MockProvider(MockObservability, MockExec, MockPortForward):  # see those modules
    """The "poll" mode, and everything the modes share."""

    name: ClassVar[str] = "mock"
    config_model: ClassVar[type[pydantic.BaseModel]] = MockConfig
    volume_types: frozenset[str]  # VolumeTypesProvider, from the config (read by getattr)

    def __new__(cls, config: MockConfig | None = None, node_name: str = "virtual-kubelet") -> MockProvider:
        chosen: type[MockProvider] = cls
        if cls is MockProvider:
            chosen = _MODES[(config or MockConfig()).status_mode]
        return super().__new__(chosen)

    def __init__(self, config: MockConfig | None = None, node_name: str = "virtual-kubelet") -> None:
        self.config = config or MockConfig()
        self.node_name = node_name
        self.volume_types = frozenset(self.config.volume_types)
        self.pods: dict[str, _MockPod] = {}  # by pod UID: the ownership key
        # Per pod UID: every create call, the creates that created the pod, every delete call.
        self.calls: dict[str, dict[str, int]] = {"create": {}, "created": {}, "delete": {}}
        self.call_counts: dict[str, int] = dict.fromkeys(CALLS, 0)  # every call, by method
        self.call_log: list[tuple[float, str, str]] = []  # (time.monotonic(), method, pod UID or "")
        self.create_calls = 0
        self._status_calls: dict[str, int] = {}  # pod UID -> get_pod_status calls (hang-status)
        self._random = random.Random(self.config.failures.seed)
        self._ips = 0
        self._reserved_ips: dict[str, str] = {}  # pod UID -> IP handed out before create
        self._encoded: dict[str, str] = {}  # pod UID -> its JSON in the state file
        # The state file is the "cloud account": other nodes' pods in it are kept, never served.
        self._foreign: dict[str, str] = {}  # pod UID -> its JSON, of pods other nodes own
        self._written: int | None = None  # the file's mtime_ns after our last write
        self._save_handle: asyncio.TimerHandle | None = None
        self._load()

    # -- persistence (optional) ------------------------------------------------------------------
    def _load(self) -> None:
        if not self.config.state_file or not pathlib.Path(self.config.state_file).exists():
            return
        pods, trailer = self._read_pods()
        self.pods = pods
        self._written = pathlib.Path(self.config.state_file).stat().st_mtime_ns
        self.calls = {"create": {}, "created": {}, "delete": {}, **trailer.get("calls", {})}
        self._ips = int(trailer.get("ips", 0))
        self.call_counts.update(trailer.get("call_counts", {}))
        log = trailer.get("call_log", [])[-CALL_LOG_LIMIT:]
        self.call_log = [(float(at), str(method), str(uid)) for at, method, uid in log]

    def _read_pods(self) -> tuple[dict[str, _MockPod], dict[str, Any]]:
        """This node's pods of the state file (other nodes' kept aside, encoded) and its trailer."""
        assert self.config.state_file
        pods, trailer = state.load(pathlib.Path(self.config.state_file))
        ours = {uid: m for uid, m in pods.items() if m.node in ("", self.node_name)}
        self._foreign = {uid: json.dumps(m.to_json()) for uid, m in pods.items() if uid not in ours}
        return ours, trailer

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
        path = pathlib.Path(self.config.state_file)
        if path.exists() and path.stat().st_mtime_ns != self._written:
            self._read_pods()  # another node wrote meanwhile: keep its pods
        if len(self._encoded) > len(self.pods):
            self._encoded = {u: e for u, e in self._encoded.items() if u in self.pods}
        entries = []
        for uid, mock in self.pods.items():
            encoded = self._encoded.get(uid)
            if encoded is None:
                encoded = self._encoded[uid] = json.dumps(mock.to_json())
            entries.append((uid, encoded))
        entries += self._foreign.items()
        trailer = {
            "calls": self.calls,
            "ips": self._ips,
            "call_counts": self.call_counts,
            "call_log": self.call_log,
        }
        state.write(path, entries, trailer)
        self._written = path.stat().st_mtime_ns

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        """Fail start-up with one line when the state file cannot be written."""
        if not self.config.state_file:
            return
        path = pathlib.Path(self.config.state_file)
        directory = path.parent
        if not directory.is_dir():
            raise PermanentError(f"mock: state_file directory {directory} does not exist")
        if not os.access(directory, os.W_OK | os.X_OK):
            raise PermanentError(f"mock: state_file directory {directory} is not writable")
        if path.exists() and (path.is_dir() or not os.access(path, os.R_OK | os.W_OK)):
            raise PermanentError(f"mock: state_file {path} cannot be read and written")

    async def close(self) -> None:
        self._flush()

    def _flush(self) -> None:
        """Write what a coalesced save still holds."""
        if self._save_handle is not None:
            self._save_handle.cancel()
            self._write_state()

    async def reconfigure(self, config: MockConfig) -> None:
        if config.status_mode != self.config.status_mode:
            raise PermanentError("mock: status_mode cannot change without a restart")
        if frozenset(config.volume_types) != self.volume_types:
            raise PermanentError("mock: volume_types cannot change without a restart")
        self.config = config

    # -- bookkeeping -----------------------------------------------------------------------------
    def _record(self, method: str, uid: str = "", per_pod: str | None = None) -> int:
        """Count and log a call (and per pod in ``calls[per_pod]``); returns the per-pod count."""
        self.call_counts[method] = self.call_counts.get(method, 0) + 1
        if self.config.record_calls:
            self.call_log.append((clock.monotonic(), method, uid))
            if len(self.call_log) > CALL_LOG_LIMIT:
                del self.call_log[: len(self.call_log) - CALL_LOG_LIMIT]
        count = 0
        if per_pod is not None:
            per_uid = self.calls.setdefault(per_pod, {})
            count = per_uid[uid] = per_uid.get(uid, 0) + 1
        if per_pod is not None or self.config.record_calls:
            self._save()  # a status read changes nothing else: no rewrite of every pod per poll
        return count

    # Status-change hooks, for the notifying mode.
    def _created(self, mock: _MockPod) -> None:
        pass

    def _changed(self, mock: _MockPod) -> None:
        pass

    def _removed(self, uid: str) -> None:
        pass

    # -- failure injection -----------------------------------------------------------------------
    def _maybe_fail(self, call: str, nth: int | None = None) -> None:
        failures = self.config.failures
        injected = (nth is not None and nth in failures.fail_nth_create) or (
            failures.fail_ratio > 0 and self._random.random() < failures.fail_ratio
        )
        if not injected:
            return
        if failures.permanent:
            raise PermanentError(f"mock: injected permanent failure of {call}")
        raise TransientError(f"mock: injected transient failure of {call}")

    @staticmethod
    async def _hang() -> NoReturn:
        """Never return: the core's timeout cancels the call."""
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    # -- Provider --------------------------------------------------------------------------------
    async def create_pod(self, prepared: PreparedPod) -> None:
        """Idempotent: a create of a pod UID the mock has succeeds and creates nothing."""
        pod = prepared.pod
        ref = PodRef.of(pod)
        self.create_calls += 1
        attempt = self._record("create_pod", ref.uid, per_pod="create")
        settings = pod_settings(pod, self.config)
        passthrough = self._passthrough(prepared)
        if settings.fail_permanent:
            raise PermanentError("mock: this pod can never be created (fail-permanent)")
        if attempt <= settings.fail_creates:
            raise TransientError(f"mock: injected transient failure of create attempt {attempt}")
        if attempt <= settings.raise_creates:
            raise RuntimeError("mock: injected unexpected error")
        if attempt <= settings.throttle_creates:
            raise ThrottledError(
                f"mock: injected throttling of create attempt {attempt}",
                retry_after=settings.retry_after_seconds,
            )
        self._maybe_fail("create", self.create_calls)
        if ref.uid not in self.pods:
            mock = _MockPod(
                ref=ref,
                packed_pod=state.compact(pod),
                created=clock.now(),
                pod_ip=self._ip_for(ref),
                run_seconds=settings.run_seconds,
                exit_code=settings.exit_code,
                start_seconds=settings.start_seconds,
                stop_seconds=settings.stop_seconds,
                vanish_seconds=settings.vanish_seconds,
                init_seconds=settings.init_seconds,
                hang_status=settings.hang_status,
                hang_deletes=settings.hang_deletes,
                volumes={
                    name: {path: data.decode(errors="replace") for path, data in volume.files.items()}
                    for name, volume in prepared.volumes.items()
                    if name not in passthrough
                },
                passthrough=passthrough,
                secret_env=[list(pair) for pair in sorted(prepared.secret_env)],
                node=self.node_name,
            )
            self._reserved_ips.pop(ref.uid, None)
            self.pods[ref.uid] = mock
            created = self.calls["created"]
            created[ref.uid] = created.get(ref.uid, 0) + 1
            self._save(ref.uid)
            self._created(mock)
        if attempt <= settings.hang_creates:
            await self._hang()  # the pod exists: only the answer is lost

    def _passthrough(self, prepared: PreparedPod) -> dict[str, dict[str, Any]]:
        """The volumes of declared types (volume_types); any other type the core does not
        resolve is refused, as a backend that cannot mount it would."""
        found: dict[str, dict[str, Any]] = {}
        names = [v.get("name") for v in (prepared.pod.get("spec") or {}).get("volumes") or []]
        for name, volume in prepared.volumes.items():
            if volume.kind in CORE_VOLUME_KINDS:
                continue
            source = volume.source
            declared = volume.kind in self.volume_types or (
                volume.kind == "csi" and f"csi:{source.get('driver')}" in self.volume_types
            )
            if not declared:
                index = names.index(name) if name in names else len(names)
                raise InvalidPodError(
                    f"spec.volumes[{index}].{volume.kind}",
                    f"volume type {volume.kind} is not in the mock's volume_types",
                )
            found[name] = {"kind": volume.kind, "source": json.loads(json.dumps(source, default=str))}
        return found

    async def update_pod(self, prepared: PreparedPod) -> None:
        """Spec and annotations change; timings (run-seconds...) stay as created."""
        pod = prepared.pod
        ref = PodRef.of(pod)
        self._record("update_pod", ref.uid)
        self._maybe_fail("update")
        mock = self.pods.get(ref.uid)
        if mock is None:
            raise NotFoundError(f"mock: no pod {ref.namespace}/{ref.name} ({ref.uid}) to update")
        settings = pod_settings(pod, self.config)
        old = mock.pod.get("spec", {})
        if old.get("activeDeadlineSeconds") != pod.get("spec", {}).get("activeDeadlineSeconds"):
            # Like many serverless backends: the run time limit is fixed at creation.
            raise InvalidPodError("spec.activeDeadlineSeconds", "the mock cannot change it after creation")
        mock.pod = pod
        mock.hang_status, mock.hang_deletes = settings.hang_status, settings.hang_deletes
        self._save(ref.uid)
        self._changed(mock)

    async def delete_pod(self, ref: PodRef) -> None:
        """A pod the mock does not have is already deleted."""
        attempt = self._record("delete_pod", ref.uid, per_pod="delete")
        mock = self.pods.get(ref.uid)
        if mock is not None and attempt <= mock.hang_deletes:
            await self._hang()
        self._maybe_fail("delete")
        if mock is not None and mock.stop_seconds:
            await asyncio.sleep(mock.stop_seconds)
        self._forget(ref.uid)

    def _forget(self, uid: str) -> None:
        self.pods.pop(uid, None)
        self._status_calls.pop(uid, None)
        self._removed(uid)
        self._save(uid)

    async def get_pod_status(self, ref: PodRef) -> ProviderPodStatus | None:
        self._record("get_pod_status", ref.uid)
        mock = self.pods.get(ref.uid)
        if mock is None:
            return None
        calls = self._status_calls[ref.uid] = self._status_calls.get(ref.uid, 0) + 1
        if calls <= mock.hang_status:
            await self._hang()
        return self._current(mock, clock.now())

    def _current(self, mock: _MockPod, now: datetime.datetime) -> ProviderPodStatus | None:
        """The pod's status, None once it has vanished (and then it is gone)."""
        if self._vanished(mock, now):
            self._forget(mock.ref.uid)
            return None
        return self._status(mock, now)

    @staticmethod
    def _vanished(mock: _MockPod, now: datetime.datetime) -> bool:
        vanish = mock.vanish_seconds
        return vanish is not None and (now - mock.created).total_seconds() >= vanish

    async def list_pods(self) -> list[PodRef]:
        self._record("list_pods")
        now = clock.now()
        for mock in [m for m in self.pods.values() if self._vanished(m, now)]:
            self._forget(mock.ref.uid)
        return [m.ref for m in self.pods.values()]

    async def capacity(self) -> Capacity:
        self._record("capacity")
        c = self.config
        return Capacity(cpu=c.cpu, memory=c.memory, pods=c.pods, gpu=c.gpu)

    async def node_conditions(self) -> list[NodeCondition]:
        self._record("node_conditions")
        return []  # the defaults: a healthy node

    async def allocate_pod_ip(self, ref: PodRef) -> str:
        self._record("allocate_pod_ip", ref.uid)
        return self._ip_for(ref)

    def _ip_for(self, ref: PodRef) -> str:
        if ref.uid in self.pods:
            return self.pods[ref.uid].pod_ip
        if ref.uid not in self._reserved_ips:
            self._ips += 1
            self._reserved_ips[ref.uid] = f"{self.config.pod_ip_prefix}{self._ips % 250 + 2}"
        return self._reserved_ips[ref.uid]

    def _status(self, mock: _MockPod, now: datetime.datetime) -> ProviderPodStatus:
        pod = mock.pod
        return pod_status(mock, pod.get("spec") or {}, unready_containers(pod), now)


class _NotifyingMock(MockNotifier, MockProvider):
    """The "notify" mode (PodNotifier): see notify.py."""

    def __init__(self, config: MockConfig | None = None, node_name: str = "virtual-kubelet") -> None:
        super().__init__(config, node_name)
        self._callback: StatusCallback | None = None
        self._timers: dict[str, asyncio.TimerHandle] = {}


class _BulkMock(MockProvider):
    """The "bulk" mode: every pod's status in one call (BulkStatusProvider)."""

    async def get_pod_statuses(self) -> Mapping[str, ProviderPodStatus]:
        self._record("get_pod_statuses")
        now = clock.now()
        statuses = {}
        for uid, mock in list(self.pods.items()):
            status = self._current(mock, now)
            if status is not None:
                statuses[uid] = status
        return statuses


_MODES: dict[str, type[MockProvider]] = {"notify": _NotifyingMock, "poll": MockProvider, "bulk": _BulkMock}
