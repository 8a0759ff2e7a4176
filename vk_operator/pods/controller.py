"""The pod controller: feeds the work queue and runs the workers, the resync and status polling.

Inputs (kopf's watch events, the provider's notifications, retries, the status poll and the
periodic resync) only update the store and enqueue a pod key; workers reconcile keys one at a
time per pod (``pods.reconciler``), always against the latest API object.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from typing import Any

from vk_operator.domain.model import Pod, PodRef
from vk_operator.domain.pod_meta import Key, pod_key, resource_version
from vk_operator.guard import ProviderGuard
from vk_operator.kube import Kube
from vk_operator.pods.backoff import Backoff
from vk_operator.pods.events import EventRecorder, ProviderEvents
from vk_operator.pods.listing import PodLister
from vk_operator.pods.polling import BulkStatusPoller, poll_each
from vk_operator.pods.queue import WorkQueue
from vk_operator.pods.reconciler import Clock, Reconciler
from vk_operator.pods.sources import Allocatable, SourceFetcher
from vk_operator.pods.store import ApiPods, PodStore
from vk_operator.provider import BulkStatusProvider, EventEmitter, PodNotifier, Provider

log = logging.getLogger(__name__)
RELIST_AFTER_LISTING = 1.0  # seconds of quiet after kopf's (re)listing before our relist


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
        status_poll_fast: float = 2.0,
        status_poll_slow: float = 30.0,
        status_poll_budget: float = 60.0,
        backoff: Backoff | None = None,
        event_qps: float = 50.0,
        event_burst: int = 100,
        guard: ProviderGuard | None = None,
        allocatable: Allocatable | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.provider = provider
        self.workers = workers
        self.resync_interval = resync_interval
        self.relist_interval = relist_interval
        self.status_poll_interval = status_poll_interval
        self.backoff = backoff or Backoff()
        self.guard = guard or ProviderGuard()
        self.events = EventRecorder(kube, node_name, qps=event_qps, burst=event_burst)
        self.store = PodStore()
        # Workers kept for status writes of running pods, whatever the creates and deletes wait for.
        reserved = max(1, workers // 8) if workers > 1 else 0
        self.queue = WorkQueue(status_only=self._status_only, provider_slots=workers - reserved)
        self.lister = PodLister(kube, node_name, namespace)
        self.clock = clock or Clock()
        self.bulk: BulkStatusPoller | None = None
        if isinstance(provider, BulkStatusProvider) and not isinstance(provider, PodNotifier):
            self.bulk = BulkStatusPoller(
                provider,
                self.guard,
                self.store,
                self.queue,
                fast=status_poll_fast,
                slow=status_poll_slow,
                budget=status_poll_budget,
                clock=self.clock.monotonic,
            )
        self.reconciler = Reconciler(
            kube=kube,
            provider=provider,
            guard=self.guard,
            store=self.store,
            queue=self.queue,
            sources=SourceFetcher(kube, provider, host_ip, self.guard, allocatable),
            events=self.events,
            host_ip=host_ip,
            backoff=self.backoff,
            bulk_status=self.bulk is not None,
            clock=self.clock,
        )
        if self.bulk is not None:
            self.reconciler.on_created = self.bulk.poke
        self.activity = 0  # watch events observed plus reconciles started, so far
        self._relist_now = asyncio.Event()  # set: the resync loop relists at once
        self._relist_timer: asyncio.TimerHandle | None = None
        self.started = asyncio.Event()  # the first resync is done: workers may run
        self.draining = False  # shutting down: workers take no further keys (``stop_accepting``)
        self.worker_tasks: list[asyncio.Task[None]] = []
        self._waiting_workers: set[asyncio.Task[Any]] = set()  # idle in ``queue.get()``
        self.adopted = asyncio.Event()  # ... and every pod it found has been reconciled once
        if isinstance(provider, PodNotifier):
            provider.notify_pods(self._on_provider_change)
        if isinstance(provider, EventEmitter):
            provider.emit_events(ProviderEvents(self.events, self._api_pod_of))

    @property
    def pods(self) -> ApiPods:
        """The node's pods as last seen in the API, by key."""
        return self.store.api_view()

    @property
    def queue_depth(self) -> int:
        return self.queue.depth

    # -- inputs --------------------------------------------------------------------------------------
    def observe(self, event_type: str | None, pod: Pod) -> None:
        """A watch event from the API (kopf). Cheap: updates the store and enqueues.

        Type None is kopf's (re)listing: after a watch restart (410 Gone, an apiserver restart) the
        pods deleted meanwhile get no DELETED event, so a relist of our own follows the listing
        and finds them (as client-go's informers do by comparing their store with the list).
        """
        self.activity += 1
        if event_type is None:
            self.request_relist(after=RELIST_AFTER_LISTING)
        key = pod_key(pod)
        uid = pod["metadata"]["uid"]
        if event_type == "DELETED":
            self.store.drop_api(key, uid)
        else:
            record = self.store.get(uid)
            rv = resource_version(pod)
            # A version already held was enqueued when it got there (by the resync, e.g. when
            # kopf's initial events repeat what the first resync listed) or is our own write.
            known = record is not None and record.packed is not None and record.rv == rv
            if not known:
                record = self.store.set_api(pod)
            ours = record is not None and record.written_rv == rv  # the echo of our status write
            if (known or ours) and not pod["metadata"].get("deletionTimestamp"):
                return  # nothing new to do
        self.queue.add(key)

    def _own_write_in_hand(self, key: Key) -> bool:
        """A relist "changed" the pod only by our status write of a reconcile still in hand (the
        list raced its response): queueing it again would repeat that reconcile."""
        record = self.store.api_record(key)
        return record is not None and record.rv == record.written_rv and self.queue.scheduled(key)

    def request_relist(self, after: float = 0.0) -> None:
        """Relist the node's pods from the API soon (``after`` seconds of quiet: a listing of
        10,000 pods arrives as 10,000 events and needs one relist, not 10,000)."""
        if self._relist_timer is not None:
            self._relist_timer.cancel()
        self._relist_timer = asyncio.get_running_loop().call_later(after, self._relist_now.set)

    def _api_pod_of(self, uid: str) -> Pod | None:
        record = self.store.get(uid)
        return record.api_pod if record is not None else None

    def _status_only(self, key: Key) -> bool:
        """Whether the key's next reconcile only syncs status: its one pod runs in the provider, with
        nothing to create, delete or remove as an orphan."""
        records = self.store.of_key(key)
        if len(records) != 1:
            return False
        record = records[0]
        return record.in_provider and not record.terminating and record.packed is not None

    def _on_provider_change(self, ref: PodRef) -> None:
        self.queue.add((ref.namespace, ref.name))

    # -- running -----------------------------------------------------------------------------------
    def start(self) -> list[asyncio.Task[None]]:
        """Spawn the workers, the resync and status polling; workers wait for the first resync."""
        tasks = [asyncio.create_task(self._resync_loop(), name="pod-resync")]
        if self.bulk is not None:
            tasks.append(asyncio.create_task(self._after_start(self.bulk.run()), name="pod-status-bulk-poll"))
        elif not isinstance(self.provider, PodNotifier):
            # A provider that cannot push status changes is polled; one that can costs nothing idle.
            poll = poll_each(self.store, self.queue, self.status_poll_interval)
            tasks.append(asyncio.create_task(self._after_start(poll), name="pod-status-poll"))
        self.worker_tasks = [
            asyncio.create_task(self._worker(), name=f"pod-worker-{i}") for i in range(self.workers)
        ]
        return tasks + self.worker_tasks + self.events.start()

    def stop_accepting(self) -> None:
        """Shutdown: no worker takes another key. Idle workers end now; busy ones end when their
        reconcile does (the caller bounds that by cancelling ``worker_tasks``)."""
        self.draining = True
        for task in self._waiting_workers:
            task.cancel()

    async def _after_start(self, loop: Coroutine[Any, Any, None]) -> None:
        try:
            await self.started.wait()
        except BaseException:
            loop.close()
            raise
        await loop

    async def _worker(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._waiting_workers.add(task)
        try:
            await self.started.wait()
        finally:
            self._waiting_workers.discard(task)
        while not self.draining:
            self._waiting_workers.add(task)
            try:
                key = await self.queue.get()
            finally:
                self._waiting_workers.discard(task)
            if self.draining:  # the stop signal came meanwhile: the key stays undone
                self.queue.done(key)
                break
            self.activity += 1
            try:
                await self.reconciler.reconcile(key)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # an API error mid-reconcile: the pod is retried, not lost
                log.warning("reconcile of %s/%s failed (%s: %s); retrying", *key, type(exc).__name__, exc)
                self.queue.add_after(key, self.backoff.cap)
            finally:
                self.queue.done(key)
                self._check_adopted()

    def _check_adopted(self) -> None:
        if not self.adopted.is_set() and self.started.is_set() and self.queue.idle:
            self.adopted.set()
            log.info(
                "start-up: %d pods reconciled, %d in the provider", len(self.pods), self.store.in_provider
            )

    async def _resync_loop(self) -> None:
        failures = 0
        listed_at = -float("inf")
        while True:
            try:
                # The API side is re-listed less often than the provider's: kopf's watch resumes
                # from its resourceVersion after every disconnect, so only a relist after a long
                # gap can leave the store stale, and a list of 10,000 pods costs ~0.4 s of CPU where
                # the provider's costs ~10 ms.
                now = time.monotonic()
                relist = (
                    now - listed_at >= self.relist_interval
                    or not self.started.is_set()
                    or self._relist_now.is_set()
                )
                self._relist_now.clear()
                if relist:
                    listed_at = now
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
            wait = self.resync_interval if self.started.is_set() else self.backoff.delay(failures)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._relist_now.wait()  # or sooner, when a relist is asked for

    async def resync(self, relist: bool = True) -> None:
        """Compare the provider's pods with ours (and, with ``relist``, ours with the API's) and
        converge: heals missed watch events, lost provider notifications and restarts.

        The first pass (start-up) reconciles every pod: API pods already in the provider are
        adopted, Terminating ones finished. Later passes reconcile what the watch and the provider's
        notifications (or the status poll) may have missed: pods added, changed or deleted meanwhile
        (by resourceVersion, when relisting), provider pods with no API object (removed), pods the
        provider no longer lists, pods not (yet) in the provider, Terminating pods. Pods waiting
        for a retry are left to it. Re-reconciling every pod each period would cost an idle node
        with 10,000 pods 10,000 reconciles a minute.
        """
        full = not self.started.is_set()
        provider_refs = await self.guard.call("list_pods", self.provider.list_pods)
        changed = await self.lister.relist(self.store, metadata_only=not full) if relist or full else []
        wanted: dict[Key, None] = {}  # ordered: orphans first, as they free names
        provider_uids = set()
        for ref in provider_refs:
            provider_uids.add(ref.uid)
            record = self.store.ensure(ref)
            record.in_provider = True
            if record.packed is None:
                wanted[record.key] = None  # reconcile deletes the orphan
        wanted.update(dict.fromkeys(key for key in changed if not self._own_write_in_hand(key)))
        for record in self.store.api_records():
            key = record.key
            if full or key in wanted:
                wanted[key] = None
            elif self.queue.scheduled(key):
                continue  # in hand or its retry comes: a second reconcile now is one attempt too many
            elif record.terminating or (record.in_provider and record.ref.uid not in provider_uids):
                wanted[key] = None
            elif not record.in_provider and record.phase not in ("Succeeded", "Failed"):
                wanted[key] = None  # not created yet (ended pods are never started again)
        for key in wanted:
            self.queue.add(key)
