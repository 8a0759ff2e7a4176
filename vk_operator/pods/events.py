"""Kubernetes Events about pods (and our ConfigMap), correlated and posted in the background.

Like client-go's event broadcaster, which the kubelet uses: ``record`` correlates the event (see
:mod:`vk_operator.domain.event_correlation`: the same event again increments one Event's ``count``
instead of creating another object, many messages of one reason are combined, and a token bucket
per object and reason drops the spam), logs it and queues the write; a few sender tasks send the
queue. A status write therefore never waits for an Event's round trip. A new Event is a POST; a
repeat is a merge PATCH of ``count``/``lastTimestamp`` (and ``message``) of the Event it repeats,
which is POSTed again, whole, if it has expired meanwhile (404). Writes of one Event are never sent
concurrently, and repeats that arrive while an Event waits are folded into its pending write.

Events have their own rate limit, the kubelet's ``--event-qps``/``--event-burst`` (50/100 by
default): in a burst of pods they trail the status writes instead of competing with them for the
API server. A full queue drops the newest Event (counted in ``vk_events_dropped_total``, as are the
events the spam filter drops) rather than hold up pods or grow without bound.

The log has one line per recorded event at most: a first occurrence at its level (INFO, WARNING for
Warning Events), even if it is dropped, repeats at DEBUG; the line of a dropped event says so.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import uuid
from collections.abc import Callable
from typing import Any

from vk_operator import metrics
from vk_operator.domain.clock import utcnow
from vk_operator.domain.event_correlation import Action, Correlated, EventCorrelator, EventSpec
from vk_operator.domain.model import PodRef
from vk_operator.kube import ApiError, Kube, RateLimiter
from vk_operator.kube.client import MERGE_PATCH

log = logging.getLogger(__name__)

COMPONENT = "virtual-kubelet"
MAX_MESSAGE = 1024


@dataclasses.dataclass(slots=True)
class _Write:
    """One Event to create or patch: the latest state wins when repeats are folded in."""

    namespace: str
    name: str
    reason: str
    static: bytes  # the Event without count, timestamps and message, encoded (0.6 KB, not 2 KB of dicts)
    create: bool
    count: int
    first_timestamp: str
    last_timestamp: str
    message: str

    def mutable(self) -> dict[str, Any]:
        return {"count": self.count, "lastTimestamp": self.last_timestamp, "message": self.message}

    def body(self) -> bytes:
        """The whole Event: the static part with the mutable fields spliced in (disjoint keys)."""
        rest = Kube.encode({"firstTimestamp": self.first_timestamp, **self.mutable()})
        return self.static[:-1] + b"," + rest[1:]


class EventRecorder:
    def __init__(
        self,
        kube: Kube,
        node_name: str,
        *,
        qps: float = 50.0,
        burst: int = 100,
        senders: int = 4,
        max_pending: int = 1_000,  # as client-go's broadcaster: bounded memory, drops when full
        clock: Callable[[], datetime.datetime] = utcnow,
        correlator: EventCorrelator | None = None,
    ) -> None:
        self.kube = kube
        self.node_name = node_name
        self.senders = senders
        self.clock = clock
        self.correlator = correlator or EventCorrelator()
        self._limiter = RateLimiter(qps, burst)
        # Names of Events waiting for a sender; their latest state is in _outbox (one entry per Event).
        self._pending: asyncio.Queue[str] = asyncio.Queue(max_pending)
        self._outbox: dict[str, _Write] = {}
        self._inflight: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []

    def record(self, obj: dict[str, Any], reason: str, message: str, *, warning: bool = False) -> None:
        """An Event about ``obj`` (a pod unless it says otherwise: ConfigMaps get events too)."""
        meta = obj["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        spec = EventSpec(
            component=COMPONENT,
            host=self.node_name,
            kind=obj.get("kind", "Pod"),
            namespace=namespace,
            name=name,
            uid=str(meta.get("uid") or ""),
            api_version=obj.get("apiVersion", "v1"),
            type="Warning" if warning else "Normal",
            reason=reason,
            message=message,
        )
        result = self.correlator.correlate(spec, self.clock(), f"{name}.{uuid.uuid4().hex[:16]}")
        outcome = ""
        if result.action is Action.SKIP:
            metrics.EVENTS_DROPPED.inc()
            outcome = " (not posted: too many events about this object)"
        elif not self._enqueue(self._write(obj, spec, result)):
            metrics.EVENTS_DROPPED.inc()
            outcome = " (not posted: event queue full)"
        level = (logging.WARNING if warning else logging.INFO) if result.first else logging.DEBUG
        if log.isEnabledFor(level):
            repeated = f" (x{result.count})" if result.count > 1 else ""
            log.log(level, "%s/%s: %s: %s%s%s", namespace, name, reason, result.message, repeated, outcome)

    def _write(self, obj: dict[str, Any], spec: EventSpec, result: Correlated) -> _Write:
        meta = obj["metadata"]
        static = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": result.name, "namespace": spec.namespace},
            "involvedObject": {
                "apiVersion": spec.api_version,
                "kind": spec.kind,
                "namespace": spec.namespace,
                "name": spec.name,
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "reason": spec.reason,
            "type": spec.type,
            "source": {"component": COMPONENT, "host": self.node_name},
            "reportingComponent": COMPONENT,
            "reportingInstance": self.node_name,
        }
        return _Write(
            namespace=spec.namespace,
            name=result.name,
            reason=spec.reason,
            static=Kube.encode(static),
            create=result.action is Action.CREATE,
            count=result.count,
            first_timestamp=_timestamp(result.first_timestamp),
            last_timestamp=_timestamp(result.last_timestamp),
            message=result.message[:MAX_MESSAGE],
        )

    def _enqueue(self, write: _Write) -> bool:
        """Queue ``write``, or fold it into the write of the same Event already waiting; False: full."""
        waiting = self._outbox.get(write.name)
        if waiting is not None:  # not sent yet: send the latest state once (a create stays a create)
            write.create = write.create or waiting.create
            self._outbox[write.name] = write
            return True
        if write.name in self._inflight:  # its sender sends this one next, after the write in flight
            self._outbox[write.name] = write
            return True
        try:
            self._pending.put_nowait(write.name)
        except asyncio.QueueFull:
            return False
        self._outbox[write.name] = write
        return True

    @property
    def pending(self) -> int:
        """Events waiting to be written (not counting those in flight)."""
        return self._pending.qsize()

    def start(self) -> list[asyncio.Task[None]]:
        """The sender tasks (the caller owns and cancels them)."""
        self._tasks = [
            asyncio.create_task(self._send(), name=f"event-sender-{i}") for i in range(self.senders)
        ]
        return self._tasks

    async def flush(self) -> None:
        """Until every Event recorded so far has been written (or failed). Needs the senders running."""
        await self._pending.join()

    async def _send(self) -> None:
        while True:
            name = await self._pending.get()
            self._inflight.add(name)
            try:
                # Repeats recorded while a write is in flight wait in the outbox: sent next, in order.
                while (write := self._outbox.pop(name, None)) is not None:
                    await self._send_one(write)
            finally:
                self._inflight.discard(name)
                self._pending.task_done()

    async def _send_one(self, write: _Write) -> None:
        events = f"/api/v1/namespaces/{write.namespace}/events"
        try:
            if not write.create:
                try:
                    await self.kube.request(
                        "PATCH",
                        f"{events}/{write.name}",
                        data=Kube.encode(write.mutable()),
                        content_type=MERGE_PATCH,
                        limiter=self._limiter,
                    )
                    return
                except ApiError as exc:
                    if not exc.not_found:
                        raise
                    # Expired (Events live an hour) or deleted: post it again, whole, as client-go does.
            await self.kube.request("POST", events, data=write.body(), limiter=self._limiter)
        except Exception as exc:  # an API error or a lost connection: losing an event stops nothing
            log.warning("cannot record event %s in %s: %s", write.reason, write.namespace, exc)


def _timestamp(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ProviderEvents:
    """The :class:`~vk_operator.provider.PodEventRecorder` a provider's Events go through: about
    a pod this node tracks (found by UID), through the same correlator and limits as ours."""

    def __init__(self, recorder: EventRecorder, lookup: Callable[[str], dict[str, Any] | None]) -> None:
        self._recorder = recorder
        self._lookup = lookup

    def record(self, ref: PodRef, reason: str, message: str, *, warning: bool = False) -> None:
        pod = self._lookup(ref.uid)
        if pod is None:
            log.debug("event %s about %s/%s dropped: not a pod of this node", reason, ref.namespace, ref.name)
            return
        self._recorder.record(pod, reason, message, warning=warning)
