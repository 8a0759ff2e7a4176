"""The AWS Fargate provider: one pod = one ECS task on Fargate (entry point ``fargate``).

On ``aioboto3`` (ECS, CloudWatch Logs, Secrets Manager), credentials from the standard AWS chain.
:mod:`.mapping` turns the pod into a task definition and a RunTask request, :mod:`.status` the task
into a pod status, :mod:`.aws` botocore's failures into the core's errors; :mod:`.logs` reads
CloudWatch for ``kubectl logs``.

**Ownership.** A pod's task has ``startedBy`` = the pod UID and the tags node, namespace, pod name
and UID; only tasks with this node's tag are listed, stopped or read as a pod's. Task definitions
(family ``vk-<node>-<content hash>``, shared by every pod of one template) and secrets
(``<prefix>/<node>/<uid>``) carry the node tag too.

**Status** comes in bulk (:meth:`get_pod_statuses`): ListTasks of the cluster (RUNNING and
STOPPED, 100 a page) and DescribeTasks (100 a call) of the tasks that need it: new ones, ones in
transition, ones that moved to the STOPPED list, and running ones not described for
``status_poll.refresh_seconds``. A stopped task never changes, and another node's task is never
described twice, so a steady node costs its list pages only, within ``status_poll.calls_per_minute``.

**Restarts.** ECS cannot restart a container: for restartPolicy Always (or OnFailure after a
failure) a stopped task is run again, with the same task definition and tags, after a back-off
(10 s doubling to 5 min, as the kubelet's); restartCount is the number of earlier tasks of the pod
ECS still shows, lastState the last one's exit.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any, ClassVar

import aioboto3
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError

from providers.fargate import logs as fargate_logs
from providers.fargate import mapping, naming
from providers.fargate import status as fargate_status
from providers.fargate.aws import CallBudget, TokenBucket, error_code, error_message, mapped
from providers.fargate.config import FargateConfig
from vk_operator.provider import (
    Capacity,
    ExecError,
    ExecIO,
    LogEntry,
    LogOptions,
    LogsUnavailable,
    NodeCondition,
    NotFoundError,
    PermanentError,
    PodEventRecorder,
    PodPhase,
    PodRef,
    PortConnection,
    PortForwardError,
    PreparedPod,
    ProviderError,
    ProviderPodStatus,
    ThrottledError,
    TransientError,
)

log = logging.getLogger(__name__)

PAGE = 100  # ListTasks page size and DescribeTasks batch: ECS's maximum for both
RESTART_BACKOFF = 10.0  # seconds before the first re-run of a stopped task; doubled up to the cap
RESTART_BACKOFF_CAP = 300.0
STOP_REASON = "Stopped by virtual-kubelet: the pod was deleted"
NO_EXEC = (
    "Fargate exec, attach and port-forward need ECS Exec, which speaks the SSM session protocol "
    "(Session Manager): this provider does not implement it, and no emulator here offers it"
)
PLACEHOLDER_ARN = "arn:aws:secretsmanager:region:000000000000:secret:placeholder"
TRANSITIONAL = ("PROVISIONING", "PENDING", "ACTIVATING", "DEACTIVATING", "STOPPING", "DEPROVISIONING")


@dataclasses.dataclass
class PodTasks:
    """What this instance knows of one pod: its tasks (oldest first) and restart bookkeeping."""

    ref: PodRef
    tasks: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # arn -> DescribeTasks
    described_at: dict[str, float] = dataclasses.field(default_factory=dict)
    app_containers: tuple[str, ...] | None = None
    restart_policy: str | None = None
    restart_at: float | None = None  # when the stopped task is to be run again

    seen: dict[str, int] = dataclasses.field(default_factory=dict)  # arn -> order first seen

    def ordered(self) -> list[dict[str, Any]]:
        # createdAt orders tasks on ECS; moto gives none, and the order this instance saw them stands in
        return sorted(
            self.tasks.values(),
            key=lambda t: (_stamp(t.get("createdAt")), self.seen.get(str(t.get("taskArn")), 0)),
        )

    def latest(self) -> dict[str, Any] | None:
        ordered = self.ordered()
        return ordered[-1] if ordered else None


def _stamp(value: Any) -> float:
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    return float(value) if isinstance(value, int | float) else 0.0


def _in_transition(task: Mapping[str, Any]) -> bool:
    """A task (or one of its containers) on its way to RUNNING or STOPPED: read it again soon."""
    if task.get("lastStatus") in TRANSITIONAL:
        return True
    return any(c.get("lastStatus") not in ("RUNNING", "STOPPED") for c in task.get("containers") or [])


def _chunks(items: Sequence[str], size: int = PAGE) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class FargateProvider:
    """Pods as ECS Fargate tasks (see the module docstring)."""

    name: ClassVar[str] = "fargate"
    config_model: ClassVar[type[FargateConfig]] = FargateConfig
    volume_types: ClassVar[frozenset[str]] = mapping.VOLUME_TYPES

    def __init__(self, config: FargateConfig, node_name: str) -> None:
        self.config = config
        self.node_name = node_name
        self.calls: collections.Counter[str] = collections.Counter()  # AWS operations made, by name
        self.budget = CallBudget(config.status_poll.calls_per_minute)
        self.run_rate = TokenBucket(config.run_task_rate.per_second, config.run_task_rate.burst)
        self.pods: dict[str, PodTasks] = {}  # pod UID -> its tasks
        self.arn_owner: dict[str, str] = {}  # task ARN -> pod UID (this node's)
        self.foreign: set[str] = set()  # task ARNs that are not this node's: never described again
        self.stopped: set[str] = set()  # task ARNs described as STOPPED: never described again
        self.deleted: set[str] = set()  # UIDs deleted by this instance (ECS shows stopped tasks ~1 h)
        self.families: dict[str, str] = {}  # family -> ACTIVE task definition ARN
        self.family_of: dict[str, str] = {}  # pod UID -> its family
        self._family_locks: dict[str, asyncio.Lock] = collections.defaultdict(asyncio.Lock)
        self._recorder: PodEventRecorder | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._ecs: Any = None
        self._logs: Any = None
        self._secrets: Any = None
        self._listed_once = False
        self._sweep: asyncio.Task[None] | None = None  # of leftover task definitions, once
        self._order = itertools.count()
        self.follow_interval = fargate_logs.FOLLOW_INTERVAL
        self.restart_backoff = RESTART_BACKOFF

    # -- lifecycle -------------------------------------------------------------------------------
    def emit_events(self, recorder: PodEventRecorder) -> None:
        self._recorder = recorder

    async def start(self) -> None:
        """Clients from the standard credential chain; the cluster must exist; the log group is made."""
        stack = contextlib.AsyncExitStack()
        session = aioboto3.Session(region_name=self.config.region)
        botocore_config = AioConfig(
            retries={"total_max_attempts": self.config.max_attempts, "mode": "standard"},  # with the first
            connect_timeout=10,
            read_timeout=30,
            max_pool_connections=32,
        )
        endpoint = self.config.endpoint_url
        try:
            self._ecs = await stack.enter_async_context(
                session.client("ecs", endpoint_url=endpoint, config=botocore_config)
            )
            self._logs = await stack.enter_async_context(
                session.client("logs", endpoint_url=endpoint, config=botocore_config)
            )
            self._secrets = await stack.enter_async_context(
                session.client("secretsmanager", endpoint_url=endpoint, config=botocore_config)
            )
            self._stack = stack
            clusters = await self._call(
                self._ecs.describe_clusters, "DescribeClusters", clusters=[self.config.cluster]
            )
        except (ClientError, BotoCoreError, ProviderError) as exc:
            await stack.aclose()
            self._stack = None
            raise ProviderError(
                f"fargate: cannot reach ECS in {self.config.region}: {_one_line(exc)}"
            ) from None
        active = [c for c in clusters.get("clusters") or [] if c.get("status") == "ACTIVE"]
        if not active:
            await self.close()
            raise ProviderError(f"fargate: ECS cluster {self.config.cluster} does not exist or is not ACTIVE")
        try:
            await self._call(
                self._logs.create_log_group, "CreateLogGroup", logGroupName=self.config.log_group
            )
        except PermanentError as exc:
            if "ResourceAlreadyExists" not in exc.message:
                log.warning("fargate: log group %s not created (%s)", self.config.log_group, exc.message)

    async def close(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweep
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = None
        self._ecs = self._logs = self._secrets = None

    @property
    def ecs(self) -> Any:
        if self._ecs is None:
            raise TransientError("fargate: the provider is not started", reason="ProviderNotStarted")
        return self._ecs

    async def _call(self, method: Any, operation: str, **kwargs: Any) -> dict[str, Any]:
        self.calls[operation] += 1
        try:
            result: dict[str, Any] = await method(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise mapped(exc, operation) from None
        return result

    # -- reading ECS -----------------------------------------------------------------------------
    async def _list(self, **filters: Any) -> list[str]:
        return await self._all_pages(
            self.ecs.list_tasks,
            "ListTasks",
            "taskArns",
            cluster=self.config.cluster,
            maxResults=PAGE,
            **filters,
        )

    async def _all_pages(self, method: Any, operation: str, field: str, **kwargs: Any) -> list[str]:
        """``field`` of every page of a paged ECS list call (``nextToken``)."""
        items: list[str] = []
        token: str | None = None
        while True:
            page = await self._call(method, operation, **kwargs, **({"nextToken": token} if token else {}))
            items += page.get(field) or []
            token = page.get("nextToken")
            if not token:
                return items

    async def _describe(self, arns: Sequence[str]) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for chunk in _chunks(list(arns)):
            answer = await self._call(
                self.ecs.describe_tasks,
                "DescribeTasks",
                cluster=self.config.cluster,
                tasks=list(chunk),
                include=["TAGS"],
            )
            found += answer.get("tasks") or []
        return found

    def _absorb(self, task: dict[str, Any]) -> PodTasks | None:
        """Keep a described task when it is this node's; None (and remembered as foreign) otherwise."""
        arn = str(task.get("taskArn"))
        ref = naming.ref_of(naming.tag_map(task.get("tags")), self.node_name)
        if ref is None or task.get("startedBy") not in (None, ref.uid):
            self.foreign.add(arn)
            return None
        pod = self.pods.setdefault(ref.uid, PodTasks(ref))
        pod.tasks[arn] = task
        pod.seen.setdefault(arn, next(self._order))
        pod.described_at[arn] = time.monotonic()
        self.arn_owner[arn] = ref.uid
        if task.get("lastStatus") == fargate_status.STOPPED:
            self.stopped.add(arn)
        tags = naming.tag_map(task.get("tags"))
        if pod.restart_policy is None:
            pod.restart_policy = tags.get(naming.TAG_RESTART)
        definition = str(task.get("taskDefinitionArn", ""))
        family = definition.rsplit("/", 1)[-1].rsplit(":", 1)[0]
        if family:
            self.family_of.setdefault(ref.uid, family)
            self.families.setdefault(family, definition)  # adopted: deregistered with its last pod
        return pod

    async def _refresh(self, *, budgeted: bool) -> bool:
        """List the cluster's tasks and describe the ones that need it; False when the budget
        left no room (the statuses last read stand)."""
        pages_estimate = max(1, -(-len(self.arn_owner) // PAGE)) + 1
        if budgeted and self._listed_once and self.budget.available() < pages_estimate:
            self.calls["status_from_cache"] += 1
            return False
        running = await self._list(desiredStatus="RUNNING")
        stopped = await self._list(desiredStatus="STOPPED")
        self.budget.spend(max(1, -(-len(running) // PAGE)) + max(1, -(-len(stopped) // PAGE)))
        now = time.monotonic()
        due: list[str] = []
        for arn in [*running, *stopped]:
            if arn in self.foreign or arn in self.stopped:
                continue
            uid = self.arn_owner.get(arn)
            if uid is None:
                due.append(arn)
                continue
            pod = self.pods[uid]
            task = pod.tasks.get(arn) or {}
            moved = arn in stopped and task.get("desiredStatus") != "STOPPED"
            stale = now - pod.described_at.get(arn, 0.0) >= self.config.status_poll.refresh_seconds
            if moved or stale or _in_transition(task):
                due.append(arn)
        if budgeted:
            room = max(self.budget.available(), 1) * PAGE
            due = due[:room]
        if due:
            self.budget.spend(-(-len(due) // PAGE))
            for task in await self._describe(due):
                self._absorb(task)
        self._listed_once = True
        return True

    # -- Provider --------------------------------------------------------------------------------
    async def create_pod(self, pod: PreparedPod) -> None:
        ref = pod.ref
        existing = await self._tasks_of(ref.uid)
        if existing:
            return  # created before (a retry after a timeout, or a restart): nothing to do
        # refused before anything is made for it (the placeholder stands for the secret's ARN)
        mapping.task_plan(pod, self.config, self.node_name, PLACEHOLDER_ARN)
        secret_arn = await self._ensure_secret(pod)
        registries = await self._ensure_registry_secrets(pod)
        plan = mapping.task_plan(pod, self.config, self.node_name, secret_arn, registries)
        for warning in plan.warnings:
            self._event(ref, warning.reason, str(warning))
        restart_policy = str((pod.pod.get("spec") or {}).get("restartPolicy") or "Always")
        # The lock makes concurrent replicas register once; the pod is counted as the family's user
        # before it is released, so no deletion deregisters the definition under its RunTask.
        async with self._family_locks[plan.family]:
            definition_arn = await self._ensure_task_definition(plan)
            self.family_of[ref.uid] = plan.family
        request = mapping.run_task_request(pod, plan, definition_arn, self.config, self.node_name)
        request["tags"].append({"key": naming.TAG_RESTART, "value": restart_policy})
        tasks = await self._run(request, ref)
        record = self.pods.setdefault(ref.uid, PodTasks(ref))
        record.app_containers = tuple(
            str(c.get("name")) for c in (pod.pod.get("spec") or {}).get("containers") or []
        )
        record.restart_policy = restart_policy
        for task in tasks:
            self._absorb(task)

    async def _run(self, request: dict[str, Any], ref: PodRef) -> list[dict[str, Any]]:
        await self.run_rate.take()
        answer = await self._call(self.ecs.run_task, "RunTask", **request)
        failures = answer.get("failures") or []
        tasks: list[dict[str, Any]] = answer.get("tasks") or []
        if not tasks:
            reasons = "; ".join(
                f"{f.get('reason')}: {f.get('detail') or f.get('arn') or ''}" for f in failures
            )
            raise TransientError(
                f"RunTask started no task for {ref.namespace}/{ref.name}: {reasons}",
                reason="FargateNoCapacity",
            )
        return tasks

    async def _tasks_of(self, uid: str) -> list[dict[str, Any]]:
        """This node's tasks of pod ``uid`` (running and stopped), described."""
        arns = await self._list(startedBy=uid, desiredStatus="RUNNING")
        arns += await self._list(startedBy=uid, desiredStatus="STOPPED")
        owned = []
        for task in await self._describe(arns) if arns else []:
            if self._absorb(task) is not None:
                owned.append(task)
        return owned

    async def _ensure_secret(self, pod: PreparedPod) -> str | None:
        """The pod's Secrets Manager entry with its Secret-valued env, or None when it has none."""
        values = mapping.secret_values(pod, with_files=self.config.file_volumes is not None)
        if not values:
            return None
        name = naming.secret_name(self.config.secret_prefix, self.node_name, pod.ref.uid)
        return await self._put_secret(pod.ref, name, json.dumps(values, sort_keys=True), "env and files")

    async def _ensure_registry_secrets(self, pod: PreparedPod) -> dict[str, str]:
        """One entry per registry login of the pod's imagePullSecrets (ECS's repositoryCredentials
        read ``{"username", "password"}``): registry -> ARN."""
        arns: dict[str, str] = {}
        for credential in pod.registry_credentials:
            server = mapping.registry_server(credential.server)
            if server in arns:
                continue
            name = naming.registry_secret_name(self.config.secret_prefix, self.node_name, pod.ref.uid, server)
            body = json.dumps({"username": credential.username, "password": credential.password})
            arns[server] = await self._put_secret(pod.ref, name, body, f"the login to {server}")
        return arns

    async def _put_secret(self, ref: PodRef, name: str, body: str, what: str) -> str:
        """Create (or, when a retry finds it, update) the pod's entry ``name``; its ARN."""
        tags = {
            **self.config.tags,
            naming.TAG_NODE: self.node_name,
            naming.TAG_NAMESPACE: ref.namespace,
            naming.TAG_NAME: ref.name,
            naming.TAG_UID: ref.uid,
        }
        secrets = self._secrets
        try:
            created = await self._call(
                secrets.create_secret,
                "CreateSecret",
                Name=name,
                SecretString=body,
                Description=f"{what} of pod {ref.namespace}/{ref.name} (virtual-kubelet {self.node_name})",
                Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
            )
            return str(created["ARN"])
        except PermanentError as exc:
            if "ResourceExists" not in exc.message:
                raise
        described = await self._call(secrets.describe_secret, "DescribeSecret", SecretId=name)
        if naming.tag_map(described.get("Tags")).get(naming.TAG_UID) != ref.uid:
            raise PermanentError(f"secret {name} exists and is not this pod's", reason="SecretNameConflict")
        await self._call(secrets.put_secret_value, "PutSecretValue", SecretId=name, SecretString=body)
        return str(described["ARN"])

    async def _ensure_task_definition(self, plan: mapping.TaskPlan) -> str:
        """The ACTIVE task definition of ``plan``'s family, registered when there is none (held
        under the family's lock)."""
        cached = self.families.get(plan.family)
        if cached:
            return cached
        try:
            found = await self._call(
                self.ecs.describe_task_definition,
                "DescribeTaskDefinition",
                taskDefinition=plan.family,
                include=["TAGS"],
            )
            definition = found.get("taskDefinition") or {}
            tags = naming.tag_map(found.get("tags"))
            if definition.get("status") == "ACTIVE" and tags.get(naming.TAG_HASH) == plan.digest:
                arn = str(definition["taskDefinitionArn"])
                self.families[plan.family] = arn
                return arn
        except PermanentError:
            pass  # no such family yet (ClientException): register it
        tags = {**self.config.tags, naming.TAG_NODE: self.node_name, naming.TAG_HASH: plan.digest}
        registered = await self._call(
            self.ecs.register_task_definition,
            "RegisterTaskDefinition",
            family=plan.family,
            tags=naming.tag_list(tags),
            **plan.task_definition,
        )
        arn = str(registered["taskDefinition"]["taskDefinitionArn"])
        self.families[plan.family] = arn
        return arn

    async def update_pod(self, pod: PreparedPod) -> None:
        """ECS cannot change a running task: a new image is refused (the pod keeps running);
        activeDeadlineSeconds, the other change the core passes, is enforced by the core."""
        ref = pod.ref
        record = self.pods.get(ref.uid)
        latest = record.latest() if record else None
        if latest is None:
            raise NotFoundError(f"update_pod: no task for pod {ref.namespace}/{ref.name}")
        running = {str(c.get("name")): str(c.get("image")) for c in latest.get("containers") or []}
        wanted = {
            str(c.get("name")): str(c.get("image"))
            for c in (pod.pod.get("spec") or {}).get("containers") or []
        }
        changed = [name for name, image in wanted.items() if name in running and running[name] != image]
        if changed:
            raise PermanentError(
                f"update_pod: Fargate cannot change the image of a running task ({', '.join(changed)}): "
                "delete the pod (a Deployment rollout replaces it)",
                reason="FargateImmutableTask",
            )

    async def delete_pod(self, ref: PodRef) -> None:
        tasks = await self._tasks_of(ref.uid)
        live = [t for t in tasks if t.get("desiredStatus") != "STOPPED" or t.get("lastStatus") != "STOPPED"]
        for task in live:
            if task.get("desiredStatus") != "STOPPED":
                try:
                    await self._call(
                        self.ecs.stop_task,
                        "StopTask",
                        cluster=self.config.cluster,
                        task=task["taskArn"],
                        reason=STOP_REASON,
                    )
                except PermanentError as exc:
                    log.info("fargate: StopTask %s: %s", task["taskArn"], exc.message)
        await self._wait_stopped([str(t["taskArn"]) for t in live])
        await self._delete_secret(ref)
        self.deleted.add(ref.uid)
        record = self.pods.pop(ref.uid, None)
        for arn in record.tasks if record else ():
            self.arn_owner.pop(arn, None)
        await self._release_family(ref.uid)

    async def _wait_stopped(self, arns: list[str]) -> None:
        deadline = time.monotonic() + self.config.stop_timeout_seconds
        waiting = list(arns)
        while waiting:
            described = await self._describe(waiting)
            waiting = [str(t["taskArn"]) for t in described if t.get("lastStatus") != fargate_status.STOPPED]
            for task in described:
                self._absorb(task)
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise TransientError(
                    f"delete_pod: tasks still stopping: {', '.join(waiting)}", reason="TaskStopping"
                )
            await asyncio.sleep(self.config.poll_interval_seconds)

    async def _delete_secret(self, ref: PodRef) -> None:
        """Delete the pod's entries (env and files, registry logins): those named after its UID and
        tagged with it and this node."""
        prefix = naming.secret_name(self.config.secret_prefix, self.node_name, ref.uid)
        names: list[str] = []
        token: str | None = None
        while True:
            page = await self._call(
                self._secrets.list_secrets,
                "ListSecrets",
                Filters=[{"Key": "name", "Values": [prefix]}],
                **({"NextToken": token} if token else {}),
            )
            for entry in page.get("SecretList") or []:
                tags = naming.tag_map(entry.get("Tags"))
                name = str(entry.get("Name") or "")
                owner = naming.ref_of(tags, self.node_name)
                if name.startswith(prefix) and owner is not None and owner.uid == ref.uid:
                    names.append(name)
            token = page.get("NextToken")
            if not token:
                break
        for name in names:
            try:
                await self._call(
                    self._secrets.delete_secret,
                    "DeleteSecret",
                    SecretId=name,
                    ForceDeleteWithoutRecovery=True,
                )
            except PermanentError as exc:
                if "ResourceNotFound" not in exc.message:
                    raise

    async def _release_family(self, uid: str) -> None:
        """Deregister the pod's task definition when no other pod of this node uses it."""
        family = self.family_of.pop(uid, None)
        if family is None or family in self.family_of.values():
            return
        async with self._family_locks[family]:
            if family in self.family_of.values():
                return
            arn = self.families.pop(family, None)
            if arn is None:
                return
            try:
                await self._call(
                    self.ecs.deregister_task_definition, "DeregisterTaskDefinition", taskDefinition=arn
                )
            except PermanentError as exc:
                log.info("fargate: DeregisterTaskDefinition %s: %s", arn, exc.message)

    async def get_pod_status(self, ref: PodRef) -> ProviderPodStatus | None:
        if ref.uid in self.deleted:
            return None
        record = self.pods.get(ref.uid)
        if record is None or not record.tasks:
            if not await self._tasks_of(ref.uid):
                return None
        else:
            live = [arn for arn in record.tasks if arn not in self.stopped]
            for task in await self._describe(live) if live else []:
                self._absorb(task)
        return await self._status(self.pods[ref.uid])

    async def list_pods(self) -> list[PodRef]:
        await self._refresh(budgeted=False)
        if self._sweep is None:  # the first full listing: every task of this node is known now
            self._sweep = asyncio.create_task(self._sweep_definitions(), name="fargate-sweep")
        return [pod.ref for uid, pod in self.pods.items() if pod.tasks and uid not in self.deleted]

    async def _sweep_definitions(self) -> None:
        """Deregister this node's task definitions that no task of it uses. A definition goes with
        its last pod, but one is left when an instance stops between a pod's end and that step, or
        when ECS has forgotten the stopped tasks (it keeps them about an hour) before the next
        instance lists them. Once, in the background, after the first full listing."""
        try:
            families = await self._all_pages(
                self.ecs.list_task_definition_families,
                "ListTaskDefinitionFamilies",
                "families",
                familyPrefix=naming.family_prefix(self.node_name),
                status="ACTIVE",
            )
            swept = 0
            for family in families:
                if naming.is_family_of(self.node_name, family):
                    swept += await self._sweep_family(family)
            if swept:
                log.info("fargate: deregistered %d task definitions no pod of this node uses", swept)
        except ProviderError as exc:
            log.warning("fargate: leftover task definitions not swept: %s", exc.message)

    async def _sweep_family(self, family: str) -> int:
        async with self._family_locks[family]:
            if family in self.family_of.values():
                return 0  # a pod uses it (adopted, or created meanwhile)
            listed = await self._call(
                self.ecs.list_task_definitions,
                "ListTaskDefinitions",
                familyPrefix=family,  # a whole family name, on AWS as on moto
                status="ACTIVE",
            )
            swept = 0
            for arn in listed.get("taskDefinitionArns") or []:
                found = await self._call(
                    self.ecs.describe_task_definition,
                    "DescribeTaskDefinition",
                    taskDefinition=arn,
                    include=["TAGS"],
                )
                if naming.tag_map(found.get("tags")).get(naming.TAG_NODE) != self.node_name:
                    continue  # another node's with the same prefix
                await self._call(
                    self.ecs.deregister_task_definition, "DeregisterTaskDefinition", taskDefinition=arn
                )
                swept += 1
            self.families.pop(family, None)
            return swept

    async def capacity(self) -> Capacity:
        return Capacity(cpu=self.config.cpu, memory=self.config.memory, pods=self.config.pods)

    async def node_conditions(self) -> list[NodeCondition]:
        return []

    async def ping(self) -> None:
        await self._call(self.ecs.describe_clusters, "DescribeClusters", clusters=[self.config.cluster])

    # -- BulkStatusProvider ----------------------------------------------------------------------
    async def get_pod_statuses(self) -> Mapping[str, ProviderPodStatus]:
        await self._refresh(budgeted=True)
        statuses: dict[str, ProviderPodStatus] = {}
        for uid, pod in list(self.pods.items()):
            if uid in self.deleted or not pod.tasks:
                continue
            try:
                statuses[uid] = await self._status(pod)
            except ThrottledError:
                raise
            except ProviderError as exc:
                log.info("fargate: restarting %s/%s failed: %s", pod.ref.namespace, pod.ref.name, exc.message)
                statuses[uid] = self._plain_status(pod)
        return statuses

    def _plain_status(self, pod: PodTasks) -> ProviderPodStatus:
        ordered = pod.ordered()
        return fargate_status.pod_status(ordered[-1], pod.app_containers, ordered[:-1])

    async def _status(self, pod: PodTasks) -> ProviderPodStatus:
        """The pod's status; a stopped task of a restarting pod is run again once its back-off passed."""
        ordered = pod.ordered()
        latest = ordered[-1]
        if latest.get("lastStatus") != fargate_status.STOPPED or not self._restarts(pod, latest):
            pod.restart_at = None
            return fargate_status.pod_status(latest, pod.app_containers, ordered[:-1])
        now = time.monotonic()
        if pod.restart_at is None:
            backoff = min(self.restart_backoff * 2 ** max(len(ordered) - 1, 0), RESTART_BACKOFF_CAP)
            pod.restart_at = now + backoff
        if now >= pod.restart_at:
            pod.restart_at = None
            for task in await self._rerun(pod, latest):
                self._absorb(task)
            ordered = pod.ordered()
            return fargate_status.pod_status(ordered[-1], pod.app_containers, ordered[:-1])
        return fargate_status.pod_status(
            latest, pod.app_containers, ordered[:-1], phase_override=PodPhase.RUNNING
        )

    def _restarts(self, pod: PodTasks, task: Mapping[str, Any]) -> bool:
        policy = pod.restart_policy or "Always"
        if policy == "Always":
            return True
        return policy == "OnFailure" and fargate_status.task_failed(task, pod.app_containers)

    async def _rerun(self, pod: PodTasks, stopped: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Run the stopped task's task definition again for the pod, with the same tags."""
        request = {
            "cluster": self.config.cluster,
            "taskDefinition": stopped["taskDefinitionArn"],
            "launchType": "FARGATE",
            "platformVersion": self.config.platform_version,
            "count": 1,
            "startedBy": pod.ref.uid,
            "clientToken": f"{pod.ref.uid}-run-{len(pod.tasks) + 1}",  # one task per restart, retried or not
            "networkConfiguration": {
                "awsvpcConfiguration": {
                    "subnets": list(self.config.subnets),
                    "securityGroups": list(self.config.security_groups),
                    "assignPublicIp": "ENABLED" if self.config.assign_public_ip else "DISABLED",
                }
            },
            "tags": [
                {"key": k, "value": v}
                for k, v in naming.tag_map(stopped.get("tags")).items()
                if not k.startswith("aws:")
            ],
            "enableECSManagedTags": True,
        }
        log.info("fargate: running the stopped task of %s/%s again", pod.ref.namespace, pod.ref.name)
        return await self._run(request, pod.ref)

    # -- events ----------------------------------------------------------------------------------
    def _event(self, ref: PodRef, reason: str, message: str) -> None:
        if self._recorder is not None:
            self._recorder.record(ref, reason, message, warning=True)
        else:
            log.warning("fargate: %s/%s: %s: %s", ref.namespace, ref.name, reason, message)

    # -- the kubelet API -------------------------------------------------------------------------
    async def container_logs(
        self, ref: PodRef, container: str, options: LogOptions
    ) -> AsyncIterator[LogEntry]:
        record = self.pods.get(ref.uid)
        if record is None or not record.tasks:
            await self._tasks_of(ref.uid)
            record = self.pods.get(ref.uid)
        if record is None or not record.tasks or ref.uid in self.deleted:
            raise KeyError(f"no task for pod {ref.namespace}/{ref.name}")
        ordered = record.ordered()
        names = {str(c.get("name")) for t in ordered for c in t.get("containers") or []}
        if container not in names and container not in (record.app_containers or ()):
            raise KeyError(f"pod {ref.namespace}/{ref.name} has no container {container!r}")
        if options.previous:
            if len(ordered) < 2:
                raise LogsUnavailable("no previous task: the pod's task never restarted")
            task = ordered[-2]
        else:
            task = ordered[-1]
        arn = str(task["taskArn"])
        stream = f"{self.config.log_stream_prefix}/{container}/{naming.task_id(arn)}"

        async def read(**kwargs: Any) -> dict[str, Any]:
            try:
                return await self._call(
                    self._logs.get_log_events,
                    "GetLogEvents",
                    logGroupName=self.config.log_group,
                    logStreamName=stream,
                    **kwargs,
                )
            except PermanentError as exc:
                if "ResourceNotFound" in exc.message:
                    raise fargate_logs.StreamMissing(stream) from None
                raise

        async def stopped() -> bool:
            described = await self._describe([arn])
            for each in described:
                self._absorb(each)
            return not described or described[0].get("lastStatus") == fargate_status.STOPPED

        follow = options.follow and not options.previous
        async for entry in fargate_logs.read_logs(
            read, stopped, options, follow=follow, interval=self.follow_interval
        ):
            yield entry

    async def exec_in_container(
        self, ref: PodRef, container: str, command: Sequence[str], io: ExecIO
    ) -> int | None:
        raise ExecError(NO_EXEC)

    async def attach_container(self, ref: PodRef, container: str, io: ExecIO) -> None:
        raise ExecError(NO_EXEC)

    async def port_forward(self, ref: PodRef, port: int, connection: PortConnection) -> None:
        raise PortForwardError(NO_EXEC)


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return f"{error_code(exc)}: {error_message(exc)}"
    if isinstance(exc, ProviderError):
        return exc.message
    return " ".join(str(exc).split()) or type(exc).__name__
