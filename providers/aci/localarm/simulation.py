"""The deterministic life of a container group, as a function of its definition and the clock.

A group's life is split into *epochs* (create, update of its containers, start, restart). In an
epoch, init containers run one after the other (each: pull, then run), then all app containers pull
and start together. Each container's process is a :mod:`shell` program run against virtual time, so
its output lines and exit time follow from the container's ``command`` and environment alone.
When a process exits, the group's ``restartPolicy`` decides: ``Always`` restarts it, ``OnFailure``
restarts it on a non-zero code, ``Never`` leaves it terminated; a restart waits a back-off that
doubles per restart (``restart_backoff_seconds`` .. ``restart_backoff_max_seconds``). Init
containers restart on failure unless the policy is ``Never`` (then the group fails).

Images: a name containing ``pullfail`` fails to pull (the container stays Waiting, the group's
provisioningState becomes Failed, its state stays Pending). A name containing ``inaccessible`` is
refused at PUT time (400 InaccessibleImage; see the server). Volumes: an ``azureFile`` volume whose
``shareName`` or ``storageAccountName`` contains ``denied`` fails to mount once the app containers'
images are pulled: a ``FailedMount`` group event, containers Waiting, provisioningState Failed and
state Pending, which is the spec's ``ContainerGroupsGet_Failed`` example.
Nothing is computed ahead of the clock; state is advanced lazily when looked at.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .knobs import Knobs
from .shell import LazyTrace, ShellContext, TraceLine, top_level_program

LOG_LIMIT_BYTES = 4 * 1024 * 1024  # ACI returns at most 4 MB of log


class Clock:
    """Seconds since the server started, plus whatever tests :meth:`advance` by."""

    def __init__(self) -> None:
        self._t0 = time.monotonic()
        self._offset = 0.0
        self.wall_anchor = dt.datetime.now(dt.UTC)

    def now(self) -> float:
        return time.monotonic() - self._t0 + self._offset

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self._offset += seconds

    def wall(self, t: float) -> dt.datetime:
        return self.wall_anchor + dt.timedelta(seconds=t)


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def iso_nanos(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


@dataclass
class ContainerDef:
    name: str
    image: str
    command: list[str]
    env: dict[str, str]
    cpu: float
    memory_gb: float
    init: bool

    @staticmethod
    def from_body(item: Mapping[str, Any], *, init: bool) -> ContainerDef:
        props: Mapping[str, Any] = item.get("properties", {})
        env: dict[str, str] = {}
        for var in props.get("environmentVariables", []) or []:
            value = var.get("value")
            if value is None:
                value = var.get("secureValue")
            env[str(var["name"])] = "" if value is None else str(value)
        requests = (props.get("resources") or {}).get("requests") or {}
        return ContainerDef(
            name=str(item["name"]),
            image=str(props.get("image", "")),
            command=[str(c) for c in props.get("command", []) or []],
            env=env,
            cpu=float(requests.get("cpu", 0.0)),
            memory_gb=float(requests.get("memoryInGB", 0.0)),
            init=init,
        )

    def pull_seconds(self, knobs: Knobs) -> float:
        raw = self.env.get("LOCALARM_PULL_SECONDS")
        try:
            return max(0.0, float(raw)) if raw is not None else knobs.pull_seconds
        except ValueError:
            return knobs.pull_seconds

    @property
    def pull_fails(self) -> bool:
        return "pullfail" in self.image.lower()


@dataclass
class Run:
    index: int
    start: float
    trace: LazyTrace

    def end(self) -> float | None:
        return None if self.trace.end is None else self.start + self.trace.end


@dataclass
class ContainerRuntime:
    definition: ContainerDef
    pull_start: float | None = None
    runs: list[Run] = field(default_factory=list)
    killed_at: float | None = None

    def pulled_at(self, knobs: Knobs) -> float | None:
        if self.pull_start is None:
            return None
        return self.pull_start + self.definition.pull_seconds(knobs)


class Epoch:
    """One deployment of a group's containers, from ``start`` on."""

    def __init__(
        self,
        *,
        kind: str,
        start: float,
        group_name: str,
        containers: list[ContainerDef],
        init_containers: list[ContainerDef],
        restart_policy: str,
        knobs: Knobs,
        wall: Callable[[float], dt.datetime],
        volumes: list[Mapping[str, Any]] | None = None,
    ) -> None:
        self.kind = kind
        self.start = start
        self.group_name = group_name
        self.restart_policy = restart_policy
        self.knobs = knobs
        self.wall = wall
        self.inits = [ContainerRuntime(c) for c in init_containers]
        self.apps = [ContainerRuntime(c) for c in containers]
        self.stopped_at: float | None = None
        self.failed_at: float | None = None
        self.failure: tuple[str, str] | None = None  # (code, message)
        self.inits_done_at: float | None = None
        self.started_at: float | None = None  # every app container has started
        self.mount_error: str | None = None
        for volume in volumes or []:
            share = volume.get("azureFile") or {}
            if any("denied" in str(share.get(k, "")).lower() for k in ("shareName", "storageAccountName")):
                self.mount_error = "Output: mount error(2): Permission denied"
        self._seen = start

    # --- progression -------------------------------------------------------------------------

    def _run(self, c: ContainerDef, run_index: int, start: float) -> Run:
        env = {**c.env, "HOSTNAME": self.group_name, "LOCALARM_RUN_INDEX": str(run_index)}
        ctx = ShellContext(env=env, hostname=self.group_name)
        trace = LazyTrace(top_level_program(c.command, ctx, label=c.image))
        ctx.now = lambda: self.wall(start + trace.now)  # `date` tells the virtual time
        return Run(run_index, start, trace)

    def _backoff(self, index: int) -> float:
        base = max(0.0, self.knobs.restart_backoff_seconds)
        return float(min(base * (2**index), max(base, self.knobs.restart_backoff_max_seconds)))

    def _restarts(self, rt: ContainerRuntime, code: int) -> bool:
        if rt.definition.init:
            return code != 0 and self.restart_policy != "Never"
        if self.restart_policy == "Never":
            return False
        if self.restart_policy == "OnFailure":
            return code != 0
        return True  # Always (and anything ACI might add: it defaults to Always)

    def _extend_runs(self, rt: ContainerRuntime, t: float) -> None:
        while rt.runs:
            run = rt.runs[-1]
            run.trace.advance(t - run.start)
            end = run.end()
            if end is None or run.trace.exit_code is None:
                return
            if not self._restarts(rt, run.trace.exit_code):
                return
            next_start = end + self._backoff(run.index)
            if next_start > t:
                return
            rt.runs.append(self._run(rt.definition, run.index + 1, next_start))

    def _bring_up(self, rt: ContainerRuntime, cursor: float, t: float) -> bool:
        """Pull and run ``rt`` from ``cursor`` on, up to ``t``. False if it cannot be pulled."""
        if rt.pull_start is None:
            rt.pull_start = cursor
        pulled = rt.pulled_at(self.knobs)
        assert pulled is not None
        if t < pulled:
            return True
        if rt.definition.pull_fails:
            if self.failed_at is None:
                self.failed_at = pulled
                self.failure = (
                    "InaccessibleImage",
                    f"Failed to pull image '{rt.definition.image}' for container "
                    f"'{rt.definition.name}' of container group '{self.group_name}'.",
                )
            return False
        if not rt.runs:
            rt.runs.append(self._run(rt.definition, 0, pulled))
        self._extend_runs(rt, t)
        return True

    def advance(self, t: float) -> None:
        t = max(t, self._seen)
        self._seen = t
        if self.stopped_at is not None:
            t = min(t, self.stopped_at)
        if self.failed_at is not None and self.failure is not None and self.failure[0] != "InitFailed":
            return  # a failed pull stops the epoch
        cursor = self.start
        for rt in self.inits:
            if not self._bring_up(rt, cursor, t) or not rt.runs:
                return
            run = rt.runs[-1]
            end = run.end()
            if end is None or run.trace.exit_code is None:
                return
            if run.trace.exit_code != 0:
                if not self._restarts(rt, run.trace.exit_code) and self.failed_at is None:
                    self.failed_at = end
                    self.failure = (
                        "InitFailed",
                        f"Init container '{rt.definition.name}' of container group '{self.group_name}' "
                        f"exited with code {run.trace.exit_code}.",
                    )
                return
            cursor = end
        self.inits_done_at = cursor
        if self.mount_error is not None:
            for rt in self.apps:
                if rt.pull_start is None:
                    rt.pull_start = cursor
            pulled = [rt.pulled_at(self.knobs) or cursor for rt in self.apps]
            at = max(pulled, default=cursor)
            if t >= at and self.failed_at is None:
                self.failed_at = at
                self.failure = ("FailedMount", self.mount_error)
            return
        all_started = True
        for rt in self.apps:
            if not self._bring_up(rt, cursor, t):
                return
            all_started = all_started and bool(rt.runs)
        if all_started and self.started_at is None:
            self.started_at = max(rt.runs[0].start for rt in self.apps) if self.apps else cursor

    def stop(self, t: float) -> None:
        self.advance(t)
        if self.stopped_at is None:
            self.stopped_at = t
            for rt in [*self.inits, *self.apps]:
                if rt.runs and rt.runs[-1].end() is None:
                    rt.killed_at = t

    # --- views -------------------------------------------------------------------------------

    def provisioning_state(self, t: float) -> str:
        self.advance(t)
        if self.failed_at is not None and t >= self.failed_at:
            return "Failed"
        if self.started_at is not None and t >= self.started_at:
            return "Succeeded"
        if self.stopped_at is not None:
            return "Succeeded"
        return "Updating" if self.kind == "update" else "Creating"

    def group_events(self, t: float) -> list[dict[str, Any]]:
        self.advance(t)
        if self.failure is not None and self.failure[0] == "FailedMount" and self.failed_at is not None:
            when = iso(self.wall(self.failed_at))
            return [
                {
                    "count": 1,
                    "firstTimestamp": when,
                    "lastTimestamp": when,
                    "message": self.failure[1],
                    "name": "FailedMount",
                    "type": "Normal",
                }
            ]
        return []

    def group_state(self, t: float) -> str:
        self.advance(t)
        if self.stopped_at is not None and t >= self.stopped_at:
            return "Stopped"
        if self.failure is not None and self.failure[0] == "InitFailed":
            return "Failed"
        if self.started_at is None or t < self.started_at:
            return "Pending"
        states = [self._container_phase(rt, t) for rt in self.apps]
        if any(s in ("Running", "Waiting") for s in states):
            return "Running"
        codes = [rt.runs[-1].trace.exit_code for rt in self.apps]
        return "Failed" if any(c not in (0, None) for c in codes) else "Succeeded"

    def _container_phase(self, rt: ContainerRuntime, t: float) -> str:
        if not rt.runs:
            return "Waiting"
        run = rt.runs[-1]
        end = run.end()
        if rt.killed_at is not None:
            return "Terminated"
        if end is None or end > t:
            return "Running"
        if run.trace.exit_code is not None and self._restarts(rt, run.trace.exit_code):
            return "Waiting"  # back-off before the next run
        return "Terminated"

    def _terminated(self, run: Run, killed_at: float | None = None) -> dict[str, Any]:
        if killed_at is not None:
            return {
                "state": "Terminated",
                "startTime": iso(self.wall(run.start)),
                "exitCode": 143,
                "finishTime": iso(self.wall(killed_at)),
                "detailStatus": "Stopped",
            }
        end = run.end()
        assert end is not None and run.trace.exit_code is not None
        code = run.trace.exit_code
        return {
            "state": "Terminated",
            "startTime": iso(self.wall(run.start)),
            "exitCode": code,
            "finishTime": iso(self.wall(end)),
            "detailStatus": "Completed" if code == 0 else "Error",
        }

    def container_view(self, rt: ContainerRuntime, t: float) -> dict[str, Any]:
        self.advance(t)
        c = rt.definition
        events: list[dict[str, Any]] = []

        def event(
            name: str, first: float, last: float, count: int, message: str, kind: str = "Normal"
        ) -> None:
            events.append(
                {
                    "count": count,
                    "firstTimestamp": iso(self.wall(first)),
                    "lastTimestamp": iso(self.wall(last)),
                    "name": name,
                    "message": message,
                    "type": kind,
                }
            )

        pulled = rt.pulled_at(self.knobs)
        if rt.pull_start is not None and t >= rt.pull_start:
            event("Pulling", rt.pull_start, rt.pull_start, 1, f'pulling image "{c.image}"')
        if pulled is not None and t >= pulled:
            if c.pull_fails:
                event(
                    "Failed",
                    pulled,
                    pulled,
                    1,
                    f'Failed to pull image "{c.image}": rpc error: code = NotFound desc = '
                    f'failed to resolve reference "{c.image}": not found',
                    "Warning",
                )
            else:
                event("Pulled", pulled, pulled, 1, f'Successfully pulled image "{c.image}"')
        started = [r for r in rt.runs if r.start <= t]
        if started:
            event("Started", started[0].start, started[-1].start, len(started), "Started container")
        restarted_ends = [end for r in rt.runs[:-1] if (end := r.end()) is not None]
        if restarted_ends:
            event(
                "BackOff",
                restarted_ends[0],
                restarted_ends[-1],
                len(restarted_ends),
                "Back-off restarting failed container",
                "Warning",
            )
        if rt.killed_at is not None:
            event("Killing", rt.killed_at, rt.killed_at, 1, f"Killing container {c.name}")

        view: dict[str, Any] = {"restartCount": max(0, len(started) - 1), "events": events}
        if not started:
            if c.pull_fails and pulled is not None and t >= pulled:
                detail = "ErrImagePull"
            elif rt.pull_start is None:
                detail = "PodInitializing"
            else:
                detail = "ContainerCreating"
            view["currentState"] = {"state": "Waiting", "detailStatus": detail}
            if self.mount_error is not None and pulled is not None and t >= pulled:
                view["currentState"]["startTime"] = iso(self.wall(pulled))
            return view
        run = started[-1]
        previous = started[-2] if len(started) > 1 else None
        if previous is not None:
            view["previousState"] = self._terminated(previous)
        phase = self._container_phase(rt, t)
        if phase == "Running":
            view["currentState"] = {
                "state": "Running",
                "startTime": iso(self.wall(run.start)),
                "detailStatus": "",
            }
        elif phase == "Waiting":
            view["previousState"] = self._terminated(run)
            view["currentState"] = {
                "state": "Waiting",
                "detailStatus": "CrashLoopBackOff: Back-off restarting failed container",
            }
        else:
            view["currentState"] = self._terminated(run, rt.killed_at)
        return view

    def current_run(self, container_name: str, t: float) -> Run | None:
        self.advance(t)
        for rt in [*self.apps, *self.inits]:
            if rt.definition.name == container_name:
                started = [r for r in rt.runs if r.start <= t]
                return started[-1] if started else None
        return None

    def runtime(self, container_name: str) -> ContainerRuntime | None:
        for rt in [*self.apps, *self.inits]:
            if rt.definition.name == container_name:
                return rt
        return None

    def is_running(self, container_name: str, t: float) -> bool:
        rt = self.runtime(container_name)
        if rt is None:
            return False
        self.advance(t)
        return self._container_phase(rt, t) == "Running" and (self.stopped_at is None or t < self.stopped_at)

    def log_lines(self, container_name: str, t: float) -> list[tuple[dt.datetime, str]]:
        """The current run's output up to ``t``: (time, line)."""
        run = self.current_run(container_name, t)
        if run is None:
            return []
        rt = self.runtime(container_name)
        limit = t if rt is None or rt.killed_at is None else min(t, rt.killed_at)
        horizon = limit - run.start
        lines: list[TraceLine] = [line for line in run.trace.lines if line.offset <= horizon]
        return [(self.wall(run.start + line.offset), line.text) for line in lines]

    def done(self, t: float) -> bool:
        """Terminal for the create/update/start operation that began this epoch."""
        return self.provisioning_state(t) in ("Succeeded", "Failed")


def render_logs(lines: list[tuple[dt.datetime, str]], *, tail: int | None, timestamps: bool) -> str:
    if tail is not None:
        lines = lines[-tail:] if tail > 0 else []
    rendered = [f"{iso_nanos(when)} {text}" if timestamps else text for when, text in lines]
    out: list[str] = []
    size = 0
    for line in reversed(rendered):
        size += len(line.encode()) + 1
        if size > LOG_LIMIT_BYTES:
            break
        out.append(line)
    return "".join(f"{line}\n" for line in reversed(out))


def total_cpu(containers: list[ContainerDef]) -> float:
    return sum(c.cpu for c in containers if not c.init)


def cores_for_quota(cpu: float) -> int:
    return math.ceil(round(cpu, 6))
