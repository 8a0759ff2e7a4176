"""The kubelet HTTPS API: what the apiserver, metrics-server and ``kubectl logs/top`` talk to.

Routes (every request is authenticated and authorized first, unknown paths included):

* ``GET /containerLogs/{namespace}/{pod}/{container}`` — logs, streamed while ``follow``;
* ``GET /pods``, ``GET /runningpods/`` — PodList JSON from the pod cache;
* ``GET /stats/summary`` — the Summary API; ``GET /metrics/resource`` — resource metrics;
* ``POST|GET /exec/{namespace}/{pod}/{container}`` — ``kubectl exec`` over SPDY (exec.py);
* ``POST|GET /portForward/{namespace}/{pod}`` — ``kubectl port-forward`` over SPDY (portforward.py);
* ``GET /healthz``.

Connections are bounded (a cap, deadlines for the handshake and request heads, an idle timeout) and
bad requests logged in one rate-limited line: connections.py. A request without credentials is
answered 401 and its connection closed, so only authenticated clients keep connections alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from aiohttp import web

from vk_operator import metrics
from vk_operator.domain import stats as stats_domain
from vk_operator.domain.clock import utcnow
from vk_operator.domain.logs import (
    ByteLimit,
    LogEntry,
    LogOptions,
    format_entry,
    select_history,
    wanted,
)
from vk_operator.domain.model import Pod, PodRef
from vk_operator.domain.pod_meta import Key
from vk_operator.guard import ProviderGuard
from vk_operator.kubelet_api.auth import (
    ANONYMOUS,
    Authenticator,
    AuthorizationError,
    Authorizer,
    Forbidden,
    Unauthenticated,
    request_attributes,
)
from vk_operator.kubelet_api.connections import (
    BoundedSite,
    ConnectionLimits,
    Connections,
    raise_descriptor_limit,
)
from vk_operator.kubelet_api.exec import ExecRoutes
from vk_operator.kubelet_api.params import BadRequest, parse_log_options
from vk_operator.kubelet_api.portforward import PortForwardRoutes
from vk_operator.kubelet_api.tls import ServingCertificate
from vk_operator.provider import LogsProvider, LogsUnavailable, Provider, StatsProvider, parse_quantity

log = logging.getLogger(__name__)


def _own_rss_bytes() -> int:
    """This process's resident memory (Linux /proc; 0 where it cannot be read)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


FIRST_ENTRY_WAIT = 1.0  # seconds to wait for a provider's first log entry before answering 200


def _text(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message.rstrip("\n") + "\n")


def _containers(pod: Pod) -> list[str]:
    spec = pod.get("spec") or {}
    return [
        c["name"]
        for kind in ("initContainers", "containers", "ephemeralContainers")
        for c in spec.get(kind) or []
    ]


class KubeletServer:
    def __init__(
        self,
        *,
        node_name: str,
        provider: Provider,
        pods: Callable[[], Mapping[Key, Pod]],
        serving: ServingCertificate,
        authenticator: Authenticator,
        authorizer: Authorizer,
        address: str = "0.0.0.0",
        port: int = 10250,
        guard: ProviderGuard | None = None,
        allocatable: Callable[[], Mapping[str, str]] = dict,
        limits: ConnectionLimits | None = None,
    ) -> None:
        self.node_name = node_name
        self.provider = provider
        self.guard = guard or ProviderGuard()
        self.allocatable = allocatable  # the node agent's cached capacity: no provider call per scrape
        self.pods = pods
        self.serving = serving
        self.authenticator = authenticator
        self.authorizer = authorizer
        self.address = address
        self.port = port
        self.started = utcnow()
        self.node_cpu = stats_domain.NodeCpuTime()
        self._runner: web.AppRunner | None = None
        self.connections = Connections(limits)
        self.app = self._build_app()

    # -- lifecycle -----------------------------------------------------------------------------------
    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self.connections.middleware, self._auth_middleware])
        app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", self.container_logs)
        app.router.add_get("/containerLogs", self.malformed_logs_path)
        app.router.add_get("/containerLogs/{rest:.*}", self.malformed_logs_path)
        app.router.add_get("/pods", self.pod_list)
        app.router.add_get("/pods/", self.pod_list)
        app.router.add_get("/runningpods/", self.running_pods)
        app.router.add_get("/runningpods", self.running_pods)
        app.router.add_get("/stats/summary", self.stats_summary)
        app.router.add_get("/stats/summary/", self.stats_summary)
        app.router.add_get("/metrics/resource", self.resource_metrics)
        app.router.add_get("/healthz", self.healthz)
        ExecRoutes(node_name=self.node_name, provider=self.provider, pods=self.pods).register(app)
        PortForwardRoutes(node_name=self.node_name, provider=self.provider, pods=self.pods).register(app)
        return app

    async def start(self) -> int:
        """Listen (TLS only); returns the port, which differs from ``port`` only when that is 0."""
        limits = self.connections.limits
        descriptors = raise_descriptor_limit(limits.max_connections + 256)
        if descriptors < limits.max_connections + 64:
            log.warning(
                "the open files limit (%d) is below the kubelet API's connection cap (%d, "
                "--kubelet-api-max-connections): raise the limit or lower the cap",
                descriptors,
                limits.max_connections,
            )
        handler_kwargs: dict[str, Any] = {"access_log": None, "keepalive_timeout": limits.idle_timeout}
        self._runner = web.AppRunner(
            self.app, handler_cancellation=True, shutdown_timeout=1.0, **handler_kwargs
        )
        await self._runner.setup()
        site = BoundedSite(
            self._runner,
            self.address,
            self.port,
            connections=self.connections,
            ssl_context=self.serving.context,
            handler_kwargs=handler_kwargs,
        )
        await site.start()
        address = self._runner.addresses[0]
        self.port = int(address[1])
        log.info("kubelet API listening on https://%s:%d", self.address, self.port)
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    # -- authentication and authorization -----------------------------------------------------------
    @web.middleware
    async def _auth_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        route = request.match_info.route.resource.canonical if request.match_info.route.resource else "-"
        response = await self._authorized(request, handler)
        metrics.KUBELET_API_REQUESTS.labels(route, str(response.status)).inc()
        return response

    async def _authorized(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        peercert = request.transport.get_extra_info("peercert") if request.transport else None
        try:
            user = await self.authenticator.authenticate(peercert, request.headers.get("Authorization"))
        except Unauthenticated as exc:
            log.debug("401 %s %s: %s", request.method, request.path, exc)
            refused = _text(401, "Unauthorized")
            refused.force_close()  # no keep-alive for whoever is not somebody
            return refused
        if user.name != ANONYMOUS:  # somebody: kept at the connection cap
            self.connections.trust_request(request)
        upgrade = "upgrade" in request.headers.get("Connection", "").lower()
        attributes = request_attributes(request.method, request.path, self.node_name, upgrade=upgrade)
        try:
            await self.authorizer.authorize(user, attributes)
        except Forbidden as exc:
            log.debug("403 %s %s: %s", request.method, request.path, exc)
            return _text(403, str(exc))
        except AuthorizationError as exc:
            log.error("%s", exc)
            return _text(500, str(exc))
        try:
            response: web.StreamResponse = await handler(request)
        except web.HTTPNotFound:
            return _text(404, f"404 page not found: {request.path}")
        except web.HTTPMethodNotAllowed:
            return _text(405, f"method {request.method} not allowed on {request.path}")
        return response

    # -- routes ----------------------------------------------------------------------------------------
    async def healthz(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok")

    def _pod_list(self, pods: list[Pod]) -> web.Response:
        body = {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": pods}
        return web.Response(text=json.dumps(body, separators=(",", ":")), content_type="application/json")

    async def pod_list(self, request: web.Request) -> web.StreamResponse:
        return self._pod_list(list(self.pods().values()))

    async def running_pods(self, request: web.Request) -> web.StreamResponse:
        running = [p for p in self.pods().values() if (p.get("status") or {}).get("phase") == "Running"]
        return self._pod_list(running)

    async def _usage(self) -> list[stats_domain.PodUsage]:
        assert isinstance(self.provider, StatsProvider)
        return await self.guard.call("pod_stats", self.provider.pod_stats)

    def _node_usage(
        self, now: datetime.datetime, usage: list[stats_domain.PodUsage]
    ) -> stats_domain.NodeUsage:
        """The pods' totals plus this process's own CPU time and memory (the node's "system")."""
        return self.node_cpu.update(now, usage, time.process_time_ns(), _own_rss_bytes())

    def _no_stats(self) -> web.Response:
        return _text(
            501, f"provider {self.provider.name} does not report resource usage (no stats capability)"
        )

    async def stats_summary(self, request: web.Request) -> web.StreamResponse:
        if not isinstance(self.provider, StatsProvider):
            return self._no_stats()
        try:
            usage = await self._usage()
        except Exception as exc:
            log.warning("stats from provider %s failed: %s", self.provider.name, exc)
            return _text(500, f"failed to get stats from provider {self.provider.name}: {exc}")
        try:
            memory: int | None = int(parse_quantity(self.allocatable()["memory"]))
        except (KeyError, ValueError):
            memory = None
        now = utcnow()
        body = stats_domain.summary(
            self.node_name, self.started, now, usage, self._node_usage(now, usage), memory
        )
        return web.Response(text=json.dumps(body), content_type="application/json")

    async def resource_metrics(self, request: web.Request) -> web.StreamResponse:
        if not isinstance(self.provider, StatsProvider):
            return self._no_stats()
        try:
            usage = await self._usage()
            now = utcnow()
            text = stats_domain.resource_metrics(now, usage, self._node_usage(now, usage))
        except Exception as exc:
            log.warning("stats from provider %s failed: %s", self.provider.name, exc)
            text = stats_domain.resource_metrics(utcnow(), None, scrape_error=True)
        return web.Response(text=text, content_type="text/plain", charset="utf-8")

    async def malformed_logs_path(self, request: web.Request) -> web.StreamResponse:
        return _text(
            400,
            f"malformed path {request.path!r}: expected /containerLogs/NAMESPACE/POD/CONTAINER",
        )

    async def container_logs(self, request: web.Request) -> web.StreamResponse:
        namespace = request.match_info["namespace"]
        name = request.match_info["pod"]
        container = request.match_info["container"]
        try:
            options = parse_log_options(request.query)
        except BadRequest as exc:
            return _text(400, str(exc))
        pod = self.pods().get((namespace, name))
        if pod is None:
            return _text(
                404, f'pod "{name}" does not exist in namespace "{namespace}" on node {self.node_name}'
            )
        if container not in _containers(pod):
            return _text(404, f'container "{container}" not found in pod "{name}"')
        if not isinstance(self.provider, LogsProvider):
            return _text(
                501, f"provider {self.provider.name} does not support container logs (no logs capability)"
            )
        ref = PodRef(namespace, name, pod["metadata"]["uid"])
        entries = self.provider.container_logs(ref, container, options)
        try:
            return await self._stream_logs(request, entries, options, ref, container)
        finally:
            with contextlib.suppress(Exception):
                await entries.aclose()  # type: ignore[attr-defined]

    async def _stream_logs(
        self,
        request: web.Request,
        entries: AsyncIterator[LogEntry],
        options: LogOptions,
        ref: PodRef,
        container: str,
    ) -> web.StreamResponse:
        # The provider's first entry (or its error) decides the status; a follow without history
        # may take a while to produce one, so after a moment the answer is 200 and the stream open.
        first: asyncio.Task[LogEntry | None] = asyncio.ensure_future(_first(entries))
        try:
            done, _ = await asyncio.wait({first}, timeout=FIRST_ENTRY_WAIT)
            if done:
                try:
                    head = first.result()
                except LogsUnavailable as exc:
                    return _text(400, str(exc))
                except KeyError:
                    # In the API but not (yet) in the provider: the kubelet's answer for a pod
                    # whose sandbox does not exist yet.
                    return _text(
                        400,
                        f'container "{container}" in pod "{ref.name}" is waiting to start: '
                        "not created in the provider yet",
                    )
                except Exception as exc:
                    log.warning(
                        "logs of %s/%s %s: provider error: %s", ref.namespace, ref.name, container, exc
                    )
                    return _text(500, f"provider {self.provider.name} failed to read the logs: {exc}")
            response = web.StreamResponse(headers={"Content-Type": "text/plain"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            limit = ByteLimit(options.limit_bytes)
            try:
                head = await first
                if not options.follow:
                    history = [head] if head is not None else []
                    history += [e async for e in entries]
                    for entry in select_history(history, options, utcnow()):
                        await response.write(limit.take(format_entry(entry, options.timestamps)))
                        if limit.exhausted:
                            break
                elif head is not None:
                    await self._follow(response, head, entries, options, options.since(utcnow()), limit)
            except ConnectionResetError:
                raise  # the client went away
            except Exception as exc:  # the status is sent already: end the stream
                log.info("logs of %s/%s %s ended: %s", ref.namespace, ref.name, container, exc)
            await response.write_eof()
            return response
        finally:
            first.cancel()

    @staticmethod
    async def _follow(
        response: web.StreamResponse,
        head: LogEntry,
        entries: AsyncIterator[LogEntry],
        options: LogOptions,
        since: datetime.datetime | None,
        limit: ByteLimit,
    ) -> None:
        entry: LogEntry | None = head
        while entry is not None:
            if wanted(entry, options, since):
                await response.write(limit.take(format_entry(entry, options.timestamps)))
                if limit.exhausted:
                    return
            entry = await anext(entries, None)


async def _first(entries: AsyncIterator[LogEntry]) -> LogEntry | None:
    return await anext(entries, None)
