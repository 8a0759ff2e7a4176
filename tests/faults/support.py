"""What the fault tests share: API calls that outlast an outage, bursts of pods, convergence checks
and the figures they print."""

from __future__ import annotations

import asyncio
import pathlib
import re
import statistics
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import aiohttp

from tests.conftest import VirtualNode, eventually, pod_manifest
from tests.integration.test_pods import pod_path
from vk_operator.kube import ApiError, Kube

T = TypeVar("T")
MOCK = "mock.vk-operator.io/"


def rss_mb(pid: int) -> float | None:
    """VmRSS of a process in MiB (None once it is gone)."""
    try:
        for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def _settling(exc: ApiError) -> bool:
    """A fresh namespace whose `default` ServiceAccount the controller-manager has not made yet (it
    can lag after an outage): the ServiceAccount admission refuses pods for a moment."""
    return exc.status == 403 and "error looking up service account" in str(exc.body)


async def persist(call: Callable[[], Awaitable[T]], *, what: str, timeout: float = 90) -> T:
    """Run an API call until it succeeds: during an outage it fails (5xx, refused, timed out)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except (ApiError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            if isinstance(exc, ApiError) and exc.status < 500 and exc.status != 429 and not _settling(exc):
                raise
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: still failing after {timeout}s: {exc!r}") from exc
            await asyncio.sleep(0.3)


async def create_persistently(admin: Kube, namespace: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """Create a pod, retrying through an outage; an AlreadyExists after an ambiguous failure is the
    pod that failed attempt created."""
    path = f"/api/v1/namespaces/{namespace}/pods"
    name = manifest["metadata"]["name"]

    async def create() -> dict[str, Any]:
        try:
            return await admin.create(path, manifest)  # type: ignore[no-any-return]
        except ApiError as exc:
            if not exc.conflict:
                raise
            return await admin.get(pod_path(namespace, name))  # type: ignore[no-any-return]

    return await persist(create, what=f"create pod {name}")


async def delete_persistently(
    admin: Kube, namespace: str, name: str, body: dict[str, Any] | None = None
) -> None:
    """Delete a pod (graceful by default), retrying through an outage; NotFound is done."""

    async def delete() -> None:
        try:
            await admin.delete(pod_path(namespace, name), body)
        except ApiError as exc:
            if not exc.not_found:
                raise

    await persist(delete, what=f"delete pod {name}")


async def create_pods(
    admin: Kube, namespace: str, node: str, names: Iterable[str], **spec: Any
) -> dict[str, str]:
    """Create pods concurrently; name -> UID."""
    created = await asyncio.gather(
        *(create_persistently(admin, namespace, pod_manifest(name, node, **spec)) for name in names)
    )
    return {pod["metadata"]["name"]: pod["metadata"]["uid"] for pod in created}


async def phases(admin: Kube, namespace: str) -> dict[str, tuple[str, str | None]]:
    """Every pod of the namespace: name -> (UID, phase)."""
    listed = await admin.get(f"/api/v1/namespaces/{namespace}/pods")
    return {
        p["metadata"]["name"]: (p["metadata"]["uid"], (p.get("status") or {}).get("phase"))
        for p in listed["items"]
    }


async def wait_running(
    admin: Kube, namespace: str, pods: dict[str, str], *, timeout: float, what: str = "pods"
) -> float:
    """Wait until exactly ``pods`` (name -> UID, the same objects) are Running; returns seconds."""
    started = time.monotonic()

    async def converged() -> bool:
        seen = await phases(admin, namespace)
        return all(seen.get(n) == (uid, "Running") for n, uid in pods.items())

    try:
        await eventually(converged, timeout=timeout, interval=0.25, what=f"{what} all Running")
    except AssertionError:
        seen = await phases(admin, namespace)
        late = {n: seen.get(n) for n, uid in pods.items() if seen.get(n) != (uid, "Running")}
        raise AssertionError(f"{len(late)} of {len(pods)} {what} not Running in {timeout}s: {late}") from None
    return time.monotonic() - started


async def wait_gone(
    admin: Kube, namespace: str, vn: VirtualNode, uids: Iterable[str], *, timeout: float
) -> float:
    """Wait until no pod object is left in the namespace and none of ``uids`` in the provider."""
    started = time.monotonic()
    wanted = set(uids)

    async def converged() -> bool:
        return not await phases(admin, namespace) and not wanted & vn.provider_uids()

    try:
        await eventually(converged, timeout=timeout, interval=0.25, what="pods gone")
    except AssertionError:
        left = await phases(admin, namespace)
        raise AssertionError(
            f"after {timeout}s: {len(left)} pod objects left {sorted(left)[:10]}, "
            f"{len(wanted & vn.provider_uids())} pods left in the provider"
        ) from None
    return time.monotonic() - started


def assert_created_once(vn: VirtualNode, uids: Iterable[str]) -> dict[str, int]:
    """Every pod was created in the provider exactly once; returns create calls per UID."""
    calls = vn.provider_state()["calls"]
    created, create = calls["created"], calls["create"]
    wanted = set(uids)
    never = sorted(wanted - set(created))
    assert not never, f"{len(never)} pods never created in the provider: {never[:5]}"
    twice = {uid: n for uid, n in created.items() if n != 1}
    assert not twice, f"pods created more than once: {twice}"
    return {uid: create.get(uid, 0) for uid in wanted}


def assert_never_deleted(vn: VirtualNode, uids: Iterable[str]) -> None:
    """No delete reached the provider for these (live) pods: recovery removed nothing it should keep."""
    deletes = vn.provider_state()["calls"]["delete"]
    touched = {uid: deletes[uid] for uid in uids if uid in deletes}
    assert not touched, f"live pods deleted in the provider: {touched}"


def describe_calls(per_pod: dict[str, int]) -> str:
    counts = list(per_pod.values())
    return f"create calls per pod mean {statistics.mean(counts):.2f} max {max(counts)} (total {sum(counts)})"


def log_figures(log: str) -> str:
    """How loud a VK log was: lines by level, tracebacks."""
    levels = {level: len(re.findall(rf"\b{level}\b", log)) for level in ("WARNING", "ERROR", "CRITICAL")}
    return ", ".join(f"{k} {v}" for k, v in levels.items()) + f", tracebacks {log.count('Traceback')}"
