"""Kubernetes Events about pods (and our ConfigMap), posted in the background.

Like client-go's event broadcaster, which the kubelet uses: ``record`` logs the event and queues
it, and a few sender tasks post the queue. A status write therefore never waits for an Event's
round trip. Events have their own rate limit, the kubelet's ``--event-qps``/``--event-burst``
(50/100 by default): in a burst of pods they trail the status writes instead of competing with
them for the API server. A full queue drops the newest Event (counted in
``vk_events_dropped_total``) rather than hold up pods or grow without bound.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import uuid
from typing import Any

from vk_operator import metrics
from vk_operator.kube import Kube, RateLimiter

log = logging.getLogger(__name__)


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
    ) -> None:
        self.kube = kube
        self.node_name = node_name
        self.senders = senders
        self._limiter = RateLimiter(qps, burst)
        # Events are kept encoded while they wait: 0.6 KB each instead of ~2 KB of dicts.
        self._pending: asyncio.Queue[tuple[str, str, bytes]] = asyncio.Queue(max_pending)
        self._tasks: list[asyncio.Task[None]] = []

    def record(self, obj: dict[str, Any], reason: str, message: str, *, warning: bool = False) -> None:
        """An Event about ``obj`` (a pod unless it says otherwise: ConfigMaps get events too)."""
        meta = obj["metadata"]
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion", "v1"),
                "kind": obj.get("kind", "Pod"),
                "namespace": meta["namespace"],
                "name": meta["name"],
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "reason": reason,
            "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "source": {"component": "virtual-kubelet", "host": self.node_name},
            "reportingComponent": "virtual-kubelet",
            "reportingInstance": self.node_name,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        (log.warning if warning else log.info)(
            "%s/%s: %s: %s", meta["namespace"], meta["name"], reason, message
        )
        try:
            self._pending.put_nowait((meta["namespace"], reason, Kube.encode(event)))
        except asyncio.QueueFull:
            metrics.EVENTS_DROPPED.inc()
            log.debug("event queue full: dropped %s for %s/%s", reason, meta["namespace"], meta["name"])

    @property
    def pending(self) -> int:
        return self._pending.qsize()

    def start(self) -> list[asyncio.Task[None]]:
        """The sender tasks (the caller owns and cancels them)."""
        self._tasks = [
            asyncio.create_task(self._send(), name=f"event-sender-{i}") for i in range(self.senders)
        ]
        return self._tasks

    async def flush(self) -> None:
        """Until every Event recorded so far has been posted (or failed). Needs the senders running."""
        await self._pending.join()

    async def _send(self) -> None:
        while True:
            namespace, reason, encoded = await self._pending.get()
            try:
                await self.kube.request(
                    "POST", f"/api/v1/namespaces/{namespace}/events", data=encoded, limiter=self._limiter
                )
            except Exception as exc:  # an API error or a lost connection: losing an event stops nothing
                log.warning("cannot record event %s in %s: %s", reason, namespace, exc)
            finally:
                self._pending.task_done()
