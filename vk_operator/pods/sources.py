"""Fetch what a pod's env and volumes reference (ConfigMaps, Secrets, Services, tokens).

Reads are cached for a few seconds per object: a burst of pods in one namespace referencing the
same ConfigMap (every pod references kube-root-ca.crt) costs one read, not one per pod.

Service-account tokens are not part of :meth:`SourceFetcher.fetch`: the reconciler asks for one
(:meth:`SourceFetcher.token`) only once everything else the pod needs is there, and tokens are
cached per pod for their lifetime, refreshed at 80 % of it as the kubelet's token manager does, so
a pod waiting for its ConfigMap costs no TokenRequests and a started pod one.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from vk_operator.domain import env as env_domain
from vk_operator.domain import prepared as prepared_domain
from vk_operator.domain.model import Pod, PodRef
from vk_operator.domain.pod_meta import Key
from vk_operator.guard import ProviderGuard
from vk_operator.kube import ApiError, Kube
from vk_operator.provider import PodIPAllocator, Provider

log = logging.getLogger(__name__)
T = TypeVar("T")
TOKEN_SECONDS = 3607  # the kubelet's default for projected service-account tokens
TOKEN_REFRESH = 0.8  # refresh a token once this share of its lifetime has passed (the kubelet's)
TOKEN_MAX_AGE = 24 * 3600.0  # ... or once it is a day old, whatever its lifetime (the kubelet's)
# The node's allocatable resources (for resourceFieldRef defaults): the node agent's cached value,
# so a pod never costs a provider capacity() call.
Allocatable = Callable[[], Mapping[str, str]]


def _read_error(kind: str, namespace: str, name: str, exc: ApiError) -> env_domain.ReadError:
    return env_domain.ReadError(
        f"cannot read {kind} {namespace}/{name}: {exc.status} {exc.reason}: {exc.message}"
    )


def refused(sources: env_domain.Sources) -> bool:
    """Whether a read of the pod's ConfigMaps/Secrets was refused (401/403), e.g. by the Node
    authorizer, whose graph lags a pod's binding by a moment."""
    return any(
        isinstance(found, env_domain.ReadError)
        for found in (*sources.configmaps.values(), *sources.secrets.values())
    )


@dataclasses.dataclass(frozen=True, slots=True)
class _Token:
    token: str
    refresh_at: float  # monotonic


@dataclasses.dataclass(frozen=True)
class TokenSpec:
    """What one TokenRequest asks for, as the pod's projected serviceAccountToken source says."""

    account: str
    audiences: tuple[str, ...]
    expiration: int


def token_spec(pod: Pod) -> TokenSpec:
    spec = pod.get("spec", {})
    audiences: tuple[str, ...] = ()
    expiration = TOKEN_SECONDS
    for volume in spec.get("volumes") or []:
        for source in (volume.get("projected") or {}).get("sources") or []:
            projection = source.get("serviceAccountToken")
            if projection:
                audiences = (projection["audience"],) if projection.get("audience") else ()
                expiration = int(projection.get("expirationSeconds") or TOKEN_SECONDS)
    return TokenSpec(spec.get("serviceAccountName") or "default", audiences, expiration)


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
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.provider = provider
        self.host_ip = host_ip
        self.guard = guard
        self.allocatable: Allocatable = allocatable or dict
        self.ttl = ttl
        self.monotonic = monotonic  # token lifetimes (object reads keep to time.monotonic)
        self._cache: dict[tuple[str, ...], tuple[float, Any]] = {}
        self._loading: dict[tuple[str, ...], asyncio.Future[Any]] = {}
        self._tokens: dict[str, tuple[Key, dict[TokenSpec, _Token]]] = {}  # by pod UID
        self._token_uids: dict[Key, set[str]] = {}  # pod key -> UIDs holding tokens

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

    # -- service-account tokens -------------------------------------------------------------------------
    async def token(self, pod: Pod) -> str | None:
        """A token for the pod's projected serviceAccountToken source: cached for the pod (UID),
        account, audience and expiration, requested again at 80 % of its lifetime.

        None when the API refuses (401/403/404): right after binding, NodeRestriction answers
        404 "pod not found" until its informer has seen the pod; the caller retries.
        """
        meta = pod["metadata"]
        uid = meta["uid"]
        spec = token_spec(pod)
        held = self._tokens.get(uid)
        cached = held[1].get(spec) if held is not None else None
        now = self.monotonic()
        if cached is not None and now < cached.refresh_at:
            return cached.token
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": list(spec.audiences),
                "expirationSeconds": spec.expiration,
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": uid},
            },
        }
        try:
            answer = await self.kube.create(
                f"/api/v1/namespaces/{meta['namespace']}/serviceaccounts/{spec.account}/token", body
            )
        except ApiError as exc:
            if exc.status not in (401, 403, 404):
                raise
            log.info("cannot get a token for %s/%s (yet): %s", meta["namespace"], meta["name"], exc)
            return None
        token: str = answer["status"]["token"]
        # The lifetime granted (the API server may shorten what was asked for), measured from when
        # the answer arrived on our own monotonic clock: immune to clock skew with the API server.
        granted = float((answer.get("spec") or {}).get("expirationSeconds") or spec.expiration)
        key: Key = (meta["namespace"], meta["name"])
        if held is None:
            held = self._tokens[uid] = (key, {})
            self._token_uids.setdefault(key, set()).add(uid)
        held[1][spec] = _Token(token, now + min(granted * TOKEN_REFRESH, TOKEN_MAX_AGE))
        return token

    def token_holders(self, key: Key) -> tuple[str, ...]:
        """The UIDs of pods of this key whose tokens are cached."""
        return tuple(self._token_uids.get(key, ()))

    def forget(self, uid: str) -> None:
        """The pod is gone: drop its cached tokens."""
        held = self._tokens.pop(uid, None)
        if held is None:
            return
        uids = self._token_uids.get(held[0], set())
        uids.discard(uid)
        if not uids:
            self._token_uids.pop(held[0], None)

    @property
    def cached_tokens(self) -> int:
        return sum(len(tokens) for _, tokens in self._tokens.values())

    async def fetch(self, pod: Pod) -> env_domain.Sources:
        """Everything the pod references but its service-account token (see :meth:`token`)."""
        meta = pod["metadata"]
        namespace = meta["namespace"]
        configmaps: dict[str, Any] = {}
        binary: dict[str, dict[str, bytes]] = {}
        for name in env_domain.referenced_configmaps(pod):
            configmaps[name], binary[name] = await self.configmap(namespace, name)
        secrets = {
            name: await self.secret(namespace, name) for name in prepared_domain.referenced_secrets(pod)
        }
        services: list[dict[str, Any]] = []
        if env_domain.needs_service_links(pod):
            services = await self._services(namespace)
        master = [s for s in await self._services("default") if s["metadata"]["name"] == "kubernetes"]
        pod_ip = None
        if env_domain.needs_pod_ip(pod) and isinstance(self.provider, PodIPAllocator):
            pod_ip = await self.guard.call(
                "allocate_pod_ip", self.provider.allocate_pod_ip, PodRef(namespace, meta["name"], meta["uid"])
            )
        return env_domain.Sources(
            configmaps=configmaps,
            secrets=secrets,
            services=services,
            master_services=master,
            pod_ip=pod_ip,
            host_ip=self.host_ip,
            node_allocatable=dict(self.allocatable()),
            configmap_binary=binary,
        )
