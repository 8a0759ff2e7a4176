"""The Azure Container Instances provider: one pod = one container group (entry point ``aci``).

On the real SDK (``azure-mgmt-containerinstance`` ``.aio``, ``azure-identity``): see
:mod:`providers.aci.credentials` for the client, :mod:`.mapping` for the pod as a container group,
:mod:`.status` for the group as a pod status, :mod:`.bulk` for the bulk status, :mod:`.throttle`
for ARM's limits, :mod:`.errors` for the SDK's failures as the core's, :mod:`.logs` and
:mod:`.exec` for the kubelet API.

**Ownership.** A pod's group is ``naming.container_group_name(namespace, name)``, tagged with the
node, namespace, pod name and UID. Every call that acts on a group first checks that its tags name
*this* pod (UID) of *this* node: a group with the name but another owner is a conflict, never
adopted, updated, deleted or read as the pod's. ``list_pods`` lists only groups with this node's tag.

**Long-running operations are started, not awaited.** ``create_pod`` sends the PUT (``polling=False``)
and returns once ARM accepted it (201): ACI takes minutes, and the status poll follows the group.
``delete_pod`` sends the DELETE and then polls the group with GETs until it is gone (404), every
``poll_interval_seconds`` at most; the core bounds it by its delete timeout and the grace period.

**Events** (:mod:`.events`, through the core's ``PodEventRecorder``): ACI's instanceView events
of every GET, once each (a repeat raises the count of the same Kubernetes Event), and the
mapping's warnings (what ACI cannot express but the pod can run without: a tcpSocket probe, file
modes...) as Warning Events naming the field, once per pod. Without a recorder (the provider used
outside the core) the warnings are logged at WARNING instead.

**Secrets** come from the core: registry logins (``PreparedPod.registry_credentials``) and the
storage key of an Azure Files volume (``ResolvedVolume.secret``) go into the group's secret fields,
which ARM never returns; neither is ever logged or put in an Event.

**Status reads** (``get_pod_statuses``, ``get_pod_status``, and ``list_pods`` when its list is not
fresh) share the ``status_poll`` budget of ``calls_per_minute``: half of it for lists and half for
GETs, each a token bucket refilled over the minute (:class:`~providers.aci.throttle.TokenBucket`,
holding at most half a minute's share, or one full list), so the rate stays within the budget
whatever the pod count and however often the core polls. A sliding minute (burst after burst of
the whole budget, then nothing) made a burst of pods see its statuses in one-minute steps; with
buckets a list comes every ``2 * pages * 60 / calls_per_minute`` seconds (20 s at 1,000 pods and
the default 60), or twice as often when it borrows the GETs' share because no GET is urgent (no
group never read, no running Job); GETs of Jobs are never starved by the list nor the list by GETs,
and ``list_pods`` (the core's resync, every 60 s) answers from a list at most
:data:`LIST_FRESH_SECONDS` old, or lists within the lists' share. ``budget`` counts the status
reads of the last minute (for figures and tests), it decides nothing.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import ClassVar, cast

from azure.core.async_paging import AsyncItemPaged
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import AzureError, HttpResponseError
from azure.mgmt.containerinstance.aio import ContainerInstanceManagementClient
from azure.mgmt.containerinstance.models import (
    Container,
    ContainerExecRequest,
    ContainerExecRequestTerminalSize,
    ContainerGroup,
    InitContainerDefinition,
)

from providers.aci import logs as aci_logs
from providers.aci import mapping, naming
from providers.aci import status as aci_status
from providers.aci.bulk import MAY_END, StatusTracker, Tracked
from providers.aci.config import AciConfig
from providers.aci.credentials import make_client, make_credential
from providers.aci.errors import error_message, mapped, one_line, status_of
from providers.aci.events import EventLedger, PodEvent
from providers.aci.exec import run_attach, run_exec
from providers.aci.logs import Instance, read_logs
from providers.aci.throttle import ArmRateGate, CallBudget, TokenBucket
from vk_operator.provider import (
    Capacity,
    ExecError,
    ExecIO,
    LogEntry,
    LogOptions,
    NodeCondition,
    NotFoundError,
    PermanentError,
    PodEventRecorder,
    PodRef,
    PreparedPod,
    ProviderPodStatus,
    TerminalSize,
    ThrottledError,
    TransientError,
    parse_quantity,
)

log = logging.getLogger(__name__)
# azure-core logs every request's URL and headers at INFO: at the virtual kubelet's usual level that
# is a few lines per status poll. Unless someone set its level (or runs at DEBUG), keep it to warnings.
HTTP_LOGGER = "azure.core.pipeline.policies.http_logging_policy"

DELETING = "Deleting"
NAME_CONFLICT = "ContainerGroupNameConflict"
CONFLICT_WAIT_SECONDS = 20.0  # create_pod waits this long for an earlier pod's group being deleted
MIN_POLL_SECONDS = 0.05  # delete_pod never polls faster than this, whatever the config says
FIRST_POLL_SECONDS = 0.2  # the first GET after a DELETE comes this soon (doubling to the interval)
GET_CONCURRENCY = 16  # status GETs of one bulk poll in flight at once
PING_FRESH_SECONDS = 30.0  # ping answers from any ARM response this recent, without a call
QUOTA_TTL_SECONDS = 600.0  # how long the region's quota (capacity) is cached
LIST_FRESH_SECONDS = 45.0  # list_pods answers from a full list this recent (the core's resync: 60 s)
IMMUTABLE_KEYS = ("subscription_id", "resource_group", "credential", "managed_identity_client_id", "base_url")


class AciProvider:
    """Pods as ACI container groups (see the module docstring)."""

    name: ClassVar[str] = "aci"
    config_model: ClassVar[type[AciConfig]] = AciConfig
    volume_types: ClassVar[frozenset[str]] = frozenset(mapping.VOLUME_TYPES)

    def __init__(self, config: AciConfig, node_name: str) -> None:
        self.config = config
        self.node_name = node_name
        self.gate = ArmRateGate()
        self.budget = CallBudget(config.status_poll.calls_per_minute)
        self._list_pages = 1  # the pages (calls) the last full list took
        self._listed_at: float | None = None  # when the last full list ended (monotonic)
        self.list_pace = TokenBucket(self._share(), lambda: max(float(self._list_pages), self._share() / 2))
        self.get_pace = TokenBucket(self._share(), lambda: max(1.0, self._share() / 2))
        self.tracker = StatusTracker(node_name, config.status_poll.refresh_seconds, time.monotonic)
        self.recorder: PodEventRecorder | None = None  # the core's, given by emit_events
        self.ledger = EventLedger()  # the events and warnings told, per pod
        self.started_at = datetime.datetime.now(datetime.UTC)  # set again by start()
        self.calls: collections.Counter[str] = collections.Counter()  # ARM operations we made, by name
        self._client: ContainerInstanceManagementClient | None = None
        self._credential: AsyncTokenCredential | None = None
        self._quota: tuple[float, dict[str, int]] | None = None
        # kubectl logs -f: seconds between list_logs polls, and between GETs checking for the end.
        self.follow_interval = aci_logs.FOLLOW_INTERVAL
        self.follow_status_interval = aci_logs.STATUS_INTERVAL

    # -- lifecycle -------------------------------------------------------------------------------
    @property
    def client(self) -> ContainerInstanceManagementClient:
        if self._client is None:
            raise TransientError("aci: the provider is not started", reason="ProviderNotStarted")
        return self._client

    @property
    def resource_group(self) -> str:
        return self.config.resource_group

    def _where(self) -> str:
        base = self.config.base_url or "https://management.azure.com"
        return (
            f"resource group {self.config.resource_group} of subscription {self.config.subscription_id} "
            f"at {base}"
        )

    def emit_events(self, recorder: PodEventRecorder) -> None:
        self.recorder = recorder

    async def start(self) -> None:
        """Build the credential and client, then list the resource group's container groups once."""
        self.started_at = datetime.datetime.now(datetime.UTC)
        try:
            self._credential = make_credential(self.config)
        except ValueError as exc:
            raise PermanentError(f"aci: credential {self.config.credential!r}: {one_line(exc)}") from None
        self._client = make_client(self.config, self._credential, self.gate)
        http_log = logging.getLogger(HTTP_LOGGER)
        if http_log.level == logging.NOTSET and logging.getLogger().getEffectiveLevel() > logging.DEBUG:
            http_log.setLevel(logging.WARNING)
        try:
            await self._first_page()
        except AzureError as exc:
            await self.close()
            detail = mapped(exc, "list").message.removeprefix("list: ")
            if status_of(exc) in (401, 403):
                detail += (
                    " (the identity needs read, write and delete on Microsoft.ContainerInstance/"
                    "containerGroups of the resource group: Contributor there covers them)"
                )
            raise PermanentError(
                f"aci: cannot list the container groups of {self._where()}: {detail}"
            ) from None
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        client, credential = self._client, self._credential
        self._client = self._credential = None
        if client is not None:
            await client.close()
        if credential is not None:
            await credential.close()

    async def reconfigure(self, config: AciConfig) -> None:
        """Apply a new config; the ARM connection (subscription, resource group, credential,
        endpoint) cannot change without a restart."""
        changed = [key for key in IMMUTABLE_KEYS if getattr(config, key) != getattr(self.config, key)]
        if changed:
            raise PermanentError(f"aci: {', '.join(changed)} cannot change without a restart")
        self.config = config
        self.budget.per_minute = config.status_poll.calls_per_minute
        self.list_pace.per_minute = self.get_pace.per_minute = self._share()
        self.tracker.refresh_seconds = config.status_poll.refresh_seconds
        self._quota = None

    # -- ARM calls -------------------------------------------------------------------------------
    def _share(self) -> float:
        """Lists' and GETs' share of the status budget, each (calls a minute)."""
        return self.config.status_poll.calls_per_minute / 2

    def _spend_get(self) -> None:
        self.budget.spend()
        self.get_pace.spend()

    async def _list_for_status(self, what: str, borrowed: int = 0) -> list[ContainerGroup]:
        """A full list, counted in the status budget (``borrowed`` of its calls from the GETs'
        share), into the tracker."""
        groups, pages = await self._list_all(what)
        self.budget.spend(pages)
        borrowed = min(borrowed, pages)
        self.get_pace.spend(borrowed)
        self.list_pace.spend(pages - borrowed)
        self._list_pages = pages
        self._listed_at = time.monotonic()
        self.tracker.absorb_list(groups)
        self.ledger.keep(t.ref.uid for t in self.tracker.groups.values())
        return groups

    def group_name(self, ref: PodRef) -> str:
        return naming.container_group_name(ref.namespace, ref.name)

    def _is_pod(self, group: ContainerGroup, ref: PodRef) -> bool:
        """Whether ``group`` is ``ref``'s group of this node (its tags, not its name)."""
        owner = self.tracker.owned_ref(group)
        return owner is not None and owner.uid == ref.uid

    async def _get(self, name: str, what: str) -> ContainerGroup | None:
        self.calls["get"] += 1
        try:
            return await self.client.container_groups.get(self.resource_group, name)
        except HttpResponseError as exc:
            if exc.status_code == 404 and (exc.error is None or exc.error.code != "ResourceGroupNotFound"):
                return None
            raise mapped(exc, what) from None
        except AzureError as exc:
            raise mapped(exc, what) from None

    def _pager(self) -> AsyncItemPaged[ContainerGroup]:
        # Typed AsyncIterable by the SDK; an AsyncItemPaged at run time (pages: one call each).
        return cast(
            AsyncItemPaged[ContainerGroup],
            self.client.container_groups.list_by_resource_group(self.resource_group),
        )

    async def _first_page(self) -> list[ContainerGroup]:
        self.calls["list"] += 1
        async for page in self._pager().by_page():
            return [group async for group in page]
        return []

    async def _list_all(self, what: str) -> tuple[list[ContainerGroup], int]:
        """Every container group of the resource group, and the pages (calls) it took."""
        groups: list[ContainerGroup] = []
        pages = 0
        try:
            async for page in self._pager().by_page():
                pages += 1
                self.calls["list"] += 1
                groups.extend([group async for group in page])
        except AzureError as exc:
            raise mapped(exc, what) from None
        return groups, max(pages, 1)

    async def _wait_gone(self, name: str, uid: str, timeout: float | None = None) -> bool:
        """Poll ``name`` until it is gone, or holds another pod's group; False at ``timeout``."""
        interval = max(self.config.poll_interval_seconds, MIN_POLL_SECONDS)
        delay = min(FIRST_POLL_SECONDS, interval)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if deadline is not None and time.monotonic() + delay > deadline:
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, interval)
            try:
                group = await self._get(name, "delete_pod")
            except ThrottledError as exc:  # the gate holds reads back; then go on waiting
                delay = max(delay, min(exc.retry_after or 1.0, interval * 4))
                continue
            if group is None:
                return True
            owner = naming.ref_from_tags(group.tags)
            if owner is None or owner.uid != uid:
                return True  # the name now holds another group: ours is gone

    # -- Events --------------------------------------------------------------------------------
    def _tell(self, ref: PodRef, records: Sequence[PodEvent]) -> None:
        if self.recorder is None:
            return
        for record in records:
            self.recorder.record(ref, record.reason, record.message, warning=record.warning)

    def _note_warnings(self, ref: PodRef, warnings: Sequence[mapping.MappingWarning]) -> None:
        news = self.ledger.new_warnings(ref.uid, warnings)
        if self.recorder is None and news:
            shown = "; ".join(f"{w.reason}: {w.message}" for w in news)
            log.warning("%s/%s: ACI cannot do all the pod asks: %s", ref.namespace, ref.name, shown)
        self._tell(ref, news)

    def _absorb(self, group: ContainerGroup, *, created: bool = False) -> Tracked | None:
        """A GET's (or PUT's) answer into the tracker, and its instanceView events told."""
        tracked = self.tracker.absorb_group(group, created=created)
        if tracked is not None:
            # Events of a group this instance did not create that ended before it started were
            # told by the instance before (see events.py).
            since = None if tracked.created_at is not None else self.started_at
            self._tell(
                tracked.ref, self.ledger.news(tracked.ref.uid, aci_status.group_events(group), since=since)
            )
        return tracked

    def _forget(self, name: str, uid: str) -> None:
        self.tracker.forget(name, uid)
        self.ledger.forget(uid)

    def _group_of(self, prepared: PreparedPod) -> ContainerGroup:
        group, warnings = mapping.container_group(prepared, self.config, self.node_name)
        self._note_warnings(prepared.ref, warnings)
        return group

    # -- Provider --------------------------------------------------------------------------------
    async def create_pod(self, pod: PreparedPod) -> None:
        ref = pod.ref
        name = self.group_name(ref)
        group = self._group_of(pod)
        existing = await self._get(name, "create_pod")
        if existing is not None:
            if self._is_pod(existing, ref):
                self._absorb(existing)
                return  # created before (a retry after a timeout, or a restart): nothing to do
            if existing.provisioning_state == DELETING and await self._wait_gone(
                name, _uid_of(existing), CONFLICT_WAIT_SECONDS
            ):
                pass  # an earlier pod of this name was being deleted, and now is gone
            else:
                raise TransientError(
                    f"create_pod: container group {name} exists and is {_owner(existing)}; "
                    "it is not touched: waiting for it to go",
                    reason=NAME_CONFLICT,
                )
        self.calls["put"] += 1
        try:
            poller = await self.client.container_groups.begin_create_or_update(
                self.resource_group, name, group, polling=False
            )
            created = await poller.result()
        except AzureError as exc:
            raise mapped(exc, "create_pod") from None
        self._absorb(created, created=True)

    async def update_pod(self, pod: PreparedPod) -> None:
        """A new image redeploys the group with the same spec (ACI restarts its containers);
        anything else the core passes (activeDeadlineSeconds, which the core enforces) has nothing to
        change in ACI."""
        ref = pod.ref
        name = self.group_name(ref)
        group = self._group_of(pod)
        existing = await self._get(name, "update_pod")
        if existing is None:
            raise NotFoundError(f"update_pod: container group {name} does not exist")
        if not self._is_pod(existing, ref):
            raise PermanentError(
                f"update_pod: container group {name} is {_owner(existing)}", reason=NAME_CONFLICT
            )
        if _images(existing) == _images(group):
            return
        self.calls["put"] += 1
        try:
            poller = await self.client.container_groups.begin_create_or_update(
                self.resource_group, name, group, polling=False
            )
            updated = await poller.result()
        except AzureError as exc:
            raise mapped(exc, "update_pod") from None
        self._absorb(updated)

    async def delete_pod(self, ref: PodRef) -> None:
        name = self.group_name(ref)
        existing = await self._get(name, "delete_pod")
        if existing is None or not self._is_pod(existing, ref):
            self._forget(name, ref.uid)
            return  # the backend does not have this pod (a group of this name is another's)
        if existing.provisioning_state != DELETING:
            self.calls["delete"] += 1
            try:
                # polling=False: the DELETE only. (The poller's result of a 202 would be a bogus
                # ContainerGroup: it is never read.)
                await self.client.container_groups.begin_delete(self.resource_group, name, polling=False)
            except HttpResponseError as exc:
                if exc.status_code != 404:
                    raise mapped(exc, "delete_pod") from None
            except AzureError as exc:
                raise mapped(exc, "delete_pod") from None
        await self._wait_gone(name, ref.uid)
        self._forget(name, ref.uid)

    async def get_pod_status(self, ref: PodRef) -> ProviderPodStatus | None:
        name = self.group_name(ref)
        self._spend_get()
        group = await self._get(name, "get_pod_status")
        if group is None or not self._is_pod(group, ref):
            self._forget(name, ref.uid)
            return None
        self._absorb(group)
        return aci_status.pod_status(group)

    async def list_pods(self) -> list[PodRef]:
        fresh = self._listed_at is not None and time.monotonic() - self._listed_at < LIST_FRESH_SECONDS
        if fresh:
            # The latest full list and what this instance did since (creates, deletes, GETs).
            self.calls["list_from_cache"] += 1
            return [t.ref for t in self.tracker.groups.values()]
        groups = await self._list_for_status("list_pods")
        refs: dict[str, PodRef] = {}
        for group in groups:
            ref = self.tracker.owned_ref(group)
            if ref is not None:
                refs.setdefault(ref.uid, ref)
        return list(refs.values())

    async def capacity(self) -> Capacity:
        """The config's capacity, capped by the region's quota (ContainerGroups, StandardCores)
        where the usage call gives it (cached for QUOTA_TTL_SECONDS; the config alone if it fails)."""
        capacity = Capacity(
            cpu=self.config.cpu, memory=self.config.memory, pods=self.config.pods, gpu=self.config.gpu
        )
        quota = await self._region_quota()
        cores, groups = quota.get("StandardCores"), quota.get("ContainerGroups")
        if cores is not None and cores < parse_quantity(capacity.cpu):
            capacity = dataclasses.replace(capacity, cpu=str(cores))
        if groups is not None and groups < parse_quantity(capacity.pods):
            capacity = dataclasses.replace(capacity, pods=str(groups))
        return capacity

    async def _region_quota(self) -> dict[str, int]:
        now = time.monotonic()
        if self._quota is not None and now - self._quota[0] < QUOTA_TTL_SECONDS:
            return self._quota[1]
        limits: dict[str, int] = {}
        try:
            self.calls["usage"] += 1
            async for usage in self.client.location.list_usage(self.config.region):
                if usage.name is not None and usage.name.value and usage.limit is not None:
                    limits[usage.name.value] = int(usage.limit)
        except (AzureError, TransientError) as exc:
            log.info("aci: the region's quota is not known (%s): capacity from the config", exc)
            return self._quota[1] if self._quota is not None else {}
        self._quota = (now, limits)
        return limits

    async def node_conditions(self) -> list[NodeCondition]:
        return []

    # -- BulkStatusProvider ----------------------------------------------------------------------
    async def get_pod_statuses(self) -> Mapping[str, ProviderPodStatus]:
        """A list when its share of the budget allows, and GETs for the groups that need one
        within theirs (bulk.py); from the cache when neither has room."""
        pages = self._list_pages
        listed = False
        own = self.list_pace.available()
        # The list may borrow the GETs' share when no GET is urgent (a group never read, a running
        # Job): after a burst, what the GETs would confirm one group at a time, a list tells for
        # 100 at once, so Running shows every 10 s instead of every 20 s (1,000 pods, 60/min).
        urgent = any(rank <= MAY_END for rank, _ in self.tracker.ranked())
        spare = 0 if urgent else self.get_pace.available()
        if not self.tracker.listed_once or own + spare >= pages:
            await self._list_for_status("get_pod_statuses", borrowed=max(0, pages - own))
            listed = True
        due = self.tracker.due(self.get_pace.available())
        if due:
            await self._refresh(due)
        elif not listed:
            self.calls["status_from_cache"] += 1  # no room for a call: what the last calls told
        return self.tracker.statuses()

    async def _refresh(self, due: Sequence[Tracked]) -> None:
        slots = asyncio.Semaphore(GET_CONCURRENCY)

        async def read(name: str, uid: str) -> None:
            async with slots:
                self._spend_get()
                group = await self._get(name, "get_pod_statuses")
            if group is None or naming.ref_from_tags(group.tags) is None or _uid_of(group) != uid:
                self._forget(name, uid)
            else:
                self._absorb(group)

        results = await asyncio.gather(*(read(t.name, t.ref.uid) for t in due), return_exceptions=True)
        for result in results:
            if isinstance(result, ThrottledError):
                raise result  # the core holds every call back; what was read is kept
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result
            if isinstance(result, Exception):
                log.debug("aci: a status GET failed (the cached status stands): %s", result)

    # -- Pinger ----------------------------------------------------------------------------------
    async def ping(self) -> None:
        last = self.gate.last_response_at
        if last is not None and time.monotonic() - last < PING_FRESH_SECONDS:
            return
        try:
            await self._first_page()
        except AzureError as exc:
            raise mapped(exc, "ping") from None

    # -- the kubelet API -------------------------------------------------------------------------
    async def _verified_name(self, ref: PodRef) -> str:
        """The pod's group name once its tags say it is this pod's (KeyError otherwise)."""
        name = self.group_name(ref)
        tracked = self.tracker.groups.get(name)
        if tracked is not None and tracked.ref.uid == ref.uid:
            return name
        group = await self._get(name, "kubelet API")
        if group is None or not self._is_pod(group, ref):
            raise KeyError(f"no container group for pod {ref.namespace}/{ref.name}")
        self._absorb(group)
        return name

    async def container_logs(
        self, ref: PodRef, container: str, options: LogOptions
    ) -> AsyncIterator[LogEntry]:
        name = await self._verified_name(ref)

        async def fetch(tail: int | None) -> str:
            self.calls["logs"] += 1
            try:
                logs = await self.client.containers.list_logs(
                    self.resource_group, name, container, tail=tail, timestamps=True
                )
            except HttpResponseError as exc:
                if exc.status_code == 404:
                    raise KeyError(f"{ref.namespace}/{ref.name}: {error_message(exc)}") from None
                raise mapped(exc, "container_logs") from None
            except AzureError as exc:
                raise mapped(exc, "container_logs") from None
            return logs.content or ""

        async def inspect() -> Instance | None:
            group = await self._get(name, "container_logs")
            if group is None or not self._is_pod(group, ref):
                return None
            return _instance(group, container)

        async for entry in read_logs(
            fetch,
            inspect,
            options,
            follow_interval=self.follow_interval,
            status_interval=self.follow_status_interval,
        ):
            yield entry

    async def exec_in_container(
        self, ref: PodRef, container: str, command: Sequence[str], io: ExecIO
    ) -> int | None:
        name = await self._verified_name(ref)

        async def start(text: str, size: TerminalSize | None) -> tuple[str, str]:
            terminal = ContainerExecRequestTerminalSize(rows=size.height, cols=size.width) if size else None
            request = ContainerExecRequest(command=text, terminal_size=terminal)
            self.calls["exec"] += 1
            try:
                answer = await self.client.containers.execute_command(
                    self.resource_group, name, container, request
                )
            except AzureError as exc:
                raise _stream_error(exc, ref, "exec") from None
            if not answer.web_socket_uri or not answer.password:
                raise ExecError("ACI gave no exec websocket")
            return answer.web_socket_uri, answer.password

        return await run_exec(start, command, io)

    async def attach_container(self, ref: PodRef, container: str, io: ExecIO) -> None:
        name = await self._verified_name(ref)

        async def start() -> tuple[str, str]:
            self.calls["attach"] += 1
            try:
                answer = await self.client.containers.attach(self.resource_group, name, container)
            except AzureError as exc:
                raise _stream_error(exc, ref, "attach") from None
            if not answer.web_socket_uri or not answer.password:
                raise ExecError("ACI gave no attach websocket")
            return answer.web_socket_uri, answer.password

        await run_attach(start, io)


def _uid_of(group: ContainerGroup) -> str:
    ref = naming.ref_from_tags(group.tags)
    return ref.uid if ref is not None else ""


def _owner(group: ContainerGroup) -> str:
    ref = naming.ref_from_tags(group.tags)
    if ref is None:
        return "not a vk-operator pod's (it has no ownership tags)"
    node = next((v for k, v in (group.tags or {}).items() if k.lower() == naming.TAG_NODE), "?")
    state = f", {group.provisioning_state}" if group.provisioning_state else ""
    return f"pod {ref.namespace}/{ref.name}'s (uid {ref.uid}, node {node}{state})"


def _images(group: ContainerGroup) -> dict[str, str | None]:
    images = {f"init/{c.name}": c.image for c in group.init_containers or []}
    images.update({c.name: c.image for c in group.containers or []})
    return images


def _instance(group: ContainerGroup, container: str) -> Instance:
    every: list[Container | InitContainerDefinition] = [
        *(group.init_containers or []),
        *(group.containers or []),
    ]
    for each in every:
        if each.name != container:
            continue
        view = each.instance_view
        if view is None:
            return Instance(running=False, restart_count=0, ever_ran=False)
        current = view.current_state.state if view.current_state is not None else None
        previous = view.previous_state
        restarts = view.restart_count or 0
        ever_ran = (
            current in aci_status.CONTAINER_RUNNING
            or current in aci_status.CONTAINER_TERMINATED
            or restarts > 0
            or previous is not None
        )
        return Instance(
            running=current in aci_status.CONTAINER_RUNNING,
            restart_count=restarts,
            ever_ran=ever_ran,
            previous_finished_at=previous.finish_time if previous is not None else None,
        )
    raise KeyError(f"container group {group.name} has no container {container!r}")


def _stream_error(exc: AzureError, ref: PodRef, what: str) -> Exception:
    if isinstance(exc, HttpResponseError) and exc.status_code == 404:
        return KeyError(f"{ref.namespace}/{ref.name}: {error_message(exc)}")
    return ExecError(mapped(exc, what).message)
