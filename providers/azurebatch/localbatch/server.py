"""The local Batch service: state, the task simulation, spec checks, shared-key checks, HTTP.

**The pipeline.** Every request is matched to a spec operation, its shared-key signature verified
(:mod:`.auth`, 401/403 as Azure answers), throttled (token bucket per account: 429 with
Retry-After), validated (path, query, headers, body) against the compiled spec, then served. Every
response is validated against the operation's declared status, body schema and header formats
before it leaves; a failure on either side is recorded (``validation_failures``) and answered with a
400 (request) or a 500 (response). Tests assert there are none.

**The simulation** is evaluated lazily at each request, from a monotonic clock:

- A pool has ``dedicated`` + ``lowPriority`` nodes (changeable at any time through the admin API;
  tasks on a removed node are requeued: back to ``active``, ``requeueCount`` + 1) and
  ``taskSlotsPerNode`` slots per node.
- A task is ``active`` until a slot of its job's pool is free (at least ``schedule_seconds``), then
  ``preparing`` on that node for ``prepare_seconds``, then ``running``, then ``completed``.
- What a running task does comes from its environment (the pod's env): ``LOCALBATCH_STDOUT`` and
  ``LOCALBATCH_STDERR`` are written to ``stdout.txt``/``stderr.txt`` when it starts;
  ``LOCALBATCH_TICKS=N`` appends ``tick 1`` .. ``tick N`` to stdout, one every
  ``LOCALBATCH_TICK_SECONDS`` (0.2); it completes with ``LOCALBATCH_EXIT_CODE`` (0) after
  ``LOCALBATCH_RUN_SECONDS``, or after its last tick, or never (a server) without either. The admin
  API can complete a running task with an exit code. A non-zero exit is retried up to
  ``constraints.maxTaskRetryCount`` times (``retryCount`` + 1), ``maxWallClockTime`` ends it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import email.utils
import json
import logging
import math
import re
import time
import traceback
import urllib.parse
import uuid
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from aiohttp import web

from providers.swagger import (
    READONLY_MARK,
    SECRET_MARK,
    Operation,
    coerce_parameter,
    compile_definition,
    strip_marked,
)

from . import auth, odata
from .spec import SpecDocument, load_example

log = logging.getLogger(__name__)

DEFAULT_ACCOUNT = "localbatch"
# A fixed, public test key (base64 of 32 bytes): the local service is for tests, never for secrets.
DEFAULT_KEY = base64.b64encode(b"localbatch-test-key-0123456789ab").decode()
ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_COMMAND_LINE = 32768
MAX_BODY_BYTES = 1024 * 1024
ODATA_JSON = "application/json;odata=minimalmetadata"
ADMIN_PREFIX = "/_localbatch/"
FOREVER = "P10675199DT2H48M5.4775807S"  # what the service reports for "no limit"


@cache
def default_spec() -> SpecDocument:
    """The shipped document, compiled once per process."""
    return SpecDocument()


def rfc1123(moment: dt.datetime) -> str:
    return email.utils.format_datetime(moment.astimezone(dt.UTC), usegmt=True)


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_DURATION = re.compile(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?")


def duration_seconds(text: str) -> float | None:
    found = _DURATION.fullmatch(text)
    if found is None:
        return None
    days, hours, minutes, seconds = (float(g) if g else 0.0 for g in found.groups())
    return days * 86400 + hours * 3600 + minutes * 60 + seconds


def _header_value(schema: Mapping[str, Any], raw: str) -> Any:
    """A header's text as the JSON value its declared type describes (a wrong text stays a string)."""
    kind = schema.get("type")
    if kind == "boolean" and raw in ("true", "false"):
        return raw == "true"
    if kind == "integer" and re.fullmatch(r"-?\d+", raw):
        return int(raw)
    return raw


# ---------------------------------------------------------------------------------------------
# Responses and errors


@dataclass
class BatchResponse:
    status: int
    body: Any = None  # JSON value; None: no body
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None  # a file's bytes (application/octet-stream)


def error_body(code: str, message: str, values: Mapping[str, str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": {"lang": "en-US", "value": message}}
    if values:
        body["values"] = [{"key": k, "value": v} for k, v in values.items()]
    return body


class BatchError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        values: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.values = dict(values or {})
        self.headers = dict(headers or {})

    def response(self) -> BatchResponse:
        return BatchResponse(
            self.status, error_body(self.code, self.message, self.values), dict(self.headers)
        )


@dataclass
class Fault:
    operation_id: str
    status: int
    code: str
    message: str
    times: int
    headers: dict[str, str]


# ---------------------------------------------------------------------------------------------
# State


class Clock:
    """Monotonic seconds (advanceable by tests) and the wall time they correspond to."""

    def __init__(self) -> None:
        self._mono0 = time.monotonic()
        self._wall0 = dt.datetime.now(dt.UTC)
        self.offset = 0.0

    def now(self) -> float:
        return time.monotonic() - self._mono0 + self.offset

    def wall(self, t: float) -> dt.datetime:
        return self._wall0 + dt.timedelta(seconds=t)

    def advance(self, seconds: float) -> None:
        self.offset += max(0.0, seconds)


@dataclass
class Pool:
    id: str
    vm_size: str
    dedicated: int
    low_priority: int
    created: float
    state: str = "active"
    task_slots_per_node: int = 1
    container_type: str | None = "dockerCompatible"
    static: dict[str, Any] | None = None  # seeded from an example: answered as stored

    def node_ids(self) -> list[tuple[str, bool]]:
        return [(f"tvmps_{self.id}_d{i}", True) for i in range(self.dedicated)] + [
            (f"tvmps_{self.id}_l{i}", False) for i in range(self.low_priority)
        ]


@dataclass
class TaskFile:
    content: bytearray
    created: float
    modified: float


@dataclass
class Job:
    id: str
    body: dict[str, Any]
    created: float
    state: str = "active"
    state_since: float = 0.0
    deleting_at: float | None = None
    etag: int = 1

    @property
    def pool_id(self) -> str:
        return str(self.body.get("poolInfo", {}).get("poolId", ""))


@dataclass
class Task:
    job: str
    body: dict[str, Any]
    created: float
    state: str = "active"
    state_since: float = 0.0
    previous: tuple[str, float] | None = None
    node: str | None = None
    started: float | None = None
    ended: float | None = None
    exit_code: int | None = None
    failure: dict[str, Any] | None = None
    retries: int = 0
    last_retry: float | None = None
    requeues: int = 0
    last_requeue: float | None = None
    ticks: int = 0
    waiting_since: float = 0.0  # the last time it was active with no free slot
    files: dict[str, TaskFile] = field(default_factory=dict)
    etag: int = 1
    static: dict[str, Any] | None = None

    @property
    def id(self) -> str:
        return str(self.body["id"])

    def env(self, name: str) -> str | None:
        for item in self.body.get("environmentSettings") or []:
            if item.get("name") == name:
                return str(item.get("value", ""))
        return None

    def env_float(self, name: str) -> float | None:
        raw = self.env(name)
        try:
            return float(raw) if raw is not None else None
        except ValueError:
            return None


def _key(identifier: str) -> str:
    return identifier.lower()  # Batch ids are case-preserving and case-insensitive


# ---------------------------------------------------------------------------------------------
# The service


class LocalBatch:
    """One Batch account's data plane (several accounts may share it: ``accounts``)."""

    def __init__(
        self,
        *,
        accounts: Mapping[str, str] | None = None,
        throttling: bool = True,
        requests_per_second: float = 100.0,
        burst: int = 500,
        schedule_seconds: float = 0.1,
        prepare_seconds: float = 0.2,
        delete_seconds: float = 0.2,
        page_size: int = 1000,
        spec: SpecDocument | None = None,
    ) -> None:
        self.spec = spec if spec is not None else default_spec()
        self.accounts = dict(accounts or {DEFAULT_ACCOUNT: DEFAULT_KEY})
        self.throttling = throttling
        self.requests_per_second = requests_per_second
        self.burst = burst
        self.schedule_seconds = schedule_seconds
        self.prepare_seconds = prepare_seconds
        self.delete_seconds = delete_seconds
        self.page_size = page_size
        self.clock = Clock()
        self.pools: dict[str, Pool] = {}
        self.jobs: dict[str, Job] = {}
        self.tasks: dict[tuple[str, str], Task] = {}
        self.validation_failures: list[str] = []
        self.calls: Counter[str] = Counter()
        self.faults: list[Fault] = []
        self.base_url: str | None = None
        self._tokens = float(burst)
        self._tokens_at = 0.0
        self.throttled = 0
        self._error_validator = self.spec.validator_for({"$ref": "#/definitions/BatchError"}, "response")
        self._task_schema = compile_definition(self.spec.spec, "BatchTask", "response")
        self._handlers: dict[str, Callable[[Request], Awaitable[BatchResponse]]] = {
            "Pools_GetPool": self.get_pool,
            "Pools_ListPools": self.list_pools,
            "Pools_PoolExists": self.pool_exists,
            "Pools_ListPoolNodeCounts": self.list_pool_node_counts,
            "Nodes_ListNodes": self.list_nodes,
            "Nodes_GetNode": self.get_node,
            "Jobs_CreateJob": self.create_job,
            "Jobs_GetJob": self.get_job,
            "Jobs_ListJobs": self.list_jobs,
            "Jobs_DeleteJob": self.delete_job,
            "Tasks_CreateTask": self.create_task,
            "Tasks_ListTasks": self.list_tasks,
            "Tasks_GetTask": self.get_task,
            "Tasks_DeleteTask": self.delete_task,
            "Tasks_ReplaceTask": self.replace_task,
            "Tasks_TerminateTask": self.terminate_task,
            "Tasks_ListTaskFiles": self.list_task_files,
            "Tasks_GetTaskFile": self.get_task_file,
            "Tasks_GetTaskFileProperties": self.get_task_file_properties,
        }

    # --- admin -------------------------------------------------------------------------------
    def take_validation_failures(self) -> list[str]:
        taken, self.validation_failures = self.validation_failures, []
        return taken

    def record_failure(self, message: str) -> None:
        log.warning("validation failure: %s", message)
        self.validation_failures.append(message)

    def inject_fault(
        self,
        operation_id: str,
        status: int,
        code: str,
        message: str = "Injected by the test.",
        *,
        times: int = 1,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if operation_id not in self.spec.by_id:
            raise KeyError(operation_id)
        self.faults.append(Fault(operation_id, status, code, message, times, dict(headers or {})))

    def set_pool(
        self,
        pool_id: str,
        *,
        vm_size: str | None = None,
        dedicated: int | None = None,
        low_priority: int | None = None,
        state: str | None = None,
        task_slots_per_node: int | None = None,
        container_type: str | None = "keep",
    ) -> Pool:
        """Create or change a pool (the admin API's ``PUT /_localbatch/pools/{id}``)."""
        t = self.clock.now()
        pool = self.pools.get(_key(pool_id))
        if pool is None:
            pool = self.pools[_key(pool_id)] = Pool(pool_id, vm_size or "standard_nc6s_v3", 0, 0, t)
        before = {node for node, _ in pool.node_ids()}
        if vm_size is not None:
            pool.vm_size = vm_size
        if dedicated is not None:
            pool.dedicated = max(0, dedicated)
        if low_priority is not None:
            pool.low_priority = max(0, low_priority)
        if state is not None:
            pool.state = state
        if task_slots_per_node is not None:
            pool.task_slots_per_node = max(1, task_slots_per_node)
        if container_type != "keep":
            pool.container_type = container_type
        gone = before - {node for node, _ in pool.node_ids()}
        for task in self.tasks.values():
            if task.node in gone and task.state in ("preparing", "running"):
                self._requeue(task, t)
        return pool

    def complete_task(self, job_id: str, task_id: str, exit_code: int) -> None:
        task = self.tasks.get((_key(job_id), _key(task_id)))
        if task is None:
            raise KeyError(f"task {job_id}/{task_id}")
        self.advance()
        t = self.clock.now()
        if task.state != "running":
            raise ValueError(f"task {job_id}/{task_id} is {task.state}, not running")
        self._finish(task, t, exit_code)

    def seed_example(self, name: str) -> None:
        """What the stored example ``name`` refers to, so that replaying its request gives its response."""
        example = load_example(name)
        params = example["parameters"]
        t = self.clock.now()
        op = example["operationId"]
        if op == "Pools_GetPool":
            body = example["responses"]["200"]["body"]
            pool = self.set_pool(body["id"], vm_size=body["vmSize"])
            pool.static = body
        if "job" in params:  # Jobs_CreateJob: its pool
            self.set_pool(params["job"]["poolInfo"]["poolId"], dedicated=1)
        if "jobId" in params:
            self.set_pool("pool-of-examples", dedicated=1)
            job_id = params["jobId"]
            if _key(job_id) not in self.jobs:
                self.jobs[_key(job_id)] = Job(
                    job_id, {"id": job_id, "poolInfo": {"poolId": "pool-of-examples"}}, t
                )
        listed = example["responses"].get("200", {}).get("body") if op == "Tasks_ListTasks" else None
        for task_body in (listed or {}).get("value", []):
            stored = Task(params["jobId"], {"id": task_body["id"], "commandLine": ""}, t, static=task_body)
            self.tasks[(_key(params["jobId"]), _key(task_body["id"]))] = stored
        if "filePath" in params:
            response = example["responses"]["200"]
            content = str(response.get("body", "")).encode()
            stamp = email.utils.parsedate_to_datetime(response["Last-Modified"])
            task = Task(params["jobId"], {"id": params["taskId"], "commandLine": ""}, t, state="completed")
            file_t = (stamp - self.clock.wall(0)).total_seconds()
            task.files[params["filePath"]] = TaskFile(bytearray(content), file_t, file_t)
            self.tasks[(_key(params["jobId"]), _key(params["taskId"]))] = task

    # --- the simulation ----------------------------------------------------------------------
    def _set_state(self, task: Task, state: str, t: float) -> None:
        task.previous = (task.state, task.state_since)
        task.state, task.state_since = state, t
        task.etag += 1

    def _requeue(self, task: Task, t: float) -> None:
        task.requeues += 1
        task.last_requeue = t
        task.node = None
        task.started = None
        self._set_state(task, "active", t)

    def _finish(
        self, task: Task, t: float, exit_code: int | None, failure: dict[str, Any] | None = None
    ) -> None:
        task.ended = t
        task.exit_code = exit_code
        if failure is None and exit_code not in (0, None):
            retries_allowed = int((task.body.get("constraints") or {}).get("maxTaskRetryCount", 0))
            if retries_allowed == -1 or task.retries < retries_allowed:
                task.retries += 1
                task.last_retry = t
                task.started, task.ended, task.ticks = t, None, 0
                self._write(task, "stdout.txt", f"(retry {task.retries})\n", t)
                task.etag += 1
                return
            failure = {
                "category": "usererror",
                "code": "FailureExitCode",
                "message": "The task exited with an exit code representing a failure",
            }
        task.failure = failure
        self._set_state(task, "completed", t)

    def _write(self, task: Task, path: str, text: str, t: float) -> None:
        existing = task.files.get(path)
        if existing is None:
            existing = task.files[path] = TaskFile(bytearray(), t, t)
        existing.content += text.encode()
        existing.modified = t

    def _used_slots(self) -> Counter[str]:
        return Counter(
            task.node for task in self.tasks.values() if task.node and task.state in ("preparing", "running")
        )

    def advance(self) -> None:
        t = self.clock.now()
        for key in [
            k for k, job in self.jobs.items() if job.deleting_at is not None and t >= job.deleting_at
        ]:
            del self.jobs[key]
            for task_key in [tk for tk in self.tasks if tk[0] == key]:
                del self.tasks[task_key]
        used = self._used_slots()
        for task in sorted(self.tasks.values(), key=lambda x: x.created):
            if task.static is not None or task.state == "completed":
                continue
            job = self.jobs.get(_key(task.job))
            pool = self.pools.get(_key(job.pool_id)) if job is not None else None
            if task.state == "active":
                free = []
                if pool is not None and pool.state == "active":
                    free = [node for node, _ in pool.node_ids() if used[node] < pool.task_slots_per_node]
                if not free:
                    task.waiting_since = t  # scheduling starts once a slot is free
                    continue
                ready = max(task.state_since, task.waiting_since) + self.schedule_seconds
                if t < ready:
                    continue
                task.node = min(free, key=lambda n: used[n])
                used[task.node] += 1
                self._set_state(task, "preparing", ready)
            if task.state == "preparing" and t - task.state_since >= self.prepare_seconds:
                start = task.state_since + self.prepare_seconds
                self._set_state(task, "running", start)
                task.started = start
                self._write(task, "stdout.txt", task.env("LOCALBATCH_STDOUT") or "", start)
                self._write(task, "stderr.txt", task.env("LOCALBATCH_STDERR") or "", start)
            if task.state == "running" and task.started is not None:
                self._run(task, t)

    def _run(self, task: Task, t: float) -> None:
        assert task.started is not None
        ticks = int(task.env_float("LOCALBATCH_TICKS") or 0)
        tick_seconds = task.env_float("LOCALBATCH_TICK_SECONDS") or 0.2
        run_seconds = task.env_float("LOCALBATCH_RUN_SECONDS")
        if run_seconds is None and ticks:
            run_seconds = ticks * tick_seconds
        due = min(ticks, int((t - task.started) / tick_seconds))
        while task.ticks < due:
            task.ticks += 1
            self._write(task, "stdout.txt", f"tick {task.ticks}\n", task.started + task.ticks * tick_seconds)
        wall_limit = duration_seconds((task.body.get("constraints") or {}).get("maxWallClockTime") or "")
        if (
            wall_limit is not None
            and t - task.started >= wall_limit
            and (run_seconds is None or run_seconds > wall_limit)
        ):
            self._finish(
                task,
                task.started + wall_limit,
                None,
                {
                    "category": "usererror",
                    "code": "MaxWallClockTimeExceeded",
                    "message": "The task ran longer than its maxWallClockTime",
                },
            )
            return
        if run_seconds is not None and t - task.started >= run_seconds:
            code = task.env("LOCALBATCH_EXIT_CODE")
            self._finish(
                task, task.started + run_seconds, int(code) if code and code.lstrip("-").isdigit() else 0
            )
            if task.state == "running":  # retried
                self._run(task, t)

    # --- rendering ---------------------------------------------------------------------------
    def _url(self, request: Request, path: str) -> str:
        return f"{request.origin}{path}"

    def render_pool(self, pool: Pool, request: Request) -> dict[str, Any]:
        if pool.static is not None:
            return dict(pool.static)
        created = iso(self.clock.wall(pool.created))
        body: dict[str, Any] = {
            "id": pool.id,
            "url": self._url(request, f"/pools/{pool.id}"),
            "eTag": f"0x{zlib.crc32(f'{pool.id}:{pool.dedicated}:{pool.low_priority}'.encode()):X}"[:18],
            "lastModified": created,
            "creationTime": created,
            "state": pool.state,
            "stateTransitionTime": created,
            "allocationState": "steady",
            "allocationStateTransitionTime": created,
            "vmSize": pool.vm_size,
            "resizeTimeout": "PT15M",
            "currentDedicatedNodes": pool.dedicated,
            "currentLowPriorityNodes": pool.low_priority,
            "targetDedicatedNodes": pool.dedicated,
            "targetLowPriorityNodes": pool.low_priority,
            "enableAutoScale": False,
            "enableInterNodeCommunication": False,
            "taskSlotsPerNode": pool.task_slots_per_node,
            "taskSchedulingPolicy": {"nodeFillType": "spread"},
            "virtualMachineConfiguration": {
                "imageReference": {
                    "publisher": "microsoft-dsvm",
                    "offer": "ubuntu-hpc",
                    "sku": "2204",
                    "version": "latest",
                },
                "nodeAgentSKUId": "batch.node.ubuntu 22.04",
            },
        }
        if pool.container_type:
            body["virtualMachineConfiguration"]["containerConfiguration"] = {"type": pool.container_type}
        return body

    def render_node(self, pool: Pool, node: str, dedicated: bool, request: Request) -> dict[str, Any]:
        running = [x for x in self.tasks.values() if x.node == node and x.state in ("preparing", "running")]
        index = [n for n, _ in pool.node_ids()].index(node)
        created = iso(self.clock.wall(pool.created))
        return {
            "id": node,
            "url": self._url(request, f"/pools/{pool.id}/nodes/{node}"),
            "state": "running" if running else "idle",
            "schedulingState": "enabled",
            "stateTransitionTime": created,
            "allocationTime": created,
            "lastBootTime": created,
            "ipAddress": f"10.{(zlib.crc32(pool.id.encode()) % 200) + 10}.{index // 250}.{index % 250 + 4}",
            "affinityId": f"TVM:{node}",
            "vmSize": pool.vm_size,
            "totalTasksRun": len(running),
            "runningTasksCount": len(running),
            "runningTaskSlotsCount": len(running),
            "totalTasksSucceeded": 0,
            "isDedicated": dedicated,
        }

    def render_job(self, job: Job, request: Request) -> dict[str, Any]:
        created = iso(self.clock.wall(job.created))
        return {
            **job.body,
            "url": self._url(request, f"/jobs/{job.id}"),
            "eTag": f"0x{job.etag:015X}",
            "lastModified": created,
            "creationTime": created,
            "state": job.state,
            "stateTransitionTime": iso(self.clock.wall(job.state_since or job.created)),
            "priority": job.body.get("priority", 0),
            "allowTaskPreemption": job.body.get("allowTaskPreemption", False),
            "maxParallelTasks": job.body.get("maxParallelTasks", -1),
            "constraints": job.body.get("constraints")
            or {"maxWallClockTime": FOREVER, "maxTaskRetryCount": 0},
            "onAllTasksComplete": job.body.get("onAllTasksComplete", "noaction"),
            "onTaskFailure": job.body.get("onTaskFailure", "noaction"),
            "executionInfo": {"startTime": created, "poolId": job.pool_id},
        }

    def render_task(self, task: Task, request: Request) -> dict[str, Any]:
        """The task as the service returns it: secrets (``x-ms-secret``: registry passwords) left out."""
        rendered: dict[str, Any] = strip_marked(
            self._render_task(task, request), self._task_schema, SECRET_MARK
        )
        return rendered

    def _render_task(self, task: Task, request: Request) -> dict[str, Any]:
        if task.static is not None:
            return dict(task.static)
        wall = self.clock.wall
        body: dict[str, Any] = {
            **task.body,
            "url": self._url(request, f"/jobs/{task.job}/tasks/{task.id}"),
            "eTag": f"0x{task.etag:015X}",
            "creationTime": iso(wall(task.created)),
            "lastModified": iso(wall(task.state_since)),
            "state": task.state,
            "stateTransitionTime": iso(wall(task.state_since)),
        }
        constraints = dict(task.body.get("constraints") or {})
        constraints.setdefault("maxWallClockTime", FOREVER)
        constraints.setdefault("retentionTime", "P7D")
        constraints.setdefault("maxTaskRetryCount", 0)
        body["constraints"] = constraints
        body.setdefault("requiredSlots", 1)
        if task.previous is not None:
            body["previousState"] = task.previous[0]
            body["previousStateTransitionTime"] = iso(wall(task.previous[1]))
        execution: dict[str, Any] = {"retryCount": task.retries, "requeueCount": task.requeues}
        if task.started is not None:
            execution["startTime"] = iso(wall(task.started))
        if task.last_retry is not None:
            execution["lastRetryTime"] = iso(wall(task.last_retry))
        if task.last_requeue is not None:
            execution["lastRequeueTime"] = iso(wall(task.last_requeue))
        if task.state == "completed":
            if task.ended is not None:
                execution["endTime"] = iso(wall(task.ended))
            if task.exit_code is not None:
                execution["exitCode"] = task.exit_code
            if task.failure is not None:
                execution["failureInfo"] = task.failure
            execution["result"] = "failure" if task.failure is not None else "success"
        body["executionInfo"] = execution
        if task.node is not None:
            job = self.jobs.get(_key(task.job))
            pool_id = job.pool_id if job else ""
            node_url = self._url(request, f"/pools/{pool_id}/nodes/{task.node}")
            body["nodeInfo"] = {
                "affinityId": f"TVM:{task.node}",
                "nodeUrl": node_url,
                "poolId": pool_id,
                "nodeId": task.node,
                "taskRootDirectory": f"workitems/{task.job}/job-1/{task.id}",
                "taskRootDirectoryUrl": f"{node_url}/files/workitems/{task.job}/job-1/{task.id}",
            }
        return body

    # --- helpers -----------------------------------------------------------------------------
    def _job(self, request: Request) -> Job:
        job_id = request.path_values["jobId"]
        job = self.jobs.get(_key(job_id))
        if job is None:
            raise BatchError(404, "JobNotFound", "The specified job does not exist.")
        return job

    def _task(self, request: Request) -> Task:
        job = self._job(request)
        task = self.tasks.get((_key(job.id), _key(request.path_values["taskId"])))
        if task is None:
            raise BatchError(404, "TaskNotFound", "The specified task does not exist.")
        return task

    def _pool(self, request: Request) -> Pool:
        pool = self.pools.get(_key(request.path_values["poolId"]))
        if pool is None:
            raise BatchError(404, "PoolNotFound", "The specified pool does not exist.")
        return pool

    def _page(
        self,
        request: Request,
        items: list[dict[str, Any]],
        allowed_filter: frozenset[str],
        definition: str,
    ) -> BatchResponse:
        text = request.params.get("$filter")
        try:
            if text:
                predicate = odata.parse_filter(str(text), allowed_filter)
                items = [item for item in items if predicate(item)]
            selected = request.params.get("$select")
            if selected:
                known = self.spec.spec["definitions"][definition]["properties"].keys()
                items = [odata.select(item, selected, known) for item in items]
        except odata.ODataError as e:
            raise BatchError(
                400,
                "InvalidQueryParameterValue",
                "Value for one of the query parameters specified in the request URI is invalid.",
                {"QueryParameterName": "$filter" if text else "$select", "Reason": str(e)},
            ) from None
        size = min(int(request.params.get("maxresults") or self.page_size), self.page_size)
        skip = int(request.raw.query.get("$skiptoken", "0") or 0)
        page = items[skip : skip + size]
        body: dict[str, Any] = {"value": page}
        if skip + size < len(items):
            query = {k: v for k, v in request.raw.query.items() if k not in ("$skiptoken",)}
            query["$skiptoken"] = str(skip + size)
            body["odata.nextLink"] = f"{request.origin}{request.path}?{urllib.parse.urlencode(query)}"
        return BatchResponse(200, body)

    def _entity_headers(self, etag: str, modified: dt.datetime) -> dict[str, str]:
        return {"ETag": etag, "Last-Modified": rfc1123(modified)}

    # --- pools and nodes ---------------------------------------------------------------------
    async def get_pool(self, request: Request) -> BatchResponse:
        pool = self._pool(request)
        body = self.render_pool(pool, request)
        selected = request.params.get("$select")
        if selected:
            body = {k: v for k, v in body.items() if k in selected}
        return BatchResponse(200, body, {"ETag": str(body.get("eTag", "0x1"))})

    async def pool_exists(self, request: Request) -> BatchResponse:
        if _key(request.path_values["poolId"]) in self.pools:
            return BatchResponse(200)
        return BatchResponse(404)

    async def list_pools(self, request: Request) -> BatchResponse:
        items = [self.render_pool(p, request) for p in self.pools.values()]
        return self._page(request, items, odata.POOL_FILTER, "BatchPool")

    async def list_pool_node_counts(self, request: Request) -> BatchResponse:
        def counts(nodes: list[str]) -> dict[str, int]:
            used = self._used_slots()
            zero = dict.fromkeys(
                (
                    "creating",
                    "idle",
                    "offline",
                    "preempted",
                    "rebooting",
                    "reimaging",
                    "running",
                    "starting",
                    "startTaskFailed",
                    "leavingPool",
                    "unknown",
                    "unusable",
                    "waitingForStartTask",
                    "deallocated",
                    "deallocating",
                    "total",
                    "upgradingOS",
                ),
                0,
            )
            zero["running"] = sum(1 for n in nodes if used[n])
            zero["idle"] = len(nodes) - zero["running"]
            zero["total"] = len(nodes)
            return zero

        items = []
        for pool in self.pools.values():
            nodes = pool.node_ids()
            items.append(
                {
                    "poolId": pool.id,
                    "dedicated": counts([n for n, d in nodes if d]),
                    "lowPriority": counts([n for n, d in nodes if not d]),
                }
            )
        return self._page(request, items, frozenset({"poolId"}), "BatchPoolNodeCounts")

    async def list_nodes(self, request: Request) -> BatchResponse:
        pool = self._pool(request)
        items = [self.render_node(pool, n, d, request) for n, d in pool.node_ids()]
        return self._page(request, items, odata.NODE_FILTER, "BatchNode")

    async def get_node(self, request: Request) -> BatchResponse:
        pool = self._pool(request)
        for node, dedicated in pool.node_ids():
            if node.lower() == request.path_values["nodeId"].lower():
                return BatchResponse(200, self.render_node(pool, node, dedicated, request))
        raise BatchError(404, "NodeNotFound", "The specified node does not exist.")

    # --- jobs --------------------------------------------------------------------------------
    async def create_job(self, request: Request) -> BatchResponse:
        body = request.body
        job_id = str(body["id"])
        if not ID_RE.fullmatch(job_id):
            raise BatchError(
                400,
                "InvalidPropertyValue",
                "The value provided for one of the properties is invalid.",
                {"PropertyName": "id", "Reason": "at most 64 letters, digits, hyphens and underscores"},
            )
        existing = self.jobs.get(_key(job_id))
        if existing is not None:
            if existing.state == "deleting":
                raise BatchError(409, "JobBeingDeleted", "The specified job has been marked for deletion.")
            raise BatchError(409, "JobExists", "The specified job already exists.")
        if "poolId" not in body["poolInfo"]:
            raise BatchError(
                400,
                "MissingRequiredProperty",
                "A required property was not specified in the request body.",
                {"PropertyName": "poolInfo.poolId"},
            )
        job = Job(job_id, body, request.t, state_since=request.t)
        self.jobs[_key(job_id)] = job
        headers = self._entity_headers(f"0x{job.etag:015X}", self.clock.wall(request.t))
        headers["DataServiceId"] = self._url(request, f"/jobs/{job_id}")
        return BatchResponse(201, None, headers)

    async def get_job(self, request: Request) -> BatchResponse:
        job = self._job(request)
        body = self.render_job(job, request)
        if request.params.get("$select"):
            body = {k: v for k, v in body.items() if k in request.params["$select"]}
        return BatchResponse(
            200, body, self._entity_headers(f"0x{job.etag:015X}", self.clock.wall(job.created))
        )

    async def list_jobs(self, request: Request) -> BatchResponse:
        items = [self.render_job(j, request) for j in self.jobs.values()]
        return self._page(request, items, odata.JOB_FILTER, "BatchJob")

    async def delete_job(self, request: Request) -> BatchResponse:
        job = self._job(request)
        if job.state != "deleting":
            job.state, job.state_since, job.deleting_at = (
                "deleting",
                request.t,
                request.t + self.delete_seconds,
            )
            job.etag += 1
        return BatchResponse(202)

    # --- tasks -------------------------------------------------------------------------------
    def _check_task(self, body: Mapping[str, Any]) -> None:
        def invalid(name: str, reason: str) -> BatchError:
            return BatchError(
                400,
                "InvalidPropertyValue",
                "The value provided for one of the properties in the request body is invalid.",
                {"PropertyName": name, "Reason": reason},
            )

        if not ID_RE.fullmatch(str(body["id"])):
            raise invalid("id", "an id has at most 64 letters, digits, hyphens and underscores")
        if len(str(body["commandLine"])) > MAX_COMMAND_LINE:
            raise invalid("commandLine", f"commandLine cannot be more than {MAX_COMMAND_LINE} characters")
        if len(str(body.get("displayName", ""))) > 1024:
            raise invalid("displayName", "displayName cannot be more than 1024 characters")
        names = [str(e.get("name", "")) for e in body.get("environmentSettings") or []]
        for name in names:
            if not name or "=" in name:
                raise invalid("environmentSettings.name", f"{name!r} is not an environment variable name")
        if len({n.lower() for n in names}) != len(names):
            raise invalid("environmentSettings", "an environment variable is given twice")
        wall = (body.get("constraints") or {}).get("maxWallClockTime")
        if wall is not None and duration_seconds(str(wall)) is None:
            raise invalid("constraints.maxWallClockTime", "not a duration")

    async def create_task(self, request: Request) -> BatchResponse:
        job = self._job(request)
        if job.state != "active":
            raise BatchError(409, "JobNotActive", f"The specified job is in the {job.state} state.")
        body = request.body
        self._check_task(body)
        key = (_key(job.id), _key(str(body["id"])))
        if key in self.tasks:
            raise BatchError(409, "TaskExists", "The specified task already exists.")
        settings = body.get("containerSettings")
        pool = self.pools.get(_key(job.pool_id))
        if settings is not None and pool is not None and not pool.container_type:
            raise BatchError(
                409,
                "InvalidContainerSettings",
                "The task has containerSettings but its pool has no container configuration.",
            )
        task = Task(job.id, body, request.t, state_since=request.t)
        self.tasks[key] = task
        headers = self._entity_headers(f"0x{task.etag:015X}", self.clock.wall(request.t))
        headers["DataServiceId"] = self._url(request, f"/jobs/{job.id}/tasks/{task.id}")
        return BatchResponse(201, None, headers)

    async def list_tasks(self, request: Request) -> BatchResponse:
        job = self._job(request)
        items = [self.render_task(x, request) for k, x in self.tasks.items() if k[0] == _key(job.id)]
        return self._page(request, items, odata.TASK_FILTER, "BatchTask")

    async def get_task(self, request: Request) -> BatchResponse:
        task = self._task(request)
        body = self.render_task(task, request)
        if request.params.get("$select"):
            body = {k: v for k, v in body.items() if k in request.params["$select"]}
        return BatchResponse(
            200, body, self._entity_headers(f"0x{task.etag:015X}", self.clock.wall(task.state_since))
        )

    async def replace_task(self, request: Request) -> BatchResponse:
        """Only ``constraints`` can change (the other properties are read-only in the request)."""
        task = self._task(request)
        if task.state == "completed":
            raise BatchError(409, "TaskCompleted", "The specified task is already completed.")
        constraints = dict(request.body.get("constraints") or {})
        wall = constraints.get("maxWallClockTime")
        if wall is not None and duration_seconds(str(wall)) is None:
            raise BatchError(
                400,
                "InvalidPropertyValue",
                "The value provided for one of the properties is invalid.",
                {"PropertyName": "constraints.maxWallClockTime"},
            )
        task.body["constraints"] = {**(task.body.get("constraints") or {}), **constraints}
        task.etag += 1
        headers = self._entity_headers(f"0x{task.etag:015X}", self.clock.wall(request.t))
        headers["DataServiceId"] = self._url(request, f"/jobs/{task.job}/tasks/{task.id}")
        return BatchResponse(200, None, headers)

    async def delete_task(self, request: Request) -> BatchResponse:
        task = self._task(request)
        del self.tasks[(_key(task.job), _key(task.id))]
        return BatchResponse(200)

    async def terminate_task(self, request: Request) -> BatchResponse:
        task = self._task(request)
        if task.state == "completed":
            raise BatchError(409, "TaskCompleted", "The specified task is already completed.")
        task.ended = request.t
        task.failure = {
            "category": "usererror",
            "code": "TaskEnded",
            "message": "Task Was Ended by User Request",
        }
        self._set_state(task, "completed", request.t)
        headers = self._entity_headers(f"0x{task.etag:015X}", self.clock.wall(request.t))
        headers["DataServiceId"] = self._url(request, f"/jobs/{task.job}/tasks/{task.id}/terminate")
        return BatchResponse(204, None, headers)

    # --- task files --------------------------------------------------------------------------
    def _file(self, request: Request) -> tuple[Task, str, TaskFile]:
        task = self._task(request)
        path = request.path_values["filePath"]
        found = task.files.get(path)
        if found is None:
            raise BatchError(404, "FileNotFound", "The specified file does not exist.")
        return task, path, found

    def _file_headers(self, request: Request, task: Task, path: str, found: TaskFile) -> dict[str, str]:
        return {
            "ocp-creation-time": rfc1123(self.clock.wall(found.created)),
            "Last-Modified": rfc1123(self.clock.wall(found.modified)),
            "ocp-batch-file-isdirectory": "false",
            "ocp-batch-file-url": self._url(
                request, f"/jobs/{task.job}/tasks/{task.id}/files/{urllib.parse.quote(path, safe='')}"
            ),
            "ocp-batch-file-mode": "0100644",
        }

    async def list_task_files(self, request: Request) -> BatchResponse:
        task = self._task(request)
        items = []
        for path, found in sorted(task.files.items()):
            items.append(
                {
                    "name": path,
                    "url": self._url(request, f"/jobs/{task.job}/tasks/{task.id}/files/{path}"),
                    "isDirectory": False,
                    "properties": {
                        "creationTime": iso(self.clock.wall(found.created)),
                        "lastModified": iso(self.clock.wall(found.modified)),
                        "contentLength": str(len(found.content)),
                        "contentType": "text/plain",
                        "fileMode": "0100644",
                    },
                }
            )
        return self._page(request, items, frozenset({"name"}), "BatchNodeFile")

    async def get_task_file(self, request: Request) -> BatchResponse:
        task, path, found = self._file(request)
        content = bytes(found.content)
        wanted = request.raw.headers.get("ocp-range")
        if wanted:
            matched = re.fullmatch(r"bytes=(\d+)-(\d*)", wanted.strip())
            if matched is None:
                raise BatchError(
                    400,
                    "InvalidHeaderValue",
                    "The value for one of the HTTP headers is invalid.",
                    {"HeaderName": "ocp-range"},
                )
            start = int(matched.group(1))
            end = int(matched.group(2)) if matched.group(2) else len(content) - 1
            if start > len(content) or (end < start and start != len(content)):
                raise BatchError(
                    416, "InvalidRange", "The range specified is invalid for the current file size."
                )
            content = content[start : end + 1]
        return BatchResponse(200, None, self._file_headers(request, task, path, found), raw=content)

    async def get_task_file_properties(self, request: Request) -> BatchResponse:
        task, path, found = self._file(request)
        headers = self._file_headers(request, task, path, found)
        headers["Content-Length"] = str(len(found.content))
        return BatchResponse(200, None, headers)

    # --- the HTTP pipeline -------------------------------------------------------------------
    def _admit(self, t: float) -> int:
        """0 when the request may go on, else the Retry-After seconds."""
        if not self.throttling:
            return 0
        self._tokens = min(
            float(self.burst), self._tokens + max(0.0, t - self._tokens_at) * self.requests_per_second
        )
        self._tokens_at = t
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0
        self.throttled += 1
        if self.requests_per_second <= 0:
            return 60
        return max(1, math.ceil((1.0 - self._tokens) / self.requests_per_second))

    def validate_request(
        self, op: Operation, values: Mapping[str, str], request: web.Request, body_text: str
    ) -> tuple[list[str], dict[str, Any], Any]:
        failures: list[str] = []
        params: dict[str, Any] = {}
        query = request.query
        versions = query.getall("api-version", [])
        if not versions:
            failures.append("query parameter 'api-version' is required")
        elif versions[0] != self.spec.api_version:
            failures.append(f"api-version {versions[0]!r} is not {self.spec.api_version!r}")
        for param in op.parameters:
            raw: str | None
            if param.location == "path":
                raw = values.get(param.name)
            elif param.location == "query":
                given = query.getall(param.name, [])
                if len(given) > 1:
                    failures.append(f"query parameter {param.name!r} is given {len(given)} times")
                raw = given[0] if given else None
            elif param.location == "header":
                raw = request.headers.get(param.name)
            else:
                continue
            if raw is None:
                if param.required and param.name != "api-version":
                    failures.append(f"{param.location} parameter {param.name!r} is required")
                continue
            value = coerce_parameter(param, raw)
            failures += [
                f"{param.location} parameter {param.name!r}: {e}" for e in param.validator.errors(value)
            ]
            params[param.name] = value
        declared = {p.name for p in op.parameters if p.location == "query"}
        for name in set(query.keys()):
            if name not in declared and not (op.pageable and name == "$skiptoken"):
                failures.append(f"query parameter {name!r} is not declared by {op.operation_id}")
        body: Any = None
        if op.body is None:
            if body_text.strip():
                failures.append(f"{op.operation_id} takes no request body, but one was sent")
        elif not body_text.strip():
            if op.body.required:
                failures.append(f"body parameter {op.body.name!r} is required")
        else:
            content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if content_type != "application/json":
                failures.append(f"request body has Content-Type {content_type!r}, not application/json")
            try:
                body = json.loads(body_text)
            except ValueError as e:
                failures.append(f"request body is not JSON: {e}")
            else:
                failures += [f"body {op.body.name!r}: {e}" for e in op.body.validator.errors(body)]
                schema = op.body.validator.schema
                body = strip_marked(body, schema, READONLY_MARK)
        return failures, params, body

    def validate_response(self, op: Operation | None, response: BatchResponse) -> list[str]:
        if op is None:
            return (
                [f"body: {e}" for e in self._error_validator.errors(response.body)] if response.body else []
            )
        declared, validator = op.response_validator(response.status)
        if not declared:
            return [f"status {response.status} is not declared by {op.operation_id}"]
        problems: list[str] = []
        key = str(response.status) if str(response.status) in op.responses else "default"
        for name, value in response.headers.items():
            header = op.headers.get(key, {}).get(name.lower())
            if header is not None:
                problems += [
                    f"header {name}: {e}" for e in header.errors(_header_value(header.schema, value))
                ]
        if key in op.binary:
            if response.body is not None:
                problems.append(f"status {response.status} is a byte stream, but a JSON body was sent")
            return problems
        if response.raw is not None and op.method != "HEAD":
            problems.append(f"status {response.status} declares no byte stream, but one was sent")
        if validator is None:
            if response.body is not None:
                problems.append(f"status {response.status} declares no body, but one was sent")
            return problems
        if response.body is None:
            return [*problems, f"status {response.status} declares a body, but none was sent"]
        return problems + [f"body: {e}" for e in validator.errors(response.body)]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw_path, _, raw_query = request.raw_path.partition("?")
        t = self.clock.now()
        where = f"{request.method} {request.path_qs}"
        headers: dict[str, str] = {"request-id": str(uuid.uuid4()), "DataServiceVersion": "3.0"}
        if request.headers.get("return-client-request-id", "").lower() == "true":
            headers["client-request-id"] = request.headers.get("client-request-id", "")
        op, values, known = self.spec.match(request.method, raw_path)
        body_text = await request.text()
        response: BatchResponse
        failure = auth.verify(
            request.method, raw_path, raw_query, request.headers, self.accounts, dt.datetime.now(dt.UTC)
        )
        retry_after = 0 if failure is not None else self._admit(t)
        if failure is not None:
            response = BatchResponse(failure.status, error_body(failure.code, failure.message))
        elif retry_after:
            response = BatchResponse(
                429,
                error_body("TooManyRequests", "The server is busy: too many requests for this account."),
                {"Retry-After": str(retry_after)},
            )
        elif op is None:
            self.record_failure(
                f"request {where}: "
                + ("the method is not declared for this path" if known else "no operation")
            )
            response = BatchError(
                405 if known else 404,
                "UnsupportedOperation" if known else "InvalidUri",
                "The requested operation is not supported." if known else "The requested URI does not exist.",
            ).response()
        elif len(body_text.encode()) > MAX_BODY_BYTES:
            response = BatchError(413, "RequestBodyTooLarge", "The request body is too large.").response()
        else:
            failures, params, body = self.validate_request(op, values, request, body_text)
            if failures:
                for problem in failures:
                    self.record_failure(f"request {where} ({op.operation_id}): {problem}")
                response = BatchError(
                    400,
                    "InvalidRequestBody" if body_text.strip() else "InvalidQueryParameterValue",
                    "The request is not valid: " + "; ".join(failures),
                ).response()
            else:
                self.advance()
                response = await self._dispatch(op, Request(request, values, params, body, t))
        problems = self.validate_response(op, response)
        if problems:
            for problem in problems:
                self.record_failure(
                    f"response {response.status} to {where} ({op.operation_id if op else '-'}): {problem}"
                )
            response = BatchError(
                500, "InternalServerError", "Invalid response: " + "; ".join(problems)
            ).response()
        self.calls[f"{op.operation_id if op else 'unknown'} {response.status}"] += 1
        headers.update(response.headers)
        if response.raw is not None:
            if request.method == "HEAD":
                return web.Response(status=response.status, headers=headers)
            return web.Response(
                status=response.status,
                body=response.raw,
                content_type="application/octet-stream",
                headers=headers,
            )
        if request.method == "HEAD" or response.body is None:
            return web.Response(status=response.status, headers=headers)
        headers["Content-Type"] = ODATA_JSON
        return web.Response(status=response.status, body=json.dumps(response.body).encode(), headers=headers)

    async def _dispatch(self, op: Operation, request: Request) -> BatchResponse:
        for fault in self.faults:
            if fault.operation_id == op.operation_id and fault.times > 0:
                fault.times -= 1
                if fault.times == 0:
                    self.faults.remove(fault)
                return BatchResponse(fault.status, error_body(fault.code, fault.message), dict(fault.headers))
        handler = self._handlers.get(op.operation_id)
        if handler is None:
            return BatchError(501, "NotImplemented", f"{op.operation_id} is not implemented here.").response()
        try:
            return await handler(request)
        except BatchError as e:
            return e.response()
        except Exception:
            self.record_failure(f"server error in {op.operation_id}: {traceback.format_exc()}")
            return BatchError(500, "InternalServerError", "The local Batch service failed.").response()


@dataclass
class Request:
    """What a handler sees: the path values, validated parameters and body, the time of arrival."""

    raw: web.Request
    path_values: Mapping[str, str]
    params: dict[str, Any]
    body: Any
    t: float

    @property
    def origin(self) -> str:
        return f"{self.raw.scheme}://{self.raw.host}"

    @property
    def path(self) -> str:
        return self.raw.raw_path.split("?", 1)[0]


# ---------------------------------------------------------------------------------------------
# The application

BATCH_KEY = web.AppKey("localbatch", LocalBatch)


def create_app(batch: LocalBatch | None = None, **options: Any) -> web.Application:
    from . import admin

    batch = batch if batch is not None else LocalBatch(**options)
    app = web.Application(client_max_size=4 * MAX_BODY_BYTES)
    app[BATCH_KEY] = batch
    admin.add_routes(app)

    async def handle(request: web.Request) -> web.StreamResponse:
        return await request.app[BATCH_KEY].handle(request)

    app.router.add_route("*", "/{tail:.*}", handle)
    return app


@contextlib.asynccontextmanager
async def serve(
    batch: LocalBatch | None = None, *, host: str = "127.0.0.1", port: int = 0, **options: Any
) -> AsyncIterator[LocalBatch]:
    """Run the service on ``host:port`` (0: a free port) for the block; ``base_url`` is set meanwhile."""
    batch = batch if batch is not None else LocalBatch(**options)
    runner = web.AppRunner(create_app(batch), access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        batch.base_url = f"http://{host}:{runner.addresses[0][1]}"
        yield batch
    finally:
        await runner.cleanup()
        batch.base_url = None


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(interval)


__all__ = ["DEFAULT_ACCOUNT", "DEFAULT_KEY", "LocalBatch", "compile_definition", "create_app", "serve"]
