"""Events are correlated as client-go's EventCorrelator does: a repeated Event is one object, counted."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tests.conftest import VirtualNode, events_for, eventually, pod_manifest, wait_event, wait_phase
from tests.integration.test_pods import create_pod
from vk_operator.kube import Kube

StartNode = Callable[..., Awaitable[VirtualNode]]
REASON = "MandatoryConfigMapNotFound"


def _count(event: dict[str, Any]) -> int:
    """What `kubectl describe` shows as "xN": the core/v1 count, or the events.k8s.io series count."""
    return int(event.get("count") or (event.get("series") or {}).get("count") or 1)


async def test_a_pod_retrying_a_missing_configmap_has_one_event_counting_the_retries(
    admin: Kube, namespace: str, virtual_node: StartNode
) -> None:
    vn = await virtual_node("--retry-initial", "0.1", "--retry-cap", "0.2")
    manifest = pod_manifest("retrying", vn.name)
    manifest["spec"]["containers"][0]["env"] = [
        {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "never-created", "key": "x"}}}
    ]
    pod = await create_pod(admin, namespace, manifest)
    started = time.monotonic()

    async def retried_20_times() -> list[dict[str, Any]] | None:
        events = await events_for(admin, namespace, "retrying")
        seen = sum(_count(e) for e in events if e["reason"] == REASON)
        return events if seen >= 20 else None

    events = await eventually(retried_20_times, timeout=180, interval=0.5, what=f"20 occurrences of {REASON}")
    elapsed = time.monotonic() - started
    by_reason = collections.Counter(e["reason"] for e in events)
    counts = {reason: sum(_count(e) for e in events if e["reason"] == reason) for reason in by_reason}
    print(f"after {elapsed:.1f}s: {len(events)} Event objects for the pod {dict(by_reason)}, counts {counts}")
    missing = [e for e in events if e["reason"] == REASON]
    assert len(missing) == 1, f"{len(missing)} {REASON} Event objects (one expected): {dict(by_reason)}"
    [event] = missing
    assert _count(event) >= 20, event
    assert event["type"] == "Warning" and "never-created" in event["message"], event
    assert event["involvedObject"]["uid"] == pod["metadata"]["uid"]
    assert event["firstTimestamp"] <= event["lastTimestamp"], event
    assert len(events) <= 5, f"{len(events)} Event objects for one pod: {dict(by_reason)}"

    # The retries spent their spam budget; the pod's next news still gets through once it can start.
    await asyncio.sleep(2)
    await admin.create(
        f"/api/v1/namespaces/{namespace}/configmaps",
        {"metadata": {"name": "never-created"}, "data": {"x": "1"}},
    )
    await wait_phase(admin, namespace, "retrying", "Running", timeout=60)
    await wait_event(admin, namespace, "retrying", "ProviderCreateSuccess", timeout=60)
    events = await events_for(admin, namespace, "retrying")
    assert len([e for e in events if e["reason"] == REASON]) == 1, events
    assert len(events) <= 5, f"{len(events)} Event objects for one pod"
