"""The Azure Batch provider: pods run as tasks on an existing pool (entry point ``azurebatch``).

On ``azure-batch`` 15 (``azure.batch.aio.BatchClient``) with an azure-identity token credential or
the account's shared key. :mod:`.mapping` turns a pod into a task, :mod:`.status` a task into the
pod's status, :mod:`.logs` reads the task's files.

**One job per node** on the configured pool: ``job_id`` (default ``vk-<node>``), created at start-up
if absent with the node's name in its metadata; a job of that id that names another node is not
used (start-up fails). A missing or inactive pool fails start-up with one line. **One task per
pod**, its id from the pod (``naming.task_id``), the pod's identity in its environment. Every task of
the job is this node's: ``list_pods`` lists them (a task whose environment names no pod is not
ours and is left alone), and the core removes those without an API pod (orphans) and adopts the rest.

**Status** comes in bulk: one paged ``list_tasks`` with ``$select`` per poll (``BulkStatusProvider``),
within ``status_poll.calls_per_minute``; a poll that would exceed it answers from the last one.
Between full lists, ``$filter`` asks only for the tasks that are not completed or just changed.
Pod IPs are the nodes' IPs (``get_node``, cached ``node_ip_refresh_seconds``).

**Throttling.** Batch answers 429 (or 503 when busy) with Retry-After. The SDK's retry policy is
told not to retry those: they become ``ThrottledError(retry_after)``, which holds back every call of
the core for that long, and this provider refuses its own calls until then without sending them.

**Capacity** follows the pool: ``get_pool`` on every node status refresh, current dedicated (and
low-priority/spot) nodes times one node's size (config, or the table of VM sizes below) and the
pool's task slots per node for ``pods``. When the pool cannot be read, the last capacity stays.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ClassVar, TypeVar

from azure.batch import models
from azure.batch.aio import BatchClient
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import AzureError, HttpResponseError
from azure.core.pipeline.policies import AsyncRetryPolicy, SansIOHTTPPolicy

from providers.azurebatch import mapping, naming
from providers.azurebatch import status as batch_status
from providers.azurebatch.config import AzureBatchConfig, NodeSize
from providers.azurebatch.logs import FOLLOW_INTERVAL, FileInfo, read_logs
from vk_operator.provider import (
    Capacity,
    InvalidPodError,
    LogEntry,
    LogOptions,
    NodeCondition,
    NotFoundError,
    PermanentError,
    PodEventRecorder,
    PodRef,
    PreparedPod,
    ProviderError,
    ProviderPodStatus,
    ThrottledError,
    TransientError,
    parse_quantity,
)

log = logging.getLogger(__name__)
HTTP_LOGGER = "azure.core.pipeline.policies.http_logging_policy"
T = TypeVar("T")

# One node of common Batch VM sizes: vCPUs, memory, NVIDIA GPUs (Azure's published sizes).
VM_SIZES: dict[str, NodeSize] = {
    name: NodeSize(cpu=cpu, memory=memory, gpu=gpu)
    for name, cpu, memory, gpu in (
        ("standard_nc6", "6", "56Gi", 1),
        ("standard_nc12", "12", "112Gi", 2),
        ("standard_nc24", "24", "224Gi", 4),
        ("standard_nc6s_v3", "6", "112Gi", 1),
        ("standard_nc12s_v3", "12", "224Gi", 2),
        ("standard_nc24s_v3", "24", "448Gi", 4),
        ("standard_nc4as_t4_v3", "4", "28Gi", 1),
        ("standard_nc8as_t4_v3", "8", "56Gi", 1),
        ("standard_nc16as_t4_v3", "16", "110Gi", 1),
        ("standard_nc64as_t4_v3", "64", "440Gi", 4),
        ("standard_nc24ads_a100_v4", "24", "220Gi", 1),
        ("standard_nc48ads_a100_v4", "48", "440Gi", 2),
        ("standard_nc96ads_a100_v4", "96", "880Gi", 4),
        ("standard_nd96asr_v4", "96", "900Gi", 8),
        ("standard_nd40rs_v2", "40", "672Gi", 8),
        ("standard_d2s_v3", "2", "8Gi", 0),
        ("standard_d4s_v3", "4", "16Gi", 0),
        ("standard_d8s_v3", "8", "32Gi", 0),
        ("standard_d16s_v3", "16", "64Gi", 0),
        ("standard_a1", "1", "1792Mi", 0),
    )
}
STATUS_SELECT = ["id", "state", "executionInfo", "nodeInfo", "environmentSettings", "containerSettings"]
LIST_SELECT = ["id", "environmentSettings"]
FULL_LIST_EVERY = 10  # status polls between full lists (the others ask only for what changed)
UNLIMITED_WALL_CLOCK = "P10675199DT2H48M5.4775807S"  # what Batch reports for no limit
NOT_FOUND_CODES = frozenset({"TaskNotFound", "JobNotFound", "FileNotFound", "NodeNotFound"})


class _NoThrottleRetry(AsyncRetryPolicy):  # type: ignore[type-arg]
    """azure-core's retries, except 429 and 503: those go to the core as ThrottledError."""

    def is_retry(self, settings: Any, response: Any) -> bool:
        if response.http_response.status_code in (429, 503):
            return False
        return bool(super().is_retry(settings, response))


class BatchConflict(TransientError):
    """A 409 (``code``: TaskExists, TaskCompleted, JobBeingDeleted...): transient unless the caller knows."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message, reason="BatchConflict")
        self.code = code


class BatchRejected(PermanentError):
    """A 400: the service refused the request as it is (``code``: InvalidPropertyValue...)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message, reason="BatchRejected")
        self.code = code


def _code(error: HttpResponseError) -> str:
    return str(getattr(getattr(error, "error", None), "code", "") or "")


def _retry_after(error: HttpResponseError) -> float | None:
    response = getattr(error, "response", None)
    raw = response.headers.get("Retry-After") if response is not None else None
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


def _message(error: HttpResponseError) -> str:
    found = getattr(getattr(error, "error", None), "message", None)
    return " ".join(str(found or error.message or error).split())[:300]


class AzureBatchProvider:
    """Pods as Batch tasks (see the module docstring)."""

    name: ClassVar[str] = "azurebatch"
    config_model: ClassVar[type[AzureBatchConfig]] = AzureBatchConfig

    def __init__(self, config: AzureBatchConfig, node_name: str) -> None:
        self.config = config
        self.node_name = node_name
        self.job_id = config.job_id or naming.job_id(node_name)
        self.options = mapping.MappingOptions(
            multi_container=config.multi_container,
            secrets=config.secrets,
            mount_service_account_token=config.mount_service_account_token,
            max_task_retry_count=config.max_task_retry_count,
            retention=config.retention,
        )
        self._client: BatchClient | None = None
        self._credential: Any = None
        self._throttled_until = 0.0
        self._node_ips: dict[str, tuple[float, str | None]] = {}
        self._capacity = Capacity(cpu="0", memory="0", pods="0", gpu="0")
        self._pool_problem: str | None = None
        self._pool_runs_containers = True  # the pool has a container configuration (read at start)
        self._calls: list[float] = []  # monotonic times of recent status list pages
        self._last_statuses: dict[str, ProviderPodStatus] | None = None
        self._completed: dict[str, ProviderPodStatus] = {}  # completed tasks' final statuses, by UID
        self._since: dt.datetime | None = None  # when the last status poll started
        self._polls = 0
        self._recorder: PodEventRecorder | None = None
        self._counts: dict[str, tuple[int, int]] = {}  # pod UID -> (requeueCount, retryCount) last seen
        self.follow_interval = FOLLOW_INTERVAL

    # -- lifecycle -------------------------------------------------------------------------------
    @property
    def client(self) -> BatchClient:
        if self._client is None:
            raise TransientError("azurebatch: the provider is not started", reason="ProviderNotStarted")
        return self._client

    def _make_client(self) -> BatchClient:
        config = self.config
        endpoint = config.account_endpoint.rstrip("/")
        kwargs: dict[str, Any] = {"retry_policy": _NoThrottleRetry(retry_total=3, retry_backoff_factor=0.5)}
        if config.credential == "shared_key":
            key = os.environ.get(config.shared_key_env)
            if not key:
                raise ProviderError(
                    f"azurebatch: credential shared_key needs the key in ${config.shared_key_env}"
                )
            credential: Any = AzureNamedKeyCredential(config.shared_key_account(), key)
        else:
            from azure.identity.aio import (
                DefaultAzureCredential,
                EnvironmentCredential,
                ManagedIdentityCredential,
                WorkloadIdentityCredential,
            )

            client_id = config.managed_identity_client_id
            if config.credential == "environment":
                credential = EnvironmentCredential()
            elif config.credential == "workload_identity":
                credential = WorkloadIdentityCredential()
            elif config.credential == "managed_identity":
                credential = (
                    ManagedIdentityCredential(client_id=client_id)
                    if client_id
                    else ManagedIdentityCredential()
                )
            else:
                credential = (
                    DefaultAzureCredential(managed_identity_client_id=client_id)
                    if client_id
                    else DefaultAzureCredential()
                )
            self._credential = credential
            if endpoint.startswith("http://"):  # a local service: no bearer token over plain HTTP
                kwargs["authentication_policy"] = SansIOHTTPPolicy()
        return BatchClient(endpoint, credential, **kwargs)

    async def start(self) -> None:
        """The client, then the pool (must be active) and this node's job (created if absent)."""
        http_logger = logging.getLogger(HTTP_LOGGER)
        if http_logger.level == logging.NOTSET and not logging.getLogger().isEnabledFor(logging.DEBUG):
            http_logger.setLevel(logging.WARNING)
        self._client = self._make_client()
        where = f"Batch account {self.config.account_endpoint}"
        try:
            pool = await self.client.get_pool(self.config.pool_id)
        except HttpResponseError as e:
            if e.status_code == 404:
                raise ProviderError(
                    f"azurebatch: pool {self.config.pool_id} does not exist in {where}"
                ) from None
            raise ProviderError(
                f"azurebatch: cannot read pool {self.config.pool_id} in {where}: {_message(e)}"
            ) from None
        except AzureError as e:
            raise ProviderError(
                f"azurebatch: cannot reach {where}: {' '.join(str(e).split())[:200]}"
            ) from None
        if batch_status.word(pool.state) != "active":
            raise ProviderError(
                f"azurebatch: pool {self.config.pool_id} is {batch_status.word(pool.state)}, not active"
            )
        self._capacity = self._pool_capacity(pool)
        vm_config = pool.virtual_machine_configuration
        self._pool_runs_containers = bool(vm_config and vm_config.container_configuration)
        if not self._pool_runs_containers:
            log.warning(
                "azurebatch: pool %s has no container configuration: single-container pods will fail "
                "(only multi_container: docker_wrapper tasks can run)",
                self.config.pool_id,
            )
        await self._ensure_job()

    async def _ensure_job(self) -> None:
        try:
            job = await self.client.get_job(self.job_id)
        except HttpResponseError as e:
            if e.status_code != 404:
                raise ProviderError(f"azurebatch: cannot read job {self.job_id}: {_message(e)}") from None
            options = models.BatchJobCreateOptions(
                id=self.job_id,
                display_name=f"virtual node {self.node_name}"[:1024],
                pool_info=models.BatchPoolInfo(pool_id=self.config.pool_id),
                metadata=[models.BatchMetadataItem(name=naming.META_NODE, value=self.node_name)],
            )
            try:
                await self.client.create_job(options)
                log.info("azurebatch: created job %s on pool %s", self.job_id, self.config.pool_id)
                return
            except HttpResponseError as created:
                if created.status_code != 409:
                    raise ProviderError(
                        f"azurebatch: cannot create job {self.job_id}: {_message(created)}"
                    ) from None
            job = await self.client.get_job(self.job_id)
        owner = {m.name: m.value for m in job.metadata or []}.get(naming.META_NODE)
        if owner != self.node_name:
            raise ProviderError(
                f"azurebatch: job {self.job_id} belongs to node {owner!r}, not {self.node_name!r} "
                "(set job_id)"
            )
        state = batch_status.word(job.state)
        if state != "active":
            raise ProviderError(f"azurebatch: job {self.job_id} is {state}, not active")
        pool_id = job.pool_info.pool_id if job.pool_info else None
        if pool_id != self.config.pool_id:
            raise ProviderError(
                f"azurebatch: job {self.job_id} runs on pool {pool_id}, not {self.config.pool_id}"
            )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._credential is not None and hasattr(self._credential, "close"):
            await self._credential.close()
            self._credential = None

    # -- calls -----------------------------------------------------------------------------------
    async def _call(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """One SDK call with the errors mapped onto the core's (NotFound is the caller's)."""
        wait = self._throttled_until - time.monotonic()
        if wait > 0:
            raise ThrottledError(f"azurebatch: {what}: throttled for {wait:.1f}s more", retry_after=wait)
        try:
            return await call()
        except HttpResponseError as e:
            status = e.status_code or 0
            if status in (429, 503):
                retry_after = _retry_after(e) or 1.0
                self._throttled_until = time.monotonic() + retry_after
                raise ThrottledError(
                    f"azurebatch: {what}: {status} {_message(e)}", retry_after=retry_after
                ) from None
            if status == 404 and (_code(e) in NOT_FOUND_CODES or not _code(e)):  # HEAD: no body, no code
                raise NotFoundError(f"azurebatch: {what}: {_code(e)}") from None
            if status == 409:
                raise BatchConflict(f"azurebatch: {what}: {_code(e)}: {_message(e)}", _code(e)) from None
            if status in (400, 413):
                raise BatchRejected(f"azurebatch: {what}: {_code(e)}: {_message(e)}", _code(e)) from None
            if status in (401, 403):
                raise PermanentError(
                    f"azurebatch: {what}: {status} {_code(e)}: {_message(e)}", reason="BatchAuth"
                ) from None
            raise TransientError(f"azurebatch: {what}: {status} {_code(e)}: {_message(e)}") from None
        except AzureError as e:
            raise TransientError(f"azurebatch: {what}: {' '.join(str(e).split())[:200]}") from None

    def _task_id(self, ref: PodRef) -> str:
        return naming.task_id(ref.namespace, ref.name, ref.uid)

    async def _get_task(self, ref: PodRef, select: list[str] | None = None) -> dict[str, Any] | None:
        """This pod's task as REST JSON, or None (absent, or a task of that id running another UID)."""
        try:
            task = await self._call(
                "get_task", lambda: self.client.get_task(self.job_id, self._task_id(ref), select=select)
            )
        except NotFoundError:
            return None
        body: dict[str, Any] = task.as_dict()
        found = batch_status.pod_ref(body)
        return body if found is not None and found.uid == ref.uid else None

    # -- pods ------------------------------------------------------------------------------------
    async def create_pod(self, pod: PreparedPod) -> None:
        request = mapping.task_request(pod, self.options)
        if "containerSettings" in request.body and not self._pool_runs_containers:
            raise PermanentError(
                f"azurebatch: pool {self.config.pool_id} has no container configuration: it cannot run "
                "container tasks",
                reason="PoolWithoutContainers",
            )

        async def create() -> None:
            await self.client.create_task(self.job_id, models.BatchTaskCreateOptions(request.body))

        try:
            try:
                await self._call("create_task", create)
            except NotFoundError:  # the job was deleted under us: make it again, once
                try:
                    await self._ensure_job()
                except ProviderError as e:
                    raise TransientError(str(e), reason="BatchJobMissing") from None
                await self._call("create_task", create)
        except BatchConflict as e:
            if e.code != "TaskExists":
                raise
            existing = await self._get_task(pod.ref, ["id", "environmentSettings"])
            if existing is None:
                raise PermanentError(
                    f"azurebatch: task {request.task_id} exists for another pod of that name",
                    reason="TaskIdConflict",
                ) from None
        except BatchRejected as e:
            raise InvalidPodError("spec", str(e)) from None

    async def update_pod(self, pod: PreparedPod) -> None:
        """A new activeDeadlineSeconds becomes the task's maxWallClockTime (Tasks_ReplaceTask: only
        constraints can change); a new image cannot be applied to a task (PermanentError)."""
        request = mapping.task_request(pod, self.options)
        task = await self._get_task(pod.ref, ["id", "state", "environmentSettings", "containerSettings"])
        if task is None:
            raise NotFoundError(f"azurebatch: no task for pod {pod.ref.namespace}/{pod.ref.name}")
        image = (task.get("containerSettings") or {}).get("imageName")
        if image != (request.body.get("containerSettings") or {}).get("imageName"):
            raise PermanentError(
                "azurebatch: a Batch task cannot change its image: delete and recreate the pod",
                reason="NotUpdatable",
            )
        constraints = dict(request.body["constraints"])
        constraints.setdefault("maxWallClockTime", UNLIMITED_WALL_CLOCK)
        replacement = models.BatchTask({"constraints": constraints})
        await self._call(
            "replace_task", lambda: self.client.replace_task(self.job_id, request.task_id, replacement)
        )

    async def delete_pod(self, ref: PodRef) -> None:
        """Terminate the task, then delete it (a pod without a task is deleted already)."""
        task = await self._get_task(ref, ["id", "state", "environmentSettings"])
        if task is None:
            return
        task_id = self._task_id(ref)
        if batch_status.word(task.get("state")) != "completed":
            try:
                await self._call("terminate_task", lambda: self.client.terminate_task(self.job_id, task_id))
            except NotFoundError:
                return
            except BatchConflict as e:
                if e.code != "TaskCompleted":
                    raise
        with contextlib.suppress(NotFoundError):
            await self._call("delete_task", lambda: self.client.delete_task(self.job_id, task_id))
        self._drop_cached(ref.uid)

    def _drop_cached(self, uid: str) -> None:
        self._completed.pop(uid, None)
        self._counts.pop(uid, None)
        if self._last_statuses is not None:
            self._last_statuses.pop(uid, None)

    async def _node_ip(self, node_id: str | None) -> str | None:
        if not node_id:
            return None
        cached = self._node_ips.get(node_id)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self.config.node_ip_refresh_seconds:
            return cached[1]
        try:
            node = await self._call("get_node", lambda: self.client.get_node(self.config.pool_id, node_id))
            ip: str | None = node.ip_address
        except (NotFoundError, TransientError):
            ip = cached[1] if cached else None
        self._node_ips[node_id] = (now, ip)
        return ip

    def emit_events(self, recorder: PodEventRecorder) -> None:
        self._recorder = recorder

    def _note_counts(self, task: dict[str, Any]) -> None:
        """Warning Events when Batch requeued (its node left the pool) or retried a pod's task.

        The first sight of a task only records its counts: a restarted provider does not repeat them.
        """
        ref = batch_status.pod_ref(task)
        execution = task.get("executionInfo") or {}
        if ref is None or not execution:
            return
        counts = (int(execution.get("requeueCount") or 0), int(execution.get("retryCount") or 0))
        seen = self._counts.get(ref.uid)
        self._counts[ref.uid] = counts
        if seen is None or self._recorder is None:
            return
        if counts[0] > seen[0]:
            self._recorder.record(
                ref,
                "BatchTaskRequeued",
                f"the task's node left pool {self.config.pool_id} (a low-priority/spot node preempted, or "
                f"the pool shrank): it waits for another node (requeued {counts[0]} time(s))",
                warning=True,
            )
        if counts[1] > seen[1]:
            self._recorder.record(
                ref,
                "BatchTaskRetried",
                f"the task failed and Batch ran it again (retry {counts[1]})",
                warning=True,
            )

    async def _status_of(self, task: dict[str, Any]) -> ProviderPodStatus:
        self._note_counts(task)
        node = (task.get("nodeInfo") or {}).get("nodeId")
        return batch_status.pod_status(task, self.config.pool_id, await self._node_ip(node))

    async def get_pod_status(self, ref: PodRef) -> ProviderPodStatus | None:
        task = await self._get_task(ref, STATUS_SELECT)
        return None if task is None else await self._status_of(task)

    async def _list_tasks(self, select: list[str], odata_filter: str | None = None) -> list[dict[str, Any]]:
        async def listed() -> list[dict[str, Any]]:
            pages = self.client.list_tasks(self.job_id, select=select, filter=odata_filter)
            return [t.as_dict() async for t in pages]

        return await self._call("list_tasks", listed)

    async def list_pods(self) -> list[PodRef]:
        refs = []
        for task in await self._list_tasks(LIST_SELECT):
            ref = batch_status.pod_ref(task)
            if ref is not None and task.get("id", "").lower() == self._task_id(ref).lower():
                refs.append(ref)
        return refs

    async def get_pod_statuses(self) -> dict[str, ProviderPodStatus]:
        """Every task's status, within the call budget (else the last answer).

        A completed task does not change: after a full list, a poll asks only for the tasks that are
        not completed or changed state since the last poll (``$filter``, with a minute's margin for
        clock skew), and keeps the completed ones it knows. Every :data:`FULL_LIST_EVERY` polls the
        list is full again, which also drops completed tasks someone else deleted.
        """
        now = time.monotonic()
        self._calls = [t for t in self._calls if now - t < 60.0]
        if self._last_statuses is not None and len(self._calls) >= self.config.status_poll.calls_per_minute:
            return dict(self._last_statuses)
        started = dt.datetime.now(dt.UTC)
        full = self._since is None or self._polls % FULL_LIST_EVERY == 0
        odata_filter = None
        if not full and self._since is not None:
            since = (self._since - dt.timedelta(seconds=60)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            odata_filter = f"state ne 'completed' or stateTransitionTime ge datetime'{since}'"
        tasks = await self._list_tasks(STATUS_SELECT, odata_filter)
        self._calls += [now] * max(1, -(-len(tasks) // 1000))  # one call per page of 1,000
        self._polls += 1
        fresh: dict[str, ProviderPodStatus] = {}
        completed = {} if full else self._completed
        for task in tasks:
            ref = batch_status.pod_ref(task)
            if ref is None or task.get("id", "").lower() != self._task_id(ref).lower():
                continue
            fresh[ref.uid] = await self._status_of(task)
            if batch_status.word(task.get("state")) == "completed":
                completed[ref.uid] = fresh[ref.uid]
            else:
                completed.pop(ref.uid, None)
        self._completed = completed
        self._since = started
        self._last_statuses = {**completed, **fresh}
        return dict(self._last_statuses)

    # -- node ------------------------------------------------------------------------------------
    def _node_size(self, vm_size: str) -> NodeSize | None:
        return self.config.capacity.node_size or VM_SIZES.get(vm_size.lower())

    def _pool_capacity(self, pool: models.BatchPool) -> Capacity:
        capacity = self.config.capacity
        if capacity.mode == "fixed":
            fixed = capacity.fixed
            return Capacity(
                cpu=fixed.cpu, memory=fixed.memory, pods=str(capacity.fixed_pods), gpu=str(fixed.gpu)
            )
        size = self._node_size(pool.vm_size or "")
        if size is None:
            raise ProviderError(
                f"azurebatch: VM size {pool.vm_size!r} of pool {self.config.pool_id} is not in the "
                "provider's table: set capacity.node_size"
            )
        nodes = (pool.current_dedicated_nodes or 0) + (
            (pool.current_low_priority_nodes or 0) if capacity.count_low_priority else 0
        )
        slots = pool.task_slots_per_node or 1
        return Capacity(
            cpu=_times(size.cpu, nodes),
            memory=_times(size.memory, nodes),
            pods=str(nodes * slots),
            gpu=str(nodes * size.gpu),
        )

    async def capacity(self) -> Capacity:
        try:
            pool = await self._call("get_pool", lambda: self.client.get_pool(self.config.pool_id))
        except (TransientError, PermanentError, NotFoundError) as e:
            self._pool_problem = str(e)
            return self._capacity
        state = batch_status.word(pool.state)
        self._pool_problem = None if state == "active" else f"pool {self.config.pool_id} is {state}"
        try:
            self._capacity = self._pool_capacity(pool)
        except ProviderError as e:
            self._pool_problem = str(e)
        return self._capacity

    async def node_conditions(self) -> list[NodeCondition]:
        if self._pool_problem is None:
            return []
        return [
            {
                "type": "BatchPoolReady",
                "status": "False",
                "reason": "PoolUnavailable",
                "message": self._pool_problem,
            }
        ]

    # -- logs ------------------------------------------------------------------------------------
    async def container_logs(
        self, ref: PodRef, container: str, options: LogOptions
    ) -> AsyncIterator[LogEntry]:
        task = await self._get_task(ref, ["id", "state", "environmentSettings", "containerSettings"])
        if task is None:
            raise KeyError(f"no task for pod {ref.namespace}/{ref.name}")
        task_id = self._task_id(ref)
        containers = batch_status.env_of(task).get(naming.ENV_CONTAINER, "").split(",")
        if container not in containers:
            raise KeyError(container)
        wrapped = not task.get("containerSettings")
        files = (
            [(f"{container}.log", "Stdout")]
            if wrapped
            else [("stdout.txt", "Stdout"), ("stderr.txt", "Stderr")]
        )

        async def properties(path: str) -> FileInfo | None:
            try:
                found = await self._call(
                    "get_task_file_properties",
                    lambda: self.client.get_task_file_properties(self.job_id, task_id, path),
                )
            except NotFoundError:
                return None
            return FileInfo(int(found.content_length or 0), batch_status.parse_time(found.last_modified))

        async def read(path: str, offset: int) -> bytes:
            async def download() -> bytes:
                stream = await self.client.download_task_file(
                    self.job_id, task_id, path, ocp_range=f"bytes={offset}-"
                )
                return b"".join([chunk async for chunk in stream])

            return await self._call("download_task_file", download)

        async def ended() -> bool:
            current = await self._get_task(ref, ["id", "state", "environmentSettings"])
            return current is None or batch_status.word(current.get("state")) == "completed"

        async for entry in read_logs(files, properties, read, ended, options, self.follow_interval):
            yield entry


def _times(quantity: str, count: int) -> str:
    """``count`` times a quantity, as a plain number of its base unit (bytes, cores; milli when needed)."""
    total = parse_quantity(quantity) * count
    if total == int(total):
        return str(int(total))
    return f"{int(total * 1000)}m"


__all__ = ["VM_SIZES", "AzureBatchProvider"]
