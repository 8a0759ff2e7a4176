"""A provider skeleton: copy it, replace ``_Cloud`` with your cloud's SDK. Guide: docs/providers.md."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import pydantic

from vk_operator import provider as vk  # the provider SDK: the only module of ours a provider imports

NODE_TAG, UID_TAG = "vk-node", "vk-uid"  # ownership tags: list_pods finds this node's pods by them


class SkeletonConfig(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")  # a typo in the config is an error, not ignored
    account: str = "local"  # real: subscription/region/cluster; credentials come from the environment
    max_pods: str = "100"
    start_seconds: float = pydantic.Field(0.2, ge=0)  # how long the fake backend takes to start a pod


class CloudError(Exception):  # what the fake SDK raises: an HTTP status, like most cloud SDKs
    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status, self.retry_after = status, retry_after


_ACCOUNTS: dict[str, dict[str, dict[str, Any]]] = {}  # account -> group name -> group: "the cloud"


class _Cloud:  # stands for the cloud SDK's client: async calls on container groups in one account
    def __init__(self, account: str) -> None:
        self.groups = _ACCOUNTS.setdefault(account, {})  # module-level: a new instance sees the same

    async def create(self, name: str, containers: list[tuple[str, str]], tags: dict[str, str]) -> None:
        await asyncio.sleep(0)  # a network round trip
        if name in self.groups:
            raise CloudError(409, f"container group {name} already exists")
        if any(not image for _, image in containers):
            raise CloudError(400, "image must not be empty")
        now, ip = datetime.datetime.now(datetime.UTC), f"10.0.0.{len(self.groups) % 250 + 2}"
        self.groups[name] = {"containers": containers, "tags": tags, "created": now, "ip": ip}

    async def get(self, name: str) -> dict[str, Any]:
        await asyncio.sleep(0)
        if name not in self.groups:
            raise CloudError(404, f"container group {name} not found")
        return self.groups[name]

    async def update(self, name: str, containers: list[tuple[str, str]]) -> None:
        (await self.get(name))["containers"] = containers

    async def delete(self, name: str) -> None:
        await self.get(name)
        del self.groups[name]  # real: a long-running operation; poll it until the group is gone

    async def list(self, tags: dict[str, str]) -> list[dict[str, Any]]:
        await asyncio.sleep(0)  # real: a filtered, paged list; follow every page
        return [g for g in self.groups.values() if tags.items() <= g["tags"].items()]


@contextlib.contextmanager
def _mapped(what: str, ok: tuple[int, ...] = ()) -> Iterator[None]:
    """The SDK's errors as the SDK types: the core retries, fails the pod or pauses accordingly."""
    try:
        yield
    except CloudError as exc:
        if exc.status in ok:
            return
        message = f"{what}: {exc}"
        if exc.status == 429:  # rate limited: the core holds back *every* call for Retry-After seconds
            raise vk.ThrottledError(message, retry_after=exc.retry_after) from exc
        if exc.status == 404:
            raise vk.NotFoundError(message) from exc
        if exc.status == 400:  # the backend cannot run this pod as asked: the pod fails naming the field
            raise vk.InvalidPodError("spec.containers", str(exc)) from exc
        if exc.status in (401, 403):  # no retry helps until someone fixes the credentials or quota
            raise vk.PermanentError(message, reason="ProviderForbidden") from exc
        raise vk.TransientError(message) from exc  # 5xx, timeouts, conflicts: retried with backoff


class SkeletonProvider:  # a Provider, BulkStatusProvider, Startable and Closeable
    name: ClassVar[str] = "skeleton"
    config_model: ClassVar[type[SkeletonConfig]] = SkeletonConfig

    def __init__(self, config: SkeletonConfig, node_name: str) -> None:
        self.config, self.node_name = config, node_name
        self.cloud = _Cloud(config.account)  # real: build the SDK client here, but no I/O: start() does

    async def start(self) -> None:
        # A cheap call checks credentials; a ProviderError here is the line start-up fails with (exit 1).
        await self._mine()

    async def close(self) -> None:
        pass  # real: close the SDK's HTTP sessions, flush what is buffered

    async def _mine(self) -> list[dict[str, Any]]:
        with _mapped("list"):  # by the node tag: exactly this node's pods, never another node's
            return await self.cloud.list({NODE_TAG: self.node_name})

    async def create_pod(self, pod: vk.PreparedPod) -> None:
        spec, ref = pod.pod["spec"], pod.ref
        if spec.get("hostNetwork"):  # refuse what the backend cannot express before calling it
            raise vk.InvalidPodError("spec.hostNetwork", "this backend has no host network")
        # Real: translate env (the pod.secret_env ones as secure values) and pod.volumes too.
        containers = [(c["name"], c.get("image", "")) for c in spec["containers"]]
        tags = {NODE_TAG: self.node_name, UID_TAG: ref.uid, "namespace": ref.namespace, "name": ref.name}
        with _mapped(f"create {ref.name}", ok=(409,)):  # the name is from the UID: 409 is a retry of ours
            await self.cloud.create(f"vk-{ref.uid}", containers, tags)  # accepted; do not wait to run

    async def update_pod(self, pod: vk.PreparedPod) -> None:
        containers = [(c["name"], c.get("image", "")) for c in pod.pod["spec"]["containers"]]
        with _mapped(f"update {pod.ref.name}"):  # real: raise PermanentError if it cannot change in place
            await self.cloud.update(f"vk-{pod.ref.uid}", containers)

    async def delete_pod(self, ref: vk.PodRef) -> None:
        with _mapped(f"delete {ref.name}", ok=(404,)):  # not there: deleted; return once it is stopped
            await self.cloud.delete(f"vk-{ref.uid}")

    async def get_pod_status(self, ref: vk.PodRef) -> vk.ProviderPodStatus | None:
        with _mapped(f"status of {ref.name}", ok=(404,)):
            return self._status(await self.cloud.get(f"vk-{ref.uid}"))
        return None  # the backend does not have it

    async def get_pod_statuses(self) -> Mapping[str, vk.ProviderPodStatus]:
        return {g["tags"][UID_TAG]: self._status(g) for g in await self._mine()}  # one call, all pods

    async def list_pods(self) -> list[vk.PodRef]:
        groups = await self._mine()
        return [vk.PodRef(g["tags"]["namespace"], g["tags"]["name"], g["tags"][UID_TAG]) for g in groups]

    async def capacity(self) -> vk.Capacity:  # real: from the account's quota (cache it: read every refresh)
        return vk.Capacity(cpu="8", memory="32Gi", pods=self.config.max_pods)

    async def node_conditions(self) -> list[vk.NodeCondition]:
        return []  # real: e.g. {"type": "QuotaExhausted", "status": "True", ...} near the limit

    def _status(self, group: dict[str, Any]) -> vk.ProviderPodStatus:
        # Real: map the backend's states and exit codes; the core computes the pod's conditions.
        started = group["created"] + datetime.timedelta(seconds=self.config.start_seconds)
        up = datetime.datetime.now(datetime.UTC) >= started
        state = (vk.ContainerPhase.RUNNING, None) if up else (vk.ContainerPhase.WAITING, "ContainerCreating")
        containers = tuple(vk.ContainerStatus(name, image, *state) for name, image in group["containers"])
        phase = vk.PodPhase.RUNNING if up else vk.PodPhase.PENDING
        return vk.ProviderPodStatus(phase, containers, pod_ip=group["ip"] if up else None, start_time=started)
