"""The pod reconcile state machine, driven by hand against in-memory fakes and a fake clock.

No worker tasks, no sleeps: a test feeds watch events to ``observe``, calls ``resync`` and drains
the work queue itself. Retries are asserted as scheduled (``queue.retry_pending``), never awaited;
deadlines and grace periods move with the fake clock. Only the hanging calls spend real time
(call timeouts of 50 ms, a 10 ms grace timeout).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import eventually
from tests.unit.fakes import FakeBulkProvider, FakeClock, FakeKube, FakeProvider
from vk_operator.domain.model import ContainerPhase, ContainerStatus, PodPhase, ProviderPodStatus
from vk_operator.domain.pod_status import pod_status
from vk_operator.guard import CallTimeouts, ProviderGuard
from vk_operator.kube.client import PARTIAL_METADATA_LIST
from vk_operator.pods.backoff import Backoff
from vk_operator.pods.controller import PodController
from vk_operator.pods.listing import FULL_LIST_ABOVE
from vk_operator.pods.reconciler import QUIET_DELAYS, QUIET_WINDOW
from vk_operator.pods.sources import SourceFetcher
from vk_operator.provider import (
    BulkStatusProvider,
    EventEmitter,
    InvalidPodError,
    PermanentError,
    PodEventRecorder,
    PodNotifier,
    PodRef,
    Provider,
    ThrottledError,
    TransientError,
)

NODE = "vk-test"
HOST_IP = "10.0.0.1"
NS = "default"
# Retry delays far beyond a test's run time: a retry timer never fires during a test.
BACKOFF = Backoff(initial=30.0, cap=60.0, deadline=600.0)
Key = tuple[str, str]


def key(name: str) -> Key:
    return NS, name


def manifest(
    name: str, *, image: str = "nginx:1.27", node: str = NODE, uid: str | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": NS}
    if uid:
        meta["uid"] = uid
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {
            "nodeName": node,
            "containers": [{"name": "app", "image": image}],
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
        },
        "status": {"phase": "Pending", "qosClass": "BestEffort"},
    }


class Harness:
    """One controller on the fakes, and the hands that drive it."""

    def __init__(
        self,
        *,
        bulk: bool = False,
        timeouts: CallTimeouts | None = None,
        backoff: Backoff = BACKOFF,
        provider_class: type[FakeProvider] | None = None,
        **options: Any,
    ) -> None:
        self.clock = FakeClock()
        self.kube = FakeKube(NODE)
        self.provider = (provider_class or (FakeBulkProvider if bulk else FakeProvider))(NODE)
        self.guard = ProviderGuard(timeouts or CallTimeouts())
        self.backoff = backoff
        self.controller = PodController(
            self.kube,  # type: ignore[arg-type]
            self.provider,
            NODE,
            HOST_IP,
            clock=self.clock.clock,
            backoff=backoff,
            guard=self.guard,
            **options,
        )
        self.queue = self.controller.queue
        self.reconciled: list[Key] = []
        self._events: list[tuple[str, str, str, str]] = []  # (pod, reason, type, message)
        recorder = self.controller.events
        record = recorder.record

        def spy(obj: dict[str, Any], reason: str, message: str, *, warning: bool = False) -> None:
            kind = "Warning" if warning else "Normal"
            self._events.append((obj["metadata"]["name"], reason, kind, message))
            record(obj, reason, message, warning=warning)

        recorder.record = spy  # type: ignore[method-assign]

    # -- inputs --------------------------------------------------------------------------------------
    def deliver(self) -> int:
        """kopf: every watch event the fake API produced since the last delivery, in order."""
        events = self.kube.take_watch()
        for event_type, pod in events:
            self.controller.observe(event_type, pod)
        return len(events)

    async def resync(self, relist: bool = True) -> None:
        """One pass of the resync loop (the first one is the start-up pass)."""
        await self.controller.resync(relist=relist)
        self.controller.started.set()

    async def reconcile(self, name: str) -> None:
        """A worker taking the key now (as a retry timer firing would make one do)."""
        self.reconciled.append(key(name))
        await self.controller.reconciler.reconcile(key(name))

    async def drain(self) -> int:
        """Workers: reconcile every queued key until the queue is empty."""
        done = 0
        while self.queue.depth:
            k = await self.queue.get()
            try:
                self.reconciled.append(k)
                await self.controller.reconciler.reconcile(k)
            finally:
                self.queue.done(k)
            done += 1
            assert done < 10_000, "the queue never drains"
        return done

    async def settle(self) -> None:
        """Deliver watch events and drain until neither has anything left."""
        while True:
            delivered = self.deliver()
            drained = await self.drain()
            if not delivered and not drained:
                return

    async def start(self) -> None:
        await self.resync(relist=True)
        await self.settle()

    async def add(self, name: str, **kwargs: Any) -> dict[str, Any]:
        """A pod is bound to the node and the controller has done all it can with it."""
        pod = self.kube.add(manifest(name, **kwargs))
        await self.settle()
        return pod

    # -- looking -------------------------------------------------------------------------------------
    def api(self, name: str) -> dict[str, Any]:
        pod = self.kube.pod(key(name))
        assert pod is not None, f"{name} is not in the API"
        return pod

    def status(self, name: str) -> dict[str, Any]:
        status: dict[str, Any] = self.api(name)["status"]
        return status

    def events(self, name: str | None = None) -> list[tuple[str, str, str]]:
        """(reason, type, message) of the Events the controller recorded so far (whatever the
        recorder then makes of them: correlation, rate limits and posting are its own tests')."""
        return [(reason, kind, message) for who, reason, kind, message in self._events if name in (None, who)]

    def reasons(self, name: str | None = None) -> list[str]:
        return [reason for reason, _, _ in self.events(name)]

    def close(self) -> None:
        for k in list(self.queue._timers):
            self.queue.forget(k)
        for k in list(self.queue._wakes):
            self.queue.forget_wake(k)


@pytest.fixture
def make() -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def factory(**kwargs: Any) -> Harness:
        harness = Harness(**kwargs)
        made.append(harness)
        return harness

    yield factory
    for harness in made:
        harness.close()


# -- the fakes themselves ------------------------------------------------------------------------------
def test_the_fake_providers_satisfy_the_protocols() -> None:
    plain, bulk = FakeProvider(NODE), FakeBulkProvider(NODE)
    assert isinstance(plain, Provider) and isinstance(bulk, Provider)
    assert not isinstance(plain, BulkStatusProvider) and isinstance(bulk, BulkStatusProvider)
    assert not isinstance(plain, PodNotifier) and not isinstance(bulk, PodNotifier)


async def test_the_fake_kube_refuses_what_it_does_not_know() -> None:
    kube = FakeKube(NODE)
    with pytest.raises(NotImplementedError):
        await kube.get("/api/v1/nodes/vk-test")
    with pytest.raises(NotImplementedError):
        await kube.request("GET", "/api/v1/pods", query={"labelSelector": "a=b"})
    with pytest.raises(NotImplementedError):
        await kube.patch("/api/v1/namespaces/default/pods/web", {"metadata": {"labels": {}}})


# -- creation ------------------------------------------------------------------------------------------
async def test_a_new_pod_is_created_once_and_reported_running(make: Callable[..., Harness]) -> None:
    h = make()
    await h.start()
    pod = await h.add("web")
    uid = pod["metadata"]["uid"]

    assert h.provider.calls["create_pod"] == 1
    assert h.provider.created == [uid]
    assert h.provider.prepared[uid].pod["metadata"]["uid"] == uid
    status = h.status("web")
    assert status["phase"] == "Running"
    assert status["podIP"] == h.provider.status_of(uid).pod_ip
    assert status["hostIP"] == HOST_IP
    assert [c["state"] for c in status["containerStatuses"]] == [
        {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
    ]
    assert ("ProviderCreateSuccess", "Normal", "created the pod in the provider") in h.events("web")
    # The echo of our own status write is not a reason to reconcile again...
    assert h.reconciled == [key("web")]
    # ... and a reconcile that finds nothing new writes nothing.
    patches = len(h.kube.patches)
    await h.reconcile("web")
    assert len(h.kube.patches) == patches

    # A later change of the pod that the provider need not know (a label) creates nothing.
    h.kube.update(key("web"), lambda p: p["metadata"].setdefault("labels", {}).update(app="web"))
    await h.settle()
    assert h.provider.calls["create_pod"] == 1
    assert h.status("web")["phase"] == "Running"


async def test_a_spec_change_is_sent_to_the_provider_as_an_update(make: Callable[..., Harness]) -> None:
    h = make()
    await h.start()
    uid = (await h.add("web"))["metadata"]["uid"]
    h.kube.update(key("web"), lambda p: p["spec"]["containers"][0].update(image="nginx:1.28"))
    await h.settle()
    assert h.provider.updated == [uid]
    assert h.provider.calls["create_pod"] == 1
    assert "ProviderUpdateSuccess" in h.reasons("web")
    assert h.status("web")["containerStatuses"][0]["image"] == "nginx:1.28"


# -- adoption after a restart ----------------------------------------------------------------------------
async def test_a_running_pod_found_at_start_up_is_adopted_untouched(make: Callable[..., Harness]) -> None:
    h = make()
    pod = manifest("web", uid="uid-web")
    reported = h.provider.run(pod)  # created by our previous incarnation
    pod["status"] = pod_status(pod, reported, HOST_IP, h.clock.utcnow())  # ... which wrote this
    before = h.kube.add(pod)

    await h.start()  # kopf's initial ADDED event arrives after the first resync listed the pod

    assert h.provider.calls["create_pod"] == 0
    assert h.provider.deleted == []
    assert h.kube.patches == [] and h.kube.deletes == []
    assert h.api("web") == before  # same status, same resourceVersion
    assert h.reconciled == [key("web")]  # once, by the start-up pass; the ADDED event was known
    assert h.controller.store.in_provider == 1


async def test_a_terminating_pod_found_at_start_up_is_finished(make: Callable[..., Harness]) -> None:
    h = make()
    pod = h.kube.add(manifest("web", uid="uid-web"))
    h.provider.run(pod)
    h.kube.begin_delete(key("web"), grace=30, now=h.clock.utcnow())

    await h.start()

    assert h.provider.deleted == ["uid-web"]
    assert h.kube.pod(key("web")) is None
    assert h.kube.deletes == [(key("web"), {"gracePeriodSeconds": 0, "preconditions": {"uid": "uid-web"}})]
    assert h.provider.calls["create_pod"] == 0
    assert len(h.controller.store) == 0


async def test_a_pod_recreated_while_we_were_down_replaces_the_old_one(make: Callable[..., Harness]) -> None:
    h = make()
    h.provider.run(manifest("web", uid="uid-old"))  # the API object it belonged to is gone...
    h.kube.add(manifest("web", uid="uid-new"))  # ... and another pod took its name

    await h.start()

    assert h.provider.deleted == ["uid-old"]
    assert h.provider.created == ["uid-new"]
    assert set(h.provider.pods) == {"uid-new"}
    assert h.status("web")["phase"] == "Running"
    assert h.kube.deletes == []


# -- orphans ---------------------------------------------------------------------------------------------
async def test_provider_pods_without_an_api_object_are_deleted_and_other_nodes_untouched(
    make: Callable[..., Harness],
) -> None:
    h = make()
    h.provider.run(manifest("ghost", uid="uid-ghost"))  # ours, its API object gone while we were down
    h.provider.run(manifest("theirs", uid="uid-theirs", node="vk-other"), node="vk-other")
    h.kube.add(manifest("theirs", uid="uid-theirs", node="vk-other"))  # bound to another node

    await h.start()

    assert h.provider.deleted == ["uid-ghost"]  # never asked to delete another node's pod
    assert set(h.provider.pods) == {"uid-theirs"}
    assert h.provider.calls["create_pod"] == 0
    assert len(h.controller.store) == 0
    assert key("theirs") not in h.controller.pods
    assert h.kube.patches == [] and h.kube.deletes == []


async def test_a_pod_recreated_under_its_name_replaces_the_old_one_in_the_provider(
    make: Callable[..., Harness],
) -> None:
    """Both watch events arrive: the old UID is an orphan, deleted before the new one is created."""
    h = make()
    await h.start()
    await h.add("web", uid="uid-old")
    h.kube.force_delete(key("web"))
    h.kube.add(manifest("web", uid="uid-new"))
    await h.settle()

    assert h.provider.deleted == ["uid-old"]
    assert h.provider.created == ["uid-old", "uid-new"]
    assert set(h.provider.pods) == {"uid-new"}
    assert h.api("web")["metadata"]["uid"] == "uid-new"
    assert h.status("web")["phase"] == "Running"
    assert h.kube.deletes == []


async def test_finishing_a_replaced_pod_never_deletes_its_successor(make: Callable[..., Harness]) -> None:
    """The old pod was Terminating; before we got to it, it was force-deleted and recreated under
    its name. Our store still holds the old object: finishing it must not touch the new one."""
    h = make()
    await h.start()
    await h.add("web", uid="uid-old")
    h.kube.begin_delete(key("web"), grace=30, now=h.clock.utcnow())
    h.deliver()  # we see it Terminating (queued, not reconciled yet)
    h.kube.force_delete(key("web"))
    h.kube.add(manifest("web", uid="uid-new"))
    held = h.kube.take_watch()  # the watch is slow: these arrive after the reconcile

    await h.drain()

    assert h.provider.deleted == ["uid-old"]
    assert h.kube.deletes == [(key("web"), {"gracePeriodSeconds": 0, "preconditions": {"uid": "uid-old"}})]
    assert {patch["metadata"]["uid"] for _, patch in h.kube.patches} == {"uid-old"}
    new = h.api("web")
    assert new["metadata"]["uid"] == "uid-new"  # the delete's UID precondition failed: 409, ignored
    assert new["status"] == {"phase": "Pending", "qosClass": "BestEffort"}  # nor was its status written

    for event_type, pod in held:
        h.controller.observe(event_type, pod)
    await h.settle()

    assert h.provider.created == ["uid-old", "uid-new"]
    assert h.provider.deleted == ["uid-old"]
    assert h.status("web")["phase"] == "Running"
    assert [record.ref.uid for record in h.controller.store] == ["uid-new"]


# -- failures and deadlines ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("error", "phase", "reason", "message_part", "retried"),
    [
        pytest.param(
            TransientError("no capacity in westeurope", reason="NoCapacity"),
            "Pending",
            "NoCapacity",
            "no capacity in westeurope",
            True,
            id="transient",
        ),
        pytest.param(
            RuntimeError("sdk bug"), "Pending", "ProviderFailed", "RuntimeError", True, id="unexpected"
        ),
        pytest.param(
            ThrottledError("429 Too Many Requests", retry_after=5),
            "Pending",
            "ProviderThrottled",
            "429 Too Many Requests",
            True,
            id="throttled",
        ),
        pytest.param(
            PermanentError("quota of 10 container groups reached", reason="QuotaExceeded"),
            "Failed",
            "QuotaExceeded",
            "quota of 10 container groups reached",
            False,
            id="permanent",
        ),
        pytest.param(
            InvalidPodError("spec.containers[0].args", "more than 64 arguments"),
            "Failed",
            "InvalidPod",
            "spec.containers[0].args",
            False,
            id="invalid",
        ),
    ],
)
async def test_a_failed_create_is_reported_and_retried_unless_permanent(
    make: Callable[..., Harness],
    error: Exception,
    phase: str,
    reason: str,
    message_part: str,
    retried: bool,
) -> None:
    h = make()
    await h.start()
    h.provider.errors["create_pod"] = error
    await h.add("web")

    status = h.status("web")
    assert (status["phase"], status["reason"]) == (phase, reason)
    assert message_part in status["message"]
    assert h.queue.retry_pending(key("web")) is retried
    assert h.provider.calls["create_pod"] == 1
    [(_, event_type, event_message)] = [e for e in h.events("web") if e[0] == "ProviderCreateFailed"]
    assert event_type == "Warning" and message_part in event_message
    record = h.controller.store.api_record(key("web"))
    assert record is not None and not record.in_provider


async def test_a_resync_leaves_a_pod_waiting_for_its_retry_alone(make: Callable[..., Harness]) -> None:
    h = make()
    await h.start()
    h.provider.errors["create_pod"] = TransientError("backend busy")
    await h.add("web")
    assert h.queue.retry_pending(key("web"))
    reconciles = len(h.reconciled)

    await h.resync(relist=False)
    await h.resync(relist=True)
    await h.settle()

    assert h.provider.calls["create_pod"] == 1  # no second retry chain
    assert len(h.reconciled) == reconciles
    assert h.queue.retry_pending(key("web"))


async def test_a_resync_during_a_retry_attempt_adds_no_attempt(make: Callable[..., Harness]) -> None:
    """CI found 2 attempts a second with --retry-cap 1: a resync that came while a worker held the
    retried key queued it again, so every attempt it overlapped was followed by another at once."""
    h = make()
    await h.start()
    h.provider.errors["create_pod"] = TransientError("backend busy")
    await h.add("web")
    h.queue.forget(key("web"))  # the retry timer fires ...
    h.queue.add(key("web"))
    held = await h.queue.get()  # ... and a worker takes the key

    await h.resync(relist=False)  # resyncs while the worker has it
    await h.resync(relist=True)
    await h.controller.reconciler.reconcile(held)
    h.queue.done(held)
    await h.settle()

    assert h.provider.calls["create_pod"] == 2  # the first attempt and its one retry
    assert h.queue.retry_pending(key("web"))


async def test_a_relist_that_races_a_retry_attempts_status_write_adds_no_attempt(
    make: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relist that reads the pod after a retry attempt's status write but before its answer sees
    the pod "changed" by that write alone: queueing it would repeat the attempt at once."""
    h = make()
    await h.start()
    await h.add("worker")
    h.provider.errors["create_pod"] = TransientError("backend busy")
    await h.add("web")
    attempts = h.provider.calls["create_pod"]
    h.provider.errors["create_pod"] = TransientError("backend still busy")  # a new status to write
    h.kube.update(key("worker"), lambda p: p["metadata"].setdefault("labels", {}).update(x="1"))
    h.kube.take_watch()  # a change the watch missed: the relist reads "worker" after "web"
    h.queue.forget(key("web"))  # the retry timer fires and a worker takes the key
    h.queue.add(key("web"))
    held = await h.queue.get()

    applied, answered = asyncio.Event(), asyncio.Event()
    patch, get = h.kube.patch, h.kube.get

    async def slow_patch(path: str, body: Any, *args: Any) -> Any:
        written = await patch(path, body, *args)
        applied.set()  # the status is written; its answer is on its way
        await answered.wait()
        return written

    async def attempt() -> None:
        try:
            await h.controller.reconciler.reconcile(held)
        finally:
            h.queue.done(held)

    async def relist_get(path: str, **query: Any) -> Any:
        found = await get(path, **query)
        if path == f"/api/v1/namespaces/{NS}/pods/worker":  # "web" was read already
            answered.set()  # the status write's answer arrives while the relist goes on
            await running
        return found

    monkeypatch.setattr(h.kube, "patch", slow_patch)
    monkeypatch.setattr(h.kube, "get", relist_get)
    running = asyncio.create_task(attempt())
    await applied.wait()
    await h.resync(relist=True)
    await running
    await h.settle()

    assert h.status("web")["message"] == "backend still busy"
    assert h.provider.calls["create_pod"] == attempts + 1  # the held attempt, not one more
    assert h.queue.retry_pending(key("web"))


async def test_a_pod_changed_while_it_waits_for_its_retry_keeps_one_retry_schedule(
    make: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect 1 (issue 11): every failed attempt asks for a retry. A watch event (a label, an
    annotation) reconciles a pod that waits for its retry, and that attempt's retry must not start
    a second chain beside the first: the queue keeps one retry timer per key, the earliest."""
    loop = asyncio.get_running_loop()
    timers: list[tuple[tuple[Any, ...], asyncio.TimerHandle]] = []
    call_later = loop.call_later

    def recording(
        delay: float, callback: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> asyncio.TimerHandle:
        handle = call_later(delay, callback, *args, **kwargs)
        timers.append((args, handle))
        return handle

    monkeypatch.setattr(loop, "call_later", recording)
    h = make()
    await h.start()
    h.provider.errors["create_pod"] = TransientError("backend busy")
    await h.add("web")
    for n in range(3):

        def relabel(pod: dict[str, Any], n: int = n) -> None:
            pod["metadata"].setdefault("labels", {})["rev"] = str(n)

        h.kube.update(key("web"), relabel)
        await h.settle()

    assert h.provider.calls["create_pod"] == 4  # the first attempt and one per change
    live = [handle for args, handle in timers if args == (key("web"),) and not handle.cancelled()]
    assert len(live) == 1, f"{len(live)} retry timers pending for one pod: parallel retry chains"
    assert live[0].when() - loop.time() <= BACKOFF.delay(1)  # the earliest retry stands


@pytest.mark.parametrize(
    ("error", "reason", "message_part"),
    [
        pytest.param(TransientError("backend busy"), "ProviderFailed", "backend busy", id="transient"),
        pytest.param(RuntimeError("sdk bug"), "ProviderFailed", "RuntimeError", id="unexpected"),
    ],
)
async def test_transient_failures_fail_the_pod_past_the_deadline(
    make: Callable[..., Harness], error: Exception, reason: str, message_part: str
) -> None:
    h = make()
    await h.start()
    h.provider.errors["create_pod"] = error
    await h.add("web")  # attempt 1
    h.clock.advance(BACKOFF.deadline - 1)
    await h.reconcile("web")  # attempt 2 (the retry timer fired): within the deadline
    assert h.status("web")["phase"] == "Pending"

    h.clock.advance(2)
    await h.reconcile("web")  # attempt 3: past the deadline

    status = h.status("web")
    assert (status["phase"], status["reason"]) == ("Failed", reason)
    assert status["message"].startswith("gave up after 3 attempts over 600s: ")
    assert message_part in status["message"]
    assert all(t == "Warning" for r, t, _ in h.events("web") if r == "ProviderCreateFailed")
    assert h.reasons("web").count("ProviderCreateFailed") == 3

    await h.reconcile("web")  # a Failed pod is never started again
    assert h.provider.calls["create_pod"] == 3


async def test_a_throttled_provider_holds_back_every_call(make: Callable[..., Harness]) -> None:
    h = make()
    await h.start()
    h.provider.errors["create_pod"] = ThrottledError("429", retry_after=5)
    await h.add("web")
    assert 4 < h.guard.throttled_for <= 5
    del h.provider.errors["create_pod"]

    listed = h.provider.calls["list_pods"]
    call = asyncio.create_task(h.guard.call("list_pods", h.provider.list_pods))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not call.done() and h.provider.calls["list_pods"] == listed  # waiting for the pause
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call


async def test_a_hanging_create_is_cut_by_its_timeout(make: Callable[..., Harness]) -> None:
    h = make(timeouts=CallTimeouts(create=0.05))
    await h.start()
    h.provider.hang.add("create_pod")
    await h.add("web")

    status = h.status("web")
    assert (status["phase"], status["reason"]) == ("Pending", "ProviderTimeout")
    assert "timed out after 0.05s" in status["message"]
    assert h.queue.retry_pending(key("web"))

    h.provider.hang.clear()
    await h.reconcile("web")  # the retry
    status = h.status("web")
    assert status["phase"] == "Running"
    assert "reason" not in status and "message" not in status  # the Pending reason is cleared
    assert not h.queue.retry_pending(key("web"))


# -- deletion and grace periods --------------------------------------------------------------------------
async def test_a_graceful_delete_removes_the_object_as_soon_as_the_provider_stopped(
    make: Callable[..., Harness],
) -> None:
    h = make()
    await h.start()
    uid = (await h.add("web"))["metadata"]["uid"]
    h.kube.begin_delete(key("web"), grace=30, now=h.clock.utcnow())
    await h.settle()  # no time passes

    assert h.provider.deleted == [uid]
    assert h.kube.pod(key("web")) is None
    assert h.kube.deletes == [(key("web"), {"gracePeriodSeconds": 0, "preconditions": {"uid": uid}})]
    assert ("ProviderDeleteSuccess", "Normal", "deleted the pod in the provider") in h.events("web")
    stopped = h.kube.patches[-1][1]  # the end is reported before the object goes
    assert stopped["metadata"]["uid"] == uid
    assert stopped["status"]["phase"] == "Succeeded"
    assert stopped["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    assert len(h.controller.store) == 0
    assert not h.queue.retry_pending(key("web"))


async def test_a_failed_provider_delete_is_retried_within_the_grace_period(
    make: Callable[..., Harness],
) -> None:
    h = make()
    await h.start()
    uid = (await h.add("web"))["metadata"]["uid"]
    h.provider.errors["delete_pod"] = TransientError("backend busy")
    h.kube.begin_delete(key("web"), grace=30, now=h.clock.utcnow())
    await h.settle()

    assert h.api("web")["metadata"]["deletionTimestamp"]  # still there: the provider did not stop it
    assert h.kube.deletes == []
    assert h.queue.retry_pending(key("web"))
    [(_, event_type, message)] = [e for e in h.events("web") if e[0] == "ProviderDeleteFailed"]
    assert event_type == "Warning" and "backend busy" in message
    record = h.controller.store.api_record(key("web"))
    assert record is not None and record.in_provider and not record.stopping

    del h.provider.errors["delete_pod"]
    h.clock.advance(10)
    await h.reconcile("web")  # the retry, with grace left
    assert h.provider.deleted == [uid, uid]
    assert h.kube.pod(key("web")) is None


@pytest.mark.parametrize("failure", ["error", "hang"])
async def test_past_the_grace_period_the_object_is_removed_unconfirmed(
    make: Callable[..., Harness], failure: str
) -> None:
    h = make(timeouts=CallTimeouts(delete=0.05))
    await h.start()
    uid = (await h.add("web"))["metadata"]["uid"]
    if failure == "error":
        h.provider.errors["delete_pod"] = TransientError("backend busy")
    else:
        h.provider.hang.add("delete_pod")
    h.kube.begin_delete(key("web"), grace=30, now=h.clock.utcnow())
    h.clock.advance(31)  # we only get to it after its grace period
    await h.settle()

    assert h.kube.pod(key("web")) is None
    assert h.kube.deletes == [(key("web"), {"gracePeriodSeconds": 0, "preconditions": {"uid": uid}})]
    assert uid in h.provider.pods  # not confirmed...

    h.provider.errors.clear()
    h.provider.hang.clear()
    await h.resync(relist=False)
    await h.settle()
    assert h.provider.pods == {}  # ... and removed as an orphan once the provider answers
    assert len(h.controller.store) == 0


# -- relist ----------------------------------------------------------------------------------------------
async def test_a_relist_finds_a_pod_deleted_without_a_watch_event(make: Callable[..., Harness]) -> None:
    h = make()
    await h.start()
    uid = (await h.add("web"))["metadata"]["uid"]
    h.kube.force_delete(key("web"))
    h.kube.take_watch()  # the DELETED event is lost (a watch gap)

    await h.resync(relist=False)  # the provider's side alone cannot tell
    await h.settle()
    assert uid in h.provider.pods

    await h.resync(relist=True)
    assert h.kube.lists[-1]["accept"] == PARTIAL_METADATA_LIST  # after start-up: metadata only
    await h.settle()
    assert h.provider.deleted == [uid]
    assert h.provider.pods == {}
    assert len(h.controller.store) == 0


async def test_a_relist_finds_a_pod_changed_without_a_watch_event(make: Callable[..., Harness]) -> None:
    h = make()
    await h.start()
    uid = (await h.add("web"))["metadata"]["uid"]
    h.kube.update(key("web"), lambda p: p["spec"]["containers"][0].update(image="nginx:1.28"))
    h.kube.take_watch()  # the MODIFIED event is lost

    await h.resync(relist=False)
    await h.settle()
    assert h.provider.updated == []

    await h.resync(relist=True)
    await h.settle()
    assert h.provider.updated == [uid]
    assert h.provider.prepared[uid].pod["spec"]["containers"][0]["image"] == "nginx:1.28"


async def test_a_relist_finds_a_pod_recreated_without_watch_events(make: Callable[..., Harness]) -> None:
    h = make()
    await h.start()
    old = (await h.add("web"))["metadata"]["uid"]
    h.kube.force_delete(key("web"))
    new = h.kube.add(manifest("web"))["metadata"]["uid"]
    h.kube.take_watch()  # both events are lost

    await h.resync(relist=True)
    await h.settle()

    assert h.provider.deleted == [old]
    assert h.provider.created == [old, new]
    assert h.api("web")["metadata"]["uid"] == new
    assert h.status("web")["phase"] == "Running"
    assert [record.ref.uid for record in h.controller.store] == [new]


async def test_a_pod_that_arrives_while_a_relist_compares_is_not_taken_for_deleted(
    make: Callable[..., Harness],
) -> None:
    """A list is a snapshot: a pod created after it, whose ADDED event came (and which was created
    in the provider) while the relist was still comparing, is missing from the list but live.
    Dropping it from the store would make it an orphan, deleted from the provider as it runs."""
    h = make()
    await h.start()
    await h.add("old")
    served = h.kube.request
    arrived: list[str] = []

    async def request(method: str, path: str, **kwargs: Any) -> Any:
        answer = await served(method, path, **kwargs)
        if method == "GET" and path.endswith("/pods") and not arrived:  # the list is out
            arrived.append((await h.add("web"))["metadata"]["uid"])
        return answer

    h.kube.request = request  # type: ignore[method-assign]
    await h.resync(relist=True)
    await h.settle()

    [uid] = arrived
    assert h.provider.deleted == []
    assert uid in h.provider.pods and h.provider.created.count(uid) == 1
    assert h.status("web")["phase"] == "Running"
    record = h.controller.store.api_record(key("web"))
    assert record is not None and record.ref.uid == uid


@pytest.mark.parametrize("count", [3, 150])
async def test_a_relist_finds_pods_added_without_watch_events(
    make: Callable[..., Harness], count: int
) -> None:
    """A few stale pods are read one by one; past FULL_LIST_ABOVE one full list is cheaper."""
    h = make()
    await h.start()
    names = [f"p{i:03}" for i in range(count)]
    for name in names:
        h.kube.add(manifest(name))
    h.kube.take_watch()  # the ADDED events are lost
    lists, gets = len(h.kube.lists), len([r for r in h.kube.requests if r[0] == "GET" and "/pods/" in r[1]])

    await h.resync(relist=True)
    await h.settle()

    assert h.provider.calls["create_pod"] == count
    assert {h.status(n)["phase"] for n in names} == {"Running"}
    accepts = [page["accept"] for page in h.kube.lists[lists:]]
    pod_gets = len([r for r in h.kube.requests if r[0] == "GET" and "/pods/" in r[1]]) - gets
    pages = -(-count // h.kube.max_page)
    if count <= FULL_LIST_ABOVE:
        assert (accepts, pod_gets) == ([PARTIAL_METADATA_LIST] * pages, count)
    else:
        assert (accepts, pod_gets) == ([PARTIAL_METADATA_LIST] * pages + ["application/json"] * pages, 0)


# -- lost pods -------------------------------------------------------------------------------------------
async def test_a_running_pod_the_provider_lost_fails(make: Callable[..., Harness]) -> None:
    h = make()
    await h.start()
    uid = (await h.add("web"))["metadata"]["uid"]
    h.provider.lose(uid)

    await h.resync(relist=False)
    await h.settle()

    status = h.status("web")
    assert (status["phase"], status["reason"]) == ("Failed", "ProviderLost")
    [container] = status["containerStatuses"]
    assert container["state"]["terminated"]["exitCode"] == 137
    assert h.provider.calls["create_pod"] == 1  # a lost pod is not started again


# -- workers ---------------------------------------------------------------------------------------------
async def test_status_is_written_while_every_other_worker_waits_on_a_create(
    make: Callable[..., Harness],
) -> None:
    """A cloud's write rate can hold creates for minutes in a burst: the pods already running keep
    having their status written, by workers that creates may not take."""
    h = make(workers=4, timeouts=CallTimeouts(create=600.0))
    await h.start()
    uid = (await h.add("web"))["metadata"]["uid"]
    workers = [asyncio.create_task(h.controller._worker()) for _ in range(4)]
    try:
        h.provider.hang.add("create_pod")
        for i in range(8):
            h.kube.add(manifest(f"burst-{i}"))
        h.deliver()

        async def creates_held() -> bool:
            return h.provider.calls["create_pod"] >= 1 + 3  # web's, then three held (of four workers)

        await eventually(creates_held, interval=0.01, what="three creates held")
        done = ContainerStatus("app", "nginx:1.27", ContainerPhase.TERMINATED, exit_code=0)
        h.provider.set_status(uid, ProviderPodStatus(PodPhase.SUCCEEDED, (done,)))
        h.queue.add(key("web"))  # as a status poll or the provider's notification does

        async def web_written() -> bool:
            return bool(h.status("web")["phase"] == "Succeeded")

        await eventually(web_written, interval=0.01, what="web's status written")
        assert h.provider.calls["create_pod"] == 1 + 3  # no fourth create took the last worker
    finally:
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)


# -- activeDeadlineSeconds -------------------------------------------------------------------------------
DEADLINE = ("DeadlineExceeded", "Normal", "Pod was active on the node longer than the specified deadline")


def with_deadline(name: str, seconds: int, **kwargs: Any) -> dict[str, Any]:
    pod = manifest(name, **kwargs)
    pod["spec"]["activeDeadlineSeconds"] = seconds
    return pod


async def running_job(h: Harness, deadline: int = 30) -> str:
    """Pod ``job``, with a deadline, started at T0; its UID."""
    await h.start()
    uid: str = h.kube.add(with_deadline("job", deadline))["metadata"]["uid"]
    await h.settle()
    return uid


async def test_a_pod_past_its_active_deadline_is_stopped_and_failed_as_by_the_kubelet(
    make: Callable[..., Harness],
) -> None:
    h = make()
    uid = await running_job(h)
    assert h.status("job")["phase"] == "Running"
    assert h.status("job")["startTime"] == "2026-01-01T00:00:00Z"
    wake = h.queue.wake_pending(key("job"))
    assert wake is not None and 29 < wake <= 30  # woken when the deadline runs out...
    assert not h.queue.scheduled(key("job"))  # ... which is no retry: resyncs still reach the pod

    h.clock.advance(29)
    await h.reconcile("job")  # a resync before the deadline leaves it running
    assert h.status("job")["phase"] == "Running" and h.provider.deleted == []

    h.clock.advance(1)
    await h.reconcile("job")  # the wake-up
    assert h.provider.deleted == [uid] and uid not in h.provider.pods
    status = h.status("job")
    assert (status["phase"], status["reason"], status["message"]) == ("Failed", *DEADLINE[::2])
    [container] = status["containerStatuses"]
    terminated = container["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (137, "DeadlineExceeded")
    assert DEADLINE in h.events("job")

    await h.resync(relist=True)
    await h.settle()
    assert h.provider.calls["create_pod"] == 1  # a Failed pod is never started again
    assert h.reasons("job").count("DeadlineExceeded") == 1


async def test_a_pod_that_ran_past_its_deadline_while_we_were_down_is_ended_at_adoption(
    make: Callable[..., Harness],
) -> None:
    h = make()
    pod = with_deadline("job", 60, uid="uid-job")
    reported = h.provider.run(pod)  # started at T0 by our previous incarnation
    pod["status"] = pod_status(pod, reported, HOST_IP, h.clock.utcnow())
    h.kube.add(pod)
    h.clock.advance(3600)

    await h.start()

    assert h.provider.deleted == ["uid-job"]
    assert h.status("job")["reason"] == "DeadlineExceeded"
    assert h.provider.calls["create_pod"] == 0


async def test_a_pod_that_ends_before_its_deadline_is_left_as_it_ended(make: Callable[..., Harness]) -> None:
    h = make()
    uid = await running_job(h)
    done = ContainerStatus("app", "nginx:1.27", ContainerPhase.TERMINATED, exit_code=0, started_at=None)
    h.provider.set_status(uid, ProviderPodStatus(PodPhase.SUCCEEDED, (done,), start_time=None))
    h.clock.advance(10)
    await h.reconcile("job")
    assert h.status("job")["phase"] == "Succeeded"

    h.clock.advance(60)
    await h.reconcile("job")
    assert h.status("job")["phase"] == "Succeeded" and "reason" not in h.status("job")
    assert "DeadlineExceeded" not in h.reasons("job")
    assert h.provider.deleted == []


async def test_a_failed_stop_at_the_deadline_is_retried_before_the_pod_is_failed(
    make: Callable[..., Harness],
) -> None:
    h = make()
    uid = await running_job(h)
    h.provider.errors["delete_pod"] = TransientError("backend busy")
    h.clock.advance(30)
    await h.reconcile("job")

    assert h.status("job")["phase"] == "Running"  # not Failed while it still runs in the provider
    assert ("ProviderDeleteFailed", "Warning", "backend busy") in h.events("job")
    assert h.queue.retry_pending(key("job"))

    del h.provider.errors["delete_pod"]
    await h.reconcile("job")  # the retry
    assert uid not in h.provider.pods
    assert h.status("job")["reason"] == "DeadlineExceeded"


async def test_a_pod_without_a_deadline_is_never_woken(make: Callable[..., Harness]) -> None:
    h = make()
    await h.start()
    await h.add("web")
    assert h.queue.wake_pending(key("web")) is None
    h.clock.advance(10**6)
    await h.reconcile("web")
    assert h.status("web")["phase"] == "Running"


# -- bulk status -----------------------------------------------------------------------------------------
async def test_bulk_status_one_call_reports_on_every_pod(make: Callable[..., Harness]) -> None:
    h = make(bulk=True)
    bulk = h.controller.bulk
    assert bulk is not None
    await h.start()
    names = [f"p{i:02}" for i in range(50)]
    for name in names:
        h.kube.add(manifest(name))
    await h.settle()
    assert h.provider.calls["create_pod"] == 50
    assert {h.status(n)["phase"] for n in names} == {"Pending"}  # accepted; the poll says more

    h.clock.advance(1)
    await bulk.poll_once()
    assert h.provider.calls["get_pod_statuses"] == 1
    assert h.queue.depth == 50
    await h.settle()
    assert {h.status(n)["phase"] for n in names} == {"Running"}
    assert h.status("p07")["podIP"].startswith("10.1.0.")

    await h.resync(relist=True)  # paged (the fake returns 20 a page): nothing to do
    assert h.queue.depth == 0
    await bulk.poll_once()  # nothing changed: nothing to reconcile
    assert h.queue.depth == 0

    uid = h.api("p07")["metadata"]["uid"]
    running = h.provider.status_of(uid)
    done = ContainerStatus("app", "nginx:1.27", ContainerPhase.TERMINATED, reason="Completed", exit_code=0)
    h.provider.set_status(uid, ProviderPodStatus(PodPhase.SUCCEEDED, (done,), pod_ip=running.pod_ip))
    await bulk.poll_once()
    assert h.queue.depth == 1
    await h.settle()
    assert h.status("p07")["phase"] == "Succeeded"

    assert h.provider.calls["get_pod_statuses"] == 3
    assert h.provider.calls["get_pod_status"] == 0


async def test_bulk_status_polls_fast_while_pods_are_in_transition(make: Callable[..., Harness]) -> None:
    h = make(bulk=True, status_poll_fast=2.0, status_poll_slow=30.0, status_poll_budget=60.0)
    bulk = h.controller.bulk
    assert bulk is not None
    await h.start()
    assert bulk.interval() == 30.0  # nothing to watch

    await h.add("web")
    assert h.status("web")["phase"] == "Pending"
    assert bulk.interval() == 2.0

    h.clock.advance(1)
    await bulk.poll_once()
    await h.settle()
    assert h.status("web")["phase"] == "Running"
    assert bulk.interval() == 30.0


@pytest.mark.parametrize(
    ("restart_policy", "interval"), [("Never", 2.0), ("OnFailure", 2.0), ("Always", 30.0)]
)
async def test_bulk_status_polls_fast_while_a_job_pod_runs(
    make: Callable[..., Harness], restart_policy: str, interval: float
) -> None:
    """ACI's bench: a Job's end waited up to the slow interval (30 s) once every pod was Running."""
    h = make(bulk=True, status_poll_fast=2.0, status_poll_slow=30.0, status_poll_budget=60.0)
    bulk = h.controller.bulk
    assert bulk is not None
    await h.start()
    pod = manifest("job")
    pod["spec"]["restartPolicy"] = restart_policy
    h.kube.add(pod)
    await h.settle()
    h.clock.advance(1)
    await bulk.poll_once()
    await h.settle()
    assert h.status("job")["phase"] == "Running"
    assert bulk.interval() == interval


@pytest.mark.parametrize("phase", ["Pending", "Running"])
async def test_bulk_status_never_polls_beyond_its_budget(make: Callable[..., Harness], phase: str) -> None:
    h = make(bulk=True, status_poll_fast=0.1, status_poll_slow=0.5, status_poll_budget=30.0)
    bulk = h.controller.bulk
    assert bulk is not None
    await h.start()
    await h.add("web")
    if phase == "Running":
        h.clock.advance(1)
        await bulk.poll_once()
        await h.settle()
    assert h.status("web")["phase"] == phase
    assert bulk.interval() == 2.0  # 60 s / 30 calls


@pytest.mark.parametrize(
    ("completed", "phase"),
    [
        pytest.param(False, "Failed", id="lost-while-running"),
        pytest.param(True, "Succeeded", id="gone-after-completing"),
    ],
)
async def test_bulk_status_a_pod_gone_from_the_provider_is_steady_once_reported(
    make: Callable[..., Harness], completed: bool, phase: str
) -> None:
    """A pod whose backend object is gone and whose final status is written can change no more:
    it must not hold the poll at the fast pace for as long as its API object exists."""
    h = make(bulk=True, status_poll_fast=2.0, status_poll_slow=30.0, status_poll_budget=60.0)
    bulk = h.controller.bulk
    assert bulk is not None
    await h.start()
    uid = (await h.add("job"))["metadata"]["uid"]
    h.clock.advance(1)
    await bulk.poll_once()
    await h.settle()
    if completed:
        done = ContainerStatus(
            "app", "nginx:1.27", ContainerPhase.TERMINATED, reason="Completed", exit_code=0
        )
        h.provider.set_status(uid, ProviderPodStatus(PodPhase.SUCCEEDED, (done,)))
        await bulk.poll_once()
        await h.settle()
        assert h.status("job")["phase"] == "Succeeded"
    h.provider.lose(uid)  # the backend dropped it (host failure; or cleaned up after completion)
    await bulk.poll_once()
    await h.settle()
    assert h.status("job")["phase"] == phase
    polls = h.provider.calls["get_pod_statuses"]
    await bulk.poll_once()  # nothing new: nothing to reconcile
    assert h.queue.depth == 0 and h.provider.calls["get_pod_statuses"] == polls + 1

    assert bulk.interval() == 30.0


# -- missing references wait; tokens; the permissions race right after binding --------------------------
CONFIGMAP = f"/api/v1/namespaces/{NS}/configmaps/later"
SECRET = f"/api/v1/namespaces/{NS}/secrets/creds"
TOKEN_VOLUME = {
    "name": "kube-api-access",
    "projected": {"sources": [{"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}}]},
}


def referencing(name: str, *, configmap: bool = True, token: bool = False, **kwargs: Any) -> dict[str, Any]:
    """A pod whose env needs ConfigMap `later` (and whose volumes a token, with ``token``)."""
    pod = manifest(name, **kwargs)
    if configmap:
        pod["spec"]["containers"][0]["env"] = [
            {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "later", "key": "x"}}}
        ]
    if token:
        pod["spec"]["volumes"] = [TOKEN_VOLUME]
    return pod


def uncached(h: Harness) -> None:
    """Reads are cached for 2 s of real time; these tests move the fake clock instead."""
    h.controller.reconciler.sources.ttl = 0


async def retry(h: Harness, name: str) -> None:
    """The pod's retry timer fires (its delay passed: the fake clock has moved on)."""
    h.queue.forget(key(name))
    await h.reconcile(name)


def timer_delay(h: Harness, name: str) -> float:
    timer = h.queue._timers[key(name)]
    return timer.when() - asyncio.get_running_loop().time()


async def test_a_missing_configmap_never_fails_the_pod_however_long_it_takes(
    make: Callable[..., Harness],
) -> None:
    h = make()
    await h.start()
    uncached(h)
    h.kube.add(referencing("web"))
    await h.settle()
    for _ in range(5):  # far past the deadline, retried all along
        h.clock.advance(BACKOFF.deadline)
        await retry(h, "web")

    status = h.status("web")
    assert (status["phase"], status["reason"]) == ("Pending", "MandatoryConfigMapNotFound")
    assert "gave up" not in status["message"]
    assert status["containerStatuses"][0]["state"]["waiting"]["reason"] == "CreateContainerConfigError"
    assert h.queue.retry_pending(key("web"))
    assert h.reasons("web").count("MandatoryConfigMapNotFound") == 6
    assert h.provider.calls["create_pod"] == 0

    h.kube.objects[CONFIGMAP] = {"data": {"x": "1"}}  # applied a little (or a lot) later
    await retry(h, "web")
    status = h.status("web")
    assert status["phase"] == "Running" and "reason" not in status
    assert not h.queue.retry_pending(key("web"))


async def test_provider_failures_keep_the_deadline_counted_from_the_first_of_them(
    make: Callable[..., Harness],
) -> None:
    h = make()
    await h.start()
    uncached(h)
    h.kube.add(referencing("web"))
    await h.settle()
    h.clock.advance(2 * BACKOFF.deadline)  # waited long for its ConfigMap: that does not count
    await retry(h, "web")
    h.kube.objects[CONFIGMAP] = {"data": {"x": "1"}}
    h.provider.errors["create_pod"] = TransientError("backend busy")

    await retry(h, "web")  # the first provider failure
    assert (h.status("web")["phase"], h.status("web")["reason"]) == ("Pending", "ProviderFailed")
    h.clock.advance(BACKOFF.deadline - 1)
    await retry(h, "web")
    assert h.status("web")["phase"] == "Pending"
    h.clock.advance(2)
    await retry(h, "web")

    status = h.status("web")
    assert (status["phase"], status["reason"]) == ("Failed", "ProviderFailed")
    assert status["message"].startswith("gave up after")
    assert not h.queue.retry_pending(key("web"))


async def test_a_reference_missing_between_provider_failures_restarts_their_deadline(
    make: Callable[..., Harness],
) -> None:
    h = make()
    await h.start()
    uncached(h)
    h.kube.objects[CONFIGMAP] = {"data": {"x": "1"}}
    h.provider.errors["create_pod"] = TransientError("backend busy")
    h.kube.add(referencing("web"))
    await h.settle()  # a provider failure
    h.clock.advance(BACKOFF.deadline - 1)
    del h.kube.objects[CONFIGMAP]
    await retry(h, "web")  # waiting for the ConfigMap again
    h.kube.objects[CONFIGMAP] = {"data": {"x": "1"}}
    h.clock.advance(2)
    await retry(h, "web")  # a provider failure again: a new run of them, not past the deadline
    assert (h.status("web")["phase"], h.status("web")["reason"]) == ("Pending", "ProviderFailed")


async def test_retrying_forever_keeps_the_backoff_at_its_cap(make: Callable[..., Harness]) -> None:
    h = make()
    await h.start()
    h.kube.add(referencing("web"))
    await h.settle()
    record = h.controller.store.api_record(key("web"))
    assert record is not None
    record.attempts = 5000  # 2.0 ** 4999 would overflow
    await retry(h, "web")
    assert BACKOFF.cap - 1 < timer_delay(h, "web") <= BACKOFF.cap


async def test_a_waiting_pod_gets_its_token_only_once_it_can_start_and_only_once(
    make: Callable[..., Harness],
) -> None:
    h = make()
    await h.start()
    uncached(h)
    h.kube.add(referencing("web", token=True))
    await h.settle()
    for _ in range(5):
        h.clock.advance(BACKOFF.cap)
        await retry(h, "web")
    assert h.reasons("web").count("MandatoryConfigMapNotFound") == 6
    assert h.kube.token_requests == []  # it cannot start anyway

    h.kube.objects[CONFIGMAP] = {"data": {"x": "1"}}
    await retry(h, "web")
    uid = h.api("web")["metadata"]["uid"]
    assert h.status("web")["phase"] == "Running"
    assert len(h.kube.token_requests) == 1
    [request] = h.kube.token_requests
    assert request["spec"]["boundObjectRef"]["uid"] == uid
    assert request["spec"]["expirationSeconds"] == 3607
    assert h.provider.prepared[uid].volumes["kube-api-access"].files["token"] == b"fake-token-1"

    h.kube.update(key("web"), lambda p: p["spec"]["containers"][0].update(image="nginx:1.28"))
    await h.settle()  # an update prepares the pod again: with the cached token
    assert h.provider.updated == [uid]
    assert h.provider.prepared[uid].volumes["kube-api-access"].files["token"] == b"fake-token-1"
    assert len(h.kube.token_requests) == 1

    sources = h.controller.reconciler.sources
    assert sources.token_holders(key("web")) == (uid,)
    h.kube.begin_delete(key("web"), grace=30, now=h.clock.utcnow())
    await h.settle()
    assert h.kube.pod(key("web")) is None
    assert sources.cached_tokens == 0 and sources.token_holders(key("web")) == ()


async def test_a_token_is_cached_for_80_percent_of_its_lifetime() -> None:
    clock = FakeClock()
    kube = FakeKube(NODE)
    fetcher = SourceFetcher(
        kube,  # type: ignore[arg-type]
        FakeProvider(NODE),
        HOST_IP,
        ProviderGuard(CallTimeouts()),
        monotonic=clock.monotonic,
    )
    pod = referencing("web", token=True, uid="uid-web")
    assert await fetcher.token(pod) == "fake-token-1"
    clock.advance(0.79 * 3607)
    assert await fetcher.token(pod) == "fake-token-1"
    assert len(kube.token_requests) == 1
    clock.advance(0.02 * 3607)
    assert await fetcher.token(pod) == "fake-token-2"  # refreshed, as the kubelet would
    assert await fetcher.token(pod) == "fake-token-2"

    other = referencing("web", token=True, uid="uid-web")
    other["spec"]["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]["audience"] = "vault"
    assert await fetcher.token(other) == "fake-token-3"  # another audience: another token
    assert kube.token_requests[-1]["spec"]["audiences"] == ["vault"]
    assert fetcher.cached_tokens == 2

    fetcher.forget("uid-web")
    assert fetcher.cached_tokens == 0
    assert await fetcher.token(pod) == "fake-token-4"

    kube.refuse_tokens = 1
    fetcher.forget("uid-web")
    assert await fetcher.token(pod) is None  # refused: not cached
    assert await fetcher.token(pod) == "fake-token-6"


@pytest.mark.parametrize("refused", ["secret-env", "configmap-volume", "token"])
async def test_refusals_right_after_binding_are_retried_quietly(
    make: Callable[..., Harness], refused: str
) -> None:
    h = make()
    await h.start()
    uncached(h)
    pod = referencing("web", configmap=False, token=refused == "token")
    if refused == "secret-env":
        h.kube.objects[SECRET] = {"data": {"password": base64.b64encode(b"s3cret").decode()}}
        h.kube.refuse[SECRET] = 2
        pod["spec"]["containers"][0]["env"] = [
            {"name": "P", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}}
        ]
    elif refused == "configmap-volume":
        h.kube.objects[CONFIGMAP] = {"data": {"x": "1"}}
        h.kube.refuse[CONFIGMAP] = 2
        pod["spec"]["volumes"] = [{"name": "cfg", "configMap": {"name": "later"}}]
    else:
        h.kube.refuse_tokens = 2
    h.kube.add(pod)
    await h.settle()

    assert h.events("web") == []  # not a word...
    assert h.kube.patches == []  # ... nor a status
    assert 0 < timer_delay(h, "web") <= QUIET_DELAYS[0]  # retried soon
    await retry(h, "web")
    assert h.events("web") == [] and h.kube.patches == []
    assert 0 < timer_delay(h, "web") <= QUIET_DELAYS[1]
    h.clock.advance(QUIET_DELAYS[0] + QUIET_DELAYS[1])
    await retry(h, "web")  # the refusals are over

    assert h.status("web")["phase"] == "Running"
    assert h.reasons("web") == ["ProviderCreateSuccess"]
    assert len(h.kube.token_requests) == (3 if refused == "token" else 0)


async def test_a_refusal_that_lasts_is_reported_after_the_quiet_retries(
    make: Callable[..., Harness],
) -> None:
    h = make()
    await h.start()
    uncached(h)
    h.kube.objects[SECRET] = {"data": {"password": base64.b64encode(b"s3cret").decode()}}
    h.kube.refuse[SECRET] = 1000  # RBAC really forbids it
    pod = referencing("web", configmap=False, token=True)
    pod["spec"]["containers"][0]["env"] = [
        {"name": "P", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}}
    ]
    h.kube.add(pod)
    await h.settle()
    for delay in QUIET_DELAYS[:-1]:
        h.clock.advance(delay)
        await retry(h, "web")
    assert h.events("web") == [] and h.kube.patches == []

    h.clock.advance(QUIET_DELAYS[-1])
    await retry(h, "web")  # the quiet retries are used up: reported
    status = h.status("web")
    assert (status["phase"], status["reason"]) == ("Pending", "FailedToReadMandatorySecret")
    assert "403" in status["message"]
    assert [(r, t) for r, t, _ in h.events("web")] == [("FailedToReadMandatorySecret", "Warning")]
    assert timer_delay(h, "web") > QUIET_DELAYS[-1]  # the normal backoff from now on
    assert h.kube.token_requests == []  # it cannot start anyway


async def test_a_refusal_long_after_the_pod_was_first_seen_is_reported_at_once(
    make: Callable[..., Harness],
) -> None:
    h = make()
    await h.start()
    uncached(h)
    h.kube.add(referencing("web"))  # it waits for its ConfigMap first
    await h.settle()
    h.clock.advance(QUIET_WINDOW + 1)
    h.kube.objects[CONFIGMAP] = {"data": {"x": "1"}}
    h.kube.refuse[CONFIGMAP] = 1
    await retry(h, "web")
    assert h.status("web")["reason"] == "FailedToReadMandatoryConfigMap"
    assert h.reasons("web") == ["MandatoryConfigMapNotFound", "FailedToReadMandatoryConfigMap"]


class _EventingProvider(FakeProvider):
    recorder: PodEventRecorder | None = None

    def emit_events(self, recorder: PodEventRecorder) -> None:
        self.recorder = recorder


async def test_a_providers_events_reach_its_pods_and_others_are_dropped(
    make: Callable[..., Harness],
) -> None:
    h = make(provider_class=_EventingProvider)
    provider = h.provider
    assert isinstance(provider, _EventingProvider) and isinstance(provider, EventEmitter)
    recorder = provider.recorder
    assert recorder is not None  # handed over when the controller was made, before start
    await h.start()
    pod = await h.add("web")
    ref = PodRef.of(pod)
    recorder.record(ref, "Pulling", "pulling image nginx")
    recorder.record(ref, "Pulling", "pulling image nginx")
    recorder.record(ref, "ProbeNotSupported", "no tcpSocket probes", warning=True)
    recorder.record(PodRef("default", "stranger", "no-such-uid"), "Pulling", "x")
    assert [e for e in h.events() if e[0] != "ProviderCreateSuccess"] == [
        ("Pulling", "Normal", "pulling image nginx"),
        ("Pulling", "Normal", "pulling image nginx"),
        ("ProbeNotSupported", "Warning", "no tcpSocket probes"),
    ]
