"""The provider contract test kit: what the core relies on, checked against a provider's backend.

A provider's test module subclasses :class:`ProviderContract` and supplies the one required hook::

    from vk_operator.provider.testing import ProviderContract

    class TestMyContract(ProviderContract):
        timeout = 300.0  # a real cloud takes its time

        async def make_provider(self, node_name: str) -> Provider:
            return MyProvider(MyConfig(...), node_name)

Every ``test_*`` method is inherited. The kit calls ``start()`` on Startable providers and ``close()``
on Closeable ones, makes instances for two node names (fresh per test) to check ownership and a
second instance for the same node to check that a restarted process finds its pods again, so
``make_provider`` must reach the same backend each time (``self.tmp_path`` is the test's
``tmp_path``, for a backend kept in files). Pods the kit created are deleted after each test.

Import this module from test code only: it imports pytest (the ``test`` extra).
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import pathlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ClassVar, TypeVar

import pytest
import pytest_asyncio

from vk_operator.provider import (
    BulkStatusProvider,
    Capacity,
    Closeable,
    InvalidPodError,
    LogEntry,
    LogOptions,
    LogsProvider,
    LogsUnavailable,
    NotFoundError,
    PermanentError,
    Pod,
    PodNotifier,
    PodPhase,
    PodRef,
    PreparedPod,
    Provider,
    ProviderPodStatus,
    Startable,
    ThrottledError,
    TransientError,
    parse_quantity,
)

__all__ = ["ProviderContract", "minimal_pod"]

log = logging.getLogger(__name__)
T = TypeVar("T")
_TERMINAL = (PodPhase.SUCCEEDED, PodPhase.FAILED)
_CONDITION_STATUSES = ("True", "False", "Unknown")


def minimal_pod(
    node_name: str,
    *,
    namespace: str = "default",
    name: str | None = None,
    image: str = "busybox:1.36",
    command: list[str] | None = None,
) -> PreparedPod:
    """A minimal valid pod as the core hands it over: one container ``main``, restartPolicy Always,
    a fresh UID, env already resolved (none), no volumes."""
    uid = str(uuid.uuid4())
    pod: Pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "namespace": namespace,
            "name": name or f"contract-{uid[:8]}",
            "uid": uid,
            "labels": {"app": "vk-contract"},
            "annotations": {},
        },
        "spec": {
            "nodeName": node_name,
            "restartPolicy": "Always",
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "command": command
                    if command is not None
                    else ["sh", "-c", "while true; do echo contract; sleep 1; done"],
                    "env": [],
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                }
            ],
        },
    }
    return PreparedPod(pod, volumes={}, secret_env=frozenset())


def _describe(status: ProviderPodStatus | None) -> str:
    if status is None:
        return "None (the provider does not have the pod)"
    detail = f" ({status.reason}: {status.message})" if status.reason or status.message else ""
    containers = ", ".join(
        f"{c.name}={c.phase.value}{f'/{c.reason}' if c.reason else ''}" for c in status.containers
    )
    return f"{status.phase.value}{detail} [{containers}]"


class ProviderContract:
    """Inherit from this in a ``Test*`` class and implement :meth:`make_provider`.

    Hooks (override as needed): :meth:`make_provider` (required), :meth:`pod`, :meth:`updated_pod`,
    :meth:`invalid_pod`. Class attributes: the wait ``timeout`` and ``poll_interval``, the
    ``call_timeout`` of each provider call, and ``check_*`` flags to skip optional parts (a skip
    names its reason; it is not a pass).
    """

    pytestmark = [pytest.mark.asyncio]  # for projects in pytest-asyncio's strict mode too

    timeout: ClassVar[float] = 60.0  # seconds to wait for an eventual state (Running, gone...)
    poll_interval: ClassVar[float] = 0.25  # seconds between polls while waiting
    call_timeout: ClassVar[float] = 120.0  # seconds one provider call may take (the core's create limit)
    node_name_prefix: ClassVar[str] = "vk-contract"  # node names are PREFIX-<8 hex>, fresh per test
    namespace: ClassVar[str] = "default"
    image: ClassVar[str] = "busybox:1.36"
    updated_image: ClassVar[str] = "busybox:1.37"
    logs_container: ClassVar[str] = "main"
    check_logs: ClassVar[bool] = True  # False: skip the logs test even for a LogsProvider
    check_update: ClassVar[bool] = True
    check_restart: ClassVar[bool] = True  # False only when make_provider cannot reach the same backend

    # Set before each test.
    tmp_path: pathlib.Path
    node_name: str
    other_node_name: str
    notifications: list[PodRef]  # what PodNotifier providers reported, in order

    # -- hooks -------------------------------------------------------------------------------------
    async def make_provider(self, node_name: str) -> Provider:
        """A new provider instance for ``node_name`` on the backend under test (not started: the
        kit calls ``start()`` when it is Startable). Called several times per test; every instance
        must reach the same backend, as a restarted virtual kubelet would."""
        raise NotImplementedError(f"{type(self).__name__} must implement make_provider(node_name)")

    def pod(self, node_name: str) -> PreparedPod:
        """A new pod (fresh UID) the backend can run, for ``node_name``; its container
        :attr:`logs_container` writes to stdout. Default: :func:`minimal_pod` with :attr:`image`."""
        return minimal_pod(node_name, namespace=self.namespace, image=self.image)

    def updated_pod(self, prepared: PreparedPod) -> PreparedPod:
        """``prepared`` with a spec change the core passes to update_pod (default: the image)."""
        pod = copy.deepcopy(prepared.pod)
        pod["spec"]["containers"][0]["image"] = self.updated_image
        return dataclasses.replace(prepared, pod=pod)

    def invalid_pod(self, node_name: str) -> PreparedPod | None:
        """A pod the backend must refuse (InvalidPodError or PermanentError); None: not checked."""
        return None

    # -- set-up and clean-up -------------------------------------------------------------------------
    @pytest_asyncio.fixture(autouse=True)
    async def _contract_session(self, tmp_path: pathlib.Path) -> AsyncIterator[None]:
        self.tmp_path = tmp_path
        self.node_name = f"{self.node_name_prefix}-{uuid.uuid4().hex[:8]}"
        self.other_node_name = f"{self.node_name_prefix}-{uuid.uuid4().hex[:8]}"
        self.notifications = []
        self._open: list[tuple[str, Provider]] = []
        self._created: dict[str, PodRef] = {}  # uid -> ref, for clean-up
        self._created_on: dict[str, str] = {}  # uid -> node name
        yield
        await self._clean_up()

    async def _clean_up(self) -> None:
        """Delete what the test created (best effort: a real backend must not keep them), close all."""
        for uid, ref in self._created.items():
            node = self._created_on[uid]
            try:
                provider = next((p for n, p in self._open if n == node), None) or await self.open_provider(
                    node
                )
                async with asyncio.timeout(self.call_timeout):
                    await provider.delete_pod(ref)
            except NotFoundError:
                pass
            except Exception as exc:
                log.warning("contract clean-up: cannot delete %s on %s: %r", ref, node, exc)
        for _node, provider in reversed(self._open):
            await self._close(provider)
        self._open.clear()

    async def _close(self, provider: Provider) -> None:
        if isinstance(provider, Closeable):
            try:
                async with asyncio.timeout(self.call_timeout):
                    await provider.close()
            except Exception as exc:
                log.warning("contract clean-up: close() raised %r", exc)

    # -- helpers for the tests (and for subclasses' own tests) ------------------------------------------
    async def open_provider(self, node_name: str) -> Provider:
        """``make_provider(node_name)``, started; closed after the test."""
        provider = await self.make_provider(node_name)
        assert isinstance(provider, Provider), (
            f"make_provider returned {type(provider).__name__}, which lacks methods of the Provider protocol"
        )
        if isinstance(provider, Startable):
            await self.call("start", provider.start())
        if isinstance(provider, PodNotifier):
            provider.notify_pods(self.notifications.append)
        self._open.append((node_name, provider))
        return provider

    async def close_provider(self, provider: Provider) -> None:
        """Close ``provider`` now (a virtual kubelet that stops) instead of after the test."""
        self._open = [(n, p) for n, p in self._open if p is not provider]
        await self._close(provider)

    async def call(self, method: str, awaitable: Awaitable[T]) -> T:
        """Await one provider call, bounded by :attr:`call_timeout` as the core bounds it."""
        try:
            async with asyncio.timeout(self.call_timeout):
                return await awaitable
        except TimeoutError:
            pytest.fail(
                f"{method} did not return within {self.call_timeout:g}s "
                "(the core cuts its calls at --provider-timeout-*, and retries)"
            )

    async def create(self, provider: Provider, prepared: PreparedPod, node_name: str) -> PodRef:
        """create_pod, remembering the pod for clean-up."""
        ref = prepared.ref
        self._created[ref.uid] = ref
        self._created_on[ref.uid] = node_name
        await self.call("create_pod", provider.create_pod(prepared))
        return ref

    async def eventually(self, probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], what: str) -> T:
        """Poll ``probe`` until ``done`` holds, at most :attr:`timeout` seconds; transient provider
        errors are retried (throttling honoured) as the core retries them."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        last: Any = "(never answered)"
        while True:
            pause = self.poll_interval
            try:
                value = await self.call(what, probe())
                if done(value):
                    return value
                last = value
            except ThrottledError as exc:
                last, pause = exc, max(pause, min(exc.retry_after or 1.0, 10.0))
            except TransientError as exc:
                last = exc
            if loop.time() + pause > deadline:
                shown = _describe(last) if isinstance(last, ProviderPodStatus) or last is None else repr(last)
                pytest.fail(f"{what}: not within {self.timeout:g}s; last answer: {shown}")
            await asyncio.sleep(pause)

    async def wait_running(self, provider: Provider, ref: PodRef) -> ProviderPodStatus:
        """Poll get_pod_status until Running; fail at once on a terminal phase."""

        def running(status: ProviderPodStatus | None) -> bool:
            if status is not None and status.phase in _TERMINAL:
                pytest.fail(f"pod {ref.name} ended instead of running: {_describe(status)}")
            return status is not None and status.phase is PodPhase.RUNNING

        status = await self.eventually(
            lambda: provider.get_pod_status(ref), running, f"get_pod_status({ref.name}) to report Running"
        )
        assert status is not None
        return status

    async def wait_listed(self, provider: Provider, refs: set[PodRef], what: str) -> list[PodRef]:
        names = ", ".join(sorted(ref.name for ref in refs))
        return await self.eventually(
            provider.list_pods, lambda listed: refs <= set(listed), f"{what} ({names})"
        )

    async def wait_gone(self, provider: Provider, ref: PodRef) -> None:
        await self.eventually(
            lambda: provider.get_pod_status(ref),
            lambda status: status is None,
            f"get_pod_status({ref.name}) to be None after delete_pod",
        )
        await self.eventually(
            provider.list_pods,
            lambda listed: ref not in listed,
            f"{ref.name} to leave list_pods after delete_pod",
        )

    # -- the contract ---------------------------------------------------------------------------------
    async def test_create_reaches_running_and_is_listed(self) -> None:
        provider = await self.open_provider(self.node_name)
        prepared = self.pod(self.node_name)
        ref = await self.create(provider, prepared, self.node_name)
        status = await self.wait_running(provider, ref)
        assert isinstance(status, ProviderPodStatus), f"get_pod_status returned {type(status).__name__}"
        spec_names = {c["name"] for c in prepared.pod["spec"]["containers"]}
        reported = {c.name for c in status.containers}
        assert reported <= spec_names, (
            f"status names containers the pod does not have: {reported - spec_names}"
        )
        listed = await self.wait_listed(provider, {ref}, f"list_pods to contain {ref}")
        assert listed.count(ref) == 1, f"list_pods lists {ref.name} {listed.count(ref)} times"

    async def test_notifier_reports_status_changes(self) -> None:
        provider = await self.open_provider(self.node_name)
        if not isinstance(provider, PodNotifier):
            pytest.skip("not a PodNotifier: the core polls its status")
        ref = await self.create(provider, self.pod(self.node_name), self.node_name)
        first = await self.call("get_pod_status", provider.get_pod_status(ref))
        if first is not None and first.phase is PodPhase.RUNNING:
            pytest.skip("the pod was Running when create_pod returned: no later change to notify")
        await self.wait_running(provider, ref)

        async def seen() -> list[PodRef]:
            return list(self.notifications)

        await self.eventually(
            seen,
            lambda seen: ref in seen,
            f"the PodNotifier callback to report {ref.name} after it changed to Running",
        )

    async def test_logs_have_an_entry(self) -> None:
        provider = await self.open_provider(self.node_name)
        if not isinstance(provider, LogsProvider):
            pytest.skip("not a LogsProvider: kubectl logs answers 501")
        if not self.check_logs:
            pytest.skip(f"{type(self).__name__}.check_logs is False")
        ref = await self.create(provider, self.pod(self.node_name), self.node_name)
        await self.wait_running(provider, ref)

        async def read() -> list[LogEntry] | Exception:
            try:
                return [
                    entry async for entry in provider.container_logs(ref, self.logs_container, LogOptions())
                ]
            except (LogsUnavailable, KeyError) as exc:  # not written yet / not known yet: wait
                return exc

        entries = await self.eventually(
            read,
            lambda got: isinstance(got, list) and len(got) > 0,
            f"container_logs({ref.name}, {self.logs_container!r}) to yield an entry",
        )
        assert isinstance(entries, list)
        bad = [e for e in entries if not isinstance(e, LogEntry) or not isinstance(e.text, str)]
        assert not bad, f"container_logs yielded what is not a LogEntry with text: {bad[:3]}"
        assert all("\n" not in e.text.rstrip("\n") for e in entries), "a LogEntry holds one line"

    async def test_update_image_is_accepted_or_permanent(self) -> None:
        if not self.check_update:
            pytest.skip(f"{type(self).__name__}.check_update is False")
        provider = await self.open_provider(self.node_name)
        prepared = self.pod(self.node_name)
        ref = await self.create(provider, prepared, self.node_name)
        await self.wait_running(provider, ref)
        try:
            await self.call("update_pod", provider.update_pod(self.updated_pod(prepared)))
        except PermanentError:
            pass  # cannot change in place: the core posts a Warning Event, the pod keeps running
        except Exception as exc:
            pytest.fail(f"update_pod of an image change must succeed or raise PermanentError, not {exc!r}")
        status = await self.call("get_pod_status", provider.get_pod_status(ref))
        assert status is not None, "the pod vanished after update_pod"

    async def test_delete_removes_the_pod(self) -> None:
        provider = await self.open_provider(self.node_name)
        ref = await self.create(provider, self.pod(self.node_name), self.node_name)
        await self.wait_running(provider, ref)
        await self.call("delete_pod", provider.delete_pod(ref))
        await self.wait_gone(provider, ref)

    async def test_create_is_idempotent(self) -> None:
        provider = await self.open_provider(self.node_name)
        prepared = self.pod(self.node_name)
        ref = await self.create(provider, prepared, self.node_name)
        try:
            await self.call("create_pod", provider.create_pod(prepared))
        except Exception as exc:
            pytest.fail(f"a second create_pod of the same UID must succeed (the core may retry), got {exc!r}")
        listed = await self.wait_listed(provider, {ref}, f"list_pods to contain {ref}")
        same = [r for r in listed if r.uid == ref.uid]
        assert len(same) == 1, f"two create_pod calls of one UID left {len(same)} pods: {same}"

    async def test_delete_of_unknown_pod_succeeds(self) -> None:
        provider = await self.open_provider(self.node_name)
        unknown = PodRef(self.namespace, f"contract-unknown-{uuid.uuid4().hex[:8]}", str(uuid.uuid4()))
        try:
            await self.call("delete_pod", provider.delete_pod(unknown))
        except NotFoundError:
            pass
        except Exception as exc:
            pytest.fail(
                f"delete_pod of a pod the backend does not have must return or raise NotFoundError: {exc!r}"
            )

    async def test_status_of_unknown_pod_is_none(self) -> None:
        provider = await self.open_provider(self.node_name)
        unknown = PodRef(self.namespace, f"contract-unknown-{uuid.uuid4().hex[:8]}", str(uuid.uuid4()))
        status = await self.call("get_pod_status", provider.get_pod_status(unknown))
        assert status is None, f"get_pod_status of an unknown pod must be None, got {_describe(status)}"

    async def test_new_node_lists_no_pods(self) -> None:
        provider = await self.open_provider(self.node_name)
        listed = await self.call("list_pods", provider.list_pods())
        assert listed == [], f"a node no pod was ever created for lists {listed}"

    async def test_restarted_instance_finds_its_pods(self) -> None:
        if not self.check_restart:
            pytest.skip(f"{type(self).__name__}.check_restart is False")
        first = await self.open_provider(self.node_name)
        mine = {await self.create(first, self.pod(self.node_name), self.node_name) for _ in range(2)}
        await self.wait_listed(first, mine, "list_pods to contain both pods")
        await self.close_provider(first)  # the virtual kubelet stops ...
        restarted = await self.open_provider(self.node_name)  # ... and starts again
        listed = await self.wait_listed(restarted, mine, "a new instance for the same node to list its pods")
        assert set(listed) == mine, (
            f"a new instance for node {self.node_name} must list exactly its pods; "
            f"extra: {set(listed) - mine}, missing: {mine - set(listed)}"
        )
        for ref in mine:
            status = await self.call("get_pod_status", restarted.get_pod_status(ref))
            assert status is not None, f"the restarted instance does not know {ref.name} (adoption needs it)"

    async def test_instances_list_only_their_node_pods(self) -> None:
        mine_provider = await self.open_provider(self.node_name)
        other_provider = await self.open_provider(self.other_node_name)
        mine = {await self.create(mine_provider, self.pod(self.node_name), self.node_name) for _ in range(2)}
        theirs = {await self.create(other_provider, self.pod(self.other_node_name), self.other_node_name)}
        if self.check_restart:  # what a virtual kubelet started later sees: the backend's tags, not memory
            await self.close_provider(mine_provider)
            await self.close_provider(other_provider)
            mine_provider = await self.open_provider(self.node_name)
            other_provider = await self.open_provider(self.other_node_name)
        for provider, node, own, foreign in (
            (mine_provider, self.node_name, mine, theirs),
            (other_provider, self.other_node_name, theirs, mine),
        ):
            listed = set(await self.wait_listed(provider, own, f"node {node}'s instance to list its pods"))
            assert not listed & foreign, (
                f"an instance for node {node} lists another node's pods: {listed & foreign} "
                "(list_pods must filter by the node's ownership tag: the core deletes what it lists "
                "but has no API object for)"
            )
            assert listed == own, f"node {node} lists pods the kit did not create for it: {listed - own}"

    async def test_bulk_status_agrees_with_get_pod_status(self) -> None:
        provider = await self.open_provider(self.node_name)
        if not isinstance(provider, BulkStatusProvider):
            pytest.skip("not a BulkStatusProvider: the core polls get_pod_status per pod")
        refs = [await self.create(provider, self.pod(self.node_name), self.node_name) for _ in range(2)]
        for ref in refs:
            await self.wait_running(provider, ref)
        uids = {ref.uid for ref in refs}
        statuses = await self.eventually(
            provider.get_pod_statuses,
            lambda got: uids <= set(got),
            "get_pod_statuses to contain both pods by UID",
        )
        assert set(statuses) == uids, (
            f"get_pod_statuses has keys that are not this node's pod UIDs: {set(statuses) - uids}"
        )
        for ref in refs:
            single = await self.call("get_pod_status", provider.get_pod_status(ref))
            bulk = statuses[ref.uid]
            assert isinstance(bulk, ProviderPodStatus), (
                f"get_pod_statuses[{ref.uid}] is {type(bulk).__name__}"
            )
            assert single is not None and bulk.phase is single.phase, (
                f"{ref.name}: get_pod_statuses says {_describe(bulk)}, "
                f"get_pod_status says {_describe(single)}"
            )
        other = await self.open_provider(self.other_node_name)
        assert isinstance(other, BulkStatusProvider)
        foreign = uids & set(await self.call("get_pod_statuses", other.get_pod_statuses()))
        assert not foreign, (
            f"get_pod_statuses of node {self.other_node_name} has pods of {self.node_name}: {foreign}"
        )

    async def test_invalid_pod_is_refused(self) -> None:
        prepared = self.invalid_pod(self.node_name)
        if prepared is None:
            pytest.skip(f"{type(self).__name__}.invalid_pod() returns None: no pod its backend must refuse")
        provider = await self.open_provider(self.node_name)
        try:
            await self.create(provider, prepared, self.node_name)
        except (InvalidPodError, PermanentError) as exc:
            assert str(exc), "the error must say what is wrong (it becomes the pod's status message)"
            if isinstance(exc, InvalidPodError):
                assert exc.field, "InvalidPodError must name the pod field"
            return
        except Exception as exc:
            pytest.fail(
                f"create_pod of invalid_pod() must raise InvalidPodError or PermanentError, not {exc!r}"
            )
        pytest.fail("create_pod accepted invalid_pod(): it must raise InvalidPodError or PermanentError")

    async def test_capacity_is_parseable(self) -> None:
        provider = await self.open_provider(self.node_name)
        capacity = await self.call("capacity", provider.capacity())
        assert isinstance(capacity, Capacity), f"capacity() returned {type(capacity).__name__}, not Capacity"
        fields = {"cpu": capacity.cpu, "memory": capacity.memory, "pods": capacity.pods}
        if capacity.gpu is not None:
            fields["gpu"] = capacity.gpu
        for field, text in fields.items():
            try:
                value = parse_quantity(text)
            except (ValueError, TypeError):
                pytest.fail(f"capacity().{field} = {text!r} is not a Kubernetes quantity")
            assert value >= 0, f"capacity().{field} = {text!r} is negative"
            if field in ("pods", "gpu"):
                assert value.denominator == 1, f"capacity().{field} = {text!r} is not a whole number"

    async def test_node_conditions_are_typed(self) -> None:
        provider = await self.open_provider(self.node_name)
        conditions = await self.call("node_conditions", provider.node_conditions())
        assert isinstance(conditions, list), (
            f"node_conditions() returned {type(conditions).__name__}, not a list"
        )
        for condition in conditions:
            assert isinstance(condition, dict), f"a node condition is a dict, not {condition!r}"
            assert isinstance(condition.get("type"), str) and condition["type"], (
                f"a node condition needs a type: {condition!r}"
            )
            assert condition.get("status") in _CONDITION_STATUSES, (
                f"node condition {condition.get('type')}: status must be one of "
                f"{_CONDITION_STATUSES}: {condition!r}"
            )
            assert all(isinstance(v, str) for v in condition.values()), (
                f"condition values are strings: {condition!r}"
            )
