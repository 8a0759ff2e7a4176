"""EventRecorder: record never waits; senders post in the background; a full queue drops, counted."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from vk_operator import metrics
from vk_operator.kube import ApiError, RateLimiter
from vk_operator.pods.events import EventRecorder

POD = {"metadata": {"name": "web", "namespace": "team", "uid": "u-1", "resourceVersion": "7"}}


class SlowKube:
    """Records POSTs; each waits until ``release`` is set; ``fail`` makes them answer 403."""

    def __init__(self) -> None:
        self.posted: list[tuple[str, dict[str, Any]]] = []
        self.posted_at: list[float] = []
        self.release = asyncio.Event()
        self.fail = False

    async def request(
        self, method: str, path: str, *, data: str | None = None, limiter: RateLimiter | None = None, **_: Any
    ) -> Any:
        assert method == "POST" and data is not None
        if limiter is not None:  # as Kube.request: the given limiter instead of the client's own
            await limiter.acquire()
        await self.release.wait()
        self.posted_at.append(asyncio.get_running_loop().time())
        if self.fail:
            raise ApiError(403, {"reason": "Forbidden", "message": "no"}, method, path)
        self.posted.append((path, json.loads(data)))
        return {}


def _recorder(kube: SlowKube, **kwargs: Any) -> EventRecorder:
    return EventRecorder(kube, "vk-1", **kwargs)  # type: ignore[arg-type]


async def test_record_returns_at_once_and_the_event_is_posted_in_the_background() -> None:
    kube = SlowKube()
    recorder = _recorder(kube)
    tasks = recorder.start()
    try:
        recorder.record(POD, "ProviderCreateSuccess", "created")  # no await: the API is blocked
        assert (recorder.pending, kube.posted) == (1, [])
        kube.release.set()
        async with asyncio.timeout(5):
            await recorder.flush()
        [(path, event)] = kube.posted
        assert path == "/api/v1/namespaces/team/events"
        assert event["involvedObject"] == {
            "apiVersion": "v1",
            "kind": "Pod",
            "namespace": "team",
            "name": "web",
            "uid": "u-1",
            "resourceVersion": "7",
        }
        assert (event["reason"], event["message"], event["type"]) == (
            "ProviderCreateSuccess",
            "created",
            "Normal",
        )
        assert event["source"] == {"component": "virtual-kubelet", "host": "vk-1"}
        assert recorder.pending == 0
    finally:
        for task in tasks:
            task.cancel()


async def test_a_full_queue_drops_the_newest_event_and_counts_it() -> None:
    kube = SlowKube()
    recorder = _recorder(kube, senders=1, max_pending=2)
    before = metrics.REGISTRY.get_sample_value("vk_events_dropped_total") or 0.0
    for i in range(3):
        recorder.record(POD, f"Reason{i}", "m")  # senders not started: nothing leaves the queue
    assert recorder.pending == 2
    assert metrics.REGISTRY.get_sample_value("vk_events_dropped_total") == before + 1
    tasks = recorder.start()
    kube.release.set()
    try:
        async with asyncio.timeout(5):
            await recorder.flush()
        assert [event["reason"] for _, event in kube.posted] == ["Reason0", "Reason1"]
    finally:
        for task in tasks:
            task.cancel()


async def test_a_refused_event_is_logged_and_the_senders_go_on(caplog: pytest.LogCaptureFixture) -> None:
    kube = SlowKube()
    kube.fail = True
    kube.release.set()
    recorder = _recorder(kube, senders=1)
    tasks = recorder.start()
    try:
        with caplog.at_level(logging.WARNING, logger="vk_operator.pods.events"):
            recorder.record(POD, "First", "m", warning=True)
            async with asyncio.timeout(5):
                await recorder.flush()
        assert any(
            r.levelno == logging.WARNING and "cannot record event First in team" in r.getMessage()
            for r in caplog.records
        )
        kube.fail = False
        recorder.record(POD, "Second", "m")
        async with asyncio.timeout(5):
            await recorder.flush()
        assert [event["reason"] for _, event in kube.posted] == ["Second"]
        assert not any(task.done() for task in tasks)
    finally:
        for task in tasks:
            task.cancel()


async def test_events_are_posted_within_their_own_rate_limit() -> None:
    # The kubelet's --event-qps/--event-burst: a burst goes at once, the rest at qps.
    kube = SlowKube()
    kube.release.set()
    recorder = _recorder(kube, qps=20, burst=2, senders=4)
    tasks = recorder.start()
    try:
        started = asyncio.get_running_loop().time()
        for i in range(5):
            recorder.record(POD, f"Reason{i}", "m")
        async with asyncio.timeout(5):
            await recorder.flush()
        assert sorted(event["reason"] for _, event in kube.posted) == [f"Reason{i}" for i in range(5)]
        waited = sorted(t - started for t in kube.posted_at)
        # 2 from the burst, then one token each 1/20 s: the 5th no sooner than 3/20 s.
        assert waited[2] >= 0.05 - 0.005 and waited[4] >= 0.15 - 0.005, waited
    finally:
        for task in tasks:
            task.cancel()


async def test_the_rate_limiter_lets_a_burst_through_then_spaces_at_qps() -> None:
    limiter = RateLimiter(qps=50, burst=3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    times = []
    for _ in range(6):
        await limiter.acquire()
        times.append(loop.time() - started)
    assert times[5] >= 3 / 50 - 0.005, times  # 3 at once, then 1/50 s a token
    unlimited = RateLimiter(qps=0, burst=1)
    async with asyncio.timeout(1):
        for _ in range(1000):
            await unlimited.acquire()
