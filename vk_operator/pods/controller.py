"""Per-pod reconciliation: the API object is the wish, the provider the reality.

Events (from kopf's watch, the provider's notifications, retries and the periodic resync) only
enqueue a pod key; workers take keys one at a time per pod and compare the latest API object with
the provider. Keys coalesce, so a burst of events for one pod costs one reconcile.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import hashlib
import json
import logging
import sys
from collections.abc import AsyncIterator, Iterator, Mapping, MutableMapping
from typing import Any, NamedTuple

from vk_operator import metrics
from vk_operator.domain import packed
from vk_operator.domain import pod_status as status_domain
from vk_operator.domain.model import (
    ContainerPhase,
    ContainerStatus,
    Pod,
    PodPhase,
    PodRef,
    ProviderError,
    ProviderPodStatus,
)
from vk_operator.domain.prepared import PERMANENT_REASONS, Preparation, prepare
from vk_operator.kube import ApiError, Kube
from vk_operator.kube.client import PARTIAL_METADATA_LIST
from vk_operator.pods.events import EventRecorder
from vk_operator.pods.sources import SourceFetcher
from vk_operator.typing import PodNotifier, Provider

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _key(pod: Pod) -> Key:
    meta = pod["metadata"]
    return sys.intern(meta["namespace"]), sys.intern(meta["name"])  # see PodRef.of


def _rv(obj: Pod) -> int:
    try:
        return int(str(obj["metadata"].get("resourceVersion") or 0))
    except ValueError:
        return 0


class _Entry(NamedTuple):
    uid: str
    rv: int
    phase: str | None
    deleting: bool
    packed: bytes


class PodCache(MutableMapping[Key, Pod]):
    """The latest API object of each of our pods, held compactly.

    Decoded into dicts a pod takes ~11 KB (~21 KB with managedFields); packed ~0.4 KB. So pods are
    kept packed (domain.packed), without managedFields (nothing here reads them), and unpacked on
    read (~15 us; a fresh copy each time, so callers may change what they get). UID,
    resourceVersion, phase and whether the pod is Terminating are kept beside, for the paths that
    need only those.
    """

    def __init__(self) -> None:
        self._entries: dict[Key, _Entry] = {}

    def __getitem__(self, key: Key) -> Pod:
        pod: Pod = packed.unpack(self._entries[key].packed)
        return pod

    def __setitem__(self, key: Key, pod: Pod) -> None:
        meta = pod.get("metadata") or {}
        if "managedFields" in meta:
            pod = {**pod, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
        phase = (pod.get("status") or {}).get("phase")
        self._entries[key] = _Entry(
            sys.intern(meta.get("uid", "")),
            _rv(pod),
            sys.intern(phase) if phase else None,
            bool(meta.get("deletionTimestamp")),
            packed.pack(pod),
        )

    def __delitem__(self, key: Key) -> None:
        del self._entries[key]

    def __iter__(self) -> Iterator[Key]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def entry(self, key: Key) -> _Entry | None:
        return self._entries.get(key)

    def uid(self, key: Key) -> str | None:
        entry = self._entries.get(key)
        return entry.uid if entry else None

    def rv(self, key: Key) -> int:
        entry = self._entries.get(key)
        return entry.rv if entry else 0

    def uids(self) -> set[str]:
        return {e.uid for e in self._entries.values()}

    def phase_counts(self) -> dict[str, int]:
        """Pods by phase without decoding any (for metrics)."""
        counts: dict[str, int] = {}
        for entry in self._entries.values():
            phase = entry.phase or "Unknown"
            counts[phase] = counts.get(phase, 0) + 1
        return counts


@dataclasses.dataclass
class Backoff:
    """Capped exponential backoff, per pod."""

    initial: float = 0.5
    cap: float = 30.0
    deadline: float = 600.0  # give up (pod Failed) when transient errors last this long

    def delay(self, attempt: int) -> float:
        return min(self.cap, self.initial * 2.0 ** max(attempt - 1, 0))


@dataclasses.dataclass(slots=True)
class _Tracked:
    """What we know about one pod UID beyond its API object."""

    ref: PodRef
    in_provider: bool = False
    attempts: int = 0
    first_failure: float | None = None
    written_rv: int = 0  # resourceVersion our last status write produced
    spec_fingerprint: bytes | None = None
    deleting: bool = False


class PodController:
    def __init__(
        self,
        kube: Kube,
        provider: Provider,
        node_name: str,
        host_ip: str,
        *,
        namespace: str | None = None,
        workers: int = 16,
        resync_interval: float = 60.0,
        relist_interval: float = 600.0,
        status_poll_interval: float = 5.0,
        backoff: Backoff | None = None,
        event_qps: float = 50.0,
        event_burst: int = 100,
    ) -> None:
        self.kube = kube
        self.provider = provider
        self.node_name = node_name
        self.host_ip = host_ip
        self.namespace = namespace
        self.workers = workers
        self.resync_interval = resync_interval
        self.relist_interval = relist_interval
        self.status_poll_interval = status_poll_interval
        self.backoff = backoff or Backoff()
        self.events = EventRecorder(kube, node_name, qps=event_qps, burst=event_burst)
        self.sources = SourceFetcher(kube, provider, host_ip)
        self.cache = PodCache()
        self.tracked: dict[str, _Tracked] = {}  # by UID
        # Tracked UIDs by pod key (nearly always one): orphans found without a scan.
        self._uids: dict[Key, tuple[str, ...]] = {}
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._queued: set[Key] = set()
        self._active: set[Key] = set()
        self._dirty: set[Key] = set()
        self.activity = 0  # watch events observed plus reconciles started, so far
        self.started = asyncio.Event()  # the first resync is done: workers may run
        self.adopted = asyncio.Event()  # ... and every pod it found has been reconciled once
        if isinstance(provider, PodNotifier):
            provider.notify_pods(self._on_provider_change)

    # -- inputs --------------------------------------------------------------------------------------
    def observe(self, event_type: str, pod: Pod) -> None:
        """A watch event from the API (kopf). Cheap: updates the cache and enqueues."""
        self.activity += 1
        key = _key(pod)
        if event_type == "DELETED":
            if self.cache.uid(key) == pod["metadata"]["uid"]:
                del self.cache[key]
        else:
            uid, rv = pod["metadata"]["uid"], _rv(pod)
            # A version already in the cache was enqueued when it got there (by the resync, e.g.
            # when kopf's initial events repeat what the first resync listed) or is our own write.
            known = self.cache.uid(key) == uid and self.cache.rv(key) == rv
            if not known:
                self.cache[key] = pod
            tracked = self.tracked.get(uid)
            ours = tracked is not None and tracked.written_rv == rv  # the echo of our status write
            if (known or ours) and not pod["metadata"].get("deletionTimestamp"):
                return  # nothing new to do
        self.enqueue(key)

    def _on_provider_change(self, ref: PodRef) -> None:
        self.enqueue((ref.namespace, ref.name))

    def enqueue(self, key: Key) -> None:
        if key in self._active:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    def _retry_later(self, key: Key, delay: float) -> None:
        asyncio.get_running_loop().call_later(delay, self.enqueue, key)

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    # -- running -----------------------------------------------------------------------------------
    def start(self) -> list[asyncio.Task[None]]:
        """Spawn the workers and the resync loop; workers wait for the first resync (adoption)."""
        tasks = [asyncio.create_task(self._resync_loop(), name="pod-resync")]
        if not isinstance(self.provider, PodNotifier):
            # A provider that cannot push status changes is polled; one that can costs nothing idle.
            tasks.append(asyncio.create_task(self._poll_loop(), name="pod-status-poll"))
        tasks += [asyncio.create_task(self._worker(), name=f"pod-worker-{i}") for i in range(self.workers)]
        return tasks + self.events.start()

    async def _worker(self) -> None:
        await self.started.wait()
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            self._active.add(key)
            self.activity += 1
            try:
                await self.reconcile(key)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reconcile of %s/%s failed; retrying", *key)
                self._retry_later(key, self.backoff.cap)
            finally:
                self._active.discard(key)
                if key in self._dirty:
                    self._dirty.discard(key)
                    self.enqueue(key)
                self._check_adopted()

    def _check_adopted(self) -> None:
        if not self.adopted.is_set() and self.started.is_set() and not self._queued and not self._active:
            self.adopted.set()
            log.info("start-up: %d pods reconciled, %d in the provider", len(self.cache), len(self.tracked))

    async def _poll_loop(self) -> None:
        await self.started.wait()
        while True:
            await asyncio.sleep(self.status_poll_interval)
            for tracked in list(self.tracked.values()):
                if tracked.in_provider:
                    self.enqueue((tracked.ref.namespace, tracked.ref.name))

    async def _resync_loop(self) -> None:
        failures = 0
        loop = asyncio.get_running_loop()
        listed_at = -float("inf")
        while True:
            try:
                # The API side is re-listed less often than the provider's: kopf's watch resumes
                # from its resourceVersion after every disconnect, so only a relist after a long gap
                # (410 Gone: deletions meanwhile are never reported) can leave the cache stale, and
                # a list of 10,000 pods costs ~0.4 s of CPU where the provider's costs ~10 ms.
                relist = loop.time() - listed_at >= self.relist_interval or not self.started.is_set()
                if relist:
                    listed_at = loop.time()
                await self.resync(relist=relist)
                self.started.set()
                self._check_adopted()  # nothing to reconcile at all
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                log.warning("resync failed: %s", exc)
            # Until the first resync succeeds nothing is reconciled: retry it quickly.
            await asyncio.sleep(
                self.resync_interval if self.started.is_set() else self.backoff.delay(failures)
            )

    async def _list_pages(self, metadata_only: bool = False) -> AsyncIterator[tuple[list[Pod], int]]:
        """Our pods, a page at a time (never all decoded at once), with the list's resourceVersion.

        ``metadata_only``: items carry only their metadata (a third of the bytes to decode).
        """
        base = f"/api/v1/namespaces/{self.namespace}/pods" if self.namespace else "/api/v1/pods"
        token = None
        while True:
            query = {"fieldSelector": f"spec.nodeName={self.node_name}", "limit": 500}
            if token:
                query["continue"] = token
            accept = PARTIAL_METADATA_LIST if metadata_only else "application/json"
            page = await self.kube.request("GET", base, query=query, accept=accept)
            yield page.get("items") or [], _rv(page)  # an empty metadata list has "items": null
            token = page["metadata"].get("continue")
            if not token:
                return

    async def list_api_pods(self) -> tuple[list[Pod], int]:
        pods: list[Pod] = []
        list_rv = 0
        async for items, page_rv in self._list_pages():
            pods += items
            list_rv = page_rv
        return pods, list_rv

    async def resync(self, relist: bool = True) -> None:
        """Compare the provider's pods with ours (and, with ``relist``, ours with the API's) and
        converge: heals missed watch events, lost provider notifications and restarts.

        The first pass (start-up) reconciles every pod: API pods already in the provider are
        adopted, Terminating ones finished. Later passes reconcile what the watch and the provider's
        notifications (or the status poll) may have missed: pods added, changed or deleted meanwhile
        (by resourceVersion, when relisting), provider pods with no API object (removed), pods the
        provider no longer lists, pods not (yet) in the provider, Terminating pods. Re-reconciling
        every pod each period would cost an idle node with 10,000 pods 10,000 reconciles a minute.
        """
        full = not self.started.is_set()
        with metrics.provider_call("list_pods"):
            provider_refs = await self.provider.list_pods()
        wanted: dict[Key, None] = {}  # ordered: orphans first, as they free names
        changed = await self._relist(metadata_only=not full) if relist or full else []
        live_uids = self.cache.uids()
        provider_uids = set()
        for ref in provider_refs:
            provider_uids.add(ref.uid)
            tracked = self._track(ref)
            tracked.in_provider = True
            if ref.uid not in live_uids:
                wanted[(ref.namespace, ref.name)] = None  # reconcile deletes the orphan
        wanted.update(dict.fromkeys(changed))
        for key in self.cache:
            entry = self.cache.entry(key)
            assert entry is not None
            known = self.tracked.get(entry.uid)
            if (
                full
                or entry.deleting
                or known is None
                or not known.in_provider
                or entry.uid not in provider_uids
            ):
                wanted[key] = None
        for key in wanted:
            self.enqueue(key)

    async def _relist(self, metadata_only: bool) -> list[Key]:
        """Bring the cache up to date with a list of the API's pods; returns the keys changed."""
        # After the first pass the cache is complete and normally current: list metadata only,
        # then fetch the few pods found newer than the cache (a full list again if many are).
        listed, list_rv, changed, stale = await self._compare_list(metadata_only)
        if len(stale) > 100:
            listed, list_rv, changed, stale = await self._compare_list(metadata_only=False)
        changed += await self._fetch(stale)
        for key in list(self.cache):
            if key not in listed and self.cache.rv(key) <= list_rv:
                del self.cache[key]  # deleted while we were not watching
                changed.append(key)
        return changed

    async def _compare_list(self, metadata_only: bool) -> tuple[set[Key], int, list[Key], list[Key]]:
        """List our pods against the cache: (keys listed, list resourceVersion, keys updated in the
        cache, keys newer than the cache but listed without their object)."""
        listed: set[Key] = set()
        list_rv = 0
        changed: list[Key] = []
        stale: list[Key] = []
        async for items, page_rv in self._list_pages(metadata_only):
            list_rv = page_rv
            for pod in items:
                key = _key(pod)
                listed.add(key)
                if key not in self.cache or self.cache.rv(key) < _rv(pod):
                    if metadata_only:
                        stale.append(key)
                    else:
                        self.cache[key] = pod
                        changed.append(key)
        return listed, list_rv, changed, stale

    async def _fetch(self, keys: list[Key]) -> list[Key]:
        """Read the current objects of ``keys`` into the cache; returns the keys updated."""
        updated = []
        for namespace, name in keys:
            try:
                pod = await self.kube.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
            except ApiError as exc:
                if not exc.not_found:
                    raise
                continue  # deleted since the list: the watch or the next resync says so
            key = (namespace, name)
            if key not in self.cache or self.cache.rv(key) < _rv(pod):
                self.cache[key] = pod
                updated.append(key)
        return updated

    # -- reconciliation ------------------------------------------------------------------------------
    async def reconcile(self, key: Key) -> None:
        pod = self.cache.get(key)
        if pod is None:
            await self._remove_orphans(key)
            return
        uid = pod["metadata"]["uid"]
        # A pod of the same name but another UID is a different pod: the old one is an orphan.
        await self._remove_orphans(key, keep_uid=uid)
        tracked = self._track(PodRef.of(pod))
        if pod["metadata"].get("deletionTimestamp"):
            await self._finish_deletion(pod, tracked)
        elif not tracked.in_provider:
            await self._create(pod, tracked)
        else:
            await self._sync_status(pod, tracked)

    def _track(self, ref: PodRef) -> _Tracked:
        tracked = self.tracked.get(ref.uid)
        if tracked is None:
            tracked = self.tracked[ref.uid] = _Tracked(ref)
            key = (ref.namespace, ref.name)
            self._uids[key] = (*self._uids.get(key, ()), ref.uid)
        return tracked

    def _untrack(self, uid: str) -> None:
        tracked = self.tracked.pop(uid, None)
        if tracked is None:
            return
        key = (tracked.ref.namespace, tracked.ref.name)
        others = tuple(u for u in self._uids.get(key, ()) if u != uid)
        if others:
            self._uids[key] = others
        else:
            self._uids.pop(key, None)

    async def _remove_orphans(self, key: Key, keep_uid: str | None = None) -> None:
        for uid in self._uids.get(key, ()):
            tracked = self.tracked.get(uid)
            if tracked is None or uid == keep_uid:
                continue
            if tracked.in_provider:
                stub: Pod = {"metadata": {"namespace": key[0], "name": key[1], "uid": uid}}
                try:
                    with metrics.provider_call("delete_pod"):
                        await self.provider.delete_pod(stub)
                except ProviderError as exc:
                    log.warning("cannot delete orphan %s/%s from the provider: %s", *key, exc)
                    self._retry_later(key, self.backoff.delay(tracked.attempts + 1))
                    tracked.attempts += 1
                    continue
                log.info("deleted %s/%s (uid %s) from the provider: no API object", *key, uid)
            self._untrack(uid)

    async def _prepare(self, pod: Pod) -> Preparation:
        """Resolve env and volumes; non-fatal findings (optional refs missing...) become events."""
        preparation = prepare(pod, await self.sources.fetch(pod))
        for event in preparation.events:
            self.events.record(pod, event.reason, event.message, warning=event.warning)
        return preparation

    async def _create(self, pod: Pod, tracked: _Tracked) -> None:
        phase = (pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            return  # terminal pods are never started again
        preparation = await self._prepare(pod)
        if preparation.fatal or preparation.prepared is None:
            fatal = preparation.fatal
            assert fatal is not None
            # Not created (a mandatory reference is missing, a volume unsupported...): say why.
            await self._not_created(
                pod, tracked, fatal.reason, fatal.reason, fatal.message, fatal.reason in PERMANENT_REASONS
            )
            return
        try:
            with metrics.provider_call("create_pod"):
                await self.provider.create_pod(preparation.prepared)
        except ProviderError as exc:
            await self._not_created(
                pod, tracked, "ProviderCreateFailed", "ProviderFailed", str(exc), exc.permanent
            )
            return
        tracked.in_provider = True
        tracked.attempts = 0
        tracked.first_failure = None
        tracked.spec_fingerprint = _fingerprint(pod)
        self.events.record(pod, "ProviderCreateSuccess", "created the pod in the provider")
        await self._sync_status(pod, tracked)

    async def _not_created(
        self, pod: Pod, tracked: _Tracked, event_reason: str, reason: str, message: str, permanent: bool
    ) -> None:
        """Pending and retried with capped backoff; Failed when permanent or past the deadline."""
        now = asyncio.get_running_loop().time()
        tracked.attempts += 1
        if tracked.first_failure is None:
            tracked.first_failure = now
        self.events.record(pod, event_reason, message, warning=True)
        expired = now - tracked.first_failure >= self.backoff.deadline
        if permanent or expired:
            if not permanent:
                message = (
                    f"gave up after {tracked.attempts} attempts over {self.backoff.deadline:g}s: {message}"
                )
            failed = status_domain.pending_status(pod, reason, message, _now(), phase=PodPhase.FAILED)
            await self._write_status(pod, tracked, failed)
            return
        await self._write_status(pod, tracked, status_domain.pending_status(pod, reason, message, _now()))
        self._retry_later(_key(pod), self.backoff.delay(tracked.attempts))

    async def _sync_status(self, pod: Pod, tracked: _Tracked) -> None:
        fingerprint = _fingerprint(pod)
        if tracked.spec_fingerprint is None:
            tracked.spec_fingerprint = fingerprint  # adopted after a restart
        elif fingerprint != tracked.spec_fingerprint:
            await self._update(pod, tracked, fingerprint)
        with metrics.provider_call("get_pod_status"):
            reported = await self.provider.get_pod_status(tracked.ref)
        if reported is None:
            reported = _lost(pod)
        await self._write_status(pod, tracked, status_domain.pod_status(pod, reported, self.host_ip, _now()))

    async def _update(self, pod: Pod, tracked: _Tracked, fingerprint: bytes) -> None:
        tracked.spec_fingerprint = fingerprint
        preparation = await self._prepare(pod)
        if preparation.prepared is None:
            assert preparation.fatal is not None
            self.events.record(pod, "ProviderUpdateFailed", preparation.fatal.message, warning=True)
            return
        try:
            with metrics.provider_call("update_pod"):
                await self.provider.update_pod(preparation.prepared)
        except ProviderError as exc:
            self.events.record(pod, "ProviderUpdateFailed", str(exc), warning=True)
            return
        self.events.record(pod, "ProviderUpdateSuccess", "updated the pod in the provider")

    async def _write_status(self, pod: Pod, tracked: _Tracked, status: dict[str, Any]) -> None:
        if not status_domain.status_changed(_as_compared(pod.get("status")), _as_compared(status) or {}):
            return
        meta = pod["metadata"]
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status"
        body = {
            "metadata": {"uid": meta["uid"]},
            "status": status_domain.status_patch(pod.get("status"), status),
        }
        try:
            written = await self.kube.patch(path, body)
        except ApiError as exc:
            if exc.not_found or exc.conflict:
                return  # gone or replaced meanwhile; the watch brings the news
            raise
        tracked.written_rv = _rv(written)
        key = _key(pod)
        if self.cache.uid(key) == meta["uid"] and self.cache.rv(key) < tracked.written_rv:
            self.cache[key] = written

    async def _finish_deletion(self, pod: Pod, tracked: _Tracked) -> None:
        """Graceful delete: stop in the provider, report the end, remove the object at once."""
        meta = pod["metadata"]
        if tracked.in_provider and not tracked.deleting:
            tracked.deleting = True
            grace = _grace_left(pod)
            try:
                async with asyncio.timeout(max(grace, 0.01)):
                    with metrics.provider_call("delete_pod"):
                        await self.provider.delete_pod(pod)
                tracked.in_provider = False
                self.events.record(pod, "ProviderDeleteSuccess", "deleted the pod in the provider")
            except (ProviderError, TimeoutError) as exc:
                tracked.deleting = False
                if _grace_left(pod) > 0:
                    self.events.record(pod, "ProviderDeleteFailed", str(exc) or "timed out", warning=True)
                    tracked.attempts += 1
                    self._retry_later(_key(pod), min(self.backoff.delay(tracked.attempts), _grace_left(pod)))
                    return
                log.warning(
                    "%s/%s: grace period over; removing the object although the provider did not confirm: %s",
                    meta["namespace"],
                    meta["name"],
                    exc,
                )
            await self._write_status(
                pod, tracked, status_domain.pod_status(pod, _terminated(pod), self.host_ip, _now())
            )
        elif tracked.deleting:
            return
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
        try:
            await self.kube.delete(path, {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}})
        except ApiError as exc:
            if not (exc.not_found or exc.conflict):
                raise
        if not tracked.in_provider:
            self._untrack(meta["uid"])


def _as_compared(status: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """``status`` without the empty ``lastState`` the apiserver adds to every container status.

    We never write it (a Go struct is always serialized), so comparing with it included found a
    change every time: each resync re-sent every pod's status (no-op PATCHes, one per pod).
    """
    if not status:
        return status
    compared: dict[str, Any] | None = None
    for field in ("initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses"):
        statuses = status.get(field)
        if statuses and any(s.get("lastState") == {} for s in statuses):
            compared = compared if compared is not None else dict(status)
            compared[field] = [
                {k: v for k, v in s.items() if not (k == "lastState" and v == {})} for s in statuses
            ]
    return compared if compared is not None else status


def _grace_left(pod: Pod) -> float:
    """Seconds until the deletion deadline (deletionTimestamp is when grace runs out)."""
    stamp = pod["metadata"].get("deletionTimestamp")
    if not stamp:
        return 0.0
    deadline = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return (deadline - _now()).total_seconds()


def _fingerprint(pod: Pod) -> bytes:
    """The spec fields a provider may act on after creation (images, deadlines), as a digest:
    16 bytes held per pod instead of the strings themselves."""
    spec = pod.get("spec", {})
    fields = (
        [(c.get("name"), c.get("image")) for c in spec.get("containers", [])],
        spec.get("activeDeadlineSeconds"),
    )
    return hashlib.blake2b(json.dumps(fields).encode(), digest_size=16).digest()


def _terminated(pod: Pod) -> ProviderPodStatus:
    previous = {c.get("name"): c for c in (pod.get("status") or {}).get("containerStatuses") or []}
    now = _now()
    containers = []
    for spec in pod.get("spec", {}).get("containers", []):
        started = (previous.get(spec["name"], {}).get("state", {}).get("running") or {}).get("startedAt")
        containers.append(
            ContainerStatus(
                spec["name"],
                spec.get("image", ""),
                ContainerPhase.TERMINATED,
                reason="Completed",
                message="stopped by the provider on pod deletion",
                exit_code=0,
                started_at=datetime.datetime.fromisoformat(started.replace("Z", "+00:00"))
                if started
                else None,
                finished_at=now,
            )
        )
    status = pod.get("status") or {}
    return ProviderPodStatus(PodPhase.SUCCEEDED, tuple(containers), pod_ip=status.get("podIP"))


def _lost(pod: Pod) -> ProviderPodStatus:
    """The provider no longer has a pod we created: it failed, like a node that lost it."""
    now = _now()
    containers = tuple(
        ContainerStatus(
            c["name"],
            c.get("image", ""),
            ContainerPhase.TERMINATED,
            reason="ProviderLost",
            message="the provider no longer runs this container",
            exit_code=137,
            finished_at=now,
        )
        for c in pod.get("spec", {}).get("containers", [])
    )
    return ProviderPodStatus(
        PodPhase.FAILED,
        containers,
        reason="ProviderLost",
        message="the pod vanished from the provider",
        pod_ip=(pod.get("status") or {}).get("podIP"),
    )
