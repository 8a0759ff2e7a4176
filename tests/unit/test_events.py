"""Events: correlated as client-go's EventCorrelator does (pure, table-tested), then written in the
background by EventRecorder: record never waits; repeats PATCH one Event; a full queue drops, counted."""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
from typing import Any

import pytest

from vk_operator import metrics
from vk_operator.domain.event_correlation import (
    COMBINED_PREFIX,
    LRU,
    Action,
    EventCorrelator,
    EventSpec,
    TokenBucket,
)
from vk_operator.kube import ApiError, RateLimiter
from vk_operator.kube.client import MERGE_PATCH
from vk_operator.pods.events import EventRecorder

POD = {"metadata": {"name": "web", "namespace": "team", "uid": "u-1", "resourceVersion": "7"}}
T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
EVENTS = "/api/v1/namespaces/team/events"


# -- the correlator (pure) ---------------------------------------------------------------------------
def _spec(
    reason: str = "Failed", message: str = "m", *, name: str = "web", uid: str = "u-1", warning: bool = True
) -> EventSpec:
    return EventSpec(
        component="virtual-kubelet",
        host="vk-1",
        kind="Pod",
        namespace="team",
        name=name,
        uid=uid,
        api_version="v1",
        type="Warning" if warning else "Normal",
        reason=reason,
        message=message,
    )


Step = tuple[int, EventSpec]  # seconds after T0, the event recorded
# (action, count, the step whose new name the Event has, message written)
Expected = tuple[str, int, int, str]
C = COMBINED_PREFIX

CORRELATION_CASES: dict[str, tuple[list[Step], list[Expected]]] = {
    "the same event again is the same Event, counted": (
        [(0, _spec()), (1, _spec()), (5, _spec())],
        [("create", 1, 0, "m"), ("patch", 2, 0, "m"), ("patch", 3, 0, "m")],
    ),
    "another message, reason or type is another Event": (
        [(0, _spec()), (0, _spec(message="m2")), (0, _spec("Other")), (0, _spec(warning=False))],
        [("create", 1, 0, "m"), ("create", 1, 1, "m2"), ("create", 1, 2, "m"), ("create", 1, 3, "m")],
    ),
    "another object, or the pod recreated under its name (a new uid), is another Event": (
        [(0, _spec()), (0, _spec(name="db")), (0, _spec(uid="u-2")), (1, _spec(uid="u-2"))],
        [("create", 1, 0, "m"), ("create", 1, 1, "m"), ("create", 1, 2, "m"), ("patch", 2, 2, "m")],
    ),
    "from the 10th distinct message of a reason within 10 minutes, one combined Event": (
        [(i, _spec(message=f"m{i}")) for i in range(12)],
        [("create", 1, i, f"m{i}") for i in range(9)]
        + [("create", 1, 9, C + "m9"), ("patch", 2, 9, C + "m10"), ("patch", 3, 9, C + "m11")],
    ),
    "after combining, a message still remembered keeps its own Event": (
        [(i, _spec(message=f"m{i}")) for i in range(10)] + [(10, _spec(message="m5"))],
        [("create", 1, i, f"m{i}") for i in range(9)] + [("create", 1, 9, C + "m9"), ("patch", 2, 5, "m5")],
    ),
    "the window slides: similar events 500 s apart keep aggregating": (
        [(500 * i, _spec(message=f"m{i}")) for i in range(10)],
        [("create", 1, i, f"m{i}") for i in range(9)] + [("create", 1, 9, C + "m9")],
    ),
    "after 10 quiet minutes aggregation starts over": (
        [(i, _spec(message=f"m{i}")) for i in range(9)] + [(8 + 601, _spec(message="m9"))],
        [("create", 1, i, f"m{i}") for i in range(10)],
    ),
    "other reasons are aggregated apart": (
        [(i, _spec(message=f"m{i}")) for i in range(9)] + [(9, _spec("Other", "m9"))],
        [("create", 1, i, f"m{i}") for i in range(10)],
    ),
    "25 events about an object, then one per 5 minutes; the skipped ones are still counted": (
        [(0, _spec()) for _ in range(26)] + [(299, _spec()), (301, _spec()), (302, _spec())],
        [("create", 1, 0, "m")]
        + [("patch", n, 0, "m") for n in range(2, 26)]
        + [("skip", 26, 0, "m"), ("skip", 27, 0, "m"), ("patch", 28, 0, "m"), ("skip", 29, 0, "m")],
    ),
    "a bucket per object, type and reason: spam of one reason does not silence the others": (
        [(0, _spec(message=f"m{i % 5}")) for i in range(26)]
        + [(0, _spec("Other")), (0, _spec(warning=False)), (0, _spec(name="db")), (0, _spec(uid="u-2"))],
        [("create", 1, i, f"m{i}") for i in range(5)]
        + [("patch", i // 5 + 1, i % 5, f"m{i % 5}") for i in range(5, 25)]
        + [("skip", 6, 0, "m0")]
        + [("create", 1, i, "m") for i in range(26, 30)],
    ),
    "a clock stepped back refills no token": (
        [(1000, _spec()) for _ in range(25)] + [(0, _spec()), (1000 + 301, _spec())],
        [("create", 1, 0, "m")]
        + [("patch", n, 0, "m") for n in range(2, 26)]
        + [("skip", 26, 0, "m"), ("patch", 27, 0, "m")],
    ),
}


@pytest.mark.parametrize(("steps", "expected"), CORRELATION_CASES.values(), ids=CORRELATION_CASES.keys())
def test_correlation(steps: list[Step], expected: list[Expected]) -> None:
    correlator = EventCorrelator()
    got = []
    for i, (seconds, spec) in enumerate(steps):
        now = T0 + datetime.timedelta(seconds=seconds)
        result = correlator.correlate(spec, now, f"n{i}")
        assert result.last_timestamp == now
        got.append((result.action.value, result.count, int(result.name[1:]), result.message))
    assert got == expected


def test_a_repeat_keeps_the_first_timestamp_and_is_not_a_first_occurrence() -> None:
    correlator = EventCorrelator()
    first = correlator.correlate(_spec(), T0, "a")
    again = correlator.correlate(_spec(), T0 + datetime.timedelta(seconds=7), "b")
    assert (first.first, again.first) == (True, False)
    assert (again.name, again.first_timestamp, again.key) == ("a", T0, first.key)
    assert again.last_timestamp == T0 + datetime.timedelta(seconds=7)


def test_memory_is_bounded_by_lru_caches_the_oldest_forgotten_first() -> None:
    correlator = EventCorrelator(cache_entries=2)
    results = [
        correlator.correlate(_spec(reason), T0, f"n{i}")
        for i, reason in enumerate(["A", "B", "A", "C", "A", "B"])
    ]
    # B is forgotten when C comes (A was used since): B again is a new Event.
    assert [(r.action.value, r.name) for r in results] == [
        ("create", "n0"),
        ("create", "n1"),
        ("patch", "n0"),
        ("create", "n3"),
        ("patch", "n0"),
        ("create", "n5"),
    ]
    assert correlator.correlate(_spec("C"), T0, "n6").action is Action.CREATE  # and now C is forgotten
    assert all(len(cache) <= 2 for cache in vars(correlator).values() if isinstance(cache, LRU))


@pytest.mark.parametrize(
    ("ops", "expected"),
    [
        ([("put", "a"), ("put", "b"), ("put", "c")], ["b", "c"]),
        ([("put", "a"), ("put", "b"), ("get", "a"), ("put", "c")], ["a", "c"]),
        ([("put", "a"), ("put", "b"), ("put", "a"), ("put", "c")], ["a", "c"]),
        ([("put", "a"), ("get", "z"), ("put", "b")], ["a", "b"]),
    ],
)
def test_lru(ops: list[tuple[str, str]], expected: list[str]) -> None:
    cache: LRU[str, int] = LRU(2)
    for op, key in ops:
        if op == "put":
            cache.put(key, 1)
        else:
            cache.get(key)
    assert [k for k in "abcz" if k in cache] == expected and len(cache) == len(expected)


@pytest.mark.parametrize(
    ("times", "accepted"),
    [
        ([0, 0, 0, 0], [True, True, True, False]),  # burst 3
        ([0, 0, 0, 9.9, 10], [True, True, True, False, True]),  # then one each 10 s
        ([0, 0, 0, 100, 100, 100, 100], [True, True, True, True, True, True, False]),  # refills to burst only
    ],
)
def test_token_bucket(times: list[float], accepted: list[bool]) -> None:
    bucket = TokenBucket.full(3, 0.1, 0.0)
    assert [bucket.try_accept(t) for t in times] == accepted


# -- the recorder ------------------------------------------------------------------------------------
class SlowKube:
    """An Events API: POST creates (409 if the name exists), merge PATCH updates (404 if missing).

    Each request waits until ``release`` is set; ``fail`` makes them answer 403.
    """

    def __init__(self) -> None:
        self.posted: list[tuple[str, dict[str, Any]]] = []
        self.posted_at: list[float] = []
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.stored: dict[str, dict[str, Any]] = {}
        self.release = asyncio.Event()
        self.fail = False
        self.active: dict[str, int] = {}
        self.most_concurrent = 0

    async def request(
        self,
        method: str,
        path: str,
        *,
        data: bytes | None = None,
        content_type: str = "application/json",
        limiter: RateLimiter | None = None,
        **_: Any,
    ) -> Any:
        assert method in ("POST", "PATCH") and data is not None
        body = json.loads(data)
        name = path.rsplit("/", 1)[1] if method == "PATCH" else body["metadata"]["name"]
        self.active[name] = self.active.get(name, 0) + 1
        self.most_concurrent = max(self.most_concurrent, self.active[name])
        try:
            if limiter is not None:  # as Kube.request: the given limiter instead of the client's own
                await limiter.acquire()
            await self.release.wait()
            self.posted_at.append(asyncio.get_running_loop().time())
            if self.fail:
                raise ApiError(403, {"reason": "Forbidden", "message": "no"}, method, path)
            self.calls.append((method, path, body))
            if method == "POST":
                if name in self.stored:
                    raise ApiError(409, {"reason": "AlreadyExists", "message": name}, method, path)
                self.posted.append((path, body))
                self.stored[name] = dict(body)
                return body
            assert content_type == MERGE_PATCH
            if name not in self.stored:
                raise ApiError(404, {"reason": "NotFound", "message": name}, method, path)
            self.stored[name].update(body)
            return self.stored[name]
        finally:
            self.active[name] -= 1


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += datetime.timedelta(seconds=seconds)


def _recorder(kube: SlowKube, **kwargs: Any) -> EventRecorder:
    return EventRecorder(kube, "vk-1", **kwargs)  # type: ignore[arg-type]


def _dropped() -> float:
    return metrics.REGISTRY.get_sample_value("vk_events_dropped_total") or 0.0


async def _flush(recorder: EventRecorder) -> None:
    async with asyncio.timeout(5):
        await recorder.flush()


async def test_record_returns_at_once_and_the_event_is_posted_in_the_background() -> None:
    kube = SlowKube()
    recorder = _recorder(kube)
    tasks = recorder.start()
    try:
        recorder.record(POD, "ProviderCreateSuccess", "created")  # no await: the API is blocked
        assert (recorder.pending, kube.posted) == (1, [])
        kube.release.set()
        await _flush(recorder)
        [(path, event)] = kube.posted
        assert path == EVENTS
        assert event["involvedObject"] == {
            "apiVersion": "v1",
            "kind": "Pod",
            "namespace": "team",
            "name": "web",
            "uid": "u-1",
            "resourceVersion": "7",
        }
        assert (event["reason"], event["message"], event["type"], event["count"]) == (
            "ProviderCreateSuccess",
            "created",
            "Normal",
            1,
        )
        assert event["source"] == {"component": "virtual-kubelet", "host": "vk-1"}
        assert event["firstTimestamp"] == event["lastTimestamp"]
        assert event["metadata"]["name"].startswith("web.")
        assert recorder.pending == 0
    finally:
        for task in tasks:
            task.cancel()


async def test_the_same_event_again_patches_count_and_last_timestamp_of_one_event() -> None:
    kube = SlowKube()
    kube.release.set()
    clock = Clock()
    recorder = _recorder(kube, clock=clock)
    tasks = recorder.start()
    try:
        recorder.record(POD, "MandatoryConfigMapNotFound", "configmap x not found", warning=True)
        await _flush(recorder)
        clock.advance(3)
        recorder.record(POD, "MandatoryConfigMapNotFound", "configmap x not found", warning=True)
        await _flush(recorder)
        [(post, _, created), (patch, path, patched)] = kube.calls
        name = created["metadata"]["name"]
        assert (post, patch, path) == ("POST", "PATCH", f"{EVENTS}/{name}")
        assert patched == {
            "count": 2,
            "lastTimestamp": "2026-01-01T00:00:03Z",
            "message": "configmap x not found",
        }
        [event] = kube.stored.values()
        assert (event["count"], event["firstTimestamp"], event["lastTimestamp"]) == (
            2,
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:00:03Z",
        )
    finally:
        for task in tasks:
            task.cancel()


async def test_repeats_waiting_to_be_sent_are_folded_into_one_write() -> None:
    kube = SlowKube()
    recorder = _recorder(kube, max_pending=1)
    for _ in range(5):  # senders not started: the first waits, the next four fold into it
        recorder.record(POD, "Failed", "m", warning=True)
    assert recorder.pending == 1
    kube.release.set()
    tasks = recorder.start()
    try:
        await _flush(recorder)
        [(method, _, event)] = kube.calls
        assert (method, event["count"]) == ("POST", 5)
    finally:
        for task in tasks:
            task.cancel()


async def test_repeats_during_a_write_follow_it_and_one_event_is_never_written_concurrently() -> None:
    kube = SlowKube()
    recorder = _recorder(kube, senders=4)
    tasks = recorder.start()
    try:
        recorder.record(POD, "Failed", "m", warning=True)
        await asyncio.sleep(0.05)  # a sender has taken the create and waits on the API
        for _ in range(3):
            recorder.record(POD, "Failed", "m", warning=True)
        kube.release.set()
        await _flush(recorder)
        assert [(method, body["count"]) for method, _, body in kube.calls] == [("POST", 1), ("PATCH", 4)]
        assert kube.most_concurrent == 1
    finally:
        for task in tasks:
            task.cancel()


async def test_a_patch_of_an_expired_event_posts_it_again_whole() -> None:
    kube = SlowKube()
    kube.release.set()
    clock = Clock()
    recorder = _recorder(kube, clock=clock)
    tasks = recorder.start()
    try:
        recorder.record(POD, "Failed", "m", warning=True)
        await _flush(recorder)
        kube.stored.clear()  # the API server's TTL (an hour) deleted it
        clock.advance(3600)
        recorder.record(POD, "Failed", "m", warning=True)
        await _flush(recorder)
        assert [method for method, _, _ in kube.calls] == ["POST", "PATCH", "POST"]
        [event] = kube.stored.values()
        assert event["metadata"]["name"] == kube.calls[0][2]["metadata"]["name"]
        assert (event["count"], event["firstTimestamp"], event["lastTimestamp"]) == (
            2,
            "2026-01-01T00:00:00Z",
            "2026-01-01T01:00:00Z",
        )
        assert event["involvedObject"]["uid"] == "u-1" and event["reason"] == "Failed"
    finally:
        for task in tasks:
            task.cancel()


async def test_spam_beyond_the_burst_is_dropped_counted_and_the_next_write_carries_the_true_count() -> None:
    kube = SlowKube()
    kube.release.set()
    clock = Clock()
    recorder = _recorder(kube, clock=clock)
    tasks = recorder.start()
    before = _dropped()
    try:
        for _ in range(30):
            recorder.record(POD, "Failed", "m", warning=True)
            await _flush(recorder)
        assert len(kube.calls) == 25  # the burst: 1 POST, 24 PATCHes
        assert _dropped() == before + 5
        clock.advance(301)  # one token more
        recorder.record(POD, "Failed", "m", warning=True)
        await _flush(recorder)
        [event] = kube.stored.values()
        assert (len(kube.calls), event["count"]) == (26, 31)
    finally:
        for task in tasks:
            task.cancel()


async def test_many_messages_of_one_reason_are_combined_into_one_event() -> None:
    kube = SlowKube()
    kube.release.set()
    recorder = _recorder(kube)
    tasks = recorder.start()
    try:
        for i in range(12):
            recorder.record(POD, "ProviderCreateFailed", f"attempt {i} failed", warning=True)
            await _flush(recorder)
        events = sorted(kube.stored.values(), key=lambda e: str(e["message"]))
        assert len(events) == 10
        combined = events[0]
        assert (combined["message"], combined["count"]) == (COMBINED_PREFIX + "attempt 11 failed", 3)
    finally:
        for task in tasks:
            task.cancel()


async def test_first_occurrences_log_at_their_level_and_repeats_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kube = SlowKube()
    recorder = _recorder(kube)
    with caplog.at_level(logging.DEBUG, logger="vk_operator.pods.events"):
        for _ in range(3):
            recorder.record(POD, "Failed", "no", warning=True)
        recorder.record(POD, "Started", "yes")
        for _ in range(30):
            recorder.record(POD, "Failed", "no", warning=True)
    lines = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert len(lines) == 34  # one line per recorded event
    assert lines[:4] == [
        (logging.WARNING, "team/web: Failed: no"),
        (logging.DEBUG, "team/web: Failed: no (x2)"),
        (logging.DEBUG, "team/web: Failed: no (x3)"),
        (logging.INFO, "team/web: Started: yes"),
    ]
    assert {level for level, _ in lines[4:]} == {logging.DEBUG}
    assert lines[-1] == (
        logging.DEBUG,
        "team/web: Failed: no (x33) (not posted: too many events about this object)",
    )


async def test_a_full_queue_drops_the_newest_event_and_counts_it() -> None:
    kube = SlowKube()
    recorder = _recorder(kube, senders=1, max_pending=2)
    before = _dropped()
    for i in range(3):
        recorder.record(POD, f"Reason{i}", "m")  # senders not started: nothing leaves the queue
    assert recorder.pending == 2
    assert _dropped() == before + 1
    recorder.record(POD, "Reason0", "m")  # a repeat of a waiting Event takes no room: folded
    assert (recorder.pending, _dropped()) == (2, before + 1)
    tasks = recorder.start()
    kube.release.set()
    try:
        await _flush(recorder)
        assert [(event["reason"], event["count"]) for _, event in kube.posted] == [
            ("Reason0", 2),
            ("Reason1", 1),
        ]
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
            await _flush(recorder)
        assert any(
            r.levelno == logging.WARNING and "cannot record event First in team" in r.getMessage()
            for r in caplog.records
        )
        kube.fail = False
        recorder.record(POD, "Second", "m")
        await _flush(recorder)
        recorder.record(POD, "First", "m", warning=True)  # its create was refused: the PATCH 404s, POST
        await _flush(recorder)
        assert [(method, body.get("reason")) for method, _, body in kube.calls] == [
            ("POST", "Second"),
            ("PATCH", None),  # 404
            ("POST", "First"),
        ]
        assert kube.posted[1][1]["count"] == 2
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
        await _flush(recorder)
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
