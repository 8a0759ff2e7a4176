"""The per-pod state machine: the API object is the wish, the provider the reality.

``reconcile(key)`` compares the key's latest API object with what the provider has and takes one
step: remove orphans (provider pods whose API object is gone or replaced), create, update, sync
status, or finish a deletion. Failed provider calls are retried through the work queue with
capped backoff; a pod fails when an error is permanent or transient errors outlast the deadline.
A pod whose references are missing (a ConfigMap, a Secret, a key) waits for them, retried with
capped backoff for as long as it takes, as the kubelet keeps it in CreateContainerConfigError:
the deadline is for provider failures. Right after a pod is bound, the API may refuse its
ConfigMaps/Secrets (403) and its token (404) until the Node authorizer and NodeRestriction have
seen the binding: such refusals are retried quickly and quietly for a few seconds before they are
reported. A pod that outlives its ``activeDeadlineSeconds`` is stopped in the provider and Failed
with ``DeadlineExceeded``, as the kubelet does, whatever the provider can enforce itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import time
from collections.abc import Callable
from typing import Any

from vk_operator.domain import env as env_domain
from vk_operator.domain import pod_status as status_domain
from vk_operator.domain.clock import utcnow
from vk_operator.domain.errors import NotFoundError, ProviderError
from vk_operator.domain.model import Pod, PodPhase, ProviderPodStatus
from vk_operator.domain.pod_meta import (
    Key,
    active_deadline_left,
    grace_left,
    pod_key,
    resource_version,
    spec_fingerprint,
)
from vk_operator.domain.prepared import PERMANENT_REASONS, WAITING_REASONS, Preparation, prepare
from vk_operator.guard import ProviderGuard
from vk_operator.kube import ApiError, Kube
from vk_operator.pods.backoff import Backoff
from vk_operator.pods.events import EventRecorder
from vk_operator.pods.queue import WorkQueue
from vk_operator.pods.sources import SourceFetcher, refused
from vk_operator.pods.store import PodRecord, PodStore
from vk_operator.provider import Provider, declared_volume_types

log = logging.getLogger(__name__)
# Refusals right after a pod is bound (the Node authorizer's graph and NodeRestriction lag the
# binding, typically by well under a second): retried after these delays (~2 s in all) without an
# Event or a status, as long as the pod was first seen less than QUIET_WINDOW seconds ago.
QUIET_DELAYS = (0.1, 0.2, 0.4, 0.6, 0.8)
QUIET_WINDOW = 10.0
_TERMINAL = ("Succeeded", "Failed")
MAX_BACKOFF_EXPONENT = 64  # attempts beyond this all wait the cap (2.0 ** 1024 overflows)


@dataclasses.dataclass(slots=True)
class _Quiet:
    """A pod not created yet: when we first saw it, and how many quiet retries it had."""

    uid: str
    first_seen: float
    retries: int = 0


@dataclasses.dataclass(frozen=True)
class Clock:
    """Monotonic time for deadlines and backoff, wall time for what is written to the API."""

    monotonic: Callable[[], float] = time.monotonic
    utcnow: Callable[[], datetime.datetime] = utcnow


class Reconciler:
    def __init__(
        self,
        *,
        kube: Kube,
        provider: Provider,
        guard: ProviderGuard,
        store: PodStore,
        queue: WorkQueue,
        sources: SourceFetcher,
        events: EventRecorder,
        host_ip: str,
        backoff: Backoff,
        bulk_status: bool = False,
        clock: Clock | None = None,
    ) -> None:
        self.kube = kube
        self.provider = provider
        self.guard = guard
        self.store = store
        self.queue = queue
        self.sources = sources
        self.events = events
        self.host_ip = host_ip
        self.backoff = backoff
        self.bulk_status = bulk_status  # status comes from the bulk poll, not get_pod_status
        self.clock = clock or Clock()
        self.volume_types = declared_volume_types(provider)
        self.on_created: Callable[[], None] = lambda: None  # e.g. poke the bulk status poll
        self._quiet: dict[Key, _Quiet] = {}  # pods not created yet, by key

    async def reconcile(self, key: Key) -> None:
        record = self.store.api_record(key)
        # A pod of the same name but another UID is a different pod: the old one is an orphan.
        await self._remove_orphans(key, keep_uid=record.ref.uid if record else None)
        self._forget_untracked(key, record)
        if record is None:
            return
        pod = record.api_pod
        assert pod is not None
        if record.terminating:
            await self._finish_deletion(pod, record)
        elif not record.in_provider:
            await self._create(pod, record)
        else:
            await self._sync_status(pod, record)

    def _retry(self, record: PodRecord, delay: float | None = None) -> None:
        if delay is None:
            delay = self.backoff.delay(min(record.attempts, MAX_BACKOFF_EXPONENT))
        self.queue.add_after(record.key, delay)

    def _forget_untracked(self, key: Key, record: PodRecord | None) -> None:
        """Drop what we keep per pod (tokens, first sight) for the key's pods we no longer track."""
        for uid in self.sources.token_holders(key):
            if self.store.get(uid) is None:
                self.sources.forget(uid)
        quiet = self._quiet.get(key)
        if quiet is not None and (record is None or record.ref.uid != quiet.uid):
            del self._quiet[key]
        if record is None:
            self.queue.forget_wake(key)

    # -- orphans -------------------------------------------------------------------------------------
    async def _remove_orphans(self, key: Key, keep_uid: str | None) -> None:
        for record in self.store.of_key(key):
            if record.ref.uid == keep_uid or record.stopping:
                continue
            if record.in_provider:
                failed = await self._delete_in_provider(record)
                if failed is not None:
                    log.warning("cannot delete orphan %s/%s from the provider: %s", *key, failed)
                    continue
                log.info("deleted %s/%s (uid %s) from the provider: no API object", *key, record.ref.uid)
            self.store.remove(record.ref.uid)

    async def _delete_in_provider(self, record: PodRecord) -> ProviderError | None:
        """Delete the record's pod in the provider (one it no longer has counts as deleted). On a
        failure the record's retry is scheduled and the error returned."""
        try:
            await self.guard.call("delete_pod", self.provider.delete_pod, record.ref)
        except NotFoundError:
            pass
        except ProviderError as exc:
            record.attempts += 1
            self._retry(record)
            return exc
        record.in_provider = False
        return None

    # -- creation ------------------------------------------------------------------------------------
    async def _prepare(self, pod: Pod, record: PodRecord, *, quiet: bool = False) -> Preparation | None:
        """Resolve env and volumes; non-fatal findings (optional refs missing...) become events.

        The service-account token is requested last, only when nothing else is missing: a pod that
        cannot start anyway costs no TokenRequest (and the token is cached for its lifetime).
        ``quiet``: a refusal right after the pod was bound is retried quietly (returns None).
        """
        sources = await self.sources.fetch(pod)
        if quiet and refused(sources) and self._retry_quietly(record):
            return None
        if env_domain.needs_service_account_token(pod):
            # A placeholder first: resolve everything else before asking for a token.
            placeholder = dataclasses.replace(sources, service_account_token="")
            preparation = prepare(pod, placeholder, self.volume_types)
            if preparation.fatal is None:
                token = await self.sources.token(pod)
                if token is None and quiet and self._retry_quietly(record):
                    return None
                sources = dataclasses.replace(sources, service_account_token=token)
                preparation = prepare(pod, sources, self.volume_types)
        else:
            preparation = prepare(pod, sources, self.volume_types)
        for event in preparation.events:
            self.events.record(pod, event.reason, event.message, warning=event.warning)
        return preparation

    def _retry_quietly(self, record: PodRecord) -> bool:
        """Schedule a quick retry without a word, if the pod is young and has retries left."""
        quiet = self._quiet.get(record.key)
        if quiet is None:
            return False
        young = self.clock.monotonic() - quiet.first_seen < QUIET_WINDOW
        if not young or quiet.retries >= len(QUIET_DELAYS):
            return False
        delay = QUIET_DELAYS[quiet.retries]
        quiet.retries += 1
        log.debug(
            "%s/%s: refused right after binding; quiet retry %d in %gs", *record.key, quiet.retries, delay
        )
        self.queue.add_after(record.key, delay)
        return True

    async def _create(self, pod: Pod, record: PodRecord) -> None:
        if record.phase in _TERMINAL:
            return  # terminal pods are never started again
        if await self._past_deadline(pod, record, (pod.get("status") or {}).get("startTime")):
            return  # e.g. its deadline ran out while this process was down
        quiet = self._quiet.get(record.key)
        if quiet is None or quiet.uid != record.ref.uid:
            self._quiet[record.key] = _Quiet(record.ref.uid, self.clock.monotonic())
        preparation = await self._prepare(pod, record, quiet=True)
        if preparation is None:
            return  # refused right after binding: retried quietly
        if preparation.fatal or preparation.prepared is None:
            fatal = preparation.fatal
            assert fatal is not None
            # Not created (a mandatory reference is missing, a volume unsupported...): say why.
            await self._not_created(
                pod,
                record,
                fatal.reason,
                fatal.reason,
                fatal.message,
                fatal.reason in PERMANENT_REASONS,
                waits=fatal.reason in WAITING_REASONS,
            )
            return
        try:
            await self.guard.call("create_pod", self.provider.create_pod, preparation.prepared)
        except ProviderError as exc:
            await self._not_created(
                pod, record, "ProviderCreateFailed", exc.reason, exc.message, exc.permanent
            )
            return
        self._quiet.pop(record.key, None)
        record.in_provider = True
        record.attempts = 0
        record.first_failure = None
        record.fingerprint = spec_fingerprint(pod)
        record.created_at = self.clock.monotonic()
        record.polled = False
        self.queue.forget(record.key)
        self.events.record(pod, "ProviderCreateSuccess", "created the pod in the provider")
        self.on_created()
        await self._sync_status(pod, record, just_created=True)

    async def _not_created(
        self,
        pod: Pod,
        record: PodRecord,
        event_reason: str,
        reason: str,
        message: str,
        permanent: bool,
        *,
        waits: bool = False,
    ) -> None:
        """Pending and retried with capped backoff; Failed when permanent or past the deadline.

        ``waits``: a reference is missing (or unreadable). The pod waits for it however long it
        takes, as the kubelet's does: such attempts never count against the deadline, which
        measures an unbroken run of provider failures.
        """
        now = self.clock.monotonic()
        record.attempts += 1
        if waits:
            record.first_failure = None
        elif record.first_failure is None:
            record.first_failure = now
        self.events.record(pod, event_reason, message, warning=True)
        expired = record.first_failure is not None and now - record.first_failure >= self.backoff.deadline
        if permanent or expired:
            self._quiet.pop(record.key, None)
            self.queue.forget(record.key)
            if not permanent:
                message = (
                    f"gave up after {record.attempts} attempts over {self.backoff.deadline:g}s: {message}"
                )
            failed = status_domain.pending_status(
                pod, reason, message, self.clock.utcnow(), phase=PodPhase.FAILED
            )
            await self._write_status(pod, record, failed)
            return
        await self._write_status(
            pod, record, status_domain.pending_status(pod, reason, message, self.clock.utcnow())
        )
        self._retry(record)

    # -- running pods --------------------------------------------------------------------------------
    async def _sync_status(self, pod: Pod, record: PodRecord, *, just_created: bool = False) -> None:
        fingerprint = spec_fingerprint(pod)
        if record.fingerprint is None:
            record.fingerprint = fingerprint  # adopted after a restart
        elif fingerprint != record.fingerprint:
            await self._update(pod, record, fingerprint)
        reported: ProviderPodStatus | None
        if self.bulk_status:
            if not record.polled:
                if not just_created:
                    return  # adopted: its status stays as written until the poll reports on it
                reported = ProviderPodStatus(PodPhase.PENDING)  # accepted; the poll says more
            else:
                reported = record.reported
        else:
            try:
                reported = await self.guard.call("get_pod_status", self.provider.get_pod_status, record.ref)
            except NotFoundError:
                reported = None
            except ProviderError as exc:
                log.warning("%s/%s: cannot read the status from the provider: %s", *record.key, exc)
                record.attempts += 1
                self._retry(record)
                return
            record.attempts = 0
        if reported is None:
            # Gone from the provider: the pod has ended there (Failed, or kept as it ended), and
            # nothing is left to poll or delete.
            record.in_provider = False
            reported = status_domain.lost_status(pod, self.clock.utcnow())
        status = status_domain.pod_status(pod, reported, self.host_ip, self.clock.utcnow())
        ended = reported.phase in (PodPhase.SUCCEEDED, PodPhase.FAILED) or record.phase in _TERMINAL
        if not ended and await self._past_deadline(pod, record, status.get("startTime")):
            return
        await self._write_status(pod, record, status)

    async def _past_deadline(self, pod: Pod, record: PodRecord, start_time: str | None) -> bool:
        """Whether ``pod`` ran out of its activeDeadlineSeconds (counted from ``start_time``) and
        was ended for it; one that has time left is woken when it runs out."""
        left = active_deadline_left(pod, start_time, self.clock.utcnow())
        if left is None:
            return False
        if left > 0:
            self.queue.wake_after(record.key, left)
            return False
        if record.in_provider:
            failed = await self._delete_in_provider(record)
            if failed is not None:
                self.events.record(pod, "ProviderDeleteFailed", failed.message, warning=True)
                return True
        self.queue.forget(record.key)
        self.events.record(pod, status_domain.DEADLINE_EXCEEDED, status_domain.DEADLINE_MESSAGE)
        now = self.clock.utcnow()
        ended = status_domain.deadline_status(pod, now)
        await self._write_status(pod, record, status_domain.pod_status(pod, ended, self.host_ip, now))
        return True

    async def _update(self, pod: Pod, record: PodRecord, fingerprint: bytes) -> None:
        record.fingerprint = fingerprint
        preparation = await self._prepare(pod, record)
        assert preparation is not None  # only quiet preparations are put off
        if preparation.prepared is None:
            assert preparation.fatal is not None
            self.events.record(pod, "ProviderUpdateFailed", preparation.fatal.message, warning=True)
            return
        try:
            await self.guard.call("update_pod", self.provider.update_pod, preparation.prepared)
        except ProviderError as exc:
            self.events.record(pod, "ProviderUpdateFailed", exc.message, warning=True)
            return
        self.events.record(pod, "ProviderUpdateSuccess", "updated the pod in the provider")

    async def _write_status(self, pod: Pod, record: PodRecord, status: dict[str, Any]) -> None:
        if not status_domain.status_changed(pod.get("status"), status):
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
            # Gone or replaced meanwhile (a pod recreated under the name answers our UID with 422
            # "metadata.uid: field is immutable"); the watch brings the news.
            if exc.not_found or exc.conflict or _replaced(exc):
                return
            raise
        record.written_rv = resource_version(written)
        if self.store.api_record(pod_key(pod)) is record and record.rv < record.written_rv:
            self.store.set_api(written)

    # -- deletion ------------------------------------------------------------------------------------
    async def _finish_deletion(self, pod: Pod, record: PodRecord) -> None:
        """Graceful delete: stop in the provider, report the end, remove the object at once."""
        meta = pod["metadata"]
        if record.in_provider and not record.stopping:
            record.stopping = True
            try:
                grace = grace_left(pod, self.clock.utcnow())
                async with asyncio.timeout(max(grace, 0.01)):
                    await self.guard.call("delete_pod", self.provider.delete_pod, record.ref)
                record.in_provider = False
                self.events.record(pod, "ProviderDeleteSuccess", "deleted the pod in the provider")
            except NotFoundError:
                record.in_provider = False
            except (ProviderError, TimeoutError) as exc:
                left = grace_left(pod, self.clock.utcnow())
                if left > 0:
                    self.events.record(pod, "ProviderDeleteFailed", str(exc) or "timed out", warning=True)
                    record.attempts += 1
                    self._retry(record, min(self.backoff.delay(record.attempts), left))
                    return
                log.warning(
                    "%s/%s: grace period over; removing the object although the provider did not confirm: %s",
                    meta["namespace"],
                    meta["name"],
                    exc,
                )
            finally:
                record.stopping = False
            stopped = status_domain.stopped_status(pod, self.clock.utcnow())
            await self._write_status(
                pod, record, status_domain.pod_status(pod, stopped, self.host_ip, self.clock.utcnow())
            )
        elif record.stopping:
            return
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
        try:
            # The UID precondition: a pod recreated under this name meanwhile is not ours to delete.
            await self.kube.delete(path, {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}})
        except ApiError as exc:
            if not (exc.not_found or exc.conflict):
                raise


def _replaced(exc: ApiError) -> bool:
    """The status write named a UID the pod under that name no longer has."""
    return exc.status == 422 and "metadata.uid" in exc.message and "immutable" in exc.message
