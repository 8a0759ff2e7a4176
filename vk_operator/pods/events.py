"""Kubernetes Events about pods, posted without blocking the caller's work."""

from __future__ import annotations

import datetime
import logging
import uuid
from typing import Any

from vk_operator.kube import ApiError, Kube

log = logging.getLogger(__name__)


class EventRecorder:
    def __init__(self, kube: Kube, node_name: str) -> None:
        self.kube = kube
        self.node_name = node_name

    async def record(self, obj: dict[str, Any], reason: str, message: str, *, warning: bool = False) -> None:
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
            await self.kube.create(f"/api/v1/namespaces/{meta['namespace']}/events", event)
        except ApiError as exc:
            # Losing an event must never stop the pod's work.
            log.warning("cannot record event %s for %s/%s: %s", reason, meta["namespace"], meta["name"], exc)
