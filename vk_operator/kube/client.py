"""A small JSON client for the Kubernetes API.

kubernetes-asyncio loads credentials (kubeconfig, exec plugins, in-cluster tokens) and owns the TLS
session; we send raw JSON through it because building typed models per pod event costs ~1 ms each
(DESIGN.md section 5) and we only read a handful of fields.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlencode

import aiohttp
import aiohttp.helpers
import orjson
import yarl
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config

from vk_operator import metrics

JSON = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
# A list of objects' metadata only (no spec, no status): for comparing resourceVersions cheaply.
PARTIAL_METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"


class ApiError(Exception):
    """A non-2xx answer from the API server, with the Status object's reason and message."""

    def __init__(self, status: int, body: Any, method: str, path: str) -> None:
        self.status = status
        self.body = body if isinstance(body, dict) else {}
        self.reason = str(self.body.get("reason", ""))
        self.message = str(self.body.get("message", body if isinstance(body, str) else ""))
        super().__init__(f"{method} {path}: {status} {self.reason}: {self.message}")

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409


async def load_configuration(kubeconfig: str | None) -> k8s_client.Configuration:
    """Credentials from the flag, then $KUBECONFIG, then ~/.kube/config, then in-cluster."""
    configuration = k8s_client.Configuration()
    candidates = [kubeconfig, os.environ.get("KUBECONFIG"), str(pathlib.Path.home() / ".kube/config")]
    for path in candidates:
        if path and pathlib.Path(path).is_file():
            await k8s_config.load_kube_config(config_file=path, client_configuration=configuration)
            return configuration
        if path and path == kubeconfig:
            raise FileNotFoundError(f"kubeconfig {path} does not exist")
    k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return configuration


def _env_proxy(host: str) -> tuple[str | None, aiohttp.BasicAuth | None]:
    """The proxy the environment names for ``host`` (HTTPS_PROXY, NO_PROXY...), or none."""
    try:
        proxy, auth = aiohttp.helpers.get_env_proxy_for_url(yarl.URL(host))
    except LookupError:
        return None, None
    return str(proxy), auth


class RateLimiter:
    """Client-side rate limit (QPS with a burst), like client-go's token bucket; qps 0: unlimited."""

    def __init__(self, qps: float, burst: int) -> None:
        self.qps = qps
        self.capacity = float(max(burst, 1))
        self.tokens = self.capacity
        self.updated = time.monotonic()
        self.lock = asyncio.Lock()

    async def acquire(self) -> None:
        if self.qps <= 0:
            return
        async with self.lock:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.qps)
            self.updated = now
            if self.tokens < 1:
                await asyncio.sleep((1 - self.tokens) / self.qps)
                self.tokens = 1
                self.updated = time.monotonic()
            self.tokens -= 1


class Kube:
    """JSON requests against one API server with one identity."""

    def __init__(self, configuration: k8s_client.Configuration, qps: float = 0, burst: int = 0) -> None:
        self.configuration = configuration
        self.api_client = k8s_client.ApiClient(configuration)
        self._limiter = RateLimiter(qps, burst)
        self.requests = 0  # total sent, for metrics and benchmarks
        # The environment's proxy settings are read once: kubernetes-asyncio's session trusts the
        # environment, which makes aiohttp look them up (and parse ~/.netrc) in a worker thread for
        # every request -- two thread hops and a file read per request, a third of our CPU in a burst.
        self._proxy, self._proxy_auth = _env_proxy(str(configuration.host))
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    async def connect(cls, kubeconfig: str | None, qps: float = 0, burst: int = 0) -> Kube:
        return cls(await load_configuration(kubeconfig), qps, burst)

    @property
    def session(self) -> aiohttp.ClientSession:
        """A session on kubernetes-asyncio's connection pool (its TLS settings), not trusting the env."""
        if self._session is None:
            pool: aiohttp.ClientSession = self.api_client.rest_client.pool_manager
            self._session = aiohttp.ClientSession(
                connector=pool.connector, connector_owner=False, trust_env=False, read_bufsize=2**21
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        await self.api_client.close()

    async def _headers(self, content_type: str | None, accept: str = "application/json") -> dict[str, str]:
        headers = {"Accept": accept}
        if content_type:
            headers["Content-Type"] = content_type
        await self.api_client.update_params_for_auth(headers, [], ["BearerToken"])
        return headers

    def url(self, path: str, query: Mapping[str, Any] | None = None) -> str:
        url = str(self.configuration.host).rstrip("/") + path
        if query:
            url += "?" + urlencode({k: v for k, v in query.items() if v is not None})
        return url

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        data: bytes | None = None,
        content_type: str = "application/json",
        accept: str = "application/json",
        timeout: float = 30,
        limiter: RateLimiter | None = None,
    ) -> Any:
        """``body`` is encoded as JSON; ``data`` is a body encoded already (see :meth:`encode`).

        ``limiter`` replaces the client's own rate limit (Events have a budget of their own).
        """
        await (limiter or self._limiter).acquire()
        self.requests += 1
        if body is not None:
            data = self.encode(body)
        async with self.session.request(
            method,
            self.url(path, query),
            data=data,
            headers=await self._headers(content_type if data is not None else None, accept),
            timeout=aiohttp.ClientTimeout(total=timeout),
            proxy=self._proxy,
            proxy_auth=self._proxy_auth,
        ) as resp:
            raw = await resp.read()
            try:
                decoded = orjson.loads(raw) if raw else None
            except orjson.JSONDecodeError:
                decoded = raw.decode(errors="replace")
            if method != "GET":
                metrics.api_write(method, metrics.resource_of(path), resp.status)
            if not 200 <= resp.status < 300:
                raise ApiError(resp.status, decoded, method, path)
            return decoded

    @staticmethod
    def encode(body: Any) -> bytes:
        return orjson.dumps(body)

    async def get(self, path: str, **query: Any) -> Any:
        return await self.request("GET", path, query=query or None)

    async def create(self, path: str, body: JSON) -> Any:
        return await self.request("POST", path, body=body)

    async def patch(self, path: str, body: Any, content_type: str = STRATEGIC_MERGE_PATCH) -> Any:
        return await self.request("PATCH", path, body=body, content_type=content_type)

    async def delete(self, path: str, body: JSON | None = None) -> Any:
        return await self.request("DELETE", path, body=body)

    async def watch(self, path: str, **query: Any) -> AsyncIterator[JSON]:
        """Yield watch events until the server closes the stream; 410 surfaces as ApiError."""
        await self._limiter.acquire()
        self.requests += 1
        query = {**query, "watch": "true", "allowWatchBookmarks": "true"}
        async with self.session.get(
            self.url(path, query),
            headers=await self._headers(None),
            timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
            proxy=self._proxy,
            proxy_auth=self._proxy_auth,
        ) as resp:
            if resp.status != 200:
                raise ApiError(resp.status, await resp.text(), "WATCH", path)
            async for line in resp.content:
                if not line.strip():
                    continue
                event: JSON = orjson.loads(line)
                if event.get("type") == "ERROR":
                    status = event.get("object", {})
                    raise ApiError(int(status.get("code", 500)), status, "WATCH", path)
                yield event
