"""Fetch what a pod's env and volumes reference (ConfigMaps, Secrets, Services, tokens).

Reads are cached for a few seconds per object: a burst of pods in one namespace referencing the
same ConfigMap (every pod references kube-root-ca.crt) costs one read, not one per pod.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from vk_operator.domain import env as env_domain
from vk_operator.domain.model import Pod, PodRef
from vk_operator.guard import ProviderGuard
from vk_operator.kube import ApiError, Kube
from vk_operator.provider import PodIPAllocator, Provider

log = logging.getLogger(__name__)
T = TypeVar("T")
TOKEN_SECONDS = 3607  # the kubelet's default for projected service-account tokens
# The node's allocatable resources (for resourceFieldRef defaults): the node agent's cached value,
# so a pod never costs a provider capacity() call.
Allocatable = Callable[[], Mapping[str, str]]


def _read_error(kind: str, namespace: str, name: str, exc: ApiError) -> env_domain.ReadError:
    return env_domain.ReadError(
        f"cannot read {kind} {namespace}/{name}: {exc.status} {exc.reason}: {exc.message}"
    )


def _consume(future: asyncio.Future[Any]) -> None:
    """Mark a shared read's error as seen even when nobody was waiting for it."""
    if not future.cancelled():
        future.exception()


class SourceFetcher:
    def __init__(
        self,
        kube: Kube,
        provider: Provider,
        host_ip: str,
        guard: ProviderGuard,
        allocatable: Allocatable | None = None,
        ttl: float = 2.0,
    ) -> None:
        self.kube = kube
        self.provider = provider
        self.host_ip = host_ip
        self.guard = guard
        self.allocatable: Allocatable = allocatable or dict
        self.ttl = ttl
        self._cache: dict[tuple[str, ...], tuple[float, Any]] = {}
        self._loading: dict[tuple[str, ...], asyncio.Future[Any]] = {}

    async def _cached(self, key: tuple[str, ...], load: Callable[[], Awaitable[T]]) -> T:
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit and hit[0] > now:
            value: T = hit[1]
            return value
        loading = self._loading.get(key)
        if loading is not None:
            # Another pod's reconcile is reading it: share that read. Without this, when an entry
            # expires in a burst every worker reads it at once (the `default` Services, per pod).
            shared: T = await asyncio.shield(loading)
            return shared
        loading = asyncio.get_running_loop().create_future()
        loading.add_done_callback(_consume)
        self._loading[key] = loading
        try:
            value = await load()
        except BaseException as exc:
            # Waiters retry their pods on an error; never hand them our own cancellation.
            error = exc if isinstance(exc, Exception) else RuntimeError(f"reading {key} was interrupted")
            loading.set_exception(error)
            raise
        finally:
            del self._loading[key]
        if len(self._cache) > 10_000:  # bound memory: drop expired entries
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
        # A refusal is not cached: right after a pod is bound, the Node authorizer may not have
        # seen it yet and refuses its ConfigMaps for a moment; the retry must ask again.
        if not isinstance(value, env_domain.ReadError):
            self._cache[key] = (now + self.ttl, value)
        loading.set_result(value)
        return value

    async def _object(
        self, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | env_domain.ReadError | None:
        plural = {"ConfigMap": "configmaps", "Secret": "secrets"}[kind]
        try:
            obj: dict[str, Any] = await self.kube.get(f"/api/v1/namespaces/{namespace}/{plural}/{name}")
            return obj
        except ApiError as exc:
            if exc.not_found:
                return None
            if exc.status in (401, 403):
                return _read_error(kind, namespace, name, exc)
            raise  # transient: the caller retries the whole pod

    async def configmap(self, namespace: str, name: str) -> tuple[Any, dict[str, bytes]]:
        obj = await self._cached(("cm", namespace, name), lambda: self._object("ConfigMap", namespace, name))
        if not isinstance(obj, dict):
            return obj, {}
        binary = {k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()}
        return obj.get("data") or {}, binary

    async def secret(self, namespace: str, name: str) -> Any:
        obj = await self._cached(("secret", namespace, name), lambda: self._object("Secret", namespace, name))
        if not isinstance(obj, dict):
            return obj
        return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}

    async def _services(self, namespace: str) -> list[dict[str, Any]]:
        async def load() -> list[dict[str, Any]]:
            try:
                found = await self.kube.get(f"/api/v1/namespaces/{namespace}/services")
            except ApiError as exc:
                if exc.status not in (401, 403, 404):
                    raise
                log.warning("cannot list services of %s for service links: %s", namespace, exc)
                return []
            items: list[dict[str, Any]] = found.get("items", [])
            return items

        return await self._cached(("services", namespace), load)

    async def _token(self, pod: Pod) -> str | None:
        meta, spec = pod["metadata"], pod.get("spec", {})
        audiences: list[str] = []
        expiration = TOKEN_SECONDS
        for volume in spec.get("volumes") or []:
            for source in (volume.get("projected") or {}).get("sources") or []:
                projection = source.get("serviceAccountToken")
                if projection:
                    audiences = [projection["audience"]] if projection.get("audience") else []
                    expiration = int(projection.get("expirationSeconds") or TOKEN_SECONDS)
        account = spec.get("serviceAccountName") or "default"
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": audiences,
                "expirationSeconds": expiration,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            },
        }
        try:
            answer = await self.kube.create(
                f"/api/v1/namespaces/{meta['namespace']}/serviceaccounts/{account}/token", body
            )
        except ApiError as exc:
            if exc.status not in (401, 403, 404):
                raise
            log.warning("cannot get a token for %s/%s: %s", meta["namespace"], meta["name"], exc)
            return None
        token: str = answer["status"]["token"]
        return token

    async def fetch(self, pod: Pod) -> env_domain.Sources:
        meta = pod["metadata"]
        namespace = meta["namespace"]
        configmaps: dict[str, Any] = {}
        binary: dict[str, dict[str, bytes]] = {}
        for name in env_domain.referenced_configmaps(pod):
            configmaps[name], binary[name] = await self.configmap(namespace, name)
        secrets = {name: await self.secret(namespace, name) for name in env_domain.referenced_secrets(pod)}
        services: list[dict[str, Any]] = []
        if env_domain.needs_service_links(pod):
            services = await self._services(namespace)
        master = [s for s in await self._services("default") if s["metadata"]["name"] == "kubernetes"]
        pod_ip = None
        if env_domain.needs_pod_ip(pod) and isinstance(self.provider, PodIPAllocator):
            pod_ip = await self.guard.call(
                "allocate_pod_ip", self.provider.allocate_pod_ip, PodRef(namespace, meta["name"], meta["uid"])
            )
        token = await self._token(pod) if env_domain.needs_service_account_token(pod) else None
        return env_domain.Sources(
            configmaps=configmaps,
            secrets=secrets,
            services=services,
            master_services=master,
            pod_ip=pod_ip,
            host_ip=self.host_ip,
            service_account_token=token,
            node_allocatable=dict(self.allocatable()),
            configmap_binary=binary,
        )
