"""The mock provider's logs and resource usage: deterministic, derived from the clock and the pod.

Logs: each container instance (init containers' too) writes ``"<pod> <container> line N"``
(N = 1, 2, ...) every ``log_interval_seconds`` (config, or the pod annotation
``mock.vk-operator.io/log-interval-seconds``) from the moment it starts: line N is written at
``start + (N - 1) * interval``, so tests can derive every timestamp. Following yields new lines as
time passes and ends when the instance ends (``run-seconds``, ``init-seconds``) or the pod is
deleted. ``previous`` reads the instance before a restart.

Usage: a running container uses half its CPU/memory request (or a fixed amount derived from its
name when it has none); cumulative CPU time grows with its uptime.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import math
import zlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from providers.mock import clock
from providers.mock.annotations import log_interval
from providers.mock.status import restarts as restarts_of
from providers.mock.status import run_delta, timeline
from vk_operator.provider import (
    ContainerPhase,
    ContainerUsage,
    LogEntry,
    LogOptions,
    LogsUnavailable,
    PodRef,
    PodUsage,
    ProviderPodStatus,
    parse_quantity,
)

if TYPE_CHECKING:
    from providers.mock.config import MockConfig
    from providers.mock.state import _MockPod

MIB = 2**20


@dataclasses.dataclass(frozen=True)
class Instance:
    """One run of a container: [start, end), end None while it runs (restart ``number``)."""

    number: int
    start: datetime.datetime
    end: datetime.datetime | None


def instances(
    started: datetime.datetime,
    run_seconds: float | None,
    restarts: bool,
    now: datetime.datetime,
    last: int | None = None,
) -> list[Instance]:
    """The container's runs up to ``now`` (empty before it starts), oldest first; only the
    ``last`` ones when given (a container restarted every millisecond has had many)."""
    if now < started:
        return []
    if run_seconds is None:
        return [Instance(0, started, None)]
    run = run_delta(run_seconds)  # as the status counts restarts
    if not restarts:
        return [Instance(0, started, started + run)]
    count = (now - started) // run + 1
    first = 0 if last is None else max(count - last, 0)
    # Restarted in place: even the current run's end is known.
    return [Instance(k, started + k * run, started + (k + 1) * run) for k in range(first, count)]


def line_text(pod: str, container: str, number: int) -> str:
    return f"{pod} {container} line {number}"


def line_time(instance: Instance, interval: float, number: int) -> datetime.datetime:
    return instance.start + datetime.timedelta(seconds=(number - 1) * interval)


def history_range(
    instance: Instance,
    interval: float,
    now: datetime.datetime,
    since: datetime.datetime | None,
    tail_lines: int | None,
) -> range:
    """Line numbers written by ``now`` (and before the instance ended), after since*, tail applied."""
    horizon = now if instance.end is None else min(now, instance.end)
    elapsed = (horizon - instance.start).total_seconds()
    last = math.floor(elapsed / interval) + 1  # line 1 is written at the start
    if instance.end is not None and line_time(instance, interval, last) >= instance.end:
        last -= 1  # a line due exactly at the end is never written
    first = 1
    if since is not None and since > instance.start:
        first = math.ceil((since - instance.start).total_seconds() / interval) + 1
    if tail_lines is not None:
        first = max(first, last - tail_lines + 1)
    return range(first, last + 1)


def _quantity(resources: dict[str, Any], name: str) -> float | None:
    for kind in ("requests", "limits"):
        value = (resources.get(kind) or {}).get(name)
        if value is not None:
            try:
                return float(parse_quantity(value))
            except ValueError:
                return None
    return None


def container_usage(
    namespace: str, pod: str, container: dict[str, Any], start: datetime.datetime, now: datetime.datetime
) -> ContainerUsage:
    seed = zlib.crc32(f"{namespace}/{pod}/{container['name']}".encode())
    resources = container.get("resources") or {}
    cpu = _quantity(resources, "cpu")
    nano_cores = int(cpu * 0.5 * 1e9) if cpu else (10 + seed % 90) * 1_000_000
    memory = _quantity(resources, "memory")
    working_set = int(memory * 0.5) if memory else (16 + seed % 48) * MIB
    uptime = max((now - start).total_seconds(), 0.0)
    return ContainerUsage(
        name=container["name"],
        start_time=start,
        cpu_nano_cores=nano_cores,
        cpu_core_nano_seconds=int(nano_cores * uptime),
        memory_working_set_bytes=working_set,
        memory_usage_bytes=working_set + 4 * MIB,
        memory_rss_bytes=working_set,
    )


class MockObservability:
    """Mixed into MockProvider: the LogsProvider, StatsProvider and Pinger capabilities."""

    if TYPE_CHECKING:
        config: MockConfig
        pods: dict[str, _MockPod]

        def _status(self, mock: _MockPod, now: datetime.datetime) -> ProviderPodStatus: ...

        def _record(self, method: str, uid: str = "", per_pod: str | None = None) -> int: ...

    def _log_interval(self, mock: _MockPod) -> float:
        return log_interval(mock.pod, self.config)

    def _instances(
        self, mock: _MockPod, now: datetime.datetime, container: str | None = None
    ) -> list[Instance]:
        """The runs of app container ``container`` (any: they share a timeline) or of that init
        container, the last two at most."""
        spec = mock.pod.get("spec") or {}
        line = timeline(mock, spec)
        for name, _, start, end in line.init:
            if name == container:
                return [Instance(0, start, end)] if now >= start else []
        return instances(line.app_start, mock.run_seconds, restarts_of(spec, mock.exit_code), now, last=2)

    def _find(self, ref: PodRef, container: str) -> _MockPod:
        mock = self.pods.get(ref.uid)
        if mock is None:
            raise KeyError(f"mock: no pod {ref.namespace}/{ref.name} ({ref.uid})")
        spec = mock.pod.get("spec") or {}
        names = [c["name"] for kind in ("initContainers", "containers") for c in spec.get(kind) or []]
        if container not in names:
            raise KeyError(f"mock: pod {ref.name} has no container {container!r}")
        return mock

    async def container_logs(
        self, ref: PodRef, container: str, options: LogOptions
    ) -> AsyncIterator[LogEntry]:
        self._record("container_logs", ref.uid)
        mock = self._find(ref, container)
        now = clock.now()
        runs = self._instances(mock, now, container)
        if not runs:
            raise LogsUnavailable(
                f'container "{container}" in pod "{ref.name}" is waiting to start: ContainerCreating'
            )
        if options.previous:
            if len(runs) < 2:
                raise LogsUnavailable(
                    f'previous terminated container "{container}" in pod "{ref.name}" not found'
                )
            instance = runs[-2]
        else:
            instance = runs[-1]
        interval = self._log_interval(mock)
        numbers = history_range(instance, interval, now, options.since(now), options.tail_lines)
        for number in numbers:
            yield LogEntry(line_time(instance, interval, number), line_text(ref.name, container, number))
        if not options.follow or options.previous:
            return
        number = max(numbers.stop, 1)
        while True:
            moment = line_time(instance, interval, number)
            if instance.end is not None and moment >= instance.end:
                return  # the container instance ended: so does the stream
            wait = (moment - clock.now()).total_seconds()
            if wait > 0:
                await asyncio.sleep(wait)
            if ref.uid not in self.pods:
                return  # deleted
            yield LogEntry(moment, line_text(ref.name, container, number))
            number += 1

    async def pod_stats(self) -> list[PodUsage]:
        self._record("pod_stats")
        now = clock.now()
        usage = []
        for mock in list(self.pods.values()):
            status = self._status(mock, now)
            specs = {c["name"]: c for c in mock.pod.get("spec", {}).get("containers", [])}
            containers = tuple(
                container_usage(mock.ref.namespace, mock.ref.name, specs[c.name], c.started_at or now, now)
                for c in status.containers
                if c.phase is ContainerPhase.RUNNING and c.name in specs
            )
            if containers:
                usage.append(PodUsage(mock.ref, status.start_time or now, now, containers))
        return usage

    async def ping(self) -> None:
        """The in-memory backend is always reachable."""
        self._record("ping")
