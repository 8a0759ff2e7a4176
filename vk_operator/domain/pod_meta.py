"""Small facts read off a pod's wire object: its key, version, grace left, spec fingerprint."""

from __future__ import annotations

import datetime
import hashlib
import json
import sys
from collections.abc import Mapping
from typing import Any

Key = tuple[str, str]  # (namespace, name): how the API names a pod; a UID names one incarnation


def pod_key(pod: Mapping[str, Any]) -> Key:
    meta = pod["metadata"]
    return sys.intern(meta["namespace"]), sys.intern(meta["name"])  # see PodRef.of


def resource_version(obj: Mapping[str, Any]) -> int:
    try:
        return int(str(obj["metadata"].get("resourceVersion") or 0))
    except ValueError:
        return 0


def grace_left(pod: Mapping[str, Any], now: datetime.datetime) -> float:
    """Seconds until the deletion deadline (deletionTimestamp is when grace runs out)."""
    stamp = pod["metadata"].get("deletionTimestamp")
    if not stamp:
        return 0.0
    deadline = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return (deadline - now).total_seconds()


def active_deadline_left(
    pod: Mapping[str, Any], start_time: str | None, now: datetime.datetime
) -> float | None:
    """Seconds until ``spec.activeDeadlineSeconds`` runs out, counted from the pod's
    ``status.startTime`` as the kubelet counts it (None: no deadline, or the pod has not started)."""
    seconds = (pod.get("spec") or {}).get("activeDeadlineSeconds")
    if not isinstance(seconds, int) or isinstance(seconds, bool) or not start_time:
        return None
    started = datetime.datetime.fromisoformat(start_time.replace("Z", "+00:00"))
    return (started - now).total_seconds() + seconds


def spec_fingerprint(pod: Mapping[str, Any]) -> bytes:
    """The spec fields a provider may act on after creation (images, deadlines), as a digest:
    16 bytes held per pod instead of the strings themselves."""
    spec = pod.get("spec", {})
    fields = (
        [(c.get("name"), c.get("image")) for c in spec.get("containers", [])],
        spec.get("activeDeadlineSeconds"),
    )
    return hashlib.blake2b(json.dumps(fields).encode(), digest_size=16).digest()
